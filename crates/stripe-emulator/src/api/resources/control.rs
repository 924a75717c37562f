//! `/_emulator/…`: controls for tests and scripts (no API key needed).

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use crate::api::resources::checkout::PaymentForm;
use crate::engine::checkout::{expire_if_due, pay, Payment};
use crate::engine::webhooks::signature_header;
use crate::engine::Emulator;
use crate::model::cards::{Outcome, LATER_DECLINES};
use crate::model::{random_alphanumeric, ApiError, API_VERSION};

/// Empty the state, then restore the seed data and the start-up webhook endpoints.
pub async fn reset(State(emu): State<Emulator>) -> Response {
    match emu.load_startup_state(true) {
        Ok(()) => Json(json!({"reset": true})).into_response(),
        Err(err) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", format!("reset failed: {err:#}")).into_response(),
    }
}

/// Counters: `/v1` requests served so far, and how many of them the rate limit refused.
pub async fn stats(State(emu): State<Emulator>) -> Json<serde_json::Value> {
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({ "api_requests": count(&emu.api_requests), "rate_limited": count(&emu.rate_limited) }))
}

/// A test delivery for a webhook endpoint, signed with its secret (Stripe's Dashboard sends one on
/// request; here a tool such as `tollgate doctor` checks the secret it holds against it):
/// `{"payload", "signature"}`, the signature as the `Stripe-Signature` header would carry it.
pub async fn test_delivery(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    let store = emu.lock_read();
    let Some(secret) = store.webhook_secret(&id) else {
        return ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("No such webhook endpoint: '{id}'")).into_response();
    };
    let now = store.now();
    let payload = json!({
        "id": format!("evt_test_{}", random_alphanumeric(16)), "object": "event", "type": "test.webhook", "created": now,
        "livemode": false, "api_version": API_VERSION, "data": { "object": {} }, "pending_webhooks": 1,
    })
    .to_string();
    let signature = signature_header(secret, now, payload.as_bytes());
    Json(json!({ "payload": payload, "signature": signature })).into_response()
}

#[derive(Deserialize)]
pub struct DeliveryFilter {
    event: Option<String>,
    endpoint: Option<String>,
}

/// Every delivery attempt so far (oldest first), optionally for one event or endpoint.
pub async fn deliveries(State(emu): State<Emulator>, Query(filter): Query<DeliveryFilter>) -> Json<serde_json::Value> {
    let store = emu.lock();
    let data: Vec<_> = store
        .deliveries
        .iter()
        .filter(|d| filter.event.as_ref().is_none_or(|e| &d.event_id == e) && filter.endpoint.as_ref().is_none_or(|e| &d.endpoint_id == e))
        .cloned()
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// Pay a Checkout Session as the hosted page would: 303 to `success_url`, or 402 with the decline.
pub async fn complete_checkout(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    form: Result<Form<PaymentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return ApiError::bad_request("Send form fields card_number (and email when the session has no customer).").into_response();
    };
    match complete(&emu, &id, &form.payment()).await {
        Ok(url) => (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Pay, then hold the redirect until `checkout.session.completed` has been offered to every endpoint
/// (bounded), as Stripe holds its Checkout redirect for the webhook.
pub async fn complete(emu: &Emulator, id: &str, payment: &Payment<'_>) -> Result<String, ApiError> {
    // Expiring is its own change: its event goes out even though the payment then fails.
    emu.apply(&Default::default(), |store| {
        expire_if_due(store, id);
        Ok(())
    })?;
    let (url, deliveries) = emu.mutate(&Default::default(), |store| pay(store, id, payment))?;
    if let Some(handle) = deliveries {
        let _ = tokio::time::timeout(emu.config.checkout_redirect_wait, handle).await;
    }
    Ok(url)
}

#[derive(Deserialize)]
pub struct CardOutcome {
    outcome: Option<String>,
}

/// How a saved card behaves from now on when charged: `succeeds`, `authentication_required`,
/// or a decline code of [`LATER_DECLINES`] (a card reported lost after it was saved, say).
pub async fn set_card_outcome(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    form: Result<Form<CardOutcome>, axum::extract::rejection::FormRejection>,
) -> Response {
    let outcome = match form.ok().and_then(|Form(f)| f.outcome) {
        Some(o) if o == "succeeds" => Outcome::Succeeds,
        Some(o) if o == "authentication_required" => Outcome::AuthenticationRequired,
        Some(o) => match LATER_DECLINES.iter().find(|c| **c == o) {
            Some(code) => Outcome::DeclinedWhenCharged(code),
            None => return bad_outcome(),
        },
        None => return bad_outcome(),
    };
    let changed = emu.apply(&Default::default(), |store| {
        let pm = store.get_kind("payment_method", &id, Some("id"))?;
        if pm["type"] != "card" {
            return Err(ApiError::bad_request("Only a card payment method has a charge outcome."));
        }
        store.set_card_outcome(&id, outcome.clone());
        Ok(())
    });
    match changed {
        Ok(()) => Json(json!({ "id": id, "outcome": String::from(outcome) })).into_response(),
        Err(err) => err.into_response(),
    }
}

fn bad_outcome() -> Response {
    ApiError::invalid(
        format!("Send outcome: succeeds, authentication_required or one of {}.", LATER_DECLINES.join(", ")),
        Some("outcome"),
        "parameter_invalid_string",
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct AdvanceTime {
    milliseconds: Option<u64>,
}

/// How long a test clock advance takes at least (0: instant, for fast tests), from now on.
pub async fn set_clock_advance_time(
    State(emu): State<Emulator>,
    form: Result<Form<AdvanceTime>, axum::extract::rejection::FormRejection>,
) -> Response {
    match form {
        Ok(Form(AdvanceTime { milliseconds: Some(ms) })) if ms <= 60_000 => {
            emu.clock_advance_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
            Json(json!({ "milliseconds": ms })).into_response()
        }
        _ => ApiError::invalid("Send milliseconds: from 0 (instant) to 60000.", Some("milliseconds"), "parameter_invalid_integer")
            .into_response(),
    }
}

/// The control clock: its time, and how far it has been moved from the wall clock.
pub async fn clock(State(emu): State<Emulator>) -> Json<serde_json::Value> {
    let store = emu.lock_read();
    let now = store.control_now();
    Json(json!({ "now": now, "offset_seconds": now - crate::model::unix_now() }))
}

#[derive(Deserialize)]
pub struct Advance {
    seconds: Option<i64>,
}

/// Move the emulator's clock forward: trials end, periods renew and charge, scheduled cancellations happen.
pub async fn advance_clock(State(emu): State<Emulator>, form: Result<Form<Advance>, axum::extract::rejection::FormRejection>) -> Response {
    let seconds = match form {
        Ok(Form(Advance { seconds: Some(s) })) if s > 0 && s <= 10 * 366 * 86_400 => s,
        _ => {
            return ApiError::invalid(
                "Send seconds: a positive number of seconds (at most ten years).",
                Some("seconds"),
                "parameter_invalid_integer",
            )
            .into_response()
        }
    };
    let result = emu.advance_control_clock(seconds);
    match result {
        Ok(now) => Json(json!({ "now": now })).into_response(),
        Err(err) => err.into_response(),
    }
}
