//! The product's side of Tollgate: the gateway (every request no Tollgate route answers goes on
//! to `UPSTREAM_URL`, gated paths only for entitled users), and forward-auth (`GET /auth/verify`,
//! for nginx `auth_request`, Traefik ForwardAuth and Caddy `forward_auth` in front of any app).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::deadline::REQUEST_DEADLINE;
use super::error::{Failure, Surface};
use super::extract::{CurrentUser, Entitled};
use crate::access::entitlement;
use crate::auth::Session;
use crate::gateway::{GatewayError, Headers, Identity};
use crate::state::AppState;

/// Marks an answer that came from the product: Tollgate's security headers leave it as it is.
#[derive(Clone, Copy)]
pub struct FromProduct;

/// Who is signed in, as identity headers (none for a visitor): for a gated path only an entitled
/// user passes (others get Tollgate's sign-in or pricing answer); elsewhere anyone passes. The
/// answer for the same credentials is reused for a moment (`gateway::IDENTITY_KEPT`).
async fn identity_headers(state: &AppState, parts: &mut Parts, gated: bool) -> Result<Option<Headers>, Failure> {
    if let Some(kept) = state.auth.credential(parts).and_then(|c| state.identity_cache.get(&c)) {
        if kept.entitled || !gated {
            return Ok(Some(kept.headers));
        }
    }
    let credential = state.auth.credential(parts).map(|c| c.into_owned());
    let Some(identity) = identity(state, parts, gated).await? else { return Ok(None) };
    let headers = state.identity_headers.of(&identity);
    if let Some(credential) = credential {
        state.identity_cache.keep(&credential, identity.entitled, headers.clone());
    }
    Ok(Some(headers))
}

async fn identity(state: &AppState, parts: &mut Parts, gated: bool) -> Result<Option<Identity>, Failure> {
    if gated {
        let Entitled(user, entry) = Entitled::from_request_parts(parts, state).await?;
        return Ok(Some(Identity::of(&user, &entry, true)));
    }
    let Some(CurrentUser(user)) = <CurrentUser as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state).await? else {
        return Ok(None);
    };
    let access = entitlement(&state.billing, &state.policy, &user.id).await.map_err(|e| Failure::from_billing(Surface::of(parts), e))?;
    Ok(Some(Identity::of(&user, &access.entry, access.entitled)))
}

/// The router's fallback: on to the product in gateway mode, 404 otherwise.
///
/// One timer bounds the whole request (Tollgate's own routes have the deadline layer instead):
/// finding who is signed in must end within the request deadline, and the product must answer
/// within `UPSTREAM_TIMEOUT` of being asked.
pub async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let surface = Surface::of(&parts);
    let Some(gateway) = state.gateway.clone() else {
        return Failure::not_found(surface).into_response();
    };
    let gated = gateway.is_gated(parts.uri.path());
    let deadline = tokio::time::sleep(REQUEST_DEADLINE);
    tokio::pin!(deadline);
    let found = tokio::select! {
        found = identity_headers(&state, &mut parts, gated) => found,
        _ = &mut deadline => return Failure::timed_out(surface).into_response(),
    };
    let headers = match found {
        Ok(headers) => headers,
        Err(failure) => return failure.into_response(),
    };
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    let proto = if state.secure_cookies { "https" } else { "http" };
    deadline.as_mut().reset(tokio::time::Instant::now() + gateway.timeout());
    let answered = tokio::select! {
        answered = gateway.forward(Request::from_parts(parts, body), headers, peer, proto) => answered,
        _ = &mut deadline => Err(GatewayError::Timeout(gateway.timeout())),
    };
    match answered {
        Ok(mut response) => {
            response.extensions_mut().insert(FromProduct);
            response
        }
        Err(e) => Failure::from_gateway(surface, e).into_response(),
    }
}

#[derive(Deserialize, Default)]
pub struct VerifyQuery {
    /// The status for a signed-in user without a subscription: 402 (the default), or 403 for
    /// nginx, whose `auth_request` accepts only 2xx, 401 and 403.
    deny: Option<u16>,
}

/// `GET /auth/verify`: 200 with the identity headers for an entitled user, 401 when signed out,
/// 402 (or `?deny=403`) when not entitled. Never a redirect: the proxy in front decides.
pub async fn verify(State(state): State<AppState>, Query(query): Query<VerifyQuery>, parts: Parts) -> Response {
    let answer = |status: StatusCode, code: &str| (status, Json(json!({ "error": { "code": code } }))).into_response();
    let granted = |headers: Headers| {
        let mut response = Json(json!({ "entitled": true })).into_response();
        response.headers_mut().extend(headers.iter().cloned());
        response
    };
    let credential = state.auth.credential(&parts);
    if let Some(kept) = credential.as_deref().and_then(|c| state.identity_cache.get(c)).filter(|k| k.entitled) {
        return granted(kept.headers);
    }
    let user = match state.auth.session(&parts).await {
        Ok(Session::SignedIn(user)) => user,
        Ok(_) => return answer(StatusCode::UNAUTHORIZED, "unauthenticated"),
        Err(e) => return Failure::from_auth(Surface::Api, e).into_response(),
    };
    let access = match entitlement(&state.billing, &state.policy, &user.id).await {
        Ok(access) => access,
        Err(e) => return Failure::from_billing(Surface::Api, e).into_response(),
    };
    if !access.entitled {
        let status = if query.deny == Some(403) { StatusCode::FORBIDDEN } else { StatusCode::PAYMENT_REQUIRED };
        return answer(status, "subscription_required");
    }
    let headers = state.identity_headers.of(&Identity::of(&user, &access.entry, true));
    if let Some(credential) = credential {
        state.identity_cache.keep(&credential, true, headers.clone());
    }
    granted(headers)
}
