//! The extractors handlers use to know who calls: `CurrentUser` (signed in, or 401 / sign-in page)
//! and `Entitled` (signed in with a subscription that grants access, or 402 / pricing page).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use super::error::{Failure, Surface};
use crate::access::cached_subscription;
use crate::domain::{SubscriptionCache, User};
use crate::state::AppState;

/// The signed-in user. Without one, an API call gets 401 JSON and a page visit goes to `/auth`.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        match state.auth.authenticate(parts).await {
            Ok(Some(user)) => Ok(CurrentUser(user)),
            // After signing in, come back to the page asked for; a form post cannot be replayed, so
            // it comes back to the pricing page instead.
            Ok(None) => {
                let back_to =
                    if parts.method == axum::http::Method::GET { parts.uri.path_and_query().map_or("/", |p| p.as_str()) } else { "/" };
                Err(Failure::signed_out(Surface::of(parts), back_to))
            }
            Err(e) => Err(Failure::from_kv(Surface::of(parts), e)),
        }
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Failure> {
        match state.auth.authenticate(parts).await {
            Ok(user) => Ok(user.map(CurrentUser)),
            Err(e) => Err(Failure::from_kv(Surface::of(parts), e)),
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
        let failure = |e| Failure::from_billing(surface, e);
        let (customer, mut entry) = cached_subscription(&state.billing, &user).await.map_err(failure)?;
        // A grant whose period ended long ago may be one whose webhooks were lost: ask Stripe.
        if let Some(customer) = customer.filter(|_| state.policy.needs_fresh_read(&entry, crate::unix_now())) {
            entry = state.billing.sync(&customer).await.map_err(failure)?;
        }
        if state.policy.grants(entry.status()) {
            Ok(Entitled(user, entry))
        } else {
            Err(Failure::not_entitled(surface))
        }
    }
}
