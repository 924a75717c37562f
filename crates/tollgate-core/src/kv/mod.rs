//! The key-value store: one trait, three backends, and every key name in one place.
//!
//! Keys written by Tollgate (see ARCHITECTURE.md for who owns which):
//! - `stripe:user:{userId}` → Stripe customer id (the recipe's key; written once, if absent)
//! - `stripe:org:{orgId}` → an organization's Stripe customer id (written once, if absent)
//! - `stripe:customer:{customerId}` → the subscription cache JSON (the recipe's key; written only by a sync)
//! - `tollgate:account:{email}` → local account JSON (id, email, password hash)
//! - `tollgate:session:{sha256(token)}` → local session JSON (user id, email, created, expiry)
//! - `tollgate:signed-out-before:{userId}` → sessions created before this instant (ms) are revoked
//! - `tollgate:device:{sha256(token)}:{email}` → a browser that signed in to this account before
//! - `tollgate:sync:pending` → which customers need a sync, with a generation each (the durable
//!   intake queue; a Redis hash, or one `tollgate:sync:pending:{customerId}` key each locally)
//! - `tollgate:event:{eventId}` → a webhook event already recorded (kept 3 days, Stripe's retry window)
//! - `tollgate:lease:{name}` → who may sync a customer (or reconcile) right now, with an expiry
//! - `tollgate:rate:{name}` → the shared Stripe request pacing (Redis only)
//! - `tollgate:usage:{meter event}:{customer}:{minute}` → usage counted in an open bucket;
//!   `tollgate:usage:open` and `tollgate:usage:sending` (hashes) → the open buckets, and the closed
//!   ones waiting to be sent (`{bucket}:{n}` → count); `tollgate:usage:closed:{bucket}` → how many
//!   times a bucket was closed (`METERED_PATHS`, `billing::usage`)
//! - `tollgate:quota:minute:{payer}`, `tollgate:quota:period:{payer}:{periodStart}` → API quotas
//!   (`PLAN_LIMITS`): the minute's GCRA, the period's count
//! - `tollgate:throttle:{kind}:{subject}` → failed sign-ins and locks (`auth::throttle`)
//! - `tollgate:ready` → `/readyz`'s write check
//! - organizations, their members and invitations: the `orgs` module names those keys
//!
//! Besides plain strings the trait offers the few atomic steps that coordinate syncs across
//! instances (pending marks, leases, a fenced commit, a shared rate limit). Redis runs each as
//! one script; the local backends (one process) keep leases and pacing in memory, in [`local`].
//! On a Redis Cluster some of Tollgate's own keys are named differently, so that each script's
//! keys share a slot: [`redis_cluster`]; callers always use the names here.

mod future;
pub mod local;
pub mod memory;
pub mod metered;
pub mod redb;
pub mod redis;
pub mod redis_cluster;

use std::sync::Arc;
use std::time::Duration;

use crate::config::KvSettings;
use crate::domain::{CustomerId, Payer, UserId};

#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("the KV store is unavailable: {0}")]
    Unavailable(String),
}

pub use future::KvFuture;

/// How a sync's commit went (see [`Kv::commit_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Written, and no event was recorded since the sync read its generation: the customer is settled.
    Clean,
    /// Written, but an event was recorded meanwhile: the customer needs another sync.
    DirtyAgain,
    /// The lease had expired or passed to another instance: nothing was written.
    LeaseLost,
}

/// One request against a payer's API quotas (`Kv::admit`), its keys named by `keys::quota_minute`
/// and `keys::quota_period` (on a Redis Cluster, their names put them in one slot).
#[derive(Debug, Clone, Copy)]
pub struct Quota<'a> {
    /// The per-minute GCRA's key and limit.
    pub minute: Option<(&'a str, u32)>,
    /// The period counter's key, limit, and how long to keep it (past the period's end).
    pub period: Option<(&'a str, u64, Duration)>,
}

/// What `Kv::admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub admitted: bool,
    /// Requests the minute's limit allows now (after this one, if admitted).
    pub minute_remaining: Option<u32>,
    /// Until the minute's limit is whole again.
    pub minute_reset: Duration,
    /// Requests counted this period (this one included, if admitted).
    pub period_used: Option<u64>,
    /// When refused by the minute's limit: how long until a request would pass it.
    pub retry_after: Option<Duration>,
}

/// Usage waiting (`Kv::usage_pending`): open buckets, and closed records to send with their counts.
pub type UsagePending = (Vec<String>, Vec<(String, u64)>);

