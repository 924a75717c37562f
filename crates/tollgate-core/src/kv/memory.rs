//! In-memory KV, for unit tests and `KV_URL=memory:`. Every operation runs under one lock and
//! before the future is first polled, so a dropped future either did all of it or none.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::local::{self, Leases, ReadTable, Table};
use super::{keys, Commit, Kv, KvError, KvFuture};
use crate::clock::Clock;

/// `Default`: on the system's clock.
#[derive(Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<String, String>>,
    leases: Leases,
    /// Expiry is read from it.
    clock: Clock,
}

impl MemoryKv {
    pub fn new(clock: Clock) -> MemoryKv {
        MemoryKv { map: Mutex::default(), leases: Leases::new(clock.clone()), clock }
    }
}

struct Map<'a>(&'a mut BTreeMap<String, String>);

impl Table for Map<'_> {
    fn insert(&mut self, key: &str, value: &str) -> Result<(), KvError> {
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), KvError> {
        self.0.remove(key);
        Ok(())
    }
    fn add(&mut self, key: &str, amount: u64) -> Result<u64, KvError> {
        use std::fmt::Write;
        let Some(value) = self.0.get_mut(key) else {
            self.insert(key, &amount.to_string())?;
            return Ok(0);
        };
        let before = value.parse::<u64>().unwrap_or(0);
        value.clear();
        let _ = write!(value, "{}", before + amount);
        Ok(before)
    }
}

impl ReadTable for Map<'_> {
    fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        Ok(self.0.get(key).cloned())
    }
    fn number(&self, key: &str) -> Result<Option<i64>, KvError> {
        Ok(self.0.get(key).and_then(|v| v.parse().ok()))
    }
    fn scan(&self, prefix: &str, start: &str, limit: usize) -> Result<Vec<(String, String)>, KvError> {
        Ok(self
            .0
            .range(start.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl MemoryKv {
    fn with<'a, T: Send + 'a>(&self, f: impl FnOnce(&mut Map) -> Result<T, KvError>) -> KvFuture<'a, T> {
        KvFuture::ready(f(&mut Map(&mut self.map.lock().unwrap_or_else(|p| p.into_inner()))))
    }
}

impl Kv for MemoryKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        self.with(|m| m.get(key))
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| m.insert(key, value))
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        self.with(|m| local::set_if_absent(m, key, value))
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| m.remove(key))
    }
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        self.with(|m| local::take(m, key, self.clock.unix_now()))
    }
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()> {
        self.with(|m| local::set_expiring(m, key, value, ttl, self.clock.unix_now()))
    }
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64> {
        self.with(|m| local::increment(m, key, ttl, self.clock.unix_now()))
    }
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>> {
        self.with(|m| local::hash_get(m, key, field))
    }
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>> {
        self.with(|m| local::hash_get_all(m, key))
    }
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| local::hash_set(m, key, field, value))
    }
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool> {
        self.with(|m| local::hash_remove(m, key, field))
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        local::ready(())
    }
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)> {
        self.with(|m| local::scan_keys(m, prefix, cursor, limit))
    }
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool> {
        self.with(|m| local::mark_pending(m, customer, event_id, self.clock.unix_now()))
    }
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>> {
        self.with(|m| local::pending_generation(m, customer))
    }
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>> {
        self.with(|m| {
            local::forget_expired(m, self.clock.unix_now(), 10_000)?;
            local::pending_customers(m, limit)
        })
    }
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool> {
        local::ready(self.leases.lease(name, token, ttl))
    }
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()> {
        self.leases.release(name, token);
        local::ready(())
    }
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit> {
        self.with(|m| local::commit_sync(m, &self.leases, customer, token, generation, entry))
    }
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool> {
        self.with(|m| local::usage_add(m, bucket, amount, once, self.clock.unix_now()))
    }
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>> {
        self.with(|m| local::usage_take(m, bucket))
    }
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, super::UsagePending> {
        self.with(|m| local::usage_pending(m, limit))
    }
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| local::hash_remove(m, keys::USAGE_SENDING, record).map(drop))
    }
    fn admit<'a>(&'a self, quota: super::Quota<'a>) -> KvFuture<'a, super::Admission> {
        self.with(|m| local::admit(m, &self.leases, quota, self.clock.unix_now()))
    }
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>> {
        local::ready(self.leases.reserve(name, per_second, max_wait))
    }
}
