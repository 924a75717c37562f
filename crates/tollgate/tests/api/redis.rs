//! Redis as the KV: the recipe's keys shared with another Redis client, managed-Redis connection
//! details (TLS with a CA made here, an ACL user with a percent-encoded password), and a
//! redis-server killed mid-flow: no event is acknowledged whose sync is then lost.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{customers_with_subscriptions, spawn_app_with, Options, MONTHLY};
use crate::redis_server::{RedisOptions, RedisServer};

#[tokio::test]
async fn the_recipe_app_and_tollgate_share_one_redis() {
    let redis = RedisServer::start();
    let app = spawn_app_with(Options { kv_url: redis.url(), ..Options::default() }).await;
    let (browser, customer) = app.subscribed("redis@example.com", MONTHLY).await;
    browser.get("/success").await;
    // Another Redis client (the Next.js recipe's app, say) reads the same keys and shape.
    let cached: Value = serde_json::from_str(&redis.cli(&["GET", &format!("stripe:customer:{customer}")])).unwrap();
    assert_eq!(cached, app.expected_cache(&customer).await);
    assert_eq!(cached["paymentMethod"]["last4"], "4242");

    // And what that app writes, Tollgate serves: a user mapped and cached by the other app.
    let other = app.signed_in("from-nextjs@example.com").await;
    let user_id = app.state.billing().kv.get("tollgate:account:from-nextjs@example.com").await.unwrap().unwrap();
    let user_id = serde_json::from_str::<Value>(&user_id).unwrap()["id"].as_str().unwrap().to_string();
    redis.cli(&["SET", &format!("stripe:user:{user_id}"), "cus_written_by_nextjs"]);
    redis.cli(&[
        "SET",
        "stripe:customer:cus_written_by_nextjs",
        r#"{"subscriptionId":"sub_x","status":"trialing","priceId":"price_pro_monthly","currentPeriodEnd":1900000000,"currentPeriodStart":1890000000,"cancelAtPeriodEnd":false,"paymentMethod":null}"#,
    ]);
    // Sessions expire in Redis itself (and are stored under a hash of their token).
    let session_keys = redis.cli(&["--scan", "--pattern", "tollgate:session:*"]);
    let first = session_keys.lines().next().expect("a session key");
    assert_eq!(first.len(), "tollgate:session:".len() + 64, "a SHA-256 hex digest: {first}");
    let ttl: i64 = redis.cli(&["PTTL", first]).parse().unwrap();
    assert!(ttl > 29 * 86_400 * 1000, "expires with the session: {ttl} ms");
    let api = other.get_json("/api/subscription").await.json();
    assert_eq!(
        (api["status"].as_str(), api["entitled"].as_bool(), api["subscriptionId"].as_str()),
        (Some("trialing"), Some(true), Some("sub_x"))
    );
}

#[tokio::test]
async fn tls_and_an_acl_user_with_an_encoded_password() {
    let password = "p@ss:w/rd%";
    let redis = RedisServer::start_with(RedisOptions { tls: true, user: Some(("tollgate".into(), password.into())), ..Default::default() });
    let ca = redis.dir.join("ca.crt");
    let url = format!("rediss://tollgate:p%40ss%3Aw%2Frd%25@localhost:{}/2", redis.port);
    let kv = tollgate_core::kv::redis::RedisKv::connect(&url, Some(&ca)).await.expect("TLS, user name and decoded password accepted");
    use tollgate_core::kv::Kv;
    kv.set("tls-check", "over TLS").await.unwrap();
    assert_eq!(kv.get("tls-check").await.unwrap().as_deref(), Some("over TLS"));

    // Without our CA the certificate is not trusted; with a wrong password the user is refused;
    // neither error shows the password.
    let untrusted = tollgate_core::kv::redis::RedisKv::connect(&url, None).await.err().expect("an unknown CA is refused").to_string();
    let wrong = format!("rediss://tollgate:not-it@localhost:{}/2", redis.port);
    let refused =
        tollgate_core::kv::redis::RedisKv::connect(&wrong, Some(&ca)).await.err().expect("a wrong password is refused").to_string();
    for message in [&untrusted, &refused] {
        assert!(message.starts_with("KV_URL:") && !message.contains("p@ss") && !message.contains("not-it"), "{message}");
    }

    // The whole app over it, configured the way an operator would.
    let app =
        spawn_app_with(Options { kv_url: url, extra: vec![("KV_TLS_CA_FILE", ca.display().to_string())], ..Options::default() }).await;
    let browser = app.signed_in("tls@example.com").await;
    assert_eq!(browser.get("/dashboard").await.status, 200);
}

#[tokio::test]
async fn redis_killed_mid_flow_loses_no_acknowledged_event() {
    let mut redis = RedisServer::start_with(RedisOptions { durable: true, ..Default::default() });
    let app = spawn_app_with(Options { kv_url: redis.url(), ..Options::default() }).await;
    let customers = customers_with_subscriptions(&app.http, &app.stripe_url, 12).await;
    let event_for = |customer: &str, n: usize| json!({"id": format!("evt_kill_{n}"), "object": "event", "type": "customer.subscription.updated", "data": {"object": {"customer": customer}}});
    // The first half is acknowledged and Redis dies at once, before the drain's syncs can run.
    for (n, customer) in customers.iter().enumerate().take(6) {
        let r = app.deliver(&event_for(customer, n)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    redis.kill();
    // While Redis is down: nothing is acknowledged, and Stripe keeps changing.
    let mut unacknowledged = Vec::new();
    for (n, customer) in customers.iter().enumerate().skip(6) {
        let event = event_for(customer, n);
        let r = app.deliver(&event).await;
        assert!(r.status >= 500, "KV down: the event must be redelivered, got {} {}", r.status, r.text);
        assert!(r.headers.contains_key("retry-after"));
        unacknowledged.push(event);
    }
    let sub =
        app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customers[0])]).await["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::POST, &format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", "true")]).await;
    unacknowledged.push(event_for(&customers[0], 100));
    let ready = app.browser().get_json("/readyz").await;
    assert_eq!((ready.status, ready.json()), (503, json!({"status": "unavailable", "kv": false, "stripe": true})), "no internals shown");

    redis.restart();
    // Stripe redelivers what was not acknowledged, until it is.
    for event in &unacknowledged {
        let accepted = || async { (app.deliver(event).await.status == 200).then_some(()) };
        test_support::eventually("the event accepted once Redis is back", std::time::Duration::from_secs(5), accepted).await;
    }
    app.settled().await;
    for customer in &customers {
        assert_eq!(app.cache(customer).await, Some(app.expected_cache(customer).await), "{customer} converged");
    }
    assert_eq!(app.cache(&customers[0]).await.unwrap()["cancelAtPeriodEnd"], true);
}
