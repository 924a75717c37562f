//! What happens when money moves: subscriptions with their invoices, payment intents and charges;
//! renewals on the billing-cycle anchor; failed renewals retried on the dunning schedule until the
//! configured end state; paused collection, paused subscriptions and resuming; the trial notice.
//!
//! Every function takes the locked [`Store`] and emits the events Stripe would, in Stripe's order.
//! Time moves in [`catch_up`]: each due step (a renewal, a draft invoice's collection, a retry, a
//! scheduled cancellation) runs at its own time, so its objects and events carry that time.

use serde_json::{json, Map, Value};

use super::discounts;
use super::schedules::{self, AtBoundary};
use crate::config::{Dunning, FinalState};
use crate::model::calendar::add_interval;
use crate::model::cards::Outcome;
use crate::model::{is_ended, new_id, str_field, ApiError};
use crate::store::Store;

/// How long a renewal invoice stays a draft before it is finalized and charged (Stripe: about an hour).
pub const DRAFT_SECONDS: i64 = 3600;
/// `customer.subscription.trial_will_end` comes this long before the trial ends.
pub const TRIAL_NOTICE_SECONDS: i64 = 3 * 86_400;
/// An `incomplete` subscription whose first invoice is not paid within this becomes `incomplete_expired`.
pub const INCOMPLETE_SECONDS: i64 = 23 * 3600;

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
    let mut item = json!({
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
    });
    // A metered item has no quantity: its meter counts what it bills.
    if is_metered(price) {
        item.as_object_mut().map(|fields| fields.remove("quantity"));
    }
    item
}

/// An item given a new price (and maybe quantity): same id, creation and period, as a price swap keeps the item.
pub fn swap_price(subscription: &str, item: &Value, price: &Value, quantity: Option<i64>, now: i64) -> Value {
    let mut swapped = subscription_item(
        subscription,
        price,
        quantity.or(item["quantity"].as_i64()).unwrap_or(1),
        (item["current_period_start"].as_i64().unwrap_or(now), item["current_period_end"].as_i64().unwrap_or(now)),
        item["created"].as_i64().unwrap_or(now),
    );
    swapped["id"] = item["id"].clone();
    swapped
}

fn interval_of(price: &Value) -> (String, i64) {
    (price["recurring"]["interval"].as_str().unwrap_or("month").to_string(), price["recurring"]["interval_count"].as_i64().unwrap_or(1))
}

/// The first period end after `after`, counted from the billing-cycle anchor: a subscription
/// anchored on 31 January renews on 28 February, then 31 March (never from the previous end).
pub fn next_period_end(anchor: i64, interval: &str, count: i64, after: i64) -> i64 {
    (1..).map(|n| add_interval(anchor, interval, count * n)).find(|end| *end > after).expect("periods grow without bound")
}

/// What a new subscription is made of, whether it comes from Checkout or `POST /v1/subscriptions`.
pub struct NewSubscription {
    pub customer: String,
    /// Recurring prices with their quantities.
    pub items: Vec<(Value, i64)>,
    pub payment_method: Option<String>,
    pub trial_end: Option<i64>,
    /// `trial_settings[end_behavior][missing_payment_method]`: `create_invoice`, `cancel` or `pause`.
    pub missing_payment_method: String,
    pub metadata: Map<String, Value>,
    pub description: Option<String>,
    pub cancel_at_period_end: bool,
    /// `error_if_incomplete`: a declined first payment is an error and nothing is kept.
    pub error_if_incomplete: bool,
    /// A coupon to apply from the start (a promotion code entered at Checkout).
    pub discount: Option<discounts::NewDiscount>,
    /// Made by a Checkout Session: Stripe announces it `incomplete`, and its first payment then
    /// makes it `active` with a `customer.subscription.updated` (a trial starts `trialing`).
    pub from_checkout: bool,
    /// `billing_mode[type]`: `flexible` (the default since basil) or `classic`.
    pub flexible: bool,
}

/// `billing_mode` as a subscription shows it; only `flexible` subscriptions can be paused.
pub fn billing_mode(flexible: bool, at: i64) -> Value {
    if flexible {
        json!({ "flexible": { "proration_discounts": "included" }, "type": "flexible", "updated_at": at })
    } else {
        json!({ "flexible": null, "type": "classic" })
    }
}

/// The result of creating a subscription: its id and first invoice, or the card error of its first payment.
pub struct Created {
    pub subscription: String,
    pub invoice: String,
    pub payment_error: Option<ApiError>,
}

/// Create a subscription and charge its first invoice at once (nothing is charged during a trial).
pub fn create_subscription(store: &mut Store, spec: NewSubscription) -> Result<Created, ApiError> {
    store.use_clock_of(&spec.customer);
    let now = store.now();
    let first = &spec.items[0].0;
    let currency = first["currency"].as_str().unwrap_or("usd").to_string();
    if spec.items.iter().any(|(p, _)| p["currency"] != currency.as_str()) {
        return Err(ApiError::bad_request("All prices on a subscription must have the same currency."));
    }
    let (interval, count) = interval_of(first);
    if spec.items.iter().any(|(p, _)| interval_of(p) != (interval.clone(), count)) {
        return Err(ApiError::bad_request("All prices on a subscription must have the same recurring interval."));
    }
    let card = charged_card(store, spec.payment_method.as_deref(), &spec.customer);
    let outcome = card.as_ref().and_then(|pm| store.card_outcome(pm).cloned()).unwrap_or(Outcome::Succeeds);
    if spec.error_if_incomplete && spec.trial_end.is_none() {
        if let Some(err) = on_session(outcome).charge_error() {
            return Err(err);
        }
    }
    let id = new_id("sub_");
    // The anchor is the trial's end, or now; every later period end is counted from it.
    let anchor = spec.trial_end.unwrap_or(now);
    let period_end = spec.trial_end.unwrap_or_else(|| next_period_end(anchor, &interval, count, now));
    let items: Vec<Value> = spec.items.iter().map(|(price, qty)| subscription_item(&id, price, *qty, (now, period_end), now)).collect();
    let test_clock = store.get(&spec.customer).map(|c| c["test_clock"].clone()).unwrap_or(Value::Null);
    let subscription = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": anchor,
        "billing_cycle_anchor_config": null,
        "billing_mode": billing_mode(spec.flexible, now),
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": if spec.cancel_at_period_end { json!(period_end) } else { Value::Null },
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
        "test_clock": test_clock,
        "transfer_data": null,
        "trial_end": spec.trial_end,
        "trial_settings": { "end_behavior": { "billing_cycle_anchor": null, "missing_payment_method": spec.missing_payment_method } },
        "trial_start": spec.trial_end.map(|_| now),
    });
    let mut subscription = subscription;
    if let Some(discount) = &spec.discount {
        subscription["discounts"] = json!([discounts::apply(store, discount, &spec.customer, &id)]);
    }
    store.insert(subscription.clone());
    // The first invoice covers the first period; during a trial it is for zero and needs no payment.
    // Metered items bill their usage at the period's end: nothing yet.
    let licensed = spec.items.iter().filter(|(price, _)| !is_metered(price));
    let amount = if spec.trial_end.is_some() { 0 } else { licensed.map(|(p, q)| unit_amount(p) * q).sum() };
    let invoice = new_invoice(store, &subscription, amount, "subscription_create", (now, now), false, &Usage::new());
    finalize(store, &invoice);
    let payment_error = attempt(store, &invoice, None, true);
    let status = match (&spec.trial_end, &payment_error) {
        (Some(_), _) => "trialing",
        (None, None) => "active",
        (None, Some(_)) => "incomplete",
    };
    // Stripe announces the subscription once it exists in its first state, before the invoice events.
    if spec.from_checkout {
        let first_state = if spec.trial_end.is_some() { "trialing" } else { "incomplete" };
        store.update(&id, Map::from_iter([("status".to_string(), json!(first_state)), ("latest_invoice".to_string(), json!(invoice))]));
        store.emit_for("customer.subscription.created", &id, None);
        store.flush_deferred();
        set(store, &id, Map::from_iter([("status".to_string(), json!(status))]));
    } else {
        store.update(&id, Map::from_iter([("status".to_string(), json!(status)), ("latest_invoice".to_string(), json!(invoice))]));
        store.emit_for("customer.subscription.created", &id, None);
        store.flush_deferred();
    }
    // A trial shorter than the notice period is announced at once.
    if spec.trial_end.is_some_and(|end| end - now <= TRIAL_NOTICE_SECONDS) {
        trial_will_end(store, &id);
    }
    Ok(Created { subscription: id, invoice, payment_error })
}

