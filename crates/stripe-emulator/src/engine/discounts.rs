//! Coupons, promotion codes (customer-facing codes for a coupon), and the discounts they become
//! on a subscription: a percentage or an amount off each invoice while the discount lasts —
//! the first invoice with something to pay (`once`), `duration_in_months` from the start
//! (`repeating`, its `end`), or always (`forever`).

use serde_json::{json, Map, Value};

use crate::model::calendar::add_interval;
use crate::model::{new_id, random_alphanumeric, ApiError};
use crate::store::Store;

/// A coupon to create; the API has checked each field's form.
pub struct NewCoupon {
    pub id: Option<String>,
    pub percent_off: Option<f64>,
    pub amount_off: Option<(i64, String)>,
    pub duration: String,
    pub duration_in_months: Option<i64>,
    pub name: Option<String>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<i64>,
    pub metadata: Map<String, Value>,
}

pub fn create_coupon(store: &mut Store, new: NewCoupon) -> Result<Value, ApiError> {
    let id = match new.id {
        Some(id) if store.contains(&id) => {
            return Err(ApiError::invalid(format!("Coupon already exists: {id}"), Some("id"), "resource_already_exists"))
        }
        Some(id) => id,
        None => random_alphanumeric(8),
    };
    let (amount_off, currency) = match new.amount_off {
        Some((amount, currency)) => (json!(amount), json!(currency)),
        None => (Value::Null, Value::Null),
    };
    let coupon = json!({
        "id": id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": store.now(),
        "currency": currency,
        "duration": new.duration,
        "duration_in_months": new.duration_in_months,
        "livemode": false,
        "max_redemptions": new.max_redemptions,
        "metadata": new.metadata,
        "name": new.name,
        "percent_off": new.percent_off,
        "redeem_by": new.redeem_by,
        "times_redeemed": 0,
        "valid": true,
    });
    store.insert(coupon.clone());
    store.emit("coupon.created", &coupon, None);
    Ok(coupon)
}

/// A promotion code for `coupon`; `code` defaults to eight random capitals and digits.
pub struct NewPromotionCode {
    pub coupon: String,
    pub code: Option<String>,
    pub active: bool,
    pub max_redemptions: Option<i64>,
    pub expires_at: Option<i64>,
    pub customer: Option<String>,
    pub metadata: Map<String, Value>,
}

pub fn create_promotion_code(store: &mut Store, new: NewPromotionCode) -> Result<Value, ApiError> {
    store.get_kind("coupon", &new.coupon, Some("promotion[coupon]"))?;
    let code = new.code.unwrap_or_else(|| random_alphanumeric(8).to_ascii_uppercase());
    if store.iter_kind("promotion_code", None).any(|p| p["active"] == true && same_code(p, &code)) {
        return Err(ApiError::invalid(
            format!("An active promotion code with code: {code} already exists."),
            Some("code"),
            "resource_already_exists",
        ));
    }
    let promotion = json!({
        "id": new_id("promo_"),
        "object": "promotion_code",
        "active": new.active,
        "code": code,
        "created": store.now(),
        "customer": new.customer,
        "customer_account": null,
        "expires_at": new.expires_at,
        "livemode": false,
        "max_redemptions": new.max_redemptions,
        "metadata": new.metadata,
        "promotion": { "coupon": new.coupon, "type": "coupon" },
        "restrictions": { "first_time_transaction": false, "minimum_amount": null, "minimum_amount_currency": null },
        "times_redeemed": 0,
    });
    store.insert(promotion.clone());
    store.emit("promotion_code.created", &promotion, None);
    Ok(promotion)
}

/// Codes are matched without regard to case, as Stripe's Checkout does.
fn same_code(promotion: &Value, code: &str) -> bool {
    promotion["code"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(code))
}

