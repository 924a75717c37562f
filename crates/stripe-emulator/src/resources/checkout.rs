//! `/v1/checkout/sessions` (subscription mode), and what paying one does.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::{existing_customer, list_kind, metadata, retrieve_kind, str_field, ApiResult};
use crate::app::Emulator;
use crate::billing::{self, NewSubscription};
use crate::cards::{self, TestCard};
use crate::error::ApiError;
use crate::http::{respond, ApiRequest};
use crate::store::{new_id, Store};

/// Stripe's limit on recurring line items in subscription mode.
const MAX_LINE_ITEMS: usize = 20;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "mode", "customer", "customer_email", "line_items", "success_url", "cancel_url", "client_reference_id", "metadata",
        "subscription_data", "allow_promotion_codes", "payment_method_collection", "excluded_payment_method_types", "payment_method_types",
        "expires_at", "locale", "billing_address_collection", "customer_update", "ui_mode", "expand",
    ])?;
    match p.str("mode")? {
        Some("subscription") => {}
        Some(other @ ("payment" | "setup")) => {
            return Err(p.invalid("mode", format!("The emulator supports mode=subscription only (got '{other}').")))
        }
        Some(other) => {
            return Err(p.invalid("mode", format!("Invalid mode: must be one of payment, setup, or subscription (got '{other}').")))
        }
        None => return Err(p.missing("mode")),
    }
    p.one_of("ui_mode", &["hosted"])?;
    let success_url = p.required_str("success_url")?.to_string();
    for name in ["success_url", "cancel_url"] {
        if let Some(url) = p.non_empty_str(name)? {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(p.invalid(name, format!("Not a valid URL: {url}")));
            }
        }
    }
    let collection = p.one_of("payment_method_collection", &["always", "if_required"])?.unwrap_or("always").to_string();
    let excluded = p.str_list("excluded_payment_method_types")?;
    let types = p.str_list("payment_method_types")?;
    if types.iter().any(|t| t != "card") {
        return Err(p.invalid("payment_method_types", "The emulator supports the card payment method only."));
    }
    if let Some(updates) = p.hash("customer_update")? {
        updates.allow(&["address", "name", "shipping"])?;
        if !p.has("customer") {
            return Err(p.invalid("customer_update", "customer_update can only be used with customer."));
        }
    }
    let (trial_days, sub_metadata, sub_description) = match p.hash("subscription_data")? {
        None => (None, Map::new(), None),
        Some(data) => {
            data.allow(&["trial_period_days", "trial_end", "metadata", "description", "trial_settings"])?;
            let days = data.int("trial_period_days")?;
            if days.is_some_and(|d| !(1..=730).contains(&d)) {
                return Err(data.invalid("trial_period_days", "trial_period_days must be between 1 and 730."));
            }
            (days, metadata(&data, "metadata")?.unwrap_or_default(), data.non_empty_str("description")?.map(str::to_string))
        }
    };
    let item_params = p.list("line_items")?;
    if item_params.is_empty() {
        return Err(p.missing("line_items"));
    }
    if item_params.len() > MAX_LINE_ITEMS {
        return Err(p.invalid("line_items", format!("A subscription-mode session can have at most {MAX_LINE_ITEMS} line items.")));
    }
    let session = emu.apply(&req.info, |store| {
        let customer = existing_customer(store, p, "customer")?.map(str::to_string);
        let customer_email = p.non_empty_str("customer_email")?;
        if customer.is_some() && customer_email.is_some() {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: customer, customer_email.",
                Some("customer_email"),
                "parameters_exclusive",
            ));
        }
        let now = store.now();
        let expires_at = match p.int("expires_at")? {
            None => now + 24 * 3600,
            Some(t) if t >= now + 30 * 60 && t <= now + 24 * 3600 => t,
            Some(_) => return Err(p.invalid("expires_at", "expires_at must be between 30 minutes and 24 hours from now.")),
        };
        let id = new_id("cs_test_");
        let mut lines = Vec::new();
        let mut total = 0;
        for item in &item_params {
            item.allow(&["price", "quantity", "adjustable_quantity"])?;
            let price = crate::resources::subscriptions::recurring_price(store, item, "price")?;
            let quantity = item.int("quantity")?.unwrap_or(1);
            if !(1..=999_999).contains(&quantity) {
                return Err(item.invalid("quantity", "Quantity must be between 1 and 999999."));
            }
            let amount = price["unit_amount"].as_i64().unwrap_or(0) * quantity;
            total += amount;
            let product_name = store.get(price["product"].as_str().unwrap_or_default()).map(|p| p["name"].clone()).unwrap_or(Value::Null);
            lines.push(json!({
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
                "quantity": quantity,
            }));
        }
        let currency = lines[0]["currency"].clone();
        if lines.iter().any(|l| l["currency"] != currency) {
            return Err(p.invalid("line_items", "All line items must use the same currency."));
        }
        let email = match &customer {
            Some(c) => store.get(c).and_then(|c| c["email"].as_str().map(str::to_string)),
            None => customer_email.map(str::to_string),
        };
        let session = json!({
            "id": id,
            "object": "checkout.session",
            "adaptive_pricing": null,
            "after_expiration": null,
            "allow_promotion_codes": p.bool("allow_promotion_codes")?,
            "allowed_payment_method_types": null,
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_address_collection": p.one_of("billing_address_collection", &["auto", "required"])?,
            "cancel_url": p.non_empty_str("cancel_url")?,
            "client_reference_id": p.non_empty_str("client_reference_id")?,
            "client_secret": null,
            "collected_information": null,
            "consent": null,
            "consent_collection": null,
            "created": now,
            "currency": currency,
            "currency_conversion": null,
            "custom_fields": [],
            "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
            "customer": customer,
            "customer_account": null,
            "customer_creation": if customer.is_some() { Value::Null } else { json!("always") },
            "customer_details": null,
            "customer_email": customer_email,
            "discounts": [],
            "excluded_payment_method_types": excluded,
            "expires_at": expires_at,
            "integration_identifier": null,
            "invoice": null,
            "invoice_creation": null,
            "line_items": { "object": "list", "data": lines, "has_more": false, "url": format!("/v1/checkout/sessions/{id}/line_items") },
            "livemode": false,
            "locale": p.non_empty_str("locale")?,
            "managed_payments": null,
            "metadata": metadata(p, "metadata")?.unwrap_or_default(),
            "mode": "subscription",
            "origin_context": null,
            "payment_intent": null,
            "payment_link": null,
            "payment_method_collection": collection,
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
            "success_url": success_url,
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
            "ui_mode": "hosted",
            "url": format!("{}/c/pay/{id}", emu.public_url),
            "wallet_options": null,
        });
        store.insert(session.clone());
        store
            .pending_checkout
            .insert(id.clone(), PendingSubscription { trial_days, metadata: sub_metadata, description: sub_description, email });
        Ok(session)
    })?;
    respond(&emu, &req, &session)
}

