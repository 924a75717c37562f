//! `tollgate setup` and `tollgate doctor`, run as the binary against the emulator: a healthy setup
//! passes (exit 0); each broken one is named with its fix and exits 1.

use std::process::Command;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_emulator, stripe_api, MONTHLY, YEARLY};

const PUBLIC_URL: &str = "http://localhost:3999";

struct Run {
    code: i32,
    out: String,
}

/// The binary with exactly these settings (nothing from the environment or a `.env`).
async fn tollgate(args: &[&str], vars: &[(&str, String)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).env_clear().env("RUST_LOG", "error").current_dir(std::env::temp_dir());
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let out = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    Run { code: output.status.code().unwrap_or(-1), out }
}

/// The check named `name` of `tollgate doctor --json` run with exactly `vars`.
pub async fn check<K: AsRef<str>, V: AsRef<str>>(vars: &[(K, V)], name: &str) -> Value {
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_ref(), v.as_ref().to_string())).collect();
    let run = tollgate(&["doctor", "--json"], &vars).await;
    let report: Value = serde_json::from_str(&run.out).unwrap_or_else(|_| panic!("not a report: {}", run.out));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {}", run.out))
        .clone()
}

fn settings(stripe: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_SECRET_KEY", "sk_test_doctor".into()),
        ("STRIPE_WEBHOOK_SECRET", secret.into()),
        ("STRIPE_API_BASE", stripe.into()),
        ("PLANS", format!("{MONTHLY},{YEARLY}")),
        ("PUBLIC_URL", PUBLIC_URL.into()),
        // The KV is checked the same whatever it is; an in-memory one leaves no file behind.
        ("KV_URL", "memory:".into()),
    ]
}

fn with(mut vars: Vec<(&'static str, String)>, name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    vars.retain(|(k, _)| *k != name);
    vars.push((name, value.to_string()));
    vars
}

/// Run `setup` and return the secret it printed.
async fn set_up(stripe: &str) -> String {
    let run = tollgate(&["setup"], &settings(stripe, "whsec_placeholder")).await;
    assert_eq!(run.code, 0, "{}", run.out);
    run.out.lines().find_map(|l| l.strip_prefix("STRIPE_WEBHOOK_SECRET=")).expect("setup prints the secret").to_string()
}

#[tokio::test]
async fn setup_twice_leaves_one_endpoint_with_the_tracked_events_and_doctor_passes() {
    let stripe = spawn_emulator().await;
    let http = reqwest::Client::new();
    let dry = tollgate(&["setup", "--dry-run"], &settings(&stripe, "whsec_placeholder")).await;
    assert!(dry.code == 0 && dry.out.contains("would be created"), "{}", dry.out);
    let listed = stripe_api(&http, &stripe, Method::GET, "/v1/webhook_endpoints", &[]).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "a dry run changes nothing");

    let secret = set_up(&stripe).await;
    let again = tollgate(&["setup"], &settings(&stripe, &secret)).await;
    assert!(again.code == 0 && again.out.contains("nothing changed"), "{}", again.out);
    let listed = stripe_api(&http, &stripe, Method::GET, "/v1/webhook_endpoints", &[]).await;
    let endpoints = listed["data"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["url"], format!("{PUBLIC_URL}/api/stripe-webhook"));
    assert_eq!(endpoints[0]["enabled_events"].as_array().unwrap().len(), tollgate_core::billing::events::TRACKED_EVENTS.len());

    let doctor = tollgate(&["doctor"], &settings(&stripe, &secret)).await;
    assert_eq!(doctor.code, 0, "{}", doctor.out);
    for line in ["stripe key", "webhook endpoint", "webhook events", "webhook version", "webhook secret", "kv"] {
        assert!(doctor.out.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line}: {}", doctor.out);
    }
    let json = tollgate(&["doctor", "--json"], &settings(&stripe, &secret)).await;
    let report: Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(report["ok"], true);

    // Disabled, and an event removed in the Dashboard: setup repairs both; doctor saw them first.
    let id = endpoints[0]["id"].as_str().unwrap();
    stripe_api(
        &http,
        &stripe,
        Method::POST,
        &format!("/v1/webhook_endpoints/{id}"),
        &[("disabled", "true"), ("enabled_events[]", "invoice.paid")],
    )
    .await;
    let broken = tollgate(&["doctor"], &settings(&stripe, &secret)).await;
    assert_eq!(broken.code, 1);
    assert!(broken.out.contains("is disabled") && broken.out.contains("does not listen to checkout.session.completed"), "{}", broken.out);
    let repaired = tollgate(&["setup"], &settings(&stripe, &secret)).await;
    assert!(repaired.out.contains("updated") && repaired.out.contains("disabled → enabled"), "{}", repaired.out);
    assert_eq!(tollgate(&["doctor"], &settings(&stripe, &secret)).await.code, 0);
}

