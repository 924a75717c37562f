//! Reconciliation: re-sync every customer Tollgate made, to heal what a lost webhook left behind
//! (Stripe gives up redelivering after three days; an endpoint can be misconfigured for longer).
//! `tollgate sync --all` does it once with a progress bar; `RECONCILE_INTERVAL` makes one
//! instance at a time do it periodically, by marking every customer pending for the drains.

use std::sync::Arc;
use std::time::Duration;

use super::{Billing, BillingError};
use crate::domain::CustomerId;
use crate::stripe::wire::{Customer, List};
use crate::stripe::{StripeClient, StripeError};

const PAGE: &str = "100";

/// Every Stripe customer with a `userId` or an `orgId` in its metadata (the ones Tollgate creates,
/// for a user or an organization), page by page.
pub async fn customers_of_payers(stripe: &StripeClient) -> Result<Vec<CustomerId>, StripeError> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", PAGE)];
        if let Some(id) = &after {
            query.push(("starting_after", id));
        }
        let page: List<Customer> = stripe.get("/v1/customers", &query).await?;
        after = page.data.last().map(|c| c.id.clone());
        found.extend(
            page.data
                .iter()
                .filter(|c| ["userId", "orgId"].iter().any(|k| c.metadata.contains_key(*k)))
                .filter_map(|c| CustomerId::parse(&c.id).ok()),
        );
        if !page.has_more || after.is_none() {
            return Ok(found);
        }
    }
}

impl Billing {
    /// Mark every customer pending and wake the drain (which keeps to the rate limit).
    pub async fn mark_all_pending(&self) -> Result<usize, BillingError> {
        let customers = customers_of_payers(&self.stripe).await?;
        for customer in &customers {
            self.mark_pending(customer).await?;
        }
        Ok(customers.len())
    }
}

/// Every `every`, the one instance that takes the reconcile lease marks all customers pending.
/// The lease is kept for the whole interval, so the other instances skip that round.
pub async fn run_periodically(billing: Arc<Billing>, every: Duration) {
    let token = crate::random::random_token(20);
    loop {
        billing.clock.sleep(every).await;
        match billing.kv.lease("reconcile", &token, every.mul_f64(0.9)).await {
            Ok(true) => match billing.mark_all_pending().await {
                Ok(count) => tracing::info!(customers = count, "reconcile: every customer marked for a sync"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed; next round will try again"),
            },
            Ok(false) => tracing::debug!("reconcile: another instance has this round"),
            Err(e) => tracing::warn!(error = %e, "reconcile: cannot take the lease"),
        }
    }
}
