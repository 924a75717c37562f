//! Clerk as the auth provider (`AUTH_PROVIDER=clerk`): a request is signed in exactly when
//! `@clerk/backend`'s `authenticateRequest` says so, and where it would answer with a handshake,
//! so does Tollgate. `request` reads a request as Clerk does; `token` verifies tokens as Clerk
//! does; `handshake` sends a page load to the Frontend API and takes the browser's cookies back;
//! `js` holds the JavaScript rules those decisions lean on. The crate's oracle suite
//! (`tests/api/clerk_oracle.rs`) runs `@clerk/backend` itself beside Tollgate on the same requests.
//!
//! Not reproduced, and said so in the README: satellite domains and multi-domain sync
//! (`__clerk_redirect_url`, `__clerk_synced`), organization sync, and the Backend API refresh of
//! an expired token from a `__refresh_` cookie (a handshake renews it instead).
//!
//! The user's email comes from the Backend API once and is kept in the KV for a day (webhooks
//! refresh it at once).

pub(crate) mod backend;
pub(crate) mod handshake;
pub(crate) mod js;
pub(crate) mod request;
pub(crate) mod svix;
pub(crate) mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine;

use self::backend::{BackendApi, UserLookup};
use self::handshake::{Resolution, ResolveError};
use self::js::Operand;
use self::request::{ClerkRequest, Instance};
use self::token::{is_machine_token, Jwks, KeySource, Rejection, SessionClaims, Verifier, VerifyError, VerifyingKey};
use super::{AuthError, AuthFuture, AuthProvider, Session};
use tollgate_core::config::ClerkSettings;
use tollgate_core::domain::{ActiveOrg, Email, OrgId, OrgRole, User, UserId};
use tollgate_core::kv::{keys, SharedKv};
use tollgate_core::orgs::Org;

/// How long a user's email is kept without a word from Clerk.
const EMAIL_KEPT: Duration = Duration::from_secs(86_400);

pub(crate) struct ClerkAuth {
    pub(crate) publishable_key: String,
    /// The Frontend API host, where the browser SDK and the hosted components load from.
    pub(crate) frontend_api: String,
    instance: Instance,
    verifier: Verifier,
    backend: Arc<BackendApi>,
    kv: SharedKv,
    pub(crate) webhook_secret: Option<svix::SigningSecret>,
}

/// The suffix of an instance's cookie names: SHA-1 of the publishable key, base64url, 8 characters.
pub(crate) fn cookie_suffix(publishable_key: &str) -> String {
    let digest = sha1_smol::Sha1::from(publishable_key).digest().bytes();
    base64::engine::general_purpose::URL_SAFE.encode(digest)[..8].to_string()
}

/// What Clerk's rules decide for a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    SignedIn(SessionClaims),
    SignedOut,
    /// A 307 with these headers: to the Frontend API's handshake, or back from one.
    Redirect(HeaderMap),
}

/// The decision a returning handshake made for its request (`http::clerk_handshake` resolves it
/// once, before any handler); `None` when it was ignored and the request's cookies decide.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedHandshake(pub(crate) Option<Verdict>);

/// The reason Clerk gives the Frontend API for a handshake after a token was refused for its time.
fn time_reason(reason: &Rejection) -> &'static str {
    match reason {
        // Tollgate never asks the Backend API to refresh (no `__refresh_` cookie is used).
        Rejection::Expired => "session-token-expired-refresh-non-eligible-no-refresh-cookie",
        Rejection::NotActiveYet => "session-token-nbf",
        _ => "session-token-iat-in-the-future",
    }
}

