//! `sync_stripe_data_to_kv`: the only writer of `stripe:customer:{id}`. It reads the customer's
//! subscriptions from Stripe and overwrites the cache entry; partial updates from event payloads
//! are never applied. `Coalescer` runs it at most once at a time per customer and lets requests
//! that arrive while one runs share the next run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::BillingError;
use crate::domain::{CachedSubscription, CustomerId, PaymentMethodSummary, SubscriptionCache, SubscriptionStatus};
use crate::kv::{keys, Kv};
use crate::stripe::wire::{List, PaymentMethod, Subscription};
use crate::stripe::StripeClient;

/// How many subscriptions one sync looks at to find a live one among ended ones (one call).
const SUBSCRIPTIONS_PER_SYNC: &str = "10";

#[tracing::instrument(skip(stripe, kv), fields(customer = %customer))]
pub async fn sync_stripe_data_to_kv(stripe: &StripeClient, kv: &dyn Kv, customer: &CustomerId) -> Result<SubscriptionCache, BillingError> {
    let list: List<Subscription> = stripe
        .get(
            "/v1/subscriptions",
            &[
                ("customer", customer.as_str()),
                ("status", "all"),
                ("limit", SUBSCRIPTIONS_PER_SYNC),
                ("expand[]", "data.default_payment_method"),
                ("expand[]", "data.customer.invoice_settings.default_payment_method"),
            ],
        )
        .await?;
    let entry = cache_entry(&list.data);
    let json = serde_json::to_string(&entry).expect("the cache entry always serialises");
    kv.set(&keys::customer_cache(customer), &json).await?;
    Ok(entry)
}

/// Pick the subscription to cache (newest live one, else newest) and read what the recipe caches.
pub fn cache_entry(subscriptions: &[Subscription]) -> SubscriptionCache {
    let status_of = |s: &Subscription| SubscriptionStatus::parse(&s.status).unwrap_or(SubscriptionStatus::Incomplete);
    let chosen = subscriptions.iter().find(|s| status_of(s).is_live()).or(subscriptions.first());
    let Some(sub) = chosen else { return SubscriptionCache::none() };
    let item = sub.items.data.first();
    let summary = |pm: &PaymentMethod| PaymentMethodSummary {
        brand: pm.card.as_ref().and_then(|c| c.brand.clone()),
        last4: pm.card.as_ref().and_then(|c| c.last4.clone()),
    };
    // The subscription's own method wins; otherwise invoices use the customer's default.
    let payment_method = sub
        .default_payment_method
        .as_ref()
        .and_then(|pm| pm.object())
        .or_else(|| sub.customer.as_ref()?.object()?.invoice_settings.as_ref()?.default_payment_method.as_ref()?.object())
        .map(summary);
    SubscriptionCache::Subscribed(CachedSubscription {
        subscription_id: Some(sub.id.clone()),
        status: status_of(sub),
        price_id: item.map(|i| i.price.id.clone()),
        current_period_start: item.and_then(|i| i.current_period_start).or(sub.current_period_start),
        current_period_end: item.and_then(|i| i.current_period_end).or(sub.current_period_end),
        cancel_at_period_end: sub.cancel_at_period_end,
        payment_method,
        cancel_at: sub.cancel_at,
        trial_end: sub.trial_end,
    })
}

/// Per-customer bookkeeping: requests are numbered; a run covers every request numbered before it started.
#[derive(Default)]
struct Slot {
    requested: Mutex<u64>,
    run: tokio::sync::Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    /// Every request numbered up to this was covered by a sync that succeeded.
    covered: u64,
    last: Option<SubscriptionCache>,
}

/// Serialises and coalesces syncs per customer: two syncs of one customer never overlap, a request
/// made during a sync gets a sync that starts after it, and requests that pile up share one run.
#[derive(Default)]
pub struct Coalescer {
    slots: Mutex<HashMap<CustomerId, Arc<Slot>>>,
}

impl Coalescer {
    pub async fn sync(&self, stripe: &StripeClient, kv: &dyn Kv, customer: &CustomerId) -> Result<SubscriptionCache, BillingError> {
        let slot = self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(customer.clone()).or_default().clone();
        let ticket = {
            let mut requested = slot.requested.lock().unwrap_or_else(|p| p.into_inner());
            *requested += 1;
            *requested
        };
        let result = {
            let mut run = slot.run.lock().await;
            match &run.last {
                Some(entry) if run.covered >= ticket => Ok(entry.clone()),
                _ => {
                    // Everything requested before this point is covered by the read below.
                    let covers = *slot.requested.lock().unwrap_or_else(|p| p.into_inner());
                    let result = sync_stripe_data_to_kv(stripe, kv, customer).await;
                    if let Ok(entry) = &result {
                        run.covered = covers;
                        run.last = Some(entry.clone());
                    }
                    result
                }
            }
        };
        // Forget idle customers so the map stays small (the map and this call hold the only references).
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&slot) == 2 {
            slots.remove(customer);
        }
        result
    }
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
