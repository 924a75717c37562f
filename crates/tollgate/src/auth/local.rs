//! Tollgate's built-in accounts: email + password (argon2id), server-side sessions in the KV.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use super::{cookie, AuthFuture, AuthProvider, User};
use crate::domain::{Email, UserId};
use crate::kv::{keys, KvError, SharedKv};

/// The session cookie's name; under https the `__Host-` prefix makes browsers insist that it is
/// Secure, for this host only, on every path (no subdomain can set or shadow it).
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate_session"
    } else {
        "tollgate_session"
    }
}
/// How long a browser keeps the session cookie; the server-side session decides (`SESSION_TTL`).
pub const SESSION_COOKIE_DAYS: i64 = 400;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    id: UserId,
    email: Email,
    password_hash: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    user_id: UserId,
    email: Email,
    /// Unix milliseconds; a session older than the user's last "sign out everywhere" is revoked.
    #[serde(default)]
    created_at_ms: i64,
    expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("An account with this email already exists. Sign in instead.")]
    EmailTaken,
    /// Deliberately vague: it does not say whether the email or the password was wrong.
    #[error("That email and password do not match an account.")]
    BadCredentials,
    /// Too many failed attempts for this account or address: wait this many seconds.
    #[error("Too many attempts. Try again in {0} seconds.")]
    Throttled(u64),
    /// Too many password hashes queued: shed rather than exhaust memory (each takes 19 MiB).
    #[error("Too many sign-ins at once. Try again in a moment.")]
    Busy,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Password hashes computed at once (argon2id with the default 19 MiB each), and how long a
/// request waits for a turn before it is shed with 503.
const HASHES_IN_FLIGHT: usize = 2;
const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

const COMMON_PASSWORDS: &[&str] = &[
    "password", "password1", "password123", "1234567890", "qwertyuiop", "iloveyou12", "letmein123", "welcome123", "abc1234567",
    "passw0rd12",
];

/// At least 10 characters (at most 128), not a well-known password, not the email, not one repeated character.
pub fn check_password(password: &str, email: &str) -> Result<(), AccountError> {
    let weak = |m: &str| Err(AccountError::WeakPassword(m.to_string()));
    let length = password.chars().count();
    if length < 10 {
        return weak("Use at least 10 characters for your password.");
    }
    if length > 128 {
        return weak("Use at most 128 characters for your password.");
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) || lower == email || email.split('@').next() == Some(lower.as_str()) {
        return weak("That password is too easy to guess. Choose another.");
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return weak("That password is too easy to guess. Mix more different characters.");
    }
    Ok(())
}

pub struct LocalAccounts {
    kv: SharedKv,
    throttle: super::throttle::Throttle,
    session_cookie: &'static str,
    /// A session ends this long after it was last used (sliding).
    session_ttl: std::time::Duration,
    hashing: std::sync::Arc<tokio::sync::Semaphore>,
    /// A real argon2id hash of a random password, checked when the account does not exist so the
    /// answer takes as long; made once, on first use (not at start-up: it is slow).
    decoy: tokio::sync::OnceCell<String>,
}

