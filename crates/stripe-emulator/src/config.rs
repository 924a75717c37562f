//! Settings of one emulator instance, shared by the CLI and by apps that embed it, and the shape
//! of the seed file (`--seed`).

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
    pub seed_products: Vec<SeedProduct>,
    /// Keep the state in this file (`--data`): loaded at start, saved after every change.
    pub data_file: Option<PathBuf>,
    /// What happens to a subscription whose renewal cannot be paid.
    pub dunning: Dunning,
    /// How long the hosted Checkout page holds its redirect while `checkout.session.completed` is delivered.
    pub checkout_redirect_wait: Duration,
    /// Added before each `/v1` answer, to look like a distant API (and to widen races in tests).
    pub latency: Duration,
    /// `/v1` requests per second allowed (a bucket that holds one second's worth); above it the
    /// answer is Stripe's 429 `rate_limit`. `None`: no limit.
    pub rate_limit: Option<u32>,
    /// Days before a renewal that `invoice.upcoming` is sent (Stripe's "upcoming renewal events"
    /// setting); 0 sends none.
    pub upcoming_days: i64,
    /// The least time a test clock stays `advancing` (Stripe takes seconds), so that code which
    /// forgets to wait for `ready` fails here as it would against Stripe; a busy advance takes
    /// longer, in proportion to the events it makes. Zero: instant (changeable at run time
    /// through `POST /_emulator/test_clocks/advance_time`).
    pub clock_advance: Duration,
    /// Append every `/v1` answer to this file as a JSON line (`--record-responses`), so a test
    /// suite can hold all of them against Stripe's schemas afterwards.
    pub record_responses: Option<PathBuf>,
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
            data_file: None,
            dunning: Dunning::default(),
            upcoming_days: 7,
            clock_advance: Duration::from_millis(200),
            record_responses: None,
        }
    }
}

impl EmulatorConfig {
    /// A config for tests: any free loopback port, retries compressed to milliseconds.
    pub fn for_tests() -> Self {
        EmulatorConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            retry: RetryPolicy { max_attempts: 4, retry_base: Duration::from_millis(50), timeout: Duration::from_secs(2) },
            clock_advance: Duration::ZERO,
            ..Default::default()
        }
    }
}

/// Stripe's "manage failed payments" settings: when a failed renewal is tried again, and what
/// becomes of the subscription when the last try fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Dunning {
    /// Days between a failed attempt and the retry after it, one entry per retry (Stripe's
    /// custom schedule has up to three or four; its Dashboard suggests 3, 5 and 7 days).
    pub retry_days: Vec<i64>,
    pub final_state: FinalState,
}

impl Default for Dunning {
    fn default() -> Self {
        Dunning { retry_days: vec![3, 5, 7], final_state: FinalState::Canceled }
    }
}

/// The subscription's status once every retry has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    Canceled,
    Unpaid,
    PastDue,
}

impl std::str::FromStr for FinalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "canceled" => Ok(FinalState::Canceled),
            "unpaid" => Ok(FinalState::Unpaid),
            "past_due" => Ok(FinalState::PastDue),
            other => Err(format!("{other}: expected canceled, unpaid or past_due")),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    pub products: Vec<SeedProduct>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProduct {
    pub id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub prices: Vec<SeedPrice>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPrice {
    pub id: Option<String>,
    pub unit_amount: i64,
    pub currency: String,
    /// `day`, `week`, `month` or `year`; absent for a one-time price.
    pub interval: Option<String>,
    pub interval_count: Option<i64>,
    pub nickname: Option<String>,
    pub lookup_key: Option<String>,
}
