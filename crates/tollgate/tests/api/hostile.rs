//! A hostile client against the real binary or app: floods of sign-ins, open-redirect variants,
//! a hung Stripe, and the headers every answer carries. One test per attack, each asserting the
//! safe outcome.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{spawn_app, spawn_app_against, spawn_emulator, Options, MONTHLY, WEBHOOK_SECRET};
use crate::redis_server::free_port;

/// The binary against `stripe`, on a free port, in-memory KV; killed when dropped.
pub struct Binary {
    child: std::process::Child,
    pub url: String,
}

impl Binary {
    pub async fn start(stripe: &str) -> Binary {
        Binary::start_with(stripe, &[]).await
    }

    /// With more variables (`UPSTREAM_URL`, say).
    pub async fn start_with(stripe: &str, extra: &[(&str, String)]) -> Binary {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_clear()
            .envs([
                ("PORT", port.to_string()),
                ("KV_URL", "memory:".into()),
                ("STRIPE_SECRET_KEY", "sk_test_tollgate_suite".into()),
                ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
                ("STRIPE_API_BASE", stripe.to_string()),
                ("PLANS", MONTHLY.into()),
                ("RUST_LOG", "error".into()),
            ])
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let up = || async { reqwest::get(format!("{url}/healthz")).await.ok() };
        test_support::eventually("the binary answers /healthz", Duration::from_secs(5), up).await;
        Binary { child, url }
    }

    /// The process's peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// The process's resident memory now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
        kib / 1024.0
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn four_hundred_concurrent_sign_ins_are_answered_in_bounded_memory() {
    let binary = Binary::start(&spawn_emulator().await).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{}/auth", binary.url)).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = cookie.trim_start_matches("tollgate_csrf=").to_string();
    let started = Instant::now();
    let mut attempts = tokio::task::JoinSet::new();
    for n in 0..400 {
        let (http, url, cookie, csrf) = (http.clone(), binary.url.clone(), cookie.clone(), csrf.clone());
        attempts.spawn(async move {
            let body = format!("email=guess{n}%40example.com&password=wrong+password+{n}&csrf={csrf}");
            let r = http
                .post(format!("{url}/auth/sign-in"))
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        });
    }
    let answers = attempts.join_all().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "400 sign-ins took {took:?}");
    for (status, retry_after) in &answers {
        assert!([401, 429, 503].contains(status), "status {status}");
        if *status != 401 {
            assert!(retry_after, "a shed answer says when to retry");
        }
    }
    assert!(answers.iter().any(|(s, _)| *s == 401), "some were really checked");
    let peak = binary.peak_rss_mib();
    eprintln!("peak RSS after 400 concurrent sign-ins: {peak:.1} MiB");
    assert!(peak < 128.0, "peak RSS {peak:.1} MiB");
}

#[tokio::test]
async fn redirects_after_sign_in_stay_on_this_site() {
    let app = spawn_app().await;
    let browser = app.signed_in("redirect@example.com").await;
    for next in ["/%09/evil.example", "/%0a/x", "/%0d%0aSet-Cookie:%20x=1", "/%5Cevil.example", "%2F%2Fevil.example", "https:evil.example"]
    {
        let r = browser.get(&format!("/auth?next={next}")).await;
        assert_eq!((r.status, r.location()), (303, "/dashboard"), "GET /auth?next={next}");
        let form = [("email", "redirect@example.com"), ("password", "a long enough password"), ("next", next)];
        let decoded: Vec<(&str, String)> =
            form.iter().map(|(k, v)| (*k, form_urlencoded::parse(format!("x={v}").as_bytes()).next().unwrap().1.into_owned())).collect();
        let fields: Vec<(&str, &str)> = decoded.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = browser.form("/auth/sign-in", &fields).await;
        assert_eq!((r.status, r.location()), (303, "/dashboard"), "sign-in with next={next}: {}", r.text);
    }
}

