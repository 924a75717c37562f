//! The billing engine: the emulator's shared state and every change Stripe makes to it (creating,
//! paying, renewing, retrying, canceling), usable and tested without HTTP. Each change runs under
//! the store's lock through [`Emulator::mutate`], which then saves it and hands its events to the
//! webhook dispatcher.

pub mod billing;
pub mod catalog;
pub mod checkout;
pub mod customers;
pub mod discounts;
pub mod entitlements;
pub mod meters;
pub mod payment_methods;
pub mod portal;
pub mod schedules;
pub mod test_clocks;
pub mod webhooks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use tokio::task::JoinHandle;

use crate::config::EmulatorConfig;
use crate::model::{ApiError, RequestInfo};
use crate::store::{SharedStore, Store};
use webhooks::Dispatcher;

/// Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Emulator(Arc<Inner>);

pub struct Inner {
    store: SharedStore,
    pub config: EmulatorConfig,
    /// Base URL of the hosted pages (`…/c/pay/cs_…`, `…/p/session/bps_…`).
    pub public_url: String,
    pub dispatcher: Dispatcher,
    /// `/v1` requests served, for `GET /_emulator/stats` (benchmarks count their Stripe calls with it).
    pub api_requests: AtomicU64,
    /// Of those, answered 429 by the rate limit.
    pub rate_limited: AtomicU64,
    /// The rate limit's bucket: tokens left and when it was last filled.
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
    /// The least time a test clock advance takes, in milliseconds (`config.clock_advance`, then
    /// `POST /_emulator/test_clocks/advance_time`).
    pub clock_advance_ms: AtomicU64,
    /// Where `/v1` answers are recorded (`config.record_responses`).
    pub recorder: Option<std::sync::Mutex<std::fs::File>>,
}

