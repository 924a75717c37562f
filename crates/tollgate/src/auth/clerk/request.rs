//! A request as `@clerk/backend`'s `AuthenticateContext` reads it, before any decision: the
//! `Authorization` header's exact form, the cookies as the `cookie` package (1.1.1) parses them,
//! which of the plain and the suffixed cookies count (`usesSuffixedCookies`, decided on the
//! tokens' unverified claims), `__client_uat` through `parseInt`, the development browser token,
//! the handshake's nonce or token, the redirect counter, and the headers that say whether the
//! request is a page load. The request's URL (Clerk's `clerkUrl`) is `PUBLIC_URL`'s origin with
//! the canonical path and query, so no `Host` a client sends can redirect anyone anywhere.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{header, HeaderName, Method};
use reqwest::Url;
use serde_json::Value;

use super::js::{self, Operand};
use super::token::Decoded;

/// What a Clerk instance's rules depend on.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    /// The suffix of this instance's cookie names (`cookie_suffix`).
    pub(crate) cookie_suffix: String,
    /// `__session`, `__client_uat` and `__clerk_db_jwt` with that suffix.
    pub(crate) suffixed_names: [String; 3],
    /// The Frontend API host the publishable key names.
    pub(crate) frontend_api: String,
    /// A `pk_test_` key: a development instance, with its dev-browser rules.
    pub(crate) development: bool,
    /// `PUBLIC_URL`'s origin.
    pub(crate) public_origin: String,
}

/// Borrowed from the request where it can be: this is read on every request.
pub(crate) struct ClerkRequest<'p> {
    pub(crate) get: bool,
    pub(crate) token_in_header: Option<Cow<'p, str>>,
    pub(crate) session_token_in_cookie: Option<Cow<'p, str>>,
    /// That cookie's token decoded (`None`: it does not decode), once for every decision.
    pub(crate) session_in_cookie_decoded: Option<Arc<Decoded>>,
    /// `Number.parseInt(__client_uat) || 0`: non-zero means the browser's client is signed in.
    pub(crate) client_uat: f64,
    pub(crate) dev_browser_token: Option<Cow<'p, str>>,
    /// `__clerk_db_jwt` is in the query: the Frontend API just handed a dev browser over.
    pub(crate) dev_browser_in_query: bool,
    pub(crate) handshake_token: Option<Cow<'p, str>>,
    pub(crate) handshake_nonce: Option<Cow<'p, str>>,
    /// `Number(__clerk_redirect_count) || 0`.
    pub(crate) redirect_count: f64,
    pub(crate) sec_fetch_dest: Option<Cow<'p, str>>,
    pub(crate) accept: Option<Cow<'p, str>>,
    pub(crate) referrer: Option<Cow<'p, str>>,
    /// The canonical path and query: with `PUBLIC_URL`'s origin, the request's URL (`url`).
    path: &'p str,
    pub(crate) suffixed_cookies: bool,
}

const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

/// A header's bytes as Node reads them (Latin-1); ASCII, the usual case, is borrowed.
fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => Cow::Borrowed(text),
        _ => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// A header as `Headers.get` gives it: every line joined (cookies with "; ", others with ", "),
/// `None` when empty.
fn header_text<'p>(parts: &'p Parts, name: &HeaderName) -> Option<Cow<'p, str>> {
    let mut lines = parts.headers.get_all(name).iter();
    let first = latin1(lines.next()?.as_bytes());
    let text = match lines.next() {
        None => first,
        Some(second) => {
            let separator = if name == header::COOKIE { "; " } else { ", " };
            let rest = std::iter::once(second).chain(lines).map(|line| latin1(line.as_bytes()));
            Cow::Owned(std::iter::once(first).chain(rest).collect::<Vec<_>>().join(separator))
        }
    };
    (!text.is_empty()).then_some(text)
}

