//! The bottom layer: what the emulator's objects are made of, with no state and no I/O. Ids and
//! their kinds, the API version, Stripe's errors, test cards and what they do when charged, the
//! billing calendar, and what an open Checkout Session will create.

pub mod calendar;
pub mod cards;
pub mod error;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use error::ApiError;

/// The API version whose object shapes the emulator renders (the one stripe-node 23 pins).
pub const API_VERSION: &str = "2026-10-28.endive";

/// `len` random letters and digits: ids, secrets.
pub fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_alphanumeric(24))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The object kind an id belongs to, from its prefix; used by retrieval, expansion and `No such …` messages.
pub fn kind_of(id: &str) -> Option<&'static str> {
    const PREFIXES: &[(&str, &str)] = &[
        ("prod_", "product"),
        ("price_", "price"),
        ("cus_", "customer"),
        // Before `sub_`, which it starts with.
        ("sub_sched_", "subscription_schedule"),
        ("pm_", "payment_method"),
        ("cs_", "checkout.session"),
        ("sub_", "subscription"),
        ("si_", "subscription_item"),
        ("in_", "invoice"),
        ("inpay_", "invoice_payment"),
        ("pi_", "payment_intent"),
        ("ch_", "charge"),
        ("evt_", "event"),
        ("we_", "webhook_endpoint"),
        ("bps_", "billing_portal.session"),
        ("clock_", "test_helpers.test_clock"),
        ("feat_", "entitlements.feature"),
        ("prodft_", "product_feature"),
        ("ent_", "entitlements.active_entitlement"),
        ("promo_", "promotion_code"),
        ("di_", "discount"),
        ("ii_", "invoiceitem"),
        ("mtr_", "billing.meter"),
        ("mtrevt_", "billing.meter_event"),
        ("mes_", "v2.billing.meter_event_session"),
    ];
    PREFIXES.iter().find(|(p, _)| id.starts_with(p)).map(|(_, k)| *k)
}

/// A string field of a stored object, empty when absent.
pub fn str_field(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// Who caused a change: recorded on each event as Stripe's `request` field.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// What an open Checkout Session will create once paid, kept beside it (these are not fields of
/// the session object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSubscription {
    pub trial_days: Option<i64>,
    pub metadata: Map<String, Value>,
    pub description: Option<String>,
    /// The email the page shows: the customer's, or `customer_email`.
    pub email: Option<String>,
    /// `subscription_data[trial_settings][end_behavior][missing_payment_method]`.
    #[serde(default = "create_invoice")]
    pub missing_payment_method: String,
}

fn create_invoice() -> String {
    "create_invoice".into()
}

pub fn is_ended(subscription: &Value) -> bool {
    matches!(subscription["status"].as_str(), Some("canceled" | "incomplete_expired"))
}
