//! Black-box tests: the real emulator on a free loopback port, spoken to over HTTP.

mod bad_input;
mod helpers;
mod idempotency;
mod lifecycle;
mod lists_and_expansion;
mod pages;
mod rate_limit;
mod webhooks;
