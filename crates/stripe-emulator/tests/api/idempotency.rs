use reqwest::Method;

use crate::helpers::{spawn_emulator, KEY};

#[tokio::test]
async fn same_key_replays_and_other_parameters_are_refused() {
    let emu = spawn_emulator(vec![]).await;
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "user_42-customer")];
    let form = [("email", "idem@example.com"), ("metadata[userId]", "user_42")];
    let first = emu.call_with(Method::POST, "/v1/customers", &form, &headers).await;
    assert_eq!(first.status, 200);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Same parameters in another order: replayed, same object, flagged.
    let reordered = [form[1], form[0]];
    let second = emu.call_with(Method::POST, "/v1/customers", &reordered, &headers).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body, first.body);
    let list = emu.get("/v1/customers", &[("email", "idem@example.com")]).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "one customer, not two");

    let other = emu.call_with(Method::POST, "/v1/customers", &[("email", "else@example.com")], &headers).await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["error"]["type"], "idempotency_error");
    let other_path = emu.call_with(Method::POST, "/v1/products", &[("name", "X")], &headers).await;
    assert_eq!(other_path.body["error"]["type"], "idempotency_error");

    // A request refused for its parameters is not stored: the key can be used again, corrected.
    let key = [("authorization", auth.as_str()), ("idempotency-key", "retry-after-fix")];
    let bad = emu.call_with(Method::POST, "/v1/customers", &[("emial", "x@example.com")], &key).await;
    assert_eq!(bad.status, 400);
    let fixed = emu.call_with(Method::POST, "/v1/customers", &[("email", "x@example.com")], &key).await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);

    // Failures after the endpoint ran are replayed too (a 404 here).
    let key = [("authorization", auth.as_str()), ("idempotency-key", "missing-customer")];
    let missing = emu.call_with(Method::POST, "/v1/customers/cus_nope", &[("name", "x")], &key).await;
    assert_eq!(missing.status, 404);
    let again = emu.call_with(Method::POST, "/v1/customers/cus_nope", &[("name", "x")], &key).await;
    assert_eq!(again.status, 404);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let long = "k".repeat(256);
    let too_long =
        emu.call_with(Method::POST, "/v1/customers", &[], &[("authorization", auth.as_str()), ("idempotency-key", long.as_str())]).await;
    assert_eq!(too_long.status, 400);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_object() {
    let emu = spawn_emulator(vec![]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let emu = emu.clone();
        tasks.spawn(async move {
            let auth = format!("Bearer {KEY}");
            emu.call_with(
                Method::POST,
                "/v1/customers",
                &[("email", "race@example.com")],
                &[("authorization", &auth), ("idempotency-key", "race")],
            )
            .await
        });
    }
    let replies: Vec<_> = tasks.join_all().await;
    let ids: std::collections::HashSet<String> =
        replies.iter().filter(|r| r.status == 200).map(|r| r.body["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "every success names the same customer");
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 409), "others are told to retry (409)");
    let list = emu.get("/v1/customers", &[("email", "race@example.com")]).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}
