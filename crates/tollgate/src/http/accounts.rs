//! The account pages and their form posts: sign-in, sign-up and its emailed confirmation, password
//! reset, sign-out, and the development outbox. The rules behind them are in `auth::local`.

use std::net::IpAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::csrf::CsrfToken;
use super::error::{Failure, Surface};
use super::extract::CurrentUser;
use super::pages::{notice_text, PageQuery};
use super::views::{AuthPage, CheckEmail, ClerkPage, ConfirmPage, Frame, NewPasswordPage, OutboxMessage, OutboxPage, ResetPage};
use crate::auth::clerk::ClerkAuth;
use crate::auth::cookie;
use crate::auth::local::{device_cookie_name, AccountError, Authenticated, SESSION_COOKIE_DAYS};
use crate::auth::throttle::DEVICE_REMEMBERED;
use crate::gateway::headers::ClientAddr;
use crate::state::AppState;
use tollgate_core::domain::UserId;

/// Only a path on this site, from a strict set of characters, is followed after sign-in; anything
/// else (another host, `//host`, backslashes, tabs or newlines that browsers skip or that cannot
/// go in a header) goes to the dashboard.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~?=&%+,".contains(c);
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains("/.") && n.len() < 512 && n.chars().all(allowed) => {
            n.to_string()
        }
        _ => "/dashboard".to_string(),
    }
}

/// The client's address as the edge read it (`http::edge`, `TRUSTED_PROXIES`), for throttling.
type Client = Option<Extension<ClientAddr>>;

fn address(client: Client) -> Option<IpAddr> {
    client.map(|Extension(client)| client.ip())
}

fn unreadable_form() -> Response {
    Failure::bad_request(Surface::Page, "invalid_form", "The form could not be read.").into_response()
}

