//! Gateway and forward-auth, black-box: the real Tollgate in front of a real upstream server
//! started here (and, for forward-auth, a real nginx with the README's configuration).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::helpers::{spawn_app_against, spawn_app_with, spawn_emulator, stripe_api, Browser, Options, TestApp, MONTHLY, YEARLY};

const GATEWAY_SECRET: &str = "a gateway secret of at least thirty-two characters";
const SERVICE_TOKEN: &str = "a service token of at least thirty-two characters";

/// The product behind Tollgate: it shows what it received, and has a slow page, an upload that
/// reports its first bytes, and a download that waits between its parts.
#[derive(Default)]
pub struct Product {
    first_upload_bytes: Notify,
    pub release_download: Notify,
    pub requests: AtomicUsize,
}

/// What the product received, as JSON; a WebSocket handshake is accepted and every byte echoed.
async fn echo(State(product): State<Arc<Product>>, mut request: Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    product.requests.fetch_add(1, Ordering::SeqCst);
    let websocket = request.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if websocket {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let headers = [("upgrade", "websocket"), ("connection", "upgrade"), ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")];
        return (axum::http::StatusCode::SWITCHING_PROTOCOLS, headers).into_response();
    }
    let headers: BTreeMap<String, String> =
        request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    Json(json!({ "method": request.method().as_str(), "path": request.uri().to_string(), "headers": headers })).into_response()
}

async fn upload(State(product): State<Arc<Product>>, body: Body) -> Json<Value> {
    let mut stream = body.into_data_stream();
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        if bytes == 0 {
            product.first_upload_bytes.notify_one();
        }
        match chunk {
            Ok(chunk) => bytes += chunk.len(),
            Err(_) => break, // the sender went away mid-upload
        }
    }
    Json(json!({ "bytes": bytes }))
}

