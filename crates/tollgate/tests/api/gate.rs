//! The gate holds whatever the product behind it makes of a path: every target of the hostile-path
//! corpus (`tests/fixtures/hostile-targets.txt`, also run by `tests/python/test_gate_products.py`
//! against Flask, Starlette, aiohttp and nginx) is sent byte for byte, anonymously and as a
//! signed-in user without a subscription, through the gateway in front of a product that counts
//! what reaches it and in front of nginx serving files, and through the README's nginx asking
//! `/auth/verify`. None reaches the gated page.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::{gateway_app, received, start_product};
use crate::helpers::{spawn_app, MONTHLY};
use crate::nginx::Nginx;

/// What the product serves at `/app/secret` (nginx's file): never seen without a subscription.
const SECRET: &str = "SECRET-PAGE-b41e";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Section {
    Gated,
    Case,
    Lookalike,
}

/// The corpus, by section.
pub fn corpus() -> Vec<(Section, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hostile-targets.txt")).unwrap();
    let mut section = None;
    let mut targets = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line {
            "[gated]" => section = Some(Section::Gated),
            "[case]" => section = Some(Section::Case),
            "[lookalike]" => section = Some(Section::Lookalike),
            target => targets.push((section.expect("a section first"), target.to_string())),
        }
    }
    assert!(targets.iter().filter(|(s, _)| *s == Section::Gated).count() >= 60, "the corpus keeps at least 60 gated targets");
    targets
}

/// An answer read off the wire.
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Send `GET <target>` exactly as written (no client library normalises it) to `addr`.
pub async fn raw_get(addr: &str, target: &str, headers: &[(&str, &str)]) -> Raw {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("GET {target}: no status in {answer:?}"));
    Raw { status, head: head.to_string(), body: body.to_string() }
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A directory of files for nginx to serve: the gated page and a public one.
/// Removed when the returned directory drops.
fn product_files() -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("tollgate-files-").tempdir().unwrap();
    // nginx's workers, started by root, read the files as another user.
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.path().join("app")).unwrap();
    std::fs::write(root.path().join("app/secret"), SECRET).unwrap();
    std::fs::write(root.path().join("index.html"), "public").unwrap();
    root
}

/// Every target of `sections`, for `cookie`'s holder: the gate's answer or a refusal, never the page.
async fn assert_gated(addr: &str, cookie: &str, sections: &[Section], allowed: &[u16]) {
    for (section, target) in corpus().into_iter().filter(|(s, _)| sections.contains(s)) {
        let answer = raw_get(addr, &target, &[("cookie", cookie)]).await;
        assert!(allowed.contains(&answer.status), "{section:?} {target}: {} {}", answer.status, answer.body);
        assert!(!answer.body.contains(SECRET), "{target} reached the gated page");
    }
}

/// The product's own answers for targets the gate leaves to it: never the page.
async fn assert_never_the_page(addr: &str, cookie: &str, sections: &[Section]) {
    for (_, target) in corpus().into_iter().filter(|(s, _)| sections.contains(s)) {
        let answer = raw_get(addr, &target, &[("cookie", cookie)]).await;
        assert!(!answer.body.contains(SECRET), "{target} reached the gated page: {}", answer.status);
    }
}

const GATE_ANSWERS: [u16; 4] = [400, 401, 402, 303];

