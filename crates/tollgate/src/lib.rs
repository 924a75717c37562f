//! Tollgate: signup and Stripe subscription billing for a SaaS product, with the subscription
//! state mirrored into a KV store by one sync function (README.md, ARCHITECTURE.md).
//!
//! This crate is the server around `tollgate-core` (domain, settings, clock, KV, mail, Stripe,
//! billing), which knows nothing of HTTP. Module tour:
//! - `startup`: `Application::build` — listener, KV, Stripe or the embedded emulator, router.
//! - `state`: the shared state every handler sees.
//! - `telemetry`: logging set-up (the Prometheus series are the core's `metrics`).
//! - `auth`: the provider interface, the built-in accounts and sessions, Clerk.
//! - `access`: entitlement from the cache.
//! - `http`: the router, pages, JSON API, webhooks, gateway and forward-auth, health checks,
//!   the extractors (`CurrentUser`, `Entitled`), CSRF protection, one failure type.
//! - `gateway`: the product behind Tollgate: canonical paths and the gate's prefixes, the streaming
//!   proxy, what is stripped and vouched for in headers, the identity and its assertion, tunnels.
//! - `cli` and `doctor`: the command line.
//!
//! Library mode is this crate's whole public interface: build an [`Application`] from
//! [`Settings`], merge [`Application::routes`] into your own axum router, gate your handlers with
//! [`Entitled`] (or [`CurrentUser`]), and [`Application::serve`] the result;
//! `crates/example-product` shows it. [`run_command_line`] is the `tollgate` binary.

#![recursion_limit = "256"]

mod access;
mod auth;
mod cli;
mod doctor;
mod gateway;
mod http;
mod startup;
mod state;
mod telemetry;

// The core's modules, under the names the rest of this crate uses.
use tollgate_core::{billing, config, domain, kv, mail, random_token, stripe, unix_now, unix_now_ms};

pub use cli::run_command_line;
pub use config::Settings;
pub use domain::{SubscriptionCache, User};
pub use http::extract::{CurrentUser, Entitled};
pub use startup::Application;
pub use state::AppState;
pub use tollgate_core::Clock;

/// Log as the settings say (`LOG_FORMAT`, `RUST_LOG`): for a program that embeds Tollgate.
pub fn init_logging(settings: &Settings) {
    telemetry::init_with(settings.log_format);
}

/// How long a client has to send a request's head before its connection is closed.
pub use http::serve::HEADER_TIMEOUT;

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