impl ClerkAuth {
    /// `public_origin` is the origin of every request's URL, and the default authorized party
    /// (`CLERK_AUTHORIZED_PARTIES` unset).
    pub(crate) fn new(
        settings: &ClerkSettings,
        public_origin: &str,
        kv: SharedKv,
        clock: tollgate_core::Clock,
    ) -> anyhow::Result<ClerkAuth> {
        let backend = Arc::new(BackendApi::new(&settings.api_url, settings.secret_key.clone()));
        let keys = match &settings.jwt_key {
            Some(pem) => KeySource::Pem(VerifyingKey::from_pem(pem)?),
            None => KeySource::Jwks(Jwks::new(backend.clone(), clock)),
        };
        let verifier = Verifier {
            keys,
            authorized_parties: settings.authorized_parties.clone().unwrap_or_else(|| vec![public_origin.to_string()]),
            verified: Default::default(),
        };
        let webhook_secret = match &settings.webhook_secret {
            Some(secret) => {
                Some(svix::SigningSecret::parse(secret.expose()).ok_or_else(|| anyhow::anyhow!("CLERK_WEBHOOK_SECRET is not base64"))?)
            }
            None => None,
        };
        let instance = Instance::new(
            cookie_suffix(&settings.publishable_key),
            settings.frontend_api.clone(),
            settings.publishable_key.starts_with("pk_test_"),
            public_origin.trim_end_matches('/').to_string(),
        );
        Ok(ClerkAuth {
            publishable_key: settings.publishable_key.clone(),
            frontend_api: settings.frontend_api.clone(),
            instance,
            verifier,
            backend,
            kv,
            webhook_secret,
        })
    }