#[tokio::test]
async fn every_answer_carries_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/auth", "/nowhere", "/healthz"] {
        let r = app.browser().get(path).await;
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'none'"), "{path}: {csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(r.headers["referrer-policy"], "strict-origin-when-cross-origin", "{path}");
        assert!(!r.headers.contains_key("strict-transport-security"), "no HSTS over plain http");
    }
}

/// Stripe accepts connections and never answers (a stopped process): the pricing page answers in
/// under 3 s — an error page before the plans were ever loaded, the known plans after.
#[tokio::test]
async fn a_hung_stripe_costs_the_pricing_page_seconds() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = spawn_app_against(&format!("http://{}", hung.local_addr().unwrap()), Options::default()).await;
    let started = Instant::now();
    let r = app.browser().get("/").await;
    assert_eq!(r.status, 503);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(hung);

    let loaded = spawn_app().await;
    assert_eq!(loaded.browser().get("/").await.status, 200);
    let started = Instant::now();
    let mut pages = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let browser = loaded.browser();
        pages.spawn(async move { browser.get("/").await.status });
    }
    assert!(pages.join_all().await.iter().all(|s| *s == 200));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn an_https_site_without_stripe_keys_does_not_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .envs([("PUBLIC_URL", "https://app.example.com"), ("PORT", "0"), ("KV_URL", "memory:")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRIPE_SECRET_KEY"));
}

/// A client that sends part of its headers and then nothing (slowloris) is disconnected once the
/// header deadline passes; others are served meanwhile.
#[tokio::test]
async fn slow_clients_are_disconnected_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(stream);
    }
    assert_eq!(app.browser().get("/healthz").await.status, 200, "served while the slow ones hang");
    // The deadline reads the app's clock (every slow one was accepted before that answer).
    app.clock.advance(tollgate::HEADER_TIMEOUT);
    let started = Instant::now();
    for mut stream in slow {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(tollgate::HEADER_TIMEOUT + Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "still open after the header deadline");
    }
    assert!(started.elapsed() < tollgate::HEADER_TIMEOUT + Duration::from_secs(3));
}

