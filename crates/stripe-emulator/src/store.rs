//! The emulator's whole state: every object as Stripe-shaped JSON, in creation order, behind one lock.
//!
//! Objects are stored as the JSON Stripe would return, so retrieval is a clone, updates are field
//! writes whose old values become an event's `previous_attributes`, and expansion is generic.

use std::collections::{HashMap, VecDeque};

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The API version whose object shapes the emulator renders (the one stripe-node 23 pins).
pub const API_VERSION: &str = "2026-10-28.endive";

/// How many finished idempotent requests are remembered at most.
const IDEMPOTENCY_LIMIT: usize = 100_000;

/// How many delivery attempts `GET /_emulator/deliveries` keeps; older ones are dropped.
const DELIVERY_LOG_LIMIT: usize = 100_000;

/// `len` random letters and digits: ids, secrets.
pub fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_alphanumeric(24))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The object kind an id belongs to, from its prefix; used by retrieval, expansion and `No such …` messages.
pub fn kind_of(id: &str) -> Option<&'static str> {
    const PREFIXES: &[(&str, &str)] = &[
        ("prod_", "product"),
        ("price_", "price"),
        ("cus_", "customer"),
        ("pm_", "payment_method"),
        ("cs_", "checkout.session"),
        ("sub_", "subscription"),
        ("si_", "subscription_item"),
        ("in_", "invoice"),
        ("pi_", "payment_intent"),
        ("evt_", "event"),
        ("we_", "webhook_endpoint"),
        ("bps_", "billing_portal.session"),
    ];
    PREFIXES.iter().find(|(p, _)| id.starts_with(p)).map(|(_, k)| *k)
}

/// Who caused a change: recorded on each event as Stripe's `request` field.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One delivery attempt of one event to one endpoint, as listed by `GET /_emulator/deliveries`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub url: String,
    pub attempt: u32,
    /// The receiver's HTTP status; `None` when the connection failed or timed out.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub succeeded: bool,
    pub at: i64,
}

/// A stored idempotent response, or a marker that the first request with this key is still running.
#[derive(Debug, Clone)]
pub enum IdempotencyEntry {
    InFlight { fingerprint: String },
    Done { fingerprint: String, status: u16, body: std::sync::Arc<Vec<u8>> },
}

/// An event type with its object snapshot and `previous_attributes`, waiting for `flush_deferred`.
type DeferredEvent = (String, Value, Option<Map<String, Value>>);

#[derive(Default)]
pub struct Store {
    objects: HashMap<String, Value>,
    /// Ids of each kind in creation order (oldest first); deleted ids stay and are skipped.
    order: HashMap<&'static str, Vec<String>>,
    /// Ids of objects that belong to a customer, in creation order, so per-customer lists are cheap.
    by_customer: HashMap<String, Vec<String>>,
    /// Webhook endpoint secrets, kept out of the endpoint objects (Stripe shows them only on create).
    pub webhook_secrets: HashMap<String, String>,
    pub idempotency: HashMap<String, IdempotencyEntry>,
    /// Stored idempotency keys, oldest first, with when they were stored (for pruning).
    idempotency_order: VecDeque<(String, i64)>,
    pub deliveries: VecDeque<DeliveryRecord>,
    /// Events produced by the current action, handed to the webhook dispatcher when it ends.
    pending_events: Vec<Value>,
    /// Events recorded now but emitted after others of the same action (see `defer`).
    deferred: Vec<DeferredEvent>,
    pub request: RequestInfo,
    /// Seconds added to the wall clock by `POST /_emulator/clock/advance`.
    pub clock_offset: i64,
    /// How each stored card payment method behaves when charged (kept out of the Stripe-shaped JSON).
    pub card_outcomes: HashMap<String, crate::cards::Outcome>,
    /// What each open Checkout Session will create once paid.
    pub pending_checkout: HashMap<String, crate::resources::checkout::PendingSubscription>,
}

impl Store {
    pub fn now(&self) -> i64 {
        unix_now() + self.clock_offset
    }

