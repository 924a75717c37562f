//! `/v1/subscriptions`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use crate::api::form::Params;
use crate::api::request::{respond, ApiRequest};
use crate::api::search::{search_kind, Field};
use crate::api::{
    existing_customer, list_embedded, list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, trial_end_behavior, ApiResult,
};
use crate::engine::billing::{self, NewSubscription, ResumePayment};
use crate::engine::payment_methods::resolve_payment_method;
use crate::engine::Emulator;
use crate::model::{is_ended, str_field, ApiError, RequestInfo};
use crate::store::Store;

pub const STATUSES: &[&str] =
    &["active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due", "paused", "trialing", "unpaid"];

/// A recurring, active price for a subscription item.
pub fn recurring_price(store: &Store, params: &Params, name: &str) -> Result<Value, ApiError> {
    let id = params.required_str(name)?;
    let price = store.get_kind("price", id, Some(&params.path(name)))?.clone();
    if price["type"] != "recurring" {
        return Err(params.invalid(name, format!("The price specified ({id}) is not recurring. Subscriptions need recurring prices.")));
    }
    if price["active"] != true {
        return Err(params.invalid(name, format!("The price specified ({id}) is inactive. This field only accepts active prices.")));
    }
    Ok(price)
}

/// `trial_end`: a future timestamp or `now`.
fn trial_end(params: &Params, now: i64) -> Result<Option<i64>, ApiError> {
    match params.str("trial_end")? {
        None => Ok(None),
        Some("now") => Ok(Some(now)),
        Some(_) => match params.int("trial_end")? {
            Some(t) if t > now => Ok(Some(t)),
            _ => Err(params.invalid("trial_end", "Invalid timestamp: must be in the future, or `now`.")),
        },
    }
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "customer", "items", "default_payment_method", "trial_period_days", "trial_end", "metadata", "description", "cancel_at_period_end",
        "payment_behavior", "proration_behavior", "collection_method", "off_session", "trial_from_plan", "expand", "currency",
        "trial_settings", "billing_mode",
    ])?;
    let flexible = match p.hash("billing_mode")? {
        None => true,
        Some(mode) => {
            mode.allow(&["type", "flexible"])?;
            mode.one_of("type", &["classic", "flexible"])?.ok_or_else(|| mode.missing("type"))? == "flexible"
        }
    };
    let behavior = p.one_of("payment_behavior", &["allow_incomplete", "error_if_incomplete"])?.unwrap_or("allow_incomplete");
    p.one_of("collection_method", &["charge_automatically"])?;
    p.one_of("proration_behavior", &["create_prorations", "none", "always_invoice"])?;
    let trial_days = p.int("trial_period_days")?;
    if trial_days.is_some_and(|d| !(1..=730).contains(&d)) {
        return Err(p.invalid("trial_period_days", "trial_period_days must be between 1 and 730."));
    }
    let item_params = p.list("items")?;
    if item_params.is_empty() {
        return Err(p.missing("items"));
    }
    let meta = metadata(p, "metadata")?.unwrap_or_default();
    let missing_payment_method = trial_end_behavior(p)?;
    let created = emu.apply(&req.info, |store| {
        let customer = existing_customer(store, p, "customer")?.ok_or_else(|| p.missing("customer"))?.to_string();
        store.use_clock_of(&customer);
        let mut items = Vec::new();
        for item in &item_params {
            item.allow(&["price", "quantity", "metadata"])?;
            let quantity = item.int("quantity")?.unwrap_or(1);
            if quantity < 1 {
                return Err(item.invalid("quantity", "Quantity must be at least 1."));
            }
            let price = recurring_price(store, item, "price")?;
            no_quantity_when_metered(item, &price)?;
            items.push((price, quantity));
        }
        let now = store.now();
        let trial_end = match (trial_end(p, now)?, trial_days) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "You may only specify one of these parameters: trial_end, trial_period_days.",
                    Some("trial_end"),
                    "parameters_exclusive",
                ))
            }
            (Some(t), None) if t > now => Some(t),
            (Some(_), None) => None, // `trial_end=now`: no trial
            (None, Some(days)) => Some(now + days * 86_400),
            (None, None) => None,
        };
        let payment_method = match p.non_empty_str("default_payment_method")? {
            Some(pm) => Some(resolve_payment_method(store, pm, &customer, "default_payment_method")?),
            None => None,
        };
        let customer_default =
            store.get(&customer).and_then(|c| c["invoice_settings"]["default_payment_method"].as_str().map(str::to_string));
        if payment_method.is_none() && customer_default.is_none() && trial_end.is_none() {
            // Without a trial the first invoice is charged now, so a card is needed.
            return Err(ApiError::bad_request(
                "This customer has no attached payment source or default payment method. Please consider adding a default payment method.",
            ));
        }
        billing::create_subscription(
            store,
            NewSubscription {
                customer,
                items,
                payment_method,
                trial_end,
                missing_payment_method,
                metadata: meta,
                description: p.non_empty_str("description")?.map(str::to_string),
                cancel_at_period_end: p.bool("cancel_at_period_end")?.unwrap_or(false),
                error_if_incomplete: behavior == "error_if_incomplete",
                discount: None,
                from_checkout: false,
                flexible,
            },
        )
    })?;
    let sub = emu.read(|s| Ok(s.get(&created.subscription).cloned().unwrap_or_default()))?;
    respond(&emu, &req, &sub)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "subscription", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "cancel_at_period_end", "cancel_at", "items", "metadata", "default_payment_method", "proration_behavior", "description",
        "trial_end", "cancellation_details", "payment_behavior", "off_session", "pause_collection", "trial_settings", "proration_date",
        "expand",
    ])?;
    let proration_behavior =
        p.one_of("proration_behavior", &["create_prorations", "none", "always_invoice"])?.unwrap_or("create_prorations");
    let payment_behavior =
        p.one_of("payment_behavior", &["allow_incomplete", "error_if_incomplete", "pending_if_incomplete"])?.unwrap_or("allow_incomplete");
    let item_params = p.list("items")?;
    let sub = emu.apply(&req.info, |store| {
        let current = store.get_kind("subscription", &id, Some("id"))?.clone();
        store.use_clock_of(&str_field(&current, "customer"));
        let now = store.now();
        let mut changes = Map::new();
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        if let Some(details) = p.hash("cancellation_details")? {
            details.allow(&["comment", "feedback"])?;
            let mut merged = current["cancellation_details"].clone();
            if let Some(c) = details.str("comment")? {
                merged["comment"] = if c.is_empty() { Value::Null } else { json!(c) };
            }
            if let Some(f) = details.one_of(
                "feedback",
                &[
                    "customer_service", "low_quality", "missing_features", "other", "switched_service", "too_complex", "too_expensive",
                    "unused", "",
                ],
            )? {
                merged["feedback"] = if f.is_empty() { Value::Null } else { json!(f) };
            }
            changes.insert("cancellation_details".into(), merged);
        }
        let only_allowed_when_ended = p.keys().all(|k| matches!(k, "metadata" | "cancellation_details" | "expand"));
        if is_ended(&current) && !only_allowed_when_ended {
            return Err(ApiError::bad_request("A canceled subscription can only update its cancellation_details and metadata."));
        }
        let period_end = current["items"]["data"][0]["current_period_end"].as_i64().unwrap_or(now);
        if let Some(flag) = p.bool("cancel_at_period_end")? {
            changes.insert("cancel_at_period_end".into(), json!(flag));
            changes.insert("cancel_at".into(), if flag { json!(period_end) } else { Value::Null });
        }
        match p.str("cancel_at")? {
            None => {}
            Some("") => {
                changes.insert("cancel_at".into(), Value::Null);
            }
            Some("min_period_end" | "max_period_end") => {
                changes.insert("cancel_at".into(), json!(period_end));
            }
            Some(_) => match p.int("cancel_at")? {
                Some(t) if t > now => {
                    if p.bool("cancel_at_period_end")? == Some(true) {
                        return Err(ApiError::invalid(
                            "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                            Some("cancel_at"),
                            "parameters_exclusive",
                        ));
                    }
                    changes.insert("cancel_at".into(), json!(t));
                    changes.insert("cancel_at_period_end".into(), json!(false));
                }
                _ => return Err(p.invalid("cancel_at", "Invalid cancel_at: must be a future timestamp.")),
            },
        }
        nullable_strings(p, &["description"], &mut changes)?;
        let customer = str_field(&current, "customer");
        match p.str("default_payment_method")? {
            None => {}
            Some("") => {
                changes.insert("default_payment_method".into(), Value::Null);
            }
            Some(pm) => {
                let pm = resolve_payment_method(store, pm, &customer, "default_payment_method")?;
                changes.insert("default_payment_method".into(), json!(pm));
            }
        }
        if let Some(pause) = pause_collection(p, now)? {
            if current["status"] == "paused" {
                return Err(p.invalid("pause_collection", "A paused subscription cannot also pause collection; resume it first."));
            }
            changes.insert("pause_collection".into(), pause);
        }
        if p.has("trial_settings") {
            let mut settings = current["trial_settings"].clone();
            settings["end_behavior"]["missing_payment_method"] = json!(trial_end_behavior(p)?);
            changes.insert("trial_settings".into(), settings);
        }
        let new_items = if item_params.is_empty() { None } else { Some(updated_items(store, &current, &item_params, "items", now)?) };
        // Within a period on the same interval, a change is prorated: billed at once
        // (`always_invoice`), or on the next invoice (`create_prorations`).
        let prorated = match &new_items {
            Some(items) if proration_behavior != "none" && same_interval(&current, items) && is_billed(&current) => {
                billing::prorations(&current, items, proration_date(p, &current, now)?)
            }
            _ => Vec::new(),
        };
        let invoiced_now = proration_behavior == "always_invoice";
        let due: i64 = if invoiced_now { prorated.iter().map(|line| line.amount).sum() } else { 0 };
        let will_fail = if due > 0 { billing::charge_would_fail(store, &current) } else { None };
        if let (Some(err), "error_if_incomplete") = (&will_fail, payment_behavior) {
            return Err(err.clone());
        }
        // `pending_if_incomplete`: a change whose payment fails waits, the old items stay.
        let pending = will_fail.is_some() && payment_behavior == "pending_if_incomplete";
        let ends_trial = current["status"] == "trialing" && trial_end(p, now)? == Some(now);
        if let Some(t) = trial_end(p, now)?.filter(|t| *t > now) {
            if current["status"] != "trialing" {
                return Err(p.invalid("trial_end", "Only a subscription in a trial can have its trial end moved."));
            }
            changes.insert("trial_end".into(), json!(t));
            let mut items = changes.get("items").cloned().unwrap_or_else(|| current["items"].clone());
            for item in items["data"].as_array_mut().into_iter().flatten() {
                item["current_period_end"] = json!(t);
            }
            changes.insert("items".into(), items);
        }
        if let (true, Some(items)) = (pending, &new_items) {
            changes.insert(
                "pending_update".into(),
                json!({
                    "billing_cycle_anchor": null, "cancel_at_period_end": null, "discount": null, "discounts": null,
                    "expires_at": now + 23 * 3600, "metadata": null, "subscription_items": items["data"], "trial_end": null,
                    "trial_from_plan": null,
                }),
            );
        }
        store.commit(&id, changes, "customer.subscription.updated");
        match new_items {
            Some(items) if !pending => billing::replace_items(store, &id, items, &emu.config.dunning),
            _ => {}
        }
        if !prorated.is_empty() && invoiced_now {
            let at = prorated[0].period.0;
            billing::invoice_prorations(store, &id, &prorated, at);
            store.flush_deferred();
        } else if !prorated.is_empty() {
            billing::pend_prorations(store, &id, &prorated);
        }
        if ends_trial {
            billing::restart_period(store, &id, &emu.config.dunning);
        }
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &sub)
}

