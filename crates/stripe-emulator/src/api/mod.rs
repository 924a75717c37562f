//! The HTTP API over the engine: Stripe's form encoding parsed into the engine's types at the
//! edge, `expand[]`, lists and search, the layers around every call, one module per resource in
//! [`resources`], and the control endpoints.
//!
//! This module holds what the resource handlers share: metadata rules, retrieval, lists.

pub mod expand;
pub mod form;
pub mod list;
pub mod middleware;
pub mod request;
pub mod resources;
pub mod search;

use serde_json::{Map, Value};

use crate::engine::Emulator;
use crate::model::ApiError;
use crate::store::Store;
use expand::{render, ExpandTree, ListPage};
use form::Params;
use list::{paginate, ListParams};
use request::{ApiRequest, JsonBody};

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
/// Newest first: by `created` for events (those of a test clock carry its time, so the order they
/// were made in is not their order in time), else in the order made.
pub fn list_kind(
    emulator: &Emulator,
    request: &ApiRequest,
    kind: &'static str,
    filters: &[&str],
    customer: Option<&str>,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult {
    let allowed: Vec<&str> = list::LIST_PARAMS.iter().chain(filters.iter()).copied().collect();
    request.params.allow(&allowed)?;
    let expand = request.expand()?;
    let created = list::created_filter(&request.params)?;
    emulator.read(|store| {
        let page = ListParams::from(&request.params, store)?;
        let mut matching: Vec<&Value> = store.iter_kind(kind, customer).filter(|v| keep(v) && created(v)).collect();
        if kind == "event" {
            // Stable: objects made in the same second keep their newest-first order.
            matching.sort_by_key(|v| std::cmp::Reverse(v["created"].as_i64().unwrap_or(0)));
        }
        let (data, has_more) = paginate(matching.into_iter(), &page);
        let tree = ExpandTree::for_list(store, &data, &expand)?;
        let body = ListPage { store, data, has_more, url: &request.path, tree: &tree, next_page: None };
        Ok(JsonBody(serde_json::to_vec(&body).unwrap_or_default()))
    })
}

/// A list of objects embedded in another (an invoice's lines, a subscription's items), paged by
/// `limit` and cursors that name items of it, oldest first as embedded.
pub fn list_embedded(store: &Store, request: &ApiRequest, filters: &[&str], items: &[Value]) -> ApiResult {
    let p = &request.params;
    let allowed: Vec<&str> = ["limit", "starting_after", "ending_before", "expand"].iter().chain(filters).copied().collect();
    p.allow(&allowed)?;
    let limit = match p.int("limit")? {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(_) => return Err(p.invalid("limit", "limit must be between 1 and 100.")),
    };
    // A cursor must name one of these items (they are not stored objects a list could look up).
    let cursor = |name: &str| -> Result<Option<String>, ApiError> {
        match p.non_empty_str(name)? {
            Some(id) if !items.iter().any(|i| i["id"] == id) => Err(p.invalid(name, format!("No such item: {id}"))),
            found => Ok(found.map(str::to_string)),
        }
    };
    let page = ListParams { limit, starting_after: cursor("starting_after")?, ending_before: cursor("ending_before")? };
    let (data, has_more) = paginate(items.iter(), &page);
    let tree = ExpandTree::for_list(store, &data, &request.expand()?)?;
    let body = ListPage { store, data, has_more, url: &request.path, tree: &tree, next_page: None };
    Ok(JsonBody(serde_json::to_vec(&body).unwrap_or_default()))
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

/// `trial_settings[end_behavior][missing_payment_method]`: what a trial ending without a card does.
pub fn trial_end_behavior(params: &Params) -> Result<String, ApiError> {
    let Some(settings) = params.hash("trial_settings")? else { return Ok("create_invoice".into()) };
    settings.allow(&["end_behavior"])?;
    let Some(end) = settings.hash("end_behavior")? else { return Err(settings.missing("end_behavior")) };
    end.allow(&["missing_payment_method"])?;
    let behavior = end.one_of("missing_payment_method", &["cancel", "create_invoice", "pause"])?;
    Ok(behavior.ok_or_else(|| end.missing("missing_payment_method"))?.to_string())
}
