//! Upgrades through the gateway: only WebSocket is spliced (an `h2c` upgrade would hand the
//! connection to the product and every later request on it would bypass the gate), and a
//! tunnel keeps the gate — it closes when its user's subscription (or its path's feature) ends or they sign out, when
//! it idles or outlives its limit, and tunnels together never take the whole connection cap.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway::{gateway_app, received, start_product};
use crate::helpers::{spawn_app_against, spawn_emulator, stripe_api, Options, MONTHLY};

/// A WebSocket handshake on `path`, as a browser sends it: the answer's head and the stream.
pub async fn handshake(addr: &str, path: &str, extra: &[(&str, &str)]) -> (String, TcpStream) {
    let stream = TcpStream::connect(addr).await.unwrap();
    handshake_with(stream, addr, path, extra).await
}

/// A handshake on a connected stream.
async fn handshake_with(mut stream: TcpStream, addr: &str, path: &str, extra: &[(&str, &str)]) -> (String, TcpStream) {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-Fetch-Mode: websocket\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return ("closed".into(), stream);
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

/// Bytes sent come back (the product echoes them).
pub async fn echoes(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).await.is_err() {
        return false;
    }
    let mut echoed = vec![0u8; message.len()];
    matches!(tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await, Ok(Ok(_))) && echoed == message
}

/// How long until the other end closes `stream` (at most `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A product that switches to h2c whatever it is asked (as Hypercorn does when asked for h2c).
async fn start_switching_product() -> String {
    crate::gateway::start_raw_product(|_| b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n").await
}

#[tokio::test]
async fn only_websocket_upgrades_are_spliced() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![]).await;
    let visitor = app.browser();
    // h2c, and a list that is not exactly websocket: forwarded as plain requests, the upgrade gone.
    for (connection, upgrade) in [("Upgrade, HTTP2-Settings", "h2c"), ("Upgrade", "websocket, h2c"), ("Upgrade", "TLS/1.2")] {
        let headers = [("connection", connection), ("upgrade", upgrade), ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")];
        let seen = received(&visitor.send(Method::GET, "/docs", &headers, None).await);
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(seen["headers"].get(name).is_none(), "{upgrade}: {name} reached the product: {seen}");
        }
    }
    // A product that switches to anything else is not honoured.
    let switching = gateway_app(&start_switching_product().await, vec![]).await;
    let plain = switching.browser().get_json("/docs").await;
    assert_eq!((plain.status, plain.json()["error"]["code"].as_str()), (502, Some("upstream_protocol")));
    let (head, _) = handshake(&addr(&switching.url), "/docs", &[]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    // A WebSocket handshake on a gated path without a session: 401 JSON, not a page redirect.
    let (head, _) = handshake(&addr(&app.url), "/app/ws", &[("accept", "text/html")]).await;
    assert!(head.starts_with("HTTP/1.1 401") && head.contains("application/json") && head.contains("location: /auth?next="), "{head}");
}