    fn read<'p>(&self, parts: &'p Parts) -> (ClerkRequest<'p>, f64) {
        let now_ms = tollgate_core::unix_now_ms() as f64;
        (ClerkRequest::read(parts, &self.instance, |token| self.verifier.decode(token).ok(), now_ms), now_ms)
    }

    /// `authenticateRequest`, for a session token: the header's token if there is one, else the
    /// cookies', in Clerk's order of checks.
    pub(crate) async fn authenticate(&self, parts: &Parts) -> Result<Verdict, AuthError> {
        let (request, now_ms) = self.read(parts);
        if let Some(token) = request.token_in_header.as_deref() {
            let decoded = match self.verifier.decode(token) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    tracing::info!(%reason, "Clerk session token refused");
                    return Ok(Verdict::SignedOut);
                }
            };
            // Machine tokens and JWT templates are signed by the same key but are no sessions.
            if is_machine_token(token, &decoded) || decoded.has_other_category() {
                return Ok(Verdict::SignedOut);
            }
            return self.verified(&request, token, &decoded, now_ms, false).await;
        }
        if request.handshake_nonce.is_some() || request.handshake_token.is_some() {
            if let Some(ResolvedHandshake(Some(verdict))) = parts.extensions.get() {
                return Ok(verdict.clone());
            }
        }
        if self.instance.development && request.dev_browser_in_query {
            return Ok(self.handshake(&request, "dev-browser-sync"));
        }
        if self.instance.development && request.dev_browser_token.is_none() {
            return Ok(self.handshake(&request, "dev-browser-missing"));
        }
        let active_client = request.client_uat != 0.0;
        let Some(token) = request.session_token_in_cookie.as_deref() else {
            return Ok(match active_client {
                true => self.handshake(&request, "client-uat-but-no-session-token"),
                false => Verdict::SignedOut,
            });
        };
        if !active_client {
            return Ok(self.handshake(&request, "session-token-but-no-client-uat"));
        }
        let Some(decoded) = &request.session_in_cookie_decoded else { return Ok(Verdict::SignedOut) };
        if is_machine_token(token, decoded) || decoded.has_other_category() {
            return Ok(Verdict::SignedOut);
        }
        // Unverified, as in Clerk: a token older than the client's last change is stale.
        if Operand::of(decoded.payload.get("iat")).less_than(&Operand::Number(request.client_uat)) {
            return Ok(self.handshake(&request, "session-token-iat-before-client-uat"));
        }
        self.verified(&request, token, decoded, now_ms, true).await
    }

    async fn verified(
        &self,
        request: &ClerkRequest<'_>,
        token: &str,
        decoded: &token::Decoded,
        now_ms: f64,
        from_cookie: bool,
    ) -> Result<Verdict, AuthError> {
        match self.verifier.verify_known(token, decoded, now_ms, token::CLOCK_SKEW_MS).await {
            Ok(claims) => {
                // A navigation from another site may come from a satellite domain signed in
                // elsewhere: Clerk checks with the Frontend API once.
                let cross_site = from_cookie
                    && request.get
                    && request.sec_fetch_dest.as_deref() == Some("document")
                    && request.cross_origin_referrer(&self.instance)
                    && !request.known_clerk_referrer(&self.instance)
                    && request.redirect_count == 0.0;
                if cross_site {
                    return Ok(self.handshake(request, "primary-domain-cross-origin-sync"));
                }
                Ok(if claims.pending { Verdict::SignedOut } else { Verdict::SignedIn(claims) })
            }
            Err(VerifyError::Rejected(reason)) => {
                tracing::info!(%reason, "Clerk session token refused");
                Ok(if reason.is_about_time() { self.handshake(request, time_reason(&reason)) } else { Verdict::SignedOut })
            }
            Err(e @ VerifyError::KeysUnavailable(_)) => Err(AuthError::Unavailable(e.to_string())),
        }
    }

    /// `handleMaybeHandshakeStatus`: a page load goes to the Frontend API; anything else (and a
    /// fourth round trip) is signed out.
    fn handshake(&self, request: &ClerkRequest<'_>, reason: &str) -> Verdict {
        if !request.eligible_for_handshake() {
            return Verdict::SignedOut;
        }
        tracing::info!(reason, "Clerk handshake");
        handshake::redirect(request, &self.instance, reason).map_or(Verdict::SignedOut, Verdict::Redirect)
    }

    /// Whether a request may be coming back from a handshake (a cheap look before reading it).
    pub(crate) fn may_carry_handshake<B>(&self, request: &axum::http::Request<B>) -> bool {
        // Every request passes here: it must cost next to nothing.
        const NAME: &[u8] = b"__clerk_handshake";
        let in_query = request.uri().query().is_some_and(|q| memchr::memmem::find(q.as_bytes(), NAME).is_some());
        // A cookie's name starts a `;`-separated part (spaces aside): only those starts are looked at.
        let names_it = |line: &[u8]| {
            std::iter::once(0).chain(memchr::memchr_iter(b';', line).map(|at| at + 1)).any(|start| {
                let part = &line[start..];
                let name_at = part.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(part.len());
                part[name_at..].starts_with(NAME)
            })
        };
        in_query || request.headers().get_all(axum::http::header::COOKIE).iter().any(|v| names_it(v.as_bytes()))
    }

    /// Resolve a request's returning handshake (`None`: it carries none, or a bearer token that
    /// decides first).
    pub(crate) async fn resolve_handshake(&self, parts: &Parts) -> Result<Option<Resolution>, AuthError> {
        let (request, now_ms) = self.read(parts);
        if request.token_in_header.is_some() || (request.handshake_nonce.is_none() && request.handshake_token.is_none()) {
            return Ok(None);
        }
        match handshake::resolve(&request, &self.instance, &self.backend, &self.verifier, now_ms).await {
            Ok(resolution) => Ok(Some(resolution)),
            Err(refused @ ResolveError::Refused(_)) => Err(AuthError::Handshake(refused.to_string())),
            Err(ResolveError::Unavailable(why)) => Err(AuthError::Unavailable(why)),
        }
    }

    /// The user's email: from the KV, or else from the Backend API (then kept).
    async fn email_of(&self, user_id: &UserId) -> Result<Email, AuthError> {
        if let Some(email) = self.kv.get(&keys::clerk_email(user_id)).await?.and_then(|e| Email::parse(&e).ok()) {
            return Ok(email);
        }
        self.refresh_email(user_id).await?.ok_or(AuthError::NoEmail)
    }

    /// Read the user's primary email from the Backend API and keep it; `None` when the user has
    /// none (or Clerk no longer knows them).
    pub(crate) async fn refresh_email(&self, user_id: &UserId) -> Result<Option<Email>, AuthError> {
        let primary = match self.backend.user(user_id.as_str()).await.map_err(|e| AuthError::Unavailable(e.to_string()))? {
            UserLookup::Found { primary_email } => primary_email,
            UserLookup::Missing => None,
        };
        let Some(email) = primary.and_then(|e| Email::parse(&e).ok()) else {
            self.kv.delete(&keys::clerk_email(user_id)).await?;
            return Ok(None);
        };
        self.kv.set_expiring(&keys::clerk_email(user_id), email.as_str(), EMAIL_KEPT).await?;
        Ok(Some(email))
    }

    /// An organization as Clerk has it now: its record and members (a member whose identifier is
    /// not an email is kept under a placeholder address; seats count them all). `None` when Clerk
    /// no longer knows it.
    pub(crate) async fn organization(&self, org: &OrgId) -> Result<Option<(Org, Vec<(UserId, Email, OrgRole)>)>, AuthError> {
        let Some(found) = self.backend.organization_members(org.as_str()).await.map_err(|e| AuthError::Unavailable(e.to_string()))? else {
            return Ok(None);
        };
        let members = found
            .members
            .into_iter()
            .filter_map(|(user, identifier, role)| {
                let user = UserId::parse(&user).ok()?;
                let email = Email::parse(&identifier).or_else(|_| Email::parse(&format!("{user}@users.clerk.invalid"))).ok()?;
                Some((user, email, if role == "org:admin" { OrgRole::Admin } else { OrgRole::Member }))
            })
            .collect();
        let slug = if found.slug.is_empty() { org.to_string() } else { found.slug };
        Ok(Some((Org { id: org.clone(), name: found.name, slug, created_at_ms: tollgate_core::unix_now_ms() }, members)))
    }

    /// Forget what Tollgate keeps about a user Clerk deleted.
    pub(crate) async fn forget(&self, user_id: &UserId) -> Result<(), AuthError> {
        Ok(self.kv.delete(&keys::clerk_email(user_id)).await?)
    }

    /// Sign-out: end the request's Clerk session with the Backend API (clerk-js would otherwise
    /// renew the cookie), and name the cookies the browser should drop.
    pub(crate) async fn sign_out(&self, parts: &Parts) -> Result<Vec<String>, AuthError> {
        if let Ok(Verdict::SignedIn(claims)) = self.authenticate(parts).await {
            if let Some(session) = claims.session_id {
                self.backend.revoke_session(&session).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
            }
        }
        let suffix = &self.instance.cookie_suffix;
        Ok(vec![
            "__session=; Path=/; Max-Age=0".into(),
            format!("__session_{suffix}=; Path=/; Max-Age=0"),
            "__client_uat=0; Path=/; Max-Age=31536000; SameSite=Lax".into(),
            format!("__client_uat_{suffix}=0; Path=/; Max-Age=31536000; SameSite=Lax"),
        ])
    }
}

