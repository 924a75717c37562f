//! The command line: `tollgate` (= `tollgate serve`), `tollgate config`, `tollgate sync`,
//! `tollgate import`, `tollgate usage`, `tollgate doctor`, `tollgate setup` and
//! `tollgate healthcheck`.

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use tollgate_core::billing::Billing;
use tollgate_core::config::{Settings, StripeSettings};
use tollgate_core::domain::CustomerId;
use tollgate_core::Clock;

/// Signup and Stripe subscription billing, offline by default.
#[derive(Parser, Debug)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Subcommand, Debug, PartialEq)]
pub(crate) enum Command {
    /// Serve the app (the default). Configuration comes from the environment and `.env`.
    Serve,
    /// Ask the server this configuration runs (PORT, on this machine) for /healthz: exit 0 when it
    /// answers 200 within 2 s, else 1. For a container's HEALTHCHECK, where there is no curl.
    Healthcheck,
    /// Print every variable with the value in effect (secrets redacted) and where it came from
    /// (env, .env, default), then any configuration error; exit 2 when there is one.
    Config {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read customers from Stripe into the KV now, within STRIPE_RATE_LIMIT.
    Sync(SyncTarget),
    /// Check everything going live needs against the real services; exit 1 when anything is wrong.
    Doctor {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Create or update the Stripe webhook endpoint for PUBLIC_URL with exactly the tracked events.
    Setup {
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A customer's metered usage (METERED_PATHS): what Stripe's meters counted since a time,
    /// and what waits here to be sent.
    Usage {
        /// The customer (cus_…).
        #[arg(long, value_parser = |s: &str| CustomerId::parse(s))]
        customer: CustomerId,
        /// Unix seconds to count from (default: 30 days ago).
        #[arg(long)]
        since: Option<i64>,
        /// First send everything counted (every customer's), this minute's too: before a
        /// renewal, a change of Stripe account, or shutting the last instance down.
        #[arg(long)]
        flush: bool,
    },
    /// Take over a recipe deployment's KV: check every stripe:user:* and stripe:customer:* against
    /// Stripe (within STRIPE_RATE_LIMIT), re-write stale ones, report orphans.
    Import {
        /// List what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The `tollgate` binary: tune the allocator (before any thread of the runtime allocates), start
/// the runtime, parse the command line and the configuration, run the command; the process's exit
/// code (2: a configuration error, 1: the command failed).
pub fn run_command_line() -> i32 {
    crate::memory::tune_allocator(crate::threads::count());
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => {
            let code = runtime.block_on(command_line());
            // The process ends now: no waiting on a blocking task still running (a DNS lookup).
            runtime.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            1
        }
    }
}

async fn command_line() -> i32 {
    let cli = Cli::parse();
    let environment = match tollgate_core::config::environment() {
        Ok(environment) => environment,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            return 2;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config { json } = command {
        // The table is printed even when the configuration is wrong: it shows what was read.
        return config(&environment, json);
    }
    let settings = match Settings::from_environment(&environment) {
        Ok(settings) => settings,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("tollgate: configuration error: {e}");
            }
            return 2;
        }
    };
    crate::telemetry::init_with(settings.log_format);
    match command {
        Command::Config { json } => config(&environment, json),
        Command::Serve => serve(settings).await,
        Command::Healthcheck => outcome("healthcheck", healthcheck(&settings).await),
        Command::Doctor { json } => i32::from(!doctor(&settings, json).await),
        Command::Sync(target) => outcome("sync", sync(settings, target).await),
        Command::Import { dry_run } => outcome("import", import(settings, dry_run).await),
        Command::Usage { customer, since, flush } => outcome("usage", usage(settings, customer, since, flush).await),
        Command::Setup { dry_run } => outcome("setup", setup(&settings, dry_run).await),
    }
}

/// A command's exit code, its error printed.
fn outcome(command: &str, result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tollgate: {command}: {e:#}");
            1
        }
    }
}

/// `tollgate` / `tollgate serve`: until SIGTERM or Ctrl-C.
async fn serve(settings: Settings) -> i32 {
    let app = match crate::startup::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("tollgate: cannot start: {e:#}");
            return 1;
        }
    };
    // A closed stdout (a supervisor that stopped reading) must not stop the server: no `println!`.
    let say = |line: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say(format!("Tollgate listening on http://{} — open {}", app.addr, app.public_url));
    if let Some(emulator) = &app.emulator_url {
        say(format!(
            "Stripe emulator at {emulator} (no STRIPE_SECRET_KEY set). Test card 4242 4242 4242 4242; 4000 0000 0000 9995 is declined."
        ));
    }
    if app.state.mailer.is_outbox() {
        say(format!("No SMTP_URL: account emails (sign-up and reset links) go to {}/dev/outbox", app.public_url));
    }
    match app.run_until_stopped().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tollgate: server error: {e}");
            1
        }
    }
}

