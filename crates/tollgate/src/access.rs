//! "May this user use the product?" answered from the KV alone (no Stripe call, except for a
//! grant long past its period's end); the `Entitled` extractor, the gateway, forward-auth and the
//! service endpoint all ask `entitlement`. Whose subscription counts is the policy's
//! (`BILLING_SUBJECT`): the user's, the active organization's, or either.

use std::sync::Arc;

use tollgate_core::billing::{recipe, Billing, BillingError};
use tollgate_core::domain::{AccessPolicy, CustomerId, Limits, OrgId, Payer, PlanLimits, SubscriptionCache, User};
use tollgate_core::kv::keys;

/// The payer's cached subscription. A customer whose entry is missing or unreadable is synced once.
pub(crate) async fn cached_subscription(
    billing: &Arc<Billing>,
    payer: &Payer,
) -> Result<(Option<CustomerId>, SubscriptionCache), BillingError> {
    let Some(customer) = billing.customer_of(payer).await? else {
        return Ok((None, SubscriptionCache::none()));
    };
    let key = keys::customer_cache(&customer);
    let entry = match billing.kv.get(&key).await?.map(|value| recipe::read_cache_entry(&value)) {
        Some(Some(entry)) => entry,
        Some(None) => {
            recipe::unreadable("stripe:customer", &key);
            billing.sync(&customer).await?
        }
        None => billing.sync(&customer).await?,
    };
    Ok((Some(customer), entry))
}

/// What the policy says about a user, with the entry it read.
pub(crate) struct Entitlement {
    pub(crate) entry: SubscriptionCache,
    pub(crate) entitled: bool,
    /// Whose entry it is (none when the user has no payer).
    pub(crate) payer: Option<Payer>,
    /// The payer's Stripe customer (none before their first checkout).
    pub(crate) customer: Option<CustomerId>,
}

/// Whether `user` may use the product: the first of the policy's payers whose subscription grants
/// it (otherwise not entitled, with the first payer's entry); through an organization, only
/// within its plan's seat cap. A cached grant long past its period's end may be one whose
/// webhooks were lost: it is checked with Stripe first (`AccessPolicy::needs_fresh_read`).
pub(crate) async fn entitlement(billing: &Arc<Billing>, policy: &AccessPolicy, user: &User) -> Result<Entitlement, BillingError> {
    let mut first = None;
    for payer in policy.payers(user) {
        let access = match &payer {
            Payer::Org(org) => org_entitlement(billing, policy, user, org).await?,
            Payer::User(_) => payer_entitlement(billing, policy, &payer).await?,
        };
        if access.entitled {
            return Ok(access);
        }
        first.get_or_insert(access);
    }
    Ok(first.unwrap_or(Entitlement { entitled: false, entry: SubscriptionCache::none(), payer: None, customer: None }))
}

/// Whether `org`'s subscription lets `user`, its member, use the product: it grants access, and
/// the user is within its plan's seat cap (members beyond it wait until an owner makes room).
pub(crate) async fn org_entitlement(
    billing: &Arc<Billing>,
    policy: &AccessPolicy,
    user: &User,
    org: &OrgId,
) -> Result<Entitlement, BillingError> {
    let mut access = payer_entitlement(billing, policy, &Payer::Org(org.clone())).await?;
    if let (true, Some(price)) = (access.entitled, access.entry.subscription().and_then(|s| s.price_id.as_deref())) {
        access.entitled = !billing.beyond_the_seat_cap(org, &user.id, price).await?;
    }
    Ok(access)
}

/// Whether `payer`'s own subscription grants access (see [`entitlement`]).
pub(crate) async fn payer_entitlement(billing: &Arc<Billing>, policy: &AccessPolicy, payer: &Payer) -> Result<Entitlement, BillingError> {
    let (customer, mut entry) = cached_subscription(billing, payer).await?;
    if let Some(customer) = customer.as_ref().filter(|_| policy.needs_fresh_read(&entry, billing.clock.unix_now())) {
        entry = billing.sync(customer).await?;
    }
    Ok(Entitlement { entitled: policy.grants(entry.status()), entry, payer: Some(payer.clone()), customer })
}

/// The quotas of the plan with `price` on `API_PATHS`: `PLAN_LIMITS`, else the price's
/// `metadata.tollgate_limits` (from the catalogue, kept in memory).
pub(crate) async fn limits_of(billing: &Arc<Billing>, configured: &PlanLimits, price: &str) -> Option<Limits> {
    if let Some(limits) = configured.by_price.get(price) {
        return Some(*limits);
    }
    let plans = billing.catalog.plans(&billing.stripe).await.ok()?;
    plans.iter().find(|p| p.price_id.as_str() == price).and_then(|p| p.limits)
}

/// The entry that still entitles `user`, from the cache alone and never a Stripe call (an open
/// WebSocket tunnel asks this every `ENTITLEMENT_RECHECK`). A missing or unreadable entry, or a
/// grant that would need a fresh read, counts as no: the client's next handshake goes through
/// [`entitlement`], which reads Stripe.
pub(crate) async fn entitled_from_cache(
    billing: &Arc<Billing>,
    policy: &AccessPolicy,
    user: &User,
) -> Result<Option<SubscriptionCache>, BillingError> {
    for payer in policy.payers(user) {
        let Some(customer) = billing.customer_of(&payer).await? else { continue };
        let Some(value) = billing.kv.get(&keys::customer_cache(&customer)).await? else { continue };
        let Some(entry) = recipe::read_cache_entry(&value) else { continue };
        if policy.grants(entry.status()) && !policy.needs_fresh_read(&entry, billing.clock.unix_now()) {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}
