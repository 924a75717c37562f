//! A subscription's life after Checkout, on a Stripe test clock: the trial, the first charge, a
//! renewal whose card fails, each retry of the dunning schedule, and the end state. At each step
//! the exact events the emulator sent are delivered to Tollgate, and its cache must show the
//! status and the entitlement its policy gives (here `PAST_DUE_GRACE=true`: past_due keeps access).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app_with, Browser, Options, TestApp, MONTHLY};

const DAY: i64 = 86_400;

struct Timeline<'a> {
    app: &'a TestApp,
    customer: String,
    clock: String,
    /// How many of the customer's events have been delivered to Tollgate so far.
    delivered: usize,
}

impl Timeline<'_> {
    /// Move the clock to `to`, wait until it is ready, and return the types of the customer's new
    /// events after delivering them to Tollgate in order.
    async fn advance(&mut self, to: i64) -> Vec<String> {
        let started = self
            .app
            .stripe(Method::POST, &format!("/v1/test_helpers/test_clocks/{}/advance", self.clock), &[("frozen_time", &to.to_string())])
            .await;
        assert_eq!(started["status"], "advancing", "{started}");
        let path = format!("/v1/test_helpers/test_clocks/{}", self.clock);
        let ready = || async { (self.app.stripe(Method::GET, &path, &[]).await["status"] == "ready").then_some(()) };
        test_support::eventually("the test clock done advancing", Duration::from_secs(5), ready).await;
        self.deliver_new().await
    }

    async fn deliver_new(&mut self) -> Vec<String> {
        let events = self.app.events_for(&self.customer).await;
        let new: Vec<Value> = events[self.delivered..].to_vec();
        self.delivered = events.len();
        self.app.deliver_all_and_settle(&new).await;
        new.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }

    /// What the product sees: (status, entitled) from `/api/subscription`, and the cache equal to
    /// what the emulator says.
    async fn seen_by(&self, browser: &Browser) -> (String, bool) {
        assert_eq!(
            self.app.cache(&self.customer).await.unwrap(),
            self.app.expected_cache(&self.customer).await,
            "the cache follows Stripe"
        );
        let api = browser.get_json("/api/subscription").await.json();
        (api["status"].as_str().unwrap_or_default().to_string(), api["entitled"].as_bool().unwrap())
    }
}

#[tokio::test]
async fn trial_first_charge_failed_renewal_retries_and_the_end() {
    let options = Options { extra: vec![("TRIAL_DAYS", "7".into()), ("PAST_DUE_GRACE", "true".into())], ..Options::default() };
    let app = spawn_app_with(options).await;
    let (browser, customer) = app.subscribed("lifecycle@example.com", MONTHLY).await;
    let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let start = sub["created"].as_i64().unwrap();
    let trial_end = sub["trial_end"].as_i64().unwrap();
    assert_eq!(trial_end - start, 7 * DAY);
    // The customer moves under a test clock set at the subscription's start.
    let clock =
        app.stripe(Method::POST, "/v1/test_helpers/test_clocks", &[("frozen_time", &start.to_string()), ("customer", &customer)]).await;
    let mut timeline = Timeline { app: &app, customer: customer.clone(), clock: clock["id"].as_str().unwrap().to_string(), delivered: 0 };
    let checkout = timeline.deliver_new().await;
    assert_eq!(
        checkout,
        [
            "payment_method.attached", "customer.subscription.created", "invoice.created", "invoice.finalized", "invoice.paid",
            "invoice.payment_succeeded", "invoice.updated", "checkout.session.completed",
        ],
        "a trial's first invoice is for nothing, so nothing is charged"
    );
    assert_eq!(timeline.seen_by(&browser).await, ("trialing".into(), true));

    // Three days before the trial ends: the notice.
    assert_eq!(timeline.advance(trial_end - 3 * DAY + 60).await, ["customer.subscription.trial_will_end"]);
    assert_eq!(timeline.seen_by(&browser).await, ("trialing".into(), true));

    // The trial ends: a draft invoice, then an hour later the first charge.
    assert_eq!(timeline.advance(trial_end + 60).await, ["invoice.created", "customer.subscription.updated"]);
    assert_eq!(timeline.seen_by(&browser).await, ("active".into(), true));
    assert_eq!(
        timeline.advance(trial_end + 3600 + 60).await,
        [
            "invoice.finalized", "payment_intent.created", "payment_intent.succeeded", "charge.succeeded", "invoice.paid",
            "invoice.payment_succeeded", "invoice.updated"
        ]
    );
    assert_eq!(timeline.seen_by(&browser).await, ("active".into(), true));

    // The card starts failing.
    let failing = app.stripe(Method::POST, "/v1/payment_methods/pm_card_chargeCustomerFail/attach", &[("customer", &customer)]).await;
    app.stripe(Method::POST, &format!("/v1/subscriptions/{sub_id}"), &[("default_payment_method", failing["id"].as_str().unwrap())]).await;
    assert_eq!(timeline.deliver_new().await, ["payment_method.attached", "customer.subscription.updated"]);

    // The renewal fails: past_due, still entitled under the grace policy.
    let renewal = app.stripe(Method::GET, &format!("/v1/subscriptions/{sub_id}"), &[]).await["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    let attempt = renewal + 3600;
    assert_eq!(
        timeline.advance(attempt + 60).await,
        [
            "invoice.upcoming", "invoice.created", "customer.subscription.updated", "invoice.finalized", "payment_intent.created",
            "payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated", "customer.subscription.updated",
        ]
    );
    assert_eq!(timeline.seen_by(&browser).await, ("past_due".into(), true));

    // Each retry of the default schedule (3, 5 and 7 days apart) fails in turn.
    for (day, last) in [(3, false), (8, false), (15, true)] {
        let mut expected = vec!["payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated"];
        if last {
            expected.push("customer.subscription.deleted");
        }
        assert_eq!(timeline.advance(attempt + day * DAY + 60).await, expected, "retry {day} days after the first attempt");
        let seen = timeline.seen_by(&browser).await;
        assert_eq!(seen, if last { ("canceled".into(), false) } else { ("past_due".into(), true) }, "after the retry on day {day}");
    }
    let invoice = app.stripe(Method::GET, "/v1/invoices", &[("customer", &customer), ("limit", "1")]).await["data"][0].clone();
    assert_eq!(invoice["attempt_count"], 4);
    assert!(invoice["next_payment_attempt"].is_null());
    assert_eq!(browser.get_json("/app").await.status, 402, "the product refuses a canceled subscription");
}
