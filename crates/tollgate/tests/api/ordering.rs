//! Whatever the order of `/success` and the webhooks, duplicated or shuffled, the KV entry ends
//! equal to Stripe's state once the drain has settled; redeliveries cost nothing; bursts share syncs.

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
    app.deliver_all_and_settle(&app.events_for(&customer).await).await;
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
}

#[tokio::test]
async fn webhooks_before_success() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("late@example.com", MONTHLY).await;
    let events = app.events_for(&customer).await;
    assert!(events.iter().any(|e| e["type"] == "checkout.session.completed"));
    app.deliver_all_and_settle(&events).await;
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
    for pair in doubled.chunks(2) {
        let (first, again) = (app.deliver(&pair[0]).await, app.deliver(&pair[1]).await);
        assert_eq!((first.status, again.status), (200, 200));
        assert_eq!(first.json()["duplicate"], false);
        assert_eq!(first.json()["received"], true);
        // Stripe is no browser: the answer carries no CSRF cookie.
        assert!(!first.headers.contains_key("set-cookie") && !again.headers.contains_key("set-cookie"), "{:?}", first.headers);
        if first.json()["queued"] == true {
            assert_eq!(again.json()["duplicate"], true, "a redelivery costs nothing: {}", again.text);
        }
    }
    app.settled().await;
    let cache = app.cache(&customer).await.unwrap();
    assert_eq!(cache["cancelAtPeriodEnd"], true, "an old event payload never rolls the cache back");
    assert_eq!(cache, app.expected_cache(&customer).await);

    // Stripe changes again while deliveries race (each change's own event, with old ones
    // redelivered beside it); the last sync starts after the last change.
    let mut tasks = tokio::task::JoinSet::new();
    for flag in ["false", "true", "false"] {
        app.stripe(Method::POST, &format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", flag)]).await;
        let newest = app.events_for(&customer).await.pop().unwrap();
        for event in doubled.iter().take(3).chain([&newest]) {
            let (app, event) = (crate::helpers::TestAppHandle::from(&app), event.clone());
            tasks.spawn(async move { app.deliver(&event).await.status });
        }
    }
    assert!(tasks.join_all().await.iter().all(|s| *s == 200));
    app.settled().await;
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
    for n in 0..8 {
        let (app, mut event) = (crate::helpers::TestAppHandle::from(&app), event.clone());
        event["id"] = format!("evt_burst_{n}").into();
        tasks.spawn(async move { app.deliver(&event).await.json()["queued"] == true });
    }
    assert!(tasks.join_all().await.into_iter().all(|queued| queued), "eight distinct events, each recorded");
    app.settled().await;
    let calls = app.stripe_requests() - before;
    assert_eq!(calls, 1, "8 concurrent events cost {calls} Stripe calls");
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
}

#[tokio::test]
async fn events_that_arrive_during_a_slow_sync_share_the_next_one() {
    // Stripe answers after 200 ms, so all of the burst arrives while the first sync is in flight.
    let config = stripe_emulator::EmulatorConfig { latency: std::time::Duration::from_millis(200), ..crate::helpers::seeded() };
    let stripe = crate::helpers::spawn_emulator_with(config).await;
    let app = crate::helpers::spawn_app_against(&stripe, crate::helpers::Options::default()).await;
    let customer = app.stripe(Method::POST, "/v1/customers", &[("email", "slow@example.com")]).await["id"].as_str().unwrap().to_string();
    let sub = app
        .stripe(
            Method::POST,
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", MONTHLY), ("default_payment_method", "pm_card_visa")],
        )
        .await;
    let event = serde_json::json!({"id": "evt_slow", "object": "event", "type": "customer.subscription.updated", "data": {"object": {"customer": customer}}});
    let before = app.stripe_requests();
    assert_eq!(app.deliver(&event).await.json()["queued"], true);
    // The drain starts the sync once its debounce (100 ms on the app's clock) is over; Stripe
    // answers 200 ms after the sync's request arrives. While it is in flight, Stripe changes (the
    // emulator applies a change when it arrives), then the rest of the burst arrives.
    app.clock.advance(std::time::Duration::from_millis(100));
    let in_flight = || async { (app.stripe_requests() - before == 1).then_some(()) };
    test_support::eventually("the first sync in flight", std::time::Duration::from_secs(5), in_flight).await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap());
    let change = app
        .http
        .post(format!("{stripe}{path}"))
        .bearer_auth("sk_test_x")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("cancel_at_period_end=true");
    let change = tokio::spawn(change.send());
    let mut rest = tokio::task::JoinSet::new();
    for n in 0..7 {
        let (app, mut event) = (crate::helpers::TestAppHandle::from(&app), event.clone());
        event["id"] = format!("evt_slow_{n}").into();
        rest.spawn(async move { app.deliver(&event).await.status });
    }
    assert!(rest.join_all().await.iter().all(|s| *s == 200));
    assert_eq!(change.await.unwrap().unwrap().status(), 200);
    app.settled().await;
    assert_eq!(app.stripe_requests() - before, 2, "one sync in flight, one shared by the seven that came during it");
    let cache = app.cache(&customer).await.unwrap();
    assert_eq!(cache["cancelAtPeriodEnd"], true, "the change made during the first sync is not lost");
    assert_eq!(cache, app.expected_cache(&customer).await);
}
