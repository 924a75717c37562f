//! Building the application from settings: the listener, the KV, Stripe (real, or the emulator
//! started in-process with two seeded plans and its webhook pointed back here), auth, and the router.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::clerk::ClerkAuth;
use crate::auth::local::LocalAccounts;
use crate::state::{AppState, Inner, MetricsAccess};
use tollgate_core::billing::drain::{self, Drain, Wakeups};
use tollgate_core::billing::{catalog::Catalog, reconcile, seats::Seats, Billing};
use tollgate_core::config::{AuthSettings, Secret, Settings, StripeSettings};
use tollgate_core::domain::{AccessPolicy, PriceId};
use tollgate_core::orgs::Orgs;
use tollgate_core::stripe::client::RateLimit;
use tollgate_core::stripe::StripeClient;
use tollgate_core::Clock;

/// The plans the embedded emulator starts with, and the ones offered when `PLANS` is not set.
pub(crate) const DEMO_PLANS: [&str; 2] = ["price_tollgate_monthly", "price_tollgate_yearly"];

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// The product's requests, past the router (`http::lane`), while `router` is Tollgate's own.
    lane: Option<crate::http::lane::ProductLane>,
    /// What every request passes before the router (`http::edge`).
    edge: crate::http::edge::Edge,
    pub addr: SocketAddr,
    pub public_url: String,
    /// The embedded emulator's URL, when Tollgate runs without real Stripe keys.
    pub emulator_url: Option<String>,
    pub state: AppState,
    wakeups: Wakeups,
    reconcile_every: Option<std::time::Duration>,
    /// `METRICS_ADDR`'s listener, when metrics have one of their own.
    metrics_listener: Option<TcpListener>,
    /// Where that listener is.
    pub metrics_addr: Option<SocketAddr>,
}

/// The embedded emulator's catalogue: one product with the two demo plans.
#[cfg(feature = "emulator")]
fn demo_catalogue() -> Vec<stripe_emulator::SeedProduct> {
    use stripe_emulator::{SeedPrice, SeedProduct};
    let price = |id: &str, amount: i64, interval: &str| SeedPrice {
        id: Some(id.into()),
        unit_amount: amount,
        currency: "usd".into(),
        interval: Some(interval.into()),
        interval_count: None,
        nickname: None,
        lookup_key: None,
    };
    vec![SeedProduct {
        id: Some("prod_tollgate_pro".into()),
        name: "Tollgate Pro".into(),
        description: Some("Everything in the product".into()),
        prices: vec![price(DEMO_PLANS[0], 1200, "month"), price(DEMO_PLANS[1], 12000, "year")],
    }]
}

