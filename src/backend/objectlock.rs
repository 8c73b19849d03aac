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

use crate::backend::{Backend, DynBackend};
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
    forward_to_inner!(
        location,
        create,
        read,
        read_into,
        read_range,
        read_range_into,
        will_read,
        write,
        write_file,
        staging_dir,
        append_only,
        replace,
        list,
        list_each,
        stat,
    );
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
    fn object_lock_days(&self) -> Option<u32> {
        Some(self.days)
    }
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// Takes `object_lock=DAYS` out of `-o` options (vault's own key, not the service's). On S3
/// it also asks for Content-MD5 on uploads: buckets with object lock refuse uploads without
/// it (or an SDK checksum header, which OpenDAL does not send).
pub(crate) fn take_option(
    options: &mut super::location::BackendOptions,
    s3: bool,
) -> Result<Option<u32>> {
    let Some(v) = options.take("object_lock") else {
        return Ok(None);
    };
    let days = v
        .trim()
        .trim_end_matches('d')
        .parse::<u32>()
        .ok()
        .filter(|d| *d > 0 && *d <= 36_500)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "backend option object_lock={v:?}: the retention in days (1..=36500)"
            ))
        })?;
    if s3 && !options.contains("checksum_algorithm") {
        options.set("checksum_algorithm", "md5");
    }
    Ok(Some(days))
}

/// Wraps a backend when a retention is configured.
pub fn wrap(inner: DynBackend, days: Option<u32>) -> DynBackend {
    match days {
        Some(d) if d > 0 => Arc::new(ObjectLockBackend::new(inner, d)),
        _ => inner,
    }
}
