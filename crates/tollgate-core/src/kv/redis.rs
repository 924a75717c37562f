//! Redis (or Valkey) through the maintained `redis` crate: `redis://` and `rediss://` (TLS by
//! rustls, with the system's roots or the CA in `KV_TLS_CA_FILE`), `user:password@` with
//! percent-decoding, and a database number — the crate parses all of that.
//!
//! Commands go over multiplexed connections kept up by the crate's `ConnectionManager`: one
//! shared by the background work (the multi-threaded runtime), and one per serving thread (a
//! single-threaded runtime), made there on its first command. A connection's task runs on the
//! runtime that made it, so a request's command and reply stay on its own thread: with one shared
//! connection, each webhook woke the connection's thread and was woken back, and its buffers were
//! freed on another thread than the one that made them (measured: the largest cost of intake).
//! Replies are matched to requests inside the connection's own task, so a request dropped
//! half-way (a client hung up, a timeout fired) cannot shift the replies of later ones. Every
//! multi-step operation is a Lua script: atomic on the server, and safe to send again when an
//! answer was lost (each is idempotent, or harmless when repeated: one more sync at worst).
//!
//! `redis+cluster://` (and `rediss+cluster://`) connects to a Redis Cluster through the crate's
//! cluster client, which follows `MOVED` and `ASK` redirects and reloads the slot map when slots
//! move or a replica takes over; the keys are laid out so that each script's share one slot
//! (`redis_cluster`). Sentinel is not supported.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisFuture, Script, Value};

use super::redis_cluster::{self as cluster, Index};
use super::{keys, Commit, Kv, KvError, KvFuture, EVENT_MEMORY};

/// Longest wait for one operation (a retry after a lost connection included).
const TIMEOUT: Duration = Duration::from_secs(3);

/// Stored, or already holding exactly this value: a resend after a lost answer learns it won.
const SET_IF_ABSENT: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
if current == ARGV[1] then return 1 end
return 0";

/// KEYS: the key. Its value, deleted in the same step.
const TAKE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then redis.call('DEL', KEYS[1]) end
return current";

/// KEYS: pending hash, [event key]. ARGV: customer, event memory in seconds.
const MARK_PENDING: &str = r"
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1";

/// KEYS: counter. ARGV: ttl in ms, set with the first increment.
const INCREMENT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count";

/// KEYS: lease. ARGV: token, ttl in ms.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1";

/// KEYS: lease. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// KEYS: lease, cache entry, pending hash. ARGV: token, customer, generation, has entry, entry.
/// Answers 0 clean, 1 dirty again, 2 lease lost (see `Commit`).
const COMMIT_SYNC: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 2 end
if ARGV[4] == '1' then redis.call('SET', KEYS[2], ARGV[5]) end
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[3], ARGV[2])
  return 0
end
return 1";

/// GCRA reservation on the server's clock. KEYS: the limit. ARGV: interval and longest wait, in
/// microseconds. Answers the wait in microseconds, or -1 (nothing reserved).
const RESERVE_RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return -1 end
local next = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.floor((next - now) / 1000) + 1000)
return wait";

/// One request against a quota (`Kv::admit`), on the server's clock. KEYS: the minute's GCRA,
/// the period's counter (either may be unused: ARGV says). ARGV: minute limit (0: none), period
/// limit (0: none), the counter's life in ms. Answers {admitted, minute remaining, minute reset
/// µs, retry after µs (-1: none), period used (-1: none)}.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = 60000000
local minute_limit, period_limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local admitted, remaining, reset, retry, new_tat = 1, -1, 0, -1, 0
if minute_limit > 0 then
  local interval = window / minute_limit
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  new_tat = tat + interval
  if new_tat - window > now then
    admitted = 0
    retry = new_tat - window - now
    remaining = math.floor((window - (tat - now)) / interval)
    reset = tat - now
  else
    remaining = math.floor((window - (new_tat - now)) / interval)
    reset = new_tat - now
  end
