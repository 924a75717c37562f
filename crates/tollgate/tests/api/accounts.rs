//! Built-in accounts end to end: sign-up finished by an emailed link, answers that do not reveal
//! who has an account, password reset, the local outbox, and delivery to a real SMTP server
//! (aiosmtpd, installed by `scripts/test` in tests/python/.venv).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{spawn_app, spawn_app_with, Browser, Options, TestApp, PASSWORD};
use crate::redis_server::free_port;

/// The page a form answered, with `email` taken out (what a watcher could compare).
async fn answer(browser: &Browser, path: &str, fields: &[(&str, &str)], email: &str) -> (u16, String) {
    let r = browser.form(path, fields).await;
    (r.status, r.text.replace(email, "EMAIL"))
}

#[tokio::test]
async fn sign_up_and_reset_answer_alike_whether_or_not_the_email_has_an_account() {
    let app = spawn_app().await;
    app.signed_in("taken@example.com").await;
    let stranger = app.browser();
    let sign_up = |email: &'static str| {
        let stranger = &stranger;
        async move { answer(stranger, "/auth/sign-up", &[("email", email)], email).await }
    };
    let (taken, fresh) = (sign_up("taken@example.com").await, sign_up("fresh@example.com").await);
    assert_eq!(taken.0, 200);
    assert_eq!(taken, fresh, "the same page for a taken and a fresh email");
    assert!(taken.1.contains("Check your email"));
    let reset = |email: &'static str| {
        let stranger = &stranger;
        async move { answer(stranger, "/auth/reset", &[("email", email)], email).await }
    };
    let (known, unknown) = (reset("taken@example.com").await, reset("nobody@example.com").await);
    assert_eq!(known.0, 200);
    assert_eq!(known, unknown, "the same page for a known and an unknown email");
    // The inbox tells its owner the difference.
    let inbox = |email: &str| {
        app.state.mailer().outbox().unwrap().into_iter().filter(|m| m.mail.to.as_str() == email).map(|m| m.mail).collect::<Vec<_>>()
    };
    let taken_mail = inbox("taken@example.com");
    assert!(taken_mail.iter().any(|m| m.text.contains("you already have one") && !m.text.contains("/auth/confirm")));
    assert!(taken_mail.iter().any(|m| m.text.contains("/auth/reset/new?token=")));
    assert!(inbox("fresh@example.com")[0].text.contains("/auth/confirm?token="));
    assert!(inbox("nobody@example.com")[0].text.contains("it has no account") && !inbox("nobody@example.com")[0].text.contains("token="));
}

