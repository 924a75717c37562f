//! The emulator's whole state: every object as Stripe-shaped JSON, in creation order, behind one
//! lock, plus what Stripe keeps beside its objects (webhook secrets, how each card behaves, what an
//! open Checkout Session will create, the control clock).
//!
//! Objects are stored as the JSON Stripe would return, so retrieval is a clone, updates are field
//! writes whose old values become an event's `previous_attributes`, and expansion is generic.
//! Every write is noted, so [`journal`] can append it to the data file when the action ends.

pub mod journal;

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{json, Map, Value};

use crate::model::cards::Outcome;
use crate::model::{kind_of, new_id, unix_now, ApiError, PendingSubscription, RequestInfo, API_VERSION};
use journal::{Journal, Record};

/// How many finished idempotent requests are remembered at most.
const IDEMPOTENCY_LIMIT: usize = 100_000;

/// How many delivery attempts `GET /_emulator/deliveries` keeps; older ones are dropped.
const DELIVERY_LOG_LIMIT: usize = 100_000;

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

impl Store {
    /// The state kept in `path` (empty if the file does not exist yet), from now on saved there.
    pub fn open(path: &std::path::Path) -> std::io::Result<Store> {
        let mut store = Store::default();
        for record in Journal::read(path)? {
            store.replay(record);
        }
        // Rewritten at once: the file then holds one line per object, whatever it held before.
        store.journal = Some(Journal::rewrite(path, &store.snapshot())?);
        Ok(store)
    }

    fn replay(&mut self, record: Record) {
        match record {
            Record::Put(object) => {
                let id = object["id"].as_str().unwrap_or_default();
                if self.objects.contains_key(id) {
                    self.objects.insert(id.to_string(), object);
                } else {
                    self.insert(object);
                }
            }
            Record::Index { customer, id } => self.index_under_customer(&customer, &id),
            Record::Secret { id, secret } => self.set_webhook_secret(&id, secret),
            Record::StartupEndpoints(ids) => self.startup_endpoints = ids,
            Record::Outcome { id, outcome } => self.set_card_outcome(&id, outcome),
            Record::Pending { id, pending } => self.set_pending_checkout(&id, pending),
            Record::Notice(key) => {
                self.notices.insert(key);
            }
            Record::ClockOffset(offset) => self.clock_offset = offset,
            Record::Reset => self.reset(),
        }
        // Replaying is not a change to save again.
        self.pending_records.clear();
        self.dirty.clear();
        self.dirty_set.clear();
    }

    /// The whole state as records: every object in creation order per kind, then the side tables.
    fn snapshot(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut kinds: Vec<&&str> = self.order.keys().collect();
        kinds.sort();
        for kind in kinds {
            records.extend(self.order[*kind].iter().filter_map(|id| self.objects.get(id)).map(|o| Record::Put(o.clone())));
        }
        for (customer, ids) in &self.by_customer {
            records.extend(ids.iter().map(|id| Record::Index { customer: customer.clone(), id: id.clone() }));
        }
        records.extend(self.webhook_secrets.iter().map(|(id, s)| Record::Secret { id: id.clone(), secret: Some(s.clone()) }));
        records.push(Record::StartupEndpoints(self.startup_endpoints.clone()));
        records.extend(self.card_outcomes.iter().map(|(id, o)| Record::Outcome { id: id.clone(), outcome: o.clone() }));
        records.extend(self.pending_checkout.iter().map(|(id, p)| Record::Pending { id: id.clone(), pending: Some(p.clone()) }));
        records.extend(self.notices.iter().map(|key| Record::Notice(key.clone())));
        records.push(Record::ClockOffset(self.clock_offset));
        records
    }

    /// Save this action's writes to the data file, synced (nothing to do without one). After a
    /// reset, or once the appended part outgrows the snapshot, the file is rewritten whole.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(journal) = &mut self.journal else { return Ok(()) };
        let side_tables = std::mem::take(&mut self.pending_records);
        let dirty = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        if side_tables.iter().any(|r| matches!(r, Record::Reset)) || journal.wants_rewrite() {
            let path = journal.path().to_path_buf();
            self.journal = Some(Journal::rewrite(&path, &self.snapshot())?);
            return Ok(());
        }
        // Objects first, so a customer index never names an object not yet read back.
        let mut records: Vec<Record> = dirty.iter().filter_map(|id| self.objects.get(id)).map(|o| Record::Put(o.clone())).collect();
        records.extend(side_tables);
        journal.append(&records)
    }
}

