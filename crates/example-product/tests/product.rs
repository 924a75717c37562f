//! The example product end to end: Tollgate as a library, its routes and the product's in one
//! server, against the Stripe emulator. A visitor, a user and a subscriber each get what the
//! `Entitled` and `CurrentUser` extractors allow.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Method;
use test_support::{encode, Reply};

struct Visitor {
    http: reqwest::Client,
    url: String,
    cookies: Mutex<HashMap<String, String>>,
}

impl Visitor {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<String>) -> Reply {
        let cookie = self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut request = self.http.request(method, format!("{}{path}", self.url)).header("cookie", cookie);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let reply = Reply::read(request.send().await.unwrap()).await;
        for value in reply.headers.get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.lock().unwrap().insert(name.to_string(), value.to_string());
        }
        reply
    }

    async fn page(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("accept", "text/html")], None).await
    }

    async fn json(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[("accept", "application/json")], None).await
    }

    fn csrf(&self) -> String {
        self.cookies.lock().unwrap()["tollgate_csrf"].clone()
    }

    /// Checkout for the monthly plan, paid on the emulator, back on the dashboard.
    async fn subscribe(&self, stripe: &str) {
        let headers = [("content-type", "application/json"), ("x-csrf-token", &self.csrf())];
        let started =
            self.send(Method::POST, "/api/generate-stripe-checkout", &headers, Some(r#"{"priceId":"price_pro_monthly"}"#.into())).await;
        let session = started.json()["sessionId"].as_str().unwrap().to_string();
        assert_eq!(test_support::pay_checkout(stripe, &session, &[("card_number", "4242424242424242")]).await.status, 303);
        assert_eq!(self.page("/success").await.location(), "/dashboard");
    }

    async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut fields = fields.to_vec();
        let csrf = self.csrf();
        fields.push(("csrf", &csrf));
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("accept", "text/html")];
        self.send(Method::POST, path, &headers, Some(encode(&fields))).await
    }
}

