//! "May this user use the product?" answered from the KV alone (no Stripe call), and the
//! `Entitled` extractor that guards product routes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::{CurrentUser, User};
use crate::billing::{Billing, BillingError};
use crate::domain::{CustomerId, SubscriptionCache};
use crate::http::error::{Failure, Surface};
use crate::kv::keys;
use crate::state::AppState;

/// The user's cached subscription. A customer whose entry is missing or unreadable is synced once.
pub async fn cached_subscription(billing: &Arc<Billing>, user: &User) -> Result<(Option<CustomerId>, SubscriptionCache), BillingError> {
    let Some(customer) = billing.customer_of(user).await? else {
        return Ok((None, SubscriptionCache::none()));
    };
    let cached = billing.kv.get(&keys::customer_cache(&customer)).await?;
    let entry = match cached.as_deref().map(serde_json::from_str::<SubscriptionCache>) {
        Some(Ok(entry)) => entry,
        Some(Err(_)) | None => billing.sync(&customer).await?,
    };
    Ok((Some(customer), entry))
}

/// A signed-in user whose subscription grants access. Otherwise: sign-in, or the pricing page
/// (JSON callers get 401 / 402).
pub struct Entitled(pub User, pub SubscriptionCache);

impl FromRequestParts<AppState> for Entitled {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        let surface = Surface::of(parts);
        let (_, entry) = cached_subscription(&state.billing, &user).await.map_err(|e| Failure::from_billing(surface, e))?;
        if state.policy.grants(entry.status()) {
            Ok(Entitled(user, entry))
        } else {
            Err(Failure::not_entitled(surface))
        }
    }
}