/// Between requests a kept-alive connection waits up to `KEEPALIVE_TIMEOUT`, longer than a head may
/// take (a load balancer keeps its idle connections 60 s, and one it reused just as Tollgate
/// closed it would fail a request), and is closed once that has passed; a head begun on it must
/// still be whole within `HEADER_TIMEOUT` of its first byte; an answer that streams for longer than
/// the keep-alive to a client that sends nothing meanwhile is not cut; a connection that never
/// sends a byte is closed at the header deadline. The deadlines read the app's clock: the test
/// advances it, one case after another.
#[tokio::test]
async fn kept_connections_wait_for_the_next_request_and_heads_keep_their_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let (upstream, product) = crate::gateway::start_product().await;
    let keepalive = tollgate::HEADER_TIMEOUT + Duration::from_secs(3);
    let app = crate::gateway::gateway_app(&upstream, vec![("KEEPALIVE_TIMEOUT", format!("{}s", keepalive.as_secs()))]).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let connect = || TcpStream::connect(addr.clone());
    // The bytes read until `ends` ends them (an answer's last bytes), the connection closes, or
    // `within` passes (`None`); and whether it closed.
    async fn read_until(stream: &mut TcpStream, ends: &[u8], within: Duration) -> Option<(String, bool)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(ends) {
            match tokio::time::timeout(within, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                Ok(_) => return Some((String::from_utf8_lossy(&got).into_owned(), true)),
                Err(_) => return None,
            }
        }
        Some((String::from_utf8_lossy(&got).into_owned(), false))
    }
    // `/healthz` answered on `stream` (its JSON body ends with `}`).
    async fn healthy(stream: &mut TcpStream) {
        stream.write_all(HEALTH).await.unwrap();
        let (answer, closed) = read_until(stream, b"}", Duration::from_secs(20)).await.expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200") && !closed, "{answer}");
    }
    // Whether the server closes `stream` (which must send nothing more) within 300 ms, or within
    // 3 s when it should: at once once the clock is past the deadline, not after some real time.
    async fn closes(stream: &mut TcpStream, should: bool) -> bool {
        let within = Duration::from_millis(if should { 3_000 } else { 300 });
        match read_until(stream, b"\0never", within).await {
            Some((rest, closed)) => closed && rest.is_empty(),
            None => false,
        }
    }
    // Moved while nothing is due, to leave room for the real time the checks take.
    let margin = Duration::from_secs(2);

    // Idle past a head's deadline, the connection serves its next request; it closes at the keep-alive.
    let mut stream = connect().await.unwrap();
    healthy(&mut stream).await;
    app.clock.advance(tollgate::HEADER_TIMEOUT + Duration::from_secs(1));
    healthy(&mut stream).await;
    app.clock.advance(keepalive - margin);
    assert!(!closes(&mut stream, false).await, "closed before the keep-alive ran out");
    app.clock.advance(margin);
    assert!(closes(&mut stream, true).await, "still open after the keep-alive");

    // Half a head after a while idle: closed when the head's deadline, from its first byte, passes.
    let mut stream = connect().await.unwrap();
    healthy(&mut stream).await;
    app.clock.advance(Duration::from_secs(1));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    app.clock.advance(tollgate::HEADER_TIMEOUT - margin);
    assert!(!closes(&mut stream, false).await, "half a head closed before its deadline");
    app.clock.advance(margin);
    assert!(closes(&mut stream, true).await, "half a head still open after its deadline");

    // A connection that never sends a byte (accepted before the next one is answered).
    let mut silent = connect().await.unwrap();
    healthy(&mut connect().await.unwrap()).await;
    app.clock.advance(tollgate::HEADER_TIMEOUT - margin);
    assert!(!closes(&mut silent, false).await, "a silent connection closed before the header deadline");
    app.clock.advance(margin);
    assert!(closes(&mut silent, true).await, "a silent connection still open after the header deadline");

    // An answer that pauses longer than the keep-alive, to a client that sends nothing.
    let mut stream = connect().await.unwrap();
    stream.write_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (first, closed) = read_until(&mut stream, b"first part\n\r\n", Duration::from_secs(20)).await.expect("the first part");
    assert!(first.starts_with("HTTP/1.1 200") && !closed, "{first}");
    app.clock.advance(keepalive + Duration::from_secs(1));
    assert!(!closes(&mut stream, false).await, "the stream was cut while it paused");
    product.release_download.notify_one();
    let (rest, closed) = read_until(&mut stream, b"0\r\n\r\n", Duration::from_secs(20)).await.expect("the rest");
    assert!(rest.contains("second part") && !closed, "the stream was cut: {rest}");
    healthy(&mut stream).await;
}

