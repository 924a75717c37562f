//! One KV contract, run unchanged against every backend (memory, redb, a real redis-server):
//! plain values, set-if-absent under concurrency and after a lost answer, values written by an app
//! that follows the recipe, the sync bookkeeping (pending marks, leases, fenced commits, pacing),
//! and cancellation: operations dropped half-way never disturb later ones. Then the hang-up
//! scenario against the whole app on each backend: clients that hang up mid-request must never
//! make a later request see another user's data.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tollgate_core::domain::{SubscriptionCache, SubscriptionStatus};
use tollgate_core::kv::{keys, Commit, Kv, Quota, SharedKv};

use crate::helpers::{spawn_app_with, Options};
use crate::redis_server::RedisServer;

/// How the contract lets a lease expire.
enum Time {
    /// The store reads this test clock: moved forward.
    Clock(tollgate_core::Clock),
    /// Redis expires keys by its own clock: real time passes (the one real-time wait of the KV
    /// suite).
    Real,
}

impl Time {
    async fn pass(&self, duration: Duration) {
        match self {
            Time::Clock(clock) => clock.advance(duration),
            Time::Real => tokio::time::sleep(duration).await,
        }
    }
}

/// Whether the store's layout may change under the contract (a cluster moving slots): a walk of
/// `scan_keys` then promises only what it finds, not to find every key (ARCHITECTURE.md).
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Steady,
    Moving,
}

async fn contract(kv: SharedKv, time: Time) {
    contract_while(kv, time, Layout::Steady).await
}

async fn contract_while(kv: SharedKv, time: Time, layout: Layout) {
    let key = format!("contract:{}", tollgate_core::random_token(8));
    assert_eq!(kv.get(&key).await.unwrap(), None);
    kv.set(&key, "one").await.unwrap();
    assert!(!kv.set_if_absent(&key, "two").await.unwrap(), "present: not replaced");
    assert!(kv.set_if_absent(&key, "one").await.unwrap(), "already holding exactly this value: a resend learns it won");
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("one"));
    let awkward = "{\"json\": \"ünïcode ✓\"}\r\n$5\r\n*1\r\n";
    kv.set(&key, awkward).await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some(awkward), "values are binary-safe");
    kv.delete(&key).await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap(), None);
    kv.set_expiring(&key, "for a while", Duration::from_secs(60)).await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("for a while"));
    kv.ping().await.unwrap();

    // Concurrent set-if-absent: one winner, and the stored value is the winner's.
    let race = format!("race:{}", tollgate_core::random_token(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (kv, race) = (kv.clone(), race.clone());
        tasks.spawn(async move { (i, kv.set_if_absent(&race, &format!("v{i}")).await.unwrap()) });
    }
    let winners: Vec<i32> = tasks.join_all().await.into_iter().filter(|(_, won)| *won).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(kv.get(&race).await.unwrap(), Some(format!("v{}", winners[0])));

    // Take: of any number of concurrent takes, one gets the value; an expired value is gone.
    let link = format!("link:{}", tollgate_core::random_token(8));
    kv.set_expiring(&link, "the record", Duration::from_secs(60)).await.unwrap();
    let mut takes = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (kv, link) = (kv.clone(), link.clone());
        takes.spawn(async move { kv.take(&link).await.unwrap() });
    }
    let taken: Vec<String> = takes.join_all().await.into_iter().flatten().collect();
    assert_eq!(taken, ["the record"]);
    assert_eq!(kv.get(&link).await.unwrap(), None);

    // Scanning keys by prefix, page by page, finds every key once and no other.
    let prefix = format!("scan:{}:", tollgate_core::random_token(6));
    for n in 0..120 {
        kv.set(&format!("{prefix}{n:03}"), "x").await.unwrap();
    }
    kv.set(&format!("{}other", &prefix[..prefix.len() - 1]), "x").await.unwrap();
    let scan_all = |prefix: String| {
        let kv = kv.clone();
        async move {
            // A page may be empty while more follow (Redis): walk the cursor to its end.
            let (mut found, mut cursor) = (std::collections::BTreeSet::new(), String::new());
            loop {
                let (page, next) = kv.scan_keys(&prefix, &cursor, 25).await.unwrap();
                found.extend(page);
                if next.is_empty() {
                    return found;
                }
                cursor = next;
            }
        }
    };
    let found = scan_all(prefix.clone()).await;
    assert!(found.iter().all(|k| k.starts_with(&prefix) && k[prefix.len()..].parse::<u32>().is_ok_and(|n| n < 120)), "{found:?}");
    assert!(scan_all("scan:nothing-here:".into()).await.is_empty());
    let fives = scan_all(format!("{prefix}05")).await;
    assert!(fives.iter().all(|k| k.starts_with(&format!("{prefix}05"))), "the prefix is literal, and pages stay within it: {fives:?}");
    if layout == Layout::Steady {
        assert_eq!(found.len(), 120, "{found:?}");
        assert_eq!(fives.len(), 10);
    }

    hashes(kv.clone()).await;
    quotas(kv.as_ref()).await;
    usage(kv.as_ref()).await;
    recipe_values(kv.as_ref()).await;
    sync_bookkeeping(kv.as_ref(), &time).await;
    cancellation(kv.clone()).await;
}