/// Whether `items` bill on the subscription's own interval (a new interval restarts the period instead).
pub fn same_interval(current: &Value, items: &Value) -> bool {
    let interval = |items: &Value| items["data"][0]["price"]["recurring"].clone();
    let recurring = |v: Value| (v["interval"].clone(), v["interval_count"].clone());
    recurring(interval(&current["items"])) == recurring(interval(items))
}

/// A subscription whose period is being paid for (not in a trial, not ended or paused).
pub fn is_billed(subscription: &Value) -> bool {
    matches!(subscription["status"].as_str(), Some("active" | "past_due" | "unpaid"))
}

/// `proration_date`: a moment of the current period (default now) the prorations are counted from.
pub fn proration_date(p: &Params, current: &Value, now: i64) -> Result<i64, ApiError> {
    let start = current["items"]["data"][0]["current_period_start"].as_i64().unwrap_or(now);
    match p.int("proration_date")? {
        None => Ok(now),
        Some(at) if at >= start && at <= now => Ok(at),
        Some(_) => Err(p.invalid("proration_date", "proration_date must be within the current period, and not in the future.")),
    }
}

/// Apply `items[n][id|price|quantity|deleted]` to a copy of the subscription's items (for an
/// update, or for the preview of one: `items_param` names the list in errors).
pub fn updated_items(store: &Store, current: &Value, item_params: &[Params], items_param: &str, now: i64) -> Result<Value, ApiError> {
    let mut items = current["items"].clone();
    let id = str_field(current, "id");
    let data = items["data"].as_array_mut().ok_or_else(|| ApiError::bad_request("subscription has no items"))?;
    for item in item_params {
        item.allow(&["id", "price", "quantity", "deleted", "metadata"])?;
        let quantity = item.int("quantity")?;
        if quantity.is_some_and(|q| q < 1) {
            return Err(item.invalid("quantity", "Quantity must be at least 1."));
        }
        match item.non_empty_str("id")? {
            Some(item_id) => {
                let position = data
                    .iter()
                    .position(|i| i["id"] == item_id)
                    .ok_or_else(|| ApiError::missing("subscription item", item_id, Some(&format!("{items_param}[id]"))))?;
                if item.bool("deleted")? == Some(true) {
                    data.remove(position);
                    continue;
                }
                let existing = &mut data[position];
                if item.has("price") {
                    let price = recurring_price(store, item, "price")?;
                    no_quantity_when_metered(item, &price)?;
                    if price["currency"] != current["currency"] {
                        return Err(item.invalid("price", "The new price must have the subscription's currency."));
                    }
                    *existing = billing::swap_price(&id, existing, &price, quantity, now);
                } else if let Some(q) = quantity {
                    no_quantity_when_metered(item, &existing["price"])?;
                    existing["quantity"] = json!(q);
                }
            }
            None => {
                let price = recurring_price(store, item, "price")?;
                no_quantity_when_metered(item, &price)?;
                let first = &data.first().cloned().unwrap_or_default();
                let period = (first["current_period_start"].as_i64().unwrap_or(now), first["current_period_end"].as_i64().unwrap_or(now));
                data.push(billing::subscription_item(&id, &price, quantity.unwrap_or(1), period, now));
            }
        }
    }
    if data.is_empty() {
        return Err(ApiError::bad_request("A subscription must keep at least one item."));
    }
    let new_interval = &data[0]["price"]["recurring"];
    if data.iter().any(|i| {
        i["price"]["recurring"]["interval"] != new_interval["interval"]
            || i["price"]["recurring"]["interval_count"] != new_interval["interval_count"]
    }) {
        return Err(ApiError::bad_request("All prices on a subscription must have the same recurring interval."));
    }
    Ok(items)
}

