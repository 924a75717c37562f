//! The product's connections: HTTP/1.1 over TCP, made with hyper's connection API and kept
//! between requests in one pool per serving thread (`threads`).
//!
//! Why not hyper-util's pooled client, which the gateway used before: for every request it
//! spawns a task that waits to hand the connection back, locks the pool on checkout and again on
//! return, and boxes the request's future. A bare proxy on it cost 18.2–24.3 µs of CPU per
//! request (median 21.7) against 15.7–20.1 µs (median 18.2) on hyper's connection API with a
//! connection per client connection: ten `bench_gate` runs with both side by side, the second
//! cheaper in nine. Here a request takes an idle connection from its own thread's pool (or makes
//! one), and its answer's body hands the connection back once read to the end: no task per
//! request, and a lock only its own thread takes.
//!
//! Every `.await` may be the last (the client hangs up): a connection is in the pool only while
//! nothing is using it, and one dropped mid-request or mid-answer is closed by hyper, never
//! handed back.
//!
//! A product closes a connection it has kept idle for its keep-alive timeout (gunicorn 2 s,
//! uvicorn and Node 5 s), and a request sent on it just then is closed unanswered. As nginx does
//! (`proxy_next_upstream error`), a request that may be sent twice — `GET`, `HEAD`, `OPTIONS`,
//! `TRACE` without a body, not an upgrade — goes again on a new connection when that happens on a
//! connection that had been idle a while ([`REPLAY_AFTER_IDLE`]); its head is copied for that
//! only then, so the busy path copies nothing. Anything else is a 502, as before.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::Clock;

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{header, Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::GatewayError;

/// How long a connection may wait idle in a pool before it is closed rather than used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections a serving thread keeps; beyond them a finished connection is closed.
const MAX_IDLE_PER_THREAD: usize = 256;
/// How long making a connection to the product may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A kept connection idle this long may be closing under the request sent on it (the product's
/// keep-alive timeout): an idempotent request sent on it is copied, to be sent again if so.
const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(250);

/// A connection not in use, and since when.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// One serving thread's idle connections, the most recently used last (taken first: the likeliest
/// to be open still), and the app's clock their idle times are read by.
struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    clock: Clock,
}

pub(crate) struct Upstream {
    /// `host[:port]` of the product, as `UPSTREAM_URL` names it.
    authority: Authority,
    /// The host (an IPv6 address without its brackets) and port connected to.
    address: (String, u16),
    /// One per serving thread (only that thread takes from it, so its lock is never contended).
    pools: Box<[Arc<Pool>]>,
}

impl Upstream {
    pub(crate) fn new(authority: Authority, clock: Clock) -> Upstream {
        let address = address_of(&authority);
        let pool = || Arc::new(Pool { idle: Mutex::default(), clock: clock.clone() });
        Upstream { authority, address, pools: (0..crate::threads::count()).map(|_| pool()).collect() }
    }

