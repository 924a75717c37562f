//! Clerk as the auth provider, black-box: the real Tollgate with `AUTH_PROVIDER=clerk` against the
//! loopback Clerk (`clerk_mock`) and the emulator. Who is signed in follows Clerk's rules (the
//! oracle suite, `clerk_oracle`, compares them case by case; here, one browser's handshake), the
//! whole subscribe flow works with the same KV keys, and the Svix-signed webhook keeps the user's
//! email and data in step.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::json;

use crate::clerk_mock::{
    session_description, session_token, MockClerk, COOKIE_SUFFIX, INSTANCE_PUBLIC_KEY, PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET,
};
use crate::helpers::{spawn_app_with, Browser, Options, TestApp, MONTHLY};

const ADA: &str = "user_2d3v6qUerRVCQi42MBRn8RBBC64";

pub async fn clerk_app(clerk: &MockClerk, extra: Vec<(&'static str, String)>) -> TestApp {
    let mut vars = vec![
        ("AUTH_PROVIDER", "clerk".to_string()),
        ("CLERK_PUBLISHABLE_KEY", PUBLISHABLE_KEY.into()),
        ("CLERK_SECRET_KEY", SECRET_KEY.into()),
        ("CLERK_API_URL", clerk.url.clone()),
        ("CLERK_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
    ];
    vars.extend(extra);
    spawn_app_with(Options { extra: vars, ..Options::default() }).await
}

/// A browser whose Clerk SDK holds a fresh session for `user` on the development instance (the
/// suffixed cookies and the dev-browser token, as clerk-js writes them).
pub fn signed_in_browser(app: &TestApp, user: &str) -> Browser {
    let browser = app.browser();
    let token = session_token(user, &origin(app), |_, _| {});
    browser.set_cookie(&format!("__clerk_db_jwt_{COOKIE_SUFFIX}"), DEV_BROWSER);
    browser.set_cookie(&format!("__session_{COOKIE_SUFFIX}"), &token);
    browser.set_cookie(&format!("__client_uat_{COOKIE_SUFFIX}"), &(tollgate_core::unix_now() - 30).to_string());
    browser
}

const DEV_BROWSER: &str = "dvb_2d3vTollgateSuite";

/// A browser on the development instance, signed out (Clerk's dev-browser token, no session).
fn visitor(app: &TestApp) -> Browser {
    let browser = app.browser();
    browser.set_cookie("__clerk_db_jwt", DEV_BROWSER);
    browser
}

fn origin(app: &TestApp) -> String {
    app.state.billing().public_url.clone()
}

#[tokio::test]
async fn sign_up_subscribe_pay_and_see_the_dashboard_with_clerk() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("Ada@Example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let browser = signed_in_browser(&app, ADA);
    let dashboard = browser.get("/dashboard").await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.text);
    assert!(dashboard.text.contains("ada@example.com"), "the email comes from the Backend API");
    assert!(!dashboard.text.contains("sign-out-everywhere"), "Clerk users manage their devices at Clerk");
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(app.pay(&session, "4242424242424242").await.status, 303);
    assert_eq!(browser.get("/success").await.location(), "/dashboard");
    let dashboard = browser.get("/dashboard").await;
    assert!(dashboard.text.contains("id=\"status\">active"), "{}", dashboard.text);
    // The recipe's keys, under the Clerk user id.
    let customer = app.state.billing().kv.get(&format!("stripe:user:{ADA}")).await.unwrap().expect("stripe:user:{clerk id}");
    assert_eq!(app.cache(&customer).await.unwrap()["status"], "active");
    let stripe_customer = app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!((stripe_customer["email"].as_str(), stripe_customer["metadata"]["userId"].as_str()), (Some("ada@example.com"), Some(ADA)));
    // An API caller with the bearer token and no cookies.
    let token = session_token(ADA, &origin(&app), |_, _| {});
    let r = app.http.get(format!("{}/api/subscription", app.url)).bearer_auth(&token).send().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!((body["status"].as_str(), body["entitled"].as_bool()), (Some("active"), Some(true)));
    assert_eq!(clerk.hits().1, 1, "the email was read from the Backend API once, then from the KV");
}

/// Who is signed in is decided as `@clerk/backend` decides it (`clerk_oracle` holds the cases);
/// this follows one browser through Clerk's handshake: a page with a stale token goes to the
/// Frontend API, comes back with a nonce, gets fresh cookies and its page. An API call is signed
/// out instead, and a browser that keeps coming back stops at the sign-in page.
#[tokio::test]
async fn a_stale_session_goes_through_clerks_handshake_and_comes_back_signed_in() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let azp = origin(&app);
    let now = tollgate_core::unix_now();
    // Another tab signed in again since this token was issued: `__client_uat` is newer.
    let browser = signed_in_browser(&app, ADA);
    let stale = session_token(ADA, &azp, |_, c| (c["iat"], c["nbf"]) = (json!(now - 100), json!(now - 110)));
    browser.set_cookie(&format!("__session_{COOKIE_SUFFIX}"), &stale);
    assert_eq!(browser.get_json("/api/subscription").await.status, 401, "an API call cannot be redirected");
    let page = browser.get("/dashboard?tab=1").await;
    assert_eq!(page.status, 307, "{}", page.text);
    assert_eq!(page.headers["cache-control"], "no-store");
    let to = reqwest::Url::parse(page.location()).unwrap();
    assert_eq!((to.host_str(), to.path()), (Some("example-app-12.clerk.accounts.dev"), "/v1/client/handshake"));
    let query: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(query["redirect_url"], format!("{azp}/dashboard?tab=1"));
    assert_eq!(query["__clerk_hs_reason"], "session-token-iat-before-client-uat");
    assert_eq!((query["__clerk_db_jwt"].as_str(), query["suffixed_cookies"].as_str()), (DEV_BROWSER, "true"));
    assert_eq!(query["__session"], stale);
    assert!(browser.has_cookie("__clerk_redirect_count"));

    // The Frontend API sends the browser back with a nonce; the Backend API knows its cookies.
    let fresh = vec![session_description(crate::clerk_mock::ISSUER, ADA, &azp)];
    let lines =
        vec![format!("__session_{COOKIE_SUFFIX}={{{{t0}}}}; Path=/; SameSite=Lax"), format!("__client_uat_{COOKIE_SUFFIX}={now}; Path=/")];
    clerk.state.nonces.lock().unwrap().insert("nonce_1".into(), (lines, fresh));
    let back = browser.get("/dashboard?tab=1&__clerk_handshake_nonce=nonce_1").await;
    assert_eq!((back.status, back.location()), (307, format!("{azp}/dashboard?tab=1").as_str()), "{}", back.text);
    let dashboard = browser.get("/dashboard?tab=1").await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.text);
    assert!(dashboard.text.contains("ada@example.com"));

    // A browser that keeps coming back (keys of two instances): the fourth time, signed out.
    let stuck = signed_in_browser(&app, ADA);
    stuck.set_cookie(&format!("__session_{COOKIE_SUFFIX}"), &stale);
    stuck.set_cookie("__clerk_redirect_count", "3");
    assert_eq!(stuck.get("/dashboard").await.location(), "/auth?next=%2Fdashboard");
    // A form post is no page load Clerk would redirect: signed out too.
    let post = stuck.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(post.status, 401, "{}", post.text);
}

