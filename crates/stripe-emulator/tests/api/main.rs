//! Black-box tests: the real emulator on a free loopback port, spoken to over HTTP.

mod bad_input;
mod endpoints;
mod helpers;
mod idempotency;
mod layers;
mod lifecycle;
mod lists_and_expansion;
mod pages;
mod persistence;
mod rate_limit;
mod test_clocks;
mod webhooks;
