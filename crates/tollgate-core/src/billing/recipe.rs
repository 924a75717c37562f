//! The recipe's two keys as the apps that share them write them. The Next.js recipe stores
//! through `@upstash/redis` (or `@vercel/kv`, the same client): its serializer passes a string
//! through as it is (`cus_…`) and writes an object as its JSON. Wrappers that JSON-encode every
//! value store `"cus_…"` with the quotes, and some encode the object's JSON once more, as a JSON
//! string. Tollgate reads every one of these, and writes strings as `KV_VALUE_ENCODING` says
//! (objects are JSON either way). A value none of them describes is unreadable: the caller
//! repairs it from Stripe, never answers 500 for it.

use crate::config::ValueEncoding;
use crate::domain::{CustomerId, SubscriptionCache};

/// How a stored string was written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StringForm {
    /// As it is: `cus_…`.
    Raw,
    /// JSON-encoded: `"cus_…"`.
    Json,
}

impl StringForm {
    pub fn matches(self, encoding: ValueEncoding) -> bool {
        matches!((self, encoding), (StringForm::Raw, ValueEncoding::Raw) | (StringForm::Json, ValueEncoding::Json))
    }
}

/// The customer id a `stripe:user:{userId}` value holds, and how it was written.
pub fn read_customer_id(value: &str) -> Option<(CustomerId, StringForm)> {
    if let Ok(id) = CustomerId::parse(value) {
        return Some((id, StringForm::Raw));
    }
    let unquoted: String = serde_json::from_str(value).ok()?;
    CustomerId::parse(&unquoted).ok().map(|id| (id, StringForm::Json))
}

/// A `stripe:user:{userId}` value for `customer`.
pub fn write_customer_id(customer: &CustomerId, encoding: ValueEncoding) -> String {
    match encoding {
        ValueEncoding::Raw => customer.to_string(),
        ValueEncoding::Json => serde_json::to_string(customer.as_str()).expect("a string serialises"),
    }
}

/// The cache entry a `stripe:customer:{customerId}` value holds: its JSON object, or that JSON
/// once more encoded as a JSON string.
pub fn read_cache_entry(value: &str) -> Option<SubscriptionCache> {
    match serde_json::from_str::<serde_json::Value>(value).ok()? {
        serde_json::Value::String(inner) => serde_json::from_str(&inner).ok(),
        object => serde_json::from_value(object).ok(),
    }
}

/// Count an unreadable value of a recipe key (`stripe:user` or `stripe:customer`) and log which key.
pub fn unreadable(kind: &'static str, key: &str) {
    crate::metrics::METRICS.kv_unreadable_values.with_label_values(&[kind]).inc();
    tracing::error!(key, "the value at this key is neither what the recipe nor Tollgate writes; repairing it from Stripe");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_in_every_form_the_recipes_clients_write() {
        let id = CustomerId::parse("cus_oe9dmryBonVYUjVRcJTt6uC1").unwrap();
        assert_eq!(read_customer_id("cus_oe9dmryBonVYUjVRcJTt6uC1"), Some((id.clone(), StringForm::Raw)));
        assert_eq!(read_customer_id("\"cus_oe9dmryBonVYUjVRcJTt6uC1\""), Some((id.clone(), StringForm::Json)));
        for unreadable in ["", "\"\"", "cus_", "\"cus_x\"x", "{\"id\":\"cus_1\"}", "null", "\"\\\"cus_1\\\"\"", " cus_1"] {
            assert_eq!(read_customer_id(unreadable), None, "{unreadable}");
        }
        for encoding in [ValueEncoding::Raw, ValueEncoding::Json] {
            let written = write_customer_id(&id, encoding);
            let (read, form) = read_customer_id(&written).unwrap();
            assert!(read == id && form.matches(encoding), "{written}");
        }
    }

    #[test]
    fn cache_entries_as_objects_or_encoded_once_more() {
        let object = r#"{"subscriptionId":"sub_1","status":"active","priceId":"price_1","currentPeriodStart":1,"currentPeriodEnd":2,"cancelAtPeriodEnd":false,"paymentMethod":null}"#;
        let entry = read_cache_entry(object).unwrap();
        assert_eq!(entry.status(), crate::domain::SubscriptionStatus::Active);
        assert_eq!(read_cache_entry(&serde_json::to_string(object).unwrap()), Some(entry));
        assert_eq!(read_cache_entry(r#"{"status":"none"}"#), Some(SubscriptionCache::none()));
        for unreadable in ["", "active", "\"active\"", "{}", "[]", "{\"status\":\"bogus\"}", "\"{\\\"status\\\":1}\""] {
            assert_eq!(read_cache_entry(unreadable), None, "{unreadable}");
        }
    }

    proptest::proptest! {
        /// Whatever is stored, reading it never panics; what reads as a customer id writes back to itself.
        #[test]
        fn any_stored_string_is_read_or_refused(value in ".*") {
            let _ = read_cache_entry(&value);
            if let Some((id, form)) = read_customer_id(&value) {
                let encoding = if form == StringForm::Raw { ValueEncoding::Raw } else { ValueEncoding::Json };
                proptest::prop_assert_eq!(read_customer_id(&write_customer_id(&id, encoding)).map(|(i, _)| i), Some(id));
            }
        }
    }
}
