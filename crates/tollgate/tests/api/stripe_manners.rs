//! How Tollgate treats Stripe: one request rate shared by all instances, retries on 429, a
//! deadline on every call (a hung Stripe never holds a request for long), and reconciliation
//! that heals customers whose webhooks were lost.

use std::time::{Duration, Instant};

use stripe_emulator::EmulatorConfig;

use crate::helpers::{customers_with_subscriptions, spawn_app_against, Options, MONTHLY};
use crate::redis_server::RedisServer;

async fn emulator(rate_limit: Option<u32>) -> String {
    crate::helpers::spawn_emulator_with(EmulatorConfig { rate_limit, ..crate::helpers::seeded() }).await
}

fn parse(id: &str) -> tollgate_core::domain::CustomerId {
    tollgate_core::domain::CustomerId::parse(id).unwrap()
}

#[tokio::test]
async fn a_stripe_that_answers_429_is_retried_until_it_accepts() {
    let stripe = emulator(Some(4)).await;
    let app = spawn_app_against(&stripe, Options { extra: vec![("STRIPE_RATE_LIMIT", "off".into())], ..Options::default() }).await;
    let customers = customers_with_subscriptions(&app.http, &stripe, 6).await;
    let mut syncs = tokio::task::JoinSet::new();
    for customer in &customers {
        let (billing, customer) = (app.state.billing().clone(), parse(customer));
        syncs.spawn(async move { billing.sync(&customer).await.map(|entry| entry.status()) });
    }
    for outcome in syncs.join_all().await {
        assert_eq!(outcome.unwrap(), tollgate_core::domain::SubscriptionStatus::Active);
    }
    assert!(app.state.billing().stripe.rate_limited_answers() > 0, "the emulator did refuse some calls");
}

#[tokio::test]
async fn two_instances_share_one_rate_limit() {
    let stripe = emulator(None).await;
    let redis = RedisServer::start();
    let options = || Options { kv_url: redis.url(), extra: vec![("STRIPE_RATE_LIMIT", "20".into())], ..Options::default() };
    let (a, b) = (spawn_app_against(&stripe, options()).await, spawn_app_against(&stripe, options()).await);
    let customers = customers_with_subscriptions(&a.http, &stripe, 20).await;
    let started = Instant::now();
    let mut syncs = tokio::task::JoinSet::new();
    for (n, customer) in customers.iter().enumerate() {
        let (billing, customer) = (if n % 2 == 0 { &a } else { &b }.state.billing().clone(), parse(customer));
        syncs.spawn(async move { billing.sync(&customer).await.is_ok() });
    }
    assert!(syncs.join_all().await.into_iter().all(|ok| ok));
    let elapsed = started.elapsed();
    // 20 calls at 20/s together take at least 19 intervals of 50 ms; alone, each instance would
    // have needed only 9 (0.45 s).
    assert!(elapsed >= Duration::from_millis(900), "20 calls over two instances took only {elapsed:?}");
    assert_eq!(a.stripe_requests() + b.stripe_requests(), 20);
}

#[tokio::test]
async fn a_hung_stripe_answers_503_within_the_deadline() {
    // Accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = spawn_app_against(&format!("http://{}", hung.local_addr().unwrap()), Options::default()).await;
    let browser = app.signed_in("patient@example.com").await;
    let started = Instant::now();
    let r = browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert!(took < tollgate_core::stripe::client::DEADLINE + Duration::from_secs(2), "answered after {took:?}");
    drop(hung);
}

#[tokio::test]
async fn reconcile_heals_customers_whose_webhooks_were_lost() {
    let stripe = emulator(None).await;
    let redis = RedisServer::start();
    let options = || Options { kv_url: redis.url(), ..Options::default() };
    let (a, b) = (spawn_app_against(&stripe, options()).await, spawn_app_against(&stripe, options()).await);
    // Subscriptions nobody told Tollgate about, and a customer Tollgate did not make (no userId).
    let customers = customers_with_subscriptions(&a.http, &stripe, 5).await;
    let stranger =
        a.stripe(reqwest::Method::POST, "/v1/customers", &[("email", "not-ours@example.com")]).await["id"].as_str().unwrap().to_string();
    for app in [&a, &b] {
        tokio::spawn(tollgate_core::billing::reconcile::run_periodically(app.state.billing().clone(), Duration::from_millis(300)));
    }
    // A round is due on both instances; one of them takes it.
    for app in [&a, &b] {
        app.clock.advance(Duration::from_millis(300));
    }
    for customer in &customers {
        let healed = || async { (a.cache(customer).await == Some(a.expected_cache(customer).await)).then_some(()) };
        test_support::eventually(&format!("{customer} healed"), Duration::from_secs(20), healed).await;
    }
    assert_eq!(a.cache(&stranger).await, None, "only customers with a userId are Tollgate's");
}
