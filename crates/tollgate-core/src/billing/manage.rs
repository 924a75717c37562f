//! What a subscriber changes in the app rather than in Stripe's portal: cancelling at the end of
//! the period, and taking that back (resume). Each change is made on the subscription Stripe says
//! is live now (read through the one sync), then the sync runs again, so the answer and the
//! dashboard show Stripe's state after the change.

use std::sync::Arc;

use super::{Billing, BillingError};
use crate::domain::{Payer, SubscriptionCache};
use crate::stripe::wire::Created;

impl Billing {
    /// Set (`cancel`) or clear the payer's `cancel_at_period_end`; the entry after the change.
    pub async fn cancel_at_period_end(self: &Arc<Self>, payer: &Payer, cancel: bool) -> Result<SubscriptionCache, BillingError> {
        let customer = self.customer_of(payer).await?.ok_or(BillingError::NoCustomer)?;
        let current = self.sync(&customer).await?;
        let live = current.subscription().filter(|s| s.status.blocks_new_checkout());
        let Some(subscription_id) = live.and_then(|s| s.subscription_id.clone()) else {
            return Err(BillingError::NoLiveSubscription);
        };
        let flag = if cancel { "true" } else { "false" };
        let _: Created = self.stripe.post(&format!("/v1/subscriptions/{subscription_id}"), &[("cancel_at_period_end", flag)], None).await?;
        self.sync(&customer).await
    }
}
