//! What happens when money moves: subscriptions with their invoices and payment intents,
//! cancellation, and renewals when the emulator's clock is advanced.
//!
//! Every function here takes the locked [`Store`] and emits the events Stripe would, in Stripe's order.

use serde_json::{json, Map, Value};

use crate::calendar::add_interval;
use crate::cards::Outcome;
use crate::error::ApiError;
use crate::store::{new_id, Store};

pub fn is_ended(subscription: &Value) -> bool {
    matches!(subscription["status"].as_str(), Some("canceled" | "incomplete_expired"))
}

/// The legacy `plan` Stripe still renders beside each subscription item's `price`.
fn plan_from_price(price: &Value) -> Value {
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": null,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": price["recurring"]["trial_period_days"],
        "usage_type": price["recurring"]["usage_type"],
    })
}

pub fn subscription_item(subscription: &str, price: &Value, quantity: i64, period: (i64, i64), created: i64) -> Value {
    json!({
        "id": new_id("si_"),
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": created,
        "current_period_end": period.1,
        "current_period_start": period.0,
        "current_trial": null,
        "discounts": [],
        "metadata": {},
        "plan": plan_from_price(price),
        "price": price,
        "quantity": quantity,
        "subscription": subscription,
        "tax_rates": [],
    })
}

/// What a new subscription is made of, whether it comes from Checkout or `POST /v1/subscriptions`.
pub struct NewSubscription {
    pub customer: String,
    /// Recurring prices with their quantities.
    pub items: Vec<(Value, i64)>,
    pub payment_method: Option<String>,
    pub trial_end: Option<i64>,
    pub metadata: Map<String, Value>,
    pub description: Option<String>,
    pub cancel_at_period_end: bool,
    /// `error_if_incomplete`: a declined first payment is an error and nothing is kept.
    pub error_if_incomplete: bool,
}

/// The result of creating a subscription: its id and first invoice, or the card error of its first payment.
pub struct Created {
    pub subscription: String,
    pub invoice: String,
    pub payment_intent: Option<String>,
    pub payment_error: Option<ApiError>,
}

/// Create a subscription and charge its first invoice (nothing is charged during a trial).
pub fn create_subscription(store: &mut Store, spec: NewSubscription) -> Result<Created, ApiError> {
    let now = store.now();
    let first = &spec.items[0].0;
    let currency = first["currency"].as_str().unwrap_or("usd").to_string();
    if spec.items.iter().any(|(p, _)| p["currency"] != currency.as_str()) {
        return Err(ApiError::bad_request("All prices on a subscription must have the same currency."));
    }
    let (interval, count) = (
        first["recurring"]["interval"].as_str().unwrap_or("month").to_string(),
        first["recurring"]["interval_count"].as_i64().unwrap_or(1),
    );
    if spec.items.iter().any(|(p, _)| p["recurring"]["interval"] != interval.as_str() || p["recurring"]["interval_count"] != count) {
        return Err(ApiError::bad_request("All prices on a subscription must have the same recurring interval."));
    }
    let outcome = spec.payment_method.as_ref().and_then(|pm| store.card_outcomes.get(pm).cloned()).unwrap_or(Outcome::Succeeds);
    if spec.error_if_incomplete && spec.trial_end.is_none() {
        if let Some(err) = outcome.charge_error() {
            return Err(err);
        }
    }
    let id = new_id("sub_");
    let period_end = spec.trial_end.unwrap_or_else(|| add_interval(now, &interval, count));
    let items: Vec<Value> = spec.items.iter().map(|(price, qty)| subscription_item(&id, price, *qty, (now, period_end), now)).collect();
    let subscription = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": period_end,
        "billing_cycle_anchor_config": null,
        "billing_mode": { "flexible": null, "type": "classic" },
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": spec.cancel_at_period_end,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "feedback_option": null, "reason": null },
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": spec.customer,
        "customer_account": null,
        "days_until_due": null,
        "default_payment_method": spec.payment_method,
        "default_source": null,
        "default_tax_rates": [],
        "description": spec.description,
        "discounts": [],
        "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "custom_fields": null, "description": null, "footer": null, "issuer": { "type": "self" } },
        "items": { "object": "list", "data": items, "has_more": false, "url": format!("/v1/subscription_items?subscription={id}") },
        "latest_invoice": null,
        "livemode": false,
        "managed_payments": null,
        "metadata": spec.metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": now,
        "status": if spec.trial_end.is_some() { "trialing" } else { "incomplete" },
        "test_clock": null,
        "transfer_data": null,
        "trial_end": spec.trial_end,
        "trial_settings": { "end_behavior": { "billing_cycle_anchor": null, "missing_payment_method": "create_invoice" } },
        "trial_start": spec.trial_end.map(|_| now),
    });
    store.insert(subscription);
    // The first invoice covers the first period; during a trial it is for zero and needs no payment.
    let amount =
        if spec.trial_end.is_some() { 0 } else { spec.items.iter().map(|(p, q)| p["unit_amount"].as_i64().unwrap_or(0) * q).sum() };
    let charged = charge_new_invoice(store, &id, amount, "subscription_create", (now, now))?;
    let status = match (&spec.trial_end, &charged.payment_error) {
        (Some(_), _) => "trialing",
        (None, None) => "active",
        (None, Some(_)) => "incomplete",
    };
    store.update(&id, Map::from_iter([("status".to_string(), json!(status)), ("latest_invoice".to_string(), json!(charged.invoice))]));
    // Stripe announces the subscription once it exists in its first state, before the invoice events.
    let snapshot = store.get(&id).cloned().unwrap_or_default();
    store.emit("customer.subscription.created", &snapshot, None);
    store.flush_deferred();
    Ok(Created { subscription: id, ..charged })
}

