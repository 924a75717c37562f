//! The embedded default: one redb file in `DATA_DIR`.
//!
//! Reads run directly. Writes go to one writer thread that commits whatever has queued up in a
//! single durable (fsync'd) transaction and then answers every caller: each write is on disk
//! before its caller continues, and a burst of writes shares one fsync.
//!
//! After a failed write transaction (a full disk, an I/O error) redb refuses every later one, so
//! the writer closes the file and opens it again before its next batch; until that succeeds,
//! reads and writes answer "unavailable" (and `/readyz` says so).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::local::{self, Leases, ReadTable, Table};
use super::{Commit, Kv, KvError, KvFuture};

const TABLE: TableDefinition<&str, &str> = TableDefinition::new("kv");

/// Writes queued at most, before callers wait for room.
const QUEUE: usize = 4096;

/// A write to run inside the writer's transaction. It returns what to tell its caller once the
/// transaction has committed (or failed): nobody hears "done" before the data is on disk.
type Job = Box<dyn FnOnce(&mut dyn Table) -> Result<Finish, KvError> + Send>;
type Finish = Box<dyn FnOnce(Result<(), KvError>) + Send>;

/// The open database; `None` while the writer is reopening it.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

pub struct RedbKv {
    db: Slot,
    writes: mpsc::Sender<Job>,
    /// The writer thread, joined on drop: the file lock is released before `drop` returns, so
    /// another process (a `tollgate sync` started right after) can open the file at once.
    writer: Option<std::thread::JoinHandle<()>>,
    leases: Arc<Leases>,
    /// When expired event ids were last removed (a write transaction: not on every sweep).
    pruned: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Expiry is read from it.
    clock: crate::clock::Clock,
}

/// How often expired event ids are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

/// The writer's open table, seen through the shared [`Table`] interface.
struct WriteTable<'a, 'tx>(&'a mut redb::Table<'tx, &'static str, &'static str>);

impl Table for WriteTable<'_, '_> {
    fn insert(&mut self, key: &str, value: &str) -> Result<(), KvError> {
        self.0.insert(key, value).map(|_| ()).map_err(unavailable)
    }
    fn remove(&mut self, key: &str) -> Result<(), KvError> {
        self.0.remove(key).map(|_| ()).map_err(unavailable)
    }
}

impl ReadTable for WriteTable<'_, '_> {
    fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        get(self.0, key)
    }
    fn scan(&self, prefix: &str, start: &str, limit: usize) -> Result<Vec<(String, String)>, KvError> {
        scan(self.0, prefix, start, limit)
    }
}

/// A read transaction's table, seen through the shared [`ReadTable`] interface.
struct ReadRows<'a>(&'a redb::ReadOnlyTable<&'static str, &'static str>);

impl ReadTable for ReadRows<'_> {
    fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        get(self.0, key)
    }
    fn scan(&self, prefix: &str, start: &str, limit: usize) -> Result<Vec<(String, String)>, KvError> {
        scan(self.0, prefix, start, limit)
    }
}

fn get(table: &impl ReadableTable<&'static str, &'static str>, key: &str) -> Result<Option<String>, KvError> {
    Ok(table.get(key).map_err(unavailable)?.map(|v| v.value().to_string()))
}

fn scan(
    table: &impl ReadableTable<&'static str, &'static str>,
    prefix: &str,
    start: &str,
    limit: usize,
) -> Result<Vec<(String, String)>, KvError> {
    let mut found = Vec::new();
    for row in table.range(start..).map_err(unavailable)? {
        let (k, v) = row.map_err(unavailable)?;
        if !k.value().starts_with(prefix) || found.len() >= limit {
            break;
        }
        found.push((k.value().to_string(), v.value().to_string()));
    }
    Ok(found)
}

impl RedbKv {
    /// The file at `path` (made if missing), on the system's clock.
    pub fn open(path: &Path) -> anyhow::Result<RedbKv> {
        RedbKv::open_with_clock(path, crate::clock::Clock::system())
    }

    pub fn open_with_clock(path: &Path, clock: crate::clock::Clock) -> anyhow::Result<RedbKv> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("DATA_DIR: cannot create {}: {e}", dir.display()))?;
        }
        let db = open_database(path).map_err(|e| match e {
            // redb locks its file: only one process may have it open.
            redb::Error::DatabaseAlreadyOpen => anyhow::anyhow!(
                "a running tollgate holds {}: stop it, or use KV_URL=redis://… to share one KV between processes",
                path.display()
            ),
            e => anyhow::anyhow!("cannot open the KV file {}: {e}", path.display()),
        })?;
        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writes, queue) = mpsc::channel(QUEUE);
        let (writer_db, writer_path) = (db.clone(), path.to_path_buf());
        let writer = std::thread::Builder::new().name("kv-writer".into()).spawn(move || writer(writer_db, writer_path, queue))?;
        let leases = Arc::new(Leases::new(clock.clone()));
        Ok(RedbKv { db, writes, writer: Some(writer), leases, pruned: Default::default(), clock })
    }

    fn read<T>(&self, f: impl FnOnce(&dyn ReadTable) -> Result<T, KvError>) -> Result<T, KvError> {
        let db = current(&self.db)?;
        let tx = db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        f(&ReadRows(&table))
    }

    /// Run `op` in the writer's next transaction; the answer comes after the commit.
    fn write<'a, T: Send + 'static>(&'a self, op: impl FnOnce(&mut dyn Table) -> Result<T, KvError> + Send + 'static) -> KvFuture<'a, T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |table| {
            let value = op(table)?;
            Ok(Box::new(move |committed: Result<(), KvError>| {
                let _ = reply.send(committed.map(|_| value));
            }) as Finish)
        });
        let stopped = || KvError::Unavailable("the KV write did not commit".into());
        KvFuture::new(async move {
            self.writes.send(job).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        })
    }
}

