//! Tollgate over Redis (run `scripts/bench`, which builds the release binaries first). Starts
//! `redis-server` (AOF, fsync every second), the release `stripe-emulator` and `tollgate` as
//! their own processes and measures:
//! - a renewal storm: 3 events for each of ~1,000 customers against an emulator with 150 ms
//!   latency and a 100 requests/s limit, with `STRIPE_RATE_LIMIT=95` — time until every event is
//!   accepted, time until every customer is settled, Stripe calls, 429s, customers lost, and the
//!   drain's backlog gauge on `/metrics` rising and falling back to zero;
//! - webhook intake: `wrk`, 32 connections, whole signed events (copies of the emulator's own
//!   `checkout.session.completed`, `customer.subscription.updated` and `invoice.paid`, 2–6 KB)
//!   spread over 5,000 customers — requests/s, latency percentiles and Tollgate's CPU per event,
//!   then the same while `/metrics` is scraped ten times a second (what serving the metrics costs).
//!
//! Both run twice: on one node, then on a Redis Cluster (three masters with a replica each, on
//! this same machine, `KV_URL=redis+cluster://…`).
//!
//! Usage: `bench_redis [seconds of the intake phase] [customers in the storm]`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tollgate_core::kv::Kv;

const RATE_LIMIT: f64 = 95.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let customers_wanted: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS * 2).build()?;
    for store in [Store::Node, Store::Cluster] {
        if customers_wanted > 0 {
            renewal_storm(&http, customers_wanted, store).await?;
        }
        intake(seconds, store).await?;
    }
    Ok(())
}

/// Which Redis a phase runs on.
#[derive(Clone, Copy)]
enum Store {
    Node,
    Cluster,
}

impl Store {
    /// The running servers (stopped when dropped) and the `KV_URL`.
    fn start(self) -> anyhow::Result<(Vec<Proc>, String)> {
        match self {
            Store::Node => redis_server().map(|(proc, url)| (vec![proc], url)),
            Store::Cluster => redis_cluster(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Store::Node => "Redis",
            Store::Cluster => "Redis Cluster (3 masters + 3 replicas)",
        }
    }
}

async fn renewal_storm(http: &reqwest::Client, customers_wanted: usize, store: Store) -> anyhow::Result<()> {
    let (_redis, kv_url) = store.start()?;
    let (_emulator, stripe) = emulator(&["--latency-ms", "150", "--rate-limit", "100"])?;
    println!("renewal storm: setting up {customers_wanted} subscribed customers on the emulator (it allows 100 requests/s)…");
    let customers = Arc::new(subscribed_customers(http, &stripe, customers_wanted).await?);
    let (_tollgate, url) = start(tollgate_command(&stripe, &kv_url, &[("STRIPE_RATE_LIMIT", "95")]))?;
    let kv = tollgate_core::kv::redis::RedisKv::connect(&kv_url, None).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the emulator's bucket refill after the set-up
    let (calls_before, limited_before) = emulator_stats(http, &stripe).await?;

    // A renewal sends each customer's events together; 32 connections send them all at once.
    let hook = format!("{url}/api/stripe-webhook");
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let (http, hook, customers) = (http.clone(), hook.clone(), customers.clone());
        senders.spawn(async move {
            let mut refused = 0;
            for (customer, _) in customers.iter().skip(worker).step_by(CONNECTIONS) {
                for kind in ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"] {
                    let (body, signature) = signed_event(&format!("evt_storm_{kind}_{customer}").replace('.', "_"), kind, customer);
                    let r = http.post(&hook).header("stripe-signature", signature).body(body).send().await;
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        refused += 1;
                    }
                }
            }
            refused
        });
    }
    // Meanwhile, the drain's backlog as /metrics shows it.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (http, metrics, watching) = (http.clone(), format!("{url}/metrics"), watching.clone());
        async move {
            let mut seen = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(backlog(&http, &metrics).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    });
    let refused: u32 = senders.join_all().await.into_iter().sum();
    let accepted_in = started.elapsed();
    loop {
        if kv.pending_customers(1).await?.is_empty() {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "not settled after two minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.await?;
    let after = backlog(http, &format!("{url}/metrics")).await;
    let (calls_after, limited_after) = emulator_stats(http, &stripe).await?;
    let mut lost = 0;
    for (customer, subscription) in customers.iter() {
        let entry = kv.get(&format!("stripe:customer:{customer}")).await?;
        let entry: serde_json::Value = entry.map(|e| serde_json::from_str(&e)).transpose()?.unwrap_or_default();
        if entry["subscriptionId"] != subscription.as_str() || entry["status"] != "active" {
            lost += 1;
        }
    }
    let n = customers.len() as f64;
    let calls = calls_after - calls_before;
    let budget = 1.05 * n / RATE_LIMIT + 1.0;
    println!(
        "renewal storm on {} ({} events for {} customers, 150 ms latency, emulator limit 100/s, STRIPE_RATE_LIMIT=95):",
        store.name(),
        3 * customers.len(),
        customers.len()
    );
    println!("  every event accepted in {:.2} s ({refused} refused; target ≤ 2 s)", accepted_in.as_secs_f64());
    println!("  every customer settled in {:.2} s (target ≤ 1.05 × {n} / 95 + 1 s = {budget:.2} s)", settled_in.as_secs_f64());
    println!(
        "  Stripe calls {calls} = {:.3} per customer (target ≤ 1.02), 429s {}, customers lost {lost}",
        calls as f64 / n,
        limited_after - limited_before
    );
    println!(
        "  /metrics drain backlog: peak {} customers over {} samples, {} once settled",
        seen.iter().flatten().max().copied().unwrap_or(0),
        seen.len(),
        after.map_or("unreadable".to_string(), |b| b.to_string())
    );
    Ok(())
}

/// `tollgate_drain_backlog_customers` from a /metrics page.
async fn backlog(http: &reqwest::Client, metrics: &str) -> Option<i64> {
    let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("tollgate_drain_backlog_customers ")).and_then(|v| v.trim().parse().ok())
}

