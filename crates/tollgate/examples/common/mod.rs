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

/// A child process, killed when dropped (and then its data directory removed, when it has one).
pub struct Proc(pub Child, pub Option<std::path::PathBuf>);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(dir) = &self.1 {
            let _ = std::fs::remove_dir_all(dir);
        }
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
    Ok((Proc(child, None), url))
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

/// Real events to copy, as the emulator shapes them for the pinned API version: one
/// `checkout.session.completed`, `customer.subscription.updated` and `invoice.paid` of a customer
/// who paid on Checkout and then changed the subscription (whole bodies of 2–6 KB, as Stripe's).
/// `http` must not follow redirects (completing Checkout answers one).
pub async fn realistic_templates(http: &reqwest::Client, stripe: &str) -> anyhow::Result<Vec<Value>> {
    let session = stripe_post(
        http,
        stripe,
        "/v1/checkout/sessions",
        "mode=subscription&line_items[0][price]=price_pro_monthly&line_items[0][quantity]=1&customer_email=bench%40example.com\
         &success_url=http%3A%2F%2Flocalhost%2Fsuccess&metadata[userId]=user_bench"
            .into(),
    )
    .await?;
    let id = session["id"].as_str().unwrap_or_default();
    pay_checkout(http, stripe, id).await?;
    let get = |path: String| async move {
        let text = http.get(format!("{stripe}{path}")).bearer_auth(KEY).send().await?.text().await?;
        anyhow::Ok(serde_json::from_str::<Value>(&text)?)
    };
    let session = get(format!("/v1/checkout/sessions/{id}")).await?;
    let subscription = session["subscription"].as_str().unwrap_or_default();
    stripe_post(
        http,
        stripe,
        &format!("/v1/subscriptions/{subscription}"),
        "metadata[plan_note]=renewed&cancel_at_period_end=false".into(),
    )
    .await?;
    let events = get("/v1/events?limit=100".into()).await?;
    let mut templates = Vec::new();
    for kind in ["checkout.session.completed", "customer.subscription.updated", "invoice.paid"] {
        let event = events["data"].as_array().and_then(|all| all.iter().find(|e| e["type"] == kind));
        templates.push(event.cloned().ok_or_else(|| anyhow::anyhow!("the emulator sent no {kind}"))?);
    }
    Ok(templates)
}

/// Pay Checkout Session `id` on the emulator with the test card that succeeds. `http` must not
/// follow redirects: the emulator answers with one to the success URL.
pub async fn pay_checkout(http: &reqwest::Client, stripe: &str, id: &str) -> anyhow::Result<()> {
    let paid = http
        .post(format!("{stripe}/_emulator/checkout/sessions/{id}/complete"))
        .form(&[("card_number", "4242424242424242")])
        .send()
        .await?;
    anyhow::ensure!(paid.status().is_redirection(), "paying Checkout Session {id}: {}", paid.status());
    Ok(())
}

/// `template` as a new event `id` for `customer`, signed (body, `Stripe-Signature`).
pub fn signed_copy(template: &Value, id: &str, customer: &str) -> (Vec<u8>, String) {
    let mut event = template.clone();
    event["id"] = Value::from(id);
    event["created"] = Value::from(now());
    event["data"]["object"]["customer"] = Value::from(customer);
    let body = serde_json::to_vec(&event).unwrap();
    let signature = stripe_emulator::signature_header(SECRET, now(), &body);
    (body, signature)
}

/// CPU time a process has used so far (user and system), from `/proc`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // Linux reports clock ticks of 1/100 s (USER_HZ) to user space.
    Duration::from_millis(ticks * 10)
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
    let (child, port) = redis_node(&[])?;
    Ok((child, format!("redis://127.0.0.1:{port}/0")))
}

/// One `redis-server` as [`redis_server`] starts it, with `extra` arguments; answering.
fn redis_node(extra: &[&str]) -> anyhow::Result<(Proc, u16)> {
    // A cluster node also takes its port + 10000 (the cluster bus).
    let port = test_support::free_cluster_node_port();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-redis-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"])
        .args(extra)
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()?;
    // Stopped and removed however this ends.
    let server = Proc(child, Some(dir));
    anyhow::ensure!(test_support::listening_within(port, Duration::from_secs(4)), "redis-server did not start");
    Ok((server, port))
}

/// A Redis Cluster of three masters and three replicas (each node as [`redis_server`] starts it),
/// joined by `redis-cli --cluster create`; its `redis+cluster://` URL once every slot is served.
pub fn redis_cluster() -> anyhow::Result<(Vec<Proc>, String)> {
    let nodes = (0..6)
        .map(|_| redis_node(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addresses: Vec<String> = nodes.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
    test_support::create_redis_cluster(&addresses, None);
    let ports: Vec<u16> = nodes.iter().map(|(_, port)| *port).collect();
    test_support::wait_until_redis_cluster_whole(&ports, None);
    Ok((nodes.into_iter().map(|(proc, _)| proc).collect(), format!("redis+cluster://{}", addresses.join(","))))
}

/// Sign up through the app's own forms, subscribe through Checkout on the emulator, come back.
pub async fn subscriber_cookie(http: &reqwest::Client, url: &str, stripe: &str) -> anyhow::Result<String> {
    let page = http.get(format!("{url}/auth")).send().await?;
    let set_cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(name))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    };
    let csrf_cookie = set_cookie(&page, "tollgate_csrf=").ok_or_else(|| anyhow::anyhow!("no csrf cookie"))?;
    let csrf = csrf_cookie.trim_start_matches("tollgate_csrf=").to_string();
    let post_form = |path: &str, body: String| {
        http.post(format!("{url}{path}"))
            .header("cookie", &csrf_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{body}&csrf={csrf}"))
            .send()
    };
    post_form("/auth/sign-up", "email=reader%40example.com".into()).await?.error_for_status()?;
    // No SMTP: the link that finishes the sign-up is in the local outbox.
    let outbox = http.get(format!("{url}/dev/outbox")).send().await?.text().await?;
    let token = outbox
        .split("/auth/confirm?token=")
        .nth(1)
        .map(|rest| rest.chars().take(32).collect::<String>())
        .ok_or_else(|| anyhow::anyhow!("no sign-up link in the outbox"))?;
    let signup = post_form("/auth/confirm", format!("token={token}&password=a+long+enough+password")).await?;
    let Some(session) = set_cookie(&signup, "tollgate_session=") else {
        let status = signup.status();
        anyhow::bail!("sign-up failed: {status}: {}", signup.text().await.unwrap_or_default());
    };
    // Signing in rotates the CSRF token.
    let csrf_cookie = set_cookie(&signup, "tollgate_csrf=").unwrap_or(csrf_cookie);
    let csrf = csrf_cookie.trim_start_matches("tollgate_csrf=").to_string();
    let cookie = format!("{csrf_cookie}; {session}");
    let started: Value = serde_json::from_str(
        &http
            .post(format!("{url}/api/generate-stripe-checkout"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await?
            .text()
            .await?,
    )?;
    let session_id = started["sessionId"].as_str().ok_or_else(|| anyhow::anyhow!("checkout failed: {started}"))?;
    pay_checkout(http, stripe, session_id).await?;
    http.get(format!("{url}/success")).header("cookie", &cookie).send().await?;
    let check: Value =
        serde_json::from_str(&http.get(format!("{url}/api/subscription")).header("cookie", &cookie).send().await?.text().await?)?;
    anyhow::ensure!(check["entitled"] == true, "the subscriber is not entitled: {check}");
    Ok(cookie)
}
