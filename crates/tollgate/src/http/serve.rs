//! The accept loop: HTTP/1.1 connections served by hyper with the limits a public server needs,
//! which `axum::serve` does not set — a deadline for each request's headers (a client that sends
//! them slowly, or never, is disconnected), a longer one for an idle kept-alive connection's next
//! request (`KEEPALIVE_TIMEOUT`), a bound on a request head's size and on the header
//! bytes held for all connections together (beyond it new connections wait in the kernel's
//! backlog), a cap on open connections (beyond it a new connection is closed at once; WebSocket
//! tunnels keep their connection's slot), freed buffers handed back to the system, and graceful
//! shutdown that lets requests in flight finish. Each accepted connection is served whole on one
//! of the serving threads (`threads`). Every request passes the edge (`http::edge`); then the
//! product's requests take their lane (`http::lane`) and the rest go to the router.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;
use tollgate_core::Clock;
use tower::ServiceExt;

use super::edge::{Arrival, Edge};
use super::lane::ProductLane;
use crate::gateway::tunnel::ConnectionSlot;
use crate::threads::ServingThreads;

/// How long a client has to send a request's headers, from their first byte (from connecting,
/// for a connection's first request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once, at most (fewer when the process may open fewer files).
const MAX_CONNECTIONS: usize = 4096;
/// Connections that may hold a whole request head of `MAX_HEADER_BYTES` at once.
const HEADS_IN_MEMORY: usize = 512;

/// How many connections to serve at once: [`MAX_CONNECTIONS`], or fewer when the file limit
/// (raised to its hard maximum first) cannot hold two descriptors each (the client's, and the
/// product's behind the gateway) with room to spare.
pub(crate) fn connection_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let files = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return MAX_CONNECTIONS;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    usize::try_from(files.saturating_sub(256) / 2).unwrap_or(MAX_CONNECTIONS).clamp(64, MAX_CONNECTIONS)
}

/// Serve `router` on `listener` until `shutdown`; the product's requests take `lane` instead, when
/// there is one (`http::lane`).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    lane: Option<ProductLane>,
    edge: Edge,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Closing `stop` asks every connection to finish; each holds a `done` sender until it has.
    let (stop, stopped) = watch::channel(());
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(connection_limit()));
    let heads = Arc::new(HeadBytes { held: AtomicUsize::new(0), limit: HEADS_IN_MEMORY * edge.max_header_bytes, freed: Notify::new() });
    let closed = Arc::new(AtomicUsize::new(0));
    let _trim = AbortOnDrop(tokio::spawn(give_back_memory(closed.clone())));
    let edge = Arc::new(edge);
    let threads = ServingThreads::start()?;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Too many header bytes held already: new connections wait (in the kernel) for room.
        while heads.held.load(Ordering::Relaxed) > heads.limit {
            tokio::select! {
                _ = heads.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut shutdown => return finish(listener, stop, done, &mut all_done).await,
            }
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // over capacity: the stream is dropped, which closes it
        };
        let _ = stream.set_nodelay(true);
        // Handed to a serving thread (`threads`), whose reactor takes the socket over.
        let Ok(stream) = stream.into_std() else { continue };
        let arrival = Arrival::new(peer, ConnectionSlot::new(permit));
        // Its deadlines count from now, in the order connections come.
        let connection = Arc::new(ConnectionPhase::new(edge.clock.clone(), edge.keepalive_timeout));
        let (router, lane, edge, heads) = (router.clone(), lane.clone(), edge.clone(), heads.clone());
        let (mut stopped, done, closed) = (stopped.clone(), done.clone(), closed.clone());
        threads.spawn(move || async move {
            let _done = done;
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
            let mut deadlines = Deadlines::new(connection.clone());
            let max_header_bytes = edge.max_header_bytes;
            let io = Counted { io: stream, heads: heads.clone(), connection: connection.clone(), most: max_header_bytes };
            let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                connection.head_arrived(&heads);
                let prepared = edge.prepare(&mut request, &arrival);
                // The product's requests take their lane; the rest, the router (each cloned only
                // when it is used: its count is shared by every serving thread).
                let answerer = match (&prepared, &lane) {
                    (Ok(()), Some(lane)) => {
                        lane.takes(request.uri().path()).map_or_else(|| Answerer::Router(router.clone()), Answerer::Product)
                    }
                    _ => Answerer::Router(router.clone()),
                };
                let connection = connection.clone();
                async move {
                    let response = match prepared {
                        Ok(()) => match answerer {
                            Answerer::Product(state) => Ok(super::lane::serve(state, request.map(Body::new)).await),
                            Answerer::Router(router) => router.oneshot(request.map(Body::new)).await,
                        },
                        Err(refusal) => Ok(Edge::refused(&request, refusal)),
                    };
                    response.map(|response| {
                        if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                            connection.became_tunnel();
                        }
                        response.map(|body| Answer { body, connection })
                    })
                }
            });
            {
                // No header timeout of hyper's: `Deadlines` keeps the connection's.
                let connection = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(max_header_bytes)
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                let mut connection = std::pin::pin!(connection);
                // The deadlines after the connection, so that they see what its poll just moved
                // on; once one passes, the connection is dropped, which closes it.
                tokio::select! {
                    biased;
                    _ = connection.as_mut() => {}
                    _ = &mut deadlines => {}
                    _ = stopped.changed() => {
                        connection.as_mut().graceful_shutdown();
                        tokio::select! {
                            biased;
                            _ = connection.as_mut() => {}
                            _ = &mut deadlines => {}
                        }
                    }
                }
            }
            // Counted once the connection and its buffers are freed (the block's end), so that
            // the hand-back that this count prompts finds them free.
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    finish(listener, stop, done, &mut all_done).await
}

