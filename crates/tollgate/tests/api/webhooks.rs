//! The webhook endpoint: signatures checked on the raw body before anything is parsed; nothing is
//! processed for a bad one; a good one is recorded durably and synced by the drain, which retries
//! while Stripe is down.

use serde_json::json;

use tollgate_core::unix_now as now;

use crate::helpers::{signature, spawn_app, spawn_app_against, Options, MONTHLY, WEBHOOK_SECRET};

#[tokio::test]
async fn bad_missing_stale_and_replayed_signatures_change_nothing() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("sig@example.com", MONTHLY).await;
    let before = app.cache(&customer).await;
    assert_eq!(before.as_ref().unwrap()["status"], "none");
    let event = app.events_for(&customer).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    let body = serde_json::to_vec(&event).unwrap();
    let other_secret = stripe_emulator::signature_header("whsec_not_ours", now(), &body);
    let tampered = {
        let mut e = event.clone();
        e["data"]["object"]["customer"] = json!("cus_someoneelse");
        serde_json::to_vec(&e).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("missing", body.clone(), String::new()),
        ("garbage", body.clone(), "not a signature".into()),
        ("no v1", body.clone(), format!("t={}", now())),
        ("other secret", body.clone(), other_secret),
        ("tampered body", tampered, signature(&body, now())),
        ("stale", body.clone(), signature(&body, now() - 301)),
        ("replayed an hour later", body.clone(), signature(&body, now() - 3600)),
        ("v0 only", body.clone(), signature(&body, now()).replace("v1=", "v0=")),
    ];
    let requests_before = app.stripe_requests();
    for (what, payload, sig) in cases {
        let r = if sig.is_empty() {
            let request = app.http.post(format!("{}/api/stripe-webhook", app.url)).body(payload);
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        } else {
            let r = app.deliver_raw(&payload, &sig).await;
            (r.status, r.text)
        };
        assert_eq!(r.0, 400, "{what}: {}", r.1);
        let error: serde_json::Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(error["error"]["code"], "invalid_signature", "{what}");
    }
    assert_eq!(app.stripe_requests(), requests_before, "nothing was processed");
    assert_eq!(app.cache(&customer).await, before, "the KV did not change");
    // The genuine delivery is processed.
    app.deliver_all_and_settle(&[event]).await;
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "active");
    drop(browser);
}

#[tokio::test]
async fn bodies_that_are_not_events_or_not_tracked() {
    let app = spawn_app().await;
    let sign = |body: &[u8]| signature(body, now());
    let not_json = b"this is not json".to_vec();
    let r = app.deliver_raw(&not_json, &sign(&not_json)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_event");
    let wrong_shape = br#"{"id": 5}"#.to_vec();
    assert_eq!(app.deliver_raw(&wrong_shape, &sign(&wrong_shape)).await.status, 400);
    let huge = vec![b' '; 600 * 1024];
    let r = app.deliver_raw(&huge, &sign(&huge)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    for (event_type, customer) in
        [("product.created", json!("cus_x")), ("payment_intent.succeeded", json!(null)), ("invoice.paid", json!({"id": "cus_x"}))]
    {
        let r =
            app.deliver(&json!({"id": "evt_1", "object": "event", "type": event_type, "data": {"object": {"customer": customer}}})).await;
        assert_eq!(r.status, 200, "{event_type}");
        assert_eq!(r.json()["queued"], false);
    }
    for id in ["", "evt_../../x", "evt_\u{0}x"] {
        let body = json!({"id": id, "object": "event", "type": "invoice.paid", "data": {"object": {"customer": "cus_x"}}}).to_string();
        let r = app.deliver_raw(body.as_bytes(), &sign(body.as_bytes())).await;
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_event")), "event id {id:?}");
    }
    assert!(app.state.billing().kv.pending_customers(10).await.unwrap().is_empty(), "nothing recorded for refused events");
}

#[tokio::test]
async fn stripe_down_the_event_is_kept_and_synced_once_stripe_is_back() {
    // Stripe at an address where nothing listens yet.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = spawn_app_against(&format!("http://{closed}"), Options::default()).await;
    let customer = "cus_down";
    let event = json!({"id": "evt_down", "object": "event", "type": "invoice.paid", "data": {"object": {"customer": customer}}});
    let r = app.deliver(&event).await;
    assert_eq!((r.status, r.json()["queued"].as_bool()), (200, Some(true)), "recorded durably: {}", r.text);
    // The drain tries (once its debounce is over), fails, and keeps the mark.
    app.clock.advance(std::time::Duration::from_millis(100));
    let tried = || async { (app.stripe_requests() >= 1).then_some(()) };
    test_support::eventually("the drain tried Stripe", std::time::Duration::from_secs(5), tried).await;
    assert!(app.state.billing().kv.pending_generation(customer).await.unwrap().is_some(), "still pending while Stripe is down");
    assert!(app.cache(customer).await.is_none());
    // A person waiting on Stripe gets a retryable 5xx without internals.
    let browser = app.signed_in("waiting@example.com").await;
    let r = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert!(!r.text.contains(&closed.to_string()), "no internals in the answer");

    // Stripe comes back at the same address: the drain's retry brings the customer in step.
    let _stripe = crate::helpers::spawn_emulator_with(stripe_emulator::EmulatorConfig { bind: closed, ..crate::helpers::seeded() }).await;
    app.settled().await;
    assert_eq!(app.cache(customer).await.unwrap(), json!({ "status": "none" }), "synced: Stripe knows no subscription for it");
    let _ = WEBHOOK_SECRET;
}
