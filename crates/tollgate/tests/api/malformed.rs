//! Malformed and hostile input: a 4xx with a readable message, and nothing stored is damaged.

use reqwest::Method;

use crate::helpers::spawn_app;

#[tokio::test]
async fn account_forms_explain_what_is_wrong() {
    let app = spawn_app().await;
    let browser = app.browser();
    let cases = [
        ("/auth/sign-up", vec![("email", "not-an-email")], 400, "valid email address"),
        ("/auth/sign-up", vec![("password", "a long enough password")], 400, "valid email address"),
        ("/auth/sign-in", vec![("email", "ok@example.com"), ("password", "whatever it is")], 401, "do not match an account"),
    ];
    for (path, fields, status, message) in cases {
        let r = browser.form(path, &fields).await;
        assert_eq!(r.status, status, "{path} {fields:?}: {}", r.text);
        assert!(r.text.contains(message), "{path}: page says '{message}'");
        assert!(r.text.contains("<form"), "the form is shown again, in place");
    }
    app.signed_in("Taken@Example.com").await;
    // Signing up again with a taken email answers like any sign-up: the difference goes to the inbox.
    let r = browser.form("/auth/sign-up", &[("email", "taken@example.com")]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Check your email") && r.text.contains(">taken@example.com</strong>"), "{}", r.text);
    let inbox = app.state.mailer().outbox().unwrap();
    assert!(inbox[0].mail.text.contains("you already have one") && !inbox[0].mail.text.contains("/auth/confirm"));
    // Wrong password and unknown email read the same.
    let wrong = browser.form("/auth/sign-in", &[("email", "taken@example.com"), ("password", "not the password")]).await;
    let unknown = browser.form("/auth/sign-in", &[("email", "ghost@example.com"), ("password", "not the password")]).await;
    assert_eq!(wrong.status, unknown.status);
    assert!(wrong.text.contains("do not match an account") && unknown.text.contains("do not match an account"));
    // The original account still works.
    let ok = browser.form("/auth/sign-in", &[("email", "taken@example.com"), ("password", "a long enough password")]).await;
    assert_eq!(ok.status, 303);
    // Hostile text comes back escaped.
    let r = browser.form("/auth/sign-in", &[("email", "<script>alert(1)</script>"), ("password", "x")]).await;
    assert!(!r.text.contains("<script>alert(1)") && crate::helpers::shown_text(&r.text).contains("<script>alert(1)</script>"));
    // A sign-in that succeeds goes to its `next` only when that is a path on this site.
    for (next, expected) in [
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("/app?x=1", "/app?x=1"),
    ] {
        let r =
            browser.form("/auth/sign-in", &[("email", "taken@example.com"), ("password", "a long enough password"), ("next", next)]).await;
        assert_eq!((r.status, r.location()), (303, expected), "next={next}");
    }
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = spawn_app().await;
    let browser = app.signed_in("csrf@example.com").await;
    let no_token = browser
        .send(
            Method::POST,
            "/api/generate-stripe-checkout",
            &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html"), ("sec-fetch-mode", "navigate")],
            Some(b"priceId=price_pro_monthly".to_vec()),
        )
        .await;
    assert_eq!(no_token.status, 403);
    assert!(no_token.text.contains("This form has expired"), "a person is asked to reload: {}", no_token.text);
    // A script (no browser headers) is told what it left out.
    let from_curl = browser
        .send(Method::POST, "/auth/sign-out", &[("content-type", "application/x-www-form-urlencoded"), ("user-agent", "curl/8.5.0")], None)
        .await;
    assert_eq!(from_curl.status, 403);
    assert!(from_curl.text.contains("lacks the `csrf` form field or the X-CSRF-Token header"), "{}", from_curl.text);
    let without_cookie = app
        .http
        .post(format!("{}/auth/sign-out", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=abc")
        .send()
        .await
        .unwrap();
    assert!(without_cookie.text().await.unwrap().contains("lacks the CSRF cookie"));
    let csrf = browser.csrf().unwrap();
    let other_site = browser
        .send(
            Method::POST,
            "/auth/sign-out",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", "https://evil.example")],
            Some(format!("csrf={csrf}").into_bytes()),
        )
        .await;
    assert_eq!(other_site.status, 403);
    assert_eq!(browser.get("/dashboard").await.status, 200, "still signed in");
    let json =
        browser.send(Method::POST, "/api/generate-stripe-checkout", &[("content-type", "application/json")], Some(b"{}".to_vec())).await;
    assert_eq!(json.status, 403);
    assert_eq!(json.json()["error"]["code"], "forbidden");
}

#[tokio::test]
async fn api_endpoints_reject_malformed_input() {
    let app = spawn_app().await;
    let browser = app.signed_in("api@example.com").await;
    let csrf = browser.csrf().unwrap();
    let post = |body: &'static [u8], content_type: &'static str| {
        let (browser, csrf) = (browser.clone(), csrf.clone());
        async move {
            browser
                .send(
                    Method::POST,
                    "/api/generate-stripe-checkout",
                    &[("content-type", content_type), ("x-csrf-token", &csrf)],
                    Some(body.to_vec()),
                )
                .await
        }
    };
    let r = post(b"{not json", "application/json").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_json")));
    let r = post(br#"{"priceId": 12}"#, "application/json").await;
    assert_eq!(r.status, 400);
    let r = post(b"priceId=%00%ff", "application/x-www-form-urlencoded").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_price")));
    let big = vec![b'a'; 100 * 1024];
    let r = browser
        .send(Method::POST, "/api/generate-stripe-checkout", &[("content-type", "application/json"), ("x-csrf-token", &csrf)], Some(big))
        .await;
    assert_eq!(r.status, 413);
    let r = browser.send(Method::POST, "/api/billing-portal", &[("x-csrf-token", &csrf)], None).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("no_billing_account")));
    let r = browser.get_json("/api/nothing-here").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("not_found")));
    let r = browser.send(Method::DELETE, "/api/subscription", &[("x-csrf-token", &csrf)], None).await;
    assert_eq!(r.status, 405);
    let page = browser.get("/no/such/page").await;
    assert_eq!(page.status, 404);
    assert!(page.text.contains("There is nothing at this address"));
    // A forged session cookie is just "signed out".
    let forged = app.browser();
    forged.get("/auth").await;
    let r = forged.send(Method::GET, "/api/subscription", &[("cookie", "tollgate_session=../../etc/passwd")], None).await;
    assert_eq!(r.status, 401);
    // The user's data is intact after all that.
    assert_eq!(browser.get_json("/api/subscription").await.json()["status"], "none");
    assert_eq!(app.browser().get("/healthz").await.status, 200);
}
