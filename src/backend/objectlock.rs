//! Object lock: storage that keeps every object for a retention period (`-o object_lock=DAYS`,
//! matching the bucket's default retention in S3 compliance or governance mode, or an Azure
//! immutability policy).
//!
//! Such storage turns a delete of a young object into a delete marker: the bytes stay (and are
//! billed) until the retention ends, but vault could no longer see them. So this layer never
//! sends that delete: a delete of a data object (pack, index, snapshot, hold, audit record,
//! WAL file) younger than the retention fails with [`Error::Retained`], which prune turns into
//! "scheduled for a later prune". Locks, staging files and key files are deleted as usual (a
//! delete marker is what they need: a revoked key must disappear at once).

use std::sync::Arc;

use crate::backend::{Access, Backend, DynBackend, ObjectInfo};
use crate::{Error, Result};

/// Deletes that wait for the retention to end.
#[derive(Debug)]
pub struct ObjectLockBackend {
    inner: DynBackend,
    days: u32,
}

impl ObjectLockBackend {
    /// Wraps `inner`, whose objects are retained for `days` days after they are written.
    pub fn new(inner: DynBackend, days: u32) -> Self {
        Self { inner, days }
    }
}

/// Whether deleting `path` is held back by the retention (data, not locks, staging or keys).
fn retained_kind(path: &str) -> bool {
    !(path.starts_with("locks/") || path.starts_with("tmp/") || path.starts_with("keys/"))
}

impl Backend for ObjectLockBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.write(path, data)
    }
    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        self.inner.write_file(path, local, access)
    }
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.staging_dir()
    }
    fn append_only(&self) -> bool {
        self.inner.append_only()
    }
    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.replace(path, data)
    }
    fn delete(&self, path: &str) -> Result<()> {
        if retained_kind(path) {
            let info = self.inner.stat(path)?;
            let now = crate::format::time::Timestamp::now();
            // Unknown write time: treat as written now (never delete what may be retained).
            let written = info.modified.unwrap_or(now);
            let until = written.secs + i64::from(self.days) * 86_400;
            if now.secs < until {
                return Err(Error::Retained {
                    path: path.to_string(),
                    written: rfc3339(written.secs),
                    until: rfc3339(until),
                    days: self.days,
                });
            }
        }
        self.inner.delete(path)
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(dir)
    }
    fn list_each(&self, dir: &str, f: &mut dyn FnMut(ObjectInfo) -> Result<()>) -> Result<()> {
        self.inner.list_each(dir, f)
    }
    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.inner.stat(path)
    }
    fn object_lock_days(&self) -> Option<u32> {
        Some(self.days)
    }
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// Wraps a backend when a retention is configured.
pub fn wrap(inner: DynBackend, days: Option<u32>) -> DynBackend {
    match days {
        Some(d) if d > 0 => Arc::new(ObjectLockBackend::new(inner, d)),
        _ => inner,
    }
}
