//! Entitlements: features (`entitlements.feature`), the features attached to products
//! (`product_feature`), and each customer's active entitlements, which Stripe derives from the
//! products of the customer's subscriptions. Whenever that set changes — a subscription starts,
//! changes price or ends; a feature is attached to or detached from a product, or archived — the
//! customer's `entitlements.active_entitlement_summary.updated` is sent with the new set (and the
//! old one in `previous_attributes`).
//!
//! As Stripe does (its users report it), a subscription keeps its entitlements while it is
//! `past_due`, `unpaid` or `paused`: only `canceled`, `incomplete` and `incomplete_expired` have
//! none. Deciding whether such a customer may use the product is the integration's business.
//!
//! Each customer's current set is kept as an internal record (`entsum_{customer}`, never listed
//! by the API), the "before" of the next comparison.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::model::{new_id, ApiError};
use crate::store::Store;

/// Statuses whose subscription gives no entitlements.
const WITHOUT_ENTITLEMENTS: &[&str] = &["canceled", "incomplete", "incomplete_expired"];

fn summary_id(customer: &str) -> String {
    format!("entsum_{customer}")
}

pub fn create_feature(store: &mut Store, name: &str, lookup_key: &str, metadata: Map<String, Value>) -> Result<Value, ApiError> {
    let taken = store.iter_kind("entitlements.feature", None).any(|f| f["lookup_key"] == lookup_key && f["active"] == true);
    if taken {
        return Err(ApiError::invalid(
            format!("A feature with lookup_key {lookup_key} already exists."),
            Some("lookup_key"),
            "resource_already_exists",
        ));
    }
    let feature = json!({
        "id": new_id("feat_"),
        "object": "entitlements.feature",
        "active": true,
        "livemode": false,
        "lookup_key": lookup_key,
        "metadata": metadata,
        "name": name,
    });
    store.insert(feature.clone());
    Ok(feature)
}

/// Archive or restore a feature, rename it, change its metadata; customers of products that
/// have it see their entitlements follow.
pub fn update_feature(store: &mut Store, id: &str, changes: Map<String, Value>) -> Result<Value, ApiError> {
    store.get_kind("entitlements.feature", id, Some("id"))?;
    store.update(id, changes);
    let products: Vec<String> = attachments(store).filter(|a| a["entitlement_feature"] == id).map(product_of).collect();
    refresh_products(store, &products);
    Ok(store.get(id).cloned().unwrap_or_default())
}

/// `POST /v1/products/{id}/features`.
pub fn attach(store: &mut Store, product: &str, feature: &str) -> Result<Value, ApiError> {
    store.get_kind("product", product, Some("id"))?;
    let found = store.get_kind("entitlements.feature", feature, Some("entitlement_feature"))?;
    if found["active"] != true {
        return Err(ApiError::invalid(
            "An archived feature cannot be attached to a product.",
            Some("entitlement_feature"),
            "parameter_invalid",
        ));
    }
    if attachments(store).any(|a| a["entitlement_feature"] == feature && product_of(a) == product) {
        return Err(ApiError::invalid(
            format!("The feature {feature} is already attached to {product}."),
            Some("entitlement_feature"),
            "resource_already_exists",
        ));
    }
    let attached = json!({
        "id": new_id("prodft_"),
        "object": "product_feature",
        "entitlement_feature": feature,
        "livemode": false,
        // The product is kept for lookups and left out of what the API shows (`shown`).
        "product": product,
    });
    store.insert(attached.clone());
    refresh_products(store, &[product.to_string()]);
    Ok(shown(store, &attached))
}

/// `DELETE /v1/products/{product}/features/{id}`.
pub fn detach(store: &mut Store, product: &str, id: &str) -> Result<Value, ApiError> {
    let attached = store.get_kind("product_feature", id, Some("id"))?.clone();
    if product_of(&attached) != product {
        return Err(ApiError::missing("product_feature", id, Some("id")));
    }
    store.delete(id);
    refresh_products(store, &[product.to_string()]);
    Ok(json!({ "id": id, "object": "product_feature", "deleted": true }))
}

/// A product feature as the API shows it: the feature expanded, the product left out.
pub fn shown(store: &Store, attached: &Value) -> Value {
    let feature = attached["entitlement_feature"].as_str().and_then(|f| store.get(f)).cloned().unwrap_or(Value::Null);
    json!({ "id": attached["id"], "object": "product_feature", "entitlement_feature": feature, "livemode": false })
}