/// Show `page` (the form again, with the error in place) with the status `error` calls for, or
/// the failure page of an error no form can fix (storage, email, capacity).
fn form_error(error: &AccountError, page: impl IntoResponse) -> Response {
    let status = match error {
        AccountError::Kv(e) => return Failure::from_kv(Surface::Page, e.clone()).into_response(),
        AccountError::Busy => return Failure::busy(Surface::Page).into_response(),
        AccountError::Mail(detail) => return Failure::mail_unavailable(Surface::Page, detail.clone()).into_response(),
        AccountError::LinkExpired => return link_expired(),
        AccountError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        AccountError::EmailTaken => StatusCode::CONFLICT,
        AccountError::BadCredentials => StatusCode::UNAUTHORIZED,
        AccountError::InvalidEmail(_) | AccountError::WeakPassword(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = (status, page).into_response();
    if let AccountError::Throttled(seconds) = error {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
    }
    response
}

fn link_expired() -> Response {
    Failure::new(Surface::Page, StatusCode::GONE, "link_expired", AccountError::LinkExpired.to_string()).into_response()
}

/// What a page that runs Clerk's SDK may load (Clerk's documented policy, no more).
fn clerk_content_security_policy(frontend_api: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' https://{frontend_api} https://challenges.cloudflare.com https://*.protect.clerk.com; \
         connect-src 'self' https://{frontend_api} https://*.protect.clerk.com; img-src 'self' data: https://img.clerk.com; \
         worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; frame-src https://challenges.cloudflare.com https://*.protect.clerk.com; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
}

fn clerk_page(clerk: &ClerkAuth, csrf: &str, next: &str) -> Response {
    let page = ClerkPage {
        frame: Frame { csrf, ..Frame::default() },
        frontend_api: &clerk.frontend_api,
        publishable_key: &clerk.publishable_key,
        next,
    };
    let mut response = page.into_response();
    let policy = HeaderValue::from_str(&clerk_content_security_policy(&clerk.frontend_api)).expect("a host is header text");
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn auth_page_for<'a>(csrf: &'a str, next: &'a str, email: &'a str) -> AuthPage<'a> {
    AuthPage { frame: Frame { csrf, ..Frame::default() }, next, email, sign_in_error: None, sign_up_error: None }
}

pub(crate) async fn auth_page(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    CsrfToken(csrf): CsrfToken,
    Query(query): Query<PageQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    if let Some(clerk) = &state.clerk {
        return clerk_page(clerk, &csrf, &next);
    }
    let page = auth_page_for(&csrf, &next, "");
    AuthPage { frame: Frame { notice: notice_text(query.notice.as_deref()), ..page.frame }, ..page }.into_response()
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The sign-up form: an email (the password is chosen on the emailed link's page).
#[derive(Deserialize)]
pub(crate) struct SignUpForm {
    #[serde(default)]
    email: String,
    next: Option<String>,
}

fn cookie_header(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
        .expect("cookie text is ASCII")
}

fn session_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    cookie_header(state, state.accounts.session_cookie(), value, max_age)
}

/// Sign the user in (new session cookie) and continue to `next`; `device` is this browser's
/// token as one where the account signed in (`auth::throttle`), to keep in its cookie.
async fn signed_in(state: &AppState, authenticated: &Authenticated, next: &str, device: Option<&str>) -> Response {
    match state.accounts.start_session(authenticated).await {
        Ok(token) => {
            let mut response = Redirect::to(next).into_response();
            response.headers_mut().append(header::SET_COOKIE, session_cookie(state, &token, SESSION_COOKIE_DAYS * 86_400));
            if let Some(device) = device {
                let name = device_cookie_name(state.secure_cookies);
                let cookie = cookie_header(state, name, device, DEVICE_REMEMBERED.as_secs() as i64);
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            // A new CSRF token with the new session: one planted before sign-in is worthless after.
            response.headers_mut().append(header::SET_COOKIE, super::csrf::new_token_cookie(state));
            response
        }
        Err(e) => Failure::from_kv(Surface::Page, e).into_response(),
    }
}

/// "Check your email", after a sign-up or a reset request alike.
fn check_email(state: &AppState, csrf: &str, email: &str, purpose: &str) -> Response {
    CheckEmail { frame: Frame { csrf, ..Frame::default() }, email, purpose, outbox: state.mailer.is_outbox() }.into_response()
}

/// Start a sign-up: the answer is "check your email" whether or not the email has an account.
pub(crate) async fn sign_up(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    client: Client,
    form: Result<Form<SignUpForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return unreadable_form() };
    let next = safe_next(form.next.as_deref());
    match state.accounts.sign_up(&form.email, &next, address(client)).await {
        Ok(email) => check_email(&state, &csrf, email.as_str(), "finish signing up"),
        Err(e) => {
            let message = e.to_string();
            form_error(&e, AuthPage { sign_up_error: Some(&message), ..auth_page_for(&csrf, &next, &form.email) })
        }
    }
}

pub(crate) async fn sign_in(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    parts: Parts,
    form: Result<Form<Credentials>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return unreadable_form() };
    let next = safe_next(form.next.as_deref());
    let device = cookie(&parts, device_cookie_name(state.secure_cookies));
    match state.accounts.sign_in(&form.email, &form.password, device).await {
        Ok((authenticated, device)) => signed_in(&state, &authenticated, &next, Some(&device)).await,
        Err(e) => {
            let message = e.to_string();
            form_error(&e, AuthPage { sign_in_error: Some(&message), ..auth_page_for(&csrf, &next, &form.email) })
        }
    }
}

/// An emailed link's query (`token`, and where to go after a sign-up).
#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// The sign-up link's page: its owner chooses the password there (a GET never creates the
/// account, so a mail scanner that follows links does not spend it).
pub(crate) async fn confirm_page(State(state): State<AppState>, CsrfToken(csrf): CsrfToken, Query(link): Query<LinkQuery>) -> Response {
    match state.accounts.sign_up_link_valid(&link.token).await {
        Ok(true) => {
            let next = safe_next(link.next.as_deref());
            ConfirmPage { frame: Frame { csrf: &csrf, ..Frame::default() }, token: &link.token, next: &next, error: None }.into_response()
        }
        Ok(false) => link_expired(),
        Err(e) => form_error(&e, ()),
    }
}

/// The confirmation form: the link's token, the chosen password, where to go next.
#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// Create the account from its link with the chosen password and sign in; a new account lands on
/// its dashboard with a welcome, unless it was on its way elsewhere (Checkout, say).
pub(crate) async fn confirm(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    let Ok(Form(link)) = form else { return unreadable_form() };
    match state.accounts.confirm_sign_up(&link.token, &link.password).await {
        Ok(authenticated) => {
            let next = match safe_next(link.next.as_deref()) {
                dashboard if dashboard == "/dashboard" => "/dashboard?notice=welcome".to_string(),
                next => next,
            };
            signed_in(&state, &authenticated, &next, None).await
        }
        Err(e @ AccountError::WeakPassword(_)) => {
            let (message, next) = (e.to_string(), safe_next(link.next.as_deref()));
            let page =
                ConfirmPage { frame: Frame { csrf: &csrf, ..Frame::default() }, token: &link.token, next: &next, error: Some(&message) };
            form_error(&e, page)
        }
        Err(AccountError::EmailTaken) => {
            Failure::new(Surface::Page, StatusCode::CONFLICT, "email_taken", AccountError::EmailTaken.to_string()).into_response()
        }
        Err(e) => form_error(&e, ()),
    }
}

fn reset_page<'a>(csrf: &'a str, email: &'a str, error: Option<&'a str>) -> ResetPage<'a> {
    ResetPage { frame: Frame { csrf, ..Frame::default() }, email, error }
}