/// Start the embedded Stripe emulator with the demo plans and its webhook pointed back at
/// Tollgate's; its API's URL and the webhook's signing secret.
///
/// It listens where Tollgate does: its Checkout and portal pages are for the user's browser, so
/// when Tollgate takes every address (`BIND=0.0.0.0`, in a container) they must be reachable
/// beside it, named by `PUBLIC_URL`'s host and the emulator's port (publish both ports).
#[cfg(feature = "emulator")]
async fn start_emulator(
    port: u16,
    data_file: Option<std::path::PathBuf>,
    tollgate: SocketAddr,
    public_url: &str,
) -> anyhow::Result<(String, String)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use stripe_emulator::{Emulator, EmulatorConfig, StartupWebhook};
    let secret = format!("whsec_{}", tollgate_core::random_token(32));
    let loopback = match tollgate.ip() {
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let everywhere = tollgate.ip().is_unspecified();
    let callback_host = if everywhere { loopback } else { tollgate.ip() };
    let public_host = reqwest::Url::parse(public_url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or("localhost".into());
    let config = EmulatorConfig {
        bind: SocketAddr::new(tollgate.ip(), port),
        public_url: (everywhere && port != 0).then(|| format!("http://{public_host}:{port}")),
        webhooks: vec![StartupWebhook {
            url: format!("http://{}/api/stripe-webhook", SocketAddr::new(callback_host, tollgate.port())),
            secret: Some(secret.clone()),
            enabled_events: vec!["*".into()],
        }],
        seed_products: demo_catalogue(),
        data_file,
        ..Default::default()
    };
    let running = Emulator::build(config).await.context("STRIPE_EMULATOR_PORT: the Stripe emulator could not start")?;
    // Tollgate itself calls it over loopback when it listens everywhere.
    let api = if everywhere { format!("http://{}", SocketAddr::new(loopback, running.addr.port())) } else { running.url() };
    let _ = running.spawn();
    Ok((api, secret))
}

/// Settings only choose the emulator when this build has one (see `config`).
#[cfg(not(feature = "emulator"))]
async fn start_emulator(_: u16, _: Option<std::path::PathBuf>, _: SocketAddr, _: &str) -> anyhow::Result<(String, String)> {
    anyhow::bail!("STRIPE_SECRET_KEY: is required: this build has no embedded Stripe emulator")
}

impl Application {
    /// The application these settings describe, on the system's clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with_clock(settings, Clock::system()).await
    }

    /// The same, reading the time from `clock`: a test gives it a [`Clock::test`] and advances
    /// that instead of sleeping (sessions, links, throttles, the drain, caches, tunnels' limits;
    /// see `tollgate_core::clock` for what keeps real time).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Application> {
        let listener = TcpListener::bind((settings.bind, settings.port))
            .await
            .with_context(|| format!("PORT: cannot listen on {}:{}", settings.bind, settings.port))?;
        let addr = listener.local_addr()?;
        let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://localhost:{}", addr.port()));
        let kv = tollgate_core::kv::open(&settings.kv, &clock).await?;

        let ((api_base, api_key), webhook_secret, emulator_url) = match &settings.stripe {
            StripeSettings::Remote { secret_key, webhook_secret, api_base } => {
                ((api_base.clone(), secret_key.clone()), webhook_secret.clone(), None)
            }
            StripeSettings::Emulator { port, data_file } => {
                let (url, secret) = start_emulator(*port, data_file.clone(), addr, &public_url).await?;
                ((url.clone(), Secret::new("sk_test_tollgate_emulator")), Secret::new(secret), Some(url))
            }
        };
        // Keys say which Stripe mode they bill in, as Stripe's own keys do.
        let live_keys = api_key.expose().starts_with("sk_live_");
        let (billing, wakeups) = billing(&settings, kv.clone(), &api_base, api_key, public_url.clone(), clock.clone());
        let api_keys = Arc::new(tollgate_core::api_keys::ApiKeys::new(kv.clone(), billing.seats.orgs.clone(), clock.clone(), live_keys));
        if let (Some(_), Some(plans)) = (&emulator_url, &settings.plans) {
            emulator_has_the_plans(&billing, plans).await?;
        }
        let secure_cookies = public_url.starts_with("https://");
        let mailer = Arc::new(tollgate_core::mail::Mailer::new(&settings.mail)?);
        let accounts = Arc::new(LocalAccounts::new(
            kv.clone(),
            mailer.clone(),
            public_url.clone(),
            secure_cookies,
            settings.session_ttl,
            clock.clone(),
        ));
        let public_origin = origin_of(&public_url);
        let clerk = match &settings.auth {
            AuthSettings::Local => None,
            AuthSettings::Clerk(clerk) => Some(Arc::new(ClerkAuth::new(clerk, &public_origin, kv.clone(), clock.clone())?)),
        };
        let auth: Arc<dyn crate::auth::AuthProvider> = match &clerk {
            Some(clerk) => clerk.clone(),
            None => accounts.clone(),
        };
        // WebSocket tunnels may take three quarters of the connections: the rest stay for requests.
        let tunnels = crate::http::serve::connection_limit() * 3 / 4;
        let clerk_issuer = clerk.as_ref().map(|c| format!("https://{}", c.frontend_api));
        let gateway = settings.gateway.as_ref().map(|g| Arc::new(crate::gateway::Gateway::new(g, clerk_issuer, tunnels, clock.clone())));
        let audience =
            settings.gateway_audience.clone().or_else(|| gateway.as_ref().map(|g| g.origin())).unwrap_or_else(|| public_origin.clone());
        let metrics_access = match (&settings.metrics_addr, &settings.metrics_token) {
            (Some(_), _) => MetricsAccess::Elsewhere,
            (None, _) if gateway.is_none() && !secure_cookies => MetricsAccess::Open,
            (None, Some(token)) => MetricsAccess::Token(token.clone()),
            (None, None) => MetricsAccess::Elsewhere,
        };
        let public_host = axum::http::HeaderValue::from_str(public_origin.split_once("://").map_or("localhost", |(_, host)| host))
            .context("PUBLIC_URL: its host is not header text")?;
        let state = AppState::new(Inner {
            billing,
            auth,
            accounts,
            api_keys,
            clerk,
            gateway,
            gate: crate::gateway::path::GatePaths::new(&settings.gate),
            assertions: crate::gateway::identity::AssertionSigner::new(settings.gateway_secret.as_ref(), public_origin.clone(), audience),
            identity_cache: crate::gateway::identity::IdentityCache::new(clock.clone()),
            public_host,
            service_token: settings.service_token.clone(),
            metrics_access,
            mailer,
            features: settings.plan_features.clone(),
            limits: settings.plan_limits.clone(),
            metered: settings.metered_paths.clone(),
            policy: AccessPolicy {
                past_due_grace: settings.past_due_grace,
                stale_after_period_end: settings.period_end_grace.as_secs() as i64,
                billing_subject: settings.teams.billing_subject,
            },
            webhook_secret,
            secure_cookies,
            readiness: Default::default(),
            clock,
            public_origin,
        });
        let routes = crate::http::router::router(state.clone());
        let lane = crate::http::lane::ProductLane::new(&state, &routes.paths);
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("METRICS_ADDR: cannot listen on {addr}"))?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let edge = crate::http::edge::Edge {
            allow_encoded_slash: settings.gate.allow_encoded_slash,
            trusted_proxies: settings.trusted_proxies.clone().into(),
            max_header_bytes: settings.max_header_bytes,
            keepalive_timeout: settings.keepalive_timeout,
            clock: state.clock.clone(),
        };
        Ok(Application {
            listener,
            router: routes.router,
            lane,
            edge,
            addr,
            public_url,
            emulator_url,
            state,
            wakeups,
            reconcile_every: settings.reconcile_every,
            metrics_listener,
            metrics_addr,
        })
    }

    /// Tollgate's routes with their layers (library mode): merge them into your own axum router,
    /// then `serve` the result. Your handlers gate themselves with `Entitled` / `CurrentUser`,
    /// whose state is `state` (`Router::with_state(app.state.clone())`).
    pub fn routes(&self) -> axum::Router {
        self.router.clone()
    }

    /// Serve `router` (your routes with `routes()` merged in) in place of Tollgate's own, with
    /// everything `run_until_stopped` runs beside it.
    pub async fn serve(mut self, router: axum::Router) -> std::io::Result<()> {
        self.router = router;
        self.lane = None; // the router's routes are the caller's now: it answers everything

        self.run_until_stopped().await
    }

    /// Serve, with the drain (and the periodic reconcile, when set) running beside the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let billing = self.state.billing.clone();
        let drain = tokio::spawn(drain::run(billing.clone(), self.wakeups));
        let usage = (!self.state.metered.is_empty()).then(|| tokio::spawn(tollgate_core::billing::usage::run(billing.clone())));
        let reconcile = self.reconcile_every.map(|every| tokio::spawn(reconcile::run_periodically(billing, every)));
        let metrics = self.metrics_listener.map(|listener| {
            let router = axum::Router::new().route("/metrics", axum::routing::get(crate::http::health::render_metrics));
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            })
        });
        let _stop_background = AbortOnDrop(std::iter::once(drain).chain(usage).chain(reconcile).chain(metrics).collect());
        crate::http::serve::serve(self.listener, self.router, self.lane, self.edge, shutdown_requested()).await
        // In-flight requests have finished here, so every KV write they made has committed; the
        // drain stops with `_stop_background`, and its pending marks stay in the KV for the next
        // start's sweep.
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, as a container runtime sends it: stop taking connections, let the
/// requests in flight finish.
async fn shutdown_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops the server");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// Billing for these settings against the Stripe API at `api_base` (paced by `STRIPE_RATE_LIMIT`
/// through `kv`), with the receiving end of its drain's wake-ups (for the server, or a command
/// that syncs without serving).
pub(crate) fn billing(
    settings: &Settings,
    kv: tollgate_core::kv::SharedKv,
    api_base: &str,
    key: Secret,
    public_url: String,
    clock: Clock,
) -> (Arc<Billing>, Wakeups) {
    let rate_limit = settings.stripe_rate_limit.map(|per_second| RateLimit { kv: kv.clone(), per_second });
    let stripe = StripeClient::new(api_base, key, rate_limit);
    let price_ids = match &settings.plans {
        Some(ids) => ids.clone(),
        None => DEMO_PLANS.iter().map(|id| PriceId::parse(id).expect("demo ids are valid")).collect(),
    };
    let (drain, wakeups) = Drain::new();
    let orgs = Orgs::new(kv.clone(), clock.clone());
    let billing = Billing {
        stripe: Arc::new(stripe),
        kv,
        drain,
        catalog: Arc::new(Catalog::new(price_ids, clock.clone()).with_features(settings.plan_features.from_stripe)),
        public_url,
        trial: settings.trial,
        entitlements_from_stripe: settings.plan_features.from_stripe,
        allow_promotion_codes: settings.allow_promotion_codes,
        usage_prices: Arc::new(Catalog::new(settings.metered_prices.clone(), clock.clone())),
        meter_stream: settings.meter_stream.then(tollgate_core::billing::usage::MeterStream::default),
        value_encoding: settings.value_encoding,
        seats: Seats { orgs, settings: settings.teams.clone() },
        clock,
    };
    (Arc::new(billing), wakeups)
}

