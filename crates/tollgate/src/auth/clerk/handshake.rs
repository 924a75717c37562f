//! Clerk's handshake, as `@clerk/backend`'s `HandshakeService` performs it. Where a browser's
//! cookies cannot decide (an expired or stale token, a `__client_uat` without a token, a
//! development instance without its dev-browser token), a page load is sent to the Frontend API
//! (`/v1/client/handshake`), which knows the browser's real state; it sends the browser back with
//! a nonce (`__clerk_handshake_nonce`, exchanged at the Backend API for the `Set-Cookie` lines to
//! apply) or, from older Frontend APIs, a signed `__clerk_handshake` token holding those lines.
//! A cookie counts the round trips: at three, the request is signed out instead of looping.

use axum::http::{header, HeaderMap, HeaderValue};
use reqwest::Url;
use serde_json::Value;

use super::backend::BackendApi;
use super::request::{ClerkRequest, Instance};
use super::token::{decode, KeySource, Rejection, Verifier, VerifyError};

/// `SUPPORTED_BAPI_VERSION`, sent to the Frontend API with the handshake.
const API_VERSION: &str = "2026-05-12";
/// The query parameters a finished handshake leaves on a development instance's URL.
const HANDSHAKE_PARAMETERS: [&str; 4] = ["__clerk_handshake", "__clerk_help", "__clerk_db_jwt", "__clerk_handshake_nonce"];

/// `url` without the parameters named (the query written again, as `searchParams.delete` does).
fn without(url: &Url, names: &[&str]) -> Url {
    let mut url = url.clone();
    let kept: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| !names.contains(&k.as_str())).collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    url
}

