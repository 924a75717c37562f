//! Clerk as the auth provider (`AUTH_PROVIDER=clerk`): a request is signed in exactly when
//! `@clerk/backend` would say so. Tokens come from `Authorization: Bearer`, then the
//! `__session_<suffix>` cookie, then `__session`; cookie tokens also answer to `__client_uat`
//! (missing or 0: signed out; a token issued before it: stale). A token that is stale, expired or
//! missing while `__client_uat` says signed in asks for a refresh (pages bounce through
//! `/auth/refresh`, which lets Clerk's browser SDK renew it) rather than signing the user out.
//! The user's email comes from the Backend API once and is kept in the KV for a day (webhooks
//! refresh it at once).

pub mod backend;
pub mod svix;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use base64::Engine;

use self::backend::{BackendApi, UserLookup};
use self::token::{Jwks, KeySource, Rejection, SessionClaims, Verifier, VerifyError};
use super::{cookie, AuthError, AuthFuture, AuthProvider, Session};
use crate::config::ClerkSettings;
use crate::domain::{Email, User, UserId};
use crate::kv::{keys, SharedKv};

/// How long a user's email is kept without a word from Clerk.
const EMAIL_KEPT: Duration = Duration::from_secs(86_400);

pub struct ClerkAuth {
    pub publishable_key: String,
    /// The Frontend API host, where the browser SDK and the hosted components load from.
    pub frontend_api: String,
    verifier: Verifier,
    backend: Arc<BackendApi>,
    kv: SharedKv,
    cookie_suffix: String,
    pub webhook_secret: Option<svix::SigningSecret>,
}

/// The suffix of an instance's cookie names: SHA-1 of the publishable key, base64url, 8 characters.
pub fn cookie_suffix(publishable_key: &str) -> String {
    let digest = sha1_smol::Sha1::from(publishable_key).digest().bytes();
    base64::engine::general_purpose::URL_SAFE.encode(digest)[..8].to_string()
}

/// Where a token came from: a cookie token also answers to `__client_uat`.
enum Carrier {
    Header,
    Cookie,
}

