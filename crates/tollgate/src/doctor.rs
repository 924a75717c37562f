//! `tollgate doctor` and `tollgate setup`: what going live needs, checked against the real
//! services with the same settings `serve` reads. Doctor only reads (and writes one expiring KV
//! key); setup creates or updates the Stripe webhook endpoint.

use serde::Serialize;
use serde_json::Value;

use tollgate_core::billing::events::TRACKED_EVENTS;
use tollgate_core::config::{AuthSettings, KvSettings, MailSettings, Settings, StripeSettings, ValueEncoding};
use tollgate_core::stripe::wire::{List, Price};
use tollgate_core::stripe::{StripeClient, StripeError, API_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Fail,
    /// Not checkable here (and not a failure): the detail says why.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    pub(crate) detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, detail: detail.into(), fix: None }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, status: Status::Skip, detail: detail.into(), fix: None }
    }
}

/// Whether every check passed (or could not apply).
pub(crate) fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// What the report adds up to. "Ready" only when every check ran and passed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Failed,
    /// No Stripe keys: the offline demo, which has nothing to go live with.
    OfflineDemo,
    /// Nothing failed, but this many checks could not run here.
    Unchecked(usize),
    Ready,
}

pub(crate) fn verdict(settings: &Settings, checks: &[Check]) -> Verdict {
    let skipped = checks.iter().filter(|c| c.status == Status::Skip).count();
    if !passed(checks) {
        Verdict::Failed
    } else if matches!(settings.stripe, StripeSettings::Emulator { .. }) {
        Verdict::OfflineDemo
    } else if skipped > 0 {
        Verdict::Unchecked(skipped)
    } else {
        Verdict::Ready
    }
}

impl Verdict {
    /// The report's last line.
    pub(crate) fn line(self) -> String {
        match self {
            Verdict::Failed => "Fix the failures above, then run `tollgate doctor` again.".into(),
            Verdict::OfflineDemo => {
                "Offline demo: nothing to check for going live (set STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, PLANS and PUBLIC_URL to check a live set-up).".into()
            }
            Verdict::Unchecked(n) => {
                format!("Nothing failed, but {n} check(s) could not run from here (skip, above): check those by hand before going live.")
            }
            Verdict::Ready => "Ready to go live.".into(),
        }
    }
}

/// The report as text: one line per check, the fix under a failure.
pub(crate) fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!("{mark}  {:<18} {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("      {:<18} fix: {fix}\n", ""));
        }
    }
    out
}

/// The webhook URL Stripe must call.
fn webhook_url(settings: &Settings) -> Option<String> {
    settings.public_url.as_ref().map(|u| format!("{u}/api/stripe-webhook"))
}

async fn endpoints(stripe: &StripeClient) -> Result<Vec<Value>, StripeError> {
    let list: List<Value> = stripe.get("/v1/webhook_endpoints", &[("limit", "100")]).await?;
    Ok(list.data)
}

/// The tracked events an endpoint does not listen to.
fn missing_events(endpoint: &Value) -> Vec<&'static str> {
    let enabled: Vec<&str> =
        endpoint["enabled_events"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if enabled.contains(&"*") {
        return Vec::new();
    }
    TRACKED_EVENTS.iter().copied().filter(|e| !enabled.contains(e)).collect()
}

/// Every check, in order. `stripe` is the client `serve` would use (`None` without keys).
/// How many `stripe:user:*` values the value-form check reads.
const VALUES_SAMPLED: usize = 500;