/// Create, finalise and try to pay one invoice of a subscription, emitting the invoice and
/// payment-intent events. Events are deferred so the caller can announce the subscription first.
fn charge_new_invoice(
    store: &mut Store,
    subscription_id: &str,
    amount: i64,
    reason: &str,
    period: (i64, i64),
) -> Result<Created, ApiError> {
    let now = store.now();
    let subscription = store.get(subscription_id).cloned().unwrap_or_default();
    let customer_id = subscription["customer"].as_str().unwrap_or_default().to_string();
    let customer = store.get(&customer_id).cloned().unwrap_or_default();
    let currency = subscription["currency"].clone();
    let payment_method = subscription["default_payment_method"]
        .as_str()
        .map(str::to_string)
        .or_else(|| customer["invoice_settings"]["default_payment_method"].as_str().map(str::to_string));
    let invoice_id = new_id("in_");
    let number =
        format!("{}-{:04}", customer["invoice_prefix"].as_str().unwrap_or("EMU"), customer["next_invoice_sequence"].as_i64().unwrap_or(1));
    store.update(
        &customer_id,
        Map::from_iter([("next_invoice_sequence".to_string(), json!(customer["next_invoice_sequence"].as_i64().unwrap_or(1) + 1))]),
    );
    let lines: Vec<Value> = subscription["items"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let unit = if amount == 0 { 0 } else { item["price"]["unit_amount"].as_i64().unwrap_or(0) };
            let qty = item["quantity"].as_i64().unwrap_or(1);
            json!({
                "id": new_id("il_"),
                "object": "line_item",
                "amount": unit * qty,
                "currency": currency,
                "description": format!("{qty} × {} (at {} / {})", item["price"]["nickname"].as_str().unwrap_or("Subscription"), unit, item["price"]["recurring"]["interval"].as_str().unwrap_or("month")),
                "discount_amounts": [],
                "discountable": true,
                "discounts": [],
                "invoice": invoice_id,
                "livemode": false,
                "metadata": {},
                "parent": {
                    "invoice_item_details": null,
                    "subscription_item_details": { "invoice_item": null, "proration": false, "proration_details": { "credited_items": null }, "subscription": subscription_id, "subscription_item": item["id"] },
                    "type": "subscription_item_details",
                },
                "period": { "end": item["current_period_end"], "start": item["current_period_start"] },
                "pretax_credit_amounts": [],
                "pricing": { "price_details": { "price": item["price"]["id"], "product": item["price"]["product"] }, "type": "price_details", "unit_amount_decimal": unit.to_string() },
                "quantity": qty,
                "quantity_decimal": qty.to_string(),
                "subscription": subscription_id,
                "subtotal": unit * qty,
                "taxes": [],
            })
        })
        .collect();
    let mut invoice = json!({
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe Emulator",
        "account_tax_ids": null,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": amount,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": false,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
        "automatically_finalizes_at": null,
        "billing_reason": reason,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "custom_fields": null,
        "customer": customer_id,
        "customer_account": null,
        "customer_address": null,
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "due_date": null,
        "effective_at": now,
        "ending_balance": 0,
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": { "type": "self" },
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": { "object": "list", "data": lines, "has_more": false, "url": format!("/v1/invoices/{invoice_id}/lines") },
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": number,
        "on_behalf_of": null,
        "parent": {
            "quote_details": null,
            "subscription_details": { "metadata": subscription["metadata"], "subscription": subscription_id },
            "type": "subscription_details",
        },
        "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
        "payments": { "object": "list", "data": [], "has_more": false, "url": "/v1/invoice_payments" },
        "period_end": period.1,
        "period_start": period.0,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": "draft",
        "status_transitions": { "finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": null,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": now,
    });
    store.insert(invoice.clone());
    store.defer("invoice.created", &invoice, None);
    invoice["status"] = json!("open");
    invoice["status_transitions"]["finalized_at"] = json!(now);
    store.replace(invoice.clone());
    store.defer("invoice.finalized", &invoice, None);

    if amount == 0 {
        invoice["status"] = json!("paid");
        invoice["status_transitions"]["paid_at"] = json!(now);
        store.replace(invoice.clone());
        store.defer("invoice.paid", &invoice, None);
        store.defer("invoice.payment_succeeded", &invoice, None);
        return Ok(Created { subscription: subscription_id.to_string(), invoice: invoice_id, payment_intent: None, payment_error: None });
    }

    let outcome = match &payment_method {
        Some(pm) => store.card_outcomes.get(pm).cloned().unwrap_or(Outcome::Succeeds),
        None => Outcome::Declined { decline_code: "no_payment_method", message: "The customer has no payment method to charge." },
    };
    let error = outcome.charge_error();
    let pi_id = new_id("pi_");
    let mut intent = json!({
        "id": pi_id,
        "object": "payment_intent",
        "allowed_payment_method_types": null,
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": null,
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": format!("{pi_id}_secret_{}", new_id("")),
        "confirmation_method": "automatic",
        "created": now,
        "currency": currency,
        "customer": customer_id,
        "customer_account": null,
        "description": if reason == "subscription_create" { "Subscription creation" } else { "Subscription update" },
        "excluded_payment_method_types": null,
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": false,
        "managed_payments": null,
        "metadata": {},
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": payment_method,
        "payment_method_configuration_details": null,
        "payment_method_options": null,
        "payment_method_types": ["card"],
        "payment_record": null,
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": "off_session",
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": "requires_confirmation",
        "transfer_data": null,
        "transfer_group": null,
    });
    store.insert(intent.clone());
    store.defer("payment_intent.created", &intent, None);
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(1);
    invoice["payments"]["data"] = json!([{
        "id": new_id("inpay_"),
        "object": "invoice_payment",
        "amount_paid": if error.is_none() { Some(amount) } else { None },
        "amount_requested": amount,
        "created": now,
        "currency": currency,
        "invoice": invoice_id,
        "is_default": true,
        "livemode": false,
        "payment": { "payment_intent": pi_id, "type": "payment_intent" },
        "status": if error.is_none() { "paid" } else { "open" },
        "status_transitions": { "canceled_at": null, "paid_at": if error.is_none() { Some(now) } else { None } },
    }]);
    match &error {
        None => {
            intent["status"] = json!("succeeded");
            intent["amount_received"] = json!(amount);
            store.replace(intent.clone());
            store.defer("payment_intent.succeeded", &intent, None);
            invoice["status"] = json!("paid");
            invoice["amount_paid"] = json!(amount);
            invoice["amount_remaining"] = json!(0);
            invoice["status_transitions"]["paid_at"] = json!(now);
            store.replace(invoice.clone());
            store.defer("invoice.paid", &invoice, None);
            store.defer("invoice.payment_succeeded", &invoice, None);
        }
        Some(err) => {
            intent["status"] = json!("requires_payment_method");
            intent["last_payment_error"] = json!({
                "code": err.code, "decline_code": err.decline_code, "doc_url": null, "message": err.message,
                "param": null, "payment_method": payment_method.as_ref().and_then(|pm| store.get(pm)).cloned(), "type": "card_error",
            });
            store.replace(intent.clone());
            store.defer("payment_intent.payment_failed", &intent, None);
            invoice["next_payment_attempt"] =
                if reason == "subscription_create" { Value::Null } else { json!(add_interval(now, "day", 3)) };
            store.replace(invoice.clone());
            store.defer("invoice.payment_failed", &invoice, None);
        }
    }
    Ok(Created { subscription: subscription_id.to_string(), invoice: invoice_id, payment_intent: Some(pi_id), payment_error: error })
}

