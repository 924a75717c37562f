//! Tollgate's built-in accounts: email + password (argon2id), server-side sessions in the KV.
//!
//! An account exists only once its owner has opened the emailed link, and its password is chosen
//! there: sign-up takes only the email, and waits in the KV (under a hash of the link's token,
//! for [`SIGN_UP_LINK_TTL`]). So nobody can take an address they cannot read, nor choose the
//! password its owner's click would confirm. Sign-up and password-reset forms answer the same
//! whether or not the email has an account; the difference goes to the inbox (a "you already
//! have an account" or "there is no account" message instead of a link).
//!
//! Emailed links are spent by exactly one click (`Kv::take`), in a step a client hanging up cannot
//! cut short. A session records a fingerprint of the password hash its sign-in checked, so a
//! password change ends every session made with the old one — even one whose sign-in read the
//! old hash a moment before the change.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::throttle::{Attempt, MailDecision, Throttle};
use super::{cookie, AuthFuture, AuthProvider, Session, User};
use tollgate_core::domain::{ActiveOrg, Email, OrgId, UserId};
use tollgate_core::kv::{keys, KvError, SharedKv};
use tollgate_core::mail::{Mail, Mailer};
use tollgate_core::orgs::{Org, OrgError, Orgs};

/// The session cookie's name; under https the `__Host-` prefix makes browsers insist that it is
/// Secure, for this host only, on every path (no subdomain can set or shadow it).
pub(crate) fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate_session"
    } else {
        "tollgate_session"
    }
}
/// How long a browser keeps the session cookie; the server-side session decides (`SESSION_TTL`).
pub(crate) const SESSION_COOKIE_DAYS: i64 = 400;
/// How long the link that finishes a sign-up stays valid, and a password-reset link.
pub(crate) const SIGN_UP_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
pub(crate) const RESET_LINK_TTL: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    id: UserId,
    email: Email,
    password_hash: String,
    created_at: i64,
}

/// A sign-up waiting for its link: the account it becomes (the password is chosen on the link's page).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingSignUp {
    id: UserId,
    email: Email,
}

/// A password-reset link's record. `password` fingerprints the hash the link was made for, so
/// once the password changes every older link stops working.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetRecord {
    email: Email,
    password: String,
}

fn fingerprint(password_hash: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..8])
}

/// A user whose password (or emailed link) was just checked: what a session is started from.
pub(crate) struct Authenticated {
    pub(crate) user: User,
    /// The fingerprint of the password hash that was checked.
    password: String,
}

/// The device cookie's name (`__Host-` prefixed under https, like the session's).
pub(crate) fn device_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate_device"
    } else {
        "tollgate_device"
    }
}