/// `parseAuthorizationHeader`, as where the token lies in the header: `split(' ', 2)`; one part
/// is the token itself, two parts need the scheme `Bearer` exactly ("Bearer  t" has an empty
/// second part, so its token is "Bearer").
fn token_range(authorization: &str) -> Option<Range<usize>> {
    let scheme_end = authorization.find(' ').unwrap_or(authorization.len());
    let start = scheme_end + 1;
    let end = authorization.get(start..).map_or(start, |rest| start + rest.find(' ').unwrap_or(rest.len()));
    let token = match end > start {
        // One part, or an empty second one: the first is the token.
        false => 0..scheme_end,
        true if &authorization[..scheme_end] == "Bearer" => start..end,
        true => return None,
    };
    (!token.is_empty()).then_some(token)
}

/// `range` of `text`, borrowed as long as `text` is.
fn slice<'p>(text: &Cow<'p, str>, range: Range<usize>) -> Cow<'p, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[range]),
        Cow::Owned(text) => Cow::Owned(text[range].to_string()),
    }
}

/// The `cookie` package's `parse` (1.1.1): pairs split at `;`, the name and value trimmed of
/// spaces and tabs, a value percent-decoded when it decodes (else kept), the first of a name
/// counts (`Cookies::get`). Quotes are part of the value.
pub(crate) fn parse_cookies(header: &str) -> Vec<(&str, Cow<'_, str>)> {
    let mut cookies = Vec::new();
    fn trim(s: &str) -> &str {
        s.trim_matches([' ', '\t'])
    }
    let len = header.len();
    if len < 2 {
        return cookies;
    }
    let mut index = 0;
    while index < len {
        let Some(eq) = header[index..].find('=').map(|at| at + index) else { break };
        let end = header[index..].find(';').map_or(len, |at| at + index);
        if eq > end {
            // A part without `=`: resume at the part that holds this `=`.
            index = header[..eq].rfind(';').map_or(0, |at| at + 1);
            continue;
        }
        let value = trim(&header[eq + 1..end]);
        let value = match value.contains('%') {
            true => js::decode_uri_component(value).map_or(Cow::Borrowed(value), Cow::Owned),
            false => Cow::Borrowed(value),
        };
        cookies.push((trim(&header[index..eq]), value));
        index = end + 1;
    }
    cookies
}

/// A request's cookies, borrowed from its `Cookie` header when that is one line of ASCII.
struct Cookies<'p>(Vec<(Cow<'p, str>, Cow<'p, str>)>);

impl<'p> Cookies<'p> {
    fn of(parts: &'p Parts) -> Cookies<'p> {
        Cookies(match header_text(parts, &header::COOKIE) {
            None => Vec::new(),
            Some(Cow::Borrowed(line)) => parse_cookies(line).into_iter().map(|(name, value)| (Cow::Borrowed(name), value)).collect(),
            Some(Cow::Owned(text)) => parse_cookies(&text)
                .into_iter()
                .map(|(name, value)| (Cow::Owned(name.to_string()), Cow::Owned(value.into_owned())))
                .collect(),
        })
    }

    /// The first value of `name`, unless empty (`getCookie`).
    fn get(&self, name: &str) -> Option<&Cow<'p, str>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, value)| value).filter(|value| !value.is_empty())
    }
}

/// The value of a JSON claim as an operand, or `undefined` when the token does not decode.
fn claim(decoded: Option<&Decoded>, name: &str) -> Operand {
    decoded.map_or(Operand::Undefined, |d| Operand::of(d.payload.get(name)))
}

