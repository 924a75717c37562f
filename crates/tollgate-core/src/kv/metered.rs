//! Every store is wrapped in `Metered`, which counts failed operations by name
//! (`tollgate_kv_errors_total`) and otherwise passes each call through unchanged: it labels the
//! call's future with the operation (`KvFuture::counted_as`), which counts a failure when it ends.

use std::time::Duration;

use super::{Commit, Kv, KvFuture, SharedKv};

pub struct Metered(pub SharedKv);

impl Kv for Metered {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        self.0.get(key).counted_as("get")
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        self.0.set(key, value).counted_as("set")
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        self.0.set_if_absent(key, value).counted_as("set_if_absent")
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        self.0.delete(key).counted_as("delete")
    }
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        self.0.take(key).counted_as("take")
    }
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()> {
        self.0.set_expiring(key, value, ttl).counted_as("set_expiring")
    }
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64> {
        self.0.increment(key, ttl).counted_as("increment")
    }
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>> {
        self.0.hash_get(key, field).counted_as("hash_get")
    }
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>> {
        self.0.hash_get_all(key).counted_as("hash_get_all")
    }
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        self.0.hash_set(key, field, value).counted_as("hash_set")
    }
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool> {
        self.0.hash_remove(key, field).counted_as("hash_remove")
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        self.0.ping().counted_as("ping")
    }
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)> {
        self.0.scan_keys(prefix, cursor, limit).counted_as("scan_keys")
    }
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool> {
        self.0.mark_pending(customer, event_id).counted_as("mark_pending")
    }
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>> {
        self.0.pending_generation(customer).counted_as("pending_generation")
    }
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>> {
        self.0.pending_customers(limit).counted_as("pending_customers")
    }
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool> {
        self.0.lease(name, token, ttl).counted_as("lease")
    }
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()> {
        self.0.release(name, token).counted_as("release")
    }
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit> {
        self.0.commit_sync(customer, token, generation, entry).counted_as("commit_sync")
    }
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool> {
        self.0.usage_add(bucket, amount, once).counted_as("usage_add")
    }
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>> {
        self.0.usage_take(bucket).counted_as("usage_take")
    }
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, super::UsagePending> {
        self.0.usage_pending(limit).counted_as("usage_pending")
    }
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()> {
        self.0.usage_sent(record).counted_as("usage_sent")
    }
    fn admit<'a>(&'a self, quota: super::Quota<'a>) -> KvFuture<'a, super::Admission> {
        self.0.admit(quota).counted_as("admit")
    }
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>> {
        self.0.reserve_rate(name, per_second, max_wait).counted_as("reserve_rate")
    }
}