impl ClerkAuth {
    /// `public_origin` is the default authorized party (`CLERK_AUTHORIZED_PARTIES` unset).
    pub fn new(settings: &ClerkSettings, public_origin: &str, kv: SharedKv) -> anyhow::Result<ClerkAuth> {
        let backend = Arc::new(BackendApi::new(&settings.api_url, settings.secret_key.clone()));
        let keys = match &settings.jwt_key {
            Some(pem) => KeySource::Pem(jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())?),
            None => KeySource::Jwks(Jwks::new(backend.clone())),
        };
        let verifier = Verifier {
            keys,
            issuer: format!("https://{}", settings.frontend_api),
            authorized_parties: settings.authorized_parties.clone().unwrap_or_else(|| vec![public_origin.to_string()]),
            verified: Default::default(),
        };
        let webhook_secret = match &settings.webhook_secret {
            Some(secret) => {
                Some(svix::SigningSecret::parse(secret.expose()).ok_or_else(|| anyhow::anyhow!("CLERK_WEBHOOK_SECRET is not base64"))?)
            }
            None => None,
        };
        Ok(ClerkAuth {
            publishable_key: settings.publishable_key.clone(),
            frontend_api: settings.frontend_api.clone(),
            verifier,
            backend,
            kv,
            cookie_suffix: cookie_suffix(&settings.publishable_key),
            webhook_secret,
        })
    }

    /// A suffixed cookie (this instance's) before the plain one.
    fn instance_cookie<'p>(&self, parts: &'p Parts, name: &str) -> Option<&'p str> {
        cookie(parts, &format!("{name}_{}", self.cookie_suffix)).or_else(|| cookie(parts, name)).filter(|v| !v.is_empty())
    }

    fn token<'p>(&self, parts: &'p Parts) -> Option<(&'p str, Carrier)> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match header.map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim()) {
            Some(token) if !token.is_empty() && !token.contains(' ') => Some((token, Carrier::Header)),
            _ => self.instance_cookie(parts, "__session").map(|t| (t, Carrier::Cookie)),
        }
    }

    /// `__client_uat`: when the browser's client last changed (unix seconds); 0 means signed out.
    fn client_uat(&self, parts: &Parts) -> i64 {
        self.instance_cookie(parts, "__client_uat").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// The verified session of a request, as `@clerk/backend`'s `authenticateRequest` decides it.
    pub async fn claims(&self, parts: &Parts) -> Result<Result<SessionClaims, Session>, AuthError> {
        let client_uat = self.client_uat(parts);
        let (token, carrier) = match self.token(parts) {
            Some(found) => found,
            None if client_uat > 0 => return Ok(Err(Session::NeedsRefresh)),
            None => return Ok(Err(Session::SignedOut)),
        };
        if matches!(carrier, Carrier::Cookie) && client_uat == 0 {
            return Ok(Err(Session::SignedOut)); // signed out, perhaps in another tab
        }
        match self.verifier.verify(token, crate::unix_now_ms()).await {
            Ok(claims) if matches!(carrier, Carrier::Cookie) && claims.issued_at.is_some_and(|iat| iat < client_uat) => {
                tracing::info!(reason = "session-token-iat-before-client-uat", "Clerk session token is stale");
                Ok(Err(Session::NeedsRefresh))
            }
            Ok(claims) => Ok(Ok(claims)),
            Err(VerifyError::Rejected(reason)) => {
                tracing::info!(reason = %reason, "Clerk session token refused");
                let renewable = matches!(reason, Rejection::Expired | Rejection::NotActiveYet | Rejection::IssuedInTheFuture);
                Ok(Err(if renewable && matches!(carrier, Carrier::Cookie) { Session::NeedsRefresh } else { Session::SignedOut }))
            }
            Err(e @ VerifyError::KeysUnavailable(_)) => Err(AuthError::Unavailable(e.to_string())),
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
    pub async fn refresh_email(&self, user_id: &UserId) -> Result<Option<Email>, AuthError> {
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

    /// Forget what Tollgate keeps about a user Clerk deleted.
    pub async fn forget(&self, user_id: &UserId) -> Result<(), AuthError> {
        Ok(self.kv.delete(&keys::clerk_email(user_id)).await?)
    }

    /// Sign-out: end the request's Clerk session with the Backend API (clerk-js would otherwise
    /// renew the cookie), and name the cookies the browser should drop.
    pub async fn sign_out(&self, parts: &Parts) -> Result<Vec<String>, AuthError> {
        if let Ok(Ok(claims)) = self.claims(parts).await {
            if let Some(session) = claims.session_id {
                self.backend.revoke_session(&session).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
            }
        }
        let suffix = &self.cookie_suffix;
        Ok(vec![
            "__session=; Path=/; Max-Age=0".into(),
            format!("__session_{suffix}=; Path=/; Max-Age=0"),
            "__client_uat=0; Path=/; Max-Age=31536000; SameSite=Lax".into(),
            format!("__client_uat_{suffix}=0; Path=/; Max-Age=31536000; SameSite=Lax"),
        ])
    }
}

impl AuthProvider for ClerkAuth {
    fn session<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let claims = match self.claims(parts).await? {
                Ok(claims) => claims,
                Err(session) => return Ok(session),
            };
            let Ok(id) = UserId::parse(&claims.user_id) else {
                tracing::info!(reason = "token-verification-failed: sub is not a user id", "Clerk session token refused");
                return Ok(Session::SignedOut);
            };
            let email = self.email_of(&id).await?;
            Ok(Session::SignedIn(User { id, email }))
        })
    }

    /// The token, where it came from, and `__client_uat` (all three decide the session).
    fn credential<'p>(&self, parts: &'p Parts) -> Option<std::borrow::Cow<'p, str>> {
        let (token, carrier) = self.token(parts)?;
        Some(format!("{token} {} {}", matches!(carrier, Carrier::Header), self.client_uat(parts)).into())
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