end
local used = -1
if period_limit > 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= period_limit then admitted = 0 end
end
if admitted == 1 then
  if minute_limit > 0 then
    redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
  end
  if period_limit > 0 then
    used = redis.call('INCR', KEYS[2])
    if used == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
  end
end
return {admitted, remaining, math.floor(reset), math.floor(retry), used}";

/// KEYS: the bucket, the open index, and (optional) the request's idempotency key. ARGV: the
/// amount, how long the key is remembered (s). Answers 0 when the key was seen: nothing counted.
const USAGE_ADD: &str = r"
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], KEYS[1], '1')
return 1";

/// KEYS: the bucket, the open index, the bucket's closed counter, the sending index. Answers
/// {record, count}, or nothing for an empty bucket.
const USAGE_TAKE: &str = r"
redis.call('HDEL', KEYS[2], KEYS[1])
local count = redis.call('GET', KEYS[1])
if not count then return nil end
redis.call('DEL', KEYS[1])
local n = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 259200)
local record = KEYS[1] .. ':' .. n
redis.call('HSET', KEYS[4], record, count)
return {record, count}";

struct Scripts {
    set_if_absent: Script,
    take: Script,
    increment: Script,
    mark_pending: Script,
    lease: Script,
    release: Script,
    commit_sync: Script,
    reserve_rate: Script,
    admit: Script,
    usage_add: Script,
    usage_take: Script,
    cluster_mark_pending: Script,
    cluster_commit_sync: Script,
    index_touch: Script,
    index_forget: Script,
}

/// A connection to one Redis node (kept up by the crate's manager), or to a cluster (the
/// crate's cluster connection reconnects to each node itself).
#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// What a connection is made from.
enum Client {
    Node(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Client {
    async fn connect(&self) -> redis::RedisResult<Connection> {
        match self {
            Client::Node(client, config) => Ok(Connection::Node(ConnectionManager::new_with_config(client.clone(), config.clone()).await?)),
            Client::Cluster(client) => Ok(Connection::Cluster(client.get_async_connection().await?)),
        }
    }
    fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }
}

pub struct RedisKv {
    /// The shared connection (made on the runtime that connected).
    connection: Connection,
    /// What a serving thread makes its own connection from.
    client: Client,
    /// Tells this KV's per-thread connections from another's (tests run several in one process).
    id: u64,
    scripts: Scripts,
    /// On a cluster: when this process last listed a member, by index (`list_in`).
    listed_recently: std::sync::Mutex<HashMap<Index, HashMap<String, std::time::Instant>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connection to each Redis KV, by the KV's id; set once made.
    static THREAD_CONNECTIONS: RefCell<HashMap<u64, std::sync::Arc<tokio::sync::OnceCell<Connection>>>> = RefCell::new(HashMap::new());
}

/// The customer a usage bucket or record counts for (on a cluster, its keys' tag).
fn usage_owner(bucket: &str) -> Result<&str, KvError> {
    cluster::usage_owner(bucket).ok_or_else(|| KvError::Unavailable(format!("not a usage bucket: {bucket}")))
}

fn unavailable(e: redis::RedisError) -> KvError {
    KvError::Unavailable(format!("redis: {e}"))
}

/// Did the connection fail (worth one more try on the reconnected one), rather than the command?
fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl RedisKv {
    /// Connect and check that the server answers. `url` is parsed by the crate (a cluster URL
    /// first split into its seed nodes); `ca_file` is a PEM file of the roots to trust for
    /// `rediss://` instead of the system's.
    pub async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<RedisKv> {
        let certificates = match ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("KV_TLS_CA_FILE: cannot read {}: {e}", path.display()))?;
                Some(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
            }
        };
        let (client, address) = match crate::config::redis_cluster_nodes(url) {
            Some(nodes) => {
                let nodes = nodes.map_err(|e| anyhow::anyhow!("KV_URL: {e}"))?;
                // The addresses tried are named (never the password, which is not part of them).
                let address = nodes.iter().map(|node| node.rsplit('@').next().unwrap_or(node)).collect::<Vec<_>>().join(",");
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(Duration::from_secs(2))
                    // A failover or a slot moving answers `CLUSTERDOWN`/`TRYAGAIN` for a moment:
                    // retried with backoff within the operation's own time limit.
                    .retries(8)
                    .min_retry_wait(20)
                    .max_retry_wait(400);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                (Client::Cluster(builder.build().map_err(|e| anyhow::anyhow!("KV_URL: {e}"))?), address)
            }
            None => {
                let client = match certificates {
                    None => redis::Client::open(url),
                    Some(certificates) => redis::Client::build_with_tls(url, certificates),
                }
                .map_err(|e| anyhow::anyhow!("KV_URL: {e}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let address = client.get_connection_info().addr().to_string();
                (Client::Node(client, config), address)
            }
        };
        let connection = tokio::time::timeout(Duration::from_secs(10), client.connect())
            .await
            .map_err(|_| anyhow::anyhow!("KV_URL: Redis at {address} did not answer within 10 s"))?
            .map_err(|e| anyhow::anyhow!("KV_URL: cannot connect to Redis at {address}: {e}"))?;
        let kv = RedisKv {
            connection,
            client,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            listed_recently: Default::default(),
            scripts: Scripts {
                set_if_absent: Script::new(SET_IF_ABSENT),
                take: Script::new(TAKE),
                increment: Script::new(INCREMENT),
                mark_pending: Script::new(MARK_PENDING),
                lease: Script::new(LEASE),
                release: Script::new(RELEASE),
                commit_sync: Script::new(COMMIT_SYNC),
                reserve_rate: Script::new(RESERVE_RATE),
                admit: Script::new(ADMIT),
                usage_add: Script::new(USAGE_ADD),
                usage_take: Script::new(USAGE_TAKE),
                cluster_mark_pending: Script::new(cluster::MARK_PENDING),
                cluster_commit_sync: Script::new(cluster::COMMIT_SYNC),
                index_touch: Script::new(cluster::INDEX_TOUCH),
                index_forget: Script::new(cluster::INDEX_FORGET),
            },
        };
        kv.ping().await.map_err(|e| anyhow::anyhow!("KV_URL: {e}"))?;
        Ok(kv)
    }

    /// A key's name on this store: the caller's on one node, tagged on a cluster.
    fn key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.client.is_cluster() {
            cluster::physical(key)
        } else {
            Cow::Borrowed(key)
        }
    }