impl LocalAccounts {
    pub fn new(kv: SharedKv, secure_cookies: bool, session_ttl: std::time::Duration) -> LocalAccounts {
        LocalAccounts {
            throttle: super::throttle::Throttle::new(kv.clone()),
            kv,
            session_cookie: session_cookie_name(secure_cookies),
            session_ttl,
            hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(HASHES_IN_FLIGHT)),
            decoy: Default::default(),
        }
    }

    pub fn session_cookie(&self) -> &'static str {
        self.session_cookie
    }

    async fn decoy_hash(&self) -> Result<String, AccountError> {
        let made = self
            .decoy
            .get_or_try_init(|| {
                self.hash_work(|| {
                    Argon2::default()
                        .hash_password(crate::random_token(24).as_bytes(), &SaltString::generate(&mut OsRng))
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                })
            })
            .await?;
        Ok(made.clone())
    }

    /// Run password-hashing work off the async workers, at most [`HASHES_IN_FLIGHT`] at a time; a
    /// request that waits longer than [`HASH_QUEUE_WAIT`] for a turn is shed. The turn is held by
    /// the work itself, so a client that hangs up does not free it early. (Freed hash memory goes
    /// back to the system: `crate::return_large_allocations`.)
    async fn hash_work<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AccountError> {
        let turn = tokio::time::timeout(HASH_QUEUE_WAIT, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| AccountError::Busy)?
            .map_err(|_| AccountError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await
        .map_err(|e| AccountError::Kv(KvError::Unavailable(format!("password hashing failed: {e}"))))
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> Result<User, AccountError> {
        let email = Email::parse(email).map_err(|e| AccountError::InvalidEmail(e.to_string()))?;
        check_password(password, email.as_str())?;
        let password = password.to_string();
        let password_hash = self
            .hash_work(move || {
                Argon2::default().hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).map(|h| h.to_string())
            })
            .await?
            .map_err(|e| KvError::Unavailable(format!("password hashing failed: {e}")))?;
        let account = Account { id: UserId::generate(), email: email.clone(), password_hash, created_at: crate::unix_now() };
        let json = serde_json::to_string(&account).expect("an account serialises");
        if !self.kv.set_if_absent(&keys::account(email.as_str()), &json).await? {
            return Err(AccountError::EmailTaken);
        }
        Ok(User { id: account.id, email })
    }

    /// Check the password, within the throttle's limits for this account and `address`.
    pub async fn sign_in(&self, email: &str, password: &str, address: Option<std::net::IpAddr>) -> Result<User, AccountError> {
        let parsed = Email::parse(email);
        // Unparseable input is counted too (an address guessing junk is still guessing), cut short.
        let account_key =
            parsed.as_ref().map_or_else(|_| email.trim().to_lowercase().chars().take(254).collect(), |e| e.as_str().to_string());
        let attempt = super::throttle::Attempt { account: &account_key, address };
        if let Some(seconds) = self.throttle.must_wait(&attempt).await? {
            return Err(AccountError::Throttled(seconds));
        }
        let outcome = self.check_password(parsed, password).await;
        match &outcome {
            Ok(_) => self.throttle.succeeded(&attempt).await?,
            Err(AccountError::BadCredentials) => self.throttle.failed(&attempt).await?,
            Err(_) => {}
        }
        outcome
    }

    async fn check_password(&self, email: Result<Email, crate::domain::ParseError>, password: &str) -> Result<User, AccountError> {
        let Ok(email) = email else { return Err(AccountError::BadCredentials) };
        let account: Option<Account> = match self.kv.get(&keys::account(email.as_str())).await? {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored account is corrupt: {e}")))?),
            None => None,
        };
        // Without an account, verify against a decoy hash anyway so timing does not reveal which part was wrong.
        let hash = match &account {
            Some(a) => a.password_hash.clone(),
            None => self.decoy_hash().await?,
        };
        let password = password.to_string();
        let matches = self
            .hash_work(move || {
                PasswordHash::new(&hash).map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
            })
            .await?;
        match account {
            Some(account) if matches => Ok(User { id: account.id, email: account.email }),
            _ => Err(AccountError::BadCredentials),
        }
    }

    /// A new session for `user`; returns the token for the cookie.
    pub async fn start_session(&self, user: &User) -> Result<String, KvError> {
        let token = crate::random_token(32);
        let record = SessionRecord {
            user_id: user.id.clone(),
            email: user.email.clone(),
            created_at_ms: crate::unix_now_ms(),
            expires_at: crate::unix_now() + self.session_ttl.as_secs() as i64,
        };
        self.store_session(&token, &record).await?;
        Ok(token)
    }

    async fn store_session(&self, token: &str, record: &SessionRecord) -> Result<(), KvError> {
        let json = serde_json::to_string(record).expect("a session serialises");
        self.kv.set_expiring(&keys::session(token), &json, self.session_ttl).await
    }

    /// End every session of this user, on every device (this one included).
    pub async fn end_all_sessions(&self, user: &User) -> Result<(), KvError> {
        self.kv.set(&keys::signed_out_before(&user.id), &crate::unix_now_ms().to_string()).await
    }

    pub async fn end_session(&self, parts: &Parts) -> Result<(), KvError> {
        match self.session_token(parts) {
            Some(token) => self.kv.delete(&keys::session(token)).await,
            None => Ok(()),
        }
    }
}

