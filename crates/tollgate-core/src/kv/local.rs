//! What the two single-process backends (memory and redb) share: the pending-sync bookkeeping
//! written once over any ordered string table, and leases and request pacing kept in memory
//! (a redb file is opened by one process, so there is no other instance to coordinate with).
//!
//! The pacing is the same reservation algorithm (GCRA) as the Redis script in `kv::redis`, so
//! both behave alike; no rate-limit crate hands out reservations that a caller sleeps on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Clock;

use super::{keys, Commit, KvError, KvFuture, EVENT_MEMORY};

/// An answer already known (leases and pacing live in memory here).
pub fn ready<'a, T: Send + 'a>(value: T) -> KvFuture<'a, T> {
    KvFuture::ready(Ok(value))
}

/// An ordered string table to read (a redb read transaction, a locked map).
pub trait ReadTable {
    fn get(&self, key: &str) -> Result<Option<String>, KvError>;
    /// The number stored at `key` (absent or not a number: `None`). A table that can read a value
    /// where it lies does (the memory map: no copy on a request's path).
    fn number(&self, key: &str) -> Result<Option<i64>, KvError> {
        Ok(self.get(key)?.and_then(|v| v.parse().ok()))
    }
    /// Keys starting with `prefix`, in order from `start` (itself at or after `prefix`), at most
    /// `limit`, with their values.
    fn scan(&self, prefix: &str, start: &str, limit: usize) -> Result<Vec<(String, String)>, KvError>;
}

/// The same table inside one atomic write step (a redb write transaction, a locked map).
pub trait Table: ReadTable {
    fn insert(&mut self, key: &str, value: &str) -> Result<(), KvError>;
    fn remove(&mut self, key: &str) -> Result<(), KvError>;
    /// Add `amount` to the count at `key` (absent or unreadable: 0); the count before. A table
    /// that can change a value in place does (the memory map: no copies on a request's path).
    fn add(&mut self, key: &str, amount: u64) -> Result<u64, KvError> {
        let before = self.get(key)?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        self.insert(key, &(before + amount).to_string())?;
        Ok(before)
    }
}

/// Stored, or already holding exactly this value (see `Kv::set_if_absent`).
pub fn set_if_absent(table: &mut dyn Table, key: &str, value: &str) -> Result<bool, KvError> {
    match table.get(key)? {
        Some(existing) => Ok(existing == value),
        None => table.insert(key, value).map(|_| true),
    }
}

/// The value, removed (with its expiry); an expired value counts as absent.
pub fn take(table: &mut dyn Table, key: &str, now_unix: i64) -> Result<Option<String>, KvError> {
    let expiry = keys::expiry(key);
    let expired = table.number(&expiry)?.is_some_and(|e| e <= now_unix);
    let value = table.get(key)?;
    if value.is_some() {
        table.remove(key)?;
        table.remove(&expiry)?;
    }
    Ok(value.filter(|_| !expired))
}

/// A hash's field, as its own row: the hash's key, a separator no key or field contains, the field.
fn hash_row(key: &str, field: &str) -> String {
    format!("{key}\u{1f}{field}")
}

pub fn hash_get(table: &dyn ReadTable, key: &str, field: &str) -> Result<Option<String>, KvError> {
    table.get(&hash_row(key, field))
}

pub fn hash_get_all(table: &dyn ReadTable, key: &str) -> Result<Vec<(String, String)>, KvError> {
    let prefix = hash_row(key, "");
    Ok(table.scan(&prefix, &prefix, usize::MAX)?.into_iter().map(|(k, v)| (k[prefix.len()..].to_string(), v)).collect())
}

pub fn hash_set(table: &mut dyn Table, key: &str, field: &str, value: &str) -> Result<(), KvError> {
    table.insert(&hash_row(key, field), value)
}

