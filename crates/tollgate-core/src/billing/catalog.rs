//! The plans on offer, read from Stripe (name, amount, interval) and kept for a few minutes.
//!
//! One load at a time runs, in a task of its own, and no caller holds a lock across it: a stale
//! copy is served at once while it runs, and with no copy yet callers wait for it up to
//! [`FIRST_LOAD_BUDGET`] (a hung Stripe costs the pricing page seconds, not minutes). A caller
//! that stops waiting, or hangs up, does not stop the load: its Stripe calls hold turns under the
//! shared rate limit, and a load abandoned after its first turn would waste them while the next
//! caller starts another. A fresh instance under load then never got its plans (each request
//! began a load and gave up on it) and crowded the shared rate limit for every instance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;

use super::BillingError;
use crate::domain::{Plan, PriceId};
use crate::stripe::wire::{Expandable, List, Price, ProductFeature};
use crate::stripe::{StripeClient, StripeError};

const FRESH_FOR: Duration = Duration::from_secs(300);
const FIRST_LOAD_BUDGET: Duration = Duration::from_secs(2);

/// What the loads have made known so far.
#[derive(Default)]
struct Known {
    /// The last plans loaded, and when.
    plans: Option<(tokio::time::Instant, Arc<Vec<Plan>>)>,
    /// Why the last load failed (cleared by a load that succeeds).
    failure: Option<BillingError>,
    /// How many loads have ended, either way: a caller waits for the next one.
    loads_ended: u64,
}

pub struct Catalog {
    pub price_ids: Vec<PriceId>,
    /// `ENTITLEMENTS=stripe`: read each plan's product features too (for the pricing page).
    pub with_features: bool,
    fresh_for: Duration,
    known: watch::Sender<Known>,
    loading: AtomicBool,
    clock: Clock,
}

impl Catalog {
    pub fn new(price_ids: Vec<PriceId>, clock: Clock) -> Catalog {
        Catalog {
            price_ids,
            with_features: false,
            fresh_for: FRESH_FOR,
            known: watch::Sender::new(Known::default()),
            loading: AtomicBool::new(false),
            clock,
        }
    }

    /// The same, reading each plan's product features too (`ENTITLEMENTS=stripe`).
    pub fn with_features(self, with_features: bool) -> Catalog {
        Catalog { with_features, ..self }
    }

    /// The plans in configured order. A stale copy is returned at once (and reloaded in the
    /// background); without any copy, the load (started now, or already running) gets
    /// [`FIRST_LOAD_BUDGET`] to end.
    pub async fn plans(self: &Arc<Self>, stripe: &Arc<StripeClient>) -> Result<Arc<Vec<Plan>>, BillingError> {
        let mut known = self.known.subscribe();
        let ended_before = {
            let now = known.borrow_and_update();
            match &now.plans {
                Some((at, plans)) if self.clock.now() - *at < self.fresh_for => return Ok(plans.clone()),
                Some((_, plans)) => {
                    let stale = plans.clone();
                    drop(now);
                    self.load_in_background(stripe);
                    return Ok(stale);
                }
                None => now.loads_ended,
            }
        };
        self.load_in_background(stripe);
        let ended = tokio::time::timeout(FIRST_LOAD_BUDGET, known.wait_for(|k| k.plans.is_some() || k.loads_ended > ended_before)).await;
        if let Ok(Ok(now)) = ended {
            match (&now.plans, &now.failure) {
                (Some((_, plans)), _) => return Ok(plans.clone()),
                (None, Some(failure)) => return Err(failure.clone()),
                (None, None) => {}
            }
        }
        Err(StripeError::Unavailable(format!("the plans did not load within {} s", FIRST_LOAD_BUDGET.as_secs())).into())
    }

    /// Start a load unless one is running; a failure keeps the last copy (and is tried again by
    /// the next caller).
    fn load_in_background(self: &Arc<Self>, stripe: &Arc<StripeClient>) {
        if self.loading.swap(true, Ordering::AcqRel) {
            return;
        }
        let (catalog, stripe) = (self.clone(), stripe.clone());
        tokio::spawn(async move {
            let loaded = catalog.fetch(&stripe).await;
            if let Err(e) = &loaded {
                tracing::warn!(error = %e, "could not load the plans; serving the last known ones, if any");
            }
            catalog.loading.store(false, Ordering::Release);
            catalog.known.send_modify(|known| {
                known.loads_ended += 1;
                match loaded {
                    Ok(plans) => (known.plans, known.failure) = (Some((catalog.clock.now(), Arc::new(plans))), None),
                    Err(e) => known.failure = Some(e),
                }
            });
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
    use std::future::Future;
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
        catalog.known.send_modify(|k| k.plans = Some((catalog.clock.now(), Arc::new(vec![known.clone()]))));
        let started = Instant::now();
        for _ in 0..3 {
            assert_eq!(*catalog.plans(&stripe).await.unwrap(), vec![known.clone()], "the stale copy, at once");
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(catalog.loading.load(Ordering::Acquire), "one load runs in the background");
    }

    /// Callers that come together share one load; callers that stop waiting do not stop it; a
    /// load that fails says why to the callers waiting for it. (One thread: the load cannot run
    /// while a caller takes its first step.)
    #[tokio::test]
    async fn callers_share_one_load_which_outlives_them() {
        use std::sync::atomic::Ordering::Relaxed;
        let (emulator, url, _) = stripe_emulator::Emulator::build(stripe_emulator::EmulatorConfig::for_tests()).await.unwrap().spawn();
        let stripe = Arc::new(StripeClient::new(&url, Secret::new("sk_test_x"), None));
        let product: serde_json::Value = stripe.post("/v1/products", &[("name", "Pro")], None).await.unwrap();
        let mut ids = Vec::new();
        for interval in ["month", "year"] {
            let form = [
                ("product", product["id"].as_str().unwrap()),
                ("currency", "usd"),
                ("unit_amount", "900"),
                ("recurring[interval]", interval),
            ];
            let price: serde_json::Value = stripe.post("/v1/prices", &form, None).await.unwrap();
            ids.push(PriceId::parse(price["id"].as_str().unwrap()).unwrap());
        }
        let before = emulator.api_requests.load(Relaxed);
        let catalog = Arc::new(Catalog::new(ids.clone(), Clock::system()));
        // Ten callers stop waiting after their first step (as a client hanging up does): each
        // is polled once and dropped. (A zero timeout is no such bound: its timer may fire a
        // millisecond later, after the load has ended.)
        for _ in 0..10 {
            let mut caller = Box::pin(catalog.plans(&stripe));
            let first_step = caller.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            assert!(first_step.is_pending(), "no answer before the load has run");
        }
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (catalog, stripe) = (catalog.clone(), stripe.clone());
            callers.spawn(async move { catalog.plans(&stripe).await });
        }
        for plans in callers.join_all().await {
            let ids_seen: Vec<PriceId> = plans.unwrap().iter().map(|p| p.price_id.clone()).collect();
            assert_eq!(ids_seen, ids);
        }
        assert_eq!(emulator.api_requests.load(Relaxed) - before, 2, "one load for 60 callers: one call per price");

        let missing = Arc::new(Catalog::new(vec![PriceId::parse("price_missing").unwrap()], Clock::system()));
        match missing.plans(&stripe).await {
            Err(BillingError::Stripe(StripeError::Refused { status: 404, .. })) => {}
            other => panic!("the load's own failure, not a timeout: {:?}", other.map(|p| p.len())),
        }
    }
}