#[tokio::test]
async fn no_hostile_target_reaches_the_product_for_a_visitor_or_a_member() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![("GATED_PATHS", "/app".into())]).await;
    let member = app.signed_in("member@example.com").await;
    for cookie in ["", &member.cookie_header()] {
        assert_gated(&addr_of(&app.url), cookie, &[Section::Gated], &GATE_ANSWERS).await;
    }
    assert_eq!(product.requests.load(Ordering::SeqCst), 0, "nothing of the corpus reached the product");
    // Where the product routes case-insensitively, case variants are gated too.
    let insensitive = gateway_app(&upstream, vec![("GATED_PATHS", "/app".into()), ("GATED_PATHS_CASE_INSENSITIVE", "true".into())]).await;
    assert_gated(&addr_of(&insensitive.url), "", &[Section::Gated, Section::Case], &GATE_ANSWERS).await;
    assert_eq!(product.requests.load(Ordering::SeqCst), 0);

    // A subscriber's request reaches the product in the one canonical form it was decided on.
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    let cookie = subscriber.cookie_header();
    for (target, forwarded) in [
        ("/%61pp/secret", "/app/secret"),
        ("//x/..//app/./secret?q=%2F", "/app/secret?q=%2F"),
        ("/app/a%20b/%c3%a9", "/app/a%20b/%C3%A9"),
        ("http://elsewhere.example/app/secret", "/app/secret"),
    ] {
        let answer = raw_get(&addr_of(&app.url), target, &[("cookie", &cookie), ("accept", "application/json")]).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.body);
        let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(seen["path"], forwarded, "{target}");
    }
    // The absolute form names the host: it is the Host the product sees.
    let answer = raw_get(&addr_of(&app.url), "http://elsewhere.example/docs", &[]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["headers"]["host"], "elsewhere.example");
    // Refusals say why, to a page and to an API caller.
    let refused = raw_get(&addr_of(&app.url), "/app%2fsecret", &[("accept", "application/json")]).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("invalid_path") && refused.body.contains("encoded slash"), "{}", refused.body);
    let page = raw_get(&addr_of(&app.url), "/x/..;/app", &[("accept", "text/html")]).await;
    assert!(page.status == 400 && page.body.contains("<html") && page.body.contains(".."), "{}", page.body);
}

#[tokio::test]
async fn no_hostile_target_reaches_files_nginx_serves_behind_the_gateway() {
    let root = product_files();
    let files = Nginx::serve_files(root.path());
    let app = gateway_app(&files.url, vec![("GATED_PATHS", "/app".into())]).await;
    let member = app.signed_in("member@example.com").await;
    for cookie in ["", &member.cookie_header()] {
        assert_gated(&addr_of(&app.url), cookie, &[Section::Gated], &GATE_ANSWERS).await;
        assert_never_the_page(&addr_of(&app.url), cookie, &[Section::Case, Section::Lookalike]).await;
    }
    // The page is there for a subscriber: the checks above could have failed.
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    for target in ["/app/secret", "/%61pp/secret", "//app//secret"] {
        let answer = raw_get(&addr_of(&app.url), target, &[("cookie", &subscriber.cookie_header())]).await;
        assert!(answer.status == 200 && answer.body.contains(SECRET), "{target}: {} {}", answer.status, answer.head);
    }
}

#[tokio::test]
async fn no_hostile_target_passes_forward_auth_behind_the_readme_nginx() {
    let root = product_files();
    let files = Nginx::serve_files(root.path());
    let app = spawn_app().await;
    let nginx = Nginx::start(&app.url, &files.url);
    let member = app.signed_in("member@example.com").await;
    // nginx answers a refusal of `auth_request` with its own redirect (302), or refuses itself.
    for cookie in ["", &member.cookie_header()] {
        assert_gated(&addr_of(&nginx.url), cookie, &[Section::Gated, Section::Case, Section::Lookalike], &[302, 400, 401, 403, 404]).await;
    }
    let (subscriber, _) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    let answer = raw_get(&addr_of(&nginx.url), "/app/secret", &[("cookie", &subscriber.cookie_header())]).await;
    assert!(answer.status == 200 && answer.body.contains(SECRET), "{} {}", answer.status, answer.head);
}

