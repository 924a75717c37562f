//! Subscriptions over time: updates, cancellation, trials, declines and renewals on an advanced clock.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{id, spawn_emulator, TestEmulator};

async fn advance(emu: &TestEmulator, seconds: i64) -> i64 {
    let r = emu.form("/_emulator/clock/advance", &format!("seconds={seconds}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["now"].as_i64().unwrap()
}

fn period(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (item["current_period_start"].as_i64().unwrap(), item["current_period_end"].as_i64().unwrap())
}

#[tokio::test]
async fn checkout_payment_creates_the_whole_subscription() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, session) =
        emu.open_session(&[("client_reference_id", "user_1"), ("subscription_data[metadata][userId]", "user_1")]).await;
    let declined = emu.pay(&session, "4000 0000 0000 9995").await;
    assert_eq!(declined.status, 402);
    assert_eq!(declined.body["error"]["decline_code"], "insufficient_funds");
    let generic = emu.pay(&session, "4000000000000002").await;
    assert_eq!(generic.body["error"]["decline_code"], "generic_decline");
    let still_open = emu.get(&format!("/v1/checkout/sessions/{session}"), &[]).await;
    assert_eq!(still_open["status"], "open");
    assert_eq!(
        emu.get("/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await["data"].as_array().unwrap().len(),
        0,
        "a decline creates nothing"
    );

    let paid = emu.pay(&session, "4242424242424242").await;
    assert_eq!(paid.status, 303);
    assert_eq!(paid.headers["location"], format!("http://127.0.0.1:9/success?session_id={session}"));
    let done = emu.get(&format!("/v1/checkout/sessions/{session}"), &[("expand[]", "subscription.default_payment_method")]).await;
    assert_eq!(done["status"], "complete");
    assert_eq!(done["payment_status"], "paid");
    assert_eq!(done["client_reference_id"], "user_1");
    let sub = &done["subscription"];
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["metadata"]["userId"], "user_1");
    assert_eq!(sub["default_payment_method"]["customer"], customer.as_str());
    assert_eq!(sub["default_payment_method"]["card"]["brand"], "visa");
    let (start, end) = period(sub);
    assert!((28 * 86400..=31 * 86400).contains(&(end - start)), "a calendar month");
    assert!(sub.get("current_period_end").is_none(), "basil and later: periods live on items");
    let invoice = emu.get(&done["invoice"].as_str().unwrap().to_string().replace("in_", "/v1/invoices/in_"), &[]).await;
    assert_eq!(invoice["status"], "paid");
    assert_eq!(invoice["amount_paid"], 1000);
    let pi = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap();
    assert_eq!(emu.get(&format!("/v1/payment_intents/{pi}"), &[]).await["status"], "succeeded");
    let again = emu.pay(&session, "4242424242424242").await;
    assert_eq!(again.status, 400, "a complete session cannot be paid twice");
    let expire = emu.call(Method::POST, &format!("/v1/checkout/sessions/{session}/expire"), &[]).await;
    assert_eq!(expire.status, 400);
}

#[tokio::test]
async fn checkout_without_customer_creates_one_and_trials_need_no_payment() {
    let emu = spawn_emulator(vec![]).await;
    let session = emu
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer_email", "new@example.com"),
                ("line_items[0][price]", "price_pro_monthly"),
                ("success_url", "http://127.0.0.1:9/ok"),
                ("subscription_data[trial_period_days]", "14"),
                ("payment_method_collection", "if_required"),
            ],
        )
        .await;
    assert!(session["customer"].is_null());
    let r = emu.form(&format!("/_emulator/checkout/sessions/{}/complete", id(&session)), "card_number=").await;
    assert_eq!(r.status, 303, "no card needed for a trial with payment_method_collection=if_required");
    let done = emu.get(&format!("/v1/checkout/sessions/{}", id(&session)), &[("expand[]", "subscription"), ("expand[]", "customer")]).await;
    assert_eq!(done["customer"]["email"], "new@example.com");
    assert_eq!(done["payment_status"], "no_payment_required");
    assert_eq!(done["subscription"]["status"], "trialing");
    assert!(done["subscription"]["default_payment_method"].is_null());
}

