//! The drain: the background task that settles pending customers, so the webhook only has to
//! record them. It learns of customers from this instance's intake (woken at once) and from a
//! sweep of the KV's pending marks every [`SWEEP_EVERY`] (at start-up too), which picks up what
//! another instance left behind when it died or a sync failed. Nothing about it is only in memory:
//! losing this task, or the whole process, loses no update.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::sync::Settled;
use super::{Billing, BillingError};
use crate::domain::CustomerId;

/// Syncs in flight per instance: enough to keep Stripe's rate busy at its latency.
const CONCURRENCY: usize = 32;
/// A customer's events come in bursts (a renewal sends several): a customer is due this long
/// after its latest mark, so the rest of its burst is read by the same sync...
const DEBOUNCE: Duration = Duration::from_millis(100);
/// ...but never later than this after its first one, however long the burst.
const LONGEST_WAIT: Duration = Duration::from_secs(1);
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
const SWEEP_BATCH: usize = 1000;

/// Wakes the drain of this instance.
#[derive(Clone)]
pub struct Drain {
    wake: mpsc::UnboundedSender<Vec<CustomerId>>,
    /// Tells this drain's batches from another's on a thread (tests run several instances).
    id: u64,
}

/// Customers woken, in batches.
pub type Wakeups = mpsc::UnboundedReceiver<Vec<CustomerId>>;

/// How long a serving thread gathers wakes before handing them to the drain together.
const GATHER: Duration = Duration::from_millis(1);

static NEXT_DRAIN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Customers woken on this thread and not yet handed over, by drain.
    static GATHERED: RefCell<HashMap<u64, Vec<CustomerId>>> = RefCell::new(HashMap::new());
}

impl Drain {
    pub fn new() -> (Drain, Wakeups) {
        let (wake, wakeups) = mpsc::unbounded_channel();
        (Drain { wake, id: NEXT_DRAIN.fetch_add(1, Ordering::Relaxed) }, wakeups)
    }

    /// Tell the drain `customer` is pending. On a serving thread (a single-threaded runtime) the
    /// wakes of a millisecond go over together: the drain runs on another thread, and waking it
    /// for each webhook cost more than the webhook's own work (measured: a fifth of intake's CPU).
    /// A wake is a hint only (the mark is in the KV, and the sweep finds it), so a batch lost to
    /// a stop loses nothing.
    pub fn wake(&self, customer: CustomerId) {
        if !crate::serving::on_serving_thread() {
            // Only fails once the drain has stopped (shutting down): the sweep of a later start finds it.
            let _ = self.wake.send(vec![customer]);
            return;
        }
        let first = GATHERED.with(|gathered| {
            let mut gathered = gathered.borrow_mut();
            let batch = gathered.entry(self.id).or_default();
            batch.push(customer);
            batch.len() == 1
        });
        if first {
            let (wake, id) = (self.wake.clone(), self.id);
            tokio::spawn(async move {
                tokio::time::sleep(GATHER).await;
                let batch = GATHERED.with(|gathered| gathered.borrow_mut().remove(&id)).unwrap_or_default();
                let _ = wake.send(batch);
            });
        }
    }
}

/// A customer this instance knows to be pending.
struct Queued {
    /// When this instance first saw it pending (the backlog's age).
    since: Instant,
    /// When its sync may start; `None` while one runs (a mark made meanwhile is that run's to see).
    due: Option<Instant>,
}

/// The customers waiting for a sync, the one due first on top. When Stripe's rate limit is the
/// bottleneck, due times order the backlog by latest mark: customers whose events have stopped
/// go first, and one still receiving events waits, so that one call covers its whole burst.
#[derive(Default)]
struct Backlog {
    queued: HashMap<CustomerId, Queued>,
    /// Due times; an entry that no longer matches its customer's `due` is stale and skipped.
    heap: BinaryHeap<Reverse<(Instant, CustomerId)>>,
}

impl Backlog {
    /// A mark for `customer` at `now`: due a debounce later (a queued one moves back, within
    /// `LONGEST_WAIT` of its first mark).
    fn marked(&mut self, customer: CustomerId, now: Instant) {
        let queued = self.queued.entry(customer.clone()).or_insert(Queued { since: now, due: Some(now) });
        let Some(due) = queued.due else { return };
        let later = (now + DEBOUNCE).min(queued.since + LONGEST_WAIT).max(due);
        if later != due {
            queued.due = Some(later);
            self.heap.push(Reverse((later, customer)));
        }
    }

    /// Try again at `at` (a failed sync: it stays queued).
    fn retry(&mut self, customer: CustomerId, at: Instant) {
        if let Some(queued) = self.queued.get_mut(&customer) {
            queued.due = Some(at);
            self.heap.push(Reverse((at, customer)));
        }
    }

    fn settled(&mut self, customer: &CustomerId) {
        self.queued.remove(customer);
    }

    /// When the next sync may start, dropping stale entries on the way.
    fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, customer))) = self.heap.peek() {
            if self.queued.get(customer).is_some_and(|q| q.due == Some(*at)) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The customer due first, now running.
    fn start_next(&mut self) -> Option<CustomerId> {
        self.next_due()?;
        let Reverse((_, customer)) = self.heap.pop()?;
        if let Some(queued) = self.queued.get_mut(&customer) {
            queued.due = None;
        }
        Some(customer)
    }
}