    /// `host[:port]` of the product.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Send `request` (its target in origin form, with a `Host`) and give the product's answer,
    /// whose body hands the connection back to the pool once read to the end. A 101's connection
    /// is the upgrade's: it is never handed back. A kept connection that turns out closed before
    /// the request went out (the product closed it while idle) is replaced, and the request sent
    /// on the next one; one the product closes unanswered after a while idle gets an idempotent
    /// request sent again on a new connection (see the module's doc); any other failure of a
    /// request that went out is the caller's.
    pub(crate) async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let pool = &self.pools[crate::threads::current().unwrap_or(0) % self.pools.len()];
        let mut replayed = false;
        loop {
            let kept = match replayed {
                false => self.idle(pool).await,
                true => None,
            };
            let (mut sender, idle_for) = match kept {
                Some((sender, idle_for)) => (sender, Some(idle_for)),
                None => (self.connect().await?, None),
            };
            let copy = idle_for.filter(|idle| *idle >= REPLAY_AFTER_IDLE).and_then(|_| replayable(&request));
            match sender.try_send_request(request).await {
                Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => return Ok(response.map(Body::new)),
                Ok(response) => {
                    let home = Some((sender, pool.clone()));
                    return Ok(response.map(|body| Body::new(HandsBack { body, home })));
                }
                Err(mut failed) => match (failed.take_message(), copy) {
                    (Some(unsent), _) if idle_for.is_some() => request = unsent,
                    (None, Some(copy)) if closed_unanswered(failed.error()) => {
                        tracing::debug!(error = %failed.error(), "a kept connection closed under a request: sent again on a new one");
                        (request, replayed) = (copy, true);
                    }
                    _ => return Err(GatewayError::Unreachable(failed.into_error().to_string())),
                },
            }
        }
    }

    /// A kept connection ready for a request, and how long it was idle, if the pool has one; those
    /// closed or idle too long are dropped on the way.
    async fn idle(&self, pool: &Pool) -> Option<(SendRequest<Body>, Duration)> {
        loop {
            let Idle { mut sender, since } = pool.idle.lock().expect("never poisoned").pop_back()?;
            let idle_for = pool.clock.now() - since;
            if sender.is_closed() || idle_for > IDLE_TIMEOUT {
                continue;
            }
            // Ready at once, unless its connection is still reading the end of the last answer.
            if sender.ready().await.is_ok() {
                return Some((sender, idle_for));
            }
        }
    }

    /// A new connection to the product, driven by a task on the calling thread.
    async fn connect(&self) -> Result<SendRequest<Body>, GatewayError> {
        let unreachable = |e: &dyn std::fmt::Display| GatewayError::Unreachable(format!("{}: {e}", self.authority));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((self.address.0.as_str(), self.address.1)))
            .await
            .map_err(|_| unreachable(&format_args!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unreachable(&e))?;
        stream.set_nodelay(true).map_err(|e| unreachable(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "a connection to the product ended");
            }
        });
        Ok(sender)
    }
}

/// A copy of `request` to send again, if it may be sent twice: `GET`, `HEAD`, `OPTIONS` or `TRACE`
/// (RFC 9110 §9.2.2), without a body, not an upgrade.
fn replayable(request: &Request<Body>) -> Option<Request<Body>> {
    let idempotent = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
    if !idempotent || !request.body().is_end_stream() || request.headers().contains_key(header::UPGRADE) {
        return None;
    }
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Whether the product closed the connection without a byte of an answer (not a malformed or
/// late answer, which sending again would not mend).
fn closed_unanswered(error: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let io = std::error::Error::source(error).and_then(|e| e.downcast_ref::<std::io::Error>());
    error.is_incomplete_message()
        || io.is_some_and(|e| matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof))
}

/// Where to connect for `authority`: its host, and its port or HTTP's 80.
fn address_of(authority: &Authority) -> (String, u16) {
    let host = authority.host();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (host.to_string(), authority.port_u16().unwrap_or(80))
}

/// The product's answer body; read to its end, it puts its connection back in the pool.
struct HandsBack {
    body: Incoming,
    home: Option<(SendRequest<Body>, Arc<Pool>)>,
}

impl HandsBack {
    fn hand_back(&mut self) {
        if let Some((sender, pool)) = self.home.take() {
            let mut idle = pool.idle.lock().expect("never poisoned");
            if idle.len() < MAX_IDLE_PER_THREAD {
                idle.push_back(Idle { sender, since: pool.clock.now() });
            }
        }
    }
}

impl hyper::body::Body for HandsBack {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.hand_back(),
            // A connection that failed mid-answer is not kept.
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for HandsBack {
    /// An empty answer may be sent without its body being polled: it ended all the same.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.hand_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_host_and_its_port_or_80() {
        let address = |authority: &str| address_of(&authority.parse().unwrap());
        assert_eq!(address("product:8080"), ("product".to_string(), 8080));
        assert_eq!(address("product"), ("product".to_string(), 80), "UPSTREAM_URL may leave out the port");
        assert_eq!(address("127.0.0.1:9"), ("127.0.0.1".to_string(), 9));
        assert_eq!(address("[::1]:8080"), ("::1".to_string(), 8080));
        assert_eq!(address("[::1]"), ("::1".to_string(), 80));
    }
}
