//! Stripe's test clocks: a frozen time for the customers created under a clock (and their
//! subscriptions and invoices), moved forward by an advance that runs every step that fell due.
//!
//! An advance answers `advancing` at once and finishes in the background (see
//! [`crate::engine::Emulator::advance_test_clock`]), as in Stripe, so clients poll until `ready`.
//! A clock is deleted, with its customers, once its `deletes_after` has passed.

use serde_json::{json, Map, Value};

use crate::engine::billing::{self, Clock, Renewals};
use crate::engine::customers::delete_customer;
use crate::model::calendar::add_interval;
use crate::model::{is_ended, new_id, str_field, ApiError};
use crate::store::Store;

const KIND: &str = "test_helpers.test_clock";

/// A new clock; with `customer` (an existing customer under no clock, as `2026-05-27.dahlia`
/// allows) that customer and its subscriptions move under it.
pub fn create(store: &mut Store, frozen_time: i64, name: Option<String>, customer: Option<&str>) -> Result<Value, ApiError> {
    if let Some(customer) = customer {
        let found = store.get_kind("customer", customer, Some("customer"))?;
        if !found["test_clock"].is_null() {
            return Err(ApiError::invalid("That customer already belongs to a test clock.", Some("customer"), "parameter_invalid_string"));
        }
    }
    let now = store.control_now();
    let clock = json!({
        "id": new_id("clock_"),
        "object": KIND,
        "created": now,
        "deletes_after": now + 30 * 86_400,
        "frozen_time": frozen_time,
        "livemode": false,
        "name": name,
        "status": "ready",
        "status_details": {},
    });
    store.insert(clock.clone());
    store.emit("test_helpers.test_clock.created", &clock, None);
    if let Some(customer) = customer {
        let clock_id = json!(clock["id"]);
        store.update(customer, Map::from_iter([("test_clock".to_string(), clock_id.clone())]));
        let subscriptions: Vec<String> = store.iter_kind("subscription", Some(customer)).map(|s| str_field(s, "id")).collect();
        for id in subscriptions {
            store.update(&id, Map::from_iter([("test_clock".to_string(), clock_id.clone())]));
        }
    }
    Ok(clock)
}

/// Check an advance and mark the clock `advancing` toward `frozen_time`.
pub fn start_advance(store: &mut Store, id: &str, frozen_time: i64) -> Result<Value, ApiError> {
    let clock = store.get_kind(KIND, id, Some("id"))?.clone();
    if clock["status"] != "ready" {
        return Err(ApiError::bad_request(format!("The test clock {id} is advancing; wait until it is ready to advance it again.")));
    }
    let current = clock["frozen_time"].as_i64().unwrap_or(0);
    if frozen_time <= current {
        return Err(ApiError::invalid(
            "The frozen_time must be later than the test clock's current frozen_time.",
            Some("frozen_time"),
            "parameter_invalid_integer",
        ));
    }
    // At most two intervals of the shortest subscription on the clock ahead (two years without one).
    let limit = store
        .iter_kind("subscription", None)
        .filter(|s| s["test_clock"] == id && !is_ended(s))
        .map(|s| {
            let recurring = &s["items"]["data"][0]["price"]["recurring"];
            add_interval(current, recurring["interval"].as_str().unwrap_or("month"), 2 * recurring["interval_count"].as_i64().unwrap_or(1))
        })
        .min()
        .unwrap_or_else(|| add_interval(current, "year", 2));
    if frozen_time > limit {
        return Err(ApiError::invalid(
            format!("Cannot advance more than two intervals of the shortest subscription on this clock at once (up to {limit})."),
            Some("frozen_time"),
            "parameter_invalid_integer",
        ));
    }
    let changes = Map::from_iter([
        ("status".to_string(), json!("advancing")),
        ("status_details".to_string(), json!({ "advancing": { "target_frozen_time": frozen_time } })),
    ]);
    Ok(store.commit(id, changes, "test_helpers.test_clock.advancing"))
}

/// Run everything due on the clock up to its target: the work of an advance. Returns how many
/// events it made (what the advance's duration grows with).
pub fn run_advance(store: &mut Store, id: &str, renewals: &Renewals) -> usize {
    let Some(target) = advancing_to(store, id) else { return 0 };
    let before = store.pending_events().len();
    billing::catch_up(store, Clock::Test(id), target, renewals);
    store.pending_events().len() - before
}

/// The time a clock that is advancing is moving to.
fn advancing_to(store: &Store, id: &str) -> Option<i64> {
    store.get(id).and_then(|c| c["status_details"]["advancing"]["target_frozen_time"].as_i64())
}

/// End an advance: the clock is `ready` at its target. The clock's own events carry the wall
/// time, as its `created` and `advancing` events do (the clock is not under itself).
pub fn mark_ready(store: &mut Store, id: &str) {
    let Some(target) = advancing_to(store, id) else { return };
    store.use_frozen_time(None);
    let changes = Map::from_iter([
        ("status".to_string(), json!("ready")),
        ("frozen_time".to_string(), json!(target)),
        ("status_details".to_string(), json!({})),
    ]);
    store.commit(id, changes, "test_helpers.test_clock.ready");
}

/// Clocks whose `deletes_after` has passed on the control clock.
pub fn expired(store: &Store) -> Vec<String> {
    let now = store.control_now();
    store.iter_kind(KIND, None).filter(|c| c["deletes_after"].as_i64().is_some_and(|at| at <= now)).map(|c| str_field(c, "id")).collect()
}

/// Clocks left `advancing` (the emulator stopped mid-advance).
pub fn advancing(store: &Store) -> Vec<String> {
    store.iter_kind(KIND, None).filter(|c| c["status"] == "advancing").map(|c| str_field(c, "id")).collect()
}

/// Delete a clock with its customers, whose subscriptions are canceled.
pub fn delete(store: &mut Store, id: &str) -> Result<Value, ApiError> {
    let clock = store.get_kind(KIND, id, Some("id"))?.clone();
    store.use_frozen_time(clock["frozen_time"].as_i64());
    let customers: Vec<String> = store.iter_kind("customer", None).filter(|c| c["test_clock"] == id).map(|c| str_field(c, "id")).collect();
    for customer in customers {
        delete_customer(store, &customer)?;
    }
    let tombstone = store.delete(id);
    store.use_frozen_time(None);
    store.emit("test_helpers.test_clock.deleted", &clock, None);
    Ok(tombstone)
}
