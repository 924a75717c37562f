//! Settings from environment variables (and an optional `.env`), parsed once at start-up.
//! A bad value stops start-up with a message naming the variable; secrets never print.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::domain::{PlanFeatures, PriceId};

pub mod variables;

/// A secret value: usable, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `sent` is this secret. Digests are compared, so the time taken says nothing about it.
    pub fn equals(&self, sent: &str) -> bool {
        use sha2::{Digest, Sha256};
        Sha256::digest(sent.as_bytes()) == Sha256::digest(self.0.as_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub enum KvSettings {
    /// One redb file in `DATA_DIR` (the default).
    Embedded { path: PathBuf },
    /// `KV_URL=memory:` — nothing persists; for tests and demos.
    Memory,
    /// `KV_URL=redis[s]://[user:password@]host:port[/db]`, the store the Next.js recipe uses
    /// (Valkey too), or `redis[s]+cluster://[user:password@]host:port[,host:port…]` for a Redis
    /// Cluster. `shown` is the URL with its password replaced, for printing.
    Redis { url: Secret, shown: String, ca_file: Option<PathBuf> },
}

/// `rediss://user:pass@host/0` → `rediss://user:[redacted]@host/0`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // No scheme: only a `user:password@` part could hold a secret.
        return if url.contains('@') { "[redacted]".into() } else { url.to_string() };
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or("");
            format!("{scheme}://{user}:[redacted]@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub enum StripeSettings {
    /// No `STRIPE_SECRET_KEY`: run the Stripe emulator in-process on this port (0 = any free port),
    /// keeping its state in `data_file` (in `DATA_DIR`; none with `KV_URL=memory:`).
    Emulator {
        port: u16,
        data_file: Option<PathBuf>,
    },
    Remote {
        secret_key: Secret,
        webhook_secret: Secret,
        api_base: String,
    },
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, and a line for every request (an access log).
    Json,
}

/// How account emails (verification, password reset) leave.
#[derive(Debug, Clone)]
pub enum MailSettings {
    /// No `SMTP_URL`: a local outbox, read at `/dev/outbox` (for development only).
    Outbox,
    /// `SMTP_URL=smtp[s]://[user:password@]host[:port]`, sent as `MAIL_FROM`. `shown` is the URL
    /// with its password replaced, for printing.
    Smtp { url: Secret, shown: String, from: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthSettings {
    Local,
    Clerk(ClerkSettings),
}

/// `AUTH_PROVIDER=clerk`: sessions are Clerk's; see `auth::clerk`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClerkSettings {
    pub publishable_key: String,
    /// The instance's Frontend API host, from the publishable key; tokens' `iss` is `https://` + it.
    pub frontend_api: String,
    pub secret_key: Secret,
    /// `CLERK_JWT_KEY`: the instance's public key (PEM), to verify without fetching the JWKS.
    pub jwt_key: Option<String>,
    /// `CLERK_AUTHORIZED_PARTIES`: the origins a token's `azp` may name; `None`: `PUBLIC_URL`'s origin.
    pub authorized_parties: Option<Vec<String>>,
    /// `CLERK_WEBHOOK_SECRET` (`whsec_…`): without it `/api/clerk-webhook` answers 404.
    pub webhook_secret: Option<Secret>,
    /// `CLERK_API_URL`: the Backend API base (the JWKS, users, sessions).
    pub api_url: String,
}

/// The Frontend API host a Clerk publishable key names: `pk_test_` or `pk_live_`, then base64 of
/// `host$` (padding optional).
pub fn clerk_frontend_api(publishable_key: &str) -> Option<String> {
    use base64::Engine;
    let encoded = publishable_key.strip_prefix("pk_test_").or_else(|| publishable_key.strip_prefix("pk_live_"))?;
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let host = text.strip_suffix('$').filter(|h| !h.contains('$'))?;
    let valid = host.contains('.') && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':');
    valid.then(|| host.to_string())
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub bind: IpAddr,
    /// Where users reach the app; `None` means `http://localhost:{bound port}`.
    pub public_url: Option<String>,
    pub kv: KvSettings,
    /// `KV_VALUE_ENCODING`: how the recipe's string values are written.
    pub value_encoding: ValueEncoding,
    pub stripe: StripeSettings,
    /// The prices offered, in display order; `None` in emulator mode means the seeded plans.
    pub plans: Option<Vec<PriceId>>,
    pub auth: AuthSettings,
    pub mail: MailSettings,
    /// Whether `past_due` still grants access (a grace period while Stripe retries the card).
    pub past_due_grace: bool,
    /// The free trial offered at Checkout (once per customer), if any.
    pub trial: Option<TrialSettings>,
    /// `PLAN_FEATURES`: what each plan unlocks, for `GATED_PATHS` prefixes that name a feature.
    pub plan_features: PlanFeatures,
    /// `ALLOW_PROMOTION_CODES`: Checkout shows a field for a promotion code.
    pub allow_promotion_codes: bool,
    /// `PLAN_LIMITS`: each plan's API quotas on `API_PATHS`.
    pub plan_limits: crate::domain::PlanLimits,
    /// `METERED_PATHS`: paths whose 2xx answers are counted and billed through Stripe's meters.
    pub metered_paths: Vec<MeteredPath>,
    /// `METERED_PRICES`: usage prices Checkout adds beside the plan (each bills a meter's usage).
    pub metered_prices: Vec<PriceId>,
    /// `METER_STREAM`: send usage through Stripe's v2 meter event stream.
    pub meter_stream: bool,
    /// `BILLING_SUBJECT`, `SEAT_PRICES`, `SEAT_PRORATION`, `SEATS_COUNT_INVITES`: who pays, and per-seat plans.
    pub teams: TeamSettings,
    /// Stripe requests per second for all instances together; `None`: no limit (the emulator).
    pub stripe_rate_limit: Option<u32>,
    /// How often one instance re-syncs every customer, healing what a lost webhook left behind.
    pub reconcile_every: Option<std::time::Duration>,
    /// How long after its period ended a cached subscription still grants access without a
    /// fresh read from Stripe.
    pub period_end_grace: std::time::Duration,
    /// A built-in account's session ends this long after it was last used.
    pub session_ttl: std::time::Duration,
    /// Which paths need an entitled user and how paths are read (gateway and forward-auth).
    pub gate: GateSettings,
    /// `UPSTREAM_URL`: run as a gateway in front of the product (`gateway`).
    pub gateway: Option<GatewaySettings>,
    /// `TRUSTED_PROXIES`: proxies whose `X-Forwarded-For` tells the client's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `MAX_HEADER_BYTES`: the most a request's head may take.
    pub max_header_bytes: usize,
    /// `KEEPALIVE_TIMEOUT`: how long a connection may wait, idle, for its next request.
    pub keepalive_timeout: std::time::Duration,
    /// `GATEWAY_AUDIENCE`: the assertion's `aud` (default: the upstream's origin, else `PUBLIC_URL`'s).
    pub gateway_audience: Option<String>,
    /// `SERVICE_TOKEN`: the bearer token of `GET /api/users/{id}/entitlement`.
    pub service_token: Option<Secret>,
    /// `GATEWAY_SECRET`: signs the `X-Tollgate-Assertion` JWT (HS256), in gateway and forward-auth answers.
    pub gateway_secret: Option<Secret>,
    /// `LOG_FORMAT`: `text` (the default) or `json`.
    pub log_format: LogFormat,
    /// `METRICS_ADDR`: serve `/metrics` on this address only, instead of on the main port.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `METRICS_TOKEN`: `/metrics` on the main port for `Authorization: Bearer` this token.
    pub metrics_token: Option<Secret>,
}

/// `SEAT_PRORATION`: how Stripe bills a seat count changed within a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeatProration {
    /// Prorated on the next invoice (Stripe's default).
    #[default]
    CreateProrations,
    /// Invoiced and charged at once.
    AlwaysInvoice,
    /// The new count from the next period on.
    None,
}

impl SeatProration {
    pub fn as_stripe(self) -> &'static str {
        match self {
            SeatProration::CreateProrations => "create_prorations",
            SeatProration::AlwaysInvoice => "always_invoice",
            SeatProration::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TeamSettings {
    pub billing_subject: crate::domain::BillingSubject,
    /// `SEAT_PRICES`: prices billed per member (as is a price whose `metadata.tollgate_seats` is `per_seat`).
    pub seat_prices: Vec<PriceId>,
    pub seat_proration: SeatProration,
    /// `SEATS_COUNT_INVITES`: pending invitations take a seat too.
    pub seats_count_invitations: bool,
}

/// How request paths are read and which need an entitled user (`gateway::path`).
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// `GATED_PATHS` (default `/app`; `/` gates the whole product).
    pub gated_paths: Vec<String>,
    /// The `GATED_PATHS` prefixes written `prefix:feature`: also the feature they need.
    pub feature_paths: Vec<(String, String)>,
    /// `OPEN_PATHS`: prefixes served to anyone even under a gated prefix (`/` is the root page alone).
    pub open_paths: Vec<String>,
    /// `API_PATHS`: the product's API (gated too), where an API key identifies the caller.
    pub api_paths: Vec<String>,
    /// `GATED_PATHS_CASE_INSENSITIVE`: the product routes `/APP` as `/app`.
    pub case_insensitive: bool,
    /// `GATEWAY_ALLOW_ENCODED_SLASH`: `%2F` is forwarded as it came (and decided on decoded).
    pub allow_encoded_slash: bool,
    /// `FORWARD_AUTH_TRUST_URI`: `/auth/verify` decides on the proxy's `X-Forwarded-Uri` /
    /// `X-Original-URI` (otherwise every path it is asked about is gated).
    pub trust_forwarded_uri: bool,
}

/// The free trial Checkout offers (`TRIAL_DAYS`), to a customer who never had one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialSettings {
    pub days: u32,
    /// `TRIAL_REQUIRES_CARD=false`: Checkout asks for a card only if the customer wants to give
    /// one, and a trial that ends without one ends as this says (`TRIAL_END_WITHOUT_CARD`).
    pub without_card: Option<TrialEnd>,
}

/// What a trial that ends without a card does: Stripe's `missing_payment_method`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrialEnd {
    Cancel,
    Pause,
}