/// Who answers a request: the product's lane, with the state it is answered with, or the router.
enum Answerer {
    Product(crate::state::AppState),
    Router(Router),
}

/// Stop accepting, ask every connection to finish, and wait until all have.
async fn finish(
    listener: TcpListener,
    stop: watch::Sender<()>,
    done: mpsc::Sender<()>,
    all_done: &mut mpsc::Receiver<()>,
) -> std::io::Result<()> {
    drop(listener);
    drop(stop);
    drop(done);
    let _ = all_done.recv().await; // every connection has finished
    Ok(())
}

/// After connections close, hand their freed buffers back to the system (glibc otherwise keeps
/// freed heap pages in its arenas, so a burst of large request heads would stay resident).
async fn give_back_memory(closed: Arc<AtomicUsize>) {
    let (mut seen, mut once_more) = (0, false);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = closed.load(Ordering::Relaxed);
        // And once more a second after the last close: what its task held is freed after it counts.
        if now != seen || once_more {
            once_more = now != seen;
            seen = now;
            let _ = tokio::task::spawn_blocking(crate::memory::release_freed_memory).await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Header bytes held by all connections that have not yet delivered their request's head.
struct HeadBytes {
    held: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl HeadBytes {
    /// `bytes` no longer held. The accept loop is woken only when it may be waiting (the total
    /// was over the limit): the wake-up takes a lock both serving threads share, and its
    /// 50 ms look covers any race.
    fn release(&self, bytes: usize) {
        if bytes > 0 && self.held.fetch_sub(bytes, Ordering::Relaxed) > self.limit {
            self.freed.notify_waiters();
        }
    }
}

/// Where a connection is between its requests (`ConnectionPhase::phase`).
mod phase {
    /// A request's head is due: whole within `HEADER_TIMEOUT` of its first byte (of connecting,
    /// for the connection's first request). Bytes read count towards `HeadBytes`.
    pub(super) const AWAITING_HEAD: u8 = 0;
    /// From a head's arrival until its answer is written whole: no deadline of the connection's.
    pub(super) const ANSWERING: u8 = 1;
    /// Answered: the next request may begin within `KEEPALIVE_TIMEOUT`.
    pub(super) const IDLE: u8 = 2;
    /// A WebSocket tunnel, with limits of its own (`gateway::tunnel`).
    pub(super) const TUNNEL: u8 = 3;
}

/// One connection between its requests: its share of [`HeadBytes`] (bytes read while a head is
/// awaited, at most a head's worth), its phase, and what it awaits by when. The service, the
/// answer's body and the socket (`Counted`) move it on; [`Deadlines`] closes the connection
/// when the deadline passes. All of them run in the connection's task.
struct ConnectionPhase {
    counted: AtomicUsize,
    phase: AtomicU8,
    /// When what the connection awaits must have come, in milliseconds from `opened` (0: nothing
    /// is awaited).
    deadline: AtomicU64,
    /// The app's clock (tests advance it), and the connection's start by it.
    clock: Clock,
    opened: Instant,
    keepalive: Duration,
}

impl ConnectionPhase {
    /// A connection just accepted: its first head is due within [`HEADER_TIMEOUT`].
    fn new(clock: Clock, keepalive: Duration) -> ConnectionPhase {
        let connection = ConnectionPhase {
            counted: AtomicUsize::new(0),
            phase: AtomicU8::new(phase::AWAITING_HEAD),
            deadline: AtomicU64::new(0),
            opened: clock.now(),
            clock,
            keepalive,
        };
        connection.due_in(HEADER_TIMEOUT);
        connection
    }

    fn due_in(&self, within: Duration) {
        let due = self.clock.now() - self.opened + within;
        self.deadline.store(u64::try_from(due.as_millis()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
    }

    /// A request's head is complete: what was counted for it is free again.
    fn head_arrived(&self, heads: &HeadBytes) {
        self.phase.store(phase::ANSWERING, Ordering::Relaxed);
        self.deadline.store(0, Ordering::Relaxed);
        let counted = self.counted.swap(0, Ordering::Relaxed);
        heads.release(counted);
    }

    /// The answer is a `101`: the connection becomes a tunnel, whose bytes are never a head.
    fn became_tunnel(&self) {
        self.phase.store(phase::TUNNEL, Ordering::Relaxed);
    }

    /// The answer is written whole (hyper dropped its body): the connection waits for the next.
    fn answered(&self) {
        if self.phase.compare_exchange(phase::ANSWERING, phase::IDLE, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.due_in(self.keepalive);
        }
    }

    /// Bytes came in: on an idle connection, they begin the next request's head.
    fn bytes_arrived(&self) -> u8 {
        match self.phase.load(Ordering::Relaxed) {
            phase::IDLE => {
                self.phase.store(phase::AWAITING_HEAD, Ordering::Relaxed);
                self.due_in(HEADER_TIMEOUT);
                phase::AWAITING_HEAD
            }
            other => other,
        }
    }
}

/// An answer's body as hyper writes it; hyper drops it once written whole (or the connection
/// ended), which makes the connection idle. Its deadline starts then, not at the answer's head,
/// so a long download or event stream to a client that sends nothing meanwhile is not cut.
struct Answer {
    body: Body,
    connection: Arc<ConnectionPhase>,
}

impl hyper::body::Body for Answer {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.connection.answered();
    }
}

/// The connection's deadlines, polled right after the connection in its task: ready (and the
/// connection is closed) once a head has not come whole within [`HEADER_TIMEOUT`] of its first
/// byte, or an idle connection's next request has not begun within `KEEPALIVE_TIMEOUT`.
///
/// Why not hyper's `header_read_timeout`: it runs from when hyper starts waiting for a head, idle
/// time included, so a kept-alive connection was closed after 5 s idle, under the 60 s that load
/// balancers (AWS ALB) and nginx's `keepalive` keep theirs: one that reused it just then failed
/// its request. It also makes a boxed timer for every request; here one timer serves the
/// connection, set again only when it fires (to at most [`HEADER_TIMEOUT`] ahead, so that the
/// deadline of a head that begins is never earlier than the timer) or when a deadline comes
/// earlier than it. The timer is the app's clock's (`Clock::sleep_until`), which tests advance.
struct Deadlines {
    connection: Arc<ConnectionPhase>,
    /// When the timer fires, and the timer.
    armed: Instant,
    timer: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Deadlines {
    fn new(connection: Arc<ConnectionPhase>) -> Deadlines {
        let armed = connection.opened + HEADER_TIMEOUT;
        Deadlines { timer: timer(&connection.clock, armed), armed, connection }
    }

    fn arm(&mut self, at: Instant) {
        (self.armed, self.timer) = (at, timer(&self.connection.clock, at));
    }
}

/// A timer that fires when `clock` reaches `at`.
fn timer(clock: &Clock, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let clock = clock.clone();
    Box::pin(async move { clock.sleep_until(at).await })
}

impl Future for Deadlines {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let due = self.connection.deadline.load(Ordering::Relaxed);
        if due == 0 {
            return Poll::Pending; // answering, or a tunnel: woken with the connection
        }
        let limit = self.connection.opened + Duration::from_millis(due);
        if self.armed > limit {
            self.arm(limit);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = self.connection.clock.now();
            if now >= limit {
                return Poll::Ready(());
            }
            self.arm(limit.min(now + HEADER_TIMEOUT));
        }
        Poll::Pending
    }
}

/// The connection's socket, counting the bytes read into request heads.
struct Counted {
    io: tokio::net::TcpStream,
    heads: Arc<HeadBytes>,
    connection: Arc<ConnectionPhase>,
    most: usize,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 && self.connection.bytes_arrived() == phase::AWAITING_HEAD {
            let counted = self.connection.counted.load(Ordering::Relaxed);
            let added = read.min(self.most.saturating_sub(counted));
            self.connection.counted.store(counted + added, Ordering::Relaxed);
            self.heads.held.fetch_add(added, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counted = self.connection.counted.swap(0, Ordering::Relaxed);
        self.heads.release(counted);
    }
}
