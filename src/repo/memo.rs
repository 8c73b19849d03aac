//! A persistent key → value memo in the local cache, for work that can be skipped next time.
//!
//! `vault copy` remembers, per source repository, which target chunks a file's source chunks
//! became, so that a cron-driven copy re-reads only new files. The memo is a hint, never the
//! truth: callers check every remembered blob against the target's index before relying on it.
//! Without a cache directory (or when another process holds it) the memo lives in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::Result;

/// A key → value memo, on disk (RocksDB) or in memory.
pub struct Memo {
    db: Option<(rocksdb::DB, PathBuf)>,
    mem: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo(persistent: {})", self.db.is_some())
    }
}

impl Memo {
    /// Opens (creating) the memo at `dir`; falls back to memory when that is impossible.
    pub fn open(dir: Option<&Path>) -> Self {
        let db = dir.and_then(|d| {
            let mut o = rocksdb::Options::default();
            o.create_if_missing(true);
            o.set_keep_log_file_num(2);
            match rocksdb::DB::open(&o, d) {
                Ok(db) => Some((db, d.to_path_buf())),
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "memo not available; keeping it in memory");
                    None
                }
            }
        });
        Self {
            db,
            mem: Mutex::new(HashMap::new()),
        }
    }

    /// The value remembered for `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some((db, path)) = &self.db {
            return db.get(key).map_err(|e| super::cache::db_err(path, e));
        }
        Ok(self
            .mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    /// Remembers `value` for `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if let Some((db, path)) = &self.db {
            return db
                .put(key, value)
                .map_err(|e| super::cache::db_err(path, e));
        }
        self.mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}
