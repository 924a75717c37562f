//! WebSocket tunnels: after a `101`, the gateway sees only bytes, so a tunnel carries the gate with
//! it. It holds its connection's slot (tunnels count against the accept loop's cap, and at most
//! [`Tunnels`]' own share of it are open, so ordinary requests always find room), closes after
//! `UPSTREAM_IDLE_TIMEOUT` without a byte either way and after `WEBSOCKET_MAX_LIFETIME` in any
//! case, and — on a gated path — asks every `ENTITLEMENT_RECHECK` whether its user is still
//! entitled, closing when not. A sign-out on this instance closes its user's tunnels at once.
//! A product may therefore rely on "an open socket is a paying user".

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The accept loop's slot of one connection. It moves into the connection's tunnel when the
/// connection is upgraded, so the tunnel keeps counting against the cap after hyper lets go.
#[derive(Clone, Default)]
pub(crate) struct ConnectionSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> ConnectionSlot {
        ConnectionSlot(Arc::new(Mutex::new(Some(permit))))
    }

    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TunnelLimits {
    pub(crate) idle: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) recheck: Duration,
}

struct Open {
    user: Option<String>,
    close: Arc<Notify>,
}

/// The open tunnels of this instance.
pub(crate) struct Tunnels {
    open: Mutex<HashMap<u64, Open>>,
    next: AtomicU64,
    room: Arc<Semaphore>,
    pub(crate) limits: TunnelLimits,
    /// Idle and lifetime limits and rechecks are measured on it.
    clock: tollgate_core::Clock,
}

/// A tunnel's share of [`Tunnels`]' room, taken before the upgrade is forwarded.
pub(crate) struct Reservation {
    _room: OwnedSemaphorePermit,
}

/// What a tunnel is made of: its room, its connection's slot, its user, and both upgraded ends.
pub(crate) struct Ends {
    /// When the product's switch was passed on to the client (`Tunnels::now`): the limits count
    /// from it, not from whenever the tunnel's task first runs.
    pub(crate) opened: Instant,
    pub(crate) reservation: Reservation,
    pub(crate) slot: Option<ConnectionSlot>,
    pub(crate) user: Option<String>,
    pub(crate) client: Upgraded,
    pub(crate) product: Upgraded,
}

/// Who a tunnel is for, and how to tell it to close.
pub(crate) struct Registration<'a> {
    tunnels: &'a Tunnels,
    id: u64,
    close: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.tunnels.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Tunnels {
    /// The tunnels' time now (their clock).
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// At most `max` tunnels at once.
    pub(crate) fn new(max: usize, limits: TunnelLimits, clock: tollgate_core::Clock) -> Tunnels {
        Tunnels { open: Default::default(), next: AtomicU64::new(0), room: Arc::new(Semaphore::new(max)), limits, clock }
    }

    /// Room for one more tunnel, before the upgrade is forwarded.
    pub(crate) fn reserve(&self) -> Option<Reservation> {
        self.room.clone().try_acquire_owned().ok().map(|room| Reservation { _room: room })
    }

    fn register(&self, user: Option<String>) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Open { user, close: close.clone() });
        Registration { tunnels: self, id, close }
    }

    /// Close every tunnel of `user` on this instance (they signed out, or every session ended).
    pub(crate) fn close_user(&self, user: &str) {
        for open in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if open.user.as_deref() == Some(user) {
                open.close.notify_one();
            }
        }
    }

    /// Splice `client` and `product` until either side closes, the tunnel idles or outlives its
    /// limits, it is told to close, or `still_allowed` (asked every `recheck`, when given) says no.
    /// The tunnel holds its connection's `slot` meanwhile.
    pub(crate) async fn run<F, Fut>(&self, ends: Ends, still_allowed: Option<F>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let Ends { opened: started, reservation: _reservation, slot, user, client, product } = ends;
        let _slot = slot.as_ref().and_then(ConnectionSlot::take);
        let registration = self.register(user);
        let clock = &self.clock;
        let last_active = Arc::new(AtomicU64::new(0));
        let mut client = Active { io: TokioIo::new(client), started, last_active: last_active.clone(), clock: clock.clone() };
        let mut product = Active { io: TokioIo::new(product), started, last_active: last_active.clone(), clock: clock.clone() };
        let mut copy = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut product).await;
        });
        let limits = self.limits;
        let end_of_life = started + limits.max_lifetime;
        let mut next_recheck = still_allowed.as_ref().map(|_| started + limits.recheck);
        let mut still_allowed = still_allowed;
        loop {
            let idle_until = started + Duration::from_millis(last_active.load(Ordering::Relaxed)) + limits.idle;
            let wake = [Some(idle_until), Some(end_of_life), next_recheck].into_iter().flatten().min().expect("deadlines");
            tokio::select! {
                _ = &mut copy => break,
                _ = registration.close.notified() => break,
                _ = clock.sleep_until(wake) => {
                    let now = clock.now();
                    let idle_until = started + Duration::from_millis(last_active.load(Ordering::Relaxed)) + limits.idle;
                    if now >= end_of_life || now >= idle_until {
                        break;
                    }
                    if let (Some(due), Some(check)) = (next_recheck, still_allowed.as_mut()) {
                        if now >= due {
                            if !check().await {
                                break;
                            }
                            next_recheck = Some(clock.now() + limits.recheck);
                        }
                    }
                }
            }
        }
        // Dropping both ends closes both connections.
        copy.abort();
    }
}

/// One end of a tunnel, noting when bytes last arrived from it.
struct Active {
    io: TokioIo<Upgraded>,
    started: Instant,
    last_active: Arc<AtomicU64>,
    clock: tollgate_core::Clock,
}

impl AsyncRead for Active {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_active.store((self.clock.now() - self.started).as_millis() as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Active {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
