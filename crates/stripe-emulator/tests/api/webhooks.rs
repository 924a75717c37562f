use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::{id, spawn_emulator, wait_until, webhook, Receiver};

const SECRET: &str = "whsec_webhook_suite";

fn verify(headers: &axum::http::HeaderMap, body: &[u8], secret: &str) -> bool {
    let header = headers["stripe-signature"].to_str().unwrap();
    let t = header.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - t.parse::<i64>().unwrap()).abs() <= 5, "timestamp is current");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    header.split(',').filter_map(|p| p.strip_prefix("v1=")).any(|v| v == expected)
}

#[tokio::test]
async fn deliveries_are_signed_and_ordered() {
    let (receiver, url) = Receiver::start(0).await;
    let emu = spawn_emulator(vec![webhook(&url, SECRET)]).await;
    let (_, session) = emu.open_session(&[]).await;
    let paid = emu.pay(&session, "4242424242424242").await;
    assert_eq!(paid.status, 303);
    // Checkout holds its redirect until checkout.session.completed has been delivered.
    let types: Vec<String> = receiver.events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert!(types.contains(&"checkout.session.completed".to_string()), "delivered before the redirect: {types:?}");
    let expected = [
        "customer.created", "payment_method.attached", "customer.subscription.created", "invoice.created", "invoice.finalized",
        "payment_intent.created", "payment_intent.succeeded", "charge.succeeded", "invoice.paid", "invoice.payment_succeeded",
        "invoice_payment.paid", "invoice.updated", "customer.subscription.updated", "checkout.session.completed",
    ];
    assert_eq!(types, expected, "one action's events arrive in Stripe's order");
    // Checkout's subscription is announced `incomplete`; its first payment makes it `active`.
    let subscription_events: Vec<Value> =
        receiver.events().into_iter().filter(|e| e["type"].as_str().unwrap().starts_with("customer.subscription.")).collect();
    assert_eq!(subscription_events[0]["data"]["object"]["status"], "incomplete");
    assert_eq!(subscription_events[1]["data"]["object"]["status"], "active");
    assert_eq!(subscription_events[1]["data"]["previous_attributes"]["status"], "incomplete");
    for (headers, body, _) in receiver.received.lock().unwrap().iter() {
        assert!(verify(headers, body, SECRET), "valid v1 signature");
        assert!(!verify(headers, body, "whsec_other"));
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    }
    let event: Value = receiver.events()[2].clone();
    assert_eq!(event["object"], "event");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["pending_webhooks"], 1);
    assert!(event["api_version"].as_str().unwrap().contains('.'));
    assert_eq!(event["data"]["object"]["object"], "subscription");
    let stored = emu.get(&format!("/v1/events/{}", id(&event)), &[]).await;
    assert_eq!(stored["type"], event["type"]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff() {
    let (receiver, url) = Receiver::start(2).await;
    let emu = spawn_emulator(vec![webhook(&url, SECRET)]).await;
    emu.customer("retry@example.com").await;
    wait_until("three attempts", || receiver.count() >= 3).await;
    let times: Vec<Instant> = receiver.received.lock().unwrap().iter().map(|(_, _, t)| *t).collect();
    let (gap1, gap2) = (times[1] - times[0], times[2] - times[1]);
    assert!(gap1 >= Duration::from_millis(45), "first retry after the base delay: {gap1:?}");
    assert!(gap2 >= Duration::from_millis(95), "second retry waits twice as long: {gap2:?}");
    let log: Value =
        serde_json::from_str(&emu.client.get(format!("{}/_emulator/deliveries", emu.url)).send().await.unwrap().text().await.unwrap())
            .unwrap();
    let attempts: Vec<(u64, Option<u64>)> =
        log["data"].as_array().unwrap().iter().map(|d| (d["attempt"].as_u64().unwrap(), d["status_code"].as_u64())).collect();
    assert_eq!(attempts, vec![(1, Some(500)), (2, Some(500)), (3, Some(200))]);
    // Real time (as in the other delivery tests): deliveries are retried on real timers, which
    // the test config scales down; what must not happen is given a window to happen in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 3, "no attempts after a success");
}

#[tokio::test]
async fn endpoints_filter_disable_and_stop() {
    let (invoices, invoices_url) = Receiver::start(0).await;
    let (failing, failing_url) = Receiver::start(100).await;
    let emu = spawn_emulator(vec![]).await;
    let only_invoices = emu.post("/v1/webhook_endpoints", &[("url", &invoices_url), ("enabled_events[0]", "invoice.paid")]).await;
    assert!(only_invoices["secret"].as_str().unwrap().starts_with("whsec_"));
    let fetched = emu.get(&format!("/v1/webhook_endpoints/{}", id(&only_invoices)), &[]).await;
    assert!(fetched.get("secret").is_none(), "the secret is shown only at creation");
    let doomed = emu.post("/v1/webhook_endpoints", &[("url", &failing_url), ("enabled_events[]", "*")]).await;
    emu.subscribed_customer().await;
    wait_until("invoice.paid delivered", || invoices.count() >= 1).await;
    wait_until("first failing attempts", || failing.count() >= 2).await;
    emu.call(Method::DELETE, &format!("/v1/webhook_endpoints/{}", id(&doomed)), &[]).await;
    let after_delete = failing.count();
    tokio::time::sleep(Duration::from_millis(700)).await; // real time: a window for a retry
    assert_eq!(failing.count(), after_delete, "a deleted endpoint gets no more retries");
    let types: Vec<String> = invoices.events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, vec!["invoice.paid"]);
    let disabled = emu.post(&format!("/v1/webhook_endpoints/{}", id(&only_invoices)), &[("disabled", "true")]).await;
    assert_eq!(disabled["status"], "disabled");
    emu.subscribed_customer().await;
    tokio::time::sleep(Duration::from_millis(300)).await; // real time: a window for a delivery
    assert_eq!(invoices.count(), 1, "a disabled endpoint receives nothing");
    let secret = only_invoices["secret"].as_str().unwrap();
    let (headers, body, _) = invoices.received.lock().unwrap()[0].clone();
    assert!(verify(&headers, &body, secret));
}

#[tokio::test]
async fn api_calls_never_wait_for_deliveries() {
    // A receiver that never answers within the attempt timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await; // real time: slow for real

                "late"
            }),
        );
        axum::serve(listener, app).await
    });
    let emu = spawn_emulator(vec![webhook(&url, SECRET)]).await;
    let started = Instant::now();
    for i in 0..5 {
        emu.customer(&format!("fast{i}@example.com")).await;
    }
    assert!(started.elapsed() < Duration::from_millis(1000), "five creates took {:?}", started.elapsed());
}
