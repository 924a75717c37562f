//! `/v1/customers`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::app::Emulator;
use crate::error::ApiError;
use crate::form::Params;
use crate::http::{respond, ApiRequest};
use crate::store::{new_id, Store};

const FIELDS: &[&str] =
    &["email", "name", "description", "phone", "metadata", "payment_method", "invoice_settings", "preferred_locales", "expand"];

pub fn create_in(store: &mut Store, params: &Params) -> Result<Value, ApiError> {
    params.allow(FIELDS)?;
    let id = new_id("cus_");
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": store.now(),
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": params.non_empty_str("description")?,
        "discount": null,
        "email": params.non_empty_str("email")?,
        "invoice_prefix": id[4..12].to_ascii_uppercase(),
        "invoice_settings": { "custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null },
        "livemode": false,
        "metadata": metadata(params, "metadata")?.unwrap_or_default(),
        "name": params.non_empty_str("name")?,
        "next_invoice_sequence": 1,
        "phone": params.non_empty_str("phone")?,
        "preferred_locales": params.str_list("preferred_locales")?,
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    });
    store.insert(customer.clone());
    store.emit("customer.created", &customer, None);
    // A payment method given at creation is attached; `invoice_settings[default_payment_method]` then names it.
    if let Some(pm) = params.non_empty_str("payment_method")? {
        crate::cards::attach_payment_method(store, pm, &id, "payment_method")?;
    }
    if let Some(settings) = params.hash("invoice_settings")? {
        apply_invoice_settings(store, &id, &settings)?;
    }
    Ok(store.get(&id).cloned().unwrap_or_default())
}

/// `invoice_settings[default_payment_method]`: must be a payment method attached to this customer.
fn apply_invoice_settings(store: &mut Store, id: &str, settings: &Params) -> Result<(), ApiError> {
    settings.allow(&["default_payment_method", "footer"])?;
    let mut invoice_settings = store.get(id).map(|c| c["invoice_settings"].clone()).unwrap_or_default();
    if let Some(pm) = settings.str("default_payment_method")? {
        if pm.is_empty() {
            invoice_settings["default_payment_method"] = Value::Null;
        } else {
            let pm = crate::cards::resolve_payment_method(store, pm, id, "invoice_settings[default_payment_method]")?;
            invoice_settings["default_payment_method"] = json!(pm);
        }
    }
    if let Some(footer) = settings.str("footer")? {
        invoice_settings["footer"] = if footer.is_empty() { Value::Null } else { json!(footer) };
    }
    store.commit(id, Map::from_iter([("invoice_settings".to_string(), invoice_settings)]), "customer.updated");
    Ok(())
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let customer = emu.apply(&req.info, |store| create_in(store, &req.params))?;
    respond(&emu, &req, &customer)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    // A deleted customer is still retrievable, as `{id, object, deleted: true}`.
    if let Some(deleted) = emu.read(|s| Ok(s.get(&id).filter(|c| c["object"] == "customer" && c["deleted"] == true).cloned()))? {
        return Ok(crate::http::JsonBody::of(&deleted));
    }
    retrieve_kind(&emu, &req, "customer", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(FIELDS)?;
    let customer = emu.apply(&req.info, |store| {
        let current = store.get_kind("customer", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        nullable_strings(p, &["email", "name", "description", "phone"], &mut changes)?;
        if p.has("preferred_locales") {
            changes.insert("preferred_locales".into(), json!(p.str_list("preferred_locales")?));
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        store.commit(&id, changes, "customer.updated");
        if let Some(pm) = p.non_empty_str("payment_method")? {
            crate::cards::attach_payment_method(store, pm, &id, "payment_method")?;
        }
        if let Some(settings) = p.hash("invoice_settings")? {
            apply_invoice_settings(store, &id, &settings)?;
        }
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &customer)
}

/// Deleting a customer cancels its subscriptions at once, as Stripe does.
pub async fn delete(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| {
        let customer = store.get_kind("customer", &id, Some("id"))?.clone();
        let live: Vec<String> = store
            .iter_kind("subscription", Some(&id))
            .filter(|s| !crate::billing::is_ended(s))
            .map(|s| super::str_field(s, "id"))
            .collect();
        for sub in live {
            crate::billing::cancel_now(store, &sub, "cancellation_requested");
        }
        let tombstone = store.delete(&id);
        store.emit("customer.deleted", &customer, None);
        Ok(tombstone)
    })?;
    Ok(crate::http::JsonBody::of(&deleted))
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let email = req.params.non_empty_str("email")?.map(str::to_string);
    list_kind(&emu, &req, "customer", &["email", "test_clock"], None, |c| email.as_ref().is_none_or(|e| c["email"] == e.as_str()))
}
