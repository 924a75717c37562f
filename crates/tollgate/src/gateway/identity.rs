//! Who the product is told the user is: plain headers (for a product only Tollgate can reach) and,
//! with `GATEWAY_SECRET`, an HS256 JWT of the same facts (`X-Tollgate-Assertion`) bound to one
//! request — its issuer, audience, method and path, a unique id, 30 seconds of life — for a product
//! that others can reach too. The plain headers of a credential are kept a second
//! ([`IdentityCache`]); the assertion is signed for each request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::http::header::{HeaderName, HeaderValue};
use serde::Serialize;

use tollgate_core::domain::{PlanFeatures, SubscriptionCache, User};

/// How long an assertion is good for: long enough for one request to reach the product.
pub(crate) const ASSERTION_SECONDS: i64 = 30;

pub(crate) const X_TOLLGATE_ASSERTION: HeaderName = HeaderName::from_static("x-tollgate-assertion");

/// What the product is told about the user.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Identity {
    pub(crate) sub: String,
    pub(crate) email: String,
    pub(crate) entitled: bool,
    pub(crate) status: String,
    pub(crate) price: Option<String>,
    /// What the user's plan unlocks (`PLAN_FEATURES`); none when not entitled.
    pub(crate) features: Vec<String>,
    /// The organization the user acts for, their role and its slug (`X-Tollgate-Org`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) org: Option<String>,
    #[serde(rename = "orgRole", skip_serializing_if = "Option::is_none")]
    pub(crate) org_role: Option<&'static str>,
    #[serde(rename = "orgSlug", skip_serializing_if = "Option::is_none")]
    pub(crate) org_slug: Option<String>,
    /// The API key the request came with (`X-Tollgate-Key-Id`), if it came with one.
    #[serde(rename = "keyId", skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<String>,
    /// The user it was made for (a tunnel's rechecks ask about them again).
    #[serde(skip)]
    pub(crate) user: User,
    /// What the API's quotas count against, when the plan has them.
    #[serde(skip)]
    pub(crate) quota: Option<QuotaSubject>,
    /// The Stripe customer (and its period) an entitled caller's metered usage is billed to (`METERED_PATHS`).
    #[serde(skip)]
    pub(crate) billed_to: Option<tollgate_core::billing::usage::BilledTo>,
}

impl Identity {
    pub(crate) fn of(user: &User, entry: &SubscriptionCache, entitled: bool, features: &PlanFeatures) -> Identity {
        Identity {
            sub: user.id.to_string(),
            email: user.email.as_str().to_string(),
            entitled,
            status: entry.status().as_str().to_string(),
            price: entry.subscription().and_then(|s| s.price_id.clone()),
            features: features.of(entry, entitled),
            org: user.org.as_ref().map(|o| o.id.to_string()),
            org_role: user.org.as_ref().map(|o| o.role.as_str()),
            org_slug: user.org.as_ref().map(|o| o.slug.clone()),
            key_id: None,
            user: user.clone(),
            quota: None,
            billed_to: None,
        }
    }

    pub(crate) fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The plain identity headers.
    pub(crate) fn headers(&self) -> Headers {
        let value = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
        Arc::new([
            (HeaderName::from_static("x-forwarded-user"), value(&self.sub)),
            (HeaderName::from_static("x-forwarded-email"), value(&self.email)),
            (HeaderName::from_static("x-tollgate-entitled"), HeaderValue::from_static(if self.entitled { "true" } else { "false" })),
            (HeaderName::from_static("x-tollgate-status"), value(&self.status)),
            (HeaderName::from_static("x-tollgate-price"), value(self.price.as_deref().unwrap_or(""))),
            (HeaderName::from_static("x-tollgate-features"), value(&self.features.join(","))),
            (HeaderName::from_static("x-tollgate-org"), value(self.org.as_deref().unwrap_or(""))),
            (HeaderName::from_static("x-tollgate-org-role"), value(self.org_role.unwrap_or(""))),
            (HeaderName::from_static("x-tollgate-org-slug"), value(self.org_slug.as_deref().unwrap_or(""))),
            (HeaderName::from_static("x-tollgate-key-id"), value(self.key_id.as_deref().unwrap_or(""))),
        ])
    }
}

/// Whose quotas an entitled caller's API requests count against, and the plan's limits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuotaSubject {
    /// The KV key of the payer's per-minute count: the payer (`user_…` or `org_…`), so that
    /// everyone acting for an organization shares its quotas. Made once per kept identity, not per request.
    pub(crate) minute_key: String,
    /// The KV key of the payer's count in the billing period, when the period is known.
    pub(crate) period_key: Option<String>,
    pub(crate) limits: tollgate_core::domain::Limits,
    /// The billing period the count is for (unix seconds): it starts afresh with each period.
    pub(crate) period: Option<(i64, i64)>,
}

/// The plain identity headers, shared (a kept answer is not copied).
pub(crate) type Headers = Arc<[(HeaderName, HeaderValue)]>;