/// The store behind its lock, shared by the emulator and its webhook deliveries.
#[derive(Clone, Default)]
pub struct SharedStore(std::sync::Arc<std::sync::RwLock<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(std::sync::Arc::new(std::sync::RwLock::new(store)))
    }

    /// Exclusive access, for changes. A panic while holding the lock leaves plain data behind, still usable.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shared access: reads run in parallel.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
    webhook_secrets: HashMap<String, String>,
    /// The endpoints the configuration registered, replaced at each start.
    startup_endpoints: Vec<String>,
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
    clock_offset: i64,
    /// The frozen time of the test clock the current action runs under (see `use_clock_of`).
    frozen: Option<i64>,
    /// How each stored card payment method behaves when charged (kept out of the Stripe-shaped JSON).
    card_outcomes: HashMap<String, Outcome>,
    /// What each open Checkout Session will create once paid.
    pending_checkout: HashMap<String, PendingSubscription>,
    /// One-time notices already sent (`trial_will_end` for one trial end, say), so none is sent twice.
    notices: HashSet<String>,
    /// Ids written since the journal last saved, in the order first written.
    dirty: Vec<String>,
    dirty_set: HashSet<String>,
    /// Side-table changes since the journal last saved.
    pending_records: Vec<Record>,
    /// The data file, when the state is kept on disk.
    journal: Option<Journal>,
}

impl Store {
    /// The current time: the action's test clock when it runs under one, else the control clock.
    pub fn now(&self) -> i64 {
        self.frozen.unwrap_or_else(|| self.control_now())
    }

    /// The wall clock moved by `POST /_emulator/clock/advance`, whatever test clock is in use.
    pub fn control_now(&self) -> i64 {
        unix_now() + self.clock_offset
    }

    pub fn advance_control_clock(&mut self, seconds: i64) {
        self.clock_offset += seconds;
        self.pending_records.push(Record::ClockOffset(self.clock_offset));
    }

    /// Run the rest of this action at the frozen time of `customer`'s test clock, if it has one.
    pub fn use_clock_of(&mut self, customer: &str) {
        let clock = self.objects.get(customer).and_then(|c| c["test_clock"].as_str()).and_then(|id| self.objects.get(id));
        self.frozen = clock.and_then(|c| c["frozen_time"].as_i64());
    }

    /// Run at a given frozen time (a test clock being advanced); `None` returns to the control clock.
    pub fn use_frozen_time(&mut self, at: Option<i64>) {
        self.frozen = at;
    }