/// Hashes (an organization's members): fields set, read one and all, removed once; a hash's
/// fields never mix with another hash's.
async fn hashes(kv: SharedKv) {
    let key = format!("hash:{}", tollgate_core::random_token(8));
    assert!(kv.hash_get_all(&key).await.unwrap().is_empty());
    kv.hash_set(&key, "user_a", r#"{"role":"owner"}"#).await.unwrap();
    kv.hash_set(&key, "user_b", "member").await.unwrap();
    kv.hash_set(&key, "user_b", "admin").await.unwrap();
    kv.hash_set(&format!("{key}x"), "user_c", "elsewhere").await.unwrap();
    assert_eq!(kv.hash_get(&key, "user_b").await.unwrap().as_deref(), Some("admin"), "the last set wins");
    assert_eq!(kv.hash_get(&key, "user_c").await.unwrap(), None);
    let mut all = kv.hash_get_all(&key).await.unwrap();
    all.sort();
    assert_eq!(all, [("user_a".to_string(), r#"{"role":"owner"}"#.to_string()), ("user_b".into(), "admin".into())]);
    // Of concurrent removals of one field, exactly one removed it.
    let mut removals = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (kv, key) = (kv.clone(), key.clone());
        removals.spawn(async move { kv.hash_remove(&key, "user_a").await.unwrap() });
    }
    assert_eq!(removals.join_all().await.into_iter().filter(|removed| *removed).count(), 1);
    assert_eq!(kv.hash_get_all(&key).await.unwrap(), [("user_b".to_string(), "admin".to_string())]);
}

/// Quotas: a minute's GCRA lets a whole minute's worth through at once, then refuses with the
/// wait; a period's count stops at its limit; a refused request counts against neither.
async fn quotas(kv: &dyn Kv) {
    let id = tollgate_core::random_token(8);
    let (minute, period) = (keys::quota_minute(&id), keys::quota_period(&id, 1_764_547_200));
    let quota = Quota { minute: Some((&minute, 3)), period: Some((&period, 5, Duration::from_secs(3600))) };
    for n in 1..=3u64 {
        let admitted = kv.admit(quota).await.unwrap();
        assert!(admitted.admitted, "{n}: {admitted:?}");
        assert_eq!((admitted.minute_remaining, admitted.period_used), (Some(3 - n as u32), Some(n)));
    }
    let refused = kv.admit(quota).await.unwrap();
    assert!(!refused.admitted && refused.minute_remaining == Some(0), "{refused:?}");
    let wait = refused.retry_after.expect("the wait");
    assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "a third of a minute: {wait:?}");
    assert_eq!(refused.period_used, Some(3), "nothing counted for the refusal");
    // The period's limit alone.
    let (other_minute, other_period) = (keys::quota_minute(&format!("{id}b")), keys::quota_period(&format!("{id}b"), 1_764_547_200));
    let by_period = Quota { minute: Some((&other_minute, 1000)), period: Some((&other_period, 2, Duration::from_secs(3600))) };
    assert!(kv.admit(by_period).await.unwrap().admitted && kv.admit(by_period).await.unwrap().admitted);
    let over = kv.admit(by_period).await.unwrap();
    assert!(!over.admitted && over.retry_after.is_none() && over.period_used == Some(2), "{over:?}");
    // A plan with only one of the two limits.
    let (only_minute, only_period) = (keys::quota_minute(&format!("{id}c")), keys::quota_period(&format!("{id}c"), 1_764_547_200));
    let minute_alone = Quota { minute: Some((&only_minute, 1)), period: None };
    let first = kv.admit(minute_alone).await.unwrap();
    assert!(first.admitted && first.period_used.is_none() && first.minute_remaining == Some(0), "{first:?}");
    assert!(!kv.admit(minute_alone).await.unwrap().admitted);
    let period_alone = Quota { minute: None, period: Some((&only_period, 1, Duration::from_secs(3600))) };
    let first = kv.admit(period_alone).await.unwrap();
    assert!(first.admitted && first.period_used == Some(1) && first.minute_remaining.is_none(), "{first:?}");
    assert!(!kv.admit(period_alone).await.unwrap().admitted);
}

/// Usage buckets: counted, closed into numbered records in one step, reopened by later usage.
async fn usage(kv: &dyn Kv) {
    let bucket = format!("tollgate:usage:api_requests:cus_{}:29000000", tollgate_core::random_token(8));
    kv.usage_add(&bucket, 2, None).await.unwrap();
    kv.usage_add(&bucket, 3, None).await.unwrap();
    assert!(kv.usage_pending(1000).await.unwrap().0.contains(&bucket));
    let (record, count) = kv.usage_take(&bucket).await.unwrap().expect("a full bucket");
    assert_eq!((record.as_str(), count), (format!("{bucket}:1").as_str(), 5));
    assert_eq!(kv.usage_take(&bucket).await.unwrap(), None, "closed and empty");
    let (open, sending) = kv.usage_pending(1000).await.unwrap();
    assert!(!open.contains(&bucket) && sending.contains(&(record.clone(), 5)), "{open:?} {sending:?}");
    kv.usage_add(&bucket, 1, None).await.unwrap();
    // A request retried with its idempotency key counts once, even across a closing; another key counts.
    let once = tollgate_core::kv::keys::usage_once("cus_x", &format!("retry-{bucket}"));
    let other = tollgate_core::kv::keys::usage_once("cus_y", &format!("retry-{bucket}"));
    assert!(kv.usage_add(&bucket, 10, Some(&once)).await.unwrap(), "the first time");
    assert!(!kv.usage_add(&bucket, 10, Some(&once)).await.unwrap(), "a retry");
    assert!(kv.usage_add(&bucket, 100, Some(&other)).await.unwrap(), "the same key of another customer");
    assert_eq!(kv.usage_take(&bucket).await.unwrap(), Some((format!("{bucket}:2"), 111)), "later usage: the next record");
    assert!(!kv.usage_add(&bucket, 10, Some(&once)).await.unwrap(), "a retry after the bucket closed");
    assert_eq!(kv.usage_take(&bucket).await.unwrap(), None);
    kv.usage_sent(&record).await.unwrap();
    kv.usage_sent(&format!("{bucket}:2")).await.unwrap();
    assert!(!kv.usage_pending(1000).await.unwrap().1.iter().any(|(r, _)| r.starts_with(&bucket)));
}

/// What the Next.js recipe's app writes (`@upstash/redis`/`ioredis`: the customer id as a plain
/// string, the cache as `JSON.stringify` of its object, in its own key order) reads back here.
async fn recipe_values(kv: &dyn Kv) {
    let suffix = tollgate_core::random_token(8);
    kv.set(&format!("stripe:user:user_{suffix}"), &format!("cus_{suffix}")).await.unwrap();
    assert_eq!(kv.get(&format!("stripe:user:user_{suffix}")).await.unwrap(), Some(format!("cus_{suffix}")));
    let written_by_the_recipe = r#"{"subscriptionId":"sub_1Q","status":"past_due","priceId":"price_1Q","currentPeriodEnd":1767225600,"currentPeriodStart":1764547200,"cancelAtPeriodEnd":false,"paymentMethod":{"brand":"visa","last4":"4242"}}"#;
    kv.set(&format!("stripe:customer:cus_{suffix}"), written_by_the_recipe).await.unwrap();
    let raw = kv.get(&format!("stripe:customer:cus_{suffix}")).await.unwrap().unwrap();
    let entry: SubscriptionCache = serde_json::from_str(&raw).unwrap();
    let sub = entry.subscription().expect("a subscription entry");
    assert_eq!(
        (sub.status, sub.price_id.as_deref(), sub.current_period_end),
        (SubscriptionStatus::PastDue, Some("price_1Q"), Some(1767225600))
    );
    assert_eq!(sub.payment_method.as_ref().and_then(|p| p.last4.as_deref()), Some("4242"));
    kv.set(&format!("stripe:customer:cus_{suffix}"), r#"{"status":"none"}"#).await.unwrap();
    let none: SubscriptionCache = serde_json::from_str(&kv.get(&format!("stripe:customer:cus_{suffix}")).await.unwrap().unwrap()).unwrap();
    assert_eq!(none, SubscriptionCache::none());
}

async fn sync_bookkeeping(kv: &dyn Kv, time: &Time) {
    let customer = format!("cus_{}", tollgate_core::random_token(8));
    let event = format!("evt_{}", tollgate_core::random_token(8));
    assert!(kv.mark_pending(&customer, Some(&event)).await.unwrap());
    assert!(!kv.mark_pending(&customer, Some(&event)).await.unwrap(), "the same event id again: a duplicate");
    assert!(kv.mark_pending(&customer, None).await.unwrap());
    assert_eq!(kv.pending_generation(&customer).await.unwrap(), Some(2), "the duplicate recorded nothing");
    assert!(kv.pending_customers(10_000).await.unwrap().contains(&customer));
    // Past a few hundred entries (where Redis changes the hash's encoding) every one is still found.
    let many: Vec<String> = (0..300).map(|n| format!("cus_many{n}_{}", tollgate_core::random_token(4))).collect();
    for other in &many {
        kv.mark_pending(other, None).await.unwrap();
    }
    assert_eq!(kv.pending_customers(1).await.unwrap().len(), 1);
    let listed = kv.pending_customers(10_000).await.unwrap();
    assert!(many.iter().all(|c| listed.contains(c)), "{} of 301 listed", listed.len());
    for other in &many {
        assert!(kv.lease(&tollgate_core::kv::keys::sync_lease(other), "cleanup", Duration::from_secs(5)).await.unwrap());
        assert_eq!(kv.commit_sync(other, "cleanup", 1, None).await.unwrap(), Commit::Clean);
    }

    let lease = tollgate_core::kv::keys::sync_lease(&customer);
    assert!(kv.lease(&lease, "holder", Duration::from_secs(10)).await.unwrap());
    assert!(!kv.lease(&lease, "intruder", Duration::from_secs(10)).await.unwrap());
    assert_eq!(kv.commit_sync(&customer, "intruder", 2, Some("{\"status\":\"none\"}")).await.unwrap(), Commit::LeaseLost);
    assert_eq!(kv.get(&format!("stripe:customer:{customer}")).await.unwrap(), None, "no write without the lease");
    // An event recorded during the sync: written, but still pending.
    assert!(kv.mark_pending(&customer, None).await.unwrap());
    assert_eq!(kv.commit_sync(&customer, "holder", 2, Some("{\"status\":\"none\"}")).await.unwrap(), Commit::DirtyAgain);
    assert_eq!(kv.get(&format!("stripe:customer:{customer}")).await.unwrap().as_deref(), Some("{\"status\":\"none\"}"));
    assert_eq!(kv.commit_sync(&customer, "holder", 3, None).await.unwrap(), Commit::Clean);
    assert_eq!(kv.pending_generation(&customer).await.unwrap(), None);
    assert!(!kv.pending_customers(10_000).await.unwrap().contains(&customer));
    kv.release(&lease, "intruder").await.unwrap();
    assert!(!kv.lease(&lease, "intruder", Duration::from_secs(10)).await.unwrap(), "only the holder releases");
    kv.release(&lease, "holder").await.unwrap();
    assert!(kv.lease(&lease, "next", Duration::from_millis(50)).await.unwrap());
    time.pass(Duration::from_millis(120)).await;
    assert!(kv.lease(&lease, "after-expiry", Duration::from_secs(1)).await.unwrap(), "an expired lease is free");

    // Pacing: evenly spaced reservations; none beyond the longest wait. A second apart, so that
    // the calls' own time (long on a loaded machine, or while a cluster fails over) stays far
    // below the spacing: each wait is its slot less the time already spent getting there.
    let rate = format!("contract-{}", tollgate_core::random_token(6));
    let mut waits = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        waits.push(kv.reserve_rate(&rate, 1, Duration::from_secs(5)).await.unwrap().expect("within the longest wait"));
    }
    let took = started.elapsed();
    for (n, wait) in waits.iter().enumerate() {
        let slot = Duration::from_secs(n as u64);
        assert!(*wait <= slot && *wait + took + Duration::from_millis(1) >= slot, "slot {n}: {waits:?} in {took:?}");
    }
    assert_eq!(kv.reserve_rate(&rate, 1, Duration::ZERO).await.unwrap(), None, "the next slot is seconds away");
}

/// Start many reads and writes and drop them at random points; every later answer is still its own.
async fn cancellation(kv: SharedKv) {
    let prefix = format!("cancel:{}", tollgate_core::random_token(6));
    for i in 0..50 {
        kv.set(&format!("{prefix}:{i}"), &format!("value-{i}")).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..400u64 {
        let (kv, prefix) = (kv.clone(), prefix.clone());
        tasks.spawn(async move {
            let i = round % 50;
            let key = format!("{prefix}:{i}");
            let cut = Duration::from_micros(round * 7 % 400);
            let _ = tokio::time::timeout(cut, async {
                if round % 3 == 0 {
                    kv.set(&key, &format!("value-{i}")).await.map(|_| ())
                } else {
                    kv.get(&key).await.map(|_| ())
                }
            })
            .await;
        });
    }
    tasks.join_all().await;
    for i in 0..50 {
        assert_eq!(kv.get(&format!("{prefix}:{i}")).await.unwrap(), Some(format!("value-{i}")), "key {i} answered with another's reply");
    }
}

#[tokio::test]
async fn memory_keeps_the_contract() {
    let clock = tollgate_core::Clock::test();
    contract(Arc::new(tollgate_core::kv::memory::MemoryKv::new(clock.clone())), Time::Clock(clock)).await;
}

#[tokio::test]
async fn redb_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let clock = tollgate_core::Clock::test();
    let kv = tollgate_core::kv::redb::RedbKv::open_with_clock(&dir.path().join("kv.redb"), clock.clone()).unwrap();
    contract(Arc::new(kv), Time::Clock(clock)).await;
}

#[tokio::test]
async fn redis_keeps_the_contract() {
    let redis = RedisServer::start();
    contract(Arc::new(tollgate_core::kv::redis::RedisKv::connect(&redis.url(), None).await.unwrap()), Time::Real).await;
}

/// On a Redis Cluster (three masters, three replicas), the contract holds as on one node, also
/// while slots move between masters and a replica takes over a master (except that a walk of
/// `scan_keys` may then miss a key of a moving slot): the scripts' keys share a slot (as the
/// server itself computes it), and the client follows the cluster's redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_contract_while_slots_move_and_a_master_fails_over() {
    use tollgate_core::kv::redis_cluster::{physical, slot};
    let cluster = crate::redis_server::RedisCluster::start();
    for key in [
        "stripe:customer:cus_A1",
        "tollgate:lease:sync:cus_A1",
        "tollgate:quota:period:user_1:1764740700",
        "tollgate:usage:api_requests:cus_A1:1764740700",
        "tollgate:sync:pending:index:{7}",
    ] {
        let physical = physical(key);
        assert_eq!(cluster.nodes[0].cli(&["cluster", "keyslot", &physical]), slot(&physical).to_string(), "{physical}");
    }
    let kv: SharedKv = Arc::new(tollgate_core::kv::redis::RedisKv::connect(&cluster.url(), None).await.unwrap());
    contract(kv.clone(), Time::Real).await;

    let moving = std::thread::spawn(move || {
        cluster.reshard(2000);
        cluster.failover("stripe:customer:cus_A1");
        cluster.reshard(1000);
        cluster
    });
    // Contracts run back to back until the moves are done: each sees some of them.
    let mut rounds = 0;
    while !moving.is_finished() || rounds == 0 {
        contract_while(kv.clone(), Time::Real, Layout::Moving).await;
        rounds += 1;
    }
    let cluster = moving.join().unwrap();
    assert!(rounds >= 2, "the contract ran while the cluster changed ({rounds} rounds)");
    contract(kv.clone(), Time::Real).await;

    // The recipe's keys keep their names: another app reads them as it wrote them.
    kv.set("stripe:user:user_cluster", "cus_cluster").await.unwrap();
    assert_eq!(cluster.get("stripe:user:user_cluster"), "cus_cluster");
}

/// `rediss+cluster://`: the client and the nodes speak TLS (the nodes among themselves too),
/// trusting the CA of `KV_TLS_CA_FILE`; without it the nodes' certificates are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_keeps_the_contract() {
    let cluster = crate::redis_server::RedisCluster::start_with(true);
    let (url, ca) = (cluster.url(), cluster.tls_ca().unwrap());
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let untrusted = tollgate_core::kv::redis::RedisKv::connect(&url, None).await.err().expect("an unknown CA is refused").to_string();
    assert!(untrusted.starts_with("KV_URL:"), "{untrusted}");
    let kv: SharedKv = Arc::new(tollgate_core::kv::redis::RedisKv::connect(&url, Some(&ca)).await.unwrap());
    contract(kv, Time::Real).await;
}

