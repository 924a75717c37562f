//! Tollgate benchmark (run `scripts/bench`, which builds the release binaries first).
//!
//! Starts the release `stripe-emulator` and `tollgate` binaries as their own processes and, from
//! this process on the same two cores, measures:
//! - start-up: process start to the first answered `/healthz` (median of 5);
//! - webhook intake on the embedded redb KV (no Stripe rate limit: the emulator has none): signed
//!   `invoice.paid` events, 32 connections, every event for another customer — requests/s,
//!   p50/p99, and emulator calls per event once the drain is done;
//! - bursts: 8 simultaneous events per customer — emulator calls per event;
//! - `GET /api/subscription` for one signed-in subscriber — requests/s, p50/p99;
//! - peak RSS of the tollgate process (VmHWM) after all of it;
//! - `GET /api/subscription` with `AUTH_PROVIDER=clerk`: a Clerk session token (a bearer token,
//!   then a browser's cookies) verified on every request (JWKS cached) — requests/s, p50/p99;
//! - gateway mode: an entitled user's page through Tollgate to a trivial product, and the same
//!   page straight from the product — requests/s, p50/p99 of each.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn event_for(customer: &str, n: usize) -> Vec<u8> {
    signed_event(&format!("evt_bench{n}"), "invoice.paid", customer).0
}