/// How long an event id is remembered: Stripe retries a delivery for up to three days.
pub const EVENT_MEMORY: Duration = Duration::from_secs(3 * 24 * 3600);

/// How long a metered request's idempotency key is remembered: a retry within this time is not
/// counted again.
pub const USAGE_ONCE_MEMORY: Duration = Duration::from_secs(3600);

/// What the flow needs from a KV store. Values are strings (JSON where structured).
///
/// Every operation is one atomic step on the store and safe to cancel: a dropped future leaves
/// the store as before or after the step, never half-way, and never disturbs another call.
pub trait Kv: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>>;
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()>;
    /// Store only if the key is absent. True when the key now holds exactly `value`, so a retry
    /// of a call whose answer was lost still learns that it won.
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool>;
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()>;
    /// Read and delete in one step: of any number of concurrent takes of a key, one gets the
    /// value (an emailed link is spent by exactly one click).
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>>;
    /// `set`, and forget the key after `ttl` (Redis expires it; the local stores prune it).
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()>;
    /// Add one to a counter that is forgotten `ttl` after its first increment; the new count.
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64>;
    /// One field of the hash at `key` (a Redis hash; rows of their own in the local stores).
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>>;
    /// Every field of the hash at `key`, in no particular order.
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>>;
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()>;
    /// Remove one field: true when it was there (of concurrent removals, one learns it removed it).
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool>;
    /// A cheap round trip, for `/readyz`.
    fn ping(&self) -> KvFuture<'_, ()>;
    /// Some keys starting with `prefix` (at most about `limit`), from `cursor` on (`""` at first),
    /// and the cursor of the rest (`""` when there is none). A key present throughout the whole
    /// walk is seen at least once (Redis `SCAN`'s promise).
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)>;

    /// Record that `customer` needs a sync, bumping its generation; with an event id, only the
    /// first time that id is seen (false: a duplicate, nothing recorded).
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool>;
    /// The customer's pending generation, `None` when nothing is pending.
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>>;
    /// Up to `limit` customers with a pending sync.
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>>;
    /// Take the lease `name` for `token`, or extend it when `token` holds it already.
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool>;
    /// Give the lease up, if `token` still holds it.
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()>;
    /// The end of a sync, in one step: if `token` still holds the customer's lease, write the
    /// cache entry (when given) and clear the pending mark if its generation is still `generation`.
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit>;
    /// Admit one request against `quota` in one step, for every user of this store together: a
    /// GCRA over a minute (a whole minute's worth may come at once), then the period's count.
    /// A refused request counts against neither.
    fn admit<'a>(&'a self, quota: Quota<'a>) -> KvFuture<'a, Admission>;
    /// Count `amount` of usage into the open bucket `bucket` (and index it, so a flusher finds
    /// it). With `once` (a request's idempotency key, `keys::usage_once`), only the first time
    /// that key is seen within [`USAGE_ONCE_MEMORY`]: false when it was seen, nothing counted.
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool>;
    /// Close `bucket` in one step: its count moves into a record to send (`{bucket}:{n}`, the
    /// bucket's n-th), which is returned with the count; `None` when the bucket holds nothing.
    /// Usage counted into the bucket later opens it again, to be sent under the next number.
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>>;
    /// Up to `limit` open buckets, and up to `limit` records waiting to be sent with their counts.
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, UsagePending>;
    /// A record was accepted by Stripe (or had been before): forget it.
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()>;
    /// Reserve the next slot of a limit of `per_second` shared by every user of this store: the
    /// time to wait before using it, or `None` (nothing reserved) when that is over `max_wait`.
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>>;
}

pub type SharedKv = Arc<dyn Kv>;

/// The store `settings` name. Expiry and leases of the embedded and in-memory stores follow
/// `clock`; Redis keeps its own time.
pub async fn open(settings: &KvSettings, clock: &crate::clock::Clock) -> anyhow::Result<SharedKv> {
    let store: SharedKv = match settings {
        KvSettings::Memory => Arc::new(memory::MemoryKv::new(clock.clone())),
        KvSettings::Embedded { path } => Arc::new(redb::RedbKv::open_with_clock(path, clock.clone())?),
        KvSettings::Redis { url, ca_file, .. } => Arc::new(redis::RedisKv::connect(url.expose(), ca_file.as_deref()).await?),
    };
    Ok(Arc::new(metered::Metered(store)))
}

pub mod keys {
    use super::*;

    pub fn user_customer(user: &UserId) -> String {
        format!("stripe:user:{user}")
    }

