//! Clerk's tokens, read and verified exactly as `@clerk/backend` does (`decodeJwt`, `verifyToken`).
//!
//! Decoding (`decode`): three dot-separated parts, each base64url with or without `=` padding,
//! the header and payload JSON. Verifying, in Clerk's order: an M2M category is refused; the key
//! (`kid` in the JWKS, or the PEM key, which Clerk imports as RS256); the header's `typ` (absent
//! or `JWT`) and `alg` (RS256/384/512); the signature over the parts *as sent*, by a key whose
//! JWK allows it (its `alg`, when present, must be the token's; `use` must be `sig`; `key_ops`
//! must include `verify`, as WebCrypto's import insists); then `sub`, `azp`, and `exp`/`nbf`/`iat`
//! with Clerk's 5 s skew and JavaScript's date arithmetic. `iss` is not checked (Clerk does not:
//! the instance's own keys already name it). jsonwebtoken computes the RSA signature; the rules
//! around it are Clerk's, so they are here rather than in its `Validation`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::Clock;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::backend::{BackendApi, Jwk};
use super::js;

/// Clerk's `DEFAULT_CLOCK_SKEW_IN_MS`.
pub(crate) const CLOCK_SKEW_MS: f64 = 5_000.0;
/// How long fetched keys are trusted, and how often an unknown `kid` may trigger a refetch.
const JWKS_TTL: Duration = Duration::from_secs(300);
const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// After a failed fetch, requests fail at once for this long instead of each trying again (and
/// queueing behind one another) while the Backend API is down.
const AFTER_A_FAILED_FETCH: Duration = Duration::from_secs(1);

/// Token categories (the header's `cat`): a session token, and the "ignore" tag some instances
/// stamp on every token. Any other (JWT templates `cl_B7d4PD222AAA`, M2M) is not a session token.
const SESSION_CATEGORY: &str = "cl_B7d4PD111AAA";
const IGNORE_CATEGORY: &str = "cl_I7d4PD111III";
const M2M_CATEGORY: &str = "cl_B7d4PD333AAA";
/// OAuth access tokens' `typ` (RFC 9068), which Clerk refuses where a session token is expected.
const OAUTH_TYPES: [&str; 2] = ["at+jwt", "application/at+jwt"];

/// Why a token was refused: Clerk's own reason names, so logs read like Clerk's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("token-invalid: {0}")]
    Invalid(&'static str),
    #[error("token-invalid-algorithm")]
    Algorithm,
    #[error("jwk-kid-mismatch")]
    UnknownKid,
    #[error("token-invalid-signature")]
    Signature,
    #[error("token-verification-failed: {0}")]
    Claims(&'static str),
    #[error("token-invalid-authorized-parties")]
    AuthorizedParty,
    #[error("token-expired")]
    Expired,
    #[error("token-not-active-yet")]
    NotActiveYet,
    #[error("token-iat-in-the-future")]
    IssuedInTheFuture,
}

impl Rejection {
    /// The three refusals a fresh token from Clerk would cure: Clerk answers them with a
    /// handshake rather than signing the browser out.
    pub(crate) fn is_about_time(&self) -> bool {
        matches!(self, Rejection::Expired | Rejection::NotActiveYet | Rejection::IssuedInTheFuture)
    }
}

/// A token split and decoded as Clerk's `decodeJwt` does, nothing verified yet.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub(crate) header: Value,
    pub(crate) payload: Value,
    signature: Vec<u8>,
    /// The length of `header.payload` as sent: what the signature covers.
    signed_len: usize,
    /// Its signature verified (it came from `Verifier::verified`): the claims are all left to check.
    verified: bool,
}

/// base64url as Clerk's decoder (`rfc4648`, loose) reads it: any `=` padding is dropped; leftover
/// bits must be zero.
fn base64url(part: &str) -> Result<Vec<u8>, Rejection> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|_| Rejection::Invalid("not base64url"))
}

