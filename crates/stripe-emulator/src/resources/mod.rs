//! One module per Stripe API resource: its handlers and the JSON shape of its objects.

pub mod billing_portal;
pub mod checkout;
pub mod control;
pub mod customers;
pub mod events;
pub mod invoices;
pub mod payment_intents;
pub mod payment_methods;
pub mod prices;
pub mod products;
pub mod subscriptions;
pub mod webhook_endpoints;

use serde_json::{Map, Value};

use crate::app::Emulator;
use crate::error::ApiError;
use crate::expand::{render, ExpandTree, ListPage};
use crate::form::Params;
use crate::http::{ApiRequest, JsonBody};
use crate::store::{paginate, ListParams, Store};

pub type ApiResult = Result<JsonBody, ApiError>;

/// Stripe's metadata rules: at most 50 keys, keys up to 40 characters without brackets, values up to 500.
pub fn metadata(params: &Params, name: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    let Some(hash) = params.hash(name)? else { return Ok(None) };
    let pairs = hash.string_pairs()?;
    if pairs.len() > 50 {
        return Err(params.invalid(name, "Metadata can have at most 50 keys."));
    }
    let mut map = Map::new();
    for (k, v) in pairs {
        if k.len() > 40 {
            return Err(params.invalid(name, format!("Metadata keys can be at most 40 characters long (got '{k}').")));
        }
        if v.len() > 500 {
            return Err(params.invalid(name, format!("Metadata values can be at most 500 characters long (key '{k}').")));
        }
        map.insert(k, Value::String(v));
    }
    Ok(Some(map))
}

/// Metadata update semantics: keys are merged, an empty value removes a key, `metadata=` clears all.
pub fn merged_metadata(current: &Value, params: &Params) -> Result<Option<Value>, ApiError> {
    let Some(updates) = metadata(params, "metadata")? else { return Ok(None) };
    if updates.is_empty() {
        return Ok(Some(Value::Object(Map::new())));
    }
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for (k, v) in updates {
        if v == "" {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    Ok(Some(Value::Object(merged)))
}

/// `GET` of one object of a kind, with expansions.
pub fn retrieve_kind(emulator: &Emulator, request: &ApiRequest, kind: &str, id: &str) -> ApiResult {
    request.params.allow(&["expand"])?;
    let expand = request.expand()?;
    emulator.read(|store| render(store, store.get_kind(kind, id, Some("id"))?, &expand).map(JsonBody))
}

/// A list endpoint: common pagination, the resource's filters, then expansion of the page.
pub fn list_kind(
    emulator: &Emulator,
    request: &ApiRequest,
    kind: &'static str,
    filters: &[&str],
    customer: Option<&str>,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult {
    let allowed: Vec<&str> = crate::store::LIST_PARAMS.iter().chain(filters.iter()).copied().collect();
    request.params.allow(&allowed)?;
    let expand = request.expand()?;
    let created = crate::store::created_filter(&request.params)?;
    emulator.read(|store| {
        let page = ListParams::from(&request.params, store)?;
        let (data, has_more) = paginate(store.iter_kind(kind, customer).filter(|v| keep(v) && created(v)), &page);
        let tree = ExpandTree::for_list(store, &data, &expand)?;
        let body = ListPage { store, data, has_more, url: &request.path, tree: &tree };
        Ok(JsonBody(serde_json::to_vec(&body).unwrap_or_default()))
    })
}

/// A customer id parameter that must name an existing customer.
pub fn existing_customer<'a>(store: &Store, params: &'a Params, name: &str) -> Result<Option<&'a str>, ApiError> {
    match params.non_empty_str(name)? {
        None => Ok(None),
        Some(id) => store.get_kind("customer", id, Some(name)).map(|_| Some(id)),
    }
}

/// Clearable string fields of an update: a value sets the field, an empty string sets it to null.
pub fn nullable_strings(params: &Params, fields: &[&str], changes: &mut Map<String, Value>) -> Result<(), ApiError> {
    for field in fields {
        if let Some(v) = params.str(field)? {
            changes.insert(field.to_string(), if v.is_empty() { Value::Null } else { Value::String(v.to_string()) });
        }
    }
    Ok(())
}

pub fn str_field(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}
