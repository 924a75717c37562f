//! Billing meters (`billing.meter`), the meter events recorded against them, and their summaries.
//!
//! A meter names an event (`event_name`) and how its values add up over a time range
//! (`default_aggregation.formula`: `sum`, `count`, or `last`); after creation only its display
//! name changes, and it can be deactivated and reactivated. A meter event is validated at once
//! (its shape, a timestamp within the past 35 days and at most 5 minutes ahead, an identifier not
//! seen in the past 24 hours) and counted from then on. Stripe processes events asynchronously
//! and reports some errors later (no such meter or customer, a value that is no number); here
//! such an event is accepted and counts for nothing.
//!
//! Each event is kept as an internal record (`mtrevt_{identifier}`, never listed), so a repeated
//! identifier is found in one lookup. Stripe does not document its answer to a repeat within the
//! 24 hours; the emulator answers 400 `invalid_request_error` on `identifier`, and a client that
//! retries until one attempt is accepted must take that answer as "already recorded".

use serde_json::{json, Map, Value};

use crate::model::{new_id, random_alphanumeric, ApiError};
use crate::store::Store;

/// How long an identifier is remembered: Stripe's "rolling period of at least 24 hours".
const IDENTIFIERS_KEPT: i64 = 24 * 3600;
const MAX_PAST: i64 = 35 * 86_400;
const MAX_AHEAD: i64 = 5 * 60;

/// A meter as asked for.
pub struct NewMeter<'a> {
    pub display_name: &'a str,
    pub event_name: &'a str,
    pub formula: &'a str,
    pub customer_key: &'a str,
    pub value_key: &'a str,
    pub event_time_window: Option<&'a str>,
}

