//! Emulator benchmark: `cargo run --release -p stripe-emulator --example bench [seconds] [connections]`.
//!
//! Reports API requests/s for `GET /v1/subscriptions` (one customer, one subscription, expanded
//! payment method) under concurrent keep-alive connections, and signed webhook deliveries/s to a
//! local receiver that verifies every signature. The emulator keeps its state in a data file
//! (`--data`), so every change is saved and synced. Load generator and receiver run in this
//! process, on the same two cores as the emulator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_emulator::engine::customers::{create_customer, NewCustomer};
use stripe_emulator::{Emulator, EmulatorConfig, StartupWebhook};

const SECRET: &str = "whsec_bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let deliveries: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);

    // The receiver verifies each signature, as a real app would, and counts.
    let received = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let (r, b) = (received.clone(), bad.clone());
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (r, b) = (r.clone(), b.clone());
            async move {
                if verify(&headers, &body) {
                    r.fetch_add(1, Ordering::Relaxed)
                } else {
                    b.fetch_add(1, Ordering::Relaxed)
                };
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let data_dir = std::env::temp_dir().join(format!("emulator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let config = EmulatorConfig {
        seed: Some(test_support::SEED.into()),
        data_file: Some(data_dir.join("state.jsonl")),
        webhooks: vec![StartupWebhook { url: hook_url, secret: Some(SECRET.into()), enabled_events: vec!["customer.created".into()] }],
        ..EmulatorConfig::for_tests()
    };
    let (emulator, url, _) = Emulator::build(config).await?.spawn();
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build()?;
    let auth = "Bearer sk_test_bench";
    let post = |path: &str, body: &str| {
        client
            .post(format!("{url}{path}"))
            .header("authorization", auth)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
    };
    let customer: serde_json::Value = serde_json::from_str(&post("/v1/customers", "email=bench@example.com").await?.text().await?)?;
    let customer = customer["id"].as_str().unwrap_or_default().to_string();
    let sub =
        post("/v1/subscriptions", &format!("customer={customer}&items[0][price]=price_pro_monthly&default_payment_method=pm_card_visa"))
            .await?;
    anyhow::ensure!(sub.status() == 200, "subscription create failed");
    let list_url = format!("{url}/v1/subscriptions?customer={customer}&status=all&expand[]=data.default_payment_method");
    let check: serde_json::Value = serde_json::from_str(&client.get(&list_url).header("authorization", auth).send().await?.text().await?)?;
    anyhow::ensure!(check["data"][0]["default_payment_method"]["card"]["last4"] == "4242", "unexpected list response");
    received.store(0, Ordering::Relaxed); // the set-up's own customer.created

    // 1. API throughput.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, list_url) = (client.clone(), list_url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                match client.get(&list_url).header("authorization", auth).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        latencies.push(start.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    println!(
        "GET /v1/subscriptions (expanded PM), {connections} connections, {seconds}s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {errors} errors",
        latencies.len() as f64 / seconds as f64,
        test_support::percentile_ms(&latencies, 0.50),
        test_support::percentile_ms(&latencies, 0.99)
    );

    // 2. Webhook deliveries: events made in-process as fast as possible, timed until all are verified.
    let start = Instant::now();
    for i in 0..deliveries {
        let customer = NewCustomer { email: Some(format!("load{i}@example.com")), ..Default::default() };
        emulator.apply(&Default::default(), |store| create_customer(store, customer)).map_err(|e| anyhow::anyhow!(e.message))?;
    }
    while received.load(Ordering::Relaxed) < deliveries && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "webhooks: {} signed deliveries verified in {elapsed:.2}s: {:.0} deliveries/s ({} bad signatures)",
        received.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed) as f64 / elapsed,
        bad.load(Ordering::Relaxed)
    );
    let size = std::fs::metadata(data_dir.join("state.jsonl")).map(|m| m.len()).unwrap_or(0);
    println!("data file: {:.1} MB after the run", size as f64 / 1e6);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers.get("stripe-signature").and_then(|h| h.to_str().ok()) else { return false };
    let Some(t) = header.split(',').find_map(|p| p.strip_prefix("t=")) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    header.split(',').filter_map(|p| p.strip_prefix("v1=")).any(|v| v == expected)
}