pub fn hash_remove(table: &mut dyn Table, key: &str, field: &str) -> Result<bool, KvError> {
    let row = hash_row(key, field);
    let present = table.get(&row)?.is_some();
    if present {
        table.remove(&row)?;
    }
    Ok(present)
}

pub fn mark_pending(table: &mut dyn Table, customer: &str, event_id: Option<&str>, now_unix: i64) -> Result<bool, KvError> {
    if let Some(id) = event_id {
        let key = keys::event(id);
        if table.number(&key)?.is_some_and(|expires| expires > now_unix) {
            return Ok(false);
        }
        table.insert(&key, &(now_unix + EVENT_MEMORY.as_secs() as i64).to_string())?;
    }
    let key = keys::pending(customer);
    let generation = pending_generation(table, customer)?.unwrap_or(0) + 1;
    table.insert(&key, &generation.to_string())?;
    Ok(true)
}

pub fn pending_generation(table: &dyn ReadTable, customer: &str) -> Result<Option<u64>, KvError> {
    Ok(table.get(&keys::pending(customer))?.and_then(|v| v.parse().ok()))
}

pub fn pending_customers(table: &dyn ReadTable, limit: usize) -> Result<Vec<String>, KvError> {
    let prefix = keys::pending("");
    Ok(table.scan(&prefix, &prefix, limit)?.into_iter().map(|(k, _)| k[prefix.len()..].to_string()).collect())
}

/// Up to `limit` keys starting with `prefix` from the cursor on (`""`: the first), and the
/// cursor of the next page (`""`: none).
pub fn scan_keys(table: &dyn ReadTable, prefix: &str, cursor: &str, limit: usize) -> Result<(Vec<String>, String), KvError> {
    let start = if cursor.is_empty() { prefix } else { cursor };
    let keys: Vec<String> = table.scan(prefix, start, limit)?.into_iter().map(|(k, _)| k).collect();
    // The next page starts just after the last key seen.
    let next = if keys.len() < limit { String::new() } else { keys.last().map(|k| format!("{k}\0")).unwrap_or_default() };
    Ok((keys, next))
}

pub fn set_expiring(table: &mut dyn Table, key: &str, value: &str, ttl: std::time::Duration, now_unix: i64) -> Result<(), KvError> {
    table.insert(key, value)?;
    table.insert(&keys::expiry(key), &(now_unix + ttl.as_secs() as i64).to_string())
}

pub fn increment(table: &mut dyn Table, key: &str, ttl: std::time::Duration, now_unix: i64) -> Result<u64, KvError> {
    let expired = table.number(&keys::expiry(key))?.is_none_or(|e| e <= now_unix);
    if expired {
        set_expiring(table, key, "1", ttl, now_unix)?;
        return Ok(1);
    }
    Ok(table.add(key, 1)? + 1)
}

/// Forget event ids older than [`EVENT_MEMORY`] and keys set to expire by now (Redis expires
/// both by itself).
pub fn forget_expired(table: &mut dyn Table, now_unix: i64, limit: usize) -> Result<(), KvError> {
    for (key, expires) in table.scan(&keys::event(""), &keys::event(""), limit)? {
        if expires.parse::<i64>().map_or(true, |e| e <= now_unix) {
            table.remove(&key)?;
        }
    }
    let marks = keys::expiry("");
    for (mark, expires) in table.scan(&marks, &marks, limit)? {
        if expires.parse::<i64>().map_or(true, |e| e <= now_unix) {
            table.remove(&mark[marks.len()..])?;
            table.remove(&mark)?;
        }
    }
    Ok(())
}

pub fn commit_sync(
    table: &mut dyn Table,
    leases: &Leases,
    customer: &str,
    token: &str,
    generation: u64,
    entry: Option<&str>,
) -> Result<Commit, KvError> {
    if !leases.holds(&keys::sync_lease(customer), token) {
        return Ok(Commit::LeaseLost);
    }
    if let Some(entry) = entry {
        table.insert(&keys::customer_cache_raw(customer), entry)?;
    }
    if pending_generation(table, customer)? == Some(generation) {
        table.remove(&keys::pending(customer))?;
        Ok(Commit::Clean)
    } else {
        Ok(Commit::DirtyAgain)
    }
}