/// `pause_collection[behavior]` (`keep_as_draft`, `mark_uncollectible`, `void`) with an optional
/// future `pause_collection[resumes_at]`; `pause_collection=` clears it.
fn pause_collection(p: &Params, now: i64) -> Result<Option<Value>, ApiError> {
    if !p.has("pause_collection") {
        return Ok(None);
    }
    if p.str("pause_collection").ok().flatten() == Some("") {
        return Ok(Some(Value::Null));
    }
    let pause = p.hash("pause_collection")?.unwrap_or_default();
    pause.allow(&["behavior", "resumes_at"])?;
    let behavior = pause.one_of("behavior", &["keep_as_draft", "mark_uncollectible", "void"])?.ok_or_else(|| pause.missing("behavior"))?;
    let resumes_at = pause.int("resumes_at")?;
    if resumes_at.is_some_and(|t| t <= now) {
        return Err(pause.invalid("resumes_at", "resumes_at must be in the future."));
    }
    Ok(Some(json!({ "behavior": behavior, "resumes_at": resumes_at })))
}

pub async fn cancel(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["invoice_now", "prorate", "cancellation_details", "expand"])?;
    let sub = emu.apply(&req.info, |store| {
        let current = store.get_kind("subscription", &id, Some("id"))?;
        if is_ended(current) {
            return Err(ApiError::bad_request(format!("This subscription ({id}) has already been canceled.")));
        }
        store.use_clock_of(&str_field(current, "customer"));
        billing::cancel_now(store, &id, "cancellation_requested");
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &sub)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.non_empty_str("customer")?.map(str::to_string);
    let price = p.non_empty_str("price")?.map(str::to_string);
    let status = p.one_of("status", STATUSES)?.map(str::to_string);
    // Subscriptions under a test clock are listed only when asked for by `test_clock` or `customer`.
    let clock = p.non_empty_str("test_clock")?.map(str::to_string);
    let scoped = customer.is_some();
    list_kind(
        &emu,
        &req,
        "subscription",
        &["customer", "price", "status", "test_clock", "collection_method", "current_period_end", "current_period_start", "automatic_tax"],
        customer.as_deref(),
        |sub| {
            let status_ok = match status.as_deref() {
                Some("all") => true,
                Some("ended") => is_ended(sub),
                Some(s) => sub["status"] == s,
                // Without a status, Stripe lists the subscriptions that have not ended.
                None => !is_ended(sub),
            };
            let clock_ok = match &clock {
                Some(c) => sub["test_clock"] == c.as_str(),
                None => scoped || sub["test_clock"].is_null(),
            };
            status_ok
                && clock_ok
                && price.as_ref().is_none_or(|pr| {
                    sub["items"]["data"].as_array().is_some_and(|items| items.iter().any(|i| i["price"]["id"] == pr.as_str()))
                })
        },
    )
}