/// End a subscription now (`DELETE /v1/subscriptions/{id}`, a deleted customer, a period end with
/// `cancel_at_period_end`).
pub fn cancel_now(store: &mut Store, id: &str, reason: &str) {
    let now = store.now();
    let details = json!({ "comment": null, "feedback": null, "feedback_option": null, "reason": reason });
    let previous = store.update(
        id,
        Map::from_iter([
            ("status".to_string(), json!("canceled")),
            ("canceled_at".to_string(), json!(now)),
            ("ended_at".to_string(), json!(now)),
            ("cancellation_details".to_string(), details),
        ]),
    );
    store.emit_for("customer.subscription.deleted", id, Some(previous));
}

/// Move every live subscription to the store's current time: trials end, periods renew (charging
/// the card), and scheduled cancellations take effect. Called after the clock is advanced.
pub fn catch_up(store: &mut Store) {
    let now = store.now();
    let live: Vec<String> = store
        .iter_kind("subscription", None)
        .filter(|s| !is_ended(s) && s["status"] != "incomplete")
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    for id in live.into_iter().rev() {
        // Each loop turn handles one period boundary that has passed.
        for _ in 0..1000 {
            let Some(sub) = store.get(&id).cloned() else { break };
            if is_ended(&sub) {
                break;
            }
            let period_end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap_or(i64::MAX);
            if sub["cancel_at"].as_i64().is_some_and(|t| t <= now && t <= period_end) {
                cancel_now(store, &id, "cancellation_requested");
                break;
            }
            if period_end > now {
                break;
            }
            if sub["cancel_at_period_end"] == true {
                cancel_now(store, &id, "cancellation_requested");
                break;
            }
            start_new_period(store, &id, &sub, period_end);
        }
    }
}