/// What a session will create when paid, kept beside it (these are not fields of the session object).
#[derive(Debug, Clone)]
pub struct PendingSubscription {
    pub trial_days: Option<i64>,
    pub metadata: Map<String, Value>,
    pub description: Option<String>,
    /// The email the page shows: the customer's, or `customer_email`.
    pub email: Option<String>,
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    expire_if_due(&emu, &id);
    retrieve_kind(&emu, &req, "checkout.session", &id)
}

pub async fn line_items(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["limit", "starting_after", "ending_before", "expand"])?;
    let expand = req.expand()?;
    emu.read(|store| {
        let session = store.get_kind("checkout.session", &id, Some("id"))?;
        crate::expand::render(store, &session["line_items"], &expand).map(crate::http::JsonBody)
    })
}

/// A session past its `expires_at` becomes `expired` (with its event) the next time it is looked at.
pub fn expire_if_due(emu: &Emulator, id: &str) {
    let _ = emu.apply(&Default::default(), |store| {
        let due = store.get(id).is_some_and(|s| s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|t| t <= store.now()));
        if due {
            mark_expired(store, id);
        }
        Ok(())
    });
}

fn mark_expired(store: &mut Store, id: &str) {
    let previous = store.update(id, Map::from_iter([("status".to_string(), json!("expired")), ("url".to_string(), Value::Null)]));
    store.emit_for("checkout.session.expired", id, Some(previous));
}

pub async fn expire(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let session = emu.apply(&req.info, |store| {
        let session = store.get_kind("checkout.session", &id, Some("id"))?;
        if session["status"] != "open" {
            return Err(ApiError::bad_request(format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                str_field(session, "status")
            )));
        }
        mark_expired(store, &id);
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &session)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let status = p.one_of("status", &["open", "complete", "expired"])?.map(str::to_string);
    let subscription = p.non_empty_str("subscription")?.map(str::to_string);
    list_kind(
        &emu,
        &req,
        "checkout.session",
        &["customer", "status", "subscription", "payment_intent", "payment_link", "customer_details"],
        customer.as_deref(),
        |s| {
            status.as_ref().is_none_or(|st| s["status"] == st.as_str())
                && subscription.as_ref().is_none_or(|sub| s["subscription"] == sub.as_str())
        },
    )
}

/// What the payer typed on the hosted page (or sent to the control endpoint).
pub struct Payment<'a> {
    pub card_number: Option<&'a str>,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The form fields of a payment, as posted by the hosted page or to the control endpoint.
#[derive(serde::Deserialize)]
pub struct PaymentForm {
    card_number: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

impl PaymentForm {
    pub fn payment(&self) -> Payment<'_> {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        Payment { card_number: self.card_number.as_deref(), email: present(&self.email), name: present(&self.name) }
    }
}

/// Pay an open session: customer (if needed), payment method, subscription, invoice and payment,
/// then `checkout.session.completed`. Returns the `success_url` to redirect to. A declined card
/// changes nothing and leaves the session open.
pub fn pay(store: &mut Store, id: &str, payment: &Payment) -> Result<String, ApiError> {
    let session = store.get_kind("checkout.session", id, None)?.clone();
    if session["status"] != "open" || session["expires_at"].as_i64().is_some_and(|t| t <= store.now()) {
        return Err(ApiError::bad_request(format!("This Checkout Session is no longer open (status: {}).", str_field(&session, "status"))));
    }
    let pending = store.pending_checkout.get(id).cloned().ok_or_else(|| ApiError::bad_request("This Checkout Session cannot be paid."))?;
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
        if let cards::Outcome::Declined { decline_code, message } = &card.outcome {
            return Err(ApiError::card_declined(decline_code, message));
        }
        if card.outcome == cards::Outcome::FailsWhenCharged && pending.trial_days.is_none() {
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
        None => {
            let params = crate::form::Params::parse(
                format!("email={}", form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()).as_bytes(),
            )?;
            str_field(&crate::resources::customers::create_in(store, &params)?, "id")
        }
    };
    let payment_method = match &card {
        Some(card) => {
            let pm = cards::create_card_payment_method(store, card, 12, 2034, payment.name, Map::new());
            Some(cards::attach_payment_method(store, pm["id"].as_str().unwrap_or_default(), &customer, "payment_method")?)
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
    store.pending_checkout.remove(id);
    Ok(str_field(&session, "success_url").replace("{CHECKOUT_SESSION_ID}", id))
}