async fn download(State(product): State<Arc<Product>>) -> Body {
    let parts = futures_util::stream::unfold(0, move |part| {
        let product = product.clone();
        async move {
            match part {
                0 => Some((Ok::<_, std::io::Error>("first part\n".to_string()), 1)),
                1 => {
                    product.release_download.notified().await;
                    Some((Ok("second part\n".to_string()), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(parts)
}

/// A product on loopback (echo, upload, download, slow), counting the requests it gets.
pub async fn start_product() -> (String, Arc<Product>) {
    let product = Arc::new(Product::default());
    let router = Router::new()
        .route("/upload", post(upload))
        .route("/download", get(download))
        // Real time: a product that is slow for real, against the proxy's own deadline.
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(3)).await }))
        .fallback(any(echo))
        .with_state(product.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, product)
}

/// A product speaking raw HTTP/1.1: it reads a request head, writes `answer(head)` (the head in
/// lower case), and after a 101 echoes every byte.
pub async fn start_raw_product(answer: fn(&str) -> &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let answer = answer(&String::from_utf8_lossy(&head).to_lowercase());
                if stream.write_all(answer).await.is_err() || !answer.starts_with(b"HTTP/1.1 101") {
                    return;
                }
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    url
}

/// A WebSocket-style product: answers an upgrade with 101, then echoes every byte.
pub async fn start_echo_socket() -> String {
    start_raw_product(|head| match head.contains("upgrade: websocket") {
        true => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        false => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
    })
    .await
}

pub async fn gateway_app(upstream: &str, extra: Vec<(&'static str, String)>) -> TestApp {
    let mut vars = vec![
        ("UPSTREAM_URL", upstream.to_string()),
        ("GATED_PATHS", "/app,/reports".into()),
        ("GATEWAY_SECRET", GATEWAY_SECRET.into()),
        ("SERVICE_TOKEN", SERVICE_TOKEN.into()),
        ("UPSTREAM_TIMEOUT", "1".into()),
    ];
    vars.extend(extra);
    spawn_app_with(Options { extra: vars, ..Options::default() }).await
}

/// What the product received, as its echo shows it.
pub fn received(reply: &crate::helpers::Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// Headers a client sends to pass as someone, or to move where the product thinks the request
/// came from, in the spellings frameworks read them by (case, `_` for `-`, repeated).
const FORGED: [(&str, &str); 22] = [
    ("x-forwarded-user", "user_admin"),
    ("X_Forwarded_User", "user_admin"),
    ("x-forwarded-email", "admin@example.com"),
    ("x-forwarded-email", "second@example.com"),
    ("X-Tollgate-Entitled", "true"),
    ("X_Tollgate_Entitled", "true"),
    ("X_Tollgate_Price", "price_enterprise"),
    ("x-tollgate-status", "active"),
    ("x-tollgate-assertion", "forged"),
    ("x-forwarded-groups", "admins"),
    ("x-auth-request-user", "user_admin"),
    ("remote-user", "admin"),
    ("Remote_User", "admin"),
    ("x-remote-user", "admin"),
    ("forwarded", "for=10.0.0.1;host=admin.internal"),
    ("x-real-ip", "10.0.0.1"),
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-for", "10.0.0.1"),
    ("x-forwarded-host", "admin.internal"),
    ("x-forwarded-proto", "https"),
];

/// The names the product saw, read as WSGI reads them (`_` for `-`, any case).
fn seen_as_wsgi(seen: &Value) -> Vec<String> {
    seen["headers"].as_object().unwrap().keys().map(|k| k.to_ascii_lowercase().replace('_', "-")).collect()
}

#[tokio::test]
async fn gated_and_open_paths_for_visitors_users_and_subscribers_with_only_tollgates_identity_headers() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    let public_host = app.state.billing().public_url.trim_start_matches("http://").to_string();
    let forged = |browser: &Browser, path: &'static str| {
        let browser = browser.clone();
        async move {
            let mut headers: Vec<(&str, &str)> = FORGED.to_vec();
            headers.push(("accept", "application/json"));
            browser.send(reqwest::Method::GET, path, &headers, None).await
        }
    };

    // A visitor: open paths pass with no identity (every forged header gone); gated ones do not.
    let visitor = app.browser();
    let seen = received(&forged(&visitor, "/docs/intro?x=1").await);
    assert_eq!(seen["path"], "/docs/intro?x=1");
    let names = seen_as_wsgi(&seen);
    for (name, _) in FORGED {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let vouched = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded"].contains(&name.as_str());
        assert!(vouched || !names.contains(&name), "{name} reached the product: {seen}");
    }
    assert!(!names.iter().any(|n| n.contains("tollgate") || n.contains("user") || n == "x-real-ip"), "{names:?}");
    // What Tollgate vouches for: the client's address, the scheme, the public host.
    let headers = &seen["headers"];
    assert_eq!((headers["x-forwarded-for"].as_str(), headers["x-forwarded-proto"].as_str()), (Some("127.0.0.1"), Some("http")));
    assert_eq!(headers["x-forwarded-host"].as_str(), Some(public_host.as_str()), "PUBLIC_URL's host, never the client's");
    assert_eq!(headers["forwarded"].as_str().unwrap(), format!("for=127.0.0.1;host=\"{public_host}\";proto=http"));
    // The product gets the browser's Host, as Caddy, Traefik and oauth2-proxy send it.
    assert_eq!(headers["host"].as_str(), Some(app.url.trim_start_matches("http://")));
    assert_eq!(visitor.get("/app/reports").await.location(), "/auth?next=%2Fapp%2Freports");
    let api = visitor.get_json("/reports/1").await;
    assert_eq!((api.status, api.location()), (401, "/auth?next=%2Freports%2F1"), "a JSON 401 says where a browser would go");
    // A script's fetch (`*/*`) or a client that names no type gets JSON, a navigation the page.
    let fetch = visitor.send(reqwest::Method::GET, "/app/data", &[("accept", "*/*"), ("sec-fetch-mode", "cors")], None).await;
    assert_eq!((fetch.status, fetch.json()["error"]["code"].as_str()), (401, Some("unauthenticated")));
    let navigation = visitor.send(reqwest::Method::GET, "/app/data", &[("accept", "*/*"), ("sec-fetch-mode", "navigate")], None).await;
    assert_eq!(navigation.status, 303);
    assert_eq!(visitor.get("/apple").await.status, 200, "/apple is not under /app");

    // Tollgate's own routes are still Tollgate's.
    assert!(visitor.get("/").await.text.contains("id=\"plans\""));
    assert_eq!(visitor.get_json("/healthz").await.status, 200);

    // Signed in, not subscribed: open paths carry the identity, gated ones go to pricing / 402.
    let member = app.signed_in("member@example.com").await;
    member.set_cookie("theme", "dark");
    let seen = received(&forged(&member, "/docs").await);
    assert_eq!(seen["headers"]["x-forwarded-email"], "member@example.com");
    assert!(seen["headers"]["x-forwarded-user"].as_str().unwrap().starts_with("user_"));
    assert_eq!(seen["headers"]["x-tollgate-entitled"], "false");
    assert_eq!(seen["headers"]["x-tollgate-status"], "none");
    assert_eq!(seen["headers"]["x-tollgate-price"], "", "not the forged price");
    assert_eq!(seen["headers"]["cookie"], "theme=dark", "Tollgate's own cookies stay with Tollgate");
    assert_eq!(member.get("/app").await.location(), "/?notice=subscribe");
    let api = member.get_json("/app").await;
    assert_eq!((api.status, api.location()), (402, "/?notice=subscribe"));

    // Subscribed: the gated path reaches the product with the subscription's facts.
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await; // back from Checkout: synced
    let seen = received(&forged(&subscriber, "/app/settings").await);
    let headers = &seen["headers"];
    assert_eq!((headers["x-forwarded-email"].as_str(), headers["x-tollgate-entitled"].as_str()), (Some("payer@example.com"), Some("true")));
    assert_eq!((headers["x-tollgate-status"].as_str(), headers["x-tollgate-price"].as_str()), (Some("active"), Some(MONTHLY)));
    assert!(headers.get("x-forwarded-groups").is_none());
    // The product's answer is its own: no Tollgate policy headers added to it.
    let page = subscriber.get("/app/settings").await;
    assert!(page.headers.get("content-security-policy").is_none());

    // The assertion verifies with a maintained JWT library (issuer and audience included), is
    // bound to its request, and fails once tampered, expired or checked with another key.
    let assertion = headers["x-tollgate-assertion"].as_str().unwrap();
    let key = jsonwebtoken::DecodingKey::from_secret(GATEWAY_SECRET.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[app.state.billing().public_url.as_str()]);
    validation.set_audience(&[upstream.as_str()]);
    let claims: Value = jsonwebtoken::decode(assertion, &key, &validation).unwrap().claims;
    assert_eq!((claims["sub"].clone(), claims["email"].as_str()), (headers["x-forwarded-user"].clone(), Some("payer@example.com")));
    assert_eq!(
        (claims["entitled"].as_bool(), claims["status"].as_str(), claims["price"].as_str()),
        (Some(true), Some("active"), Some(MONTHLY))
    );
    assert_eq!(
        (claims["htm"].as_str(), claims["htu"].as_str()),
        (Some("GET"), Some(format!("{}/app/settings", app.state.billing().public_url).as_str()))
    );
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 30);
    let again = received(&subscriber.get_json("/app/settings").await);
    let again: Value = jsonwebtoken::decode(again["headers"]["x-tollgate-assertion"].as_str().unwrap(), &key, &validation).unwrap().claims;
    assert_ne!(claims["jti"], again["jti"], "each request its own assertion");
    let mut elsewhere = validation.clone();
    elsewhere.set_audience(&["http://another-product.internal"]);
    assert_eq!(
        jsonwebtoken::decode::<Value>(assertion, &key, &elsewhere).unwrap_err().kind(),
        &jsonwebtoken::errors::ErrorKind::InvalidAudience
    );
    let [head, _, signature]: [&str; 3] = assertion.split('.').collect::<Vec<_>>().try_into().unwrap();
    use base64::Engine;
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!("user_admin");
    let tampered = format!("{head}.{}.{signature}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string()));
    assert_eq!(
        jsonwebtoken::decode::<Value>(&tampered, &key, &validation).unwrap_err().kind(),
        &jsonwebtoken::errors::ErrorKind::InvalidSignature
    );
    let mut half_a_minute_later = validation.clone();
    half_a_minute_later.leeway = 0;
    half_a_minute_later.reject_tokens_expiring_in_less_than = 31;
    assert_eq!(
        jsonwebtoken::decode::<Value>(assertion, &key, &half_a_minute_later).unwrap_err().kind(),
        &jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
    let wrong_key = jsonwebtoken::DecodingKey::from_secret(b"another secret of at least thirty-two characters");
    assert!(jsonwebtoken::decode::<Value>(assertion, &wrong_key, &validation).is_err());
}

/// The accept loop sends the product's requests past the router (`http::lane`): Tollgate's routes
/// (with their parameters, and with any method, answered 405 by Tollgate) stay Tollgate's, decided
/// on the canonical path; every other path reaches the product, lookalikes included; and the
/// lane's answers are wrapped as the router wraps its own (request id, security headers on
/// Tollgate's refusals only).
#[tokio::test]
async fn tollgates_routes_and_the_products_split_on_the_same_paths() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    let visitor = app.browser();
    for own in ["/api/keys", "/api/orgs/org_1/members", "/%61pi/keys", "/orgs/org_1"] {
        let reply = visitor.get_json(own).await;
        assert_eq!(reply.status, 401, "{own} is Tollgate's: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], "unauthenticated", "{own}");
    }
    let revoke = visitor.send(reqwest::Method::POST, "/api/keys/key_1/revoke", &[("accept", "application/json")], None).await;
    assert_eq!(revoke.status, 403, "Tollgate's route, behind its cross-site check: {}", revoke.text);
    let wrong_method = visitor.send(reqwest::Method::OPTIONS, "/dashboard", &[("accept", "application/json")], None).await;
    assert_eq!((wrong_method.status, wrong_method.json()["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    assert!(wrong_method.headers.contains_key("content-security-policy"), "the router's own answer");
    assert_eq!(product.requests.load(Ordering::SeqCst), 0, "none of these reached the product");
    for lookalike in ["/dashboard/", "/Dashboard", "/api/keys/key_1/revoke/x", "/healthz/x", "/api/keysx", "/orgs/org_1/x"] {
        let reply = visitor.get_json(lookalike).await;
        assert_eq!(received(&reply)["path"], lookalike, "{lookalike} is the product's");
        assert!(reply.headers.contains_key("x-request-id"), "{lookalike}: traced like any request");
        assert!(!reply.headers.contains_key("content-security-policy"), "{lookalike}: the product's answer is its own");
    }
    assert_eq!(product.requests.load(Ordering::SeqCst), 6);
    // Tollgate's refusal on the product's lane is a page of Tollgate's: its security headers.
    let refused = visitor.get_json("/app/reports").await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("content-security-policy") && refused.headers.contains_key("x-request-id"));
    assert_eq!(product.requests.load(Ordering::SeqCst), 6, "a refused request never reaches the product");
}

/// `UPSTREAM_HOST=upstream`: the product gets its own address as `Host` (for products that check
/// it against a list of their own names), still told the public host in `X-Forwarded-Host`.
#[tokio::test]
async fn the_product_can_be_sent_its_own_host() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![("UPSTREAM_HOST", "upstream".into())]).await;
    let seen = received(&app.browser().get_json("/docs").await);
    assert_eq!(seen["headers"]["host"].as_str(), Some(upstream.trim_start_matches("http://")));
    assert_eq!(seen["headers"]["x-forwarded-host"].as_str(), Some(app.state.billing().public_url.trim_start_matches("http://")));
}

/// `/metrics` on the public port only for a local plain-http Tollgate without a product; in
/// gateway mode the product's own `/metrics` answers, and Tollgate's needs `METRICS_TOKEN`.
#[tokio::test]
async fn metrics_are_not_public_in_front_of_a_product() {
    let (upstream, product) = start_product().await;
    const TOKEN: &str = "a metrics token of at least thirty-two characters";
    let app = gateway_app(&upstream, vec![("GATED_PATHS", "/app".into()), ("METRICS_TOKEN", TOKEN.into())]).await;
    let theirs = app.browser().get_json("/metrics").await;
    assert_eq!(received(&theirs)["path"], "/metrics", "the product's own /metrics");
    let ours = app.browser().send(reqwest::Method::GET, "/metrics", &[("authorization", &format!("Bearer {TOKEN}"))], None).await;
    assert!(ours.status == 200 && ours.text.contains("tollgate_http_requests_total"), "{}", ours.text);
    assert_eq!(product.requests.load(Ordering::SeqCst), 1);
    let local = crate::helpers::spawn_app().await;
    assert!(local.browser().get_json("/metrics").await.text.contains("tollgate_http_requests_total"), "local and plain: open");
    let public = crate::helpers::spawn_app_with(Options {
        extra: vec![("PUBLIC_URL", "https://app.example.com".into()), ("MAIL_OUTBOX", "true".into()), ("METRICS_TOKEN", TOKEN.into())],
        ..Options::default()
    })
    .await;
    let r = public.browser().get_json("/metrics").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (401, Some("unauthenticated")));
    let r = public.browser().send(reqwest::Method::GET, "/metrics", &[("authorization", &format!("Bearer {TOKEN}"))], None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn bodies_stream_both_ways_and_websockets_pass() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;

    // 20 MB up: the product sees the first bytes while the client is still holding the rest back.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let chunks = futures_util::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|c| (c, r)) });
    let request = app.http.post(format!("{}/upload", app.url)).body(reqwest::Body::wrap_stream(chunks)).send();
    let uploading = tokio::spawn(request);
    sender.send(Ok(vec![7u8; 1024 * 1024])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), product.first_upload_bytes.notified())
        .await
        .expect("the product got the first megabyte before the upload was complete: nothing buffered it whole");
    for _ in 1..20 {
        sender.send(Ok(vec![7u8; 1024 * 1024])).await.unwrap();
    }
    drop(sender);
    let answer = uploading.await.unwrap().unwrap();
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["bytes"], 20 * 1024 * 1024);

    // Down: the client reads the first part while the product still holds the second back.
    let mut download = app.http.get(format!("{}/download", app.url)).send().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), download.chunk()).await.expect("the first part arrived on its own").unwrap();
    assert_eq!(first.as_deref(), Some(&b"first part\n"[..]));
    product.release_download.notify_one();
    assert_eq!(download.chunk().await.unwrap().as_deref(), Some(&b"second part\n"[..]));

    // A WebSocket upgrade is spliced through: bytes echo both ways.
    let sockets = gateway_app(&start_echo_socket().await, vec![]).await;
    let (head, mut stream) = crate::tunnels::handshake(sockets.url.trim_start_matches("http://"), "/chat", &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"hello"[..], b"through the gateway"] {
        assert!(crate::tunnels::echoes(&mut stream, message).await);
    }
}

