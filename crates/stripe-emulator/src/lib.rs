#![recursion_limit = "256"]
//! A stateful, offline, Stripe-compatible API: the REST surface a subscription app uses, the pages
//! Stripe hosts (Checkout and the billing portal), and signed webhooks with retries.
//!
//! Module tour:
//! - [`config`]: the settings of one emulator (port, webhooks, retry schedule, seed file).
//! - [`app`]: [`Emulator`], the shared state and the `mutate` step that turns changes into events.
//! - [`http`]: the router, API-key and idempotency middleware, and the request extractor.
//! - [`form`]: Stripe's bracketed form encoding and typed parameter access.
//! - [`error`]: Stripe-shaped errors.
//! - [`store`]: every object as Stripe JSON, ordering, pagination.
//! - [`expand`]: `expand[]` over stored objects.
//! - [`resources`]: one module per API resource (products, prices, customers, …).
//! - [`billing`]: subscriptions with their invoices and payment intents, cancellation, renewals.
//! - [`cards`]: test cards and card payment methods; [`calendar`]: billing-period arithmetic.
//! - [`webhooks`]: signing and background delivery with exponential backoff.
//! - [`pages`]: the hosted Checkout and billing-portal HTML; [`format`]: escaping, money and dates for pages.
//! - [`seed`]: loading products and prices from a JSON file.

pub mod app;
pub mod billing;
pub mod calendar;
pub mod cards;
pub mod config;
pub mod error;
pub mod expand;
pub mod form;
pub mod format;
pub mod http;
pub mod pages;
pub mod resources;
pub mod seed;
pub mod store;
pub mod webhooks;

pub use app::{Emulator, RunningEmulator};
pub use config::EmulatorConfig;
