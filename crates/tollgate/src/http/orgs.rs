//! Organizations in the built-in accounts (`tollgate_core::orgs` holds the rules): pages that need
//! no script, and the same as JSON for apps and scripts. Each handler answers both: a browser's
//! form post is redirected to the page that shows the result, a script gets JSON. Under Clerk,
//! organizations are Clerk's (its `<OrganizationSwitcher/>` and `<OrganizationProfile/>`):
//! `/orgs` says so, and the JSON routes are not served.
//!
//! Every membership change that can change the seat count (a join, a removal, leaving; an
//! invitation too with `SEATS_COUNT_INVITES`) tells billing (`Billing::seats_changed`), which
//! syncs the organization's customer and its seat count through the drain.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::api::{json_or_form, name_of};
use super::csrf::CsrfToken;
use super::error::{Failure, Surface};
use super::extract::CurrentUser;
use super::pages::{notice_text, PageQuery};
use super::views::{Frame, InvitationPage, MemberRow, OrgPage, OrgRow, OrgsPage};
use crate::auth::local::AccountError;
use crate::state::AppState;
use tollgate_core::domain::{Email, OrgId, OrgRole, User, UserId};
use tollgate_core::orgs::{Org, OrgError};

/// `{id}` in a path: an organization id, or a 404 (an id of the wrong shape names nothing).
fn org_id(raw: &str, surface: Surface) -> Result<OrgId, Failure> {
    OrgId::parse(raw).map_err(|_| Failure::from_org(surface, OrgError::NotFound))
}

fn org_failure(surface: Surface) -> impl Fn(OrgError) -> Failure {
    move |e| Failure::from_org(surface, e)
}

/// The organization, if `user` belongs to it (otherwise a 404: whether it exists is not theirs to learn).
async fn org_of_member(state: &AppState, org: &OrgId, user: &User, surface: Surface) -> Result<(Org, OrgRole), Failure> {
    let failure = org_failure(surface);
    let member = state.billing.seats.orgs.member(org, &user.id).await.map_err(&failure)?;
    let record = state.billing.seats.orgs.get(org).await.map_err(&failure)?;
    match (record, member) {
        (Some(record), Some(member)) => Ok((record, member.role)),
        _ => Err(failure(OrgError::NotFound)),
    }
}

/// Billing learns of a seat change; a failure here is logged, not the caller's: the membership
/// changed, and the next reconcile (or change) sets the count.
async fn seats_changed(state: &AppState, org: &OrgId) {
    if let Err(e) = state.billing.seats_changed(org).await {
        tracing::warn!(org = %org, error = %e, "could not mark the organization's seats for a sync; the next reconcile will");
    }
}

fn role_of(raw: Option<&str>, default: OrgRole, surface: Surface) -> Result<OrgRole, Failure> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(default),
        Some(raw) => OrgRole::parse(raw).map_err(|e| Failure::bad_request(surface, "invalid_role", e.to_string())),
    }
}

/// `GET /orgs`: the user's organizations, which one they act for, and a form to make one.
pub(crate) async fn orgs_page(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let frame = Frame { user: Some(&user), csrf: &csrf, notice: notice_text(query.notice.as_deref()) };
    if state.clerk.is_some() {
        return Ok(OrgsPage { frame, orgs: Vec::new(), clerk: true, personal_active: user.org.is_none() }.into_response());
    }
    let orgs = state.billing.seats.orgs.of_user(&user.id).await.map_err(org_failure(Surface::Page))?;
    let active = user.org.as_ref().map(|o| &o.id);
    let orgs = orgs.into_iter().map(|(org, member)| OrgRow::of(&org, member.role, active == Some(&org.id))).collect();
    Ok(OrgsPage { frame, orgs, clerk: false, personal_active: user.org.is_none() }.into_response())
}

/// `GET /api/orgs`: `{data: [{id, name, slug, role, active}]}`.
pub(crate) async fn list(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Result<Response, Failure> {
    let orgs = state.billing.seats.orgs.of_user(&user.id).await.map_err(org_failure(Surface::Api))?;
    let active = user.org.as_ref().map(|o| &o.id);
    let data: Vec<_> = orgs
        .iter()
        .map(|(org, member)| {
            json!({ "id": org.id, "name": org.name, "slug": org.slug, "role": member.role.as_str(), "active": active == Some(&org.id) })
        })
        .collect();
    Ok(Json(json!({ "data": data })).into_response())
}

/// `POST /api/orgs` `{name}`: a new organization with the user as its owner, now active in this
/// session; `{id, slug, name}` (201), or its page.
pub(crate) async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let org = state.billing.seats.orgs.create(&name_of(&parts, &body, surface)?, &user).await.map_err(org_failure(surface))?;
    state.accounts.set_active_org(&parts, Some(&org)).await.map_err(|e| Failure::from_kv(surface, e))?;
    state.identity_cache.forget_all();
    Ok(match surface {
        Surface::Api => (StatusCode::CREATED, Json(json!({ "id": org.id, "slug": org.slug, "name": org.name }))).into_response(),
        Surface::Page => Redirect::to(&format!("/orgs/{}?notice=org-created", org.id)).into_response(),
    })
}

