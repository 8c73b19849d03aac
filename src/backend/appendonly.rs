//! Append-only access (`--append-only`): a layer that refuses every delete, so a client that
//! holds it can add snapshots, read and verify, but can never remove or replace anything —
//! whatever the storage credentials would allow. Commands that must delete (forget, prune,
//! release, unlock, key removal, repairs) fail with a clear error before changing anything;
//! locks are left for staleness to expire instead of being deleted (`format-spec/09-locks.md`).

use super::{Backend, DynBackend};
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
        list,
        list_each,
        stat,
        object_lock_days,
    );
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
    fn append_only(&self) -> bool {
        true
    }
}
