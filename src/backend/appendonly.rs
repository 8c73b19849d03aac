//! Append-only access (`--append-only`): a layer that refuses every delete, so a client that
//! holds it can add snapshots, read and verify, but can never remove or replace anything —
//! whatever the storage credentials would allow. Commands that must delete (forget, prune,
//! release, unlock, key removal, repairs) fail with a clear error before changing anything;
//! locks are left for staleness to expire instead of being deleted (`format-spec/09-locks.md`).

use super::{Access, Backend, DynBackend, ObjectInfo};
use crate::{Error, Result};

/// A backend that refuses deletes.
#[derive(Debug)]
pub struct AppendOnlyBackend {
    inner: DynBackend,
}

impl AppendOnlyBackend {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend) -> Self {
        Self { inner }
    }
}

impl Backend for AppendOnlyBackend {
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
    fn replace(&self, path: &str, _data: &[u8]) -> Result<()> {
        Err(Error::PermissionDenied {
            what: format!("replacement of {path}"),
            reason: "the repository is opened append-only (--append-only): nothing is ever \
                     replaced; re-encryption needs a client without --append-only"
                .into(),
        })
    }
    fn delete(&self, path: &str) -> Result<()> {
        Err(Error::PermissionDenied {
            what: format!("delete of {path}"),
            reason:
                "the repository is opened append-only (--append-only): nothing is ever deleted; \
                     forget, prune, release and unlock need a client without --append-only"
                    .into(),
        })
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
        self.inner.object_lock_days()
    }
    fn append_only(&self) -> bool {
        true
    }
}
