//! The hosted pages over plain HTTP (the browser suite clicks through them in Chromium).

use serde_json::Value;

use crate::helpers::{id, spawn_emulator, TestEmulator};

async fn form(emu: &TestEmulator, path: &str, body: &str) -> (u16, String, String) {
    let r = emu.form(path, body).await;
    let location = r.headers.get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    (r.status, location, r.text)
}

async fn page(emu: &TestEmulator, path: &str) -> (u16, String) {
    let r = emu.client.get(format!("{}{path}", emu.url)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn checkout_page_shows_the_order_and_reports_declines() {
    let emu = spawn_emulator(vec![]).await;
    let (_, session) = emu.open_session(&[]).await;
    let url = emu.get(&format!("/v1/checkout/sessions/{session}"), &[]).await["url"].as_str().unwrap().to_string();
    let path = url.trim_start_matches(&emu.url).to_string();
    let (status, html) = page(&emu, &path).await;
    assert_eq!(status, 200);
    assert!(html.contains("Pro") && html.contains("$10.00") && html.contains("per month"), "order summary");
    assert!(html.contains("buyer@example.com"), "the customer's email");
    assert!(html.contains("http://127.0.0.1:9/"), "a cancel link to cancel_url");
    let (status, _, html) = form(&emu, &path, "card_number=4000+0000+0000+9995&name=A+Buyer").await;
    assert_eq!(status, 402);
    assert!(html.contains("insufficient funds"), "the decline is shown on the page");
    let (status, location, _) = form(&emu, &path, "card_number=4242424242424242").await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("http://127.0.0.1:9/success?session_id={session}"));
    let (_, html) = page(&emu, &path).await;
    assert!(html.contains("Already paid"));
}

#[tokio::test]
async fn hostile_text_is_escaped() {
    let emu = spawn_emulator(vec![]).await;
    let product = emu.post("/v1/products", &[("name", "<script>alert(1)</script>")]).await;
    let price = emu
        .post("/v1/prices", &[("product", &id(&product)), ("unit_amount", "500"), ("currency", "usd"), ("recurring[interval]", "month")])
        .await;
    let session = emu
        .post(
            "/v1/checkout/sessions",
            &[("mode", "subscription"), ("line_items[0][price]", &id(&price)), ("success_url", "http://127.0.0.1:9/ok")],
        )
        .await;
    let (_, html) = page(&emu, &format!("/c/pay/{}", id(&session))).await;
    assert!(!html.contains("<script>alert(1)"));
    assert!(test_support::shown_text(&html).contains("Subscribe to <script>alert(1)</script>"));

    // The portal shows the customer's email and the product's name as text too.
    let email = "<b>x</b>'@example.com";
    let customer = id(&emu.post("/v1/customers", &[("email", email)]).await);
    emu.post("/v1/subscriptions", &[("customer", &customer), ("items[0][price]", &id(&price)), ("default_payment_method", "pm_card_visa")])
        .await;
    let portal = emu.post("/v1/billing_portal/sessions", &[("customer", &customer), ("return_url", "http://127.0.0.1:9/\"><b>")]).await;
    let (status, html) = page(&emu, portal["url"].as_str().unwrap().trim_start_matches(&emu.url)).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>alert(1)") && !html.contains("<b>"), "{html}");
    let shown = test_support::shown_text(&html);
    assert!(shown.contains("<script>alert(1)</script>") && shown.contains(email), "{html}");
}

#[tokio::test]
async fn portal_cancels_renews_switches_and_replaces_the_card() {
    let emu = spawn_emulator(vec![]).await;
    let (customer, sub) = emu.subscribed_customer().await;
    let sub_id = id(&sub);
    let portal = emu.post("/v1/billing_portal/sessions", &[("customer", &customer), ("return_url", "http://127.0.0.1:9/dashboard")]).await;
    assert_eq!(portal["object"], "billing_portal.session");
    let path = portal["url"].as_str().unwrap().trim_start_matches(&emu.url).to_string();
    let (status, html) = page(&emu, &path).await;
    assert_eq!(status, 200);
    assert!(html.contains("Pro") && html.contains("visa •••• 4242") && html.contains("Renews on"));
    assert!(html.contains("http://127.0.0.1:9/dashboard"), "return link");

    let (status, location, _) = form(&emu, &format!("{path}/cancel"), &format!("subscription={sub_id}")).await;
    assert_eq!(status, 303);
    assert!(location.starts_with(&path));
    let current: Value = emu.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(current["cancel_at_period_end"], true);
    let (_, html) = page(&emu, &location).await;
    assert!(html.contains("Cancels on") && html.contains("canceled at the end of the billing period"));

    form(&emu, &format!("{path}/renew"), &format!("subscription={sub_id}")).await;
    assert_eq!(emu.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["cancel_at_period_end"], false);

    form(&emu, &format!("{path}/switch"), &format!("subscription={sub_id}&price=price_pro_yearly")).await;
    assert_eq!(emu.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["items"]["data"][0]["price"]["id"], "price_pro_yearly");

    let (status, _, _) = form(&emu, &format!("{path}/card"), "card_number=5555555555554444").await;
    assert_eq!(status, 303);
    let updated = emu.get(&format!("/v1/subscriptions/{sub_id}"), &[("expand[]", "default_payment_method")]).await;
    assert_eq!(updated["default_payment_method"]["card"]["last4"], "4444");
    let cust = emu.get(&format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!(cust["invoice_settings"]["default_payment_method"], updated["default_payment_method"]["id"]);

    // Another customer's subscription cannot be touched through this session.
    let (_, other) = emu.subscribed_customer().await;
    let (status, _, html) = form(&emu, &format!("{path}/cancel"), &format!("subscription={}", id(&other))).await;
    assert_eq!(status, 400);
    assert!(html.contains("cannot be changed"));
    let (status, _, _) = form(&emu, &format!("{path}/card"), "card_number=4000000000000002").await;
    assert_eq!(status, 402);
}

/// Hosted pages and control endpoints answer only for the emulator's own host (no DNS rebinding)
/// and refuse form posts from other sites; the API is unaffected.
#[tokio::test]
async fn other_hosts_and_cross_site_posts_are_refused() {
    let emu = spawn_emulator(vec![]).await;
    let (_, session) = emu.open_session(&[]).await;
    let own_host = emu.url.trim_start_matches("http://").to_string();
    let send = |method: reqwest::Method, path: String, headers: Vec<(&'static str, String)>| {
        let mut request =
            emu.client.request(method, format!("{}{path}", emu.url)).header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.body("card_number=4242424242424242").send().await.unwrap().status().as_u16() }
    };
    let complete = format!("/_emulator/checkout/sessions/{session}/complete");
    assert_eq!(send(reqwest::Method::GET, format!("/c/pay/{session}"), vec![("host", "evil.example".into())]).await, 403);
    assert_eq!(send(reqwest::Method::POST, complete.clone(), vec![("host", "rebound.evil.example:80".into())]).await, 403);
    assert_eq!(send(reqwest::Method::POST, complete.clone(), vec![("origin", "https://evil.example".into())]).await, 403);
    assert_eq!(send(reqwest::Method::POST, format!("/c/pay/{session}"), vec![("sec-fetch-site", "cross-site".into())]).await, 403);
    assert_eq!(emu.call(reqwest::Method::GET, "/v1/customers", &[]).await.status, 200, "the API is not affected");
    // The same origin still pays.
    assert_eq!(send(reqwest::Method::POST, complete, vec![("origin", format!("http://{own_host}"))]).await, 303);
}
