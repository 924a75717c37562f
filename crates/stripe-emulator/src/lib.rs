#![recursion_limit = "256"]
//! A stateful, offline, Stripe-compatible API: the REST surface a subscription app uses, the pages
//! Stripe hosts (Checkout and the billing portal), signed webhooks with retries, test clocks and
//! dunning, with its state optionally kept in a data file.
//!
//! Layers, each importing only those before it (`tests/api/layers.rs` checks it):
//! - [`config`]: the settings of one emulator and the seed file's shape.
//! - [`model`]: ids, Stripe's errors, test cards and their outcomes, the billing calendar.
//! - [`store`]: every object as Stripe JSON behind one lock, and the data file it is saved to.
//! - [`engine`]: the billing lifecycle (creating, paying, renewing, retrying, test clocks), the
//!   shared [`Emulator`] whose `mutate` turns changes into saved state and webhook deliveries.
//! - [`api`]: form parsing, `expand[]`, lists and search, the layers around every call, one module
//!   per resource, the control endpoints.
//! - [`pages`]: the hosted Checkout and billing-portal HTML.
//! - [`server`]: the router and serving.
//!
//! An app that embeds the emulator (Tollgate does, for its offline mode) needs only the items
//! re-exported here: a config, [`Emulator::build`], and the running emulator's URL.

pub mod api;
pub mod config;
pub mod engine;
pub mod model;
pub mod pages;
pub mod server;
pub mod store;

pub use config::{Dunning, EmulatorConfig, FinalState, RetryPolicy, SeedPrice, SeedProduct, StartupWebhook};
pub use engine::webhooks::{new_secret as new_webhook_secret, signature_header};
pub use engine::Emulator;
pub use model::API_VERSION;
pub use server::RunningEmulator;
