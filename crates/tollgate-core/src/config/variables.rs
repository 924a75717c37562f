//! Every variable Tollgate reads, in one table: its name, its default, whether its value is a
//! secret, and what it means. The README's configuration table is generated from it (a test fails
//! when the two differ), `tollgate config` prints it with the values in effect, and start-up refuses
//! a variable that is not in it (a typo such as `STRIPE_SECRT_KEY` would otherwise start the
//! emulator silently).

use std::collections::{BTreeMap, HashMap};

/// How a variable's value may be printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown {
    Plain,
    /// Never printed.
    Secret,
    /// A URL printed with its password replaced.
    UrlWithPassword,
}

#[derive(Debug)]
pub struct Variable {
    pub name: &'static str,
    /// The default, as the README shows it (Markdown).
    pub default: &'static str,
    pub shown: Shown,
    /// What it does, as the README shows it (Markdown).
    pub meaning: &'static str,
}

/// In the README's order.
pub const VARIABLES: &[Variable] = &[
    Variable { name: "PORT", default: r#"`3000`"#, shown: Shown::Plain, meaning: r#"Port to listen on (`0`: any free port)."# },
    Variable { name: "BIND", default: r#"`127.0.0.1`"#, shown: Shown::Plain, meaning: r#"Address to listen on."# },
    Variable {
        name: "PUBLIC_URL",
        default: r#"`http://localhost:PORT`"#,
        shown: Shown::Plain,
        meaning: r#"Where users reach the app: Checkout's success/cancel URLs, the portal's return URL, the allowed `Origin` of form posts. `https://…` also gives cookies the `__Host-` prefix and `Secure`, and sends HSTS."#,
    },
    Variable {
        name: "DATA_DIR",
        default: r#"`./data`"#,
        shown: Shown::Plain,
        meaning: r#"Where the embedded KV file (and the embedded emulator's state) lives."#,
    },
    Variable {
        name: "KV_URL",
        default: r#"embedded redb in `DATA_DIR`"#,
        shown: Shown::UrlWithPassword,
        meaning: r#"`redis://` or `rediss://` (TLS; `valkey://`, `valkeys://` too) `[user:password@]host[:port][/db]` for Redis or Valkey (percent-encode special characters in the password); `redis+cluster://` or `rediss+cluster://` `[user:password@]host:port[,host:port…]` for a Redis Cluster (any of its nodes; see "Running in production"); `redb:/path/file.redb`; or `memory:` (nothing persists). Printed with the password redacted."#,
    },
    Variable {
        name: "KV_TLS_CA_FILE",
        default: r#"the system's roots"#,
        shown: Shown::Plain,
        meaning: r#"PEM file of the CA to trust for `rediss://` (a self-managed Redis with its own CA)."#,
    },
    Variable {
        name: "STRIPE_SECRET_KEY",
        default: r#"unset: run the emulator"#,
        shown: Shown::Secret,
        meaning: r#"`sk_…`/`rk_…`. Set it to talk to real Stripe."#,
    },
    Variable {
        name: "STRIPE_WEBHOOK_SECRET",
        default: r#"generated for the emulator"#,
        shown: Shown::Secret,
        meaning: r#"`whsec_…` of your endpoint at `PUBLIC_URL/api/stripe-webhook`. Required with `STRIPE_SECRET_KEY`."#,
    },
    Variable {
        name: "STRIPE_API_BASE",
        default: r#"`https://api.stripe.com`"#,
        shown: Shown::Plain,
        meaning: r#"Another Stripe-compatible API (an emulator run on its own, say)."#,
    },
    Variable {
        name: "STRIPE_EMULATOR_PORT",
        default: r#"`12111`"#,
        shown: Shown::Plain,
        meaning: r#"Port of the embedded emulator (`0`: any free port). Only without `STRIPE_SECRET_KEY`. It listens where Tollgate does (`BIND`); with every address (`0.0.0.0`, a container) its Checkout and portal pages are named by `PUBLIC_URL`'s host and this port, so publish it beside `PORT`. Its state is kept in `DATA_DIR/stripe-emulator.jsonl` (in memory with `KV_URL=memory:`)."#,
    },
    Variable {
        name: "PLANS",
        default: r#"the emulator's two demo plans"#,
        shown: Shown::Plain,
        meaning: r#"Price ids offered, in order: `price_a,price_b`, or a file listing them. Required with `STRIPE_SECRET_KEY`."#,
    },
    Variable {
        name: "AUTH_PROVIDER",
        default: r#"`local`"#,
        shown: Shown::Plain,
        meaning: r#"`local`: Tollgate's own email + password accounts; `clerk`: Clerk's (see "Clerk" below)."#,
    },
    Variable {
        name: "CLERK_PUBLISHABLE_KEY",
        default: r#"—"#,
        shown: Shown::Plain,
        meaning: r#"`pk_test_…`/`pk_live_…`; names the instance's Frontend API (the handshake's address) and its kind (`pk_test_`: development rules). Required with `clerk`."#,
    },
    Variable {
        name: "CLERK_SECRET_KEY",
        default: r#"—"#,
        shown: Shown::Secret,
        meaning: r#"`sk_test_…`/`sk_live_…`, of the same kind: the JWKS and users from the Backend API, sign-out. Required with `clerk`."#,
    },
    Variable {
        name: "CLERK_JWT_KEY",
        default: r#"unset: fetch the JWKS"#,
        shown: Shown::Plain,
        meaning: r#"The instance's PEM public key (Dashboard → API keys → JWT public key), to verify tokens without fetching keys (`\n` escapes allowed)."#,
    },
    Variable {
        name: "CLERK_AUTHORIZED_PARTIES",
        default: r#"`PUBLIC_URL`'s origin"#,
        shown: Shown::Plain,
        meaning: r#"Comma-separated origins a token's `azp` may name."#,
    },
    Variable {
        name: "CLERK_WEBHOOK_SECRET",
        default: r#"unset: no Clerk webhook"#,
        shown: Shown::Secret,
        meaning: r#"`whsec_…` of a Clerk webhook endpoint at `PUBLIC_URL/api/clerk-webhook` (events `user.updated`, `user.deleted`)."#,
    },
    Variable { name: "CLERK_API_URL", default: r#"`https://api.clerk.com`"#, shown: Shown::Plain, meaning: r#"The Backend API base."# },
    Variable {
        name: "PAST_DUE_GRACE",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: `past_due` still grants access while Stripe retries the card."#,
    },
    Variable {
        name: "TRIAL_DAYS",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Free trial offered at Checkout (1–730 days), once per customer: not to one whose customer ever had a subscription with a trial (read from Stripe, and remembered at `tollgate:trialed:{userId}` should the customer be deleted)."#,
    },
    Variable {
        name: "TRIAL_REQUIRES_CARD",
        default: r#"`true`"#,
        shown: Shown::Plain,
        meaning: r#"`false`: the trial starts without a card (Checkout's `payment_method_collection=if_required`)."#,
    },
    Variable {
        name: "TRIAL_END_WITHOUT_CARD",
        default: r#"`cancel`"#,
        shown: Shown::Plain,
        meaning: r#"What a trial started without a card does when it ends without one: `cancel` or `pause` (Stripe's `trial_settings.end_behavior.missing_payment_method`)."#,
    },
    Variable {
        name: "ALLOW_PROMOTION_CODES",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: Checkout has a field for a promotion code (`allow_promotion_codes`); the dashboard shows the discount and when it ends (cache field `discount`)."#,
    },
    Variable {
        name: "BILLING_SUBJECT",
        default: r#"`user`"#,
        shown: Shown::Plain,
        meaning: r#"Who subscribes: `user` (each person, the recipe's model), `organization` (the active organization; its members are entitled through it), or `both` (the active organization when there is one, else the user; either entitles). An organization's customer is mapped at `stripe:org:{orgId}` beside the recipe's `stripe:user:{userId}`."#,
    },
    Variable {
        name: "SEAT_PRICES",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Prices billed per member of the paying organization: `price_team_monthly,price_team_yearly` (a price whose `metadata.tollgate_seats` is `per_seat` counts too). Checkout's quantity is the member count, and every membership change sets the subscription's quantity again. A price's `metadata.tollgate_max_seats` caps the members."#,
    },
    Variable {
        name: "SEAT_PRORATION",
        default: r#"`create_prorations`"#,
        shown: Shown::Plain,
        meaning: r#"How a seat change within a period is billed: `create_prorations` (on the next invoice), `always_invoice` (charged at once) or `none`."#,
    },
    Variable {
        name: "SEATS_COUNT_INVITES",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: a pending invitation takes a seat (billed, and counted against the cap) until it is accepted, revoked or expires."#,
    },
    Variable {
        name: "KV_VALUE_ENCODING",
        default: r#"`raw`"#,
        shown: Shown::Plain,
        meaning: r#"How `stripe:user:*` is written: `raw` (`cus_…`, what `@upstash/redis` and `@vercel/kv` store for a string) or `json` (`"cus_…"`, for KV wrappers that JSON-encode every value). Either form, and a `stripe:customer:*` object encoded once more as a string, is always read. `tollgate doctor` says which form the KV holds."#,
    },
    Variable {
        name: "STRIPE_RATE_LIMIT",
        default: r#"`90` for live keys, `20` for test keys, off for the emulator"#,
        shown: Shown::Plain,
        meaning: r#"Stripe requests per second for **all instances together** (paced through the KV), under Stripe's own 100/s live and 25/s test-mode limits. `off` disables it."#,
    },
    Variable {
        name: "PERIOD_END_GRACE",
        default: r#"`1d`"#,
        shown: Shown::Plain,
        meaning: r#"How long after its period ended a cached subscription still grants access without asking Stripe again (webhooks may have been lost)."#,
    },
    Variable {
        name: "SESSION_TTL",
        default: r#"`30d`"#,
        shown: Shown::Plain,
        meaning: r#"A built-in account's session ends this long after it was last used."#,
    },
    Variable {
        name: "SMTP_URL",
        default: r#"unset: the local outbox"#,
        shown: Shown::UrlWithPassword,
        meaning: r#"`smtps://user:password@host:465` (TLS) or `smtp://host:587?tls=required` (STARTTLS): where account emails (sign-up and password-reset links) are sent. Printed with the password redacted. Required when `PUBLIC_URL` is `https://`."#,
    },
    Variable {
        name: "MAIL_FROM",
        default: r#"—"#,
        shown: Shown::Plain,
        meaning: r#"The sender, `Example <no-reply@example.com>`. Required with `SMTP_URL`."#,
    },
    Variable {
        name: "MAIL_OUTBOX",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true` keeps the local outbox with an `https://` `PUBLIC_URL` (a demo site; anyone can read the outbox)."#,
    },
    Variable {
        name: "STRIPE_EMULATOR",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true` allows the emulator with an `https://` `PUBLIC_URL` (otherwise such a site without `STRIPE_SECRET_KEY` refuses to start)."#,
    },
    Variable {
        name: "RECONCILE_INTERVAL",
        default: r#"off"#,
        shown: Shown::Plain,
        meaning: r#"`30m`, `6h`, `1d`…: one instance at a time marks every customer Tollgate made (a user's or an organization's) for a sync, healing what a lost webhook left behind."#,
    },
    Variable {
        name: "UPSTREAM_URL",
        default: r#"unset"#,
        shown: Shown::Plain,
        meaning: r#"`http://host:port` of your product: Tollgate becomes its gateway (see "Putting your product behind Tollgate")."#,
    },
    Variable {
        name: "GATED_PATHS",
        default: r#"`/app`"#,
        shown: Shown::Plain,
        meaning: r#"Comma-separated path prefixes that need an entitled user (whole segments); `/` gates the whole product. `prefix:feature` (`/app/export:export`) also needs a plan with that feature (`PLAN_FEATURES`); otherwise 402 naming it."#,
    },
    Variable {
        name: "ENTITLEMENTS",
        default: r#"`config`"#,
        shown: Shown::Plain,
        meaning: r#"Where features come from: `config` (`PLAN_FEATURES`), or `stripe`: the lookup keys of the customer's active entitlements (Stripe's Entitlements API: features attached to products), read by the sync and on `entitlements.active_entitlement_summary.updated`, kept in the cache entry (`features`), never fetched on a request."#,
    },
    Variable {
        name: "PLAN_FEATURES",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"What each plan unlocks: `price_basic:export;price_pro:export,sso`. An entitled user's features go to the product in `X-Tollgate-Features` (and the assertion's `features`), and are listed by `/api/subscription`."#,
    },
    Variable {
        name: "API_PATHS",
        default: r#"`/api/v1`"#,
        shown: Shown::Plain,
        meaning: r#"Comma-separated path prefixes of the product's API: gated like `GATED_PATHS`, and there an API key (`Authorization: Bearer tg_…` or `X-API-Key: tg_…`, made on the dashboard's keys page) identifies the caller; the product receives `X-Tollgate-Key-Id` and never the key."#,
    },
    Variable {
        name: "PLAN_LIMITS",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Each plan's quotas on `API_PATHS`: `price_basic:60/min,10000/month;price_pro:600/min,1000000/month` (or a price's `metadata.tollgate_limits`, `60/min,10000/month`). All instances count together in the KV: requests per minute as a GCRA (a minute's worth may come at once), and per billing period from the customer's own period start. Over either: 429 with `Retry-After`; every answer on a limited path carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`."#,
    },
    Variable {
        name: "METERED_PATHS",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Usage billed through Stripe's meters: `/api/v1:api_requests` (a path prefix under `API_PATHS` and the meter's event name; comma-separated for more). Each request the product answers with a 2xx there counts one (or what its `X-Tollgate-Usage` answer header says) for its payer, in a per-minute bucket in the KV; every instance sends closed minutes as meter events (`identifier` = the bucket), exactly once. A 2xx the KV cannot count is withheld (503 with `Retry-After`); a call retried with the same `Idempotency-Key` counts once within an hour."#,
    },
    Variable {
        name: "METERED_PRICES",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Usage prices Checkout adds beside the chosen plan, comma-separated (`price_api_calls`): metered prices (`recurring.usage_type=metered`) whose meter has the event name of `METERED_PATHS`, billed in arrears at each renewal from what the meter counted. The plan stays the subscription's first licensed item (the cache's `priceId`)."#,
    },
    Variable {
        name: "METER_STREAM",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: send usage through Stripe's v2 meter event stream (a session token made every 15 minutes, up to 100 records a request, 10,000 requests a second in live mode, apart from `STRIPE_RATE_LIMIT`) instead of one `/v1/billing/meter_events` call per record (1,000 a second, paced under `STRIPE_RATE_LIMIT`). For many customers or short flush rounds."#,
    },
    Variable {
        name: "OPEN_PATHS",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Prefixes served to anyone although a gated prefix covers them (`/static,/favicon.ico`); `/` here is the root page alone. The longer match wins."#,
    },
    Variable {
        name: "GATED_PATHS_CASE_INSENSITIVE",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true` for a product that routes `/APP` as `/app` (IIS, some Rails and Spring set-ups): prefixes match in any case."#,
    },
    Variable {
        name: "GATEWAY_ALLOW_ENCODED_SLASH",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true` for a product that needs `%2F` in paths: forwarded as it came, decided on as `/`. Otherwise refused (400)."#,
    },
    Variable {
        name: "FORWARD_AUTH_TRUST_URI",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: `/auth/verify` decides on the path its proxy names (`X-Forwarded-Uri`, `X-Original-URI`) under `GATED_PATHS`/`OPEN_PATHS`; otherwise every request it is asked about is gated. Only for a proxy that sets the header itself."#,
    },
    Variable {
        name: "UPSTREAM_TIMEOUT",
        default: r#"`20`"#,
        shown: Shown::Plain,
        meaning: r#"Seconds the product may take to answer (1–24)."#,
    },
    Variable {
        name: "UPSTREAM_HOST",
        default: r#"`client`"#,
        shown: Shown::Plain,
        meaning: r#"The `Host` the product receives: `client`, the one the browser used (as Caddy, Traefik and oauth2-proxy send it), or `upstream`, the product's own `host:port`."#,
    },
    Variable {
        name: "UPSTREAM_IDLE_TIMEOUT",
        default: r#"`5m`"#,
        shown: Shown::Plain,
        meaning: r#"A WebSocket tunnel with no byte either way for this long is closed."#,
    },
    Variable {
        name: "WEBSOCKET_MAX_LIFETIME",
        default: r#"`24h`"#,
        shown: Shown::Plain,
        meaning: r#"No WebSocket tunnel stays open longer."#,
    },
    Variable {
        name: "ENTITLEMENT_RECHECK",
        default: r#"`60s`"#,
        shown: Shown::Plain,
        meaning: r#"How often a tunnel on a gated path checks, from the KV, that its user is still signed in and entitled; it closes when not."#,
    },
    Variable {
        name: "FORWARD_CLERK_SESSION",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true` lets Clerk's session cookies and token reach the product (they are removed otherwise)."#,
    },
    Variable {
        name: "GATEWAY_SECRET",
        default: r#"unset"#,
        shown: Shown::Secret,
        meaning: r#"32+ characters: sign the identity as an `X-Tollgate-Assertion` JWT (HS256)."#,
    },
    Variable {
        name: "GATEWAY_AUDIENCE",
        default: r#"the upstream's origin"#,
        shown: Shown::Plain,
        meaning: r#"The assertion's `aud` (without `UPSTREAM_URL`: `PUBLIC_URL`'s origin)."#,
    },
    Variable {
        name: "TRUSTED_PROXIES",
        default: r#"none"#,
        shown: Shown::Plain,
        meaning: r#"Comma-separated addresses or CIDRs of the proxies in front of Tollgate: the client's address is the right-most `X-Forwarded-For` entry that is not one of them (throttles, logs, the product's `X-Forwarded-For`). Without it, the connection's peer."#,
    },
    Variable {
        name: "MAX_HEADER_BYTES",
        default: r#"`64KiB`"#,
        shown: Shown::Plain,
        meaning: r#"The most a request's head may take (8KiB–1MiB; larger: 431). Header bytes held for all connections together are bounded at 512 such heads; beyond that new connections wait."#,
    },
    Variable {
        name: "KEEPALIVE_TIMEOUT",
        default: r#"`75s`"#,
        shown: Shown::Plain,
        meaning: r#"How long a connection may wait, idle, for its next request (1s–1h). Keep it above the idle timeout of a load balancer or proxy in front (AWS ALB 60 s, nginx `keepalive_timeout` 60 s): one that reuses a connection Tollgate is closing fails that request. A request's head must still arrive whole within 5 s of its first byte (of connecting, for a connection's first request)."#,
    },
    Variable {
        name: "SERVICE_TOKEN",
        default: r#"unset"#,
        shown: Shown::Secret,
        meaning: r#"32+ characters: enables `GET /api/users/{id}/entitlement` for your services."#,
    },
    Variable {
        name: "LOG_FORMAT",
        default: r#"`text`"#,
        shown: Shown::Plain,
        meaning: r#"`json`: one JSON object per line, and a line per request."#,
    },
    Variable {
        name: "METRICS_ADDR",
        default: r#"unset"#,
        shown: Shown::Plain,
        meaning: r#"An address such as `127.0.0.1:9100` to serve `/metrics` on, alone."#,
    },
    Variable {
        name: "METRICS_TOKEN",
        default: r#"unset"#,
        shown: Shown::Secret,
        meaning: r#"32+ characters: `/metrics` on the main port for `Authorization: Bearer` it. Without `METRICS_ADDR` or this, `/metrics` is on the main port only for a plain-http Tollgate with no `UPSTREAM_URL` (a local one)."#,
    },
    Variable { name: "RUST_LOG", default: r#"`info`"#, shown: Shown::Plain, meaning: r#"Log filter (`debug` logs every request)."# },
    Variable {
        name: "ALLOW_UNKNOWN_ENV",
        default: r#"`false`"#,
        shown: Shown::Plain,
        meaning: r#"`true`: a `.env` key, or a `TOLLGATE_`/`STRIPE_`/`CLERK_` variable, that Tollgate does not know is ignored; otherwise it stops start-up naming the variable it most likely meant."#,
    },
];

pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Env,
    #[serde(rename = ".env")]
    DotEnv,
    Default,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Env => "env",
            Source::DotEnv => ".env",
            Source::Default => "default",
        }
    }
}

/// The variables Tollgate sees: the process environment over a `.env` file, each with its source.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    pub values: HashMap<String, (String, Source)>,
}

