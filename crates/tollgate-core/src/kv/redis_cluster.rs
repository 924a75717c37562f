//! The key layout on a Redis Cluster (`KV_URL=redis+cluster://…`), used by [`super::redis`].
//!
//! A cluster runs a script only when every key it names lives in one hash slot (else
//! `CROSSSLOT`), and the slot of a key is CRC16 of its hash tag (the first non-empty `{…}`) or of
//! the whole key. So, on a cluster only:
//! - the recipe's keys keep their names byte for byte (`stripe:customer:cus_…`, `stripe:user:…`);
//! - Tollgate's keys that a script uses with a customer's cache entry carry that whole entry's
//!   name as their tag, so they hash exactly as it does: the sync lease
//!   (`tollgate:lease:sync:{stripe:customer:cus_…}`), the pending generation
//!   (`tollgate:sync:pending:{stripe:customer:cus_…}`) and the events recorded with it
//!   (`tollgate:event:{stripe:customer:cus_…}:evt_…`);
//! - keys only Tollgate reads are tagged by whom they count for: the quotas by payer
//!   (`tollgate:quota:minute:{user_…}`), usage by customer (`tollgate:usage:api_requests:{cus_…}:…`,
//!   with its open and sending indexes `tollgate:usage:open:{cus_…}` beside it);
//! - the single-node hashes that list pending customers and customers with usage cannot be one
//!   key any more: they are [`PARTITIONS`] sorted sets each (`tollgate:sync:pending:index:{3}`),
//!   which the sweeps read one after the other. A customer is added to its set *before* its data
//!   is written (so the data is never there without the listing), scored by the set's own server
//!   clock; a sweep removes a customer whose data is gone only when the listing is older than
//!   [`INDEX_GRACE`] and unchanged since the sweep read it (one script), so it cannot remove the
//!   listing of a write still on its way. A process skips the listing when it made it less than
//!   [`RELIST_AFTER`] ago (a customer's events come in bursts).
//!
//! Every name a caller sees is the single-node one ([`logical`]); the layout is this backend's
//! business. A cluster's data is not a single node's: moving from one to the other copies the
//! keys whose names do not change, then `tollgate sync --all` (README, "Running in production").

use std::borrow::Cow;
use std::time::Duration;

/// The sorted sets each index is split into.
pub const PARTITIONS: u16 = 16;

/// How old a listing must be before a sweep may remove it: far longer than any write can take
/// between its listing and its data (a KV operation gives up after seconds).
pub const INDEX_GRACE: Duration = Duration::from_secs(60);

/// A process that listed a member less than this long ago writes its data without listing it
/// again: the listing stays safe from sweeps for [`INDEX_GRACE`], far past this write.
pub const RELIST_AFTER: Duration = Duration::from_secs(15);

const LEASE_SYNC: &str = "tollgate:lease:sync:";
const QUOTA_MINUTE: &str = "tollgate:quota:minute:";
const QUOTA_PERIOD: &str = "tollgate:quota:period:";
const USAGE: &str = "tollgate:usage:";

/// The cluster hash slot of `key` (what `CLUSTER KEYSLOT` answers).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// The cluster name of a key a caller passes: tagged when it is one a script uses with others.
pub fn physical(key: &str) -> Cow<'_, str> {
    if key.contains('{') {
        return Cow::Borrowed(key);
    }
    if let Some(customer) = key.strip_prefix(LEASE_SYNC) {
        return Cow::Owned(format!("{LEASE_SYNC}{{stripe:customer:{customer}}}"));
    }
    if let Some(payer) = key.strip_prefix(QUOTA_MINUTE) {
        return Cow::Owned(format!("{QUOTA_MINUTE}{{{payer}}}"));
    }
    if let Some((payer, start)) = key.strip_prefix(QUOTA_PERIOD).and_then(|rest| rest.rsplit_once(':')) {
        return Cow::Owned(format!("{QUOTA_PERIOD}{{{payer}}}:{start}"));
    }
    match usage_customer(key) {
        Some((event, customer, rest)) => Cow::Owned(format!("{USAGE}{event}:{{{customer}}}{rest}")),
        None => Cow::Borrowed(key),
    }
}

/// The name callers know for a cluster name: what [`physical`] tagged, untagged; any other key
/// as it is (an email in an account's key may hold braces of its own).
pub fn logical(key: &str) -> Cow<'_, str> {
    if ![LEASE_SYNC, QUOTA_MINUTE, QUOTA_PERIOD, USAGE].iter().any(|prefix| key.starts_with(prefix)) {
        return Cow::Borrowed(key);
    }
    let Some((open, close)) = key.find('{').and_then(|open| Some((open, open + key[open..].find('}')?))) else {
        return Cow::Borrowed(key);
    };
    let tag = &key[open + 1..close];
    let untagged = if key.starts_with(LEASE_SYNC) { tag.strip_prefix("stripe:customer:").unwrap_or(tag) } else { tag };
    Cow::Owned(format!("{}{untagged}{}", &key[..open], &key[close + 1..]))
}

/// A usage bucket's or record's event, customer, and what follows them (`:{minute}[:{n}]`).
fn usage_customer(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(USAGE)?;
    let (event, rest) = rest.split_once(':')?;
    let (customer, rest) = rest.split_once(':')?;
    let minute = rest.split(':').next()?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['{', '}']);
    (plain(event) && plain(customer) && minute.parse::<i64>().is_ok()).then(|| (event, customer, &key[key.len() - rest.len() - 1..]))
}

/// The customer a usage bucket or record counts for.
pub fn usage_owner(bucket: &str) -> Option<&str> {
    usage_customer(bucket).map(|(_, customer, _)| customer)
}

