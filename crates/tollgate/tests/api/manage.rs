//! What a subscriber changes in the app rather than in Stripe's portal.

use reqwest::Method;

use crate::helpers::{spawn_app, MONTHLY};

/// Cancel at the period's end from the app, then resume: Stripe's subscription follows, the
/// cache and the dashboard show it at once, access stays meanwhile; with nothing to cancel, 409.
#[tokio::test]
async fn cancel_at_period_end_and_resume_from_the_app() {
    let app = spawn_app().await;
    let nobody = app.signed_in("nothing@example.com").await;
    let refused = nobody.json_post("/api/subscription/cancel", &serde_json::json!({})).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (404, Some("no_billing_account")));
    let (browser, customer) = app.subscribed("leaving@example.com", MONTHLY).await;
    browser.get("/success").await;
    assert!(browser.get("/dashboard").await.text.contains("id=\"cancel-at-period-end\""));

    let cancelled = browser.json_post("/api/subscription/cancel", &serde_json::json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!((cancelled.json()["cancelAtPeriodEnd"].as_bool(), cancelled.json()["entitled"].as_bool()), (Some(true), Some(true)));
    let subscriptions = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
    assert_eq!(subscriptions["data"][0]["cancel_at_period_end"], true);
    assert_eq!(app.cache(&customer).await.unwrap()["cancelAtPeriodEnd"], true);
    let dashboard = browser.get("/dashboard").await.text;
    assert!(dashboard.contains("id=\"cancels\"") && dashboard.contains("id=\"resume\""), "{dashboard}");

    let resumed = browser.form("/api/subscription/resume", &[]).await;
    assert_eq!((resumed.status, resumed.location()), (303, "/dashboard?notice=resumed"));
    let subscriptions = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
    assert_eq!(
        (subscriptions["data"][0]["cancel_at_period_end"].as_bool(), subscriptions["data"][0]["cancel_at"].is_null()),
        (Some(false), true)
    );
    let dashboard = browser.get("/dashboard?notice=resumed").await.text;
    assert!(!dashboard.contains("id=\"cancels\"") && dashboard.contains("renews as before"), "{dashboard}");

    // Ended in Stripe: nothing left to cancel.
    let id = subscriptions["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/subscriptions/{id}"), &[]).await;
    let refused = browser.json_post("/api/subscription/cancel", &serde_json::json!({})).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (409, Some("no_subscription")));
    assert!(!browser.get("/dashboard").await.text.contains("id=\"cancel-at-period-end\""));
}