/// The Stripe client of these settings, without the shared rate limit (one-off commands).
fn stripe_client(settings: &Settings) -> Option<tollgate_core::stripe::StripeClient> {
    match &settings.stripe {
        StripeSettings::Remote { secret_key, api_base, .. } => {
            Some(tollgate_core::stripe::StripeClient::new(api_base, secret_key.clone(), None))
        }
        StripeSettings::Emulator { .. } => None,
    }
}

/// `tollgate config`: the table of variables, then the errors, if any; the exit code.
pub(crate) fn config(environment: &tollgate_core::config::variables::Environment, json: bool) -> i32 {
    use tollgate_core::config::variables;
    let rows = environment.table();
    let errors = Settings::from_environment(environment).err().map(|e| e.0).unwrap_or_default();
    if json {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        println!("{}", serde_json::json!({ "variables": variables::render_json(&rows), "errors": errors }));
    } else {
        print!("{}", variables::render_text(&rows));
        for e in &errors {
            println!("error: {e}");
        }
    }
    if errors.is_empty() {
        0
    } else {
        2
    }
}

/// `tollgate doctor`: the report on stdout; whether nothing failed.
pub(crate) async fn doctor(settings: &Settings, json: bool) -> bool {
    let checks = crate::doctor::run(settings, stripe_client(settings).as_ref()).await;
    let verdict = crate::doctor::verdict(settings, &checks);
    let passed = verdict != crate::doctor::Verdict::Failed;
    if json {
        println!("{}", serde_json::json!({ "ok": passed, "verdict": verdict, "summary": verdict.line(), "checks": checks }));
    } else {
        print!("{}", crate::doctor::render(&checks));
        println!("{}", verdict.line());
    }
    passed
}

/// `tollgate setup`: prints what it did (and a new endpoint's secret, once).
pub(crate) async fn setup(settings: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let stripe =
        stripe_client(settings).ok_or_else(|| anyhow::anyhow!("STRIPE_SECRET_KEY: `tollgate setup` configures Stripe; set the key"))?;
    let would = if dry_run { "would be " } else { "" };
    match crate::doctor::setup(settings, &stripe, dry_run).await? {
        crate::doctor::SetupOutcome::Created { id, secret } => {
            println!(
                "webhook endpoint {would}created: {id}, listening to the {} tracked events",
                tollgate_core::billing::events::TRACKED_EVENTS.len()
            );
            if let Some(secret) = secret {
                println!("store its signing secret where `serve` reads it:\nSTRIPE_WEBHOOK_SECRET={secret}");
            }
        }
        crate::doctor::SetupOutcome::Updated { id, changes } => println!("webhook endpoint {id} {would}updated: {}", changes.join("; ")),
        crate::doctor::SetupOutcome::Unchanged { id } => println!("webhook endpoint {id} is already as Tollgate needs it: nothing changed"),
    }
    Ok(())
}

/// Billing for a command that reads Stripe (no server, no drain): the KV and the Stripe account
/// these settings name. Without a key, the error says why the command needs one (`why`).
async fn command_billing(settings: &Settings, why: &str) -> anyhow::Result<Arc<Billing>> {
    let StripeSettings::Remote { secret_key, api_base, .. } = &settings.stripe else {
        anyhow::bail!("STRIPE_SECRET_KEY: {why}");
    };
    let kv = tollgate_core::kv::open(&settings.kv, &Clock::system()).await?;
    let (billing, _no_drain) = crate::startup::billing(settings, kv, api_base, secret_key.clone(), String::new(), Clock::system());
    Ok(billing)
}

/// `tollgate import`: a progress bar, then every change (or, with `--dry-run`, every change it
/// would make) and the totals.
pub(crate) async fn import(settings: Settings, dry_run: bool) -> anyhow::Result<()> {
    let billing = command_billing(&settings, "`tollgate import` reads Stripe; set the key of the account the recipe used").await?;
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(indicatif::ProgressStyle::with_template("{spinner} {pos} keys checked, {per_sec} {msg}").expect("a valid template"));
    let report = billing.import(dry_run, |done| progress.inc(done as u64)).await?;
    progress.finish_and_clear();
    let (would, repair) = if dry_run { ("would be ", "would repair") } else { ("", "repaired") };
    for finding in &report.repaired {
        println!("{repair}  {}: {}", finding.key, finding.what);
    }
    for finding in &report.orphaned {
        println!("orphaned  {}: {}", finding.key, finding.what);
    }
    println!(
        "users: {}, customers: {}, {would}repaired: {}, orphaned: {}",
        report.users,
        report.customers,
        report.repaired.len(),
        report.orphaned.len()
    );
    Ok(())
}

