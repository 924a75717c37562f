//! Subscription schedules made from a subscription (`from_subscription`): phases, each with its
//! prices, one after the other; at a renewal that starts a phase, the subscription takes that
//! phase's prices (a downgrade at the period's end, say), and past the last phase the schedule
//! ends as `end_behavior` says (`release`: the subscription goes on alone; `cancel`: it ends).
//! The emulator's subscriptions bill one price at a time here: a phase's first item replaces the
//! subscription's first item.

use serde_json::{json, Map, Value};

use crate::model::calendar::add_interval;
use crate::model::{new_id, str_field, ApiError};
use crate::store::Store;

/// A phase as the API asked for it: its prices and, when given, its dates.
pub struct NewPhase {
    pub items: Vec<(Value, i64)>,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    pub proration_behavior: Option<String>,
}

fn phase(start: i64, end: i64, items: &[(Value, i64)], currency: &Value, proration_behavior: &str) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(price, quantity)| {
            json!({ "billing_thresholds": null, "discounts": [], "metadata": {}, "plan": price["id"], "price": price["id"], "quantity": quantity, "tax_rates": [] })
        })
        .collect();
    json!({
        "add_invoice_items": [], "application_fee_percent": null, "billing_cycle_anchor": null, "billing_thresholds": null,
        "collection_method": null, "currency": currency, "default_payment_method": null, "default_tax_rates": [], "description": null,
        "discounts": [], "end_date": end, "invoice_settings": null, "items": items, "metadata": {}, "on_behalf_of": null,
        "proration_behavior": proration_behavior, "start_date": start, "transfer_data": null, "trial_end": null,
    })
}

/// `POST /v1/subscription_schedules` with `from_subscription`: one phase, the current period.
pub fn create_from_subscription(store: &mut Store, subscription: &str) -> Result<Value, ApiError> {
    let sub = store.get_kind("subscription", subscription, Some("from_subscription"))?.clone();
    if !sub["schedule"].is_null() {
        return Err(ApiError::invalid(
            format!("The subscription {subscription} is already attached to a schedule."),
            Some("from_subscription"),
            "resource_already_exists",
        ));
    }
    if matches!(sub["status"].as_str(), Some("canceled" | "incomplete_expired")) {
        return Err(ApiError::bad_request("A canceled subscription cannot be attached to a schedule."));
    }
    let item = &sub["items"]["data"][0];
    let (start, end) = (item["current_period_start"].as_i64().unwrap_or(0), item["current_period_end"].as_i64().unwrap_or(0));
    let current =
        phase(start, end, &[(item["price"].clone(), item["quantity"].as_i64().unwrap_or(1))], &sub["currency"], "create_prorations");
    let id = new_id("sub_sched_");
    let schedule = json!({
        "id": id,
        "object": "subscription_schedule",
        "application": null,
        "billing_mode": sub["billing_mode"],
        "canceled_at": null,
        "completed_at": null,
        "created": store.now(),
        "current_phase": { "end_date": end, "start_date": start },
        "customer": sub["customer"],
        "customer_account": null,
        "default_settings": {
            "application_fee_percent": null, "billing_cycle_anchor": "automatic", "billing_thresholds": null,
            "collection_method": "charge_automatically", "default_payment_method": null, "description": null,
            "invoice_settings": { "account_tax_ids": null, "custom_fields": null, "days_until_due": null, "description": null, "footer": null, "issuer": { "type": "self" } },
            "on_behalf_of": null, "transfer_data": null,
        },
        "end_behavior": "release",
        "livemode": false,
        "metadata": {},
        "pause_schedules": [],
        "phases": [current],
        "released_at": null,
        "released_subscription": null,
        "status": "active",
        "subscription": subscription,
        "test_clock": sub["test_clock"],
    });
    store.insert(schedule.clone());
    store.emit("subscription_schedule.created", &schedule, None);
    store.commit(subscription, Map::from_iter([("schedule".to_string(), json!(id))]), "customer.subscription.updated");
    Ok(store.get(&id).cloned().unwrap_or_default())
}

/// `POST /v1/subscription_schedules/{id}` with `phases`: the first keeps the current phase's
/// start; each starts where the one before ends; a last phase without an end lasts one period of
/// its price.
pub fn update(store: &mut Store, id: &str, phases: Option<Vec<NewPhase>>, end_behavior: Option<&str>) -> Result<Value, ApiError> {
    let schedule = store.get_kind("subscription_schedule", id, Some("id"))?.clone();
    if schedule["status"] != "active" {
        return Err(ApiError::bad_request(format!("You cannot update a schedule that is {}.", str_field(&schedule, "status"))));
    }
    let mut changes = Map::new();
    if let Some(phases) = phases {
        if phases.is_empty() {
            return Err(ApiError::invalid("A schedule needs at least one phase.", Some("phases"), "parameter_missing"));
        }
        let current_start = schedule["phases"][0]["start_date"].as_i64().unwrap_or(0);
        let currency = &schedule["phases"][0]["currency"];
        let mut built = Vec::new();
        let mut start = current_start;
        for (n, new) in phases.iter().enumerate() {
            match new.start_date {
                Some(s) if n == 0 && s != current_start => {
                    return Err(ApiError::invalid(
                        "The first phase must start when the current one did.",
                        Some("phases[0][start_date]"),
                        "parameter_invalid",
                    ))
                }
                Some(s) if s != start => {
                    return Err(ApiError::invalid(
                        format!("Phase {n} must start when the one before it ends."),
                        Some("phases"),
                        "parameter_invalid",
                    ))
                }
                _ => {}
            }
            let price = &new.items[0].0;
            if price["currency"] != *currency {
                return Err(ApiError::invalid("Every phase must use the schedule's currency.", Some("phases"), "parameter_invalid"));
            }
            let (interval, count) =
                (price["recurring"]["interval"].as_str().unwrap_or("month"), price["recurring"]["interval_count"].as_i64().unwrap_or(1));
            let end = new.end_date.unwrap_or_else(|| add_interval(start, interval, count));
            if end <= start {
                return Err(ApiError::invalid(format!("Phase {n} must end after it starts."), Some("phases"), "parameter_invalid"));
            }
            built.push(phase(start, end, &new.items, currency, new.proration_behavior.as_deref().unwrap_or("create_prorations")));
            start = end;
        }
        changes.insert("phases".into(), json!(built));
    }
    if let Some(behavior) = end_behavior {
        changes.insert("end_behavior".into(), json!(behavior));
    }
    Ok(store.commit(id, changes, "subscription_schedule.updated"))
}

