//! `/v1/products`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::app::Emulator;
use crate::error::ApiError;
use crate::form::Params;
use crate::http::{respond, ApiRequest};
use crate::store::{new_id, Store};

const FIELDS: &[&str] = &[
    "id", "name", "active", "description", "metadata", "images", "url", "statement_descriptor", "unit_label", "tax_code", "shippable",
    "expand",
];

/// Build and store a product from create parameters (also used by `price_data[product_data]` and seeding).
pub fn create_in(store: &mut Store, params: &Params) -> Result<Value, ApiError> {
    params.allow(FIELDS)?;
    let id = match params.non_empty_str("id")? {
        Some(id) if store.contains(id) => {
            return Err(ApiError::invalid(format!("Product already exists: {id}"), Some("id"), "resource_already_exists"))
        }
        Some(id) => id.to_string(),
        None => new_id("prod_"),
    };
    let now = store.now();
    let product = json!({
        "id": id,
        "object": "product",
        "active": params.bool("active")?.unwrap_or(true),
        "created": now,
        "default_price": null,
        "description": params.non_empty_str("description")?,
        "images": params.str_list("images")?,
        "livemode": false,
        "marketing_features": [],
        "metadata": metadata(params, "metadata")?.unwrap_or_default(),
        "name": params.required_str("name")?,
        "package_dimensions": null,
        "shippable": params.bool("shippable")?,
        "statement_descriptor": params.non_empty_str("statement_descriptor")?,
        "tax_code": params.non_empty_str("tax_code")?,
        "tax_details": null,
        "type": "service",
        "unit_label": params.non_empty_str("unit_label")?,
        "updated": now,
        "url": params.non_empty_str("url")?,
    });
    store.insert(product.clone());
    store.emit("product.created", &product, None);
    Ok(product)
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let product = emu.apply(&req.info, |store| create_in(store, &req.params))?;
    respond(&emu, &req, &product)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "product", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "name", "active", "description", "metadata", "images", "url", "statement_descriptor", "unit_label", "default_price", "expand",
    ])?;
    let product = emu.apply(&req.info, |store| {
        let current = store.get_kind("product", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(name) = p.non_empty_str("name")? {
            changes.insert("name".into(), json!(name));
        }
        if let Some(active) = p.bool("active")? {
            changes.insert("active".into(), json!(active));
        }
        nullable_strings(p, &["description", "url", "statement_descriptor", "unit_label"], &mut changes)?;
        if p.has("images") {
            changes.insert("images".into(), json!(p.str_list("images")?));
        }
        if let Some(price) = p.non_empty_str("default_price")? {
            let found = store.get_kind("price", price, Some("default_price"))?;
            if found["product"] != id.as_str() {
                return Err(p.invalid("default_price", "The default price must belong to this product."));
            }
            changes.insert("default_price".into(), json!(price));
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        if !changes.is_empty() {
            changes.insert("updated".into(), json!(store.now()));
        }
        Ok(store.commit(&id, changes, "product.updated"))
    })?;
    respond(&emu, &req, &product)
}

pub async fn delete(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| {
        let product = store.get_kind("product", &id, Some("id"))?.clone();
        if store.iter_kind("price", None).any(|p| p["product"] == id.as_str()) {
            return Err(ApiError::bad_request("This product cannot be deleted because it has one or more user-created prices."));
        }
        let tombstone = store.delete(&id);
        store.emit("product.deleted", &product, None);
        Ok(tombstone)
    })?;
    Ok(crate::http::JsonBody::of(&deleted))
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let active = req.params.bool("active")?;
    let ids = req.params.str_list("ids")?;
    list_kind(&emu, &req, "product", &["active", "ids", "shippable", "url"], None, |p| {
        active.is_none_or(|a| p["active"] == a) && (ids.is_empty() || ids.iter().any(|i| p["id"] == i.as_str()))
    })
}
