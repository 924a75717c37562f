//! Get-or-create the Stripe customer of a payer (a user, or an organization) before checkout,
//! never twice; start Checkout (for a seat-billed plan, with the organization's seat count); open the portal.

use std::sync::Arc;

use super::{recipe, Billing, BillingError};
use crate::config::TrialSettings;
use crate::domain::{CustomerId, Email, Payer, Plan, PriceId, User};
use crate::kv::keys;
use crate::stripe::wire::{CheckoutSession, Created, List, PortalSession};
use crate::stripe::StripeError;

/// How long a checkout request waits for another one of the same user, and how long a lease
/// outlives a dead holder.
const CHECKOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const CHECKOUT_LEASE: std::time::Duration = std::time::Duration::from_secs(20);

/// What a Checkout Session is made for.
#[derive(Clone, Copy)]
struct Session<'a> {
    payer: &'a Payer,
    /// Who clicked Subscribe.
    user: &'a User,
    plan: &'a Plan,
    quantity: u32,
    trial: Option<TrialSettings>,
}

/// The idempotency key of a payer's customer (or of the one replacing `missing`). A user's key
/// is the one Tollgate always used.
fn idempotency_key(payer: &Payer, missing: Option<&CustomerId>) -> String {
    let name = match payer {
        Payer::User(user) => format!("tollgate-customer-{user}"),
        Payer::Org(org) => format!("tollgate-org-customer-{org}"),
    };
    match missing {
        None => name,
        Some(missing) => format!("{name}-replaces-{missing}"),
    }
}

pub struct CheckoutStart {
    pub url: String,
    pub session_id: String,
}

impl Billing {
    /// The payer's customer id from the KV, if they have one, in either form the recipe's apps
    /// write it (`billing::recipe`); a value in neither is repaired from Stripe first.
    pub async fn customer_of(&self, payer: &Payer) -> Result<Option<CustomerId>, BillingError> {
        let key = keys::payer_customer(payer);
        match self.kv.get(&key).await? {
            None => Ok(None),
            Some(value) => match recipe::read_customer_id(&value) {
                Some((customer, _)) => Ok(Some(customer)),
                None => self.repair_mapping(payer, &key).await,
            },
        }
    }

    /// An unreadable mapping: find the payer's customer in Stripe by its reverse link
    /// (`metadata.userId`, the recipe's, or `metadata.orgId`), and map it again (or unmap the
    /// payer when there is none).
    async fn repair_mapping(&self, payer: &Payer, key: &str) -> Result<Option<CustomerId>, BillingError> {
        recipe::unreadable(if matches!(payer, Payer::Org(_)) { "stripe:org" } else { "stripe:user" }, key);
        match self.customer_named_by(payer).await.map_err(|_| BillingError::Repairing(key.to_string()))? {
            Some(customer) => {
                self.kv.set(key, &recipe::write_customer_id(&customer, self.value_encoding)).await?;
                Ok(Some(customer))
            }
            None => {
                self.kv.delete(key).await?;
                Ok(None)
            }
        }
    }

    /// The payer's customer, created first if needed (with `email` as its billing email). Two
    /// concurrent calls end with one customer: the create carries an idempotency key derived
    /// from the payer's id, and the mapping is stored only if absent (whoever loses reads the winner's).
    #[tracing::instrument(skip_all, fields(payer = %payer))]
    pub async fn get_or_create_customer(&self, payer: &Payer, email: &Email) -> Result<CustomerId, BillingError> {
        if let Some(existing) = self.customer_of(payer).await? {
            return Ok(existing);
        }
        let created = self.create_customer(payer, email, &idempotency_key(payer, None)).await?;
        let value = recipe::write_customer_id(&created, self.value_encoding);
        if self.kv.set_if_absent(&keys::payer_customer(payer), &value).await? {
            return Ok(created);
        }
        self.customer_of(payer).await?.ok_or(BillingError::NoCustomer)
    }

    /// Stripe no longer knows the mapped customer (deleted in the Dashboard, or the emulator was
    /// restarted): make a new one and remap. The idempotency key names the customer it replaces,
    /// so concurrent repairs make the same one.
    async fn replace_missing_customer(&self, payer: &Payer, email: &Email, missing: &CustomerId) -> Result<CustomerId, BillingError> {
        tracing::warn!(payer = %payer, customer = %missing, "the mapped Stripe customer no longer exists; creating a new one");
        let created = self.create_customer(payer, email, &idempotency_key(payer, Some(missing))).await?;
        self.kv.set(&keys::payer_customer(payer), &recipe::write_customer_id(&created, self.value_encoding)).await?;
        Ok(created)
    }

