//! The extractors handlers use to know who calls: `CurrentUser` (signed in, or 401 / sign-in page),
//! `Entitled` (signed in with a subscription that grants access, or 402 / pricing page),
//! `CurrentOrg` and `OrgEntitled` (the same for the organization a user acts for), `Paying` (who
//! may act on billing, for which payer); and
//! `RequireFeature`, the layer for routes that need a feature of the user's plan.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::Method;

use super::error::{Failure, Surface};
use crate::access::{entitlement, org_entitlement};
use crate::auth::Session;
use crate::state::AppState;
use tollgate_core::api_keys::{ApiKey, ApiKeyError};
use tollgate_core::billing::BillingError;
use tollgate_core::domain::{ActiveOrg, Payer, SubscriptionCache, User};

/// The signed-in user. Without one, an API call gets 401 JSON and a page visit goes to `/auth`.
pub struct CurrentUser(pub User);

/// Where to come back to after signing in: the page asked for; a form post cannot
/// be replayed, so it comes back to the pricing page instead.
pub(crate) fn back_to(parts: &Parts) -> &str {
    if parts.method == Method::GET {
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    } else {
        "/"
    }
}

/// The session of a request; a page load Clerk's rules send elsewhere first (its handshake) is
/// the `Err`, a 307.
async fn session(parts: &Parts, state: &AppState) -> Result<Session, Failure> {
    session_for(parts, state, Surface::of(parts)).await
}

/// Who is signed in, for a caller answered as `surface` (the gateway decides its own).
pub(crate) async fn signed_in_user(parts: &Parts, state: &AppState, surface: Surface) -> Result<Option<User>, Failure> {
    match session_for(parts, state, surface).await? {
        Session::SignedIn(user) => Ok(Some(user)),
        _ => Ok(None),
    }
}

async fn session_for(parts: &Parts, state: &AppState, surface: Surface) -> Result<Session, Failure> {
    match state.auth.session(parts).await {
        Ok(Session::Redirect(headers)) => Err(Failure::clerk_redirect(surface, *headers)),
        Ok(session) => Ok(session),
        Err(e) => Err(Failure::from_auth(surface, e)),
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        match session(parts, state).await? {
            Session::SignedIn(user) => Ok(CurrentUser(user)),
            _ => Err(Failure::signed_out(Surface::of(parts), back_to(parts))),
        }
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Failure> {
        match session(parts, state).await? {
            Session::SignedIn(user) => Ok(Some(CurrentUser(user))),
            _ => Ok(None),
        }
    }
}

/// A signed-in user who may act on billing, and the payer they act for (`BILLING_SUBJECT`):
/// themselves, or their active organization, where they must be an owner or admin (403
/// otherwise). Without an organization to act for when one must pay: 409, or the page to make one.
pub(crate) struct Paying {
    pub(crate) user: User,
    pub(crate) payer: Payer,
}

impl FromRequestParts<AppState> for Paying {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let CurrentUser(user) = <CurrentUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let surface = Surface::of(parts);
        let payer = state.policy.payer(&user).ok_or_else(|| Failure::from_billing(surface, BillingError::NoOrganization))?;
        if matches!(payer, Payer::Org(_)) && !user.org.as_ref().is_some_and(|org| org.role.manages()) {
            return Err(Failure::from_billing(surface, BillingError::NotABillingManager));
        }
        Ok(Paying { user, payer })
    }
}

/// Library mode: a signed-in user acting for an organization, and their membership (role, slug).
/// Acting for none: 409 `no_organization` (pages: `/orgs`, to make or choose one).
pub struct CurrentOrg(pub User, pub ActiveOrg);

impl FromRequestParts<AppState> for CurrentOrg {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let CurrentUser(user) = <CurrentUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        match user.org.clone() {
            Some(org) => Ok(CurrentOrg(user, org)),
            None => Err(Failure::from_billing(Surface::of(parts), BillingError::NoOrganization)),
        }
    }
}

/// Library mode: a signed-in user acting for an organization whose subscription entitles its
/// members (within its plan's seat cap), whatever `BILLING_SUBJECT` says. Otherwise sign-in,
/// `/orgs` or pricing (401, 409 or 402).
pub struct OrgEntitled(pub User, pub ActiveOrg, pub SubscriptionCache);

