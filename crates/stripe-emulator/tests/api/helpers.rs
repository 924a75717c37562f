use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use reqwest::Method;
use serde_json::Value;
use stripe_emulator::config::StartupWebhook;
use stripe_emulator::EmulatorConfig;
pub use test_support::{encode, Reply};

pub const KEY: &str = "sk_test_emulator_suite";

#[derive(Clone)]
pub struct TestEmulator {
    pub url: String,
    pub client: reqwest::Client,
}

/// Start the emulator with the test seed (`price_pro_monthly`, `price_pro_yearly`) and optional webhooks.
pub async fn spawn_emulator(webhooks: Vec<StartupWebhook>) -> TestEmulator {
    spawn_with(EmulatorConfig { webhooks, ..seeded() }).await
}

/// A test config (free port, fast retries) with the suites' seed.
pub fn seeded() -> EmulatorConfig {
    EmulatorConfig { seed: Some(test_support::SEED.into()), ..EmulatorConfig::for_tests() }
}

/// The emulator with `config`, in this process.
pub async fn spawn_with(config: EmulatorConfig) -> TestEmulator {
    let (_, url, _) = stripe_emulator::Emulator::build(config).await.expect("the emulator starts").spawn();
    TestEmulator::at(url)
}

impl TestEmulator {
    /// A client for the emulator at `url` (redirects are not followed: tests look at them).
    pub fn at(url: String) -> TestEmulator {
        TestEmulator { url, client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
    }

    /// Any API call with the test key; `form` goes in the query for GET/DELETE and in the body for POST.
    pub async fn call(&self, method: Method, path: &str, form: &[(&str, &str)]) -> Reply {
        self.call_with(method, path, form, &[("authorization", &format!("Bearer {KEY}"))]).await
    }

    pub async fn call_with(&self, method: Method, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let mut url = format!("{}{path}", self.url);
        let mut request = if method == Method::POST {
            self.client.request(method.clone(), &url).header("content-type", "application/x-www-form-urlencoded").body(encode(form))
        } else {
            if !form.is_empty() {
                url = format!("{url}?{}", encode(form));
            }
            self.client.request(method.clone(), &url)
        };
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Reply::read(request.send().await.expect("request sent")).await
    }

    pub async fn raw_post(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", content_type)
            .body(body);
        Reply::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = self.call(Method::GET, path, query).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.body
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self.call(Method::POST, path, form).await;
        assert_eq!(r.status, 200, "POST {path}: {}", r.text);
        r.body
    }

    pub async fn customer(&self, email: &str) -> String {
        id(&self.post("/v1/customers", &[("email", email)]).await)
    }

    /// A customer with an open Checkout Session for the monthly plan.
    pub async fn open_session(&self, extra: &[(&str, &str)]) -> (String, String) {
        let customer = self.customer("buyer@example.com").await;
        let mut form = vec![
            ("mode", "subscription"),
            ("customer", customer.as_str()),
            ("line_items[0][price]", "price_pro_monthly"),
            ("line_items[0][quantity]", "1"),
            ("success_url", "http://127.0.0.1:9/success?session_id={CHECKOUT_SESSION_ID}"),
            ("cancel_url", "http://127.0.0.1:9/"),
        ];
        form.extend_from_slice(extra);
        let session = self.post("/v1/checkout/sessions", &form).await;
        (customer, id(&session))
    }

    /// A form post without an API key (hosted pages, control endpoints).
    pub async fn form(&self, path: &str, body: &str) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        Reply::read(request.send().await.unwrap()).await
    }

    /// Pay a session through the control endpoint.
    pub async fn pay(&self, session: &str, card: &str) -> Reply {
        self.form(&format!("/_emulator/checkout/sessions/{session}/complete"), &encode(&[("card_number", card)])).await
    }

    /// A customer with an active monthly subscription paid by a Visa.
    pub async fn subscribed_customer(&self) -> (String, Value) {
        let customer = self.customer("subscriber@example.com").await;
        let sub = self
            .post(
                "/v1/subscriptions",
                &[("customer", &customer), ("items[0][price]", "price_pro_monthly"), ("default_payment_method", "pm_card_visa")],
            )
            .await;
        (customer, sub)
    }
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// A webhook receiver that answers `fail_first` calls with 500, then 200, keeping what it got.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<(HeaderMap, Bytes, std::time::Instant)>>>,
    calls: Arc<Mutex<u32>>,
    fail_first: u32,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> (Receiver, String) {
        let receiver = Receiver { fail_first, ..Default::default() };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let call = {
                        let mut calls = state.calls.lock().unwrap();
                        *calls += 1;
                        *calls
                    };
                    state.received.lock().unwrap().push((headers, body, std::time::Instant::now()));
                    if call <= state.fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn events(&self) -> Vec<Value> {
        self.received.lock().unwrap().iter().map(|(_, b, _)| serde_json::from_slice(b).unwrap()).collect()
    }
}

pub fn webhook(url: &str, secret: &str) -> StartupWebhook {
    StartupWebhook { url: url.to_string(), secret: Some(secret.to_string()), enabled_events: vec!["*".into()] }
}

pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    test_support::eventually(what, std::time::Duration::from_secs(10), || std::future::ready(check().then_some(()))).await;
}