    /// Forget every object and side table, keeping the data file (whose contents the next save replaces).
    pub fn reset(&mut self) {
        let journal = self.journal.take();
        *self = Store::default();
        self.journal = journal;
        self.pending_records.push(Record::Reset);
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

    pub fn contains(&self, id: &str) -> bool {
        self.objects.contains_key(id)
    }

    fn touch(&mut self, id: &str) {
        if self.journal.is_some() && self.dirty_set.insert(id.to_string()) {
            self.dirty.push(id.to_string());
        }
    }

    pub fn webhook_secret(&self, endpoint: &str) -> Option<&String> {
        self.webhook_secrets.get(endpoint)
    }

    pub fn set_webhook_secret(&mut self, endpoint: &str, secret: Option<String>) {
        match &secret {
            Some(s) => self.webhook_secrets.insert(endpoint.to_string(), s.clone()),
            None => self.webhook_secrets.remove(endpoint),
        };
        self.pending_records.push(Record::Secret { id: endpoint.to_string(), secret });
    }

    pub fn startup_endpoints(&self) -> &[String] {
        &self.startup_endpoints
    }

    pub fn set_startup_endpoints(&mut self, ids: Vec<String>) {
        self.startup_endpoints = ids.clone();
        self.pending_records.push(Record::StartupEndpoints(ids));
    }

    pub fn card_outcome(&self, payment_method: &str) -> Option<&Outcome> {
        self.card_outcomes.get(payment_method)
    }

    pub fn set_card_outcome(&mut self, payment_method: &str, outcome: Outcome) {
        self.card_outcomes.insert(payment_method.to_string(), outcome.clone());
        self.pending_records.push(Record::Outcome { id: payment_method.to_string(), outcome });
    }

    pub fn pending_checkout(&self, session: &str) -> Option<&PendingSubscription> {
        self.pending_checkout.get(session)
    }

    pub fn set_pending_checkout(&mut self, session: &str, pending: Option<PendingSubscription>) {
        match &pending {
            Some(p) => self.pending_checkout.insert(session.to_string(), p.clone()),
            None => self.pending_checkout.remove(session),
        };
        self.pending_records.push(Record::Pending { id: session.to_string(), pending });
    }

    pub fn noticed(&self, key: &str) -> bool {
        self.notices.contains(key)
    }

    /// Note a one-time notice as sent; false if it already was.
    pub fn first_notice(&mut self, key: String) -> bool {
        if !self.notices.insert(key.clone()) {
            return false;
        }
        self.pending_records.push(Record::Notice(key));
        true
    }

    /// Store a new object (it must carry `id` and `object`), indexing it under its customer if it has one.
    pub fn insert(&mut self, object: Value) {
        let id = object["id"].as_str().unwrap_or_default().to_string();
        // Coupons' ids have no prefix (they may be chosen: `SUMMER25`).
        let kind = kind_of(&id).or_else(|| (object["object"] == "coupon").then_some("coupon")).unwrap_or("unknown");
        if let Some(customer) = object.get("customer").and_then(Value::as_str) {
            self.by_customer.entry(customer.to_string()).or_default().push(id.clone());
        }
        self.order.entry(kind).or_default().push(id.clone());
        self.touch(&id);
        self.objects.insert(id, object);
    }

    /// Record that an existing object now belongs to `customer` (a payment method being attached).
    pub fn index_under_customer(&mut self, customer: &str, id: &str) {
        let ids = self.by_customer.entry(customer.to_string()).or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
            self.pending_records.push(Record::Index { customer: customer.to_string(), id: id.to_string() });
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
        self.touch(&id);
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
        self.touch(id);
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

    /// Take a field off a stored object (one that Stripe leaves out rather than nulls), returning it.
    pub fn remove_field(&mut self, id: &str, field: &str) -> Option<Value> {
        self.touch(id);
        self.objects.get_mut(id).and_then(Value::as_object_mut).and_then(|object| object.remove(field))
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

    /// `defer` with the object as stored under `id` now.
    pub fn defer_for(&mut self, event_type: &str, id: &str) {
        if let Some(object) = self.objects.get(id).cloned() {
            self.defer(event_type, &object, None);
        }
    }

    pub fn flush_deferred(&mut self) {
        for (event_type, object, previous) in std::mem::take(&mut self.deferred) {
            self.emit(&event_type, &object, previous);
        }
    }

    /// The events of the action so far.
    pub fn pending_events(&self) -> &[Value] {
        &self.pending_events
    }

    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.pending_events)
    }

    /// Set `pending_webhooks` on a stored event once the dispatcher knows how many endpoints want it.
    pub fn set_pending_webhooks(&mut self, event_id: &str, count: usize) {
        self.touch(event_id);
        if let Some(event) = self.objects.get_mut(event_id) {
            event["pending_webhooks"] = json!(count);
        }
    }

    /// Keep a finished idempotent response. Like Stripe, keys are forgotten after 24 hours; the
    /// emulator also keeps at most `IDEMPOTENCY_LIMIT`, so a long benchmark cannot grow it forever.
    pub fn remember_idempotent(&mut self, key: String, entry: IdempotencyEntry) {
        let now = self.control_now();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_forgotten_after_a_day() {
        let mut store = Store::default();
        let entry = || IdempotencyEntry::Done { fingerprint: "f".into(), status: 200, body: Default::default() };
        store.remember_idempotent("old".into(), entry());
        store.advance_control_clock(24 * 3600);
        store.remember_idempotent("new".into(), entry());
        assert!(!store.idempotency.contains_key("old"));
        assert!(store.idempotency.contains_key("new"));
    }
}
