//! What the product receives besides the request itself. Every header that could carry an
//! identity or a client-chosen address is removed in any spelling a framework may read it by
//! (case, `_` for `-`: WSGI, PHP and CGI map both to `HTTP_X_FORWARDED_USER`), then Tollgate sets
//! its own: the identity of who is signed in, and `X-Forwarded-For`/`-Proto`/`-Host` and
//! `Forwarded` built from what Tollgate itself knows (the client address from the trusted proxy
//! chain, the public host). Tollgate's cookies, and Clerk's session credentials, stay here.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many kinds of header [`HOP_BY_HOP`] names.
const HOP_KINDS: usize = 9;

/// Headers of one connection, not of the message (RFC 9110 §7.6.1), and `HTTP2-Settings` (only
/// meaningful with an `h2c` upgrade, which is never forwarded): never forwarded. Names as
/// constants, so removing them parses nothing per request.
const HOP_BY_HOP: [HeaderName; HOP_KINDS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Prefixes and names of headers that say who the user is, where the request came from or which
/// URL it was for, as proxies and frameworks trust them (compared after `_` → `-`). Tollgate sets
/// the ones it vouches for after removing these.
const IDENTITY_PREFIXES: [&str; 3] = ["x-forwarded-", "x-tollgate-", "x-auth-request-"];
const IDENTITY_NAMES: [&str; 14] = [
    "forwarded", "remote-user", "x-remote-user", "x-original-url", "x-original-uri", "x-original-method", "x-rewrite-url", "x-real-ip",
    "x-client-ip", "true-client-ip", "x-cluster-client-ip", "x-original-host", "x-host", "x-forwarded",
];

/// Tollgate's own cookies, which the product has no use for (and must not see).
const OWN_COOKIES: [&str; 6] =
    ["tollgate_session", "__Host-tollgate_session", "tollgate_csrf", "__Host-tollgate_csrf", "tollgate_device", "__Host-tollgate_device"];

/// Clerk's session credentials (cookie names, or their prefixes before `_<suffix>`).
const CLERK_COOKIES: [&str; 5] = ["__session", "__client_uat", "__clerk_db_jwt", "__clerk_handshake", "__refresh"];

/// `name` with `_` read as `-` starts with `prefix` (both lower-case ASCII; header names are).
fn starts_with_dashed(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(n, p)| n == p || (n == b'_' && p == b'-'))
}

/// Whether a header (its lower-case name, as `HeaderName` keeps it) is identity-shaped.
pub(crate) fn is_identity_shaped(name: &str) -> bool {
    // Every such name starts with one of these letters: most headers are ruled out at once.
    if !matches!(name.as_bytes().first(), Some(b'x' | b'f' | b'r' | b't')) {
        return false;
    }
    IDENTITY_PREFIXES.iter().any(|prefix| starts_with_dashed(name, prefix))
        || IDENTITY_NAMES.iter().any(|known| known.len() == name.len() && starts_with_dashed(name, known))
}

/// Remove every identity-shaped header, in one pass when there is none.
pub(crate) fn strip_identity_shaped(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| is_identity_shaped(n.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_identity_shaped(n.as_str())).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether the request asks for a WebSocket, the one protocol spliced (RFC 6455 §4.1: `Upgrade:
/// websocket` and a `Connection` naming `upgrade`).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && upgrade_is_websocket(headers)
}

