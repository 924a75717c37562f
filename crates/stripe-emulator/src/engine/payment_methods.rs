//! Card payment methods: storing them, attaching them to customers, and resolving the ones a
//! request names (a test token such as `pm_card_visa` becomes a new attached card).

use serde_json::{json, Map, Value};

use crate::model::cards::{Outcome, TestCard};
use crate::model::{new_id, ApiError};
use crate::store::Store;

/// Store a card payment method (not yet attached).
pub fn create_card_payment_method(
    store: &mut Store,
    card: &TestCard,
    exp_month: i64,
    exp_year: i64,
    name: Option<&str>,
    metadata: Map<String, Value>,
) -> Value {
    let id = new_id("pm_");
    let pm = json!({
        "id": id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": { "city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null },
            "email": null,
            "name": name,
            "phone": null,
            "tax_id": null,
        },
        "card": {
            "brand": card.brand,
            "checks": { "address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass" },
            "country": "US",
            "display_brand": card.brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": format!("fp{}{}", card.brand, card.last4),
            "funding": card.funding,
            "generated_from": null,
            "last4": card.last4,
            "networks": { "available": [card.brand], "preferred": null },
            "regulated_status": "unregulated",
            "three_d_secure_usage": { "supported": true },
            "wallet": null,
        },
        "created": store.now(),
        "customer": null,
        "customer_account": null,
        "livemode": false,
        "metadata": metadata,
        "type": "card",
    });
    store.set_card_outcome(&id, card.outcome.clone());
    store.insert(pm.clone());
    pm
}

/// Attach a payment method (or a test token, which first becomes a new one) to a customer.
pub fn attach_payment_method(store: &mut Store, id: &str, customer: &str, param: &str) -> Result<String, ApiError> {
    let pm_id = match TestCard::from_token(id) {
        Some(card) => create_card_payment_method(store, &card, 12, 2034, None, Map::new())["id"].as_str().unwrap_or_default().to_string(),
        None => id.to_string(),
    };
    let pm = store.get_kind("payment_method", &pm_id, Some(param))?.clone();
    match pm["customer"].as_str() {
        Some(owner) if owner == customer => return Ok(pm_id),
        Some(_) => return Err(ApiError::bad_request("The payment method you provided has already been attached to a customer.")),
        None => {}
    }
    if let Some(Outcome::Declined { decline_code, message }) = store.card_outcome(&pm_id) {
        return Err(ApiError::card_declined(decline_code, message));
    }
    store.update(&pm_id, Map::from_iter([("customer".to_string(), json!(customer))]));
    store.index_under_customer(customer, &pm_id);
    // A customer under a test clock has its events at the clock's time.
    store.use_clock_of(customer);
    store.emit_for("payment_method.attached", &pm_id, None);
    Ok(pm_id)
}

/// A payment method parameter that must belong to `customer`; a test token is attached on the fly.
pub fn resolve_payment_method(store: &mut Store, id: &str, customer: &str, param: &str) -> Result<String, ApiError> {
    if TestCard::from_token(id).is_some() {
        return attach_payment_method(store, id, customer, param);
    }
    let pm = store.get_kind("payment_method", id, Some(param))?;
    if pm["customer"] != customer {
        return Err(ApiError::invalid(
            format!("The customer does not have a payment method with the ID {id}. The payment method must be attached to the customer."),
            Some(param),
            "resource_missing",
        ));
    }
    Ok(id.to_string())
}