impl TrialEnd {
    pub fn as_stripe(self) -> &'static str {
        match self {
            TrialEnd::Cancel => "cancel",
            TrialEnd::Pause => "pause",
        }
    }
}

/// How the recipe's string values (`stripe:user:{userId}` → `cus_…`) are written
/// (`KV_VALUE_ENCODING`); both forms are always read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ValueEncoding {
    /// As they are, as `@upstash/redis` and `@vercel/kv` write a string: `cus_…`.
    #[default]
    Raw,
    /// JSON-encoded, as wrappers that JSON-encode every value write it: `"cus_…"`.
    Json,
}

/// Which `Host` the product receives (`UPSTREAM_HOST`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpstreamHost {
    /// The browser's (the public host), as Caddy, Traefik and oauth2-proxy send it.
    Client,
    /// The upstream's own `host:port`.
    Upstream,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `http://host:port` of the product (no path).
    pub upstream: String,
    /// How long the product may take to start answering (`UPSTREAM_TIMEOUT`).
    pub timeout: std::time::Duration,
    /// `UPSTREAM_HOST`: which `Host` the product receives.
    pub host: UpstreamHost,
    /// `UPSTREAM_IDLE_TIMEOUT`: a WebSocket tunnel with no bytes either way for this long closes.
    pub idle_timeout: std::time::Duration,
    /// `WEBSOCKET_MAX_LIFETIME`: a tunnel closes after this long whatever it does.
    pub max_lifetime: std::time::Duration,
    /// `ENTITLEMENT_RECHECK`: how often a tunnel on a gated path checks that its user is still entitled.
    pub entitlement_recheck: std::time::Duration,
    /// `FORWARD_CLERK_SESSION`: Clerk's session cookies and token reach the product too.
    pub forward_clerk_session: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The variable at fault (an unknown one is named as it was given).
    pub variable: std::borrow::Cow<'static, str>,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { variable: variable.into(), message: message.into() }
}

/// Everything wrong with a configuration, reported at once (one line each).
#[derive(Debug, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Runs one section of the settings, keeping its error and going on, so that every mistake is
/// reported in one start.
#[derive(Default)]
struct Gathered(Vec<ConfigError>);

impl Gathered {
    fn take<T>(&mut self, section: Result<T, ConfigError>) -> Option<T> {
        section.map_err(|e| self.0.push(e)).ok()
    }
}

/// The variables in effect: the process environment over `.env` in the working directory (the
/// environment wins), each with its source.
pub fn environment() -> Result<variables::Environment, ConfigError> {
    Ok(variables::Environment::new(read_dotenv(std::path::Path::new(".env"))?, std::env::vars()))
}

impl Settings {
    /// The process environment over `.env` in the working directory (the environment wins). A
    /// variable that looks meant for Tollgate but is not its own stops start-up (a typo would
    /// otherwise be silent), unless `ALLOW_UNKNOWN_ENV=true`.
    pub fn from_env() -> Result<Settings, ConfigErrors> {
        Settings::from_environment(&environment()?)
    }