/// A header or payload: `TextDecoder` (lossy, a leading BOM dropped), then `JSON.parse`.
fn json_part(part: &str) -> Result<Value, Rejection> {
    let bytes = base64url(part)?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(&bytes),
    };
    serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text)).map_err(|_| Rejection::Invalid("not JSON"))
}

pub(crate) fn decode(token: &str) -> Result<Decoded, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Rejection::Invalid("not three parts"));
    };
    Ok(Decoded {
        header: json_part(header)?,
        payload: json_part(payload)?,
        signature: base64url(signature)?,
        signed_len: header.len() + 1 + payload.len(),
        verified: false,
    })
}

impl Decoded {
    /// The header names a category other than a session token's (`hasNonSessionJwtCategory`).
    pub(crate) fn has_other_category(&self) -> bool {
        self.header.get("cat").is_some_and(|cat| cat != SESSION_CATEGORY && cat != IGNORE_CATEGORY)
    }
}

/// Clerk's `isMachineJwt` of `token` (decoded as `decoded`): strictly `[A-Za-z0-9_-]` parts (no
/// padding), and an OAuth `typ` or an M2M subject (`mch_…`).
pub(crate) fn is_machine_token(token: &str, decoded: &Decoded) -> bool {
    let oauth = decoded.header.get("typ").and_then(Value::as_str).is_some_and(|typ| OAUTH_TYPES.contains(&typ));
    let machine = oauth || decoded.payload.get("sub").and_then(Value::as_str).is_some_and(|sub| sub.starts_with("mch_"));
    machine && token.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// A verified session token's facts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionClaims {
    pub(crate) user_id: String,
    pub(crate) session_id: Option<String>,
    /// The session has a task to finish (`sts: pending`): Clerk's `auth()` calls it signed out.
    pub(crate) pending: bool,
    /// The active organization, as `toAuth()` reports it (`orgId`, `orgRole`, `orgSlug`).
    pub(crate) org: Option<OrgClaims>,
}

/// The active organization's claims, read as `@clerk/shared`'s `jwtPayloadParser` reads them:
/// a token whose `v` is the number 2 carries them in `o` (`id`, `slg`, and `rol` without its
/// `org:` prefix); any other token in `org_id`, `org_slug` and `org_role`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrgClaims {
    pub(crate) id: String,
    /// With its `org:` prefix (`org:admin`), as `toAuth()` gives it.
    pub(crate) role: Option<String>,
    pub(crate) slug: Option<String>,
}

impl OrgClaims {
    fn read(claims: &serde_json::Map<String, Value>) -> Option<OrgClaims> {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
        if claims.get("v").and_then(Value::as_f64) == Some(2.0) {
            // JavaScript's `if (claims.o)`, then `claims.o?.id`: only an object has fields.
            let o = claims.get("o")?.as_object()?;
            let role = o.get("rol").and_then(Value::as_str).filter(|r| !r.is_empty()).map(|r| format!("org:{r}"));
            Some(OrgClaims { id: text(o.get("id"))?, role, slug: text(o.get("slg")) })
        } else {
            Some(OrgClaims { id: text(claims.get("org_id"))?, role: text(claims.get("org_role")), slug: text(claims.get("org_slug")) })
        }
    }
}

/// The keys can be unknown for a while (the Backend API is down): the caller answers 503.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("jwk-remote-failed-to-load: {0}")]
    KeysUnavailable(String),
}

/// A public key and what its JWK allows it for.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    key: DecodingKey,
    /// The JWK's `alg`, which WebCrypto holds the token's algorithm to (`None`: any).
    alg: Option<String>,
    /// `use` is absent or `sig`, and `key_ops` absent or including `verify`.
    for_verifying: bool,
}

