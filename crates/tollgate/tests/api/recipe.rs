//! Drop-in parity with the Next.js recipe's data: whatever the recipe's apps (or anything else)
//! left in `stripe:user:{userId}` and `stripe:customer:{customerId}`, no route answers 500 — the
//! values the recipe's clients write are read, anything else is repaired from Stripe.

use proptest::prelude::*;
use reqwest::Method;

use crate::helpers::{spawn_app_with, Browser, Options, TestApp, MONTHLY};

const SERVICE_TOKEN: &str = "a service token of at least thirty-two characters";

/// Every route that looks a user's customer or cache entry up, as the user (and the service)
/// would call it: `(route, status)`.
async fn every_route(app: &TestApp, browser: &Browser, user: &str) -> Vec<(&'static str, u16)> {
    let mut answers = vec![
        ("/api/subscription", browser.get_json("/api/subscription").await.status),
        ("/dashboard", browser.get("/dashboard").await.status),
        ("/success", browser.get("/success").await.status),
        ("/app/page (gateway)", browser.get_json("/app/page").await.status),
        ("/docs (gateway, open)", browser.get_json("/docs").await.status),
        ("/auth/verify", browser.get_json("/auth/verify").await.status),
        ("checkout", browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await.status),
        ("portal", browser.form("/api/billing-portal", &[]).await.status),
    ];
    let service = app.http.get(format!("{}/api/users/{user}/entitlement", app.url)).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
    answers.push(("service entitlement", service.status().as_u16()));
    answers
}

/// What to store in the two keys: the user's real customer in either form, or anything at all.
fn mapping(real: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(real.clone()),
        Just(serde_json::to_string(&real).unwrap()),
        "cus_[A-Za-z0-9]{1,24}",
        ".*",
        ".*".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn entry() -> impl Strategy<Value = String> {
    let valid = r#"{"subscriptionId":"sub_x","status":"active","priceId":"price_x","currentPeriodStart":1,"currentPeriodEnd":4102444800,"cancelAtPeriodEnd":false,"paymentMethod":null}"#;
    prop_oneof![
        Just(valid.to_string()),
        Just(serde_json::to_string(valid).unwrap()),
        Just(r#"{"status":"none"}"#.to_string()),
        ".*",
        "\\{\"status\":\"[a-z_]{0,12}\"\\}",
        ".*".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

/// A property test over real HTTP: 48 cases of arbitrary values in both keys, each followed
/// through every route; none answers 500 (a value Tollgate cannot read is repaired from Stripe:
/// the mapping from the customer's `metadata.userId`, the entry by a sync).
#[test]
fn no_value_of_the_recipes_keys_makes_a_route_answer_500() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, browser, user, customer) = runtime.block_on(async {
        let (upstream, _) = crate::gateway::start_product().await;
        let extra = vec![("UPSTREAM_URL", upstream), ("GATED_PATHS", "/app".into()), ("SERVICE_TOKEN", SERVICE_TOKEN.into())];
        let app = spawn_app_with(Options { extra, ..Options::default() }).await;
        let browser = app.signed_in("anyvalue@example.com").await;
        let user = crate::gateway::received(&browser.get_json("/docs").await)["headers"]["x-forwarded-user"].as_str().unwrap().to_string();
        let customer = app.stripe(Method::POST, "/v1/customers", &[("email", "anyvalue@example.com"), ("metadata[userId]", &user)]).await
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
        (app, browser, user, customer)
    });
    let config = ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (mapping(customer.clone()), entry());
    let result = runner.run(&strategy, |(mapping, entry)| {
        let answers = runtime.block_on(async {
            let kv = &app.state.billing().kv;
            kv.set(&format!("stripe:user:{user}"), &mapping).await.unwrap();
            kv.set(&format!("stripe:customer:{customer}"), &entry).await.unwrap();
            // Past the moment an identity is kept, so each request reads the KV again.
            app.clock.advance(std::time::Duration::from_secs(2));
            every_route(&app, &browser, &user).await
        });
        for (route, status) in answers {
            prop_assert!(status != 500, "{route} answered 500 with stripe:user = {mapping:?}, stripe:customer = {entry:?}");
        }
        Ok(())
    });
    result.unwrap();
}

/// A user who subscribed through the recipe's app whose mapping was written JSON-encoded
/// (`"cus_…"`) sees their dashboard; an unreadable mapping is repaired from Stripe and counted.
#[tokio::test]
async fn a_json_encoded_mapping_shows_the_dashboard_and_an_unreadable_one_is_repaired() {
    let app = spawn_app_with(Options::default()).await;
    let (browser, customer) = app.subscribed("quoted@example.com", MONTHLY).await;
    browser.get("/success").await;
    let user = browser.get_json("/api/subscription").await;
    assert_eq!(user.json()["status"], "active");
    let key = app
        .state
        .billing()
        .kv
        .scan_keys("stripe:user:", "", 100)
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|k| k.starts_with("stripe:user:user_"))
        .unwrap();
    let kv = &app.state.billing().kv;
    kv.set(&key, &format!("\"{customer}\"")).await.unwrap();
    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("id=\"status\">active"));
    kv.set(&key, "{not a customer}").await.unwrap();
    let repaired = browser.get("/dashboard").await;
    assert!(repaired.status == 200 && repaired.text.contains("id=\"status\">active"), "{}", repaired.text);
    assert_eq!(kv.get(&key).await.unwrap(), Some(customer.clone()), "re-written in the configured (raw) form");
    let metrics = tollgate_core::metrics::METRICS.render();
    assert!(metrics.contains("tollgate_kv_unreadable_values_total{key=\"stripe:user\"}"), "counted");
}

