//! `sync_stripe_data_to_kv`: the only writer of `stripe:customer:{id}`. It reads the customer's
//! subscriptions from Stripe and overwrites the cache entry (through `Kv::commit_sync`); partial
//! updates from event payloads are never applied.
//!
//! Who runs it, and when, is coordinated through the KV so that it holds across instances
//! (ARCHITECTURE.md, "Syncs across instances", has the argument):
//! - a tracked webhook only records "customer X is dirty" (a generation bump) and answers;
//! - [`Billing::settle`] runs the sync while holding the customer's lease, and its commit writes
//!   the entry and clears the mark only if the lease is still held and no event came meanwhile;
//! - [`Billing::sync`] (a person is waiting: `/success`, checkout) records a mark of its own and
//!   settles it inline, or waits for whoever holds the lease to settle it.

use std::sync::Arc;
use std::time::Duration;

use super::{Billing, BillingError};
use crate::domain::{CachedDiscount, CachedSubscription, CustomerId, Payer, PaymentMethodSummary, SubscriptionCache, SubscriptionStatus};
use crate::kv::{keys, Commit};
use crate::stripe::wire::{ActiveEntitlement, Discount, List, PaymentMethod, Subscription};
use crate::stripe::{StripeClient, StripeError, Turn};

/// How many subscriptions one sync looks at to find a live one among ended ones (one call).
const SUBSCRIPTIONS_PER_SYNC: &str = "10";

/// A lease outlives any one sync step (a Stripe call ends within its deadline), so it only
/// expires when its holder died; then another instance takes over.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// How long a waiting person's sync waits for another instance's run before giving up (503).
const INLINE_WAIT: Duration = Duration::from_secs(10);

/// What one read of a customer's subscriptions gives.
pub struct Fetched {
    pub entry: SubscriptionCache,
    /// The customer's payer (`metadata.orgId`, else the recipe's `metadata.userId`) when one of
    /// these subscriptions had a trial: they have had theirs (`billing::trial`).
    pub trialed: Option<Payer>,
    /// The subscriptions read, newest first.
    pub subscriptions: Vec<Subscription>,
}

/// Read the customer's subscriptions from Stripe and make the cache entry (no write). `turn`: a
/// turn under the rate limit already waited for (else the call waits for one). With
/// `entitlements` (`ENTITLEMENTS=stripe`), a subscribed customer's active entitlements are read
/// too (a second call), their lookup keys cached as `features`.
#[tracing::instrument(skip(stripe, turn), fields(customer = %customer))]
pub async fn fetch_subscription_state(
    stripe: &StripeClient,
    customer: &CustomerId,
    turn: Option<Turn>,
    entitlements: bool,
) -> Result<Fetched, StripeError> {
    let query = [
        ("customer", customer.as_str()),
        ("status", "all"),
        ("limit", SUBSCRIPTIONS_PER_SYNC),
        ("expand[]", "data.default_payment_method"),
        ("expand[]", "data.customer.invoice_settings.default_payment_method"),
        ("expand[]", "data.discounts.source.coupon"),
        ("expand[]", "data.discounts.promotion_code"),
        ("expand[]", "data.schedule"),
    ];
    let list: List<Subscription> = match turn {
        Some(turn) => stripe.get_in_turn(turn, "/v1/subscriptions", &query).await?,
        None => stripe.get("/v1/subscriptions", &query).await?,
    };
    let mut entry = cache_entry(&list.data);
    if let (true, SubscriptionCache::Subscribed(subscription)) = (entitlements, &mut entry) {
        subscription.features = Some(active_features(stripe, customer).await?);
    }
    if let Some(n) = entry.subscription().and_then(|s| s.live_subscriptions) {
        tracing::error!(customer = %customer, live = n, "the customer has more than one live subscription; the newest is cached");
    }
    let trialed = match super::trial::had_a_trial(&list.data) {
        false => None,
        true => list.data.iter().find_map(|s| Payer::of_metadata(&s.customer.as_ref()?.object()?.metadata)),
    };
    Ok(Fetched { entry, trialed, subscriptions: list.data })
}

