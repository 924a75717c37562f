//! Clerk cannot be reached from the tests, so this stands in for it on loopback, shaped from
//! `../shared/reference/clerk.md` (itself checked against `@clerk/backend`): the Backend API's
//! `/v1/jwks` (bearer secret key), `/v1/users/{id}`, `/v1/sessions/{id}/revoke`,
//! `/v1/organizations/{id}/memberships` and `/v1/clients/handshake_payload` (a nonce's
//! `Set-Cookie` lines, tokens minted when asked), with
//! hit counters and a switch that makes it fail; and tokens minted as a Clerk instance signs them,
//! from a description (`mint`) that `tests/sdk/clerk-oracle.mjs` mints from too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const PUBLISHABLE_KEY: &str = "pk_test_ZXhhbXBsZS1hcHAtMTIuY2xlcmsuYWNjb3VudHMuZGV2JA";
pub const ISSUER: &str = "https://example-app-12.clerk.accounts.dev";
/// `cookie_suffix(PUBLISHABLE_KEY)`.
pub const COOKIE_SUFFIX: &str = "fiNgkcri";

/// The suffix Clerk gives an instance's cookie names: SHA-1 of the publishable key, base64url, 8
/// characters (computed here as Clerk does, apart from Tollgate's own code).
pub fn cookie_suffix(publishable_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode(sha1_smol::Sha1::from(publishable_key).digest().bytes())[..8].to_string()
}

/// Svix's `v1,…` signature of a webhook delivery, as Clerk sends it: HMAC-SHA256 with the
/// base64-decoded secret over `id.timestamp.body`.
pub fn svix_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}
pub const SECRET_KEY: &str = "sk_test_tollgate_clerk_suite";
/// A production instance's key (the same loopback Backend API answers both).
pub const LIVE_SECRET_KEY: &str = "sk_live_tollgate_clerk_suite";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const KID: &str = "ins_2GIoQhbUpy0hX7B2cVkuTMinXoD";
pub const INSTANCE_KEY: &str = include_str!("../fixtures/clerk-instance.key.pem");
pub const INSTANCE_PUBLIC_KEY: &str = include_str!("../fixtures/clerk-instance.pub.pem");
pub const OTHER_KEY: &str = include_str!("../fixtures/clerk-other.key.pem");

/// What a handshake nonce stands for: `Set-Cookie` lines, and the descriptions of the tokens they
/// name (`{{tN}}`), minted when the nonce is exchanged.
pub type HandshakeLines = (Vec<String>, Vec<Value>);

/// An organization: name, slug, and members as (user id, identifier, role key).
pub type MockOrg = (String, String, Vec<(String, String, String)>);

#[derive(Default)]
pub struct ClerkState {
    /// user id → primary email (`None`: a user without one).
    pub users: Mutex<HashMap<String, Option<String>>>,
    pub revoked: Mutex<Vec<String>>,
    pub jwks_hits: AtomicUsize,
    pub user_hits: AtomicUsize,
    /// Every Backend API call answers 503 while set.
    pub failing: AtomicBool,
    /// Every call to a user hangs (never answers) while set.
    pub hanging: AtomicBool,
    pub nonces: Mutex<HashMap<String, HandshakeLines>>,
    pub orgs: Mutex<HashMap<String, MockOrg>>,
}

pub struct MockClerk {
    pub url: String,
    pub state: Arc<ClerkState>,
}

fn authorized(headers: &HeaderMap) -> bool {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|key| key == SECRET_KEY || key == LIVE_SECRET_KEY)
}

async fn jwks(State(state): State<Arc<ClerkState>>, headers: HeaderMap) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"errors": [{"code": "authentication_invalid"}]}))).into_response();
    }
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_pem(INSTANCE_KEY.as_bytes()).unwrap(), Algorithm::RS256).unwrap();
    // As Clerk publishes its keys: `use` sig, `alg` RS256.
    jwk.common.key_id = Some(KID.into());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    Json(JwkSet { keys: vec![jwk] }).into_response()
}

