//! Tollgate: signup and Stripe subscription billing for a SaaS product, with the subscription
//! state mirrored into a KV store by one sync function (README.md, ARCHITECTURE.md).
//!
//! Module tour:
//! - [`config`]: settings from the environment and `.env`; secrets that never print.
//! - [`startup`]: `Application::build` — listener, KV, Stripe or the embedded emulator, router.
//! - [`state`]: the shared state every handler sees.
//! - [`telemetry`]: logging set-up and the per-request span.
//! - [`domain`]: ids, emails, statuses, the cache entry, the access policy (no I/O).
//! - [`kv`]: the `Kv` trait, its backends (redb, Redis, memory) and every key name.
//! - [`stripe`]: the Stripe client, wire types, webhook signatures, the pinned API version.
//! - [`billing`]: `sync_stripe_data_to_kv`, its coordination across instances, the drain, reconcile, checkout, portal, plans, tracked events.
//! - [`auth`]: the provider interface, the built-in accounts and sessions, Clerk.
//! - [`access`]: entitlement from the cache.
//! - [`http`]: the router, pages, JSON API, webhooks, gateway and forward-auth, health checks,
//!   the extractors (`CurrentUser`, `Entitled`), CSRF protection, one failure type.
//! - [`mail`]: account emails by SMTP, or the local outbox.
//! - [`gateway`]: the product behind Tollgate: canonical paths and the gate's prefixes, the streaming
//!   proxy, what is stripped and vouched for in headers, the identity and its assertion, tunnels.
//! - [`cli`]: the command line.
//!
//! Library mode: build an [`Application`], merge [`Application::routes`] into your own axum
//! router, gate your handlers with [`Entitled`] (or [`CurrentUser`]), and [`Application::serve`]
//! the result; `crates/example-product` shows it.

#![recursion_limit = "256"]

pub mod access;
pub mod auth;
pub mod billing;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod mail;
pub mod startup;
pub mod state;
pub mod stripe;
pub mod telemetry;

pub use config::Settings;
pub use domain::{SubscriptionCache, User};
pub use http::extract::{CurrentUser, Entitled};
pub use startup::Application;
pub use state::AppState;

/// Give large allocations back to the system when freed. Each password hash takes 19 MiB; glibc
/// otherwise raises its mmap threshold after the first one and keeps every such block in the
/// freeing thread's arena, so a burst of sign-ins leaves hundreds of MiB resident. Call at start-up.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Hand freed heap pages back to the system now (glibc keeps them in its arenas otherwise): the
/// accept loop calls it after connections close, so a burst of large request heads does not stay
/// resident.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Seconds since the Unix epoch (session expiry, webhook signature age).
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch (session creation, against "signed out everywhere").
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random token of letters and digits (session ids, CSRF tokens, request ids).
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}
