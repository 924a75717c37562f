//! Gateway mode (`UPSTREAM_URL`): every request Tollgate does not answer itself goes on to the
//! product, with the user's identity in headers the product can trust. The request is judged and
//! forwarded in one canonical form ([`path`]); bodies stream both ways (on connections kept to
//! the product, [`upstream`]; nothing buffered whole); only WebSocket upgrades are spliced, and
//! their tunnels keep the gate ([`tunnel`]); whatever a client sends in identity-shaped headers
//! is removed before Tollgate sets its own ([`headers`], [`identity`]).

pub(crate) mod headers;
pub(crate) mod identity;
pub(crate) mod path;
pub(crate) mod tunnel;
mod upstream;

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri};
use hyper::upgrade::OnUpgrade;

use self::headers::{ClientAddr, OwnCredentials};
use self::identity::Headers;
use self::tunnel::{TunnelLimits, Tunnels};
use self::upstream::Upstream;
use tollgate_core::config::{GatewaySettings, UpstreamHost};

pub(crate) struct Gateway {
    /// The product (spoken to over plain http), and the connections kept to it.
    upstream: Upstream,
    /// The `Host` the product receives: `None` for the browser's, else the upstream's own.
    host: Option<HeaderValue>,
    timeout: Duration,
    credentials: OwnCredentials,
    pub(crate) tunnels: Tunnels,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("the product did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the product is unreachable: {0}")]
    Unreachable(String),
    #[error("the product switched to a protocol other than WebSocket ({0})")]
    ForeignUpgrade(String),
}

/// What Tollgate adds to a request it forwards.
pub(crate) struct Forwarding<'a> {
    /// The identity headers of who is signed in (none for a visitor), and the request's assertion.
    pub(crate) identity: Option<(Headers, Option<HeaderValue>)>,
    pub(crate) client: &'a ClientAddr,
    /// The scheme users reach Tollgate by.
    pub(crate) proto: &'static str,
    /// `PUBLIC_URL`'s `host[:port]`.
    pub(crate) public_host: &'a HeaderValue,
}

/// The product's answer; a WebSocket handshake it accepted also gives both ends of the tunnel.
pub(crate) enum Forwarded {
    Answer(Response<Body>),
    Tunnel { answer: Response<Body>, client: OnUpgrade, product: OnUpgrade },
}

impl Gateway {
    /// `tunnels`: how many WebSocket tunnels may be open at once (a share of the connection cap);
    /// `clerk_issuer`: the `iss` of Clerk's session tokens, when Clerk is the provider.
    pub(crate) fn new(settings: &GatewaySettings, clerk_issuer: Option<String>, tunnels: usize, clock: tollgate_core::Clock) -> Gateway {
        let upstream: axum::http::uri::Authority =
            settings.upstream.trim_start_matches("http://").parse().expect("config checked UPSTREAM_URL");
        let host = match settings.host {
            UpstreamHost::Client => None,
            UpstreamHost::Upstream => Some(HeaderValue::from_str(upstream.as_str()).expect("an authority is header text")),
        };
        let limits =
            TunnelLimits { idle: settings.idle_timeout, max_lifetime: settings.max_lifetime, recheck: settings.entitlement_recheck };
        Gateway {
            upstream: Upstream::new(upstream, clock.clone()),
            host,
            timeout: settings.timeout,
            credentials: OwnCredentials { strip_clerk: clerk_issuer.filter(|_| !settings.forward_clerk_session) },
            tunnels: Tunnels::new(tunnels, limits, clock),
        }
    }

    /// How long the product may take to answer (`UPSTREAM_TIMEOUT`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `http://host:port` of the product: the assertion's default audience.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.upstream.authority())
    }

    /// Send `request` (its target already canonical: `http::edge`) on to the product and stream
    /// its answer back. Not bounded in time here: see [`Gateway::timeout`].
    pub(crate) async fn forward(&self, mut request: Request<Body>, forwarding: Forwarding<'_>) -> Result<Forwarded, GatewayError> {
        let websocket = headers::is_websocket_upgrade(request.headers());
        let client_side = websocket.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        // Origin form (`/path?query`), as HTTP/1.1 asks of a request to a server (the edge made it canonical).
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let target = parts.uri.path_and_query().cloned().unwrap_or_else(|| axum::http::uri::PathAndQuery::from_static("/"));
            parts.uri = Uri::from(target);
        }
        let outgoing = &mut parts.headers;
        headers::strip_hop_by_hop(outgoing);
        if websocket {
            outgoing.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            outgoing.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        headers::strip_identity_shaped(outgoing);
        self.credentials.strip(outgoing);
        match &self.host {
            Some(upstream) => {
                outgoing.insert(header::HOST, upstream.clone());
            }
            // The browser's, or for a client that sent none (HTTP/1.0) the public host.
            None if outgoing.contains_key(header::HOST) => {}
            None => {
                outgoing.insert(header::HOST, forwarding.public_host.clone());
            }
        }
        // Room for what is added below, made once.
        outgoing.reserve(4 + forwarding.identity.as_ref().map_or(0, |(identity, _)| identity.len() + 1));
        headers::set_forwarding(outgoing, forwarding.client, forwarding.proto, forwarding.public_host);
        if let Some((identity, assertion)) = forwarding.identity {
            for (name, value) in identity.iter() {
                outgoing.insert(name.clone(), value.clone());
            }
            if let Some(assertion) = assertion {
                outgoing.insert(identity::X_TOLLGATE_ASSERTION, assertion);
            }
        }
        // The caller bounds this with `timeout` (one timer for the whole proxied request).
        let mut response = self.upstream.send(Request::from_parts(parts, body)).await?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let protocol = response.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            return match client_side {
                Some(client) if headers::upgrade_is_websocket(response.headers()) => {
                    let product = hyper::upgrade::on(&mut response);
                    Ok(Forwarded::Tunnel { answer: response, client, product })
                }
                _ => Err(GatewayError::ForeignUpgrade(protocol)),
            };
        }
        headers::strip_hop_by_hop(response.headers_mut());
        Ok(Forwarded::Answer(response))
    }
}