#[tokio::test]
async fn updates_cancellation_and_price_swaps() {
    let emu = spawn_emulator(vec![]).await;
    let (_, sub) = emu.subscribed_customer().await;
    let path = format!("/v1/subscriptions/{}", id(&sub));
    let (_, end) = period(&sub);
    let at_end = emu.post(&path, &[("cancel_at_period_end", "true")]).await;
    assert_eq!(at_end["cancel_at_period_end"], true);
    assert_eq!(at_end["cancel_at"], end);
    assert_eq!(at_end["status"], "active");
    let undone = emu.post(&path, &[("cancel_at_period_end", "false")]).await;
    assert!(undone["cancel_at"].is_null());
    let at = end - 86400;
    let scheduled = emu.post(&path, &[("cancel_at", &at.to_string())]).await;
    assert_eq!(scheduled["cancel_at"], at);
    assert_eq!(scheduled["cancel_at_period_end"], false);
    let cleared = emu.post(&path, &[("cancel_at", "")]).await;
    assert!(cleared["cancel_at"].is_null());

    let item = sub["items"]["data"][0]["id"].as_str().unwrap();
    let swapped = emu
        .post(
            &path,
            &[
                ("items[0][id]", item),
                ("items[0][price]", "price_pro_yearly"),
                ("proration_behavior", "none"),
                ("metadata[plan]", "yearly"),
            ],
        )
        .await;
    assert_eq!(swapped["items"]["data"][0]["id"], item, "the item is kept");
    assert_eq!(swapped["items"]["data"][0]["price"]["id"], "price_pro_yearly");
    assert_eq!(swapped["metadata"]["plan"], "yearly");
    let (start, new_end) = period(&swapped);
    assert!(new_end - start >= 365 * 86400, "a new yearly period starts");
    assert_ne!(swapped["latest_invoice"], sub["latest_invoice"], "the interval change was invoiced");
    let events = emu.get("/v1/events", &[("type", "customer.subscription.updated"), ("limit", "1")]).await;
    let previous = &events["data"][0]["data"]["previous_attributes"];
    assert!(
        previous.get("items").is_some() || previous.get("latest_invoice").is_some(),
        "previous_attributes names what changed: {previous}"
    );

    let canceled = emu.call(Method::DELETE, &path, &[]).await;
    assert_eq!(canceled.body["status"], "canceled");
    assert!(canceled.body["ended_at"].is_i64());
    let refused = emu.call(Method::POST, &path, &[("cancel_at_period_end", "true")]).await;
    assert_eq!(refused.status, 400);
    let meta_ok = emu.call(Method::POST, &path, &[("metadata[note]", "after")]).await;
    assert_eq!(meta_ok.status, 200, "metadata may still change on an ended subscription");
}