    /// The connection for the caller's thread: its own on a single-threaded runtime (a serving
    /// thread), made on first use; the shared one elsewhere, or while its own cannot be made.
    async fn connection(&self) -> Connection {
        if !crate::serving::on_serving_thread() {
            return self.connection.clone();
        }
        let cell = THREAD_CONNECTIONS.with(|connections| connections.borrow_mut().entry(self.id).or_default().clone());
        let made = cell.get_or_try_init(|| self.client.connect()).await;
        match made {
            Ok(own) => own.clone(),
            Err(_) => self.connection.clone(),
        }
    }

    /// `attempt` on the caller's connection, once more if the connection broke under it (the
    /// manager reconnects meanwhile), all within [`TIMEOUT`].
    async fn retried<T, F: std::future::Future<Output = redis::RedisResult<T>>>(
        &self,
        attempt: impl Fn(Connection) -> F,
    ) -> Result<T, KvError> {
        let attempts = async {
            let connection = self.connection().await;
            match attempt(connection.clone()).await {
                Err(e) if connection_failed(&e) => attempt(connection).await.map_err(unavailable),
                other => other.map_err(unavailable),
            }
        };
        tokio::time::timeout(TIMEOUT, attempts).await.unwrap_or_else(|_| Err(KvError::Unavailable("redis did not answer in time".into())))
    }

    async fn run<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, KvError> {
        let cmd = &cmd;
        self.retried(move |mut connection| async move { cmd.query_async(&mut connection).await }).await
    }

