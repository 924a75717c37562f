//! Checkout: one customer per user however many clicks, only offered plans, never a second subscription.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Browser, Options, TestApp, MONTHLY, YEARLY};

#[tokio::test]
async fn concurrent_checkout_requests_create_one_customer() {
    let app = spawn_app().await;
    let browser = app.signed_in("twice@example.com").await;
    let mut tasks = tokio::task::JoinSet::new();
    for price in [MONTHLY, YEARLY, MONTHLY, YEARLY] {
        let browser = browser.clone();
        tasks.spawn(async move { browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": price })).await });
    }
    let replies = tasks.join_all().await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let customers = app.stripe(Method::GET, "/v1/customers", &[("email", "twice@example.com")]).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1, "one Stripe customer");
    let customer = customers["data"][0]["id"].as_str().unwrap();
    // In whatever order the clicks were served: a session per plan at least (a click for the
    // plan of the open session reuses it), all for that customer, and one left open to pay.
    let all = app.stripe(Method::GET, "/v1/checkout/sessions", &[("limit", "100")]).await;
    let sessions = app.stripe(Method::GET, "/v1/checkout/sessions", &[("customer", customer), ("limit", "100")]).await;
    let sessions = sessions["data"].as_array().unwrap();
    assert!((2..=4).contains(&sessions.len()), "{} sessions", sessions.len());
    assert_eq!(all["data"].as_array().unwrap().len(), sessions.len(), "every session is for that customer");
    assert_eq!(sessions.iter().filter(|s| s["status"] == "open").count(), 1, "one session can be paid");
    let user_id = customers["data"][0]["metadata"]["userId"].as_str().unwrap();
    let mapped = app.state.billing().kv.get(&format!("stripe:user:{user_id}")).await.unwrap();
    assert_eq!(mapped.as_deref(), Some(customer));
}

#[tokio::test]
async fn only_offered_plans_and_no_second_subscription() {
    let app = spawn_app().await;
    let browser = app.signed_in("plans@example.com").await;
    let other = app
        .stripe(
            Method::POST,
            "/v1/prices",
            &[("product", "prod_pro"), ("unit_amount", "1"), ("currency", "usd"), ("recurring[interval]", "month")],
        )
        .await;
    let r = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": other["id"] })).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "plan_not_offered");
    let r = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": "prod_pro" })).await;
    assert_eq!(r.json()["error"]["code"], "invalid_price");
    // Without a priceId: the first plan.
    let r = browser.json_post("/api/generate-stripe-checkout", &json!({})).await;
    assert_eq!(r.status, 200);
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{}", r.json()["sessionId"].as_str().unwrap()), &[]).await;
    assert_eq!(session["line_items"]["data"][0]["price"]["id"], MONTHLY);

    let (subscriber, _) = app.subscribed("subscriber@example.com", YEARLY).await;
    // Even before any webhook or /success, a second checkout is refused: the check reads Stripe.
    let again = subscriber.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "already_subscribed");
    let form = subscriber.form("/api/generate-stripe-checkout", &[("priceId", MONTHLY)]).await;
    assert_eq!((form.status, form.location()), (303, "/dashboard?notice=already-subscribed"));
    let dashboard = subscriber.get(form.location()).await;
    assert!(dashboard.text.contains("already have a subscription"));
}