/// `iss` with every `http://` and `https://` removed (any case), as Clerk's `replace` does.
fn without_schemes(iss: &str) -> String {
    let bytes = iss.as_bytes();
    let scheme_at = |i: usize, scheme: &str| bytes.get(i..i + scheme.len()).is_some_and(|b| b.eq_ignore_ascii_case(scheme.as_bytes()));
    let mut out = String::with_capacity(iss.len());
    let mut i = 0;
    while i < bytes.len() {
        if scheme_at(i, "https://") {
            i += 8;
        } else if scheme_at(i, "http://") {
            i += 7;
        } else {
            let c = iss[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

impl Instance {
    pub(crate) fn new(cookie_suffix: String, frontend_api: String, development: bool, public_origin: String) -> Instance {
        let suffixed_names = ["__session", "__client_uat", "__clerk_db_jwt"].map(|name| format!("{name}_{cookie_suffix}"));
        Instance { cookie_suffix, suffixed_names, frontend_api, development, public_origin }
    }

    /// `name` with this instance's suffix (for the three cookies Clerk suffixes; others: itself).
    fn suffixed<'n>(&'n self, name: &'n str) -> &'n str {
        let at = ["__session", "__client_uat", "__clerk_db_jwt"].iter().position(|n| *n == name);
        at.map_or(name, |at| &self.suffixed_names[at])
    }

    /// `tokenBelongsToInstance`: the unverified `iss` names this instance's Frontend API.
    fn issued_here(&self, decoded: Option<&Decoded>) -> bool {
        let Some(iss) = decoded.and_then(|d| d.payload.get("iss")).and_then(Value::as_str) else { return false };
        // The usual `https://<frontend api>` without building a string.
        let plain = iss.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) && !iss[8..].contains("://");
        match plain {
            true => iss[8..] == self.frontend_api,
            false => without_schemes(iss) == self.frontend_api,
        }
    }

    /// `usesSuffixedCookies`, branch for branch; the two session cookies come decoded.
    fn uses_suffixed_cookies<'c>(
        &self,
        cookie: &impl Fn(&str) -> Option<&'c str>,
        (session, session_decoded): (Option<&str>, Option<&Decoded>),
        (suffixed_session, suffixed_decoded): (Option<&str>, Option<&Decoded>),
        now_ms: f64,
    ) -> bool {
        let suffixed_uat = cookie(self.suffixed("__client_uat"));
        let uat = cookie("__client_uat");
        // A malformed plain token (no `iss`) signs out through the plain cookies, no handshake.
        if session.is_some() && !claim(session_decoded, "iss").truthy() {
            return false;
        }
        // A plain token from another instance: this instance's are the suffixed ones.
        if session.is_some() && !self.issued_here(session_decoded) {
            return true;
        }
        if suffixed_uat.is_none() && suffixed_session.is_none() {
            return false;
        }
        let is_zero = |uat: &Option<&str>| *uat == Some("0");
        let session_iat = claim(session_decoded, "iat").or(Operand::Number(0.0));
        let suffixed_iat = claim(suffixed_decoded, "iat").or(Operand::Number(0.0));
        // Both signed in, and the plain token is newer.
        if !is_zero(&suffixed_uat) && !is_zero(&uat) && session_iat.greater_than(&suffixed_iat) {
            return false;
        }
        // The suffixed cookies say signed out, the plain ones signed in (set by every clerk-js).
        if is_zero(&suffixed_uat) && !is_zero(&uat) {
            return false;
        }
        if self.development {
            // A downgraded clerk-js stops updating the suffixed `__client_uat`: an expired
            // suffixed token then yields to the plain cookies.
            let now_seconds = Operand::Number(((now_ms / 1000.0).trunc() as i64 as i32).into());
            let expired = suffixed_decoded.is_some() && claim(suffixed_decoded, "exp").at_most(&now_seconds);
            if !is_zero(&suffixed_uat) && is_zero(&uat) && expired {
                return false;
            }
        }
        // A suffixed token without its `__client_uat`: the instance has suffixes turned off.
        suffixed_uat.is_some() || suffixed_session.is_none()
    }
}

impl<'p> ClerkRequest<'p> {
    /// `decode` decodes a token (`token::Verifier::decode`, which remembers recent ones).
    pub(crate) fn read(
        parts: &'p Parts,
        instance: &Instance,
        decode: impl Fn(&str) -> Option<Arc<Decoded>>,
        now_ms: f64,
    ) -> ClerkRequest<'p> {
        let cookies = Cookies::of(parts);
        let cookie = |name: &str| cookies.get(name).map(|value| value.as_ref());
        let owned_cookie = |name: &str| cookies.get(name).cloned();
        // Only a query that names one of Clerk's parameters is read (`searchParams.get`).
        let query: Vec<(String, String)> = match parts.uri.query() {
            Some(query) if query.contains("__clerk") => form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
            _ => Vec::new(),
        };
        let in_query =
            |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| !v.is_empty()).map(|v| Cow::Owned(v.clone()));
        let session = cookie("__session");
        let suffixed_session = cookie(instance.suffixed("__session"));
        let session_decoded = session.and_then(&decode);
        // clerk-js usually writes one token to both cookies: decoded once.
        let suffixed_decoded = match suffixed_session {
            Some(_) if suffixed_session == session => session_decoded.clone(),
            other => other.and_then(&decode),
        };
        let suffixed_cookies = instance.uses_suffixed_cookies(
            &cookie,
            (session, session_decoded.as_deref()),
            (suffixed_session, suffixed_decoded.as_deref()),
            now_ms,
        );
        let chosen = |name: &str| if suffixed_cookies { owned_cookie(instance.suffixed(name)) } else { owned_cookie(name) };
        let session_in_cookie_decoded = if suffixed_cookies { suffixed_decoded } else { session_decoded };
        let authorization = header_text(parts, &header::AUTHORIZATION);
        ClerkRequest {
            get: parts.method == Method::GET,
            token_in_header: authorization.as_ref().and_then(|text| Some(slice(text, token_range(text)?))),
            session_token_in_cookie: chosen("__session"),
            session_in_cookie_decoded,
            client_uat: chosen("__client_uat").map(|uat| js::parse_int(&uat)).filter(|n| *n != 0.0 && !n.is_nan()).unwrap_or(0.0),
            dev_browser_token: in_query("__clerk_db_jwt").or_else(|| chosen("__clerk_db_jwt")),
            dev_browser_in_query: query.iter().any(|(k, _)| k == "__clerk_db_jwt"),
            handshake_token: in_query("__clerk_handshake").or_else(|| owned_cookie("__clerk_handshake")),
            handshake_nonce: in_query("__clerk_handshake_nonce").or_else(|| owned_cookie("__clerk_handshake_nonce")),
            redirect_count: cookie("__clerk_redirect_count").map(js::to_number).filter(|n| !n.is_nan()).unwrap_or(0.0),
            sec_fetch_dest: header_text(parts, &SEC_FETCH_DEST),
            accept: header_text(parts, &header::ACCEPT),
            referrer: header_text(parts, &header::REFERER),
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            suffixed_cookies,
        }
    }

    /// The request's URL (Clerk's `clerkUrl`), for the handshake and the referrer's origin.
    pub(crate) fn url(&self, instance: &Instance) -> Option<Url> {
        Url::parse(&format!("{}{}", instance.public_origin, self.path)).ok()
    }

    /// `sessionToken`: the cookie's, else the header's.
    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token_in_cookie.as_deref().or(self.token_in_header.as_deref())
    }

    /// What decides a signed-in answer to this request, for answers kept a moment (`gateway`);
    /// `None` when more than the credentials may decide: a handshake coming back, a dev browser
    /// handed over, a navigation that may come from another site.
    pub(crate) fn cache_key(&self, instance: &Instance) -> Option<String> {
        if let Some(token) = &self.token_in_header {
            return Some(format!("header {token}"));
        }
        let navigation = self.get && self.sec_fetch_dest.as_deref() == Some("document") && self.referrer.is_some();
        if self.handshake_nonce.is_some()
            || self.handshake_token.is_some()
            || (instance.development && self.dev_browser_in_query)
            || navigation
        {
            return None;
        }
        let token = self.session_token_in_cookie.as_deref()?;
        Some(format!("cookie {token} {} {}", self.client_uat, self.dev_browser_token.is_some()))
    }

    /// `isRequestEligibleForHandshake`: a GET the browser loads as a document or frame (or, from
    /// browsers without `Sec-Fetch-Dest`, one asking for HTML first).
    pub(crate) fn eligible_for_handshake(&self) -> bool {
        self.get
            && match self.sec_fetch_dest.as_deref() {
                Some("document" | "iframe") => true,
                None => self.accept.as_deref().is_some_and(|a| a.starts_with("text/html")),
                Some(_) => false,
            }
    }

    /// `isCrossOriginReferrer`.
    pub(crate) fn cross_origin_referrer(&self, instance: &Instance) -> bool {
        let Some(referrer) = self.referrer.as_deref().and_then(|r| Url::parse(r).ok()) else { return false };
        self.url(instance).is_some_and(|url| referrer.origin() != url.origin())
    }

    /// `isKnownClerkReferrer`: the Frontend API, the instance's accounts portal, or (development
    /// instances only) any development accounts portal.
    pub(crate) fn known_clerk_referrer(&self, instance: &Instance) -> bool {
        let Some(referrer) = self.referrer.as_deref().and_then(|r| Url::parse(r).ok()) else { return false };
        let host = referrer.host_str().unwrap_or("");
        if host == instance.frontend_api {
            return true;
        }
        let legacy_dev = [".lcl.dev", ".lclstage.dev", ".lclclerk.com"].iter().any(|s| host.starts_with("accounts.") && host.ends_with(s));
        let current_dev = [".accounts.dev", ".accountsstage.dev", ".accounts.lclclerk.com"]
            .iter()
            .any(|s| host.ends_with(s) && !host.ends_with(&format!(".clerk{s}")));
        if instance.development && (legacy_dev || current_dev) {
            return true;
        }
        Url::parse(&accounts_portal(&instance.frontend_api)).is_ok_and(|portal| portal.origin() == referrer.origin())
    }
}