/// Which form the recipe's mappings in the KV are written in, against `KV_VALUE_ENCODING`.
async fn value_forms(kv: &dyn tollgate_core::kv::Kv, encoding: ValueEncoding) -> Check {
    use tollgate_core::billing::recipe::{read_customer_id, StringForm};
    let configured = match encoding {
        ValueEncoding::Raw => "raw",
        ValueEncoding::Json => "json",
    };
    let (mut raw, mut json, mut unreadable, mut cursor) = (0, 0, 0, String::new());
    while raw + json + unreadable < VALUES_SAMPLED {
        let Ok((keys, next)) = kv.scan_keys("stripe:user:", &cursor, 100).await else { break };
        for key in keys {
            match kv.get(&key).await.ok().flatten().as_deref().map(read_customer_id) {
                Some(Some((_, StringForm::Raw))) => raw += 1,
                Some(Some((_, StringForm::Json))) => json += 1,
                Some(None) => unreadable += 1,
                None => {}
            }
        }
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    let seen = format!("{raw} raw (cus_…), {json} JSON-encoded (\"cus_…\"), {unreadable} unreadable stripe:user:* values");
    let other = match encoding {
        ValueEncoding::Raw => json,
        ValueEncoding::Json => raw,
    };
    if unreadable > 0 {
        Check::fail("kv values", seen, "run `tollgate import` to repair them from Stripe")
    } else if other > 0 {
        let fix = format!(
            "set KV_VALUE_ENCODING to the form the other apps on this KV write, or run `tollgate import` to re-write them {configured}"
        );
        Check::fail("kv values", format!("{seen}; KV_VALUE_ENCODING={configured}"), fix)
    } else {
        Check::ok("kv values", format!("{seen}: KV_VALUE_ENCODING={configured} matches"))
    }
}

pub(crate) async fn run(settings: &Settings, stripe: Option<&StripeClient>) -> Vec<Check> {
    let live = matches!(&settings.stripe, StripeSettings::Remote { secret_key, .. } if secret_key.expose().contains("_live_"));
    let mut checks = vec![public_url(settings, live)];
    checks.extend(kv(settings).await);
    match stripe {
        None => checks.push(Check::skip("stripe", "no STRIPE_SECRET_KEY: the embedded emulator stands in (development only)")),
        Some(stripe) => checks.extend(stripe_account(settings, stripe, live).await),
    }
    checks.extend(clerk_and_mail(settings).await);
    checks
}

/// `PUBLIC_URL`: set, and https with live keys.
fn public_url(settings: &Settings, live: bool) -> Check {
    match (&settings.public_url, live) {
        (Some(url), true) if !url.starts_with("https://") => {
            Check::fail("public url", format!("{url} is not https with live keys"), "serve the app over https and set PUBLIC_URL=https://…")
        }
        (None, true) => Check::fail("public url", "PUBLIC_URL is not set", "set PUBLIC_URL to the https:// address users reach the app at"),
        (None, false) => Check::skip("public url", "PUBLIC_URL is not set: http://localhost is assumed (development)"),
        (Some(url), _) => Check::ok("public url", url.clone()),
    }
}

/// The KV takes a write and reads it back; its recipe values are in the form configured.
async fn kv(settings: &Settings) -> Vec<Check> {
    let kv = match tollgate_core::kv::open(&settings.kv, &tollgate_core::Clock::system()).await {
        Ok(kv) => kv,
        Err(e) => {
            let fix = match &settings.kv {
                KvSettings::Embedded { .. } => "stop the process holding the file (one process at a time), or check DATA_DIR / KV_URL",
                _ => "check KV_URL (and that Redis is reachable and the credentials right)",
            };
            return vec![Check::fail("kv", format!("cannot open: {e:#}"), fix)];
        }
    };
    let value = tollgate_core::random_token(16);
    let written = kv.set_expiring("tollgate:doctor", &value, std::time::Duration::from_secs(60)).await;
    let readable = match (written, kv.get("tollgate:doctor").await) {
        (Ok(()), Ok(Some(read))) if read == value => Check::ok("kv", "a write was read back"),
        (Err(e), _) | (_, Err(e)) => {
            Check::fail("kv", format!("unwritable: {e}"), "give Tollgate's KV user write access (Redis ACL) or a writable DATA_DIR")
        }
        _ => Check::fail("kv", "a write was not read back", "check that KV_URL names one Redis, not a read replica"),
    };
    vec![readable, value_forms(kv.as_ref(), settings.value_encoding).await]
}

/// The Stripe account: the key, every price offered, then the webhook endpoint. A step that
/// fails ends the list (what follows could not be checked).
async fn stripe_account(settings: &Settings, stripe: &StripeClient, live: bool) -> Vec<Check> {
    let mode = if live { "live" } else { "test" };
    let mut checks = Vec::new();
    match stripe.get::<List<Value>>("/v1/prices", &[("limit", "1")]).await {
        Ok(_) => checks.push(Check::ok("stripe key", format!("Stripe accepts the key ({mode} mode)"))),
        Err(e) => {
            checks.push(Check::fail(
                "stripe key",
                e.to_string(),
                "copy the secret key from Dashboard → Developers → API keys into STRIPE_SECRET_KEY",
            ));
            return checks;
        }
    }

    for price_id in settings.plans.iter().flatten() {
        checks.push(price(stripe, price_id, live).await);
    }
    checks.extend(webhook_endpoint(settings, stripe).await);
    checks
}

/// A price offered in `PLANS`: recurring, active, and of the keys' mode.
async fn price(stripe: &StripeClient, price_id: &tollgate_core::domain::PriceId, live: bool) -> Check {
    let mode = if live { "live" } else { "test" };
    match stripe.get::<Value>(&format!("/v1/prices/{price_id}"), &[]).await {
        Err(e) => Check::fail("price", format!("{price_id}: {e}"), format!("create the price in Stripe ({mode} mode) or fix PLANS")),
        Ok(price) => match serde_json::from_value::<Price>(price.clone()) {
            Err(e) => Check::fail("price", format!("{price_id}: unreadable ({e})"), "fix PLANS"),
            Ok(p) if p.recurring.is_none() => {
                Check::fail("price", format!("{price_id} is a one-time price"), "use a recurring price (monthly, yearly…) in PLANS")
            }
            Ok(p) if !p.active => {
                Check::fail("price", format!("{price_id} is archived"), "use an active price in PLANS, or unarchive it in the Dashboard")
            }
            Ok(_) if price["livemode"].as_bool() != Some(live) => Check::fail(
                "price",
                format!("{price_id} is not a {mode}-mode price"),
                format!("use the {mode}-mode price id (prices differ between test and live mode)"),
            ),
            Ok(_) => Check::ok("price", format!("{price_id}: recurring, active, {mode} mode")),
        },
    }
}

/// The endpoint for `PUBLIC_URL`: present, enabled, listening to every tracked event, on the pinned
/// version, and signing with `STRIPE_WEBHOOK_SECRET`.
async fn webhook_endpoint(settings: &Settings, stripe: &StripeClient) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(url) = webhook_url(settings) else {
        checks.push(Check::fail("webhook endpoint", "PUBLIC_URL is not set, so no endpoint URL can be checked", "set PUBLIC_URL"));
        return checks;
    };
    let endpoint = match endpoints(stripe).await {
        Err(e) => {
            checks.push(Check::fail(
                "webhook endpoint",
                format!("cannot list endpoints: {e}"),
                "give the key read access to webhook endpoints",
            ));
            return checks;
        }
        Ok(list) => list.into_iter().find(|e| e["url"] == url.as_str()),
    };
    let Some(endpoint) = endpoint else {
        checks.push(Check::fail(
            "webhook endpoint",
            format!("none for {url}"),
            "run `tollgate setup`, then set STRIPE_WEBHOOK_SECRET to the secret it prints",
        ));
        return checks;
    };
    let id = endpoint["id"].as_str().unwrap_or_default().to_string();
    checks.push(if endpoint["status"] != "enabled" {
        Check::fail("webhook endpoint", format!("{id} is disabled"), "run `tollgate setup` (it enables it)")
    } else {
        Check::ok("webhook endpoint", format!("{id} at {url}, enabled"))
    });
    let missing = missing_events(&endpoint);
    checks.push(if missing.is_empty() {
        Check::ok("webhook events", format!("listens to all {} tracked events", TRACKED_EVENTS.len()))
    } else {
        Check::fail("webhook events", format!("does not listen to {}", missing.join(", ")), "run `tollgate setup` (it adds them)")
    });
    checks.push(match endpoint["api_version"].as_str() {
        Some(v) if v == API_VERSION => Check::ok("webhook version", format!("{v}, as Tollgate pins")),
        other => Check::fail(
            "webhook version",
            format!("{} where Tollgate pins {API_VERSION}", other.unwrap_or("the account's default")),
            "delete the endpoint and run `tollgate setup` (an endpoint's version cannot be changed)",
        ),
    });

    // The signing secret, against a test delivery where the API offers one (the emulator does;
    // Stripe sends test events from its Dashboard only).
    let secret = match &settings.stripe {
        StripeSettings::Remote { webhook_secret, .. } => webhook_secret.expose().to_string(),
        StripeSettings::Emulator { .. } => String::new(),
    };
    checks.push(match stripe.post::<Value>(&format!("/_emulator/webhook_endpoints/{id}/test_delivery"), &[], None).await {
        Ok(test) => {
            let payload = test["payload"].as_str().unwrap_or_default();
            match tollgate_core::stripe::webhook::verify(payload.as_bytes(), test["signature"].as_str(), &secret, tollgate_core::unix_now())
            {
                Ok(()) => Check::ok("webhook secret", "STRIPE_WEBHOOK_SECRET verifies a test delivery"),
                Err(e) => Check::fail(
                    "webhook secret",
                    format!("a test delivery does not verify: {e}"),
                    "set STRIPE_WEBHOOK_SECRET to this endpoint's signing secret (Dashboard → Webhooks → the endpoint → Reveal)",
                ),
            }
        }
        Err(_) => {
            Check::skip("webhook secret", "Stripe sends no test delivery through its API: send one from the Dashboard and watch the log")
        }
    });
    checks
}