/// The recipe's app (`tests/sdk/recipe-app.mjs`: stripe-node, the real `@upstash/redis` client
/// through a REST shim to the test's Redis), stopped when dropped.
struct RecipeApp {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl RecipeApp {
    fn start(redis: &str, stripe: &str, encoding: &str) -> RecipeApp {
        use std::io::BufRead;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk");
        assert!(dir.join("node_modules/@upstash/redis").exists(), "scripts/test installs tests/sdk's npm packages");
        let mut child = std::process::Command::new("node")
            .arg("recipe-app.mjs")
            .current_dir(&dir)
            .envs([
                ("REDIS_URL", redis),
                ("STRIPE_API_BASE", stripe),
                ("STRIPE_SECRET_KEY", "sk_test_recipe_app"),
                ("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET),
                ("VALUE_ENCODING", encoding),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("node runs the recipe's app");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split("listening on ").nth(1).unwrap_or_else(|| panic!("the recipe app printed {line:?}")).trim().to_string();
        RecipeApp { child, url, http: reqwest::Client::new() }
    }

    async fn call(&self, method: Method, path: &str, user: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("x-user-id", user)
            .header("x-user-email", format!("{user}@example.com"));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let answer = crate::helpers::Reply::read(request.send().await.unwrap()).await;
        (answer.status, serde_json::from_str(&answer.text).unwrap_or(serde_json::Value::Null))
    }

    /// Deliver one event to the app's webhook, signed as Stripe signs it.
    async fn deliver(&self, event: &serde_json::Value) -> u16 {
        let body = serde_json::to_vec(event).unwrap();
        let signature = crate::helpers::signature(&body, tollgate_core::unix_now());
        let answer = self
            .http
            .post(format!("{}/api/stripe/webhook", self.url))
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        answer.status().as_u16()
    }
}

impl Drop for RecipeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recipe's app and Tollgate over one Redis and one Stripe, for each way the recipe's
/// apps write strings: a user subscribed through either is entitled in both, a second checkout
/// through the other is refused, and a cancellation processed by either is seen by both. Then
/// `tollgate import` on the Redis the two filled: a dry run lists, a run repairs, a second
/// run finds nothing to do.
#[tokio::test]
async fn the_recipes_app_and_tollgate_share_one_redis() {
    for encoding in ["raw", "json"] {
        share_one_redis(encoding).await;
    }
}

async fn share_one_redis(encoding: &str) {
    use crate::clerk::signed_in_browser;
    let redis = crate::redis_server::RedisServer::start();
    let stripe = crate::helpers::spawn_emulator().await;
    let clerk = crate::clerk_mock::MockClerk::start().await;
    let (ada, bob, carol) = ("user_2recipeAda", "user_2tollgateBob", "user_2recipeCarol");
    for user in [ada, bob, carol] {
        clerk.add_user(user, Some(&format!("{user}@example.com")));
    }
    let options = Options { kv_url: redis.url(), extra: clerk_settings(&clerk, encoding), ..Options::default() };
    let tollgate = crate::helpers::spawn_app_against(&stripe, options).await;
    let recipe = RecipeApp::start(&redis.url(), &stripe, encoding);
    let kv = &tollgate.state.billing().kv;
    let entitled_in_tollgate = |user: &'static str| {
        let browser = signed_in_browser(&tollgate, user);
        async move { browser.get_json("/api/subscription").await.json()["entitled"].as_bool() }
    };
    let status_in_recipe = |user: &'static str| {
        let recipe = &recipe;
        async move { recipe.call(Method::GET, "/api/subscription", user, None).await.1["status"].as_str().unwrap_or("").to_string() }
    };

    // Ada subscribes through the recipe's app.
    let (status, started) =
        recipe.call(Method::POST, "/api/generate-stripe-checkout", ada, Some(serde_json::json!({ "priceId": MONTHLY }))).await;
    assert_eq!(status, 200, "{encoding}: {started}");
    assert_eq!(tollgate.pay(started["sessionId"].as_str().unwrap(), "4242424242424242").await.status, 303);
    assert_eq!(recipe.call(Method::GET, "/success", ada, None).await.1["status"], "active");
    let ada_customer = kv.get(&format!("stripe:user:{ada}")).await.unwrap().unwrap();
    assert_eq!(ada_customer.starts_with('"'), encoding == "json", "{encoding}: the recipe's app wrote {ada_customer}");
    assert_eq!(entitled_in_tollgate(ada).await, Some(true), "{encoding}: Ada in Tollgate");
    let again =
        signed_in_browser(&tollgate, ada).json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await;
    assert_eq!(again.status, 409, "{encoding}: a second checkout through Tollgate");

    // Bob subscribes through Tollgate.
    let bob_browser = signed_in_browser(&tollgate, bob);
    let started = bob_browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(tollgate.pay(started.json()["sessionId"].as_str().unwrap(), "4242424242424242").await.status, 303);
    bob_browser.get("/success").await;
    let bob_mapping = kv.get(&format!("stripe:user:{bob}")).await.unwrap().unwrap();
    assert_eq!(bob_mapping.starts_with('"'), encoding == "json", "{encoding}: Tollgate wrote {bob_mapping}");
    assert_eq!(status_in_recipe(bob).await, "active", "{encoding}: Bob in the recipe's app");
    let (status, _) =
        recipe.call(Method::POST, "/api/generate-stripe-checkout", bob, Some(serde_json::json!({ "priceId": MONTHLY }))).await;
    assert_eq!(status, 409, "{encoding}: a second checkout through the recipe's app");

    // Ada's cancellation reaches only the recipe's app; Bob's only Tollgate. Both see both.
    let cancel = |customer: String| {
        let tollgate = &tollgate;
        async move {
            let subscriptions = tollgate.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
            let subscription = subscriptions["data"][0]["id"].as_str().unwrap().to_string();
            tollgate.stripe(Method::DELETE, &format!("/v1/subscriptions/{subscription}"), &[]).await;
            tollgate.events_for(&customer).await.into_iter().find(|e| e["type"] == "customer.subscription.deleted").unwrap()
        }
    };
    let unquoted = |value: &str| value.trim_matches('"').to_string();
    assert_eq!(recipe.deliver(&cancel(unquoted(&ada_customer)).await).await, 200);
    assert_eq!(entitled_in_tollgate(ada).await, Some(false), "{encoding}: the recipe's app synced Ada's cancellation");
    let bob_deleted = cancel(unquoted(&bob_mapping)).await;
    tollgate.deliver_all_and_settle(&[bob_deleted]).await;
    assert_eq!(status_in_recipe(bob).await, "canceled", "{encoding}: Tollgate synced Bob's cancellation");

    // Carol subscribes through the recipe's app and cancels at the period's end: the recipe's
    // entry has no `cancelAt`, which Tollgate's sync writes.
    let (_, started) =
        recipe.call(Method::POST, "/api/generate-stripe-checkout", carol, Some(serde_json::json!({ "priceId": MONTHLY }))).await;
    tollgate.pay(started["sessionId"].as_str().unwrap(), "4242424242424242").await;
    recipe.call(Method::GET, "/success", carol, None).await;
    let carol_customer = unquoted(&kv.get(&format!("stripe:user:{carol}")).await.unwrap().unwrap());
    let subscription = tollgate.stripe(Method::GET, "/v1/subscriptions", &[("customer", &carol_customer)]).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    tollgate.stripe(Method::POST, &format!("/v1/subscriptions/{subscription}"), &[("cancel_at_period_end", "true")]).await;
    let updated =
        tollgate.events_for(&carol_customer).await.into_iter().rev().find(|e| e["type"] == "customer.subscription.updated").unwrap();
    assert_eq!(recipe.deliver(&updated).await, 200);
    assert_eq!(recipe.call(Method::GET, "/api/subscription", carol, None).await.1["cancelAtPeriodEnd"], true);

    // `tollgate import`, configured with the other encoding, on what the two apps wrote.
    let other = if encoding == "raw" { "json" } else { "raw" };
    let before = snapshot(kv.as_ref()).await;
    let dry = import(&redis.url(), &stripe, other, true).await;
    assert!(dry.contains("would repair  stripe:user:") && dry.contains("would be repaired: 4"), "{dry}");
    assert!(dry.contains(&format!("stripe:customer:{carol_customer}: stale")), "{dry}");
    assert_eq!(snapshot(kv.as_ref()).await, before, "a dry run changes nothing");
    let first = import(&redis.url(), &stripe, other, false).await;
    assert!(first.contains("users: 3, customers: 3, repaired: 4, orphaned: 0"), "{first}");
    let second = import(&redis.url(), &stripe, other, false).await;
    assert!(second.contains("users: 3, customers: 3, repaired: 0, orphaned: 0"), "{second}");
    // And the recipe's app still reads everything.
    assert_eq!(status_in_recipe(ada).await, "canceled");
    assert_eq!(status_in_recipe(carol).await, "active");
}

fn clerk_settings(clerk: &crate::clerk_mock::MockClerk, encoding: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AUTH_PROVIDER", "clerk".to_string()),
        ("CLERK_PUBLISHABLE_KEY", crate::clerk_mock::PUBLISHABLE_KEY.into()),
        ("CLERK_SECRET_KEY", crate::clerk_mock::SECRET_KEY.into()),
        ("CLERK_API_URL", clerk.url.clone()),
        ("CLERK_JWT_KEY", crate::clerk_mock::INSTANCE_PUBLIC_KEY.into()),
        ("KV_VALUE_ENCODING", encoding.to_string()),
    ]
}

/// Every recipe key and its value.
async fn snapshot(kv: &dyn tollgate_core::kv::Kv) -> Vec<(String, Option<String>)> {
    let mut all = Vec::new();
    for prefix in ["stripe:user:", "stripe:customer:"] {
        let mut cursor = String::new();
        loop {
            let (keys, next) = kv.scan_keys(prefix, &cursor, 100).await.unwrap();
            for key in keys {
                let value = kv.get(&key).await.unwrap();
                all.push((key, value));
            }
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
    }
    all.sort();
    all
}

/// `tollgate import` as the binary, against `redis` and `stripe` (served by this process, which
/// must keep running meanwhile): its output.
async fn import(redis: &str, stripe: &str, encoding: &str, dry_run: bool) -> String {
    let (redis, stripe, encoding) = (redis.to_string(), stripe.to_string(), encoding.to_string());
    tokio::task::spawn_blocking(move || import_now(&redis, &stripe, &encoding, dry_run)).await.unwrap()
}

fn import_now(redis: &str, stripe: &str, encoding: &str, dry_run: bool) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.arg("import").env_clear().envs([
        ("KV_URL", redis),
        ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite"),
        ("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET),
        ("STRIPE_API_BASE", stripe),
        ("PLANS", MONTHLY),
        ("KV_VALUE_ENCODING", encoding),
        ("RUST_LOG", "error"),
    ]);
    if dry_run {
        command.arg("--dry-run");
    }
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}