/// `/readyz` proves the KV takes a write, asks Stripe at most once per few seconds however often
/// it is probed, and shows anonymous callers no internals.
#[tokio::test]
async fn readiness_is_cheap_to_probe_and_says_little() {
    let app = spawn_app().await;
    let before = app.stripe_requests();
    for _ in 0..20 {
        let r = app.browser().get_json("/readyz").await;
        assert_eq!((r.status, r.json()), (200, serde_json::json!({"status": "ready", "kv": true, "stripe": true})));
    }
    assert_eq!(app.stripe_requests() - before, 1, "one Stripe call for twenty probes");
    assert!(app.state.billing().kv.get("tollgate:ready").await.unwrap().is_some(), "the KV check wrote");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = spawn_app_against(&format!("http://{closed}"), Options::default()).await;
    let r = down.browser().get_json("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(!r.text.contains("127.0.0.1") && !r.text.contains("error"), "{}", r.text);
}

/// Signing in replaces the CSRF token (a token planted before sign-in is worthless after), and
/// under https both cookies carry the `__Host-` prefix and `Secure`.
#[tokio::test]
async fn sign_in_rotates_the_csrf_token_and_https_cookies_are_host_only() {
    let app = spawn_app().await;
    let browser = app.browser();
    browser.get("/auth").await;
    let planted = browser.csrf().unwrap();
    let r = browser.form("/auth/sign-up", &[("email", "rotate@example.com")]).await;
    assert_eq!(r.status, 200);
    app.confirm(&browser, "rotate@example.com").await;
    let rotated = browser.csrf().unwrap();
    assert_ne!(planted, rotated);
    let stale = browser
        .send(
            reqwest::Method::POST,
            "/auth/sign-out",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(format!("csrf={planted}").into_bytes()),
        )
        .await;
    assert_eq!(stale.status, 403, "the pre-sign-in token no longer works");

    let secure = crate::helpers::spawn_app_with(Options {
        extra: vec![("PUBLIC_URL", "https://app.example.com".into()), ("MAIL_OUTBOX", "true".into())],
        ..Options::default()
    })
    .await;
    let browser = secure.browser();
    let page = browser.get("/auth").await;
    let csrf_cookie = page.headers["set-cookie"].to_str().unwrap();
    assert!(csrf_cookie.starts_with("__Host-tollgate_csrf=") && csrf_cookie.contains("; Secure"), "{csrf_cookie}");
    assert!(page.headers["strict-transport-security"].to_str().unwrap().contains("max-age="));
    browser.form("/auth/sign-up", &[("email", "secure@example.com")]).await;
    let r = secure.confirm(&browser, "secure@example.com").await;
    assert!(secure.emailed_link("secure@example.com", "/auth/confirm").starts_with("/auth/confirm?token="));
    let cookies: Vec<&str> = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("__Host-tollgate_session=") && c.contains("; Secure") && c.contains("Path=/")),
        "{cookies:?}"
    );
    assert_eq!(browser.get("/dashboard").await.status, 200, "the prefixed cookies sign the user in");
}