#[tokio::test]
async fn keys_are_fetched_once_an_unknown_kid_refetches_at_most_once_and_an_outage_is_a_503() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let azp = origin(&app);
    for _ in 0..5 {
        let r =
            app.http.get(format!("{}/api/subscription", app.url)).bearer_auth(session_token(ADA, &azp, |_, _| {})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(clerk.hits().0, 1, "the JWKS is cached");
    for kid in ["ins_rotated", "ins_another"] {
        let token = session_token(ADA, &azp, |h, _| h.kid = Some(kid.into()));
        let r = app.http.get(format!("{}/api/subscription", app.url)).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(clerk.hits().0, 2, "one refetch for unknown kids, then rate-limited");

    // The Backend API down before any key was fetched: retryable, not "signed out".
    let down = MockClerk::start().await;
    down.add_user(ADA, Some("ada@example.com"));
    down.state.failing.store(true, Ordering::SeqCst);
    let app = clerk_app(&down, vec![]).await;
    let ask = || app.http.get(format!("{}/api/subscription", app.url)).bearer_auth(session_token(ADA, &origin(&app), |_, _| {})).send();
    let r = ask().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // Back up: the same request works.
    down.state.failing.store(false, Ordering::SeqCst);
    app.clock.advance(std::time::Duration::from_millis(1_100)); // failures are remembered for a second
    assert_eq!(ask().await.unwrap().status(), 200);
}

#[tokio::test]
async fn with_the_pem_key_no_jwks_is_fetched_and_users_without_email_or_backend_get_clear_errors() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    clerk.add_user("user_phone_only", None);
    let app = clerk_app(&clerk, vec![("CLERK_JWT_KEY", INSTANCE_PUBLIC_KEY.to_string())]).await;
    let azp = origin(&app);
    let call = |token: String| {
        let (http, url) = (app.http.clone(), app.url.clone());
        async move { http.get(format!("{url}/api/subscription")).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(call(session_token(ADA, &azp, |h, _| h.kid = Some("ins_any".into()))).await.status(), 200, "PEM mode ignores kid");
    assert_eq!(clerk.hits().0, 0, "no JWKS fetched");
    let r = call(session_token("user_phone_only", &azp, |_, _| {})).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("no email address"));
    clerk.add_user("user_new", Some("new@example.com"));
    clerk.state.failing.store(true, Ordering::SeqCst);
    let r = call(session_token("user_new", &azp, |_, _| {})).await;
    assert_eq!(r.status(), 503, "no customer is ever made without an email");
    assert_eq!(call(session_token(ADA, &azp, |_, _| {})).await.status(), 200, "a known user's email is in the KV");
}

#[tokio::test]
async fn sign_out_revokes_the_clerk_session_and_the_built_in_account_routes_are_absent() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let browser = signed_in_browser(&app, ADA);
    assert_eq!(browser.get("/dashboard").await.status, 200);
    let r = browser.form("/auth/sign-out", &[]).await;
    assert_eq!((r.status, r.location()), (303, "/?notice=signed-out"));
    assert_eq!(*clerk.state.revoked.lock().unwrap(), vec![format!("sess_{ADA}")]);
    assert!(!browser.has_cookie(&format!("__session_{COOKIE_SUFFIX}")));
    assert_eq!(browser.get("/dashboard").await.location(), "/auth?next=%2Fdashboard");
    let auth = visitor(&app).get("/auth").await;
    assert!(auth.text.contains("id=\"clerk-mount\"") && auth.text.contains("clerk.browser.js"), "{}", auth.text);
    for path in ["/auth/sign-up", "/auth/sign-in", "/auth/reset", "/auth/sign-out-everywhere"] {
        assert_eq!(visitor(&app).form(path, &[("email", "x@example.com")]).await.status, 404, "{path}");
    }
    assert_eq!(visitor(&app).get("/dev/outbox").await.status, 404);
    // Without the dev-browser token, a page goes to the Frontend API first, as Clerk's middleware sends it.
    let first_visit = app.browser().get("/auth").await;
    assert_eq!(first_visit.status, 307);
    assert!(first_visit.location().contains("__clerk_hs_reason=dev-browser-missing"), "{}", first_visit.location());
}

fn signed_delivery(id: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("svix-id", id.to_string()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", crate::clerk_mock::svix_signature(WEBHOOK_SECRET, id, timestamp, body)),
        ("content-type", "application/json".into()),
    ]
}

async fn deliver(app: &TestApp, headers: &[(&'static str, String)], body: &str) -> crate::helpers::Reply {
    let mut request = app.http.post(format!("{}/api/clerk-webhook", app.url)).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    crate::helpers::Reply::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn clerk_webhooks_are_verified_refresh_the_email_and_forget_deleted_users() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let (_, customer) = {
        let browser = signed_in_browser(&app, ADA);
        let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
        let session = started.json()["sessionId"].as_str().unwrap().to_string();
        app.pay(&session, "4242424242424242").await;
        browser.get("/success").await;
        let customer = app.state.billing().kv.get(&format!("stripe:user:{ADA}")).await.unwrap().unwrap();
        (browser, customer)
    };
    let now = tollgate_core::unix_now();

    // The email changed at Clerk; the payload is not trusted, the Backend API is re-read.
    clerk.add_user(ADA, Some("ada.lovelace@example.com"));
    let updated = json!({"type": "user.updated", "object": "event", "data": {"id": ADA, "email_addresses": []}}).to_string();
    let r = deliver(&app, &signed_delivery("msg_updated", now, &updated), &updated).await;
    assert_eq!((r.status, r.json()["duplicate"].as_bool()), (200, Some(false)), "{}", r.text);
    assert!(signed_in_browser(&app, ADA).get("/dashboard").await.text.contains("ada.lovelace@example.com"));
    let stripe_customer = app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await;
    assert_eq!(stripe_customer["email"], "ada.lovelace@example.com");

    // A replay of the same delivery is acknowledged and does nothing.
    clerk.add_user(ADA, Some("changed-again@example.com"));
    let hits = clerk.hits().1;
    let r = deliver(&app, &signed_delivery("msg_updated", now, &updated), &updated).await;
    assert_eq!((r.status, r.json()["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(clerk.hits().1, hits);

    // Bad, stale and unsigned deliveries are refused with 400, and change nothing.
    let mut forged = signed_delivery("msg_forged", now, &updated);
    forged[2].1 = "v1,bm90IHRoZSBzaWduYXR1cmU=".into();
    let stale = signed_delivery("msg_stale", now - 301, &updated);
    let unsigned: Vec<_> = signed_delivery("msg_unsigned", now, &updated).into_iter().filter(|(n, _)| *n != "svix-signature").collect();
    for (case, headers) in [("forged", forged), ("stale", stale), ("unsigned", unsigned)] {
        let r = deliver(&app, &headers, &updated).await;
        assert_eq!(r.status, 400, "{case}");
        assert_eq!(r.json()["error"]["code"], "invalid_signature", "{case}");
    }
    assert_eq!(clerk.hits().1, hits);

    // The user is deleted: their subscription is cancelled and Tollgate forgets them.
    let deleted = json!({"type": "user.deleted", "object": "event", "data": {"object": "user", "id": ADA, "deleted": true}}).to_string();
    let r = deliver(&app, &signed_delivery("msg_deleted", now, &deleted), &deleted).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let subscriptions = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await;
    assert_eq!(subscriptions["data"][0]["status"], "canceled");
    let kv = &app.state.billing().kv;
    assert_eq!(kv.get(&format!("stripe:user:{ADA}")).await.unwrap(), None);
    assert_eq!(kv.get(&format!("tollgate:clerk:email:{ADA}")).await.unwrap(), None);
    assert!(kv.get(&format!("stripe:customer:{customer}")).await.unwrap().is_some(), "the customer's cache entry stays, mirroring Stripe");
}

/// `tollgate doctor` checks Clerk's keys against the Backend API.
#[tokio::test]
async fn doctor_checks_the_clerk_keys() {
    let clerk = MockClerk::start().await;
    let settings = |secret: &str| {
        [
            ("KV_URL", "memory:".to_string()),
            ("AUTH_PROVIDER", "clerk".into()),
            ("CLERK_PUBLISHABLE_KEY", PUBLISHABLE_KEY.into()),
            ("CLERK_SECRET_KEY", secret.to_string()),
            ("CLERK_API_URL", clerk.url.clone()),
        ]
    };
    let good = crate::doctor::check(&settings(SECRET_KEY), "clerk").await;
    assert_eq!(good["status"], "ok", "{good}");
    let bad = crate::doctor::check(&settings("sk_test_not_this_instance"), "clerk").await;
    assert_eq!(bad["status"], "fail", "{bad}");
    assert!(bad["fix"].as_str().unwrap().contains("CLERK_SECRET_KEY"));
}

/// A Backend API that never answers costs a few seconds and a retryable 503, not a hung request.
#[tokio::test]
async fn a_hung_backend_api_is_a_503_within_seconds() {
    let clerk = MockClerk::start().await;
    clerk.add_user("user_new", Some("new@example.com"));
    clerk.state.hanging.store(true, Ordering::SeqCst);
    let app = clerk_app(&clerk, vec![("CLERK_JWT_KEY", INSTANCE_PUBLIC_KEY.to_string())]).await;
    answers_503_within_seconds(&app, "/api/subscription").await;
}

/// A new user's request for `path` while the Backend API hangs: a 503 with `Retry-After`, quickly.
async fn answers_503_within_seconds(app: &TestApp, path: &str) {
    let started = std::time::Instant::now();
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .bearer_auth(session_token("user_new", &origin(app), |_, _| {}))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "{:?}", started.elapsed());
}

/// The same through the gateway: a user's identity cannot be found while the Backend API hangs,
/// so the gated page is a retryable 503 within seconds and the product is never asked.
#[tokio::test]
async fn a_hung_backend_api_behind_the_gateway_is_a_503_within_seconds() {
    let clerk = MockClerk::start().await;
    clerk.add_user("user_new", Some("new@example.com"));
    clerk.state.hanging.store(true, Ordering::SeqCst);
    let (product_url, product) = crate::gateway::start_product().await;
    let extra = vec![("CLERK_JWT_KEY", INSTANCE_PUBLIC_KEY.to_string()), ("UPSTREAM_URL", product_url), ("GATED_PATHS", "/app".into())];
    let app = clerk_app(&clerk, extra).await;
    answers_503_within_seconds(&app, "/app/report").await;
    assert_eq!(product.requests.load(Ordering::SeqCst), 0, "nothing reached the product");
}

/// Webhook deliveries that are too large, or signed but not a Clerk event, are refused with 4xx
/// and change nothing.
#[tokio::test]
async fn oversized_and_malformed_clerk_deliveries_are_refused() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let app = clerk_app(&clerk, vec![]).await;
    let now = tollgate_core::unix_now();
    let huge = format!("{{\"type\":\"user.updated\",\"data\":{{\"id\":\"{ADA}\"}},\"pad\":\"{}\"}}", "x".repeat(600 * 1024));
    let r = deliver(&app, &signed_delivery("msg_huge", now, &huge), &huge).await;
    assert_eq!(r.status, 413);
    for (id, body) in [
        ("msg_not_json", "not json at all".to_string()),
        ("msg_no_user", json!({"type": "user.updated", "data": {}}).to_string()),
        ("msg_bad_user", json!({"type": "user.deleted", "data": {"id": "../../admin"}}).to_string()),
    ] {
        let r = deliver(&app, &signed_delivery(id, now, &body), &body).await;
        assert_eq!(r.status, 400, "{id}: {}", r.text);
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(clerk.hits().1, 0, "nothing was acted on");
    let bad_header =
        deliver(&app, &[("svix-id", "msg_x".into()), ("svix-timestamp", "soon".into()), ("svix-signature", "v1,x".into())], "{}").await;
    assert_eq!(bad_header.status, 400);
}

/// Through the gateway, Clerk's credentials stay with Tollgate: its session cookies (plain and
/// suffixed), `__client_uat` and a bearer session token do not reach the product, unless
/// `FORWARD_CLERK_SESSION=true`; the product's own cookies and its own API keys pass.
#[tokio::test]
async fn clerk_credentials_do_not_reach_the_product() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@example.com"));
    let (product_url, _) = crate::gateway::start_product().await;
    let gateway = |forward: &'static str| {
        let extra = vec![
            ("CLERK_JWT_KEY", INSTANCE_PUBLIC_KEY.to_string()),
            ("UPSTREAM_URL", product_url.clone()),
            ("GATED_PATHS", "/app".into()),
            ("FORWARD_CLERK_SESSION", forward.into()),
        ];
        clerk_app(&clerk, extra)
    };
    let app = gateway("false").await;
    let browser = signed_in_browser(&app, ADA);
    browser.set_cookie("__session", &session_token(ADA, &origin(&app), |_, _| {}));
    browser.set_cookie("theme", "dark");
    let seen = crate::gateway::received(&browser.get_json("/docs").await);
    assert_eq!(seen["headers"]["cookie"], "theme=dark", "{seen}");
    assert!(seen["headers"]["x-forwarded-user"] == ADA, "the user is still known: {seen}");
    let token = session_token(ADA, &origin(&app), |_, _| {});
    let bearer = app.http.get(format!("{}/docs", app.url)).bearer_auth(&token).header("accept", "application/json").send().await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&bearer.text().await.unwrap()).unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    let own_key = app.http.get(format!("{}/docs", app.url)).bearer_auth("product-key-123").send().await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&own_key.text().await.unwrap()).unwrap();
    assert_eq!(seen["headers"]["authorization"], "Bearer product-key-123");

    let forwarding = gateway("true").await;
    let browser = signed_in_browser(&forwarding, ADA);
    let seen = crate::gateway::received(&browser.get_json("/docs").await);
    assert!(seen["headers"]["cookie"].as_str().unwrap().contains(&format!("__session_{COOKIE_SUFFIX}=")), "{seen}");
}

const ACME: &str = "org_2acmeClerk";
const BOB: &str = "user_bob_clerk";

/// A browser whose Clerk session acts for `org` with `role` (v2's `o` claim).
fn in_org(app: &TestApp, user: &str, org: &str, role: &str) -> Browser {
    let browser = signed_in_browser(app, user);
    let token = session_token(user, &origin(app), |_, claims| claims["o"] = json!({"id": org, "slg": "acme", "rol": role}));
    browser.set_cookie(&format!("__session_{COOKIE_SUFFIX}"), &token);
    browser
}

/// Organizations under Clerk: the token's organization pays (per seat here), its members pass
/// the gate, and Clerk's membership webhooks set the seat count; deleting the organization ends
/// its subscription.
#[tokio::test]
async fn a_clerk_organization_pays_per_seat_and_its_membership_webhooks_set_the_seats() {
    let clerk = MockClerk::start().await;
    clerk.add_user(ADA, Some("ada@acme.test"));
    clerk.add_user(BOB, Some("bob@acme.test"));
    clerk.set_org(ACME, "Acme", "acme", &[(ADA, "ada@acme.test", "org:admin")]);
    let app = clerk_app(&clerk, vec![("BILLING_SUBJECT", "organization".into()), ("SEAT_PRICES", MONTHLY.into())]).await;
    let now = tollgate_core::unix_now();
    let membership = |id: &str, kind: &str| {
        let body = json!({"type": kind, "object": "event", "data": {"object": "organization_membership", "id": format!("orgmem_{id}"),
                                                                    "organization": {"id": ACME}, "role": "org:member"}})
        .to_string();
        (signed_delivery(id, now, &body), body)
    };
    let (headers, body) = membership("msg_ada_joined", "organizationMembership.created");
    assert_eq!(deliver(&app, &headers, &body).await.status, 200);

    // Ada, Acme's admin, subscribes for it; Bob (a member) may not.
    let ada = in_org(&app, ADA, ACME, "admin");
    let bob = in_org(&app, BOB, ACME, "member");
    assert_eq!(bob.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await.status, 403);
    let started = ada.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let session = started.json()["sessionId"].as_str().unwrap().to_string();
    app.pay(&session, "4242424242424242").await;
    assert_eq!(ada.get("/success").await.status, 303);
    let customer = app.state.billing().kv.get(&format!("stripe:org:{ACME}")).await.unwrap().expect("the organization's customer");
    assert_eq!(app.stripe(Method::GET, &format!("/v1/customers/{customer}"), &[]).await["metadata"]["orgId"], ACME);

    // Bob's token names Acme: he is entitled through it; without the organization he is not.
    assert_eq!(bob.get("/app").await.status, 200);
    assert_eq!(signed_in_browser(&app, BOB).get_json("/api/subscription").await.json()["entitled"], false);

    // Bob joins at Clerk: the webhook re-reads the memberships and the seats follow.
    clerk.set_org(ACME, "Acme", "acme", &[(ADA, "ada@acme.test", "org:admin"), (BOB, "bob@acme.test", "org:member")]);
    let (headers, body) = membership("msg_bob_joined", "organizationMembership.created");
    assert_eq!(deliver(&app, &headers, &body).await.status, 200);
    let quantity = || async {
        app.settled().await;
        let list = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
        list["data"][0]["items"]["data"][0]["quantity"].as_i64()
    };
    let is = |wanted: i64| {
        let quantity = &quantity;
        move || async move { (quantity().await == Some(wanted)).then_some(()) }
    };
    test_support::eventually("two seats", std::time::Duration::from_secs(20), is(2)).await;
    clerk.set_org(ACME, "Acme", "acme", &[(ADA, "ada@acme.test", "org:admin")]);
    let (headers, body) = membership("msg_bob_left", "organizationMembership.deleted");
    assert_eq!(deliver(&app, &headers, &body).await.status, 200);
    test_support::eventually("one seat", std::time::Duration::from_secs(20), is(1)).await;

    // Clerk deletes the organization: its subscription ends.
    let deleted =
        json!({"type": "organization.deleted", "object": "event", "data": {"object": "organization", "id": ACME, "deleted": true}})
            .to_string();
    assert_eq!(deliver(&app, &signed_delivery("msg_acme_deleted", now, &deleted), &deleted).await.status, 200);
    let subscriptions = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await;
    assert_eq!(subscriptions["data"][0]["status"], "canceled");
    assert_eq!(app.state.billing().kv.get(&format!("stripe:org:{ACME}")).await.unwrap(), None);
}
