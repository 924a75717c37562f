//! The embedded default: one redb file in `DATA_DIR`.
//!
//! Reads run directly. Writes go to one writer thread that commits whatever has queued up in a
//! single durable (fsync'd) transaction and then answers every caller: each write is on disk
//! before its caller continues, and a burst of writes shares one fsync.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{Kv, KvError, KvFuture};

const TABLE: TableDefinition<&str, &str> = TableDefinition::new("kv");

/// Writes queued at most, before callers wait for room.
const QUEUE: usize = 4096;

enum Write {
    Set(String, String),
    SetIfAbsent(String, String),
    Delete(String),
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<bool, KvError>>,
}

pub struct RedbKv {
    db: Arc<Database>,
    writes: mpsc::Sender<Pending>,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

impl RedbKv {
    pub fn open(path: &Path) -> anyhow::Result<RedbKv> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("DATA_DIR: cannot create {}: {e}", dir.display()))?;
        }
        let db = Arc::new(Database::create(path).map_err(|e| anyhow::anyhow!("cannot open the KV file {}: {e}", path.display()))?);
        {
            let tx = db.begin_write()?;
            tx.open_table(TABLE)?;
            tx.commit()?;
        }
        let (writes, queue) = mpsc::channel(QUEUE);
        let writer_db = db.clone();
        std::thread::Builder::new().name("kv-writer".into()).spawn(move || writer(writer_db, queue))?;
        Ok(RedbKv { db, writes })
    }

    fn read(&self, key: &str) -> Result<Option<String>, KvError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        Ok(table.get(key).map_err(unavailable)?.map(|v| v.value().to_string()))
    }

    async fn submit(&self, write: Write) -> Result<bool, KvError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Pending { write, reply }).await.map_err(|_| KvError::Unavailable("the KV writer stopped".into()))?;
        answer.await.map_err(|_| KvError::Unavailable("the KV writer stopped".into()))?
    }
}

/// Commit queued writes in batches, one fsync per batch.
fn writer(db: Arc<Database>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        let result = (|| -> Result<Vec<bool>, redb::Error> {
            let tx = db.begin_write()?;
            let mut outcomes = Vec::with_capacity(batch.len());
            {
                let mut table = tx.open_table(TABLE)?;
                for pending in &batch {
                    outcomes.push(match &pending.write {
                        Write::Set(k, v) => {
                            table.insert(k.as_str(), v.as_str())?;
                            true
                        }
                        Write::SetIfAbsent(k, v) => {
                            let present = table.get(k.as_str())?.is_some();
                            if !present {
                                table.insert(k.as_str(), v.as_str())?;
                            }
                            !present
                        }
                        Write::Delete(k) => table.remove(k.as_str())?.is_some(),
                    });
                }
            }
            tx.commit()?;
            Ok(outcomes)
        })();
        match result {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for pending in batch {
                    let _ = pending.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

impl Kv for RedbKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        Box::pin(async move { self.read(key) })
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move { self.submit(Write::Set(key.into(), value.into())).await.map(|_| ()) })
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        Box::pin(self.submit(Write::SetIfAbsent(key.into(), value.into())))
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move { self.submit(Write::Delete(key.into())).await.map(|_| ()) })
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(async move { self.read("tollgate:ping").map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract_and_persistence() {
        let dir = std::env::temp_dir().join(format!("tollgate-redb-{}", crate::random_token(8)));
        let path = dir.join("kv.redb");
        {
            let kv = RedbKv::open(&path).unwrap();
            super::super::check_contract(&kv).await;
            kv.set("kept", "value").await.unwrap();
        }
        // Give the writer thread of the dropped store a moment to exit and release the file.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let reopened = RedbKv::open(&path).unwrap();
        assert_eq!(reopened.get("kept").await.unwrap().as_deref(), Some("value"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn concurrent_set_if_absent_has_one_winner() {
        let dir = std::env::temp_dir().join(format!("tollgate-redb-{}", crate::random_token(8)));
        let kv = Arc::new(RedbKv::open(&dir.join("kv.redb")).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let kv = kv.clone();
            tasks.spawn(async move { kv.set_if_absent("race", &format!("v{i}")).await.unwrap() });
        }
        let winners = tasks.join_all().await.into_iter().filter(|w| *w).count();
        assert_eq!(winners, 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