    pub fn reset(&mut self) {
        *self = Store::default();
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    /// An object of one kind, or Stripe's 404 naming that kind.
    pub fn get_kind(&self, kind: &str, id: &str, param: Option<&str>) -> Result<&Value, ApiError> {
        match self.objects.get(id) {
            Some(v) if v["object"] == kind && v.get("deleted").is_none() => Ok(v),
            _ => Err(ApiError::missing(kind, id, param)),
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.objects.get_mut(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.objects.contains_key(id)
    }

    /// Store a new object (it must carry `id` and `object`), indexing it under its customer if it has one.
    pub fn insert(&mut self, object: Value) {
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let kind = kind_of(&id).unwrap_or("unknown");
        if let Some(customer) = object.get("customer").and_then(Value::as_str) {
            self.by_customer.entry(customer.to_string()).or_default().push(id.clone());
        }
        self.order.entry(kind).or_default().push(id.clone());
        self.objects.insert(id, object);
    }

    /// Record that an existing object now belongs to `customer` (a payment method being attached).
    pub fn index_under_customer(&mut self, customer: &str, id: &str) {
        let ids = self.by_customer.entry(customer.to_string()).or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }

    /// Replace an object by Stripe's deleted form, `{id, object, deleted: true}`, and return that.
    pub fn delete(&mut self, id: &str) -> Value {
        let kind = self.objects.get(id).map(|o| o["object"].clone()).unwrap_or(Value::Null);
        let tombstone = json!({ "id": id, "object": kind, "deleted": true });
        self.replace(tombstone.clone());
        tombstone
    }

    pub fn replace(&mut self, object: Value) {
        let id = object["id"].as_str().unwrap_or_default().to_string();
        self.objects.insert(id, object);
    }

    /// Objects of `kind`, newest first, optionally only those of one customer.
    pub fn iter_kind<'a>(&'a self, kind: &'static str, customer: Option<&'a str>) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        let ids: &[String] = match customer {
            Some(c) => self.by_customer.get(c).map(Vec::as_slice).unwrap_or(&[]),
            None => self.order.get(kind).map(Vec::as_slice).unwrap_or(&[]),
        };
        Box::new(
            ids.iter()
                .rev()
                .filter_map(move |id| self.objects.get(id))
                .filter(move |v| v["object"] == kind && v.get("deleted").is_none() && customer.is_none_or(|c| v["customer"] == c)),
        )
    }

    /// Set fields of a stored object, returning the old values of those that changed (`previous_attributes`).
    pub fn update(&mut self, id: &str, changes: Map<String, Value>) -> Map<String, Value> {
        let mut previous = Map::new();
        if let Some(Value::Object(object)) = self.objects.get_mut(id) {
            for (key, value) in changes {
                let old = object.get(&key).cloned().unwrap_or(Value::Null);
                if old != value {
                    previous.insert(key.clone(), old);
                    object.insert(key, value);
                }
            }
        }
        previous
    }

    /// Write changes and, if anything changed, emit `event_type` with `previous_attributes`.
    /// Returns the object as stored now.
    pub fn commit(&mut self, id: &str, changes: Map<String, Value>, event_type: &str) -> Value {
        let previous = self.update(id, changes);
        if !previous.is_empty() {
            self.emit_for(event_type, id, Some(previous));
        }
        self.get(id).cloned().unwrap_or_default()
    }

    /// Record an event of this action; it is delivered when the action ends.
    pub fn emit(&mut self, event_type: &str, object: &Value, previous: Option<Map<String, Value>>) -> String {
        let id = new_id("evt_");
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = Value::Object(previous);
        }
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": false,
            "pending_webhooks": 0,
            "request": { "id": self.request.id, "idempotency_key": self.request.idempotency_key },
            "type": event_type,
        });
        self.insert(event.clone());
        self.pending_events.push(event);
        id
    }

    /// Emit an event for an object already stored under `id` (after its last change).
    pub fn emit_for(&mut self, event_type: &str, id: &str, previous: Option<Map<String, Value>>) {
        if let Some(object) = self.objects.get(id).cloned() {
            self.emit(event_type, &object, previous);
        }
    }

    /// Snapshot an event now but emit it at `flush_deferred`, so that, as in Stripe, a subscription's
    /// `created` event precedes the events of the invoice that was made while creating it.
    pub fn defer(&mut self, event_type: &str, object: &Value, previous: Option<Map<String, Value>>) {
        self.deferred.push((event_type.to_string(), object.clone(), previous));
    }

    pub fn flush_deferred(&mut self) {
        for (event_type, object, previous) in std::mem::take(&mut self.deferred) {
            self.emit(&event_type, &object, previous);
        }
    }

    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.pending_events)
    }

    /// Set `pending_webhooks` on a stored event once the dispatcher knows how many endpoints want it.
    pub fn set_pending_webhooks(&mut self, event_id: &str, count: usize) {
        if let Some(event) = self.objects.get_mut(event_id) {
            event["pending_webhooks"] = json!(count);
        }
    }

    /// Keep a finished idempotent response. Like Stripe, keys are forgotten after 24 hours; the
    /// emulator also keeps at most `IDEMPOTENCY_LIMIT`, so a long benchmark cannot grow it forever.
    pub fn remember_idempotent(&mut self, key: String, entry: IdempotencyEntry) {
        let now = self.now();
        self.idempotency.insert(key.clone(), entry);
        self.idempotency_order.push_back((key, now));
        while let Some((oldest, at)) = self.idempotency_order.front() {
            if self.idempotency_order.len() <= IDEMPOTENCY_LIMIT && now - at < 24 * 3600 {
                break;
            }
            // Each key is queued once: while it is remembered, reuse replays instead of storing.
            self.idempotency.remove(oldest);
            self.idempotency_order.pop_front();
        }
    }

    pub fn record_delivery(&mut self, record: DeliveryRecord) {
        if self.deliveries.len() >= DELIVERY_LOG_LIMIT {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(record);
    }
}

