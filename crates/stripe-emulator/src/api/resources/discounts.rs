//! `/v1/coupons` and `/v1/promotion_codes`.

use axum::extract::{Path, State};
use serde_json::{json, Map};

use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::{list_kind, merged_metadata, metadata, retrieve_kind, ApiResult};
use crate::engine::discounts::{create_coupon as create, create_promotion_code as create_code, NewCoupon, NewPromotionCode};
use crate::engine::Emulator;
use crate::model::ApiError;

pub async fn create_coupon(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&[
        "id", "percent_off", "amount_off", "currency", "duration", "duration_in_months", "name", "max_redemptions", "redeem_by",
        "metadata", "expand",
    ])?;
    let percent_off = match p.str("percent_off")? {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(percent) if percent > 0.0 && percent <= 100.0 => Some(percent),
            _ => return Err(p.invalid("percent_off", "percent_off must be greater than 0 and at most 100.")),
        },
    };
    let amount_off = match (p.int("amount_off")?, p.non_empty_str("currency")?) {
        (None, _) => None,
        (Some(amount), Some(currency)) if amount > 0 => Some((amount, currency.to_ascii_lowercase())),
        (Some(_), None) => return Err(p.missing("currency")),
        (Some(_), Some(_)) => return Err(p.invalid("amount_off", "amount_off must be a positive integer.")),
    };
    if percent_off.is_some() == amount_off.is_some() {
        return Err(ApiError::bad_request("You must pass exactly one of percent_off or amount_off."));
    }
    let duration = p.one_of("duration", &["once", "repeating", "forever"])?.unwrap_or("once").to_string();
    let duration_in_months = p.int("duration_in_months")?;
    match (duration.as_str(), duration_in_months) {
        ("repeating", None) => return Err(p.missing("duration_in_months")),
        ("repeating", Some(months)) if months < 1 => return Err(p.invalid("duration_in_months", "duration_in_months must be positive.")),
        ("repeating", _) => {}
        (_, Some(_)) => return Err(p.invalid("duration_in_months", "duration_in_months is only for duration=repeating.")),
        _ => {}
    }
    let new = NewCoupon {
        id: p.non_empty_str("id")?.map(str::to_string),
        percent_off,
        amount_off,
        duration,
        duration_in_months,
        name: p.non_empty_str("name")?.map(str::to_string),
        max_redemptions: p.int("max_redemptions")?,
        redeem_by: p.int("redeem_by")?,
        metadata: metadata(p, "metadata")?.unwrap_or_default(),
    };
    let coupon = emu.apply(&req.info, |store| create(store, new))?;
    respond(&emu, &req, &coupon)
}

pub async fn retrieve_coupon(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "coupon", &id)
}

pub async fn update_coupon(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["name", "metadata", "expand"])?;
    let coupon = emu.apply(&req.info, |store| {
        let current = store.get_kind("coupon", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(name) = p.str("name")? {
            changes.insert("name".into(), if name.is_empty() { serde_json::Value::Null } else { json!(name) });
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        Ok(store.commit(&id, changes, "coupon.updated"))
    })?;
    respond(&emu, &req, &coupon)
}

/// Deleting a coupon stops new redemptions; discounts already applied keep working (as in Stripe).
pub async fn delete_coupon(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| {
        let coupon = store.get_kind("coupon", &id, Some("id"))?.clone();
        store.update(&id, Map::from_iter([("valid".to_string(), json!(false))]));
        store.emit("coupon.deleted", &coupon, None);
        Ok(json!({ "id": id, "object": "coupon", "deleted": true }))
    })?;
    Ok(JsonBody::of(&deleted))
}

pub async fn list_coupons(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    list_kind(&emu, &req, "coupon", &[], None, |c| c["valid"] == true)
}

pub async fn create_promotion_code(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["promotion", "code", "active", "max_redemptions", "expires_at", "customer", "metadata", "restrictions", "expand"])?;
    let promotion = p.hash("promotion")?.ok_or_else(|| p.missing("promotion"))?;
    promotion.allow(&["type", "coupon"])?;
    if promotion.one_of("type", &["coupon"])?.is_none() {
        return Err(p.missing("promotion[type]"));
    }
    let coupon = promotion.required_str("coupon")?.to_string();
    let code = p.non_empty_str("code")?;
    if code.is_some_and(|c| c.len() > 500 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))) {
        return Err(p.invalid("code", "A code may only have letters, digits, - and _."));
    }
    let new = NewPromotionCode {
        coupon,
        code: code.map(str::to_string),
        active: p.bool("active")?.unwrap_or(true),
        max_redemptions: p.int("max_redemptions")?,
        expires_at: p.int("expires_at")?,
        customer: p.non_empty_str("customer")?.map(str::to_string),
        metadata: metadata(p, "metadata")?.unwrap_or_default(),
    };
    let created = emu.apply(&req.info, |store| {
        if let Some(customer) = &new.customer {
            store.get_kind("customer", customer, Some("customer"))?;
        }
        create_code(store, new)
    })?;
    respond(&emu, &req, &created)
}

pub async fn retrieve_promotion_code(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "promotion_code", &id)
}

pub async fn update_promotion_code(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["active", "metadata", "restrictions", "expand"])?;
    let updated = emu.apply(&req.info, |store| {
        let current = store.get_kind("promotion_code", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(active) = p.bool("active")? {
            changes.insert("active".into(), json!(active));
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        Ok(store.commit(&id, changes, "promotion_code.updated"))
    })?;
    respond(&emu, &req, &updated)
}

pub async fn list_promotion_codes(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let (active, code) = (p.bool("active")?, p.non_empty_str("code")?.map(str::to_string));
    let (coupon, customer) = (p.non_empty_str("coupon")?.map(str::to_string), p.non_empty_str("customer")?.map(str::to_string));
    list_kind(&emu, &req, "promotion_code", &["active", "code", "coupon", "customer"], None, |v| {
        active.is_none_or(|a| v["active"] == a)
            && code.as_deref().is_none_or(|c| v["code"].as_str().is_some_and(|own| own.eq_ignore_ascii_case(c)))
            && coupon.as_deref().is_none_or(|c| v["promotion"]["coupon"] == c)
            && customer.as_deref().is_none_or(|c| v["customer"] == c)
    })
}