#[tokio::test]
async fn a_product_that_is_down_or_slow_gets_a_clear_502_or_504() {
    let (upstream, _) = start_product().await;
    let slow = gateway_app(&upstream, vec![]).await;
    let started = std::time::Instant::now();
    let page = slow.browser().get("/slow").await;
    assert_eq!(page.status, 504);
    assert!(page.text.contains("took too long") && started.elapsed() < Duration::from_secs(3));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = gateway_app(&format!("http://{closed}"), vec![]).await;
    let page = down.browser().get("/docs").await;
    assert_eq!(page.status, 502);
    assert!(page.text.contains("not answering") && page.text.contains("<html"), "a page for a browser");
    let api = down.browser().get_json("/docs").await;
    assert_eq!((api.status, api.json()["error"]["code"].as_str()), (502, Some("upstream_unavailable")));
}

/// A keep-alive product speaking raw HTTP/1.1 that counts its connections: `/close/…` is
/// answered with `Connection: close`, `/hang` never, `/race` only as a connection's first request;
/// an idle connection is closed when told to
/// (its keep-alive timeout).
struct KeepAliveProduct {
    url: String,
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Sent to: the connections open then close (each watches from its accept, so a signal sent
    /// while one is between requests is not missed, and later connections are not closed by it).
    close_idle: Arc<tokio::sync::watch::Sender<()>>,
    /// Requests for `/race` received: one that is not its connection's first is closed unanswered
    /// (as if the product's keep-alive timeout had run out just as it came).
    races: Arc<AtomicUsize>,
}

impl KeepAliveProduct {
    async fn start() -> KeepAliveProduct {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, close_idle, races) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::watch::Sender::new(())), Arc::new(AtomicUsize::new(0)));
        let (counted, told, raced) = (connections.clone(), close_idle.clone(), races.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (mut told, raced) = (told.subscribe(), raced.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    for answered in 0.. {
                        let mut line = String::new();
                        let read = tokio::select! {
                            read = tokio::io::AsyncBufReadExt::read_line(&mut stream, &mut line) => read,
                            _ = told.changed() => return,
                        };
                        if read.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        while line != "\r\n" {
                            line.clear();
                            if tokio::io::AsyncBufReadExt::read_line(&mut stream, &mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        if path == "/hang" {
                            std::future::pending::<()>().await;
                        }
                        if path == "/race" {
                            raced.fetch_add(1, Ordering::SeqCst);
                            if answered > 0 {
                                return;
                            }
                        }
                        let close = path.starts_with("/close/");
                        let connection = if close { "connection: close\r\n" } else { "" };
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{connection}\r\n{path}", path.len());
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        KeepAliveProduct { url: format!("http://127.0.0.1:{port}"), port, connections, close_idle, races }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn races(&self) -> usize {
        self.races.load(Ordering::SeqCst)
    }
}

/// A kept connection that the product closes under a request (its keep-alive timeout ran out just
/// as the request came) costs an idempotent request nothing: the gateway sends it again on a new
/// connection. A POST is never sent twice: it gets the 502.
#[tokio::test]
async fn a_request_closed_unanswered_on_an_idle_kept_connection_is_sent_again_only_when_idempotent() {
    let product = KeepAliveProduct::start().await;
    let app = gateway_app(&product.url, vec![]).await;
    // One connection to Tollgate: its requests are served by one thread, with one pool.
    let client = reqwest::Client::new();
    let first = client.get(format!("{}/first", app.url)).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "/first");
    let idle = Duration::from_millis(400);
    app.clock.advance(idle);
    let raced = client.get(format!("{}/race", app.url)).send().await.unwrap();
    assert_eq!((raced.status().as_u16(), raced.text().await.unwrap()), (200, "/race".to_string()));
    assert_eq!((product.races(), product.connections()), (2, 2), "closed unanswered once, then answered on a new connection");
    app.clock.advance(idle);
    let posted = client.post(format!("{}/race", app.url)).send().await.unwrap();
    assert_eq!(posted.status().as_u16(), 502, "{}", posted.text().await.unwrap());
    assert_eq!((product.races(), product.connections()), (3, 2), "the POST went out once");
}

/// The gateway keeps its connections to the product between requests, and never sends one on a
/// connection the product has closed: not after the product's keep-alive timeout closed it idle,
/// not after an answer with `Connection: close`, not after the product failed to answer in time
/// (that connection is dropped with the request). Every request gets its own answer.
#[tokio::test]
async fn connections_to_the_product_are_kept_until_closed() {
    let product = KeepAliveProduct::start().await;
    let app = gateway_app(&product.url, vec![]).await;
    // One connection to Tollgate: its requests are served by one thread, with one pool.
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client.get(format!("{}{path}", app.url)).send();
        async move {
            let answer = request.await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    for n in 0..20 {
        assert_eq!(get(format!("/kept/{n}")).await, (200, format!("/kept/{n}")));
    }
    assert_eq!(product.connections(), 1, "one connection kept for twenty requests");

    // The product closes it while idle: once Tollgate's end has seen it closed, a request goes on a new one.
    product.close_idle.send_replace(());
    let port = product.port;
    test_support::eventually("Tollgate's end of the closed connection is gone", Duration::from_secs(5), || async move {
        (sockets_towards(port) == 0).then_some(())
    })
    .await;
    assert_eq!(get("/after-idle".into()).await, (200, "/after-idle".into()));
    assert_eq!(product.connections(), 2);

    // `Connection: close`: each next request needs a new connection.
    for n in 0..5 {
        assert_eq!(get(format!("/close/{n}")).await, (200, format!("/close/{n}")));
    }
    assert_eq!(get("/kept/again".into()).await, (200, "/kept/again".into()));
    assert_eq!(product.connections(), 7, "the first close on the kept connection, then one new connection each");

    // No answer within UPSTREAM_TIMEOUT (1 s, real: the product's own): the 504 drops that connection.
    assert_eq!(get("/hang".into()).await.0, 504);
    assert_eq!(get("/kept/after-hang".into()).await, (200, "/kept/after-hang".into()));
    assert_eq!(product.connections(), 8, "the hung connection was not used again");

    // The product named by host name (as `http://app:8000` in a container network): resolved, and
    // each of its addresses tried in turn (`localhost` may be `::1` first, where nothing listens).
    let by_name = gateway_app(&format!("http://localhost:{port}"), vec![]).await;
    let answer = client.get(format!("{}/by-name", by_name.url)).send().await.unwrap();
    assert_eq!((answer.status().as_u16(), answer.text().await.unwrap()), (200, "/by-name".to_string()));
}

#[tokio::test]
async fn forward_auth_and_the_service_endpoint() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    let visitor = app.browser().get("/auth/verify").await;
    assert_eq!(visitor.status, 401);
    assert!(visitor.text.contains("unauthenticated"), "Traefik and Caddy show a refusal's body: {}", visitor.text);
    let member = app.signed_in("member@example.com").await;
    let unpaid = member.get("/auth/verify").await;
    assert_eq!(unpaid.status, 402);
    assert!(unpaid.text.contains("subscription_required"), "{}", unpaid.text);
    // nginx shows its own error pages, and reuses its connection only after an answer without a body.
    let for_nginx = member.get("/auth/verify?deny=403").await;
    assert_eq!((for_nginx.status, for_nginx.text.as_str(), for_nginx.headers["content-length"].to_str().unwrap()), (403, "", "0"));
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await; // back from Checkout: synced
    let ok = subscriber.get("/auth/verify").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["x-forwarded-email"], "payer@example.com");
    assert_eq!(ok.headers["x-tollgate-entitled"], "true");
    assert!(ok.headers.contains_key("x-tollgate-assertion"));
    assert_eq!((ok.text.as_str(), ok.headers["content-length"].to_str().unwrap()), ("", "0"), "no proxy reads a 200's body");
    assert!(!ok.headers.contains_key("content-security-policy"), "no page headers on an answer no one sees");
    let user_id = ok.headers["x-forwarded-user"].to_str().unwrap().to_string();

    let ask = |id: String, token: &'static str| {
        let (http, url) = (app.http.clone(), app.url.clone());
        async move {
            let r = http.get(format!("{url}/api/users/{id}/entitlement")).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = ask(user_id.clone(), SERVICE_TOKEN).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["entitled"].as_bool(), body["status"].as_str(), body["priceId"].as_str()),
        (Some(true), Some("active"), Some(MONTHLY))
    );
    assert_eq!(ask(user_id.clone(), "a wrong token of at least thirty-two characters").await.0, 401);
    let (status, body) = ask("user_nobody".into(), SERVICE_TOKEN).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"entitled\":false") && body.contains("\"status\":\"none\""));
    assert_eq!(ask("user_a.b%3Cscript%3E".into(), SERVICE_TOKEN).await.0, 400);
    assert_eq!(ask("cus_123".into(), SERVICE_TOKEN).await.0, 400);
}