/// [`Kv::usage_add`](super::Kv::usage_add).
pub fn usage_add(table: &mut dyn Table, bucket: &str, amount: u64, once: Option<&str>, now_unix: i64) -> Result<bool, KvError> {
    if let Some(once) = once {
        let live = table.number(&keys::expiry(once))?.is_some_and(|e| e > now_unix);
        if live && table.get(once)?.is_some() {
            return Ok(false);
        }
        set_expiring(table, once, "1", super::USAGE_ONCE_MEMORY, now_unix)?;
    }
    // A bucket is listed as open for as long as it exists (`usage_take` ends both at once).
    if table.add(bucket, amount)? == 0 {
        hash_set(table, keys::USAGE_OPEN, bucket, "1")?;
    }
    Ok(true)
}

/// [`Kv::usage_take`](super::Kv::usage_take).
pub fn usage_take(table: &mut dyn Table, bucket: &str) -> Result<Option<(String, u64)>, KvError> {
    hash_remove(table, keys::USAGE_OPEN, bucket)?;
    let Some(count) = table.get(bucket)?.and_then(|v| v.parse::<u64>().ok()) else { return Ok(None) };
    table.remove(bucket)?;
    let closed = keys::usage_closed(bucket);
    let n = table.add(&closed, 1)? + 1;
    let record = format!("{bucket}:{n}");
    hash_set(table, keys::USAGE_SENDING, &record, &count.to_string())?;
    Ok(Some((record, count)))
}

/// [`Kv::usage_pending`](super::Kv::usage_pending).
pub fn usage_pending(table: &dyn ReadTable, limit: usize) -> Result<super::UsagePending, KvError> {
    let open = hash_get_all(table, keys::USAGE_OPEN)?.into_iter().take(limit).map(|(bucket, _)| bucket).collect();
    let sending = hash_get_all(table, keys::USAGE_SENDING)?
        .into_iter()
        .take(limit)
        .map(|(record, count)| (record, count.parse().unwrap_or(0)))
        .collect();
    Ok((open, sending))
}

/// [`Kv::admit`](super::Kv::admit) for one process: the minute's GCRA in memory (`leases`), the
/// period's count in the table (it outlives a restart), with the same rules as the Redis script.
pub fn admit(table: &mut dyn Table, leases: &Leases, quota: super::Quota<'_>, now_unix: i64) -> Result<super::Admission, KvError> {
    let used = match quota.period {
        None => None,
        Some((key, _, _)) => {
            let expired = table.number(&keys::expiry(key))?.is_none_or(|e| e <= now_unix);
            Some(if expired { 0 } else { table.number(key)?.map_or(0, |v| v.max(0) as u64) })
        }
    };
    let period_open = quota.period.zip(used).is_none_or(|((_, limit, _), used)| used < limit);
    let minute = quota.minute.map(|(key, limit)| leases.gcra(key, limit, period_open));
    let minute_open = minute.as_ref().is_none_or(|m| m.retry_after.is_none());
    let admitted = period_open && minute_open;
    let mut period_used = used;
    if admitted {
        if let (Some((key, _, ttl)), Some(used)) = (quota.period, used) {
            match used {
                0 => set_expiring(table, key, "1", ttl, now_unix)?,
                _ => {
                    table.add(key, 1)?;
                }
            }
            period_used = Some(used + 1);
        }
    }
    Ok(super::Admission {
        admitted,
        minute_remaining: minute.as_ref().map(|m| if admitted { m.remaining } else { m.remaining.min(m.remaining_now) }),
        minute_reset: minute.as_ref().map_or(Duration::ZERO, |m| if admitted { m.reset } else { m.reset_now }),
        period_used,
        retry_after: minute.and_then(|m| m.retry_after),
    })
}

