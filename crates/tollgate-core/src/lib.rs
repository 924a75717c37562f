//! Tollgate's core: what billing is, without HTTP. The domain types, the settings, the clock, the
//! KV store and its backends, account email, the Stripe client and `sync_stripe_data_to_kv` with
//! everything around it (the drain, reconcile, checkout, plans, the recipe's values), and the
//! Prometheus series. The `tollgate` crate (auth, access, the gateway, HTTP, start-up, the command
//! line) builds on it; nothing here may use it, and the compiler enforces that.
//!
//! Module tour:
//! - [`config`]: settings from the environment and `.env`, every variable in one table; secrets that never print.
//! - [`clock`]: the time, injectable (tests advance it instead of sleeping).
//! - [`random`]: random tokens.
//! - [`serving`]: whether work runs on one of `tollgate`'s serving threads (their per-thread resources).
//! - [`domain`]: ids, emails, statuses, the cache entry, the access policy (no I/O).
//! - [`kv`]: the `Kv` trait, its backends (redb, Redis, memory) and every key name.
//! - [`orgs`]: organizations, their members and roles, and invitations.
//! - [`api_keys`]: the keys programs call a product's API with.
//! - [`stripe`]: the Stripe client, wire types, webhook signatures, the pinned API version.
//! - [`billing`]: `sync_stripe_data_to_kv`, its coordination across instances, the drain, reconcile, checkout, portal, plans, tracked events.
//! - [`mail`]: account emails by SMTP, or the local outbox.
//! - [`metrics`]: every Prometheus series Tollgate exports at `/metrics`.

pub mod api_keys;
pub mod billing;
pub mod clock;
pub mod config;
pub mod domain;
pub mod kv;
pub mod mail;
pub mod metrics;
pub mod orgs;
pub mod random;
pub mod serving;
pub mod stripe;

pub use clock::{unix_now, unix_now_ms, Clock};
pub use random::random_token;