/// `FORWARD_AUTH_TRUST_URI`: `/auth/verify` decides on the proxy's `X-Forwarded-Uri` (or nginx's
/// `X-Original-URI`) made canonical: open paths pass for a visitor (no identity), gated ones need
/// a subscription, and an ambiguous one is refused (403 for nginx, which can carry nothing else).
#[tokio::test]
async fn forward_auth_decides_on_the_canonical_forwarded_uri_when_trusted() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra: vec![("FORWARD_AUTH_TRUST_URI", "true".into()), ("GATED_PATHS", "/".into()), ("OPEN_PATHS", "/static,/".into())],
        ..Default::default()
    })
    .await;
    let visitor = app.browser();
    let ask = |uri: &'static str, deny: &'static str| {
        let visitor = visitor.clone();
        async move {
            let path = format!("/auth/verify{deny}");
            visitor.send(reqwest::Method::GET, &path, &[("x-forwarded-uri", uri), ("x-forwarded-user", "forged")], None).await
        }
    };
    let open = ask("/static/app.css?v=1", "").await;
    assert_eq!(open.status, 200, "{}", open.text);
    assert!(!open.headers.contains_key("x-forwarded-user"), "a visitor is nobody");
    assert_eq!(ask("/", "").await.status, 200, "the root page alone is open");
    for gated in ["/shop.json?sql=select+1", "/static/../shop", "/%73hop", "/STATIC.json", "/static.json"] {
        assert_eq!(ask(gated, "").await.status, 401, "{gated}");
    }
    assert_eq!(ask("/static%2f..%2fshop", "").await.status, 400);
    assert_eq!(ask("/static%2f..%2fshop", "?deny=403").await.status, 403);
    let without_header = visitor.get_json("/auth/verify").await;
    assert_eq!(without_header.status, 401, "no path named: gated");
    // Without the setting every path asked about is gated, whatever the header says.
    let untrusting = spawn_app().await;
    let r = untrusting.browser().send(reqwest::Method::GET, "/auth/verify", &[("x-forwarded-uri", "/static/x")], None).await;
    assert_eq!(r.status, 401);
}

/// `GATED_PATHS=/` gates the whole product except `OPEN_PATHS`; Tollgate's own routes stay its own.
#[tokio::test]
async fn the_whole_product_behind_the_gate_but_its_open_paths() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![("GATED_PATHS", "/".into()), ("OPEN_PATHS", "/static,/favicon.ico".into())]).await;
    let visitor = app.browser();
    for open in ["/static/app.js", "/favicon.ico"] {
        assert_eq!(received(&visitor.get_json(open).await)["path"], open);
    }
    for gated in ["/shop.json?sql=select%20*%20from%20plans", "/anything", "/static.json", "/favicon.ico.json", "/metrics"] {
        let r = visitor.get_json(gated).await;
        assert_eq!(r.status, 401, "{gated}: {}", r.text);
    }
    assert!(visitor.get("/").await.text.contains("id=\"plans\""), "the pricing page is Tollgate's");
    assert_eq!(visitor.get_json("/healthz").await.status, 200);
    assert_eq!(product.requests.load(Ordering::SeqCst), 2, "only the open paths reached the product");
}

/// `GATEWAY_ALLOW_ENCODED_SLASH`: a product that needs `%2F` gets it as sent, and the gate decides
/// on what the product may make of it (`/x%2F..%2Fapp` is `/app`).
#[tokio::test]
async fn encoded_slashes_when_the_product_wants_them() {
    let (upstream, product) = start_product().await;
    let app = gateway_app(&upstream, vec![("GATED_PATHS", "/app".into()), ("GATEWAY_ALLOW_ENCODED_SLASH", "true".into())]).await;
    let addr = addr_of(&app.url);
    let open = raw_get(&addr, "/docs/a%2fb", &[("accept", "application/json")]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&open.body).unwrap()["path"], "/docs/a%2Fb");
    for gated in ["/x%2F..%2Fapp/secret", "/app%2Fsecret", "/x%2f..%2fapp"] {
        assert_eq!(raw_get(&addr, gated, &[]).await.status, 401, "{gated}");
    }
    assert_eq!(raw_get(&addr, "/..%2Fapp", &[]).await.status, 400);
    assert_eq!(product.requests.load(Ordering::SeqCst), 1);
}
