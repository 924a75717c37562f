//! The product's side of Tollgate: the gateway (every request no Tollgate route answers goes on
//! to `UPSTREAM_URL`, gated paths only for entitled users), and forward-auth (`GET /auth/verify`,
//! for nginx `auth_request`, Traefik ForwardAuth and Caddy `forward_auth` in front of any app).
//! Both decide on the canonical path the edge made (`http::edge`, `gateway::path`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::deadline::REQUEST_DEADLINE;
use super::error::{Failure, Surface};
use super::extract::{back_to, key_holder, signed_in_user};
use crate::access::{entitled_from_cache, entitlement};
use crate::auth::Session;
use crate::gateway::headers::{is_websocket_upgrade, ClientAddr};
use crate::gateway::identity::{Bound, Identity, Kept, QuotaSubject};
use crate::gateway::path::Requirement;
use crate::gateway::tunnel::{ConnectionSlot, Ends};
use crate::gateway::{Forwarded, Forwarding, GatewayError};
use crate::state::AppState;
use tollgate_core::billing::usage::BilledTo;
use tollgate_core::domain::User;
use tollgate_core::kv::Quota;

/// What a metered request counts for, when the product says (else one).
const X_TOLLGATE_USAGE: HeaderName = HeaderName::from_static("x-tollgate-usage");
/// A weight above this is no weight (a product's bug): the request counts one.
const MAX_USAGE_WEIGHT: u64 = 1_000_000_000;

/// A tunnel's recheck in progress: whether it may stay open.
type Check = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Marks an answer that came from the product: Tollgate's security headers leave it as it is.
#[derive(Clone, Copy)]
pub(crate) struct FromProduct;

/// Who sent `parts`, as the product will be told (kept a moment per credential), or `None` for a
/// visitor. On a gated path a visitor, or a user who is not entitled (or whose plan lacks the
/// path's feature), is the `Err`: sign-in or pricing for a page, 401 or 402 for anything else
/// (`surface`). A kept identity that falls short is looked up again: the user may just have paid.
/// On an API path (`api`) an API key, when the request carries one, decides who calls: a key
/// that opens nothing (revoked, mistyped) is a 401, whatever else the request carries.
async fn identity_for(
    state: &AppState,
    parts: &Parts,
    needs: Requirement<'_>,
    surface: Surface,
    api: bool,
) -> Result<Option<Kept>, Failure> {
    let key = if api { crate::auth::api_key(&parts.headers) } else { None };
    let credential = match key {
        Some(key) => Some(std::borrow::Cow::Borrowed(key)),
        None => state.auth.credential(parts),
    };
    if let Some(kept) = credential.as_deref().and_then(|c| state.identity_cache.get(c)) {
        if admitted(&kept.identity, needs, surface).is_ok() {
            return Ok(Some(kept));
        }
    }
    // Boxed: the lookup's future is large (every request's future would carry it, and be moved
    // with it), and only a request the kept identities cannot answer needs it.
    Box::pin(look_up_identity(state, parts, needs, surface, key, credential.as_deref())).await
}

/// [`identity_for`] past the kept identities: the user (or the key's holder), their entitlement
/// and quotas, kept for `credential`.
async fn look_up_identity(
    state: &AppState,
    parts: &Parts,
    needs: Requirement<'_>,
    surface: Surface,
    key: Option<&str>,
    credential: Option<&str>,
) -> Result<Option<Kept>, Failure> {
    let (user, key_id) = match key {
        Some(key) => {
            let (key, user) = key_holder(state, key).await?;
            (user, Some(key.id))
        }
        None => match signed_in_user(parts, state, surface).await? {
            Some(user) => (user, None),
            None if needs == Requirement::Nothing => return Ok(None),
            None => return Err(Failure::signed_out(surface, back_to(parts))),
        },
    };
    let access = entitlement(&state.billing, &state.policy, &user).await.map_err(|e| Failure::from_billing(surface, e))?;
    let quota = quota_subject(state, &access).await;
    // Metered usage goes to the customer of the payer that entitles (kept with the identity).
    let billed_to = access
        .customer
        .clone()
        .filter(|_| access.entitled && !state.metered.is_empty())
        .map(|customer| BilledTo { customer, period_start: access.entry.subscription().and_then(|s| s.current_period_start) });
    let identity = Identity { key_id, quota, billed_to, ..Identity::of(&user, &access.entry, access.entitled, &state.features) };
    let kept = state.identity_cache.keep(credential, Arc::new(identity));
    admitted(&kept.identity, needs, surface)?;
    Ok(Some(kept))
}