/// Whether text has the shape of one of our tokens (anything else is never looked up).
pub(crate) fn is_token(t: &str) -> bool {
    t.len() == 32 && t.chars().all(|c| c.is_ascii_alphanumeric())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRecord {
    user_id: UserId,
    email: Email,
    /// The fingerprint of the password hash the sign-in checked; none in sessions made before
    /// fingerprints (those end with the next "sign out everywhere" or reset).
    #[serde(default)]
    password: String,
    /// Unix milliseconds; a session older than the user's last "sign out everywhere" is revoked.
    #[serde(default)]
    created_at_ms: i64,
    expires_at: i64,
    /// The organization this session acts for (checked against its members on every use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org: Option<SessionOrg>,
}

#[derive(Serialize, Deserialize)]
struct SessionOrg {
    id: OrgId,
    slug: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("An account with this email already exists. Sign in, or reset your password.")]
    EmailTaken,
    #[error("This link has expired or was already used. Ask for a new one.")]
    LinkExpired,
    /// The email could not be sent (SMTP down): retryable.
    #[error("{0}")]
    Mail(String),
    /// Deliberately vague: it does not say whether the email or the password was wrong.
    #[error("That email and password do not match an account.")]
    BadCredentials,
    /// Too many failed attempts (or emails) for this account or address: wait this many seconds.
    #[error("Too many attempts. Try again in {0} seconds.")]
    Throttled(u64),
    /// Too many password hashes queued: shed rather than exhaust memory (each takes 19 MiB).
    #[error("Too many sign-ins at once. Try again in a moment.")]
    Busy,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Run `work` to its end in a task of its own: a caller that goes away (a client hanging up
/// drops the request's future) cannot stop it half-way.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, AccountError>> + Send + 'static,
) -> Result<T, AccountError> {
    tokio::spawn(work).await.map_err(|e| AccountError::Kv(KvError::Unavailable(format!("the account step failed: {e}"))))?
}

/// Password hashes computed at once (argon2id with the default 19 MiB each), and how long a
/// request waits for a turn before it is shed with 503.
const HASHES_IN_FLIGHT: usize = 2;
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

const COMMON_PASSWORDS: &[&str] = &[
    "password", "password1", "password123", "1234567890", "qwertyuiop", "iloveyou12", "letmein123", "welcome123", "abc1234567",
    "passw0rd12",
];

/// At least 10 characters (at most 128), not a well-known password, not the email, not one repeated character.
pub(crate) fn check_password(password: &str, email: &str) -> Result<(), AccountError> {
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

pub(crate) struct LocalAccounts {
    kv: SharedKv,
    throttle: Throttle,
    mailer: Arc<Mailer>,
    /// Where the emailed links point.
    public_url: String,
    session_cookie: &'static str,
    /// A session ends this long after it was last used (sliding).
    session_ttl: Duration,
    hashing: std::sync::Arc<tokio::sync::Semaphore>,
    /// A real argon2id hash of a random password, checked when the account does not exist so the
    /// answer takes as long; made once, on first use (not at start-up: it is slow).
    decoy: tokio::sync::OnceCell<String>,
    /// Sessions' and links' ages, and when an account signed out everywhere.
    clock: tollgate_core::Clock,
    /// Which organization a session acts for, and the user's role there.
    orgs: Arc<Orgs>,
}

impl LocalAccounts {
    pub(crate) fn new(
        kv: SharedKv,
        mailer: Arc<Mailer>,
        public_url: String,
        secure_cookies: bool,
        session_ttl: Duration,
        clock: tollgate_core::Clock,
    ) -> LocalAccounts {
        LocalAccounts {
            throttle: Throttle::new(kv.clone(), clock.clone()),
            clock: clock.clone(),
            kv: kv.clone(),
            mailer,
            public_url,
            session_cookie: session_cookie_name(secure_cookies),
            session_ttl,
            hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(HASHES_IN_FLIGHT)),
            decoy: Default::default(),
            orgs: Orgs::new(kv.clone(), clock.clone()),
        }
    }

    pub(crate) fn session_cookie(&self) -> &'static str {
        self.session_cookie
    }

    async fn decoy_hash(&self) -> Result<String, AccountError> {
        let made = self
            .decoy
            .get_or_try_init(|| {
                self.hash_work(|| {
                    Argon2::default()
                        .hash_password(tollgate_core::random_token(24).as_bytes(), &SaltString::generate(&mut OsRng))
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
    /// back to the system: `crate::memory::tune_allocator`.)
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

    async fn hash_password(&self, password: &str) -> Result<String, AccountError> {
        let password = password.to_string();
        let hashed = self
            .hash_work(move || {
                Argon2::default().hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).map(|h| h.to_string())
            })
            .await?;
        Ok(hashed.map_err(|e| KvError::Unavailable(format!("password hashing failed: {e}")))?)
    }

    async fn account(&self, email: &Email) -> Result<Option<Account>, KvError> {
        match self.kv.get(&keys::account(email.as_str())).await? {
            Some(json) => {
                Ok(Some(serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored account is corrupt: {e}")))?))
            }
            None => Ok(None),
        }
    }

    /// Email `mail` unless its recipient already had enough for now; `decision` came from the
    /// throttle (a refusal was answered before any work).
    async fn send(&self, decision: MailDecision, mail: Mail) -> Result<(), AccountError> {
        if decision != MailDecision::Send {
            tracing::warn!("an account email was not sent: its recipient had enough for now");
            return Ok(());
        }
        self.mailer.send(mail).await.map_err(|e| AccountError::Mail(e.to_string()))
    }

    /// Count an email to `email` from `address`; a refusal ends the request before any work.
    async fn mail_allowed(&self, email: &Email, address: Option<IpAddr>) -> Result<MailDecision, AccountError> {
        match self.throttle.mail_requested(email.as_str(), address).await? {
            MailDecision::Refuse(seconds) => {
                crate::telemetry::metrics::METRICS.sign_in_throttled.with_label_values(&["email"]).inc();
                Err(AccountError::Throttled(seconds))
            }
            decision => Ok(decision),
        }
    }

    /// Email an invitation to join `org` (the link carries `token`), counted by the throttle:
    /// invitations cannot be used to flood someone's inbox, and an organization sends a few
    /// hundred per quarter hour at most. Over either, nothing is sent and the inviter is told.
    pub(crate) async fn send_invitation(&self, to: &Email, org: &Org, inviter: &Email, token: &str) -> Result<(), AccountError> {
        if let Some(seconds) = self.throttle.invitation_requested(org.id.as_str(), to.as_str()).await? {
            crate::telemetry::metrics::METRICS.sign_in_throttled.with_label_values(&["email"]).inc();
            return Err(AccountError::Throttled(seconds));
        }
        let org_name = &org.name;
        let mail = Mail {
            to: to.clone(),
            subject: format!("{} invited you to {org_name}", inviter.as_str()),
            text: format!(
                "{inviter} invited you to join {org_name}.\n\n                 To accept, open this link within 7 days (sign up or sign in with this email first if you need to):\n                 {url}/invitations/accept?token={token}\n\n                 If you do not know them, you can ignore this message.\n",
                inviter = inviter.as_str(),
                url = self.public_url
            ),
        };
        self.mailer.send(mail).await.map_err(|e| AccountError::Mail(e.to_string()))
    }

    /// Start a sign-up: email a link that creates the account (or, when the email already has
    /// one, a note saying so). The caller learns only the normalised email, either way; the
    /// password is hashed either way so the answer takes as long. `continue_to` is the same-site
    /// path the link leads to after confirming.
    pub(crate) async fn sign_up(&self, email: &str, continue_to: &str, address: Option<IpAddr>) -> Result<Email, AccountError> {
        let email = Email::parse(email).map_err(|e| AccountError::InvalidEmail(e.to_string()))?;
        let decision = self.mail_allowed(&email, address).await?;
        let mail = if self.account(&email).await?.is_some() {
            Mail {
                to: email.clone(),
                subject: "Someone tried to sign up with your email".into(),
                text: format!(
                    "Someone, maybe you, tried to create an account with this email, but you already have one.\n\n\
                     To sign in: {url}/auth\nForgot your password? Reset it: {url}/auth/reset\n\n\
                     If it was not you, you can ignore this message: nothing changed.\n",
                    url = self.public_url
                ),
            }
        } else {
            let token = tollgate_core::random_token(32);
            let pending = PendingSignUp { id: UserId::generate(), email: email.clone() };
            let json = serde_json::to_string(&pending).expect("a sign-up serialises");
            self.kv.set_expiring(&keys::sign_up(&token), &json, SIGN_UP_LINK_TTL).await?;
            let next = match continue_to {
                "/dashboard" => String::new(),
                path => format!("&next={}", form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()),
            };
            Mail {
                to: email.clone(),
                subject: "Confirm your email to finish signing up".into(),
                text: format!(
                    "Someone, hopefully you, asked to create an account with this email.\n\n\
                     To finish, open this link within 24 hours and choose your password:\n{}/auth/confirm?token={token}{next}\n\n\
                     If it was not you, ignore this message: no account is made without the link.\n",
                    self.public_url
                ),
            }
        };
        self.send(decision, mail).await?;
        Ok(email)
    }

    /// Whether a sign-up link is still good (for the page that asks to confirm it).
    pub(crate) async fn sign_up_link_valid(&self, token: &str) -> Result<bool, AccountError> {
        Ok(is_token(token) && self.kv.get(&keys::sign_up(token)).await?.is_some())
    }

    /// The emailed link's page was sent with the password its owner chose: create the account.
    /// The link is spent by one confirmation only; the account is written with set-if-absent, so
    /// the first confirmed sign-up of an email wins.
    pub(crate) async fn confirm_sign_up(&self, token: &str, password: &str) -> Result<Authenticated, AccountError> {
        if !is_token(token) {
            return Err(AccountError::LinkExpired);
        }
        let Some(json) = self.kv.get(&keys::sign_up(token)).await? else { return Err(AccountError::LinkExpired) };
        let pending: PendingSignUp =
            serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored sign-up is corrupt: {e}")))?;
        check_password(password, pending.email.as_str())?;
        let password_hash = self.hash_password(password).await?;
        let (kv, clock) = (self.kv.clone(), self.clock.clone());
        let token = token.to_string();
        // Spent and written in a task of its own: a client hanging up cannot stop it in between.
        detached(async move {
            let Some(json) = kv.take(&keys::sign_up(&token)).await? else { return Err(AccountError::LinkExpired) };
            let pending: PendingSignUp =
                serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored sign-up is corrupt: {e}")))?;
            let password = fingerprint(&password_hash);
            let account = Account { id: pending.id, email: pending.email, password_hash, created_at: clock.unix_now() };
            let json = serde_json::to_string(&account).expect("an account serialises");
            if !kv.set_if_absent(&keys::account(account.email.as_str()), &json).await? {
                return Err(AccountError::EmailTaken); // another sign-up for this email was confirmed first
            }
            Ok(Authenticated { user: User { id: account.id, email: account.email, org: None }, password })
        })
        .await
    }

    /// Email a password-reset link when the email has an account, or a note that it has none.
    pub(crate) async fn request_password_reset(&self, email: &str, address: Option<IpAddr>) -> Result<Email, AccountError> {
        let email = Email::parse(email).map_err(|e| AccountError::InvalidEmail(e.to_string()))?;
        let decision = self.mail_allowed(&email, address).await?;
        let mail = match self.account(&email).await? {
            Some(account) => {
                let token = tollgate_core::random_token(32);
                let record = ResetRecord { email: email.clone(), password: fingerprint(&account.password_hash) };
                let json = serde_json::to_string(&record).expect("a reset serialises");
                self.kv.set_expiring(&keys::password_reset(&token), &json, RESET_LINK_TTL).await?;
                Mail {
                    to: email.clone(),
                    subject: "Reset your password".into(),
                    text: format!(
                        "Someone, hopefully you, asked to reset the password of your account.\n\n\
                         To choose a new one, open this link within an hour:\n{}/auth/reset/new?token={token}\n\n\
                         If it was not you, ignore this message: your password stays as it is.\n",
                        self.public_url
                    ),
                }
            }
            None => Mail {
                to: email.clone(),
                subject: "Password reset requested".into(),
                text: format!(
                    "Someone, maybe you, asked to reset a password for this email, but it has no account.\n\n\
                     To create one: {}/auth\n\nIf it was not you, you can ignore this message.\n",
                    self.public_url
                ),
            },
        };
        self.send(decision, mail).await?;
        Ok(email)
    }

    /// The account a reset link is for, while the link is good: not expired, and made for the
    /// account's current password.
    async fn reset_link_account(&self, token: &str) -> Result<Option<Account>, AccountError> {
        if !is_token(token) {
            return Ok(None);
        }
        let Some(json) = self.kv.get(&keys::password_reset(token)).await? else { return Ok(None) };
        let record: ResetRecord =
            serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored reset link is corrupt: {e}")))?;
        Ok(self.account(&record.email).await?.filter(|a| fingerprint(&a.password_hash) == record.password))
    }

    pub(crate) async fn reset_link_valid(&self, token: &str) -> Result<bool, AccountError> {
        Ok(self.reset_link_account(token).await?.is_some())
    }

    /// Set a new password through a reset link. Every session made with the old password ends
    /// with it (their fingerprint no longer matches), and older ones too. The link is spent by
    /// one reset only, in a step a client hanging up cannot cut short.
    pub(crate) async fn reset_password(&self, token: &str, password: &str) -> Result<User, AccountError> {
        let account = self.reset_link_account(token).await?.ok_or(AccountError::LinkExpired)?;
        check_password(password, account.email.as_str())?;
        let password_hash = self.hash_password(password).await?;
        let (kv, token, clock) = (self.kv.clone(), token.to_string(), self.clock.clone());
        let user = detached(async move {
            let Some(json) = kv.take(&keys::password_reset(&token)).await? else { return Err(AccountError::LinkExpired) };
            let record: ResetRecord =
                serde_json::from_str(&json).map_err(|e| KvError::Unavailable(format!("stored reset link is corrupt: {e}")))?;
            let current = match kv.get(&keys::account(record.email.as_str())).await? {
                Some(json) => {
                    serde_json::from_str::<Account>(&json).map_err(|e| KvError::Unavailable(format!("stored account is corrupt: {e}")))?
                }
                None => return Err(AccountError::LinkExpired),
            };
            if fingerprint(&current.password_hash) != record.password {
                return Err(AccountError::LinkExpired); // the password changed since the link was made
            }
            let user = User { id: current.id.clone(), email: current.email.clone(), org: None };
            // Sessions from before fingerprints end by time.
            kv.set(&keys::signed_out_before(&user.id), &clock.unix_now_ms().to_string()).await?;
            let json = serde_json::to_string(&Account { password_hash, ..current }).expect("an account serialises");
            kv.set(&keys::account(user.email.as_str()), &json).await?;
            Ok(user)
        })
        .await?;
        // Whoever was locked out by guessing can sign in with the new password at once.
        self.throttle.succeeded(&Attempt { account: user.email.as_str(), known_device: None }).await?;
        Ok(user)
    }

    /// Check the password, within the throttle's limits for this account (or, from a browser
    /// where it signed in before, `device`, for that browser alone). A success remembers the
    /// browser: its device token is `device` when it had one, else a new one to set.
    pub(crate) async fn sign_in(&self, email: &str, password: &str, device: Option<&str>) -> Result<(Authenticated, String), AccountError> {
        let parsed = Email::parse(email);
        // Unparseable input is counted too (guessing junk is still guessing), cut short.
        let account_key =
            parsed.as_ref().map_or_else(|_| email.trim().to_lowercase().chars().take(254).collect(), |e| e.as_str().to_string());
        let device = device.filter(|t| is_token(t));
        let known_device = match device {
            Some(token) if self.throttle.knows_device(token, &account_key).await? => Some(token),
            _ => None,
        };
        let attempt = Attempt { account: &account_key, known_device };
        if let Some(seconds) = self.throttle.must_wait(&attempt).await? {
            crate::telemetry::metrics::METRICS.sign_in_throttled.with_label_values(&["sign_in"]).inc();
            return Err(AccountError::Throttled(seconds));
        }
        let authenticated = match self.check_password(parsed, password).await {
            Ok(authenticated) => authenticated,
            Err(e) => {
                if matches!(e, AccountError::BadCredentials) {
                    self.throttle.failed(&attempt).await?;
                }
                return Err(e);
            }
        };
        self.throttle.succeeded(&attempt).await?;
        let device = device.map_or_else(|| tollgate_core::random_token(32), str::to_string);
        self.throttle.remember_device(&device, &account_key).await?;
        Ok((authenticated, device))
    }

    async fn check_password(
        &self,
        email: Result<Email, tollgate_core::domain::ParseError>,
        password: &str,
    ) -> Result<Authenticated, AccountError> {
        let Ok(email) = email else { return Err(AccountError::BadCredentials) };
        let account = self.account(&email).await?;
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
            Some(account) if matches => Ok(Authenticated {
                password: fingerprint(&account.password_hash),
                user: User { id: account.id, email: account.email, org: None },
            }),
            _ => Err(AccountError::BadCredentials),
        }
    }

    /// A new session for a user just authenticated, acting for the organization they joined
    /// first (if any); returns the token for the cookie.
    pub(crate) async fn start_session(&self, authenticated: &Authenticated) -> Result<String, KvError> {
        let token = tollgate_core::random_token(32);
        let user = &authenticated.user;
        let org = match self.orgs.of_user(&user.id).await {
            Ok(orgs) => orgs.into_iter().next().map(|(org, _)| SessionOrg { id: org.id, slug: org.slug }),
            Err(OrgError::Kv(e)) => return Err(e),
            Err(_) => None,
        };
        let record = SessionRecord {
            org,
            user_id: user.id.clone(),
            email: user.email.clone(),
            password: authenticated.password.clone(),
            created_at_ms: self.clock.unix_now_ms(),
            expires_at: self.clock.unix_now() + self.session_ttl.as_secs() as i64,
        };
        self.store_session(&token, &record).await?;
        Ok(token)
    }

    async fn store_session(&self, token: &str, record: &SessionRecord) -> Result<(), KvError> {
        let json = serde_json::to_string(record).expect("a session serialises");
        self.kv.set_expiring(&keys::session(token), &json, self.session_ttl).await
    }

    /// Make this request's session act for `org` (`None`: for the user alone). The caller has
    /// checked the membership; every later request checks it again.
    pub(crate) async fn set_active_org(&self, parts: &Parts, org: Option<&Org>) -> Result<(), KvError> {
        let Some(token) = self.session_token(parts) else { return Ok(()) };
        let Some(json) = self.kv.get(&keys::session(token)).await? else { return Ok(()) };
        let Ok(mut record) = serde_json::from_str::<SessionRecord>(&json) else { return Ok(()) };
        record.org = org.map(|org| SessionOrg { id: org.id.clone(), slug: org.slug.clone() });
        self.store_session(token, &record).await
    }

    /// End every session of this user, on every device (this one included).
    pub(crate) async fn end_all_sessions(&self, user: &User) -> Result<(), KvError> {
        self.kv.set(&keys::signed_out_before(&user.id), &self.clock.unix_now_ms().to_string()).await
    }

    pub(crate) async fn end_session(&self, parts: &Parts) -> Result<(), KvError> {
        match self.session_token(parts) {
            Some(token) => self.kv.delete(&keys::session(token)).await,
            None => Ok(()),
        }
    }
}

impl LocalAccounts {
    /// A session cookie value, if it has the shape of one (anything else is never looked up).
    fn session_token<'p>(&self, parts: &'p Parts) -> Option<&'p str> {
        cookie(parts, self.session_cookie).filter(|t| is_token(t))
    }
}

impl AuthProvider for LocalAccounts {
    fn session<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(async move {
            Ok(match self.authenticate(parts).await? {
                Some(user) => Session::SignedIn(user),
                None => Session::SignedOut,
            })
        })
    }

    fn credential<'p>(&self, parts: &'p Parts) -> Option<std::borrow::Cow<'p, str>> {
        self.session_token(parts).map(std::borrow::Cow::Borrowed)
    }
}