    pub fn from_environment(env: &variables::Environment) -> Result<Settings, ConfigErrors> {
        let vars = env.vars();
        let allow_unknown = flag(&|k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()), "ALLOW_UNKNOWN_ENV")?;
        let unknown: Vec<ConfigError> = if allow_unknown {
            Vec::new()
        } else {
            env.unknown()
                .into_iter()
                .map(|(name, meant)| {
                    let hint = meant.map(|m| format!("did you mean {m}? ")).unwrap_or_default();
                    let message =
                        format!("is not a Tollgate variable: {hint}(the README lists them; ALLOW_UNKNOWN_ENV=true ignores unknown ones)");
                    ConfigError { variable: name.into(), message }
                })
                .collect()
        };
        match (Settings::from_vars(&vars), unknown.is_empty()) {
            (Ok(settings), true) => Ok(settings),
            (Ok(_), false) => Err(ConfigErrors(unknown)),
            (Err(ConfigErrors(errors)), _) => Err(ConfigErrors(unknown.into_iter().chain(errors).collect())),
        }
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Settings, ConfigErrors> {
        let get = |k: &str| {
            debug_assert!(variables::variable(k).is_some(), "{k} is read but not listed in config::variables");
            vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
        };
        // Names of choices are matched in any case.
        let lower = |k: &str| get(k).map(str::to_ascii_lowercase);
        let mut gathered = Gathered::default();
        let port = gathered.take(match get("PORT") {
            None => Ok(3000),
            Some(v) => v.parse().map_err(|_| error("PORT", format!("'{v}' is not a port number (0-65535)"))),
        });
        let bind = gathered.take(match get("BIND") {
            None => Ok(IpAddr::from([127, 0, 0, 1])),
            Some(v) => v.parse().map_err(|_| error("BIND", format!("'{v}' is not an IP address like 127.0.0.1 or 0.0.0.0"))),
        });
        let public_url = gathered.take(match get("PUBLIC_URL") {
            None => Ok(None),
            Some(v) if (v.starts_with("http://") || v.starts_with("https://")) && v.len() > 8 && !v.contains(char::is_whitespace) => {
                Ok(Some(v.trim_end_matches('/').to_string()))
            }
            Some(v) => Err(error("PUBLIC_URL", format!("'{v}' is not an http:// or https:// URL like https://app.example.com"))),
        });
        let https = public_url.as_ref().is_some_and(|u| u.as_deref().is_some_and(|u| u.starts_with("https://")));
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or("./data"));
        let kv = gathered.take(kv_settings(&get, &data_dir));
        let value_encoding = gathered.take(match lower("KV_VALUE_ENCODING").as_deref() {
            None | Some("raw") => Ok(ValueEncoding::Raw),
            Some("json") => Ok(ValueEncoding::Json),
            Some(v) => Err(error("KV_VALUE_ENCODING", format!("'{v}' is not raw or json"))),
        });
        let emulator_allowed = gathered.take(flag(&get, "STRIPE_EMULATOR"));
        let stripe = gathered.take(match get("STRIPE_SECRET_KEY") {
            // A public https site without Stripe keys is a deployment that forgot them: it would take
            // "payments" on the emulator. Only an explicit STRIPE_EMULATOR=true allows it.
            None if https && emulator_allowed == Some(false) => Err(error(
                "STRIPE_SECRET_KEY",
                "is required when PUBLIC_URL is https (set STRIPE_EMULATOR=true to run the emulator there on purpose)",
            )),
            None if !cfg!(feature = "emulator") => Err(error(
                "STRIPE_SECRET_KEY",
                "is required: this build has no embedded Stripe emulator (run the stripe-emulator binary and set STRIPE_API_BASE to use one)",
            )),
            None => match get("STRIPE_EMULATOR_PORT").map(str::parse).transpose() {
                Err(_) => Err(error("STRIPE_EMULATOR_PORT", format!("'{}' is not a port number (0-65535)", get("STRIPE_EMULATOR_PORT").unwrap_or("")))),
                Ok(port) => {
                    let data_file = (!matches!(kv, Some(KvSettings::Memory))).then(|| data_dir.join("stripe-emulator.jsonl"));
                    Ok(StripeSettings::Emulator { port: port.unwrap_or(12111), data_file })
                }
            },
            Some(key) => remote_stripe_settings(key, &get),
        });
        let plans = gathered.take(match get("PLANS") {
            None if get("STRIPE_SECRET_KEY").is_some() => {
                Err(error("PLANS", "is required with STRIPE_SECRET_KEY: the price ids to offer, comma-separated, or a file of them"))
            }
            None => Ok(None),
            Some(v) => parse_plans(v).map(Some),
        });
        let auth = match lower("AUTH_PROVIDER").as_deref() {
            None | Some("local") => Some(AuthSettings::Local),
            Some("clerk") => {
                // Both keys are named when both are missing.
                let missing: Vec<ConfigError> = ["CLERK_PUBLISHABLE_KEY", "CLERK_SECRET_KEY"]
                    .into_iter()
                    .filter(|name| get(name).is_none())
                    .map(|name| {
                        error(
                            name,
                            "is required with AUTH_PROVIDER=clerk (the Dashboard's API keys: pk_test_…/pk_live_…, sk_test_…/sk_live_…)",
                        )
                    })
                    .collect();
                if missing.is_empty() {
                    gathered.take(clerk_settings(&get).map(AuthSettings::Clerk))
                } else {
                    gathered.0.extend(missing);
                    if get("CLERK_PUBLISHABLE_KEY").is_some_and(|key| clerk_frontend_api(key).is_none()) {
                        gathered.0.push(error("CLERK_PUBLISHABLE_KEY", NOT_A_PUBLISHABLE_KEY));
                    }
                    None
                }
            }
            Some(v) => gathered.take(Err(error("AUTH_PROVIDER", format!("'{v}' is not a provider (local or clerk)")))),
        };
        let outbox_allowed = gathered.take(flag(&get, "MAIL_OUTBOX"));
        let mail = gathered.take(match get("SMTP_URL") {
            // Links that sign people in must not sit in a page anyone can open on a public site.
            None if https && outbox_allowed == Some(false) => Err(error(
                "SMTP_URL",
                "is required when PUBLIC_URL is https (set MAIL_OUTBOX=true to keep the local outbox there on purpose)",
            )),
            None => Ok(MailSettings::Outbox),
            Some(url) => smtp_settings(url, &get),
        });
        let teams = gathered.take(team_settings(&get));
        let plan_limits = gathered.take(plan_limits(&get));
        let metered_paths = gathered.take(metered_paths(&get));
        let past_due_grace = gathered.take(flag(&get, "PAST_DUE_GRACE"));
        let trial = gathered.take(trial_settings(&get));
        let stripe_rate_limit = gathered.take(match lower("STRIPE_RATE_LIMIT").as_deref() {
            // Under Stripe's own limits (live 100/s, test mode 25/s), leaving room for other clients.
            None => Ok(match get("STRIPE_SECRET_KEY") {
                None => None,
                Some(key) if key.contains("_live_") => Some(90),
                Some(_) => Some(20),
            }),
            Some("0") | Some("off") => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n <= 10_000 => Ok(Some(n)),
                _ => Err(error("STRIPE_RATE_LIMIT", format!("'{v}' must be requests per second (1-10000), or off"))),
            },
        });
        // `30m`, `6h`, `1d` …; absent: `None`.
        let interval = |name: &'static str| -> Result<Option<std::time::Duration>, ConfigError> {
            get(name)
                .map(|v| {
                    parse_interval(v)
                        .ok_or_else(|| error(name, format!("'{v}' is not an interval of at least a minute, like 30m, 6h or 1d")))
                })
                .transpose()
        };
        let reconcile_every = gathered.take(match lower("RECONCILE_INTERVAL").as_deref() {
            Some("0") | Some("off") => Ok(None),
            _ => interval("RECONCILE_INTERVAL"),
        });
        let period_end_grace = gathered.take(interval("PERIOD_END_GRACE").map(|d| d.unwrap_or(std::time::Duration::from_secs(86_400))));
        let session_ttl = gathered.take(interval("SESSION_TTL").map(|d| d.unwrap_or(std::time::Duration::from_secs(30 * 86_400))));
        let gate = gathered.take(gate_settings(&get));
        let plan_features = gathered.take(plan_features(&get, gate.as_ref()));
        let allow_promotion_codes = gathered.take(flag(&get, "ALLOW_PROMOTION_CODES"));
        let meter_stream = gathered.take(flag(&get, "METER_STREAM"));
        let metered_prices = gathered.take(
            get("METERED_PRICES")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| PriceId::parse(p).map_err(|e| error("METERED_PRICES", e.to_string())))
                .collect::<Result<Vec<_>, _>>(),
        );
        let gateway = gathered.take(get("UPSTREAM_URL").map(|url| gateway_settings(url, &get)).transpose());
        let trusted_proxies = gathered.take(match get("TRUSTED_PROXIES") {
            None => Ok(Vec::new()),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|cidr| !cidr.is_empty())
                .map(|cidr| {
                    cidr.parse::<ipnet::IpNet>()
                        .or_else(|_| cidr.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map(|net| net.trunc())
                        .map_err(|_| error("TRUSTED_PROXIES", format!("'{cidr}' is not an address or CIDR like 10.0.0.0/8")))
                })
                .collect(),
        });
        let max_header_bytes = gathered.take(match get("MAX_HEADER_BYTES") {
            None => Ok(64 * 1024),
            Some(v) => match parse_bytes(v) {
                Some(bytes) if (8 * 1024..=1024 * 1024).contains(&bytes) => Ok(bytes),
                _ => Err(error("MAX_HEADER_BYTES", format!("'{v}' must be a size from 8KiB to 1MiB, like 64KiB"))),
            },
        });
        let keepalive_timeout = gathered.take(match get("KEEPALIVE_TIMEOUT") {
            None => Ok(std::time::Duration::from_secs(75)),
            Some(v) => parse_duration(v)
                .filter(|d| (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(d))
                .ok_or_else(|| error("KEEPALIVE_TIMEOUT", format!("'{v}' must be a duration from 1s to 1h, like 75s"))),
        });
        let gateway_audience = get("GATEWAY_AUDIENCE").map(str::to_string);
        let long_secret = |name: &'static str| match get(name) {
            Some(secret) if secret.len() < 32 => {
                Err(error(name, format!("is {} characters long: it must be at least 32 (openssl rand -hex 32)", secret.chars().count())))
            }
            secret => Ok(secret.map(Secret::new)),
        };
        let service_token = gathered.take(long_secret("SERVICE_TOKEN"));
        let gateway_secret = gathered.take(long_secret("GATEWAY_SECRET"));
        let log_format = gathered.take(match lower("LOG_FORMAT").as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(v) => Err(error("LOG_FORMAT", format!("'{v}' is not text or json"))),
        });
        let metrics_addr = gathered.take(match get("METRICS_ADDR") {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| error("METRICS_ADDR", format!("'{v}' is not an address like 127.0.0.1:9100"))),
        });
        let metrics_token = gathered.take(long_secret("METRICS_TOKEN"));
        let settings = (|| {
            Some(Settings {
                port: port?,
                bind: bind?,
                public_url: public_url?,
                kv: kv?,
                value_encoding: value_encoding?,
                stripe: stripe?,
                plans: plans?,
                auth: auth?,
                mail: mail?,
                past_due_grace: past_due_grace?,
                trial: trial?,
                plan_features: plan_features?,
                allow_promotion_codes: allow_promotion_codes?,
                teams: teams?,
                plan_limits: plan_limits?,
                metered_paths: metered_paths?,
                metered_prices: metered_prices?,
                meter_stream: meter_stream?,
                stripe_rate_limit: stripe_rate_limit?,
                reconcile_every: reconcile_every?,
                period_end_grace: period_end_grace?,
                session_ttl: session_ttl?,
                gateway: gateway?,
                service_token: service_token?,
                gateway_secret: gateway_secret?,
                log_format: log_format?,
                metrics_addr: metrics_addr?,
                metrics_token: metrics_token?,
                gate: gate?,
                trusted_proxies: trusted_proxies?,
                max_header_bytes: max_header_bytes?,
                keepalive_timeout: keepalive_timeout?,
                gateway_audience,
            })
        })();
        match settings {
            Some(settings) if gathered.0.is_empty() => Ok(settings),
            _ => Err(ConfigErrors(gathered.0)),
        }
    }
}