async fn user(State(state): State<Arc<ClerkState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    state.user_hits.fetch_add(1, Ordering::SeqCst);
    if state.hanging.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if state.failing.load(Ordering::SeqCst) || !authorized(&headers) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some(email) = state.users.lock().unwrap().get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": [{"code": "resource_not_found"}]}))).into_response();
    };
    let addresses: Vec<Value> = email
        .iter()
        .map(|e| json!({"object": "email_address", "id": "idn_primary", "email_address": e, "verification": {"status": "verified"}}))
        .chain(std::iter::once(json!({"object": "email_address", "id": "idn_old", "email_address": "old-address@example.com"})))
        .collect();
    Json(json!({"object": "user", "id": id, "primary_email_address_id": email.as_ref().map(|_| "idn_primary"), "email_addresses": addresses}))
        .into_response()
}

async fn revoke(State(state): State<Arc<ClerkState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if state.failing.load(Ordering::SeqCst) || !authorized(&headers) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.revoked.lock().unwrap().push(id.clone());
    Json(json!({"object": "session", "id": id, "status": "revoked"})).into_response()
}

async fn handshake_payload(State(state): State<Arc<ClerkState>>, headers: HeaderMap, query: Query<HashMap<String, String>>) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"errors": [{"code": "authentication_invalid"}]}))).into_response();
    }
    let Some((lines, tokens)) = query.get("nonce").and_then(|nonce| state.nonces.lock().unwrap().get(nonce).cloned()) else {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": [{"code": "resource_not_found"}]}))).into_response();
    };
    let now = tollgate_core::unix_now();
    let minted = mint_all(&tokens, now);
    Json(json!({"directives": lines.iter().map(|line| expand(line, now, &minted)).collect::<Vec<_>>()})).into_response()
}

/// `GET /v1/organizations/{id}/memberships?limit&offset`: a page of `OrganizationMembershipJSON`
/// (the fields `@clerk/backend` types), with `total_count`.
async fn memberships(
    State(state): State<Arc<ClerkState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Query<HashMap<String, String>>,
) -> Response {
    if state.failing.load(Ordering::SeqCst) || !authorized(&headers) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some((name, slug, members)) = state.orgs.lock().unwrap().get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": [{"code": "resource_not_found"}]}))).into_response();
    };
    let number = |name: &str, default: usize| query.get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let organization = json!({"object": "organization", "id": id, "name": name, "slug": slug, "members_count": members.len()});
    let data: Vec<Value> = members
        .iter()
        .skip(number("offset", 0))
        .take(number("limit", 10).min(500))
        .map(|(user, identifier, role)| {
            json!({"object": "organization_membership", "id": format!("orgmem_{user}"), "role": role, "permissions": [],
                   "public_metadata": {}, "created_at": 1700000000000i64, "updated_at": 1700000000000i64,
                   "organization": organization,
                   "public_user_data": {"user_id": user, "identifier": identifier, "first_name": null, "last_name": null, "image_url": "", "has_image": false}})
        })
        .collect();
    Json(json!({"data": data, "total_count": members.len()})).into_response()
}

impl MockClerk {
    pub async fn start() -> MockClerk {
        let state = Arc::new(ClerkState::default());
        let router = Router::new()
            .route("/v1/jwks", get(jwks))
            .route("/v1/users/{id}", get(user))
            .route("/v1/sessions/{id}/revoke", post(revoke))
            .route("/v1/clients/handshake_payload", get(handshake_payload))
            .route("/v1/organizations/{id}/memberships", get(memberships))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        MockClerk { url, state }
    }

    pub fn add_user(&self, id: &str, email: Option<&str>) {
        self.state.users.lock().unwrap().insert(id.into(), email.map(str::to_string));
    }

    /// Set an organization's members: (user id, email, role key such as `org:admin`).
    pub fn set_org(&self, id: &str, name: &str, slug: &str, members: &[(&str, &str, &str)]) {
        let members = members.iter().map(|(u, e, r)| (u.to_string(), e.to_string(), r.to_string())).collect();
        self.state.orgs.lock().unwrap().insert(id.into(), (name.into(), slug.into(), members));
    }