/// The header `Upgrade` names exactly one protocol, `websocket`.
pub(crate) fn upgrade_is_websocket(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    matches!((upgrades.next(), upgrades.next()), (Some(one), None) if one.to_str().is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name finds the kinds present (most messages have none, or only
    // `Connection: keep-alive`): cheaper than a removal per kind.
    let mut present = [false; HOP_KINDS];
    for name in headers.keys() {
        if let Some(kind) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[kind] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Headers that `Connection` names are hop-by-hop too ("keep-alive" and "close" name none).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, present)| *present) {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// Which cookies and credentials stay with Tollgate.
#[derive(Debug, Clone)]
pub(crate) struct OwnCredentials {
    /// Clerk is the provider and `FORWARD_CLERK_SESSION` is off: its cookies, and a bearer
    /// session token issued by this instance (`iss`), are removed too.
    pub(crate) strip_clerk: Option<String>,
}

/// Whether `token` is a JWT whose `iss` is `issuer` (its signature is Tollgate's business, not this).
fn issued_by(token: &str, issuer: &str) -> bool {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return false };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else { return false };
    serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|claims| claims["iss"] == issuer)
}

impl OwnCredentials {
    fn keeps_cookie(&self, name: &str) -> bool {
        let clerk = |base: &&str| name == *base || name.strip_prefix(base).is_some_and(|rest| rest.starts_with('_'));
        !(OWN_COOKIES.contains(&name) || (self.strip_clerk.is_some() && CLERK_COOKIES.iter().any(clerk)))
    }

    /// Remove Tollgate's (and, when asked, Clerk's) credentials from a request to the product:
    /// its cookies, and a Tollgate API key in `Authorization` or `X-API-Key`.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        if crate::auth::api_key(headers).is_some() {
            headers.remove(header::AUTHORIZATION);
            headers.remove(crate::auth::X_API_KEY);
        }
        if let Some(issuer) = &self.strip_clerk {
            let clerk_token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case("bearer ")).map(|_| v[7..].trim()))
                .is_some_and(|token| issued_by(token, issuer));
            if clerk_token {
                headers.remove(header::AUTHORIZATION);
            }
        }
        fn name_of(pair: &str) -> &str {
            pair.trim().split('=').next().unwrap_or("")
        }
        let pairs = || headers.get_all(header::COOKIE).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
        if pairs().all(|pair| self.keeps_cookie(name_of(pair))) {
            return;
        }
        let mut kept = String::new();
        for pair in pairs().map(str::trim).filter(|pair| !pair.is_empty() && self.keeps_cookie(name_of(pair))) {
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(pair);
        }
        headers.remove(header::COOKIE);
        if let Ok(value) = HeaderValue::from_str(&kept) {
            if !kept.is_empty() {
                headers.insert(header::COOKIE, value);
            }
        }
    }
}

/// Where a request came from: the client's address and the trusted proxies it passed through
/// (nearest last), as `http::edge` read them from the connection and `TRUSTED_PROXIES`. Shared,
/// not copied: a connection with no trusted proxy in front has one for all its requests, so its
/// forwarding headers are written once.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr(std::sync::Arc<Origin>);

#[derive(Debug)]
struct Origin {
    ip: IpAddr,
    /// Trusted proxies between the client and Tollgate, the nearest (the TCP peer) last; empty
    /// when the client connected directly.
    proxies: Vec<IpAddr>,
    /// `X-Forwarded-For`, `Forwarded` and `X-Forwarded-Host` for the product, once written.
    forwarding: std::sync::OnceLock<ClientForwarding>,
}

/// The forwarding headers of one client, written once. The public host is its own copy (not a
/// clone of the instance's): a clone shares one reference count that every request of every
/// serving thread would write.
#[derive(Debug)]
struct ClientForwarding {
    forwarded_for: HeaderValue,
    forwarded: HeaderValue,
    public_host: HeaderValue,
}

impl PartialEq for ClientAddr {
    fn eq(&self, other: &ClientAddr) -> bool {
        (self.0.ip, &self.0.proxies) == (other.0.ip, &other.0.proxies)
    }
}

impl ClientAddr {
    fn new(ip: IpAddr, proxies: Vec<IpAddr>) -> ClientAddr {
        ClientAddr(std::sync::Arc::new(Origin { ip, proxies, forwarding: Default::default() }))
    }

    /// A client connected directly from `ip`.
    pub(crate) fn direct(ip: IpAddr) -> ClientAddr {
        ClientAddr::new(ip, Vec::new())
    }