/// `KV_URL=redis+cluster://[user:password@]host:port[,host:port…]` (or `rediss+cluster://`, TLS;
/// `valkey+cluster://`, `valkeys+cluster://`): one `redis[s]://` URL per seed node, the
/// credentials on each. `None` when `url` is not a cluster URL.
pub fn redis_cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = url.split_once("+cluster://")?;
    let scheme = match scheme {
        "redis" | "valkey" => "redis",
        "rediss" | "valkeys" => "rediss",
        _ => return None,
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), rest),
    };
    // A cluster has one database: no `/db`.
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains('/') {
        return Some(Err("a cluster URL has no database number (a cluster has only database 0)".into()));
    }
    if hosts.split(',').any(|host| host.trim().is_empty()) {
        return Some(Err("lists an empty node: write host:port[,host:port…]".into()));
    }
    Some(Ok(hosts.split(',').map(|host| format!("{scheme}://{userinfo}{}", host.trim())).collect()))
}

fn kv_settings<'v>(get: &impl Fn(&str) -> Option<&'v str>, data_dir: &std::path::Path) -> Result<KvSettings, ConfigError> {
    Ok(match get("KV_URL") {
        None => KvSettings::Embedded { path: data_dir.join("tollgate.redb") },
        Some("memory:") => KvSettings::Memory,
        Some(v) if ["redis://", "rediss://", "valkey://", "valkeys://"].iter().any(|s| v.starts_with(s)) || redis_cluster_nodes(v).is_some() => {
            use redis::IntoConnectionInfo;
            let not_redis = |e: String| error("KV_URL", format!("'{}' is not a Redis URL: {e}", redact_url(v)));
            // A cluster's seed nodes, or the one node. The crate's own message never contains the password.
            let nodes = redis_cluster_nodes(v).unwrap_or_else(|| Ok(vec![v.to_string()])).map_err(not_redis)?;
            for node in nodes {
                node.as_str().into_connection_info().map_err(|e| not_redis(e.to_string()))?;
            }
            let ca_file = get("KV_TLS_CA_FILE").map(PathBuf::from);
            if let Some(path) = ca_file.as_ref().filter(|p| !p.is_file()) {
                return Err(error("KV_TLS_CA_FILE", format!("'{}' is not a readable file", path.display())));
            }
            KvSettings::Redis { url: Secret::new(v), shown: redact_url(v), ca_file }
        }
        Some(v) if v.starts_with("redb:") => KvSettings::Embedded { path: PathBuf::from(&v["redb:".len()..]) },
        // `localhost:6379`, `cache.internal:6379`: a Redis address without its scheme.
        Some(v) if !v.contains("://") && v.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) => {
            let meant = redact_url(&format!("redis://{v}"));
            return Err(error(
                "KV_URL",
                format!("'{}' has no scheme: write {meant} (or rediss:// for TLS)", meant.trim_start_matches("redis://")),
            ));
        }
        Some(v) => {
            return Err(error(
                "KV_URL",
                format!(
                    "'{}' is not supported: use redis[s]://host:port, redis[s]+cluster://host:port[,host:port…], redb:/path/file.redb or memory:",
                    redact_url(v)
                ),
            ))
        }
    })
}

/// `STRIPE_SECRET_KEY` is set: real Stripe (or a Stripe-compatible API at `STRIPE_API_BASE`).
fn remote_stripe_settings<'v>(key: &str, get: &impl Fn(&str) -> Option<&'v str>) -> Result<StripeSettings, ConfigError> {
    let kinds = "sk_test_…, sk_live_…, rk_test_… or rk_live_… (Dashboard → Developers → API keys)";
    // The value is a secret: only its first characters are ever shown.
    let start: String = key.chars().take(3).collect();
    if key.starts_with(['"', '\'']) || key.ends_with(['"', '\'']) {
        return Err(error("STRIPE_SECRET_KEY", format!("is wrapped in quotes: remove them (expected {kinds})")));
    } else if key.starts_with("pk_") {
        return Err(error("STRIPE_SECRET_KEY", format!("is a publishable key (pk_…): use the secret key, {kinds}")));
    } else if !(key.starts_with("sk_") || key.starts_with("rk_")) {
        return Err(error("STRIPE_SECRET_KEY", format!("starts '{start}…', which is not a Stripe secret key: expected {kinds}")));
    }
    let webhook_secret = get("STRIPE_WEBHOOK_SECRET")
        .ok_or_else(|| error("STRIPE_WEBHOOK_SECRET", "is required when STRIPE_SECRET_KEY is set (whsec_… of your webhook endpoint)"))?;
    if !webhook_secret.starts_with("whsec_") {
        return Err(error("STRIPE_WEBHOOK_SECRET", "is not a webhook signing secret: expected whsec_…"));
    }
    let api_base = get("STRIPE_API_BASE").unwrap_or("https://api.stripe.com").trim_end_matches('/').to_string();
    if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
        return Err(error("STRIPE_API_BASE", format!("'{api_base}' is not an http:// or https:// URL")));
    }
    Ok(StripeSettings::Remote { secret_key: Secret::new(key), webhook_secret: Secret::new(webhook_secret), api_base })
}

fn smtp_settings<'v>(url: &str, get: &impl Fn(&str) -> Option<&'v str>) -> Result<MailSettings, ConfigError> {
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let shown = redact_url(url);
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err(error("SMTP_URL", format!("'{shown}' must be an smtp:// or smtps:// URL")));
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|_| error("SMTP_URL", format!("'{shown}' is not an SMTP URL (smtps://user:password@host:465)")))?;
    let from = get("MAIL_FROM").ok_or_else(|| error("MAIL_FROM", "is required when SMTP_URL is set"))?;
    from.parse::<lettre::message::Mailbox>()
        .map_err(|_| error("MAIL_FROM", format!("'{from}' is not an address like Example <no-reply@example.com>")))?;
    Ok(MailSettings::Smtp { url: Secret::new(url), shown, from: from.to_string() })
}

fn gateway_settings<'v>(url: &str, get: &impl Fn(&str) -> Option<&'v str>) -> Result<GatewaySettings, ConfigError> {
    let upstream = url.trim_end_matches('/');
    let authority = upstream.strip_prefix("http://").ok_or_else(|| {
        error(
            "UPSTREAM_URL",
            format!("'{url}' must be an http:// URL (Tollgate speaks plain HTTP to the product beside it; TLS ends in front of Tollgate)"),
        )
    })?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) || upstream.parse::<http::Uri>().is_err() {
        return Err(error("UPSTREAM_URL", format!("'{url}' must be http://host[:port], without a path")));
    }
    let timeout = match get("UPSTREAM_TIMEOUT") {
        None => std::time::Duration::from_secs(20),
        Some(v) => match v.trim_end_matches('s').parse::<u64>() {
            Ok(seconds) if (1..=24).contains(&seconds) => std::time::Duration::from_secs(seconds),
            _ => return Err(error("UPSTREAM_TIMEOUT", format!("'{v}' must be seconds from 1 to 24 (within the 25 s request deadline)"))),
        },
    };
    let host = match get("UPSTREAM_HOST").map(str::to_ascii_lowercase).as_deref() {
        None | Some("client") => UpstreamHost::Client,
        Some("upstream") => UpstreamHost::Upstream,
        Some(v) => return Err(error("UPSTREAM_HOST", format!("'{v}' is not client or upstream"))),
    };
    let duration = |name: &'static str, default: u64, least: std::time::Duration| -> Result<std::time::Duration, ConfigError> {
        match get(name) {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(v) => parse_duration(v)
                .filter(|d| *d >= least)
                .ok_or_else(|| error(name, format!("'{v}' is not a duration of at least {least:?}, like 30s, 5m or 24h"))),
        }
    };
    let second = std::time::Duration::from_secs(1);
    Ok(GatewaySettings {
        upstream: upstream.to_string(),
        timeout,
        host,
        idle_timeout: duration("UPSTREAM_IDLE_TIMEOUT", 300, second)?,
        max_lifetime: duration("WEBSOCKET_MAX_LIFETIME", 86_400, second)?,
        entitlement_recheck: duration("ENTITLEMENT_RECHECK", 60, std::time::Duration::from_millis(100))?,
        forward_clerk_session: flag(get, "FORWARD_CLERK_SESSION")?,
    })
}

