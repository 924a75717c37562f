//! Which webhook events trigger a sync, and for which customer.

use crate::domain::CustomerId;
use crate::stripe::wire::Event;

/// The recipe's eighteen events, plus the delayed-payment outcomes of Checkout.
pub const TRACKED_EVENTS: [&str; 20] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.upcoming",
    "invoice.marked_uncollectible",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
];

#[derive(Debug, PartialEq)]
pub enum EventAction {
    Sync(CustomerId),
    /// Not a type that changes subscription state: acknowledged quietly.
    Untracked,
    /// A tracked type without a customer id string (a guest payment, say): acknowledged and logged.
    NoCustomer,
}

pub fn route(event: &Event) -> EventAction {
    if !TRACKED_EVENTS.contains(&event.event_type.as_str()) {
        return EventAction::Untracked;
    }
    match event.data.object.get("customer").and_then(|c| c.as_str()).map(CustomerId::parse) {
        Some(Ok(customer)) => EventAction::Sync(customer),
        _ => EventAction::NoCustomer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, object: serde_json::Value) -> Event {
        serde_json::from_value(json!({"id": "evt_1", "type": event_type, "data": {"object": object}})).unwrap()
    }

    #[test]
    fn routing() {
        assert_eq!(route(&event("invoice.paid", json!({"customer": "cus_1"}))), EventAction::Sync(CustomerId::parse("cus_1").unwrap()));
        assert_eq!(
            route(&event("checkout.session.async_payment_succeeded", json!({"customer": "cus_9"}))),
            EventAction::Sync(CustomerId::parse("cus_9").unwrap())
        );
        assert_eq!(route(&event("product.created", json!({"customer": "cus_1"}))), EventAction::Untracked);
        assert_eq!(route(&event("payment_intent.succeeded", json!({"customer": null}))), EventAction::NoCustomer);
        assert_eq!(route(&event("invoice.paid", json!({"customer": {"id": "cus_1"}}))), EventAction::NoCustomer);
        assert_eq!(route(&event("invoice.paid", json!({"customer": "not-an-id"}))), EventAction::NoCustomer);
    }
}
