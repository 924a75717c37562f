//! The parts of Stripe's objects Tollgate reads, as Stripe sends them. Converted to domain types
//! in `billing::sync`; everything not listed is ignored, so new Stripe fields never break parsing.

use serde::Deserialize;

/// A field that is an id, or the object when expanded.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T> Expandable<T> {
    pub fn object(&self) -> Option<&T> {
        match self {
            Expandable::Object(o) => Some(o),
            Expandable::Id(_) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub items: List<SubscriptionItem>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub trial_end: Option<i64>,
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
    pub customer: Option<Expandable<Customer>>,
    /// On the subscription itself only before API version 2025-03-31.basil.
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionItem {
    pub price: Price,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub active: bool,
    pub unit_amount: Option<i64>,
    pub currency: String,
    pub recurring: Option<Recurring>,
    pub product: Expandable<Product>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    pub interval: String,
    pub interval_count: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentMethod {
    pub card: Option<Card>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Card {
    pub brand: Option<String>,
    pub last4: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    pub invoice_settings: Option<InvoiceSettings>,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceSettings {
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
}

#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    /// An id, or the customer when expanded (`{"deleted": true}` once it was deleted).
    #[serde(default)]
    pub customer: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct PortalSession {
    pub url: String,
}

/// Only what routing an event needs; the payload is otherwise not trusted (the sync re-reads Stripe).
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}