/// `TRIAL_DAYS`, `TRIAL_REQUIRES_CARD` and `TRIAL_END_WITHOUT_CARD`.
fn trial_settings<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<Option<TrialSettings>, ConfigError> {
    let days = match get("TRIAL_DAYS") {
        None | Some("0") => None,
        Some(v) => match v.parse::<u32>() {
            Ok(d) if (1..=730).contains(&d) => Some(d),
            _ => return Err(error("TRIAL_DAYS", format!("'{v}' must be a whole number of days from 1 to 730"))),
        },
    };
    let requires_card = match get("TRIAL_REQUIRES_CARD") {
        None => true,
        Some(_) => flag(get, "TRIAL_REQUIRES_CARD")?,
    };
    let end = match get("TRIAL_END_WITHOUT_CARD").map(str::to_ascii_lowercase).as_deref() {
        None | Some("cancel") => TrialEnd::Cancel,
        Some("pause") => TrialEnd::Pause,
        Some(v) => return Err(error("TRIAL_END_WITHOUT_CARD", format!("'{v}' is not cancel or pause"))),
    };
    match days {
        None if !requires_card => Err(error("TRIAL_REQUIRES_CARD", "false needs TRIAL_DAYS: there is no trial to start without a card")),
        None => Ok(None),
        Some(days) => Ok(Some(TrialSettings { days, without_card: (!requires_card).then_some(end) })),
    }
}

/// `true`/`false` (or `1`/`0`, any case); unset is false.
/// A metered path prefix and the meter event it counts as (`METERED_PATHS`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeteredPath {
    pub prefix: String,
    pub event_name: String,
}

/// `METERED_PATHS=/api/v1:api_requests,/api/v2/chat:tokens` (path prefix → meter event name).
fn metered_paths<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<Vec<MeteredPath>, ConfigError> {
    let mut paths = Vec::new();
    for entry in get("METERED_PATHS").unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || error("METERED_PATHS", format!("'{entry}' is not /path:meter_event_name"));
        let (prefix, event) = entry.split_once(':').ok_or_else(bad)?;
        let plain =
            prefix.starts_with('/') && !prefix.contains("//") && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        let event_ok = (1..=100).contains(&event.len()) && event.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !plain || !event_ok {
            return Err(bad());
        }
        paths.push(MeteredPath { prefix: prefix.trim_end_matches('/').to_string(), event_name: event.to_string() });
    }
    Ok(paths)
}

/// `PLAN_LIMITS=price_basic:60/min,10000/month;price_pro:600/min`.
fn plan_limits<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<crate::domain::PlanLimits, ConfigError> {
    let mut by_price = std::collections::BTreeMap::new();
    for entry in get("PLAN_LIMITS").unwrap_or("").split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (price, limits) =
            entry.split_once(':').ok_or_else(|| error("PLAN_LIMITS", format!("'{entry}' is not price_…:60/min,10000/month")))?;
        let price = PriceId::parse(price.trim()).map_err(|e| error("PLAN_LIMITS", e.to_string()))?;
        let limits = crate::domain::Limits::parse(limits).map_err(|e| error("PLAN_LIMITS", e.to_string()))?;
        by_price.insert(price.to_string(), limits);
    }
    Ok(crate::domain::PlanLimits { by_price })
}

fn team_settings<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<TeamSettings, ConfigError> {
    let lower = |name: &str| get(name).map(str::to_ascii_lowercase);
    let billing_subject = match lower("BILLING_SUBJECT").as_deref() {
        None | Some("user") => crate::domain::BillingSubject::User,
        Some("organization") | Some("organisation") | Some("org") => crate::domain::BillingSubject::Organization,
        Some("both") => crate::domain::BillingSubject::Both,
        Some(v) => return Err(error("BILLING_SUBJECT", format!("'{v}' is not user, organization or both"))),
    };
    let seat_proration = match lower("SEAT_PRORATION").as_deref() {
        None | Some("create_prorations") => SeatProration::CreateProrations,
        Some("always_invoice") => SeatProration::AlwaysInvoice,
        Some("none") => SeatProration::None,
        Some(v) => return Err(error("SEAT_PRORATION", format!("'{v}' is not create_prorations, always_invoice or none"))),
    };
    let seat_prices = get("SEAT_PRICES")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| PriceId::parse(p).map_err(|e| error("SEAT_PRICES", e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(TeamSettings { billing_subject, seat_prices, seat_proration, seats_count_invitations: flag(get, "SEATS_COUNT_INVITES")? })
}

fn flag<'v>(get: &impl Fn(&str) -> Option<&'v str>, name: &'static str) -> Result<bool, ConfigError> {
    match get(name).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(error(name, format!("'{v}' is not true or false"))),
    }
}

/// `GATED_PATHS`, `OPEN_PATHS` and how paths are read. Each prefix must be a plain canonical path
/// (no escapes, dot segments, `;` or doubled slashes): it is compared with canonical paths.
fn gate_settings<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<GateSettings, ConfigError> {
    // Each entry `prefix`, or (in GATED_PATHS) `prefix:feature`; every prefix a plain canonical path.
    let prefixes = |name: &'static str, default: &str| -> Result<Vec<(String, Option<String>)>, ConfigError> {
        let plain = |p: &str| {
            p.starts_with('/')
                && !p.contains("//")
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
                && !p.split('/').any(|s| s == "." || s == "..")
        };
        let entries = get(name).unwrap_or(default).split(',').map(str::trim).filter(|p| !p.is_empty());
        entries
            .map(|entry| {
                let (prefix, feature) = match entry.split_once(':') {
                    Some((prefix, feature)) if name == "GATED_PATHS" && is_feature_name(feature) => (prefix, Some(feature.to_string())),
                    Some(_) => {
                        return Err(error(name, format!("'{entry}' is not a path prefix, or a prefix and a feature (/app/export:export)")))
                    }
                    None => (entry, None),
                };
                if !plain(prefix) {
                    return Err(error(name, format!("'{prefix}' is not a path prefix like /app (letters, digits, - . _ ~ and /)")));
                }
                Ok((if prefix == "/" { prefix.to_string() } else { prefix.trim_end_matches('/').to_string() }, feature))
            })
            .collect()
    };
    let gated = prefixes("GATED_PATHS", "/app")?;
    Ok(GateSettings {
        feature_paths: gated.iter().filter_map(|(prefix, feature)| Some((prefix.clone(), feature.clone()?))).collect(),
        gated_paths: gated.into_iter().map(|(prefix, _)| prefix).collect(),
        open_paths: prefixes("OPEN_PATHS", "")?.into_iter().map(|(prefix, _)| prefix).collect(),
        api_paths: prefixes("API_PATHS", "/api/v1")?.into_iter().map(|(prefix, _)| prefix).collect(),
        case_insensitive: flag(get, "GATED_PATHS_CASE_INSENSITIVE")?,
        allow_encoded_slash: flag(get, "GATEWAY_ALLOW_ENCODED_SLASH")?,
        trust_forwarded_uri: flag(get, "FORWARD_AUTH_TRUST_URI")?,
    })
}