/// nginx in front of a product, asking Tollgate with `auth_request`, configured as the README says:
/// a visitor and a non-subscriber followed through every redirect end on Tollgate's sign-in and
/// pricing pages (no loop); a forging subscriber's request reaches the product with Tollgate's
/// identity and nothing forged; WebSockets pass, other upgrades do not.
#[tokio::test]
async fn nginx_auth_request_with_the_readme_configuration() {
    let (upstream, _) = start_product().await;
    let app = spawn_app_with(Options { extra: vec![("GATEWAY_SECRET", GATEWAY_SECRET.into())], ..Options::default() }).await;
    let nginx = crate::nginx::Nginx::start(&app.url, &upstream);
    let through = |browser: &Browser, path: &str, headers: &[(&str, &str)]| {
        let mut request = browser
            .http_client()
            .get(format!("{}{path}", nginx.url))
            .header("cookie", browser.cookie_header())
            .header("accept", "text/html");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { crate::helpers::Reply::read(request.send().await.unwrap()).await }
    };
    // Followed through every redirect, as a browser would.
    let follow = |browser: Browser, path: &'static str| async move {
        let mut path = path.to_string();
        for _ in 0..5 {
            let r = through(&browser, &path, &[]).await;
            if r.status != 302 && r.status != 303 {
                return (path, r);
            }
            // nginx makes its redirects absolute: keep the path.
            let location = r.location();
            path = match location.split_once("://") {
                Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
                None => location.to_string(),
            };
        }
        panic!("a redirect loop from {path}");
    };
    let (landed, page) = follow(app.browser(), "/app/").await;
    assert_eq!((landed.as_str(), page.status), ("/auth?next=/app/", 200));
    assert!(page.text.contains("Sign in"));
    let (landed, page) = follow(app.signed_in("member@example.com").await, "/app/").await;
    assert_eq!((landed.as_str(), page.status), ("/?notice=subscribe", 200));
    assert!(page.text.contains("id=\"plans\""), "Tollgate's pricing page, not the product's /");

    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await; // back from Checkout: synced
    let seen = received(&through(&subscriber, "/app/", &FORGED).await);
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-email"], "payer@example.com");
    assert!(headers["x-forwarded-user"].as_str().unwrap().starts_with("user_"));
    assert_eq!((headers["x-tollgate-price"].as_str(), headers["x-tollgate-status"].as_str()), (Some(MONTHLY), Some("active")));
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-host"].as_str(), Some(nginx.url.trim_start_matches("http://")));
    assert!(headers["x-tollgate-assertion"].as_str().is_some_and(|a| a.split('.').count() == 3));
    let names = seen_as_wsgi(&seen);
    for absent in [
        "x-forwarded-groups", "x-auth-request-user", "remote-user", "x-remote-user", "forwarded", "x-real-ip", "x-original-url",
        "x-rewrite-url", "x-forwarded-prefix",
    ] {
        assert!(!names.contains(&absent.to_string()), "{absent} reached the product: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains('_')), "underscore spellings are dropped: {names:?}");
    // nginx keeps its connection to Tollgate between checks: the answers it reads have no body.
    let tollgate_port: u16 = app.url.rsplit(':').next().unwrap().parse().unwrap();
    let before = sockets_towards(tollgate_port);
    for _ in 0..20 {
        assert_eq!(through(&subscriber, "/app/", &[]).await.status, 200);
    }
    let opened = sockets_towards(tollgate_port).saturating_sub(before);
    assert!(opened <= 1, "20 checks opened {opened} connections to Tollgate");

    // A WebSocket passes (the product echoes it); an h2c upgrade is dropped on the way.
    let (head, mut stream) =
        crate::tunnels::handshake(nginx.url.trim_start_matches("http://"), "/app/ws", &[("cookie", &subscriber.cookie_header())]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(crate::tunnels::echoes(&mut stream, b"through nginx").await);
    let h2c = received(&through(&subscriber, "/app/", &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]).await);
    assert!(h2c["headers"].get("upgrade").is_none(), "{h2c}");
}

/// This machine's TCP sockets (open, or closed and waiting) whose far end is `port` on this host.
fn sockets_towards(port: u16) -> usize {
    let far_port = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.split_whitespace().nth(2).is_some_and(|remote| format!("{remote} ").ends_with(&far_port)))
        .count()
}

