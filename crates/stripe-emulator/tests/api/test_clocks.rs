//! Test clocks and what happens after the first payment: renewals on the billing-cycle anchor,
//! failed renewals retried on the dunning schedule to the configured end state, cards that need
//! authentication, paused collection, paused subscriptions and resuming, the trial notice.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use stripe_emulator::model::calendar::days_from_civil;
use stripe_emulator::{Dunning, EmulatorConfig, FinalState};

use crate::helpers::{id, TestEmulator};

const DAY: i64 = 86_400;

/// 10:00 UTC on a date.
fn at(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d) * DAY + 10 * 3600
}

async fn spawn_with(dunning: Dunning) -> TestEmulator {
    crate::helpers::spawn_with(EmulatorConfig { dunning, ..crate::helpers::seeded() }).await
}

impl TestEmulator {
    async fn clock(&self, frozen_time: i64) -> String {
        let clock = self.post("/v1/test_helpers/test_clocks", &[("frozen_time", &frozen_time.to_string()), ("name", "suite")]).await;
        assert_eq!(clock["status"], "ready");
        assert_eq!(clock["object"], "test_helpers.test_clock");
        id(&clock)
    }

    /// Advance and wait until the clock is `ready` again (the advance itself answers `advancing`).
    async fn advance_clock(&self, clock: &str, to: i64) {
        let started = self.post(&format!("/v1/test_helpers/test_clocks/{clock}/advance"), &[("frozen_time", &to.to_string())]).await;
        assert_eq!(started["status"], "advancing");
        assert_eq!(started["status_details"]["advancing"]["target_frozen_time"], to);
        let path = format!("/v1/test_helpers/test_clocks/{clock}");
        let ready = || async { Some(self.get(&path, &[]).await).filter(|now| now["status"] == "ready") };
        let now = test_support::eventually("the clock ready", Duration::from_secs(5), ready).await;
        assert_eq!(now["frozen_time"], to);
    }

    /// A customer under `clock` whose default card is `card` (a test payment method id).
    async fn clocked_customer(&self, clock: &str, card: &str) -> String {
        let customer = self
            .post(
                "/v1/customers",
                &[
                    ("email", "clocked@example.com"),
                    ("test_clock", clock),
                    ("payment_method", card),
                    ("invoice_settings[default_payment_method]", card),
                ],
            )
            .await;
        assert_eq!(customer["test_clock"], clock);
        id(&customer)
    }

    /// The types of the events not seen before, oldest first. Stripe lists events by `created`,
    /// and a clock's objects have their events at the clock's (past) time, while the clock's own
    /// `advancing` and `ready` events carry the wall time: those two come last.
    async fn events_since(&self, seen: &mut HashSet<String>) -> Vec<String> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(last) = &after {
                query.push(("starting_after", last.clone()));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = self.get("/v1/events", &query).await;
            let data = page["data"].as_array().unwrap();
            events.extend(data.iter().filter(|e| !seen.contains(e["id"].as_str().unwrap())).cloned());
            after = data.last().map(id);
            if page["has_more"] != true {
                break;
            }
        }
        events.reverse();
        seen.extend(events.iter().map(id));
        events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }
}

