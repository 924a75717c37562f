//! The JSON API (and the form posts that share its paths): checkout, portal, subscription state.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::{Failure, Surface};
use super::extract::{CurrentUser, Paying};
use crate::access::{entitlement, payer_entitlement};
use crate::state::AppState;
use tollgate_core::billing::plans::{PlanPreview, TakesEffect};
use tollgate_core::domain::{OrgId, Payer, PriceId, SubscriptionCache, UserId};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CheckoutRequest {
    price_id: Option<String>,
}

/// The body of `POST /api/generate-stripe-checkout`: JSON `{"priceId"}` or a form with `priceId`;
/// an empty body means the first plan.
fn checkout_request(parts: &Parts, body: &[u8], surface: Surface) -> Result<Option<PriceId>, Failure> {
    let request: CheckoutRequest = match body.is_empty() {
        true => CheckoutRequest::default(),
        false => json_or_form(parts, body, surface, |field| CheckoutRequest { price_id: field("priceId") })?,
    };
    price_of(request.price_id.as_deref(), surface)
}

/// A JSON body, or a form whose fields `from_form` reads, as the request's content type says.
pub(super) fn json_or_form<T: serde::de::DeserializeOwned>(
    parts: &Parts,
    body: &[u8],
    surface: Surface,
    from_form: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) -> Result<T, Failure> {
    let is_json = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json"));
    match is_json {
        true => serde_json::from_slice(body)
            .map_err(|e| Failure::bad_request(surface, "invalid_json", format!("The body is not valid JSON: {e}"))),
        false => Ok(from_form(&|name| form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))),
    }
}

#[derive(Deserialize, Default)]
struct NameRequest {
    name: Option<String>,
}

/// The `name` of a JSON body or a form (empty when it has none): what an organization or a key is called.
pub(super) fn name_of(parts: &Parts, body: &[u8], surface: Surface) -> Result<String, Failure> {
    let request: NameRequest = json_or_form(parts, body, surface, |field| NameRequest { name: field("name") })?;
    Ok(request.name.unwrap_or_default())
}

/// A price id as sent (trimmed; none when empty), or a 400.
fn price_of(raw: Option<&str>, surface: Surface) -> Result<Option<PriceId>, Failure> {
    match raw.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(raw) => PriceId::parse(raw).map(Some).map_err(|e| Failure::bad_request(surface, "invalid_price", e.to_string())),
    }
}

/// Get-or-create the customer, refuse a second subscription, create a Checkout Session.
/// JSON callers get `{"url","sessionId"}`; a browser (a form post, or the Subscribe link) is sent straight to Checkout.
pub(crate) async fn generate_checkout(
    State(state): State<AppState>,
    Paying { user, payer }: Paying,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    // A GET is a signed-out visitor's Subscribe link (`?priceId=`), which led through sign-in or
    // sign-up and comes back here, on to Checkout.
    let input = if parts.method == axum::http::Method::GET { parts.uri.query().unwrap_or("").as_bytes() } else { &body };
    let price = checkout_request(&parts, input, surface)?;
    let started = state.billing.start_checkout(&payer, &user, price.as_ref()).await.map_err(|e| Failure::from_billing(surface, e))?;
    Ok(match surface {
        Surface::Api => Json(json!({ "url": started.url, "sessionId": started.session_id })).into_response(),
        Surface::Page => Redirect::to(&started.url).into_response(),
    })
}

/// A billing-portal session for the payer's customer; 303 to it.
pub(crate) async fn billing_portal(State(state): State<AppState>, Paying { payer, .. }: Paying, parts: Parts) -> Result<Redirect, Failure> {
    let surface = Surface::of(&parts);
    let failure = |e| Failure::from_billing(surface, e);
    let customer = state
        .billing
        .customer_of(&payer)
        .await
        .map_err(failure)?
        .ok_or_else(|| failure(tollgate_core::billing::BillingError::NoCustomer))?;
    Ok(Redirect::to(&state.billing.portal_url(&customer).await.map_err(failure)?))
}

/// `GET /api/users/{id}/entitlement` for workers and back ends (`Authorization: Bearer
/// SERVICE_TOKEN`): whether the user's own subscription lets them use the product, from the KV as
/// every gated request asks (`/api/orgs/{id}/entitlement`: an organization's).
pub(crate) async fn user_entitlement(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let user = UserId::parse(&id).map_err(|e| Failure::bad_request(Surface::Api, "invalid_user", e.to_string()))?;
    service_entitlement(&state, &headers, Payer::User(user)).await
}

/// `GET /api/orgs/{id}/entitlement`: the same for an organization's subscription.
pub(crate) async fn org_entitlement(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let org = OrgId::parse(&id).map_err(|e| Failure::bad_request(Surface::Api, "invalid_org", e.to_string()))?;
    service_entitlement(&state, &headers, Payer::Org(org)).await
}

async fn service_entitlement(state: &AppState, headers: &HeaderMap, payer: Payer) -> Result<Response, Failure> {
    let Some(expected) = &state.service_token else {
        return Err(Failure::not_found(Surface::Api));
    };
    if !super::extract::bearer(headers).is_some_and(|sent| expected.equals(sent)) {
        return Err(Failure::new(Surface::Api, StatusCode::UNAUTHORIZED, "unauthenticated", "A valid service token is required."));
    }
    let access = payer_entitlement(&state.billing, &state.policy, &payer).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
    let subscription = access.entry.subscription();
    Ok(Json(json!({
        payer.metadata_key(): payer.as_str(),
        "entitled": access.entitled,
        "status": access.entry.status().as_str(),
        "priceId": subscription.and_then(|s| s.price_id.clone()),
        "currentPeriodEnd": subscription.and_then(|s| s.current_period_end),
    }))
    .into_response())
}