/// `tollgate healthcheck`: the local server's `/healthz`, over loopback (a server bound to every
/// address answers there too).
async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    let host = match settings.bind {
        std::net::IpAddr::V6(v6) if !v6.is_unspecified() => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) if !v4.is_unspecified() => v4.to_string(),
        std::net::IpAddr::V6(_) => "[::1]".to_string(),
        std::net::IpAddr::V4(_) => "127.0.0.1".to_string(),
    };
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build()?;
    let answer = http.get(format!("http://{host}:{}/healthz", settings.port)).send().await?;
    anyhow::ensure!(answer.status() == reqwest::StatusCode::OK, "/healthz answered {}", answer.status());
    Ok(())
}

/// `tollgate usage`: one line per meter event of `METERED_PATHS`.
pub(crate) async fn usage(settings: Settings, customer: CustomerId, since: Option<i64>, flush: bool) -> anyhow::Result<()> {
    let billing = command_billing(
        &settings,
        "`tollgate usage` reads Stripe's meters; without a key there is only the emulator inside `tollgate serve`",
    )
    .await?;
    let mut events: Vec<String> = settings.metered_paths.iter().map(|m| m.event_name.clone()).collect();
    events.sort();
    events.dedup();
    anyhow::ensure!(!events.is_empty(), "METERED_PATHS: no metered path is set, so no usage is counted");
    if flush {
        println!("sent {} usage records", billing.flush_all_usage().await?);
    }
    let since = since.unwrap_or_else(|| tollgate_core::unix_now() - 30 * 86_400);
    for report in billing.usage_report(&customer, &events, since).await? {
        let reported = report.reported.map_or("no active meter in Stripe".to_string(), |r| format!("reported {r}"));
        println!("{}: {reported}, waiting {}", report.event_name, report.waiting);
    }
    Ok(())
}

#[derive(Args, Debug, PartialEq)]
#[group(required = true, multiple = false)]
pub(crate) struct SyncTarget {
    /// One customer (cus_…).
    #[arg(long, value_parser = |s: &str| CustomerId::parse(s))]
    pub(crate) customer: Option<CustomerId>,
    /// Every Stripe customer with a `userId` or an `orgId` in its metadata (the ones Tollgate made).
    #[arg(long)]
    pub(crate) all: bool,
}

/// Syncs in flight during `sync --all`; the rate limit paces them anyway.
const SYNC_CONCURRENCY: usize = 16;

/// `tollgate sync`: prints what it did; an error when any customer could not be synced.
pub(crate) async fn sync(settings: Settings, target: SyncTarget) -> anyhow::Result<()> {
    let billing =
        command_billing(&settings, "`tollgate sync` reads Stripe; without a key there is only the emulator inside `tollgate serve`")
            .await?;
    let customers = match target.customer {
        Some(customer) => {
            // A mistyped id would otherwise be cached as "no subscription".
            billing.stripe.get::<tollgate_core::stripe::wire::Customer>(&format!("/v1/customers/{customer}"), &[]).await?;
            vec![customer]
        }
        None => tollgate_core::billing::reconcile::customers_of_payers(&billing.stripe).await?,
    };
    let progress = indicatif::ProgressBar::new(customers.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} customers, {per_sec}, {eta} left {msg}").expect("a valid template"),
    );
    let failed = sync_each(&billing, customers, &progress).await;
    progress.finish();
    match failed.as_slice() {
        [] => {
            println!("synced {} customer(s)", progress.position());
            Ok(())
        }
        failed => anyhow::bail!("{} customer(s) could not be synced: {}", failed.len(), failed.join("; ")),
    }
}

async fn sync_each(billing: &Arc<Billing>, customers: Vec<CustomerId>, progress: &indicatif::ProgressBar) -> Vec<String> {
    let permits = Arc::new(tokio::sync::Semaphore::new(SYNC_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for customer in customers {
        let (billing, permits) = (billing.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            billing.sync(&customer).await.map(|_| ()).map_err(|e| format!("{customer}: {e}"))
        });
    }
    let mut failed = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        progress.inc(1);
        if let Ok(Err(e)) | Err(e) = outcome.map_err(|e| e.to_string()) {
            progress.println(format!("failed: {e}"));
            failed.push(e);
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
        assert_eq!(Cli::parse_from(["tollgate"]).command, None);
        assert_eq!(Cli::parse_from(["tollgate", "config"]).command, Some(Command::Config { json: false }));
        assert_eq!(Cli::parse_from(["tollgate", "sync", "--all"]).command, Some(Command::Sync(SyncTarget { customer: None, all: true })));
        assert!(Cli::try_parse_from(["tollgate", "sync"]).is_err(), "a target is required");
        assert!(Cli::try_parse_from(["tollgate", "sync", "--customer", "nope"]).is_err(), "customer ids are checked");
    }
}