fn unit_amount(price: &Value) -> i64 {
    price["unit_amount"].as_i64().unwrap_or(0)
}

fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// What metered items bill on an invoice: by item id, the usage their meter counted and the
/// period it was counted over (billed in arrears; licensed items bill the period ahead).
type Usage = std::collections::HashMap<String, (i64, (i64, i64))>;

/// The quantity an item bills: a licensed item its quantity, a metered one its usage (none
/// counted yet: zero).
fn billed_quantity(item: &Value, usage: &Usage) -> i64 {
    match is_metered(&item["price"]) {
        true => usage.get(item["id"].as_str().unwrap_or_default()).map_or(0, |(quantity, _)| *quantity),
        false => item["quantity"].as_i64().unwrap_or(1),
    }
}

/// The usage of `subscription`'s metered items over `[start, until)` of each item's period: the
/// meter's aggregate for the customer, rounded to whole units.
fn usage_of(store: &Store, subscription: &Value, until: Option<i64>) -> Usage {
    let customer = str_field(subscription, "customer");
    subscription["items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| is_metered(&item["price"]))
        .filter_map(|item| {
            let meter = store.get(item["price"]["recurring"]["meter"].as_str()?)?;
            let start = item["current_period_start"].as_i64()?;
            let end = until.unwrap_or(item["current_period_end"].as_i64()?);
            let counted = super::meters::aggregate(store, meter, &customer, start, end);
            Some((str_field(item, "id"), (counted.round().max(0.0) as i64, (start, end))))
        })
        .collect()
}

/// A card that asks for authentication passes when the payer is present (Checkout's page).
fn on_session(outcome: Outcome) -> Outcome {
    if outcome == Outcome::AuthenticationRequired {
        Outcome::Succeeds
    } else {
        outcome
    }
}

/// The payment method a subscription's invoices are charged to: its own default, else the customer's.
fn payment_method_of(store: &Store, subscription: &Value) -> Option<String> {
    charged_card(store, subscription["default_payment_method"].as_str(), subscription["customer"].as_str().unwrap_or_default())
}

/// A subscription's own payment method if it has one, else its customer's default.
fn charged_card(store: &Store, own: Option<&str>, customer: &str) -> Option<String> {
    own.map(str::to_string).or_else(|| store.get(customer)?["invoice_settings"]["default_payment_method"].as_str().map(str::to_string))
}

/// Create a draft invoice for one period of a subscription (`invoice.created`, deferred).
/// A renewal's draft waits [`DRAFT_SECONDS`] before it is finalized and charged.
fn new_invoice(
    store: &mut Store,
    subscription: &Value,
    amount: i64,
    reason: &str,
    period: (i64, i64),
    waits: bool,
    usage: &Usage,
) -> String {
    let invoice_id = new_id("in_");
    let mut invoice = invoice_object(store, &invoice_id, subscription, Billed { amount, usage }, reason, period, waits);
    // Prorations waiting for this invoice (`create_prorations`) go on it.
    let pending = pending_items(store, &str_field(subscription, "id"));
    with_pending_items(&mut invoice, &pending);
    for item in &pending {
        store.update(&str_field(item, "id"), Map::from_iter([("invoice".to_string(), json!(invoice_id))]));
    }
    store.insert(invoice.clone());
    store.defer("invoice.created", &invoice, None);
    let applied: Vec<(String, i64)> = invoice["total_discount_amounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| (str_field(d, "discount"), d["amount"].as_i64().unwrap_or(0)))
        .collect();
    discounts::use_up_once(store, &str_field(subscription, "id"), &applied);
    invoice_id
}

/// The invoice `POST /v1/invoices/create_preview` shows: the next one of `subscription` (as it
/// is, or as a change would make it; a new one has no period yet), never stored, its id starting
/// `upcoming_in`.
pub fn preview_invoice(store: &Store, subscription: &Value) -> Value {
    let now = store.now();
    // Metered items: the usage counted so far in the current period (events are never more than
    // minutes ahead of time, so the whole period's count is the count so far).
    let usage = usage_of(store, subscription, None);
    let mut subscription = subscription.clone();
    let (start, end, reason) = match subscription["items"]["data"][0]["current_period_end"].as_i64() {
        Some(end) if subscription["status"] != "incomplete" => {
            let anchor = subscription["billing_cycle_anchor"].as_i64().unwrap_or(end);
            let (interval, count) = interval_of(&subscription["items"]["data"][0]["price"]);
            (end, next_period_end(anchor, &interval, count, end), "upcoming")
        }
        _ => {
            let (interval, count) = interval_of(&subscription["items"]["data"][0]["price"]);
            (now, add_interval(now, &interval, count), "subscription_create")
        }
    };
    for item in subscription["items"]["data"].as_array_mut().into_iter().flatten() {
        item["current_period_start"] = json!(start);
        item["current_period_end"] = json!(end);
    }
    let amount = subscription["items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| unit_amount(&item["price"]) * billed_quantity(item, &usage))
        .sum();
    let mut invoice = invoice_object(
        store,
        &format!("upcoming_{}", new_id("in_")),
        &subscription,
        Billed { amount, usage: &usage },
        reason,
        (start, end),
        true,
    );
    with_pending_items(&mut invoice, &pending_items(store, &str_field(&subscription, "id")));
    invoice["created"] = json!(start);
    invoice["automatically_finalizes_at"] = json!(start + DRAFT_SECONDS);
    invoice["next_payment_attempt"] = json!(start + DRAFT_SECONDS);
    invoice
}

/// What an invoice bills: its total before discounts, and what metered items used.
struct Billed<'a> {
    amount: i64,
    usage: &'a Usage,
}

fn invoice_object(
    store: &Store,
    invoice_id: &str,
    subscription: &Value,
    billed: Billed<'_>,
    reason: &str,
    period: (i64, i64),
    waits: bool,
) -> Value {
    let Billed { amount, usage } = billed;
    let now = store.now();
    let subscription_id = subscription["id"].as_str().unwrap_or_default();
    let customer_id = str_field(subscription, "customer");
    let customer = store.get(&customer_id).cloned().unwrap_or_default();
    let currency = subscription["currency"].clone();
    let lines: Vec<Value> = subscription["items"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let unit = if amount == 0 { 0 } else { unit_amount(&item["price"]) };
            let qty = billed_quantity(item, usage);
            // A metered line is for the period its usage was counted over.
            let line_period = match usage.get(item["id"].as_str().unwrap_or_default()) {
                Some((_, (start, end))) => json!({ "end": end, "start": start }),
                None => json!({ "end": item["current_period_end"], "start": item["current_period_start"] }),
            };
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
                "period": line_period,
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
    let finalizes_at = if waits { json!(now + DRAFT_SECONDS) } else { Value::Null };
    // What the subscription's discounts take off: on the first line (subscriptions here bill one
    // price at a time) and in the invoice's totals.
    let off = discounts::amounts_off(store, subscription, amount, period.0);
    let discount_amounts: Vec<Value> = off.iter().map(|(discount, amount)| json!({ "amount": amount, "discount": discount })).collect();
    let applied: Vec<&String> = off.iter().map(|(discount, _)| discount).collect();
    let mut lines = lines;
    if let Some(first) = lines.first_mut() {
        first["discount_amounts"] = json!(discount_amounts);
        first["discounts"] = json!(applied);
    }
    let total = amount - off.iter().map(|(_, amount)| amount).sum::<i64>();
    json!({
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe Emulator",
        "account_tax_ids": null,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": total,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": waits,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null },
        "automatically_finalizes_at": finalizes_at,
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
        "discounts": applied,
        "due_date": null,
        "effective_at": null,
        "ending_balance": null,
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
        "next_payment_attempt": finalizes_at,
        "number": null,
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
        "test_clock": subscription["test_clock"],
        "total": total,
        "total_discount_amounts": discount_amounts,
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": now,
    })
}

/// Finalize a draft: `open`, numbered, with the payment intent that will collect it and the
/// default invoice payment that links the two (`invoice.finalized`, `payment_intent.created`).
fn finalize(store: &mut Store, invoice_id: &str) {
    let now = store.now();
    let mut invoice = store.get(invoice_id).cloned().unwrap_or_default();
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    // The number is the customer's next in sequence, given at finalization.
    let customer_id = str_field(&invoice, "customer");
    let customer = store.get(&customer_id).cloned().unwrap_or_default();
    let sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
    store.update(&customer_id, Map::from_iter([("next_invoice_sequence".to_string(), json!(sequence + 1))]));
    invoice["number"] = json!(format!("{}-{:04}", customer["invoice_prefix"].as_str().unwrap_or("EMU"), sequence));
    invoice["status"] = json!("open");
    invoice["effective_at"] = json!(now);
    invoice["ending_balance"] = json!(0);
    invoice["automatically_finalizes_at"] = Value::Null;
    invoice["status_transitions"]["finalized_at"] = json!(now);
    if amount > 0 {
        let customer = invoice["customer"].clone();
        let pi_id = new_id("pi_");
        let intent = json!({
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
            "currency": invoice["currency"],
            "customer": customer,
            "customer_account": null,
            "description": if invoice["billing_reason"] == "subscription_create" { "Subscription creation" } else { "Subscription update" },
            "excluded_payment_method_types": null,
            "last_payment_error": null,
            "latest_charge": null,
            "livemode": false,
            "managed_payments": null,
            "metadata": {},
            "next_action": null,
            "on_behalf_of": null,
            "payment_method": null,
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
            "status": "requires_payment_method",
            "transfer_data": null,
            "transfer_group": null,
        });
        store.insert(intent.clone());
        let payment = json!({
            "id": new_id("inpay_"),
            "object": "invoice_payment",
            "amount_paid": null,
            "amount_requested": amount,
            "created": now,
            "currency": invoice["currency"],
            "invoice": invoice_id,
            "is_default": true,
            "livemode": false,
            "payment": { "payment_intent": pi_id, "type": "payment_intent" },
            "status": "open",
            "status_transitions": { "canceled_at": null, "paid_at": null },
        });
        store.insert(payment.clone());
        invoice["payments"]["data"] = json!([payment]);
        store.replace(invoice.clone());
        store.defer("invoice.finalized", &invoice, None);
        store.defer("payment_intent.created", &intent, None);
    } else {
        store.replace(invoice.clone());
        store.defer("invoice.finalized", &invoice, None);
    }
}

/// Try to pay an open invoice with its subscription's payment method: `None` when it is paid, else
/// the card error. `dunning` schedules the next retry after a failure (`None`: no retries, as for
/// a subscription's first invoice); `present` says the payer is there to authenticate.
/// Events are deferred, for the caller to order.
fn attempt(store: &mut Store, invoice_id: &str, dunning: Option<&Dunning>, present: bool) -> Option<ApiError> {
    let now = store.now();
    let mut invoice = store.get(invoice_id).cloned().unwrap_or_default();
    let subscription = store.get(invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default()).cloned();
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    if amount == 0 {
        mark_paid(store, &mut invoice, now);
        return None;
    }
    let payment_method = subscription.as_ref().and_then(|s| payment_method_of(store, s));
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0) + 1;
    let previous =
        Map::from_iter(["attempt_count", "attempted", "next_payment_attempt"].map(|field| (field.to_string(), invoice[field].clone())));
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(attempts);
    // Retry n waits its number of days after the attempt before it.
    let next_retry = dunning.and_then(|d| d.retry_days.get(attempts as usize - 1)).map(|days| now + days * 86_400);
    let pi_id = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap_or_default().to_string();
    // A hard decline is not retried on the same card: a scheduled retry passes without a charge
    // (it still counts in `attempt_count`) until the customer gives another payment method.
    if dunning.is_some() {
        if let Some(err) = store.get(&pi_id).and_then(|intent| hard_decline_of(intent, payment_method.as_deref())) {
            invoice["next_payment_attempt"] = json!(next_retry);
            store.replace(invoice.clone());
            store.defer("invoice.updated", &invoice, Some(previous));
            return Some(err);
        }
    }
    let error = match &payment_method {
        None => Some(ApiError::card_declined("no_payment_method", "The customer has no payment method to charge.")),
        Some(pm) => {
            let outcome = store.card_outcome(pm).cloned().unwrap_or(Outcome::Succeeds);
            (if present { on_session(outcome) } else { outcome }).charge_error()
        }
    };
    let mut intent = store.get(&pi_id).cloned().unwrap_or_default();
    intent["payment_method"] = json!(payment_method);
    let needs_action = error.as_ref().is_some_and(|e| e.code.as_deref() == Some("authentication_required"));
    let charge = match (&payment_method, needs_action) {
        (Some(pm), false) => Some(new_charge(store, &intent, pm, error.as_ref())),
        _ => None, // no card, or one waiting for authentication: nothing was charged
    };
    if let Some(charge) = &charge {
        intent["latest_charge"] = charge["id"].clone();
    }
    let Some(err) = error else {
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["last_payment_error"] = Value::Null;
        intent["next_action"] = Value::Null;
        store.replace(intent.clone());
        store.defer("payment_intent.succeeded", &intent, None);
        if let Some(charge) = &charge {
            store.defer("charge.succeeded", charge, None);
        }
        mark_paid(store, &mut invoice, now);
        return None;
    };
    intent["status"] = json!(if needs_action { "requires_action" } else { "requires_payment_method" });
    intent["next_action"] = if needs_action { json!({ "type": "use_stripe_sdk", "use_stripe_sdk": {} }) } else { Value::Null };
    // `doc_url` and `param` are optional and never null in Stripe's schema: a card error has neither.
    intent["last_payment_error"] = json!({
        "code": err.code, "decline_code": err.decline_code, "message": err.message,
        "payment_method": payment_method.as_ref().and_then(|pm| store.get(pm)).cloned(), "type": "card_error",
    });
    store.replace(intent.clone());
    if needs_action {
        store.defer("payment_intent.requires_action", &intent, None);
    } else {
        store.defer("payment_intent.payment_failed", &intent, None);
    }
    if let Some(charge) = &charge {
        store.defer("charge.failed", charge, None);
    }
    invoice["next_payment_attempt"] = json!(next_retry);
    store.replace(invoice.clone());
    store.defer("invoice.payment_failed", &invoice, None);
    if needs_action {
        store.defer("invoice.payment_action_required", &invoice, None);
    }
    store.defer("invoice.updated", &invoice, Some(previous));
    Some(err)
}

/// Decline codes Stripe does not retry on the same payment method (its Smart Retries list).
const HARD_DECLINES: &[&str] = &[
    "incorrect_number", "lost_card", "pickup_card", "stolen_card", "revocation_of_authorization", "revocation_of_all_authorizations",
    "authentication_required", "highest_risk_level",
];

/// The error of a payment intent's last attempt when it was a hard decline of `payment_method`.
fn hard_decline_of(intent: &Value, payment_method: Option<&str>) -> Option<ApiError> {
    let error = &intent["last_payment_error"];
    let code = error["decline_code"].as_str().or(error["code"].as_str())?;
    let same_card = payment_method.is_some() && error["payment_method"]["id"].as_str() == payment_method;
    (same_card && HARD_DECLINES.contains(&code)).then(|| ApiError {
        code: error["code"].as_str().map(str::to_string),
        ..ApiError::card_declined(code, error["message"].as_str().unwrap_or("Your card was declined."))
    })
}

fn mark_paid(store: &mut Store, invoice: &mut Value, now: i64) {
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    let previous = Map::from_iter(
        ["status", "amount_paid", "amount_remaining", "next_payment_attempt"].map(|field| (field.to_string(), invoice[field].clone())),
    );
    invoice["status"] = json!("paid");
    invoice["amount_paid"] = json!(amount);
    invoice["amount_remaining"] = json!(0);
    invoice["next_payment_attempt"] = Value::Null;
    invoice["status_transitions"]["paid_at"] = json!(now);
    let payment = invoice["payments"]["data"].get_mut(0).map(|p| {
        p["status"] = json!("paid");
        p["amount_paid"] = json!(amount);
        p["status_transitions"]["paid_at"] = json!(now);
        p.clone()
    });
    store.replace(invoice.clone());
    store.defer("invoice.paid", invoice, None);
    store.defer("invoice.payment_succeeded", invoice, None);
    if let Some(payment) = payment {
        store.replace(payment.clone());
        store.defer("invoice_payment.paid", &payment, None);
    }
    store.defer("invoice.updated", invoice, Some(previous));
}

/// A charge of a payment intent to a card, succeeded or failed with `error`.
fn new_charge(store: &mut Store, intent: &Value, payment_method: &str, error: Option<&ApiError>) -> Value {
    let now = store.now();
    let pm = store.get(payment_method).cloned().unwrap_or_default();
    let card = &pm["card"];
    let paid = error.is_none();
    let charge = json!({
        "id": new_id("ch_"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": if paid { intent["amount"].clone() } else { json!(0) },
        "amount_refunded": 0,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": null,
        "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": "STRIPE EMULATOR",
        "captured": paid,
        "created": now,
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": error.map(|e| e.code.clone()),
        "failure_message": error.map(|e| e.message.clone()),
        "fraud_details": {},
        "livemode": false,
        "metadata": {},
        "on_behalf_of": null,
        "outcome": {
            "advice_code": null,
            "network_advice_code": null,
            "network_decline_code": null,
            "network_status": if paid { "approved_by_network" } else { "declined_by_network" },
            "reason": error.and_then(|e| e.decline_code.clone()),
            "risk_level": "normal",
            "seller_message": if paid { "Payment complete." } else { "The bank did not return any further details with this decline." },
            "type": if paid { "authorized" } else { "issuer_declined" },
        },
        "paid": paid,
        "payment_intent": intent["id"],
        "payment_method": payment_method,
        "payment_method_details": {
            "card": {
                "amount_authorized": if paid { intent["amount"].clone() } else { Value::Null },
                "authorization_code": null,
                "brand": card["brand"],
                "checks": card["checks"],
                "country": card["country"],
                "electronic_commerce_indicator": null,
                "exp_month": card["exp_month"],
                "exp_year": card["exp_year"],
                "fingerprint": card["fingerprint"],
                "funding": card["funding"],
                "installments": null,
                "last4": card["last4"],
                "mandate": null,
                "network": card["brand"],
                "network_transaction_id": null,
                "regulated_status": card["regulated_status"],
                "three_d_secure": null,
                "transaction_link_id": null,
                "wallet": null,
            },
            "type": "card",
        },
        "receipt_email": null,
        "receipt_number": null,
        "receipt_url": null,
        "refunded": false,
        "review": null,
        "shipping": null,
        "source": null,
        "source_transfer": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": if paid { "succeeded" } else { "failed" },
        "transfer_data": null,
        "transfer_group": null,
    });
    store.insert(charge.clone());
    charge
}

/// End a subscription now (`DELETE /v1/subscriptions/{id}`, a deleted customer, a period end with
/// `cancel_at_period_end`, the last failed retry). Open invoices stop being retried.
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
    if let Some(invoice) = store.get(id).and_then(|s| s["latest_invoice"].as_str()).map(str::to_string) {
        if store.get(&invoice).is_some_and(|i| !i["next_payment_attempt"].is_null() || i["status"] == "draft") {
            store.update(
                &invoice,
                Map::from_iter([("next_payment_attempt".to_string(), Value::Null), ("auto_advance".to_string(), json!(false))]),
            );
        }
    }
    store.emit_for("customer.subscription.deleted", id, Some(previous));
}

/// `customer.subscription.trial_will_end`, once per trial end.
fn trial_will_end(store: &mut Store, id: &str) {
    let trial_end = store.get(id).map(|s| s["trial_end"].clone()).unwrap_or_default();
    if store.first_notice(format!("trial_will_end {id} {trial_end}")) {
        store.emit_for("customer.subscription.trial_will_end", id, None);
    }
}

/// A change to a subscription's fields with its `customer.subscription.updated`.
fn set(store: &mut Store, id: &str, changes: Map<String, Value>) {
    store.commit(id, changes, "customer.subscription.updated");
}

/// Start a new period at `boundary` (a renewal, a trial's end), with its draft invoice, which is
/// collected [`DRAFT_SECONDS`] later, or at once with `now`. With `reset_anchor` the anchor moves
/// to `boundary` (a trial ended early, a switch to a price with another interval).
fn roll(store: &mut Store, id: &str, boundary: i64, reset_anchor: bool, dunning: &Dunning, now: bool) {
    let Some(sub) = store.get(id).cloned() else { return };
    let trial_ending = sub["status"] == "trialing";
    if trial_ending && payment_method_of(store, &sub).is_none() {
        match sub["trial_settings"]["end_behavior"]["missing_payment_method"].as_str() {
            Some("cancel") => return cancel_now(store, id, "cancellation_requested"),
            Some("pause") => return pause_now(store, id, "trial_end_without_payment_method"),
            _ => {} // create_invoice: the invoice fails for want of a card, and the subscription is past_due
        }
    }
    // A schedule's next phase may bring other prices (a different interval restarts the anchor);
    // a schedule that ends may end the subscription.
    let mut sub = sub;
    let mut reset_anchor = reset_anchor;
    match schedules::at_boundary(store, &sub, boundary) {
        AtBoundary::Nothing => {}
        AtBoundary::Cancel => return cancel_now(store, id, "cancellation_requested"),
        AtBoundary::Phase { price, quantity } => {
            reset_anchor |= interval_of(&price) != interval_of(&sub["items"]["data"][0]["price"]);
            let first = &mut sub["items"]["data"][0];
            *first = swap_price(id, first, &price, quantity, boundary);
        }
    }
    let anchor = if reset_anchor { boundary } else { sub["billing_cycle_anchor"].as_i64().unwrap_or(boundary) };
    let (interval, count) = interval_of(&sub["items"]["data"][0]["price"]);
    let period_end = next_period_end(anchor, &interval, count, boundary);
    // Metered items bill the period that ends: what their meters counted over it.
    let usage = usage_of(store, &sub, Some(boundary));
    // The subscription as the new period has it: its invoice's licensed lines are for that period.
    let mut renewed = sub.clone();
    let mut amount = 0;
    for item in renewed["items"]["data"].as_array_mut().into_iter().flatten() {
        item["current_period_start"] = json!(boundary);
        item["current_period_end"] = json!(period_end);
        amount += unit_amount(&item["price"]) * billed_quantity(item, &usage);
    }
    let invoice = new_invoice(store, &renewed, amount, "subscription_cycle", (boundary, period_end), !now, &usage);
    let mut changes = Map::from_iter([("items".to_string(), renewed["items"].take()), ("latest_invoice".to_string(), json!(invoice))]);
    if trial_ending {
        changes.insert("status".into(), json!("active"));
    }
    if trial_ending && reset_anchor {
        changes.insert("trial_end".into(), json!(boundary));
    }
    if reset_anchor {
        changes.insert("billing_cycle_anchor".into(), json!(boundary));
    }
    if let Some(behavior) = sub["pause_collection"]["behavior"].as_str() {
        hold(store, &invoice, behavior);
        store.flush_deferred();
        set(store, id, changes);
        return;
    }
    store.flush_deferred();
    set(store, id, changes);
    if now {
        collect(store, &invoice, dunning);
    }
}

/// An invoice made while collection is paused: voided, kept as a draft, or marked uncollectible.
fn hold(store: &mut Store, invoice_id: &str, behavior: &str) {
    match behavior {
        "void" => {
            finalize(store, invoice_id);
            close_invoice(store, invoice_id, "void", "voided_at", "invoice.voided");
        }
        "mark_uncollectible" => {
            finalize(store, invoice_id);
            close_invoice(store, invoice_id, "uncollectible", "marked_uncollectible_at", "invoice.marked_uncollectible");
        }
        _ => {
            store.update(invoice_id, no_collection()); // keep_as_draft
        }
    }
}

/// What an invoice that will not be collected automatically has: no advance, no attempt.
fn no_collection() -> Map<String, Value> {
    Map::from_iter([
        ("auto_advance".to_string(), json!(false)),
        ("automatically_finalizes_at".to_string(), Value::Null),
        ("next_payment_attempt".to_string(), Value::Null),
    ])
}

/// End an invoice's collection with `status` (`void`, `uncollectible`), stamping
/// `status_transitions[transition]` now; `event` is deferred.
fn close_invoice(store: &mut Store, invoice_id: &str, status: &str, transition: &str, event: &str) {
    let now = store.now();
    let mut changes = no_collection();
    let invoice = store.get(invoice_id).cloned().unwrap_or_default();
    let mut transitions = invoice["status_transitions"].clone();
    transitions[transition] = json!(now);
    changes.insert("status".into(), json!(status));
    changes.insert("status_transitions".into(), transitions);
    // A voided invoice's payment intent is canceled with it, and so is its invoice payment.
    let mut canceled_intent = None;
    if status == "void" {
        let mut payments = invoice["payments"].clone();
        if let Some(payment) = payments["data"].get_mut(0).filter(|p| p["status"] == "open") {
            payment["status"] = json!("canceled");
            payment["status_transitions"]["canceled_at"] = json!(now);
            store.replace(payment.clone());
            let pi_id = str_field(&payment["payment"], "payment_intent");
            let open = store.get(&pi_id).is_some_and(|pi| !matches!(pi["status"].as_str(), Some("succeeded" | "canceled")));
            if open {
                let cancel = Map::from_iter([
                    ("status".to_string(), json!("canceled")),
                    ("canceled_at".to_string(), json!(now)),
                    ("cancellation_reason".to_string(), json!("void_invoice")),
                ]);
                store.update(&pi_id, cancel);
                canceled_intent = Some(pi_id);
            }
        }
        changes.insert("payments".into(), payments);
    }
    store.update(invoice_id, changes);
    store.defer_for(event, invoice_id);
    if let Some(pi_id) = canceled_intent {
        store.defer_for("payment_intent.canceled", &pi_id);
    }
}

/// Finalize a draft if needed and try to pay it; move its subscription as the result requires:
/// paid makes a `past_due` or `unpaid` subscription `active`; a failure makes it `past_due`, and
/// after the last retry the configured end state applies. Only the latest invoice moves the status.
pub fn collect(store: &mut Store, invoice_id: &str, dunning: &Dunning) {
    let Some(invoice) = store.get(invoice_id).cloned() else { return };
    if invoice["status"] == "draft" {
        finalize(store, invoice_id);
    }
    let failed = attempt(store, invoice_id, Some(dunning), false).is_some();
    store.flush_deferred();
    let sub_id = invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default().to_string();
    let Some(sub) = store.get(&sub_id).cloned() else { return };
    if sub["latest_invoice"] != invoice_id || is_ended(&sub) {
        return;
    }
    let status = sub["status"].as_str().unwrap_or_default();
    // A resumption invoice (`resume_on_payment_success`): paid resumes, failed stays paused.
    if status == "paused" {
        if !failed {
            unpause(store, &sub_id, "active");
        }
        return;
    }
    if !failed {
        if matches!(status, "past_due" | "unpaid" | "incomplete") {
            set(store, &sub_id, Map::from_iter([("status".to_string(), json!("active"))]));
        }
        return;
    }
    let retries_left = store.get(invoice_id).is_some_and(|i| !i["next_payment_attempt"].is_null());
    if retries_left {
        if status != "past_due" {
            set(store, &sub_id, Map::from_iter([("status".to_string(), json!("past_due"))]));
        }
        return;
    }
    match dunning.final_state {
        FinalState::Canceled => cancel_now(store, &sub_id, "payment_failed"),
        FinalState::Unpaid if status != "unpaid" => set(store, &sub_id, Map::from_iter([("status".to_string(), json!("unpaid"))])),
        FinalState::PastDue if status != "past_due" => set(store, &sub_id, Map::from_iter([("status".to_string(), json!("past_due"))])),
        _ => {}
    }
}

/// Try the unpaid latest invoice of a `past_due` or `unpaid` subscription again now (a new card was given).
pub fn retry_now(store: &mut Store, id: &str, dunning: &Dunning) {
    let Some(sub) = store.get(id).filter(|s| matches!(s["status"].as_str(), Some("past_due" | "unpaid"))) else { return };
    let Some(invoice) = sub["latest_invoice"].as_str().map(str::to_string) else { return };
    if store.get(&invoice).is_some_and(|i| i["status"] == "open") {
        collect(store, &invoice, dunning);
    }
}

/// What a proration line calls a subscription item: its price's nickname, else its product.
fn item_name(item: &Value) -> String {
    item["price"]["nickname"].as_str().or(item["price"]["product"].as_str()).unwrap_or("Subscription").to_string()
}

/// The credit (negative) for an item's time from `from` to the end of its period.
fn unused_time(item: &Value, from: i64) -> Proration {
    let (start, end) = (item["current_period_start"].as_i64().unwrap_or(from), item["current_period_end"].as_i64().unwrap_or(from));
    let from = from.clamp(start.min(end), end);
    let qty = item["quantity"].as_i64().unwrap_or(1);
    let left = if end > start { (end - from) as f64 / (end - start) as f64 } else { 0.0 };
    Proration {
        description: format!("Unused time on {qty} × {} after {}", item_name(item), billing_text::date(from)),
        amount: -((unit_amount(&item["price"]) * qty) as f64 * left).round() as i64,
        price: item["price"].clone(),
        quantity: qty,
        item: str_field(item, "id"),
        period: (from, end),
    }
}

/// One prorated line of a price or quantity change within a period: the unused time on the old
/// price as a credit (negative), or the remaining time on the new one as a charge.
pub struct Proration {
    pub description: String,
    pub amount: i64,
    pub price: Value,
    pub quantity: i64,
    pub item: String,
    pub period: (i64, i64),
}

/// The prorations of changing `current`'s items to `items` at `at` (within the current period,
/// the billing interval unchanged): for each item whose price or quantity changed, a credit for
/// what the old one had left and a charge for what the new one costs until the period's end.
pub fn prorations(current: &Value, items: &Value, at: i64) -> Vec<Proration> {
    let mut lines = Vec::new();
    for new in items["data"].as_array().into_iter().flatten() {
        let Some(old) = current["items"]["data"].as_array().into_iter().flatten().find(|old| old["id"] == new["id"]) else { continue };
        // Metered items bill usage, not time: nothing to prorate.
        if is_metered(&old["price"]) || is_metered(&new["price"]) {
            continue;
        }
        let (old_qty, new_qty) = (old["quantity"].as_i64().unwrap_or(1), new["quantity"].as_i64().unwrap_or(1));
        if old["price"]["id"] == new["price"]["id"] && old_qty == new_qty {
            continue;
        }
        let (start, end) = (old["current_period_start"].as_i64().unwrap_or(at), old["current_period_end"].as_i64().unwrap_or(at));
        let left = if end > start { (end - at).clamp(0, end - start) as f64 / (end - start) as f64 } else { 0.0 };
        lines.push(unused_time(old, at));
        lines.push(Proration {
            description: format!("Remaining time on {new_qty} × {} after {}", item_name(new), billing_text::date(at)),
            amount: ((unit_amount(&new["price"]) * new_qty) as f64 * left).round() as i64,
            price: new["price"].clone(),
            quantity: new_qty,
            item: str_field(new, "id"),
            period: (at, end),
        });
    }
    lines
}

/// An invoice of prorations alone, as `proration_behavior=always_invoice` makes one (and a
/// preview shows it): its lines, a total that may be negative (a credit), never less than zero due.
pub fn proration_invoice_object(store: &Store, invoice_id: &str, subscription: &Value, prorations: &[Proration], at: i64) -> Value {
    let total: i64 = prorations.iter().map(|p| p.amount).sum();
    let none = Usage::new();
    let mut invoice =
        invoice_object(store, invoice_id, subscription, Billed { amount: 0, usage: &none }, "subscription_update", (at, at), false);
    let lines: Vec<Value> = prorations.iter().map(|p| item_line(invoice_id, &proration_item(subscription, p, at), false)).collect();
    let due = total.max(0);
    invoice["lines"]["data"] = json!(lines);
    for field in ["subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"] {
        invoice[field] = json!(total);
    }
    invoice["amount_due"] = json!(due);
    invoice["amount_remaining"] = json!(due);
    invoice["discounts"] = json!([]);
    invoice["total_discount_amounts"] = json!([]);
    invoice
}

/// Invoice prorations now and charge the invoice (`proration_behavior=always_invoice`): its id,
/// and the card error if the charge failed. Events are deferred, in Stripe's order.
pub fn invoice_prorations(store: &mut Store, id: &str, prorations: &[Proration], at: i64) -> (String, Option<ApiError>) {
    let subscription = store.get(id).cloned().unwrap_or_default();
    let invoice_id = new_id("in_");
    let invoice = proration_invoice_object(store, &invoice_id, &subscription, prorations, at);
    store.insert(invoice.clone());
    store.defer("invoice.created", &invoice, None);
    finalize(store, &invoice_id);
    let error = attempt(store, &invoice_id, None, false);
    set(store, id, Map::from_iter([("latest_invoice".to_string(), json!(invoice_id))]));
    (invoice_id, error)
}

/// Keep prorations for the subscription's next invoice (`proration_behavior=create_prorations`,
/// the default): one pending invoice item each (`invoiceitem.created`).
pub fn pend_prorations(store: &mut Store, id: &str, prorations: &[Proration]) {
    let Some(subscription) = store.get(id).cloned() else { return };
    for p in prorations {
        let item = proration_item(&subscription, p, store.now());
        store.insert(item.clone());
        store.emit("invoiceitem.created", &item, None);
    }
}

/// A proration as an invoice item of `subscription` (`ii_…`, not yet on an invoice).
fn proration_item(subscription: &Value, p: &Proration, date: i64) -> Value {
    json!({
        "id": new_id("ii_"),
        "object": "invoiceitem",
        "amount": p.amount,
        "currency": subscription["currency"],
        "customer": subscription["customer"],
        "customer_account": null,
        "date": date,
        "description": p.description,
        "discountable": false,
        "discounts": [],
        "invoice": null,
        "livemode": false,
        "metadata": {},
        "parent": { "subscription_details": { "subscription": subscription["id"], "subscription_item": p.item }, "type": "subscription_details" },
        "period": { "end": p.period.1, "start": p.period.0 },
        "pricing": { "price_details": { "price": p.price["id"], "product": p.price["product"] }, "type": "price_details", "unit_amount_decimal": unit_amount(&p.price).to_string() },
        "proration": true,
        "quantity": p.quantity,
        "quantity_decimal": p.quantity.to_string(),
        "tax_rates": [],
        "test_clock": subscription["test_clock"],
    })
}

/// An invoice's line for a prorated invoice item (`stored`: the line names the item; an
/// invoice of prorations made at once has none).
fn item_line(invoice_id: &str, item: &Value, stored: bool) -> Value {
    let details = &item["parent"]["subscription_details"];
    json!({
        "id": new_id("il_"),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": false,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": false,
        "metadata": {},
        "parent": {
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": if stored { item["id"].clone() } else { Value::Null }, "proration": true,
                "proration_details": { "credited_items": null }, "subscription": details["subscription"], "subscription_item": details["subscription_item"],
            },
            "type": "subscription_item_details",
        },
        "period": item["period"],
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "quantity_decimal": item["quantity_decimal"],
        "subscription": details["subscription"],
        "subtotal": item["amount"],
        "taxes": [],
    })
}

