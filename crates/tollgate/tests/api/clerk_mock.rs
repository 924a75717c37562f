//! Clerk cannot be reached from the tests, so this stands in for it on loopback, shaped from
//! `../shared/reference/clerk.md` (itself checked against `@clerk/backend`): the Backend API's
//! `/v1/jwks` (bearer secret key), `/v1/users/{id}` and `/v1/sessions/{id}/revoke`, with hit
//! counters and a switch that makes it fail; and tokens minted as a Clerk instance signs them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const PUBLISHABLE_KEY: &str = "pk_test_ZXhhbXBsZS1hcHAtMTIuY2xlcmsuYWNjb3VudHMuZGV2JA";
pub const ISSUER: &str = "https://example-app-12.clerk.accounts.dev";
pub const COOKIE_SUFFIX: &str = "fiNgkcri";
pub const SECRET_KEY: &str = "sk_test_tollgate_clerk_suite";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const KID: &str = "ins_2GIoQhbUpy0hX7B2cVkuTMinXoD";
pub const INSTANCE_KEY: &str = include_str!("../fixtures/clerk-instance.key.pem");
pub const INSTANCE_PUBLIC_KEY: &str = include_str!("../fixtures/clerk-instance.pub.pem");

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
}

pub struct MockClerk {
    pub url: String,
    pub state: Arc<ClerkState>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {SECRET_KEY}"))
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
    jwk.common.key_id = Some(KID.into());
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

impl MockClerk {
    pub async fn start() -> MockClerk {
        let state = Arc::new(ClerkState::default());
        let router = Router::new()
            .route("/v1/jwks", get(jwks))
            .route("/v1/users/{id}", get(user))
            .route("/v1/sessions/{id}/revoke", post(revoke))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        MockClerk { url, state }
    }

    pub fn add_user(&self, id: &str, email: Option<&str>) {
        self.state.users.lock().unwrap().insert(id.into(), email.map(str::to_string));
    }

    pub fn hits(&self) -> (usize, usize) {
        (self.state.jwks_hits.load(Ordering::SeqCst), self.state.user_hits.load(Ordering::SeqCst))
    }
}

/// A session token as the instance signs one, for `azp` (the app's origin), changed by `change`.
pub fn session_token(user: &str, azp: &str, change: impl FnOnce(&mut Header, &mut Value)) -> String {
    let now = tollgate::unix_now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    header.extras.insert("cat", "cl_B7d4PD111AAA");
    let mut claims = json!({"sub": user, "sid": format!("sess_{user}"), "iss": ISSUER, "azp": azp,
                            "iat": now, "nbf": now - 10, "exp": now + 60, "v": 2, "sts": "active"});
    change(&mut header, &mut claims);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(INSTANCE_KEY.as_bytes()).unwrap()).unwrap()
}