pub fn create(store: &mut Store, new: NewMeter<'_>) -> Result<Value, ApiError> {
    if store.iter_kind("billing.meter", None).any(|m| m["event_name"] == new.event_name && m["status"] == "active") {
        return Err(ApiError::invalid(
            format!("An active meter with event_name {} already exists.", new.event_name),
            Some("event_name"),
            "resource_already_exists",
        ));
    }
    let now = store.now();
    let meter = json!({
        "id": new_id("mtr_"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": { "event_payload_key": new.customer_key, "type": "by_id" },
        "default_aggregation": { "formula": new.formula },
        "display_name": new.display_name,
        "event_name": new.event_name,
        "event_time_window": new.event_time_window,
        "livemode": false,
        "status": "active",
        "status_transitions": { "deactivated_at": null },
        "updated": now,
        "value_settings": { "event_payload_key": new.value_key },
    });
    store.insert(meter.clone());
    Ok(meter)
}

/// Rename, deactivate (`Some(false)`) or reactivate (`Some(true)`) a meter.
pub fn update(store: &mut Store, id: &str, display_name: Option<&str>, active: Option<bool>) -> Result<Value, ApiError> {
    let meter = store.get_kind("billing.meter", id, Some("id"))?.clone();
    let now = store.now();
    let mut changes = Map::new();
    if let Some(name) = display_name {
        changes.insert("display_name".into(), json!(name));
    }
    match active {
        Some(false) if meter["status"] == "active" => {
            changes.insert("status".into(), json!("inactive"));
            changes.insert("status_transitions".into(), json!({ "deactivated_at": now }));
        }
        Some(true) if meter["status"] == "inactive" => {
            let event_name = &meter["event_name"];
            if store.iter_kind("billing.meter", None).any(|m| &m["event_name"] == event_name && m["status"] == "active") {
                return Err(ApiError::invalid(
                    format!("An active meter with event_name {} already exists.", event_name.as_str().unwrap_or_default()),
                    None,
                    "resource_already_exists",
                ));
            }
            changes.insert("status".into(), json!("active"));
            changes.insert("status_transitions".into(), json!({ "deactivated_at": null }));
        }
        Some(_) => {
            let state = if active == Some(true) { "active" } else { "inactive" };
            return Err(ApiError::invalid(format!("The meter is already {state}."), None, "invalid_request_error"));
        }
        None => {}
    }
    changes.insert("updated".into(), json!(now));
    store.update(id, changes);
    Ok(store.get(id).cloned().unwrap_or_default())
}

fn event_record_id(identifier: &str) -> String {
    format!("mtrevt_{identifier}")
}

/// Record a meter event; the event as Stripe answers it (without the internal record's id).
pub fn record_event(
    store: &mut Store,
    event_name: &str,
    payload: Map<String, Value>,
    identifier: Option<&str>,
    timestamp: Option<i64>,
) -> Result<Value, ApiError> {
    let now = store.now();
    let timestamp = timestamp.unwrap_or(now);
    if timestamp < now - MAX_PAST || timestamp > now + MAX_AHEAD {
        return Err(ApiError::invalid(
            "The timestamp must be within the past 35 days and at most 5 minutes in the future.",
            Some("timestamp"),
            "invalid_request_error",
        ));
    }
    let identifier = identifier.map_or_else(|| format!("mevt_{}", random_alphanumeric(24)), str::to_string);
    let record = event_record_id(&identifier);
    if store.get(&record).is_some_and(|seen| seen["created"].as_i64().unwrap_or(0) > now - IDENTIFIERS_KEPT) {
        return Err(ApiError::invalid(
            format!("An event already exists with identifier {identifier}."),
            Some("identifier"),
            "invalid_request_error",
        ));
    }
    let event = json!({
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": payload,
        "timestamp": timestamp,
    });
    let mut kept = event.clone();
    kept["id"] = json!(record);
    match store.get(&record) {
        Some(_) => store.replace(kept),
        None => store.insert(kept),
    }
    Ok(event)
}

/// The meter's aggregated value for `customer` over `[start, end)`, as its formula says (0 when
/// no event counts).
pub fn aggregate(store: &Store, meter: &Value, customer: &str, start: i64, end: i64) -> f64 {
    let customer_key = meter["customer_mapping"]["event_payload_key"].as_str().unwrap_or("stripe_customer_id");
    let value_key = meter["value_settings"]["event_payload_key"].as_str().unwrap_or("value");
    let mut events: Vec<(i64, f64)> = store
        .iter_kind("billing.meter_event", None)
        .filter(|e| e["event_name"] == meter["event_name"] && e["payload"][customer_key] == customer)
        .filter_map(|e| {
            let at = e["timestamp"].as_i64()?;
            let value = e["payload"][value_key].as_str().and_then(|v| v.trim().parse::<f64>().ok());
            ((start..end).contains(&at)).then_some((at, value.unwrap_or(f64::NAN)))
        })
        .collect();
    match meter["default_aggregation"]["formula"].as_str() {
        Some("count") => events.len() as f64,
        Some("last") => {
            events.sort_by_key(|(at, _)| *at);
            events.iter().rev().map(|(_, v)| *v).find(|v| v.is_finite()).unwrap_or(0.0)
        }
        _ => events.iter().map(|(_, v)| *v).filter(|v| v.is_finite()).sum(),
    }
}

/// The meter's summaries for `customer` over `[start, end)`: one, or one per `window` (`hour`,
/// `day`) in the range, newest first as Stripe lists them.
pub fn summaries(store: &Store, meter: &Value, customer: &str, start: i64, end: i64, window: Option<i64>) -> Vec<Value> {
    let step = window.unwrap_or(end - start).max(1);
    let mut found = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + step).min(end);
        let value = aggregate(store, meter, customer, from, to);
        found.push(json!({
            "id": format!("mtrusg_{}_{customer}_{from}", meter["id"].as_str().unwrap_or_default()),
            "object": "billing.meter_event_summary",
            "aggregated_value": value,
            "end_time": to,
            "livemode": false,
            "meter": meter["id"],
            "start_time": from,
        }));
        from = to;
    }
    found.reverse();
    found
}
