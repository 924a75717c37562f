//! Whatever the order of `/success` and the webhooks, duplicated or shuffled, the KV entry ends
//! equal to Stripe's state; bursts share syncs.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app, MONTHLY};

#[tokio::test]
async fn success_before_webhooks() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("early@example.com", MONTHLY).await;
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "none", "checkout's pre-check wrote 'none'; no webhook yet");
    browser.get("/success").await;
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
    for event in app.events_for(&customer).await {
        assert_eq!(app.deliver(&event).await.status, 200);
    }
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
}

#[tokio::test]
async fn webhooks_before_success() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("late@example.com", MONTHLY).await;
    let events = app.events_for(&customer).await;
    assert!(events.iter().any(|e| e["type"] == "checkout.session.completed"));
    for event in &events {
        let r = app.deliver(event).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let expected = app.expected_cache(&customer).await;
    assert_eq!(expected["status"], "active");
    assert_eq!(app.cache(&customer).await.unwrap(), expected, "the webhooks alone brought the cache up to date");
    browser.get("/success").await;
    assert_eq!(app.cache(&customer).await.unwrap(), expected);
}

#[tokio::test]
async fn duplicated_and_reordered_deliveries() {
    let app = spawn_app().await;
    let (_, customer) = app.subscribed("shuffle@example.com", MONTHLY).await;
    let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::POST, &format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", "true")]).await;
    let mut events = app.events_for(&customer).await;
    // Newest first, each twice, the oldest (subscription.created, status active) last of all.
    events.reverse();
    let doubled: Vec<Value> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    for event in &doubled {
        assert_eq!(app.deliver(event).await.status, 200);
    }
    let cache = app.cache(&customer).await.unwrap();
    assert_eq!(cache["cancelAtPeriodEnd"], true, "an old event payload never rolls the cache back");
    assert_eq!(cache, app.expected_cache(&customer).await);

    // Stripe changes again while deliveries race; the last sync starts after the last change.
    let mut tasks = tokio::task::JoinSet::new();
    for flag in ["false", "true", "false"] {
        app.stripe(Method::POST, &format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", flag)]).await;
        for event in doubled.iter().take(3) {
            let (app, event) = (crate::helpers::TestAppHandle::from(&app), event.clone());
            tasks.spawn(async move { app.deliver(&event).await.status });
        }
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == 200));
    assert_eq!(app.cache(&customer).await.unwrap()["cancelAtPeriodEnd"], false);
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
}

#[tokio::test]
async fn a_burst_of_events_for_one_customer_shares_syncs() {
    let app = spawn_app().await;
    let (_, customer) = app.subscribed("burst@example.com", MONTHLY).await;
    let event = app.events_for(&customer).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    let before = app.stripe_requests();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (app, event) = (crate::helpers::TestAppHandle::from(&app), event.clone());
        tasks.spawn(async move { app.deliver(&event).await.status });
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == 200));
    let calls = app.stripe_requests() - before;
    assert!((1..=2).contains(&calls), "8 concurrent events cost {calls} Stripe calls");
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
}
