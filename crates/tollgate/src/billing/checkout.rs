//! Get-or-create the Stripe customer (before checkout, never twice), start Checkout, open the portal.

use std::sync::Arc;

use super::{Billing, BillingError};
use crate::domain::{CustomerId, PriceId, User};
use crate::kv::keys;
use crate::stripe::wire::{CheckoutSession, Created, PortalSession};

pub struct CheckoutStart {
    pub url: String,
    pub session_id: String,
}

impl Billing {
    /// The user's customer id from the KV, if they have one.
    pub async fn customer_of(&self, user: &User) -> Result<Option<CustomerId>, BillingError> {
        match self.kv.get(&keys::user_customer(&user.id)).await? {
            None => Ok(None),
            Some(raw) => CustomerId::parse(&raw).map(Some).map_err(|e| BillingError::Corrupt(e.to_string())),
        }
    }

    /// The user's customer, created first if needed. Two concurrent calls end with one customer:
    /// the create carries an idempotency key derived from the user id, and the mapping is stored
    /// only if absent (whoever loses reads the winner's).
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn get_or_create_customer(&self, user: &User) -> Result<CustomerId, BillingError> {
        if let Some(existing) = self.customer_of(user).await? {
            return Ok(existing);
        }
        let created = self.create_customer(user, &format!("tollgate-customer-{}", user.id)).await?;
        if self.kv.set_if_absent(&keys::user_customer(&user.id), created.as_str()).await? {
            return Ok(created);
        }
        self.customer_of(user).await?.ok_or(BillingError::NoCustomer)
    }

    /// Stripe no longer knows the mapped customer (deleted in the Dashboard, or the emulator was
    /// restarted): make a new one and remap. The idempotency key names the customer it replaces,
    /// so concurrent repairs make the same one.
    async fn replace_missing_customer(&self, user: &User, missing: &CustomerId) -> Result<CustomerId, BillingError> {
        tracing::warn!(user = %user.id, customer = %missing, "the mapped Stripe customer no longer exists; creating a new one");
        let created = self.create_customer(user, &format!("tollgate-customer-{}-replaces-{missing}", user.id)).await?;
        self.kv.set(&keys::user_customer(&user.id), created.as_str()).await?;
        Ok(created)
    }

    async fn create_customer(&self, user: &User, idempotency_key: &str) -> Result<CustomerId, BillingError> {
        let created: Created = self
            .stripe
            .post("/v1/customers", &[("email", user.email.as_str()), ("metadata[userId]", user.id.as_str())], Some(idempotency_key))
            .await?;
        CustomerId::parse(&created.id).map_err(|e| BillingError::Corrupt(e.to_string()))
    }

    /// Create a Checkout Session for one of the offered plans (the first when none is named).
    /// Refused while the user has a subscription to manage; the check reads Stripe, not the cache.
    pub async fn start_checkout(self: &Arc<Self>, user: &User, price: Option<&PriceId>) -> Result<CheckoutStart, BillingError> {
        let plans = self.catalog.plans(&self.stripe).await?;
        let plan = match price {
            Some(id) => plans.iter().find(|p| &p.price_id == id).ok_or(BillingError::PlanNotOffered)?,
            None => plans.first().ok_or(BillingError::PlanNotOffered)?,
        };
        let customer = self.get_or_create_customer(user).await?;
        if self.sync(&customer).await?.status().blocks_new_checkout() {
            return Err(BillingError::AlreadySubscribed);
        }
        match self.create_session(user, &customer, &plan.price_id).await {
            Err(BillingError::Stripe(e)) if e.is_missing_customer() => {
                let replacement = self.replace_missing_customer(user, &customer).await?;
                self.create_session(user, &replacement, &plan.price_id).await
            }
            other => other,
        }
    }

    async fn create_session(&self, user: &User, customer: &CustomerId, price: &PriceId) -> Result<CheckoutStart, BillingError> {
        let success_url = format!("{}/success?session_id={{CHECKOUT_SESSION_ID}}", self.public_url);
        let cancel_url = format!("{}/", self.public_url);
        let trial = self.trial_days.map(|d| d.to_string());
        let mut form = vec![
            ("mode", "subscription"),
            ("customer", customer.as_str()),
            ("line_items[0][price]", price.as_str()),
            ("line_items[0][quantity]", "1"),
            ("success_url", success_url.as_str()),
            ("cancel_url", cancel_url.as_str()),
            ("client_reference_id", user.id.as_str()),
            ("metadata[userId]", user.id.as_str()),
            ("subscription_data[metadata][userId]", user.id.as_str()),
        ];
        if let Some(days) = &trial {
            form.push(("subscription_data[trial_period_days]", days));
        }
        let session: CheckoutSession = self.stripe.post("/v1/checkout/sessions", &form, None).await?;
        let url = session.url.ok_or_else(|| BillingError::Corrupt("Stripe returned a session without a url".into()))?;
        Ok(CheckoutStart { url, session_id: session.id })
    }

    pub async fn portal_url(&self, customer: &CustomerId) -> Result<String, BillingError> {
        let return_url = format!("{}/dashboard", self.public_url);
        let session: PortalSession =
            self.stripe.post("/v1/billing_portal/sessions", &[("customer", customer.as_str()), ("return_url", &return_url)], None).await?;
        Ok(session.url)
    }
}
