//! The product's path: sign up → checkout → pay → success → dashboard.

use reqwest::Method;

use crate::helpers::{spawn_app, MONTHLY};

#[tokio::test]
async fn sign_up_subscribe_pay_and_see_the_dashboard() {
    let app = spawn_app().await;
    let browser = app.signed_in("Grace@Example.com").await;
    let landing = browser.get("/").await;
    assert_eq!(landing.status, 200);
    assert!(landing.text.contains("Pro") && landing.text.contains("$10.00") && landing.text.contains("$100.00"), "plans read from Stripe");
    assert!(landing.text.contains("grace@example.com"), "signed in as the normalised email");

    // A plain form post goes straight to Checkout.
    let started = browser.form("/api/generate-stripe-checkout", &[("priceId", MONTHLY)]).await;
    assert_eq!(started.status, 303, "{}", started.text);
    let checkout_url = started.location().to_string();
    let session_id = checkout_url.rsplit('/').next().unwrap().to_string();
    assert!(checkout_url.starts_with(&app.stripe_url) && session_id.starts_with("cs_test_"));
    let session = app.stripe(Method::GET, &format!("/v1/checkout/sessions/{session_id}"), &[]).await;
    assert_eq!(
        session["success_url"],
        format!("http://localhost:{}/success?session_id={{CHECKOUT_SESSION_ID}}", app.url.rsplit(':').next().unwrap())
    );
    assert_eq!(session["mode"], "subscription");
    let customer = session["customer"].as_str().unwrap().to_string();
    let stripe_customer = app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!(stripe_customer["email"], "grace@example.com");
    assert!(stripe_customer["metadata"]["userId"].as_str().unwrap().starts_with("user_"));
    assert_eq!(session["client_reference_id"], stripe_customer["metadata"]["userId"]);

    let paid = app.pay(&session_id, "4242 4242 4242 4242").await;
    assert_eq!(paid.status, 303);
    let success_path = paid.location().split_once("localhost:").unwrap().1.split_once('/').map(|(_, p)| format!("/{p}")).unwrap();
    let back = browser.get(&success_path).await;
    assert_eq!(back.status, 303);
    assert_eq!(back.location(), "/dashboard");

    let dashboard = browser.get("/dashboard").await;
    assert_eq!(dashboard.status, 200);
    for expected in [
        "id=\"status\">active", "id=\"plan\">Pro ($10.00 per month)", "id=\"card\">visa •••• 4242", "id=\"email\">grace@example.com",
        "Manage billing",
    ] {
        assert!(dashboard.text.contains(expected), "dashboard shows {expected}");
    }
    assert_eq!(app.cache(&customer).await.unwrap(), app.expected_cache(&customer).await);
    let api = browser.get_json("/api/subscription").await.json();
    assert_eq!(api["status"], "active");
    assert_eq!(api["entitled"], true);
    assert_eq!(api["priceId"], MONTHLY);

    // Manage billing opens the portal for this customer.
    let portal = browser.form("/api/billing-portal", &[]).await;
    assert_eq!(portal.status, 303);
    assert!(portal.location().contains("/p/session/bps_"));

    let out = browser.form("/auth/sign-out", &[]).await;
    assert_eq!(out.status, 303);
    let after = browser.get("/dashboard").await;
    assert_eq!(after.status, 303);
    assert!(after.location().starts_with("/auth"));
    // Signing back in with the same password works; the session cookie is a fresh one.
    let again = browser
        .form("/auth/sign-in", &[("email", "grace@example.com"), ("password", "a long enough password"), ("next", "/dashboard")])
        .await;
    assert_eq!((again.status, again.location()), (303, "/dashboard"));
}

#[tokio::test]
async fn success_without_a_customer_goes_home() {
    let app = spawn_app().await;
    let browser = app.signed_in("nobody@example.com").await;
    let r = browser.get("/success?session_id=cs_test_whatever").await;
    assert_eq!((r.status, r.location()), (303, "/"));
    let api = browser.get_json("/api/subscription").await.json();
    assert_eq!(api, serde_json::json!({ "status": "none", "entitled": false, "features": [] }));
}
