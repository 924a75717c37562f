//! `stripe-emulator`: serve the emulator on loopback.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stripe_emulator::{Dunning, Emulator, EmulatorConfig, FinalState, RetryPolicy, StartupWebhook};

/// A stateful, offline Stripe-compatible API with hosted Checkout, a billing portal and signed webhooks.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Port to listen on (0 picks a free one; the chosen URL is printed).
    #[arg(long, default_value_t = 12111, env = "STRIPE_EMULATOR_PORT")]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1", env = "STRIPE_EMULATOR_BIND")]
    bind: IpAddr,
    /// Base URL for hosted pages when the emulator is reached through another address.
    #[arg(long)]
    public_url: Option<String>,
    /// Register a webhook endpoint at start (all events).
    #[arg(long)]
    webhook: Option<String>,
    /// Signing secret for --webhook (a fresh whsec_… is generated and printed when absent).
    #[arg(long, requires = "webhook")]
    webhook_secret: Option<String>,
    /// JSON file of products and prices to load (see the README).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Delay before the first webhook retry, in milliseconds; later retries double it.
    #[arg(long, default_value_t = 60_000)]
    retry_base_ms: u64,
    /// Delivery attempts per event and endpoint, the first included.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// How long one delivery may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    webhook_timeout_ms: u64,
    /// Delay added to every API answer, in milliseconds (simulates a distant Stripe).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// API requests per second allowed; above it the answer is Stripe's 429 `rate_limit`
    /// (live mode allows 100, test mode 25). Unlimited when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// Keep the state in this file: loaded at start, saved after every change (memory only when absent).
    #[arg(long, env = "STRIPE_EMULATOR_DATA")]
    data: Option<PathBuf>,
    /// Days between a failed renewal payment and each retry (comma-separated, at most four; empty: no retries).
    #[arg(long, default_value = "3,5,7", value_parser = parse_retry_days)]
    retry_days: RetryDays,
    /// What a subscription becomes when its last retry fails: canceled, unpaid or past_due.
    #[arg(long, default_value = "canceled")]
    final_state: FinalState,
    /// Days before each renewal that `invoice.upcoming` is sent (0: never).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i64).range(0..=60))]
    upcoming_days: i64,
    /// The least time a test clock advance takes, in milliseconds, so clients must poll for
    /// `ready` as with Stripe (0: instant).
    #[arg(long, default_value_t = 200)]
    clock_advance_ms: u64,
    /// Append every API answer to this file, one JSON line each (`{method, path, status, body}`).
    #[arg(long, env = "STRIPE_EMULATOR_RECORD_RESPONSES")]
    record_responses: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct RetryDays(Vec<i64>);

fn parse_retry_days(text: &str) -> Result<RetryDays, String> {
    let days: Vec<i64> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<i64>().ok().filter(|n| (1..=60).contains(n)).ok_or_else(|| format!("{d}: expected a number of days from 1 to 60"))
        })
        .collect::<Result<_, _>>()?;
    if days.len() > 4 {
        return Err("at most four retries".into());
    }
    Ok(RetryDays(days))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    if let Some(secret) = &cli.webhook_secret {
        anyhow::ensure!(secret.starts_with("whsec_"), "--webhook-secret must start with whsec_");
    }
    let secret = cli.webhook.as_ref().map(|_| cli.webhook_secret.clone().unwrap_or_else(stripe_emulator::new_webhook_secret));
    let config = EmulatorConfig {
        bind: SocketAddr::new(cli.bind, cli.port),
        public_url: cli.public_url,
        webhooks: cli
            .webhook
            .iter()
            .map(|url| StartupWebhook { url: url.clone(), secret: secret.clone(), enabled_events: vec!["*".into()] })
            .collect(),
        retry: RetryPolicy {
            max_attempts: cli.max_attempts.max(1),
            retry_base: Duration::from_millis(cli.retry_base_ms),
            timeout: Duration::from_millis(cli.webhook_timeout_ms),
        },
        seed: cli.seed,
        latency: Duration::from_millis(cli.latency_ms),
        rate_limit: cli.rate_limit,
        data_file: cli.data,
        dunning: Dunning { retry_days: cli.retry_days.0, final_state: cli.final_state },
        upcoming_days: cli.upcoming_days,
        clock_advance: Duration::from_millis(cli.clock_advance_ms),
        record_responses: cli.record_responses,
        ..Default::default()
    };
    let running = Emulator::build(config).await?;
    // The first line is machine-readable, so scripts started with --port 0 can find the URL.
    println!("stripe-emulator listening on {}", running.url());
    if let (Some(url), Some(secret)) = (&cli.webhook, &secret) {
        println!("webhook endpoint {url} signing secret {secret}");
    }
    running.run_until_stopped().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn retry_days() {
        assert_eq!(super::parse_retry_days("3, 5,7").unwrap().0, [3, 5, 7]);
        assert!(super::parse_retry_days("").unwrap().0.is_empty());
        assert!(super::parse_retry_days("1,2,3,4,5").is_err());
        assert!(super::parse_retry_days("0").is_err());
        assert!(super::parse_retry_days("x").is_err());
    }
}
