//! Keeping the state in a data file (`--data FILE`): each action's writes are appended as JSON
//! lines and synced before the action answers, and the file is rewritten whole (a snapshot) at
//! load, after a reset, and when the appended part grows past twice the snapshot.
//!
//! Hand-written because the state is already JSON and the need is narrow: a file of records read
//! back in order. An embedded database would add a second copy of every object for no gain here.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::cards::Outcome;
use crate::model::PendingSubscription;

/// Below this many appended bytes the file is never rewritten.
const MIN_COMPACTION_BYTES: u64 = 64 * 1024 * 1024;

/// One line of the data file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// An object as it is now (created, changed or deleted).
    Put(Value),
    /// An existing object now belongs to a customer (a payment method attached).
    Index {
        customer: String,
        id: String,
    },
    Secret {
        id: String,
        secret: Option<String>,
    },
    StartupEndpoints(Vec<String>),
    Outcome {
        id: String,
        outcome: Outcome,
    },
    Pending {
        id: String,
        pending: Option<PendingSubscription>,
    },
    Notice(String),
    ClockOffset(i64),
    /// Everything before is void (`/_emulator/reset`); never written to the file, which is rewritten instead.
    Reset,
}

impl Journal {
    /// The records of the file at `path`, in order (none if it does not exist yet). A crash while
    /// appending leaves a partial last line: that action was never answered, so it is dropped.
    pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>()?;
        let mut records = Vec::with_capacity(lines.len());
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Record>(line) {
                Ok(record) => records.push(record),
                Err(_) if n + 1 == lines.len() => tracing::warn!(file = %path.display(), "ignoring a partial last line"),
                Err(err) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} line {}: {err}", path.display(), n + 1)))
                }
            }
        }
        Ok(records)
    }

    /// Replace the file by exactly `records` (written beside it, synced, moved into place), open for appending.
    pub fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<Journal> {
        let buffer = lines(records)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension("tmp");
        {
            let mut file = File::create(&temporary)?;
            file.write_all(&buffer)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal { path: path.to_path_buf(), file, appended: 0, snapshot: buffer.len() as u64 })
    }

    /// Append records and sync them.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let buffer = lines(records)?;
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.appended += buffer.len() as u64;
        Ok(())
    }

    /// Whether the appended part has outgrown the snapshot, so the file should be rewritten.
    pub fn wants_rewrite(&self) -> bool {
        self.appended > MIN_COMPACTION_BYTES.max(2 * self.snapshot)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lines(records: &[Record]) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    for record in records {
        serde_json::to_writer(&mut buffer, record)?;
        buffer.push(b'\n');
    }
    Ok(buffer)
}

/// The open data file.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes appended since the last snapshot, and the snapshot's size.
    appended: u64,
    snapshot: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;
    use crate::store::Store;

    fn customer(id: &str) -> Value {
        json!({ "id": id, "object": "customer", "email": "a@example.com" })
    }

    #[test]
    fn a_store_reopened_from_its_file_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-yet").join("state.jsonl"); // directories are made as needed
        {
            let mut store = Store::open(&path).unwrap();
            store.insert(customer("cus_1"));
            store.insert(json!({ "id": "pm_1", "object": "payment_method", "customer": null }));
            store.set_card_outcome("pm_1", Outcome::FailsWhenCharged);
            store.advance_control_clock(3600);
            store.save().unwrap();
            store.update("pm_1", serde_json::Map::from_iter([("customer".to_string(), json!("cus_1"))]));
            store.index_under_customer("cus_1", "pm_1");
            store.insert(customer("cus_2"));
            store.save().unwrap();
            // Written but never saved: lost, as an action that never answered.
            store.insert(customer("cus_3"));
        }
        // A torn last line is ignored.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"put\":{\"id\":\"cus_").unwrap();
        let store = Store::open(&path).unwrap();
        assert!(store.get("cus_1").is_some() && store.get("cus_2").is_some() && store.get("cus_3").is_none());
        assert_eq!(store.card_outcome("pm_1"), Some(&Outcome::FailsWhenCharged));
        assert_eq!(store.clock_offset, 3600);
        let ids: Vec<&Value> = store.iter_kind("payment_method", Some("cus_1")).collect();
        assert_eq!(ids.len(), 1, "the attached card is listed once under its customer");
        let customers: Vec<String> = store.iter_kind("customer", None).map(|c| c["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(customers, ["cus_2", "cus_1"], "creation order survives");
        // A damaged line that is not the last is an error, not silently dropped data.
        std::fs::write(&path, "garbage\n{\"clock_offset\":1}\n").unwrap();
        assert!(Store::open(&path).is_err());
    }
}
