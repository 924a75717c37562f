//! The plans on offer, read from Stripe (name, amount, interval) and kept for a few minutes.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::BillingError;
use crate::domain::{Plan, PriceId};
use crate::stripe::wire::{Expandable, Price};
use crate::stripe::StripeClient;

const FRESH_FOR: Duration = Duration::from_secs(300);

pub struct Catalog {
    pub price_ids: Vec<PriceId>,
    cached: Mutex<Option<(Instant, Vec<Plan>)>>,
}

impl Catalog {
    pub fn new(price_ids: Vec<PriceId>) -> Catalog {
        Catalog { price_ids, cached: Mutex::new(None) }
    }

    /// The plans in configured order; a stale copy is used when Stripe cannot be reached.
    pub async fn plans(&self, stripe: &StripeClient) -> Result<Vec<Plan>, BillingError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, plans)) = cached.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return Ok(plans.clone());
            }
        }
        match self.fetch(stripe).await {
            Ok(plans) => {
                *cached = Some((Instant::now(), plans.clone()));
                Ok(plans)
            }
            Err(e) => match cached.as_ref() {
                Some((_, plans)) => {
                    tracing::warn!(error = %e, "using the last known plans");
                    Ok(plans.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self, stripe: &StripeClient) -> Result<Vec<Plan>, BillingError> {
        let mut plans = Vec::with_capacity(self.price_ids.len());
        for id in &self.price_ids {
            let price: Price = stripe.get(&format!("/v1/prices/{id}"), &[("expand[]", "product")]).await?;
            let recurring = price.recurring.ok_or_else(|| BillingError::Corrupt(format!("{id} is not a recurring price")))?;
            let product_name = match &price.product {
                Expandable::Object(p) => p.name.clone(),
                Expandable::Id(p) => p.clone(),
            };
            plans.push(Plan {
                price_id: id.clone(),
                product_name,
                unit_amount: price.unit_amount.unwrap_or(0),
                currency: price.currency,
                interval: recurring.interval,
                interval_count: recurring.interval_count,
            });
        }
        Ok(plans)
    }
}