/// The pending sync generation of a customer, in its cache entry's slot.
pub fn pending(customer: &str) -> String {
    format!("tollgate:sync:pending:{{stripe:customer:{customer}}}")
}

/// An event recorded for a customer, in its cache entry's slot.
pub fn event(customer: &str, event_id: &str) -> String {
    format!("tollgate:event:{{stripe:customer:{customer}}}:{event_id}")
}

/// A customer's open usage buckets, sending records, and an idempotency key of its requests.
pub fn usage_open(customer: &str) -> String {
    format!("tollgate:usage:open:{{{customer}}}")
}
pub fn usage_sending(customer: &str) -> String {
    format!("tollgate:usage:sending:{{{customer}}}")
}
pub fn usage_once(customer: &str, once: &str) -> String {
    format!("tollgate:usage:once:{{{customer}}}:{}", once.rsplit(':').next().unwrap_or(once))
}

/// The two indexes split into partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Index {
    /// Customers with a pending sync.
    Pending,
    /// Customers with open buckets or records to send.
    Usage,
}

impl Index {
    fn name(self) -> &'static str {
        match self {
            Index::Pending => "tollgate:sync:pending:index:",
            Index::Usage => "tollgate:usage:index:",
        }
    }
    /// The partition listing `member`.
    pub fn partition_of(self, member: &str) -> String {
        let n = crc16::State::<crc16::XMODEM>::calculate(member.as_bytes()) % PARTITIONS;
        format!("{}{{{n}}}", self.name())
    }
    /// Every partition, in sweep order.
    pub fn partitions(self) -> impl Iterator<Item = String> {
        (0..PARTITIONS).map(move |n| format!("{}{{{n}}}", self.name()))
    }
}

/// KEYS: a partition. ARGV: the member. Lists it, scored by this node's clock in ms.
pub const INDEX_TOUCH: &str = r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1";

/// KEYS: a partition. ARGV: the member, the score a sweep read, the grace in ms. Removes the
/// listing only if unchanged since and older than the grace; 1 when removed.
pub const INDEX_FORGET: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or score ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
if tonumber(score) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1";

/// KEYS: the customer's pending generation, [the event]. ARGV: event memory in seconds.
pub const MARK_PENDING: &str = r"
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1";

/// KEYS: lease, cache entry, pending generation. ARGV: token, generation, has entry, entry.
/// Answers 0 clean, 1 dirty again, 2 lease lost (see `Commit`).
pub const COMMIT_SYNC: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 2 end
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[4]) end
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
  return 0
end
return 1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::keys;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3, "CRC16-XMODEM's check value");
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"), "an empty tag: the whole key");
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    /// Every script's keys, as the backend names them on a cluster, share one slot.
    #[test]
    fn every_scripts_keys_share_a_slot() {
        let same = |keys: &[&str]| {
            let slots: Vec<u16> = keys.iter().map(|k| slot(k)).collect();
            assert!(slots.windows(2).all(|w| w[0] == w[1]), "{keys:?} → {slots:?}");
        };
        for customer in ["cus_A1", "cus_Qx9", "cus_zzzzzzzzzzzzzz"] {
            let cache = keys::customer_cache_raw(customer);
            assert_eq!(physical(&cache), cache, "the recipe's key keeps its name");
            let lease = physical(&keys::lease(&keys::sync_lease(customer))).into_owned();
            // mark_pending; commit_sync.
            same(&[&pending(customer), &event(customer, "evt_1")]);
            same(&[&lease, &cache, &pending(customer)]);
            // usage_add; usage_take.
            let bucket = physical(&format!("tollgate:usage:api_requests:{customer}:1764740700")).into_owned();
            let once = usage_once(customer, &keys::usage_once(customer, "k-1"));
            same(&[&bucket, &usage_open(customer), &once]);
            let closed = keys::usage_closed(&bucket);
            same(&[&bucket, &usage_open(customer), &closed, &usage_sending(customer)]);
            same(&[&physical(&format!("{bucket}:3")), &usage_sending(customer)]);
        }
        for payer in ["user_2abc", "org_9xyz"] {
            same(&[&physical(&keys::quota_minute(payer)), &physical(&keys::quota_period(payer, 1_764_740_700))]);
        }
    }

    #[test]
    fn callers_see_single_node_names() {
        for key in
            ["tollgate:usage:api_requests:cus_A1:1764740700", "tollgate:usage:tokens:cus_A1:1764740700:2", "tollgate:quota:period:user_1:5"]
        {
            let tagged = physical(key);
            assert_ne!(tagged, key, "tagged on a cluster");
            assert_eq!(logical(&tagged), key);
        }
        for key in
            ["stripe:customer:cus_A1", "stripe:user:user_1", "tollgate:session:ab12", "tollgate:usage:once:ff", "tollgate:lease:reconcile"]
        {
            assert_eq!(physical(key), key, "a key no script shares keeps its name");
        }
        assert_eq!(usage_owner("tollgate:usage:api_requests:cus_A1:1764740700:2"), Some("cus_A1"));
    }

    #[test]
    fn partitions_spread_and_name_the_member() {
        let partitions: std::collections::HashSet<String> = Index::Pending.partitions().collect();
        assert_eq!(partitions.len(), PARTITIONS as usize);
        assert!(partitions.contains(&Index::Pending.partition_of("cus_A1")));
        let slots: std::collections::HashSet<u16> = partitions.iter().map(|p| slot(p)).collect();
        assert!(slots.len() > 8, "the partitions spread over slots");
    }
}