/// The subscription's invoice items not yet on an invoice (prorations), oldest first.
pub fn pending_items(store: &Store, id: &str) -> Vec<Value> {
    let mut items: Vec<Value> = store
        .iter_kind("invoiceitem", None)
        .filter(|i| i["invoice"].is_null() && i["parent"]["subscription_details"]["subscription"] == id)
        .cloned()
        .collect();
    items.reverse();
    items
}

/// Put pending invoice items on `invoice` (a draft being made): their lines, and their amounts
/// in its totals.
fn with_pending_items(invoice: &mut Value, items: &[Value]) {
    if items.is_empty() {
        return;
    }
    let invoice_id = str_field(invoice, "id");
    let added: i64 = items.iter().filter_map(|i| i["amount"].as_i64()).sum();
    if let Some(lines) = invoice["lines"]["data"].as_array_mut() {
        lines.extend(items.iter().map(|item| item_line(&invoice_id, item, true)));
    }
    for field in ["subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"] {
        invoice[field] = json!(invoice[field].as_i64().unwrap_or(0) + added);
    }
    let due = (invoice["amount_due"].as_i64().unwrap_or(0) + added).max(0);
    invoice["amount_due"] = json!(due);
    invoice["amount_remaining"] = json!(due);
}

/// Whether charging the subscription's card now would fail: the card error it would give.
pub fn charge_would_fail(store: &Store, subscription: &Value) -> Option<ApiError> {
    let Some(pm) = payment_method_of(store, subscription) else {
        return Some(ApiError::card_declined("no_payment_method", "The customer has no payment method to charge."));
    };
    store.card_outcome(&pm).cloned().unwrap_or(Outcome::Succeeds).charge_error()
}

