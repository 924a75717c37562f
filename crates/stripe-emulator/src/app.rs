//! The running emulator: shared state, start-up, and the one path by which changes become events.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::EmulatorConfig;
use crate::error::ApiError;
use crate::store::{RequestInfo, Store};
use crate::webhooks::Dispatcher;

/// Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Emulator(Arc<Inner>);

pub struct Inner {
    store: RwLock<Store>,
    pub config: EmulatorConfig,
    /// Base URL of the hosted pages (`…/c/pay/cs_…`, `…/p/session/bps_…`).
    pub public_url: String,
    pub dispatcher: Dispatcher,
    /// `/v1` requests served, for `GET /_emulator/stats` (benchmarks count their Stripe calls with it).
    pub api_requests: std::sync::atomic::AtomicU64,
    /// Of those, answered 429 by the rate limit.
    pub rate_limited: std::sync::atomic::AtomicU64,
    /// The rate limit's bucket: tokens left and when it was last filled.
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl std::ops::Deref for Emulator {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// An emulator bound to its port; `run_until_stopped` serves it.
pub struct RunningEmulator {
    pub emulator: Emulator,
    pub addr: SocketAddr,
    listener: TcpListener,
}

impl Emulator {
    fn new(config: EmulatorConfig, public_url: String) -> Emulator {
        let dispatcher = Dispatcher::new(config.retry.clone());
        let full = f64::from(config.rate_limit.unwrap_or(0));
        Emulator(Arc::new(Inner {
            store: RwLock::new(Store::default()),
            config,
            public_url,
            dispatcher,
            api_requests: Default::default(),
            rate_limited: Default::default(),
            bucket: std::sync::Mutex::new((full, std::time::Instant::now())),
        }))
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
            self.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        admitted
    }

    /// Bind the listener, load the seed file and register start-up webhooks. Port 0 picks a free port.
    pub async fn build(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
        let listener = TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}")).trim_end_matches('/').to_string();
        let emulator = Emulator::new(config, public_url);
        emulator.load_startup_state()?;
        Ok(RunningEmulator { emulator, addr, listener })
    }

    /// Seed products and prices and register the configured endpoints; also what `/_emulator/reset` restores.
    pub fn load_startup_state(&self) -> anyhow::Result<()> {
        let mut store = self.lock();
        store.reset();
        if let Some(path) = &self.config.seed {
            crate::seed::load(&mut store, path)?;
        }
        crate::seed::apply(&mut store, &self.config.seed_products)?;
        for hook in &self.config.webhooks {
            crate::resources::webhook_endpoints::register(&mut store, &hook.url, &hook.enabled_events, hook.secret.clone());
        }
        store.take_events(); // seeding is set-up, not activity to announce
        Ok(())
    }

    /// Exclusive access, for changes.
    pub fn lock(&self) -> RwLockWriteGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.store.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shared access: reads run in parallel.
    pub fn lock_read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run one change under the lock, then hand the events it produced to the webhook dispatcher.
    /// Returns the change's result and a handle that finishes when those events' first attempts are done.
    pub fn mutate<T>(
        &self,
        request: &RequestInfo,
        change: impl FnOnce(&mut Store) -> Result<T, ApiError>,
    ) -> Result<(T, Option<JoinHandle<()>>), ApiError> {
        let (result, deliveries) = {
            let mut store = self.lock();
            store.request = request.clone();
            let result = change(&mut store);
            let events = store.take_events();
            let deliveries = if result.is_ok() { self.dispatcher.plan(&mut store, events) } else { Vec::new() };
            (result, deliveries)
        };
        let value = result?;
        Ok((value, self.dispatcher.send(self.clone(), deliveries)))
    }

    /// Like `mutate` for the API: the caller does not wait for deliveries.
    pub fn apply<T>(&self, request: &RequestInfo, change: impl FnOnce(&mut Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        self.mutate(request, change).map(|(value, _)| value)
    }

    /// Read-only access for retrieval and lists.
    pub fn read<T>(&self, read: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        read(&self.lock_read())
    }
}

impl RunningEmulator {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let router = crate::http::router(self.emulator.clone());
        axum::serve(self.listener, router).with_graceful_shutdown(shutdown_signal()).await
    }

    /// Serve in a background task (tests, and apps that embed the emulator).
    pub fn spawn(self) -> (Emulator, String, JoinHandle<std::io::Result<()>>) {
        let emulator = self.emulator.clone();
        let url = self.url();
        let router = crate::http::router(self.emulator.clone());
        let handle = tokio::spawn(async move { axum::serve(self.listener, router).await });
        (emulator, url, handle)
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
