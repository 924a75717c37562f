//! Verifying a Clerk session token exactly as `@clerk/backend`'s `verifyToken` does, in its order:
//! the header (`alg` RS256/384/512 before any key is touched, `typ`, `cat`), the key (`kid` in the
//! JWKS, or the PEM key), the signature (before any claim is read), then `sub`, `iss`, `azp`,
//! `exp`/`nbf`/`iat` with Clerk's 5 s skew, and a pending session counts as signed out. The
//! signature is jsonwebtoken's; the header and claim rules are Clerk's, so they are checked here
//! rather than by jsonwebtoken's `Validation` (its 60 s leeway and unchecked `iat` are not Clerk's).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::backend::BackendApi;

/// Clerk's `DEFAULT_CLOCK_SKEW_IN_MS`.
pub const CLOCK_SKEW_MS: i64 = 5_000;
/// How long fetched keys are trusted, and how often an unknown `kid` may trigger a refetch.
const JWKS_TTL: Duration = Duration::from_secs(300);
const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// After a failed fetch, requests fail at once for this long instead of each trying again (and
/// queueing behind one another) while the Backend API is down.
const AFTER_A_FAILED_FETCH: Duration = Duration::from_secs(1);

/// Session-token categories (`cat`): a session token, and the "ignore" tag some instances stamp on
/// every token. Others (JWT templates `cl_B7d4PD222AAA`, M2M `cl_B7d4PD333AAA`) are refused.
const SESSION_CATEGORIES: [&str; 2] = ["cl_B7d4PD111AAA", "cl_I7d4PD111III"];

/// Why a token was refused: Clerk's own reason names, so logs read like Clerk's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("token-invalid: {0}")]
    Invalid(&'static str),
    #[error("token-invalid-algorithm")]
    Algorithm,
    #[error("token-type-mismatch: not a session token")]
    Category,
    #[error("jwk-kid-mismatch")]
    UnknownKid,
    #[error("token-invalid-signature")]
    Signature,
    #[error("token-verification-failed: {0}")]
    Claims(&'static str),
    #[error("token-invalid-issuer")]
    Issuer,
    #[error("token-invalid-authorized-parties")]
    AuthorizedParty,
    #[error("token-expired")]
    Expired,
    #[error("token-not-active-yet")]
    NotActiveYet,
    #[error("token-iat-in-the-future")]
    IssuedInTheFuture,
    #[error("session-pending: the session has a task to finish")]
    Pending,
}

/// A verified session token's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionClaims {
    pub user_id: String,
    pub session_id: Option<String>,
    /// Issued at, unix seconds (compared with `__client_uat`).
    pub issued_at: Option<i64>,
}

/// The keys can be unknown for a while (the Backend API is down): the caller answers 503.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("jwk-remote-failed-to-load: {0}")]
    KeysUnavailable(String),
}

pub enum KeySource {
    /// `CLERK_JWT_KEY`: one key, and (as in Clerk's SDK) no `kid` check.
    Pem(DecodingKey),
    /// `{CLERK_API_URL}/v1/jwks`, cached for [`JWKS_TTL`].
    Jwks(Jwks),
}

pub struct Jwks {
    backend: std::sync::Arc<BackendApi>,
    cached: RwLock<Option<FetchedKeys>>,
    /// One fetch at a time; a waiter then finds the keys the fetch brought.
    fetching: tokio::sync::Mutex<()>,
    /// When a `kid` missing from fresh keys last caused a fetch.
    unknown_kid_fetch: std::sync::Mutex<Option<Instant>>,
    /// When a fetch last failed, and why.
    failed: std::sync::Mutex<Option<(Instant, String)>>,
}

struct FetchedKeys {
    at: Instant,
    keys: HashMap<String, DecodingKey>,
}

impl Jwks {
    pub fn new(backend: std::sync::Arc<BackendApi>) -> Jwks {
        Jwks {
            backend,
            cached: RwLock::new(None),
            fetching: Default::default(),
            unknown_kid_fetch: Default::default(),
            failed: Default::default(),
        }
    }