impl LocalAccounts {
    /// The user whose session cookie this request carries, while the session lasts.
    pub(crate) async fn authenticate(&self, parts: &Parts) -> Result<Option<User>, KvError> {
        let Some(token) = self.session_token(parts) else { return Ok(None) };
        let Some(json) = self.kv.get(&keys::session(token)).await? else { return Ok(None) };
        let Ok(mut record) = serde_json::from_str::<SessionRecord>(&json) else { return Ok(None) };
        let now = self.clock.unix_now();
        if record.expires_at <= now {
            self.kv.delete(&keys::session(token)).await?;
            return Ok(None);
        }
        let revoked_key = keys::signed_out_before(&record.user_id);
        let membership = async {
            match &record.org {
                None => Ok(None),
                Some(org) => match self.orgs.member(&org.id, &record.user_id).await {
                    Ok(member) => Ok(member),
                    Err(OrgError::Kv(e)) => Err(e),
                    Err(_) => Ok(None),
                },
            }
        };
        let (account, revoked_before, membership) = tokio::try_join!(self.account(&record.email), self.kv.get(&revoked_key), membership)?;
        let revoked_before = revoked_before.and_then(|t| t.parse::<i64>().ok());
        let password_changed = match &account {
            Some(account) => {
                account.id != record.user_id || (!record.password.is_empty() && fingerprint(&account.password_hash) != record.password)
            }
            None => true,
        };
        if password_changed || revoked_before.is_some_and(|t| record.created_at_ms <= t) {
            self.kv.delete(&keys::session(token)).await?;
            return Ok(None);
        }
        // Sliding expiry, written at most once a day per session.
        let ttl = self.session_ttl.as_secs() as i64;
        if record.expires_at - now < ttl - (ttl / 2).min(86_400) {
            record.expires_at = now + ttl;
            self.store_session(token, &record).await?;
        }
        // A membership that ended leaves the session acting for the user alone.
        let org = record.org.zip(membership).map(|(org, member)| ActiveOrg { id: org.id, role: member.role, slug: org.slug });
        Ok(Some(User { id: record.user_id, email: record.email, org }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tollgate_core::Clock;

    #[test]
    fn password_rules() {
        assert!(check_password("correct horse battery", "a@b.co").is_ok());
        for weak in ["short", "password123", "aaaaaaaaaaaa", "ababababab", "ada@example.com", &"x1y2".repeat(40)] {
            assert!(check_password(weak, "ada@example.com").is_err(), "{weak}");
        }
        assert!(check_password("adalovelace", "adalovelace@example.com").is_err(), "the email's name");
        assert!(check_password("adalovelace", "ada@example.com").is_ok());
    }

    fn accounts() -> (SharedKv, Arc<Mailer>, LocalAccounts) {
        let kv: SharedKv = Arc::new(tollgate_core::kv::memory::MemoryKv::default());
        let mailer = Arc::new(Mailer::new(&tollgate_core::config::MailSettings::Outbox).unwrap());
        let accounts = LocalAccounts::new(
            kv.clone(),
            mailer.clone(),
            "http://app.test".into(),
            false,
            Duration::from_secs(30 * 86_400),
            Clock::system(),
        );
        (kv, mailer, accounts)
    }

    /// The token in the newest outbox message's link to `path`.
    fn link_token(mailer: &Mailer, path: &str) -> String {
        let text = mailer.outbox().unwrap()[0].mail.text.clone();
        let start = text.find(&format!("{path}?token=")).unwrap_or_else(|| panic!("no {path} link in {text}")) + path.len() + 7;
        text[start..start + 32].to_string()
    }

    fn request_with_session(token: &str) -> Parts {
        axum::http::Request::builder().header("cookie", format!("other=1; tollgate_session={token}")).body(()).unwrap().into_parts().0
    }

    /// A new account through its emailed link, with a session.
    async fn signed_up(accounts: &LocalAccounts, mailer: &Mailer, email: &str, password: &str) -> (User, Parts) {
        accounts.sign_up(email, "/dashboard", None).await.unwrap();
        let confirmed = accounts.confirm_sign_up(&link_token(mailer, "/auth/confirm"), password).await.unwrap();
        let session = accounts.start_session(&confirmed).await.unwrap();
        (confirmed.user, request_with_session(&session))
    }

    #[tokio::test]
    async fn sign_up_by_link_then_sign_in_and_sessions() {
        let (kv, mailer, accounts) = accounts();
        let email = accounts.sign_up(" Ada@Example.com ", "/dashboard", None).await.unwrap();
        assert_eq!(email.as_str(), "ada@example.com");
        assert!(mailer.outbox().unwrap()[0].mail.text.contains("choose your password"));
        let token = link_token(&mailer, "/auth/confirm");
        assert!(matches!(accounts.confirm_sign_up(&token, "short").await, Err(AccountError::WeakPassword(_))));
        assert!(accounts.sign_up_link_valid(&token).await.unwrap(), "a refused password leaves the link good");
        let user = accounts.confirm_sign_up(&token, "analytical engine").await.unwrap().user;
        assert!(matches!(accounts.confirm_sign_up(&token, "analytical engine").await, Err(AccountError::LinkExpired)), "a link works once");
        // A second sign-up for the same email is answered alike; the inbox hears the difference.
        accounts.sign_up("ada@example.com", "/dashboard", None).await.unwrap();
        assert!(mailer.outbox().unwrap()[0].mail.text.contains("you already have one"));
        let (signed_in, device) = accounts.sign_in("ADA@example.com", "analytical engine", None).await.unwrap();
        assert_eq!(signed_in.user, user);
        assert!(is_token(&device), "a new browser is given a device token");
        let wrong_password = accounts.sign_in("ada@example.com", "difference engine", None).await.err().unwrap();
        let no_account = accounts.sign_in("bob@example.com", "analytical engine", None).await.err().unwrap();
        assert_eq!(wrong_password.to_string(), no_account.to_string(), "the message does not tell which part was wrong");
        let stored = kv.get(&keys::account("ada@example.com")).await.unwrap().unwrap();
        assert!(stored.contains("$argon2id$") && !stored.contains("analytical engine"));

        let parts = request_with_session(&accounts.start_session(&signed_in).await.unwrap());
        assert_eq!(accounts.authenticate(&parts).await.unwrap(), Some(user));
        accounts.end_session(&parts).await.unwrap();
        assert_eq!(accounts.authenticate(&parts).await.unwrap(), None);
    }

    /// Someone signs up with another person's address: the owner's click sets the owner's password
    /// (account pre-hijacking finds nothing to pre-set). Two sign-ups confirmed: the first wins.
    #[tokio::test]
    async fn the_owner_of_the_address_chooses_the_password_and_the_first_confirmation_wins() {
        let (_, mailer, accounts) = accounts();
        accounts.sign_up("eve@example.com", "/app", None).await.unwrap(); // the attacker's sign-up
        let first = link_token(&mailer, "/auth/confirm");
        assert!(mailer.outbox().unwrap()[0].mail.text.contains("&next=%2Fapp"), "the link carries where to go next");
        accounts.sign_up("eve@example.com", "/dashboard", None).await.unwrap();
        let second = link_token(&mailer, "/auth/confirm");
        accounts.confirm_sign_up(&first, "the owners password").await.unwrap();
        assert!(matches!(accounts.confirm_sign_up(&second, "second password here").await, Err(AccountError::EmailTaken)));
        assert!(accounts.sign_in("eve@example.com", "the owners password", None).await.is_ok());
        assert!(accounts.sign_in("eve@example.com", "second password here", None).await.is_err());
    }

    #[tokio::test]
    async fn password_reset_links_work_once_and_end_every_session() {
        let (_, mailer, accounts) = accounts();
        let (user, session) = signed_up(&accounts, &mailer, "lin@example.com", "old long password").await;
        accounts.request_password_reset("ghost@example.com", None).await.unwrap();
        assert!(mailer.outbox().unwrap()[0].mail.text.contains("it has no account"));
        accounts.request_password_reset("LIN@example.com", None).await.unwrap();
        let older = link_token(&mailer, "/auth/reset/new");
        accounts.request_password_reset("lin@example.com", None).await.unwrap();
        let newer = link_token(&mailer, "/auth/reset/new");
        assert!(accounts.reset_link_valid(&older).await.unwrap());
        assert!(matches!(accounts.reset_password(&newer, "short").await, Err(AccountError::WeakPassword(_))));
        assert_eq!(accounts.reset_password(&newer, "new long password").await.unwrap(), user);
        assert!(accounts.sign_in("lin@example.com", "old long password", None).await.is_err());
        assert!(accounts.sign_in("lin@example.com", "new long password", None).await.is_ok());
        assert_eq!(accounts.authenticate(&session).await.unwrap(), None, "the old session ended");
        for spent in [&newer, &older] {
            assert!(matches!(accounts.reset_password(spent, "third long password").await, Err(AccountError::LinkExpired)));
        }
    }

    /// A sign-in that checked the old password a moment before a reset changed it makes a session
    /// that the reset still ends: sessions carry the fingerprint of the hash they were checked
    /// against, not the time they were made.
    #[tokio::test]
    async fn a_session_from_a_sign_in_that_raced_a_reset_ends_with_the_old_password() {
        let (_, mailer, accounts) = accounts();
        signed_up(&accounts, &mailer, "raced@example.com", "old long password").await;
        // The sign-in has checked the old password, and is about to store its session…
        let (checked, _) = accounts.sign_in("raced@example.com", "old long password", None).await.unwrap();
        accounts.request_password_reset("raced@example.com", None).await.unwrap();
        accounts.reset_password(&link_token(&mailer, "/auth/reset/new"), "new long password").await.unwrap();
        // … and stores it after the reset (later than the reset's "signed out before").
        tokio::time::sleep(Duration::from_millis(2)).await;
        let late = request_with_session(&accounts.start_session(&checked).await.unwrap());
        assert_eq!(accounts.authenticate(&late).await.unwrap(), None, "a session of the old password");
        let (fresh, _) = accounts.sign_in("raced@example.com", "new long password", None).await.unwrap();
        let fresh = request_with_session(&accounts.start_session(&fresh).await.unwrap());
        assert!(accounts.authenticate(&fresh).await.unwrap().is_some());
    }

    /// Sixteen clicks of one link at once: exactly one spends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_clicks_of_one_link_make_one_success() {
        let (_, mailer, accounts) = accounts();
        let accounts = Arc::new(accounts);
        accounts.sign_up("twin@example.com", "/dashboard", None).await.unwrap();
        let token = link_token(&mailer, "/auth/confirm");
        let clicks = (0..16).map(|n| {
            let (accounts, token) = (accounts.clone(), token.clone());
            tokio::spawn(async move { accounts.confirm_sign_up(&token, &format!("password number {n}")).await.is_ok() })
        });
        let successes = futures_count(clicks).await;
        assert_eq!(successes, 1);
        accounts.request_password_reset("twin@example.com", None).await.unwrap();
        let token = link_token(&mailer, "/auth/reset/new");
        let clicks = (0..16).map(|n| {
            let (accounts, token) = (accounts.clone(), token.clone());
            tokio::spawn(async move { accounts.reset_password(&token, &format!("new password number {n}")).await.is_ok() })
        });
        assert_eq!(futures_count(clicks).await, 1);
    }

    async fn futures_count(tasks: impl Iterator<Item = tokio::task::JoinHandle<bool>>) -> usize {
        let mut successes = 0;
        for task in tasks.collect::<Vec<_>>() {
            successes += task.await.unwrap() as usize;
        }
        successes
    }

    #[tokio::test]
    async fn a_remembered_device_signs_in_while_the_account_is_locked() {
        let (_, mailer, accounts) = accounts();
        signed_up(&accounts, &mailer, "owner@example.com", "the right password").await;
        let (_, device) = accounts.sign_in("owner@example.com", "the right password", None).await.unwrap();
        for _ in 0..12 {
            let _ = accounts.sign_in("owner@example.com", "a wrong guess!", None).await;
        }
        assert!(matches!(accounts.sign_in("owner@example.com", "the right password", None).await, Err(AccountError::Throttled(_))));
        let (_, kept) = accounts.sign_in("owner@example.com", "the right password", Some(&device)).await.unwrap();
        assert_eq!(kept, device, "the browser keeps its token");
        let stranger = tollgate_core::random_token(32);
        assert!(
            matches!(accounts.sign_in("owner@example.com", "the right password", Some(&stranger)).await, Err(AccountError::Throttled(_))),
            "a device cookie of no earlier success is no key"
        );
    }

    /// A store whose `n`th operation from now tells the test to drop its caller's future (a
    /// client hanging up there); the operation itself completes.
    struct CutsAt {
        inner: tollgate_core::kv::memory::MemoryKv,
        left: std::sync::atomic::AtomicI64,
        cut: tokio::sync::Notify,
    }

    impl CutsAt {
        fn pass<'a, T: Send + 'a>(
            &'a self,
            op: impl FnOnce() -> tollgate_core::kv::KvFuture<'a, T> + Send + 'a,
        ) -> tollgate_core::kv::KvFuture<'a, T> {
            if self.left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                self.cut.notify_waiters();
            }
            op()
        }
    }

