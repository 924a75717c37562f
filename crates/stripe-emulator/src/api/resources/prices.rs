//! `/v1/prices`.

use axum::extract::{Path, State};
use serde_json::{json, Map};

use super::products::new_product;
use crate::api::form::Params;
use crate::api::request::{respond, ApiRequest};
use crate::api::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::engine::catalog::{create_price, max_interval_count, NewPrice, PriceProduct, Recurring, INTERVALS};
use crate::engine::Emulator;
use crate::model::ApiError;

const FIELDS: &[&str] = &[
    "currency", "unit_amount", "unit_amount_decimal", "product", "product_data", "recurring", "lookup_key", "transfer_lookup_key",
    "nickname", "active", "metadata", "billing_scheme", "tax_behavior", "expand",
];

/// A price from create parameters, its form checked here and its references by the engine.
fn new_price(params: &Params) -> Result<NewPrice, ApiError> {
    params.allow(FIELDS)?;
    let currency = params.required_str("currency")?.to_ascii_lowercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(params.invalid("currency", format!("Invalid currency: {currency}")));
    }
    let unit_amount = match (params.int("unit_amount")?, params.non_empty_str("unit_amount_decimal")?) {
        (Some(a), _) if a < 0 => return Err(params.invalid("unit_amount", "Invalid unit_amount: must be at least 0")),
        (Some(a), _) => a,
        (None, Some(d)) => match d.parse::<f64>() {
            Ok(d) if d >= 0.0 && d.is_finite() => d.round() as i64,
            _ => return Err(params.invalid("unit_amount_decimal", "Invalid decimal")),
        },
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
        (Some(product), None) => PriceProduct::Existing(product.to_string()),
        (None, Some(data)) => PriceProduct::New(new_product(&data)?),
        (None, None) => return Err(params.missing("product")),
    };
    let recurring = match params.hash("recurring")? {
        None => None,
        Some(r) => {
            r.allow(&["interval", "interval_count", "usage_type", "trial_period_days", "meter"])?;
            let interval = r.one_of("interval", INTERVALS)?.ok_or_else(|| r.missing("interval"))?;
            let count = r.int("interval_count")?.unwrap_or(1);
            let max = max_interval_count(interval);
            if !(1..=max).contains(&count) {
                return Err(r.invalid("interval_count", format!("Invalid interval_count: a {interval}ly price allows 1 to {max}")));
            }
            let usage_type = r.one_of("usage_type", &["licensed", "metered"])?.unwrap_or("licensed");
            // Since 2025-03-31.basil a metered price counts through a meter, and only a metered one does.
            let meter = r.non_empty_str("meter")?;
            match (usage_type, meter) {
                ("metered", None) => return Err(r.missing("meter")),
                ("licensed", Some(_)) => return Err(r.invalid("meter", "A meter is only for a price with usage_type=metered.")),
                _ => {}
            }
            Some(Recurring {
                interval: interval.to_string(),
                interval_count: count,
                trial_period_days: r.int("trial_period_days")?,
                usage_type: usage_type.to_string(),
                meter: meter.map(str::to_string),
            })
        }
    };
    params.one_of("billing_scheme", &["per_unit"])?;
    Ok(NewPrice {
        id: None,
        product,
        currency,
        unit_amount,
        recurring,
        lookup_key: params.non_empty_str("lookup_key")?.map(str::to_string),
        transfer_lookup_key: params.bool("transfer_lookup_key")? == Some(true),
        nickname: params.non_empty_str("nickname")?.map(str::to_string),
        active: params.bool("active")?.unwrap_or(true),
        metadata: metadata(params, "metadata")?.unwrap_or_default(),
        tax_behavior: params.one_of("tax_behavior", &["exclusive", "inclusive", "unspecified"])?.unwrap_or("unspecified").to_string(),
    })
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let new = new_price(&req.params)?;
    let price = emu.apply(&req.info, |store| create_price(store, new))?;
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
