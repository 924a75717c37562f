//! Every store is wrapped in `Metered`, which counts failed operations by name
//! (`tollgate_kv_errors_total`) and otherwise passes each call through unchanged.

use std::time::Duration;

use super::{Commit, Kv, KvFuture, SharedKv};

pub struct Metered(pub SharedKv);

/// The call's outcome, with a failure counted under `operation`.
fn counted<'a, T: Send + 'a>(operation: &'static str, call: KvFuture<'a, T>) -> KvFuture<'a, T> {
    Box::pin(async move {
        let outcome = call.await;
        if outcome.is_err() {
            crate::metrics::METRICS.kv_errors.with_label_values(&[operation]).inc();
        }
        outcome
    })
}

impl Kv for Metered {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        counted("get", self.0.get(key))
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        counted("set", self.0.set(key, value))
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        counted("set_if_absent", self.0.set_if_absent(key, value))
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        counted("delete", self.0.delete(key))
    }
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        counted("take", self.0.take(key))
    }
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()> {
        counted("set_expiring", self.0.set_expiring(key, value, ttl))
    }
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64> {
        counted("increment", self.0.increment(key, ttl))
    }
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>> {
        counted("hash_get", self.0.hash_get(key, field))
    }
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>> {
        counted("hash_get_all", self.0.hash_get_all(key))
    }
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        counted("hash_set", self.0.hash_set(key, field, value))
    }
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool> {
        counted("hash_remove", self.0.hash_remove(key, field))
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        counted("ping", self.0.ping())
    }
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)> {
        counted("scan_keys", self.0.scan_keys(prefix, cursor, limit))
    }
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool> {
        counted("mark_pending", self.0.mark_pending(customer, event_id))
    }
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>> {
        counted("pending_generation", self.0.pending_generation(customer))
    }
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>> {
        counted("pending_customers", self.0.pending_customers(limit))
    }
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool> {
        counted("lease", self.0.lease(name, token, ttl))
    }
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()> {
        counted("release", self.0.release(name, token))
    }
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit> {
        counted("commit_sync", self.0.commit_sync(customer, token, generation, entry))
    }
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool> {
        counted("usage_add", self.0.usage_add(bucket, amount, once))
    }
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>> {
        counted("usage_take", self.0.usage_take(bucket))
    }
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, super::UsagePending> {
        counted("usage_pending", self.0.usage_pending(limit))
    }
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()> {
        counted("usage_sent", self.0.usage_sent(record))
    }
    fn admit<'a>(&'a self, quota: super::Quota<'a>) -> KvFuture<'a, super::Admission> {
        counted("admit", self.0.admit(quota))
    }
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>> {
        counted("reserve_rate", self.0.reserve_rate(name, per_second, max_wait))
    }
}
