//! The HTML pages and their form posts: pricing, sign-in and sign-up, dashboard, success, the gated app.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::csrf::CsrfToken;
use super::error::{Failure, Surface};
use super::extract::{CurrentUser, Entitled};
use super::views::{AppHome, AuthPage, Dashboard, Frame, Landing, PlanCard};
use crate::access::cached_subscription;
use crate::auth::local::{AccountError, SESSION_COOKIE_DAYS};
use crate::domain::User;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    notice: Option<String>,
    next: Option<String>,
}

/// Messages a redirect may ask a page to show; anything else in `?notice=` is ignored.
fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "subscribe" => Some("Choose a plan to use the app."),
        "already-subscribed" => Some("You already have a subscription: manage it here instead of buying a second one."),
        "signed-out" => Some("You are signed out."),
        "welcome" => Some("Welcome! Your account is ready."),
        _ => None,
    }
}

/// Only a path on this site, from a strict set of characters, is followed after sign-in; anything
/// else (another host, `//host`, backslashes, tabs or newlines that browsers skip or that cannot
/// go in a header) goes to the dashboard.
pub fn safe_next(next: Option<&str>) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~?=&%+,".contains(c);
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains("/.") && n.len() < 512 && n.chars().all(allowed) => {
            n.to_string()
        }
        _ => "/dashboard".to_string(),
    }
}

pub async fn landing(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let plans = state.billing.catalog.plans(&state.billing.stripe).await.map_err(|e| Failure::from_billing(Surface::Page, e))?;
    let user = user.map(|u| u.0);
    let page = Landing {
        frame: Frame { user: user.as_ref(), csrf: &csrf, notice: notice_text(query.notice.as_deref()) },
        plans: plans.iter().map(PlanCard::of).collect(),
    };
    Ok(page.into_response())
}

fn auth_page_for<'a>(csrf: &'a str, next: &'a str, email: &'a str) -> AuthPage<'a> {
    AuthPage { frame: Frame { csrf, ..Frame::default() }, next, email, sign_in_error: None, sign_up_error: None }
}

pub async fn auth_page(user: Option<CurrentUser>, CsrfToken(csrf): CsrfToken, Query(query): Query<PageQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    auth_page_for(&csrf, &next, "").into_response()
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

fn session_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let name = state.accounts.session_cookie();
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
        .expect("cookie text is ASCII")
}

/// Sign the user in (new session cookie) and continue to `next`.
async fn signed_in(state: &AppState, user: &User, next: &str) -> Response {
    match state.accounts.start_session(user).await {
        Ok(token) => {
            let mut response = Redirect::to(next).into_response();
            response.headers_mut().append(header::SET_COOKIE, session_cookie(state, &token, SESSION_COOKIE_DAYS * 86_400));
            // A new CSRF token with the new session: one planted before sign-in is worthless after.
            response.headers_mut().append(header::SET_COOKIE, super::csrf::new_token_cookie(state));
            response
        }
        Err(e) => Failure::from_kv(Surface::Page, e).into_response(),
    }
}