/// The example product and Tollgate in one server, with `extra` settings, over a seeded emulator:
/// the emulator's URL, Tollgate's state, and a visitor.
async fn start(extra: &[(&str, &str)]) -> (String, tollgate::AppState, Visitor) {
    let seeded = stripe_emulator::EmulatorConfig { seed: Some(test_support::SEED.into()), ..stripe_emulator::EmulatorConfig::for_tests() };
    let (_, stripe, _) = stripe_emulator::Emulator::build(seeded).await.expect("the emulator starts").spawn();
    let base = [
        ("PORT", "0"),
        ("KV_URL", "memory:"),
        ("STRIPE_SECRET_KEY", "sk_test_example_product"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_example_product"),
        ("STRIPE_API_BASE", stripe.as_str()),
        ("PLANS", "price_pro_monthly"),
    ];
    let vars: HashMap<String, String> = base.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let tollgate = tollgate::Application::build(tollgate::Settings::from_vars(&vars).unwrap()).await.unwrap();
    let (url, state) = (format!("http://{}", tollgate.addr), tollgate.state.clone());
    let app = example_product::app(&tollgate);
    tokio::spawn(tollgate.serve(app));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    (stripe, state, Visitor { http, url, cookies: Default::default() })
}

#[tokio::test]
async fn the_product_is_gated_by_tollgates_extractors() {
    // Either pays: the user alone, or the organization they act for.
    let (stripe, state, visitor) = start(&[("PLAN_FEATURES", "price_pro_monthly:reports"), ("BILLING_SUBJECT", "both")]).await;

    // A visitor: to sign-in, or 401.
    assert_eq!(visitor.page("/product").await.location(), "/auth?next=%2Fproduct");
    assert_eq!(visitor.json("/api/usage").await.status, 401);
    assert!(visitor.page("/").await.text.contains("id=\"plans\""), "Tollgate's own pages are served too");

    // Signed up (the link from the outbox), not subscribed: to pricing, or 402.
    visitor.form("/auth/sign-up", &[("email", "maker@example.com")]).await;
    let outbox = state.mailer().outbox().unwrap();
    let text = &outbox[0].mail.text;
    let token = &text[text.find("token=").unwrap() + 6..][..32];
    assert_eq!(visitor.form("/auth/confirm", &[("token", token), ("password", "a long enough password")]).await.status, 303);
    assert_eq!(visitor.page("/product").await.location(), "/?notice=subscribe");
    assert_eq!(visitor.json("/api/usage").await.status, 402);
    let reports = visitor.json("/api/reports").await;
    assert_eq!((reports.status, reports.json()["error"]["code"].as_str()), (402, Some("subscription_required")), "first a subscription");
    assert_eq!(visitor.page("/hello").await.text, "hello maker@example.com");

    // Subscribed: the product.
    let headers = [("content-type", "application/json"), ("x-csrf-token", &visitor.csrf())];
    visitor.subscribe(&stripe).await;
    let page = visitor.page("/product").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<p id=\"who\">maker@example.com</p>") && page.text.contains("<p id=\"plan\">active</p>"));
    let usage = visitor.json("/api/usage").await;
    assert_eq!(usage.json()["reportsThisMonth"], 3);
    assert!(usage.json()["user"].as_str().unwrap().starts_with("user_"));
    // The plan has `reports`, not `export`.
    assert_eq!(visitor.json("/api/reports").await.json()["reportsThisMonth"], 3);
    let export = visitor.json("/api/export").await;
    assert_eq!((export.status, export.json()["error"]["code"].as_str()), (402, Some("feature_required")));
    assert!(export.json()["error"]["message"].as_str().unwrap().contains("export"));
    assert_eq!(visitor.page("/api/export").await.location(), "/?notice=feature&feature=export", "a page visit goes to pricing");

    // An organization: `/team` (`OrgEntitled`) needs it to subscribe; acting for none is a 409.
    assert_eq!(visitor.json("/team").await.json()["error"]["code"], "no_organization");
    let created = visitor.send(Method::POST, "/api/orgs", &headers, Some(r#"{"name":"Makers"}"#.into())).await;
    let org = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(visitor.json("/team").await.status, 402, "the organization has no subscription");
    assert_eq!(visitor.json("/api/usage").await.status, 200, "the user's own still counts (BILLING_SUBJECT=both)");
    visitor.subscribe(&stripe).await;
    let team = visitor.json("/team").await.json();
    assert_eq!((team["org"].as_str(), team["slug"].as_str(), team["role"].as_str()), (Some(org.as_str()), Some("makers"), Some("owner")));
    visitor.send(Method::POST, "/api/orgs/personal/activate", &headers, None).await;
    assert_eq!(visitor.json("/team").await.status, 409);
}

/// The example product's `/api/v1/usage` takes `ApiCaller`: a subscriber's API key, never a session.
#[tokio::test]
async fn programs_call_the_api_with_a_key() {
    let (stripe, state, visitor) = start(&[]).await;
    let (http, url) = (visitor.http.clone(), visitor.url.clone());
    visitor.page("/").await;
    visitor.form("/auth/sign-up", &[("email", "program@example.com")]).await;
    let text = &state.mailer().outbox().unwrap()[0].mail.text;
    let token = &text[text.find("token=").unwrap() + 6..][..32];
    assert_eq!(visitor.form("/auth/confirm", &[("token", token), ("password", "a long enough password")]).await.status, 303);
    let headers = [("content-type", "application/json"), ("x-csrf-token", &visitor.csrf())];
    let made = visitor.send(Method::POST, "/api/keys", &headers, Some(r#"{"name":"nightly job"}"#.into())).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let secret = made.json()["key"].as_str().unwrap().to_string();
    let call = |key: Option<String>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let request = http.get(format!("{url}/api/v1/usage"));
            let request = match key {
                Some(key) => request.header("x-api-key", key),
                None => request,
            };
            Reply::read(request.send().await.unwrap()).await
        }
    };
    assert_eq!(call(Some(secret.clone())).await.status, 402, "a key of someone not subscribed");
    visitor.subscribe(&stripe).await;
    let usage = call(Some(secret.clone())).await;
    assert_eq!(
        (usage.status, usage.json()["key"].as_str(), usage.json()["status"].as_str()),
        (200, made.json()["id"].as_str(), Some("active"))
    );
    assert_eq!(visitor.json("/api/v1/usage").await.json()["error"]["code"], "invalid_api_key", "a session is no key");
    assert_eq!(call(None).await.status, 401);
    let id = made.json()["id"].as_str().unwrap().to_string();
    assert_eq!(visitor.send(Method::DELETE, &format!("/api/keys/{id}"), &headers, None).await.status, 204);
    assert_eq!(call(Some(secret)).await.status, 401, "revoked");
}
