//! The key-value store: a small trait, three backends, and every key name in one place.
//!
//! Keys written by Tollgate (see ARCHITECTURE.md for who owns which):
//! - `stripe:user:{userId}` → Stripe customer id (the recipe's key; written once, if absent)
//! - `stripe:customer:{customerId}` → the subscription cache JSON (the recipe's key; written only by the sync)
//! - `tollgate:account:{email}` → local account JSON (id, email, password hash)
//! - `tollgate:session:{token}` → local session JSON (user id, email, expiry)

pub mod memory;
pub mod redb;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::KvSettings;
use crate::domain::{CustomerId, UserId};

#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("the KV store is unavailable: {0}")]
    Unavailable(String),
}

pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

/// What the flow needs from a KV store. Values are strings (JSON where structured).
pub trait Kv: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>>;
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()>;
    /// Store only if the key is absent; says whether this call stored it.
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool>;
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()>;
    /// A cheap round trip, for `/readyz`.
    fn ping(&self) -> KvFuture<'_, ()>;
}

pub type SharedKv = Arc<dyn Kv>;

pub async fn open(settings: &KvSettings) -> anyhow::Result<SharedKv> {
    Ok(match settings {
        KvSettings::Memory => Arc::new(memory::MemoryKv::default()),
        KvSettings::Embedded { path } => Arc::new(redb::RedbKv::open(path)?),
        KvSettings::Redis { url } => Arc::new(redis::RedisKv::connect(url).await?),
    })
}

pub mod keys {
    use super::*;

    pub fn user_customer(user: &UserId) -> String {
        format!("stripe:user:{user}")
    }

    pub fn customer_cache(customer: &CustomerId) -> String {
        format!("stripe:customer:{customer}")
    }

    pub fn account(email: &str) -> String {
        format!("tollgate:account:{email}")
    }

    pub fn session(token: &str) -> String {
        format!("tollgate:session:{token}")
    }
}

/// The contract every backend must keep; run by each backend's tests.
#[cfg(test)]
pub async fn check_contract(kv: &dyn Kv) {
    let key = format!("contract:{}", crate::random_token(8));
    assert_eq!(kv.get(&key).await.unwrap(), None);
    kv.set(&key, "one").await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("one"));
    assert!(!kv.set_if_absent(&key, "two").await.unwrap(), "present: not replaced");
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("one"));
    kv.set(&key, "{\"json\": \"ünïcode ✓\"}").await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("{\"json\": \"ünïcode ✓\"}"));
    kv.delete(&key).await.unwrap();
    assert_eq!(kv.get(&key).await.unwrap(), None);
    assert!(kv.set_if_absent(&key, "three").await.unwrap(), "absent: stored");
    assert_eq!(kv.get(&key).await.unwrap().as_deref(), Some("three"));
    kv.delete(&key).await.unwrap();
    kv.ping().await.unwrap();
}