/// `POST /api/orgs/{id}/activate`: act for this organization in this session (`personal`: for
/// the user alone). `{id, slug, role}` (`{"id": null}` for personal), or the dashboard.
pub(crate) async fn activate(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    parts: Parts,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let chosen = match id.as_str() {
        "personal" => None,
        raw => Some(org_of_member(&state, &org_id(raw, surface)?, &user, surface).await?),
    };
    state.accounts.set_active_org(&parts, chosen.as_ref().map(|(org, _)| org)).await.map_err(|e| Failure::from_kv(surface, e))?;
    state.identity_cache.forget_all();
    Ok(match (surface, chosen) {
        (Surface::Api, Some((org, role))) => Json(json!({ "id": org.id, "slug": org.slug, "role": role.as_str() })).into_response(),
        (Surface::Api, None) => Json(json!({ "id": null })).into_response(),
        (Surface::Page, _) => Redirect::to("/dashboard").into_response(),
    })
}

/// `GET /orgs/{id}`: members, pending invitations, and (for owners and admins) the forms to invite,
/// change roles and remove.
pub(crate) async fn org_page(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let surface = Surface::Page;
    let (org, role) = org_of_member(&state, &org_id(&id, surface)?, &user, surface).await?;
    let orgs = &state.billing.seats.orgs;
    let members = orgs.members(&org.id).await.map_err(org_failure(surface))?;
    let invitations = match role.manages() {
        true => orgs.pending_invitations(&org.id).await.map_err(org_failure(surface))?,
        false => Vec::new(),
    };
    let seats = state.billing.seat_summary(&org.id, false).await.map_err(|e| Failure::from_billing(surface, e))?;
    let page = OrgPage {
        frame: Frame { user: Some(&user), csrf: &csrf, notice: notice_text(query.notice.as_deref()) },
        members: members.iter().map(|m| MemberRow::of(m, &user.id, role)).collect(),
        invitations: invitations
            .iter()
            .map(|i| (i.email.as_str().to_string(), i.role.as_str(), billing_text::date(i.expires_at)))
            .collect(),
        manages: role.manages(),
        role: role.as_str(),
        seats: seats.map(|s| match s.cap {
            Some(cap) => format!("{} of {cap} seats in use", s.used),
            None => format!("{} seats in use", s.used),
        }),
        org,
    };
    Ok(page.into_response())
}

/// `GET /api/orgs/{id}/members`: `{data: [{userId, email, role}]}`, for members only.
pub(crate) async fn members(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let (org, _) = org_of_member(&state, &org_id(&id, Surface::Api)?, &user, Surface::Api).await?;
    let members = state.billing.seats.orgs.members(&org.id).await.map_err(org_failure(Surface::Api))?;
    let data: Vec<_> = members.iter().map(|m| json!({ "userId": m.user_id, "email": m.email.as_str(), "role": m.role.as_str() })).collect();
    Ok(Json(json!({ "data": data })).into_response())
}

#[derive(Deserialize, Default)]
struct InviteRequest {
    email: Option<String>,
    role: Option<String>,
}

/// `POST /api/orgs/{id}/invitations` `{email, role?}` (owners and admins): an emailed link, good
/// for 7 days and one use. Refused at the plan's seat cap (`metadata.tollgate_max_seats`).
pub(crate) async fn invite(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let failure = org_failure(surface);
    let request: InviteRequest =
        json_or_form(&parts, &body, surface, |field| InviteRequest { email: field("email"), role: field("role") })?;
    let email =
        Email::parse(request.email.as_deref().unwrap_or("")).map_err(|e| Failure::bad_request(surface, "invalid_email", e.to_string()))?;
    let role = role_of(request.role.as_deref(), OrgRole::Member, surface)?;
    let (org, _) = org_of_member(&state, &org_id(&id, surface)?, &user, surface).await?;
    let summary = state.billing.seat_summary(&org.id, false).await.map_err(|e| Failure::from_billing(surface, e))?;
    if let Some(max) = summary.and_then(|s| s.cap) {
        // Pending invitations hold their seats here, whether or not they are billed.
        let taken = state.billing.seats.orgs.seats_used(&org.id, true).await.map_err(&failure)?;
        if taken >= max {
            return Err(failure(OrgError::SeatLimit { max }));
        }
    }
    let token = state.billing.seats.orgs.invite(&org.id, &user.id, &email, role).await.map_err(&failure)?;
    let sent = state.accounts.send_invitation(&email, &org, &user.email, &token).await;
    if sent.is_err() {
        // Unsent, the invitation would only hold a seat: taken back (best effort; it expires anyway).
        let _ = state.billing.seats.orgs.revoke_invitation(&org.id, &user.id, &email).await;
    }
    sent.map_err(|e| match e {
        AccountError::Kv(e) => Failure::from_kv(surface, e),
        AccountError::Mail(detail) => Failure::mail_unavailable(surface, detail),
        AccountError::Throttled(seconds) => Failure::new(
            surface,
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("Too many emails to {}. Try again in {seconds} seconds.", email.as_str()),
        ),
        other => Failure::bad_request(surface, "invalid_request", other.to_string()),
    })?;
    if state.billing.seats.settings.seats_count_invitations {
        seats_changed(&state, &org.id).await;
    }
    Ok(match surface {
        Surface::Api => (StatusCode::CREATED, Json(json!({ "email": email.as_str(), "role": role.as_str() }))).into_response(),
        Surface::Page => Redirect::to(&format!("/orgs/{}?notice=invited", org.id)).into_response(),
    })
}

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// `GET /invitations/accept?token=`: who invites, and a button to accept. A visitor signs in (or
/// up) first and comes back here. Viewing never spends the link (mail scanners follow links).
pub(crate) async fn invitation_page(
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<TokenQuery>,
) -> Response {
    let token = query.token.filter(|t| tollgate_core::orgs::is_token(t)).unwrap_or_default();
    InvitationPage { frame: Frame { user: Some(&user), csrf: &csrf, notice: None }, email: user.email.as_str().to_string(), token }
        .into_response()
}

