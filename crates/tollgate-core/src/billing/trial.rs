//! One free trial per customer. Checkout offers `TRIAL_DAYS` only to a user whose customer never
//! had a subscription with a trial: Stripe's history says so (`status=all`), and so does
//! `tollgate:trialed:{userId}` (or `{orgId}`), which the sync sets when it sees such a subscription. The mark is
//! what remains when the customer is deleted in Stripe and Tollgate makes a new one, whose
//! history is empty: subscribe, cancel, let the trial run out, subscribe again gives no second
//! trial, however the customer changed.

use super::{Billing, BillingError};
use crate::config::TrialSettings;
use crate::domain::{CustomerId, Payer};
use crate::kv::keys;
use crate::stripe::wire::{List, Subscription};

impl Billing {
    /// The trial the pricing page may promise `payer` (`None` for a visitor: nothing is known of
    /// them, and Checkout decides anyway): none once they are marked. Reads the KV only.
    pub async fn trial_promised(&self, payer: Option<&Payer>) -> Result<Option<TrialSettings>, BillingError> {
        let Some(trial) = self.trial else { return Ok(None) };
        match payer {
            Some(payer) if self.kv.get(&keys::trialed(payer)).await?.is_some() => Ok(None),
            _ => Ok(Some(trial)),
        }
    }

    /// The trial Checkout gives `payer`, whose customer is `customer`: none once marked, or when
    /// any of the customer's subscriptions, ended ones included, had a trial (then marked).
    pub(super) async fn trial_at_checkout(&self, payer: &Payer, customer: &CustomerId) -> Result<Option<TrialSettings>, BillingError> {
        if self.trial_promised(Some(payer)).await?.is_none() {
            return Ok(None);
        }
        let history: List<Subscription> =
            match self.stripe.get("/v1/subscriptions", &[("customer", customer.as_str()), ("status", "all"), ("limit", "100")]).await {
                Ok(history) => history,
                // A customer deleted in Stripe has no history to read (Checkout replaces it).
                Err(e) if e.is_missing_customer() => return Ok(self.trial),
                Err(e) => return Err(e.into()),
            };
        if had_a_trial(&history.data) {
            self.mark_trialed(payer).await?;
            return Ok(None);
        }
        Ok(self.trial)
    }

    /// `payer` has had their trial.
    pub(super) async fn mark_trialed(&self, payer: &Payer) -> Result<(), BillingError> {
        Ok(self.kv.set(&keys::trialed(payer), "1").await?)
    }
}

/// Whether any of these subscriptions had a trial (Stripe keeps `trial_end` after it ends).
pub(super) fn had_a_trial(subscriptions: &[Subscription]) -> bool {
    subscriptions.iter().any(|s| s.trial_end.is_some())
}
