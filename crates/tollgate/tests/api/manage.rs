//! What a subscriber changes in the app rather than in Stripe's portal.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_against, spawn_emulator, stripe_api, Options, MONTHLY, YEARLY};

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

/// Basic → preview of Pro (Stripe's own proration) → upgrade, charged exactly the preview, Pro
/// at once → downgrade to Basic, waiting for the period's end (the schedule in the cache) → the
/// period ends → Basic, billed at Basic's price. At each step the cache says what Stripe says.
#[tokio::test]
async fn plan_changes_upgrade_now_and_downgrade_at_the_period_end() {
    let stripe_url = spawn_emulator().await;
    let http = reqwest::Client::new();
    let product = stripe_api(&http, &stripe_url, Method::POST, "/v1/products", &[("name", "Basic")]).await;
    let form =
        [("product", product["id"].as_str().unwrap()), ("unit_amount", "400"), ("currency", "usd"), ("recurring[interval]", "month")];
    let basic = stripe_api(&http, &stripe_url, Method::POST, "/v1/prices", &form).await["id"].as_str().unwrap().to_string();
    let plans = format!("{basic},{MONTHLY},{YEARLY}");
    let app = spawn_app_against(&stripe_url, Options { extra: vec![("PLANS", plans)], ..Options::default() }).await;
    let (browser, customer) = app.subscribed("grower@example.com", &basic).await;
    browser.get("/success").await;
    let agrees = || async {
        let mut cached = app.cache(&customer).await.unwrap();
        let schedule = (cached["scheduledPriceId"].take(), cached["scheduledAt"].take());
        let object = cached.as_object_mut().unwrap();
        object.retain(|_, v| !v.is_null());
        assert_eq!(cached, app.expected_cache(&customer).await, "the cache says what Stripe says");
        schedule
    };
    assert_eq!(agrees().await, (Value::Null, Value::Null));

    let preview = browser.get_json(&format!("/api/plan-preview?price={MONTHLY}")).await.json();
    assert_eq!(preview["takesEffect"], "now", "{preview}");
    let due = preview["amountDue"].as_i64().unwrap();
    assert!((590..=600).contains(&due), "the rest of the period on Pro less what Basic had left: {preview}");
    assert_eq!(preview["lines"].as_array().unwrap().len(), 2);
    let body = json!({ "priceId": MONTHLY, "prorationDate": preview["prorationDate"] });
    let upgraded = browser.json_post("/api/change-plan", &body).await;
    assert_eq!((upgraded.status, upgraded.json()["priceId"].as_str()), (200, Some(MONTHLY)), "{}", upgraded.text);
    let subscription = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
    let invoice = app.stripe(Method::GET, &format!("/v1/invoices/{}", subscription["latest_invoice"].as_str().unwrap()), &[]).await;
    assert_eq!(
        (invoice["billing_reason"].as_str(), invoice["amount_paid"].as_i64()),
        (Some("subscription_update"), Some(due)),
        "charged the preview"
    );
    assert_eq!(agrees().await, (Value::Null, Value::Null));
    assert!(browser.get("/dashboard").await.text.contains("id=\"terms-"), "the other plans with their terms");

    let period_end = subscription["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    let later = browser.get_json(&format!("/api/plan-preview?price={basic}")).await.json();
    assert_eq!(
        (later["takesEffect"].as_str(), later["at"].as_i64(), later["amountDue"].as_i64()),
        (Some("periodEnd"), Some(period_end), Some(0))
    );
    let yearly = browser.get_json(&format!("/api/plan-preview?price={YEARLY}")).await.json();
    assert_eq!(yearly["takesEffect"], "periodEnd", "another interval switches at the period's end");
    let scheduled = browser.form("/api/change-plan", &[("priceId", &basic)]).await;
    assert_eq!((scheduled.status, scheduled.location()), (303, "/dashboard?notice=plan-scheduled"));
    assert_eq!(agrees().await, (json!(basic), json!(period_end)));
    assert!(browser.get("/dashboard").await.text.contains("id=\"scheduled\">Basic"), "the switch is shown");
    assert_eq!(browser.json_post("/api/change-plan", &json!({ "priceId": MONTHLY })).await.json()["error"]["code"], "same_plan");

    // The period ends (and its invoice, drafted for an hour, is charged): Basic from then on.
    let seconds = period_end - tollgate_core::unix_now() + 3600 + 60;
    let advanced =
        http.post(format!("{stripe_url}/_emulator/clock/advance")).form(&[("seconds", seconds.to_string())]).send().await.unwrap();
    assert_eq!(advanced.status(), 200);
    browser.get("/success").await;
    assert_eq!(agrees().await, (Value::Null, Value::Null));
    let renewed = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
    assert_eq!(renewed["items"]["data"][0]["price"]["id"], basic.as_str());
    let invoice = app.stripe(Method::GET, &format!("/v1/invoices/{}", renewed["latest_invoice"].as_str().unwrap()), &[]).await;
    assert_eq!(invoice["amount_due"], 400);
}

/// An upgrade whose payment fails keeps the old plan (Stripe's `pending_if_incomplete`): 402
/// `payment_failed`, and the cache still says the old price.
#[tokio::test]
async fn an_upgrade_whose_payment_fails_keeps_the_old_plan() {
    let stripe_url = spawn_emulator().await;
    let http = reqwest::Client::new();
    let form = [("product", "prod_pro"), ("unit_amount", "5000"), ("currency", "usd"), ("recurring[interval]", "month")];
    let dearer = stripe_api(&http, &stripe_url, Method::POST, "/v1/prices", &form).await["id"].as_str().unwrap().to_string();
    let app = spawn_app_against(&stripe_url, Options { extra: vec![("PLANS", format!("{MONTHLY},{dearer}"))], ..Options::default() }).await;
    let (browser, customer) = app.subscribed("declined@example.com", MONTHLY).await;
    browser.get("/success").await;
    let subscription = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
    let failing = app.stripe(Method::POST, "/v1/payment_methods/pm_card_chargeCustomerFail/attach", &[("customer", &customer)]).await;
    let id = subscription["id"].as_str().unwrap();
    app.stripe(Method::POST, &format!("/v1/subscriptions/{id}"), &[("default_payment_method", failing["id"].as_str().unwrap())]).await;

    let refused = browser.json_post("/api/change-plan", &json!({ "priceId": dearer })).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (402, Some("payment_failed")), "{}", refused.text);
    assert_eq!(app.cache(&customer).await.unwrap()["priceId"], MONTHLY, "the old plan stays");
    let page = browser.form("/api/change-plan", &[("priceId", &dearer)]).await;
    assert_eq!((page.status, page.location()), (303, "/dashboard?notice=payment-failed"));
}