    fn cached(&self, kid: &str, max_age: Duration) -> Option<DecodingKey> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|c| c.at.elapsed() < max_age).and_then(|c| c.keys.get(kid).cloned())
    }

    fn fetched_within(&self, age: Duration) -> bool {
        self.cached.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|c| c.at.elapsed() < age)
    }

    /// The key for `kid`: from the cache while it is fresh; otherwise (or for a `kid` not seen
    /// before, at most every [`UNKNOWN_KID_REFETCH_EVERY`]) from the Backend API. No lock is held
    /// across the fetch except the one that makes concurrent fetches one.
    async fn key(&self, kid: &str) -> Result<DecodingKey, VerifyError> {
        if let Some(key) = self.cached(kid, JWKS_TTL) {
            return Ok(key);
        }
        let _turn = self.fetching.lock().await;
        if let Some(key) = self.cached(kid, JWKS_TTL) {
            return Ok(key);
        }
        if self.fetched_within(JWKS_TTL) {
            // Fresh keys without this `kid`: the keys may have rotated; look again, rarely.
            let mut last = self.unknown_kid_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH_EVERY) {
                return Err(Rejection::UnknownKid.into());
            }
            *last = Some(Instant::now());
        }
        if let Some((_, why)) =
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(at, _)| at.elapsed() < AFTER_A_FAILED_FETCH)
        {
            return self.cached(kid, Duration::MAX).ok_or_else(|| VerifyError::KeysUnavailable(why.clone()));
        }
        match self.backend.jwks().await {
            Ok(jwks) => {
                let keys = jwks
                    .keys
                    .iter()
                    .filter(|k| k.kty == "RSA")
                    .filter_map(|k| Some((k.kid.clone()?, DecodingKey::from_rsa_components(&k.n, &k.e).ok()?)))
                    .collect();
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(FetchedKeys { at: Instant::now(), keys });
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.to_string()));
                // Keys that expired but were not replaced still verify while the Backend API is down.
                return match self.cached(kid, Duration::MAX) {
                    Some(key) => {
                        tracing::warn!(error = %e, "the Clerk JWKS could not be refreshed; using the keys fetched before");
                        Ok(key)
                    }
                    None => Err(VerifyError::KeysUnavailable(e.to_string())),
                };
            }
        }
        self.cached(kid, JWKS_TTL).ok_or(Rejection::UnknownKid.into())
    }
}

pub struct Verifier {
    pub keys: KeySource,
    /// `https://` + the Frontend API host.
    pub issuer: String,
    pub authorized_parties: Vec<String>,
    /// Tokens whose signature already verified, with their claims: a browser sends the same token
    /// for up to a minute, and the RSA check is most of a request's cost. The claims are checked
    /// again on every use (the token may have expired since).
    pub verified: VerifiedTokens,
}

/// At most this many verified tokens are remembered; when full, all are forgotten at once.
const VERIFIED_TOKENS_KEPT: usize = 10_000;

#[derive(Default)]
pub struct VerifiedTokens(std::sync::Mutex<HashMap<String, std::sync::Arc<Map<String, Value>>>>);

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<std::sync::Arc<Map<String, Value>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    fn keep(&self, token: &str, claims: std::sync::Arc<Map<String, Value>>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= VERIFIED_TOKENS_KEPT {
            kept.clear();
        }
        kept.insert(token.to_string(), claims);
    }
}

fn segment(part: &str) -> Result<Map<String, Value>, Rejection> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Rejection::Invalid("not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Invalid("not a JSON object"))
}

/// A numeric claim, if present; present but not a number is a failure, as in Clerk's SDK.
fn number(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(Rejection::Claims(name)),
    }
}

