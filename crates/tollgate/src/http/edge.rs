//! The edge: what every request passes before any route or decision sees it (the accept loop,
//! `http::serve`, runs it for Tollgate's router and for a library-mode product's alike).
//!
//! - The request target becomes one canonical origin-form path (`gateway::path`): Tollgate's
//!   routes, the gate and the product all see that same path, or the request is refused with 400.
//!   An absolute-form target (`GET http://host/path`) names the host (RFC 9112 §3.2.2): it
//!   replaces `Host`.
//! - The client's address is read once, from the connection and `TRUSTED_PROXIES`
//!   (`gateway::headers::ClientAddr`), for throttles, logs and the product's `X-Forwarded-For`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};

use super::error::{Failure, Surface};
use crate::gateway::headers::ClientAddr;
use crate::gateway::path::{canonical_path, PathRefusal};
use crate::gateway::tunnel::ConnectionSlot;

pub(crate) struct Edge {
    /// `GATEWAY_ALLOW_ENCODED_SLASH`.
    pub(crate) allow_encoded_slash: bool,
    /// `TRUSTED_PROXIES`.
    pub(crate) trusted_proxies: Arc<[ipnet::IpNet]>,
    /// `MAX_HEADER_BYTES` (the accept loop bounds request heads with it).
    pub(crate) max_header_bytes: usize,
    /// `KEEPALIVE_TIMEOUT` (the accept loop closes a connection idle this long).
    pub(crate) keepalive_timeout: std::time::Duration,
    /// The app's clock, which the connections' deadlines read.
    pub(crate) clock: tollgate_core::Clock,
}

/// One connection as the accept loop took it: who is at the other end, and its slot.
pub(crate) struct Arrival {
    peer: SocketAddr,
    slot: ConnectionSlot,
    /// The client, when it is the peer (no trusted proxy in front): one for all its requests.
    direct: ClientAddr,
}

impl Arrival {
    pub(crate) fn new(peer: SocketAddr, slot: ConnectionSlot) -> Arrival {
        Arrival { peer, slot, direct: ClientAddr::direct(peer.ip()) }
    }
}

impl Edge {
    /// Make `request` canonical and note where it came from; why it cannot be made canonical
    /// otherwise (answered by [`Edge::refused`]).
    pub(crate) fn prepare<B>(&self, request: &mut Request<B>, arrival: &Arrival) -> Result<(), PathRefusal> {
        self.canonical_target(request)?;
        let client = match self.trusted_proxies.is_empty() {
            true => arrival.direct.clone(),
            false => ClientAddr::of(arrival.peer.ip(), request.headers(), &self.trusted_proxies),
        };
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(arrival.peer));
        extensions.insert(client);
        extensions.insert(arrival.slot.clone());
        Ok(())
    }

    /// The 400 for a request whose target has no one meaning: a page or JSON, as it asked.
    pub(crate) fn refused<B>(request: &Request<B>, refusal: PathRefusal) -> Response {
        Failure::bad_path(Surface::from_headers(request.headers(), ""), refusal).into_response()
    }

    fn canonical_target<B>(&self, request: &mut Request<B>) -> Result<(), PathRefusal> {
        let uri = request.uri();
        if uri.scheme().is_some_and(|s| s.as_str() != "http" && s.as_str() != "https") {
            return Err(PathRefusal::NotAPath);
        }
        let authority = uri.authority().cloned();
        let canonical = canonical_path(uri.path(), self.allow_encoded_slash)?;
        if matches!(canonical, std::borrow::Cow::Borrowed(_)) && authority.is_none() {
            return Ok(()); // the common case: nothing to rewrite
        }
        let target = match uri.query() {
            Some(query) => format!("{canonical}?{query}"),
            None => canonical.into_owned(),
        };
        let path_and_query = PathAndQuery::try_from(target).map_err(|_| PathRefusal::NotAPath)?;
        *request.uri_mut() = Uri::from(path_and_query);
        if let Some(authority) = authority {
            let host = match authority.port() {
                Some(port) => format!("{}:{port}", authority.host()),
                None => authority.host().to_string(),
            };
            let host = HeaderValue::from_str(&host).map_err(|_| PathRefusal::NotAPath)?;
            request.headers_mut().insert(header::HOST, host);
        }
        Ok(())
    }
}