impl LocalAccounts {
    /// A session cookie value, if it has the shape of one (anything else is never looked up).
    fn session_token<'p>(&self, parts: &'p Parts) -> Option<&'p str> {
        cookie(parts, self.session_cookie).filter(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_alphanumeric()))
    }
}

impl AuthProvider for LocalAccounts {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            let Some(token) = self.session_token(parts) else { return Ok(None) };
            let Some(json) = self.kv.get(&keys::session(token)).await? else { return Ok(None) };
            let Ok(mut record) = serde_json::from_str::<SessionRecord>(&json) else { return Ok(None) };
            let now = crate::unix_now();
            if record.expires_at <= now {
                self.kv.delete(&keys::session(token)).await?;
                return Ok(None);
            }
            let revoked_before = self.kv.get(&keys::signed_out_before(&record.user_id)).await?.and_then(|t| t.parse::<i64>().ok());
            if revoked_before.is_some_and(|t| record.created_at_ms <= t) {
                self.kv.delete(&keys::session(token)).await?;
                return Ok(None);
            }
            // Sliding expiry, written at most once a day per session.
            let ttl = self.session_ttl.as_secs() as i64;
            if record.expires_at - now < ttl - (ttl / 2).min(86_400) {
                record.expires_at = now + ttl;
                self.store_session(token, &record).await?;
            }
            Ok(Some(User { id: record.user_id, email: record.email }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn password_rules() {
        assert!(check_password("correct horse battery", "a@b.co").is_ok());
        for weak in ["short", "password123", "aaaaaaaaaaaa", "ababababab", "ada@example.com", &"x1y2".repeat(40)] {
            assert!(check_password(weak, "ada@example.com").is_err(), "{weak}");
        }
        assert!(check_password("adalovelace", "adalovelace@example.com").is_err(), "the email's name");
        assert!(check_password("adalovelace", "ada@example.com").is_ok());
    }

    #[tokio::test]
    async fn sign_up_sign_in_and_sessions() {
        let kv: SharedKv = Arc::new(crate::kv::memory::MemoryKv::default());
        let accounts = LocalAccounts::new(kv.clone(), false, std::time::Duration::from_secs(30 * 86_400));
        let user = accounts.sign_up(" Ada@Example.com ", "analytical engine").await.unwrap();
        assert_eq!(user.email.as_str(), "ada@example.com");
        assert!(matches!(accounts.sign_up("ada@example.com", "another long one").await, Err(AccountError::EmailTaken)));
        assert_eq!(accounts.sign_in("ADA@example.com", "analytical engine", None).await.unwrap(), user);
        let wrong_password = accounts.sign_in("ada@example.com", "difference engine", None).await.unwrap_err();
        let no_account = accounts.sign_in("bob@example.com", "analytical engine", None).await.unwrap_err();
        assert_eq!(wrong_password.to_string(), no_account.to_string(), "the message does not tell which part was wrong");
        let stored = kv.get(&keys::account("ada@example.com")).await.unwrap().unwrap();
        assert!(stored.contains("$argon2id$") && !stored.contains("analytical engine"));

        let token = accounts.start_session(&user).await.unwrap();
        let request = axum::http::Request::builder().header("cookie", format!("other=1; tollgate_session={token}")).body(()).unwrap();
        let (parts, _) = request.into_parts();
        assert_eq!(accounts.authenticate(&parts).await.unwrap(), Some(user));
        accounts.end_session(&parts).await.unwrap();
        assert_eq!(accounts.authenticate(&parts).await.unwrap(), None);
    }
}