/// One page of objects, newest first, with `starting_after` / `ending_before` cursors, and whether more follow.
pub fn paginate<'a>(items: impl Iterator<Item = &'a Value>, page: &ListParams) -> (Vec<&'a Value>, bool) {
    let items: Vec<&Value> = items.collect();
    let position = |cursor: &str| items.iter().position(|v| v["id"] == cursor);
    let (start, end) = if let Some(after) = &page.starting_after {
        let start = position(after).map(|i| i + 1).unwrap_or(items.len());
        (start, (start + page.limit).min(items.len()))
    } else if let Some(before) = &page.ending_before {
        let end = position(before).unwrap_or(0);
        (end.saturating_sub(page.limit), end)
    } else {
        (0, page.limit.min(items.len()))
    };
    let has_more = if page.ending_before.is_some() { start > 0 } else { end < items.len() };
    (items[start..end].to_vec(), has_more)
}

/// `limit`, `starting_after` and `ending_before`, shared by every list endpoint.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

pub const LIST_PARAMS: &[&str] = &["limit", "starting_after", "ending_before", "expand", "created"];

impl ListParams {
    pub fn from(params: &crate::form::Params, store: &Store) -> Result<ListParams, ApiError> {
        let limit = match params.int("limit")? {
            None => 10,
            Some(n) if (1..=100).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    format!("Invalid limit: must be between 1 and 100 (got {n})"),
                    Some("limit"),
                    "parameter_invalid_integer",
                ))
            }
        };
        let cursor = |name: &str| -> Result<Option<String>, ApiError> {
            match params.non_empty_str(name)? {
                None => Ok(None),
                Some(id) if store.contains(id) => Ok(Some(id.to_string())),
                Some(id) => Err(ApiError::missing(kind_of(id).unwrap_or("object"), id, Some(name))),
            }
        };
        let starting_after = cursor("starting_after")?;
        let ending_before = cursor("ending_before")?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                Some("starting_after"),
                "parameters_exclusive",
            ));
        }
        Ok(ListParams { limit, starting_after, ending_before })
    }
}

/// The `created` filter of list endpoints: an exact timestamp or `created[gt|gte|lt|lte]`.
pub fn created_filter(params: &crate::form::Params) -> Result<impl Fn(&Value) -> bool, ApiError> {
    let mut bounds: Vec<(String, i64)> = Vec::new();
    if params.has("created") {
        match params.int("created") {
            Ok(Some(t)) => bounds.push(("eq".into(), t)),
            _ => {
                let hash = params.hash("created")?.unwrap_or_default();
                hash.allow(&["gt", "gte", "lt", "lte"])?;
                for op in ["gt", "gte", "lt", "lte"] {
                    if let Some(t) = hash.int(op)? {
                        bounds.push((op.into(), t));
                    }
                }
            }
        }
    }
    Ok(move |v: &Value| {
        let created = v["created"].as_i64().unwrap_or(0);
        bounds.iter().all(|(op, t)| match op.as_str() {
            "eq" => created == *t,
            "gt" => created > *t,
            "gte" => created >= *t,
            "lt" => created < *t,
            _ => created <= *t,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_forgotten_after_a_day() {
        let mut store = Store::default();
        let entry = || IdempotencyEntry::Done { fingerprint: "f".into(), status: 200, body: Default::default() };
        store.remember_idempotent("old".into(), entry());
        store.clock_offset += 24 * 3600;
        store.remember_idempotent("new".into(), entry());
        assert!(!store.idempotency.contains_key("old"));
        assert!(store.idempotency.contains_key("new"));
    }
}
