//! Checkout: one customer per user however many clicks, only offered plans, never a second subscription.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, MONTHLY, YEARLY};

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
    let sessions = app.stripe(Method::GET, "/v1/checkout/sessions", &[("customer", customer)]).await;
    assert_eq!(sessions["data"].as_array().unwrap().len(), 4, "every session is for that customer");
    let user_id = customers["data"][0]["metadata"]["userId"].as_str().unwrap();
    let mapped = app.state.billing.kv.get(&format!("stripe:user:{user_id}")).await.unwrap();
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
    assert_eq!(app.state.billing.kv.get(&format!("stripe:user:{user_id}")).await.unwrap().as_deref(), Some(new), "remapped");
}