/// The product features of `product`, newest first.
pub fn of_product<'a>(store: &'a Store, product: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    attachments(store).filter(move |a| product_of(a) == product)
}

/// The customer's active entitlements, as last computed.
pub fn active(store: &Store, customer: &str) -> Vec<Value> {
    store.get(&summary_id(customer)).and_then(|s| s["entitlements"]["data"].as_array().cloned()).unwrap_or_default()
}

/// Every customer's active entitlement with this id, if any.
pub fn find_active(store: &Store, id: &str) -> Option<Value> {
    let customers = store.iter_kind("customer", None).filter_map(|c| c["id"].as_str());
    customers.flat_map(|customer| active(store, customer)).find(|e| e["id"] == id)
}

/// After an action: recompute the entitlements of every customer whose subscriptions changed in
/// it (their `customer.subscription.*` events), announcing those that differ.
pub fn refresh_after_events(store: &mut Store) {
    let mut customers = BTreeSet::new();
    for event in store.pending_events() {
        if event["type"].as_str().is_some_and(|t| t.starts_with("customer.subscription.")) {
            if let Some(customer) = event["data"]["object"]["customer"].as_str() {
                customers.insert(customer.to_string());
            }
        }
    }
    for customer in customers {
        refresh(store, &customer);
    }
}

fn refresh_products(store: &mut Store, products: &[String]) {
    let mut customers = BTreeSet::new();
    for subscription in store.iter_kind("subscription", None) {
        let has = subscription["items"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| item["price"]["product"].as_str().is_some_and(|p| products.iter().any(|wanted| wanted == p)));
        if has {
            if let Some(customer) = subscription["customer"].as_str() {
                customers.insert(customer.to_string());
            }
        }
    }
    for customer in customers {
        refresh(store, &customer);
    }
}

/// Recompute one customer's active entitlements; when they changed, keep the new set and send
/// the summary event.
fn refresh(store: &mut Store, customer: &str) {
    let mut features = BTreeSet::new();
    for subscription in store.iter_kind("subscription", Some(customer)) {
        if WITHOUT_ENTITLEMENTS.iter().any(|s| subscription["status"] == *s) {
            continue;
        }
        for item in subscription["items"]["data"].as_array().into_iter().flatten() {
            let Some(product) = item["price"]["product"].as_str() else { continue };
            for attached in of_product(store, product) {
                let feature = attached["entitlement_feature"].as_str().and_then(|f| store.get(f));
                if let Some(feature) = feature.filter(|f| f["active"] == true) {
                    let (lookup_key, id) = (feature["lookup_key"].as_str(), feature["id"].as_str());
                    features.insert((lookup_key.unwrap_or_default().to_string(), id.unwrap_or_default().to_string()));
                }
            }
        }
    }
    let before = active(store, customer);
    let now: Vec<Value> = features
        .into_iter()
        .map(|(lookup_key, feature)| {
            // Stable while the customer keeps the feature: the same entitlement.
            let kept = before.iter().find(|e| e["feature"] == feature.as_str()).and_then(|e| e["id"].as_str().map(str::to_string));
            json!({
                "id": kept.unwrap_or_else(|| new_id("ent_")),
                "object": "entitlements.active_entitlement",
                "feature": feature,
                "livemode": false,
                "lookup_key": lookup_key,
            })
        })
        .collect();
    if now == before {
        return;
    }
    let list = |data: &[Value]| json!({ "object": "list", "data": data, "has_more": false, "url": format!("/v1/customer/{customer}/entitlements") });
    store.replace(json!({ "id": summary_id(customer), "entitlements": list(&now) }));
    let summary = json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": list(&now),
        "livemode": false,
    });
    let mut previous = Map::new();
    previous.insert("entitlements".into(), list(&before));
    store.emit("entitlements.active_entitlement_summary.updated", &summary, Some(previous));
}

fn attachments(store: &Store) -> impl Iterator<Item = &Value> + '_ {
    store.iter_kind("product_feature", None)
}

fn product_of(attached: &Value) -> String {
    attached["product"].as_str().unwrap_or_default().to_string()
}
