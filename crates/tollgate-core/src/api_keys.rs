//! API keys: how programs call a product's API through Tollgate. A key belongs to a user, or to
//! the organization its creator acted for (then it calls as that organization, while its creator
//! is still a member). Only a hash of the secret is stored, with a short prefix to tell keys
//! apart on a page; the secret is shown once, when the key is made.
//!
//! Keys in the KV:
//! - `tollgate:api-key:{sha256(secret)}` → `{id, name, prefix, userId, email, orgId?, createdAtMs}`
//! - `tollgate:api-keys:{userId|orgId}`, a hash: key id → the same record and its secret's hash
//!   (the owner's list)
//! - `tollgate:api-key-used:{id}` → when the key was last used (unix ms, written at most once a
//!   minute per key and instance)
//!
//! A lookup is one KV read (plus the membership for an organization's key); callers keep the
//! answer a moment, as they keep identities, so a revocation takes effect within that moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::domain::{Email, OrgId, User, UserId};
use crate::kv::{KvError, SharedKv};
use crate::orgs::Orgs;

/// How often a key's "last used" time is written (per key, per instance).
const USE_RECORDED_EVERY: Duration = Duration::from_secs(60);
/// Keys one owner may hold.
pub const KEYS_PER_OWNER: usize = 100;

pub mod keys {
    pub fn by_secret(secret_hash: &str) -> String {
        format!("tollgate:api-key:{secret_hash}")
    }
    pub fn of_owner(owner: &str) -> String {
        format!("tollgate:api-keys:{owner}")
    }
    pub fn used(id: &str) -> String {
        format!("tollgate:api-key-used:{id}")
    }
}

/// A key as stored and listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The secret's first characters (`tg_live_AbCd`), to recognise it.
    pub prefix: String,
    /// Who made it; the key calls as them.
    pub user_id: UserId,
    pub email: Email,
    /// The organization it calls for, if it was made for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    pub created_at_ms: i64,
}

/// The owner's list entry: the key and its secret's hash (to revoke it).
#[derive(Serialize, Deserialize)]
struct Listed {
    key: ApiKey,
    hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("Name the key (1 to 60 characters).")]
    InvalidName,
    #[error("There is no such key.")]
    NotFound,
    #[error("You hold {KEYS_PER_OWNER} keys already: revoke one first.")]
    TooMany,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Whether `secret` has the shape of a key (anything else is never looked up).