/// Run until the process stops.
pub async fn run(billing: Arc<Billing>, mut wakeups: Wakeups) {
    let mut backlog = Backlog::default();
    let mut failures: HashMap<CustomerId, u32> = HashMap::new();
    let (done, mut finished) = mpsc::unbounded_channel::<(CustomerId, Result<Settled, BillingError>)>();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let clock = billing.clock.clone();
    // The first sweep at once (start-up), then every SWEEP_EVERY after the last one ended.
    let mut next_sweep = clock.now();
    loop {
        // `now` is when this round starts waiting: only for the two branches about `next`.
        let now = clock.now();
        let next = backlog.next_due();
        tokio::select! {
            Some(customers) = wakeups.recv() => {
                let now = clock.now();
                for customer in customers {
                    backlog.marked(customer, now);
                }
            }
            Some((customer, outcome)) = finished.recv() => match outcome {
                Ok(_) => {
                    failures.remove(&customer);
                    backlog.settled(&customer);
                    report_backlog(&backlog, clock.now());
                }
                Err(e) => {
                    // Still pending in the KV; try again later (it stays queued here meanwhile).
                    let attempt = failures.entry(customer.clone()).or_default();
                    *attempt += 1;
                    tracing::warn!(customer = %customer, error = %e, attempt = *attempt, "sync failed; will retry");
                    backlog.retry(customer, clock.now() + retry_delay(*attempt));
                }
            },
            _ = clock.sleep_until(next_sweep) => {
                match billing.kv.pending_customers(SWEEP_BATCH).await {
                    Ok(pending) => {
                        let now = clock.now();
                        for customer in pending.iter().filter_map(|c| CustomerId::parse(c).ok()) {
                            // Known ones keep their place: the sweep is not a new mark.
                            if !backlog.queued.contains_key(&customer) {
                                backlog.marked(customer, now);
                            }
                        }
                        report_backlog(&backlog, now);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read pending syncs; will look again"),
                }
                next_sweep = clock.now() + SWEEP_EVERY;
            }
            permit = permits.clone().acquire_owned(), if next.is_some_and(|at| at <= now) => {
                let customer = backlog.start_next().expect("one is due");
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
fn report_backlog(backlog: &Backlog, now: Instant) {
    let metrics = &crate::metrics::METRICS;
    metrics.drain_backlog.set(backlog.queued.len() as i64);
    metrics.drain_oldest_pending.set(backlog.queued.values().map(|q| q.since).min().map_or(0, |since| (now - since).as_secs() as i64));
}

/// 1 s, doubling to at most a minute, with jitter so that instances do not retry in step.
fn retry_delay(attempt: u32) -> Duration {
    let full = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60));
    full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(n: u32) -> CustomerId {
        CustomerId::parse(&format!("cus_{n}")).unwrap()
    }

    #[test]
    fn the_oldest_latest_mark_goes_first() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut backlog = Backlog::default();
        backlog.marked(customer(1), ms(0));
        backlog.marked(customer(2), ms(10));
        backlog.marked(customer(3), ms(20));
        // Customer 1's burst goes on: it moves behind the others.
        backlog.marked(customer(1), ms(50));
        assert_eq!(backlog.next_due(), Some(ms(110)));
        assert_eq!(backlog.start_next(), Some(customer(2)));
        assert_eq!(backlog.start_next(), Some(customer(3)));
        assert_eq!(backlog.next_due(), Some(ms(150)), "the stale entry at 100 ms is skipped");
        // A mark while its sync runs changes nothing here: that run reads it.
        backlog.marked(customer(2), ms(200));
        assert_eq!(backlog.start_next(), Some(customer(1)));
        assert_eq!(backlog.start_next(), None);
        backlog.settled(&customer(2));
        assert_eq!(backlog.queued.len(), 2);
    }

    #[test]
    fn a_long_burst_waits_at_most_a_second() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        for n in 0..50 {
            backlog.marked(customer(1), t0 + Duration::from_millis(n * 50));
        }
        assert_eq!(backlog.next_due(), Some(t0 + LONGEST_WAIT));
        assert_eq!(backlog.start_next(), Some(customer(1)));
        assert_eq!(backlog.next_due(), None, "one entry left in the heap, none stale");
    }

    #[test]
    fn a_retry_keeps_its_delay_through_new_marks() {
        let t0 = Instant::now();
        let mut backlog = Backlog::default();
        backlog.marked(customer(1), t0);
        assert_eq!(backlog.start_next(), Some(customer(1)));
        backlog.retry(customer(1), t0 + Duration::from_secs(4));
        backlog.marked(customer(1), t0 + Duration::from_secs(1));
        assert_eq!(backlog.next_due(), Some(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn a_serving_threads_wakes_go_to_the_drain_together() {
        let (drain, mut wakeups) = Drain::new();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for n in 0..50 {
                drain.wake(customer(n));
            }
            let batch = wakeups.recv().await.unwrap();
            assert_eq!(batch, (0..50).map(customer).collect::<Vec<_>>(), "one hand-over for the millisecond's wakes, in order");
            drain.wake(customer(99));
            assert_eq!(wakeups.recv().await.unwrap(), [customer(99)], "a later wake starts the next batch");
        });
        // Elsewhere (the multi-threaded runtime, no runtime) each wake goes over at once.
        drain.wake(customer(7));
        assert_eq!(wakeups.try_recv().unwrap(), [customer(7)]);
    }
}
