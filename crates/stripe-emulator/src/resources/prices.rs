//! `/v1/prices`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::app::Emulator;
use crate::error::ApiError;
use crate::form::Params;
use crate::http::{respond, ApiRequest};
use crate::store::{new_id, Store};

const FIELDS: &[&str] = &[
    "currency", "unit_amount", "unit_amount_decimal", "product", "product_data", "recurring", "lookup_key", "transfer_lookup_key",
    "nickname", "active", "metadata", "billing_scheme", "tax_behavior", "expand",
];

pub const INTERVALS: &[&str] = &["day", "week", "month", "year"];

/// Build and store a price from create parameters. `id` is honoured only for seeding (Stripe's API has no such parameter).
pub fn create_in(store: &mut Store, params: &Params, id: Option<&str>) -> Result<Value, ApiError> {
    params.allow(FIELDS)?;
    let currency = params.required_str("currency")?.to_ascii_lowercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(params.invalid("currency", format!("Invalid currency: {currency}")));
    }
    let unit_amount = match (params.int("unit_amount")?, params.non_empty_str("unit_amount_decimal")?) {
        (Some(a), _) if a < 0 => return Err(params.invalid("unit_amount", "Invalid unit_amount: must be at least 0")),
        (Some(a), _) => a,
        (None, Some(d)) => {
            d.parse::<f64>().map(|d| d.round() as i64).map_err(|_| params.invalid("unit_amount_decimal", "Invalid decimal"))?
        }
        (None, None) => return Err(params.missing("unit_amount")),
    };
    let product = match (params.non_empty_str("product")?, params.hash("product_data")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: product, product_data.",
                Some("product"),
                "parameters_exclusive",
            ))
        }
        (Some(product), None) => {
            store.get_kind("product", product, Some("product"))?;
            product.to_string()
        }
        (None, Some(data)) => {
            let created = crate::resources::products::create_in(store, &data)?;
            created["id"].as_str().unwrap_or_default().to_string()
        }
        (None, None) => return Err(params.missing("product")),
    };
    let recurring = match params.hash("recurring")? {
        None => Value::Null,
        Some(r) => {
            r.allow(&["interval", "interval_count", "usage_type", "trial_period_days", "meter"])?;
            let interval = r.one_of("interval", INTERVALS)?.ok_or_else(|| r.missing("interval"))?;
            let count = r.int("interval_count")?.unwrap_or(1);
            let max = match interval {
                "day" => 365,
                "week" => 52,
                "month" => 12,
                _ => 1,
            };
            if !(1..=max).contains(&count) {
                return Err(r.invalid("interval_count", format!("Invalid interval_count: a {interval}ly price allows 1 to {max}")));
            }
            json!({
                "interval": interval,
                "interval_count": count,
                "meter": null,
                "trial_period_days": r.int("trial_period_days")?,
                "usage_type": r.one_of("usage_type", &["licensed", "metered"])?.unwrap_or("licensed"),
            })
        }
    };
    let lookup_key = params.non_empty_str("lookup_key")?.map(str::to_string);
    if let Some(key) = &lookup_key {
        let taken: Vec<String> =
            store.iter_kind("price", None).filter(|p| p["lookup_key"] == key.as_str()).map(|p| super::str_field(p, "id")).collect();
        if !taken.is_empty() && params.bool("transfer_lookup_key")? != Some(true) {
            return Err(params.invalid("lookup_key", format!("A price (`{}`) already uses that lookup key.", taken[0])));
        }
        for other in taken {
            store.commit(&other, Map::from_iter([("lookup_key".to_string(), Value::Null)]), "price.updated");
        }
    }
    let id = match id {
        Some(id) if store.contains(id) => {
            return Err(ApiError::invalid(format!("Price already exists: {id}"), Some("id"), "resource_already_exists"))
        }
        Some(id) => id.to_string(),
        None => new_id("price_"),
    };
    let price = json!({
        "id": id,
        "object": "price",
        "active": params.bool("active")?.unwrap_or(true),
        "billing_scheme": params.one_of("billing_scheme", &["per_unit"])?.unwrap_or("per_unit"),
        "created": store.now(),
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": lookup_key,
        "metadata": metadata(params, "metadata")?.unwrap_or_default(),
        "nickname": params.non_empty_str("nickname")?,
        "product": product,
        "recurring": recurring,
        "tax_behavior": params.one_of("tax_behavior", &["exclusive", "inclusive", "unspecified"])?.unwrap_or("unspecified"),
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring.is_null() { "one_time" } else { "recurring" },
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.to_string(),
    });
    store.insert(price.clone());
    store.emit("price.created", &price, None);
    Ok(price)
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let price = emu.apply(&req.info, |store| create_in(store, &req.params, None))?;
    respond(&emu, &req, &price)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "price", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["active", "nickname", "metadata", "lookup_key", "transfer_lookup_key", "tax_behavior", "expand"])?;
    let price = emu.apply(&req.info, |store| {
        let current = store.get_kind("price", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(active) = p.bool("active")? {
            changes.insert("active".into(), json!(active));
        }
        nullable_strings(p, &["nickname", "lookup_key"], &mut changes)?;
        if let Some(key) = p.non_empty_str("lookup_key")? {
            let taken = store.iter_kind("price", None).any(|other| other["lookup_key"] == key && other["id"] != id.as_str());
            if taken && p.bool("transfer_lookup_key")? != Some(true) {
                return Err(p.invalid("lookup_key", "Another price already uses that lookup key."));
            }
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        Ok(store.commit(&id, changes, "price.updated"))
    })?;
    respond(&emu, &req, &price)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let active = p.bool("active")?;
    let product = p.non_empty_str("product")?.map(str::to_string);
    let currency = p.non_empty_str("currency")?.map(str::to_ascii_lowercase);
    let kind = p.one_of("type", &["one_time", "recurring"])?.map(str::to_string);
    let lookup_keys = p.str_list("lookup_keys")?;
    let interval = match p.hash("recurring")? {
        None => None,
        Some(r) => {
            r.allow(&["interval", "usage_type", "meter"])?;
            r.one_of("interval", INTERVALS)?.map(str::to_string)
        }
    };
    list_kind(&emu, &req, "price", &["active", "product", "currency", "type", "lookup_keys", "recurring"], None, |price| {
        active.is_none_or(|a| price["active"] == a)
            && product.as_ref().is_none_or(|id| price["product"] == id.as_str())
            && currency.as_ref().is_none_or(|c| price["currency"] == c.as_str())
            && kind.as_ref().is_none_or(|t| price["type"] == t.as_str())
            && (lookup_keys.is_empty() || lookup_keys.iter().any(|k| price["lookup_key"] == k.as_str()))
            && interval.as_ref().is_none_or(|i| price["recurring"]["interval"] == i.as_str())
    })
}
