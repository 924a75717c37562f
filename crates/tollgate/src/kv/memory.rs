//! In-memory KV, for unit tests and `KV_URL=memory:`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Kv, KvFuture};

#[derive(Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, String>>,
}

impl MemoryKv {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, String>) -> T) -> T {
        f(&mut self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Kv for MemoryKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        let value = self.with(|m| m.get(key).cloned());
        Box::pin(async move { Ok(value) })
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| m.insert(key.to_string(), value.to_string()));
        Box::pin(async { Ok(()) })
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        let stored = self.with(|m| {
            if m.contains_key(key) {
                false
            } else {
                m.insert(key.to_string(), value.to_string());
                true
            }
        });
        Box::pin(async move { Ok(stored) })
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        self.with(|m| m.remove(key));
        Box::pin(async { Ok(()) })
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn contract() {
        super::super::check_contract(&super::MemoryKv::default()).await;
    }
}