impl FromRequestParts<AppState> for OrgEntitled {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let CurrentOrg(user, org) = CurrentOrg::from_request_parts(parts, state).await?;
        let surface = Surface::of(parts);
        let access = org_entitlement(&state.billing, &state.policy, &user, &org.id).await.map_err(|e| Failure::from_billing(surface, e))?;
        match access.entitled {
            true => Ok(OrgEntitled(user, org, access.entry)),
            false => Err(Failure::not_entitled(surface)),
        }
    }
}

/// Library mode: a program calling with an API key (`Authorization: Bearer tg_…` or
/// `X-API-Key`) whose owner is entitled, as the gateway admits it on `API_PATHS`: the user the
/// key calls as (with the organization it calls for), the key's id, and the entry that entitles.
/// Without a key, or with one that opens nothing: 401 `invalid_api_key`; not entitled: 402.
pub struct ApiCaller {
    pub user: User,
    pub key_id: String,
    pub subscription: SubscriptionCache,
}

/// The key a secret names and its holder: a KV failure is a 503 to retry; a secret that names no
/// live key, the API's 401.
pub(crate) async fn key_holder(state: &AppState, secret: &str) -> Result<(ApiKey, User), Failure> {
    match state.api_keys.authenticate(secret).await {
        Ok(Some(found)) => Ok(found),
        Err(ApiKeyError::Kv(e)) => Err(Failure::from_kv(Surface::Api, e)),
        Ok(None) | Err(_) => Err(Failure::invalid_api_key()),
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let secret = crate::auth::api_key(&parts.headers).ok_or_else(Failure::invalid_api_key)?;
        let (key, user) = key_holder(state, secret).await?;
        let access = entitlement(&state.billing, &state.policy, &user).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
        match access.entitled {
            true => Ok(ApiCaller { user, key_id: key.id, subscription: access.entry }),
            false => Err(Failure::not_entitled(Surface::Api)),
        }
    }
}

/// A signed-in user whose subscription grants access. Otherwise: sign-in, or the pricing page
/// (JSON callers get 401 / 402). A cached grant long past its period's end is checked with Stripe
/// first (`AccessPolicy::needs_fresh_read`).
pub struct Entitled(pub User, pub SubscriptionCache);

impl FromRequestParts<AppState> for Entitled {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let CurrentUser(user) = <CurrentUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let surface = Surface::of(parts);
        let access = entitlement(&state.billing, &state.policy, &user).await.map_err(|e| Failure::from_billing(surface, e))?;
        if access.entitled {
            Ok(Entitled(user, access.entry))
        } else {
            Err(Failure::not_entitled(surface))
        }
    }
}

/// Library mode: a layer for routes that need a feature of the user's plan (`PLAN_FEATURES`), as
/// a `GATED_PATHS` prefix written `prefix:feature` does in gateway mode —
/// `.route_layer(RequireFeature::new(&app.state, "export"))`. A visitor is sent to sign in, a
/// user without a subscription to pricing (401 / 402 for an API call), and a user whose plan
/// lacks the feature gets 402 naming it (pages: pricing, with the plans that have it marked).
#[derive(Clone)]
pub struct RequireFeature {
    state: AppState,
    feature: &'static str,
}

impl RequireFeature {
    pub fn new(state: &AppState, feature: &'static str) -> RequireFeature {
        RequireFeature { state: state.clone(), feature }
    }
}

impl<S> tower::Layer<S> for RequireFeature {
    type Service = FeatureGuard<S>;

    fn layer(&self, inner: S) -> FeatureGuard<S> {
        FeatureGuard { inner, check: self.clone() }
    }
}

/// The service [`RequireFeature`] wraps a route in.
#[derive(Clone)]
pub struct FeatureGuard<S> {
    inner: S,
    check: RequireFeature,
}

impl<S> tower::Service<axum::extract::Request> for FeatureGuard<S>
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        use axum::response::IntoResponse;
        // The clone that was made ready serves this request (tower's rule for cloned services).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let RequireFeature { state, feature } = self.check.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let Entitled(_, entry) = match Entitled::from_request_parts(&mut parts, &state).await {
                Ok(entitled) => entitled,
                Err(failure) => return Ok(failure.into_response()),
            };
            if !state.features.grant(&entry, feature) {
                return Ok(Failure::feature_required(Surface::of(&parts), feature).into_response());
            }
            let mut ready = ready;
            ready.call(axum::extract::Request::from_parts(parts, body)).await
        })
    }
}

/// The token of an `Authorization: Bearer` header, if the request has one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}
