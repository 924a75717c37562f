//! Who is signed in: the provider interface, the built-in accounts (`local`) and Clerk (`clerk`).
//! The extractors that ask a provider (`http::extract`) sit above this module.

pub(crate) mod clerk;
pub(crate) mod local;
pub(crate) mod throttle;

use std::future::Future;
use std::pin::Pin;

use axum::http::request::Parts;

use tollgate_core::domain::User;
use tollgate_core::kv::KvError;

/// What a request's credentials say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Session {
    SignedIn(User),
    SignedOut,
    /// Clerk's rules send this page load elsewhere first (a 307 with these headers): to the
    /// Frontend API's handshake, which renews a stale or missing token, or back from one.
    Redirect(Box<axum::http::HeaderMap>),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The auth provider's own service (Clerk's Backend API) is unreachable or failing: retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The user has no email address (a phone-only Clerk user): no Stripe customer can be made.
    #[error("Your account has no email address. Add one to your profile, then try again.")]
    NoEmail,
    /// Clerk's handshake came back with a token that is not this instance's (a 400: the browser
    /// holds another instance's cookies, or someone forged them).
    #[error("{0}. Clear this site's cookies, then sign in again.")]
    Handshake(String),
}

pub(crate) type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Session, AuthError>> + Send + 'a>>;

/// A way of knowing who sent a request. Handlers never see which one is configured.
pub(crate) trait AuthProvider: Send + Sync {
    fn session<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a>;
    /// What identifies the request's credentials (for answers kept a moment, `gateway`); `None`
    /// when it carries none.
    fn credential<'p>(&self, parts: &'p Parts) -> Option<std::borrow::Cow<'p, str>>;
}

/// Where a program may send its API key instead of `Authorization: Bearer`.
pub(crate) const X_API_KEY: axum::http::HeaderName = axum::http::HeaderName::from_static("x-api-key");

/// The Tollgate API key a request carries (`Authorization: Bearer tg_…`, or `X-API-Key: tg_…`),
/// if any: only a value of a key's shape counts, so a product's own keys pass untouched.
pub(crate) fn api_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let header = headers.get(X_API_KEY).and_then(|v| v.to_str().ok());
    bearer.into_iter().chain(header).map(str::trim).find(|key| tollgate_core::api_keys::is_secret(key))
}

/// Reads one cookie from the request headers.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