/// The identity is reused for a moment per credential, but never after a sign-out here: the old
/// session cookie, replayed at once, no longer passes — on the sign-out's own connection's thread
/// or another's (identities are kept per serving thread; a second connection is served by the
/// other thread, the one with fewer open).
#[tokio::test]
async fn a_signed_out_session_is_not_served_from_the_identity_cache() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    let old_cookies = subscriber.cookie_header();
    let other_connection = reqwest::Client::new();
    let replay =
        || other_connection.get(format!("{}/app/data", app.url)).header("cookie", &old_cookies).header("accept", "application/json").send();
    for _ in 0..3 {
        assert_eq!(subscriber.get_json("/app/data").await.status, 200);
        assert_eq!(replay().await.unwrap().status(), 200, "kept on the other connection's thread too");
    }
    assert_eq!(product.requests.load(Ordering::SeqCst), 6);
    subscriber.form("/auth/sign-out", &[]).await;
    assert_eq!(replay().await.unwrap().status(), 401, "the ended session is not served from memory");
    assert_eq!(product.requests.load(Ordering::SeqCst), 6);
}

/// Clients that hang up mid-upload and mid-download leave the gateway's pooled connections to the
/// product sound: many requests afterwards each get their own answer.
#[tokio::test]
async fn clients_hanging_up_mid_body_leave_the_pool_sound() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    for _ in 0..5 {
        // Mid-upload: a megabyte sent, then the client is gone.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let chunks = futures_util::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|c| (c, r)) });
        let uploading = tokio::spawn(app.http.post(format!("{}/upload", app.url)).body(reqwest::Body::wrap_stream(chunks)).send());
        sender.send(Ok(vec![1u8; 1024 * 1024])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), product.first_upload_bytes.notified()).await.unwrap();
        uploading.abort();
        drop(sender);
        // Mid-download: the first part read, then the client is gone.
        let mut download = app.http.get(format!("{}/download", app.url)).send().await.unwrap();
        assert!(download.chunk().await.unwrap().is_some());
        drop(download);
    }
    let mut answers = tokio::task::JoinSet::new();
    for n in 0..64 {
        let (http, url) = (app.http.clone(), app.url.clone());
        answers.spawn(async move {
            let r = http.get(format!("{url}/echo/{n}")).header("accept", "application/json").send().await.unwrap();
            (n, r.status().as_u16(), r.text().await.unwrap())
        });
    }
    for (n, status, text) in answers.join_all().await {
        assert_eq!(status, 200, "{n}: {text}");
        let seen: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(seen["path"], format!("/echo/{n}"), "each request gets its own answer");
    }
}