#[tokio::test]
async fn a_customer_deleted_in_stripe_is_replaced() {
    let app = spawn_app().await;
    let browser = app.signed_in("deleted@example.com").await;
    let first = browser.json_post("/api/generate-stripe-checkout", &json!({})).await;
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{}", first.json()["sessionId"].as_str().unwrap()), &[]).await;
    let old = session["customer"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/customers/{old}"), &[]).await;
    let again = browser.json_post("/api/generate-stripe-checkout", &json!({})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{}", again.json()["sessionId"].as_str().unwrap()), &[]).await;
    let new = session["customer"].as_str().unwrap();
    assert_ne!(new, old);
    let user_id = app.stripe(Method::GET, &format!("/v1/customers/{new}"), &[]).await["metadata"]["userId"].as_str().unwrap().to_string();
    assert_eq!(app.state.billing().kv.get(&format!("stripe:user:{user_id}")).await.unwrap().as_deref(), Some(new), "remapped");
}

/// A signed-out visitor's Subscribe goes through sign-up and on to Checkout for the plan chosen,
/// not back to the pricing page.
#[tokio::test]
async fn subscribe_while_signed_out_continues_to_checkout_after_sign_up() {
    let app = spawn_app().await;
    let browser = app.browser();
    let link = format!("/api/generate-stripe-checkout?priceId={YEARLY}");
    let landing = browser.get("/").await;
    assert!(landing.text.contains(&format!("href=\"{link}\"")), "the pricing page links there: {}", landing.text);
    let to_sign_in = browser.get(&link).await;
    assert_eq!(to_sign_in.status, 303, "{}", to_sign_in.text);
    let next = reqwest::Url::parse(&format!("http://app{}", to_sign_in.location())).unwrap();
    let next = next.query_pairs().find(|(k, _)| k == "next").map(|(_, v)| v.into_owned()).expect("the way back");
    assert_eq!(next, link);
    let signed_up = browser.form("/auth/sign-up", &[("email", "later@example.com"), ("next", &next)]).await;
    assert_eq!(signed_up.status, 200, "{}", signed_up.text);
    let confirmed = app.confirm(&browser, "later@example.com").await;
    assert_eq!(confirmed.location(), link, "back to the Subscribe link once the account exists");
    // Hostile links get a page saying so, and start nothing.
    for hostile in ["?priceId=prod_pro", "?priceId=%FF%FE%00", "?priceId=price_nope&priceId=x"] {
        let refused = browser.get(&format!("/api/generate-stripe-checkout{hostile}")).await;
        assert_eq!(refused.status, 400, "{hostile}: {}", refused.text);
        assert!(refused.text.contains("<html") || refused.text.contains("<!doctype"), "{hostile}: a page: {}", refused.text);
    }
    let sessions = app.stripe(Method::GET, "/v1/checkout/sessions", &[]).await;
    assert_eq!(sessions["data"].as_array().unwrap().len(), 0, "no Checkout Session for a hostile link");
    let checkout = browser.get(confirmed.location()).await;
    assert_eq!(checkout.status, 303, "{}", checkout.text);
    let sessions = app.stripe(Method::GET, "/v1/checkout/sessions", &[("limit", "1")]).await;
    let session = &sessions["data"][0];
    assert!(checkout.location().starts_with(&app.stripe_url), "{}", checkout.location());
    assert!(checkout.location().contains(session["id"].as_str().unwrap()), "{}", checkout.location());
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{}", session["id"].as_str().unwrap()), &[]).await;
    assert_eq!(session["line_items"]["data"][0]["price"]["id"], YEARLY, "the plan chosen before signing up");
}

/// `TRIAL_DAYS` once per customer: subscribe with the trial, end it, subscribe again — paid at
/// once. Stripe's history says no on its own (the mark removed), and the mark says no on its own
/// (the customer deleted in Stripe and replaced). The pricing page stops promising the trial.
#[tokio::test]
async fn one_trial_per_customer() {
    let app = spawn_app_with(Options { extra: vec![("TRIAL_DAYS", "7".into())], ..Options::default() }).await;
    assert!(app.browser().get("/").await.text.contains("7-day free trial"), "promised to a visitor");
    let (browser, customer) = app.subscribed("trial@example.com", MONTHLY).await;
    browser.get("/success").await;
    let first = only_subscription(&app, &customer).await;
    assert_eq!((first["status"].as_str(), first["trial_end"].is_i64()), (Some("trialing"), true));
    let user = app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await["metadata"]["userId"].as_str().unwrap().to_string();
    let mark = format!("tollgate:trialed:{user}");
    assert!(app.state.billing().kv.get(&mark).await.unwrap().is_some(), "the sync marks the user");
    assert!(!browser.get("/").await.text.contains("free trial"), "no longer promised");

    // The trial ends unpaid (cancelled now); without the mark, Stripe's history still says no.
    let end = |subscription: &serde_json::Value| format!("/v1/subscriptions/{}", subscription["id"].as_str().unwrap());
    app.stripe(Method::DELETE, &end(&first), &[]).await;
    app.state.billing().kv.delete(&mark).await.unwrap();
    let again = subscribe_again(&app, &browser).await;
    assert_eq!(again.0, customer);
    assert_eq!((again.1["status"].as_str(), again.1["trial_end"].is_null()), (Some("active"), true), "{}", again.1);
    assert!(app.state.billing().kv.get(&mark).await.unwrap().is_some(), "marked again from the history");

    // The customer deleted in Stripe: the replacement has no history, and the mark still says no.
    app.stripe(Method::DELETE, &end(&again.1), &[]).await;
    app.stripe(Method::DELETE, &format!("/v1/customers/{customer}"), &[]).await;
    let third = subscribe_again(&app, &browser).await;
    assert_ne!(third.0, customer, "a new customer");
    assert_eq!((third.1["status"].as_str(), third.1["trial_end"].is_null()), (Some("active"), true), "{}", third.1);
}

/// `TRIAL_REQUIRES_CARD=false`: Checkout asks for no card, and the trial ends as
/// `TRIAL_END_WITHOUT_CARD` says.
#[tokio::test]
async fn a_trial_without_a_card() {
    let extra = vec![("TRIAL_DAYS", "14".into()), ("TRIAL_REQUIRES_CARD", "false".into()), ("TRIAL_END_WITHOUT_CARD", "pause".into())];
    let app = spawn_app_with(Options { extra, ..Options::default() }).await;
    let browser = app.signed_in("cardless@example.com").await;
    assert!(browser.get("/").await.text.contains("14-day free trial, no card needed"));
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    let session_id = started.json()["sessionId"].as_str().unwrap().to_string();
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await;
    assert_eq!(session["payment_method_collection"], "if_required");
    assert_eq!(app.pay(&session_id, "").await.status, 303, "paid without a card");
    let customer =
        app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await["customer"].as_str().unwrap().to_string();
    let subscription = only_subscription(&app, &customer).await;
    assert_eq!(subscription["status"], "trialing");
    assert_eq!(subscription["default_payment_method"], serde_json::Value::Null);
    assert_eq!(subscription["trial_settings"]["end_behavior"]["missing_payment_method"], "pause");
}

/// The customer's one subscription that is not cancelled.
async fn only_subscription(app: &TestApp, customer: &str) -> serde_json::Value {
    let list = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", customer)]).await;
    let live = list["data"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{list}");
    live[0].clone()
}

/// Checkout once more, paid with a card: the customer it was for, and its new subscription.
async fn subscribe_again(app: &TestApp, browser: &Browser) -> (String, serde_json::Value) {
    browser.get("/success").await; // the ended subscription synced: a new checkout is allowed
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let session_id = started.json()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(app.pay(&session_id, "4242424242424242").await.status, 303);
    let customer =
        app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await["customer"].as_str().unwrap().to_string();
    let subscription = only_subscription(app, &customer).await;
    (customer, subscription)
}

/// `ALLOW_PROMOTION_CODES`: Checkout takes a code; what it takes off, and until when, is in the
/// cache entry (`discount`) and on the dashboard.
#[tokio::test]
async fn a_promotion_code_at_checkout_shows_on_the_dashboard() {
    let app = spawn_app_with(Options { extra: vec![("ALLOW_PROMOTION_CODES", "true".into())], ..Options::default() }).await;
    let coupon = app
        .stripe(
            Method::POST,
            "/v1/coupons",
            &[("percent_off", "20"), ("duration", "repeating"), ("duration_in_months", "2"), ("name", "Launch")],
        )
        .await;
    let coupon_id = coupon["id"].as_str().unwrap().to_string();
    app.stripe(
        Method::POST,
        "/v1/promotion_codes",
        &[("promotion[type]", "coupon"), ("promotion[coupon]", &coupon_id), ("code", "LAUNCH")],
    )
    .await;
    let browser = app.signed_in("early@example.com").await;
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    let session_id = started.json()["sessionId"].as_str().unwrap().to_string();
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await;
    assert_eq!(session["allow_promotion_codes"], true);
    let paid =
        test_support::pay_checkout(&app.stripe_url, &session_id, &[("card_number", "4242424242424242"), ("promotion_code", "launch")])
            .await;
    assert_eq!(paid.status, 303);
    browser.get("/success").await;
    let customer =
        app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await["customer"].as_str().unwrap().to_string();
    let cached = app.cache(&customer).await.unwrap();
    let discount = &cached["discount"];
    assert_eq!(
        (discount["coupon"].as_str(), discount["promotionCode"].as_str(), discount["percentOff"].as_f64()),
        (Some("Launch"), Some("LAUNCH"), Some(20.0))
    );
    let end = discount["end"].as_i64().expect("a repeating coupon ends");
    assert_eq!(cached["status"], "active", "the recipe's fields as before: {cached}");
    let dashboard = browser.get("/dashboard").await.text;
    let shown = format!("LAUNCH: 20% off until {}", billing_text::date(end));
    assert!(dashboard.contains(&shown), "{shown} in {dashboard}");
}
