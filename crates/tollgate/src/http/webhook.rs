//! `POST /api/stripe-webhook`: verify the signature on the raw body, then sync the event's customer
//! before answering, so Stripe redelivers (5xx) whenever the update could not be stored.

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{Failure, Surface};
use crate::billing::events::{route, EventAction};
use crate::state::AppState;
use crate::stripe::webhook::verify;
use crate::stripe::wire::Event;

/// Stripe's payloads are far smaller; anything larger is refused unread.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

#[tracing::instrument(name = "webhook", skip_all, fields(event = tracing::field::Empty, event_type = tracing::field::Empty))]
pub async fn stripe_webhook(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Failure> {
    let Ok(payload) = to_bytes(body, MAX_EVENT_BYTES).await else {
        return Err(Failure::too_large(Surface::Api));
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    verify(&payload, signature, state.webhook_secret.expose(), crate::unix_now())
        .map_err(|e| Failure::bad_request(Surface::Api, "invalid_signature", e.to_string()))?;
    let event: Event = serde_json::from_slice(&payload)
        .map_err(|e| Failure::bad_request(Surface::Api, "invalid_event", format!("The signed body is not a Stripe event: {e}")))?;
    let span = tracing::Span::current();
    span.record("event", event.id.as_str());
    span.record("event_type", event.event_type.as_str());
    let acknowledged = |synced: bool| Json(json!({ "received": true, "synced": synced })).into_response();
    match route(&event) {
        EventAction::Untracked => Ok(acknowledged(false)),
        EventAction::NoCustomer => {
            tracing::info!("tracked event without a customer id: acknowledged, nothing to sync");
            Ok(acknowledged(false))
        }
        EventAction::Sync(customer) => {
            state.billing.sync(&customer).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
            Ok(acknowledged(true))
        }
    }
}
