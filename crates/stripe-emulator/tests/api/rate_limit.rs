//! `--rate-limit N`: above N requests per second the API answers Stripe's 429 `rate_limit`, before
//! idempotency (a 429 is never replayed), and recovers as the bucket refills.

use reqwest::Method;
use stripe_emulator::EmulatorConfig;

use crate::helpers::KEY;

#[tokio::test]
async fn requests_above_the_limit_get_stripes_429() {
    let emulator = crate::helpers::spawn_with(EmulatorConfig { rate_limit: Some(10), ..crate::helpers::seeded() }).await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(emulator.call(Method::GET, "/v1/customers", &[]).await);
    }
    let limited: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(
        (4..=5).contains(&limited.len()),
        "a bucket of 10, refilled at 10/s: {:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let first = limited[0];
    assert_eq!(first.body["error"]["type"], "invalid_request_error");
    assert_eq!(first.body["error"]["code"], "rate_limit");
    assert_eq!(first.headers["stripe-rate-limited-reason"], "global-rate");
    assert!(first.headers.contains_key("request-id"));

    // A limited POST is not stored under its idempotency key: the retry creates the customer.
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "rate-limited-create")];
    let created = || async {
        Some(emulator.call_with(Method::POST, "/v1/customers", &[("email", "a@example.com")], &headers).await).filter(|r| r.status != 429)
    };
    let outcome = test_support::eventually("the create past the limit", std::time::Duration::from_secs(5), created).await;
    assert_eq!(outcome.status, 200, "{}", outcome.text);
    assert!(!outcome.headers.contains_key("idempotent-replayed"));

    // Real time: the limiter's bucket refills by the second, as Stripe's does.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(emulator.call(Method::GET, "/v1/customers", &[]).await.status, 200, "the bucket refilled");
    let stats = emulator.client.get(format!("{}/_emulator/stats", emulator.url)).send().await.unwrap().text().await.unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["rate_limited"].as_u64().unwrap() >= limited.len() as u64, "{stats}");
}
