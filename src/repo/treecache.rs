//! Local copies of tree packs (`format-spec/07-index.md`, "Local cache").
//!
//! Tree blobs are read on every snapshot (the parent's trees), `ls`, restore and check. Fetching
//! them one ranged read at a time is slow on object storage, and data packs may sit in cold
//! storage; so the first time a tree blob is needed, its whole pack (tree packs hold only tree
//! blobs and are small) is fetched once, checked against its name, and kept in
//! `<cache>/trees/<pack id>`. Later reads come from the local copy and are still authenticated
//! and re-hashed blob by blob; a local copy that fails is deleted and fetched again. Disposable
//! like the rest of the cache.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::crypto::storage_hash;
use crate::id::PackId;
use crate::{Error, Result};

/// The directory of cached tree packs.
#[derive(Debug, Clone)]
pub(crate) struct TreePackCache {
    dir: PathBuf,
}

impl TreePackCache {
    /// A cache in `dir` (created on first store).
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, pack: &PackId) -> PathBuf {
        self.dir.join(pack.to_hex())
    }

    /// `len` bytes at `offset` of a cached pack, if it is cached (and long enough).
    pub(crate) fn read(&self, pack: &PackId, offset: u64, len: u64) -> Option<Vec<u8>> {
        let f = std::fs::File::open(self.path(pack)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// Keeps a copy of a whole pack, if its bytes match its name.
    pub(crate) fn store(&self, pack: &PackId, bytes: &[u8]) -> Result<()> {
        // A re-sealed pack keeps its name (key rotation); its blobs are authenticated on use.
        if storage_hash(bytes) != pack.0 && !crate::format::envelope::is_resealed(bytes) {
            // Never cache damaged bytes; blobs in it are still verified one by one.
            tracing::warn!(%pack, "tree pack does not match its name; not caching it");
            return Ok(());
        }
        crate::backend::local::private_dir_all(&self.dir)?;
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd)?;
        let tmp = self
            .dir
            .join(format!(".{}.{}", pack.to_hex(), hex::encode(rnd)));
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, self.path(pack)).map_err(|e| Error::io(&tmp, e))
    }

    /// Drops a cached copy (after it failed verification).
    pub(crate) fn remove(&self, pack: &PackId) {
        let _ = std::fs::remove_file(self.path(pack));
    }

    /// Deletes cached packs that are not in `keep` (after packs were pruned).
    pub(crate) fn retain(&self, keep: &HashSet<PackId>) {
        self.forget(&|id| !keep.contains(id));
    }

    /// Deletes cached packs for which `gone` holds, and files that are not cached packs.
    pub(crate) fn forget(&self, gone: &dyn Fn(&PackId) -> bool) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let keep_it = name
                .to_str()
                .and_then(PackId::from_hex)
                .is_some_and(|id| !gone(&id));
            if !keep_it {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
