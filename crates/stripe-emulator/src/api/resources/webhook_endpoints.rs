//! `/v1/webhook_endpoints`: where events are delivered, and with which secret they are signed.

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use crate::api::form::Params;
use crate::api::request::ApiRequest;
use crate::api::{list_kind, merged_metadata, metadata, nullable_strings, retrieve_kind, ApiResult};
use crate::engine::webhooks::register_endpoint;
use crate::engine::Emulator;
use crate::model::ApiError;
use crate::model::API_VERSION;

fn valid_url(params: &Params, name: &str) -> Result<Option<String>, ApiError> {
    match params.non_empty_str(name)? {
        None => Ok(None),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url.to_string())),
        Some(url) => Err(params.invalid(name, format!("Invalid URL: {url}. URLs must begin with http:// or https://"))),
    }
}

fn enabled_events(params: &Params) -> Result<Option<Vec<String>>, ApiError> {
    if !params.has("enabled_events") {
        return Ok(None);
    }
    let events = params.str_list("enabled_events")?;
    if events.is_empty() {
        return Err(params.invalid("enabled_events", "enabled_events must list at least one event type (or *)."));
    }
    if let Some(bad) =
        events.iter().find(|e| *e != "*" && !(e.contains('.') && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')))
    {
        return Err(params.invalid("enabled_events", format!("Invalid event type: {bad}")));
    }
    Ok(Some(events))
}

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["url", "enabled_events", "description", "metadata", "api_version", "connect", "expand"])?;
    let url = valid_url(p, "url")?.ok_or_else(|| p.missing("url"))?;
    let events = enabled_events(p)?.ok_or_else(|| p.missing("enabled_events"))?;
    let api_version = p.non_empty_str("api_version")?.map(str::to_string);
    let description = p.non_empty_str("description")?.map(str::to_string);
    let meta = metadata(p, "metadata")?.unwrap_or_default();
    let endpoint = emu.apply(&req.info, |store| {
        let mut endpoint = register_endpoint(store, &url, &events, None);
        let id = endpoint["id"].as_str().unwrap_or_default().to_string();
        let fields = Map::from_iter([
            ("api_version".to_string(), json!(api_version.as_deref().unwrap_or(API_VERSION))),
            ("description".to_string(), json!(description)),
            ("metadata".to_string(), Value::Object(meta)),
        ]);
        store.update(&id, fields.clone());
        for (k, v) in fields {
            endpoint[k] = v;
        }
        Ok(endpoint)
    })?;
    Ok(crate::api::request::JsonBody::of(&endpoint))
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "webhook_endpoint", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["url", "enabled_events", "description", "metadata", "disabled", "expand"])?;
    let url = valid_url(p, "url")?;
    let events = enabled_events(p)?;
    let endpoint = emu.apply(&req.info, |store| {
        let current = store.get_kind("webhook_endpoint", &id, Some("id"))?.clone();
        let mut changes = Map::new();
        if let Some(url) = url {
            changes.insert("url".into(), json!(url));
        }
        if let Some(events) = events {
            changes.insert("enabled_events".into(), json!(events));
        }
        nullable_strings(p, &["description"], &mut changes)?;
        if let Some(disabled) = p.bool("disabled")? {
            changes.insert("status".into(), json!(if disabled { "disabled" } else { "enabled" }));
        }
        if let Some(m) = merged_metadata(&current["metadata"], p)? {
            changes.insert("metadata".into(), m);
        }
        store.update(&id, changes);
        Ok(store.get(&id).cloned().unwrap_or_default())
    })?;
    Ok(crate::api::request::JsonBody::of(&endpoint))
}

pub async fn delete(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&[])?;
    let deleted = emu.apply(&req.info, |store| {
        store.get_kind("webhook_endpoint", &id, Some("id"))?;
        let tombstone = store.delete(&id);
        store.set_webhook_secret(&id, None);
        Ok(tombstone)
    })?;
    Ok(crate::api::request::JsonBody::of(&deleted))
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    list_kind(&emu, &req, "webhook_endpoint", &[], None, |_| true)
}
