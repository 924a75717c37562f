//! What paying a Checkout Session does, and sessions expiring.

use serde_json::{json, Map, Value};

use crate::engine::billing::{self, NewSubscription};
use crate::engine::customers::{create_customer, NewCustomer};
use crate::engine::payment_methods::{attach_payment_method, create_card_payment_method};
use crate::model::cards::{Outcome, TestCard};
use crate::model::{str_field, ApiError};
use crate::store::Store;

/// A session past its `expires_at` becomes `expired` (with its event) the next time it is looked at.
pub fn expire_if_due(store: &mut Store, id: &str) {
    let due = store.get(id).is_some_and(|s| s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|t| t <= store.now()));
    if due {
        mark_expired(store, id);
    }
}

pub fn mark_expired(store: &mut Store, id: &str) {
    let previous = store.update(id, Map::from_iter([("status".to_string(), json!("expired")), ("url".to_string(), Value::Null)]));
    store.emit_for("checkout.session.expired", id, Some(previous));
}

/// What the payer typed on the hosted page (or sent to the control endpoint).
pub struct Payment<'a> {
    pub card_number: Option<&'a str>,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Pay an open session: customer (if needed), payment method, subscription, invoice and payment,
/// then `checkout.session.completed`. Returns the `success_url` to redirect to. A declined card
/// changes nothing and leaves the session open.
pub fn pay(store: &mut Store, id: &str, payment: &Payment) -> Result<String, ApiError> {
    let session = store.get_kind("checkout.session", id, None)?.clone();
    if session["status"] != "open" || session["expires_at"].as_i64().is_some_and(|t| t <= store.now()) {
        return Err(ApiError::bad_request(format!("This Checkout Session is no longer open (status: {}).", str_field(&session, "status"))));
    }
    let pending = store.pending_checkout(id).cloned().ok_or_else(|| ApiError::bad_request("This Checkout Session cannot be paid."))?;
    let card_optional = session["payment_method_collection"] == "if_required" && pending.trial_days.is_some();
    let card = match payment.card_number.map(str::trim).filter(|n| !n.is_empty()) {
        Some(number) => Some(TestCard::from_number(number)?),
        None if card_optional => None,
        None => {
            return Err(ApiError {
                code: Some("incomplete_number".into()),
                ..ApiError::new(axum::http::StatusCode::PAYMENT_REQUIRED, "card_error", "Your card number is incomplete.")
            })
        }
    };
    // With no trial the first invoice is charged now, so a declining card fails here, before anything is created.
    if let Some(card) = &card {
        if let Outcome::Declined { decline_code, message } = &card.outcome {
            return Err(ApiError::card_declined(decline_code, message));
        }
        if card.outcome == Outcome::FailsWhenCharged && pending.trial_days.is_none() {
            return Err(ApiError::card_declined("generic_decline", "Your card was declined."));
        }
    }
    let email = pending.email.clone().or_else(|| payment.email.map(str::trim).filter(|e| !e.is_empty()).map(str::to_string));
    let Some(email) = email else {
        return Err(ApiError::invalid("Enter your email address.", Some("email"), "email_invalid"));
    };
    if !email.contains('@') {
        return Err(ApiError::invalid("Your email address is invalid.", Some("email"), "email_invalid"));
    }
    let customer = match session["customer"].as_str() {
        Some(c) => c.to_string(),
        None => str_field(&create_customer(store, NewCustomer { email: Some(email.clone()), ..Default::default() })?, "id"),
    };
    store.use_clock_of(&customer);
    let payment_method = match &card {
        Some(card) => {
            let pm = create_card_payment_method(store, card, 12, 2034, payment.name, Map::new());
            Some(attach_payment_method(store, pm["id"].as_str().unwrap_or_default(), &customer, "payment_method")?)
        }
        None => None,
    };
    let items: Vec<(Value, i64)> = session["line_items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| (line["price"].clone(), line["quantity"].as_i64().unwrap_or(1)))
        .collect();
    let now = store.now();
    let created = billing::create_subscription(
        store,
        NewSubscription {
            customer: customer.clone(),
            items,
            payment_method: payment_method.clone(),
            trial_end: pending.trial_days.map(|d| now + d * 86_400),
            missing_payment_method: pending.missing_payment_method.clone(),
            metadata: pending.metadata.clone(),
            description: pending.description.clone(),
            cancel_at_period_end: false,
            error_if_incomplete: false,
        },
    )?;
    let paid = created.payment_error.is_none();
    let mut changes = Map::from_iter([
        ("status".to_string(), json!("complete")),
        (
            "payment_status".to_string(),
            json!(if pending.trial_days.is_some() {
                "no_payment_required"
            } else if paid {
                "paid"
            } else {
                "unpaid"
            }),
        ),
        ("customer".to_string(), json!(customer)),
        ("subscription".to_string(), json!(created.subscription)),
        ("invoice".to_string(), json!(created.invoice)),
        ("url".to_string(), Value::Null),
        (
            "customer_details".to_string(),
            json!({ "address": null, "business_name": null, "email": email, "individual_name": null, "name": payment.name, "phone": null, "tax_exempt": "none", "tax_ids": [] }),
        ),
    ]);
    if session["customer"].is_null() {
        changes.insert("customer_creation".into(), json!("always"));
    }
    store.update(id, changes);
    store.emit_for("checkout.session.completed", id, None);
    store.set_pending_checkout(id, None);
    Ok(str_field(&session, "success_url").replace("{CHECKOUT_SESSION_ID}", id))
}