/// Start a new period at `boundary` and charge it; a failed charge makes the subscription `past_due`.
/// Used for renewals, for a trial ended early, and for a switch to a price with another interval.
pub fn start_new_period(store: &mut Store, id: &str, sub: &Value, boundary: i64) {
    let mut items = sub["items"].clone();
    let mut amount = 0;
    if let Some(data) = items["data"].as_array_mut() {
        for item in data.iter_mut() {
            let interval = item["price"]["recurring"]["interval"].as_str().unwrap_or("month").to_string();
            let count = item["price"]["recurring"]["interval_count"].as_i64().unwrap_or(1);
            item["current_period_start"] = json!(boundary);
            item["current_period_end"] = json!(add_interval(boundary, &interval, count));
            amount += item["price"]["unit_amount"].as_i64().unwrap_or(0) * item["quantity"].as_i64().unwrap_or(1);
        }
    }
    let period_end = items["data"][0]["current_period_end"].as_i64().unwrap_or(boundary);
    let mut changes = Map::from_iter([("items".to_string(), items)]);
    // A trial that ends is followed by a normal cycle invoice, and the status moves to active.
    store.update(id, changes.clone());
    let Ok(charged) = charge_new_invoice(store, id, amount, "subscription_cycle", (boundary, period_end)) else { return };
    let status = if charged.payment_error.is_some() { "past_due" } else { "active" };
    changes = Map::from_iter([("status".to_string(), json!(status)), ("latest_invoice".to_string(), json!(charged.invoice))]);
    // previous_attributes must describe the state before this renewal, items included.
    let mut previous = Map::new();
    for (k, _) in changes.iter() {
        previous.insert(k.clone(), sub[k].clone());
    }
    previous.insert("items".to_string(), sub["items"].clone());
    store.update(id, changes);
    let previous: Map<String, Value> = previous.into_iter().filter(|(k, v)| store.get(id).is_some_and(|s| &s[k] != v)).collect();
    store.emit_for("customer.subscription.updated", id, Some(previous));
    store.flush_deferred();
}