#[tokio::test]
async fn each_broken_setup_is_named_with_its_fix() {
    let stripe = spawn_emulator().await;
    let http = reqwest::Client::new();

    // No endpoint at all.
    let run = tollgate(&["doctor"], &settings(&stripe, "whsec_anything")).await;
    assert_eq!(run.code, 1);
    assert!(run.out.contains("FAIL  webhook endpoint") && run.out.contains("fix: run `tollgate setup`"), "{}", run.out);

    let secret = set_up(&stripe).await;
    let healthy = settings(&stripe, &secret);
    type Case = (&'static str, Vec<(&'static str, String)>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            with(healthy.clone(), "STRIPE_WEBHOOK_SECRET", "whsec_not_the_one"),
            "FAIL  webhook secret",
            "set STRIPE_WEBHOOK_SECRET",
        ),
        ("unknown price", with(healthy.clone(), "PLANS", "price_pro_monthly,price_nope"), "price_nope", "create the price in Stripe"),
        ("bad key", with(healthy.clone(), "STRIPE_SECRET_KEY", "sk_test_"), "FAIL  stripe key", "API keys"),
        ("KV unwritable", with(healthy.clone(), "KV_URL", "redb:/proc/tollgate-doctor/kv.redb"), "FAIL  kv", "KV_URL"),
    ];
    for (case, vars, failure, fix) in cases {
        let run = tollgate(&["doctor"], &vars).await;
        assert_eq!(run.code, 1, "{case}: {}", run.out);
        assert!(run.out.contains(failure) && run.out.contains(fix), "{case}: {}", run.out);
    }

    // A one-time price among the plans.
    let product = stripe_api(&http, &stripe, Method::POST, "/v1/products", &[("name", "Sticker")]).await;
    let one_time = stripe_api(
        &http,
        &stripe,
        Method::POST,
        "/v1/prices",
        &[("product", product["id"].as_str().unwrap()), ("unit_amount", "300"), ("currency", "usd")],
    )
    .await;
    let id = one_time["id"].as_str().unwrap();
    let run = tollgate(&["doctor", "--json"], &with(healthy.clone(), "PLANS", &format!("{MONTHLY},{id}"))).await;
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.out).unwrap();
    let failing: Vec<&Value> = report["checks"].as_array().unwrap().iter().filter(|c| c["status"] == "fail").collect();
    assert_eq!(failing.len(), 1, "{report}");
    assert!(failing[0]["detail"].as_str().unwrap().contains("one-time") && failing[0]["fix"].as_str().unwrap().contains("recurring"));

    // An endpoint made by hand that misses an event.
    let other = spawn_emulator().await;
    let mut form: Vec<(&str, &str)> =
        tollgate_core::billing::events::TRACKED_EVENTS[1..].iter().map(|e| ("enabled_events[]", *e)).collect();
    let url = format!("{PUBLIC_URL}/api/stripe-webhook");
    form.extend([("url", url.as_str()), ("api_version", tollgate_core::stripe::API_VERSION)]);
    let created = stripe_api(&http, &other, Method::POST, "/v1/webhook_endpoints", &form).await;
    let run = tollgate(&["doctor"], &settings(&other, created["secret"].as_str().unwrap())).await;
    assert_eq!(run.code, 1);
    assert!(run.out.contains("FAIL  webhook events") && run.out.contains("does not listen to checkout.session.completed"), "{}", run.out);
    assert!(run.out.contains("ok    webhook secret"), "the secret itself is right: {}", run.out);
}