pub(crate) async fn reset_request_page(CsrfToken(csrf): CsrfToken) -> Response {
    reset_page(&csrf, "", None).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ResetRequest {
    #[serde(default)]
    email: String,
}

/// Email a reset link; the answer is the same whether or not the email has an account.
pub(crate) async fn request_reset(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    client: Client,
    form: Result<Form<ResetRequest>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return unreadable_form() };
    match state.accounts.request_password_reset(&form.email, address(client)).await {
        Ok(email) => check_email(&state, &csrf, email.as_str(), "choose a new password"),
        Err(e) => {
            let message = e.to_string();
            form_error(&e, reset_page(&csrf, &form.email, Some(&message)))
        }
    }
}

fn new_password_page<'a>(csrf: &'a str, token: &'a str, error: Option<&'a str>) -> NewPasswordPage<'a> {
    NewPasswordPage { frame: Frame { csrf, ..Frame::default() }, token, error }
}

pub(crate) async fn new_password_page_for(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    Query(link): Query<LinkQuery>,
) -> Response {
    match state.accounts.reset_link_valid(&link.token).await {
        Ok(true) => new_password_page(&csrf, &link.token, None).into_response(),
        Ok(false) => link_expired(),
        Err(e) => form_error(&e, ()),
    }
}

#[derive(Deserialize)]
pub(crate) struct NewPassword {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

/// Set the new password; every session of the account ends (this browser's too), and the user
/// signs in again with it.
pub(crate) async fn set_new_password(
    State(state): State<AppState>,
    CsrfToken(csrf): CsrfToken,
    form: Result<Form<NewPassword>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return unreadable_form() };
    match state.accounts.reset_password(&form.token, &form.password).await {
        Ok(user) => {
            forget(&state, Some(&user.id));
            let mut response = Redirect::to("/auth?notice=password-changed").into_response();
            response.headers_mut().append(header::SET_COOKIE, session_cookie(&state, "", 0));
            response
        }
        Err(e) => {
            let message = e.to_string();
            form_error(&e, new_password_page(&csrf, &form.token, Some(&message)))
        }
    }
}

/// Revoke every session of the signed-in user, on every device, then sign this browser out too.
pub(crate) async fn sign_out_everywhere(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Response {
    if let Err(e) = state.accounts.end_all_sessions(&user).await {
        return Failure::from_kv(Surface::Page, e).into_response();
    }
    signed_out(&state, Some(&user.id))
}

pub(crate) async fn sign_out(State(state): State<AppState>, parts: Parts) -> Response {
    // Whose tunnels to close (a failure here only leaves them to their next recheck).
    let user = match state.auth.session(&parts).await {
        Ok(crate::auth::Session::SignedIn(user)) => Some(user.id),
        _ => None,
    };
    if let Some(clerk) = &state.clerk {
        return match clerk.sign_out(&parts).await {
            Ok(cookies) => {
                forget(&state, user.as_ref());
                let mut response = Redirect::to("/?notice=signed-out").into_response();
                for cookie in cookies {
                    response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie text is ASCII"));
                }
                response
            }
            Err(e) => Failure::from_auth(Surface::Page, e).into_response(),
        };
    }
    if let Err(e) = state.accounts.end_session(&parts).await {
        return Failure::from_kv(Surface::Page, e).into_response();
    }
    signed_out(&state, user.as_ref())
}

/// Sessions ended (of `user`, when known): nothing computed for them before is reused
/// (`gateway::identity::IdentityCache`), and the user's open WebSocket tunnels on this instance close.
pub(crate) fn forget(state: &AppState, user: Option<&UserId>) {
    state.identity_cache.forget_all();
    if let (Some(gateway), Some(user)) = (&state.gateway, user) {
        gateway.tunnels.close_user(user.as_str());
    }
}

fn signed_out(state: &AppState, user: Option<&UserId>) -> Response {
    forget(state, user);
    let mut response = Redirect::to("/?notice=signed-out").into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(state, "", 0));
    response
}

/// The local outbox (no `SMTP_URL`): every account email this process would have sent. It exists
/// only where `config` allows the outbox (not on an https site unless asked for).
pub(crate) async fn outbox(State(state): State<AppState>, CsrfToken(csrf): CsrfToken, parts: Parts) -> Response {
    let Some(sent) = state.mailer.outbox() else {
        return Failure::not_found(Surface::of(&parts)).into_response();
    };
    let messages = sent.iter().map(|m| OutboxMessage::of(m, &state.billing.public_url)).collect();
    let mut response = OutboxPage { frame: Frame { csrf: &csrf, ..Frame::default() }, messages }.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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