/// The promotion code a payer typed, if it can be redeemed now by `customer`: its id and coupon.
pub fn redeemable(store: &Store, code: &str, customer: Option<&str>) -> Result<(String, String), ApiError> {
    let invalid = || ApiError::invalid("This code is invalid.", Some("promotion_code"), "promotion_code_invalid");
    let now = store.now();
    let promotion = store.iter_kind("promotion_code", None).find(|p| p["active"] == true && same_code(p, code)).ok_or_else(invalid)?;
    let used_up = |v: &Value| v["max_redemptions"].as_i64().is_some_and(|max| v["times_redeemed"].as_i64().unwrap_or(0) >= max);
    let expired = promotion["expires_at"].as_i64().is_some_and(|at| at <= now);
    let other_customer = promotion["customer"].as_str().is_some_and(|c| Some(c) != customer);
    let coupon_id = promotion["promotion"]["coupon"].as_str().unwrap_or_default();
    let coupon = store.get_kind("coupon", coupon_id, None).map_err(|_| invalid())?;
    let coupon_over = coupon["valid"] != true || coupon["redeem_by"].as_i64().is_some_and(|at| at <= now) || used_up(coupon);
    if used_up(promotion) || expired || other_customer || coupon_over {
        return Err(invalid());
    }
    Ok((promotion["id"].as_str().unwrap_or_default().to_string(), coupon_id.to_string()))
}

/// A coupon (through a promotion code, or given directly) being applied to a new subscription.
#[derive(Debug, Clone)]
pub struct NewDiscount {
    pub coupon: String,
    pub promotion_code: Option<String>,
    pub checkout_session: Option<String>,
}

/// Apply `new` to `subscription` of `customer`: the discount object, counted as a redemption of
/// its coupon and promotion code. Returns the discount's id.
pub fn apply(store: &mut Store, new: &NewDiscount, customer: &str, subscription: &str) -> String {
    let now = store.now();
    let coupon = store.get(&new.coupon).cloned().unwrap_or_default();
    let end = match (coupon["duration"].as_str(), coupon["duration_in_months"].as_i64()) {
        (Some("repeating"), Some(months)) => json!(add_interval(now, "month", months)),
        _ => Value::Null,
    };
    let id = new_id("di_");
    store.insert(json!({
        "id": id,
        "object": "discount",
        "checkout_session": new.checkout_session,
        "customer": customer,
        "customer_account": null,
        "end": end,
        "invoice": null,
        "invoice_item": null,
        "promotion_code": new.promotion_code,
        "source": { "coupon": new.coupon, "type": "coupon" },
        "start": now,
        "subscription": subscription,
        "subscription_item": null,
    }));
    for redeemed in std::iter::once(&new.coupon).chain(new.promotion_code.as_ref()) {
        let times = store.get(redeemed).and_then(|v| v["times_redeemed"].as_i64()).unwrap_or(0);
        store.update(redeemed, Map::from_iter([("times_redeemed".to_string(), json!(times + 1))]));
    }
    id
}

/// What the discounts of `subscription` take off an invoice of `amount` for the period starting
/// at `period_start`: each applying discount's id and amount, in order, never more than is left.
pub fn amounts_off(store: &Store, subscription: &Value, amount: i64, period_start: i64) -> Vec<(String, i64)> {
    let mut left = amount;
    let mut off = Vec::new();
    for id in subscription["discounts"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let Some(discount) = store.get(id) else { continue };
        if discount["end"].as_i64().is_some_and(|end| end <= period_start) {
            continue;
        }
        let coupon = discount["source"]["coupon"].as_str().and_then(|c| store.get(c)).cloned().unwrap_or_default();
        let taken = match (coupon["percent_off"].as_f64(), coupon["amount_off"].as_i64()) {
            (Some(percent), _) => (left as f64 * percent / 100.0).round() as i64,
            (None, Some(amount_off)) => amount_off,
            _ => 0,
        }
        .clamp(0, left);
        left -= taken;
        off.push((id.to_string(), taken));
    }
    off
}

/// After an invoice: a `once` discount that took something off is used up, and leaves the
/// subscription (`customer.discount.deleted`).
pub fn use_up_once(store: &mut Store, subscription: &str, applied: &[(String, i64)]) {
    for (id, amount) in applied {
        let once =
            store.get(id).and_then(|d| d["source"]["coupon"].as_str()).and_then(|c| store.get(c)).is_some_and(|c| c["duration"] == "once");
        if !once || *amount == 0 {
            continue;
        }
        let Some(current) = store.get(subscription).cloned() else { continue };
        let remaining: Vec<Value> = current["discounts"].as_array().into_iter().flatten().filter(|d| *d != id.as_str()).cloned().collect();
        store.update(subscription, Map::from_iter([("discounts".to_string(), json!(remaining))]));
        if let Some(discount) = store.get(id).cloned() {
            store.emit("customer.discount.deleted", &discount, None);
        }
    }
}