pub fn is_secret(secret: &str) -> bool {
    let rest = secret.strip_prefix("tg_live_").or_else(|| secret.strip_prefix("tg_test_"));
    rest.is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn hash_of(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub struct ApiKeys {
    kv: SharedKv,
    orgs: Arc<Orgs>,
    clock: Clock,
    /// `tg_live_` for a deployment on live Stripe keys, else `tg_test_`.
    live: bool,
    /// When this instance last recorded each key's use.
    recorded: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl ApiKeys {
    pub fn new(kv: SharedKv, orgs: Arc<Orgs>, clock: Clock, live: bool) -> ApiKeys {
        ApiKeys { kv, orgs, clock, live, recorded: Mutex::default() }
    }

    /// A new key for `user`, calling for `org` when given (the caller checked the user may);
    /// the key and its secret, which is not kept.
    pub async fn create(&self, user: &User, org: Option<&OrgId>, name: &str) -> Result<(ApiKey, String), ApiKeyError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
            return Err(ApiKeyError::InvalidName);
        }
        let owner = org.map_or(user.id.as_str(), OrgId::as_str);
        if self.kv.hash_get_all(&keys::of_owner(owner)).await?.len() >= KEYS_PER_OWNER {
            return Err(ApiKeyError::TooMany);
        }
        let secret = format!("{}{}", if self.live { "tg_live_" } else { "tg_test_" }, crate::random::random_token(40));
        let key = ApiKey {
            id: format!("key_{}", crate::random::random_token(20)),
            name: name.to_string(),
            prefix: secret[..12].to_string(),
            user_id: user.id.clone(),
            email: user.email.clone(),
            org_id: org.cloned(),
            created_at_ms: self.clock.unix_now_ms(),
        };
        let hash = hash_of(&secret);
        // The lookup first: a key listed but not usable would look revocable yet do nothing.
        self.kv.set(&keys::by_secret(&hash), &serde_json::to_string(&key).expect("a key serialises")).await?;
        let listed = Listed { key: key.clone(), hash };
        self.kv.hash_set(&keys::of_owner(owner), &key.id, &serde_json::to_string(&listed).expect("serialises")).await?;
        Ok((key, secret))
    }

    /// The keys of `owner` (a user id or an organization id), newest first, with when each was
    /// last used (unix ms).
    pub async fn list(&self, owner: &str) -> Result<Vec<(ApiKey, Option<i64>)>, ApiKeyError> {
        let mut found = Vec::new();
        for (_, json) in self.kv.hash_get_all(&keys::of_owner(owner)).await? {
            let Ok(listed) = serde_json::from_str::<Listed>(&json) else { continue };
            let used = self.kv.get(&keys::used(&listed.key.id)).await?.and_then(|t| t.parse().ok());
            found.push((listed.key, used));
        }
        found.sort_by(|(a, _), (b, _)| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        Ok(found)
    }

    /// Revoke `owner`'s key `id`: its secret stops working at once here, within the callers'
    /// moment of memory elsewhere.
    pub async fn revoke(&self, owner: &str, id: &str) -> Result<(), ApiKeyError> {
        let Some(json) = self.kv.hash_get(&keys::of_owner(owner), id).await? else { return Err(ApiKeyError::NotFound) };
        if let Ok(listed) = serde_json::from_str::<Listed>(&json) {
            self.kv.delete(&keys::by_secret(&listed.hash)).await?;
        }
        self.kv.hash_remove(&keys::of_owner(owner), id).await?;
        self.kv.delete(&keys::used(id)).await?;
        Ok(())
    }

    /// The key `secret` opens, if any: an organization's key only while its creator is a member
    /// (their role now is the caller's). Its use is recorded, at most once a minute here.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<(ApiKey, User)>, ApiKeyError> {
        if !is_secret(secret) {
            return Ok(None);
        }
        let Some(json) = self.kv.get(&keys::by_secret(&hash_of(secret))).await? else { return Ok(None) };
        let Ok(key) = serde_json::from_str::<ApiKey>(&json) else { return Ok(None) };
        let org = match &key.org_id {
            None => None,
            Some(org) => {
                let member = self.orgs.member(org, &key.user_id).await.map_err(|e| match e {
                    crate::orgs::OrgError::Kv(e) => ApiKeyError::Kv(e),
                    _ => ApiKeyError::NotFound,
                })?;
                let Some(member) = member else { return Ok(None) };
                let slug = self.orgs.get(org).await.ok().flatten().map(|o| o.slug).unwrap_or_default();
                Some(crate::domain::ActiveOrg { id: org.clone(), role: member.role, slug })
            }
        };
        // "Last used" is a nicety: a store that cannot take it now does not refuse the call.
        if let Err(e) = self.record_use(&key.id).await {
            tracing::warn!(key = %key.id, error = %e, "could not record the key's use");
        }
        let user = User { id: key.user_id.clone(), email: key.email.clone(), org };
        Ok(Some((key, user)))
    }

    async fn record_use(&self, id: &str) -> Result<(), KvError> {
        let now = self.clock.now();
        let due = {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            if recorded.len() > 10_000 {
                recorded.clear();
            }
            let due = recorded.get(id).is_none_or(|at| now.duration_since(*at) >= USE_RECORDED_EVERY);
            if due {
                recorded.insert(id.to_string(), now);
            }
            due
        };
        match due {
            true => self.kv.set(&keys::used(id), &self.clock.unix_now_ms().to_string()).await,
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::MemoryKv;

    #[tokio::test]
    async fn a_key_opens_until_revoked_and_only_its_hash_is_stored() {
        let kv: SharedKv = Arc::new(MemoryKv::default());
        let orgs = Orgs::new(kv.clone(), Clock::system());
        let keys = ApiKeys::new(kv.clone(), orgs, Clock::system(), false);
        let user = User { id: UserId::parse("user_k").unwrap(), email: Email::parse("k@example.com").unwrap(), org: None };
        let (key, secret) = keys.create(&user, None, " CI deploys ").await.unwrap();
        assert!(is_secret(&secret) && secret.starts_with("tg_test_") && key.prefix == secret[..12] && key.name == "CI deploys");
        let (opened, caller) = keys.authenticate(&secret).await.unwrap().expect("the key opens");
        assert_eq!((opened.id.as_str(), caller.id.as_str()), (key.id.as_str(), "user_k"));
        let (mut stored, mut cursor) = (Vec::new(), String::new());
        loop {
            let (page, next) = kv.scan_keys("tollgate:", &cursor, 100).await.unwrap();
            for k in page {
                stored.push(kv.get(&k).await.unwrap().unwrap_or_default());
            }
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        assert!(!stored.iter().any(|v| v.contains(&secret)), "the secret is nowhere in the store");
        assert_eq!(keys.list("user_k").await.unwrap().len(), 1);
        assert!(keys.authenticate(&secret.replace("tg_test_", "tg_live_")).await.unwrap().is_none());
        assert!(keys.authenticate("tg_test_short").await.unwrap().is_none());
        assert!(matches!(keys.revoke("user_other", &key.id).await, Err(ApiKeyError::NotFound)), "only its owner revokes it");
        keys.revoke("user_k", &key.id).await.unwrap();
        assert!(keys.authenticate(&secret).await.unwrap().is_none());
        assert!(keys.list("user_k").await.unwrap().is_empty());
        assert!(matches!(keys.create(&user, None, "  ").await, Err(ApiKeyError::InvalidName)));
    }
}