    async fn create_customer(&self, payer: &Payer, email: &Email, idempotency_key: &str) -> Result<CustomerId, BillingError> {
        let metadata = format!("metadata[{}]", payer.metadata_key());
        let mut form = vec![("email", email.as_str().to_string()), (metadata.as_str(), payer.as_str().to_string())];
        if let Payer::Org(org) = payer {
            if let Some(org) = self.seats.orgs.get(org).await.map_err(|e| BillingError::Corrupt(e.to_string()))? {
                form.push(("name", org.name));
            }
        }
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let created: Created = self.stripe.post("/v1/customers", &form, Some(idempotency_key)).await?;
        CustomerId::parse(&created.id).map_err(|e| BillingError::Corrupt(e.to_string()))
    }

    /// Start Checkout for `payer` (`user` clicked) and one of the offered plans (the first when
    /// none is named). Refused while the payer has a subscription to manage (the check reads
    /// Stripe, not the cache). At most one session can be paid: the payer's open session for
    /// this plan is reused and any other open one is expired, one request at a time per payer (a
    /// lease, across instances), so eight parallel clicks cannot become two subscriptions. The
    /// work is spawned: a click abandoned half-way does not leave the lease held.
    pub async fn start_checkout(
        self: &Arc<Self>,
        payer: &Payer,
        user: &User,
        price: Option<&PriceId>,
    ) -> Result<CheckoutStart, BillingError> {
        let (billing, payer, user, price) = (self.clone(), payer.clone(), user.clone(), price.cloned());
        tokio::spawn(async move {
            let lease = format!("checkout:{payer}");
            let token = crate::random::random_token(20);
            let deadline = tokio::time::Instant::now() + CHECKOUT_WAIT;
            while !billing.kv.lease(&lease, &token, CHECKOUT_LEASE).await? {
                if tokio::time::Instant::now() >= deadline {
                    return Err(StripeError::Unavailable("another checkout for this customer is still being prepared".into()).into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let started = billing.start_checkout_alone(&payer, &user, price.as_ref()).await;
            let _ = billing.kv.release(&lease, &token).await;
            started
        })
        .await
        .map_err(|e| BillingError::Corrupt(format!("the checkout task failed: {e}")))?
    }

    async fn start_checkout_alone(
        self: &Arc<Self>,
        payer: &Payer,
        user: &User,
        price: Option<&PriceId>,
    ) -> Result<CheckoutStart, BillingError> {
        let plans = self.catalog.plans(&self.stripe).await?;
        let plan = match price {
            Some(id) => plans.iter().find(|p| &p.price_id == id).ok_or(BillingError::PlanNotOffered)?,
            None => plans.first().ok_or(BillingError::PlanNotOffered)?,
        };
        let quantity = self.seats_to_bill(payer, plan).await?;
        let customer = self.get_or_create_customer(payer, &user.email).await?;
        if self.sync(&customer).await?.status().blocks_new_checkout() {
            return Err(BillingError::AlreadySubscribed);
        }
        if let Some(open) = self.reuse_open_session(&customer, &plan.price_id, quantity).await? {
            return Ok(open);
        }
        let trial = self.trial_at_checkout(payer, &customer).await?;
        let session = Session { payer, user, plan, quantity, trial };
        match self.create_session(&customer, &session).await {
            Err(BillingError::Stripe(e)) if e.is_missing_customer() => {
                let replacement = self.replace_missing_customer(payer, &user.email, &customer).await?;
                self.create_session(&replacement, &session).await
            }
            other => other,
        }
    }

    /// The customer's open session for `price` and `quantity`, if there is one; every other open
    /// session is expired (one for another seat count would bill the wrong number).
    async fn reuse_open_session(
        &self,
        customer: &CustomerId,
        price: &PriceId,
        quantity: u32,
    ) -> Result<Option<CheckoutStart>, BillingError> {
        let open: List<CheckoutSession> = match self
            .stripe
            .get(
                "/v1/checkout/sessions",
                &[("customer", customer.as_str()), ("status", "open"), ("limit", "100"), ("expand[]", "data.customer")],
            )
            .await
        {
            Ok(open) => open,
            Err(e) if e.is_missing_customer() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // A customer deleted in Stripe cannot pay: its sessions are not reused (checkout replaces it).
        if open.data.iter().any(|s| s.customer.as_ref().is_some_and(|c| c["deleted"] == true)) {
            return Ok(None);
        }
        let mut reused = None;
        for session in open.data {
            let same_quantity = session.metadata.get("quantity").map_or(quantity == 1, |q| q == &quantity.to_string());
            match (&reused, session.metadata.get("priceId"), session.url) {
                (None, Some(id), Some(url)) if id == price.as_str() && same_quantity => {
                    reused = Some(CheckoutStart { url, session_id: session.id })
                }
                _ => {
                    let _: CheckoutSession = self.stripe.post(&format!("/v1/checkout/sessions/{}/expire", session.id), &[], None).await?;
                }
            }
        }
        Ok(reused)
    }

    async fn create_session(&self, customer: &CustomerId, session: &Session<'_>) -> Result<CheckoutStart, BillingError> {
        let Session { payer, user, plan, quantity, trial } = *session;
        let price = &plan.price_id;
        let success_url = format!("{}/success?session_id={{CHECKOUT_SESSION_ID}}", self.public_url);
        let cancel_url = format!("{}/", self.public_url);
        let trial_days = trial.map(|t| t.days.to_string());
        let quantity = quantity.to_string();
        let mut form = vec![
            ("mode", "subscription"),
            ("customer", customer.as_str()),
            ("line_items[0][price]", price.as_str()),
            ("line_items[0][quantity]", quantity.as_str()),
            ("success_url", success_url.as_str()),
            ("cancel_url", cancel_url.as_str()),
            ("client_reference_id", user.id.as_str()),
            ("metadata[userId]", user.id.as_str()),
            ("metadata[priceId]", price.as_str()),
            ("metadata[quantity]", quantity.as_str()),
            ("subscription_data[metadata][userId]", user.id.as_str()),
        ];
        if let Payer::Org(org) = payer {
            form.push(("metadata[orgId]", org.as_str()));
            form.push(("subscription_data[metadata][orgId]", org.as_str()));
        }
        if let Some(days) = &trial_days {
            form.push(("subscription_data[trial_period_days]", days));
        }
        if self.allow_promotion_codes {
            form.push(("allow_promotion_codes", "true"));
        }
        // Usage prices come after the plan (the plan is the first licensed item), with no
        // quantity: their meter counts what they bill.
        let usage = self.usage_prices_for(plan).await?;
        let usage_fields: Vec<String> = (1..=usage.len()).map(|i| format!("line_items[{i}][price]")).collect();
        form.extend(usage_fields.iter().map(String::as_str).zip(usage.iter().map(PriceId::as_str)));
        if let Some(end) = trial.and_then(|t| t.without_card) {
            form.push(("payment_method_collection", "if_required"));
            form.push(("subscription_data[trial_settings][end_behavior][missing_payment_method]", end.as_stripe()));
        }
        let session: CheckoutSession = self.stripe.post("/v1/checkout/sessions", &form, None).await?;
        let url = session.url.ok_or_else(|| BillingError::Corrupt("Stripe returned a session without a url".into()))?;
        Ok(CheckoutStart { url, session_id: session.id })
    }

    /// The `METERED_PRICES` that go with `plan`: those billed on its interval (a subscription's
    /// items are billed together, so Stripe refuses a mix).
    pub(crate) async fn usage_prices_for(&self, plan: &Plan) -> Result<Vec<PriceId>, BillingError> {
        if self.usage_prices.price_ids.is_empty() {
            return Ok(Vec::new());
        }
        let usage = self.usage_prices.plans(&self.stripe).await?;
        let same_interval = |u: &&Plan| u.interval == plan.interval && u.interval_count == plan.interval_count;
        Ok(usage.iter().filter(same_interval).map(|u| u.price_id.clone()).collect())
    }

    pub async fn portal_url(&self, customer: &CustomerId) -> Result<String, BillingError> {
        let return_url = format!("{}/dashboard", self.public_url);
        let session: PortalSession =
            self.stripe.post("/v1/billing_portal/sessions", &[("customer", customer.as_str()), ("return_url", &return_url)], None).await?;
        Ok(session.url)
    }
}