#[derive(Deserialize, Default)]
struct AcceptRequest {
    token: Option<String>,
}

/// `POST /api/invitations/accept` `{token}`: join the organization (the signed-in user's email
/// must be the invited one), now active in this session. `{orgId, slug, role}`, or the dashboard.
pub(crate) async fn accept(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let request: AcceptRequest = json_or_form(&parts, &body, surface, |field| AcceptRequest { token: field("token") })?;
    let token = request
        .token
        .filter(|t| tollgate_core::orgs::is_token(t))
        .ok_or_else(|| Failure::from_org(surface, OrgError::InvitationExpired))?;
    let orgs = &state.billing.seats.orgs;
    let org = orgs.accept(&token, &user).await.map_err(org_failure(surface))?;
    seats_changed(&state, &org.id).await;
    let role = orgs.member(&org.id, &user.id).await.map_err(org_failure(surface))?.map(|m| m.role).unwrap_or(OrgRole::Member);
    state.accounts.set_active_org(&parts, Some(&org)).await.map_err(|e| Failure::from_kv(surface, e))?;
    state.identity_cache.forget_all();
    Ok(match surface {
        Surface::Api => Json(json!({ "orgId": org.id, "slug": org.slug, "role": role.as_str() })).into_response(),
        Surface::Page => Redirect::to("/dashboard?notice=joined").into_response(),
    })
}

#[derive(Deserialize, Default)]
struct RoleRequest {
    role: Option<String>,
}

/// `PATCH /api/orgs/{id}/members/{userId}` `{role}` (the page's form: `POST …/role`).
pub(crate) async fn change_role(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, member)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let request: RoleRequest = json_or_form(&parts, &body, surface, |field| RoleRequest { role: field("role") })?;
    let role = role_of(request.role.as_deref(), OrgRole::Member, surface)?;
    let (org, target) = (org_id(&id, surface)?, member_id(&member, surface)?);
    let changed = state.billing.seats.orgs.set_role(&org, &user.id, &target, role).await.map_err(org_failure(surface))?;
    state.identity_cache.forget_all();
    Ok(match surface {
        Surface::Api => {
            Json(json!({ "userId": changed.user_id, "email": changed.email.as_str(), "role": changed.role.as_str() })).into_response()
        }
        Surface::Page => Redirect::to(&format!("/orgs/{org}?notice=role-changed")).into_response(),
    })
}

/// `DELETE /api/orgs/{id}/members/{userId}` (the page's form: `POST …/remove`): remove a member,
/// or leave (one's own id). 204, or back to the page.
pub(crate) async fn remove(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, member)): Path<(String, String)>,
    parts: Parts,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let (org, target) = (org_id(&id, surface)?, member_id(&member, surface)?);
    state.billing.seats.orgs.remove(&org, &user.id, &target).await.map_err(org_failure(surface))?;
    seats_changed(&state, &org).await;
    let left = target == user.id;
    if left && user.org.as_ref().is_some_and(|o| o.id == org) {
        state.accounts.set_active_org(&parts, None).await.map_err(|e| Failure::from_kv(surface, e))?;
    }
    state.identity_cache.forget_all();
    Ok(match (surface, left) {
        (Surface::Api, _) => StatusCode::NO_CONTENT.into_response(),
        (Surface::Page, true) => Redirect::to("/orgs?notice=left").into_response(),
        (Surface::Page, false) => Redirect::to(&format!("/orgs/{org}?notice=removed")).into_response(),
    })
}

fn member_id(raw: &str, surface: Surface) -> Result<UserId, Failure> {
    UserId::parse(raw).map_err(|_| Failure::from_org(surface, OrgError::NotFound))
}