/// Sessions: stored under a hash of the token (a read of the store signs nobody in), ended by
/// their expiry (sliding with use), and revocable on every device at once.
#[tokio::test]
async fn sessions_are_hashed_expire_and_can_all_be_revoked() {
    use sha2::{Digest, Sha256};
    let app = spawn_app().await;
    let laptop = app.signed_in("sessions@example.com").await;
    let token = laptop.cookie_header().split("; ").find_map(|c| c.strip_prefix("tollgate_session=")).unwrap().to_string();
    let kv = &app.state.billing().kv;
    assert_eq!(kv.get(&format!("tollgate:session:{token}")).await.unwrap(), None, "the token itself is no key");
    let key = format!("tollgate:session:{}", hex::encode(Sha256::digest(token.as_bytes())));
    let mut record: serde_json::Value = serde_json::from_str(&kv.get(&key).await.unwrap().unwrap()).unwrap();

    // Used after more than a day: the expiry slides forward.
    record["expiresAt"] = (tollgate_core::unix_now() + 3600).into();
    kv.set(&key, &record.to_string()).await.unwrap();
    assert_eq!(laptop.get("/dashboard").await.status, 200);
    let slid: serde_json::Value = serde_json::from_str(&kv.get(&key).await.unwrap().unwrap()).unwrap();
    assert!(slid["expiresAt"].as_i64().unwrap() > tollgate_core::unix_now() + 29 * 86_400, "{slid}");
    // Past its expiry: signed out.
    record["expiresAt"] = (tollgate_core::unix_now() - 1).into();
    kv.set(&key, &record.to_string()).await.unwrap();
    assert_eq!(laptop.get("/dashboard").await.status, 303);

    // Two devices; "sign out on every device" from one ends both.
    let laptop = app.browser();
    let phone = app.browser();
    for device in [&laptop, &phone] {
        let r = device.form("/auth/sign-in", &[("email", "sessions@example.com"), ("password", "a long enough password")]).await;
        assert_eq!(r.status, 303);
        assert_eq!(device.get("/dashboard").await.status, 200);
    }
    assert!(laptop.get("/dashboard").await.text.contains("sign-out-everywhere"));
    let r = laptop.form("/auth/sign-out-everywhere", &[]).await;
    assert_eq!((r.status, r.location()), (303, "/?notice=signed-out"));
    assert_eq!(phone.get("/dashboard").await.status, 303, "the other device is signed out too");
    assert_eq!(laptop.get("/dashboard").await.status, 303);
    // Signing in again afterwards works.
    let r = phone.form("/auth/sign-in", &[("email", "sessions@example.com"), ("password", "a long enough password")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(phone.get("/dashboard").await.status, 200);
}

/// Guessing passwords: after five failures an account gets growing waits (429 with
/// `Retry-After`), whether or not it exists, on every instance sharing the KV; the right
/// password after the wait signs in and clears the count.
#[tokio::test]
async fn password_guessing_is_throttled_across_instances() {
    let redis = crate::redis_server::RedisServer::start();
    let stripe = spawn_emulator().await;
    let options = || Options { kv_url: redis.url(), ..Options::default() };
    let (a, b) = (spawn_app_against(&stripe, options()).await, spawn_app_against(&stripe, options()).await);
    a.signed_in("guessed@example.com").await;
    for email in ["guessed@example.com", "nobody-here@example.com"] {
        let guess = |app: &crate::helpers::TestApp, password: &'static str| {
            let browser = app.browser();
            async move { browser.form("/auth/sign-in", &[("email", email), ("password", password)]).await }
        };
        for n in 0..5 {
            let app = if n % 2 == 0 { &a } else { &b };
            assert_eq!(guess(app, "not the password").await.status, 401, "{email}: guess {n}");
        }
        let throttled = guess(&b, "a long enough password").await;
        assert_eq!(throttled.status, 429, "{email}: even the right password waits");
        let wait: u64 = throttled.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&wait), "{wait}");
        assert!(throttled.text.contains("Too many attempts"));
        // The wait passes on both instances' clocks (no real time needs to).
        for app in [&a, &b] {
            app.clock.advance(Duration::from_millis(wait * 1000 + 100));
        }
    }
    let r = a.browser().form("/auth/sign-in", &[("email", "guessed@example.com"), ("password", "a long enough password")]).await;
    assert_eq!(r.status, 303, "after the wait the right password signs in");
    let r = a.browser().form("/auth/sign-in", &[("email", "guessed@example.com"), ("password", "one more wrong")]).await;
    assert_eq!(r.status, 401, "and the count started again");
}

/// Eight parallel "Subscribe" clicks, then paying every URL they returned: one subscription.
/// Choosing another plan expires the open session of the first, so it cannot be paid as well.
#[tokio::test]
async fn parallel_checkouts_end_with_one_subscription() {
    let app = spawn_app().await;
    let browser = app.signed_in("clicker@example.com").await;
    let mut clicks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let browser = browser.clone();
        clicks.spawn(async move { browser.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await });
    }
    let mut sessions: Vec<String> = clicks
        .join_all()
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.json()["sessionId"].as_str().unwrap().to_string()
        })
        .collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 1, "one open session, reused: {sessions:?}");
    for session in &sessions {
        assert_eq!(app.pay(session, "4242424242424242").await.status, 303);
    }
    let customer =
        app.state.billing().kv.get(&format!("stripe:user:{}", user_id(&app, "clicker@example.com").await)).await.unwrap().unwrap();
    let subs = app.stripe(reqwest::Method::GET, "/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await;
    assert_eq!(subs["data"].as_array().unwrap().len(), 1, "exactly one subscription");

    // Switching plans before paying: the first plan's session is expired.
    let other = app.signed_in("switcher@example.com").await;
    let monthly = other.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": MONTHLY })).await.json();
    let yearly = other.json_post("/api/generate-stripe-checkout", &serde_json::json!({ "priceId": crate::helpers::YEARLY })).await.json();
    assert_ne!(monthly["sessionId"], yearly["sessionId"]);
    assert_ne!(app.pay(monthly["sessionId"].as_str().unwrap(), "4242424242424242").await.status, 303, "the expired one cannot be paid");
    assert_eq!(app.pay(yearly["sessionId"].as_str().unwrap(), "4242424242424242").await.status, 303);
}

