//! `/v1/products`.

use axum::extract::{Path, State};
use serde_json::{json, Map};

use crate::api::form::Params;
use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::engine::catalog::{create_product, NewProduct};
use crate::engine::Emulator;
use crate::model::ApiError;

const FIELDS: &[&str] = &[
    "id", "name", "active", "description", "metadata", "images", "url", "statement_descriptor", "unit_label", "tax_code", "shippable",
    "expand",
];

/// A product from create parameters (also `price_data[product_data]`).
pub fn new_product(params: &Params) -> Result<NewProduct, ApiError> {
    params.allow(FIELDS)?;
    Ok(NewProduct {
        id: params.non_empty_str("id")?.map(str::to_string),
        name: params.required_str("name")?.to_string(),
        active: params.bool("active")?.unwrap_or(true),
        description: params.non_empty_str("description")?.map(str::to_string),
        images: params.str_list("images")?,
        metadata: metadata(params, "metadata")?.unwrap_or_default(),
        shippable: params.bool("shippable")?,
        statement_descriptor: params.non_empty_str("statement_descriptor")?.map(str::to_string),
        tax_code: params.non_empty_str("tax_code")?.map(str::to_string),
        unit_label: params.non_empty_str("unit_label")?.map(str::to_string),
        url: params.non_empty_str("url")?.map(str::to_string),
    })
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let new = new_product(&req.params)?;
    let product = emu.apply(&req.info, |store| create_product(store, new))?;
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
    Ok(JsonBody::of(&deleted))
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let active = req.params.bool("active")?;
    let ids = req.params.str_list("ids")?;
    list_kind(&emu, &req, "product", &["active", "ids", "shippable", "url"], None, |p| {
        active.is_none_or(|a| p["active"] == a) && (ids.is_empty() || ids.iter().any(|i| p["id"] == i.as_str()))
    })
}
