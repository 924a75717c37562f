//! Built-in accounts end to end: sign-up finished by an emailed link, answers that do not reveal
//! who has an account, password reset, the local outbox, and delivery to a real SMTP server
//! (aiosmtpd, installed by `scripts/test` in tests/python/.venv).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{spawn_app, spawn_app_with, Browser, Options, TestApp};
use crate::redis_server::free_port;

const PASSWORD: &str = "a long enough password";

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
        async move { answer(stranger, "/auth/sign-up", &[("email", email), ("password", "some other password")], email).await }
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
        app.state.mailer.outbox().unwrap().into_iter().filter(|m| m.mail.to.as_str() == email).map(|m| m.mail).collect::<Vec<_>>()
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
    browser.form("/auth/sign-up", &[("email", "New@Example.com"), ("password", PASSWORD), ("next", "/app?tab=1")]).await;
    let link = app.emailed_link("new@example.com", "/auth/confirm");
    // A mail scanner that follows links (GET) creates nothing.
    let scanner = app.browser();
    for _ in 0..3 {
        let page = scanner.get(&link).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("Create my account") && page.text.contains("name=\"token\""));
    }
    let before = app.browser().form("/auth/sign-in", &[("email", "new@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(before.status, 401, "no account before the link is confirmed");
    let confirmed = app.confirm(&browser, "new@example.com").await;
    assert_eq!(confirmed.location(), "/app?tab=1", "the link keeps where the person was going");
    assert!(browser.get("/dashboard").await.text.contains("new@example.com"));
    // The link is spent; so are made-up and hostile ones, with a page that says so.
    let token = link.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let again = app.browser().form("/auth/confirm", &[("token", &token)]).await;
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
    let r = visitor.form("/auth/sign-up", &[("email", "outbox@example.com"), ("password", PASSWORD), ("next", "/app")]).await;
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
    app.state.billing.public_url.clone()
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
    assert_eq!(app.state.mailer.outbox().unwrap().len(), 60);
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
        let maildir = std::env::temp_dir().join(format!("tollgate-maildir-{}", tollgate::random_token(8)));
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let server = SmtpServer { child, port, maildir }; // stopped on drop, panics included
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
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
    let r = browser.form("/auth/sign-up", &[("email", "smtp@example.com"), ("password", PASSWORD)]).await;
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
    let confirmed = browser.form("/auth/confirm", &[("token", token)]).await;
    assert_eq!(confirmed.status, 303, "{message}");
    assert!(browser.get("/dashboard").await.text.contains("smtp@example.com"));
    assert_eq!(browser.get("/dev/outbox").await.status, 404, "no outbox when email goes out by SMTP");

    // `tollgate doctor` asks the same server.
    let doctor_settings: std::collections::HashMap<String, String> = [
        ("KV_URL", "memory:".to_string()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", smtp.port)),
        ("MAIL_FROM", "Tollgate <no-reply@tollgate.test>".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let doctor_settings = tollgate::config::Settings::from_vars(&doctor_settings).unwrap();
    let smtp_check = |checks: Vec<tollgate::doctor::Check>| checks.into_iter().find(|c| c.name == "smtp").unwrap().status;
    assert_eq!(smtp_check(tollgate::doctor::run(&doctor_settings, None).await), tollgate::doctor::Status::Ok);

    let _ = smtp.child.kill();
    let _ = smtp.child.wait();
    assert_eq!(smtp_check(tollgate::doctor::run(&doctor_settings, None).await), tollgate::doctor::Status::Fail);
    let r = app.browser().form("/auth/reset", &[("email", "smtp@example.com")]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.headers.contains_key("retry-after") && r.text.contains("Sending email is unavailable"));
}