/// `GET /v1/subscriptions/search`.
pub async fn search(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    const FIELDS: &[(&str, Field)] = &[("created", Field::Numeric), ("metadata", Field::Token), ("status", Field::Token)];
    search_kind(&emu, &req, "subscription", FIELDS)
}

/// `POST /v1/subscriptions/{id}/resume`: a `paused` subscription starts a new period now; its
/// invoice is paid in the request (`resume_on_payment_success`) or right after it (the default).
pub async fn resume(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["billing_cycle_anchor", "proration_behavior", "proration_date", "payment_behavior", "expand"])?;
    // The anchor comes as endive's `{type}` or the older string; only `now` is emulated.
    match p.hash("billing_cycle_anchor") {
        Ok(Some(anchor)) => {
            anchor.allow(&["type"])?;
            anchor.one_of("type", &["now"])?;
        }
        _ => {
            p.one_of("billing_cycle_anchor", &["now"])?;
        }
    }
    p.one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?;
    let payment = match p.one_of("payment_behavior", &["resume_on_payment_attempt", "resume_on_payment_success"])? {
        Some("resume_on_payment_success") => ResumePayment::OnSuccess,
        _ => ResumePayment::OnAttempt,
    };
    let (sub, to_attempt) = emu.apply(&req.info, |store| {
        let to_attempt = billing::resume(store, &id, payment, &emu.config.dunning)?;
        Ok((store.get(&id).cloned().unwrap_or_default(), to_attempt))
    })?;
    if let Some(invoice) = to_attempt {
        let emu = emu.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let attempted = emu.apply(&RequestInfo::default(), |store| {
                billing::attempt_resumption(store, &id, &invoice);
                Ok(())
            });
            if let Err(err) = attempted {
                tracing::error!(subscription = %id, error = %err.message, "a resumption's payment could not be attempted");
            }
        });
    }
    respond(&emu, &req, &sub)
}