/// The lookup keys of the customer's active entitlements, sorted (the first 100: more features
/// than that on one customer is not a plan).
async fn active_features(stripe: &StripeClient, customer: &CustomerId) -> Result<Vec<String>, StripeError> {
    let query = [("customer", customer.as_str()), ("limit", "100")];
    let list: List<ActiveEntitlement> = stripe.get("/v1/entitlements/active_entitlements", &query).await?;
    let mut keys: Vec<String> = list.data.into_iter().map(|e| e.lookup_key).collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// The recipe's `syncStripeDataToKV`, fenced: read the customer's subscriptions from Stripe, then
/// write the entry in one step with the pending mark's clearing, if `token` still holds the lease.
/// An organization's per-seat subscription gets its seat count set in between (`billing::seats`).
/// When Stripe refuses the read (the customer is gone), the mark is dropped: retrying cannot help.
async fn sync_stripe_data_to_kv(
    billing: &Billing,
    customer: &CustomerId,
    token: &str,
    generation: u64,
    turn: Turn,
) -> Result<(SubscriptionCache, Commit), BillingError> {
    let (stripe, kv) = (billing.stripe.as_ref(), billing.kv.as_ref());
    match fetch_subscription_state(stripe, customer, Some(turn), billing.entitlements_from_stripe).await {
        Ok(Fetched { entry, trialed, subscriptions }) => {
            let live = subscriptions.iter().find(|s| SubscriptionStatus::parse(&s.status).is_some_and(|s| s.is_live()));
            match super::seats::reconcile(stripe, &billing.seats, customer, live).await {
                // Stripe refused the seat count: the cache is still written (the next change tries again).
                Err(BillingError::Stripe(refused @ StripeError::Refused { .. })) => {
                    tracing::error!(customer = %customer, error = %refused, "Stripe refused the seat count");
                }
                other => other?,
            }
            let json = serde_json::to_string(&entry).expect("the cache entry always serialises");
            let commit = kv.commit_sync(customer.as_str(), token, generation, Some(&json)).await?;
            if let Some(payer) = trialed {
                kv.set(&keys::trialed(&payer), "1").await?;
            }
            Ok((entry, commit))
        }
        Err(e) => {
            if matches!(e, StripeError::Refused { .. }) {
                tracing::error!(customer = %customer, error = %e, "Stripe refused the sync; dropping the pending mark");
                kv.commit_sync(customer.as_str(), token, generation, None).await?;
            }
            Err(e.into())
        }
    }
}

/// What one [`Billing::settle`] call did.
#[derive(Debug)]
pub enum Settled {
    /// Synced (possibly several times) until nothing was pending; the last entry written.
    Synced(SubscriptionCache),
    /// Nothing was pending.
    Idle,
    /// Another run holds the lease: it settles the customer (it checks again after releasing).
    Busy,
}

impl Billing {
    /// Webhook intake: durably note that `customer` needs a sync, then wake this instance's drain.
    /// False when the event id was recorded before (a redelivery: nothing to do).
    pub async fn record_event(&self, customer: &CustomerId, event_id: &str) -> Result<bool, BillingError> {
        let recorded = self.kv.mark_pending(customer.as_str(), Some(event_id)).await?;
        if recorded {
            self.drain.wake(customer.clone());
        }
        Ok(recorded)
    }

    /// Note that `customer` needs a sync (not for a webhook event) and wake this instance's drain.
    pub async fn mark_pending(&self, customer: &CustomerId) -> Result<(), BillingError> {
        self.kv.mark_pending(customer.as_str(), None).await?;
        self.drain.wake(customer.clone());
        Ok(())
    }

    /// Sync now, for someone waiting on the answer. The run is spawned, so a client that hangs up
    /// does not abandon a lease half-way.
    pub async fn sync(self: &Arc<Self>, customer: &CustomerId) -> Result<SubscriptionCache, BillingError> {
        let billing = self.clone();
        let customer = customer.clone();
        tokio::spawn(async move { billing.sync_waiting(&customer).await })
            .await
            .map_err(|e| BillingError::Corrupt(format!("the sync task failed: {e}")))?
    }

    async fn sync_waiting(&self, customer: &CustomerId) -> Result<SubscriptionCache, BillingError> {
        // Our own mark: whatever settles it read Stripe after this point.
        self.kv.mark_pending(customer.as_str(), None).await?;
        let deadline = tokio::time::Instant::now() + INLINE_WAIT;
        loop {
            match self.settle(customer).await? {
                Settled::Synced(entry) => return Ok(entry),
                Settled::Idle => match self.cached_entry(customer).await? {
                    Some(entry) => return Ok(entry),
                    // Deleted or overwritten since it was settled: settle it again.
                    None => self.kv.mark_pending(customer.as_str(), None).await.map(drop)?,
                },
                Settled::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(StripeError::Unavailable("another sync of this customer is taking too long".into()).into())
                }
                Settled::Busy => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// The stored entry; missing or unreadable only if something else wrote there since a sync.
    pub(super) async fn cached_entry(&self, customer: &CustomerId) -> Result<Option<SubscriptionCache>, BillingError> {
        let key = keys::customer_cache(customer);
        let value = self.kv.get(&key).await?;
        let entry = value.as_deref().and_then(super::recipe::read_cache_entry);
        if value.is_some() && entry.is_none() {
            super::recipe::unreadable("stripe:customer", &key);
        }
        Ok(entry)
    }

    /// Sync `customer` while anything is pending for it, holding its lease. Errors leave the mark
    /// in place (to be retried), except when Stripe refuses the read: retrying cannot help then.
    pub async fn settle(&self, customer: &CustomerId) -> Result<Settled, BillingError> {
        let token = crate::random::random_token(20);
        let lease = keys::sync_lease(customer.as_str());
        let outcome = self.settle_with(customer, &lease, &token).await;
        if outcome.is_err() {
            // Free the lease for the retry (best effort: otherwise it expires).
            let _ = self.kv.release(&lease, &token).await;
        }
        outcome
    }

    async fn settle_with(&self, customer: &CustomerId, lease: &str, token: &str) -> Result<Settled, BillingError> {
        let mut last = None;
        loop {
            if !self.kv.lease(lease, token, LEASE_TTL).await? {
                // What we wrote (if anything) covered every mark made before our read.
                return Ok(last.map_or(Settled::Busy, Settled::Synced));
            }
            // Pending: wait for the turn under Stripe's rate limit, then read the mark's generation
            // again if that took time. When the limit is the bottleneck the wait is long, and the
            // marks made during it are read by this call instead of making another.
            let pending = match self.kv.pending_generation(customer.as_str()).await? {
                None => None,
                Some(generation) => {
                    let turn = self.stripe.turn().await?;
                    match turn.waited() {
                        true => self.kv.pending_generation(customer.as_str()).await?.map(|generation| (generation, turn)),
                        false => Some((generation, turn)),
                    }
                }
            };
            let Some((generation, turn)) = pending else {
                self.kv.release(lease, token).await?;
                return Ok(last.map_or(Settled::Idle, Settled::Synced));
            };
            let started = std::time::Instant::now();
            let synced = sync_stripe_data_to_kv(self, customer, token, generation, turn).await;
            let outcome = match &synced {
                Ok((_, Commit::Clean)) => "clean",
                Ok((_, Commit::DirtyAgain)) => "dirty_again",
                Ok((_, Commit::LeaseLost)) => "lease_lost",
                Err(_) => "failed",
            };
            let metrics = &crate::metrics::METRICS;
            metrics.syncs.with_label_values(&[outcome]).inc();
            metrics.sync_duration.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
            let (entry, commit) = synced?;
            match commit {
                Commit::LeaseLost => return Ok(last.map_or(Settled::Busy, Settled::Synced)),
                // An event came during the read: read again, still holding the lease.
                Commit::DirtyAgain => last = Some(entry),
                // Release, then look once more: a mark made after our commit while we still held
                // the lease found us busy, and only we will look (the proof in ARCHITECTURE.md).
                Commit::Clean => {
                    self.kv.release(lease, token).await?;
                    last = Some(entry);
                }
            }
        }
    }
}

/// Pick the subscription to cache (newest live one, else newest) and read what the recipe caches.
pub fn cache_entry(subscriptions: &[Subscription]) -> SubscriptionCache {
    let status_of = |s: &Subscription| SubscriptionStatus::parse(&s.status).unwrap_or(SubscriptionStatus::Incomplete);
    let chosen = subscriptions.iter().find(|s| status_of(s).is_live()).or(subscriptions.first());
    let Some(sub) = chosen else { return SubscriptionCache::none() };
    let item = sub.plan_item();
    let summary = |pm: &PaymentMethod| PaymentMethodSummary {
        brand: pm.card.as_ref().and_then(|c| c.brand.clone()),
        last4: pm.card.as_ref().and_then(|c| c.last4.clone()),
    };
    // The subscription's own method wins; otherwise invoices use the customer's default.
    // The schedule's first phase after this period, if it is still to come.
    let period_end = item.and_then(|i| i.current_period_end).or(sub.current_period_end);
    let next_phase = sub
        .schedule
        .as_ref()
        .and_then(|s| s.object())
        .filter(|s| s.status == "active")
        .and_then(|s| s.phases.iter().find(|p| period_end.is_some_and(|end| p.start_date >= end)))
        // Only a phase that changes the price is a change to show.
        .filter(|p| p.items.first().is_some_and(|i| Some(i.price_id()) != item.map(|i| i.price.id.as_str())));
    let payment_method = sub
        .default_payment_method
        .as_ref()
        .and_then(|pm| pm.object())
        .or_else(|| sub.customer.as_ref()?.object()?.invoice_settings.as_ref()?.default_payment_method.as_ref()?.object())
        .map(summary);
    SubscriptionCache::Subscribed(Box::new(CachedSubscription {
        subscription_id: Some(sub.id.clone()),
        status: status_of(sub),
        price_id: item.map(|i| i.price.id.clone()),
        current_period_start: item.and_then(|i| i.current_period_start).or(sub.current_period_start),
        current_period_end: item.and_then(|i| i.current_period_end).or(sub.current_period_end),
        cancel_at_period_end: sub.cancel_at_period_end,
        payment_method,
        cancel_at: sub.cancel_at,
        trial_end: sub.trial_end,
        features: None,
        discount: sub.discounts.iter().find_map(|d| cached_discount(d.object()?)),
        scheduled_price_id: next_phase.and_then(|p| p.items.first()).map(|i| i.price_id().to_string()),
        scheduled_at: next_phase.map(|p| p.start_date),
        live_subscriptions: Some(subscriptions.iter().filter(|s| status_of(s).is_live()).count()).filter(|n| *n > 1),
    }))
}

/// A discount as the cache keeps it; `None` when its coupon was not expanded.
fn cached_discount(discount: &Discount) -> Option<CachedDiscount> {
    let coupon = discount.source.coupon.as_ref()?.object()?;
    Some(CachedDiscount {
        coupon: coupon.name.clone().unwrap_or_else(|| coupon.id.clone()),
        promotion_code: discount.promotion_code.as_ref().and_then(|p| p.object()).map(|p| p.code.clone()),
        percent_off: coupon.percent_off,
        amount_off: coupon.amount_off,
        currency: coupon.currency.clone(),
        duration: coupon.duration.clone(),
        end: discount.end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subs(value: serde_json::Value) -> Vec<Subscription> {
        serde_json::from_value(value).unwrap()
    }

    fn sub(id: &str, status: &str) -> serde_json::Value {
        json!({"id": id, "status": status, "cancel_at_period_end": false, "cancel_at": null, "trial_end": null, "default_payment_method": null, "customer": "cus_1",
               "items": {"data": [{"price": {"id": "price_1", "currency": "usd", "product": "prod_1", "unit_amount": 100, "recurring": {"interval": "month", "interval_count": 1}}, "current_period_start": 10, "current_period_end": 20}]}})
    }

    #[test]
    fn prefers_a_live_subscription_over_a_newer_ended_one() {
        let entry = cache_entry(&subs(json!([sub("sub_new", "canceled"), sub("sub_old", "active")])));
        let s = entry.subscription().unwrap();
        assert_eq!(s.subscription_id.as_deref(), Some("sub_old"));
        assert_eq!(s.status, SubscriptionStatus::Active);
        assert_eq!((s.current_period_start, s.current_period_end), (Some(10), Some(20)));
        let ended = cache_entry(&subs(json!([sub("sub_b", "canceled"), sub("sub_a", "incomplete_expired")])));
        assert_eq!(ended.subscription().unwrap().subscription_id.as_deref(), Some("sub_b"));
        assert_eq!(cache_entry(&[]), SubscriptionCache::none());
    }

    #[test]
    fn periods_fall_back_to_pre_basil_fields_and_cards_to_the_customer_default() {
        let mut old = sub("sub_1", "trialing");
        old["items"]["data"][0].as_object_mut().unwrap().remove("current_period_start");
        old["items"]["data"][0].as_object_mut().unwrap().remove("current_period_end");
        old["current_period_start"] = json!(5);
        old["current_period_end"] = json!(6);
        old["customer"] =
            json!({"id": "cus_1", "invoice_settings": {"default_payment_method": {"card": {"brand": "mastercard", "last4": "4444"}}}});
        let entry = cache_entry(&subs(json!([old])));
        let s = entry.subscription().unwrap();
        assert_eq!((s.current_period_start, s.current_period_end), (Some(5), Some(6)));
        assert_eq!(s.payment_method.as_ref().unwrap().last4.as_deref(), Some("4444"));
        let mut own = sub("sub_2", "active");
        own["default_payment_method"] = json!({"card": {"brand": "visa", "last4": "4242"}});
        own["customer"] =
            json!({"id": "cus_1", "invoice_settings": {"default_payment_method": {"card": {"brand": "mastercard", "last4": "4444"}}}});
        assert_eq!(
            cache_entry(&subs(json!([own]))).subscription().unwrap().payment_method.as_ref().unwrap().last4.as_deref(),
            Some("4242")
        );
        let unexpanded = sub("sub_3", "active");
        assert!(cache_entry(&subs(json!([unexpanded]))).subscription().unwrap().payment_method.is_none());
    }
}
