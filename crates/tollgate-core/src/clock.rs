//! Time, read through one value that tests can move: the system's clock in production, a clock
//! tests advance instead of sleeping (as mini-redis pauses tokio's). Everything that reads the time
//! (sessions, links, throttles, leases, the drain's debounce and sweeps, the catalogue's freshness,
//! cached identities and keys, tunnels' limits, the accept loop's header and keep-alive deadlines,
//! how long the gateway's connections to the product were idle) takes it from the `Clock` it was
//! given.
//!
//! What keeps the real time: waits on real work (Stripe's pace and retries, a checkout or sync in
//! flight, the proxy's deadline, the accept loop's pacing), measured latencies, and times exchanged with
//! another party, who reads the real clock (webhook signatures, Clerk's tokens, the gateway's
//! assertion); Redis keeps expiry by its own clock, and the outbox's sent time is for display.
//!
//! A test clock is the real time plus an offset that only grows: `advance` moves both the wall
//! clock (`unix_now`) and the monotonic one (`now`), and wakes every `sleep_until` so each
//! sleeper sees the new time at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Seconds since the Unix epoch by the system's clock (code that can be given a [`Clock`] reads
/// that instead).
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch by the system's clock.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Shift>>);

#[derive(Default)]
struct Shift {
    by_ms: AtomicU64,
    advanced: Notify,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(shift) => write!(f, "Clock::test(+{} ms)", shift.by_ms.load(Ordering::Relaxed)),
        }
    }
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that runs with the system's and jumps forward when told ([`Clock::advance`]).
    pub fn test() -> Clock {
        Clock(Some(Arc::default()))
    }

    /// Move a test clock forward (the system's cannot be moved: nothing happens).
    pub fn advance(&self, by: Duration) {
        if let Some(shift) = &self.0 {
            shift.by_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
            shift.advanced.notify_waiters();
        }
    }

    fn shift(&self) -> Duration {
        self.0.as_ref().map_or(Duration::ZERO, |shift| Duration::from_millis(shift.by_ms.load(Ordering::SeqCst)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_now_ms(&self) -> i64 {
        unix_now_ms() + self.shift().as_millis() as i64
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now(&self) -> i64 {
        self.unix_now_ms() / 1000
    }

    /// The monotonic time, for deadlines and ages.
    pub fn now(&self) -> Instant {
        Instant::now() + self.shift()
    }

    /// Wait until [`Clock::now`] reaches `at`: by the system's clock, or at once when a test
    /// moves this clock past it. Cancel-safe (nothing is held across the wait).
    pub async fn sleep_until(&self, at: Instant) {
        loop {
            let Some(shift) = &self.0 else { return tokio::time::sleep_until(at).await };
            // Registered before the time is read, so an advance in between is not missed.
            let advanced = shift.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let now = self.now();
            if at <= now {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(at - now) => {}
                _ = advanced => {}
            }
        }
    }

    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now() + duration).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_test_clock_moves_when_told_and_wakes_its_sleepers() {
        let clock = Clock::test();
        let (wall, mono) = (clock.unix_now(), clock.now());
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("woken by the advance").unwrap();
        assert!(clock.unix_now() - wall >= 3600 && clock.now() - mono >= Duration::from_secs(3600));
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!((system.unix_now() - unix_now_ms() / 1000).abs() <= 1, "the system clock does not move");
    }
}