impl RedbKv {
    /// Commit what is queued, stop the writer and release the file, off the async threads: when
    /// this returns, another process can open the file.
    pub async fn close(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Drop for RedbKv {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what was queued; the database
        // itself closes when `db` drops right after this (the writer's copy of it is gone by then).
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.writes, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn open_database(path: &Path) -> Result<Database, redb::Error> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    tx.open_table(TABLE)?;
    tx.commit()?;
    Ok(db)
}

fn current(slot: &Slot) -> Result<Arc<Database>, KvError> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| KvError::Unavailable("the KV file is being reopened".into()))
}

/// Close the database and open it again (the file lock is released once the last reader lets go).
fn reopen(slot: &Slot, path: &Path) -> Result<(), KvError> {
    slot.write().unwrap_or_else(|p| p.into_inner()).take();
    let mut last = None;
    for _ in 0..50 {
        match open_database(path) {
            Ok(db) => {
                *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                tracing::warn!(path = %path.display(), "the KV file was reopened after a failed write");
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(KvError::Unavailable(format!("cannot reopen the KV file: {}", last.map(|e| e.to_string()).unwrap_or_default())))
}

/// Commit queued writes in batches, one fsync per batch; reopen the file after a failed batch.
fn writer(slot: Slot, path: PathBuf, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        let result = (|| -> Result<Vec<Finish>, KvError> {
            let db = match current(&slot) {
                Ok(db) => db,
                Err(_) => {
                    reopen(&slot, &path)?;
                    current(&slot)?
                }
            };
            let tx = db.begin_write().map_err(unavailable)?;
            let mut finishes = Vec::with_capacity(batch.len());
            {
                let mut table = tx.open_table(TABLE).map_err(unavailable)?;
                for job in batch.drain(..) {
                    finishes.push(job(&mut WriteTable(&mut table))?);
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(finishes)
        })();
        match result {
            Ok(finishes) => finishes.into_iter().for_each(|finish| finish(Ok(()))),
            // The jobs' repliers are dropped with them: their callers hear that the write failed.
            Err(e) => {
                tracing::error!(error = %e, "a KV write transaction failed; reopening the file");
                if let Err(e) = reopen(&slot, &path) {
                    tracing::error!(error = %e, "reopening failed; the next write tries again");
                }
            }
        }
    }
}

impl Kv for RedbKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        KvFuture::new(async move { self.read(|t| t.get(key)) })
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |t| t.insert(&key, &value))
    }
    fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a str) -> KvFuture<'a, bool> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |t| local::set_if_absent(t, &key, &value))
    }
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, ()> {
        let key = key.to_string();
        self.write(move |t| t.remove(&key))
    }
    fn take<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<String>> {
        let key = key.to_string();
        let now = self.clock.unix_now();
        self.write(move |t| local::take(t, &key, now))
    }
    fn set_expiring<'a>(&'a self, key: &'a str, value: &'a str, ttl: Duration) -> KvFuture<'a, ()> {
        let (key, value) = (key.to_string(), value.to_string());
        let now = self.clock.unix_now();
        self.write(move |t| local::set_expiring(t, &key, &value, ttl, now))
    }
    fn increment<'a>(&'a self, key: &'a str, ttl: Duration) -> KvFuture<'a, u64> {
        let key = key.to_string();
        let now = self.clock.unix_now();
        self.write(move |t| local::increment(t, &key, ttl, now))
    }
    fn hash_get<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, Option<String>> {
        KvFuture::new(async move { self.read(|t| local::hash_get(t, key, field)) })
    }
    fn hash_get_all<'a>(&'a self, key: &'a str) -> KvFuture<'a, Vec<(String, String)>> {
        KvFuture::new(async move { self.read(|t| local::hash_get_all(t, key)) })
    }
    fn hash_set<'a>(&'a self, key: &'a str, field: &'a str, value: &'a str) -> KvFuture<'a, ()> {
        let (key, field, value) = (key.to_string(), field.to_string(), value.to_string());
        self.write(move |t| local::hash_set(t, &key, &field, &value))
    }
    fn hash_remove<'a>(&'a self, key: &'a str, field: &'a str) -> KvFuture<'a, bool> {
        let (key, field) = (key.to_string(), field.to_string());
        self.write(move |t| local::hash_remove(t, &key, &field))
    }
    fn ping(&self) -> KvFuture<'_, ()> {
        KvFuture::new(async move { self.read(|t| t.get("tollgate:ping").map(|_| ())) })
    }
    fn scan_keys<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> KvFuture<'a, (Vec<String>, String)> {
        KvFuture::new(async move { self.read(|t| local::scan_keys(t, prefix, cursor, limit)) })
    }
    fn mark_pending<'a>(&'a self, customer: &'a str, event_id: Option<&'a str>) -> KvFuture<'a, bool> {
        let (customer, event_id) = (customer.to_string(), event_id.map(str::to_string));
        let now = self.clock.unix_now();
        self.write(move |t| local::mark_pending(t, &customer, event_id.as_deref(), now))
    }
    fn pending_generation<'a>(&'a self, customer: &'a str) -> KvFuture<'a, Option<u64>> {
        KvFuture::new(async move { self.read(|t| local::pending_generation(t, customer)) })
    }
    fn pending_customers(&self, limit: usize) -> KvFuture<'_, Vec<String>> {
        KvFuture::new(async move {
            let prune = {
                let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
                let now = self.clock.now();
                let due = pruned.is_none_or(|at| now - at >= PRUNE_EVERY);
                if due {
                    *pruned = Some(now);
                }
                due
            };
            if prune {
                let now = self.clock.unix_now();
                self.write(move |t| local::forget_expired(t, now, 10_000)).await?;
            }
            self.read(|t| local::pending_customers(t, limit))
        })
    }
    fn lease<'a>(&'a self, name: &'a str, token: &'a str, ttl: Duration) -> KvFuture<'a, bool> {
        local::ready(self.leases.lease(name, token, ttl))
    }
    fn release<'a>(&'a self, name: &'a str, token: &'a str) -> KvFuture<'a, ()> {
        self.leases.release(name, token);
        local::ready(())
    }
    fn commit_sync<'a>(&'a self, customer: &'a str, token: &'a str, generation: u64, entry: Option<&'a str>) -> KvFuture<'a, Commit> {
        let (customer, token, entry, leases) = (customer.to_string(), token.to_string(), entry.map(str::to_string), self.leases.clone());
        self.write(move |t| local::commit_sync(t, &leases, &customer, &token, generation, entry.as_deref()))
    }
    fn usage_add<'a>(&'a self, bucket: &'a str, amount: u64, once: Option<&'a str>) -> KvFuture<'a, bool> {
        let (bucket, once, now) = (bucket.to_string(), once.map(str::to_string), self.clock.unix_now());
        self.write(move |t| local::usage_add(t, &bucket, amount, once.as_deref(), now))
    }
    fn usage_take<'a>(&'a self, bucket: &'a str) -> KvFuture<'a, Option<(String, u64)>> {
        let bucket = bucket.to_string();
        self.write(move |t| local::usage_take(t, &bucket))
    }
    fn usage_pending(&self, limit: usize) -> KvFuture<'_, super::UsagePending> {
        KvFuture::new(async move { self.read(|t| local::usage_pending(t, limit)) })
    }
    fn usage_sent<'a>(&'a self, record: &'a str) -> KvFuture<'a, ()> {
        let record = record.to_string();
        self.write(move |t| local::hash_remove(t, super::keys::USAGE_SENDING, &record).map(drop))
    }
    fn admit<'a>(&'a self, quota: super::Quota<'a>) -> KvFuture<'a, super::Admission> {
        let minute = quota.minute.map(|(key, limit)| (key.to_string(), limit));
        let period = quota.period.map(|(key, limit, ttl)| (key.to_string(), limit, ttl));
        let (leases, now) = (self.leases.clone(), self.clock.unix_now());
        self.write(move |t| {
            let quota = super::Quota {
                minute: minute.as_ref().map(|(k, l)| (k.as_str(), *l)),
                period: period.as_ref().map(|(k, l, ttl)| (k.as_str(), *l, *ttl)),
            };
            local::admit(t, &leases, quota, now)
        })
    }
    fn reserve_rate<'a>(&'a self, name: &'a str, per_second: u32, max_wait: Duration) -> KvFuture<'a, Option<Duration>> {
        local::ready(self.leases.reserve(name, per_second, max_wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_and_pending_syncs_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = RedbKv::open(&path).unwrap();
            kv.set("kept", "value").await.unwrap();
            assert!(kv.mark_pending("cus_kept", Some("evt_1")).await.unwrap());
        }
        let reopened = RedbKv::open(&path).unwrap();
        assert_eq!(reopened.get("kept").await.unwrap().as_deref(), Some("value"));
        assert_eq!(reopened.pending_customers(10).await.unwrap(), ["cus_kept"], "pending syncs survive a restart");
        assert!(!reopened.mark_pending("cus_kept", Some("evt_1")).await.unwrap(), "and so do recorded event ids");
    }
}