#[tokio::test]
async fn a_test_clock_renews_on_the_anchor_and_hides_its_objects_from_plain_lists() {
    let emu = spawn_with(Dunning::default()).await;
    let jan31 = at(2025, 1, 31);
    let clock = emu.clock(jan31).await;
    let customer = emu.clocked_customer(&clock, "pm_card_visa").await;
    let sub = emu.post("/v1/subscriptions", &[("customer", &customer), ("items[0][price]", "price_pro_monthly")]).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["created"], jan31, "made at the clock's time");
    assert_eq!(sub["test_clock"], clock);
    assert_eq!(sub["billing_cycle_anchor"], jan31);
    assert_eq!(sub["items"]["data"][0]["current_period_end"], at(2025, 2, 28));

    // Clocked objects are left out of lists that do not ask for them, as in Stripe.
    let plain = emu.get("/v1/subscriptions", &[]).await;
    assert!(plain["data"].as_array().unwrap().iter().all(|s| s["id"] != sub["id"]));
    let by_clock = emu.get("/v1/subscriptions", &[("test_clock", &clock)]).await;
    assert_eq!(by_clock["data"][0]["id"], sub["id"]);
    assert!(emu.get("/v1/customers", &[]).await["data"].as_array().unwrap().iter().all(|c| c["id"] != customer.as_str()));
    assert_eq!(emu.get("/v1/customers", &[("test_clock", &clock)]).await["data"][0]["id"], customer.as_str());

    let mut seen = HashSet::new();
    emu.events_since(&mut seen).await;
    emu.advance_clock(&clock, at(2025, 2, 28) + 2 * 3600).await;
    let renewed = emu.get(&format!("/v1/subscriptions/{}", id(&sub)), &[("expand[]", "latest_invoice")]).await;
    assert_eq!(renewed["items"]["data"][0]["current_period_start"], at(2025, 2, 28));
    assert_eq!(renewed["items"]["data"][0]["current_period_end"], at(2025, 3, 31), "back to the anchor's day after February");
    assert_eq!(renewed["latest_invoice"]["status"], "paid");
    assert_eq!(renewed["latest_invoice"]["status_transitions"]["paid_at"], at(2025, 2, 28) + 3600, "collected an hour after the draft");
    assert_eq!(renewed["latest_invoice"]["test_clock"], clock);
    assert_eq!(
        emu.events_since(&mut seen).await,
        [
            "invoice.upcoming", "invoice.created", "customer.subscription.updated", "invoice.finalized", "payment_intent.created",
            "payment_intent.succeeded", "charge.succeeded", "invoice.paid", "invoice.payment_succeeded", "invoice_payment.paid",
            "invoice.updated", "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready",
        ]
    );

    // An advance is bounded by two periods of the shortest subscription, and only goes forward.
    let too_far = emu
        .call(Method::POST, &format!("/v1/test_helpers/test_clocks/{clock}/advance"), &[("frozen_time", &at(2025, 6, 1).to_string())])
        .await;
    assert_eq!(too_far.status, 400);
    let backwards =
        emu.call(Method::POST, &format!("/v1/test_helpers/test_clocks/{clock}/advance"), &[("frozen_time", &jan31.to_string())]).await;
    assert_eq!(backwards.status, 400);
    assert_eq!(backwards.body["error"]["param"], "frozen_time");

    // Deleting the clock deletes its customer and cancels the subscription.
    let deleted = emu.call(Method::DELETE, &format!("/v1/test_helpers/test_clocks/{clock}"), &[]).await;
    assert_eq!(deleted.body["deleted"], true);
    assert_eq!(emu.get(&format!("/v1/subscriptions/{}", id(&sub)), &[]).await["status"], "canceled");
    assert_eq!(emu.call(Method::GET, &format!("/v1/customers/{customer}"), &[]).await.body["deleted"], true);
    let types = emu.events_since(&mut seen).await;
    assert_eq!(types, ["customer.subscription.deleted", "customer.deleted", "test_helpers.test_clock.deleted"]);
}

#[tokio::test]
async fn a_failed_renewal_is_retried_on_schedule_then_ends_as_configured() {
    for (final_state, expected) in [(FinalState::Unpaid, "unpaid"), (FinalState::Canceled, "canceled"), (FinalState::PastDue, "past_due")] {
        let emu = spawn_with(Dunning { retry_days: vec![1, 2], final_state }).await;
        let start = at(2025, 3, 1);
        let clock = emu.clock(start).await;
        let customer = emu.clocked_customer(&clock, "pm_card_visa").await;
        let sub = emu.post("/v1/subscriptions", &[("customer", &customer), ("items[0][price]", "price_pro_monthly")]).await;
        assert_eq!(sub["status"], "active");
        let path = format!("/v1/subscriptions/{}", id(&sub));
        // The card then starts failing.
        emu.post(&path, &[("default_payment_method", "pm_card_chargeCustomerFail")]).await;
        let mut seen = HashSet::new();
        emu.events_since(&mut seen).await;
        let renewal = at(2025, 4, 1);
        emu.advance_clock(&clock, renewal + 3600 + 60).await;
        let failed = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
        assert_eq!(failed["status"], "past_due");
        assert_eq!(failed["latest_invoice"]["attempt_count"], 1);
        assert_eq!(failed["latest_invoice"]["next_payment_attempt"], renewal + 3600 + DAY, "the first retry a day later");
        let first = emu.events_since(&mut seen).await;
        assert_eq!(
            first,
            [
                "invoice.upcoming", "invoice.created", "customer.subscription.updated", "invoice.finalized", "payment_intent.created",
                "payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated",
                "customer.subscription.updated", "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready",
            ]
        );
        emu.advance_clock(&clock, renewal + 3600 + DAY + 60).await;
        let retried = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
        assert_eq!(retried["status"], "past_due");
        assert_eq!(retried["latest_invoice"]["attempt_count"], 2);
        assert_eq!(retried["latest_invoice"]["next_payment_attempt"], renewal + 3600 + 3 * DAY, "the second two days after the first");
        assert_eq!(
            emu.events_since(&mut seen).await,
            [
                "payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated",
                "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready",
            ]
        );
        emu.advance_clock(&clock, renewal + 3600 + 3 * DAY + 60).await;
        let last = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
        assert_eq!(last["status"], expected);
        assert_eq!(last["latest_invoice"]["attempt_count"], 3);
        assert!(last["latest_invoice"]["next_payment_attempt"].is_null(), "no attempt after the last");
        let mut end = vec!["payment_intent.payment_failed", "charge.failed", "invoice.payment_failed", "invoice.updated"];
        match final_state {
            FinalState::Unpaid => end.push("customer.subscription.updated"),
            FinalState::Canceled => end.push("customer.subscription.deleted"),
            FinalState::PastDue => {}
        }
        end.extend(["test_helpers.test_clock.advancing", "test_helpers.test_clock.ready"]);
        assert_eq!(emu.events_since(&mut seen).await, end);
        if final_state == FinalState::Canceled {
            assert_eq!(last["cancellation_details"]["reason"], "payment_failed");
        }
        let charges = emu.get("/v1/charges", &[("customer", &customer)]).await;
        let statuses: Vec<&str> = charges["data"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["failed", "failed", "failed", "succeeded"], "one charge per attempt, newest first");
    }
}