/// Wait until the drain is done: the emulator has seen no call for a second.
async fn quiet(http: &reqwest::Client, stripe: &str) -> anyhow::Result<u64> {
    let mut last = emulator_stats(http, stripe).await?.0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = emulator_stats(http, stripe).await?.0;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

async fn post_event(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Duration, String> {
    let signature = stripe_emulator::signature_header(SECRET, now(), &body);
    let started = Instant::now();
    let r = http
        .post(url)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let _ = r.bytes().await;
    if status.is_success() {
        Ok(started.elapsed())
    } else {
        Err(format!("status {status}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let customers_wanted: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let (_emulator, stripe) = emulator(&[])?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS * 2).redirect(reqwest::redirect::Policy::none()).build()?;
    // `… -- 10 2000 gateway` (or `clerk`) runs that phase alone.
    match std::env::args().nth(3).as_deref() {
        Some("gateway") => return gateway(&http, &stripe, seconds).await,
        Some("clerk") => return clerk(&http, &stripe, seconds).await,
        _ => {}
    }

    // Customers, each with an active subscription.
    let customers: Vec<String> = subscribed_customers(&http, &stripe, customers_wanted).await?.into_iter().map(|(c, _)| c).collect();
    let customers = Arc::new(customers);

    // Start-up time.
    let data = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    let kv_url = format!("redb:{}", data.join("kv.redb").display());
    let mut startups = Vec::new();
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(&data);
        let started = Instant::now();
        let (proc_, url) = start(tollgate_command(&stripe, &kv_url, &[("STRIPE_RATE_LIMIT", "off")]))?;
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        startups.push(started.elapsed());
        drop(proc_);
    }
    startups.sort();
    println!(
        "start-up to first answered request: median {:.1} ms (min {:.1}, max {:.1})",
        startups[2].as_secs_f64() * 1000.0,
        startups[0].as_secs_f64() * 1000.0,
        startups[4].as_secs_f64() * 1000.0
    );

    let _ = std::fs::remove_dir_all(&data);
    let (tollgate, url) = start(tollgate_command(&stripe, &kv_url, &[("STRIPE_RATE_LIMIT", "off")]))?;
    let pid = tollgate.0.id();
    let hook = format!("{url}/api/stripe-webhook");

    // Webhook intake, one customer per event.
    let calls_before = quiet(&http, &stripe).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..CONNECTIONS {
        let (http, hook, customers) = (http.clone(), hook.clone(), customers.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, worker);
            while Instant::now() < deadline {
                match post_event(&http, &hook, event_for(&customers[n % customers.len()], n + 1_000_000)).await {
                    Ok(l) => latencies.push(l),
                    Err(_) => errors += 1,
                }
                n += CONNECTIONS;
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let events = latencies.len() as u64 + errors;
    let calls = quiet(&http, &stripe).await? - calls_before;
    println!(
        "webhook intake, redb ({CONNECTIONS} connections, {} customers, {seconds}s): {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {errors} errors, {:.2} Stripe calls per event",
        customers.len(),
        latencies.len() as f64 / seconds as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        calls as f64 / events.max(1) as f64
    );

    // Bursts of 8 simultaneous events per customer.
    let calls_before = quiet(&http, &stripe).await?;
    let bursts = customers.len().min(1000);
    let started = Instant::now();
    let mut burst_errors = 0;
    for chunk in customers[..bursts].chunks(CONNECTIONS / 8) {
        let mut set = tokio::task::JoinSet::new();
        for customer in chunk {
            for k in 0..8 {
                let (http, hook, body) =
                    (http.clone(), hook.clone(), signed_event(&format!("evt_burst_{customer}_{k}"), "invoice.paid", customer).0);
                set.spawn(async move { post_event(&http, &hook, body).await });
            }
        }
        burst_errors += set.join_all().await.iter().filter(|r| r.is_err()).count();
    }
    let accepted = started.elapsed();
    let calls = quiet(&http, &stripe).await? - calls_before;
    println!(
        "bursts of 8 events per customer ({bursts} customers, all accepted in {:.2}s): {:.3} Stripe calls per event, {burst_errors} errors",
        accepted.as_secs_f64(),
        calls as f64 / (bursts * 8) as f64
    );

    // A signed-in subscriber asking for their subscription.
    let cookie = subscriber_cookie(&http, &url, &stripe).await?;
    read_load(&http, &format!("{url}/api/subscription"), ("cookie", &cookie), seconds, "GET /api/subscription").await?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / 1024.0)
            .unwrap_or(0.0)
    };
    println!("tollgate memory: peak RSS {:.1} MB, RSS now {:.1} MB", field("VmHWM:"), field("VmRSS:"));
    drop(tollgate);
    let _ = std::fs::remove_dir_all(&data);

    clerk(&http, &stripe, seconds).await?;
    gateway(&http, &stripe, seconds).await
}

/// With Clerk: every request carries a session token that is verified (RS256, the JWKS cached
/// after the first request, the email kept in the KV): as a bearer token, then as a browser's
/// cookies (both forms of each, the dev-browser token: Clerk's cookie rules read them all).
async fn clerk(http: &reqwest::Client, stripe: &str, seconds: u64) -> anyhow::Result<()> {
    let clerk = clerk_backend_api().await?;
    let azp = "http://localhost:3000";
    let (_clerk_tollgate, clerk_url) = start(tollgate_command(
        stripe,
        "memory:",
        &[
            ("AUTH_PROVIDER", "clerk"),
            ("CLERK_PUBLISHABLE_KEY", CLERK_PUBLISHABLE_KEY),
            ("CLERK_SECRET_KEY", "sk_test_bench"),
            ("CLERK_API_URL", &clerk),
            ("PUBLIC_URL", azp),
        ],
    ))?;
    let token = clerk_session_token(azp, seconds);
    let target = format!("{clerk_url}/api/subscription");
    let bearer = format!("Bearer {token}");
    let suffix = CLERK_COOKIE_SUFFIX;
    let uat = now() - 30;
    let cookies = format!(
        "__clerk_db_jwt=dvb_bench; __clerk_db_jwt_{suffix}=dvb_bench; __session={token}; __client_uat={uat}; \
         __session_{suffix}={token}; __client_uat_{suffix}={uat}"
    );
    for (header, label) in [(("authorization", bearer.as_str()), "Clerk token"), (("cookie", cookies.as_str()), "Clerk cookies")] {
        let first = http.get(&target).header(header.0, header.1).send().await?;
        anyhow::ensure!(first.status().is_success(), "the Clerk {label} were refused: {}", first.status());
        read_load(http, &target, header, seconds, &format!("GET /api/subscription, {label}")).await?;
    }
    Ok(())
}

/// Gateway: an entitled user's request through Tollgate to a trivial product, against the same
/// request straight to the product, in the same run.
async fn gateway(http: &reqwest::Client, stripe: &str, seconds: u64) -> anyhow::Result<()> {
    let product = trivial_product().await?;
    let (_gateway, gateway_url) = start(tollgate_command(stripe, "memory:", &[("UPSTREAM_URL", &product), ("GATED_PATHS", "/app")]))?;
    let cookie = subscriber_cookie(http, &gateway_url, stripe).await?;
    let through = http.get(format!("{gateway_url}/app/page")).header("cookie", &cookie).send().await?;
    anyhow::ensure!(through.status().is_success(), "the gateway refused the subscriber: {}", through.status());
    read_load(http, &format!("{product}/app/page"), ("cookie", &cookie), seconds, "the product directly").await?;
    read_load(http, &format!("{gateway_url}/app/page"), ("cookie", &cookie), seconds, "the product through the gateway, entitled user")
        .await?;
    Ok(())
}

/// `target` under load from 32 connections for `seconds`, each request with `header`. wrk (one
/// thread) is the load generator when installed: it leaves more of the two cores to the server
/// than an in-process client.
async fn read_load(http: &reqwest::Client, target: &str, header: (&str, &str), seconds: u64, label: &str) -> anyhow::Result<()> {
    let wrk = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", "-H", &format!("{}: {}", header.0, header.1), target])
        .output();
    match wrk {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let find = |prefix: &str| {
                text.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with(prefix))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .to_string()
            };
            let non_2xx = text.lines().find(|l| l.contains("Non-2xx")).map(|l| l.trim().to_string()).unwrap_or_else(|| "0 non-2xx".into());
            println!(
                "{label} (wrk, {CONNECTIONS} connections, {seconds}s): {} requests/s, p50 {}, p99 {}, {non_2xx}",
                find("Requests/sec:"),
                find("50%"),
                find("99%")
            );
        }
        _ => {
            let latencies = client_load(http, target, header, seconds).await?;
            println!(
                "{label} (in-process client, {CONNECTIONS} connections, {seconds}s; install wrk for a lighter load generator): {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
                latencies.len() as f64 / seconds as f64,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
        }
    }
    Ok(())
}

const CLERK_PUBLISHABLE_KEY: &str = "pk_test_ZXhhbXBsZS1hcHAtMTIuY2xlcmsuYWNjb3VudHMuZGV2JA";
/// Clerk's suffix of that instance's cookie names (the Clerk suite's `clerk_mock::cookie_suffix`).
const CLERK_COOKIE_SUFFIX: &str = "fiNgkcri";
const CLERK_INSTANCE_KEY: &str = include_str!("../tests/fixtures/clerk-instance.key.pem");

/// A stand-in for Clerk's Backend API (the JWKS and one user), on loopback in this process.
async fn clerk_backend_api() -> anyhow::Result<String> {
    use axum::routing::get;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let mut jwk =
        Jwk::from_encoding_key(&jsonwebtoken::EncodingKey::from_rsa_pem(CLERK_INSTANCE_KEY.as_bytes())?, jsonwebtoken::Algorithm::RS256)?;
    jwk.common.key_id = Some("ins_bench".into());
    let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] })?;
    let user = r#"{"object":"user","id":"user_bench","primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":"bench@example.com"}]}"#;
    let router =
        axum::Router::new().route("/v1/jwks", get(move || async move { jwks })).route("/v1/users/{id}", get(move || async move { user }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// A session token as the instance signs one, valid for the whole run.
fn clerk_session_token(azp: &str, seconds: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("ins_bench".into());
    header.extras.insert("cat", "cl_B7d4PD111AAA");
    let now = now();
    let claims = serde_json::json!({"sub": "user_bench", "sid": "sess_bench", "iss": "https://example-app-12.clerk.accounts.dev",
        "azp": azp, "iat": now, "nbf": now - 10, "exp": now + seconds as i64 + 60});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(CLERK_INSTANCE_KEY.as_bytes()).expect("the fixture key");
    jsonwebtoken::encode(&header, &claims, &key).expect("a token")
}

/// GET `target` with `header` from 32 connections for `seconds`; the sorted latencies of good answers.
async fn client_load(http: &reqwest::Client, target: &str, header: (&str, &str), seconds: u64) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (http, target, name, value) = (http.clone(), target.to_string(), header.0.to_string(), header.1.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                if let Ok(r) = http.get(&target).header(&name, &value).send().await {
                    if r.status().is_success() && r.bytes().await.is_ok_and(|b| b.starts_with(b"{")) {
                        latencies.push(started.elapsed());
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    latencies.sort();
    Ok(latencies)
}

/// A product that answers every request with a short page, on loopback in this process.
async fn trivial_product() -> anyhow::Result<String> {
    let router = axum::Router::new().fallback(|| async { "<!doctype html><p>the product</p>" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}