impl VerifyingKey {
    /// `CLERK_JWT_KEY`: Clerk turns the PEM into an RS256 JWK.
    pub(crate) fn from_pem(pem: &str) -> anyhow::Result<VerifyingKey> {
        Ok(VerifyingKey { key: DecodingKey::from_rsa_pem(pem.as_bytes())?, alg: Some("RS256".into()), for_verifying: true })
    }

    fn from_jwk(jwk: &Jwk) -> Option<VerifyingKey> {
        if jwk.kty != "RSA" {
            return None;
        }
        // WebIDL turns these members into strings before WebCrypto compares them.
        let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| js::Operand::of(Some(v)).text());
        let use_allows = jwk.use_.as_ref().is_none_or(|u| text(u) == "sig");
        let ops_allow = match &jwk.key_ops {
            None => true,
            Some(Value::Array(ops)) => ops.iter().any(|op| text(op) == "verify"),
            Some(_) => false,
        };
        Some(VerifyingKey {
            key: DecodingKey::from_rsa_components(&jwk.n, &jwk.e).ok()?,
            alg: jwk.alg.as_ref().map(text),
            for_verifying: use_allows && ops_allow,
        })
    }
}

impl VerifyingKey {
    /// `verifyJwt`'s header checks (`typ` absent or `JWT`; `alg` RS256/384/512), then the
    /// signature, by this key if its JWK allows the algorithm. No claim is looked at before it holds.
    pub(crate) fn check_signature(&self, token: &str, decoded: &Decoded) -> Result<(), Rejection> {
        if decoded.header.get("typ").is_some_and(|t| t != "JWT") {
            return Err(Rejection::Invalid("typ is not JWT"));
        }
        let (algorithm, name) = match decoded.header.get("alg").and_then(Value::as_str) {
            Some(name @ "RS256") => (Algorithm::RS256, name),
            Some(name @ "RS384") => (Algorithm::RS384, name),
            Some(name @ "RS512") => (Algorithm::RS512, name),
            _ => return Err(Rejection::Algorithm),
        };
        if !self.for_verifying || self.alg.as_deref().is_some_and(|alg| alg != name) {
            return Err(Rejection::Claims("the key may not verify this algorithm"));
        }
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&decoded.signature);
        let signed = token.get(..decoded.signed_len).unwrap_or_default();
        match jsonwebtoken::crypto::verify(&signature, signed.as_bytes(), &self.key, algorithm) {
            Ok(true) => Ok(()),
            _ => Err(Rejection::Signature),
        }
    }
}

pub(crate) enum KeySource {
    /// `CLERK_JWT_KEY`: one key, and (as in Clerk's SDK) no `kid` check.
    Pem(VerifyingKey),
    /// `{CLERK_API_URL}/v1/jwks`, cached for [`JWKS_TTL`].
    Jwks(Jwks),
}

pub(crate) struct Jwks {
    backend: Arc<BackendApi>,
    cached: RwLock<Option<FetchedKeys>>,
    /// One fetch at a time; a waiter then finds the keys the fetch brought.
    fetching: tokio::sync::Mutex<()>,
    /// When a `kid` missing from fresh keys last caused a fetch.
    unknown_kid_fetch: std::sync::Mutex<Option<Instant>>,
    /// When a fetch last failed, and why.
    failed: std::sync::Mutex<Option<(Instant, String)>>,
    clock: Clock,
}

struct FetchedKeys {
    at: Instant,
    keys: HashMap<String, VerifyingKey>,
}

impl Jwks {
    pub(crate) fn new(backend: Arc<BackendApi>, clock: Clock) -> Jwks {
        Jwks {
            clock,
            backend,
            cached: RwLock::new(None),
            fetching: Default::default(),
            unknown_kid_fetch: Default::default(),
            failed: Default::default(),
        }
    }