#[tokio::test]
async fn a_card_that_needs_authentication_asks_for_action_at_renewal() {
    let emu = spawn_with(Dunning::default()).await;
    let start = at(2025, 5, 10);
    let clock = emu.clock(start).await;
    // Authenticated on Checkout's page, so the first payment goes through.
    let customer = emu.clocked_customer(&clock, "pm_card_authenticationRequired").await;
    let session = emu
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", &customer),
                ("line_items[0][price]", "price_pro_monthly"),
                ("success_url", "http://127.0.0.1:9/ok"),
            ],
        )
        .await;
    assert_eq!(session["ui_mode"], "hosted_page");
    let paid = emu.pay(&id(&session), "4000002760003184").await;
    assert_eq!(paid.status, 303, "{}", paid.text);
    let sub = emu.get("/v1/subscriptions", &[("customer", &customer)]).await["data"][0].clone();
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["created"], start, "a session paid under a clock makes its subscription at the clock's time");
    let mut seen = HashSet::new();
    emu.events_since(&mut seen).await;
    emu.advance_clock(&clock, at(2025, 6, 10) + 2 * 3600).await;
    let renewal = emu.get(&format!("/v1/subscriptions/{}", id(&sub)), &[("expand[]", "latest_invoice")]).await;
    assert_eq!(renewal["status"], "past_due");
    let invoice = &renewal["latest_invoice"];
    let intent = emu
        .get(&format!("/v1/payment_intents/{}", invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap()), &[])
        .await;
    assert_eq!(intent["status"], "requires_action");
    assert_eq!(intent["last_payment_error"]["code"], "authentication_required");
    let types = emu.events_since(&mut seen).await;
    let tail: Vec<&str> = types.iter().map(String::as_str).skip_while(|t| *t != "payment_intent.created").collect();
    assert_eq!(
        tail,
        [
            "payment_intent.created", "payment_intent.requires_action", "invoice.payment_failed", "invoice.payment_action_required",
            "invoice.updated", "customer.subscription.updated", "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready",
        ],
        "no charge is made while the card waits for authentication"
    );
}

