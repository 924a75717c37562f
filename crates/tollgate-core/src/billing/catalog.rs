//! The plans on offer, read from Stripe (name, amount, interval) and kept for a few minutes.
//!
//! No lock is held across a Stripe call: a stale copy is served at once while one background
//! refresh runs, and the very first load has a budget of [`FIRST_LOAD_BUDGET`], so a hung Stripe
//! costs the pricing page seconds, not minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

use super::BillingError;
use crate::domain::{Plan, PriceId};
use crate::stripe::wire::{Expandable, List, Price, ProductFeature};
use crate::stripe::{StripeClient, StripeError};

const FRESH_FOR: Duration = Duration::from_secs(300);
const FIRST_LOAD_BUDGET: Duration = Duration::from_secs(2);

pub struct Catalog {
    pub price_ids: Vec<PriceId>,
    /// `ENTITLEMENTS=stripe`: read each plan's product features too (for the pricing page).
    pub with_features: bool,
    fresh_for: Duration,
    cached: Mutex<Option<(tokio::time::Instant, Arc<Vec<Plan>>)>>,
    refreshing: AtomicBool,
    clock: Clock,
}

impl Catalog {
    pub fn new(price_ids: Vec<PriceId>, clock: Clock) -> Catalog {
        Catalog {
            price_ids,
            with_features: false,
            fresh_for: FRESH_FOR,
            cached: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            clock,
        }
    }

    /// The same, reading each plan's product features too (`ENTITLEMENTS=stripe`).
    pub fn with_features(self, with_features: bool) -> Catalog {
        Catalog { with_features, ..self }
    }

    fn snapshot(&self) -> Option<(tokio::time::Instant, Arc<Vec<Plan>>)> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn store(&self, plans: Vec<Plan>) -> Arc<Vec<Plan>> {
        let plans = Arc::new(plans);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.clock.now(), plans.clone()));
        plans
    }

    /// The plans in configured order. A stale copy is returned at once (and refreshed in the
    /// background); without any copy, Stripe gets [`FIRST_LOAD_BUDGET`] to answer.
    pub async fn plans(self: &Arc<Self>, stripe: &Arc<StripeClient>) -> Result<Arc<Vec<Plan>>, BillingError> {
        match self.snapshot() {
            Some((at, plans)) if self.clock.now() - at < self.fresh_for => Ok(plans),
            Some((_, plans)) => {
                self.refresh_in_background(stripe);
                Ok(plans)
            }
            None => match tokio::time::timeout(FIRST_LOAD_BUDGET, self.fetch(stripe)).await {
                Ok(fetched) => Ok(self.store(fetched?)),
                Err(_) => Err(StripeError::Unavailable(format!("the plans did not load within {} s", FIRST_LOAD_BUDGET.as_secs())).into()),
            },
        }
    }

    /// One refresh at a time; a failure keeps the stale copy (and is tried again next time).
    fn refresh_in_background(self: &Arc<Self>, stripe: &Arc<StripeClient>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (catalog, stripe) = (self.clone(), stripe.clone());
        tokio::spawn(async move {
            match catalog.fetch(&stripe).await {
                Ok(plans) => {
                    catalog.store(plans);
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the plans; serving the last known ones"),
            }
            catalog.refreshing.store(false, Ordering::Release);
        });
    }

    async fn fetch(&self, stripe: &StripeClient) -> Result<Vec<Plan>, BillingError> {
        let mut plans = Vec::with_capacity(self.price_ids.len());
        for id in &self.price_ids {
            let price: Price = stripe.get(&format!("/v1/prices/{id}"), &[("expand[]", "product")]).await?;
            let (per_seat, max_seats) = (super::seats::metadata_per_seat(&price), super::seats::metadata_max_seats(&price));
            let recurring = price.recurring.ok_or_else(|| BillingError::Corrupt(format!("{id} is not a recurring price")))?;
            let (product_id, product_name) = match &price.product {
                Expandable::Object(p) => (p.id.clone(), p.name.clone()),
                Expandable::Id(p) => (p.clone(), p.clone()),
            };
            let features = match self.with_features {
                false => Vec::new(),
                true => {
                    let attached: List<ProductFeature> =
                        stripe.get(&format!("/v1/products/{product_id}/features"), &[("limit", "100")]).await?;
                    attached.data.into_iter().filter(|a| a.entitlement_feature.active).map(|a| a.entitlement_feature.lookup_key).collect()
                }
            };
            plans.push(Plan {
                limits: price.metadata.get("tollgate_limits").and_then(|l| crate::domain::Limits::parse(l).ok()),
                per_seat,
                max_seats,
                price_id: id.clone(),
                product_name,
                unit_amount: price.unit_amount.unwrap_or(0),
                currency: price.currency,
                interval: recurring.interval,
                interval_count: recurring.interval_count,
                features,
            });
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Instant;

    #[tokio::test]
    async fn a_hung_stripe_never_holds_the_pricing_page() {
        // Accepts connections and never answers.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stripe = Arc::new(StripeClient::new(&format!("http://{}", hung.local_addr().unwrap()), Secret::new("sk_test_x"), None));
        let catalog =
            Arc::new(Catalog { fresh_for: Duration::ZERO, ..Catalog::new(vec![PriceId::parse("price_a").unwrap()], Clock::system()) });

        let started = Instant::now();
        assert!(catalog.plans(&stripe).await.is_err(), "nothing known yet, nothing to show");
        assert!(started.elapsed() < FIRST_LOAD_BUDGET + Duration::from_millis(500), "{:?}", started.elapsed());

        let known = Plan {
            price_id: PriceId::parse("price_a").unwrap(),
            product_name: "Pro".into(),
            unit_amount: 100,
            currency: "usd".into(),
            interval: "month".into(),
            interval_count: 1,
            features: Vec::new(),
            per_seat: false,
            max_seats: None,
            limits: None,
        };
        catalog.store(vec![known.clone()]);
        let started = Instant::now();
        for _ in 0..3 {
            assert_eq!(*catalog.plans(&stripe).await.unwrap(), vec![known.clone()], "the stale copy, at once");
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(catalog.refreshing.load(Ordering::Acquire), "one refresh runs in the background");
    }
}