/// `PLANS` with the embedded emulator must name prices it has. Real price ids there mean the
/// Stripe keys were meant to be set (a typo in their name, say): refused, with the ids it has.
async fn emulator_has_the_plans(billing: &Billing, plans: &[PriceId]) -> anyhow::Result<()> {
    let listed: tollgate_core::stripe::wire::List<serde_json::Value> =
        billing.stripe.get("/v1/prices", &[("limit", "100")]).await.context("reading the embedded Stripe emulator's prices")?;
    let mut known: Vec<&str> = listed.data.iter().filter_map(|price| price["id"].as_str()).collect();
    known.sort_unstable();
    let missing: Vec<&str> = plans.iter().map(PriceId::as_str).filter(|id| !known.contains(id)).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "PLANS: {} is not a price of the embedded Stripe emulator, which has {} (no STRIPE_SECRET_KEY is set: leave PLANS unset for the demo plans, or set STRIPE_SECRET_KEY for your own)",
            missing.join(", "),
            known.join(", ")
        );
    }
    Ok(())
}

/// Stops the background tasks when the server stops (or its future is dropped).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(|task| task.abort());
    }
}

/// `https://app.example.com/x` → `https://app.example.com` (what browsers send as `Origin`).
fn origin_of(url: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[scheme_end..].find('/') {
        Some(i) => url[..scheme_end + i].to_string(),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins() {
        assert_eq!(super::origin_of("https://app.example.com/base"), "https://app.example.com");
        assert_eq!(super::origin_of("http://localhost:3000"), "http://localhost:3000");
    }
}