    async fn script<T: FromRedisValue>(&self, script: &Script, keys: &[&str], args: &[&str]) -> Result<T, KvError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let invocation = &invocation;
        self.retried(move |mut connection| async move { invocation.invoke_async(&mut connection).await }).await
    }

    /// List `member` in its partition of `index`: on a cluster, the step before writing its data.
    /// Skipped when this process listed it within [`cluster::RELIST_AFTER`]: that listing is
    /// young enough that no sweep may remove it before this write lands.
    async fn list_in(&self, index: Index, member: &str) -> Result<(), KvError> {
        let now = std::time::Instant::now();
        let recent = |listed: &std::time::Instant| now.duration_since(*listed) < cluster::RELIST_AFTER;
        let listed_at = self.listed_recently.lock().expect("never poisoned").get(&index).and_then(|listed| listed.get(member)).copied();
        if listed_at.is_some_and(|at| recent(&at)) {
            return Ok(());
        }
        self.script::<i64>(&self.scripts.index_touch, &[&index.partition_of(member)], &[member]).await?;
        let mut all = self.listed_recently.lock().expect("never poisoned");
        let listed = all.entry(index).or_default();
        // Only the time saved is lost by forgetting: keep the maps small (100,000 members in all).
        const MOST: usize = 50_000;
        if listed.len() >= MOST {
            listed.retain(|_, at| recent(at));
            if listed.len() >= MOST {
                listed.clear();
            }
        }
        listed.insert(member.to_string(), now);
        Ok(())
    }

    /// The members listed in one partition of an index, with their listings' scores.
    async fn listed(&self, partition: &str) -> Result<Vec<(String, String)>, KvError> {
        self.run(redis::cmd("ZRANGE").arg(partition).arg(0).arg(-1).arg("WITHSCORES").clone()).await
    }

    /// A listed member's data is gone: stop listing it, if the listing is older than the grace
    /// and still the one read (see `redis_cluster`).
    async fn forget(&self, partition: &str, member: &str, score: &str) -> Result<(), KvError> {
        let grace = cluster::INDEX_GRACE.as_millis().to_string();
        self.script::<i64>(&self.scripts.index_forget, &[partition], &[member, score, &grace]).await.map(drop)
    }

    /// Some keys starting with `prefix`, over every master of a cluster: the cursor names the
    /// master (by its place in the sorted list of masters) and that master's own cursor.
    async fn scan_cluster(
        &self,
        mut connection: ClusterConnection,
        pattern: String,
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<String>, String), KvError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let slots: Vec<Value> = self.run(redis::cmd("CLUSTER").arg("SLOTS").clone()).await?;
        // Each range is [first slot, last slot, [master host, port, id], replicas…].
        let mut masters: Vec<(String, u16)> = slots
            .iter()
            .filter_map(|range| match range {
                Value::Array(fields) => match fields.get(2) {
                    Some(Value::Array(master)) => {
                        let host: String = redis::from_redis_value_ref(master.first()?).ok()?;
                        let port: u16 = redis::from_redis_value_ref(master.get(1)?).ok()?;
                        Some((host, port))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        masters.sort();
        masters.dedup();
        let (mut node, mut node_cursor) =
            cursor.split_once(':').map_or((0, "0".to_string()), |(n, c)| (n.parse().unwrap_or(0), c.to_string()));
        while let Some((host, port)) = masters.get(node) {
            let scan = redis::cmd("SCAN").arg(&node_cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(limit.max(10)).clone();
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
            let answer = tokio::time::timeout(TIMEOUT, connection.route_command(scan, routing))
                .await
                .map_err(|_| KvError::Unavailable("redis did not answer in time".into()))?
                .map_err(unavailable)?;
            let (next, keys): (String, Vec<String>) =
                redis::from_redis_value(answer).map_err(|e| KvError::Unavailable(format!("redis: SCAN answered {e}")))?;
            // This master's walk is over at "0": the next master's begins.
            (node, node_cursor) = if next == "0" { (node + 1, "0".to_string()) } else { (node, next) };
            let more = node < masters.len();
            if !keys.is_empty() || !more {
                let cursor = if more { format!("{node}:{node_cursor}") } else { String::new() };
                return Ok((keys.iter().map(|k| cluster::logical(k).into_owned()).collect(), cursor));
            }
        }
        Ok((Vec::new(), String::new()))
    }
}

impl Kv for RedisKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        KvFuture::new(self.run(redis::cmd("GET").arg(&*self.key(key)).clone()))
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        KvFuture::new(self.run(redis::cmd("SET").arg(&*self.key(key)).arg(value).clone()))
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        KvFuture::new(async move { self.script(&self.scripts.set_if_absent, &[&self.key(key)], &[value]).await })
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        KvFuture::new(self.run(redis::cmd("DEL").arg(&*self.key(key)).clone()))
    }
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        KvFuture::new(async move { self.script(&self.scripts.take, &[&self.key(key)], &[]).await })
    }
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()> {
        KvFuture::new(async move {
            self.run(redis::cmd("SET").arg(&*self.key(key)).arg(value).arg("PX").arg(ttl.as_millis().max(1) as u64).clone()).await
        })
    }
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64> {
        KvFuture::new(async move { self.script(&self.scripts.increment, &[&self.key(key)], &[&ttl.as_millis().max(1).to_string()]).await })
    }
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>> {
        KvFuture::new(self.run(redis::cmd("HGET").arg(&*self.key(key)).arg(field).clone()))
    }
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>> {
        KvFuture::new(self.run(redis::cmd("HGETALL").arg(&*self.key(key)).clone()))
    }
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        KvFuture::new(async move { self.run::<i64>(redis::cmd("HSET").arg(&*self.key(key)).arg(field).arg(value).clone()).await.map(drop) })
    }
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool> {
        KvFuture::new(async move { Ok(self.run::<i64>(redis::cmd("HDEL").arg(&*self.key(key)).arg(field).clone()).await? == 1) })
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        KvFuture::new(async move { self.run::<String>(redis::cmd("PING")).await.map(|_| ()) })
    }
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)> {
        KvFuture::new(async move {
            // `*`, `?`, `[` and `\\` are pattern syntax in MATCH: escaped, the prefix is literal.
            let mut pattern = String::with_capacity(prefix.len() + 1);
            for c in prefix.chars() {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('*');
            if let Connection::Cluster(connection) = self.connection().await {
                return self.scan_cluster(connection, pattern, cursor, limit).await;
            }
            let start = if cursor.is_empty() { "0" } else { cursor };
            let scan = redis::cmd("SCAN").arg(start).arg("MATCH").arg(pattern).arg("COUNT").arg(limit.max(10)).clone();
            let (next, keys): (String, Vec<String>) = self.run(scan).await?;
            Ok((keys, if next == "0" { String::new() } else { next }))
        })
    }
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool> {
        KvFuture::new(async move {
            let memory = EVENT_MEMORY.as_secs().to_string();
            if self.client.is_cluster() {
                self.list_in(Index::Pending, customer).await?;
                let (pending, event_key) = (cluster::pending(customer), event_id.map(|id| cluster::event(customer, id)));
                let keys: Vec<&str> = std::iter::once(pending.as_str()).chain(event_key.as_deref()).collect();
                return self.script(&self.scripts.cluster_mark_pending, &keys, &[&memory]).await;
            }
            let event_key = event_id.map(keys::event);
            let keys: Vec<&str> = std::iter::once(keys::PENDING).chain(event_key.as_deref()).collect();
            self.script(&self.scripts.mark_pending, &keys, &[customer, &memory]).await
        })
    }
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>> {
        KvFuture::new(async move {
            match self.client.is_cluster() {
                true => self.run(redis::cmd("GET").arg(cluster::pending(customer)).clone()).await,
                false => self.run(redis::cmd("HGET").arg(keys::PENDING).arg(customer).clone()).await,
            }
        })
    }
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>> {
        KvFuture::new(async move {
            if self.client.is_cluster() {
                let mut found = Vec::new();
                for partition in Index::Pending.partitions() {
                    for (customer, score) in self.listed(&partition).await? {
                        if found.len() >= limit {
                            return Ok(found);
                        }
                        match self.pending_generation(&customer).await? {
                            Some(_) => found.push(customer),
                            None => self.forget(&partition, &customer, &score).await?,
                        }
                    }
                }
                return Ok(found);
            }
            // HSCAN may answer a batch with no fields before the end: follow the cursor to 0.
            let (mut found, mut cursor) = (Vec::new(), 0u64);
            loop {
                let scan = redis::cmd("HSCAN").arg(keys::PENDING).arg(cursor).arg("COUNT").arg(limit.max(10)).clone();
                let (next, pairs): (u64, Vec<String>) = self.run(scan).await?;
                found.extend(pairs.into_iter().step_by(2));
                cursor = next;
                if cursor == 0 || found.len() >= limit {
                    found.truncate(limit);
                    return Ok(found);
                }
            }
        })
    }
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool> {
        KvFuture::new(async move {
            let key = keys::lease(name);
            self.script(&self.scripts.lease, &[&self.key(&key)], &[token, &ttl.as_millis().max(1).to_string()]).await
        })
    }
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()> {
        KvFuture::new(async move {
            let key = keys::lease(name);
            self.script::<i64>(&self.scripts.release, &[&self.key(&key)], &[token]).await.map(|_| ())
        })
    }
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit> {
        KvFuture::new(async move {
            let lease = keys::lease(&keys::sync_lease(customer));
            let lease = self.key(&lease);
            let cache = keys::customer_cache_raw(customer);
            let (generation, has_entry) = (generation.to_string(), if entry.is_some() { "1" } else { "0" });
            let outcome = if self.client.is_cluster() {
                let keys = [&*lease, &cache, &cluster::pending(customer)];
                self.script::<i64>(&self.scripts.cluster_commit_sync, &keys, &[token, &generation, has_entry, entry.unwrap_or("")]).await?
            } else {
                let args = [token, customer, &generation, has_entry, entry.unwrap_or("")];
                self.script::<i64>(&self.scripts.commit_sync, &[&lease, &cache, keys::PENDING], &args).await?
            };
            match outcome {
                0 => Ok(Commit::Clean),
                1 => Ok(Commit::DirtyAgain),
                _ => Ok(Commit::LeaseLost),
            }
        })
    }
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool> {
        KvFuture::new(async move {
            let args = [amount.to_string(), super::USAGE_ONCE_MEMORY.as_secs().to_string()];
            if self.client.is_cluster() {
                let customer = usage_owner(bucket)?;
                self.list_in(Index::Usage, customer).await?;
                let (bucket, open) = (cluster::physical(bucket), cluster::usage_open(customer));
                let once = once.map(|key| cluster::usage_once(customer, key));
                let keys: Vec<&str> = [&*bucket, &open].into_iter().chain(once.as_deref()).collect();
                return self.script(&self.scripts.usage_add, &keys, &[&args[0], &args[1]]).await;
            }
            let keys: Vec<&str> = [bucket, keys::USAGE_OPEN].into_iter().chain(once).collect();
            self.script(&self.scripts.usage_add, &keys, &[&args[0], &args[1]]).await
        })
    }
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>> {
        KvFuture::new(async move {
            if self.client.is_cluster() {
                let customer = usage_owner(bucket)?;
                let (bucket, open, sending) = (cluster::physical(bucket), cluster::usage_open(customer), cluster::usage_sending(customer));
                let closed = keys::usage_closed(&bucket);
                let taken: Option<(String, u64)> =
                    self.script(&self.scripts.usage_take, &[&*bucket, &open, &closed, &sending], &[]).await?;
                return Ok(taken.map(|(record, count)| (cluster::logical(&record).into_owned(), count)));
            }
            let closed = keys::usage_closed(bucket);
            let keys = [bucket, keys::USAGE_OPEN, closed.as_str(), keys::USAGE_SENDING];
            self.script(&self.scripts.usage_take, &keys, &[]).await
        })
    }
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, super::UsagePending> {
        KvFuture::new(async move {
            if self.client.is_cluster() {
                let (mut open, mut sending) = (Vec::new(), Vec::new());
                'walk: for partition in Index::Usage.partitions() {
                    for (customer, score) in self.listed(&partition).await? {
                        if open.len() >= limit && sending.len() >= limit {
                            break 'walk;
                        }
                        let buckets: Vec<String> = self.run(redis::cmd("HKEYS").arg(cluster::usage_open(&customer)).clone()).await?;
                        let records: Vec<(String, u64)> =
                            self.run(redis::cmd("HGETALL").arg(cluster::usage_sending(&customer)).clone()).await?;
                        if buckets.is_empty() && records.is_empty() {
                            self.forget(&partition, &customer, &score).await?;
                        }
                        open.extend(buckets.iter().map(|bucket| cluster::logical(bucket).into_owned()));
                        sending.extend(records.into_iter().map(|(record, count)| (cluster::logical(&record).into_owned(), count)));
                    }
                }
                open.truncate(limit);
                sending.truncate(limit);
                return Ok((open, sending));
            }
            let open: Vec<String> = self.run(redis::cmd("HKEYS").arg(keys::USAGE_OPEN).clone()).await?;
            let sending: Vec<(String, u64)> = self.run(redis::cmd("HGETALL").arg(keys::USAGE_SENDING).clone()).await?;
            Ok((open.into_iter().take(limit).collect(), sending.into_iter().take(limit).collect()))
        })
    }
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()> {
        KvFuture::new(async move {
            let sending = match self.client.is_cluster() {
                true => Cow::Owned(cluster::usage_sending(usage_owner(record)?)),
                false => Cow::Borrowed(keys::USAGE_SENDING),
            };
            self.run::<i64>(redis::cmd("HDEL").arg(&*sending).arg(&*self.key(record)).clone()).await.map(drop)
        })
    }
    fn admit<'a>(&'a self, quota: super::Quota<'a>) -> KvFuture<'a, super::Admission> {
        KvFuture::new(async move {
            // An unused key's place in KEYS holds the other key (the script reads by position and
            // ARGV says which is unused): on a cluster, both are then in the used key's slot.
            let (minute, period) = (quota.minute.map(|(key, _)| key), quota.period.map(|(key, _, _)| key));
            let minute_key = self.key(minute.or(period).unwrap_or("tollgate:quota:unused"));
            let period_key = self.key(period.or(minute).unwrap_or("tollgate:quota:unused"));
            let args = [
                quota.minute.map_or(0, |(_, limit)| u64::from(limit)).to_string(),
                quota.period.map_or(0, |(_, limit, _)| limit).to_string(),
                quota.period.map_or(1, |(_, _, ttl)| ttl.as_millis().max(1) as u64).to_string(),
            ];
            let (admitted, remaining, reset, retry, used): (i64, i64, i64, i64, i64) =
                self.script(&self.scripts.admit, &[&minute_key, &period_key], &[&args[0], &args[1], &args[2]]).await?;
            Ok(super::Admission {
                admitted: admitted == 1,
                minute_remaining: (remaining >= 0).then_some(remaining as u32),
                minute_reset: Duration::from_micros(reset.max(0) as u64),
                period_used: (used >= 0).then_some(used as u64),
                retry_after: (retry >= 0).then(|| Duration::from_micros(retry as u64)),
            })
        })
    }
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>> {
        KvFuture::new(async move {
            let interval = 1_000_000 / u64::from(per_second.max(1));
            let args = [interval.to_string(), max_wait.as_micros().to_string()];
            let wait: i64 = self.script(&self.scripts.reserve_rate, &[&keys::rate(name)], &[&args[0], &args[1]]).await?;
            Ok((wait >= 0).then(|| Duration::from_micros(wait as u64)))
        })
    }
}