    impl tollgate_core::kv::Kv for CutsAt {
        fn get<'a>(&'a self, key: &'a str) -> tollgate_core::kv::KvFuture<'a, Option<String>> {
            self.pass(move || self.inner.get(key))
        }
        fn set<'a>(&'a self, key: &'a str, value: &'a str) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.set(key, value))
        }
        fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> tollgate_core::kv::KvFuture<'a, bool> {
            self.pass(move || self.inner.set_if_absent(key, value))
        }
        fn delete<'a>(&'a self, key: &'a str) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.delete(key))
        }
        fn take<'a>(&'a self, key: &'a str) -> tollgate_core::kv::KvFuture<'a, Option<String>> {
            self.pass(move || self.inner.take(key))
        }
        fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.set_expiring(key, value, ttl))
        }
        fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> tollgate_core::kv::KvFuture<'a, u64> {
            self.pass(move || self.inner.increment(key, ttl))
        }
        fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> tollgate_core::kv::KvFuture<'a, Option<String>> {
            self.pass(move || self.inner.hash_get(key, field))
        }
        fn hash_get_all<'a>(&'a self, key: &'a str) -> tollgate_core::kv::KvFuture<'a, Vec<(String, String)>> {
            self.pass(move || self.inner.hash_get_all(key))
        }
        fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.hash_set(key, field, value))
        }
        fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> tollgate_core::kv::KvFuture<'a, bool> {
            self.pass(move || self.inner.hash_remove(key, field))
        }
        fn ping(&self) -> tollgate_core::kv::KvFuture<'_, ()> {
            self.pass(move || self.inner.ping())
        }
        fn scan_keys<'a>(
            &'a self,
            prefix: &'a str,
            cursor: &'a str,
            limit: usize,
        ) -> tollgate_core::kv::KvFuture<'a, (Vec<String>, String)> {
            self.pass(move || self.inner.scan_keys(prefix, cursor, limit))
        }
        fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> tollgate_core::kv::KvFuture<'a, bool> {
            self.pass(move || self.inner.mark_pending(customer, event_id))
        }
        fn pending_generation<'a>(&'a self, customer: &'a str) -> tollgate_core::kv::KvFuture<'a, Option<u64>> {
            self.pass(move || self.inner.pending_generation(customer))
        }
        fn pending_customers(&self, limit: usize) -> tollgate_core::kv::KvFuture<'_, Vec<String>> {
            self.pass(move || self.inner.pending_customers(limit))
        }
        fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> tollgate_core::kv::KvFuture<'a, bool> {
            self.pass(move || self.inner.lease(name, token, ttl))
        }
        fn release<'a>(&'a self, name: &'a str, token: &'a str) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.release(name, token))
        }
        fn commit_sync<'a>(
            &'a self,
            customer: &'a str,
            token: &'a str,
            generation: u64,
            entry: Option<&'a str>,
        ) -> tollgate_core::kv::KvFuture<'a, tollgate_core::kv::Commit> {
            self.pass(move || self.inner.commit_sync(customer, token, generation, entry))
        }
        fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> tollgate_core::kv::KvFuture<'a, bool> {
            self.pass(move || self.inner.usage_add(bucket, amount, once))
        }
        fn usage_take<'a>(&'a self, bucket: &'a str) -> tollgate_core::kv::KvFuture<'a, Option<(String, u64)>> {
            self.pass(move || self.inner.usage_take(bucket))
        }
        fn usage_pending(&self, limit: usize) -> tollgate_core::kv::KvFuture<'_, tollgate_core::kv::UsagePending> {
            self.pass(move || self.inner.usage_pending(limit))
        }
        fn usage_sent<'a>(&'a self, record: &'a str) -> tollgate_core::kv::KvFuture<'a, ()> {
            self.pass(move || self.inner.usage_sent(record))
        }
        fn admit<'a>(&'a self, quota: tollgate_core::kv::Quota<'a>) -> tollgate_core::kv::KvFuture<'a, tollgate_core::kv::Admission> {
            self.pass(move || self.inner.admit(quota))
        }
        fn reserve_rate<'a>(
            &'a self,
            name: &'a str,
            per_second: u32,
            max_wait: Duration,
        ) -> tollgate_core::kv::KvFuture<'a, Option<Duration>> {
            self.pass(move || self.inner.reserve_rate(name, per_second, max_wait))
        }
    }

    /// A confirmation or a reset whose client hangs up after any number of store operations
    /// leaves one of two states, never a third: nothing done and the link still good, or all
    /// done and the link spent (never a spent link without the account, never a new password
    /// beside a session of the old one).
    #[tokio::test]
    async fn links_cut_short_anywhere_are_done_whole_or_not_at_all() {
        use tollgate_core::kv::Kv as _;
        let kv = Arc::new(CutsAt { inner: Default::default(), left: i64::MAX.into(), cut: Default::default() });
        let mailer = Arc::new(Mailer::new(&tollgate_core::config::MailSettings::Outbox).unwrap());
        let accounts =
            LocalAccounts::new(kv.clone(), mailer.clone(), "http://app.test".into(), false, Duration::from_secs(86_400), Clock::system());
        let cut_after = |n: i64| kv.left.store(n, std::sync::atomic::Ordering::SeqCst);
        // Run `work` until it finishes (Some) or the store says to hang up (None: dropped), then
        // let whatever it left running finish.
        async fn cut_short<T>(kv: &CutsAt, work: impl std::future::Future<Output = T>) -> Option<T> {
            let done = tokio::select! {
                done = work => Some(done),
                _ = kv.cut.notified() => None,
            };
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            done
        }
        let mut cuts = 0;
        for n in 0.. {
            let email = format!("cut{n}@example.com");
            accounts.sign_up(&email, "/dashboard", None).await.unwrap();
            let token = link_token(&mailer, "/auth/confirm");
            cut_after(n);
            let attempt = cut_short(&kv, accounts.confirm_sign_up(&token, "first long password")).await;
            cut_after(i64::MAX);
            let made = kv.inner.get(&keys::account(&email)).await.unwrap().is_some();
            let link_good = accounts.sign_up_link_valid(&token).await.unwrap();
            assert!(made != link_good, "cut after {n} steps: account made {made}, link still good {link_good}");
            match attempt {
                Some(done) => {
                    done.unwrap();
                    break;
                }
                None => cuts += 1,
            }
        }
        assert!(cuts >= 1, "the confirmation was cut ({cuts})");

        let (_, session) = signed_up(&accounts, &mailer, "reset@example.com", "first long password").await;
        let mut cuts = 0;
        for n in 0.. {
            accounts.request_password_reset("reset@example.com", None).await.unwrap();
            let token = link_token(&mailer, "/auth/reset/new");
            let password = format!("new password {n}");
            cut_after(n);
            let attempt = cut_short(&kv, accounts.reset_password(&token, &password)).await;
            cut_after(i64::MAX);
            let changed = accounts.check_password(Email::parse("reset@example.com"), &password).await.is_ok();
            let link_good = accounts.reset_link_valid(&token).await.unwrap();
            let old_session = accounts.authenticate(&session).await.unwrap().is_some();
            assert!(changed != link_good, "cut after {n} steps: changed {changed}, link good {link_good}");
            assert!(!(changed && old_session), "cut after {n} steps: a new password beside the old session");
            if changed {
                assert!(attempt.is_none() || attempt.unwrap().is_ok());
                break;
            }
            cuts += 1;
        }
        assert!(cuts >= 2, "the reset was cut before it changed anything ({cuts})");
    }

    #[tokio::test]
    async fn a_recipient_gets_a_few_emails_and_an_address_is_refused_after_more() {
        let (_, mailer, accounts) = accounts();
        let address = Some(IpAddr::from([203, 0, 113, 9]));
        for _ in 0..5 {
            accounts.request_password_reset("flood@example.com", address).await.unwrap();
        }
        assert_eq!(mailer.outbox().unwrap().len(), 3, "three emails to one recipient per window; the rest answer alike");
        let mut refused = None;
        for n in 0..60 {
            if let Err(e) = accounts.request_password_reset(&format!("r{n}@example.com"), address).await {
                refused = Some(e);
                break;
            }
        }
        assert!(matches!(refused, Some(AccountError::Throttled(_))), "{refused:?}");
        assert!(accounts.request_password_reset("other@example.com", Some(IpAddr::from([203, 0, 113, 10]))).await.is_ok());
    }
}
