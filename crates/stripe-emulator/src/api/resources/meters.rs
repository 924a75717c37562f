//! `/v1/billing/meters` (create, list, retrieve, update, deactivate, reactivate, event
//! summaries) and `/v1/billing/meter_events`.

use axum::extract::{Path, State};

use crate::api::request::{respond, ApiRequest};
use crate::api::{list_embedded, list_kind, metadata, retrieve_kind, ApiResult};
use crate::engine::meters::{self, NewMeter};
use crate::engine::Emulator;

pub async fn create(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["display_name", "event_name", "default_aggregation", "customer_mapping", "value_settings", "event_time_window", "expand"])?;
    let display_name = p.required_str("display_name")?;
    let event_name = p.required_str("event_name")?;
    if display_name.len() > 250 || event_name.len() > 100 {
        return Err(p.invalid(if display_name.len() > 250 { "display_name" } else { "event_name" }, "Too long."));
    }
    let aggregation = p.hash("default_aggregation")?.ok_or_else(|| p.missing("default_aggregation[formula]"))?;
    aggregation.allow(&["formula"])?;
    let formula = aggregation.one_of("formula", &["sum", "count", "last"])?.ok_or_else(|| aggregation.missing("formula"))?;
    let customer_key = match p.hash("customer_mapping")? {
        None => "stripe_customer_id".to_string(),
        Some(mapping) => {
            mapping.allow(&["event_payload_key", "type"])?;
            mapping.one_of("type", &["by_id"])?.ok_or_else(|| mapping.missing("type"))?;
            mapping.required_str("event_payload_key")?.to_string()
        }
    };
    let value_key = match p.hash("value_settings")? {
        None => "value".to_string(),
        Some(settings) => {
            settings.allow(&["event_payload_key"])?;
            settings.required_str("event_payload_key")?.to_string()
        }
    };
    let event_time_window = p.one_of("event_time_window", &["day", "hour"])?;
    let new = NewMeter { display_name, event_name, formula, customer_key: &customer_key, value_key: &value_key, event_time_window };
    let meter = emu.apply(&req.info, |store| meters::create(store, new))?;
    respond(&emu, &req, &meter)
}

pub async fn retrieve(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    retrieve_kind(&emu, &req, "billing.meter", &id)
}

pub async fn update(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["display_name", "expand"])?;
    let name = p.non_empty_str("display_name")?;
    let meter = emu.apply(&req.info, |store| meters::update(store, &id, name, None))?;
    respond(&emu, &req, &meter)
}

pub async fn deactivate(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let meter = emu.apply(&req.info, |store| meters::update(store, &id, None, Some(false)))?;
    respond(&emu, &req, &meter)
}

pub async fn reactivate(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    req.params.allow(&["expand"])?;
    let meter = emu.apply(&req.info, |store| meters::update(store, &id, None, Some(true)))?;
    respond(&emu, &req, &meter)
}

pub async fn list(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let status = req.params.one_of("status", &["active", "inactive"])?.map(str::to_string);
    list_kind(&emu, &req, "billing.meter", &["status"], None, |m| status.as_deref().is_none_or(|s| m["status"] == s))
}

pub async fn create_event(State(emu): State<Emulator>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    p.allow(&["event_name", "payload", "identifier", "timestamp", "expand"])?;
    let event_name = p.required_str("event_name")?;
    if event_name.len() > 100 {
        return Err(p.invalid("event_name", "At most 100 characters."));
    }
    let payload = metadata(p, "payload")?.ok_or_else(|| p.missing("payload"))?;
    let identifier = p.non_empty_str("identifier")?;
    if identifier.is_some_and(|i| i.len() > 100) {
        return Err(p.invalid("identifier", "At most 100 characters."));
    }
    let timestamp = p.int("timestamp")?;
    let event = emu.apply(&req.info, |store| meters::record_event(store, event_name, payload, identifier, timestamp))?;
    respond(&emu, &req, &event)
}

/// `GET /v1/billing/meters/{id}/event_summaries?customer=&start_time=&end_time=`: times aligned
/// to the minute (to the hour or day with `value_grouping_window`), as Stripe requires.
pub async fn event_summaries(State(emu): State<Emulator>, Path(id): Path<String>, req: ApiRequest) -> ApiResult {
    let p = &req.params;
    let customer = p.required_str("customer")?;
    let start = p.int("start_time")?.ok_or_else(|| p.missing("start_time"))?;
    let end = p.int("end_time")?.ok_or_else(|| p.missing("end_time"))?;
    let window = match p.one_of("value_grouping_window", &["hour", "day"])? {
        Some("hour") => Some(3600),
        Some(_) => Some(86_400),
        None => None,
    };
    let align = window.unwrap_or(60);
    for (name, at) in [("start_time", start), ("end_time", end)] {
        if at % align != 0 {
            return Err(p.invalid(
                name,
                format!(
                    "{name} must be aligned to {} boundaries.",
                    if align == 60 {
                        "minute"
                    } else if align == 3600 {
                        "hour"
                    } else {
                        "day"
                    }
                ),
            ));
        }
    }
    if end <= start {
        return Err(p.invalid("end_time", "end_time must be after start_time."));
    }
    emu.read(|store| {
        let meter = store.get_kind("billing.meter", &id, Some("id"))?.clone();
        store.get_kind("customer", customer, Some("customer"))?;
        let items = meters::summaries(store, &meter, customer, start, end, window);
        list_embedded(store, &req, &["customer", "start_time", "end_time", "value_grouping_window"], &items)
    })
}