/// Start a new period now and charge it at once: a trial ended early, a switch to another interval.
pub fn restart_period(store: &mut Store, id: &str, dunning: &Dunning) {
    let now = store.now();
    roll(store, id, now, true, dunning, true);
}

/// Replace a subscription's items (`customer.subscription.updated`); a new billing interval
/// starts a new period at once, as in Stripe.
pub fn replace_items(store: &mut Store, id: &str, items: Value, dunning: &Dunning) {
    let before = store.get(id).map(|s| interval_of(&s["items"]["data"][0]["price"]));
    let after = interval_of(&items["data"][0]["price"]);
    set(store, id, Map::from_iter([("items".to_string(), items)]));
    if before.is_some_and(|b| b != after) {
        restart_period(store, id, dunning);
    }
}

/// Move a subscription to `paused` (`customer.subscription.updated`, then `.paused`), saying why
/// in `status_details.paused.subscription.type`.
pub fn pause_now(store: &mut Store, id: &str, reason: &str) {
    let details = json!({ "paused": { "subscription": { "type": reason }, "transitioned_at": store.now(), "type": "subscription" } });
    let mut previous = store.update(id, Map::from_iter([("status".to_string(), json!("paused")), ("status_details".to_string(), details)]));
    // `status_details` was absent, not null: it has no previous value to show.
    previous.remove("status_details");
    store.emit_for("customer.subscription.updated", id, Some(previous));
    store.emit_for("customer.subscription.paused", id, None);
}