/// `PLAN_FEATURES` and a `GATED_PATHS` prefix that needs a feature: the monthly plan has
/// `reports`, the yearly one `reports` and `export`. A monthly subscriber reaches the product with
/// `X-Tollgate-Features: reports` (and the assertion's `features`), is refused `/app/export` with
/// 402 naming the feature (a page goes to pricing, where the plan that has it is marked), and so
/// is forward-auth asked about it; a yearly subscriber passes.
#[tokio::test]
async fn a_path_that_needs_a_feature_of_the_plan() {
    let (upstream, _) = start_product().await;
    let extra = vec![
        ("GATED_PATHS", "/app,/app/export:export".into()),
        ("PLAN_FEATURES", format!("{MONTHLY}:reports;{YEARLY}:reports,export")),
        ("FORWARD_AUTH_TRUST_URI", "true".into()),
    ];
    let app = gateway_app(&upstream, extra).await;
    let (monthly, _) = app.subscribed("monthly@example.com", MONTHLY).await;
    monthly.get("/success").await;
    let seen = received(&monthly.get_json("/app/projects").await);
    assert_eq!(seen["headers"]["x-tollgate-features"], "reports");
    let claims = assertion_claims(seen["headers"]["x-tollgate-assertion"].as_str().unwrap());
    assert_eq!(claims["features"], serde_json::json!(["reports"]));

    let refused = monthly.get_json("/app/export/2026.csv").await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (402, Some("feature_required")));
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("export"), "{}", refused.text);
    let page = monthly.get("/app/export").await;
    assert_eq!((page.status, page.location()), (303, "/?notice=feature&feature=export"));
    let pricing = monthly.get(page.location()).await.text;
    assert!(pricing.contains(&format!("class=\"card wanted\" id=\"plan-{YEARLY}\"")), "the yearly plan is marked: {pricing}");
    assert!(pricing.contains(&format!("class=\"card\" id=\"plan-{MONTHLY}\"")), "the monthly one is not");
    assert!(pricing.contains("Includes reports, export"));
    assert_eq!(monthly.get_json("/api/subscription").await.json()["features"], serde_json::json!(["reports"]));

    let verify = |deny: &'static str| {
        let monthly = monthly.clone();
        async move { monthly.send(reqwest::Method::GET, &format!("/auth/verify{deny}"), &[("x-forwarded-uri", "/app/export")], None).await }
    };
    let for_caddy = verify("").await;
    assert_eq!((for_caddy.status, for_caddy.json()["error"]["code"].as_str()), (402, Some("feature_required")));
    let for_nginx = verify("?deny=403").await;
    assert_eq!((for_nginx.status, for_nginx.text.as_str()), (403, ""));

    let (yearly, _) = app.subscribed("yearly@example.com", YEARLY).await;
    yearly.get("/success").await;
    let seen = received(&yearly.get_json("/app/export/2026.csv").await);
    assert_eq!(seen["headers"]["x-tollgate-features"], "reports,export");
    assert_eq!(yearly.get_json("/api/subscription").await.json()["features"], serde_json::json!(["reports", "export"]));
    assert_eq!(verify("").await.status, 402, "still the monthly subscriber");
}