/// Hostile or malformed plan-change requests: a 4xx naming what is wrong, and the plan untouched.
#[tokio::test]
async fn malformed_plan_changes_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("careful@example.com", MONTHLY).await;
    browser.get("/success").await;
    for (query, code) in [
        ("", "invalid_price"),
        ("?price=", "invalid_price"),
        ("?price=%3Cscript%3E", "invalid_price"),
        ("?price=price_nope", "plan_not_offered"),
    ] {
        let r = browser.get_json(&format!("/api/plan-preview{query}")).await;
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some(code)), "{query}: {}", r.text);
    }
    let same = browser.get_json(&format!("/api/plan-preview?price={MONTHLY}")).await;
    assert_eq!((same.status, same.json()["error"]["code"].as_str()), (409, Some("same_plan")));
    let bodies = [
        (r#"{"priceId": 12}"#, "invalid_json"),
        (r#"{"priceId": "price_pro_yearly", "prorationDate": "soon"}"#, "invalid_json"),
        ("{not json", "invalid_json"),
        (r#"{"priceId": "prod_x"}"#, "invalid_price"),
        (r#"{}"#, "invalid_price"),
    ];
    for (body, code) in bodies {
        let headers = [("content-type", "application/json"), ("x-csrf-token", &browser.csrf().unwrap())];
        let r = browser.send(Method::POST, "/api/change-plan", &headers, Some(body.as_bytes().to_vec())).await;
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some(code)), "{body}: {}", r.text);
    }
    let page = browser.form("/api/change-plan", &[("priceId", "<script>alert(1)</script>")]).await;
    assert_eq!(page.status, 400, "{}", page.text);
    assert!(!page.text.contains("<script>alert"), "escaped on the page");
    assert_eq!(app.cache(&customer).await.unwrap()["priceId"], MONTHLY, "nothing changed");
    assert!(app.cache(&customer).await.unwrap().get("scheduledPriceId").is_none());
}