#[tokio::test]
async fn the_emailed_link_makes_the_account_only_when_confirmed_and_only_once() {
    let app = spawn_app().await;
    let browser = app.browser();
    browser.form("/auth/sign-up", &[("email", "New@Example.com"), ("next", "/app?tab=1")]).await;
    let link = app.emailed_link("new@example.com", "/auth/confirm");
    // A mail scanner that follows links (GET) creates nothing.
    let scanner = app.browser();
    for _ in 0..3 {
        let page = scanner.get(&link).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("Create my account") && page.text.contains("name=\"token\"") && page.text.contains("name=\"password\""));
    }
    let before = app.browser().form("/auth/sign-in", &[("email", "new@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(before.status, 401, "no account before the link is confirmed");
    // The password is chosen on the link's page: a weak one shows the form again, the link kept.
    let token = link.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let weak = browser.form("/auth/confirm", &[("token", &token), ("password", "short")]).await;
    assert_eq!(weak.status, 400);
    assert!(weak.text.contains("at least 10 characters") && weak.text.contains("name=\"password\""), "{}", weak.text);
    let confirmed = app.confirm(&browser, "new@example.com").await;
    assert_eq!(confirmed.location(), "/app?tab=1", "the link keeps where the person was going");
    assert!(browser.get("/dashboard").await.text.contains("new@example.com"));
    // The link is spent; so are made-up and hostile ones, with a page that says so.
    let again = app.browser().form("/auth/confirm", &[("token", &token), ("password", "another long password")]).await;
    assert_eq!(again.status, 410);
    assert!(again.text.contains("expired or was already used"));
    for bad in
        [link.clone(), "/auth/confirm".into(), "/auth/confirm?token=../../etc".into(), format!("/auth/confirm?token={}", "A".repeat(5000))]
    {
        let page = app.browser().get(&bad).await;
        assert_eq!(page.status, 410, "{bad}");
        assert!(page.text.contains("expired or was already used"));
    }
    let after = app.browser().form("/auth/sign-in", &[("email", "new@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(after.status, 303);
}

#[tokio::test]
async fn a_password_reset_signs_out_every_device_and_its_link_works_once() {
    let app = spawn_app().await;
    let laptop = app.signed_in("reset@example.com").await;
    let phone = app.browser();
    assert_eq!(phone.get("/auth").await.status, 200);
    assert!(phone.get("/auth").await.text.contains("href=\"/auth/reset\""), "the sign-in form offers the reset");
    phone.form("/auth/reset", &[("email", "RESET@example.com")]).await;
    let link = app.emailed_link("reset@example.com", "/auth/reset/new");
    let page = phone.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Choose a new password"));
    let token = link.split("token=").nth(1).unwrap().to_string();
    let weak = phone.form("/auth/reset/new", &[("token", &token), ("password", "short")]).await;
    assert_eq!(weak.status, 400);
    assert!(weak.text.contains("at least 10 characters") && weak.text.contains("name=\"password\""), "the form again, in place");
    let done = phone.form("/auth/reset/new", &[("token", &token), ("password", "a brand new password")]).await;
    assert_eq!((done.status, done.location()), (303, "/auth?notice=password-changed"));
    assert!(phone.get("/auth?notice=password-changed").await.text.contains("Your password was changed"));
    assert_eq!(laptop.get("/dashboard").await.status, 303, "the laptop's session ended");
    let old = app.browser().form("/auth/sign-in", &[("email", "reset@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(old.status, 401);
    let new = app.browser().form("/auth/sign-in", &[("email", "reset@example.com"), ("password", "a brand new password")]).await;
    assert_eq!(new.status, 303);
    let again = phone.form("/auth/reset/new", &[("token", &token), ("password", "a third long password")]).await;
    assert_eq!(again.status, 410, "the link is spent");
    assert_eq!(phone.get(&link).await.status, 410);
}

#[tokio::test]
async fn the_local_outbox_shows_each_email_with_its_link() {
    let app = spawn_app().await;
    let visitor = app.browser();
    let empty = visitor.get("/dev/outbox").await;
    assert!(empty.text.contains("No email yet"));
    let r = visitor.form("/auth/sign-up", &[("email", "outbox@example.com"), ("next", "/app")]).await;
    assert!(r.text.contains("href=\"/dev/outbox\""), "the page says where the email went");
    let page = visitor.get("/dev/outbox").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(page.text.contains("outbox@example.com") && page.text.contains("Confirm your email to finish signing up"));
    // The link is clickable, its `&` escaped in the attribute.
    let link = app.emailed_link("outbox@example.com", "/auth/confirm");
    assert!(page.text.contains(&format!("href=\"{}{}\"", app_public_url(&app), link.replace('&', "&#38;"))), "{}", page.text);
}

fn app_public_url(app: &TestApp) -> String {
    app.state.billing().public_url.clone()
}

#[tokio::test]
async fn one_address_cannot_send_email_in_bulk() {
    let app = spawn_app().await;
    let sender = app.browser();
    let mut statuses = Vec::new();
    for n in 0..61 {
        let r = sender.form("/auth/reset", &[("email", &format!("target{n}@example.com"))]).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert!(r.headers.contains_key("retry-after") && r.text.contains("Too many attempts"), "{}", r.text);
        }
    }
    assert!(statuses[..60].iter().all(|s| *s == 200) && statuses[60] == 429, "{statuses:?}");
    assert_eq!(app.state.mailer().outbox().unwrap().len(), 60);
}

/// A real SMTP server (aiosmtpd) that stores what it receives in a maildir.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/.venv/bin/python");
        assert!(python.exists(), "{} is missing: scripts/test installs aiosmtpd there", python.display());
        let port = free_port();
        let maildir = std::env::temp_dir().join(format!("tollgate-maildir-{}", tollgate_core::random_token(8)));
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let server = SmtpServer { child, port, maildir }; // stopped on drop, panics included
        if test_support::listening_within(port, Duration::from_secs(5)) {
            return server;
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    /// The messages received so far, as text (quoted-printable bodies decoded).
    fn received(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).map(|raw| quoted_printable_decoded(&raw)).collect()
    }
}

/// RFC 2045 quoted-printable: `=` at a line's end joins it to the next, `=XX` is a byte.
fn quoted_printable_decoded(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut bytes = Vec::new();
    let mut rest = joined.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail.get(..2).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'=', Some(byte)) => {
                bytes.push(byte);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

#[tokio::test]
async fn with_smtp_the_emails_reach_the_server_and_a_down_server_is_a_retryable_503() {
    let mut smtp = SmtpServer::start();
    let app = spawn_app_with(Options {
        extra: vec![("SMTP_URL", format!("smtp://127.0.0.1:{}", smtp.port)), ("MAIL_FROM", "Tollgate <no-reply@tollgate.test>".into())],
        ..Options::default()
    })
    .await;
    let browser = app.browser();
    let r = browser.form("/auth/sign-up", &[("email", "smtp@example.com")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("/dev/outbox"), "no outbox to point at");
    let received = smtp.received();
    assert_eq!(received.len(), 1, "delivered before the answer");
    let message = &received[0];
    assert!(message.contains("To: smtp@example.com") && message.contains("From: Tollgate <no-reply@tollgate.test>"), "{message}");
    assert!(message.contains("Subject: Confirm your email to finish signing up"));
    // The link in the delivered message finishes the sign-up.
    let start = message.find("/auth/confirm?token=").unwrap();
    let token = &message[start + 20..start + 52];
    let confirmed = browser.form("/auth/confirm", &[("token", token), ("password", PASSWORD)]).await;
    assert_eq!(confirmed.status, 303, "{message}");
    assert!(browser.get("/dashboard").await.text.contains("smtp@example.com"));
    assert_eq!(browser.get("/dev/outbox").await.status, 404, "no outbox when email goes out by SMTP");

    // `tollgate doctor` asks the same server.
    let doctor_settings = [
        ("KV_URL", "memory:".to_string()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", smtp.port)),
        ("MAIL_FROM", "Tollgate <no-reply@tollgate.test>".into()),
    ];
    assert_eq!(crate::doctor::check(&doctor_settings, "smtp").await["status"], "ok");

    let _ = smtp.child.kill();
    let _ = smtp.child.wait();
    assert_eq!(crate::doctor::check(&doctor_settings, "smtp").await["status"], "fail");
    let r = app.browser().form("/auth/reset", &[("email", "smtp@example.com")]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.headers.contains_key("retry-after") && r.text.contains("Sending email is unavailable"));
}

/// A browser-like client whose connections come from `local` (one of loopback's many addresses).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

/// A form post through `url` from `http`, with a fresh CSRF token and the given extra headers.
async fn post_form(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> crate::helpers::Reply {
    let page = http.get(format!("{url}/auth")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = cookie.split_once('=').unwrap().1.to_string();
    let mut all = fields.to_vec();
    all.push(("csrf", &csrf));
    let mut request = http
        .post(format!("{url}{path}"))
        .header("cookie", cookie.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body(crate::helpers::encode(&all));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    crate::helpers::Reply::read(request.send().await.unwrap()).await
}

/// Two instances behind nginx, which appends the client's address to `X-Forwarded-For`, with
/// `TRUSTED_PROXIES` naming nginx: an attacker's 500 bad sign-ins for made-up emails (each with
/// a forged `X-Forwarded-For` of its own choosing) lock nobody out — the victim signs in on the
/// first try — and the per-address email limit holds the attacker's real address, whatever it
/// claims.
#[tokio::test]
async fn behind_a_proxy_an_attackers_failures_lock_out_nobody_else() {
    let redis = crate::redis_server::RedisServer::start();
    let stripe = crate::helpers::spawn_emulator().await;
    let options = || Options {
        kv_url: redis.url(),
        extra: vec![("TRUSTED_PROXIES", "127.0.0.1/32".into()), ("BIND", "127.0.0.1".into())],
        ..Options::default()
    };
    let (a, b) = (crate::helpers::spawn_app_against(&stripe, options()).await, crate::helpers::spawn_app_against(&stripe, options()).await);
    a.signed_in("victim@example.com").await;
    let upstreams: Vec<String> = [&a, &b].iter().map(|app| app.url.trim_start_matches("http://").to_string()).collect();
    let nginx = crate::nginx::Nginx::balance(&upstreams);
    let attacker = client_from("127.0.0.66");
    let mut guesses = tokio::task::JoinSet::new();
    let started = std::time::Instant::now();
    for worker in 0..4 {
        let (attacker, url) = (attacker.clone(), nginx.url.clone());
        guesses.spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..125 {
                let email = format!("made-up-{worker}-{n}@example.com");
                let forged = format!("198.51.100.{}", n % 250);
                let fields = [("email", email.as_str()), ("password", "not anyone's password")];
                statuses.push(post_form(&attacker, &url, "/auth/sign-in", &fields, &[("x-forwarded-for", &forged)]).await.status);
            }
            statuses
        });
    }
    let statuses: Vec<u16> = guesses.join_all().await.into_iter().flatten().collect();
    eprintln!("500 bad sign-ins in {:?}", started.elapsed());
    assert_eq!(statuses.len(), 500);
    assert!(statuses.iter().all(|s| [401, 503].contains(s)), "refused as bad or shed, never throttled for all: {statuses:?}");
    let victim = client_from("127.0.0.7");
    let signed_in = post_form(&victim, &nginx.url, "/auth/sign-in", &[("email", "victim@example.com"), ("password", PASSWORD)], &[]).await;
    assert_eq!(signed_in.status, 303, "the victim signs in on the first try: {}", signed_in.text);

    // The email limit counts the attacker's real address, not the one it claims.
    let mut limited = None;
    for n in 0..61 {
        let forged = format!("203.0.113.{n}");
        let r =
            post_form(&attacker, &nginx.url, "/auth/reset", &[("email", &format!("t{n}@example.com"))], &[("x-forwarded-for", &forged)])
                .await;
        if r.status == 429 {
            limited = Some(n);
            break;
        }
    }
    assert_eq!(limited, Some(60), "sixty emails from one address, then 429");
    let r = post_form(&victim, &nginx.url, "/auth/reset", &[("email", "victim@example.com")], &[]).await;
    assert_eq!(r.status, 200, "another address is not limited");
}

/// The reset race: an attacker who knows the old password signs in over and over while the
/// owner resets it. Whatever the interleaving, no attacker session survives the reset (each
/// session carries the fingerprint of the password it was checked against). 20 runs.
#[tokio::test]
async fn no_session_of_the_old_password_survives_a_reset_that_raced_it() {
    let app = spawn_app().await;
    let mut made = 0;
    for run in 0..20 {
        let email = format!("owner{run}@example.com");
        app.signed_in(&email).await;
        let owner = app.browser();
        owner.form("/auth/reset", &[("email", &email)]).await;
        let link = app.emailed_link(&email, "/auth/reset/new");
        let token = link.split("token=").nth(1).unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attacker = {
            let (app_browser, stop, email) = (app.browser(), stop.clone(), email.clone());
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let attempt = app_browser.clone();
                    let r = attempt.form("/auth/sign-in", &[("email", &email), ("password", PASSWORD)]).await;
                    if r.status == 303 {
                        sessions.push(attempt.cookie_header());
                    }
                }
                sessions
            })
        };
        // Real time on purpose: each run lets the attacker's sign-ins start at another moment of the reset.
        tokio::time::sleep(Duration::from_millis(20 + run * 5)).await;
        let done = owner.form("/auth/reset/new", &[("token", &token), ("password", "the owner's new password")]).await;
        assert_eq!(done.status, 303, "{}", done.text);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sessions = attacker.await.unwrap();
        made += sessions.len();
        for cookie in &sessions {
            let r = app.http.get(format!("{}/api/subscription", app.url)).header("cookie", cookie).send().await.unwrap();
            assert_eq!(r.status(), 401, "run {run}: an attacker session survived the reset ({} made)", sessions.len());
        }
    }
    assert!(made >= 20, "the attacker did sign in during the races ({made} sessions)");
}

/// Sixteen clicks of one emailed link at once: exactly one succeeds, for a sign-up and for a reset.
#[tokio::test]
async fn sixteen_parallel_clicks_of_one_link_make_one_success() {
    let app = spawn_app().await;
    let browser = app.browser();
    browser.form("/auth/sign-up", &[("email", "twins@example.com")]).await;
    let link = app.emailed_link("twins@example.com", "/auth/confirm");
    let token = link.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let clicks = |path: &'static str, token: String| {
        let mut set = tokio::task::JoinSet::new();
        for n in 0..16 {
            let (browser, token) = (app.browser(), token.clone());
            set.spawn(async move { browser.form(path, &[("token", &token), ("password", &format!("password number {n}"))]).await.status });
        }
        set.join_all()
    };
    let statuses = clicks("/auth/confirm", token).await;
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [303, 410].contains(s)), "{statuses:?}");
    browser.form("/auth/reset", &[("email", "twins@example.com")]).await;
    let link = app.emailed_link("twins@example.com", "/auth/reset/new");
    let statuses = clicks("/auth/reset/new", link.split("token=").nth(1).unwrap().to_string()).await;
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 1, "{statuses:?}");
}
