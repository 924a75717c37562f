//! Stripe's v2 meter event stream, for usage above the 1,000 events a second of
//! `/v1/billing/meter_events`: `POST /v2/billing/meter_event_session` (with the secret key)
//! answers a token good for 15 minutes; `POST /v2/billing/meter_event_stream` (with that token as
//! the bearer, a JSON body of up to 100 events) records them and answers `{}`. Times are RFC 3339,
//! as everywhere in v2. An expired token is a 401 `temporary_session_expired`
//! (`billing_meter_event_session_expired`), which the official SDKs raise as their own error.
//!
//! As in Stripe, the stream validates each event after answering: the request's shape is checked
//! at once (a 400), but an event whose identifier was recorded before, or whose time is out of
//! range, is dropped silently (Stripe reports those later in a
//! `v1.billing.meter.error_report_triggered` event, which this emulator does not send).

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::engine::{meters, Emulator};
use crate::model::{new_id, random_alphanumeric, ApiError, RequestInfo};

/// How long a session's token is good for (Stripe's 15 minutes).
const SESSION_LIFETIME: i64 = 15 * 60;
/// Events in one stream request, at most.
const MAX_EVENTS: usize = 100;
const SESSION: &str = "v2.billing.meter_event_session";

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)).to_string()
}

/// `POST /v2/billing/meter_event_session` (behind the API key, like every other endpoint).
pub async fn create_session(State(emu): State<Emulator>) -> Result<Json<Value>, ApiError> {
    let session = emu.apply(&RequestInfo::default(), |store| {
        let now = store.now();
        let session = json!({
            "id": new_id("mes_"),
            "object": SESSION,
            "authentication_token": format!("mes_tok_{}", random_alphanumeric(32)),
            "created_unix": now,
            "expires_unix": now + SESSION_LIFETIME,
        });
        store.insert(session.clone());
        Ok(session)
    })?;
    Ok(Json(json!({
        "id": session["id"],
        "object": SESSION,
        "authentication_token": session["authentication_token"],
        "created": rfc3339(session["created_unix"].as_i64().unwrap_or(0)),
        "expires_at": rfc3339(session["expires_unix"].as_i64().unwrap_or(0)),
        "livemode": false,
    })))
}

/// One event of a stream request, checked for shape.
struct StreamEvent {
    event_name: String,
    payload: Map<String, Value>,
    identifier: Option<String>,
    timestamp: Option<i64>,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid(format!("{field}: {message}"), Some(field), "invalid_fields")
}

fn parse_events(body: &[u8]) -> Result<Vec<StreamEvent>, ApiError> {
    let body: Value = serde_json::from_slice(body).map_err(|_| invalid("events", "the body must be a JSON object with an events array"))?;
    let events = body["events"].as_array().ok_or_else(|| invalid("events", "required, an array of events"))?;
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(invalid("events", "between 1 and 100 events per request"));
    }
    events
        .iter()
        .enumerate()
        .map(|(n, event)| {
            let field = |name: &str| format!("events[{n}].{name}");
            let event_name = event["event_name"].as_str().filter(|e| (1..=100).contains(&e.len()));
            let event_name = event_name.ok_or_else(|| invalid(&field("event_name"), "required, at most 100 characters"))?;
            let payload = event["payload"].as_object().filter(|p| p.values().all(Value::is_string));
            let payload = payload.ok_or_else(|| invalid(&field("payload"), "required, an object of strings"))?;
            let identifier = match &event["identifier"] {
                Value::Null => None,
                Value::String(i) if (1..=100).contains(&i.len()) => Some(i.clone()),
                _ => return Err(invalid(&field("identifier"), "a string of at most 100 characters")),
            };
            let timestamp = match &event["timestamp"] {
                Value::Null => None,
                Value::String(t) => {
                    let at = humantime::parse_rfc3339_weak(t).map_err(|_| invalid(&field("timestamp"), "an RFC 3339 time"))?;
                    Some(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
                }
                _ => return Err(invalid(&field("timestamp"), "an RFC 3339 time")),
            };
            Ok(StreamEvent { event_name: event_name.to_string(), payload: payload.clone(), identifier, timestamp })
        })
        .collect()
}

/// `POST /v2/billing/meter_event_stream`: authenticated by a session's token, not the API key.
pub async fn stream(State(emu): State<Emulator>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    let session = emu.read(|store| {
        let now = store.now();
        Ok(store
            .iter_kind(SESSION, None)
            .find(|s| !token.is_empty() && s["authentication_token"] == token)
            .map(|s| s["expires_unix"].as_i64() > Some(now)))
    });
    match session {
        Ok(Some(true)) => {}
        Ok(Some(false)) => {
            return ApiError {
                code: Some("billing_meter_event_session_expired".into()),
                ..ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "temporary_session_expired",
                    "The meter event session has expired: create a new one.",
                )
            }
            .into_response()
        }
        _ => return ApiError::unauthorized("Send a meter event session's authentication_token as the bearer token.").into_response(),
    }
    let events = match parse_events(&body) {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    let recorded = emu.apply(&RequestInfo::default(), |store| {
        for event in events {
            // Validated after the answer in Stripe: a refused event is dropped, not an error here.
            let _ = meters::record_event(store, &event.event_name, event.payload, event.identifier.as_deref(), event.timestamp);
        }
        Ok(())
    });
    match recorded {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_both_ways() {
        assert_eq!(rfc3339(1_717_243_200), "2024-06-01T12:00:00.000Z");
        let parsed =
            parse_events(br#"{"events":[{"event_name":"e","payload":{"value":"1"},"timestamp":"2024-06-01T12:00:00.000Z"}]}"#).unwrap();
        assert_eq!(parsed[0].timestamp, Some(1_717_243_200));
    }

    #[test]
    fn a_malformed_request_names_its_field() {
        let refused = |body: &str| parse_events(body.as_bytes()).err().and_then(|e| e.param).unwrap_or_default();
        assert_eq!(refused("[]"), "events");
        assert_eq!(refused(r#"{"events":[]}"#), "events");
        assert_eq!(refused(r#"{"events":[{"payload":{}}]}"#), "events[0].event_name");
        assert_eq!(refused(r#"{"events":[{"event_name":"e","payload":{"value":1}}]}"#), "events[0].payload");
        assert_eq!(refused(r#"{"events":[{"event_name":"e","payload":{},"timestamp":"yesterday"}]}"#), "events[0].timestamp");
        let many = format!(r#"{{"events":[{}]}}"#, vec![r#"{"event_name":"e","payload":{}}"#; 101].join(","));
        assert_eq!(refused(&many), "events");
    }
}
