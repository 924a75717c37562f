//! API keys on the dashboard's keys page (`/keys`), and the same as JSON (`/api/keys`): make one
//! (its secret shown once), list them (name, prefix, made, last used), revoke one. A user acting
//! for an organization manages that organization's keys, if they are an owner or admin; the keys
//! themselves are `tollgate_core::api_keys`, and the gateway reads them (`http::gateway`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::json;

use super::api::name_of;
use super::csrf::CsrfToken;
use super::error::{Failure, Surface};
use super::extract::CurrentUser;
use super::pages::{notice_text, PageQuery};
use super::views::{Frame, KeyRow, KeysPage};
use crate::state::AppState;
use tollgate_core::api_keys::{ApiKey, ApiKeyError};
use tollgate_core::domain::{OrgId, User};

/// Whose keys `user` manages here: the organization they act for (owners and admins only), else
/// their own. The owner's id, and the organization.
fn owner_of(user: &User, surface: Surface) -> Result<(String, Option<OrgId>), Failure> {
    match &user.org {
        None => Ok((user.id.to_string(), None)),
        Some(org) if org.role.manages() => Ok((org.id.to_string(), Some(org.id.clone()))),
        Some(_) => Err(Failure::forbidden(surface, "Only the organization's owners and admins manage its API keys.")),
    }
}

fn key_failure(surface: Surface, e: ApiKeyError) -> Failure {
    match e {
        ApiKeyError::Kv(e) => Failure::from_kv(surface, e),
        ApiKeyError::NotFound => Failure::new(surface, StatusCode::NOT_FOUND, "not_found", e.to_string()),
        ApiKeyError::InvalidName | ApiKeyError::TooMany => Failure::bad_request(surface, "invalid_request", e.to_string()),
    }
}

fn key_json(key: &ApiKey, last_used: Option<i64>) -> serde_json::Value {
    json!({ "id": key.id, "name": key.name, "prefix": key.prefix, "orgId": key.org_id, "createdAt": key.created_at_ms / 1000, "lastUsedAt": last_used.map(|ms| ms / 1000) })
}

/// `GET /keys`: the keys, and the form to make one.
pub(crate) async fn keys_page(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let (owner, org) = owner_of(&user, Surface::Page)?;
    let keys = state.api_keys.list(&owner).await.map_err(|e| key_failure(Surface::Page, e))?;
    let frame = Frame { user: Some(&user), csrf: &csrf, notice: notice_text(query.notice.as_deref()) };
    let page = KeysPage { frame, keys: keys.iter().map(|(k, used)| KeyRow::of(k, *used)).collect(), created: None, for_org: org.is_some() };
    Ok(page.into_response())
}

/// `GET /api/keys`: `{data: [{id, name, prefix, orgId, createdAt, lastUsedAt}]}` (never a secret).
pub(crate) async fn list(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Result<Response, Failure> {
    let (owner, _) = owner_of(&user, Surface::Api)?;
    let keys = state.api_keys.list(&owner).await.map_err(|e| key_failure(Surface::Api, e))?;
    Ok(Json(json!({ "data": keys.iter().map(|(k, used)| key_json(k, *used)).collect::<Vec<_>>() })).into_response())
}

/// `POST /api/keys` `{name}`: a new key. JSON: 201 with `key`, the secret, shown this once; a
/// browser gets the keys page with the secret on it (never stored, never cached).
pub(crate) async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let (owner, org) = owner_of(&user, surface)?;
    let name = name_of(&parts, &body, surface)?;
    let (key, secret) = state.api_keys.create(&user, org.as_ref(), &name).await.map_err(|e| key_failure(surface, e))?;
    let mut response = match surface {
        Surface::Api => {
            let mut body = key_json(&key, None);
            body["key"] = json!(secret);
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Surface::Page => {
            let keys = state.api_keys.list(&owner).await.map_err(|e| key_failure(surface, e))?;
            let frame = Frame { user: Some(&user), csrf: &csrf, notice: None };
            let rows = keys.iter().map(|(k, used)| KeyRow::of(k, *used)).collect();
            KeysPage { frame, keys: rows, created: Some(secret), for_org: org.is_some() }.into_response()
        }
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /api/keys/{id}` (the page's form: `POST /api/keys/{id}/revoke`): 204, or back to the page.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    parts: Parts,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let (owner, _) = owner_of(&user, surface)?;
    state.api_keys.revoke(&owner, &id).await.map_err(|e| key_failure(surface, e))?;
    state.identity_cache.forget_all();
    Ok(match surface {
        Surface::Api => StatusCode::NO_CONTENT.into_response(),
        Surface::Page => Redirect::to("/keys?notice=key-revoked").into_response(),
    })
}
