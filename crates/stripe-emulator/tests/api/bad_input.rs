//! Every endpoint answers bad input with a Stripe-shaped 4xx, never a 5xx, and keeps what it stored.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{id, spawn_emulator, KEY};

fn assert_stripe_error(status: u16, body: &Value, expected_status: u16, what: &str) {
    assert_eq!(status, expected_status, "{what}: {body}");
    let error = &body["error"];
    assert!(error["type"].is_string(), "{what}: error.type in {body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error.message in {body}");
}

/// (method, path, form, expected status, expected code ("" for any), expected param)
type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str, Option<&'a str>);

#[tokio::test]
async fn every_endpoint_rejects_unknown_missing_and_mistyped_parameters() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, sub) = emu.subscribed_customer().await;
    let sub_id = id(&sub);
    let (_, session) = emu.open_session(&[]).await;
    let pm = id(&emu.post("/v1/payment_methods", &[("type", "card"), ("card[number]", "4242424242424242")]).await);
    let endpoint = id(&emu.post("/v1/webhook_endpoints", &[("url", "http://127.0.0.1:9/h"), ("enabled_events[]", "*")]).await);
    let cus_path = format!("/v1/customers/{customer}");
    let sub_path = format!("/v1/subscriptions/{sub_id}");
    let cs_path = format!("/v1/checkout/sessions/{session}");
    let pm_path = format!("/v1/payment_methods/{pm}");
    let we_path = format!("/v1/webhook_endpoints/{endpoint}");
    let resume_path = format!("{sub_path}/resume");
    let pause_path = format!("{sub_path}/pause");
    let attach = format!("{pm_path}/attach");

    let cases: Vec<Case> = vec![
        (Method::POST, "/v1/products", vec![("name", "X"), ("colour", "red")], 400, "parameter_unknown", Some("colour")),
        (Method::POST, "/v1/products", vec![], 400, "parameter_missing", Some("name")),
        (Method::POST, "/v1/products", vec![("name", "X"), ("active", "maybe")], 400, "parameter_invalid_boolean", Some("active")),
        (Method::POST, "/v1/products", vec![("name", "X"), ("metadata", "flat")], 400, "parameter_invalid_hash", Some("metadata")),
        (Method::GET, "/v1/products/prod_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::POST, "/v1/products/prod_pro", vec![("name", "")], 400, "parameter_invalid_empty", Some("name")),
        (Method::DELETE, "/v1/products/prod_pro", vec![], 400, "", None), // has prices
        (Method::POST, "/v1/prices", vec![("currency", "usd"), ("product", "prod_pro")], 400, "parameter_missing", Some("unit_amount")),
        (
            Method::POST,
            "/v1/prices",
            vec![("currency", "usd"), ("product", "prod_pro"), ("unit_amount", "ten")],
            400,
            "parameter_invalid_integer",
            Some("unit_amount"),
        ),
        (
            Method::POST,
            "/v1/prices",
            vec![("currency", "usd"), ("product", "prod_nope"), ("unit_amount", "10")],
            404,
            "resource_missing",
            Some("product"),
        ),
        (
            Method::POST,
            "/v1/prices",
            vec![("currency", "usd"), ("product", "prod_pro"), ("unit_amount", "10"), ("recurring[interval]", "fortnight")],
            400,
            "parameter_invalid_value",
            Some("recurring[interval]"),
        ),
        (
            Method::POST,
            "/v1/prices",
            vec![("currency", "usd"), ("product", "prod_pro"), ("unit_amount", "10"), ("recurring[every]", "2")],
            400,
            "parameter_unknown",
            Some("recurring[every]"),
        ),
        (Method::GET, "/v1/prices", vec![("limit", "500")], 400, "parameter_invalid_integer", Some("limit")),
        (Method::GET, "/v1/prices", vec![("starting_after", "price_nope")], 404, "resource_missing", Some("starting_after")),
        (Method::POST, "/v1/prices/price_pro_monthly", vec![("unit_amount", "5")], 400, "parameter_unknown", Some("unit_amount")),
        (Method::POST, "/v1/customers", vec![("email", "a@b.c"), ("metadata[]", "x")], 400, "parameter_invalid_value", Some("metadata")),
        (Method::GET, "/v1/customers/cus_nope", vec![], 404, "resource_missing", Some("id")),
        (
            Method::POST,
            &cus_path,
            vec![("invoice_settings[default_payment_method]", "pm_nope")],
            404,
            "resource_missing",
            Some("invoice_settings[default_payment_method]"),
        ),
        (Method::GET, "/v1/customers", vec![("email", "a@b.c"), ("sort", "asc")], 400, "parameter_unknown", Some("sort")),
        (Method::DELETE, "/v1/customers/cus_nope", vec![], 404, "resource_missing", Some("id")),
        (
            Method::POST,
            "/v1/payment_methods",
            vec![("type", "card"), ("card[number]", "4242424242424241")],
            402,
            "incorrect_number",
            Some("number"),
        ),
        (Method::POST, "/v1/payment_methods", vec![("type", "sepa_debit")], 400, "parameter_invalid_value", Some("type")),
        (Method::POST, "/v1/payment_methods", vec![("card[number]", "4242424242424242")], 400, "parameter_missing", Some("type")),
        (Method::POST, &attach, vec![], 400, "parameter_missing", Some("customer")),
        (Method::POST, &attach, vec![("customer", "cus_nope")], 404, "resource_missing", Some("customer")),
        (Method::POST, "/v1/payment_methods/pm_nope/detach", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, &pm_path, vec![("expand[]", "card")], 400, "parameter_invalid_value", Some("expand")),
        (Method::POST, "/v1/checkout/sessions", vec![("mode", "subscription")], 400, "parameter_missing", Some("success_url")),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![("mode", "rent"), ("success_url", "http://x/")],
            400,
            "parameter_invalid_value",
            Some("mode"),
        ),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![("mode", "subscription"), ("success_url", "http://x/")],
            400,
            "parameter_missing",
            Some("line_items"),
        ),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![("mode", "subscription"), ("success_url", "http://x/"), ("line_items[0][price]", "price_nope")],
            404,
            "resource_missing",
            Some("line_items[0][price]"),
        ),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![
                ("mode", "subscription"),
                ("success_url", "http://x/"),
                ("line_items[0][price]", "price_pro_monthly"),
                ("subscription_data[trial_period_days]", "0"),
            ],
            400,
            "parameter_invalid_value",
            Some("subscription_data[trial_period_days]"),
        ),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![
                ("mode", "subscription"),
                ("success_url", "http://x/"),
                ("line_items[0][price]", "price_pro_monthly"),
                ("customer", "cus_nope"),
            ],
            404,
            "resource_missing",
            Some("customer"),
        ),
        (
            Method::POST,
            "/v1/checkout/sessions",
            vec![("mode", "subscription"), ("success_url", "not a url"), ("line_items[0][price]", "price_pro_monthly")],
            400,
            "parameter_invalid_value",
            Some("success_url"),
        ),
        (Method::GET, "/v1/checkout/sessions/cs_test_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, &cs_path, vec![("expand[]", "nothing")], 400, "parameter_invalid_value", Some("expand")),
        (Method::POST, "/v1/checkout/sessions/cs_test_nope/expire", vec![], 404, "resource_missing", Some("id")),
        (Method::POST, "/v1/subscriptions", vec![("items[0][price]", "price_pro_monthly")], 400, "parameter_missing", Some("customer")),
        (Method::POST, "/v1/subscriptions", vec![("customer", &customer)], 400, "parameter_missing", Some("items")),
        (
            Method::POST,
            "/v1/subscriptions",
            vec![("customer", &customer), ("items[0][price]", "price_pro_monthly"), ("trial_period_days", "soon")],
            400,
            "parameter_invalid_integer",
            Some("trial_period_days"),
        ),
        (
            Method::POST,
            "/v1/subscriptions",
            vec![("customer", &customer), ("items[0][price]", "price_pro_monthly"), ("default_payment_method", "pm_nope")],
            404,
            "resource_missing",
            Some("default_payment_method"),
        ),
        (Method::POST, &sub_path, vec![("cancel_at_period_end", "yes")], 400, "parameter_invalid_boolean", Some("cancel_at_period_end")),
        (Method::POST, &sub_path, vec![("cancel_at", "1")], 400, "parameter_invalid_value", Some("cancel_at")),
        (
            Method::POST,
            &sub_path,
            vec![("items[0][id]", "si_nope"), ("items[0][price]", "price_pro_yearly")],
            404,
            "resource_missing",
            Some("items[id]"),
        ),
        (Method::POST, &sub_path, vec![("plan", "gold")], 400, "parameter_unknown", Some("plan")),
        (Method::GET, "/v1/subscriptions", vec![("status", "happy")], 400, "parameter_invalid_value", Some("status")),
        (Method::GET, "/v1/subscriptions/sub_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::DELETE, "/v1/subscriptions/sub_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/invoices/in_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/invoices", vec![("status", "lost")], 400, "parameter_invalid_value", Some("status")),
        (Method::GET, "/v1/payment_intents/pi_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/payment_intents", vec![("limit", "0")], 400, "parameter_invalid_integer", Some("limit")),
        (Method::GET, "/v1/events/evt_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/events", vec![("limit", "x")], 400, "parameter_invalid_integer", Some("limit")),
        (Method::POST, "/v1/webhook_endpoints", vec![("enabled_events[]", "*")], 400, "parameter_missing", Some("url")),
        (
            Method::POST,
            "/v1/webhook_endpoints",
            vec![("url", "ftp://x"), ("enabled_events[]", "*")],
            400,
            "parameter_invalid_value",
            Some("url"),
        ),
        (Method::POST, "/v1/webhook_endpoints", vec![("url", "http://x/")], 400, "parameter_missing", Some("enabled_events")),
        (Method::POST, &we_path, vec![("disabled", "perhaps")], 400, "parameter_invalid_boolean", Some("disabled")),
        (Method::DELETE, "/v1/webhook_endpoints/we_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/products", vec![("active", "maybe")], 400, "parameter_invalid_boolean", Some("active")),
        (Method::GET, "/v1/prices/price_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/prices", vec![("type", "sometimes")], 400, "parameter_invalid_value", Some("type")),
        (Method::GET, "/v1/payment_methods/pm_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::POST, "/v1/payment_methods/pm_nope", vec![("metadata[a]", "b")], 404, "resource_missing", Some("id")),
        (Method::POST, &pm_path, vec![("billing_details[nickname]", "x")], 400, "parameter_unknown", Some("billing_details[nickname]")),
        (Method::GET, "/v1/payment_methods", vec![("customer", "cus_nope")], 404, "resource_missing", Some("customer")),
        (Method::GET, "/v1/customers/cus_nope/payment_methods", vec![], 404, "resource_missing", Some("customer")),
        (Method::GET, "/v1/checkout/sessions", vec![("status", "paid")], 400, "parameter_invalid_value", Some("status")),
        (Method::GET, "/v1/checkout/sessions/cs_test_nope/line_items", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/webhook_endpoints/we_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/webhook_endpoints", vec![("limit", "1000")], 400, "parameter_invalid_integer", Some("limit")),
        (
            Method::POST,
            "/v1/webhook_endpoints",
            vec![("url", "http://x/"), ("enabled_events[]", "not an event")],
            400,
            "parameter_invalid_value",
            Some("enabled_events"),
        ),
        (Method::POST, "/v1/billing_portal/sessions", vec![], 400, "parameter_missing", Some("customer")),
        (Method::POST, "/v1/billing_portal/sessions", vec![("customer", "cus_nope")], 404, "resource_missing", Some("customer")),
        (
            Method::POST,
            "/v1/billing_portal/sessions",
            vec![("customer", &customer), ("return_url", "javascript:alert(1)")],
            400,
            "parameter_invalid_value",
            Some("return_url"),
        ),
        (Method::GET, "/v1/customers/search", vec![], 400, "parameter_missing", Some("query")),
        (
            Method::GET,
            "/v1/customers/search",
            vec![("query", "email:'a' OR name:'b' AND phone:'c'")],
            400,
            "parameter_invalid_string",
            Some("query"),
        ),
        (Method::GET, "/v1/customers/search", vec![("query", "email:'a'"), ("limit", "0")], 400, "parameter_invalid_value", Some("limit")),
        (Method::GET, "/v1/subscriptions/search", vec![("query", "customer:'cus_1'")], 400, "parameter_invalid_string", Some("query")),
        (Method::GET, "/v1/subscription_items", vec![], 400, "parameter_missing", Some("subscription")),
        (Method::GET, "/v1/subscription_items", vec![("subscription", "sub_nope")], 404, "resource_missing", Some("subscription")),
        (Method::GET, "/v1/subscription_items/si_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/invoices/in_nope/lines", vec![], 404, "resource_missing", Some("invoice")),
        (Method::GET, "/v1/invoice_payments", vec![("status", "happy")], 400, "parameter_invalid_value", Some("status")),
        (Method::GET, "/v1/invoice_payments/inpay_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/charges/ch_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/charges", vec![("limit", "-1")], 400, "parameter_invalid_integer", Some("limit")),
        (Method::POST, "/v1/invoices/create_preview", vec![], 400, "parameter_missing", Some("customer")),
        (Method::POST, "/v1/invoices/create_preview", vec![("subscription", "sub_nope")], 404, "resource_missing", Some("subscription")),
        (Method::POST, "/v1/subscriptions/sub_nope/resume", vec![], 404, "resource_missing", Some("subscription")),
        (Method::POST, &resume_path, vec![], 400, "", None), // not paused
        (Method::POST, &resume_path, vec![("payment_behavior", "whenever")], 400, "parameter_invalid_value", Some("payment_behavior")),
        (Method::POST, "/v1/subscriptions/sub_nope/pause", vec![], 404, "resource_missing", Some("id")),
        (Method::POST, &pause_path, vec![("invoicing_behavior", "later")], 400, "parameter_invalid_value", Some("invoicing_behavior")),
        (Method::POST, &pause_path, vec![("type", "forever")], 400, "parameter_invalid_value", Some("type")),
        (
            Method::POST,
            &pause_path,
            vec![("bill_for[unused_time_from][type]", "yesterday")],
            400,
            "parameter_invalid_value",
            Some("bill_for[unused_time_from][type]"),
        ),
        (Method::POST, &pause_path, vec![("bill_for[tomorrow]", "1")], 400, "parameter_unknown", Some("bill_for[tomorrow]")),
        (
            Method::POST,
            "/v1/subscriptions",
            vec![("customer", "cus_x"), ("items[0][price]", "price_pro_monthly"), ("billing_mode[type]", "modern")],
            400,
            "parameter_invalid_value",
            Some("billing_mode[type]"),
        ),
        (Method::GET, "/v1/invoices", vec![("test_clock", "clock_1")], 400, "parameter_unknown", Some("test_clock")),
        (Method::GET, "/v1/invoiceitems/ii_nope", vec![], 404, "resource_missing", Some("id")),
        (Method::GET, "/v1/invoiceitems", vec![("pending", "maybe")], 400, "", Some("pending")),
        (
            Method::POST,
            &sub_path,
            vec![("pause_collection[behavior]", "nap")],
            400,
            "parameter_invalid_value",
            Some("pause_collection[behavior]"),
        ),
        (
            Method::POST,
            &sub_path,
            vec![("pause_collection[resumes_at]", "1")],
            400,
            "parameter_missing",
            Some("pause_collection[behavior]"),
        ),
        (Method::GET, "/v1/billing_portal/configurations/bpc_nope", vec![], 404, "resource_missing", Some("configuration")),
        (Method::POST, "/v1/test_helpers/test_clocks", vec![], 400, "parameter_missing", Some("frozen_time")),
        (
            Method::POST,
            "/v1/test_helpers/test_clocks",
            vec![("frozen_time", "soon")],
            400,
            "parameter_invalid_integer",
            Some("frozen_time"),
        ),
        (
            Method::POST,
            "/v1/test_helpers/test_clocks",
            vec![("frozen_time", "1"), ("customer", "cus_nope")],
            404,
            "resource_missing",
            Some("customer"),
        ),
        (Method::POST, "/v1/test_helpers/test_clocks/clock_nope/advance", vec![("frozen_time", "2")], 404, "resource_missing", Some("id")),
        (Method::DELETE, "/v1/test_helpers/test_clocks/clock_nope", vec![], 404, "resource_missing", Some("id")),
    ];
    for (method, path, form, status, code, param) in &cases {
        let what = format!("{method} {path} {form:?}");
        let r = emu.call(method.clone(), path, form).await;
        assert_stripe_error(r.status, &r.body, *status, &what);
        if !code.is_empty() {
            assert_eq!(r.body["error"]["code"], *code, "{what}: {}", r.text);
        }
        if let Some(param) = param {
            assert_eq!(r.body["error"]["param"], *param, "{what}: {}", r.text);
        }
    }
    // None of that changed what was stored.
    let after = emu.get(&sub_path, &[]).await;
    assert_eq!(after, sub);
    assert_eq!(emu.get("/v1/products/prod_pro", &[]).await["name"], "Pro");
}

#[tokio::test]
async fn keys_urls_and_bodies() {
    let emu = spawn_emulator(vec![]).await;
    for path in ["/v1/customers", "/v1/subscriptions", "/v1/prices", "/v1/events", "/v1/checkout/sessions", "/v1/webhook_endpoints"] {
        let none = emu.call_with(Method::GET, path, &[], &[]).await;
        assert_stripe_error(none.status, &none.body, 401, path);
        assert!(none.body["error"]["message"].as_str().unwrap().contains("did not provide an API key"));
        let live = emu.call_with(Method::GET, path, &[], &[("authorization", "Bearer sk_live_123456789")]).await;
        assert_stripe_error(live.status, &live.body, 401, path);
        assert!(!live.text.contains("sk_live_123456789"), "the key is not echoed in full");
        let publishable = emu.call_with(Method::POST, path, &[], &[("authorization", "Bearer pk_test_123456789")]).await;
        assert_eq!(publishable.status, 401);
    }
    let basic =
        emu.call_with(Method::GET, "/v1/customers", &[], &[("authorization", &format!("Basic {}", base64(&format!("{KEY}:"))))]).await;
    assert_eq!(basic.status, 200, "curl -u style basic auth: {}", basic.text);

    let unknown = emu.call(Method::GET, "/v1/charges_and_more", &[]).await;
    assert_stripe_error(unknown.status, &unknown.body, 404, "unknown url");
    assert!(unknown.body["error"]["message"].as_str().unwrap().contains("Unrecognized request URL"));
    let wrong_method = emu.call(Method::PUT, "/v1/customers", &[]).await;
    assert_stripe_error(wrong_method.status, &wrong_method.body, 404, "wrong method");

    let json = emu.raw_post("/v1/customers", "application/json", r#"{"email":"a@b.c"}"#).await;
    assert_stripe_error(json.status, &json.body, 400, "json body");
    let brackets = emu.raw_post("/v1/customers", "application/x-www-form-urlencoded", "metadata[a=1").await;
    assert_stripe_error(brackets.status, &brackets.body, 400, "broken brackets");
    let conflict = emu.raw_post("/v1/customers", "application/x-www-form-urlencoded", "metadata=1&metadata[a]=2").await;
    assert_stripe_error(conflict.status, &conflict.body, 400, "hash and string at once");
    let binary = emu.raw_post("/v1/customers", "application/x-www-form-urlencoded", vec![0xff, 0xfe, b'=', 0x00]).await;
    assert!(binary.status < 500 && binary.status >= 400, "binary body: {}", binary.text);
    let huge = emu.raw_post("/v1/customers", "application/x-www-form-urlencoded", format!("email={}", "a".repeat(2 * 1024 * 1024))).await;
    assert_stripe_error(huge.status, &huge.body, 413, "huge body");
    let bad_version = emu
        .call_with(Method::GET, "/v1/customers", &[], &[("authorization", &format!("Bearer {KEY}")), ("stripe-version", "yesterday")])
        .await;
    assert_stripe_error(bad_version.status, &bad_version.body, 400, "bad api version");
    let version = emu
        .call_with(
            Method::GET,
            "/v1/customers",
            &[],
            &[("authorization", &format!("Bearer {KEY}")), ("stripe-version", "2025-03-31.basil")],
        )
        .await;
    assert_eq!(version.headers["stripe-version"], "2025-03-31.basil");
    assert!(version.headers["request-id"].to_str().unwrap().starts_with("req_"));
    assert_eq!(emu.get("/v1/customers", &[]).await["data"].as_array().unwrap().len(), 0, "nothing was created by bad requests");
}

#[tokio::test]
async fn control_endpoints_reject_bad_input() {
    let emu = spawn_emulator(vec![]).await;
    let missing = emu.pay("cs_test_nope", "4242424242424242").await;
    assert_stripe_error(missing.status, &missing.body, 404, "unknown session");
    let (_, session) = emu.open_session(&[]).await;
    let not_a_card = emu.pay(&session, "1234").await;
    assert_stripe_error(not_a_card.status, &not_a_card.body, 402, "bad card number");
    assert_eq!(not_a_card.body["error"]["code"], "incorrect_number");
    assert_eq!(emu.form("/_emulator/clock/advance", "seconds=-5").await.status, 400);
    assert_eq!(emu.form("/_emulator/test_clocks/advance_time", "milliseconds=999999").await.status, 400);
    let card = emu.post("/v1/payment_methods", &[("type", "card"), ("card[token]", "tok_visa")]).await;
    let outcome = format!("/_emulator/payment_methods/{}/outcome", id(&card));
    let bad = emu.form(&outcome, "outcome=stolen_wallet").await;
    assert_stripe_error(bad.status, &bad.body, 400, "an outcome that is no decline code");
    assert_eq!(bad.body["error"]["param"], "outcome");
    assert_eq!(emu.form("/_emulator/payment_methods/pm_nope/outcome", "outcome=lost_card").await.status, 404);
    let set = emu.form(&outcome, "outcome=lost_card").await;
    assert_eq!((set.status, &set.body["outcome"]), (200, &serde_json::json!("declined_when_charged:lost_card")));
    let page = emu.client.get(format!("{}/c/pay/cs_test_nope", emu.url)).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("not found"));
    assert_eq!(emu.form("/p/session/bps_nope/cancel", "subscription=sub_x").await.status, 404);
}

fn base64(input: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Input that once aborted the process or cost seconds: deep nesting, huge parameter counts, and
/// floods of `expand[]` get Stripe-shaped 400s at once, and the emulator keeps answering.
#[tokio::test]
async fn hostile_forms_are_refused_quickly() {
    let emu = spawn_emulator(vec![]).await;
    let deep = format!("metadata{}=x", "[a]".repeat(10_000));
    let many: String = (0..2_000).map(|i| format!("metadata[k{i}]=v&")).collect();
    let expands = "expand[]=customer&".repeat(50_000); // 900 KB, under the 1 MiB body limit
    for (what, body) in [("deep nesting", deep), ("2,000 parameters", many), ("50,000 expand[]", expands)] {
        let started = std::time::Instant::now();
        let r = emu.raw_post("/v1/customers", "application/x-www-form-urlencoded", body).await;
        assert_stripe_error(r.status, &r.body, 400, what);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{what} took {:?}", started.elapsed());
    }
    let listed = emu.call(Method::GET, &format!("/v1/customers?{}", "expand[]=data.x&".repeat(60)), &[]).await;
    assert_stripe_error(listed.status, &listed.body, 400, "too many expansions");
    assert_eq!(listed.body["error"]["param"], "expand");
    // Still serving.
    assert_eq!(emu.call(Method::GET, "/v1/customers", &[]).await.status, 200);
}
