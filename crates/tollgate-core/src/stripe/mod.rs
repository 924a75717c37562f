//! Talking to Stripe: a thin client, the wire types Tollgate reads, and webhook signatures.

pub mod client;
pub mod webhook;
pub mod wire;

pub use client::{StripeClient, StripeError, Turn};

/// The API version every request pins, so object shapes never drift with the account's default.
/// Subscription periods are read from items (basil and later), with a fallback for older payloads.
pub const API_VERSION: &str = "2026-10-28.endive";

#[cfg(test)]
mod tests {
    #[test]
    fn the_emulator_speaks_the_pinned_version() {
        assert_eq!(super::API_VERSION, stripe_emulator::API_VERSION, "pin one API version in both crates");
    }
}