/// An assertion's claims, its signature checked with `GATEWAY_SECRET`.
fn assertion_claims(assertion: &str) -> Value {
    let key = jsonwebtoken::DecodingKey::from_secret(GATEWAY_SECRET.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode(assertion, &key, &validation).unwrap().claims
}

/// `ENTITLEMENTS=stripe`: features are the lookup keys of the customer's active entitlements in
/// Stripe (features attached to products), cached by the sync. A Basic subscriber (its product has
/// `reports`) is refused `/app/export`; a Pro one (`reports`, `export`) passes. Detaching `export`
/// from Pro in Stripe revokes it once the summary event is in and the identity's second is over,
/// and no request of the product calls Stripe.
#[tokio::test]
async fn features_from_stripe_entitlements() {
    let (upstream, _) = start_product().await;
    let stripe_url = spawn_emulator().await;
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: String, form: Vec<(&'static str, String)>| {
        let (http, stripe_url) = (http.clone(), stripe_url.clone());
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            stripe_api(&http, &stripe_url, method, &path, &form).await
        }
    };
    let post = reqwest::Method::POST;
    let basic = api(post.clone(), "/v1/products".into(), vec![("name", "Basic".into())]).await["id"].as_str().unwrap().to_string();
    let basic_price = api(
        post.clone(),
        "/v1/prices".into(),
        vec![
            ("product", basic.clone()),
            ("unit_amount", "500".into()),
            ("currency", "usd".into()),
            ("recurring[interval]", "month".into()),
        ],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let feature =
        |key: &'static str| api(post.clone(), "/v1/entitlements/features".into(), vec![("name", key.into()), ("lookup_key", key.into())]);
    let (reports, export) =
        (feature("reports").await["id"].as_str().unwrap().to_string(), feature("export").await["id"].as_str().unwrap().to_string());
    let attach = |product: &str, feature: &str| {
        api(post.clone(), format!("/v1/products/{product}/features"), vec![("entitlement_feature", feature.to_string())])
    };
    attach(&basic, &reports).await;
    attach("prod_pro", &reports).await;
    let pro_export = attach("prod_pro", &export).await["id"].as_str().unwrap().to_string();

    let extra = vec![
        ("UPSTREAM_URL", upstream.clone()),
        ("GATED_PATHS", "/app,/app/export:export".into()),
        ("ENTITLEMENTS", "stripe".into()),
        ("PLANS", format!("{basic_price},{MONTHLY}")),
    ];
    let app = spawn_app_against(&stripe_url, Options { extra, ..Options::default() }).await;
    let (basic_user, _) = app.subscribed("basic@example.com", &basic_price).await;
    basic_user.get("/success").await;
    assert_eq!(received(&basic_user.get_json("/app/projects").await)["headers"]["x-tollgate-features"], "reports");
    assert_eq!(basic_user.get_json("/app/export").await.json()["error"]["code"], "feature_required");
    let (pro_user, pro_customer) = app.subscribed("pro@example.com", MONTHLY).await;
    pro_user.get("/success").await;
    assert_eq!(received(&pro_user.get_json("/app/export/2026.csv").await)["headers"]["x-tollgate-features"], "export,reports");
    let cached = app.cache(&pro_customer).await.unwrap();
    assert_eq!(cached["features"], serde_json::json!(["export", "reports"]), "{cached}");
    // Pricing marks the plans whose product has the feature the Basic subscriber lacked.
    let pricing = basic_user.get("/?notice=feature&feature=export").await.text;
    assert!(pricing.contains(&format!("class=\"card wanted\" id=\"plan-{MONTHLY}\"")), "{pricing}");
    assert!(pricing.contains(&format!("class=\"card\" id=\"plan-{basic_price}\"")), "{pricing}");

    // Stripe takes `export` away from Pro; its summary event reaches Tollgate, which syncs.
    let delete = reqwest::Method::DELETE;
    api(delete, format!("/v1/products/prod_pro/features/{pro_export}"), vec![]).await;
    let events = app.stripe(reqwest::Method::GET, "/v1/events", &[("type", "entitlements.active_entitlement_summary.updated")]).await;
    let summary =
        events["data"].as_array().unwrap().iter().find(|e| e["data"]["object"]["customer"] == pro_customer.as_str()).unwrap().clone();
    assert_eq!(summary["data"]["object"]["entitlements"]["data"][0]["lookup_key"], "reports");
    assert_eq!(crate::helpers::TestAppHandle::from(&app).deliver(&summary).await.status, 200);
    app.settled().await;
    assert_eq!(app.cache(&pro_customer).await.unwrap()["features"], serde_json::json!(["reports"]));
    app.clock.advance(Duration::from_millis(1001)); // past the second an identity is kept
    let calls = app.stripe_requests();
    let emulator_calls = || async {
        crate::helpers::Reply::read(http.get(format!("{stripe_url}/_emulator/stats")).send().await.unwrap()).await.json()["api_requests"]
            .clone()
    };
    let emulator_before = emulator_calls().await;
    for _ in 0..5 {
        let refused = pro_user.get_json("/app/export").await;
        assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (402, Some("feature_required")));
        assert_eq!(received(&pro_user.get_json("/app/projects").await)["headers"]["x-tollgate-features"], "reports");
    }
    assert_eq!(app.stripe_requests(), calls, "no Stripe call on the request path");
    assert_eq!(emulator_calls().await, emulator_before, "as the emulator counts them");
}