impl Environment {
    pub fn new(dotenv: HashMap<String, String>, process: impl IntoIterator<Item = (String, String)>) -> Environment {
        let mut values: HashMap<String, (String, Source)> = dotenv.into_iter().map(|(k, v)| (k, (v, Source::DotEnv))).collect();
        values.extend(process.into_iter().map(|(k, v)| (k, (v, Source::Env))));
        Environment { values }
    }

    pub fn vars(&self) -> HashMap<String, String> {
        self.values.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
    }

    /// The names that look meant for Tollgate but are not its own: every `.env` key, and process
    /// variables starting `TOLLGATE_`, `STRIPE_` or `CLERK_`; sorted, each with the variable it most
    /// likely meant.
    pub fn unknown(&self) -> Vec<(String, Option<&'static str>)> {
        let mut unknown: Vec<(String, Option<&'static str>)> = self
            .values
            .iter()
            .filter(|(name, (_, source))| {
                let ours = *source == Source::DotEnv || ["TOLLGATE_", "STRIPE_", "CLERK_"].iter().any(|p| name.starts_with(p));
                ours && variable(name).is_none()
            })
            .map(|(name, _)| (name.clone(), likely_meant(name)))
            .collect();
        unknown.sort();
        unknown
    }

    /// One row per known variable: the name, the value in effect (redacted as its `Shown` says),
    /// and where it came from.
    pub fn table(&self) -> Vec<Row> {
        VARIABLES
            .iter()
            .map(|v| match self.values.get(v.name).filter(|(value, _)| !value.trim().is_empty()) {
                Some((value, source)) => Row { variable: v.name, value: shown(v.shown, value.trim()), source: *source },
                None => Row { variable: v.name, value: v.default.replace('`', ""), source: Source::Default },
            })
            .collect()
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub variable: &'static str,
    pub value: String,
    pub source: Source,
}

fn shown(how: Shown, value: &str) -> String {
    match how {
        Shown::Plain => value.to_string(),
        Shown::Secret => "[redacted]".to_string(),
        Shown::UrlWithPassword => super::redact_url(value),
    }
}

/// The known variable nearest to `name` by edit distance, if near enough to be a typo.
pub fn likely_meant(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|v| (strsim::damerau_levenshtein(name, v.name), v.name))
        .filter(|(distance, known)| *distance <= (known.len() / 4).max(2))
        .min()
        .map(|(_, known)| known)
}

/// `tollgate config`: the table as aligned text.
pub fn render_text(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.variable.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.value.chars().count()).max().unwrap_or(0).min(60);
    let mut out = format!("{:width$}  {:value_width$}  source\n", "variable", "value");
    for row in rows {
        out += &format!("{:width$}  {:value_width$}  {}\n", row.variable, row.value, row.source.label());
    }
    out
}