/// Leave `paused` for `status` (`active`, or `past_due` when the resumption invoice failed):
/// `customer.subscription.updated`, then `.resumed`.
fn unpause(store: &mut Store, id: &str, status: &str) {
    let mut previous = store.update(id, Map::from_iter([("status".to_string(), json!(status))]));
    if let Some(details) = store.remove_field(id, "status_details") {
        previous.insert("status_details".into(), details);
    }
    store.emit_for("customer.subscription.updated", id, Some(previous));
    store.emit_for("customer.subscription.resumed", id, None);
}

/// The credits of pausing now: the unused time of each item, from `from` to the period's end.
pub fn unused_time_credits(subscription: &Value, from: i64) -> Vec<Proration> {
    subscription["items"]["data"].as_array().into_iter().flatten().map(|item| unused_time(item, from)).filter(|p| p.amount != 0).collect()
}

/// How a resumed subscription's invoice is paid (`payment_behavior` of `…/resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePayment {
    /// The default: no payment attempt in the request; the subscription leaves `paused` when the
    /// attempt is made, right after, for `active` or (failed, never retried) `past_due`.
    OnAttempt,
    /// The payment is attempted in the request; the subscription stays `paused` until it
    /// succeeds, and a failed one is retried on the dunning schedule.
    OnSuccess,
}

