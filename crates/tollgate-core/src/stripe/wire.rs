//! The parts of Stripe's objects Tollgate reads, as Stripe sends them. Converted to domain types
//! in `billing::sync`; everything not listed is ignored, so new Stripe fields never break parsing.

use std::borrow::Cow;

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
    /// A change waiting for its payment (`payment_behavior=pending_if_incomplete`).
    #[serde(default)]
    pub pending_update: Option<serde_json::Value>,
    /// Its schedule, when one will change it (expanded by the sync: `data.schedule`).
    #[serde(default)]
    pub schedule: Option<Expandable<SubscriptionSchedule>>,
    /// Its discounts, oldest first (expanded by the sync: `data.discounts.source.coupon`).
    #[serde(default)]
    pub discounts: Vec<Expandable<Discount>>,
    /// On the subscription itself only before API version 2025-03-31.basil.
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub id: String,
    pub price: Price,
    #[serde(default)]
    pub quantity: Option<i64>,
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
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    pub interval: String,
    pub interval_count: i64,
    /// `licensed` (a plan, billed ahead) or `metered` (usage, billed in arrears).
    #[serde(default)]
    pub usage_type: Option<String>,
}

impl Price {
    /// A usage price (`recurring.usage_type=metered`), billed from a meter: never the plan.
    pub fn is_metered(&self) -> bool {
        self.recurring.as_ref().and_then(|r| r.usage_type.as_deref()) == Some("metered")
    }
}

impl Subscription {
    /// The item that is the plan: the first licensed one (usage prices sit beside it, `METERED_PRICES`).
    pub fn plan_item(&self) -> Option<&SubscriptionItem> {
        self.items.data.iter().find(|item| !item.price.is_metered())
    }
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
pub struct SubscriptionSchedule {
    #[serde(default)]
    pub id: String,
    pub status: String,
    pub phases: Vec<SchedulePhase>,
}

#[derive(Debug, Deserialize)]
pub struct SchedulePhase {
    pub start_date: i64,
    pub items: Vec<SchedulePhaseItem>,
}

#[derive(Debug, Deserialize)]
pub struct SchedulePhaseItem {
    pub price: Expandable<Price>,
}

impl SchedulePhaseItem {
    pub fn price_id(&self) -> &str {
        match &self.price {
            Expandable::Id(id) => id,
            Expandable::Object(price) => &price.id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Discount {
    /// When it stops applying (a `repeating` coupon); `None`: while the subscription lasts.
    pub end: Option<i64>,
    pub source: DiscountSource,
    pub promotion_code: Option<Expandable<PromotionCode>>,
}

#[derive(Debug, Deserialize)]
pub struct DiscountSource {
    pub coupon: Option<Expandable<Coupon>>,
}

#[derive(Debug, Deserialize)]
pub struct Coupon {
    pub id: String,
    pub name: Option<String>,
    pub percent_off: Option<f64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
}

#[derive(Debug, Deserialize)]
pub struct PromotionCode {
    pub code: String,
}

/// What `POST /v1/invoices/create_preview` shows.
#[derive(Debug, Deserialize)]
pub struct InvoicePreview {
    pub amount_due: i64,
    pub currency: String,
    pub lines: List<InvoiceLine>,
}

#[derive(Debug, Deserialize)]
pub struct InvoiceLine {
    pub amount: i64,
    pub description: Option<String>,
}

/// A feature attached to a product (`GET /v1/products/{id}/features`).
#[derive(Debug, Deserialize)]
pub struct ProductFeature {
    pub entitlement_feature: EntitlementFeature,
}

#[derive(Debug, Deserialize)]
pub struct EntitlementFeature {
    pub lookup_key: String,
    #[serde(default)]
    pub active: bool,
}

/// One of a customer's active entitlements (`GET /v1/entitlements/active_entitlements`).
#[derive(Debug, Deserialize)]
pub struct ActiveEntitlement {
    pub lookup_key: String,
}

#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

/// A meter event Stripe accepted (it has no `id`: its `identifier` names it).
#[derive(Debug, Deserialize)]
pub struct MeterEvent {
    pub identifier: String,
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

/// Only what routing an event needs, borrowed from the body; the rest of the payload is skipped
/// unread (serde ignores unknown fields without building them) and otherwise not trusted: the
/// sync re-reads Stripe.
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub data: EventData<'a>,
}

#[derive(Debug, Deserialize)]
pub struct EventData<'a> {
    #[serde(borrow)]
    pub object: EventObject<'a>,
}

#[derive(Debug, Deserialize)]
pub struct EventObject<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub object: Option<Cow<'a, str>>,
    /// The customer's id; `None` when it is absent, null, or anything but a string (an
    /// expanded customer object).
    #[serde(default, borrow)]
    pub customer: IdOrOther<'a>,
}

/// A field that names an object by id, or holds something else (null, an expanded object),
/// read as no id; whatever it holds is skipped without being built.
#[derive(Debug, Default, PartialEq)]
pub struct IdOrOther<'a>(pub Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for IdOrOther<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = IdOrOther<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id or any other value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdOrOther(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdOrOther(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(IdOrOther(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdOrOther(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdOrOther(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}