    fn cached(&self, kid: &str, max_age: Duration) -> Option<VerifyingKey> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|c| self.clock.now() - c.at < max_age).and_then(|c| c.keys.get(kid).cloned())
    }

    fn fetched_within(&self, age: Duration) -> bool {
        self.cached.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|c| self.clock.now() - c.at < age)
    }

    /// The key for `kid`: from the cache while it is fresh; otherwise (or for a `kid` not seen
    /// before, at most every [`UNKNOWN_KID_REFETCH_EVERY`]) from the Backend API. No lock is held
    /// across the fetch except the one that makes concurrent fetches one.
    pub(super) async fn key(&self, kid: &str) -> Result<VerifyingKey, VerifyError> {
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
            if last.is_some_and(|at| self.clock.now() - at < UNKNOWN_KID_REFETCH_EVERY) {
                return Err(Rejection::UnknownKid.into());
            }
            *last = Some(self.clock.now());
        }
        if let Some((_, why)) =
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(at, _)| self.clock.now() - *at < AFTER_A_FAILED_FETCH)
        {
            return self.cached(kid, Duration::MAX).ok_or_else(|| VerifyError::KeysUnavailable(why.clone()));
        }
        match self.backend.jwks().await {
            Ok(jwks) => {
                let keys = jwks.keys.iter().filter_map(|k| Some((k.kid.clone()?, VerifyingKey::from_jwk(k)?))).collect();
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(FetchedKeys { at: self.clock.now(), keys });
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.clock.now(), e.to_string()));
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

pub(crate) struct Verifier {
    pub(crate) keys: KeySource,
    pub(crate) authorized_parties: Vec<String>,
    /// Tokens whose signature already verified, decoded: a browser sends the same token for up to
    /// a minute, and the RSA check is most of a request's cost, decoding much of the rest (Clerk's
    /// rules read the tokens before anything is verified). The claims are checked again on every
    /// use (the token may have expired since). Only verified tokens are kept: anyone can send
    /// tokens that merely decode.
    pub(crate) verified: Remembered<Arc<Decoded>>,
}

/// At most this many tokens are remembered; when full, all are forgotten at once.
const TOKENS_KEPT: usize = 10_000;

/// What is known of recent tokens, by token.
pub(crate) struct Remembered<V>(std::sync::Mutex<HashMap<String, V>>);

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Remembered(Default::default())
    }
}

impl<V: Clone> Remembered<V> {
    fn get(&self, token: &str) -> Option<V> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    fn keep(&self, token: &str, value: V) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= TOKENS_KEPT {
            kept.clear();
        }
        kept.insert(token.to_string(), value);
    }
}

/// A time claim as Clerk checks it: absent is fine where `optional`; present, it must be a number.
fn time_claim(claims: &Map<String, Value>, name: &'static str, optional: bool) -> Result<Option<Option<f64>>, Rejection> {
    match claims.get(name) {
        None if optional => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_f64().and_then(js::date_ms))),
        _ => Err(Rejection::Claims(name)),
    }
}

impl Verifier {
    /// `token` decoded (`decode`), the remembered decoding when it verified lately.
    pub(crate) fn decode(&self, token: &str) -> Result<Arc<Decoded>, Rejection> {
        match self.verified.get(token) {
            Some(decoded) => Ok(decoded),
            None => Ok(Arc::new(decode(token)?)),
        }
    }

    /// Verify `token` at `now_ms` (unix milliseconds) allowing `skew_ms` either way.
    pub(crate) async fn verify(&self, token: &str, now_ms: f64, skew_ms: f64) -> Result<SessionClaims, VerifyError> {
        match self.verified.get(token) {
            Some(decoded) => Ok(self.check_claims(&decoded.payload, now_ms, skew_ms)?),
            None => self.verify_decoded(token, decode(token)?, now_ms, skew_ms).await,
        }
    }

    /// `verify`, for a token decoded already (by `Verifier::decode`: a remembered one needs no
    /// second look-up).
    pub(crate) async fn verify_known(
        &self,
        token: &str,
        decoded: &Decoded,
        now_ms: f64,
        skew_ms: f64,
    ) -> Result<SessionClaims, VerifyError> {
        match decoded.verified {
            true => Ok(self.check_claims(&decoded.payload, now_ms, skew_ms)?),
            false => self.verify_decoded(token, decoded.clone(), now_ms, skew_ms).await,
        }
    }

