//! `expand[]`: replace id strings with the objects they name, along dotted paths, as Stripe does.

use serde_json::Value;

use crate::error::ApiError;
use crate::store::Store;

/// Fields that hold the id of another object and may be expanded.
const EXPANDABLE: &[&str] = &[
    "customer",
    "default_payment_method",
    "latest_invoice",
    "subscription",
    "product",
    "default_price",
    "invoice",
    "payment_intent",
    "payment_method",
    "price",
    "line_items",
];

/// Stripe's limit on how deep an expansion may reach.
const MAX_DEPTH: usize = 4;

pub fn apply(store: &Store, mut object: Value, paths: &[String]) -> Result<Value, ApiError> {
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() > MAX_DEPTH || segments.iter().any(|s| s.is_empty()) {
            return Err(cannot_expand(path));
        }
        expand_path(store, &mut object, &segments, path)?;
    }
    Ok(object)
}

fn cannot_expand(path: &str) -> ApiError {
    ApiError::invalid(format!("This property cannot be expanded ({path})."), Some("expand"), "parameter_invalid_value")
}

fn expand_path(store: &Store, node: &mut Value, segments: &[&str], path: &str) -> Result<(), ApiError> {
    let (first, rest) = (segments[0], &segments[1..]);
    // `data` of a list: apply the rest to every element.
    if first == "data" && node.get("object").is_some_and(|o| o == "list") {
        if rest.is_empty() {
            return Err(cannot_expand(path));
        }
        if let Some(items) = node.get_mut("data").and_then(Value::as_array_mut) {
            for item in items {
                expand_path(store, item, rest, path)?;
            }
        }
        return Ok(());
    }
    let Some(field) = node.as_object_mut().and_then(|o| o.get_mut(first)) else {
        return Err(cannot_expand(path));
    };
    if let Value::String(id) = field {
        if !EXPANDABLE.contains(&first) {
            return Err(cannot_expand(path));
        }
        if let Some(target) = store.get(id) {
            *field = target.clone();
        }
    } else if field.is_null() {
        return if EXPANDABLE.contains(&first) || !rest.is_empty() { Ok(()) } else { Err(cannot_expand(path)) };
    } else if rest.is_empty() && !EXPANDABLE.contains(&first) {
        return Err(cannot_expand(path));
    }
    if rest.is_empty() {
        Ok(())
    } else {
        expand_path(store, field, rest, path)
    }
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

    #[test]
    fn expands_through_lists_and_nested_objects() {
        let store = store_with(&[json!({"id": "pm_1", "object": "payment_method", "card": {"last4": "4242"}}), json!({"id": "prod_1", "object": "product", "name": "Pro"})]);
        let list = json!({"object": "list", "data": [{"id": "sub_1", "default_payment_method": "pm_1", "items": {"object": "list", "data": [{"price": {"id": "price_1", "product": "prod_1"}}]}}]});
        let out = apply(&store, list, &["data.default_payment_method".into(), "data.items.data.price.product".into()]);
        // five segments: deeper than Stripe allows
        assert!(out.is_err());
        let list = json!({"object": "list", "data": [{"id": "sub_1", "default_payment_method": "pm_1", "items": {"object": "list", "data": [{"price": {"id": "price_1", "product": "prod_1"}}]}}]});
        let out = apply(&store, list.clone(), &["data.default_payment_method".into()]).unwrap();
        assert_eq!(out["data"][0]["default_payment_method"]["card"]["last4"], "4242");
        let sub = list["data"][0].clone();
        let out = apply(&store, sub, &["items.data.price.product".into()]).unwrap();
        assert_eq!(out["items"]["data"][0]["price"]["product"]["name"], "Pro");
    }

    #[test]
    fn unknown_or_plain_fields_cannot_be_expanded() {
        let store = Store::default();
        let sub = json!({"id": "sub_1", "status": "active", "default_payment_method": null});
        assert!(apply(&store, sub.clone(), &["status".into()]).is_err());
        assert!(apply(&store, sub.clone(), &["nope".into()]).is_err());
        assert!(apply(&store, sub.clone(), &["default_payment_method".into()]).is_ok());
    }
}
