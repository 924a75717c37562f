//! The shared application state handed to every handler and extractor.

use std::sync::Arc;

use crate::auth::local::LocalAccounts;
use crate::auth::AuthProvider;
use crate::billing::Billing;
use crate::config::Secret;
use crate::domain::AccessPolicy;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Who may read `/metrics` on the main port.
pub enum MetricsAccess {
    /// Anyone: a local, plain-http Tollgate with no product behind it and no `METRICS_ADDR`.
    Open,
    /// Callers with `Authorization: Bearer METRICS_TOKEN` (in gateway mode, anyone else's
    /// `/metrics` is the product's).
    Token(Secret),
    /// Nobody: `/metrics` is on `METRICS_ADDR`, or not served (in gateway mode, the product's).
    Elsewhere,
}

pub struct Inner {
    pub billing: Arc<Billing>,
    pub auth: Arc<dyn AuthProvider>,
    /// The built-in accounts (sign-up, sign-in, sign-out); the same object as `auth` when local.
    pub accounts: Arc<LocalAccounts>,
    /// Clerk, when it is the provider (the same object as `auth`): its pages, sign-out, webhook.
    pub clerk: Option<Arc<crate::auth::clerk::ClerkAuth>>,
    /// Gateway mode (`UPSTREAM_URL`): the product behind Tollgate.
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
    /// Which of the product's paths need an entitled user, and how paths are read (gateway and
    /// forward-auth).
    pub gate: crate::gateway::path::GatePaths,
    /// Signs the identity assertion of the gateway and forward-auth (`GATEWAY_SECRET`).
    pub assertions: crate::gateway::identity::AssertionSigner,
    /// Identities kept a moment per credential (`gateway::identity::IDENTITY_KEPT`).
    pub identity_cache: crate::gateway::identity::IdentityCache,
    /// `PUBLIC_URL`'s `host[:port]`: the product's `X-Forwarded-Host`.
    pub public_host: axum::http::HeaderValue,
    /// `SERVICE_TOKEN`, for `GET /api/users/{id}/entitlement`.
    pub service_token: Option<Secret>,
    /// Who may read `/metrics` on the main port.
    pub metrics_access: MetricsAccess,
    /// Account emails; its outbox (no SMTP) is shown at `/dev/outbox`.
    pub mailer: Arc<crate::mail::Mailer>,
    pub policy: AccessPolicy,
    pub webhook_secret: Secret,
    /// `scheme://host[:port]` of `PUBLIC_URL`, compared with `Origin` on form posts.
    pub public_origin: String,
    pub secure_cookies: bool,
    /// The last `/readyz` check (when, KV ready, Stripe ready), shared by every probe for a few
    /// seconds; `http::health` owns its meaning.
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, bool, bool)>>,
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