fn auth_error(csrf: &str, form: &Credentials, error: AccountError, sign_up: bool) -> Response {
    let status = match &error {
        AccountError::Kv(e) => return Failure::from_kv(Surface::Page, e.clone()).into_response(),
        AccountError::Busy => return Failure::busy(Surface::Page).into_response(),
        AccountError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        AccountError::EmailTaken => StatusCode::CONFLICT,
        AccountError::BadCredentials => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let message = error.to_string();
    let next = safe_next(form.next.as_deref());
    let page = AuthPage {
        sign_in_error: (!sign_up).then_some(message.as_str()),
        sign_up_error: sign_up.then_some(message.as_str()),
        ..auth_page_for(csrf, &next, &form.email)
    };
    let mut response = (status, page).into_response();
    if let AccountError::Throttled(seconds) = error {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The client's address as the accept loop saw it (`http::serve`), for sign-in throttling.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

pub async fn sign_up(state: State<AppState>, csrf: CsrfToken, form: Result<Form<Credentials>, FormRejection>) -> Response {
    submit_credentials(state, csrf, None, form, true).await
}

pub async fn sign_in(state: State<AppState>, csrf: CsrfToken, peer: Peer, form: Result<Form<Credentials>, FormRejection>) -> Response {
    submit_credentials(state, csrf, peer, form, false).await
}

/// Create the account (`sign_up`) or check the password, then start a session; errors re-render
/// the form with the message in place.
async fn submit_credentials(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    peer: Peer,
    form: Result<Form<Credentials>, FormRejection>,
    sign_up: bool,
) -> Response {
    let Ok(Form(form)) = form else {
        return Failure::bad_request(Surface::Page, "invalid_form", "The form could not be read.").into_response();
    };
    let result = if sign_up {
        state.accounts.sign_up(&form.email, &form.password).await
    } else {
        state.accounts.sign_in(&form.email, &form.password, peer.map(|Extension(ConnectInfo(addr))| addr.ip())).await
    };
    match result {
        // A new account lands on its dashboard with a welcome, unless it was on its way elsewhere.
        Ok(user) if sign_up && form.next.as_deref().is_none_or(|n| n == "/dashboard") => {
            signed_in(&state, &user, "/dashboard?notice=welcome").await
        }
        Ok(user) => signed_in(&state, &user, &safe_next(form.next.as_deref())).await,
        Err(e) => auth_error(&csrf, &form, e, sign_up),
    }
}

/// Revoke every session of the signed-in user, on every device, then sign this browser out too.
pub async fn sign_out_everywhere(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Response {
    if let Err(e) = state.accounts.end_all_sessions(&user).await {
        return Failure::from_kv(Surface::Page, e).into_response();
    }
    let mut response = Redirect::to("/?notice=signed-out").into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(&state, "", 0));
    response
}

pub async fn sign_out(State(state): State<AppState>, parts: Parts) -> Response {
    if let Err(e) = state.accounts.end_session(&parts).await {
        return Failure::from_kv(Surface::Page, e).into_response();
    }
    let mut response = Redirect::to("/?notice=signed-out").into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(&state, "", 0));
    response
}

pub async fn dashboard(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let failure = |e| Failure::from_billing(Surface::Page, e);
    let (_, entry) = cached_subscription(&state.billing, &user).await.map_err(failure)?;
    // The plan's name is a nicety: without Stripe the dashboard still shows the cached entry.
    let plans = state.billing.catalog.plans(&state.billing.stripe).await.unwrap_or_default();
    let entitled = state.policy.grants(entry.status());
    Ok(Dashboard::new(&user, &csrf, &entry, &plans, entitled, notice_text(query.notice.as_deref())).into_response())
}

/// `/success` and `/api/success-sync`: the user is back from Checkout, possibly before the webhooks;
/// sync now so the dashboard is already right.
pub async fn success(State(state): State<AppState>, CurrentUser(user): CurrentUser, parts: Parts) -> Result<Redirect, Failure> {
    let surface = Surface::of(&parts);
    let customer = state.billing.customer_of(&user).await.map_err(|e| Failure::from_billing(surface, e))?;
    let Some(customer) = customer else { return Ok(Redirect::to("/")) };
    state.billing.sync(&customer).await.map_err(|e| Failure::from_billing(surface, e))?;
    Ok(Redirect::to("/dashboard"))
}

pub async fn app_home(Entitled(user, _): Entitled, CsrfToken(csrf): CsrfToken) -> Response {
    AppHome { frame: Frame { user: Some(&user), csrf: &csrf, notice: None } }.into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_path_on_this_site_or_the_dashboard() {
        for good in ["/", "/app", "/app?tab=billing&x=1", "/dashboard?notice=welcome", "/a-b_c~d%20e"] {
            assert_eq!(safe_next(Some(good)), good);
        }
        for bad in [
            "https://evil.example/", "//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/x", "/\r\nSet-Cookie:x", "evil.example",
            "/../admin", "/app/./x", "", "/\u{2028}", "/@evil", "/:x", "/x y",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dashboard", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/dashboard");
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(600)))), "/dashboard");
    }

    proptest::proptest! {
        /// Whatever comes in, what goes out is this site's dashboard or a same-site path that is a
        /// valid `Location` header.
        #[test]
        fn next_never_leaves_the_site(raw in proptest::prelude::any::<String>(), prefix in "[/\\\\a%.:]{0,3}") {
            let input = format!("{prefix}{raw}");
            let next = safe_next(Some(&input));
            proptest::prop_assert!(next == "/dashboard" || next == input);
            proptest::prop_assert!(next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'));
            proptest::prop_assert!(axum::http::HeaderValue::from_str(&next).is_ok());
        }
    }
}
