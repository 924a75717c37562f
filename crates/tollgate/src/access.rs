//! "May this user use the product?" answered from the KV alone (no Stripe call); the `Entitled`
//! extractor (`http::extract`) asks it for every gated request.

use std::sync::Arc;

use crate::billing::{Billing, BillingError};
use crate::domain::{CustomerId, SubscriptionCache, User};
use crate::kv::keys;

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