/// `POST /v1/subscriptions/{id}/resume`: a `paused` subscription starts a new period now (the
/// anchor moves to now), with its invoice finalized at once. Returns the invoice to attempt
/// right after the request (`OnAttempt`), if any.
pub fn resume(store: &mut Store, id: &str, payment: ResumePayment, dunning: &Dunning) -> Result<Option<String>, ApiError> {
    let sub = store.get_kind("subscription", id, Some("subscription"))?.clone();
    if sub["status"] != "paused" {
        return Err(ApiError::bad_request(format!(
            "Only a subscription with status paused can be resumed; this one is {}.",
            str_field(&sub, "status")
        )));
    }
    store.use_clock_of(&str_field(&sub, "customer"));
    let now = store.now();
    roll(store, id, now, true, dunning, false);
    let invoice = store.get(id).map(|s| str_field(s, "latest_invoice")).unwrap_or_default();
    finalize(store, &invoice);
    store.flush_deferred();
    let due = store.get(&invoice).and_then(|i| i["amount_due"].as_i64()).unwrap_or(0);
    if due == 0 || payment == ResumePayment::OnSuccess {
        let failed = attempt(store, &invoice, Some(dunning).filter(|_| due > 0), false).is_some();
        store.flush_deferred();
        if !failed {
            unpause(store, id, "active");
        }
        return Ok(None);
    }
    store.update(&invoice, Map::from_iter([("next_payment_attempt".to_string(), Value::Null)]));
    Ok(Some(invoice))
}