/// `POST /v1/subscription_schedules/{id}/release`: the subscription goes on without it.
pub fn release(store: &mut Store, id: &str) -> Result<Value, ApiError> {
    let schedule = store.get_kind("subscription_schedule", id, Some("id"))?.clone();
    if schedule["status"] != "active" {
        return Err(ApiError::bad_request(format!("You cannot release a schedule that is {}.", str_field(&schedule, "status"))));
    }
    Ok(end(store, &schedule, "released"))
}

/// `POST /v1/subscription_schedules/{id}/cancel`: the schedule ends now (its caller ends the
/// subscription too).
pub fn cancel(store: &mut Store, id: &str) -> Result<Value, ApiError> {
    let schedule = store.get_kind("subscription_schedule", id, Some("id"))?.clone();
    if schedule["status"] != "active" {
        return Err(ApiError::bad_request(format!("You cannot cancel a schedule that is {}.", str_field(&schedule, "status"))));
    }
    Ok(end(store, &schedule, "canceled"))
}

/// The schedule ends (`released`, `completed` or `canceled`): the subscription is detached.
fn end(store: &mut Store, schedule: &Value, status: &str) -> Value {
    let (id, subscription, now) = (str_field(schedule, "id"), str_field(schedule, "subscription"), store.now());
    let mut changes = Map::from_iter([("status".to_string(), json!(status)), ("current_phase".to_string(), Value::Null)]);
    let event = match status {
        "released" => {
            changes.insert("released_at".into(), json!(now));
            changes.insert("released_subscription".into(), json!(subscription));
            changes.insert("subscription".into(), Value::Null);
            "subscription_schedule.released"
        }
        "canceled" => {
            changes.insert("canceled_at".into(), json!(now));
            "subscription_schedule.canceled"
        }
        _ => {
            changes.insert("completed_at".into(), json!(now));
            "subscription_schedule.completed"
        }
    };
    let previous = store.update(&id, changes);
    store.emit_for(event, &id, Some(previous));
    store.commit(&subscription, Map::from_iter([("schedule".to_string(), Value::Null)]), "customer.subscription.updated");
    store.get(&id).cloned().unwrap_or_default()
}

/// What a schedule does at a renewal of its subscription.
pub enum AtBoundary {
    Nothing,
    /// A phase starts: the subscription's first item takes this price (and quantity).
    Phase {
        price: Value,
        quantity: Option<i64>,
    },
    /// The last phase is over and `end_behavior` is `cancel`: the subscription ends.
    Cancel,
}

/// At a renewal at `boundary` of a subscription on a schedule: the phase that starts there gives
/// the subscription its prices; past the last phase the schedule ends as its `end_behavior` says
/// (released, or completed with the subscription cancelled).
pub fn at_boundary(store: &mut Store, subscription: &Value, boundary: i64) -> AtBoundary {
    let Some(schedule) = subscription["schedule"].as_str().and_then(|id| store.get(id)).cloned().filter(|s| s["status"] == "active") else {
        return AtBoundary::Nothing;
    };
    let phases = schedule["phases"].as_array().cloned().unwrap_or_default();
    let Some(next) = phases.iter().find(|p| p["start_date"] == boundary) else {
        let over = phases.last().is_some_and(|last| last["end_date"].as_i64().is_some_and(|end| end <= boundary));
        return match (over, schedule["end_behavior"].as_str()) {
            (false, _) => AtBoundary::Nothing,
            (true, Some("cancel")) => {
                end(store, &schedule, "completed");
                AtBoundary::Cancel
            }
            (true, _) => {
                end(store, &schedule, "released");
                AtBoundary::Nothing
            }
        };
    };
    let current_phase = json!({ "end_date": next["end_date"], "start_date": next["start_date"] });
    store.commit(
        &str_field(&schedule, "id"),
        Map::from_iter([("current_phase".to_string(), current_phase)]),
        "subscription_schedule.updated",
    );
    match next["items"][0]["price"].as_str().and_then(|price| store.get(price)).cloned() {
        Some(price) => AtBoundary::Phase { price, quantity: next["items"][0]["quantity"].as_i64() },
        None => AtBoundary::Nothing,
    }
}