/// The checks that do not depend on Stripe: Clerk, SMTP.
async fn clerk_and_mail(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    if let AuthSettings::Clerk(clerk) = &settings.auth {
        checks.push(match &clerk.jwt_key {
            Some(_) => Check::ok("clerk", "CLERK_JWT_KEY is an RSA public key; tokens verify without fetching keys"),
            None => match crate::auth::clerk::backend::BackendApi::new(&clerk.api_url, clerk.secret_key.clone()).jwks().await {
                Ok(jwks) if !jwks.keys.is_empty() => {
                    Check::ok("clerk", format!("the Backend API gives {} signing key(s)", jwks.keys.len()))
                }
                Ok(_) => {
                    Check::fail("clerk", "the JWKS is empty", "check CLERK_SECRET_KEY belongs to the instance of CLERK_PUBLISHABLE_KEY")
                }
                Err(e) => Check::fail("clerk", e.to_string(), "check CLERK_SECRET_KEY (Dashboard → API keys) and CLERK_API_URL"),
            },
        });
    }
    if let MailSettings::Smtp { shown, .. } = &settings.mail {
        // The mailer `serve` would send with.
        let reachable = match tollgate_core::mail::Mailer::new(&settings.mail) {
            Ok(mailer) => mailer.reachable().await,
            Err(_) => false,
        };
        checks.push(match reachable {
            true => Check::ok("smtp", format!("{shown} answers")),
            false => Check::fail("smtp", format!("{shown} does not answer"), "check SMTP_URL (host, port, TLS, user and password)"),
        });
    } else {
        checks.push(Check::skip("smtp", "no SMTP_URL: account emails go to the local outbox (development only)"));
    }
    checks
}

