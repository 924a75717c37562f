//! `POST /api/stripe-webhook`: verify the signature on the raw body, then durably record that the
//! event's customer needs a sync (the drain runs it) and answer. If the record cannot be stored the
//! answer is a 5xx, so Stripe redelivers: no 2xx is ever given for an update that could be lost.

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::{Failure, Surface};
use crate::state::AppState;
use tollgate_core::billing::events::{route, EventAction};
use tollgate_core::stripe::webhook::verify;
use tollgate_core::stripe::wire::Event;

/// Stripe's payloads are far smaller; anything larger is refused unread.
pub(crate) const MAX_EVENT_BYTES: usize = 512 * 1024;

/// The answer to an accepted event.
#[derive(Serialize)]
struct Acknowledged {
    received: bool,
    /// A sync of the event's customer was recorded.
    queued: bool,
    /// This event id was recorded before.
    duplicate: bool,
}

#[tracing::instrument(name = "webhook", skip_all, fields(event = tracing::field::Empty, event_type = tracing::field::Empty))]
pub(crate) async fn stripe_webhook(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Failure> {
    let counted = |event_type: &str, outcome: &str| {
        crate::telemetry::metrics::METRICS.webhook_events.with_label_values(&[event_type, outcome]).inc();
    };
    let Ok(payload) = to_bytes(body, MAX_EVENT_BYTES).await else {
        counted("unknown", "rejected");
        return Err(Failure::too_large(Surface::Api));
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    verify(&payload, signature, state.webhook_secret.expose(), tollgate_core::unix_now()).map_err(|e| {
        counted("unknown", "rejected");
        Failure::bad_request(Surface::Api, "invalid_signature", e.to_string())
    })?;
    let event: Event = serde_json::from_slice(&payload)
        .map_err(|e| Failure::bad_request(Surface::Api, "invalid_event", format!("The signed body is not a Stripe event: {e}")))?;
    // The id becomes part of a KV key: Stripe's are `evt_` and letters or digits.
    if event.id.is_empty() || event.id.len() > 255 || !event.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Failure::bad_request(Surface::Api, "invalid_event", "The event id is not a Stripe event id."));
    }
    let span = tracing::Span::current();
    span.record("event", event.id.as_ref());
    span.record("event_type", event.event_type.as_ref());
    let acknowledged = |queued: bool, duplicate: bool| Json(Acknowledged { received: true, queued, duplicate }).into_response();
    // A signed event's type is Stripe's: a bounded label.
    let event_type = event.event_type.as_ref();
    match route(&event) {
        EventAction::Untracked => {
            counted(event_type, "untracked");
            Ok(acknowledged(false, false))
        }
        EventAction::NoCustomer => {
            counted(event_type, "no_customer");
            tracing::info!("tracked event without a customer id: acknowledged, nothing to sync");
            Ok(acknowledged(false, false))
        }
        EventAction::Sync(customer) => {
            let recorded = state.billing.record_event(&customer, &event.id).await.map_err(|e| {
                counted(event_type, "failed");
                Failure::from_billing(Surface::Api, e)
            })?;
            counted(event_type, if recorded { "queued" } else { "duplicate" });
            Ok(acknowledged(recorded, !recorded))
        }
    }
}
