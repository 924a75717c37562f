//! Tollgate: signup and Stripe subscription billing for a SaaS product, with the subscription
//! state mirrored into a KV store by one sync function (README.md, ARCHITECTURE.md).
//!
//! This crate is the server around `tollgate-core` (domain, settings, clock, KV, mail, Stripe,
//! billing), which knows nothing of HTTP; its modules name the core's directly
//! (`tollgate_core::billing`). Module tour:
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
//! - `memory`: handing freed memory back to the system.
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
mod memory;
mod startup;
mod state;
mod telemetry;
mod threads;

pub use cli::run_command_line;
pub use http::error::Failure;
pub use http::extract::{ApiCaller, CurrentOrg, CurrentUser, Entitled, FeatureGuard, OrgEntitled, RequireFeature};
pub use startup::Application;
pub use state::AppState;
pub use tollgate_core::config::Settings;
pub use tollgate_core::domain::{ActiveOrg, OrgRole, SubscriptionCache, User};
pub use tollgate_core::Clock;

/// Log as the settings say (`LOG_FORMAT`, `RUST_LOG`): for a program that embeds Tollgate.
pub fn init_logging(settings: &Settings) {
    telemetry::init_with(settings.log_format);
}

/// How long a client has to send a request's head before its connection is closed.
pub use http::serve::HEADER_TIMEOUT;