/// `POST /v1/subscriptions/{id}/pause` (`2026-09-30.endive`): a flexible-mode subscription without
/// a schedule becomes `paused`; its unused time is credited, as pending invoice items (the
/// default) or on an invoice now.
pub async fn pause(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["type", "invoicing_behavior", "bill_for", "expand"])?;
    p.one_of("type", &["subscription"])?;
    let invoice_now = p.one_of("invoicing_behavior", &["invoice", "pending_invoice_item"])? == Some("invoice");
    let mut unused_from = "now".to_string();
    if let Some(bill_for) = p.hash("bill_for")? {
        bill_for.allow(&["outstanding_usage_through", "unused_time_from"])?;
        if let Some(usage) = bill_for.hash("outstanding_usage_through")? {
            usage.allow(&["type"])?;
            usage.one_of("type", &["none", "now"])?;
        }
        if let Some(unused) = bill_for.hash("unused_time_from")? {
            unused.allow(&["type"])?;
            unused_from = unused.one_of("type", &["item_current_period_start", "none", "now"])?.unwrap_or("now").to_string();
        }
    }
    let sub = emu.apply(&req.info, |store| {
        let current = store.get_kind("subscription", &id, Some("id"))?.clone();
        let status = str_field(&current, "status");
        if !matches!(status.as_str(), "active" | "trialing" | "past_due") {
            return Err(ApiError::bad_request(format!(
                "Only an active, trialing or past_due subscription can be paused; this one is {status}."
            )));
        }
        if current["billing_mode"]["type"] != "flexible" {
            return Err(ApiError::bad_request(
                "Only subscriptions in flexible billing mode can be paused; this one uses classic billing mode.",
            ));
        }
        if !current["schedule"].is_null() {
            return Err(ApiError::bad_request("A subscription with a schedule cannot be paused; release the schedule first."));
        }
        if !current["pause_collection"].is_null() {
            return Err(ApiError::bad_request("A subscription whose collection is paused cannot be paused; resume collection first."));
        }
        store.use_clock_of(&str_field(&current, "customer"));
        let now = store.now();
        let from = match unused_from.as_str() {
            "none" => None,
            "item_current_period_start" => current["items"]["data"][0]["current_period_start"].as_i64(),
            _ => Some(now),
        };
        let credits = match from {
            Some(from) if is_billed(&current) => billing::unused_time_credits(&current, from),
            _ => Vec::new(),
        };
        if !credits.is_empty() && invoice_now {
            billing::invoice_prorations(store, &id, &credits, now);
            store.flush_deferred();
        } else if !credits.is_empty() {
            billing::pend_prorations(store, &id, &credits);
        }
        billing::pause_now(store, &id, "pause_requested");
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &sub)
}

