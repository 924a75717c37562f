//! API keys through the gateway: a subscriber makes a key, a program calls the product's API
//! (`API_PATHS`) with it, the product learns who calls (and with which key) but never sees the
//! key; forward-auth reads keys too; a revoked key stops working within a second, on every
//! instance over one Redis.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{shown_text, spawn_app_against, spawn_app_with, Browser, Options, Reply, TestApp, MONTHLY};

/// A gateway in front of the echo product, `/app` and `/api/v1` gated.
async fn gateway_app(product: &str, extra: Vec<(&'static str, String)>) -> TestApp {
    let mut settings = vec![("UPSTREAM_URL", product.to_string()), ("GATED_PATHS", "/app".to_string())];
    settings.extend(extra);
    spawn_app_with(Options { extra: settings, ..Options::default() }).await
}

/// A program's request: no cookies, the key in `header` (`authorization` gets `Bearer `).
async fn program(app: &TestApp, path: &str, header: &str, key: &str) -> Reply {
    let value = if header == "authorization" { format!("Bearer {key}") } else { key.to_string() };
    let request = app.http.get(format!("{}{path}", app.url)).header(header, value).header("accept", "application/json");
    Reply::read(request.send().await.unwrap()).await
}

async fn make_key(browser: &Browser, name: &str) -> (String, String) {
    let made = browser.json_post("/api/keys", &json!({ "name": name })).await;
    assert_eq!(made.status, 201, "{}", made.text);
    (made.json()["id"].as_str().unwrap().to_string(), made.json()["key"].as_str().unwrap().to_string())
}

/// A meter for `event` (summed) on the app's emulator, and a subscriber with a key: the meter's
/// id, the subscriber, their customer and the key.
async fn metered_subscriber(app: &TestApp, event: &str, email: &str) -> (String, Browser, String, String) {
    let form = [("display_name", event), ("event_name", event), ("default_aggregation[formula]", "sum")];
    let meter = app.stripe(Method::POST, "/v1/billing/meters", &form).await["id"].as_str().unwrap().to_string();
    let (subscriber, customer) = app.subscribed(email, MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (_, secret) = make_key(&subscriber, event).await;
    (meter, subscriber, customer, secret)
}

#[tokio::test]
async fn a_program_calls_the_api_with_a_key_and_the_product_never_sees_it() {
    let (product, _) = crate::gateway::start_product().await;
    let app = gateway_app(&product, vec![]).await;
    let (subscriber, _) = app.subscribed("builder@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (id, secret) = make_key(&subscriber, "deploy bot").await;
    assert!(secret.starts_with("tg_test_") && secret.len() == 48, "{secret}");

    for header in ["authorization", "x-api-key"] {
        let seen = crate::gateway::received(&program(&app, "/api/v1/items?page=2", header, &secret).await);
        let headers = &seen["headers"];
        assert_eq!(headers["x-tollgate-key-id"], id.as_str());
        assert_eq!(
            (headers["x-forwarded-email"].as_str(), headers["x-tollgate-entitled"].as_str()),
            (Some("builder@example.com"), Some("true"))
        );
        assert!(headers.get("authorization").is_none() && headers.get("x-api-key").is_none(), "the key stays with Tollgate: {headers}");
        assert!(!seen.to_string().contains(&secret));
    }
    // A key counts only on the API's paths; a wrong one is a clear 401.
    assert_eq!(program(&app, "/app/items", "x-api-key", &secret).await.status, 401);
    let wrong = program(&app, "/api/v1/items", "x-api-key", &format!("tg_test_{}", "x".repeat(40))).await;
    assert_eq!((wrong.status, wrong.json()["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(program(&app, "/api/v1/items", "x-api-key", "tg_test_short").await.status, 401, "no key at all");

    // The list shows names and prefixes, never a secret.
    let listed = subscriber.get_json("/api/keys").await;
    assert_eq!(listed.json()["data"][0]["prefix"], &secret[..12]);
    assert!(!listed.text.contains(&secret));

    // Revoked: refused within a second (what an identity is kept for).
    let r = subscriber.send(Method::DELETE, &format!("/api/keys/{id}"), &[("x-csrf-token", &subscriber.csrf().unwrap())], None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(program(&app, "/api/v1/items", "authorization", &secret).await.status, 401);
}

#[tokio::test]
async fn keys_of_someone_not_subscribed_and_forward_auth() {
    let app = crate::helpers::spawn_app().await;
    let browser = app.signed_in("free@example.com").await;
    let (id, secret) = make_key(&browser, "script").await;
    let verify = |key: String| {
        let request = app.http.get(format!("{}/auth/verify", app.url)).header("x-api-key", key);
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    assert_eq!(verify(secret.clone()).await.status, 402, "not subscribed");
    let started = browser.json_post("/api/generate-stripe-checkout", &json!({ "priceId": MONTHLY })).await;
    app.pay(started.json()["sessionId"].as_str().unwrap(), "4242424242424242").await;
    assert_eq!(browser.get("/success").await.status, 303);
    app.clock.advance(Duration::from_secs(1));
    let verified = verify(secret).await;
    assert_eq!(verified.status, 200, "{}", verified.text);
    assert_eq!(verified.headers["x-tollgate-key-id"], id.as_str());
    assert_eq!(verified.headers["x-forwarded-email"], "free@example.com");
}

#[tokio::test]
async fn the_keys_page_shows_a_new_key_once_and_an_organizations_keys_are_its_admins() {
    let app = crate::helpers::spawn_app().await;
    let owner = app.signed_in("keys@example.com").await;
    assert!(owner.get("/keys").await.text.contains("id=\"no-keys\""));
    let made = owner.form("/api/keys", &[("name", "laptop")]).await;
    assert_eq!(made.status, 200, "{}", made.text);
    assert_eq!(made.headers["cache-control"], "no-store");
    let secret = made.text.split("<code id=\"new-key\">").nth(1).and_then(|rest| rest.split('<').next()).unwrap().to_string();
    assert!(tollgate_core::api_keys::is_secret(&secret), "{secret}");
    let page = owner.get("/keys").await.text;
    assert!(page.contains(&secret[..12]) && !page.contains(&secret), "listed by its prefix only");
    for (body, code) in [(json!({ "name": "" }), 400), (json!({ "name": "x".repeat(61) }), 400), (json!({ "name": ["no"] }), 400)] {
        let r = owner.json_post("/api/keys", &body).await;
        assert_eq!(r.status, code, "{body}: {}", r.text);
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let id = owner.get_json("/api/keys").await.json()["data"][0]["id"].as_str().unwrap().to_string();
    let revoked = owner.form(&format!("/api/keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.headers["location"], "/keys?notice=key-revoked");
    assert_eq!(owner.get_json("/api/keys").await.json()["data"], json!([]));
    assert_eq!(owner.form(&format!("/api/keys/{id}/revoke"), &[]).await.status, 404, "gone");

    // Acting for an organization: its keys, managed by its owners and admins only.
    let org = owner.json_post("/api/orgs", &json!({ "name": "Keyed" })).await.json()["id"].as_str().unwrap().to_string();
    let (_, org_secret) = make_key(&owner, "org job").await;
    assert_eq!(owner.get_json("/api/keys").await.json()["data"][0]["orgId"], org.as_str());
    let invited = owner.json_post(&format!("/api/orgs/{org}/invitations"), &json!({ "email": "member@example.com" })).await;
    assert_eq!(invited.status, 201);
    let link = app.emailed_link("member@example.com", "/invitations/accept");
    let member = app.signed_in("member@example.com").await;
    member.json_post("/api/invitations/accept", &json!({ "token": link.split("token=").nth(1).unwrap() })).await;
    let refused = member.json_post("/api/keys", &json!({ "name": "mine" })).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(shown_text(&member.get("/keys").await.text).contains("owners and admins"));
    // The organization's key calls as the organization.
    let kv = app.state.billing().kv.clone();
    let keys =
        tollgate_core::api_keys::ApiKeys::new(kv.clone(), tollgate_core::orgs::Orgs::new(kv, app.clock.clone()), app.clock.clone(), false);
    let (_, caller) = keys.authenticate(&org_secret).await.unwrap().expect("the organization's key opens");
    assert_eq!(caller.org.map(|o| (o.id.to_string(), o.role)), Some((org, tollgate::OrgRole::Owner)));
}

/// Two instances over one Redis: a key revoked on one is refused by the other within a second.
#[tokio::test]
async fn a_revoked_key_is_refused_on_every_instance_within_a_second() {
    let redis = crate::redis_server::RedisServer::start();
    let (product, _) = crate::gateway::start_product().await;
    let stripe = crate::helpers::spawn_emulator().await;
    let options = || Options { kv_url: redis.url(), extra: vec![("UPSTREAM_URL", product.clone())], ..Options::default() };
    let (one, two) = (spawn_app_against(&stripe, options()).await, spawn_app_against(&stripe, options()).await);
    let (subscriber, _) = one.subscribed("two@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (id, secret) = make_key(&subscriber, "everywhere").await;
    for app in [&one, &two] {
        assert_eq!(program(app, "/api/v1/x", "x-api-key", &secret).await.status, 200, "the key works on both");
    }
    let r = subscriber.send(Method::DELETE, &format!("/api/keys/{id}"), &[("x-csrf-token", &subscriber.csrf().unwrap())], None).await;
    assert_eq!(r.status, 204);
    assert_eq!(program(&one, "/api/v1/x", "x-api-key", &secret).await.status, 401, "at once where it was revoked");
    // The other instance answered from its moment of memory until that moment is over.
    assert_eq!(program(&two, "/api/v1/x", "x-api-key", &secret).await.status, 200, "kept for under a second");
    two.clock.advance(Duration::from_secs(1));
    let elsewhere: Value = program(&two, "/api/v1/x", "x-api-key", &secret).await.json();
    assert_eq!(elsewhere["error"]["code"], "invalid_api_key", "within a second on the other");
}

/// `PLAN_LIMITS`: five a minute (a GCRA: all five may come at once) and eight a period. Every
/// answer carries `RateLimit-*`; the sixth in a minute is a 429 with `Retry-After`; past the
/// period's eight, the period's limit answers until the next period, whose count starts afresh.
#[tokio::test]
async fn plan_limits_answer_429_with_the_ratelimit_headers_and_start_afresh_each_period() {
    let (product, _) = crate::gateway::start_product().await;
    let app = gateway_app(&product, vec![("PLAN_LIMITS", format!("{MONTHLY}:5/min,8/month"))]).await;
    let (subscriber, customer) = app.subscribed("metered@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (_, secret) = make_key(&subscriber, "quota").await;
    let header = |reply: &Reply, name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // Forward-auth checking a browser's request (no path named, no key) counts nothing.
    let checked = subscriber.get_json("/auth/verify").await;
    assert_eq!((checked.status, header(&checked, "ratelimit-remaining")), (200, None), "{:?}", checked.headers);
    for n in 1..=5u64 {
        let ok = program(&app, "/api/v1/x", "x-api-key", &secret).await;
        assert_eq!(ok.status, 200, "{n}: {}", ok.text);
        assert_eq!((header(&ok, "ratelimit-limit"), header(&ok, "ratelimit-remaining")), (Some(5), Some(5 - n)), "{n}");
    }
    let refused = program(&app, "/api/v1/x", "x-api-key", &secret).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (429, Some("rate_limited")), "{}", refused.text);
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    assert!(header(&refused, "retry-after").is_some_and(|s| (1..=12).contains(&s)), "{:?}", refused.headers);
    assert_eq!(program(&app, "/app/x", "x-api-key", &secret).await.status, 401, "quotas are the API's; /app is for sessions");

    // A minute later: three more reach the period's eight, and the period's limit is the binding one.
    app.clock.advance(Duration::from_secs(60));
    for _ in 6..=8 {
        assert_eq!(program(&app, "/api/v1/x", "x-api-key", &secret).await.status, 200);
    }
    assert!(subscriber.get("/dashboard").await.text.contains("<span id=\"usage\">8 of 8</span>"), "the dashboard's bar");
    let spent = program(&app, "/api/v1/x", "x-api-key", &secret).await;
    assert_eq!((spent.status, header(&spent, "ratelimit-limit"), header(&spent, "ratelimit-remaining")), (429, Some(8), Some(0)));
    let period_end = app.cache(&customer).await.unwrap()["currentPeriodEnd"].as_i64().unwrap();
    let wait = header(&spent, "retry-after").unwrap() as i64;
    assert!((period_end - app.clock.unix_now() - wait).abs() <= 2, "until the period ends: {wait}");

    // The customer's own next period: a fresh count.
    let seconds = (period_end - tollgate_core::unix_now() + 3700).to_string();
    app.stripe(Method::POST, "/_emulator/clock/advance", &[("seconds", &seconds)]).await;
    app.deliver_all_and_settle(&app.events_for(&customer).await).await;
    app.clock.advance(Duration::from_secs(2));
    let renewed = program(&app, "/api/v1/x", "x-api-key", &secret).await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    // The period's count is fresh (1 of 8), so the minute's limit binds again: 4 of its 5 used.
    assert_eq!((header(&renewed, "ratelimit-limit"), header(&renewed, "ratelimit-remaining")), (Some(5), Some(1)));
}

/// Two instances over one Redis count one quota together.
#[tokio::test]
async fn instances_over_one_redis_share_the_quota() {
    let redis = crate::redis_server::RedisServer::start();
    let (product, _) = crate::gateway::start_product().await;
    let stripe = crate::helpers::spawn_emulator().await;
    let options = || Options {
        kv_url: redis.url(),
        extra: vec![("UPSTREAM_URL", product.clone()), ("PLAN_LIMITS", format!("{MONTHLY}:10/min"))],
        ..Options::default()
    };
    let (one, two) = (spawn_app_against(&stripe, options()).await, spawn_app_against(&stripe, options()).await);
    let (subscriber, _) = one.subscribed("shared@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (_, secret) = make_key(&subscriber, "shared").await;
    for n in 0..10 {
        let app = if n % 2 == 0 { &one } else { &two };
        assert_eq!(program(app, "/api/v1/x", "authorization", &secret).await.status, 200, "{n}");
    }
    for app in [&one, &two] {
        assert_eq!(program(app, "/api/v1/x", "authorization", &secret).await.status, 429);
    }
}

/// Redis gone while a program calls with a key not checked before: a retryable 503 (never the 401
/// that would tell the program its key is bad), the product not asked; once Redis is back, the
/// same key works.
#[tokio::test]
async fn a_key_checked_while_redis_is_down_is_a_retryable_503() {
    let mut redis = crate::redis_server::RedisServer::start_with(crate::redis_server::RedisOptions { durable: true, ..Default::default() });
    let (product, seen) = crate::gateway::start_product().await;
    let app = spawn_app_with(Options { kv_url: redis.url(), extra: vec![("UPSTREAM_URL", product)], ..Options::default() }).await;
    let (subscriber, _) = app.subscribed("outage@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (_, secret) = make_key(&subscriber, "outage").await;

    redis.kill();
    let before = seen.requests.load(std::sync::atomic::Ordering::SeqCst);
    let r = program(&app, "/api/v1/items", "authorization", &secret).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (503, Some("unavailable")), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), before, "the product was not asked");

    redis.restart();
    let back = program(&app, "/api/v1/items", "authorization", &secret).await;
    assert_eq!(crate::gateway::received(&back)["headers"]["x-forwarded-email"], "outage@example.com");
}

/// A metered call retried with its `Idempotency-Key` is billed once (the product is asked each
/// time: its work is its own); a malformed key is a 400 before the product is asked; and an
/// answer whose usage cannot be counted (Redis down) is withheld as a retryable 503, so a 2xx is
/// never unbilled.
#[tokio::test]
async fn a_metered_call_is_billed_once_per_idempotency_key_and_never_answered_unbilled() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut redis = crate::redis_server::RedisServer::start_with(crate::redis_server::RedisOptions { durable: true, ..Default::default() });
    let (product, seen) = crate::gateway::start_product().await;
    let extra = vec![("UPSTREAM_URL", product), ("METERED_PATHS", "/api/v1:api_requests".to_string())];
    let app = spawn_app_with(Options { kv_url: redis.url(), extra, ..Options::default() }).await;
    let (subscriber, _) = app.subscribed("retries@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let (_, secret) = make_key(&subscriber, "retries").await;
    let call = |key: Option<String>| {
        let mut request = app.http.get(format!("{}/api/v1/work", app.url)).bearer_auth(&secret);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    let kv = app.state.billing().kv.clone();
    let counted = || async {
        let mut total = 0;
        for bucket in kv.usage_pending(100).await.unwrap().0 {
            total += kv.get(&bucket).await.unwrap().map_or(0, |v| v.parse::<u64>().unwrap());
        }
        total
    };

    let asked = seen.requests.load(SeqCst);
    for key in ["order-1", "order-1", "order-2"] {
        assert_eq!(call(Some(key.to_string())).await.status, 200);
    }
    assert_eq!(call(None).await.status, 200);
    assert_eq!((seen.requests.load(SeqCst) - asked, counted().await), (4, 3), "asked 4 times, billed 3: the retry of order-1 counts once");

    for bad in ["x".repeat(256), "tab\there".to_string()] {
        let refused = call(Some(bad)).await;
        assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (400, Some("invalid_idempotency_key")), "{}", refused.text);
    }
    assert_eq!(seen.requests.load(SeqCst) - asked, 4, "a refused key: the product is not asked");

    // The key is still known to this instance (kept a second), so the product answers; the
    // usage cannot be stored, so the 2xx is withheld.
    redis.kill();
    let withheld = call(Some("order-3".to_string())).await;
    assert_eq!((withheld.status, withheld.json()["error"]["code"].as_str()), (503, Some("unavailable")), "{}", withheld.text);
    assert!(withheld.headers.contains_key("retry-after"), "{:?}", withheld.headers);
    assert_eq!(seen.requests.load(SeqCst) - asked, 5, "the product did answer");
    redis.restart();
    assert_eq!(call(Some("order-3".to_string())).await.status, 200, "the retry");
    assert_eq!(counted().await, 4, "order-3 billed once, by its retry");
}

/// `METERED_PRICES`: Checkout adds the usage price of the plan's interval after the plan (the
/// cache's `priceId` stays the plan's); a change to a plan of another interval, scheduled for the
/// period's end, keeps the usage price until then and leaves it out after (Stripe bills a
/// subscription's items on one interval).
#[tokio::test]
async fn usage_prices_go_beside_plans_of_their_interval() {
    let stripe = crate::helpers::spawn_emulator().await;
    let http = reqwest::Client::new();
    let api = |method: Method, path: &'static str, form: Vec<(&'static str, String)>| {
        let (http, stripe) = (http.clone(), stripe.clone());
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::helpers::stripe_api(&http, &stripe, method, path, &form).await
        }
    };
    let meter = api(
        Method::POST,
        "/v1/billing/meters",
        vec![("display_name", "Calls".into()), ("event_name", "api_requests".into()), ("default_aggregation[formula]", "sum".into())],
    )
    .await;
    let usage = api(
        Method::POST,
        "/v1/prices",
        vec![
            ("product", "prod_pro".into()),
            ("currency", "usd".into()),
            ("unit_amount", "1".into()),
            ("recurring[interval]", "month".into()),
            ("recurring[usage_type]", "metered".into()),
            ("recurring[meter]", meter["id"].as_str().unwrap().into()),
        ],
    )
    .await;
    let usage = usage["id"].as_str().unwrap().to_string();
    let app = spawn_app_against(&stripe, Options { extra: vec![("METERED_PRICES", usage.clone())], ..Options::default() }).await;
    let (subscriber, customer) = app.subscribed("usage-price@example.com", MONTHLY).await;
    assert_eq!(subscriber.get("/success").await.status, 303);
    let entry = app.cache(&customer).await.unwrap();
    assert_eq!(entry["priceId"], MONTHLY, "{entry}");
    let subscription = entry["subscriptionId"].as_str().unwrap().to_string();
    let live = app.stripe(Method::GET, &format!("/v1/subscriptions/{subscription}"), &[]).await;
    let items: Vec<&str> = live["items"]["data"].as_array().unwrap().iter().map(|i| i["price"]["id"].as_str().unwrap()).collect();
    assert_eq!(items, [MONTHLY, usage.as_str()]);

    let scheduled = subscriber.json_post("/api/change-plan", &json!({ "priceId": crate::helpers::YEARLY })).await;
    assert_eq!(scheduled.status, 200, "{}", scheduled.text);
    let live = app.stripe(Method::GET, &format!("/v1/subscriptions/{subscription}"), &[("expand[]", "schedule")]).await;
    let phases: Vec<Vec<&str>> = live["schedule"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["items"].as_array().unwrap().iter().map(|i| i["price"].as_str().unwrap()).collect())
        .collect();
    assert_eq!(phases, [vec![MONTHLY, usage.as_str()], vec![crate::helpers::YEARLY]]);
    assert_eq!(app.cache(&customer).await.unwrap()["scheduledPriceId"], crate::helpers::YEARLY);
}

/// `METERED_PATHS`: each 2xx of the product on a metered path counts once for the caller's
/// customer; closed minutes reach the emulator's meter as one event each; a record sent again
/// (a crash after Stripe accepted it) is not counted twice, and usage that comes for a minute
/// already sent is sent under the next number, not lost.
#[tokio::test]
async fn metered_calls_reach_stripes_meter_exactly_once() {
    let (product, _) = crate::gateway::start_product().await;
    let app = gateway_app(&product, vec![("METERED_PATHS", "/api/v1:api_requests".to_string())]).await;
    let (meter, _, customer, secret) = metered_subscriber(&app, "api_requests", "meters@example.com").await;
    for _ in 0..37 {
        assert_eq!(program(&app, "/api/v1/work", "x-api-key", &secret).await.status, 200);
    }
    assert_eq!(program(&app, "/app/page", "x-api-key", &secret).await.status, 401, "not the API: neither admitted nor counted");
    let kv = app.state.billing().kv.clone();
    let (open, _) = kv.usage_pending(10).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let bucket = open[0].clone();

    let now = tollgate_core::unix_now() / 60 * 60;
    let (from, to) = ((now - 3600).to_string(), (now + 7200).to_string());
    let counted = || async {
        let path = format!("/v1/billing/meters/{meter}/event_summaries");
        let summaries = app.stripe(Method::GET, &path, &[("customer", &customer), ("start_time", &from), ("end_time", &to)]).await;
        summaries["data"][0]["aggregated_value"].as_f64()
    };
    let becomes = |wanted: f64| {
        let (app, counted) = (&app, &counted);
        move || async move {
            // The flusher's next round: a few seconds on the app's clock.
            app.clock.advance(tollgate_core::billing::usage::FLUSH_EVERY);
            (counted().await == Some(wanted)).then_some(())
        }
    };
    // The minute ends: its bucket is sent.
    app.clock.advance(Duration::from_secs(60));
    test_support::eventually("37 calls on the meter", Duration::from_secs(20), becomes(37.0)).await;

    // As if an instance died after Stripe accepted the record, before forgetting it: sent again, not counted again.
    kv.hash_set(tollgate_core::kv::keys::USAGE_SENDING, &format!("{bucket}:1"), "37").await.unwrap();
    let resent = || async { kv.usage_pending(10).await.unwrap().1.is_empty().then_some(()) };
    test_support::eventually("the record sent again and forgotten", Duration::from_secs(20), || async {
        app.clock.advance(tollgate_core::billing::usage::FLUSH_EVERY);
        resent().await
    })
    .await;
    assert_eq!(counted().await, Some(37.0), "the meter counted it once");

    // A call answered just after its minute was sent (it was in flight): sent as the bucket's second record.
    kv.usage_add(&bucket, 5, None).await.unwrap();
    test_support::eventually("the late usage on the meter too", Duration::from_secs(20), becomes(42.0)).await;
}

/// On a Redis Cluster, through the gateway: the period's quota stops the 41st call, and the 40
/// answered calls reach Stripe's meter once (the buckets live in the customer's slot, the flusher
/// finds them through the cluster's usage listings, then forgets them).
#[tokio::test]
async fn quotas_and_metered_calls_on_a_redis_cluster() {
    let cluster = crate::redis_server::RedisCluster::start();
    let (product, _) = crate::gateway::start_product().await;
    let extra = vec![
        ("UPSTREAM_URL", product),
        ("GATED_PATHS", "/app".to_string()),
        ("METERED_PATHS", "/api/v1:api_requests".to_string()),
        ("PLAN_LIMITS", format!("{MONTHLY}:1000/min,40/month")),
    ];
    let app = spawn_app_with(Options { kv_url: cluster.url(), extra, ..Options::default() }).await;
    let (meter, _, customer, secret) = metered_subscriber(&app, "api_requests", "cluster@example.com").await;
    for n in 1..=40u64 {
        let answer = program(&app, "/api/v1/work", "x-api-key", &secret).await;
        assert_eq!(answer.status, 200, "{n}: {}", answer.text);
        assert_eq!(answer.headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()), Some((40 - n).to_string().as_str()), "{n}");
    }
    let refused = program(&app, "/api/v1/work", "x-api-key", &secret).await;
    assert_eq!(refused.status, 429, "{}", refused.text);

    let now = tollgate_core::unix_now() / 60 * 60;
    let (from, to) = ((now - 3600).to_string(), (now + 7200).to_string());
    let path = format!("/v1/billing/meters/{meter}/event_summaries");
    let kv = app.state.billing().kv.clone();
    app.clock.advance(Duration::from_secs(60));
    test_support::eventually("40 calls on the meter, nothing left to send", Duration::from_secs(20), || async {
        app.clock.advance(tollgate_core::billing::usage::FLUSH_EVERY);
        let summaries = app.stripe(Method::GET, &path, &[("customer", &customer), ("start_time", &from), ("end_time", &to)]).await;
        let (open, sending) = kv.usage_pending(10).await.unwrap();
        (summaries["data"][0]["aggregated_value"].as_f64() == Some(40.0) && open.is_empty() && sending.is_empty()).then_some(())
    })
    .await;
}

/// `METER_STREAM=true`: usage goes through the v2 meter event stream under a session token; when
/// Stripe says the token expired (here: the emulator's clock moved 16 minutes on), the next round
/// makes a new session and the usage still arrives, once.
#[tokio::test]
async fn metered_usage_goes_through_the_meter_event_stream() {
    let (product, _) = crate::gateway::start_product().await;
    let app =
        gateway_app(&product, vec![("METERED_PATHS", "/api/v1:api_requests".to_string()), ("METER_STREAM", "true".to_string())]).await;
    let (meter, _, customer, secret) = metered_subscriber(&app, "api_requests", "stream@example.com").await;
    let now = tollgate_core::unix_now() / 60 * 60;
    let (from, to) = ((now - 3600).to_string(), (now + 7200).to_string());
    let path = format!("/v1/billing/meters/{meter}/event_summaries");
    let rounds = std::sync::atomic::AtomicUsize::new(0);
    let reaches = |wanted: f64| {
        let (app, path, customer, from, to, rounds) = (&app, &path, &customer, &from, &to, &rounds);
        move || async move {
            rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            app.clock.advance(tollgate_core::billing::usage::FLUSH_EVERY);
            let summaries = app.stripe(Method::GET, path, &[("customer", customer), ("start_time", from), ("end_time", to)]).await;
            (summaries["data"][0]["aggregated_value"].as_f64() == Some(wanted)).then_some(())
        }
    };
    for _ in 0..12 {
        assert_eq!(program(&app, "/api/v1/work", "x-api-key", &secret).await.status, 200);
    }
    app.clock.advance(Duration::from_secs(60));
    test_support::eventually("12 calls through the stream", Duration::from_secs(20), reaches(12.0)).await;

    let moved = app.http.post(format!("{}/_emulator/clock/advance", app.stripe_url)).form(&[("seconds", "960")]).send().await.unwrap();
    assert_eq!(moved.status(), 200);
    for _ in 0..5 {
        assert_eq!(program(&app, "/api/v1/work", "x-api-key", &secret).await.status, 200);
    }
    app.clock.advance(Duration::from_secs(60));
    rounds.store(0, std::sync::atomic::Ordering::SeqCst);
    test_support::eventually("5 more under a new session", Duration::from_secs(20), reaches(17.0)).await;
    // Long before this instance's own clock would have the session expire (14 minutes of rounds).
    let rounds = rounds.load(std::sync::atomic::Ordering::SeqCst);
    assert!(rounds <= 20, "{rounds} flush rounds: the expired session was not replaced when Stripe said so");
}

/// A product weighs a metered request with `X-Tollgate-Usage` (tokens, say): that is what counts,
/// a weight that is no number counts one, and the header stays with Tollgate.
#[tokio::test]
async fn the_product_weighs_its_requests() {
    let product = crate::gateway::start_raw_product(|head| match head.contains("/api/v1/tokens") {
        true => b"HTTP/1.1 200 OK\r\nx-tollgate-usage: 1530\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        false => b"HTTP/1.1 200 OK\r\nx-tollgate-usage: lots\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    })
    .await;
    let app = gateway_app(&product, vec![("METERED_PATHS", "/api/v1:tokens_used".to_string())]).await;
    let (meter, _, customer, secret) = metered_subscriber(&app, "tokens_used", "weights@example.com").await;
    let weighed = program(&app, "/api/v1/tokens", "authorization", &secret).await;
    assert_eq!(weighed.status, 200, "{}", weighed.text);
    assert!(weighed.headers.get("x-tollgate-usage").is_none(), "the weight is not the client's");
    assert_eq!(program(&app, "/api/v1/other", "authorization", &secret).await.status, 200);
    let now = tollgate_core::unix_now() / 60 * 60;
    let (from, to) = ((now - 3600).to_string(), (now + 7200).to_string());
    app.clock.advance(Duration::from_secs(60));
    let path = format!("/v1/billing/meters/{meter}/event_summaries");
    let counted = || async {
        app.clock.advance(tollgate_core::billing::usage::FLUSH_EVERY);
        let summaries = app.stripe(Method::GET, &path, &[("customer", &customer), ("start_time", &from), ("end_time", &to)]).await;
        (summaries["data"][0]["aggregated_value"].as_f64() == Some(1531.0)).then_some(())
    };
    test_support::eventually("1,530 tokens and one call", Duration::from_secs(20), counted).await;
}
