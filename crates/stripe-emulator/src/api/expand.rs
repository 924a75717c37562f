//! `expand[]`: id strings replaced by the objects they name, along dotted paths, as Stripe does.
//!
//! Responses are serialised straight from the stored objects, substituting expansions on the way,
//! so a read never copies an object (this is the hot path of `GET /v1/subscriptions`).

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::model::ApiError;
use crate::store::Store;

/// Fields that hold the id of another object and may be expanded.
const EXPANDABLE: &[&str] = &[
    "customer", "default_payment_method", "latest_invoice", "subscription", "product", "default_price", "invoice", "payment_intent",
    "payment_method", "price", "line_items", "test_clock", "latest_charge", "charge", "discounts", "coupon", "promotion_code", "schedule",
];

/// Fields Stripe leaves out unless expanded; the emulator always renders them, so asking is allowed and changes nothing.
const INCLUDABLE: &[&str] = &["amount_paid_off_stripe"];

/// Stripe's limit on how deep an expansion may reach.
const MAX_DEPTH: usize = 4;

/// The requested paths as a tree: `data.customer` and `data.default_payment_method` share `data`.
#[derive(Debug, Default)]
pub struct ExpandTree(BTreeMap<String, ExpandTree>);

impl ExpandTree {
    /// Parse and check the paths against one object.
    pub fn new(store: &Store, object: &Value, paths: &[String]) -> Result<ExpandTree, ApiError> {
        Self::build(paths, |segments, path| check(store, object, segments, path))
    }

    /// Parse and check the paths against a page of a list: each must start with `data.`.
    pub fn for_list(store: &Store, items: &[&Value], paths: &[String]) -> Result<ExpandTree, ApiError> {
        Self::build(paths, |segments, path| match segments {
            ["data", rest @ ..] if !rest.is_empty() => items.iter().try_for_each(|item| check(store, item, rest, path)),
            _ => Err(cannot_expand(path)),
        })
    }

    fn build(paths: &[String], check: impl Fn(&[&str], &str) -> Result<(), ApiError>) -> Result<ExpandTree, ApiError> {
        let mut tree = ExpandTree::default();
        for path in paths {
            let segments: Vec<&str> = path.split('.').collect();
            if segments.len() > MAX_DEPTH || segments.iter().any(|s| s.is_empty()) {
                return Err(cannot_expand(path));
            }
            check(&segments, path)?;
            let mut node = &mut tree;
            for s in segments {
                node = node.0.entry(s.to_string()).or_default();
            }
        }
        Ok(tree)
    }

    fn child(&self, key: &str) -> Option<&ExpandTree> {
        self.0.get(key)
    }
}

fn cannot_expand(path: &str) -> ApiError {
    ApiError::invalid(format!("This property cannot be expanded ({path})."), Some("expand"), "parameter_invalid_value")
}

/// Is this path expandable on this object? Walks references only.
fn check(store: &Store, node: &Value, segments: &[&str], path: &str) -> Result<(), ApiError> {
    let (first, rest) = (segments[0], &segments[1..]);
    if let Value::Array(items) = node {
        // An array of ids (a subscription's `discounts`): each names an object to walk into.
        return items.iter().try_for_each(|item| match item {
            Value::String(id) => store.get(id).map_or(Ok(()), |object| check(store, object, segments, path)),
            other => check(store, other, segments, path),
        });
    }
    if first == "data" && node.get("object").is_some_and(|o| o == "list") {
        if rest.is_empty() {
            return Err(cannot_expand(path));
        }
        return node["data"].as_array().into_iter().flatten().try_for_each(|item| check(store, item, rest, path));
    }
    // A deleted object is a stub (`id`, `object`, `deleted`): what a path names below it is gone,
    // and the path is not refused for it (a subscription's deleted customer, say).
    if node.get("deleted") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    let Some(field) = node.as_object().and_then(|o| o.get(first)) else {
        return Err(cannot_expand(path));
    };
    if rest.is_empty() && INCLUDABLE.contains(&first) {
        return Ok(());
    }
    let expandable = EXPANDABLE.contains(&first);
    // The last segment must name an expandable field; earlier ones may also pass through plain objects.
    if rest.is_empty() && !expandable {
        return Err(cannot_expand(path));
    }
    let target = match field {
        Value::String(id) if expandable => store.get(id).unwrap_or(&Value::Null),
        Value::String(_) => return Err(cannot_expand(path)),
        other => other,
    };
    if rest.is_empty() || target.is_null() {
        Ok(())
    } else {
        check(store, target, rest, path)
    }
}

/// A stored value serialised with the expansions of `tree` substituted.
pub struct Rendered<'a> {
    pub store: &'a Store,
    pub value: &'a Value,
    pub tree: Option<&'a ExpandTree>,
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(tree) = self.tree.filter(|t| !t.0.is_empty()) else {
            return self.value.serialize(serializer);
        };
        match self.value {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    match tree.child(key) {
                        None => out.serialize_entry(key, value)?,
                        // An array of ids (`discounts`): each element is the object it names.
                        Some(child) if value.as_array().is_some_and(|items| items.iter().all(Value::is_string)) => {
                            let items: Vec<Rendered> = value
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|item| {
                                    let target = item.as_str().and_then(|id| self.store.get(id)).unwrap_or(item);
                                    Rendered { store: self.store, value: target, tree: Some(child) }
                                })
                                .collect();
                            out.serialize_entry(key, &items)?
                        }
                        Some(child) => {
                            let target = match value {
                                Value::String(id) => self.store.get(id).unwrap_or(value),
                                other => other,
                            };
                            out.serialize_entry(key, &Rendered { store: self.store, value: target, tree: Some(child) })?
                        }
                    }
                }
                out.end()
            }
            // A path through an array applies to every element.
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Rendered { store: self.store, value: item, tree: Some(tree) })?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// A list page to serialise: Stripe's envelope around references to stored objects.
pub struct ListPage<'a> {
    pub store: &'a Store,
    pub data: Vec<&'a Value>,
    pub has_more: bool,
    pub url: &'a str,
    pub tree: &'a ExpandTree,
    /// `Some` for a search result, with its `next_page` cursor.
    pub next_page: Option<Option<String>>,
}