/// `GET /v1/subscription_items?subscription=…`.
pub async fn list_items(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let subscription = req.params.required_str("subscription")?;
    emu.read(|store| {
        let sub = store.get_kind("subscription", subscription, Some("subscription"))?;
        list_embedded(store, &req, &["subscription"], sub["items"]["data"].as_array().map(Vec::as_slice).unwrap_or(&[]))
    })
}

/// `GET /v1/subscription_items/{id}`.
pub async fn retrieve_item(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let expand = req.expand()?;
    emu.read(|store| {
        let item = store
            .iter_kind("subscription", None)
            .find_map(|sub| sub["items"]["data"].as_array().and_then(|items| items.iter().find(|i| i["id"] == id.as_str())))
            .ok_or_else(|| ApiError::missing("subscription_item", &id, Some("id")))?;
        crate::api::expand::render(store, item, &expand).map(crate::api::request::JsonBody)
    })
}

/// A metered price's item takes no quantity: its meter counts what it bills (Stripe's message).
fn no_quantity_when_metered(item: &Params, price: &Value) -> Result<(), ApiError> {
    match price["recurring"]["usage_type"] == "metered" && item.has("quantity") {
        true => {
            Err(item.invalid("quantity", "Quantity should not be specified where usage_type is `metered`. Remove quantity from this item."))
        }
        false => Ok(()),
    }
}
