//! Checkout Sessions: creating one, what paying it does, and sessions expiring.

use serde_json::{json, Map, Value};

use crate::engine::billing::{self, NewSubscription};
use crate::engine::customers::{create_customer, NewCustomer};
use crate::engine::discounts::{self, NewDiscount};
use crate::engine::payment_methods::{attach_payment_method, create_card_payment_method};
use crate::model::cards::{Outcome, TestCard};
use crate::model::{new_id, str_field, ApiError, PendingSubscription};
use crate::store::Store;

/// The fields of a new session that are only stored and shown back.
pub struct SessionFields {
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub client_reference_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub allow_promotion_codes: Option<bool>,
    pub billing_address_collection: Option<String>,
    /// `always` or `if_required` (a trial may then start without a card).
    pub payment_method_collection: String,
    pub excluded_payment_method_types: Vec<String>,
    pub locale: Option<String>,
}

/// A subscription-mode session to create; the API has checked each field's form.
pub struct NewSession {
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    /// Default: 24 hours from now; else between 30 minutes and 24 hours from now.
    pub expires_at: Option<i64>,
    /// Recurring prices with their quantities (0: a usage price, which has none).
    pub line_items: Vec<(Value, i64)>,
    pub fields: SessionFields,
    /// What paying will create (its `email` is filled in here).
    pub pending: PendingSubscription,
    /// Where the hosted page is served (the session's `url`).
    pub public_url: String,
}

pub fn create_session(store: &mut Store, new: NewSession) -> Result<Value, ApiError> {
    if new.customer.is_some() && new.customer_email.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: customer, customer_email.",
            Some("customer_email"),
            "parameters_exclusive",
        ));
    }
    let now = store.now();
    let expires_at = match new.expires_at {
        None => now + 24 * 3600,
        Some(t) if t >= now + 30 * 60 && t <= now + 24 * 3600 => t,
        Some(_) => {
            return Err(ApiError::invalid(
                "expires_at must be between 30 minutes and 24 hours from now.",
                Some("expires_at"),
                "parameter_invalid_value",
            ))
        }
    };
    let id = new_id("cs_test_");
    let mut total = 0;
    let lines: Vec<Value> = new
        .line_items
        .iter()
        .map(|(price, quantity)| {
            let amount = price["unit_amount"].as_i64().unwrap_or(0) * quantity;
            total += amount;
            let product_name = store.get(price["product"].as_str().unwrap_or_default()).map(|p| p["name"].clone()).unwrap_or(Value::Null);
            json!({
                "id": new_id("li_"),
                "object": "item",
                "adjustable_quantity": null,
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price["currency"],
                "description": product_name,
                "metadata": {},
                "price": price,
                // A usage price's line has no quantity: it bills in arrears what its meter counts.
                "quantity": if *quantity == 0 { Value::Null } else { json!(quantity) },
            })
        })
        .collect();
    let currency = lines[0]["currency"].clone();
    if lines.iter().any(|l| l["currency"] != currency) {
        return Err(ApiError::invalid("All line items must use the same currency.", Some("line_items"), "parameter_invalid_value"));
    }
    let email = match &new.customer {
        Some(c) => store.get(c).and_then(|c| c["email"].as_str().map(str::to_string)),
        None => new.customer_email.clone(),
    };
    let fields = new.fields;
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": null,
        "after_expiration": null,
        "allow_promotion_codes": fields.allow_promotion_codes,
        "allowed_payment_method_types": null,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_address_collection": fields.billing_address_collection,
        "cancel_url": fields.cancel_url,
        "client_reference_id": fields.client_reference_id,
        "client_secret": null,
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "created": now,
        "currency": currency,
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
        "customer": new.customer,
        "customer_account": null,
        "customer_creation": if new.customer.is_some() { Value::Null } else { json!("always") },
        "customer_details": null,
        "customer_email": new.customer_email,
        "discounts": [],
        "excluded_payment_method_types": fields.excluded_payment_method_types,
        "expires_at": expires_at,
        "integration_identifier": null,
        "invoice": null,
        "invoice_creation": null,
        "line_items": { "object": "list", "data": lines, "has_more": false, "url": format!("/v1/checkout/sessions/{id}/line_items") },
        "livemode": false,
        "locale": fields.locale,
        "managed_payments": null,
        "metadata": fields.metadata,
        "mode": "subscription",
        "origin_context": null,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": fields.payment_method_collection,
        "payment_method_configuration_details": null,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "permissions": null,
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": fields.success_url,
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted_page",
        "url": format!("{}/c/pay/{id}", new.public_url),
        "wallet_options": null,
    });
    store.insert(session.clone());
    store.set_pending_checkout(&id, Some(PendingSubscription { email, ..new.pending }));
    Ok(session)
}

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
    /// A promotion code typed on a page that offers the field (`allow_promotion_codes`).
    pub promotion_code: Option<&'a str>,
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
    let discount = match payment.promotion_code.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(_) if session["allow_promotion_codes"] != true => {
            return Err(ApiError::invalid(
                "This Checkout Session does not accept promotion codes.",
                Some("promotion_code"),
                "promotion_code_invalid",
            ))
        }
        Some(code) => {
            let (promotion_code, coupon) = discounts::redeemable(store, code, session["customer"].as_str())?;
            Some(NewDiscount { coupon, promotion_code: Some(promotion_code), checkout_session: Some(id.to_string()) })
        }
    };
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
            discount: discount.clone(),
            from_checkout: true,
            flexible: true,
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
    if let Some(discount) = &discount {
        let first = store.get(&created.invoice).cloned().unwrap_or_default();
        let off: i64 = first["total_discount_amounts"].as_array().into_iter().flatten().filter_map(|d| d["amount"].as_i64()).sum();
        changes.insert("discounts".into(), json!([{ "coupon": discount.coupon, "promotion_code": discount.promotion_code }]));
        changes.insert("total_details".into(), json!({ "amount_discount": off, "amount_shipping": 0, "amount_tax": 0 }));
        changes.insert("amount_total".into(), json!(session["amount_subtotal"].as_i64().unwrap_or(0) - off));
    }
    store.update(id, changes);
    store.emit_for("checkout.session.completed", id, None);
    store.set_pending_checkout(id, None);
    Ok(str_field(&session, "success_url").replace("{CHECKOUT_SESSION_ID}", id))
}