async fn intake(seconds: u64, store: Store) -> anyhow::Result<()> {
    let (_redis, kv_url) = store.start()?;
    let (_emulator, stripe) = emulator(&[])?;
    let templates = realistic_templates(&reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?, &stripe).await?;
    let (tollgate, url) = start(tollgate_command(&stripe, &kv_url, &[("STRIPE_RATE_LIMIT", "95")]))?;
    let pid = tollgate.0.id();
    if std::env::var("TOLLGATE_BENCH_PAUSE").is_ok() {
        eprintln!("Tollgate's pid: {pid}; press Enter to load");
        std::io::stdin().read_line(&mut String::new())?;
    }
    let cpu_before = cpu_time(pid);
    let plain = wrk_intake(&url, seconds, "plain", &templates).await?;
    let cpu = (cpu_time(pid) - cpu_before).as_secs_f64();
    println!(
        "webhook intake, {} (wrk, {CONNECTIONS} connections, {INTAKE_CUSTOMERS} customers, {seconds}s, whole events of {} bytes on average): {}",
        store.name(),
        plain.body_bytes,
        plain.summary
    );
    println!(
        "  Tollgate's CPU: {:.0} µs per event ({:.0} % of a core; targets ≥ 25,000 requests/s, p99 ≤ 5 ms, ≤ 45 µs per event)",
        cpu * 1e6 / plain.requests.max(1) as f64,
        cpu * 100.0 / seconds as f64
    );
    // The same, while /metrics is scraped ten times a second (Prometheus scrapes every 15 s or so).
    let scraping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = tokio::spawn({
        let (scraping, metrics) = (scraping.clone(), format!("{url}/metrics"));
        async move {
            let http = reqwest::Client::new();
            let mut scrapes = 0u64;
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                if http.get(&metrics).send().await.is_ok_and(|r| r.status().is_success()) {
                    scrapes += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            scrapes
        }
    });
    let scraped = wrk_intake(&url, seconds, "scraped", &templates).await?;
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.await?;
    println!("webhook intake, {}, /metrics scraped 10 times a second ({scrapes} scrapes): {}", store.name(), scraped.summary);
    println!(
        "  serving /metrics cost {:.1} % of intake throughput (target ≤ 3 %)",
        (plain.per_second - scraped.per_second) / plain.per_second * 100.0
    );
    drop(tollgate);
    Ok(())
}

const INTAKE_CUSTOMERS: usize = 5000;

struct WrkRun {
    per_second: f64,
    requests: u64,
    /// The events' average size.
    body_bytes: usize,
    summary: String,
}

/// One wrk run of distinct signed events (ids prefixed with `run`), copies of `templates` in turn.
async fn wrk_intake(url: &str, seconds: u64, run: &str, templates: &[serde_json::Value]) -> anyhow::Result<WrkRun> {
    // Distinct events for the whole run (signatures stay valid for five minutes), one per line.
    let events = (seconds as usize * 15_000).max(10_000);
    let file = std::env::temp_dir().join(format!("tollgate-bench-events-{}-{run}.tsv", std::process::id()));
    let mut lines = String::with_capacity(events * 4000);
    let mut body_bytes = 0;
    for n in 0..events {
        let template = &templates[n % templates.len()];
        let (body, signature) = signed_copy(template, &format!("evt_{run}{n}"), &format!("cus_intake{}", n % INTAKE_CUSTOMERS));
        body_bytes += body.len();
        lines.push_str(&signature);
        lines.push('\t');
        lines.push_str(std::str::from_utf8(&body)?);
        lines.push('\n');
    }
    std::fs::write(&file, lines)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks.lua");
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .arg("--")
        .arg(&file)
        .output()
        .map_err(|e| anyhow::anyhow!("wrk is needed for this phase (scripts/bench installs it): {e}"))?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let find = |prefix: &str| {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string()
    };
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let non_2xx = text.lines().find(|l| l.contains("Non-2xx")).map(|l| l.trim().to_string()).unwrap_or_else(|| "0 non-2xx".into());
    let per_second: f64 = find("Requests/sec:").parse().unwrap_or(0.0);
    let repeats = if requests as usize > events {
        format!(" ({} repeats of already-recorded events)", requests as usize - events)
    } else {
        String::new()
    };
    Ok(WrkRun {
        per_second,
        requests,
        body_bytes: body_bytes / events,
        summary: format!("{per_second:.0} requests/s, p50 {}, p90 {}, p99 {}, {non_2xx}{repeats}", find("50%"), find("90%"), find("99%")),
    })
}
