//! `POST /api/clerk-webhook` (Clerk as the provider, with `CLERK_WEBHOOK_SECRET`): Svix-signed user
//! and organization events. `user.updated` re-reads the user from the Backend API (never the
//! payload, so deliveries out of order cannot restore an old email) and gives the Stripe customer
//! the new email; `user.deleted` cancels the user's subscriptions and forgets them
//! (`billing::users`); `organizationMembership.*` re-read the organization's members (its seats
//! follow); `organization.deleted` cancels its subscriptions and forgets it. A delivery
//! already handled (its `svix-id`) is acknowledged and not run again; a failure answers 503 so
//! Svix retries.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::{Failure, Surface};
use super::webhook::MAX_EVENT_BYTES;
use crate::auth::clerk::svix::{self, Delivery};
use crate::state::AppState;
use tollgate_core::domain::{OrgId, Payer, UserId};
use tollgate_core::kv::keys;

/// How long a handled delivery id is remembered: far longer than the 300 s a signature is good for.
const DELIVERIES_REMEMBERED: Duration = Duration::from_secs(86_400);

#[derive(Deserialize)]
struct ClerkEvent {
    #[serde(rename = "type")]
    event_type: String,
    data: EventUser,
}

/// The event's object: a user or an organization (`id`), or a membership (`organization.id`).
#[derive(Deserialize)]
struct EventUser {
    id: Option<String>,
    organization: Option<EventOrganization>,
}

#[derive(Deserialize)]
struct EventOrganization {
    id: Option<String>,
}

#[tracing::instrument(name = "clerk_webhook", skip_all, fields(delivery = tracing::field::Empty, event_type = tracing::field::Empty))]
pub(crate) async fn clerk_webhook(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Failure> {
    let not_found = || Failure::not_found(Surface::Api);
    let clerk = state.clerk.as_ref().ok_or_else(not_found)?;
    let secret = clerk.webhook_secret.as_ref().ok_or_else(not_found)?;
    let Ok(payload) = to_bytes(body, MAX_EVENT_BYTES).await else { return Err(Failure::too_large(Surface::Api)) };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = Delivery { id: header("svix-id"), timestamp: header("svix-timestamp"), signature: header("svix-signature") };
    let id = svix::verify(secret, &delivery, &payload, tollgate_core::unix_now())
        .map_err(|e| Failure::bad_request(Surface::Api, "invalid_signature", format!("The webhook signature did not verify: {e}.")))?;
    if id.is_empty() || id.len() > 255 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Failure::bad_request(Surface::Api, "invalid_delivery", "The svix-id is not a delivery id."));
    }
    let span = tracing::Span::current();
    span.record("delivery", id);
    let kv = &state.billing.kv;
    let seen = kv.get(&keys::clerk_delivery(id)).await.map_err(|e| Failure::from_kv(Surface::Api, e))?;
    if seen.is_some() {
        return Ok(Json(json!({ "received": true, "duplicate": true })).into_response());
    }
    let event: ClerkEvent = serde_json::from_slice(&payload)
        .map_err(|e| Failure::bad_request(Surface::Api, "invalid_event", format!("The signed body is not a Clerk event: {e}")))?;
    span.record("event_type", event.event_type.as_str());
    let user = || {
        event
            .data
            .id
            .as_deref()
            .and_then(|id| UserId::parse(id).ok())
            .ok_or_else(|| Failure::bad_request(Surface::Api, "invalid_event", "The event names no user id (user_…)."))
    };
    match event.event_type.as_str() {
        "user.updated" => {
            let user = user()?;
            if let Some(email) = clerk.refresh_email(&user).await.map_err(|e| Failure::from_auth(Surface::Api, e))? {
                state.billing.user_email_changed(&user, &email).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
            }
        }
        "user.deleted" => {
            let user = user()?;
            state.billing.payer_deleted(&Payer::User(user.clone())).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
            clerk.forget(&user).await.map_err(|e| Failure::from_auth(Surface::Api, e))?;
            super::accounts::forget(&state, Some(&user)); // a user gone: their tunnels too
        }
        // Memberships are re-read from the Backend API (never the payload: deliveries come in
        // any order), and the organization's seats follow.
        "organizationMembership.created" | "organizationMembership.updated" | "organizationMembership.deleted" | "organization.updated" => {
            let org = organization(event.data.organization.as_ref().and_then(|o| o.id.as_deref()).or(event.data.id.as_deref()))?;
            match clerk.organization(&org).await.map_err(|e| Failure::from_auth(Surface::Api, e))? {
                Some((record, members)) => {
                    state.billing.seats.orgs.replace(record, members).await.map_err(|e| Failure::from_org(Surface::Api, e))?;
                    state.billing.seats_changed(&org).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
                }
                None => organization_deleted(&state, &org).await?,
            }
        }
        "organization.deleted" => organization_deleted(&state, &organization(event.data.id.as_deref())?).await?,
        _ => {} // user.created and the rest: the customer is made when the user first subscribes
    }
    state.identity_cache.forget_all(); // a new email, a user gone, a membership changed
    kv.set_expiring(&keys::clerk_delivery(id), "1", DELIVERIES_REMEMBERED).await.map_err(|e| Failure::from_kv(Surface::Api, e))?;
    Ok(Json(json!({ "received": true, "duplicate": false })).into_response())
}

fn organization(id: Option<&str>) -> Result<OrgId, Failure> {
    id.and_then(|id| OrgId::parse(id).ok())
        .ok_or_else(|| Failure::bad_request(Surface::Api, "invalid_event", "The event names no organization id (org_…)."))
}

/// Clerk deleted the organization: it stops paying (its subscriptions are cancelled, as a deleted
/// user's are) and its members are forgotten.
async fn organization_deleted(state: &AppState, org: &OrgId) -> Result<(), Failure> {
    state.billing.payer_deleted(&Payer::Org(org.clone())).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
    state.billing.seats.orgs.delete(org).await.map_err(|e| Failure::from_org(Surface::Api, e))
}