/// Whose quotas an entitled caller counts against, when the plan that entitles has limits.
async fn quota_subject(state: &AppState, access: &crate::access::Entitlement) -> Option<QuotaSubject> {
    let subscription = access.entry.subscription().filter(|_| access.entitled)?;
    let limits = crate::access::limits_of(&state.billing, &state.limits, subscription.price_id.as_deref()?).await?;
    let period = subscription.current_period_start.zip(subscription.current_period_end);
    let payer = access.payer.as_ref()?.to_string();
    Some(QuotaSubject {
        minute_key: tollgate_core::kv::keys::quota_minute(&payer),
        period_key: period.map(|(start, _)| tollgate_core::kv::keys::quota_period(&payer, start)),
        limits,
        period,
    })
}

/// The `RateLimit-*` headers of an admitted request (none when the plan's limits are not counted
/// in the KV), or the 429 of a refused one (with `Retry-After`). The binding limit is reported:
/// the period's once fewer requests are left in it than in the minute.
async fn admit(state: &AppState, quota: &QuotaSubject) -> Result<Option<RateLimitHeaders>, Response> {
    let now = state.clock.unix_now();
    // The count is kept a day past its period's end (a renewal's webhook may come late).
    let keep = quota.period.map_or(Duration::from_secs(3600), |(_, end)| Duration::from_secs((end - now).max(0) as u64 + 86_400));
    let asked = Quota {
        minute: quota.limits.per_minute.map(|limit| (quota.minute_key.as_str(), limit)),
        period: quota.period_key.as_deref().zip(quota.limits.per_period).map(|(key, limit)| (key, limit, keep)),
    };
    let admission = match state.billing.kv.admit(asked).await {
        Ok(admission) => admission,
        Err(e) => return Err(Failure::from_kv(Surface::Api, e).into_response()),
    };
    let period_left = quota.limits.per_period.zip(admission.period_used).map(|(limit, used)| limit.saturating_sub(used));
    let period_ends_in = quota.period.map_or(0, |(_, end)| (end - now).max(0) as u64);
    let headers = match (quota.limits.per_minute.zip(admission.minute_remaining), period_left) {
        (Some((_, minute_left)), Some(left)) if left < u64::from(minute_left) => {
            RateLimitHeaders { limit: quota.limits.per_period.unwrap_or(0), remaining: left, reset: period_ends_in }
        }
        (Some((limit, minute_left)), _) => RateLimitHeaders {
            limit: u64::from(limit),
            remaining: u64::from(minute_left),
            reset: admission.minute_reset.as_secs_f64().ceil() as u64,
        },
        (None, Some(left)) => RateLimitHeaders { limit: quota.limits.per_period.unwrap_or(0), remaining: left, reset: period_ends_in },
        (None, None) => return Ok(None),
    };
    if admission.admitted {
        return Ok(Some(headers));
    }
    let (retry, message) = match admission.retry_after {
        Some(wait) => {
            (wait.as_secs_f64().ceil() as u64, "Too many requests this minute for this plan. Try again after Retry-After seconds.")
        }
        None => (
            period_ends_in,
            "This billing period's requests for this plan are used up: they renew with the next period, or with a larger plan.",
        ),
    };
    let mut refused = Failure::new(Surface::Api, StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    headers.write_to(refused.headers_mut());
    refused.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(retry.max(1)));
    Err(refused)
}

/// An answer's `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF draft names), written straight
/// into the answer's headers.
struct RateLimitHeaders {
    limit: u64,
    remaining: u64,
    reset: u64,
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateLimitHeaders {
    fn write_to(&self, headers: &mut HeaderMap) {
        for (name, value) in [(RATELIMIT_LIMIT, self.limit), (RATELIMIT_REMAINING, self.remaining), (RATELIMIT_RESET, self.reset)] {
            headers.insert(name, number_value(value));
        }
    }
}

/// `number` as a header value, in one allocation: `HeaderValue::from(u64)` makes two (its
/// buffer, then a shared handle to it, the buffer being larger than the digits).
fn number_value(number: u64) -> HeaderValue {
    HeaderValue::from_bytes(itoa::Buffer::new().format(number).as_bytes()).unwrap_or_else(|_| HeaderValue::from(number))
}

/// Whether `identity` may have what `needs` asks for; if not, the refusal.
fn admitted(identity: &Identity, needs: Requirement<'_>, surface: Surface) -> Result<(), Failure> {
    match needs {
        Requirement::Nothing => Ok(()),
        _ if !identity.entitled => Err(Failure::not_entitled(surface)),
        Requirement::Feature(feature) if !identity.has_feature(feature) => Err(Failure::feature_required(surface, feature)),
        _ => Ok(()),
    }
}

/// The router's fallback: on to the product in gateway mode, 404 otherwise.
///
/// One timer bounds the whole request (Tollgate's own routes have the deadline layer instead):
/// finding who is signed in must end within the request deadline, and the product must answer
/// within `UPSTREAM_TIMEOUT` of being asked.
pub(crate) async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    to_the_product(&state, request).await
}

