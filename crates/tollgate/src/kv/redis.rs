//! Redis over its own protocol (RESP2): GET, SET, SET NX, DEL, PING — all the flow needs, so no
//! client crate. A few pooled connections; a broken one is dropped and reopened on next use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Kv, KvError, KvFuture};

const POOL: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Target {
    addr: String,
    password: Option<String>,
    db: Option<u32>,
}

/// `redis://[:password@]host[:port][/db]`
fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| anyhow::anyhow!("KV_URL: must start with redis://"))?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let password = auth.map(|a| a.split_once(':').map(|(_, p)| p).unwrap_or(a).to_string()).filter(|p| !p.is_empty());
    let (host, db) = match rest.split_once('/') {
        Some((host, db)) if !db.is_empty() => {
            (host, Some(db.parse().map_err(|_| anyhow::anyhow!("KV_URL: '{db}' is not a database number"))?))
        }
        Some((host, _)) => (host, None),
        None => (rest, None),
    };
    let addr = if host.contains(':') { host.to_string() } else { format!("{host}:6379") };
    Ok(Target { addr, password, db })
}

/// A RESP reply, as far as these commands need.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Bulk(Option<String>),
    Integer(i64),
}

struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(target: &Target) -> Result<Connection, KvError> {
        let stream = TcpStream::connect(&target.addr).await.map_err(|e| KvError::Unavailable(format!("redis at {}: {e}", target.addr)))?;
        stream.set_nodelay(true).ok();
        let mut conn = Connection { stream: BufReader::new(stream) };
        if let Some(password) = &target.password {
            conn.command(&["AUTH", password]).await?;
        }
        if let Some(db) = target.db {
            conn.command(&["SELECT", &db.to_string()]).await?;
        }
        Ok(conn)
    }

    async fn command(&mut self, args: &[&str]) -> Result<Reply, KvError> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let io = |e: std::io::Error| KvError::Unavailable(format!("redis: {e}"));
        self.stream.get_mut().write_all(&out).await.map_err(io)?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(KvError::Unavailable("redis closed the connection".into()));
        }
        let line = line.trim_end();
        let (kind, body) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Reply::Simple(body.to_string())),
            "-" => Err(KvError::Unavailable(format!("redis error: {body}"))),
            ":" => body.parse().map(Reply::Integer).map_err(|_| KvError::Unavailable("redis: bad integer reply".into())),
            "$" => {
                let len: i64 = body.parse().map_err(|_| KvError::Unavailable("redis: bad bulk length".into()))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0u8; len as usize + 2];
                self.stream.read_exact(&mut buf).await.map_err(io)?;
                buf.truncate(len as usize);
                String::from_utf8(buf).map(|s| Reply::Bulk(Some(s))).map_err(|_| KvError::Unavailable("redis: value is not UTF-8".into()))
            }
            _ => Err(KvError::Unavailable(format!("redis: unexpected reply '{line}'"))),
        }
    }
}

pub struct RedisKv {
    target: Target,
    pool: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl RedisKv {
    /// Parse the URL and check that the server answers.
    pub async fn connect(url: &str) -> anyhow::Result<RedisKv> {
        let kv = RedisKv { target: parse_url(url)?, pool: (0..POOL).map(|_| Mutex::new(None)).collect(), next: AtomicUsize::new(0) };
        kv.run(&["PING"]).await.map_err(|e| anyhow::anyhow!("KV_URL: {e}"))?;
        Ok(kv)
    }

    async fn run(&self, args: &[&str]) -> Result<Reply, KvError> {
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % POOL];
        let mut guard = slot.lock().await;
        // A pooled connection may have died while idle (a Redis restart): one retry on a fresh one.
        let reused = guard.is_some();
        let first = self.attempt(&mut guard, args).await;
        match first {
            Err(_) if reused => self.attempt(&mut guard, args).await,
            other => other,
        }
    }

    async fn attempt(&self, slot: &mut Option<Connection>, args: &[&str]) -> Result<Reply, KvError> {
        let attempt = async {
            if slot.is_none() {
                *slot = Some(Connection::open(&self.target).await?);
            }
            slot.as_mut().expect("just opened").command(args).await
        };
        let result = tokio::time::timeout(TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(KvError::Unavailable("redis did not answer in time".into())));
        if result.is_err() {
            *slot = None; // the connection may be mid-reply; never reuse it
        }
        result
    }
}

impl Kv for RedisKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        Box::pin(async move {
            match self.run(&["GET", key]).await? {
                Reply::Bulk(v) => Ok(v),
                other => Err(KvError::Unavailable(format!("redis GET: unexpected {other:?}"))),
            }
        })
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move { self.run(&["SET", key, value]).await.map(|_| ()) })
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        Box::pin(async move { Ok(self.run(&["SET", key, value, "NX"]).await? == Reply::Simple("OK".into())) })
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move { self.run(&["DEL", key]).await.map(|_| ()) })
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(async move { self.run(&["PING"]).await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("redis://127.0.0.1:6400/2").unwrap();
        assert_eq!((t.addr.as_str(), t.password, t.db), ("127.0.0.1:6400", None, Some(2)));
        let t = parse_url("redis://:s3cret@cache.internal").unwrap();
        assert_eq!((t.addr.as_str(), t.password.as_deref(), t.db), ("cache.internal:6379", Some("s3cret"), None));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://h/x").is_err());
    }
}