/// The cache entry as the recipe stores it, plus `"entitled"`.
pub(crate) async fn subscription(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Result<Response, Failure> {
    let access = entitlement(&state.billing, &state.policy, &user).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
    Ok(subscription_answer(&state, &access.entry, access.entitled))
}

/// An entry as `/api/subscription` shows it: the recipe's fields, `entitled` and `features`.
fn subscription_answer(state: &AppState, entry: &SubscriptionCache, entitled: bool) -> Response {
    let mut body = serde_json::to_value(entry).unwrap_or_default();
    body["entitled"] = json!(entitled);
    body["features"] = json!(state.features.of(entry, entitled));
    (StatusCode::OK, Json(body)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct PreviewQuery {
    price: Option<String>,
}

/// `GET /api/plan-preview?price=`: what switching to that plan costs now (`amountDue`, in the
/// currency's minor unit, with the prorated `lines`), and when it takes effect (`now`, or the
/// period's end: `at`). Pass `prorationDate` on to `/api/change-plan` to be charged exactly this.
pub(crate) async fn plan_preview(
    State(state): State<AppState>,
    Paying { payer, .. }: Paying,
    axum::extract::Query(query): axum::extract::Query<PreviewQuery>,
) -> Result<Response, Failure> {
    let price = price_of(query.price.as_deref(), Surface::Api)?
        .ok_or_else(|| Failure::bad_request(Surface::Api, "invalid_price", "Name the plan: ?price=price_…"))?;
    let preview = state.billing.plan_preview(&payer, &price).await.map_err(|e| Failure::from_billing(Surface::Api, e))?;
    Ok(Json(preview_json(&preview)).into_response())
}

fn preview_json(preview: &PlanPreview) -> serde_json::Value {
    let (takes_effect, at) = match preview.takes_effect {
        TakesEffect::Now => ("now", None),
        TakesEffect::At(at) => ("periodEnd", Some(at)),
    };
    json!({
        "priceId": preview.price,
        "amountDue": preview.amount_due,
        "currency": preview.currency,
        "prorationDate": preview.proration_date,
        "lines": preview.lines.iter().map(|(description, amount)| json!({ "description": description, "amount": amount })).collect::<Vec<_>>(),
        "takesEffect": takes_effect,
        "at": at,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ChangeRequest {
    price_id: Option<String>,
    proration_date: Option<i64>,
}

/// `POST /api/change-plan` (`{priceId, prorationDate?}` as JSON, or a form): an upgrade now, any
/// other change at the period's end (`billing::plans`). JSON callers get the entry after it; a
/// browser goes back to its dashboard.
pub(crate) async fn change_plan(
    State(state): State<AppState>,
    Paying { payer, .. }: Paying,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let surface = Surface::of(&parts);
    let request: ChangeRequest = json_or_form(&parts, &body, surface, |field| ChangeRequest {
        price_id: field("priceId"),
        proration_date: field("prorationDate").and_then(|v| v.parse().ok()),
    })?;
    let price = price_of(request.price_id.as_deref(), surface)?
        .ok_or_else(|| Failure::bad_request(surface, "invalid_price", "Name the plan: priceId."))?;
    let entry = state.billing.change_plan(&payer, &price, request.proration_date).await.map_err(|e| Failure::from_billing(surface, e))?;
    Ok(match surface {
        Surface::Api => subscription_answer(&state, &entry, state.policy.grants(entry.status())),
        Surface::Page => {
            let scheduled = entry.subscription().is_some_and(|s| s.scheduled_price_id.as_deref() == Some(price.as_str()));
            Redirect::to(if scheduled { "/dashboard?notice=plan-scheduled" } else { "/dashboard?notice=plan-changed" }).into_response()
        }
    })
}

/// `POST /api/subscription/cancel`: cancel at the end of the period (access stays until then).
pub(crate) async fn cancel_subscription(
    State(state): State<AppState>,
    Paying { payer, .. }: Paying,
    parts: Parts,
) -> Result<Response, Failure> {
    change_cancellation(&state, &payer, &parts, true).await
}

/// `POST /api/subscription/resume`: take a cancellation at the period's end back.
pub(crate) async fn resume_subscription(
    State(state): State<AppState>,
    Paying { payer, .. }: Paying,
    parts: Parts,
) -> Result<Response, Failure> {
    change_cancellation(&state, &payer, &parts, false).await
}

/// JSON callers get the entry after the change; a browser goes back to its dashboard.
async fn change_cancellation(state: &AppState, payer: &Payer, parts: &Parts, cancel: bool) -> Result<Response, Failure> {
    let surface = Surface::of(parts);
    let entry = state.billing.cancel_at_period_end(payer, cancel).await.map_err(|e| Failure::from_billing(surface, e))?;
    Ok(match surface {
        Surface::Api => subscription_answer(state, &entry, state.policy.grants(entry.status())),
        Surface::Page => {
            Redirect::to(if cancel { "/dashboard?notice=cancel-scheduled" } else { "/dashboard?notice=resumed" }).into_response()
        }
    })
}
