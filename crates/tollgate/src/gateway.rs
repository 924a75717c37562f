//! Gateway mode (`UPSTREAM_URL`): every request Tollgate does not answer itself goes on to the
//! product, with the user's identity in headers the product can trust. Bodies stream both ways
//! (hyper's pooled client, nothing buffered whole), WebSocket upgrades are spliced, and whatever
//! a client sends in the identity headers is removed before Tollgate sets its own. With
//! `GATEWAY_SECRET` the same facts also travel as a short-lived HS256 JWT
//! (`X-Tollgate-Assertion`), for a product that others can reach directly.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;

use crate::config::GatewaySettings;
use crate::domain::{SubscriptionCache, User};

/// How long the identity assertion is good for: long enough for one request to reach the product.
pub const ASSERTION_SECONDS: i64 = 60;

/// The headers the product reads; any a client sends are removed first. The oauth2-proxy names
/// are included, so a product that once sat behind it cannot be fooled either.
const IDENTITY_HEADERS: [&str; 6] = [
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups", "x-forwarded-access-token",
    "x-auth-request-user",
];

/// Headers of one connection, not of the message (RFC 9110 §7.6.1): never forwarded. Names as
/// constants, so removing them parses nothing per request.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Tollgate's own cookies, which the product has no use for (and must not see).
const OWN_COOKIES: [&str; 4] = ["tollgate_session", "__Host-tollgate_session", "tollgate_csrf", "__Host-tollgate_csrf"];

pub struct Gateway {
    client: Client<HttpConnector, Body>,
    /// `host:port` of the product (spoken to over plain http).
    upstream: axum::http::uri::Authority,
    gated: Vec<String>,
    timeout: Duration,
}

/// Builds the identity headers (the gateway sends them to the product; forward-auth answers with
/// them), signing the assertion when `GATEWAY_SECRET` is set.
pub struct IdentityHeaders {
    assertion_key: Option<jsonwebtoken::EncodingKey>,
}

/// What the product is told about the user.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub sub: String,
    pub email: String,
    pub entitled: bool,
    pub status: String,
    pub price: Option<String>,
}

impl Identity {
    pub fn of(user: &User, entry: &SubscriptionCache, entitled: bool) -> Identity {
        Identity {
            sub: user.id.to_string(),
            email: user.email.as_str().to_string(),
            entitled,
            status: entry.status().as_str().to_string(),
            price: entry.subscription().and_then(|s| s.price_id.clone()),
        }
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    iat: i64,
    exp: i64,
}

/// How long an identity is reused for the same credentials. Gateway and forward-auth answers
/// may each cost several KV reads; within this moment the same browser (a page and its assets)
/// is answered from memory. A sign-out on this instance forgets everything at once; on another
/// instance it shows here within this time.
pub const IDENTITY_KEPT: std::time::Duration = std::time::Duration::from_secs(1);
/// At most this many identities are kept; when full, all are forgotten at once.
const IDENTITIES_KEPT: usize = 10_000;

/// Identity headers recently computed, by a hash of the credentials they were computed for.
#[derive(Default)]
pub struct IdentityCache(std::sync::Mutex<std::collections::HashMap<[u8; 32], Kept>>);

/// The identity headers, shared (a cached answer is not copied).
pub type Headers = std::sync::Arc<[(HeaderName, HeaderValue)]>;

#[derive(Clone)]
pub struct Kept {
    at: std::time::Instant,
    pub entitled: bool,
    pub headers: Headers,
}

fn digest(credential: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(credential.as_bytes()).into()
}

impl IdentityCache {
    pub fn get(&self, credential: &str) -> Option<Kept> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&digest(credential)).cloned()?;
        (kept.at.elapsed() < IDENTITY_KEPT).then_some(kept)
    }

    pub fn keep(&self, credential: &str, entitled: bool, headers: Headers) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= IDENTITIES_KEPT {
            kept.clear();
        }
        kept.insert(digest(credential), Kept { at: std::time::Instant::now(), entitled, headers });
    }

    /// Someone signed out (or every session of someone ended): keep nothing computed before.
    pub fn forget_all(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the product did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the product is unreachable: {0}")]
    Unreachable(String),
}

