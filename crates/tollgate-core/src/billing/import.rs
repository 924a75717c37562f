//! `tollgate import`: take over the KV of a recipe deployment. Every `stripe:user:*` and
//! `stripe:customer:*` is read and checked against Stripe: a mapping in the other string form is
//! re-written in `KV_VALUE_ENCODING`'s, an unreadable one is repaired from the customer's
//! `metadata.userId`, and a cache entry that differs from what a sync would write now is synced
//! (by the one writer, `Billing::sync`). What cannot be repaired — a mapping to a customer
//! Stripe no longer has, an entry for one — is reported as orphaned and left as it is. A second
//! run changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use super::{recipe, sync, Billing, BillingError};
use crate::domain::{CustomerId, Payer, UserId};
use crate::kv::keys;
use crate::stripe::StripeError;

const USER_PREFIX: &str = "stripe:user:";
const CUSTOMER_PREFIX: &str = "stripe:customer:";
/// Customers checked at once (Stripe's rate limit paces them anyway).
const AT_ONCE: usize = 16;

/// One finding: the key, and what was done to it (in a dry run: what would be).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub key: String,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub users: usize,
    pub customers: usize,
    pub repaired: Vec<Finding>,
    pub orphaned: Vec<Finding>,
}

/// A customer as Stripe answers for it: deleted customers answer with `deleted: true`.
#[derive(Deserialize)]
struct CustomerState {
    #[serde(default)]
    deleted: bool,
}

/// Every key under `prefix`.
async fn all_keys(billing: &Billing, prefix: &str) -> Result<Vec<String>, BillingError> {
    let (mut keys, mut cursor) = (BTreeSet::new(), String::new());
    loop {
        let (page, next) = billing.kv.scan_keys(prefix, &cursor, 500).await?;
        keys.extend(page);
        if next.is_empty() {
            return Ok(keys.into_iter().collect());
        }
        cursor = next;
    }
}

/// Whether Stripe still has `customer`.
async fn exists(billing: &Billing, customer: &CustomerId) -> Result<bool, BillingError> {
    match billing.stripe.get::<CustomerState>(&format!("/v1/customers/{customer}"), &[]).await {
        Ok(state) => Ok(!state.deleted),
        Err(StripeError::Refused { status: 404, .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Billing {
    /// Check (and unless `dry_run`, repair) every recipe key; `step` is called once per key done.
    pub async fn import(self: &Arc<Self>, dry_run: bool, step: impl Fn(usize) + Send + Sync) -> Result<Report, BillingError> {
        let user_keys = all_keys(self, USER_PREFIX).await?;
        let entry_keys = all_keys(self, CUSTOMER_PREFIX).await?;
        let mut report = Report { users: user_keys.len(), ..Report::default() };
        let mut customers: BTreeSet<CustomerId> =
            entry_keys.iter().filter_map(|k| CustomerId::parse(&k[CUSTOMER_PREFIX.len()..]).ok()).collect();
        step(0);
        for key in &user_keys {
            let Ok(user) = UserId::parse(&key[USER_PREFIX.len()..]) else {
                report.orphaned.push(Finding { key: key.clone(), what: "not a user id: left as it is".into() });
                step(1);
                continue;
            };
            let Some(value) = self.kv.get(key).await? else { continue };
            let customer = match recipe::read_customer_id(&value) {
                Some((customer, form)) => {
                    if !form.matches(self.value_encoding) {
                        report.repaired.push(Finding { key: key.clone(), what: format!("re-written in the configured form ({customer})") });
                        if !dry_run {
                            self.kv.set(key, &recipe::write_customer_id(&customer, self.value_encoding)).await?;
                        }
                    }
                    customer
                }
                None => match self.customer_named_by(&Payer::User(user.clone())).await? {
                    Some(customer) => {
                        report
                            .repaired
                            .push(Finding { key: key.clone(), what: format!("unreadable: mapped to {customer}, found by its userId") });
                        if !dry_run {
                            self.kv.set(key, &recipe::write_customer_id(&customer, self.value_encoding)).await?;
                        }
                        customer
                    }
                    None => {
                        report
                            .orphaned
                            .push(Finding { key: key.clone(), what: "unreadable, and no customer in Stripe names this user".into() });
                        step(1);
                        continue;
                    }
                },
            };
            if exists(self, &customer).await? {
                customers.insert(customer);
            } else {
                report.orphaned.push(Finding { key: key.clone(), what: format!("maps to {customer}, which Stripe no longer has") });
            }
            step(1);
        }
        report.customers = customers.len();
        let mut tasks = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        for customer in customers {
            let (billing, permits) = (self.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                billing.import_entry(&customer, dry_run).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done.map_err(|e| BillingError::Corrupt(format!("an import task failed: {e}")))?? {
                Some(Ok(repaired)) => report.repaired.push(repaired),
                Some(Err(orphaned)) => report.orphaned.push(orphaned),
                None => {}
            }
            step(1);
        }
        report.repaired.sort_by(|a, b| a.key.cmp(&b.key));
        report.orphaned.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(report)
    }

    /// The customer whose `metadata.userId` names the user (the recipe's reverse link), or whose
    /// `metadata.orgId` names the organization, if any.
    pub async fn customer_named_by(&self, payer: &Payer) -> Result<Option<CustomerId>, BillingError> {
        let query = format!("metadata['{}']:'{payer}'", payer.metadata_key());
        let found: crate::stripe::wire::List<crate::stripe::wire::Created> =
            self.stripe.get("/v1/customers/search", &[("query", &query)]).await?;
        Ok(found.data.into_iter().find_map(|c| CustomerId::parse(&c.id).ok()))
    }

    /// One customer's cache entry against what a sync would write now: repaired (`Ok`),
    /// orphaned (`Err`), or already right (`None`).
    async fn import_entry(
        self: &Arc<Self>,
        customer: &CustomerId,
        dry_run: bool,
    ) -> Result<Option<Result<Finding, Finding>>, BillingError> {
        let key = keys::customer_cache(customer);
        let expected = match sync::fetch_subscription_state(&self.stripe, customer, None, self.entitlements_from_stripe)
            .await
            .map(|fetched| fetched.entry)
        {
            Ok(expected) => expected,
            Err(e) if e.is_missing_customer() || matches!(e, StripeError::Refused { status: 404, .. }) => {
                return Ok(Some(Err(Finding { key, what: "an entry for a customer Stripe no longer has: left as it is".into() })));
            }
            Err(e) => return Err(e.into()),
        };
        let stored = self.kv.get(&key).await?;
        let as_json = |entry: &crate::domain::SubscriptionCache| serde_json::to_value(entry).expect("an entry serialises");
        let what = match stored.as_deref().map(recipe::read_cache_entry) {
            Some(Some(entry)) if as_json(&entry) == as_json(&expected) => return Ok(None),
            Some(Some(_)) => "stale",
            Some(None) => "unreadable",
            None => "missing",
        };
        if !dry_run {
            self.sync(customer).await?;
        }
        Ok(Some(Ok(Finding { key, what: format!("{what}: synced from Stripe ({})", expected.status().as_str()) })))
    }
}