#[tokio::test]
async fn paused_collection_voids_renewals_until_it_resumes() {
    let emu = spawn_with(Dunning::default()).await;
    let start = at(2025, 7, 1);
    let clock = emu.clock(start).await;
    let customer = emu.clocked_customer(&clock, "pm_card_visa").await;
    let sub = emu.post("/v1/subscriptions", &[("customer", &customer), ("items[0][price]", "price_pro_monthly")]).await;
    let path = format!("/v1/subscriptions/{}", id(&sub));
    let resumes_at = at(2025, 8, 15);
    let paused =
        emu.post(&path, &[("pause_collection[behavior]", "void"), ("pause_collection[resumes_at]", &resumes_at.to_string())]).await;
    assert_eq!(paused["pause_collection"]["behavior"], "void");
    assert_eq!(paused["status"], "active", "pausing collection leaves the status alone");
    emu.advance_clock(&clock, at(2025, 8, 1) + 2 * 3600).await;
    let during = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
    assert_eq!(during["latest_invoice"]["status"], "void");
    assert_eq!(during["status"], "active");
    emu.advance_clock(&clock, at(2025, 9, 1) + 2 * 3600).await;
    let after = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
    assert!(after["pause_collection"].is_null(), "cleared at resumes_at");
    assert_eq!(after["latest_invoice"]["status"], "paid");
    let bad = emu.call(Method::POST, &path, &[("pause_collection[behavior]", "sleep")]).await;
    assert_eq!(bad.status, 400);
    let cleared = emu.post(&path, &[("pause_collection[behavior]", "keep_as_draft")]).await;
    assert_eq!(cleared["pause_collection"]["behavior"], "keep_as_draft");
    assert!(emu.post(&path, &[("pause_collection", "")]).await["pause_collection"].is_null());
}

#[tokio::test]
async fn a_trial_without_a_card_pauses_then_resumes_and_warns_three_days_ahead() {
    let emu = spawn_with(Dunning::default()).await;
    let start = at(2025, 10, 1);
    let clock = emu.clock(start).await;
    let customer = id(&emu.post("/v1/customers", &[("email", "trial@example.com"), ("test_clock", &clock)]).await);
    let sub = emu
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", "price_pro_monthly"),
                ("trial_period_days", "7"),
                ("trial_settings[end_behavior][missing_payment_method]", "pause"),
            ],
        )
        .await;
    assert_eq!(sub["status"], "trialing");
    let path = format!("/v1/subscriptions/{}", id(&sub));
    let mut seen = HashSet::new();
    emu.events_since(&mut seen).await;
    emu.advance_clock(&clock, start + 3 * DAY).await;
    assert!(!emu.events_since(&mut seen).await.contains(&"customer.subscription.trial_will_end".to_string()), "too early");
    emu.advance_clock(&clock, start + 5 * DAY).await;
    let notice = emu.events_since(&mut seen).await;
    assert_eq!(notice, ["customer.subscription.trial_will_end", "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready"]);
    let not_paused = emu.call(Method::POST, &format!("{path}/resume"), &[]).await;
    assert_eq!(not_paused.status, 400, "only a paused subscription resumes");
    emu.advance_clock(&clock, start + 8 * DAY).await;
    let paused = emu.get(&path, &[]).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        emu.events_since(&mut seen).await,
        [
            "customer.subscription.updated", "customer.subscription.paused", "test_helpers.test_clock.advancing",
            "test_helpers.test_clock.ready"
        ]
    );
    // A paused subscription does not renew.
    emu.advance_clock(&clock, start + 40 * DAY).await;
    assert_eq!(emu.get(&path, &[]).await["status"], "paused");
    emu.post("/v1/payment_methods/pm_card_visa/attach", &[("customer", &customer)]).await;
    let pm = emu.get("/v1/payment_methods", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_string();
    emu.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", &pm)]).await;
    assert_eq!(emu.get(&path, &[]).await["status_details"]["paused"]["subscription"]["type"], "trial_end_without_payment_method");
    let resumed = emu.post(&format!("{path}/resume"), &[("billing_cycle_anchor", "now"), ("expand[]", "latest_invoice")]).await;
    // `resume_on_payment_attempt` (the default): no attempt in the request; the subscription
    // leaves `paused` when the attempt is made, right after.
    assert_eq!(resumed["status"], "paused");
    assert_eq!(resumed["billing_cycle_anchor"], start + 40 * DAY, "the anchor moves to the resume");
    assert_eq!(resumed["items"]["data"][0]["current_period_start"], start + 40 * DAY);
    assert_eq!(resumed["trial_end"], start + 7 * DAY, "the trial's end is history, not moved by resuming");
    assert_eq!((&resumed["latest_invoice"]["status"], &resumed["latest_invoice"]["attempt_count"]), (&json!("open"), &json!(0)));
    let active = || async { Some(emu.get(&path, &[("expand[]", "latest_invoice")]).await).filter(|s| s["status"] == "active") };
    let active = test_support::eventually("the resumed subscription active", Duration::from_secs(5), active).await;
    assert_eq!(active["latest_invoice"]["status"], "paid");
    assert!(active.get("status_details").is_none(), "no pause to describe");
    let types = emu.events_since(&mut seen).await;
    assert!(types.contains(&"customer.subscription.resumed".to_string()), "{types:?}");
}
