//! The drain: the background task that settles pending customers, so the webhook only has to
//! record them. It learns of customers from this instance's intake (woken at once) and from a
//! sweep of the KV's pending marks every [`SWEEP_EVERY`] (at start-up too), which picks up what
//! another instance left behind when it died or a sync failed. Nothing about it is only in memory:
//! losing this task, or the whole process, loses no update.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::sync::Settled;
use super::{Billing, BillingError};
use crate::domain::CustomerId;

/// Syncs in flight per instance: enough to keep Stripe's rate busy at its latency.
const CONCURRENCY: usize = 32;
/// A customer's events come in bursts (a renewal sends several): wait for the rest of it.
const DEBOUNCE: Duration = Duration::from_millis(100);
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
const SWEEP_BATCH: usize = 1000;

/// Wakes the drain of this instance.
#[derive(Clone)]
pub struct Drain {
    wake: mpsc::UnboundedSender<CustomerId>,
}

pub type Wakeups = mpsc::UnboundedReceiver<CustomerId>;

impl Drain {
    pub fn new() -> (Drain, Wakeups) {
        let (wake, wakeups) = mpsc::unbounded_channel();
        (Drain { wake }, wakeups)
    }

    pub fn wake(&self, customer: CustomerId) {
        // Only fails once the drain has stopped (shutting down): the sweep of a later start finds it.
        let _ = self.wake.send(customer);
    }
}

/// Run until the process stops.
pub async fn run(billing: Arc<Billing>, mut wakeups: Wakeups) {
    // Each customer queued here, with when this instance first saw it pending.
    let mut queued: HashMap<CustomerId, Instant> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(Instant, CustomerId)>> = BinaryHeap::new();
    let mut failures: HashMap<CustomerId, u32> = HashMap::new();
    let (done, mut finished) = mpsc::unbounded_channel::<(CustomerId, Result<Settled, BillingError>)>();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let clock = billing.clock.clone();
    // The first sweep at once (start-up), then every SWEEP_EVERY after the last one ended.
    let mut next_sweep = clock.now();
    loop {
        // `now` is when this round starts waiting: only for the two branches about `next`.
        let now = clock.now();
        let next = due.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            Some(customer) = wakeups.recv() => {
                if let Entry::Vacant(slot) = queued.entry(customer.clone()) {
                    slot.insert(clock.now());
                    due.push(Reverse((clock.now() + DEBOUNCE, customer)));
                }
            }
            Some((customer, outcome)) = finished.recv() => match outcome {
                Ok(_) => {
                    failures.remove(&customer);
                    queued.remove(&customer);
                    report_backlog(&queued, clock.now());
                }
                Err(e) => {
                    // Still pending in the KV; try again later (it stays queued here meanwhile).
                    let attempt = failures.entry(customer.clone()).or_default();
                    *attempt += 1;
                    tracing::warn!(customer = %customer, error = %e, attempt = *attempt, "sync failed; will retry");
                    due.push(Reverse((clock.now() + retry_delay(*attempt), customer)));
                }
            },
            _ = clock.sleep_until(next_sweep) => {
                match billing.kv.pending_customers(SWEEP_BATCH).await {
                    Ok(pending) => {
                        let at = clock.now() + DEBOUNCE;
                        for customer in pending.iter().filter_map(|c| CustomerId::parse(c).ok()) {
                            if let Entry::Vacant(slot) = queued.entry(customer.clone()) {
                                slot.insert(clock.now());
                                due.push(Reverse((at, customer)));
                            }
                        }
                        report_backlog(&queued, clock.now());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read pending syncs; will look again"),
                }
                next_sweep = clock.now() + SWEEP_EVERY;
            }
            permit = permits.clone().acquire_owned(), if next.is_some_and(|at| at <= now) => {
                let Reverse((_, customer)) = due.pop().expect("peeked");
                let (billing, done) = (billing.clone(), done.clone());
                tokio::spawn(async move {
                    let outcome = billing.settle(&customer).await;
                    drop(permit);
                    let _ = done.send((customer, outcome));
                });
            }
            _ = clock.sleep_until(next.unwrap_or(now)), if next.is_some_and(|at| at > now) => {}
        }
    }
}

/// The backlog gauges: customers queued here, and how long the oldest has waited.
fn report_backlog(queued: &HashMap<CustomerId, Instant>, now: Instant) {
    let metrics = &crate::metrics::METRICS;
    metrics.drain_backlog.set(queued.len() as i64);
    metrics.drain_oldest_pending.set(queued.values().min().map_or(0, |since| (now - *since).as_secs() as i64));
}

/// 1 s, doubling to at most a minute, with jitter so that instances do not retry in step.
fn retry_delay(attempt: u32) -> Duration {
    let full = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60));
    full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}