    pub fn hits(&self) -> (usize, usize) {
        (self.state.jwks_hits.load(Ordering::SeqCst), self.state.user_hits.load(Ordering::SeqCst))
    }
}

/// A session token as the instance signs one, for `azp` (the app's origin), changed by `change`.
pub fn session_token(user: &str, azp: &str, change: impl FnOnce(&mut Header, &mut Value)) -> String {
    let now = tollgate_core::unix_now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    header.extras.insert("cat", "cl_B7d4PD111AAA");
    let mut claims = json!({"sub": user, "sid": format!("sess_{user}"), "iss": ISSUER, "azp": azp,
                            "iat": now, "nbf": now - 10, "exp": now + 60, "v": 2, "sts": "active"});
    change(&mut header, &mut claims);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(INSTANCE_KEY.as_bytes()).unwrap()).unwrap()
}

/// The description of a session token as the instance `issuer` signs one for `sub`, for the app
/// at `azp`, issued now and valid for a minute (`mint` makes it a token).
pub fn session_description(issuer: &str, sub: &str, azp: &str) -> Value {
    json!({
        "alg": "RS256", "key": "instance", "pad": null,
        "header": {"alg": "RS256", "typ": "JWT", "kid": KID, "cat": "cl_B7d4PD111AAA"},
        "claims": {"sub": sub, "sid": format!("sess_{sub}"), "iss": issuer, "azp": azp,
                   "iat": {"$now": 0}, "nbf": {"$now": -10}, "exp": {"$now": 60}, "v": 2, "sts": "active"},
    })
}

/// `{{tN}}` (the N-th token minted), `{{now}}`, `{{now+N}}`, `{{now-N}}`.
pub fn expand(text: &str, now: i64, tokens: &[String]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}").map(|e| start + e) else { break };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..end];
        match name.strip_prefix('t').and_then(|n| n.parse::<usize>().ok()) {
            Some(index) => out.push_str(&tokens[index]),
            None => {
                let offset = name.strip_prefix("now").map(|o| if o.is_empty() { 0 } else { o.parse::<i64>().unwrap() });
                out.push_str(&(now + offset.unwrap_or_else(|| panic!("unknown placeholder {name}"))).to_string());
            }
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Claims with `{"$now": N}` made times and strings expanded.
fn resolve(value: &Value, now: i64, tokens: &[String]) -> Value {
    match value {
        Value::Object(map) if map.contains_key("$now") => json!(now + map["$now"].as_i64().unwrap()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v, now, tokens))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, now, tokens)).collect()),
        Value::String(text) => Value::String(expand(text, now, tokens)),
        other => other.clone(),
    }
}

/// A segment of JSON, base64url; with `=` padding (and spaces to make some) when `pad`.
fn segment(json: &Value, pad: bool) -> String {
    use base64::Engine;
    let mut text = json.to_string();
    if !pad {
        return base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    }
    while text.len().is_multiple_of(3) {
        text.push(' ');
    }
    base64::engine::general_purpose::URL_SAFE.encode(text)
}

/// A token from its description: `{"alg", "key": "instance"|"other", "header", "claims", "pad":
/// "header"|"payload"|"signature"|null}`; the same description `clerk-oracle.mjs` mints from.
pub fn mint(token: &Value, now: i64, earlier: &[String]) -> String {
    use base64::Engine;
    let pad = token["pad"].as_str();
    let header = segment(&token["header"], pad == Some("header"));
    let payload = segment(&resolve(&token["claims"], now, earlier), pad == Some("payload"));
    let algorithm = match token["alg"].as_str().unwrap() {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        _ => Algorithm::RS512,
    };
    let key = if token["key"] == "other" { OTHER_KEY } else { INSTANCE_KEY };
    let signed = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(), algorithm).unwrap();
    let signature = match pad {
        Some("signature") => {
            base64::engine::general_purpose::URL_SAFE.encode(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&signature).unwrap())
        }
        _ => signature,
    };
    format!("{signed}.{signature}")
}

pub fn mint_all(tokens: &[Value], now: i64) -> Vec<String> {
    let mut minted = Vec::new();
    for token in tokens {
        let next = mint(token, now, &minted);
        minted.push(next);
    }
    minted
}