/// What `setup` did, or would do with `--dry-run`.
#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub(crate) enum SetupOutcome {
    /// A new endpoint; its signing secret is shown this once.
    Created {
        id: String,
        secret: Option<String>,
    },
    Updated {
        id: String,
        changes: Vec<String>,
    },
    Unchanged {
        id: String,
    },
}

/// Create the webhook endpoint for `PUBLIC_URL/api/stripe-webhook` with exactly the tracked
/// events and the pinned version, or bring an existing one in line. Running it again changes
/// nothing.
pub(crate) async fn setup(settings: &Settings, stripe: &StripeClient, dry_run: bool) -> anyhow::Result<SetupOutcome> {
    let url = webhook_url(settings).ok_or_else(|| anyhow::anyhow!("PUBLIC_URL: set it to where users reach the app (https://…)"))?;
    let existing = endpoints(stripe).await?.into_iter().find(|e| e["url"] == url.as_str());
    let events: Vec<(&str, &str)> = TRACKED_EVENTS.iter().map(|e| ("enabled_events[]", *e)).collect();
    let Some(endpoint) = existing else {
        if dry_run {
            return Ok(SetupOutcome::Created { id: "(dry run)".into(), secret: None });
        }
        let mut form = events.clone();
        form.extend([("url", url.as_str()), ("api_version", API_VERSION), ("description", "Tollgate")]);
        let created: Value = stripe.post("/v1/webhook_endpoints", &form, None).await?;
        return Ok(SetupOutcome::Created {
            id: created["id"].as_str().unwrap_or_default().to_string(),
            secret: created["secret"].as_str().map(str::to_string),
        });
    };
    let id = endpoint["id"].as_str().unwrap_or_default().to_string();
    if endpoint["api_version"].as_str() != Some(API_VERSION) {
        anyhow::bail!(
            "endpoint {id} uses API version {} and Tollgate pins {API_VERSION}; an endpoint's version cannot be changed: \
             delete it in the Dashboard and run `tollgate setup` again",
            endpoint["api_version"].as_str().unwrap_or("(the account's default)")
        );
    }
    let enabled: Vec<&str> =
        endpoint["enabled_events"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut changes = Vec::new();
    let mut form: Vec<(&str, &str)> = Vec::new();
    let exact = enabled.len() == TRACKED_EVENTS.len() && TRACKED_EVENTS.iter().all(|e| enabled.contains(e));
    if !exact {
        changes.push(format!("enabled_events: {} → the {} tracked events", enabled.join(","), TRACKED_EVENTS.len()));
        form.extend(events);
    }
    if endpoint["status"] != "enabled" {
        changes.push("status: disabled → enabled".into());
        form.push(("disabled", "false"));
    }
    if changes.is_empty() {
        return Ok(SetupOutcome::Unchanged { id });
    }
    if !dry_run {
        let _: Value = stripe.post(&format!("/v1/webhook_endpoints/{id}"), &form, None).await?;
    }
    Ok(SetupOutcome::Updated { id, changes })
}
