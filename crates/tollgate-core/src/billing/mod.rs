//! The billing flow: the one sync function and its coordination across instances, the drain
//! that settles recorded webhooks, reconciliation, checkout and portal sessions, the plan
//! catalogue, seats, and which webhook events matter.

pub mod catalog;
pub mod checkout;
pub mod drain;
pub mod events;
pub mod import;
pub mod manage;
pub mod plans;
pub mod recipe;
pub mod reconcile;
pub mod seats;
pub mod sync;
pub mod trial;
pub mod usage;
pub mod users;

use std::sync::Arc;

use crate::kv::{KvError, SharedKv};
use crate::stripe::{StripeClient, StripeError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("that plan is not offered")]
    PlanNotOffered,
    #[error("you already have a subscription")]
    AlreadySubscribed,
    #[error("no billing account yet")]
    NoCustomer,
    #[error("no subscription to change")]
    NoLiveSubscription,
    #[error("that is the current plan")]
    SamePlan,
    /// The card was declined for a plan change: the old plan stays.
    #[error("the payment for the change failed")]
    PaymentFailed,
    /// `BILLING_SUBJECT=organization` and the user acts for none.
    #[error("Create or choose an organization first: it is the organization that subscribes.")]
    NoOrganization,
    /// A member (not an owner or admin) of the paying organization asked for a billing action.
    #[error("Only the organization's owners and admins manage billing.")]
    NotABillingManager,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A recipe key held a value nobody writes, and Stripe could not be asked to repair it now.
    #[error("the value at {0} is unreadable and is being repaired")]
    Repairing(String),
}

/// Everything billing needs, shared by handlers.
pub struct Billing {
    pub stripe: Arc<StripeClient>,
    pub kv: SharedKv,
    /// Wakes this instance's drain when the webhook records a customer.
    pub drain: drain::Drain,
    pub catalog: Arc<catalog::Catalog>,
    pub public_url: String,
    /// The trial Checkout offers, once per customer (`billing::trial`).
    pub trial: Option<crate::config::TrialSettings>,
    /// `ENTITLEMENTS=stripe`: the sync also caches the customer's active entitlements.
    pub entitlements_from_stripe: bool,
    /// `ALLOW_PROMOTION_CODES`: Checkout takes a promotion code.
    pub allow_promotion_codes: bool,
    /// `METERED_PRICES`: usage prices Checkout adds beside a plan billed on the same interval.
    pub usage_prices: Arc<catalog::Catalog>,
    /// `METER_STREAM=true`: usage goes through the v2 meter event stream, not `/v1/billing/meter_events`.
    pub meter_stream: Option<usage::MeterStream>,
    /// How the recipe's string values are written (`KV_VALUE_ENCODING`).
    pub value_encoding: crate::config::ValueEncoding,
    /// Organizations, who pays (`BILLING_SUBJECT`) and per-seat prices.
    pub seats: seats::Seats,
    /// The time, for the drain's debounce and sweeps, cache freshness and waits.
    pub clock: crate::clock::Clock,
}