/// Tollgate's view of the token's organization: its id must be an organization id (`org_…`);
/// Clerk's `admin` is an admin here, and every other role (`member`, custom ones, none) a member
/// (Clerk has no owner role: its admins are the highest).
fn active_org(claims: &token::OrgClaims) -> Option<ActiveOrg> {
    let id = OrgId::parse(&claims.id).ok()?;
    let role = match claims.role.as_deref() {
        Some("org:admin") => OrgRole::Admin,
        _ => OrgRole::Member,
    };
    Some(ActiveOrg { id, role, slug: claims.slug.clone().unwrap_or_default() })
}

impl AuthProvider for ClerkAuth {
    fn session<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let claims = match self.authenticate(parts).await? {
                Verdict::SignedIn(claims) => claims,
                Verdict::SignedOut => return Ok(Session::SignedOut),
                Verdict::Redirect(headers) => return Ok(Session::Redirect(Box::new(headers))),
            };
            let Ok(id) = UserId::parse(&claims.user_id) else {
                tracing::info!(reason = "token-verification-failed: sub is not a user id", "Clerk session token refused");
                return Ok(Session::SignedOut);
            };
            let email = self.email_of(&id).await?;
            Ok(Session::SignedIn(User { id, email, org: claims.org.as_ref().and_then(active_org) }))
        })
    }

    fn credential<'p>(&self, parts: &'p Parts) -> Option<std::borrow::Cow<'p, str>> {
        self.read(parts).0.cache_key(&self.instance).map(std::borrow::Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    /// The vectors computed with Clerk's own algorithm (`getCookieSuffix`).
    #[test]
    fn cookie_suffixes() {
        assert_eq!(super::cookie_suffix("pk_test_ZXhhbXBsZS1hcHAtMTIuY2xlcmsuYWNjb3VudHMuZGV2JA"), "fiNgkcri");
        assert_eq!(super::cookie_suffix("pk_live_Y2xlcmsuZXhhbXBsZS5jb20k"), "naoXFJnI");
    }
}