impl Gateway {
    pub fn new(settings: &GatewaySettings) -> Gateway {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).pool_max_idle_per_host(256).build(connector);
        let upstream = settings.upstream.trim_start_matches("http://").parse().expect("config checked UPSTREAM_URL");
        Gateway { client, upstream, gated: settings.gated_paths.clone(), timeout: settings.timeout }
    }

    /// Whether `path` needs an entitled user: it is a gated prefix or below one (`/app`,
    /// `/app/x`, not `/apple`).
    pub fn is_gated(&self, path: &str) -> bool {
        self.gated.iter().any(|prefix| {
            prefix.is_empty() || path == prefix || path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

impl IdentityHeaders {
    pub fn new(secret: Option<&crate::config::Secret>) -> IdentityHeaders {
        IdentityHeaders { assertion_key: secret.map(|s| jsonwebtoken::EncodingKey::from_secret(s.expose().as_bytes())) }
    }

    pub fn of(&self, identity: &Identity) -> Headers {
        let value = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
        let mut headers = vec![
            (HeaderName::from_static("x-forwarded-user"), value(&identity.sub)),
            (HeaderName::from_static("x-forwarded-email"), value(&identity.email)),
            (HeaderName::from_static("x-tollgate-entitled"), HeaderValue::from_static(if identity.entitled { "true" } else { "false" })),
            (HeaderName::from_static("x-tollgate-status"), value(&identity.status)),
            (HeaderName::from_static("x-tollgate-price"), value(identity.price.as_deref().unwrap_or(""))),
        ];
        if let Some(key) = &self.assertion_key {
            let now = crate::unix_now();
            let claims = Assertion { identity, iat: now, exp: now + ASSERTION_SECONDS };
            if let Ok(token) = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, key) {
                headers.push((HeaderName::from_static("x-tollgate-assertion"), value(&token)));
            }
        }
        headers.into()
    }
}

impl Gateway {
    /// How long the product may take to answer (`UPSTREAM_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `request` on to the product and stream its answer back. `identity` holds the identity
    /// headers of who is signed in (none for an anonymous visitor), `peer` is the client's address,
    /// `proto` the scheme users reach Tollgate by. Not bounded in time here: see [`Gateway::timeout`].
    pub async fn forward(
        &self,
        mut request: Request<Body>,
        identity: Option<Headers>,
        peer: Option<IpAddr>,
        proto: &str,
    ) -> Result<Response<Body>, GatewayError> {
        let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let mut uri = axum::http::uri::Parts::default();
        uri.scheme = Some(axum::http::uri::Scheme::HTTP);
        uri.authority = Some(self.upstream.clone());
        uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| axum::http::uri::PathAndQuery::from_static("/")));
        parts.uri = Uri::from_parts(uri).map_err(|e| GatewayError::Unreachable(e.to_string()))?;
        let headers = &mut parts.headers;
        let protocol = upgrade.as_ref().and_then(|_| headers.get(header::UPGRADE).cloned());
        strip_hop_by_hop(headers);
        if let Some(protocol) = protocol {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        if headers.keys().any(|n| is_identity_header(n.as_str())) {
            let names: Vec<HeaderName> = headers.keys().filter(|n| is_identity_header(n.as_str())).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
        strip_own_cookies(headers);
        if let Some(host) = headers.remove(header::HOST) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if let Some(peer) = peer {
            let chain = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {peer}"),
                None => peer.to_string(),
            };
            headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(&chain).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_str(proto).unwrap_or(HeaderValue::from_static("http")));
        for (name, value) in identity.iter().flat_map(|h| h.iter()) {
            headers.insert(name.clone(), value.clone());
        }
        // The caller bounds this with `timeout` (one timer for the whole proxied request).
        let mut response =
            self.client.request(Request::from_parts(parts, body)).await.map_err(|e| GatewayError::Unreachable(e.to_string()))?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = upgrade {
                let product_side = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    if let (Ok(client), Ok(product)) = (client_side.await, product_side.await) {
                        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(product)).await;
                    }
                });
            }
            return Ok(response.map(Body::new));
        }
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(Body::new))
    }
}

fn is_identity_header(name: &str) -> bool {
    IDENTITY_HEADERS.contains(&name) || name.starts_with("x-tollgate-")
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).unwrap_or("");
    headers.contains_key(header::UPGRADE) && connection.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers that `Connection` names are hop-by-hop too ("keep-alive" and "close" name none).
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "keep-alive" && t != "close")
        .collect();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name.as_str());
    }
}

fn strip_own_cookies(headers: &mut HeaderMap) {
    let ours = |pair: &str| OWN_COOKIES.iter().any(|own| pair.trim().split('=').next() == Some(own));
    let any_ours = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).any(ours);
    if !any_ours {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !OWN_COOKIES.iter().any(|own| pair.split('=').next() == Some(own)))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gated_prefixes_match_whole_segments() {
        let settings = GatewaySettings {
            upstream: "http://product:8080".into(),
            gated_paths: vec!["/app".into(), "/api/reports".into()],
            timeout: Duration::from_secs(5),
        };
        let gateway = Gateway::new(&settings);
        for gated in ["/app", "/app/", "/app/x/y", "/api/reports/1"] {
            assert!(gateway.is_gated(gated), "{gated}");
        }
        for open in ["/", "/apple", "/application/x", "/api/reportsx", "/docs"] {
            assert!(!gateway.is_gated(open), "{open}");
        }
    }

    #[test]
    fn only_foreign_cookies_reach_the_product() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("tollgate_session=secret; theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Host-tollgate_csrf=x; tollgate_sessionx=kept"));
        strip_own_cookies(&mut headers);
        assert_eq!(headers[header::COOKIE], "theme=dark; tollgate_sessionx=kept");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("tollgate_session=secret"));
        strip_own_cookies(&mut only_ours);
        assert!(!only_ours.contains_key(header::COOKIE));
    }
}