impl std::ops::Deref for Emulator {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Emulator {
    /// The state of `config.data_file` (or an empty one), with the seed loaded and the start-up
    /// webhook endpoints registered.
    pub fn new(config: EmulatorConfig, public_url: String) -> anyhow::Result<Emulator> {
        let store = match &config.data_file {
            Some(path) => Store::open(path).with_context(|| format!("cannot use the data file {}", path.display()))?,
            None => Store::default(),
        };
        let store = SharedStore::new(store);
        let dispatcher = Dispatcher::new(config.retry.clone(), store.clone());
        let full = f64::from(config.rate_limit.unwrap_or(0));
        let clock_advance_ms = AtomicU64::new(config.clock_advance.as_millis() as u64);
        let recorder = match &config.record_responses {
            Some(path) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {} to record responses", path.display()))?,
            )),
            None => None,
        };
        let emulator = Emulator(Arc::new(Inner {
            store,
            config,
            public_url,
            dispatcher,
            api_requests: Default::default(),
            rate_limited: Default::default(),
            bucket: std::sync::Mutex::new((full, std::time::Instant::now())),
            clock_advance_ms,
            recorder,
        }));
        emulator.load_startup_state(false)?;
        // A resumption whose payment the stop cut off is attempted now, so it does not stay paused.
        let unattempted = billing::unattempted_resumptions(&emulator.lock_read());
        for (subscription, invoice) in unattempted {
            emulator.apply(&RequestInfo::default(), |store| {
                billing::attempt_resumption(store, &subscription, &invoice);
                Ok(())
            })?;
        }
        // An advance cut short by a stop is finished now, so no clock stays `advancing`.
        let interrupted = test_clocks::advancing(&emulator.lock_read());
        for id in interrupted {
            emulator.apply(&RequestInfo::default(), |store| {
                test_clocks::run_advance(store, &id, &billing::Renewals::of(&emulator.config));
                test_clocks::mark_ready(store, &id);
                Ok(())
            })?;
        }
        Ok(emulator)
    }

    /// Take one request from the rate limit's bucket; false when it is empty (answer 429).
    pub fn admit_request(&self) -> bool {
        let Some(per_second) = self.config.rate_limit else { return true };
        let per_second = f64::from(per_second.max(1));
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let (tokens, filled) = *bucket;
        let tokens = (tokens + now.duration_since(filled).as_secs_f64() * per_second).min(per_second);
        let admitted = tokens >= 1.0;
        *bucket = (if admitted { tokens - 1.0 } else { tokens }, now);
        if !admitted {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// Seed products and prices and register the configured endpoints (replacing the ones an
    /// earlier start registered); with `reset`, everything else is forgotten first
    /// (`/_emulator/reset`).
    pub fn load_startup_state(&self, reset: bool) -> anyhow::Result<()> {
        let mut products = match &self.config.seed {
            Some(path) => catalog::read_seed_file(path)?,
            None => Vec::new(),
        };
        products.extend(self.config.seed_products.iter().cloned());
        let mut store = self.lock();
        if reset {
            store.reset();
        }
        catalog::seed(&mut store, &products)?;
        for old in store.startup_endpoints().to_vec() {
            if store.get_kind("webhook_endpoint", &old, None).is_ok() {
                store.delete(&old);
                store.set_webhook_secret(&old, None);
            }
        }
        let registered = self
            .config
            .webhooks
            .iter()
            .map(|hook| {
                let endpoint = webhooks::register_endpoint(&mut store, &hook.url, &hook.enabled_events, hook.secret.clone());
                crate::model::str_field(&endpoint, "id")
            })
            .collect();
        store.set_startup_endpoints(registered);
        store.take_events(); // seeding is set-up, not activity to announce
        store.save().context("cannot save the data file")?;
        Ok(())
    }

    /// Exclusive access, for changes that are not Stripe activity (idempotency records, deliveries).
    pub fn lock(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write()
    }

    /// Shared access: reads run in parallel.
    pub fn lock_read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read()
    }

    /// Run one change under the lock, save it, then hand the events it produced to the webhook
    /// dispatcher. Returns the change's result and a handle that finishes when those events'
    /// first attempts are done.
    pub fn mutate<T>(
        &self,
        request: &RequestInfo,
        change: impl FnOnce(&mut Store) -> Result<T, ApiError>,
    ) -> Result<(T, Option<JoinHandle<()>>), ApiError> {
        let (result, deliveries) = {
            let mut store = self.lock();
            store.request = request.clone();
            let result = change(&mut store);
            if result.is_ok() {
                entitlements::refresh_after_events(&mut store);
            }
            // A test clock's time applies to the action that chose it, never to later actions or reads.
            store.use_frozen_time(None);
            let events = store.take_events();
            let deliveries = if result.is_ok() { self.dispatcher.plan(&mut store, events) } else { Vec::new() };
            // Writes made before an error are kept in memory too, so they are saved either way.
            if let Err(err) = store.save() {
                tracing::error!(%err, "cannot save the data file");
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "The emulator could not save its data file."));
            }
            (result, deliveries)
        };
        let value = result?;
        Ok((value, self.dispatcher.send(deliveries)))
    }

    /// Like `mutate` for the API: the caller does not wait for deliveries.
    pub fn apply<T>(&self, request: &RequestInfo, change: impl FnOnce(&mut Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        self.mutate(request, change).map(|(value, _)| value)
    }

    /// `POST /v1/test_helpers/test_clocks/{id}/advance`: the clock answers `advancing`, and the
    /// steps that fall due run in the background, after which it is `ready` at its new time.
    /// Unless advances are instant, nothing changes for [`Inner::clock_advance_ms`], and `ready`
    /// comes 2 ms per event made after the work (at most 10 s): as with Stripe, a client sees
    /// the result only once it has waited for `ready`.
    pub fn advance_test_clock(&self, request: &RequestInfo, id: &str, frozen_time: i64) -> Result<serde_json::Value, ApiError> {
        let clock = self.apply(request, |store| test_clocks::start_advance(store, id, frozen_time))?;
        let emulator = self.clone();
        let id = id.to_string();
        let floor = Duration::from_millis(self.clock_advance_ms.load(Ordering::Relaxed));
        tokio::spawn(async move {
            tokio::time::sleep(floor).await;
            let renewals = billing::Renewals::of(&emulator.config);
            let worked = emulator.apply(&RequestInfo::default(), |store| {
                let events = test_clocks::run_advance(store, &id, &renewals);
                if floor.is_zero() {
                    test_clocks::mark_ready(store, &id);
                }
                Ok(events)
            });
            let finished = match worked {
                Ok(events) if !floor.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(2 * events as u64).min(Duration::from_secs(10))).await;
                    emulator.apply(&RequestInfo::default(), |store| {
                        test_clocks::mark_ready(store, &id);
                        Ok(())
                    })
                }
                other => other.map(|_| ()),
            };
            if let Err(err) = finished {
                tracing::error!(clock = %id, error = %err.message, "a test clock could not finish advancing");
            }
        });
        Ok(clock)
    }

    /// Delete the test clocks whose `deletes_after` has passed (Stripe deletes a clock, with its
    /// customers, 30 days after creating it). Checked before every API request.
    pub fn delete_expired_test_clocks(&self) {
        if test_clocks::expired(&self.lock_read()).is_empty() {
            return;
        }
        let deleted = self.apply(&RequestInfo::default(), |store| {
            for id in test_clocks::expired(store) {
                test_clocks::delete(store, &id)?;
            }
            Ok(())
        });
        if let Err(err) = deleted {
            tracing::error!(error = %err.message, "an expired test clock could not be deleted");
        }
    }

    /// `POST /_emulator/clock/advance`: move the control clock, running what fell due for the
    /// subscriptions that are under no test clock.
    pub fn advance_control_clock(&self, seconds: i64) -> Result<i64, ApiError> {
        self.apply(&RequestInfo::default(), |store| {
            store.advance_control_clock(seconds);
            let now = store.control_now();
            billing::catch_up(store, billing::Clock::Control, now, &billing::Renewals::of(&self.config));
            Ok(now)
        })
    }

    /// Read-only access for retrieval and lists.
    pub fn read<T>(&self, read: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        read(&self.lock_read())
    }
}