/// Resumptions whose payment attempt had not run when the emulator stopped: (subscription, invoice).
pub fn unattempted_resumptions(store: &Store) -> Vec<(String, String)> {
    store
        .iter_kind("subscription", None)
        .filter(|s| s["status"] == "paused")
        .filter_map(|s| {
            let invoice = store.get(s["latest_invoice"].as_str()?)?;
            let waiting = invoice["status"] == "open" && invoice["attempt_count"] == 0 && invoice["next_payment_attempt"].is_null();
            waiting.then(|| (str_field(s, "id"), str_field(invoice, "id")))
        })
        .collect()
}

/// The payment attempt of a resumption with `resume_on_payment_attempt`: the subscription
/// leaves `paused` either way, for `past_due` when it failed (no retries).
pub fn attempt_resumption(store: &mut Store, id: &str, invoice: &str) {
    let Some(sub) = store.get(id).filter(|s| s["status"] == "paused" && s["latest_invoice"] == invoice).cloned() else { return };
    if store.get(invoice).is_none_or(|i| i["status"] != "open") {
        return;
    }
    store.use_clock_of(&str_field(&sub, "customer"));
    let failed = attempt(store, invoice, None, false).is_some();
    store.flush_deferred();
    unpause(store, id, if failed { "past_due" } else { "active" });
}

/// One step of a subscription's life that falls due at a time.
#[derive(Debug, Clone, PartialEq)]
enum Due {
    TrialWillEnd,
    Upcoming(i64),
    Collect(String),
    ResumeCollection,
    Expire,
    Cancel,
    Renew(i64),
}

/// The earliest step of a subscription due by `now`, with its time. `invoice.upcoming` comes
/// `upcoming_days` before a renewal (none when 0, or when the period is shorter than that).
fn next_due(store: &Store, sub: &Value, now: i64, upcoming_days: i64) -> Option<(i64, Due)> {
    if is_ended(sub) {
        return None;
    }
    let id = str_field(sub, "id");
    let status = sub["status"].as_str().unwrap_or_default();
    let period_end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap_or(i64::MAX);
    let mut due: Vec<(i64, Due)> = Vec::new();
    if status == "trialing" {
        if let Some(end) = sub["trial_end"].as_i64() {
            if !store.noticed(&format!("trial_will_end {id} {end}")) {
                due.push(((end - TRIAL_NOTICE_SECONDS).max(sub["created"].as_i64().unwrap_or(0)), Due::TrialWillEnd));
            }
        }
    }
    if status == "incomplete" {
        due.push((sub["created"].as_i64().unwrap_or(0) + INCOMPLETE_SECONDS, Due::Expire));
    }
    if let Some(invoice) = sub["latest_invoice"].as_str().and_then(|i| store.get(i)) {
        let at = match invoice["status"].as_str() {
            Some("draft") => invoice["automatically_finalizes_at"].as_i64(),
            Some("open") if status != "incomplete" => invoice["next_payment_attempt"].as_i64(),
            _ => None,
        };
        if let Some(at) = at {
            due.push((at, Due::Collect(str_field(invoice, "id"))));
        }
    }
    if let Some(at) = sub["pause_collection"]["resumes_at"].as_i64() {
        due.push((at, Due::ResumeCollection));
    }
    let renews = matches!(status, "active" | "trialing" | "past_due")
        && sub["cancel_at_period_end"] != true
        && sub["cancel_at"].as_i64().is_none_or(|at| at > period_end)
        && sub["pause_collection"].is_null();
    let period_start = sub["items"]["data"][0]["current_period_start"].as_i64().unwrap_or(0);
    let upcoming_at = period_end.saturating_sub(upcoming_days * 86_400);
    if renews && upcoming_days > 0 && upcoming_at > period_start && !store.noticed(&upcoming_notice(&id, period_end)) {
        due.push((upcoming_at, Due::Upcoming(period_end)));
    }
    match sub["cancel_at"].as_i64() {
        Some(at) if at <= period_end => due.push((at, Due::Cancel)),
        _ if sub["cancel_at_period_end"] == true => due.push((period_end, Due::Cancel)),
        // A paused or unpaid subscription does not renew; an incomplete one has not started.
        _ if !matches!(status, "paused" | "unpaid" | "incomplete") => due.push((period_end, Due::Renew(period_end))),
        _ => {}
    }
    due.into_iter().filter(|(at, _)| *at <= now).min_by_key(|(at, _)| *at)
}

/// What moving time runs by: the dunning settings and how early `invoice.upcoming` comes.
#[derive(Debug, Clone)]
pub struct Renewals {
    pub dunning: Dunning,
    /// Days before a renewal that `invoice.upcoming` is sent (Stripe's Dashboard setting); 0: never.
    pub upcoming_days: i64,
}

impl Renewals {
    pub fn of(config: &crate::config::EmulatorConfig) -> Renewals {
        Renewals { dunning: config.dunning.clone(), upcoming_days: config.upcoming_days }
    }
}

/// Which subscriptions a clock moves: those of one test clock, or those under none.
#[derive(Debug, Clone, Copy)]
pub enum Clock<'a> {
    Control,
    Test(&'a str),
}

