//! Which webhook events trigger a sync, and for which customer.

use crate::domain::CustomerId;
use crate::stripe::wire::Event;

/// The recipe's eighteen events, plus the delayed-payment outcomes of Checkout, a change of the
/// customer's active entitlements (`ENTITLEMENTS=stripe` caches them) and of their discounts
/// (the cache's `discount`: a `once` coupon used up, say).
pub const TRACKED_EVENTS: [&str; 24] = [
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
    "entitlements.active_entitlement_summary.updated",
    "customer.discount.created",
    "customer.discount.updated",
    "customer.discount.deleted",
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
    if !TRACKED_EVENTS.contains(&event.event_type.as_ref()) {
        return EventAction::Untracked;
    }
    match event.data.object.customer.0.as_deref().map(CustomerId::parse) {
        Some(Ok(customer)) => EventAction::Sync(customer),
        _ => EventAction::NoCustomer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route_json(event_type: &str, object: serde_json::Value) -> EventAction {
        let body = json!({"id": "evt_1", "type": event_type, "data": {"object": object}}).to_string();
        route(&serde_json::from_str::<Event>(&body).unwrap())
    }

    #[test]
    fn routing() {
        assert_eq!(route_json("invoice.paid", json!({"customer": "cus_1"})), EventAction::Sync(CustomerId::parse("cus_1").unwrap()));
        assert_eq!(
            route_json("checkout.session.async_payment_succeeded", json!({"customer": "cus_9"})),
            EventAction::Sync(CustomerId::parse("cus_9").unwrap())
        );
        assert_eq!(route_json("product.created", json!({"customer": "cus_1"})), EventAction::Untracked);
        assert_eq!(route_json("payment_intent.succeeded", json!({"customer": null})), EventAction::NoCustomer);
        assert_eq!(route_json("invoice.paid", json!({"customer": {"id": "cus_1"}})), EventAction::NoCustomer);
        assert_eq!(route_json("invoice.paid", json!({"customer": "not-an-id"})), EventAction::NoCustomer);
        assert_eq!(route_json("invoice.paid", json!({"customer": ["cus_1"]})), EventAction::NoCustomer);
        assert_eq!(route_json("invoice.paid", json!({"id": "in_1"})), EventAction::NoCustomer);
    }

    /// A full event as Stripe sends it routes from the few fields read; an escaped id is read too.
    #[test]
    fn a_whole_event_routes_from_its_few_fields() {
        let body = r#"{"id":"evt_1","object":"event","api_version":"2026-10-28.endive","created":1,
            "data":{"object":{"id":"sub_1","object":"subscription","items":{"object":"list","data":[{"id":"si_1","price":{"id":"price_1","metadata":{"k":"v"}}}]},
            "customer":"cus_\u0031","metadata":{},"status":"active","latest_invoice":{"id":"in_1","customer":"cus_other"}},
            "previous_attributes":{"status":"trialing"}},"livemode":false,"type":"customer.subscription.updated"}"#;
        let event: Event = serde_json::from_str(body).unwrap();
        assert_eq!(
            (event.id.as_ref(), event.data.object.id.as_deref(), event.data.object.object.as_deref()),
            ("evt_1", Some("sub_1"), Some("subscription"))
        );
        assert_eq!(route(&event), EventAction::Sync(CustomerId::parse("cus_1").unwrap()));
        // Signed but not shaped as an event: refused (the webhook answers 400 invalid_event).
        for hostile in
            [r#"{"id":"evt_1","type":"invoice.paid","data":{"object":"cus_1"}}"#, r#"{"id":1,"type":"invoice.paid","data":{"object":{}}}"#]
        {
            assert!(serde_json::from_str::<Event>(hostile).is_err(), "{hostile}");
        }
    }
}
