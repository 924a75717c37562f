//! What the benchmarks share: starting the release binaries, signing events, percentiles.

#![allow(dead_code, unused_imports)] // each benchmark uses its own part

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const SECRET: &str = "whsec_bench";
pub const KEY: &str = "sk_test_bench";
pub const CONNECTIONS: usize = 32;

pub fn target_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release")
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a binary that prints `listening on http://…` and return it with that URL.
pub fn start(mut command: Command) -> anyhow::Result<(Proc, String)> {
    use std::io::BufRead;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(stdout);
    reader.read_line(&mut line)?;
    // Keep reading what it prints later, as a terminal would.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let url = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no URL in {line:?}"))?
        .to_string();
    Ok((Proc(child), url))
}

/// The release `stripe-emulator` with the test seed, plus `args`.
pub fn emulator(args: &[&str]) -> anyhow::Result<(Proc, String)> {
    let mut command = Command::new(target_dir().join("stripe-emulator"));
    command.args(["--port", "0", "--seed", test_support::SEED]).args(args);
    start(command)
}

/// The release `tollgate` against `stripe_url` with `kv_url`, plus `env`.
pub fn tollgate_command(stripe_url: &str, kv_url: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(target_dir().join("tollgate"));
    c.env_clear()
        .env("PORT", "0")
        .env("KV_URL", kv_url)
        .env("STRIPE_SECRET_KEY", KEY)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("STRIPE_API_BASE", stripe_url)
        .env("PLANS", "price_pro_monthly,price_pro_yearly")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    c
}

pub use test_support::percentile_ms as percentile;
pub use tollgate_core::unix_now as now;

/// The emulator's counters: `/v1` requests served, and how many were answered 429.
pub async fn emulator_stats(http: &reqwest::Client, stripe: &str) -> anyhow::Result<(u64, u64)> {
    let stats: Value = serde_json::from_str(&http.get(format!("{stripe}/_emulator/stats")).send().await?.text().await?)?;
    Ok((stats["api_requests"].as_u64().unwrap_or(0), stats["rate_limited"].as_u64().unwrap_or(0)))
}

/// A signed `event_type` event for `customer`, as Stripe sends it (body, `Stripe-Signature`).
pub fn signed_event(id: &str, event_type: &str, customer: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "type": event_type, "api_version": "2026-10-28.endive",
        "created": now(), "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"id": format!("in_{id}"), "object": "invoice", "customer": customer, "status": "paid"}},
    }))
    .unwrap();
    let signature = stripe_emulator::signature_header(SECRET, now(), &body);
    (body, signature)
}

/// A Stripe API call of the benchmark itself, repeated while a rate-limited emulator says 429.
pub async fn stripe_post(http: &reqwest::Client, stripe: &str, path: &str, body: String) -> anyhow::Result<Value> {
    loop {
        let r = http
            .post(format!("{stripe}{path}"))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await?;
        match r.status().as_u16() {
            429 => tokio::time::sleep(Duration::from_millis(20)).await,
            s if s < 300 => return Ok(serde_json::from_str(&r.text().await?)?),
            s => anyhow::bail!("{path}: {s} {}", r.text().await?),
        }
    }
}

/// `count` customers, each with an active monthly subscription: (customer, subscription) ids.
pub async fn subscribed_customers(http: &reqwest::Client, stripe: &str, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = count.div_ceil(16);
    for task in 0..16 {
        let (http, stripe) = (http.clone(), stripe.to_string());
        tasks.spawn(async move {
            let mut made = Vec::new();
            for i in task * per_task..((task + 1) * per_task).min(count) {
                let customer =
                    stripe_post(&http, &stripe, "/v1/customers", format!("email=bench{i}%40example.com&metadata[userId]=user_bench{i}"))
                        .await?;
                let customer = customer["id"].as_str().unwrap_or_default().to_string();
                let body = format!("customer={customer}&items[0][price]=price_pro_monthly&default_payment_method=pm_card_visa");
                let subscription = stripe_post(&http, &stripe, "/v1/subscriptions", body).await?;
                made.push((customer, subscription["id"].as_str().unwrap_or_default().to_string()));
            }
            anyhow::Ok(made)
        });
    }
    let mut all = Vec::new();
    for made in tasks.join_all().await {
        all.extend(made?);
    }
    Ok(all)
}

/// A `redis-server` for a benchmark on a free port, AOF with `appendfsync everysec` (Redis's
/// recommended durability), killed when dropped.
pub fn redis_server() -> anyhow::Result<(Proc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((Proc(child), format!("redis://127.0.0.1:{port}/0")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("redis-server did not start")
}
