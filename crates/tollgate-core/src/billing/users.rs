//! What billing does when the identity provider changes a user or an organization (Clerk's
//! webhooks): a new email goes to the Stripe customer, and a deleted user or organization stops
//! paying and loses the mapping to its customer. The customer itself stays in Stripe, with its invoices and payments, as the law and
//! the accounts need; its cache entry keeps mirroring Stripe (the subscriptions end `canceled`).

use super::{Billing, BillingError};
use crate::domain::{Email, Payer, SubscriptionStatus, UserId};
use crate::kv::keys;
use crate::stripe::wire::{Created, List, Subscription};

impl Billing {
    /// Give the user's Stripe customer (if any) this email.
    pub async fn user_email_changed(&self, user: &UserId, email: &Email) -> Result<(), BillingError> {
        if let Some(customer) = self.customer_of(&Payer::User(user.clone())).await? {
            let _: Created = self.stripe.post(&format!("/v1/customers/{customer}"), &[("email", email.as_str())], None).await?;
        }
        Ok(())
    }

    /// The user (or organization) was deleted: cancel their live subscriptions now, have the
    /// cache follow, and drop the payer → customer mapping. Each step is safe to repeat, so a
    /// failed run is retried whole.
    pub async fn payer_deleted(&self, payer: &Payer) -> Result<(), BillingError> {
        let Some(customer) = self.customer_of(payer).await? else { return Ok(()) };
        let subscriptions: List<Subscription> =
            self.stripe.get("/v1/subscriptions", &[("customer", customer.as_str()), ("status", "all"), ("limit", "100")]).await?;
        for subscription in &subscriptions.data {
            if SubscriptionStatus::parse(&subscription.status).is_some_and(|s| s.is_live()) {
                tracing::info!(payer = %payer, subscription = %subscription.id, "the payer was deleted: cancelling their subscription");
                let _: Created = self.stripe.delete(&format!("/v1/subscriptions/{}", subscription.id)).await?;
            }
        }
        self.mark_pending(&customer).await?;
        self.kv.delete(&keys::payer_customer(payer)).await?;
        Ok(())
    }
}
