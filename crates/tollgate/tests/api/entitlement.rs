//! The gated route: signed out → sign-in; not entitled → pricing (401 / 402 for JSON callers).

use reqwest::Method;

use crate::helpers::{spawn_app, spawn_app_with, Options, MONTHLY};

#[tokio::test]
async fn the_app_is_for_subscribers() {
    let app = spawn_app().await;
    let anonymous = app.browser();
    let r = anonymous.get("/app").await;
    assert_eq!((r.status, r.location()), (303, "/auth?next=%2Fapp"));
    assert_eq!(anonymous.get_json("/app").await.status, 401);
    assert_eq!(anonymous.get_json("/api/subscription").await.json()["error"]["code"], "unauthenticated");

    let free = app.signed_in("free@example.com").await;
    let r = free.get("/app").await;
    assert_eq!((r.status, r.location()), (303, "/?notice=subscribe"));
    let r = free.get_json("/app").await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["error"]["code"], "subscription_required");
    assert!(free.get("/?notice=subscribe").await.text.contains("Choose a plan to use the app."));

    let (paid, customer) = app.subscribed("paid@example.com", MONTHLY).await;
    paid.get("/success").await;
    let r = paid.get("/app").await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Your subscription is active"));

    // Canceled in Stripe and synced: no more access.
    let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await;
    let deleted = app.events_for(&customer).await.into_iter().find(|e| e["type"] == "customer.subscription.deleted").unwrap();
    app.deliver_all_and_settle(&[deleted]).await;
    assert_eq!(paid.get("/app").await.status, 303);
    let dashboard = paid.get("/dashboard").await.text;
    assert!(dashboard.contains("id=\"status\">canceled") && dashboard.contains("Subscribe again"));
}

/// Webhooks lost: the cache still says "active" long after the period ended, while Stripe says the
/// subscription was canceled. Access is checked with Stripe before it is granted again.
#[tokio::test]
async fn a_grant_long_past_its_period_is_checked_with_stripe() {
    let app = spawn_app().await;
    let (paid, customer) = app.subscribed("lapsed@example.com", MONTHLY).await;
    paid.get("/success").await;
    let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await; // no webhook delivered
    let key = format!("stripe:customer:{customer}");
    let mut entry = app.cache(&customer).await.unwrap();
    assert_eq!(entry["status"], "active");

    // Within a day of the period's end the cache is trusted (no Stripe call per request).
    entry["currentPeriodEnd"] = (tollgate_core::unix_now() - 3600).into();
    app.state.billing().kv.set(&key, &entry.to_string()).await.unwrap();
    assert_eq!(paid.get("/app").await.status, 200);

    // Two days past it, Stripe is asked, and its answer wins.
    entry["currentPeriodEnd"] = (tollgate_core::unix_now() - 2 * 86_400).into();
    app.state.billing().kv.set(&key, &entry.to_string()).await.unwrap();
    let r = paid.get("/app").await;
    assert_eq!((r.status, r.location()), (303, "/?notice=subscribe"));
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "canceled", "and the cache was brought up to date");
}

#[tokio::test]
async fn past_due_grace_is_a_setting() {
    for (grace, expected) in [("false", 402), ("true", 200)] {
        let app = spawn_app_with(Options { extra: vec![("PAST_DUE_GRACE", grace.into())], ..Options::default() }).await;
        let browser = app.signed_in("late-payer@example.com").await;
        let r = browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({})).await;
        let session = r.json()["sessionId"].as_str().unwrap().to_string();
        app.pay(&session, "4242424242424242").await;
        let customer =
            app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await["customer"].as_str().unwrap().to_string();
        // The card starts failing; at renewal the subscription becomes past_due.
        let pm = app.stripe(Method::POST, "/v1/payment_methods/pm_card_chargeCustomerFail/attach", &[("customer", &customer)]).await;
        let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
        app.stripe(
            Method::POST,
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &[("default_payment_method", pm["id"].as_str().unwrap())],
        )
        .await;
        // The renewal invoice is charged an hour after the period ends, as in Stripe.
        let seconds = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap() - tollgate_core::unix_now() + 3600 + 60;
        let advanced = app
            .http
            .post(format!("{}/_emulator/clock/advance", app.stripe_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("seconds={seconds}"))
            .send()
            .await
            .unwrap();
        assert_eq!(advanced.status(), 200);
        browser.get("/success").await;
        let api = browser.get_json("/api/subscription").await.json();
        assert_eq!(api["status"], "past_due");
        assert_eq!(browser.get_json("/app").await.status, expected, "PAST_DUE_GRACE={grace}");
    }
}

#[tokio::test]
async fn a_trial_grants_access_and_shows_its_end() {
    let app = spawn_app_with(Options { extra: vec![("TRIAL_DAYS", "14".into())], ..Options::default() }).await;
    let (browser, customer) = app.subscribed("trial@example.com", MONTHLY).await;
    browser.get("/success").await;
    let api = browser.get_json("/api/subscription").await.json();
    assert_eq!(api["status"], "trialing");
    assert_eq!(api["entitled"], true);
    let expected = app.expected_cache(&customer).await;
    assert_eq!(api["trialEnd"], expected["trialEnd"]);
    assert!(api["trialEnd"].as_i64().unwrap() - tollgate_core::unix_now() > 13 * 86_400);
    let dashboard = browser.get("/dashboard").await.text;
    assert!(dashboard.contains("id=\"status\">trialing") && dashboard.contains("Trial ends"));
    assert_eq!(browser.get("/app").await.status, 200);
}

#[tokio::test]
async fn signing_in_returns_to_the_page_asked_for() {
    let app = spawn_app().await;
    let browser = app.browser();
    let r = browser.get("/dashboard?notice=welcome").await;
    assert_eq!(r.location(), "/auth?next=%2Fdashboard%3Fnotice%3Dwelcome");
    // A form post cannot be replayed after sign-in: it returns to pricing.
    let post = browser.form("/api/generate-stripe-checkout", &[("priceId", MONTHLY)]).await;
    assert_eq!((post.status, post.location()), (303, "/auth?next=%2F"));
}