    async fn verify_decoded(&self, token: &str, mut decoded: Decoded, now_ms: f64, skew_ms: f64) -> Result<SessionClaims, VerifyError> {
        if decoded.header.get("cat").is_some_and(|cat| cat == M2M_CATEGORY) {
            return Err(Rejection::Invalid("an M2M token").into());
        }
        let key = match &self.keys {
            KeySource::Pem(key) => key.clone(),
            KeySource::Jwks(jwks) => {
                let kid = decoded.header.get("kid").and_then(Value::as_str).ok_or(Rejection::UnknownKid)?;
                jwks.key(kid).await?
            }
        };
        key.check_signature(token, &decoded)?;
        let checked = self.check_claims(&decoded.payload, now_ms, skew_ms)?;
        decoded.verified = true;
        self.verified.keep(token, Arc::new(decoded));
        Ok(checked)
    }

    fn check_claims(&self, payload: &Value, now_ms: f64, skew_ms: f64) -> Result<SessionClaims, Rejection> {
        let Value::Object(claims) = payload else { return Err(Rejection::Claims("sub")) };
        let user_id = claims.get("sub").and_then(Value::as_str).ok_or(Rejection::Claims("sub"))?;
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if !azp.is_empty() && self.authorized_parties.iter().any(|p| p == azp) => {}
            _ if self.authorized_parties.is_empty() => {}
            _ => return Err(Rejection::AuthorizedParty),
        }
        // An invalid date (`None`) passes every check, as in JavaScript, where it compares false.
        if time_claim(claims, "exp", false)?.flatten().is_some_and(|exp| exp <= now_ms - skew_ms) {
            return Err(Rejection::Expired);
        }
        if time_claim(claims, "nbf", true)?.flatten().is_some_and(|nbf| nbf > now_ms + skew_ms) {
            return Err(Rejection::NotActiveYet);
        }
        if time_claim(claims, "iat", true)?.flatten().is_some_and(|iat| iat > now_ms + skew_ms) {
            return Err(Rejection::IssuedInTheFuture);
        }
        Ok(SessionClaims {
            user_id: user_id.to_string(),
            session_id: claims.get("sid").and_then(Value::as_str).map(str::to_string),
            pending: claims.get("sts").is_some_and(|s| s == "pending"),
            org: OrgClaims::read(claims),
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
    const NOW_MS: f64 = NOW as f64 * 1000.0;

    fn verifier_with(key: VerifyingKey) -> Verifier {
        Verifier {
            keys: KeySource::Pem(key),
            authorized_parties: vec![APP.into(), "https://app.example.com".into()],
            verified: Default::default(),
        }
    }

    fn verifier() -> Verifier {
        verifier_with(VerifyingKey { alg: None, ..VerifyingKey::from_pem(INSTANCE_PUBLIC_KEY).unwrap() })
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

    async fn check_with(verifier: &Verifier, token: &str) -> Result<SessionClaims, Rejection> {
        match verifier.verify(token, NOW_MS, CLOCK_SKEW_MS).await {
            Ok(claims) => Ok(claims),
            Err(VerifyError::Rejected(reason)) => Err(reason),
            Err(e) => panic!("{e}"),
        }
    }

    async fn check(token: &str) -> Result<SessionClaims, Rejection> {
        check_with(&verifier(), token).await
    }

    fn b64(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A token whose header segment carries `=` padding, signed over exactly what is sent.
    fn padded_header_token() -> String {
        let mut header_json = json!({"alg": "RS256", "typ": "JWT", "kid": "ins_test", "cat": "cl_B7d4PD111AAA"}).to_string();
        while header_json.len().is_multiple_of(3) {
            header_json.push(' ');
        }
        let header = base64::engine::general_purpose::URL_SAFE.encode(&header_json);
        assert!(header.ends_with('='));
        let signed = format!("{header}.{}", b64(&claims()));
        let key = EncodingKey::from_rsa_pem(INSTANCE_KEY.as_bytes()).unwrap();
        format!("{signed}.{}", jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::RS256).unwrap())
    }

    #[tokio::test]
    async fn a_valid_session_token_is_accepted() {
        let verified = check(&token_with(claims())).await.unwrap();
        assert_eq!(verified.user_id, "user_2d3v6qUerRVCQi42MBRn8RBBC64");
        assert_eq!((verified.session_id.as_deref(), verified.pending), (Some("sess_1"), false));
        for alg in [Algorithm::RS384, Algorithm::RS512] {
            assert!(check(&sign(&header(alg), &claims(), INSTANCE_KEY)).await.is_ok(), "{alg:?}");
        }
        let mut no_category = header(Algorithm::RS256);
        no_category.extras = Default::default();
        assert!(check(&sign(&no_category, &claims(), INSTANCE_KEY)).await.is_ok(), "tokens from before `cat`");
        let mut template = header(Algorithm::RS256);
        template.extras.insert("cat", "cl_B7d4PD222AAA");
        assert!(check(&sign(&template, &claims(), INSTANCE_KEY)).await.is_ok(), "the request's rules refuse templates, not verifyToken");
        assert!(check(&changed(|c| _ = c.insert("exp".into(), json!(NOW - 4)))).await.is_ok(), "inside the 5 s skew");
        assert!(check(&changed(|c| _ = c.remove("iat"))).await.is_ok(), "iat is optional");
        assert!(
            check(&changed(|c| _ = c.insert("iss".into(), json!("https://elsewhere.example")))).await.is_ok(),
            "iss is not Clerk's check"
        );
        assert!(
            check(&changed(|c| _ = c.insert("exp".into(), json!(-1e300)))).await.is_ok(),
            "an invalid date compares false in JavaScript"
        );
        assert!(check(&padded_header_token()).await.is_ok(), "padding, as Clerk's loose decoder reads it");
        assert!(check(&changed(|c| _ = c.insert("sts".into(), json!("pending")))).await.unwrap().pending);
    }

    /// A token verified once is not checked with RSA again, but its time is checked on every use.
    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let verifier = verifier();
        let token = token_with(claims());
        assert!(verifier.verify(&token, NOW_MS, CLOCK_SKEW_MS).await.is_ok());
        assert!(verifier.verified.get(&token).is_some());
        let later = (NOW + 66) as f64 * 1000.0;
        assert!(matches!(verifier.verify(&token, later, CLOCK_SKEW_MS).await, Err(VerifyError::Rejected(Rejection::Expired))));
    }

    /// The JWK's `alg`, `use` and `key_ops` bind the key as WebCrypto's import does; a PEM key is
    /// RS256 only, as Clerk imports it.
    #[tokio::test]
    async fn the_key_decides_which_algorithms_it_verifies() {
        let rs512 = sign(&header(Algorithm::RS512), &claims(), INSTANCE_KEY);
        let pem = verifier_with(VerifyingKey::from_pem(INSTANCE_PUBLIC_KEY).unwrap());
        assert!(check_with(&pem, &token_with(claims())).await.is_ok());
        assert!(matches!(check_with(&pem, &rs512).await, Err(Rejection::Claims(_))));
        let jwk = |extra: Value| {
            let mut jwk = serde_json::to_value(
                jsonwebtoken::jwk::Jwk::from_encoding_key(&EncodingKey::from_rsa_pem(INSTANCE_KEY.as_bytes()).unwrap(), Algorithm::RS256)
                    .unwrap(),
            )
            .unwrap();
            for field in ["alg", "use", "key_ops"] {
                jwk.as_object_mut().unwrap().remove(field);
            }
            jwk.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            VerifyingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap()
        };
        for (extra, rs512_passes) in [
            (json!({}), true),
            (json!({"alg": "RS256"}), false),
            (json!({"alg": "RS512"}), true),
            (json!({"use": "enc"}), false),
            (json!({"use": "sig", "key_ops": ["verify"]}), true),
            (json!({"key_ops": ["sign"]}), false),
            (json!({"key_ops": "verify"}), false),
        ] {
            assert_eq!(check_with(&verifier_with(jwk(extra.clone())), &rs512).await.is_ok(), rs512_passes, "{extra}");
        }
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
        let mut m2m = header(Algorithm::RS256);
        m2m.extras.insert("cat", "cl_B7d4PD333AAA");
        let cases: Vec<(&str, String, Rejection)> = vec![
            ("alg none", none, Rejection::Algorithm),
            ("HS256 with the public key as secret", hs256, Rejection::Algorithm),
            ("signed by another key", sign(&header(Algorithm::RS256), &claims(), OTHER_KEY), Rejection::Signature),
            ("payload tampered", tampered, Rejection::Signature),
            ("typ at+jwt", sign(&typed, &claims(), INSTANCE_KEY), Rejection::Invalid("typ is not JWT")),
            ("M2M", sign(&m2m, &claims(), INSTANCE_KEY), Rejection::Invalid("an M2M token")),
            ("expired", changed(|c| _ = c.insert("exp".into(), json!(NOW - 6))), Rejection::Expired),
            ("nbf in the future", changed(|c| _ = c.insert("nbf".into(), json!(NOW + 10))), Rejection::NotActiveYet),
            ("iat in the future", changed(|c| _ = c.insert("iat".into(), json!(NOW + 10))), Rejection::IssuedInTheFuture),
            ("no azp", changed(|c| _ = c.remove("azp")), Rejection::AuthorizedParty),
            ("azp not allowed", changed(|c| _ = c.insert("azp".into(), json!("https://evil.example"))), Rejection::AuthorizedParty),
            ("no sub", changed(|c| _ = c.remove("sub")), Rejection::Claims("sub")),
            ("exp a string", changed(|c| _ = c.insert("exp".into(), json!("soon"))), Rejection::Claims("exp")),
            ("no exp", changed(|c| _ = c.remove("exp")), Rejection::Claims("exp")),
            ("nbf null", changed(|c| _ = c.insert("nbf".into(), json!(null))), Rejection::Claims("nbf")),
            ("two parts", format!("{}.{payload}", b64(&header_json)), Rejection::Invalid("not three parts")),
            ("garbage", "not.a.token".into(), Rejection::Invalid("not base64url")),
            ("standard base64", genuine.replace('-', "+").replace('_', "/") + "+", Rejection::Invalid("not base64url")),
        ];
        for (case, token, reason) in cases {
            assert_eq!(check(&token).await.unwrap_err(), reason, "{case}");
        }
    }

    #[test]
    fn machine_tokens_and_categories_are_recognised_before_verification() {
        let mut typed = header(Algorithm::RS256);
        typed.typ = Some("at+jwt".into());
        let machine = |token: &str| is_machine_token(token, &decode(token).unwrap());
        assert!(machine(&sign(&typed, &claims(), INSTANCE_KEY)));
        assert!(machine(&changed(|c| _ = c.insert("sub".into(), json!("mch_2abc")))));
        assert!(!machine(&token_with(claims())));
        assert!(!machine(&padded_header_token()), "padding is not the machine format");
        let mut template = header(Algorithm::RS256);
        template.extras.insert("cat", "cl_B7d4PD222AAA");
        assert!(decode(&sign(&template, &claims(), INSTANCE_KEY)).unwrap().has_other_category());
        let mut ignore = header(Algorithm::RS256);
        ignore.extras.insert("cat", "cl_I7d4PD111III");
        assert!(!decode(&sign(&ignore, &claims(), INSTANCE_KEY)).unwrap().has_other_category());
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
