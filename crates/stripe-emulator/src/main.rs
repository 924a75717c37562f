//! `stripe-emulator`: serve the emulator on loopback.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stripe_emulator::config::{RetryPolicy, StartupWebhook};
use stripe_emulator::{Emulator, EmulatorConfig};

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
    let secret =
        cli.webhook.as_ref().map(|_| cli.webhook_secret.clone().unwrap_or_else(stripe_emulator::resources::webhook_endpoints::new_secret));
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
}
