//! Settings of one emulator instance, shared by the CLI and by apps that embed it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A webhook endpoint registered at start-up (`--webhook URL --webhook-secret whsec_…`).
#[derive(Clone)]
pub struct StartupWebhook {
    pub url: String,
    /// The signing secret; a fresh one is generated when absent.
    pub secret: Option<String>,
    pub enabled_events: Vec<String>,
}

impl std::fmt::Debug for StartupWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupWebhook").field("url", &self.url).field("secret", &"[redacted]").finish()
    }
}

/// How webhook deliveries are retried: attempt `n` (from 2) waits `retry_base * 2^(n-2)` after the previous one.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub retry_base: Duration,
    /// How long one attempt may take before it counts as failed.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Stripe's test mode retries "three times over the course of a few hours"; the default is
        // shorter so a local run sees its retries, and tests compress it further.
        RetryPolicy { max_attempts: 4, retry_base: Duration::from_secs(60), timeout: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub bind: SocketAddr,
    /// The base URL of hosted pages; defaults to `http://{bound address}`.
    pub public_url: Option<String>,
    pub webhooks: Vec<StartupWebhook>,
    pub retry: RetryPolicy,
    pub seed: Option<PathBuf>,
    /// Products and prices to load besides (after) the seed file; what an embedding app offers.
    pub seed_products: Vec<crate::seed::SeedProduct>,
    /// How long the hosted Checkout page holds its redirect while `checkout.session.completed` is delivered.
    pub checkout_redirect_wait: Duration,
    /// Added before each `/v1` answer, to look like a distant API (and to widen races in tests).
    pub latency: Duration,
    /// `/v1` requests per second allowed (a bucket that holds one second's worth); above it the
    /// answer is Stripe's 429 `rate_limit`. `None`: no limit.
    pub rate_limit: Option<u32>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 12111),
            public_url: None,
            webhooks: Vec::new(),
            retry: RetryPolicy::default(),
            seed: None,
            seed_products: Vec::new(),
            checkout_redirect_wait: Duration::from_secs(10),
            latency: Duration::ZERO,
            rate_limit: None,
        }
    }
}

impl EmulatorConfig {
    /// A config for tests: any free loopback port, retries compressed to milliseconds.
    pub fn for_tests() -> Self {
        EmulatorConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            retry: RetryPolicy { max_attempts: 4, retry_base: Duration::from_millis(50), timeout: Duration::from_secs(2) },
            ..Default::default()
        }
    }
}
