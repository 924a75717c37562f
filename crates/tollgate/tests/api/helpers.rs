use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::Value;
pub use test_support::{encode, shown_text, Reply};
use tollgate::AppState;
use tollgate::Application;
use tollgate::Settings;

pub const WEBHOOK_SECRET: &str = "whsec_tollgate_suite";
/// The password every test account chooses on its sign-up link's page.
pub const PASSWORD: &str = "a long enough password";
pub const MONTHLY: &str = "price_pro_monthly";
pub const YEARLY: &str = "price_pro_yearly";

/// Tollgate against a Stripe emulator that the test controls: the emulator registers no webhook
/// endpoint, so the test decides when, in which order and how often events are delivered.
pub struct TestApp {
    pub url: String,
    pub stripe_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    /// The app's time: tests advance it instead of sleeping.
    pub clock: tollgate::Clock,
    /// The app's data directory, removed when the test ends.
    _data: tempfile::TempDir,
}

pub struct Options {
    pub kv_url: String,
    pub extra: Vec<(&'static str, String)>,
    /// The default KV file's directory, removed with the app.
    pub data: tempfile::TempDir,
}

impl Default for Options {
    fn default() -> Self {
        let data = tempfile::Builder::new().prefix("tollgate-test-").tempdir().expect("a temp dir");
        Options { kv_url: format!("redb:{}", data.path().join("kv.redb").display()), extra: Vec::new(), data }
    }
}

/// The emulator with the suites' seed, in this process.
pub async fn spawn_emulator() -> String {
    spawn_emulator_with(seeded()).await
}

/// A test emulator config (free port, fast retries) with the suites' seed.
pub fn seeded() -> stripe_emulator::EmulatorConfig {
    stripe_emulator::EmulatorConfig { seed: Some(test_support::SEED.into()), ..stripe_emulator::EmulatorConfig::for_tests() }
}

/// An emulator with `config`, in this process; its base URL.
pub async fn spawn_emulator_with(config: stripe_emulator::EmulatorConfig) -> String {
    let (_, url, _) = stripe_emulator::Emulator::build(config).await.expect("the emulator starts").spawn();
    url
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let stripe_url = spawn_emulator().await;
    spawn_app_against(&stripe_url, options).await
}

pub async fn spawn_app_against(stripe_url: &str, options: Options) -> TestApp {
    let mut vars: HashMap<String, String> = [
        ("PORT", "0".to_string()),
        ("KV_URL", options.kv_url.clone()),
        ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".into()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("STRIPE_API_BASE", stripe_url.to_string()),
        ("PLANS", format!("{MONTHLY},{YEARLY}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in options.extra {
        vars.insert(k.to_string(), v);
    }
    let settings = Settings::from_vars(&vars).expect("valid test settings");
    let clock = tollgate::Clock::test();
    let app = Application::build_with_clock(settings, clock.clone()).await.expect("app builds");
    let url = format!("http://{}", app.addr);
    let state = app.state.clone();
    tokio::spawn(app.run_until_stopped());
    let http = browser_client();
    TestApp { url, stripe_url: stripe_url.to_string(), state, http, clock, _data: options.data }
}

/// A browser-like client: keeps cookies, sends the CSRF token back with posts.
#[derive(Clone)]
pub struct Browser {
    app_url: String,
    http: reqwest::Client,
    cookies: Arc<Mutex<HashMap<String, String>>>,
}

impl TestApp {
    pub fn browser(&self) -> Browser {
        Browser { app_url: self.url.clone(), http: self.http.clone(), cookies: Default::default() }
    }

    /// A new account, signed in: sign up, open the emailed link, confirm.
    pub async fn signed_in(&self, email: &str) -> Browser {
        let browser = self.browser();
        let r = browser.form("/auth/sign-up", &[("email", email)]).await;
        assert_eq!(r.status, 200, "sign-up: {}", r.text);
        assert!(shown_text(&r.text).contains("Check your email"), "{}", r.text);
        self.confirm(&browser, email).await;
        browser
    }

    /// Open the newest sign-up link emailed to `email` in `browser`, choose [`PASSWORD`] there.
    pub async fn confirm(&self, browser: &Browser, email: &str) -> Reply {
        let link = self.emailed_link(email, "/auth/confirm");
        let r = browser.confirm_link(&link).await;
        assert_eq!(r.status, 303, "confirmed: {}", r.text);
        r
    }

    /// The newest link to `path` (with its query) in the local outbox's email to `email`.
    pub fn emailed_link(&self, email: &str, path: &str) -> String {
        let outbox = self.state.mailer().outbox().expect("the test app has the local outbox");
        let mail = outbox
            .iter()
            .find(|m| m.mail.to.as_str() == email.to_lowercase() && m.mail.text.contains(path))
            .unwrap_or_else(|| panic!("no email to {email} with a {path} link"));
        let word = mail.mail.text.split_whitespace().find(|w| w.contains(&format!("{path}?"))).unwrap();
        word[word.find(path).unwrap()..].to_string()
    }

    /// Stripe API call on the emulator.
    pub async fn stripe(&self, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
        stripe_api(&self.http, &self.stripe_url, method, path, form).await
    }

    /// Pay a Checkout Session on the emulator, as the hosted page would.
    pub async fn pay(&self, session_id: &str, card: &str) -> Reply {
        test_support::pay_checkout(&self.stripe_url, session_id, &[("card_number", card)]).await
    }

    /// Sign up, start Checkout for `price`, pay with 4242. Returns the browser and the customer id.
    pub async fn subscribed(&self, email: &str, price: &str) -> (Browser, String) {
        let browser = self.signed_in(email).await;
        let started = browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": price })).await;
        assert_eq!(started.status, 200, "checkout: {}", started.text);
        let session = started.json()["sessionId"].as_str().unwrap().to_string();
        assert_eq!(self.pay(&session, "4242424242424242").await.status, 303);
        let customer =
            self.stripe(Method::GET, &format!("/v1/checkout/sessions/{session}"), &[]).await["customer"].as_str().unwrap().to_string();
        (browser, customer)
    }

    /// The KV entry for a customer, as stored.
    pub async fn cache(&self, customer: &str) -> Option<Value> {
        let key = format!("stripe:customer:{customer}");
        self.state.billing().kv.get(&key).await.unwrap().map(|v| serde_json::from_str(&v).unwrap())
    }

    /// What the cache entry should be, computed here from the emulator's own view of the customer.
    pub async fn expected_cache(&self, customer: &str) -> Value {
        expected_cache(&self.http, &self.stripe_url, customer).await
    }

    /// All events the emulator recorded for a customer's objects, oldest first.
    pub async fn events_for(&self, customer: &str) -> Vec<Value> {
        let list = self.stripe(Method::GET, "/v1/events", &[("limit", "100")]).await;
        let mut events: Vec<Value> =
            list["data"].as_array().unwrap().iter().filter(|e| e["data"]["object"]["customer"] == customer).cloned().collect();
        events.reverse();
        events
    }

    /// Deliver one event as Stripe would: signed now with the endpoint secret.
    pub async fn deliver(&self, event: &Value) -> Reply {
        TestAppHandle::from(self).deliver(event).await
    }

    /// Deliver events in order, each accepted, then wait until their syncs are done.
    pub async fn deliver_all_and_settle(&self, events: &[Value]) {
        for event in events {
            let r = self.deliver(event).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        self.settled().await;
    }

    pub async fn deliver_raw(&self, body: &[u8], signature: &str) -> Reply {
        TestAppHandle::from(self).deliver_raw(body, signature).await
    }

    pub fn stripe_requests(&self) -> u64 {
        self.state.billing().stripe.requests_sent()
    }

    /// Wait until the drain has settled every recorded webhook (nothing pending in the KV).
    pub async fn settled(&self) {
        settled(self.state.billing().kv.as_ref()).await
    }
}

/// Wait (at most 20 s) until no customer is pending in this KV.
pub async fn settled(kv: &dyn tollgate_core::kv::Kv) {
    let settled = || async { kv.pending_customers(10).await.ok().filter(|pending| pending.is_empty()) };
    test_support::eventually("every pending customer settled", std::time::Duration::from_secs(20), settled).await;
}

/// What a spawned task needs to deliver events (the app itself stays with the test).
#[derive(Clone)]
pub struct TestAppHandle {
    url: String,
    http: reqwest::Client,
}

impl TestAppHandle {
    pub fn from(app: &TestApp) -> TestAppHandle {
        TestAppHandle { url: app.url.clone(), http: app.http.clone() }
    }

    pub async fn deliver(&self, event: &Value) -> Reply {
        let body = serde_json::to_vec(event).unwrap();
        self.deliver_raw(&body, &signature(&body, tollgate_core::unix_now())).await
    }

    /// Deliver a body with the given `Stripe-Signature`, as Stripe's POST would.
    pub async fn deliver_raw(&self, body: &[u8], signature: &str) -> Reply {
        let request = self
            .http
            .post(format!("{}/api/stripe-webhook", self.url))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_vec());
        Reply::read(request.send().await.unwrap()).await
    }
}

/// A Stripe API call of the test itself on the emulator at `base`, repeated while an emulator run
/// with a rate limit answers 429.
pub async fn stripe_api(http: &reqwest::Client, base: &str, method: Method, path: &str, form: &[(&str, &str)]) -> Value {
    let encoded = encode(form);
    let url = if method == Method::POST { format!("{base}{path}") } else { format!("{base}{path}?{encoded}") };
    let call = || async {
        let mut request = http.request(method.clone(), &url).bearer_auth("sk_test_tollgate_suite");
        if method == Method::POST {
            request = request.header("content-type", "application/x-www-form-urlencoded").body(encoded.clone());
        }
        let r = Reply::read(request.send().await.unwrap()).await;
        (r.status != 429).then_some(r)
    };
    let r = test_support::eventually(&format!("{method} {path} past the emulator's rate limit"), std::time::Duration::from_secs(30), call)
        .await;
    assert!(r.status < 300, "{method} {path}: {}", r.text);
    r.json()
}

/// Customers with a monthly subscription made directly on the emulator (so never synced yet).
pub async fn customers_with_subscriptions(http: &reqwest::Client, base: &str, count: usize) -> Vec<String> {
    let mut customers = Vec::new();
    for n in 0..count {
        let email = format!("c{n}-{}@example.com", tollgate_core::random_token(4));
        let customer =
            stripe_api(http, base, Method::POST, "/v1/customers", &[("email", &email), ("metadata[userId]", &format!("user_c{n}"))]).await;
        let customer = customer["id"].as_str().unwrap().to_string();
        let items = [("customer", customer.as_str()), ("items[0][price]", MONTHLY), ("default_payment_method", "pm_card_visa")];
        stripe_api(http, base, Method::POST, "/v1/subscriptions", &items).await;
        customers.push(customer);
    }
    customers
}

/// What the cache entry of `customer` should be, from the emulator at `stripe_url`.
pub async fn expected_cache(http: &reqwest::Client, stripe_url: &str, customer: &str) -> Value {
    let query = [("customer", customer), ("status", "all"), ("expand[]", "data.default_payment_method")];
    let list = stripe_api(http, stripe_url, Method::GET, "/v1/subscriptions", &query).await;
    let subs = list["data"].as_array().unwrap_or_else(|| panic!("a list: {list}"));
    let Some(sub) = subs.iter().find(|s| !matches!(s["status"].as_str(), Some("canceled" | "incomplete_expired"))).or(subs.first()) else {
        return serde_json::json!({ "status": "none" });
    };
    let item = &sub["items"]["data"][0];
    let mut expected = serde_json::json!({
        "subscriptionId": sub["id"], "status": sub["status"], "priceId": item["price"]["id"],
        "currentPeriodStart": item["current_period_start"], "currentPeriodEnd": item["current_period_end"],
        "cancelAtPeriodEnd": sub["cancel_at_period_end"],
        "paymentMethod": sub["default_payment_method"]["card"].as_object().map(|c| serde_json::json!({ "brand": c["brand"], "last4": c["last4"] })),
    });
    for (field, key) in [("cancel_at", "cancelAt"), ("trial_end", "trialEnd")] {
        if !sub[field].is_null() {
            expected[key] = sub[field].clone();
        }
    }
    expected
}

pub fn signature(body: &[u8], t: i64) -> String {
    stripe_emulator::signature_header(WEBHOOK_SECRET, t, body)
}

/// The HTTP client of a test's browsers: redirects are answers, and a connection is kept idle
/// for well under the time Tollgate keeps one (`KEEPALIVE_TIMEOUT`, 75 s): one reused just as
/// Tollgate closes it fails its request without an answer (`IncompleteMessage`).
pub fn browser_client() -> reqwest::Client {
    let idle = std::time::Duration::from_secs(30);
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_idle_timeout(idle).build().unwrap()
}

impl Browser {
    /// A browser for a Tollgate that is not a `TestApp` (the binary, started by a test).
    pub fn at(url: &str) -> Browser {
        let http = browser_client();
        Browser { app_url: url.to_string(), http, cookies: Default::default() }
    }

    /// Sign up as a person would on an instance with the local outbox: the form, the link read off
    /// `/dev/outbox`, the confirmation.
    pub async fn sign_up_through_the_outbox(&self, email: &str) {
        let r = self.form("/auth/sign-up", &[("email", email)]).await;
        assert_eq!(r.status, 200, "sign-up: {}", r.text);
        let outbox = shown_text(&self.get("/dev/outbox").await.text);
        let start = outbox.find("/auth/confirm?").expect("a confirmation link in the outbox");
        let link: String = outbox[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<').collect();
        assert_eq!(self.confirm_link(&link).await.status, 303);
    }

    /// Open a sign-up link (`/auth/confirm?token=…`), then post its page's form with [`PASSWORD`].
    pub async fn confirm_link(&self, link: &str) -> Reply {
        let page = self.get(link).await;
        assert_eq!(page.status, 200, "the confirmation page: {}", page.text);
        assert!(page.text.contains("name=\"password\""), "the page asks for the password");
        // What the page's form posts: the link's token, where to go next, the chosen password.
        let url = reqwest::Url::parse(&format!("http://link{link}")).unwrap();
        let mut fields: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        fields.push(("password".into(), PASSWORD.into()));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.form("/auth/confirm", &fields).await
    }

    /// The same browser (its cookies) reaching the app at another address: a balancer in front.
    pub fn through(&self, url: &str) -> Browser {
        Browser { app_url: url.to_string(), ..self.clone() }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// Set a cookie as the browser's own scripts would (Clerk's SDK writes `__session`).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies.lock().unwrap().insert(name.to_string(), value.to_string());
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.lock().unwrap().contains_key(name)
    }

    pub fn csrf(&self) -> Option<String> {
        let jar = self.cookies.lock().unwrap();
        jar.get("tollgate_csrf").or_else(|| jar.get("__Host-tollgate_csrf")).cloned()
    }

    fn keep_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.cookies.lock().unwrap();
        for value in headers.get_all("set-cookie") {
            let Some((pair, attributes)) = value.to_str().unwrap().split_once(';').or(Some((value.to_str().unwrap(), ""))) else {
                continue;
            };
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_string(), value.to_string());
            }
        }
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.app_url)).header("cookie", self.cookie_header());
        for (k, v) in headers {
            request = request.header(*k, HeaderValue::from_str(v).unwrap());
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let r = Reply::read(request.send().await.unwrap()).await;
        self.keep_cookies(&r.headers);
        r
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("accept", "text/html")], None).await
    }

    pub async fn get_json(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("accept", "application/json")], None).await
    }

    /// A browser form post: fetches a page first if there is no CSRF cookie yet.
    pub async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        if self.csrf().is_none() {
            self.get("/auth").await;
        }
        let csrf = self.csrf().unwrap();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")],
            Some(encode(&all).into_bytes()),
        )
        .await
    }

    pub async fn json_post(&self, path: &str, body: &Value) -> Reply {
        if self.csrf().is_none() {
            self.get("/auth").await;
        }
        let csrf = self.csrf().unwrap();
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json"), ("x-csrf-token", &csrf)],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
}