/// [`proxy`] for a caller that holds the state (`http::lane`).
pub(crate) async fn to_the_product(state: &AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(gateway) = state.gateway.as_ref() else {
        return Failure::not_found(Surface::of(&parts)).into_response();
    };
    let surface = Surface::for_product(&parts);
    let needs = match state.gate.requirement(parts.uri.path()) {
        Ok(needs) => needs,
        Err(refusal) => return Failure::bad_path(surface, refusal).into_response(),
    };
    let gated = needs != Requirement::Nothing;
    let api = state.gate.is_api(parts.uri.path());
    let tunnel = match is_websocket_upgrade(&parts.headers) {
        false => None,
        true => match gateway.tunnels.reserve() {
            Some(reservation) => Some(reservation),
            None => {
                // The connection is closed too: it was to become a tunnel, and must not hold a slot.
                let mut refused = Failure::tunnels_full(surface).into_response();
                refused.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                return refused;
            }
        },
    };
    let deadline = tokio::time::sleep(REQUEST_DEADLINE);
    tokio::pin!(deadline);
    // The lookup first: a kept identity answers at once, and the timer is then not registered
    // until the product is asked.
    let found = tokio::select! {
        biased;
        found = identity_for(state, &parts, needs, surface, api) => found,
        _ = &mut deadline => return Failure::timed_out(surface).into_response(),
    };
    let identity = match found {
        Ok(identity) => identity,
        Err(failure) => return failure.into_response(),
    };
    // The API's quotas count every request that reaches the product.
    let rate_headers = match identity.as_ref().and_then(|k| k.identity.quota.as_ref()).filter(|_| api) {
        Some(quota) => match admit(state, quota).await {
            Ok(headers) => headers,
            Err(refused) => return refused,
        },
        None => None,
    };
    // A 2xx of the product on a metered path counts for the caller's customer, once per
    // idempotency key when the caller sends one (a retry after a lost answer is not billed again).
    // (The kept identity is shared, not its payer copied: the identity goes on with the request.)
    let payer = identity.as_ref().map(|k| k.identity.clone()).filter(|caller| caller.billed_to.is_some());
    let metered = state.metered_event(parts.uri.path()).zip(payer);
    let idempotency_key = match metered.is_some().then(|| idempotency_key(&parts.headers, surface)).transpose() {
        Ok(key) => key.flatten(),
        Err(refused) => return refused.into_response(),
    };
    let assertion = identity
        .as_ref()
        .and_then(|k| state.assertions.sign(&k.identity, Some(Bound { method: parts.method.as_str(), path: parts.uri.path() })));
    let client = parts.extensions.get::<ClientAddr>().cloned().unwrap_or_else(|| ClientAddr::direct(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    // What a tunnel needs once the product has switched: its connection's slot, its user, and
    // (on a gated path) the credentials to check again, and the feature the path needs.
    let tunnel = tunnel.map(|reservation| {
        let slot = parts.extensions.get::<ConnectionSlot>().cloned();
        let user = identity.as_ref().map(|k| k.identity.user.clone());
        let credentials = credential_headers(&parts.headers);
        let feature = match needs {
            Requirement::Feature(feature) => Some(feature.to_string()),
            _ => None,
        };
        (reservation, slot, user, credentials, feature)
    });
    let forwarding = Forwarding {
        identity: identity.map(|kept| (kept.headers, assertion)),
        client: &client,
        proto: if state.secure_cookies { "https" } else { "http" },
        public_host: &state.public_host,
    };
    deadline.as_mut().reset(tokio::time::Instant::now() + gateway.timeout());
    let forwarded = tokio::select! {
        biased;
        forwarded = gateway.forward(Request::from_parts(parts, body), forwarding) => forwarded,
        _ = &mut deadline => Err(GatewayError::Timeout(gateway.timeout())),
    };
    let mut response = match forwarded {
        Ok(Forwarded::Answer(response)) => response,
        Ok(Forwarded::Tunnel { answer, client, product }) => {
            if let Some((reservation, slot, user, credentials, feature)) = tunnel {
                let (state, gateway) = (state.clone(), gateway.clone());
                let opened = gateway.tunnels.now();
                tokio::spawn(async move {
                    let (Ok(client), Ok(product)) = tokio::join!(client, product) else { return };
                    let recheck = match (&user, gated) {
                        (Some(user), true) => Some(still_entitled(state, credentials, user.clone(), feature)),
                        _ => None,
                    };
                    let user = user.map(|u| u.id.to_string());
                    gateway.tunnels.run(Ends { opened, reservation, slot, user, client, product }, recheck).await;
                });
            }
            answer
        }
        Err(e) => return Failure::from_gateway(surface, e).into_response(),
    };
    if let Some(rate_headers) = rate_headers {
        rate_headers.write_to(response.headers_mut());
    }
    // The product may weigh a request (`X-Tollgate-Usage: 1530`, tokens say); it is Tollgate's to read.
    let weight = response.headers_mut().remove(X_TOLLGATE_USAGE);
    let billed = metered.as_ref().and_then(|(event, caller)| Some((*event, caller.billed_to.as_ref()?)));
    if let (Some((event, billed)), true) = (billed, response.status().is_success()) {
        let amount = weight.and_then(|w| w.to_str().ok()?.trim().parse::<u64>().ok()).filter(|w| *w <= MAX_USAGE_WEIGHT).unwrap_or(1);
        // Answered is billed: usage that cannot be counted now is no 2xx but a 503 to retry (with
        // the same idempotency key, a retry of a request that was counted after all counts once).
        if let Err(e) = state.billing.count_usage(event, billed, amount, idempotency_key.as_deref()).await {
            tracing::error!(customer = %billed.customer, error = %e, "usage could not be counted; the answer is withheld");
            return Failure::from_billing(surface, e).into_response();
        }
    }
    response.extensions_mut().insert(FromProduct);
    response
}

/// A metered request's `Idempotency-Key` (Stripe's name and limit: up to 255 characters), or the
/// 400 for one that is not printable ASCII or too long.
fn idempotency_key(headers: &HeaderMap, surface: Surface) -> Result<Option<String>, Failure> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str().ok().filter(|key| !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')) {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(Failure::new(
            surface,
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )),
    }
}