/// `buildRedirectToHandshake` and `checkAndTrackRedirectLoop`: the headers of the 307 to the
/// Frontend API, or `None` on the fourth try (the caller signs the request out).
pub(crate) fn redirect(request: &ClerkRequest<'_>, instance: &Instance, reason: &str) -> Option<HeaderMap> {
    if request.redirect_count == 3.0 {
        tracing::warn!(reason, "Clerk's handshake keeps coming back (are the publishable and secret keys of one instance?)");
        return None;
    }
    let back_to = without(&request.url(instance)?, &["__clerk_db_jwt", "__dev_session"]);
    let base = match instance.frontend_api.starts_with("http") {
        true => instance.frontend_api.trim_end_matches('/').to_string(),
        false => format!("https://{}", instance.frontend_api.trim_end_matches('/')),
    };
    let mut to = Url::parse(&format!("{base}/")).ok()?.join("v1/client/handshake").ok()?;
    {
        let mut query = to.query_pairs_mut();
        query
            .append_pair("redirect_url", back_to.as_str())
            .append_pair("__clerk_api_version", API_VERSION)
            .append_pair("suffixed_cookies", if request.suffixed_cookies { "true" } else { "false" })
            .append_pair("__clerk_hs_reason", reason)
            .append_pair("format", "nonce");
        if let Some(token) = request.session_token() {
            query.append_pair("__session", token);
        }
        if let Some(dev_browser) = request.dev_browser_token.as_deref().filter(|_| instance.development) {
            query.append_pair("__clerk_db_jwt", dev_browser);
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_str(to.as_str()).ok()?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let count = super::js::number_text(request.redirect_count + 1.0);
    let counter = format!("__clerk_redirect_count={count}; SameSite=Lax; HttpOnly; Max-Age=2");
    headers.append(header::SET_COOKIE, HeaderValue::from_str(&counter).ok()?);
    Some(headers)
}

/// How a returning handshake ends.
pub(crate) enum Resolution {
    /// A development instance: back to the page without the handshake's parameters, the
    /// cookies set on the way (the next request decides).
    Redirect(HeaderMap),
    /// A production instance: this request is decided by the handshake's session token, and the
    /// response sets the cookies.
    Decided { signed_in: Option<super::token::SessionClaims>, set_cookies: HeaderMap },
    /// The handshake's session token did not verify: Clerk logs it and decides by the request's
    /// own cookies, as if no handshake had come back.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// A development instance's handshake token is not this instance's (Clerk throws: the keys
    /// were switched, or the token was forged). The page says to clear the cookies.
    #[error("Clerk's handshake could not be verified: {0}")]
    Refused(Rejection),
    #[error("{0}")]
    Unavailable(String),
}

/// `getCookiesFromHandshake`: the lines the nonce stands for, or those the handshake token holds.
async fn cookie_lines(
    request: &ClerkRequest<'_>,
    backend: &BackendApi,
    verifier: &Verifier,
    instance: &Instance,
) -> Result<Option<Vec<String>>, ResolveError> {
    if let Some(nonce) = &request.handshake_nonce {
        return backend.handshake_payload(nonce).await.map(Some).map_err(|e| ResolveError::Unavailable(e.to_string()));
    }
    let Some(token) = &request.handshake_token else { return Ok(Some(Vec::new())) };
    match handshake_token_lines(token, verifier).await {
        Ok(lines) => Ok(Some(lines)),
        Err(VerifyError::KeysUnavailable(why)) => Err(ResolveError::Unavailable(why)),
        Err(VerifyError::Rejected(reason)) if instance.development => Err(ResolveError::Refused(reason)),
        Err(VerifyError::Rejected(reason)) => {
            tracing::warn!(%reason, "Clerk's handshake token was refused; deciding by the request's cookies");
            Ok(None)
        }
    }
}

/// `verifyHandshakeToken`: the instance's key, the header's `typ` and `alg`, a session category,
/// the signature; no claim but `handshake` (an array of `Set-Cookie` lines) is read.
async fn handshake_token_lines(token: &str, verifier: &Verifier) -> Result<Vec<String>, VerifyError> {
    let decoded = decode(token)?;
    let key = match &verifier.keys {
        KeySource::Pem(key) => key.clone(),
        KeySource::Jwks(jwks) => jwks.key(decoded.header.get("kid").and_then(Value::as_str).ok_or(Rejection::UnknownKid)?).await?,
    };
    if decoded.has_other_category() {
        return Err(Rejection::Invalid("not a handshake token's category").into());
    }
    key.check_signature(token, &decoded)?;
    let lines = decoded.payload.get("handshake").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(lines.iter().map(|line| line.as_str().map(str::to_string).unwrap_or_else(|| super::js::Operand::of(Some(line)).text())).collect())
}

/// `resolveHandshake`.
pub(crate) async fn resolve(
    request: &ClerkRequest<'_>,
    instance: &Instance,
    backend: &BackendApi,
    verifier: &Verifier,
    now_ms: f64,
) -> Result<Resolution, ResolveError> {
    let Some(lines) = cookie_lines(request, backend, verifier, instance).await? else { return Ok(Resolution::Ignored) };
    let mut headers = HeaderMap::new();
    let mut session_token = Some(String::new());
    for line in &lines {
        match HeaderValue::from_str(line) {
            Ok(value) => _ = headers.append(header::SET_COOKIE, value),
            Err(_) => tracing::warn!("a Set-Cookie line of Clerk's handshake is not header text; left out"),
        }
        // `getCookieName` / `getCookieValue`: the text before the first `;`, split at `=`.
        let first = line.split(';').next().unwrap_or("");
        let mut pieces = first.split('=');
        if pieces.next().is_some_and(|name| name.starts_with("__session")) {
            session_token = pieces.next().map(str::to_string);
        }
    }
    if instance.development {
        let back = request.url(instance).map(|url| without(&url, &HANDSHAKE_PARAMETERS));
        let location = back.and_then(|url| HeaderValue::from_str(url.as_str()).ok());
        headers.append(header::LOCATION, location.ok_or_else(|| ResolveError::Unavailable("the request's URL is no URL".into()))?);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let signed_in = match session_token.as_deref() {
        Some("") => None,
        token => {
            let token = token.unwrap_or("");
            let verified = match verifier.verify(token, now_ms, super::token::CLOCK_SKEW_MS).await {
                // A development instance forgives a day of clock skew here (Clerk logs it).
                Err(VerifyError::Rejected(reason)) if instance.development && reason.is_about_time() => {
                    tracing::warn!(%reason, "Clerk's handshake token is off by the clock; accepted with a day's skew");
                    verifier.verify(token, now_ms, 86_400_000.0).await
                }
                verified => verified,
            };
            match verified {
                Ok(claims) => Some(claims),
                Err(VerifyError::KeysUnavailable(why)) => return Err(ResolveError::Unavailable(why)),
                Err(VerifyError::Rejected(reason)) => {
                    tracing::warn!(%reason, "the session token from Clerk's handshake was refused; deciding by the request's cookies");
                    return Ok(Resolution::Ignored);
                }
            }
        }
    };
    if instance.development {
        return Ok(Resolution::Redirect(headers));
    }
    Ok(Resolution::Decided { signed_in, set_cookies: headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_removed_and_the_query_written_again() {
        let url = Url::parse("http://app.test/p?a=1&__clerk_db_jwt=x&b=two%20words&flag").unwrap();
        assert_eq!(without(&url, &["__clerk_db_jwt"]).as_str(), "http://app.test/p?a=1&b=two+words&flag=");
        let only = Url::parse("http://app.test/p?__clerk_db_jwt=x").unwrap();
        assert_eq!(without(&only, &["__clerk_db_jwt"]).as_str(), "http://app.test/p");
        assert_eq!(without(&Url::parse("http://app.test/p?").unwrap(), &[]).as_str(), "http://app.test/p");
    }
}