impl Serialize for ListPage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let child = self.tree.child("data");
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("object", if self.next_page.is_some() { "search_result" } else { "list" })?;
        out.serialize_entry("data", &self.data.iter().map(|v| Rendered { store: self.store, value: v, tree: child }).collect::<Vec<_>>())?;
        out.serialize_entry("has_more", &self.has_more)?;
        if let Some(next_page) = &self.next_page {
            out.serialize_entry("next_page", next_page)?;
        }
        out.serialize_entry("url", self.url)?;
        out.end()
    }
}

/// Serialise one object with its expansions (used for single-object responses).
pub fn render(store: &Store, object: &Value, paths: &[String]) -> Result<Vec<u8>, ApiError> {
    let tree = ExpandTree::new(store, object, paths)?;
    Ok(serde_json::to_vec(&Rendered { store, value: object, tree: Some(&tree) }).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with(objects: &[Value]) -> Store {
        let mut store = Store::default();
        for o in objects {
            store.insert(o.clone());
        }
        store
    }

    fn rendered(store: &Store, v: &Value, paths: &[&str]) -> Result<Value, ApiError> {
        let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        render(store, v, &paths).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn expands_through_lists_and_nested_objects() {
        let store = store_with(&[
            json!({"id": "pm_1", "object": "payment_method", "card": {"last4": "4242"}}),
            json!({"id": "prod_1", "object": "product", "name": "Pro"}),
        ]);
        let sub = json!({"id": "sub_1", "default_payment_method": "pm_1", "items": {"object": "list", "data": [{"price": {"id": "price_1", "product": "prod_1"}}]}});
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            ExpandTree::for_list(&store, &[&sub], &paths(&["data.items.data.price.product"])).is_err(),
            "five segments: deeper than Stripe allows"
        );
        assert!(ExpandTree::for_list(&store, &[&sub], &paths(&["default_payment_method"])).is_err(), "list paths start with data");
        let tree = ExpandTree::for_list(&store, &[&sub], &paths(&["data.default_payment_method"])).unwrap();
        let page = ListPage { store: &store, data: vec![&sub], has_more: false, url: "/v1/subscriptions", tree: &tree, next_page: None };
        let out: Value = serde_json::to_value(&page).unwrap();
        assert_eq!(out["data"][0]["default_payment_method"]["card"]["last4"], "4242");
        assert_eq!(out["url"], "/v1/subscriptions");
        let out = rendered(&store, &sub, &["items.data.price.product", "default_payment_method"]).unwrap();
        assert_eq!(out["items"]["data"][0]["price"]["product"]["name"], "Pro");
        assert_eq!(out["default_payment_method"]["id"], "pm_1");
        assert_eq!(rendered(&store, &sub, &[]).unwrap(), sub, "nothing asked, nothing changed");
    }

    #[test]
    fn unknown_or_plain_fields_cannot_be_expanded() {
        let store = Store::default();
        let sub = json!({"id": "sub_1", "status": "active", "default_payment_method": null, "items": {"object": "list", "data": []}});
        assert!(rendered(&store, &sub, &["status"]).is_err());
        assert!(rendered(&store, &sub, &["nope"]).is_err());
        assert!(rendered(&store, &sub, &["items"]).is_err());
        assert!(rendered(&store, &sub, &["default_payment_method"]).is_ok());
    }

    #[test]
    fn an_array_of_ids_expands_element_by_element() {
        let store = store_with(&[
            json!({"id": "di_1", "object": "discount", "source": {"coupon": "SPRING", "type": "coupon"}}),
            json!({"id": "SPRING", "object": "coupon", "percent_off": 25.0}),
        ]);
        let sub = json!({"id": "sub_1", "discounts": ["di_1"], "items": {"object": "list", "data": []}});
        assert_eq!(rendered(&store, &sub, &["discounts"]).unwrap()["discounts"][0]["source"]["coupon"], "SPRING");
        let deep = rendered(&store, &sub, &["discounts.source.coupon"]).unwrap();
        assert_eq!(deep["discounts"][0]["source"]["coupon"]["percent_off"], 25.0);
        assert_eq!(rendered(&store, &sub, &[]).unwrap(), sub, "nothing asked, ids stay");
    }

    #[test]
    fn paths_through_a_deleted_object_end_there() {
        let store = store_with(&[json!({"id": "cus_1", "object": "customer", "deleted": true})]);
        let sub = json!({"id": "sub_1", "customer": "cus_1"});
        let out = rendered(&store, &sub, &["customer.invoice_settings.default_payment_method"]).unwrap();
        assert_eq!(out["customer"], json!({"id": "cus_1", "object": "customer", "deleted": true}));
        assert!(rendered(&store, &sub, &["customer.nope"]).is_ok(), "nothing left below it to refuse");
        let live = store_with(&[json!({"id": "cus_2", "object": "customer", "invoice_settings": {}})]);
        assert!(rendered(&live, &json!({"customer": "cus_2"}), &["customer.nope"]).is_err(), "a live object's fields are checked");
    }
}