/// Bring the subscriptions of `clock` up to `now`, running every step that fell due in between at
/// its own time (renewals, collections, retries, notices, cancellations).
pub fn catch_up(store: &mut Store, clock: Clock, now: i64, settings: &Renewals) {
    let dunning = &settings.dunning;
    let ids: Vec<String> = store
        .iter_kind("subscription", None)
        .filter(|s| match clock {
            Clock::Control => s["test_clock"].is_null(),
            Clock::Test(c) => s["test_clock"] == c,
        })
        .filter(|s| !is_ended(s))
        .map(|s| str_field(s, "id"))
        .collect();
    for id in ids.into_iter().rev() {
        // Bounded: a daily price advanced by years is at most a few thousand steps.
        for _ in 0..20_000 {
            let Some(sub) = store.get(&id).cloned() else { break };
            let Some((at, step)) = next_due(store, &sub, now, settings.upcoming_days) else { break };
            store.use_frozen_time(Some(at));
            match step {
                Due::TrialWillEnd => trial_will_end(store, &id),
                Due::Upcoming(period_end) => upcoming(store, &sub, period_end),
                Due::Collect(invoice) => collect(store, &invoice, dunning),
                Due::ResumeCollection => {
                    set(store, &id, Map::from_iter([("pause_collection".to_string(), Value::Null)]));
                }
                Due::Expire => expire_incomplete(store, &id),
                Due::Cancel => cancel_now(store, &id, "cancellation_requested"),
                Due::Renew(boundary) => roll(store, &id, boundary, false, dunning, false),
            }
        }
    }
    store.use_frozen_time(match clock {
        Clock::Control => None,
        Clock::Test(_) => Some(now),
    });
}

fn upcoming_notice(subscription: &str, period_end: i64) -> String {
    format!("upcoming {subscription} {period_end}")
}

/// `invoice.upcoming`: the renewal's invoice as a preview, which has no id.
fn upcoming(store: &mut Store, subscription: &Value, period_end: i64) {
    if store.first_notice(upcoming_notice(&str_field(subscription, "id"), period_end)) {
        let mut invoice = preview_invoice(store, subscription);
        if let Some(fields) = invoice.as_object_mut() {
            fields.remove("id");
        }
        store.emit("invoice.upcoming", &invoice, None);
    }
}

/// An `incomplete` subscription whose first payment never came: `incomplete_expired`, its invoice void.
fn expire_incomplete(store: &mut Store, id: &str) {
    let now = store.now();
    if let Some(invoice) = store.get(id).map(|s| str_field(s, "latest_invoice")).filter(|i| !i.is_empty()) {
        close_invoice(store, &invoice, "void", "voided_at", "invoice.voided");
        store.flush_deferred();
    }
    let previous =
        store.update(id, Map::from_iter([("status".to_string(), json!("incomplete_expired")), ("ended_at".to_string(), json!(now))]));
    store.emit_for("customer.subscription.deleted", id, Some(previous));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SeedPrice, SeedProduct};
    use crate::engine::catalog::seed;
    use crate::engine::customers::{create_customer, NewCustomer};
    use crate::engine::payment_methods::attach_payment_method;
    use crate::model::calendar::{civil_from_days, days_from_civil};

    /// A store with one monthly price and a customer paying with `card` (a test payment method id).
    fn customer_with(card: &str) -> (Store, String, Value) {
        let mut store = Store::default();
        let price = SeedPrice {
            id: Some("price_m".into()),
            unit_amount: 500,
            currency: "usd".into(),
            interval: Some("month".into()),
            interval_count: None,
            nickname: None,
            lookup_key: None,
        };
        seed(&mut store, &[SeedProduct { id: Some("prod_m".into()), name: "M".into(), description: None, prices: vec![price] }]).unwrap();
        let customer = str_field(&create_customer(&mut store, NewCustomer::default()).unwrap(), "id");
        let pm = attach_payment_method(&mut store, card, &customer, "payment_method").unwrap();
        let price = store.get("price_m").cloned().unwrap();
        (store, pm, price)
    }

    /// A subscription to `price` paid with `pm` (a stored payment method of its customer).
    fn new_subscription(store: &Store, pm: String, price: Value, trial_end: Option<i64>) -> NewSubscription {
        NewSubscription {
            customer: store.get(&pm).map(|p| str_field(p, "customer")).unwrap(),
            items: vec![(price, 1)],
            payment_method: Some(pm),
            trial_end,
            missing_payment_method: "create_invoice".into(),
            metadata: Map::new(),
            description: None,
            cancel_at_period_end: false,
            error_if_incomplete: false,
            discount: None,
            from_checkout: false,
            flexible: true,
        }
    }

    fn types(store: &mut Store) -> Vec<String> {
        store.take_events().iter().map(|e| str_field(e, "type")).collect()
    }

    #[test]
    fn the_engine_renews_and_retries_without_http() {
        let (mut store, pm, price) = customer_with("pm_card_chargeCustomerFail");
        let spec = new_subscription(&store, pm, price, Some(store.now() + 86_400));
        let created = create_subscription(&mut store, spec).unwrap();
        assert!(types(&mut store).ends_with(&[
            "customer.subscription.created".into(),
            "invoice.created".into(),
            "invoice.finalized".into(),
            "invoice.paid".into(),
            "invoice.payment_succeeded".into(),
            "invoice.updated".into(),
            "customer.subscription.trial_will_end".into()
        ]));
        let dunning = Renewals { dunning: Dunning { retry_days: vec![2], final_state: FinalState::Unpaid }, upcoming_days: 0 };
        let trial_end = store.get(&created.subscription).unwrap()["trial_end"].as_i64().unwrap();
        catch_up(&mut store, Clock::Control, trial_end + DRAFT_SECONDS, &dunning);
        let sub = store.get(&created.subscription).cloned().unwrap();
        assert_eq!(sub["status"], "past_due");
        let invoice = store.get(sub["latest_invoice"].as_str().unwrap()).cloned().unwrap();
        assert_eq!(invoice["next_payment_attempt"], trial_end + DRAFT_SECONDS + 2 * 86_400);
        assert_eq!(types(&mut store).last().map(String::as_str), Some("customer.subscription.updated"));
        catch_up(&mut store, Clock::Control, trial_end + DRAFT_SECONDS + 2 * 86_400, &dunning);
        assert_eq!(store.get(&created.subscription).unwrap()["status"], "unpaid");
        assert_eq!(
            types(&mut store),
            [
                "payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated",
                "customer.subscription.updated"
            ]
        );
        // Nothing more falls due for an unpaid subscription.
        catch_up(&mut store, Clock::Control, trial_end + 400 * 86_400, &dunning);
        assert!(types(&mut store).is_empty());
    }

    #[test]
    fn a_resumption_cut_off_before_its_payment_attempt_is_found_and_attempted() {
        let (mut store, pm, price) = customer_with("pm_card_visa");
        let spec = new_subscription(&store, pm, price, None);
        let id = create_subscription(&mut store, spec).unwrap().subscription;
        pause_now(&mut store, &id, "pause_requested");
        let dunning = Dunning::default();
        let invoice = resume(&mut store, &id, ResumePayment::OnAttempt, &dunning).unwrap().expect("an invoice to attempt");
        assert_eq!(store.get(&id).unwrap()["status"], "paused", "nothing charged in the request");
        // The emulator stops here; at the next start the attempt is found and made.
        assert_eq!(unattempted_resumptions(&store), [(id.clone(), invoice.clone())]);
        attempt_resumption(&mut store, &id, &invoice);
        assert_eq!(store.get(&id).unwrap()["status"], "active");
        assert_eq!(store.get(&invoice).unwrap()["status"], "paid");
        assert!(store.get(&id).unwrap().get("status_details").is_none());
        assert!(unattempted_resumptions(&store).is_empty());
        assert!(types(&mut store).ends_with(&["customer.subscription.updated".into(), "customer.subscription.resumed".into()]));
    }

    fn date(ts: i64) -> (i64, i64, i64) {
        civil_from_days(ts.div_euclid(86_400))
    }

    #[test]
    fn periods_count_from_the_anchor() {
        let anchor = days_from_civil(2025, 1, 31) * 86_400 + 3600;
        let feb = next_period_end(anchor, "month", 1, anchor);
        assert_eq!(date(feb), (2025, 2, 28));
        let mar = next_period_end(anchor, "month", 1, feb);
        assert_eq!(date(mar), (2025, 3, 31), "the anchor day returns after a short month");
        assert_eq!(date(next_period_end(anchor, "month", 1, mar)), (2025, 4, 30));
        assert_eq!(mar % 86_400, 3600, "time of day kept");
        assert_eq!(date(next_period_end(anchor, "year", 1, anchor)), (2026, 1, 31));
    }
}