    /// The payer's customer id: the recipe's `stripe:user:{userId}`, or `stripe:org:{orgId}`
    /// beside it for an organization.
    pub fn payer_customer(payer: &Payer) -> String {
        match payer {
            Payer::User(user) => user_customer(user),
            Payer::Org(org) => format!("stripe:org:{org}"),
        }
    }

    /// Set once the payer's customer has had a trial (`billing::trial`): never another one.
    pub fn trialed(payer: &Payer) -> String {
        format!("tollgate:trialed:{payer}")
    }

    pub fn customer_cache(customer: &CustomerId) -> String {
        format!("stripe:customer:{customer}")
    }

    /// The same key from a customer id already known to be valid (the KV's own bookkeeping).
    pub fn customer_cache_raw(customer: &str) -> String {
        format!("stripe:customer:{customer}")
    }

    pub fn account(email: &str) -> String {
        format!("tollgate:account:{email}")
    }

    /// Tokens are stored under their hash: whoever reads the store cannot sign in (or finish a
    /// sign-up, or reset a password) with what they read.
    fn hashed(kind: &str, token: &str) -> String {
        use sha2::{Digest, Sha256};
        format!("tollgate:{kind}:{}", hex::encode(Sha256::digest(token.as_bytes())))
    }

    pub fn session(token: &str) -> String {
        hashed("session", token)
    }

    /// A sign-up waiting for its email link (`auth::local`).
    pub fn sign_up(token: &str) -> String {
        hashed("sign-up", token)
    }

    /// A password-reset link's record.
    pub fn password_reset(token: &str) -> String {
        hashed("password-reset", token)
    }

    /// A browser where `email`'s account signed in before (`auth::throttle`): its token's hash.
    pub fn device(token: &str, email: &str) -> String {
        format!("{}:{email}", hashed("device", token))
    }

    /// Sessions of this user created before this time (unix ms) are no longer valid.
    pub fn signed_out_before(user: &UserId) -> String {
        format!("tollgate:signed-out-before:{user}")
    }

    /// A Clerk user's primary email (`auth::clerk`), kept for a day.
    pub fn clerk_email(user: &UserId) -> String {
        format!("tollgate:clerk:email:{user}")
    }

    /// A Clerk webhook delivery already handled (its `svix-id`).
    pub fn clerk_delivery(svix_id: &str) -> String {
        format!("tollgate:clerk:delivery:{svix_id}")
    }

    /// Failed sign-ins and emails sent, counted per account, recipient or client address
    /// (`auth::throttle`).
    pub fn throttle(kind: &str, subject: &str) -> String {
        format!("tollgate:throttle:{kind}:{subject}")
    }

    /// When a local store forgets `key` (see `Kv::set_expiring`).
    pub fn expiry(key: &str) -> String {
        ["tollgate:expires:", key].concat() // sized at once: a quota's check makes one
    }

    /// The Redis hash of pending customers.
    pub const PENDING: &str = "tollgate:sync:pending";

    /// One pending customer, in the local backends.
    pub fn pending(customer: &str) -> String {
        format!("{PENDING}:{customer}")
    }

    pub fn event(event_id: &str) -> String {
        format!("tollgate:event:{event_id}")
    }

    pub fn lease(name: &str) -> String {
        format!("tollgate:lease:{name}")
    }

    /// The lease that lets one sync of `customer` run at a time.
    pub fn sync_lease(customer: &str) -> String {
        format!("sync:{customer}")
    }

    /// A payer's per-minute API quota (a GCRA's theoretical arrival time).
    pub fn quota_minute(payer: &str) -> String {
        format!("tollgate:quota:minute:{payer}")
    }

    /// A payer's API requests in the billing period that started at `period_start` (unix seconds).
    pub fn quota_period(payer: &str, period_start: i64) -> String {
        format!("tollgate:quota:period:{payer}:{period_start}")
    }

    /// The index of open usage buckets (a Redis hash; rows of their own locally).
    pub const USAGE_OPEN: &str = "tollgate:usage:open";
    /// The index of usage records waiting to be sent, with their counts.
    pub const USAGE_SENDING: &str = "tollgate:usage:sending";

    /// A metered request's idempotency key, seen (per customer: one cannot spend another's).
    pub fn usage_once(customer: &str, idempotency_key: &str) -> String {
        hashed("usage:once", &format!("{customer}\u{1f}{idempotency_key}"))
    }

    /// A bucket's sequence counter: how many times it was closed.
    pub fn usage_closed(bucket: &str) -> String {
        format!("tollgate:usage:closed:{bucket}")
    }

    pub fn rate(name: &str) -> String {
        format!("tollgate:rate:{name}")
    }
}