/// Each single-threaded runtime (a serving thread) gets its own Redis connection, made on its
/// first command (one, however many commands race to make it) and kept; a multi-threaded runtime
/// uses the shared one (made here, on a multi-threaded runtime as in the server).
#[tokio::test(flavor = "multi_thread")]
async fn redis_gives_each_serving_thread_its_own_connection() {
    let redis = RedisServer::start();
    let kv = Arc::new(tollgate_core::kv::redis::RedisKv::connect(&redis.url(), None).await.unwrap());
    // `CLIENT LIST` counts its own connection (redis-cli's) too.
    let connections = || redis.cli(&["CLIENT", "LIST"]).lines().count();
    kv.ping().await.unwrap();
    let before = connections();
    let (ready, readies) = std::sync::mpsc::channel();
    let (release, released) = tokio::sync::watch::channel(false);
    let threads: Vec<_> = [false, false, true]
        .into_iter()
        .map(|multi_threaded| {
            let (kv, ready, mut released) = (kv.clone(), ready.clone(), released.clone());
            std::thread::spawn(move || {
                let mut builder = if multi_threaded {
                    tokio::runtime::Builder::new_multi_thread()
                } else {
                    tokio::runtime::Builder::new_current_thread()
                };
                builder.enable_all().build().unwrap().block_on(async move {
                    let (a, b, c) = tokio::join!(kv.get("thread-test:a"), kv.get("thread-test:b"), kv.get("thread-test:c"));
                    assert!(a.is_ok() && b.is_ok() && c.is_ok());
                    kv.get("thread-test:d").await.unwrap();
                    ready.send(()).unwrap();
                    // The runtime, and its connection, live until counted.
                    released.wait_for(|go| *go).await.unwrap();
                });
            })
        })
        .collect();
    let count = threads.len();
    tokio::task::spawn_blocking(move || (0..count).for_each(|_| readies.recv().unwrap())).await.unwrap();
    assert_eq!(connections(), before + 2, "one more connection per single-threaded runtime, none for the multi-threaded one");
    release.send(true).unwrap();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Two signed-in users; 8 clients send requests with one user's cookie and hang up at once (or a
/// moment later), 300 times; then 400 ordinary requests alternating between the users must each
/// show only their own user, and a fresh sign-up must still work.
async fn hang_up_scenario(options: Options) {
    let app = spawn_app_with(options).await;
    let users = [app.signed_in("ada@example.com").await, app.signed_in("grace@example.com").await];
    let emails = ["ada@example.com", "grace@example.com"];
    let addr = app.url.strip_prefix("http://").unwrap().to_string();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8usize {
        let (addr, cookies) = (addr.clone(), [users[0].cookie_header(), users[1].cookie_header()]);
        clients.spawn(async move {
            for n in 0..38usize {
                let path = if n % 2 == 0 { "/dashboard" } else { "/api/subscription" };
                let request =
                    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/html\r\n\r\n", cookies[(client + n) % 2]);
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                if n % 3 != 0 {
                    // Real time on purpose: the hang-ups land at varied points of the handler.
                    tokio::time::sleep(Duration::from_micros((n * 97 % 1500) as u64)).await;
                }
                drop(stream); // hang up, mid-request or just before the answer
            }
        });
    }
    clients.join_all().await;
    let mut checks = tokio::task::JoinSet::new();
    for n in 0..400usize {
        let (browser, own, other) = (users[n % 2].clone(), emails[n % 2], emails[(n + 1) % 2]);
        checks.spawn(async move {
            let page = browser.get("/dashboard").await;
            (n, page.status, page.text.contains(other), page.text.contains(own))
        });
        if checks.len() >= 16 {
            let (n, status, leaked, own_shown) = checks.join_next().await.unwrap().unwrap();
            assert!(status == 200 && !leaked && own_shown, "request {n}: status {status}, other user's data shown: {leaked}");
        }
    }
    for (n, status, leaked, own_shown) in checks.join_all().await {
        assert!(status == 200 && !leaked && own_shown, "request {n}: status {status}, other user's data shown: {leaked}");
    }
    let newcomer = app.signed_in("newcomer@example.com").await;
    assert!(newcomer.get("/dashboard").await.text.contains("newcomer@example.com"), "a fresh sign-up still works");
}

#[tokio::test]
async fn hang_ups_never_leak_between_users_on_memory() {
    hang_up_scenario(Options { kv_url: "memory:".into(), ..Options::default() }).await;
}

#[tokio::test]
async fn hang_ups_never_leak_between_users_on_redb() {
    hang_up_scenario(Options::default()).await;
}

#[tokio::test]
async fn hang_ups_never_leak_between_users_on_redis() {
    let redis = RedisServer::start();
    hang_up_scenario(Options { kv_url: redis.url(), ..Options::default() }).await;
}

#[tokio::test]
async fn hang_ups_never_leak_between_users_on_a_redis_cluster() {
    let cluster = crate::redis_server::RedisCluster::start();
    hang_up_scenario(Options { kv_url: cluster.url(), ..Options::default() }).await;
}

/// A full disk: redb writes fail (and nothing is damaged); once there is room again the store
/// reopens its file and writes succeed, without a restart. Needs root, to mount a small tmpfs.
#[tokio::test]
async fn redb_recovers_from_a_full_disk() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("tollgate-full-{}", tollgate_core::random_token(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&dir).status().unwrap();
    assert!(mounted.success(), "mounting a 4 MiB tmpfs needs root (the test script runs as root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(dir.clone());
    let kv = tollgate_core::kv::redb::RedbKv::open(&dir.join("kv.redb")).unwrap();
    kv.set("kept", "before the disk filled").await.unwrap();
    let filler = dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 8 << 20]); // fills the disk (the write itself fails part-way)
    let value = "x".repeat(64 * 1024);
    let mut failed = false;
    for n in 0..200 {
        if kv.set(&format!("big{n}"), &value).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a write must fail on a full disk");
    std::fs::remove_file(&filler).unwrap();
    let write = || async { kv.set("after", "room again").await.ok() };
    test_support::eventually("writes work again once there is room", Duration::from_secs(5), write).await;
    assert_eq!(kv.get("after").await.unwrap().as_deref(), Some("room again"));
    assert_eq!(kv.get("kept").await.unwrap().as_deref(), Some("before the disk filled"), "nothing stored was lost");
}