impl Verifier {
    /// Verify `token` at `now_ms` (unix milliseconds).
    pub async fn verify(&self, token: &str, now_ms: i64) -> Result<SessionClaims, VerifyError> {
        if let Some(claims) = self.verified.get(token) {
            return Ok(self.check_claims(&claims, now_ms)?);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, _, _] = parts[..] else { return Err(Rejection::Invalid("not three parts").into()) };
        let header = segment(header)?;
        let algorithm = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Algorithm::RS256,
            Some("RS384") => Algorithm::RS384,
            Some("RS512") => Algorithm::RS512,
            _ => return Err(Rejection::Algorithm.into()),
        };
        if header.get("typ").is_some_and(|t| t != "JWT") {
            return Err(Rejection::Invalid("typ is not JWT").into());
        }
        if header.get("cat").is_some_and(|c| !SESSION_CATEGORIES.iter().any(|s| c == s)) {
            return Err(Rejection::Category.into());
        }
        let key = match &self.keys {
            KeySource::Pem(key) => key.clone(),
            KeySource::Jwks(jwks) => {
                let kid = header.get("kid").and_then(Value::as_str).ok_or(Rejection::UnknownKid)?;
                jwks.key(kid).await?
            }
        };
        // The signature first: no claim is looked at before it holds. Claims are Clerk's to check.
        let mut signature_only = Validation::new(algorithm);
        signature_only.required_spec_claims.clear();
        signature_only.validate_exp = false;
        signature_only.validate_nbf = false;
        signature_only.validate_aud = false;
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &signature_only) {
            Ok(data) => std::sync::Arc::new(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => return Err(Rejection::Signature.into()),
            Err(_) => return Err(Rejection::Claims("unreadable").into()),
        };
        let checked = self.check_claims(&claims, now_ms)?;
        self.verified.keep(token, claims);
        Ok(checked)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now_ms: i64) -> Result<SessionClaims, Rejection> {
        let user_id = claims.get("sub").and_then(Value::as_str).ok_or(Rejection::Claims("sub"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Rejection::Issuer);
        }
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if self.authorized_parties.iter().any(|p| p == azp) => {}
            _ => return Err(Rejection::AuthorizedParty),
        }
        let at = |seconds: f64| (seconds * 1000.0) as i64;
        let exp = number(claims, "exp")?.ok_or(Rejection::Claims("exp"))?;
        if at(exp) <= now_ms - CLOCK_SKEW_MS {
            return Err(Rejection::Expired);
        }
        if number(claims, "nbf")?.is_some_and(|nbf| at(nbf) > now_ms + CLOCK_SKEW_MS) {
            return Err(Rejection::NotActiveYet);
        }
        let iat = number(claims, "iat")?;
        if iat.is_some_and(|iat| at(iat) > now_ms + CLOCK_SKEW_MS) {
            return Err(Rejection::IssuedInTheFuture);
        }
        if claims.get("sts").and_then(Value::as_str) == Some("pending") {
            return Err(Rejection::Pending);
        }
        Ok(SessionClaims {
            user_id: user_id.to_string(),
            session_id: claims.get("sid").and_then(Value::as_str).map(str::to_string),
            issued_at: iat.map(|iat| iat as i64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const INSTANCE_KEY: &str = include_str!("../../../tests/fixtures/clerk-instance.key.pem");
    const INSTANCE_PUBLIC_KEY: &str = include_str!("../../../tests/fixtures/clerk-instance.pub.pem");
    const OTHER_KEY: &str = include_str!("../../../tests/fixtures/clerk-other.key.pem");
    const ISSUER: &str = "https://example-app-12.clerk.accounts.dev";
    const APP: &str = "http://localhost:3000";
    const NOW: i64 = 1_730_409_958;

    fn verifier() -> Verifier {
        Verifier {
            keys: KeySource::Pem(DecodingKey::from_rsa_pem(INSTANCE_PUBLIC_KEY.as_bytes()).unwrap()),
            issuer: ISSUER.into(),
            authorized_parties: vec![APP.into(), "https://app.example.com".into()],
            verified: Default::default(),
        }
    }

    fn claims() -> Value {
        json!({"sub": "user_2d3v6qUerRVCQi42MBRn8RBBC64", "sid": "sess_1", "iss": ISSUER, "azp": APP,
               "iat": NOW, "nbf": NOW - 10, "exp": NOW + 60, "v": 2, "sts": "active"})
    }

    fn header(alg: Algorithm) -> Header {
        let mut header = Header::new(alg);
        header.kid = Some("ins_test".into());
        header.extras.insert("cat", "cl_B7d4PD111AAA");
        header
    }

    fn sign(header: &Header, claims: &Value, key: &str) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap()).unwrap()
    }

    fn token_with(claims: Value) -> String {
        sign(&header(Algorithm::RS256), &claims, INSTANCE_KEY)
    }

    fn changed(change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut all = claims();
        change(all.as_object_mut().unwrap());
        token_with(all)
    }

    async fn check(token: &str) -> Result<SessionClaims, Rejection> {
        match verifier().verify(token, NOW * 1000).await {
            Ok(claims) => Ok(claims),
            Err(VerifyError::Rejected(reason)) => Err(reason),
            Err(e) => panic!("{e}"),
        }
    }

    fn b64(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[tokio::test]
    async fn a_valid_session_token_is_accepted() {
        let verified = check(&token_with(claims())).await.unwrap();
        assert_eq!(verified.user_id, "user_2d3v6qUerRVCQi42MBRn8RBBC64");
        assert_eq!((verified.session_id.as_deref(), verified.issued_at), (Some("sess_1"), Some(NOW)));
        for alg in [Algorithm::RS384, Algorithm::RS512] {
            assert!(check(&sign(&header(alg), &claims(), INSTANCE_KEY)).await.is_ok(), "{alg:?}");
        }
        let mut no_category = header(Algorithm::RS256);
        no_category.extras = Default::default();
        assert!(check(&sign(&no_category, &claims(), INSTANCE_KEY)).await.is_ok(), "tokens from before `cat`");
        let mut ignore_tag = header(Algorithm::RS256);
        ignore_tag.extras.insert("cat", "cl_I7d4PD111III");
        assert!(check(&sign(&ignore_tag, &claims(), INSTANCE_KEY)).await.is_ok());
        assert!(check(&changed(|c| _ = c.insert("exp".into(), json!(NOW - 4)))).await.is_ok(), "inside the 5 s skew");
        assert!(check(&changed(|c| _ = c.remove("iat"))).await.is_ok(), "iat is optional");
    }

    /// A token verified once is not checked with RSA again, but its time is checked on every use.
    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let verifier = verifier();
        let token = token_with(claims());
        assert!(verifier.verify(&token, NOW * 1000).await.is_ok());
        assert!(verifier.verified.get(&token).is_some());
        let later = (NOW + 66) * 1000;
        assert!(matches!(verifier.verify(&token, later).await, Err(VerifyError::Rejected(Rejection::Expired))));
    }

    #[tokio::test]
    async fn each_way_a_token_can_be_wrong_is_refused_for_its_reason() {
        let header_json = json!({"alg": "RS256", "typ": "JWT", "kid": "ins_test"});
        let payload = b64(&claims());
        let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
        let hs256 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(INSTANCE_PUBLIC_KEY.as_bytes()))
                .unwrap();
        let genuine = token_with(claims());
        let [head, _, signature]: [&str; 3] = genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
        let mut other_user = claims();
        other_user["sub"] = json!("user_someone_else");
        let tampered = format!("{head}.{}.{signature}", b64(&other_user));
        let mut typed = header(Algorithm::RS256);
        typed.typ = Some("at+jwt".into());
        let category = |cat: &str| {
            let mut h = header(Algorithm::RS256);
            h.extras.insert("cat", cat.to_string());
            sign(&h, &claims(), INSTANCE_KEY)
        };
        let cases: Vec<(&str, String, Rejection)> = vec![
            ("alg none", none, Rejection::Algorithm),
            ("HS256 with the public key as secret", hs256, Rejection::Algorithm),
            ("signed by another key", sign(&header(Algorithm::RS256), &claims(), OTHER_KEY), Rejection::Signature),
            ("payload tampered", tampered, Rejection::Signature),
            ("typ at+jwt", sign(&typed, &claims(), INSTANCE_KEY), Rejection::Invalid("typ is not JWT")),
            ("JWT template", category("cl_B7d4PD222AAA"), Rejection::Category),
            ("M2M", category("cl_B7d4PD333AAA"), Rejection::Category),
            ("expired", changed(|c| _ = c.insert("exp".into(), json!(NOW - 6))), Rejection::Expired),
            ("nbf in the future", changed(|c| _ = c.insert("nbf".into(), json!(NOW + 10))), Rejection::NotActiveYet),
            ("iat in the future", changed(|c| _ = c.insert("iat".into(), json!(NOW + 10))), Rejection::IssuedInTheFuture),
            (
                "another instance",
                changed(|c| _ = c.insert("iss".into(), json!("https://other-app-1.clerk.accounts.dev"))),
                Rejection::Issuer,
            ),
            ("no azp", changed(|c| _ = c.remove("azp")), Rejection::AuthorizedParty),
            ("azp not allowed", changed(|c| _ = c.insert("azp".into(), json!("https://evil.example"))), Rejection::AuthorizedParty),
            ("no sub", changed(|c| _ = c.remove("sub")), Rejection::Claims("sub")),
            ("exp a string", changed(|c| _ = c.insert("exp".into(), json!("soon"))), Rejection::Claims("exp")),
            ("no exp", changed(|c| _ = c.remove("exp")), Rejection::Claims("exp")),
            ("pending session", changed(|c| _ = c.insert("sts".into(), json!("pending"))), Rejection::Pending),
            ("two parts", format!("{}.{payload}", b64(&header_json)), Rejection::Invalid("not three parts")),
            ("garbage", "not.a.token".into(), Rejection::Invalid("not base64url")),
        ];
        for (case, token, reason) in cases {
            assert_eq!(check(&token).await.unwrap_err(), reason, "{case}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives as a token, verification answers (no panic) and nothing unsigned passes.
        #[test]
        fn arbitrary_tokens_are_refused(text in "[A-Za-z0-9_.=-]{0,300}") {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            proptest::prop_assert!(runtime.block_on(check(&text)).is_err());
        }
    }
}