/// The doctor reads which form the recipe's mappings in the KV are written in, and says whether
/// `KV_VALUE_ENCODING` matches it (and that unreadable ones need `tollgate import`).
#[tokio::test]
async fn the_doctor_reports_the_form_of_the_recipes_values() {
    use tollgate_core::kv::Kv;
    let dir = tempfile::Builder::new().prefix("tollgate-doctor-values-").tempdir().unwrap();
    let file = dir.path().join("kv.redb");
    {
        let kv = tollgate_core::kv::redb::RedbKv::open(&file).unwrap();
        kv.set("stripe:user:user_a", "cus_a1").await.unwrap();
        kv.set("stripe:user:user_b", "cus_b1").await.unwrap();
    }
    let check = |encoding: &'static str| {
        let vars = [("KV_URL", format!("redb:{}", file.display())), ("KV_VALUE_ENCODING", encoding.to_string())];
        async move { check(&vars, "kv values").await }
    };
    let matching = check("raw").await;
    assert_eq!(matching["status"], "ok", "{matching}");
    assert!(matching["detail"].as_str().unwrap().starts_with("2 raw"), "{matching}");
    let other = check("json").await;
    assert_eq!(other["status"], "fail");
    assert!(other["fix"].as_str().unwrap().contains("KV_VALUE_ENCODING"));
    {
        let kv = tollgate_core::kv::redb::RedbKv::open(&file).unwrap();
        kv.set("stripe:user:user_c", "{garbage").await.unwrap();
    }
    let unreadable = check("raw").await;
    assert!(unreadable["status"] == "fail" && unreadable["fix"].as_str().unwrap().contains("tollgate import"));
}

/// Without keys the doctor says there is nothing to go live with (exit 0) instead of "Ready to go
/// live" over skipped checks; a KV file a running Tollgate holds is named as such; and a file just
/// closed (`RedbKv::close`) opens at once in the next process, 200 times in a row.
#[tokio::test]
async fn the_doctor_on_the_offline_demo_and_on_a_held_kv_file() {
    use tollgate_core::kv::Kv;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.redb");
    let vars = [("KV_URL", format!("redb:{}", file.display()))];
    let demo = tollgate(&["doctor"], &vars).await;
    assert_eq!(demo.code, 0, "{}", demo.out);
    assert!(demo.out.contains("Offline demo: nothing to check for going live"), "{}", demo.out);
    assert!(!demo.out.contains("Ready to go live"), "{}", demo.out);

    let held = tollgate_core::kv::redb::RedbKv::open(&file).unwrap();
    let locked = tollgate(&["doctor"], &vars).await;
    assert_eq!(locked.code, 1, "{}", locked.out);
    assert!(locked.out.contains(&format!("a running tollgate holds {}", file.display())), "{}", locked.out);
    assert!(locked.out.contains("KV_URL=redis://"), "{}", locked.out);
    held.close().await;

    for run in 0..200 {
        let kv = tollgate_core::kv::redb::RedbKv::open(&file).unwrap();
        kv.set("stripe:user:user_run", &format!("cus_{run}")).await.unwrap();
        kv.close().await;
        let after = tollgate(&["doctor", "--json"], &vars).await;
        let report: Value = serde_json::from_str(&after.out).unwrap_or_else(|_| panic!("run {run}: {}", after.out));
        assert_eq!(report["verdict"], "offline_demo", "run {run}: {}", after.out);
        let values = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "kv values").unwrap();
        assert!(values["detail"].as_str().unwrap().starts_with("1 raw"), "run {run}: {values}");
    }
}