/// A feature's name (a Stripe feature's `lookup_key` style): letters, digits, `-`, `_` and `.`,
/// at most 80; it travels in a header (`X-Tollgate-Features`), comma-separated.
fn is_feature_name(name: &str) -> bool {
    (1..=80).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `PLAN_FEATURES=price_basic:export;price_pro:export,sso`, checked against `GATED_PATHS`: a
/// prefix may only need a feature some plan has.
fn plan_features<'v>(get: &impl Fn(&str) -> Option<&'v str>, gate: Option<&GateSettings>) -> Result<PlanFeatures, ConfigError> {
    let from_stripe = match get("ENTITLEMENTS").map(str::to_ascii_lowercase).as_deref() {
        None | Some("config") => false,
        Some("stripe") if get("PLAN_FEATURES").is_some() => {
            return Err(error("PLAN_FEATURES", "is not used with ENTITLEMENTS=stripe, which reads each customer's features from Stripe"))
        }
        Some("stripe") => true,
        Some(v) => return Err(error("ENTITLEMENTS", format!("'{v}' is not config or stripe"))),
    };
    let mut plans = std::collections::BTreeMap::new();
    for entry in get("PLAN_FEATURES").unwrap_or("").split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once(':').and_then(|(price, features)| {
            let price = PriceId::parse(price.trim()).ok()?;
            let features: Vec<String> = features.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_string).collect();
            features.iter().all(|f| is_feature_name(f)).then_some((price, features))
        });
        let Some((price, features)) = parsed else {
            return Err(error("PLAN_FEATURES", format!("'{entry}' is not price_…:feature,feature (features: letters, digits, - _ .)")));
        };
        plans.insert(price.to_string(), features);
    }
    let features = PlanFeatures { by_price: plans, from_stripe };
    let needed = gate.into_iter().flat_map(|g| &g.feature_paths);
    if let Some((prefix, feature)) = needed.into_iter().find(|(_, feature)| !features.offers(feature)) {
        return Err(error("GATED_PATHS", format!("{prefix} needs the feature '{feature}', which no plan has in PLAN_FEATURES")));
    }
    Ok(features)
}

/// A number and the unit after it (`30m` → 30, `m`), the unit in lower case and maybe empty.
fn number_and_unit(value: &str) -> Option<(u64, String)> {
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    Some((number.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

/// `500ms`, `30s`, `5m`, `6h`, `1d`, or plain seconds.
fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let (number, unit) = number_and_unit(value)?;
    let per: u64 = match unit.as_str() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(per).map(std::time::Duration::from_millis)
}

/// `65536`, `64KiB` / `64k`, `1MiB` / `1m`.
fn parse_bytes(value: &str) -> Option<usize> {
    let (number, unit) = number_and_unit(value)?;
    let per: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(per).and_then(|bytes| usize::try_from(bytes).ok())
}

const NOT_A_PUBLISHABLE_KEY: &str = "is not a Clerk publishable key (pk_test_… or pk_live_… from the Dashboard's API keys)";

fn clerk_settings<'v>(get: &impl Fn(&str) -> Option<&'v str>) -> Result<ClerkSettings, ConfigError> {
    let required = |name: &'static str| get(name).ok_or_else(|| error(name, "is required with AUTH_PROVIDER=clerk"));
    let publishable_key = required("CLERK_PUBLISHABLE_KEY")?;
    let secret_key = required("CLERK_SECRET_KEY")?;
    let frontend_api = clerk_frontend_api(publishable_key).ok_or_else(|| error("CLERK_PUBLISHABLE_KEY", NOT_A_PUBLISHABLE_KEY))?;
    if !secret_key.starts_with("sk_") {
        return Err(error("CLERK_SECRET_KEY", "must be a Clerk secret key (sk_test_… or sk_live_…)"));
    }
    if publishable_key.starts_with("pk_live_") != secret_key.starts_with("sk_live_") {
        return Err(error("CLERK_SECRET_KEY", "is not of the same instance kind (test or live) as CLERK_PUBLISHABLE_KEY"));
    }
    // `.env` files often keep a PEM on one line with `\n` escapes.
    let jwt_key = get("CLERK_JWT_KEY").map(|pem| pem.replace("\\n", "\n"));
    if let Some(pem) = &jwt_key {
        jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| error("CLERK_JWT_KEY", "is not an RSA public key in PEM (Dashboard → API keys → JWT public key → PEM)"))?;
    }
    let authorized_parties = match get("CLERK_AUTHORIZED_PARTIES") {
        None => None,
        Some(list) => {
            let origins: Vec<String> =
                list.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).filter(|o| !o.is_empty()).collect();
            let is_origin = |o: &str| matches!(o.split_once("://"), Some(("http" | "https", host)) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']));
            if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
                return Err(error("CLERK_AUTHORIZED_PARTIES", format!("'{bad}' is not an origin like https://app.example.com")));
            }
            Some(origins)
        }
    };
    let webhook_secret = match get("CLERK_WEBHOOK_SECRET") {
        None => None,
        Some(secret) => {
            use base64::Engine;
            let key = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| error("CLERK_WEBHOOK_SECRET", "must be the endpoint's signing secret (whsec_ and base64)"))?;
            Some(Secret::new(secret))
        }
    };
    let api_url = get("CLERK_API_URL").unwrap_or("https://api.clerk.com").trim_end_matches('/').to_string();
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(error("CLERK_API_URL", "must be an http:// or https:// URL"));
    }
    Ok(ClerkSettings {
        publishable_key: publishable_key.to_string(),
        frontend_api,
        secret_key: Secret::new(secret_key),
        jwt_key,
        authorized_parties,
        webhook_secret,
        api_url,
    })
}

/// The variables of a `.env` file (dotenvy's syntax: quotes, escapes, comments, `${VAR}`), without
/// touching the process environment; none when there is no file.
pub fn read_dotenv(path: &std::path::Path) -> Result<HashMap<String, String>, ConfigError> {
    let lines = match dotenvy::from_path_iter(path) {
        Ok(lines) => lines,
        Err(e) if e.not_found() => return Ok(HashMap::new()),
        Err(e) => return Err(error(".env", e.to_string())),
    };
    lines.map(|line| line.map_err(|e| error(".env", e.to_string()))).collect()
}

/// `90s`, `30m`, `6h`, `1d` (at least a minute: a reconcile pass costs a Stripe call per customer).
fn parse_interval(value: &str) -> Option<std::time::Duration> {
    // A unit is required here (a bare number of what?).
    let interval = parse_duration(value).filter(|_| value.ends_with(['s', 'm', 'h', 'd']) && !value.ends_with("ms"))?;
    (interval.as_secs() >= 60).then_some(interval)
}