/// One GCRA step: what the limit says of one more request.
pub struct GcraStep {
    /// Left after this request / now, without it.
    remaining: u32,
    remaining_now: u32,
    /// Until the limit is whole: after this request / now.
    reset: Duration,
    reset_now: Duration,
    retry_after: Option<Duration>,
}

/// Leases and pacing for one process.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<String, (String, Instant)>>,
    clock: Clock,
    /// GCRA: per limit, the theoretical arrival time of the next request.
    pacing: Mutex<HashMap<String, Instant>>,
}

impl Leases {
    pub fn new(clock: Clock) -> Leases {
        Leases { clock, ..Leases::default() }
    }

    pub fn lease(&self, name: &str, token: &str, ttl: Duration) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        match held.get(name) {
            Some((holder, expires)) if holder != token && *expires > now => false,
            _ => {
                held.insert(name.to_string(), (token.to_string(), now + ttl));
                true
            }
        }
    }

    pub fn release(&self, name: &str, token: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(name).is_some_and(|(holder, _)| holder == token) {
            held.remove(name);
        }
    }

    pub fn holds(&self, name: &str, token: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(name).is_some_and(|(holder, expires)| holder == token && *expires > self.clock.now())
    }

    /// The GCRA of `limit` per minute for `name`, as it stands with one more request; counted
    /// (in the same step) when it is within the limit and `may_count` (the other limits allow it).
    pub fn gcra(&self, name: &str, limit: u32, may_count: bool) -> GcraStep {
        let window = Duration::from_secs(60);
        let interval = window / limit.max(1);
        let mut pacing = self.pacing.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let tat = pacing.get(name).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let left = |tat: Instant| ((window.saturating_sub(tat - now)).as_nanos() / interval.as_nanos().max(1)) as u32;
        let retry_after = new_tat.checked_sub(window).filter(|allowed_at| *allowed_at > now).map(|allowed_at| allowed_at - now);
        if may_count && retry_after.is_none() {
            match pacing.get_mut(name) {
                Some(kept) => *kept = new_tat,
                None => {
                    pacing.insert(name.to_string(), new_tat);
                }
            }
        }
        GcraStep { remaining: left(new_tat), remaining_now: left(tat), reset: new_tat - now, reset_now: tat - now, retry_after }
    }

    pub fn reserve(&self, name: &str, per_second: u32, max_wait: Duration) -> Option<Duration> {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let mut pacing = self.pacing.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let next = pacing.get(name).copied().unwrap_or(now).max(now);
        let wait = next - now;
        if wait > max_wait {
            return None;
        }
        pacing.insert(name.to_string(), next + interval);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_exclude_other_tokens_until_released_or_expired() {
        let leases = Leases::default();
        assert!(leases.lease("a", "one", Duration::from_secs(10)));
        assert!(!leases.lease("a", "two", Duration::from_secs(10)));
        assert!(leases.lease("a", "one", Duration::from_secs(10)), "the holder extends");
        leases.release("a", "two");
        assert!(leases.holds("a", "one"), "only the holder releases");
        leases.release("a", "one");
        assert!(leases.lease("a", "two", Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!leases.holds("a", "two"));
        assert!(leases.lease("a", "one", Duration::from_secs(1)), "an expired lease is free");
    }

    #[test]
    fn pacing_reserves_evenly_spaced_slots() {
        let leases = Leases::default();
        let waits: Vec<Duration> = (0..5).map(|_| leases.reserve("stripe", 100, Duration::from_secs(1)).unwrap()).collect();
        assert!(waits[0] < Duration::from_millis(1));
        assert!(waits[4] > Duration::from_millis(35) && waits[4] <= Duration::from_millis(40), "{waits:?}");
        assert_eq!(leases.reserve("stripe", 100, Duration::from_millis(10)), None, "over the longest wait: nothing reserved");
    }
}
