//! `/v1/payment_methods` and `/v1/customers/{id}/payment_methods`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use crate::api::request::{respond, ApiRequest};
use crate::api::{list_kind, merged_metadata, metadata, retrieve_kind, ApiResult};
use crate::engine::payment_methods::{attach_payment_method, create_card_payment_method};
use crate::engine::Emulator;
use crate::model::cards::TestCard;
use crate::model::ApiError;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["type", "card", "billing_details", "metadata", "expand"])?;
    match p.str("type")? {
        Some("card") => {}
        Some(other) => return Err(p.invalid("type", format!("The emulator supports payment methods of type card only (got '{other}')."))),
        None => return Err(p.missing("type")),
    }
    let card_params = p.hash("card")?.ok_or_else(|| p.missing("card"))?;
    card_params.allow(&["number", "exp_month", "exp_year", "cvc", "token"])?;
    let card = match (card_params.non_empty_str("token")?, card_params.non_empty_str("number")?) {
        (Some(token), _) => TestCard::from_token(token).ok_or_else(|| ApiError::missing("token", token, Some("card[token]")))?,
        (None, Some(number)) => TestCard::from_number(number)?,
        (None, None) => return Err(card_params.missing("number")),
    };
    let exp_month = card_params.int("exp_month")?.unwrap_or(12);
    let exp_year = card_params.int("exp_year")?.unwrap_or(2034);
    if !(1..=12).contains(&exp_month) {
        return Err(ApiError {
            code: Some("invalid_expiry_month".into()),
            ..card_params.invalid("exp_month", "Your card's expiration month is invalid.")
        });
    }
    let name = match p.hash("billing_details")? {
        Some(b) => {
            b.allow(&["name", "email", "phone", "address"])?;
            b.non_empty_str("name")?.map(str::to_string)
        }
        None => None,
    };
    let meta = metadata(p, "metadata")?.unwrap_or_default();
    let pm = emu.apply(&req.info, |store| Ok(create_card_payment_method(store, &card, exp_month, exp_year, name.as_deref(), meta)))?;
    respond(&emu, &req, &pm)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "payment_method", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["metadata", "billing_details", "expand"])?;
    let pm = emu.apply(&req.info, |store| {
        let current = store.get_kind("payment_method", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        if let Some(b) = p.hash("billing_details")? {
            b.allow(&["name", "email", "phone"])?;
            let mut details = current["billing_details"].clone();
            for field in ["name", "email", "phone"] {
                if let Some(v) = b.str(field)? {
                    details[field] = if v.is_empty() { Value::Null } else { json!(v) };
                }
            }
            changes.insert("billing_details".into(), details);
        }
        Ok(store.commit(&id, changes, "payment_method.updated"))
    })?;
    respond(&emu, &req, &pm)
}

pub async fn attach(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["customer", "expand"])?;
    let customer = p.required_str("customer")?.to_string();
    let pm = emu.apply(&req.info, |store| {
        store.get_kind("customer", &customer, Some("customer"))?;
        let pm_id = attach_payment_method(store, &id, &customer, "payment_method")?;
        Ok(store.get(&pm_id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &pm)
}

pub async fn detach(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let pm = emu.apply(&req.info, |store| {
        let current = store.get_kind("payment_method", &id, Some("id"))?.clone();
        if current["customer"].is_null() {
            return Err(ApiError::bad_request(
                "The payment method you provided is not attached to a customer so detachment is impossible.",
            ));
        }
        let previous = store.update(&id, Map::from_iter([("customer".to_string(), Value::Null)]));
        store.emit_for("payment_method.detached", &id, Some(previous));
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &pm)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = req.params.non_empty_str("customer")?.map(str::to_string);
    if let Some(c) = &customer {
        emu.read(|s| s.get_kind("customer", c, Some("customer")).map(|_| ()))?;
    }
    list_for(&emu, &req, customer.as_deref())
}

pub async fn list_for_customer(State(emu): State<Emulator>, Path(customer): Path<String>, req: ApiRequest) -> ApiResult {
    emu.read(|s| s.get_kind("customer", &customer, Some("customer")).map(|_| ()))?;
    list_for(&emu, &req, Some(&customer))
}

fn list_for(emu: &Emulator, req: &ApiRequest, customer: Option<&str>) -> ApiResult {
    let kind = req.params.one_of("type", &["card"])?.map(str::to_string);
    list_kind(emu, req, "payment_method", &["customer", "type", "allow_redisplay"], customer, |pm| {
        kind.as_ref().is_none_or(|t| pm["type"] == t.as_str())
    })
}