/// `PLANS`: `price_a,price_b`, or the path of a file holding ids separated by commas, spaces or lines.
fn parse_plans(value: &str) -> Result<Vec<PriceId>, ConfigError> {
    let text = if value.starts_with("price_") {
        value.to_string()
    } else {
        std::fs::read_to_string(value).map_err(|e| error("PLANS", format!("'{value}' is neither price ids nor a readable file: {e}")))?
    };
    let ids: Vec<PriceId> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| PriceId::parse(s).map_err(|e| error("PLANS", e.to_string())))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(error("PLANS", "lists no price"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_run_offline() {
        let s = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(s.port, 3000);
        assert!(matches!(s.stripe, StripeSettings::Emulator { port: 12111, .. }));
        assert!(matches!(s.kv, KvSettings::Embedded { .. }));
        assert_eq!(s.auth, AuthSettings::Local);
    }

    /// The table's defaults are the parser's: for every variable whose documented default is one
    /// literal value, setting that value changes nothing. Checked in the three set-ups that read
    /// different variables (offline, real Stripe, a gateway).
    #[test]
    fn the_tables_literal_defaults_are_the_defaults_in_effect() {
        let setups: [&[(&str, &str)]; 3] = [
            &[],
            &[("STRIPE_SECRET_KEY", "sk_test_1"), ("STRIPE_WEBHOOK_SECRET", "whsec_1"), ("PLANS", "price_1")],
            &[("UPSTREAM_URL", "http://127.0.0.1:9")],
        ];
        let mut checked = std::collections::BTreeSet::new();
        for setup in setups {
            let unset = format!("{:?}", Settings::from_vars(&vars(setup)).unwrap());
            for v in variables::VARIABLES {
                let literal = v.default.strip_prefix('`').and_then(|d| d.strip_suffix('`'));
                // `http://localhost:PORT` names another variable: not one literal value.
                let Some(literal) = literal.filter(|d| !d.contains('`') && !d.contains("PORT")) else { continue };
                let with_default = vars(&[setup, &[(v.name, literal)]].concat());
                let set = Settings::from_vars(&with_default).unwrap_or_else(|e| panic!("{}={literal}: {e}", v.name));
                assert_eq!(format!("{set:?}"), unset, "{} is documented as defaulting to `{literal}`, but from_vars differs", v.name);
                checked.insert(v.name);
            }
        }
        assert!(checked.len() >= 20, "only {checked:?} have literal defaults");
    }

    #[test]
    fn plan_features_and_the_paths_that_need_them() {
        let settings = Settings::from_vars(&vars(&[
            ("GATED_PATHS", "/app, /app/export:export ,/api/ai:ai-assistant"),
            ("PLAN_FEATURES", "price_basic:export; price_pro:export,ai-assistant,sso"),
        ]))
        .unwrap();
        assert_eq!(settings.gate.gated_paths, ["/app", "/app/export", "/api/ai"]);
        assert_eq!(
            settings.gate.feature_paths,
            [("/app/export".to_string(), "export".to_string()), ("/api/ai".into(), "ai-assistant".into())]
        );
        assert_eq!(settings.plan_features.of_price("price_pro"), ["export", "ai-assistant", "sso"]);
        assert_eq!(settings.plan_features.of_price("price_basic"), ["export"]);
        assert!(settings.plan_features.of_price("price_other").is_empty());
        let stripe = Settings::from_vars(&vars(&[("ENTITLEMENTS", "stripe"), ("GATED_PATHS", "/app/export:export")])).unwrap();
        assert!(stripe.plan_features.from_stripe && stripe.plan_features.offers("export"), "Stripe's features are not known ahead");
        let trial = Settings::from_vars(&vars(&[("TRIAL_DAYS", "7"), ("TRIAL_REQUIRES_CARD", "false")])).unwrap().trial;
        assert_eq!(trial, Some(TrialSettings { days: 7, without_card: Some(TrialEnd::Cancel) }));
        let trial = Settings::from_vars(&vars(&[("TRIAL_DAYS", "7")])).unwrap().trial;
        assert_eq!(trial, Some(TrialSettings { days: 7, without_card: None }), "a card by default");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, variable) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PUBLIC_URL", "localhost:3000")], "PUBLIC_URL"),
            (vec![("KV_URL", "mysql://x")], "KV_URL"),
            (vec![("STRIPE_SECRET_KEY", "pk_test_1")], "STRIPE_SECRET_KEY"),
            (vec![("STRIPE_SECRET_KEY", "sk_test_1")], "STRIPE_WEBHOOK_SECRET"),
            (vec![("STRIPE_SECRET_KEY", "sk_test_1"), ("STRIPE_WEBHOOK_SECRET", "whsec_1")], "PLANS"),
            (vec![("PLANS", "prod_x")], "PLANS"),
            (vec![("AUTH_PROVIDER", "ldap")], "AUTH_PROVIDER"),
            (vec![("TRIAL_DAYS", "-3")], "TRIAL_DAYS"),
            (vec![("TRIAL_REQUIRES_CARD", "false")], "TRIAL_REQUIRES_CARD"),
            (vec![("GATED_PATHS", "/app,/app/export:export")], "GATED_PATHS"),
            (vec![("GATED_PATHS", "/app/export:ex port")], "GATED_PATHS"),
            (vec![("OPEN_PATHS", "/docs:export")], "OPEN_PATHS"),
            (vec![("PLAN_FEATURES", "price_basic")], "PLAN_FEATURES"),
            (vec![("PLAN_FEATURES", "prod_x:export")], "PLAN_FEATURES"),
            (vec![("ENTITLEMENTS", "stripe"), ("PLAN_FEATURES", "price_x:export")], "PLAN_FEATURES"),
            (vec![("ENTITLEMENTS", "lago")], "ENTITLEMENTS"),
            (vec![("PLAN_FEATURES", "price_basic:export,two words")], "PLAN_FEATURES"),
            (vec![("TRIAL_DAYS", "7"), ("TRIAL_END_WITHOUT_CARD", "charge")], "TRIAL_END_WITHOUT_CARD"),
            (vec![("KV_URL", "redis://h/notadb")], "KV_URL"),
            (vec![("KV_URL", "redis+cluster://a:7000/1")], "KV_URL"),
            (vec![("KV_URL", "redis+cluster://a:7000,b:notaport")], "KV_URL"),
            (vec![("KV_URL", "rediss://h"), ("KV_TLS_CA_FILE", "/nonexistent/ca.pem")], "KV_TLS_CA_FILE"),
            (vec![("STRIPE_RATE_LIMIT", "fast")], "STRIPE_RATE_LIMIT"),
            (vec![("RECONCILE_INTERVAL", "5s")], "RECONCILE_INTERVAL"),
            (vec![("PUBLIC_URL", "https://app.example.com")], "STRIPE_SECRET_KEY"),
            (vec![("PERIOD_END_GRACE", "soon")], "PERIOD_END_GRACE"),
            (vec![("SESSION_TTL", "forever")], "SESSION_TTL"),
            (vec![("PUBLIC_URL", "https://demo.example.com"), ("STRIPE_EMULATOR", "true")], "SMTP_URL"),
            (vec![("SMTP_URL", "mail.example.com:25")], "SMTP_URL"),
            (vec![("UPSTREAM_URL", "https://product.internal")], "UPSTREAM_URL"),
            (vec![("UPSTREAM_URL", "http://product.internal/base")], "UPSTREAM_URL"),
            (vec![("UPSTREAM_URL", "http://product:8080"), ("GATED_PATHS", "app")], "GATED_PATHS"),
            (vec![("GATEWAY_SECRET", "short")], "GATEWAY_SECRET"),
            (vec![("UPSTREAM_URL", "http://product:8080"), ("UPSTREAM_TIMEOUT", "60")], "UPSTREAM_TIMEOUT"),
            (vec![("SERVICE_TOKEN", "short")], "SERVICE_TOKEN"),
            (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (vec![("METRICS_ADDR", "9100")], "METRICS_ADDR"),
            (vec![("AUTH_PROVIDER", "clerk")], "CLERK_PUBLISHABLE_KEY"),
            (vec![("AUTH_PROVIDER", "clerk"), ("CLERK_PUBLISHABLE_KEY", "pk_test_bm90IGEgaG9zdA")], "CLERK_PUBLISHABLE_KEY"),
            (vec![("AUTH_PROVIDER", "clerk"), ("CLERK_PUBLISHABLE_KEY", "sk_test_x")], "CLERK_PUBLISHABLE_KEY"),
            (vec![("AUTH_PROVIDER", "clerk"), ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY)], "CLERK_SECRET_KEY"),
            (
                vec![("AUTH_PROVIDER", "clerk"), ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY), ("CLERK_SECRET_KEY", "sk_live_1")],
                "CLERK_SECRET_KEY",
            ),
            (
                vec![
                    ("AUTH_PROVIDER", "clerk"),
                    ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY),
                    ("CLERK_SECRET_KEY", "sk_test_1"),
                    ("CLERK_JWT_KEY", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"),
                ],
                "CLERK_JWT_KEY",
            ),
            (
                vec![
                    ("AUTH_PROVIDER", "clerk"),
                    ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY),
                    ("CLERK_SECRET_KEY", "sk_test_1"),
                    ("CLERK_AUTHORIZED_PARTIES", "https://app.example.com/path"),
                ],
                "CLERK_AUTHORIZED_PARTIES",
            ),
            (
                vec![
                    ("AUTH_PROVIDER", "clerk"),
                    ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY),
                    ("CLERK_SECRET_KEY", "sk_test_1"),
                    ("CLERK_WEBHOOK_SECRET", "whsec_***"),
                ],
                "CLERK_WEBHOOK_SECRET",
            ),
            (vec![("SMTP_URL", "smtps://mail.example.com")], "MAIL_FROM"),
            (vec![("GATED_PATHS", "/x/../app")], "GATED_PATHS"),
            (vec![("GATED_PATHS", "/%61pp")], "GATED_PATHS"),
            (vec![("OPEN_PATHS", "static")], "OPEN_PATHS"),
            (vec![("GATED_PATHS_CASE_INSENSITIVE", "maybe")], "GATED_PATHS_CASE_INSENSITIVE"),
            (vec![("TRUSTED_PROXIES", "10.0.0.0/33")], "TRUSTED_PROXIES"),
            (vec![("KEEPALIVE_TIMEOUT", "2h")], "KEEPALIVE_TIMEOUT"),
            (vec![("KEEPALIVE_TIMEOUT", "500ms")], "KEEPALIVE_TIMEOUT"),
            (vec![("TRUSTED_PROXIES", "proxy.internal")], "TRUSTED_PROXIES"),
            (vec![("MAX_HEADER_BYTES", "1k")], "MAX_HEADER_BYTES"),
            (vec![("MAX_HEADER_BYTES", "lots")], "MAX_HEADER_BYTES"),
            (vec![("METRICS_TOKEN", "short")], "METRICS_TOKEN"),
            (vec![("UPSTREAM_URL", "http://product:8080"), ("UPSTREAM_HOST", "browser")], "UPSTREAM_HOST"),
            (vec![("UPSTREAM_URL", "http://product:8080"), ("ENTITLEMENT_RECHECK", "10ms")], "ENTITLEMENT_RECHECK"),
            (vec![("UPSTREAM_URL", "http://product:8080"), ("UPSTREAM_IDLE_TIMEOUT", "soon")], "UPSTREAM_IDLE_TIMEOUT"),
            (vec![("SMTP_URL", "smtps://mail.example.com"), ("MAIL_FROM", "not an address")], "MAIL_FROM"),
        ] {
            let errors = Settings::from_vars(&vars(&pairs)).unwrap_err().0;
            assert!(errors.iter().any(|e| e.variable == variable), "{pairs:?}: {errors:?}");
        }
    }

    const CLERK_TEST_KEY: &str = "pk_test_ZXhhbXBsZS1hcHAtMTIuY2xlcmsuYWNjb3VudHMuZGV2JA";

    /// The publishable-key vectors computed with Clerk's own algorithm.
    #[test]
    fn clerk_settings_from_the_keys() {
        assert_eq!(clerk_frontend_api(CLERK_TEST_KEY).as_deref(), Some("example-app-12.clerk.accounts.dev"));
        assert_eq!(clerk_frontend_api("pk_live_Y2xlcmsuZXhhbXBsZS5jb20k").as_deref(), Some("clerk.example.com"));
        let s = Settings::from_vars(&vars(&[
            ("AUTH_PROVIDER", "clerk"),
            ("CLERK_PUBLISHABLE_KEY", CLERK_TEST_KEY),
            ("CLERK_SECRET_KEY", "sk_test_clerk-secret"),
            ("CLERK_AUTHORIZED_PARTIES", "https://app.example.com, http://localhost:3000/"),
            ("CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]))
        .unwrap();
        let AuthSettings::Clerk(clerk) = &s.auth else { panic!("clerk") };
        assert_eq!(clerk.frontend_api, "example-app-12.clerk.accounts.dev");
        assert_eq!(clerk.api_url, "https://api.clerk.com");
        assert_eq!(
            clerk.authorized_parties.as_deref(),
            Some(&["https://app.example.com".to_string(), "http://localhost:3000".to_string()][..])
        );
        let printed = format!("{s:?}");
        assert!(!printed.contains("clerk-secret") && !printed.contains("MfKQ9r8"), "{printed}");
    }

    #[test]
    fn the_gate_and_the_proxies_in_front() {
        let s = Settings::from_vars(&vars(&[
            ("UPSTREAM_URL", "http://product:8080/"),
            ("GATED_PATHS", "/"),
            ("OPEN_PATHS", "/static/, /favicon.ico, /"),
            ("GATED_PATHS_CASE_INSENSITIVE", "TRUE"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7, ::1"),
            ("MAX_HEADER_BYTES", "32KiB"),
            ("KEEPALIVE_TIMEOUT", "10m"),
            ("UPSTREAM_HOST", "Upstream"),
            ("ENTITLEMENT_RECHECK", "500ms"),
            ("WEBSOCKET_MAX_LIFETIME", "2h"),
        ]))
        .unwrap();
        assert_eq!(s.gate.gated_paths, ["/"]);
        assert_eq!(s.gate.open_paths, ["/static", "/favicon.ico", "/"]);
        assert!(s.gate.case_insensitive && !s.gate.allow_encoded_slash && !s.gate.trust_forwarded_uri);
        assert_eq!(s.trusted_proxies.len(), 3);
        assert!(s.trusted_proxies[1].contains(&"192.168.1.7".parse::<IpAddr>().unwrap()));
        assert_eq!((s.max_header_bytes, s.keepalive_timeout.as_secs()), (32 * 1024, 600));
        let gateway = s.gateway.unwrap();
        assert_eq!((gateway.host, gateway.entitlement_recheck), (UpstreamHost::Upstream, std::time::Duration::from_millis(500)));
        assert_eq!((gateway.max_lifetime.as_secs(), gateway.idle_timeout.as_secs()), (7200, 300));
        let defaults = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!((defaults.gate.gated_paths, defaults.max_header_bytes), (vec!["/app".to_string()], 64 * 1024));
        assert_eq!(defaults.keepalive_timeout.as_secs(), 75);
        assert!(defaults.trusted_proxies.is_empty());
    }

    #[test]
    fn the_emulator_runs_behind_https_only_when_asked() {
        let asked =
            Settings::from_vars(&vars(&[("PUBLIC_URL", "https://demo.example.com"), ("STRIPE_EMULATOR", "true"), ("MAIL_OUTBOX", "true")]))
                .unwrap();
        assert!(matches!(asked.stripe, StripeSettings::Emulator { .. }));
        assert!(matches!(asked.mail, MailSettings::Outbox));
        assert!(Settings::from_vars(&vars(&[("PUBLIC_URL", "http://localhost:3000")])).is_ok(), "plain http: a local run");
    }

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(redis_cluster_nodes("redis://h:1"), None);
        assert_eq!(redis_cluster_nodes("redis+cluster://a:7000,b:7001").unwrap().unwrap(), ["redis://a:7000", "redis://b:7001"]);
        assert_eq!(
            redis_cluster_nodes("rediss+cluster://u:p%40w@a:7000,b:7001/").unwrap().unwrap(),
            ["rediss://u:p%40w@a:7000", "rediss://u:p%40w@b:7001"]
        );
        assert_eq!(redis_cluster_nodes("valkeys+cluster://a:1").unwrap().unwrap(), ["rediss://a:1"]);
        assert!(redis_cluster_nodes("redis+cluster://a:7000/2").unwrap().is_err());
        assert!(redis_cluster_nodes("redis+cluster://a:7000,,b:1").unwrap().is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_supersecret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_alsosecret"),
            ("PLANS", "price_a, price_b"),
            ("KV_URL", "rediss://tollgate:p%40ss-secret@cache.example.com:6380/2"),
            ("SMTP_URL", "smtps://mailer:smtp-secret@mail.example.com:465"),
            ("MAIL_FROM", "Tollgate <no-reply@example.com>"),
        ]))
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("supersecret") && !printed.contains("alsosecret") && !printed.contains("ss-secret"), "{printed}");
        assert!(!printed.contains("smtp-secret") && printed.contains("smtps://mailer:[redacted]@mail.example.com:465"), "{printed}");
        assert!(printed.contains("rediss://tollgate:[redacted]@cache.example.com:6380/2"), "{printed}");
        assert_eq!(s.stripe_rate_limit, Some(20), "test-mode keys stay under Stripe's 25/s");
        let bad = Settings::from_vars(&vars(&[("KV_URL", "redis://u:hunter2@h/x")])).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        let cluster =
            Settings::from_vars(&vars(&[("KV_URL", "rediss+cluster://tollgate:hunter2@a.example.com:7000,b.example.com:7001")])).unwrap();
        let printed = format!("{cluster:?}");
        assert!(!printed.contains("hunter2") && printed.contains("rediss+cluster://tollgate:[redacted]@a.example.com:7000,b"), "{printed}");
        let bad = Settings::from_vars(&vars(&[("KV_URL", "redis+cluster://u:hunter2@h:1,h:x")])).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        assert_eq!(s.plans.unwrap().len(), 2);
    }

    #[test]
    fn dotenv_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "# comment\nPORT=4000 # inline comment\nexport BIND=\"0.0.0.0\"\n\nX='y z'\nY=\"a\\\"b\"\nZ=${PORT}0\n")
            .unwrap();
        let parsed = read_dotenv(&path).unwrap();
        assert_eq!(parsed["PORT"], "4000");
        assert_eq!(parsed["BIND"], "0.0.0.0");
        assert_eq!(parsed["X"], "y z");
        assert_eq!(parsed["Y"], "a\"b");
        assert_eq!(parsed["Z"], "40000");
        assert!(read_dotenv(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::write(&path, "NOT VALID LINE\n").unwrap();
        assert_eq!(read_dotenv(&path).unwrap_err().variable, ".env");
    }
}