/// `tollgate config --json`: `{ "VARIABLE": { "value": …, "source": … } }`.
pub fn render_json(rows: &[Row]) -> serde_json::Value {
    let map: BTreeMap<&str, serde_json::Value> =
        rows.iter().map(|r| (r.variable, serde_json::json!({ "value": r.value, "source": r.source }))).collect();
    serde_json::json!(map)
}

/// The README's table, as Markdown.
pub fn readme_table() -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for v in VARIABLES {
        out += &format!("| `{}` | {} | {} |\n", v.name, v.default, v.meaning);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration table is this table: regenerate it with
    /// `TOLLGATE_WRITE_README=1 cargo test -p tollgate-core readme_table` after a change.
    #[test]
    fn the_readme_table_is_the_settings_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (start, end) = ("<!-- variables:start -->\n", "<!-- variables:end -->");
        let from = readme.find(start).expect("the README marks its table") + start.len();
        let to = readme[from..].find(end).expect("the README marks its table's end") + from;
        let table = readme_table();
        if std::env::var("TOLLGATE_WRITE_README").is_ok() {
            std::fs::write(path, format!("{}{table}{}", &readme[..from], &readme[to..])).unwrap();
            return;
        }
        assert_eq!(readme[from..to], table, "README.md's table differs from config::variables::VARIABLES");
    }

    #[test]
    fn names_are_unique_and_typos_are_recognised() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len());
        assert_eq!(likely_meant("STRIPE_SECRT_KEY"), Some("STRIPE_SECRET_KEY"));
        assert_eq!(likely_meant("STRIPE_WEBHOOK_SECERT"), Some("STRIPE_WEBHOOK_SECRET"));
        assert_eq!(likely_meant("PALNS"), Some("PLANS"));
        assert_eq!(likely_meant("NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"), None);
    }

    #[test]
    fn unknown_names_are_the_dotenv_ones_and_ours() {
        let dotenv = HashMap::from([("STRIPE_SECRT_KEY".to_string(), "sk_test_x".to_string()), ("PORT".into(), "4000".into())]);
        let process = [("HOME".to_string(), "/root".to_string()), ("CLERK_SECRET".into(), "x".into()), ("PORT".into(), "5000".into())];
        let env = Environment::new(dotenv, process);
        assert_eq!(
            env.unknown(),
            [("CLERK_SECRET".to_string(), Some("CLERK_SECRET_KEY")), ("STRIPE_SECRT_KEY".to_string(), Some("STRIPE_SECRET_KEY"))]
        );
        let rows = env.table();
        let port = rows.iter().find(|r| r.variable == "PORT").unwrap();
        assert_eq!((port.value.as_str(), port.source), ("5000", Source::Env), "the environment wins over .env");
        let bind = rows.iter().find(|r| r.variable == "BIND").unwrap();
        assert_eq!((bind.value.as_str(), bind.source), ("127.0.0.1", Source::Default));
    }

    #[test]
    fn secrets_are_redacted_in_the_table() {
        let process =
            [("STRIPE_SECRET_KEY".to_string(), "sk_test_hidden".to_string()), ("KV_URL".into(), "redis://u:hunter2@cache:6379".into())];
        let rows = Environment::new(HashMap::new(), process).table();
        let text = render_text(&rows);
        assert!(!text.contains("hidden") && !text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://u:[redacted]@cache:6379"), "{text}");
    }
}
