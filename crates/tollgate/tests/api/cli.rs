//! The binary itself: a bad setting stops start-up naming the variable; secrets never print.

use std::process::Command;

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::Builder::new().prefix("tollgate-cli-").tempdir().unwrap();
    tollgate_in(dir.path(), args, env)
}

/// The binary run in `dir` (where a `.env` may be).
fn tollgate_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).current_dir(dir);
    for var in [
        "PORT", "BIND", "PUBLIC_URL", "DATA_DIR", "KV_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "PLANS",
        "AUTH_PROVIDER", "STRIPE_RATE_LIMIT", "RECONCILE_INTERVAL", "KV_TLS_CA_FILE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("the tollgate binary runs")
}

#[test]
fn bad_settings_stop_start_up_and_name_the_variable() {
    for (env, variable) in [
        (vec![("PORT", "http")], "PORT"),
        (vec![("KV_URL", "postgres://db")], "KV_URL"),
        (vec![("STRIPE_SECRET_KEY", "sk_test_x")], "STRIPE_WEBHOOK_SECRET"),
        (vec![("AUTH_PROVIDER", "clerk")], "AUTH_PROVIDER"),
    ] {
        let out = tollgate(&[], &env);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
    }
    // A port that is taken is named too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = tollgate(&[], &[("PORT", &port), ("KV_URL", "memory:")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));
    // A Redis that refuses: the address tried is named.
    let closed = crate::redis_server::free_port();
    let out = tollgate(&[], &[("KV_URL", &format!("redis://:secret-pw@127.0.0.1:{closed}")), ("PORT", "0"), ("STRIPE_EMULATOR_PORT", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot connect to Redis at 127.0.0.1:{closed}")) && !stderr.contains("secret-pw"), "{stderr}");
}

/// The new user's typo: a `.env` with `STRIPE_SECRT_KEY` would have started the emulator, applied
/// its `PLANS` there and shown a 502 home page. It stops start-up, naming the likely variable, and
/// every other mistake of the same start is reported with it.
#[test]
fn a_typo_in_dotenv_stops_start_up_naming_the_variable_it_meant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "STRIPE_SECRT_KEY=sk_test_123\nPLANS=price_123\nPORT=eighty\n").unwrap();
    let out = tollgate_in(dir.path(), &[], &[("KV_URL", "memory:")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STRIPE_SECRT_KEY: is not a Tollgate variable: did you mean STRIPE_SECRET_KEY?"), "{stderr}");
    assert!(stderr.contains("PORT: 'eighty' is not a port number"), "all errors at once: {stderr}");
    assert!(!stderr.contains("sk_test_123"), "{stderr}");
    // Named in the environment with one of Tollgate's prefixes, the same.
    let out = tollgate(&[], &[("CLERK_SECRET", "sk_test_1"), ("KV_URL", "memory:")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean CLERK_SECRET_KEY?"));
    // Allowed on purpose, the unknown key is ignored (config shows what is in effect instead).
    std::fs::write(dir.path().join(".env"), "STRIPE_SECRT_KEY=sk_test_123\nNEXT_PUBLIC_SITE=x\n").unwrap();
    let out = tollgate_in(dir.path(), &["config"], &[("ALLOW_UNKNOWN_ENV", "TRUE")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Without Stripe keys, `PLANS` must name the embedded emulator's prices: real ids there are a
/// set-up gone wrong, refused with the ids the emulator has (not a 502 home page later).
#[test]
fn plans_the_emulator_lacks_stop_start_up() {
    let out = tollgate(&[], &[("PLANS", "price_123"), ("KV_URL", "memory:"), ("PORT", "0"), ("STRIPE_EMULATOR_PORT", "0")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PLANS: price_123 is not a price of the embedded Stripe emulator"), "{stderr}");
    assert!(stderr.contains("price_tollgate_monthly") && stderr.contains("price_tollgate_yearly"), "{stderr}");
}

/// Every missing variable is named in one start; names of choices are read in any case.
#[test]
fn all_missing_variables_are_reported_at_once() {
    let out = tollgate(&[], &[("AUTH_PROVIDER", "Clerk"), ("STRIPE_SECRET_KEY", "sk_test_x"), ("KV_URL", "memory:")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for variable in ["CLERK_PUBLISHABLE_KEY", "CLERK_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "PLANS"] {
        assert!(stderr.lines().any(|l| l.contains(&format!("error: {variable}:"))), "{variable}: {stderr}");
    }
    assert!(!stderr.contains("AUTH_PROVIDER:"), "Clerk is clerk: {stderr}");
    for (value, said) in [
        ("sk-test-1234", "starts 'sk-…', which is not a Stripe secret key"),
        ("\"sk_test_1234\"", "is wrapped in quotes"),
        ("pk_test_1234", "is a publishable key"),
    ] {
        let out = tollgate(&[], &[("STRIPE_SECRET_KEY", value), ("KV_URL", "memory:")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said) && !stderr.contains("1234"), "{value}: {stderr}");
    }
    let out = tollgate(&[], &[("KV_URL", "localhost:6379")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("'localhost:6379' has no scheme: write redis://localhost:6379"));
}

#[test]
fn config_prints_settings_without_secrets() {
    let out = tollgate(
        &["config"],
        &[
            ("STRIPE_SECRET_KEY", "sk_test_do_not_print"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_do_not_print"),
            ("PLANS", "price_a"),
            ("PORT", "4321"),
        ],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("do_not_print"), "{stdout}");
    let row = |name: &str| stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name}: {stdout}"));
    assert_eq!(row("PORT").split_whitespace().collect::<Vec<_>>(), ["PORT", "4321", "env"]);
    assert_eq!(row("STRIPE_SECRET_KEY").split_whitespace().collect::<Vec<_>>(), ["STRIPE_SECRET_KEY", "[redacted]", "env"]);
    assert_eq!(row("BIND").split_whitespace().collect::<Vec<_>>(), ["BIND", "127.0.0.1", "default"]);
    let json: serde_json::Value = serde_json::from_slice(&tollgate(&["config", "--json"], &[("PORT", "4321")]).stdout).unwrap();
    assert_eq!(json["variables"]["PORT"], serde_json::json!({ "value": "4321", "source": "env" }));
    assert_eq!(json["errors"], serde_json::json!([]));
    // A wrong configuration is still shown, with its errors after it, and exits 2.
    let out = tollgate(&["config"], &[("PORT", "eighty")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("error: PORT: 'eighty' is not a port number"));
}

#[tokio::test]
async fn sync_one_customer_or_all_of_them() {
    use tollgate_core::kv::Kv;
    let stripe = crate::helpers::spawn_emulator().await;
    let http = reqwest::Client::new();
    let mut customers = crate::helpers::customers_with_subscriptions(&http, &stripe, 3).await;
    // An organization's customer (metadata.orgId, no userId) is Tollgate's too: `--all` includes it;
    // one with neither is someone else's and is left alone.
    let org_customer = crate::helpers::stripe_api(
        &http,
        &stripe,
        reqwest::Method::POST,
        "/v1/customers",
        &[("email", "team@example.com"), ("metadata[orgId]", "org_cli")],
    )
    .await;
    customers.push(org_customer["id"].as_str().unwrap().to_string());
    let stranger = crate::helpers::stripe_api(&http, &stripe, reqwest::Method::POST, "/v1/customers", &[("email", "x@example.com")]).await;
    let stranger = stranger["id"].as_str().unwrap().to_string();
    let dir = tempfile::Builder::new().prefix("tollgate-cli-sync-").tempdir().unwrap();
    let kv_file = dir.path().join("kv.redb");
    let kv_url = format!("redb:{}", kv_file.display());
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("KV_URL", kv_url.clone()),
            ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".to_string()),
            ("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET.to_string()),
            ("STRIPE_API_BASE", stripe.clone()),
            ("PLANS", crate::helpers::MONTHLY.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            tollgate(&args, &env)
        })
        .await
        .unwrap()
    };
    let one = run(vec!["sync".into(), "--customer".into(), customers[0].clone()], env(&[])).await;
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(String::from_utf8_lossy(&one.stdout).contains("synced 1 customer"));
    let all = run(vec!["sync".into(), "--all".into()], env(&[("STRIPE_RATE_LIMIT", "50")])).await;
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    assert!(String::from_utf8_lossy(&all.stdout).contains("synced 4 customer"), "{}", String::from_utf8_lossy(&all.stdout));

    let kv = tollgate_core::kv::redb::RedbKv::open(&kv_file).unwrap();
    for customer in &customers {
        let cached: serde_json::Value =
            serde_json::from_str(&kv.get(&format!("stripe:customer:{customer}")).await.unwrap().unwrap()).unwrap();
        assert_eq!(cached, crate::helpers::expected_cache(&http, &stripe, customer).await);
    }
    assert_eq!(kv.get(&format!("stripe:customer:{stranger}")).await.unwrap(), None, "not Tollgate's customer");
    drop(kv);

    // Errors say what is wrong and exit non-zero.
    let missing = run(vec!["sync".into(), "--customer".into(), "cus_doesnotexist".into()], env(&[])).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cus_doesnotexist"), "{}", String::from_utf8_lossy(&missing.stderr));
    let offline = run(vec!["sync".into(), "--all".into()], vec![("KV_URL", kv_url.clone())]).await;
    assert!(!offline.status.success() && String::from_utf8_lossy(&offline.stderr).contains("STRIPE_SECRET_KEY"));
    let _ = std::fs::remove_file(kv_file);
}

/// SIGTERM (what a container runtime sends) while a request waits on a slow Stripe: the request
/// still gets its full answer, then the process exits cleanly.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let config = stripe_emulator::EmulatorConfig { latency: std::time::Duration::from_millis(700), ..crate::helpers::seeded() };
    let stripe = crate::helpers::spawn_emulator_with(config).await;
    let port = crate::redis_server::free_port();
    let env = [
        ("PORT", port.to_string()),
        ("KV_URL", "memory:".to_string()),
        ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".to_string()),
        ("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET.to_string()),
        ("STRIPE_API_BASE", stripe),
        ("PLANS", crate::helpers::MONTHLY.to_string()),
    ];
    let (mut child, url) = serving(&env, std::process::Stdio::null()).await;
    let http = reqwest::Client::new();
    // The pricing page reads the plans from Stripe: two calls of 700 ms each.
    let pricing = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(format!("{url}/")).header("accept", "text/html").send().await }
    });
    // Real time: the binary is a process of its own; 300 ms puts SIGTERM inside the 1.4 s request.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let page = pricing.await.unwrap().expect("the request in flight is answered");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("subscribe-price_pro_monthly"), "the whole page");
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "a clean exit after SIGTERM: {exit:?}");
    assert!(http.get(format!("{url}/healthz")).send().await.is_err(), "no longer listening");
}

/// `LOG_FORMAT=json`: one JSON object per line, each request with its id, route, status and latency.
#[tokio::test]
async fn json_logs_give_one_object_per_request() {
    let (output, request_id) = logs_of_one_request(&[("LOG_FORMAT", "json")]).await;
    let logs: Vec<serde_json::Value> = output.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let line = logs.iter().find(|l| l["span"]["id"] == request_id.as_str()).unwrap_or_else(|| panic!("no line for {request_id}: {output}"));
    assert_eq!((line["span"]["route"].as_str(), line["fields"]["status"].as_u64()), (Some("unmatched"), Some(404)));
    assert!(line["fields"]["elapsed_ms"].as_f64().is_some() && line["level"] == "INFO");
    assert!(logs.iter().any(|l| l["span"]["route"] == "/healthz" && l["fields"]["status"] == 200), "successful requests too");
}

/// Text logs written to a pipe or a file carry no colour codes.
#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let (output, request_id) = logs_of_one_request(&[("RUST_LOG", "debug")]).await;
    assert!(output.contains(&request_id), "the request is logged: {output}");
    assert!(!output.contains('\x1b'), "no escape codes: {output:?}");
}

/// The app's stdout, piped, after one request to a missing page and a SIGTERM; that request's id.
async fn logs_of_one_request(extra: &[(&str, &str)]) -> (String, String) {
    let port = crate::redis_server::free_port();
    let mut env = vec![("PORT", port.to_string()), ("KV_URL", "memory:".into()), ("STRIPE_EMULATOR_PORT", "0".into())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let (mut child, url) = serving(&env, std::process::Stdio::piped()).await;
    let answered = reqwest::Client::new().get(format!("{url}/nowhere")).send().await.unwrap();
    let request_id = answered.headers()["x-request-id"].to_str().unwrap().to_string();
    // SIGTERM: the server finishes, and its log lines are written, before it exits.
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let output = tokio::task::spawn_blocking(move || {
        child.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
        text
    })
    .await
    .unwrap();
    (output, request_id)
}

/// `cargo run` with no accounts: the embedded emulator keeps its state in `DATA_DIR` beside the
/// KV, so after the whole app is killed and started again the user's subscription, customer and
/// session are all still there, and the next Checkout reuses the same Stripe customer.
#[tokio::test]
async fn the_offline_app_keeps_a_subscription_across_a_restart() {
    let dir = tempfile::Builder::new().prefix("tollgate-restart-").tempdir().unwrap();
    let data = dir.path().join("data");
    let port = crate::redis_server::free_port();
    let env = [("PORT", port.to_string()), ("DATA_DIR", data.display().to_string()), ("STRIPE_EMULATOR_PORT", "0".into())];
    let (mut first, url) = serving(&env, std::process::Stdio::null()).await;
    let browser = crate::helpers::Browser::at(&url);
    browser.sign_up_through_the_outbox("restart@example.com").await;
    let checkout = browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({})).await.json();
    let session = checkout["sessionId"].as_str().unwrap();
    let stripe_url = reqwest::Url::parse(checkout["url"].as_str().unwrap()).unwrap();
    let emulator = format!("http://{}:{}", stripe_url.host_str().unwrap(), stripe_url.port().unwrap());
    assert_eq!(test_support::pay_checkout(&emulator, session, &[("card_number", "4242424242424242")]).await.status, 303);
    browser.get("/success").await;
    let before = browser.get_json("/api/subscription").await.json();
    assert_eq!(before["status"], "active", "{before}");
    let stripe = |base: &str, path: &str| {
        let request = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth("sk_test_restart");
        async move { test_support::Reply::read(request.send().await.unwrap()).await }
    };
    let customer = stripe(&emulator, &format!("/v1/checkout/sessions/{session}")).await.json()["customer"].clone();
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, _) = serving(&env, std::process::Stdio::null()).await;
    let after = browser.get_json("/api/subscription").await.json();
    assert_eq!(after["subscriptionId"], before["subscriptionId"], "the same subscription: {after}");
    assert_eq!(after["status"], "active");
    // A sync asks the restarted emulator, which still knows the customer and the subscription.
    browser.get("/success").await;
    assert_eq!(browser.get_json("/api/subscription").await.json()["subscriptionId"], before["subscriptionId"]);
    assert_eq!(browser.get_json("/app").await.status, 200, "still entitled");
    // The restarted emulator (on a new port) still has the customer: the portal opens for it.
    let portal = browser.json_post("/api/billing-portal", &serde_json::json!({})).await;
    assert_eq!(portal.status, 303, "{}", portal.text);
    let portal_url = reqwest::Url::parse(portal.location()).unwrap();
    let emulator = format!("http://{}:{}", portal_url.host_str().unwrap(), portal_url.port().unwrap());
    let sub = stripe(&emulator, &format!("/v1/subscriptions/{}", before["subscriptionId"].as_str().unwrap())).await;
    assert_eq!((sub.status, sub.json()["customer"].clone()), (200, customer.clone()), "the subscription of the same customer");
    let listed = stripe(&emulator, &format!("/v1/customers/{}", customer.as_str().unwrap())).await.json();
    assert_eq!(listed["email"], "restart@example.com");
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The binary serving with exactly `env` (its `PORT` given), once it answers `/healthz`.
async fn serving(env: &[(&str, String)], stdout: std::process::Stdio) -> (std::process::Child, String) {
    let port = env.iter().find(|(k, _)| *k == "PORT").map(|(_, v)| v.clone()).expect("a PORT");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(std::env::temp_dir())
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = || async { http.get(format!("{url}/healthz")).send().await.ok() };
    test_support::eventually("the binary answers /healthz", std::time::Duration::from_secs(5), up).await;
    (child, url)
}

/// `tollgate usage`: what Stripe's meter counted for a customer, and what waits in the KV.
#[tokio::test]
async fn usage_says_what_the_meter_counted_and_what_waits() {
    use tollgate_core::kv::Kv;
    let stripe = crate::helpers::spawn_emulator().await;
    let http = reqwest::Client::new();
    let meter = [("display_name", "API calls"), ("event_name", "api_requests"), ("default_aggregation[formula]", "sum")];
    crate::helpers::stripe_api(&http, &stripe, reqwest::Method::POST, "/v1/billing/meters", &meter).await;
    let customer =
        crate::helpers::stripe_api(&http, &stripe, reqwest::Method::POST, "/v1/customers", &[("email", "usage@example.com")]).await;
    let customer = customer["id"].as_str().unwrap().to_string();
    let minute = tollgate_core::unix_now() / 60 - 5;
    let event = [
        ("event_name", "api_requests"),
        ("payload[stripe_customer_id]", customer.as_str()),
        ("payload[value]", "37"),
        ("identifier", "already-sent"),
        ("timestamp", &(minute * 60).to_string()),
    ];
    crate::helpers::stripe_api(&http, &stripe, reqwest::Method::POST, "/v1/billing/meter_events", &event).await;
    let dir = tempfile::Builder::new().prefix("tollgate-cli-usage-").tempdir().unwrap();
    let kv_file = dir.path().join("kv.redb");
    {
        let kv = tollgate_core::kv::redb::RedbKv::open(&kv_file).unwrap();
        kv.usage_add(&format!("tollgate:usage:api_requests:{customer}:{}", minute * 60), 5, None).await.unwrap();
        kv.usage_add(&format!("tollgate:usage:api_requests:cus_someoneelse:{}", minute * 60), 99, None).await.unwrap();
        kv.close().await;
    }
    let env = [
        ("KV_URL", format!("redb:{}", kv_file.display())),
        ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".to_string()),
        ("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET.to_string()),
        ("STRIPE_API_BASE", stripe.clone()),
        ("PLANS", crate::helpers::MONTHLY.to_string()),
        ("METERED_PATHS", "/api/v1:api_requests,/api/v2:tokens".to_string()),
    ];
    let usage = |flags: &'static [&'static str]| {
        let (env, customer) = (env.clone(), customer.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let args: Vec<&str> = ["usage", "--customer", &customer].into_iter().chain(flags.iter().copied()).collect();
                tollgate(&args, &env)
            })
            .await
            .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    let printed = usage(&[]).await;
    assert!(printed.contains("api_requests: reported 37, waiting 5"), "{printed}");
    assert!(printed.contains("tokens: no active meter in Stripe, waiting 0"), "{printed}");
    // `--flush` sends what waits (both customers' buckets) before it counts.
    let printed = usage(&["--flush"]).await;
    assert!(printed.contains("sent 2 usage records") && printed.contains("api_requests: reported 42, waiting 0"), "{printed}");
}

/// `tollgate healthcheck` (a container's HEALTHCHECK): 0 when the server on PORT answers
/// `/healthz`, 1 with the reason when nothing listens there.
#[tokio::test]
async fn healthcheck_asks_the_local_server() {
    let app = crate::helpers::spawn_app().await;
    let port = app.url.rsplit(':').next().unwrap().to_string();
    let closed = crate::redis_server::free_port().to_string();
    let (up, down) = tokio::task::spawn_blocking(move || {
        let ask = |port: &str| tollgate(&["healthcheck"], &[("PORT", port), ("KV_URL", "memory:")]);
        (ask(&port), ask(&closed))
    })
    .await
    .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("healthcheck"), "{}", String::from_utf8_lossy(&down.stderr));
}

/// The offline app listening on every address (`BIND=0.0.0.0`, as in the `offline` image): its
/// embedded emulator does too, so a browser outside reaches the Checkout page, which is named by
/// PUBLIC_URL's host and the emulator's port; the flow completes through it.
#[tokio::test]
async fn the_offline_app_on_every_address_serves_checkout_there_too() {
    let dir = tempfile::Builder::new().prefix("tollgate-everywhere-").tempdir().unwrap();
    let (port, emulator_port) = (crate::redis_server::free_port(), crate::redis_server::free_port());
    let env = [
        ("PORT", port.to_string()),
        ("BIND", "0.0.0.0".to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("STRIPE_EMULATOR_PORT", emulator_port.to_string()),
    ];
    let (mut app, url) = serving(&env, std::process::Stdio::null()).await;
    let browser = crate::helpers::Browser::at(&url);
    browser.sign_up_through_the_outbox("everywhere@example.com").await;
    let checkout = browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({})).await.json();
    let page = reqwest::Url::parse(checkout["url"].as_str().unwrap()).unwrap();
    assert_eq!((page.host_str(), page.port()), (Some("localhost"), Some(emulator_port)), "{page}");
    // The Checkout page reached at an address of this machine other than loopback, as a browser
    // outside a container reaches a published port (its Host still `localhost`).
    let outside = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect("10.255.255.255:9").and(s.local_addr())).map(|a| a.ip());
    if let Some(ip) = outside.ok().filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        let request = reqwest::Client::new().get(format!("http://{ip}:{emulator_port}{}", page.path())).header("host", page.authority());
        let shown = request.send().await.unwrap();
        assert_eq!(shown.status(), 200, "the Checkout page at {ip}");
    }
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    let session = checkout["sessionId"].as_str().unwrap();
    assert_eq!(test_support::pay_checkout(&emulator, session, &[("card_number", "4242424242424242")]).await.status, 303);
    browser.get("/success").await;
    assert_eq!(browser.get_json("/api/subscription").await.json()["status"], "active");
    app.kill().unwrap();
    app.wait().unwrap();
}