/// `ENTITLEMENT_RECHECK`: a tunnel on a gated path closes at its next recheck after the user's
/// subscription ends, and at once when they sign out here; one on an open path is unaffected.
/// The rechecks come as the app's clock is moved.
#[tokio::test]
async fn a_gated_tunnel_closes_when_the_subscription_ends_or_its_user_signs_out() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![("ENTITLEMENT_RECHECK", "1s".into())]).await;
    let (subscriber, customer) = app.subscribed("payer@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    let cookie = subscriber.cookie_header();
    let (head, mut gated) = handshake(&addr(&app.url), "/app/ws", &[("cookie", &cookie)]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, mut open) = handshake(&addr(&app.url), "/ws", &[("cookie", &cookie)]).await;
    assert!(echoes(&mut gated, b"1+1").await && echoes(&mut open, b"hello").await);
    // Still entitled over several rechecks.
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(1));
        assert!(echoes(&mut gated, b"still here").await, "an entitled user's tunnel stays open");
    }

    let sub = app.stripe(Method::GET, "/v1/subscriptions", &[("customer", &customer)]).await["data"][0]["id"].as_str().unwrap().to_string();
    app.stripe(Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await;
    let deleted = app.events_for(&customer).await.into_iter().find(|e| e["type"] == "customer.subscription.deleted").unwrap();
    app.deliver_all_and_settle(&[deleted]).await;
    app.clock.advance(Duration::from_secs(1)); // the next recheck
    let closed = closed_within(&mut gated, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the gated tunnel outlived the subscription");
    assert!(echoes(&mut open, b"open path").await, "a tunnel on an open path is not the gate's");

    // Signing out closes the user's tunnels on this instance at once.
    let (member_browser, _) = app.subscribed("second@example.com", MONTHLY).await;
    member_browser.get("/success").await;
    let (head, mut socket) = handshake(&addr(&app.url), "/app/ws", &[("cookie", &member_browser.cookie_header())]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    member_browser.form("/auth/sign-out", &[]).await;
    let closed = closed_within(&mut socket, Duration::from_millis(800)).await;
    assert!(closed.is_some(), "the tunnel outlived the sign-out");
}

/// A tunnel on a path that needs a feature closes at its next recheck once the plan no longer has
/// it (Stripe took it off the product: `ENTITLEMENTS=stripe`); one on a path that needs only the
/// subscription stays open.
#[tokio::test]
async fn a_tunnel_closes_when_its_path_s_feature_is_taken_away() {
    let (upstream, _) = start_product().await;
    let stripe_url = spawn_emulator().await;
    let http = reqwest::Client::new();
    let feature =
        stripe_api(&http, &stripe_url, Method::POST, "/v1/entitlements/features", &[("name", "Live"), ("lookup_key", "live")]).await;
    let attach = [("entitlement_feature", feature["id"].as_str().unwrap())];
    let attached = stripe_api(&http, &stripe_url, Method::POST, "/v1/products/prod_pro/features", &attach).await;
    let extra = vec![
        ("UPSTREAM_URL", upstream.clone()),
        ("GATED_PATHS", "/app,/app/live:live".into()),
        ("ENTITLEMENTS", "stripe".into()),
        ("ENTITLEMENT_RECHECK", "1s".into()),
    ];
    let app = spawn_app_against(&stripe_url, Options { extra, ..Options::default() }).await;
    let (subscriber, customer) = app.subscribed("live@example.com", MONTHLY).await;
    subscriber.get("/success").await;
    let cookie = subscriber.cookie_header();
    let (head, mut live) = handshake(&addr(&app.url), "/app/live/ws", &[("cookie", &cookie)]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, mut plain) = handshake(&addr(&app.url), "/app/ws", &[("cookie", &cookie)]).await;
    assert!(echoes(&mut live, b"on air").await && echoes(&mut plain, b"hello").await);

    let detach = format!("/v1/products/prod_pro/features/{}", attached["id"].as_str().unwrap());
    stripe_api(&http, &stripe_url, Method::DELETE, &detach, &[]).await;
    let summary =
        app.events_for(&customer).await.into_iter().rfind(|e| e["type"] == "entitlements.active_entitlement_summary.updated").unwrap();
    app.deliver_all_and_settle(&[summary]).await;
    app.clock.advance(Duration::from_secs(1)); // the next recheck
    assert!(closed_within(&mut live, Duration::from_secs(3)).await.is_some(), "the tunnel outlived its feature");
    assert!(echoes(&mut plain, b"still subscribed").await, "the subscription alone still holds");
}

/// Idle and lifetime limits on the app's clock. That clock runs with real time too, so each step
/// leaves seconds of slack before a limit (a loaded machine must not close a tunnel early).
#[tokio::test]
async fn idle_and_old_tunnels_close() {
    let (upstream, _) = start_product().await;
    let app = gateway_app(&upstream, vec![("UPSTREAM_IDLE_TIMEOUT", "10s".into()), ("WEBSOCKET_MAX_LIFETIME", "40s".into())]).await;
    let (_, mut chatty) = handshake(&addr(&app.url), "/ws", &[]).await;
    let (_, mut idle) = handshake(&addr(&app.url), "/ws", &[]).await;
    // 6 s on the app's clock: the busy tunnel talks; the idle one has not idled 10 s yet.
    app.clock.advance(Duration::from_secs(6));
    assert!(echoes(&mut chatty, b"ping").await);
    assert!(closed_within(&mut idle, Duration::from_millis(100)).await.is_none(), "closed before it idled");
    // 12 s: the idle one has had no byte for over 10 s; the busy one talks again.
    app.clock.advance(Duration::from_secs(6));
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await.is_some(), "an idle tunnel closes");
    assert!(echoes(&mut chatty, b"ping").await, "a busy tunnel stays open");
    // The busy one talks every 8 s up to 36 s; at 44 s its lifetime (40 s) is over.
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(8));
        assert!(echoes(&mut chatty, b"ping").await, "a busy tunnel stays open until its lifetime ends");
    }
    app.clock.advance(Duration::from_secs(8));
    assert!(closed_within(&mut chatty, Duration::from_secs(2)).await.is_some(), "no tunnel outlives WEBSOCKET_MAX_LIFETIME");
}

/// Raise this process's open-file limit to its hard maximum (the test holds thousands of sockets).
pub fn more_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// 5,000 idle WebSockets on an open path against the real binary: tunnels take at most their
/// share of the connection cap (the rest are refused with a retryable 503), and `/healthz`
/// answers every time meanwhile.
#[tokio::test]
async fn five_thousand_idle_websockets_leave_health_answering() {
    more_files();
    let product = crate::gateway::start_echo_socket().await;
    let binary = crate::hostile::Binary::start_with(&crate::helpers::spawn_emulator().await, &[("UPSTREAM_URL", product)]).await;
    let target = addr(&binary.url);
    let sockets = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let mut opening = tokio::task::JoinSet::new();
    for batch in 0..50 {
        let (target, sockets, statuses) = (target.clone(), sockets.clone(), statuses.clone());
        opening.spawn(async move {
            for _ in 0..100 {
                let opened = tokio::time::timeout(Duration::from_secs(10), async {
                    let Ok(stream) = TcpStream::connect(&target).await else { return ("refused".to_string(), None) };
                    let (head, stream) = handshake_with(stream, &target, &format!("/ws/{batch}"), &[]).await;
                    (head.split(' ').nth(1).unwrap_or("closed").to_string(), Some(stream))
                })
                .await;
                let (status, stream) = opened.unwrap_or(("timeout".into(), None));
                *statuses.lock().unwrap().entry(status).or_default() += 1;
                if let Some(stream) = stream {
                    sockets.lock().await.push(stream);
                }
            }
        });
    }
    opening.join_all().await;
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("5,000 WebSocket handshakes: {statuses:?}");
    let open = statuses.get("101").copied().unwrap_or(0);
    assert!(open >= 1000, "tunnels were opened: {statuses:?}");
    assert!(open <= 3072, "tunnels stay within their share of the connection cap: {statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), 5000);
    let http = reqwest::Client::new();
    for n in 0..20 {
        let r = http.get(format!("{}/healthz", binary.url)).timeout(Duration::from_secs(5)).send().await;
        assert!(r.is_ok_and(|r| r.status() == 200), "/healthz, try {n}, with {open} tunnels open");
    }
    // The tunnels still work.
    let mut sockets = sockets.lock().await;
    let first = sockets.iter_mut().next().unwrap();
    assert!(echoes(first, b"still there").await);
}