/// Which request an assertion is for (DPoP's `htm` and `htu`).
pub(crate) struct Bound<'a> {
    pub(crate) method: &'a str,
    /// The canonical path the decision was made on.
    pub(crate) path: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    iss: &'a str,
    aud: &'a str,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    htm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    htu: Option<String>,
    iat: i64,
    exp: i64,
}

/// Signs assertions when `GATEWAY_SECRET` is set.
pub(crate) struct AssertionSigner {
    key: Option<jsonwebtoken::EncodingKey>,
    /// `iss`: `PUBLIC_URL` (its origin).
    issuer: String,
    /// `aud`: `GATEWAY_AUDIENCE`, else the upstream's origin, else `issuer`.
    audience: String,
}

impl AssertionSigner {
    pub(crate) fn new(secret: Option<&tollgate_core::config::Secret>, issuer: String, audience: String) -> AssertionSigner {
        AssertionSigner { key: secret.map(|s| jsonwebtoken::EncodingKey::from_secret(s.expose().as_bytes())), issuer, audience }
    }

    /// The assertion for one request of `identity`, when a secret is set.
    pub(crate) fn sign(&self, identity: &Identity, bound: Option<Bound<'_>>) -> Option<HeaderValue> {
        let key = self.key.as_ref()?;
        let now = tollgate_core::unix_now();
        let claims = Claims {
            identity,
            iss: &self.issuer,
            aud: &self.audience,
            jti: tollgate_core::random_token(22),
            htm: bound.as_ref().map(|b| b.method),
            htu: bound.as_ref().map(|b| format!("{}{}", self.issuer, b.path)),
            iat: now,
            exp: now + ASSERTION_SECONDS,
        };
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, key).ok()?;
        HeaderValue::from_str(&token).ok()
    }
}

/// How long an identity is reused for the same credentials. Gateway and forward-auth answers
/// may each cost several KV reads; within this moment the same browser (a page and its assets)
/// is answered from memory. A sign-out on this instance forgets everything at once; on another
/// instance it shows here within this time.
pub(crate) const IDENTITY_KEPT: Duration = Duration::from_secs(1);
/// At most this many identities are kept per thread; when full, all of the thread's are forgotten.
const IDENTITIES_KEPT: usize = 10_000;

/// Identities recently looked up, by a hash of the credentials they were looked up for.
///
/// Kept per thread (each serving thread looks an identity up once a second, and keeps its own
/// copy): a kept identity is then read, and its header values shared into requests, by one thread
/// only, with no lock and no reference count that both cores write on every request. Forgetting
/// is instance-wide and at once: [`IdentityCache::forget_all`] moves the instance's generation
/// on, and an identity kept in an earlier generation is not used on any thread.
pub(crate) struct IdentityCache {
    /// Which instance's identities a thread's entries are (tests run several in one process).
    instance: u64,
    generation: AtomicU64,
    clock: tollgate_core::Clock,
}

/// One thread's kept identities: by instance and credential digest, with their generation.
type KeptOnThread = HashMap<(u64, [u8; 32]), (u64, Kept)>;

thread_local! {
    static KEPT_HERE: RefCell<KeptOnThread> = RefCell::default();
}

#[derive(Clone)]
pub(crate) struct Kept {
    at: Instant,
    pub(crate) identity: Arc<Identity>,
    pub(crate) headers: Headers,
}

/// A credential's digest: what caches and tunnels remember it by.
pub(crate) fn digest(credential: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(credential.as_bytes()).into()
}

impl IdentityCache {
    pub(crate) fn new(clock: tollgate_core::Clock) -> IdentityCache {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        IdentityCache { instance: INSTANCES.fetch_add(1, Ordering::Relaxed), generation: AtomicU64::new(0), clock }
    }

    pub(crate) fn get(&self, credential: &str) -> Option<Kept> {
        let generation = self.generation.load(Ordering::Acquire);
        let kept = KEPT_HERE.with_borrow(|kept| {
            kept.get(&(self.instance, digest(credential))).filter(|(at, _)| *at == generation).map(|(_, kept)| kept.clone())
        })?;
        (self.clock.now() - kept.at < IDENTITY_KEPT).then_some(kept)
    }

    /// Keep `identity` for `credential` (a request without one is answered, not kept).
    pub(crate) fn keep(&self, credential: Option<&str>, identity: Arc<Identity>) -> Kept {
        let kept = Kept { at: self.clock.now(), headers: identity.headers(), identity };
        let Some(credential) = credential else { return kept };
        let generation = self.generation.load(Ordering::Acquire);
        KEPT_HERE.with_borrow_mut(|all| {
            if all.len() >= IDENTITIES_KEPT {
                all.clear();
            }
            all.insert((self.instance, digest(credential)), (generation, kept.clone()));
        });
        kept
    }

    /// Someone signed out (or every session of someone ended): keep nothing computed before, on
    /// any thread.
    pub(crate) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