/// `buildAccountsBaseUrl`: `clerk.accounts.` (or `clerk.`) becomes `accounts.`, once.
fn accounts_portal(frontend_api: &str) -> String {
    let host = frontend_api.replacen("clerk.accountsstage.", "accountsstage.", 1);
    let host = match (host.find("clerk.accounts."), host.find("clerk.")) {
        (Some(at), Some(plain)) if at <= plain => format!("{}accounts.{}", &host[..at], &host[at + "clerk.accounts.".len()..]),
        (_, Some(at)) => format!("{}accounts.{}", &host[..at], &host[at + "clerk.".len()..]),
        _ => host,
    };
    format!("https://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_is_split_as_clerk_splits_it() {
        for (header, token) in [
            ("Bearer abc", Some("abc")),
            ("Bearer  abc", Some("Bearer")),
            ("Bearer abc extra", Some("abc")),
            ("abc ", Some("abc")),
            ("Bearer", Some("Bearer")),
            ("abc", Some("abc")),
            ("bearer abc", None),
            ("Basic abc", None),
            (" abc", None),
        ] {
            assert_eq!(token_range(header).map(|range| &header[range]), token, "{header:?}");
        }
    }

    #[test]
    fn cookies_parse_as_the_cookie_package_parses_them() {
        let pairs = parse_cookies("a=1; b = two ;a=again; flag; c=%41%zz; d=%41; e=\"q\"; =empty; f=x=y");
        let parsed: std::collections::HashMap<&str, &str> = pairs.iter().rev().map(|(k, v)| (*k, v.as_ref())).collect();
        assert_eq!(parsed["a"], "1", "the first wins");
        assert_eq!(parsed["b"], "two");
        assert_eq!(parsed["c"], "%41%zz", "kept when it does not decode");
        assert_eq!(parsed["d"], "A");
        assert_eq!(parsed["e"], "\"q\"", "quotes stay");
        assert_eq!(parsed[""], "empty");
        assert_eq!(parsed["f"], "x=y");
        assert!(!parsed.contains_key("flag"));
        assert!(parse_cookies("a").is_empty());
    }

    #[test]
    fn schemes_and_portals() {
        assert_eq!(without_schemes("HTTPS://clerk.example.com"), "clerk.example.com");
        assert_eq!(without_schemes("hthttps://tps://x"), "https://x", "one pass, as a global replace");
        assert_eq!(accounts_portal("clerk.example.com"), "https://accounts.example.com");
        assert_eq!(accounts_portal("example-app-12.clerk.accounts.dev"), "https://example-app-12.accounts.dev");
        assert_eq!(accounts_portal("clerk.accountsstage.example.com"), "https://accountsstage.example.com");
    }
}