    pub(crate) fn ip(&self) -> IpAddr {
        self.0.ip
    }

    /// The client of a connection from `peer`: the right-most `X-Forwarded-For` address that is
    /// not a trusted proxy (never the left-most: the client writes it), when `peer` is trusted.
    pub(crate) fn of(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> ClientAddr {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical_ip(*ip)));
        if trusted.is_empty() || !is_trusted(&peer) {
            return ClientAddr::direct(peer);
        }
        let mut proxies = vec![peer];
        let chain = headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect::<Vec<_>>();
        for hop in chain.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if is_trusted(&ip) => proxies.push(ip),
                Some(ip) => {
                    proxies.reverse();
                    return ClientAddr::new(ip, proxies);
                }
                None => break, // garbage: the nearest trusted hop is as far as we can see
            }
        }
        // Every hop trusted (or the chain unreadable): the farthest trusted hop is the client.
        let ip = proxies.pop().expect("the peer is in the chain");
        proxies.reverse();
        ClientAddr::new(ip, proxies)
    }

    /// `X-Forwarded-For` for the product: the client, then the trusted proxies.
    fn forwarded_for(&self) -> String {
        use std::fmt::Write;
        let mut chain = self.0.ip.to_string();
        for proxy in &self.0.proxies {
            let _ = write!(chain, ", {proxy}");
        }
        chain
    }

    /// The forwarding headers for the product (`proto` and `public_host` are the instance's own,
    /// the same for every request).
    fn forwarding(&self, proto: &'static str, public_host: &HeaderValue) -> &ClientForwarding {
        self.0.forwarding.get_or_init(|| {
            let node = match canonical_ip(self.0.ip) {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            let forwarded = format!("for={node};host=\"{}\";proto={proto}", public_host.to_str().unwrap_or(""));
            let value = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
            ClientForwarding {
                forwarded_for: value(&self.forwarded_for()),
                forwarded: value(&forwarded),
                public_host: HeaderValue::from_bytes(public_host.as_bytes()).unwrap_or_else(|_| public_host.clone()),
            }
        })
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1` (a dual-stack listener reports IPv4 peers that way).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[').and_then(|h| h.split_once(']')).and_then(|(ip, _)| ip.parse().ok()))
        .map(canonical_ip)
}

/// Set the forwarding headers Tollgate vouches for (after `strip_identity_shaped` removed any a
/// client sent): the client chain, the scheme users reach Tollgate by, and the public host.
pub(crate) fn set_forwarding(headers: &mut HeaderMap, client: &ClientAddr, proto: &'static str, public_host: &HeaderValue) {
    let forwarding = client.forwarding(proto, public_host);
    headers.insert(X_FORWARDED_FOR, forwarding.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST, forwarding.public_host.clone());
    headers.insert(FORWARDED, forwarding.forwarded.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_shaped_headers_in_every_spelling() {
        for name in [
            "x-forwarded-user", "x_forwarded_user", "x-forwarded_email", "x-tollgate-entitled", "x_tollgate_price", "x-tollgate-anything",
            "x-auth-request-user", "x_auth_request_email", "remote-user", "remote_user", "x-remote-user", "x-original-url",
            "x-rewrite-url", "x-real-ip", "x_real_ip", "forwarded", "x-forwarded-prefix", "x-forwarded-for", "x-forwarded-host",
            "x-original-uri",
        ] {
            assert!(is_identity_shaped(name), "{name}");
        }
        for name in ["x-forwarded", "x-forwardedx"] {
            assert_eq!(is_identity_shaped(name), name == "x-forwarded", "{name}");
        }
        for name in ["accept", "cookie", "x-request-id", "x-tollgat", "remote-users", "forwarded-x", "user-agent"] {
            assert!(!is_identity_shaped(name), "{name}");
        }
    }

    #[test]
    fn only_foreign_cookies_reach_the_product() {
        let local = OwnCredentials { strip_clerk: None };
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("tollgate_session=secret; theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Host-tollgate_csrf=x; tollgate_sessionx=kept; __session=clerk"));
        local.strip(&mut headers);
        assert_eq!(headers[header::COOKIE], "theme=dark; tollgate_sessionx=kept; __session=clerk");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("tollgate_session=secret"));
        local.strip(&mut only_ours);
        assert!(!only_ours.contains_key(header::COOKIE));

        let clerk = OwnCredentials { strip_clerk: Some("https://clerk.example.com".into()) };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__session=a; __session_Ab12Cd34=b; __client_uat=1; __client_uat_x=2; __sessionx=kept; app=1"),
        );
        // {"iss":"https://clerk.example.com"}
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer e30.eyJpc3MiOiJodHRwczovL2NsZXJrLmV4YW1wbGUuY29tIn0.c2ln"));
        clerk.strip(&mut headers);
        assert_eq!(headers[header::COOKIE], "__sessionx=kept; app=1");
        assert!(!headers.contains_key(header::AUTHORIZATION), "a session token stays with Tollgate");
        for own in ["Bearer product-api-key", "Bearer e30.eyJpc3MiOiJodHRwczovL3Byb2R1Y3QuZXhhbXBsZSJ9.c2ln"] {
            let mut api_key = HeaderMap::new();
            api_key.insert(header::AUTHORIZATION, HeaderValue::from_static(own));
            clerk.strip(&mut api_key);
            assert!(api_key.contains_key(header::AUTHORIZATION), "the product's own bearer tokens pass: {own}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_stay_on_their_hop() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Trace-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("x-trace-hop", "1"),
            ("accept", "*/*"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-kept"]);
        let mut none = HeaderMap::new();
        none.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1, "nothing hop-by-hop: nothing removed");
    }

    #[test]
    fn only_a_websocket_upgrade_is_one() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, HeaderValue::from_static(v));
            }
            map
        };
        assert!(is_websocket_upgrade(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")])));
        for not in [
            headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]),
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket, h2c")]),
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("upgrade", "h2c")]),
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "Upgrade"), ("upgrade", "TLS/1.2")]),
        ] {
            assert!(!is_websocket_upgrade(&not), "{not:?}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let with_xff = |xff: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(X_FORWARDED_FOR, HeaderValue::from_static(xff));
            headers
        };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client wrote a left-most entry of its own choosing; nginx appended the real one.
        let seen = ClientAddr::of(peer, &with_xff("6.6.6.6, 203.0.113.7"), &trusted);
        assert_eq!(seen, ClientAddr::new(ip("203.0.113.7"), vec![peer]));
        assert_eq!(seen.forwarded_for(), "203.0.113.7, 127.0.0.1");
        let through_two = ClientAddr::of(peer, &with_xff("203.0.113.7, 10.1.2.3:443"), &trusted);
        assert_eq!(through_two, ClientAddr::new(ip("203.0.113.7"), vec![ip("10.1.2.3"), peer]));
        // An untrusted peer's header is ignored; with nothing trusted, the peer is the client.
        assert_eq!(ClientAddr::of(ip("198.51.100.1"), &with_xff("1.2.3.4"), &trusted).ip(), ip("198.51.100.1"));
        assert_eq!(ClientAddr::of(peer, &with_xff("1.2.3.4"), &[]).ip(), peer);
        // All trusted: the farthest trusted hop; garbage stops the walk.
        assert_eq!(ClientAddr::of(peer, &with_xff("10.0.0.5"), &trusted).ip(), ip("10.0.0.5"));
        assert_eq!(ClientAddr::of(peer, &with_xff("1.2.3.4, not-an-ip"), &trusted).ip(), peer);
        assert_eq!(ClientAddr::of(peer, &with_xff("[2001:db8::1]:80"), &trusted).ip(), ip("2001:db8::1"));
    }
}