#[tokio::test]
async fn renewals_trials_and_failed_payments_over_time() {
    let emu = spawn_emulator(vec![]).await;
    let (_, sub) = emu.subscribed_customer().await;
    let (_, end) = period(&sub);
    let path = format!("/v1/subscriptions/{}", id(&sub));
    advance(&emu, end - sub["created"].as_i64().unwrap() + 60).await;
    let renewed = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
    assert_eq!(renewed["status"], "active");
    assert_eq!(period(&renewed).0, end, "the next period starts where the last ended");
    assert_eq!(renewed["latest_invoice"]["billing_reason"], "subscription_cycle");
    assert_eq!(renewed["latest_invoice"]["status"], "draft", "a renewal invoice waits an hour as a draft, as in Stripe");
    assert_eq!(renewed["latest_invoice"]["automatically_finalizes_at"], end + 3600);
    advance(&emu, 3600).await;
    let collected = emu.get(&path, &[("expand[]", "latest_invoice")]).await;
    assert_eq!(collected["latest_invoice"]["status"], "paid");
    assert_eq!(collected["latest_invoice"]["status_transitions"]["paid_at"], end + 3600, "paid at its own time, not the advance's");

    // A card that fails on charge: the renewal leaves the subscription past_due.
    let customer = emu.customer("fails@example.com").await;
    let trial = emu
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", "price_pro_monthly"),
                ("default_payment_method", "pm_card_chargeCustomerFail"),
                ("trial_period_days", "3"),
            ],
        )
        .await;
    assert_eq!(trial["status"], "trialing");
    advance(&emu, 4 * 86400).await;
    let after_trial = emu.get(&format!("/v1/subscriptions/{}", id(&trial)), &[("expand[]", "latest_invoice")]).await;
    assert_eq!(after_trial["status"], "past_due");
    assert_eq!(after_trial["latest_invoice"]["status"], "open");
    let failed = emu.get("/v1/events", &[("type", "invoice.payment_failed")]).await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);

    // cancel_at_period_end takes effect at the period's end.
    let ending = emu.post(&path, &[("cancel_at_period_end", "true")]).await;
    let (_, end) = period(&ending);
    let now = advance(&emu, 1).await;
    advance(&emu, end - now + 10).await;
    let gone = emu.get(&path, &[]).await;
    assert_eq!(gone["status"], "canceled");
    assert_eq!(gone["cancellation_details"]["reason"], "cancellation_requested");
}

#[tokio::test]
async fn direct_subscription_with_declining_card() {
    let emu = spawn_emulator(vec![]).await;
    let customer = emu.customer("decline@example.com").await;
    let declined = emu.call(Method::POST, "/v1/payment_methods/pm_card_chargeDeclined/attach", &[("customer", &customer)]).await;
    assert_eq!(declined.status, 402);
    let fails = emu
        .post(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", "price_pro_monthly"), ("default_payment_method", "pm_card_chargeCustomerFail")],
        )
        .await;
    assert_eq!(fails["status"], "incomplete");
    let strict = emu
        .call(
            Method::POST,
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", "price_pro_monthly"),
                ("default_payment_method", "pm_card_chargeCustomerFail"),
                ("payment_behavior", "error_if_incomplete"),
            ],
        )
        .await;
    assert_eq!(strict.status, 402);
    assert_eq!(
        emu.get("/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await["data"].as_array().unwrap().len(),
        1,
        "error_if_incomplete keeps nothing"
    );
    let no_card = emu
        .call(
            Method::POST,
            "/v1/subscriptions",
            &[("customer", &emu.customer("none@example.com").await), ("items[0][price]", "price_pro_monthly")],
        )
        .await;
    assert_eq!(no_card.status, 400);
    let deleted = emu.call(Method::DELETE, &format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!(deleted.body["deleted"], true);
    assert_eq!(
        emu.get(&format!("/v1/subscriptions/{}", id(&fails)), &[]).await["status"],
        "canceled",
        "deleting a customer ends its subscriptions"
    );
    assert_eq!(emu.get(&format!("/v1/customers/{customer}"), &[]).await["deleted"], true);
    // Unpaid for 23 hours, an incomplete subscription expires and its invoice is voided.
    let other = emu.customer("expires@example.com").await;
    let expiring = emu
        .post(
            "/v1/subscriptions",
            &[("customer", &other), ("items[0][price]", "price_pro_monthly"), ("default_payment_method", "pm_card_chargeCustomerFail")],
        )
        .await;
    let created = expiring["created"].as_i64().unwrap();
    advance(&emu, 23 * 3600 + 60).await;
    let expired = emu.get(&format!("/v1/subscriptions/{}", id(&expiring)), &[("expand[]", "latest_invoice")]).await;
    assert_eq!(expired["status"], "incomplete_expired");
    assert_eq!(expired["ended_at"], created + 23 * 3600);
    assert_eq!(expired["latest_invoice"]["status"], "void");
    assert_eq!(expired["latest_invoice"]["status_transitions"]["voided_at"], created + 23 * 3600);
    assert!(expired["latest_invoice"]["next_payment_attempt"].is_null());
}
