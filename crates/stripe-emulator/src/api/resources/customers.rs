//! `/v1/customers`.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use crate::api::form::Params;
use crate::api::request::{respond, ApiRequest, JsonBody};
use crate::api::search::{search_kind, Field};
use crate::api::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::engine::customers::{create_customer, delete_customer, NewCustomer};
use crate::engine::payment_methods::{attach_payment_method, resolve_payment_method};
use crate::engine::Emulator;
use crate::model::ApiError;
use crate::store::Store;

const FIELDS: &[&str] =
    &["email", "name", "description", "phone", "metadata", "payment_method", "invoice_settings", "preferred_locales", "expand"];

/// `invoice_settings[default_payment_method]`: must be a payment method attached to this customer.
fn apply_invoice_settings(store: &mut Store, id: &str, settings: &Params) -> Result<(), ApiError> {
    settings.allow(&["default_payment_method", "footer"])?;
    store.use_clock_of(id);
    let mut invoice_settings = store.get(id).map(|c| c["invoice_settings"].clone()).unwrap_or_default();
    if let Some(pm) = settings.str("default_payment_method")? {
        if pm.is_empty() {
            invoice_settings["default_payment_method"] = Value::Null;
        } else {
            let pm = resolve_payment_method(store, pm, id, "invoice_settings[default_payment_method]")?;
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
    let p = &req.params;
    let allowed: Vec<&str> = FIELDS.iter().copied().chain(["test_clock"]).collect();
    p.allow(&allowed)?;
    let new = NewCustomer {
        email: p.non_empty_str("email")?.map(str::to_string),
        name: p.non_empty_str("name")?.map(str::to_string),
        description: p.non_empty_str("description")?.map(str::to_string),
        phone: p.non_empty_str("phone")?.map(str::to_string),
        metadata: metadata(p, "metadata")?.unwrap_or_default(),
        preferred_locales: p.str_list("preferred_locales")?,
        test_clock: p.non_empty_str("test_clock")?.map(str::to_string),
    };
    let customer = emu.apply(&req.info, |store| {
        let customer = create_customer(store, new)?;
        let id = customer["id"].as_str().unwrap_or_default();
        // A payment method given at creation is attached; `invoice_settings[default_payment_method]` then names it.
        if let Some(pm) = p.non_empty_str("payment_method")? {
            attach_payment_method(store, pm, id, "payment_method")?;
        }
        if let Some(settings) = p.hash("invoice_settings")? {
            apply_invoice_settings(store, id, &settings)?;
        }
        Ok(store.get(id).cloned().unwrap_or_default())
    })?;
    respond(&emu, &req, &customer)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    // A deleted customer is still retrievable, as `{id, object, deleted: true}`.
    if let Some(deleted) = emu.read(|s| Ok(s.get(&id).filter(|c| c["object"] == "customer" && c["deleted"] == true).cloned()))? {
        return Ok(JsonBody::of(&deleted));
    }
    retrieve_kind(&emu, &req, "customer", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(FIELDS)?;
    let customer = emu.apply(&req.info, |store| {
        let current = store.get_kind("customer", &id, Some("id"))?.clone();
        store.use_clock_of(&id);
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
            attach_payment_method(store, pm, &id, "payment_method")?;
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
    let deleted = emu.apply(&req.info, |store| delete_customer(store, &id))?;
    Ok(JsonBody::of(&deleted))
}

/// Customers under a test clock are listed only when asked for by `test_clock`, as in Stripe.
pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let email = req.params.non_empty_str("email")?.map(str::to_string);
    let clock = req.params.non_empty_str("test_clock")?.map(str::to_string);
    list_kind(&emu, &req, "customer", &["email", "test_clock"], None, |c| {
        email.as_ref().is_none_or(|e| c["email"] == e.as_str()) && c["test_clock"] == clock.as_deref().map_or(Value::Null, Value::from)
    })
}

/// `GET /v1/customers/search`.
pub async fn search(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    const FIELDS: &[(&str, Field)] =
        &[("created", Field::Numeric), ("email", Field::Text), ("metadata", Field::Token), ("name", Field::Text), ("phone", Field::Text)];
    search_kind(&emu, &req, "customer", FIELDS)
}