async fn user_id(app: &crate::helpers::TestApp, email: &str) -> String {
    let account = app.state.billing().kv.get(&format!("tollgate:account:{email}")).await.unwrap().unwrap();
    serde_json::from_str::<serde_json::Value>(&account).unwrap()["id"].as_str().unwrap().to_string()
}

/// If Stripe still ends with two live subscriptions (made outside Tollgate, say), the cache
/// describes the newest, says how many there are, and the dashboard warns about the second charge.
#[tokio::test]
async fn two_live_subscriptions_are_flagged() {
    let app = spawn_app().await;
    let (browser, customer) = app.subscribed("twice@example.com", MONTHLY).await;
    let second = app
        .stripe(
            reqwest::Method::POST,
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", crate::helpers::YEARLY), ("default_payment_method", "pm_card_visa")],
        )
        .await;
    browser.get("/success").await;
    let cached = app.cache(&customer).await.unwrap();
    assert_eq!(cached["liveSubscriptions"], 2);
    assert_eq!(cached["subscriptionId"], second["id"], "the newest one, whichever instance syncs");
    let dashboard = browser.get("/dashboard").await.text;
    assert!(dashboard.contains("id=\"duplicates\">You have 2 active subscriptions"), "{dashboard}");
}

/// 1,500 connections each sending 390 KB of request head that never ends: a head is bounded
/// (`MAX_HEADER_BYTES`, then 431 and the connection closes), the header bytes held for all
/// connections together are bounded (beyond them new connections wait in the kernel's backlog),
/// and the memory goes back to the system once the connections are gone.
#[tokio::test]
async fn endless_request_heads_are_bounded_and_their_memory_returns() {
    use tokio::io::AsyncWriteExt;
    crate::tunnels::more_files();
    let binary = Binary::start(&spawn_emulator().await).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(http.get(format!("{}/healthz", binary.url)).send().await.unwrap().status(), 200);
    }
    // Real time (as below): the process hands freed memory back to the system on its own.
    tokio::time::sleep(Duration::from_millis(1500)).await; // the warm-up's buffers handed back
    let baseline = binary.rss_mib();
    let addr = binary.url.trim_start_matches("http://").to_string();
    let line = format!("X-Padding: {}\r\n", "a".repeat(1000));
    let all_sent = std::sync::Arc::new(tokio::sync::Barrier::new(1501));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..1500 {
        let (addr, line, all_sent) = (addr.clone(), line.clone(), all_sent.clone());
        clients.spawn(async move {
            let sent = tokio::time::timeout(Duration::from_secs(20), async {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
                stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.ok()?;
                for _ in 0..390 {
                    if stream.write_all(line.as_bytes()).await.is_err() {
                        break; // the server closed it: the head was too large
                    }
                }
                Some(stream)
            })
            .await;
            all_sent.wait().await;
            drop(sent);
        });
    }
    all_sent.wait().await;
    let during = binary.rss_mib();
    clients.join_all().await;
    let peak = binary.peak_rss_mib();
    let started = Instant::now();
    let mut after = binary.rss_mib();
    while after > baseline * 1.1 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await; // real time, as above
        after = binary.rss_mib();
    }
    eprintln!(
        "RSS: baseline {baseline:.1} MiB, while held {during:.1} MiB, peak {peak:.1} MiB, {after:.1} MiB {:?} after",
        started.elapsed()
    );
    assert!(peak < baseline + 80.0, "peak {peak:.1} MiB over a baseline of {baseline:.1} MiB");
    assert!(after <= baseline * 1.1, "RSS {after:.1} MiB 5 s after, baseline {baseline:.1} MiB");
    assert_eq!(http.get(format!("{}/healthz", binary.url)).send().await.unwrap().status(), 200);
}
