//! `/v1/entitlements/features`, `/v1/products/{id}/features` and
//! `/v1/entitlements/active_entitlements`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::{list_embedded, list_kind, merged_metadata, metadata, retrieve_kind, ApiResult};
use crate::engine::entitlements;
use crate::engine::Emulator;
use crate::model::ApiError;

pub async fn create_feature(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["name", "lookup_key", "metadata", "expand"])?;
    let name = p.required_str("name")?;
    let lookup_key = p.required_str("lookup_key")?;
    if name.len() > 80 || lookup_key.len() > 80 {
        return Err(p.invalid(if name.len() > 80 { "name" } else { "lookup_key" }, "At most 80 characters."));
    }
    let metadata = metadata(p, "metadata")?.unwrap_or_default();
    let feature = emu.apply(&req.info, |store| entitlements::create_feature(store, name, lookup_key, metadata))?;
    respond(&emu, &req, &feature)
}

pub async fn retrieve_feature(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "entitlements.feature", &id)
}

pub async fn update_feature(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["name", "active", "metadata", "expand"])?;
    let feature = emu.apply(&req.info, |store| {
        let current = store.get_kind("entitlements.feature", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(name) = p.non_empty_str("name")? {
            changes.insert("name".into(), json!(name));
        }
        if let Some(active) = p.bool("active")? {
            changes.insert("active".into(), json!(active));
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        entitlements::update_feature(store, &id, changes)
    })?;
    respond(&emu, &req, &feature)
}

pub async fn list_features(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let lookup_key = req.params.non_empty_str("lookup_key")?.map(str::to_string);
    let archived = req.params.bool("archived")?;
    list_kind(&emu, &req, "entitlements.feature", &["lookup_key", "archived"], None, |f| {
        lookup_key.as_deref().is_none_or(|k| f["lookup_key"] == k) && archived.is_none_or(|a| f["active"] == !a)
    })
}

pub async fn attach(State(emu): State<Emulator>, Path(product): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["entitlement_feature", "expand"])?;
    let feature = p.required_str("entitlement_feature")?;
    let attached = emu.apply(&req.info, |store| entitlements::attach(store, &product, feature))?;
    respond(&emu, &req, &attached)
}

pub async fn detach(State(emu): State<Emulator>, Path((product, id)): Path<(String, String)>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| entitlements::detach(store, &product, &id))?;
    Ok(JsonBody::of(&deleted))
}

pub async fn retrieve_product_feature(
    State(emu): State<Emulator>,
    Path((product, id)): Path<(String, String)>,
    req: ApiRequest,
) -> ApiResult {
    req.params.allow(&["expand"])?;
    let attached = emu.read(|store| {
        let found = store.get_kind("product_feature", &id, Some("id"))?;
        match found["product"] == product.as_str() {
            true => Ok(entitlements::shown(store, found)),
            false => Err(ApiError::missing("product_feature", &id, Some("id"))),
        }
    })?;
    respond(&emu, &req, &attached)
}

pub async fn list_product_features(State(emu): State<Emulator>, Path(product): Path<String>, req: ApiRequest) -> ApiResult {
    emu.read(|store| {
        store.get_kind("product", &product, Some("id"))?;
        let items: Vec<Value> = entitlements::of_product(store, &product).map(|a| entitlements::shown(store, a)).collect();
        list_embedded(store, &req, &[], &items)
    })
}

pub async fn list_active(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.required_str("customer")?.to_string();
    emu.read(|store| {
        store.get_kind("customer", &customer, Some("customer"))?;
        list_embedded(store, &req, &["customer"], &entitlements::active(store, &customer))
    })
}

pub async fn retrieve_active(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let found = emu.read(|store| {
        entitlements::find_active(store, &id).ok_or_else(|| ApiError::missing("entitlements.active_entitlement", &id, Some("id")))
    })?;
    respond(&emu, &req, &found)
}
