//! The shared application state handed to every handler and extractor.

use std::sync::Arc;

use crate::auth::local::LocalAccounts;
use crate::auth::AuthProvider;
use tollgate_core::billing::Billing;
use tollgate_core::config::Secret;
use tollgate_core::domain::AccessPolicy;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Who may read `/metrics` on the main port.
pub(crate) enum MetricsAccess {
    /// Anyone: a local, plain-http Tollgate with no product behind it and no `METRICS_ADDR`.
    Open,
    /// Callers with `Authorization: Bearer METRICS_TOKEN` (in gateway mode, anyone else's
    /// `/metrics` is the product's).
    Token(Secret),
    /// Nobody: `/metrics` is on `METRICS_ADDR`, or not served (in gateway mode, the product's).
    Elsewhere,
}

pub struct Inner {
    pub(crate) billing: Arc<Billing>,
    pub(crate) auth: Arc<dyn AuthProvider>,
    /// The built-in accounts (sign-up, sign-in, sign-out); the same object as `auth` when local.
    pub(crate) accounts: Arc<LocalAccounts>,
    /// API keys (`API_PATHS`).
    pub(crate) api_keys: Arc<tollgate_core::api_keys::ApiKeys>,
    /// Clerk, when it is the provider (the same object as `auth`): its pages, sign-out, webhook.
    pub(crate) clerk: Option<Arc<crate::auth::clerk::ClerkAuth>>,
    /// Gateway mode (`UPSTREAM_URL`): the product behind Tollgate.
    pub(crate) gateway: Option<Arc<crate::gateway::Gateway>>,
    /// Which of the product's paths need an entitled user, and how paths are read (gateway and
    /// forward-auth).
    pub(crate) gate: crate::gateway::path::GatePaths,
    /// Signs the identity assertion of the gateway and forward-auth (`GATEWAY_SECRET`).
    pub(crate) assertions: crate::gateway::identity::AssertionSigner,
    /// Identities kept a moment per credential (`gateway::identity::IDENTITY_KEPT`).
    pub(crate) identity_cache: crate::gateway::identity::IdentityCache,
    /// `PUBLIC_URL`'s `host[:port]`: the product's `X-Forwarded-Host`.
    pub(crate) public_host: axum::http::HeaderValue,
    /// `SERVICE_TOKEN`, for `GET /api/users/{id}/entitlement`.
    pub(crate) service_token: Option<Secret>,
    /// Who may read `/metrics` on the main port.
    pub(crate) metrics_access: MetricsAccess,
    /// Account emails; its outbox (no SMTP) is shown at `/dev/outbox`.
    pub(crate) mailer: Arc<tollgate_core::mail::Mailer>,
    pub(crate) policy: AccessPolicy,
    /// `METERED_PATHS`: where the product's 2xx answers are counted for Stripe's meters.
    pub(crate) metered: Vec<tollgate_core::config::MeteredPath>,
    /// `PLAN_LIMITS`: each plan's quotas on `API_PATHS`.
    pub(crate) limits: tollgate_core::domain::PlanLimits,
    /// `PLAN_FEATURES`: what each plan unlocks.
    pub(crate) features: tollgate_core::domain::PlanFeatures,
    pub(crate) webhook_secret: Secret,
    /// `scheme://host[:port]` of `PUBLIC_URL`, compared with `Origin` on form posts.
    pub(crate) public_origin: String,
    pub(crate) secure_cookies: bool,
    /// The last `/readyz` check (when, KV ready, Stripe ready), shared by every probe for a few
    /// seconds; `http::health` owns its meaning.
    pub(crate) readiness: tokio::sync::Mutex<Option<(tokio::time::Instant, bool, bool)>>,
    /// The time (`tollgate_core::clock`): the system's, or a test's.
    pub(crate) clock: tollgate_core::Clock,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// The meter event a canonical `path` counts as (`METERED_PATHS`; the longest prefix, whole segments).
    pub(crate) fn metered_event(&self, path: &str) -> Option<&str> {
        self.metered
            .iter()
            .filter(|m| path == m.prefix || path.strip_prefix(m.prefix.as_str()).is_some_and(|rest| rest.starts_with('/')))
            .max_by_key(|m| m.prefix.len())
            .map(|m| m.event_name.as_str())
    }

    /// The billing core of this app (library mode): its KV (the recipe's keys), its Stripe client,
    /// `sync_stripe_data_to_kv`, and the cache entry of a customer.
    pub fn billing(&self) -> &Arc<Billing> {
        &self.0.billing
    }

    /// Where account emails go; with no `SMTP_URL`, its outbox holds them (as `/dev/outbox` shows).
    pub fn mailer(&self) -> &Arc<tollgate_core::mail::Mailer> {
        &self.0.mailer
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