/// The headers that carry a request's credentials (all a provider reads), kept for a tunnel's rechecks.
fn credential_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [axum::http::header::COOKIE, axum::http::header::AUTHORIZATION] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A tunnel's recheck: is its user still signed in with the same credentials (built-in
/// accounts; a Clerk token is short-lived by design, so Clerk's user is checked by id) and still
/// entitled — with the path's `feature`, if it needs one — from the KV alone? A store that
/// cannot answer three times running counts as no.
fn still_entitled(state: AppState, credentials: HeaderMap, user: User, feature: Option<String>) -> impl FnMut() -> Check {
    let failures = Arc::new(AtomicU32::new(0));
    let (credentials, user, feature) = (Arc::new(credentials), Arc::new(user), Arc::new(feature));
    move || {
        let (state, credentials, user, feature, failures) =
            (state.clone(), credentials.clone(), user.clone(), feature.clone(), failures.clone());
        Box::pin(async move {
            let answer = async {
                // The built-in accounts' session says who the user is now (and for which organization).
                let now = match state.clerk.is_none() {
                    false => (*user).clone(),
                    true => {
                        let mut request = axum::http::Request::new(());
                        *request.headers_mut() = (*credentials).clone();
                        let (parts, _) = request.into_parts();
                        match state.auth.session(&parts).await.map_err(|_| ())? {
                            Session::SignedIn(signed_in) if signed_in.id == user.id => signed_in,
                            _ => return Ok(false),
                        }
                    }
                };
                let entry = entitled_from_cache(&state.billing, &state.policy, &now).await.map_err(|_| ())?;
                Ok(entry.is_some_and(|entry| feature.as_deref().is_none_or(|feature| state.features.grant(&entry, feature))))
            };
            match answer.await {
                Ok(entitled) => {
                    failures.store(0, Ordering::Relaxed);
                    entitled
                }
                Err(()) => failures.fetch_add(1, Ordering::Relaxed) < 2,
            }
        })
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct VerifyQuery {
    /// The status for a signed-in user without a subscription: 402 (the default), or 403 for
    /// nginx, whose `auth_request` accepts only 2xx, 401 and 403.
    deny: Option<u16>,
}

const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// `GET /auth/verify`: 200 with the identity headers for an entitled user, 401 when signed out,
/// 402 (or `?deny=403`) when not entitled. Never a redirect: the proxy in front decides.
///
/// Every request it is asked about is gated, unless `FORWARD_AUTH_TRUST_URI` lets it read the
/// path from the proxy (`X-Forwarded-Uri`, Traefik and Caddy; `X-Original-URI`, nginx): that path
/// is made canonical and decided on as the gateway would (400, or 403 for nginx, when it cannot
/// be; 200 for a visitor on an open path, without identity headers).
///
/// Its 200 has no body and none of the page headers (no proxy shows it to anyone), and so
/// does every answer to nginx (`?deny=403`), which shows its own error pages: nginx keeps its
/// connection to Tollgate for the next check only when an answer has no body (`auth_request`
/// does not read one), and without that each check costs a new connection. A refusal to
/// Traefik or Caddy keeps its JSON body: they pass it on to the user.
pub(crate) async fn verify(State(state): State<AppState>, Query(query): Query<VerifyQuery>, parts: Parts) -> Response {
    let nginx = query.deny == Some(403);
    let deny = if nginx { StatusCode::FORBIDDEN } else { StatusCode::PAYMENT_REQUIRED };
    let refuse = |status: StatusCode, code: &'static str| match nginx {
        true => ForProxy::answer(status),
        false => (status, Json(json!({ "error": { "code": code } }))).into_response(),
    };
    let header = |names: [&HeaderName; 2]| names.iter().find_map(|n| parts.headers.get(*n).and_then(|v| v.to_str().ok()));
    let (needs, canonical) = match header([&X_FORWARDED_URI, &X_ORIGINAL_URI]).filter(|_| state.gate.trust_forwarded_uri) {
        None => (Requirement::Entitled, None),
        Some(uri) => {
            let path = uri.split(['?', '#']).next().unwrap_or("");
            let decided =
                state.gate.canonical(path).and_then(|canonical| Ok((state.gate.requirement(&canonical)?, canonical.into_owned())));
            match decided {
                Ok((needs, canonical)) => (needs, Some(canonical)),
                Err(_) if nginx => return refuse(deny, "invalid_path"),
                Err(refusal) => return Failure::bad_path(Surface::Api, refusal).into_response(),
            }
        }
    };
    // Without the proxy's path, a key counts wherever it is asked about.
    let api = canonical.as_deref().is_none_or(|path| state.gate.is_api(path));
    let kept = match identity_for(&state, &parts, needs, Surface::Api, api).await {
        Ok(kept) => kept,
        // A proxy cannot follow Clerk's handshake for a subrequest (nginx takes 401 and 403 only).
        Err(failure) if matches!(failure.status, StatusCode::UNAUTHORIZED | StatusCode::TEMPORARY_REDIRECT) => {
            return refuse(StatusCode::UNAUTHORIZED, "unauthenticated")
        }
        Err(failure) if failure.status == StatusCode::PAYMENT_REQUIRED && nginx => return ForProxy::answer(deny),
        // Traefik and Caddy show it: the missing subscription, or the feature the plan lacks.
        Err(failure) => return failure.into_response(),
    };
    let mut response = ForProxy::answer(StatusCode::OK);
    let Some(kept) = kept else {
        return response; // a visitor on an open path
    };
    // Quotas count the API's requests: on the proxy's path when it names one, else only a key's
    // (a browser's page loads checked here are not the API's).
    let counted = match canonical.as_deref() {
        Some(path) => state.gate.is_api(path),
        None => crate::auth::api_key(&parts.headers).is_some(),
    };
    if let Some(quota) = kept.identity.quota.as_ref().filter(|_| counted) {
        match admit(&state, quota).await {
            Ok(Some(headers)) => headers.write_to(response.headers_mut()),
            Ok(None) => {}
            Err(_) if nginx => return ForProxy::answer(StatusCode::FORBIDDEN),
            Err(refused) => return refused,
        }
    }
    let method = header([&X_FORWARDED_METHOD, &X_ORIGINAL_METHOD]).unwrap_or("GET");
    let assertion = state.assertions.sign(&kept.identity, canonical.as_deref().map(|path| Bound { method, path }));
    response.headers_mut().extend(kept.headers.iter().cloned());
    if let Some(assertion) = assertion {
        response.headers_mut().insert(crate::gateway::identity::X_TOLLGATE_ASSERTION, assertion);
    }
    response
}

/// Marks an answer meant for the proxy in front, not a browser: it gets no page headers.
#[derive(Clone, Copy)]
pub(crate) struct ForProxy;

impl ForProxy {
    /// An empty answer with `status` (`Content-Length: 0`).
    fn answer(status: StatusCode) -> Response {
        let mut response = status.into_response();
        response.extensions_mut().insert(ForProxy);
        response
    }
}
