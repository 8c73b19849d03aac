//! The blob index: which pack holds each blob (`format-spec/07-index.md`).
//!
//! The backend's index objects are the source of truth. [`BlobIndex`] mirrors them in the local
//! RocksDB cache ([`super::cache`]): at open it lists `index/`, ingests only the objects it has
//! not seen, and rebuilds from scratch when an object it ingested has disappeared (after
//! `prune` or `repair index`). A process that finds the cache opened read-write by another
//! process keeps the entries it is missing in memory instead; one that finds the cache
//! damaged rebuilds it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use crate::format::KIND_INDEX;
use crate::format::index::{Index, decode_index, encode_index};
use crate::format::layout::Dir;
use crate::id::{BlobId, BlobType, IndexId, PackId};
use crate::{Error, ObjectRef, Result};

use super::Repository;
use super::cache::CacheDb;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobLocation {
    /// The pack that holds it.
    pub pack: PackId,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Stored (sealed) length.
    pub length: u64,
    /// Plaintext length.
    pub raw_length: u64,
}

type Overlay = HashMap<(BlobType, BlobId), BlobLocation>;

/// Lookup service over every index object in the repository.
pub struct BlobIndex {
    store: CacheDb,
    rebuilt: bool,
    overlay: RwLock<Overlay>,
    overlay_packs: RwLock<HashMap<PackId, u64>>,
    damaged: Mutex<Vec<(IndexId, Error)>>,
}

impl std::fmt::Debug for BlobIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobIndex({:?})", self.store)
    }
}

impl Repository {
    /// Reads and decodes one index object.
    pub fn read_index(&self, id: &IndexId) -> Result<Index> {
        let object = ObjectRef::Index(*id);
        let plain = self.read_object(Dir::Index, KIND_INDEX, &id.0, object.clone())?;
        decode_index(&plain).map_err(|e| Error::corrupt(object, e.0))
    }

    /// Seals and writes an index object; returns its id.
    pub fn write_index(&self, index: &Index) -> Result<IndexId> {
        self.write_object(Dir::Index, KIND_INDEX, &encode_index(index))
            .map(IndexId)
    }

    /// Ids of every index object in the backend.
    pub fn list_index_ids(&self) -> Result<Vec<IndexId>> {
        Ok(self
            .backend()
            .list(Dir::Index.name())?
            .iter()
            .filter_map(|o| Dir::Index.name_of(&o.path).map(IndexId))
            .collect())
    }
}

/// Loads index objects on a few threads (the backend may be remote), calling `sink` in
/// whatever order they arrive. Damaged objects are passed to `sink` as errors.
pub(crate) fn load_indexes(
    repo: &Repository,
    ids: Vec<IndexId>,
    sink: &(dyn Fn(IndexId, Result<Index>) -> Result<()> + Sync),
) -> Result<()> {
    let queue = Mutex::new(ids.into_iter());
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        // Two loaders: each holds one decoded index object and its write batch (bounded RAM
        // while ingesting a large index), and two requests in flight hide remote latency.
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some(id) = next else { break };
                    if let Err(e) = sink(id, repo.read_index(&id)) {
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl BlobIndex {
    /// Opens the cache in `dir` (or a temporary one) and brings it up to date with the backend.
    pub fn open(repo: &Repository, dir: Option<&Path>) -> Result<Self> {
        let marker = repo.config().repo_id.0;
        let mut store = match dir {
            Some(d) => CacheDb::open(d, &marker).or_else(|e| {
                tracing::warn!(error = %e, "cannot use the local cache; using a temporary one");
                CacheDb::open_temporary(&marker)
            })?,
            None => CacheDb::open_temporary(&marker)?,
        };
        let in_backend: HashSet<IndexId> = repo.list_index_ids()?.into_iter().collect();
        let mut ingested = store.ingested()?;
        let rebuilt = !ingested.is_subset(&in_backend);
        if rebuilt {
            tracing::info!("index objects were replaced since the cache was built; rebuilding it");
            store = if store.is_writable() {
                store.reset(&marker)?
            } else {
                CacheDb::open_temporary(&marker)?
            };
            ingested.clear();
        }
        let missing: Vec<IndexId> = in_backend.difference(&ingested).copied().collect();
        let bulk = missing.len() > 16;
        let index = BlobIndex {
            store,
            rebuilt,
            overlay: RwLock::new(HashMap::new()),
            overlay_packs: RwLock::new(HashMap::new()),
            damaged: Mutex::new(Vec::new()),
        };
        if !missing.is_empty() {
            tracing::debug!(count = missing.len(), "ingesting index objects");
            load_indexes(repo, missing, &|id, loaded| {
                match loaded {
                    Ok(idx) => index.insert(id, &idx, bulk)?,
                    Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                        tracing::warn!(index = %id, error = %e, "skipping damaged index object");
                        index
                            .damaged
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, e));
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            })?;
            if index.store.is_writable() {
                index.store.flush()?;
                if bulk {
                    // One sorted run: lookups after a bulk ingest are 4–5× faster (measured at
                    // 10^7 entries: 35k → 150k+ lookups/s).
                    index.store.compact();
                }
            }
        }
        Ok(index)
    }

    fn insert(&self, id: IndexId, idx: &Index, bulk: bool) -> Result<()> {
        if self.store.is_writable() {
            return self.store.ingest(id, idx, bulk);
        }
        let mut o = self.overlay.write().unwrap_or_else(|p| p.into_inner());
        let mut op = self
            .overlay_packs
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for p in &idx.packs {
            op.insert(p.id, p.size);
            for b in &p.blobs {
                o.insert(
                    (b.blob_type, b.id),
                    BlobLocation {
                        pack: p.id,
                        offset: b.offset,
                        length: b.length,
                        raw_length: b.raw_length,
                    },
                );
            }
        }
        Ok(())
    }

    /// Whether opening had to rebuild the cache because index objects were replaced.
    pub fn was_rebuilt(&self) -> bool {
        self.rebuilt
    }

    /// Records an index object this process has just written.
    pub fn add(&self, id: IndexId, idx: &Index) -> Result<()> {
        self.insert(id, idx, false)
    }

    /// Where a blob is stored.
    pub fn get(&self, blob_type: BlobType, id: &BlobId) -> Result<Option<BlobLocation>> {
        if let Some(loc) = self.store.get(blob_type, id)? {
            return Ok(Some(loc));
        }
        Ok(self
            .overlay
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(blob_type, *id))
            .copied())
    }

    /// Whether a blob is stored.
    pub fn contains(&self, blob_type: BlobType, id: &BlobId) -> Result<bool> {
        Ok(self.get(blob_type, id)?.is_some())
    }

    /// Index objects that could not be read when the index was opened.
    pub fn damaged_indexes(&self) -> Vec<(IndexId, String)> {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, e)| (*id, e.to_string()))
            .collect()
    }

    /// Calls `f` for every indexed blob (streaming; memory does not grow with the index).
    pub fn for_each_blob(
        &self,
        mut f: impl FnMut(BlobType, BlobId, BlobLocation) -> Result<()>,
    ) -> Result<()> {
        self.store.for_each_blob(&mut f)?;
        let o = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        for ((t, id), loc) in o.iter() {
            f(*t, *id, *loc)?;
        }
        Ok(())
    }

    /// Calls `f` for every indexed blob with whether `marks` holds it (a merge-join in key
    /// order; constant memory). Entries only in memory (read-only cache) come last.
    pub fn for_each_marked(
        &self,
        marks: &super::cache::MarkSet,
        mut f: impl FnMut(BlobType, BlobId, BlobLocation, bool) -> Result<()>,
    ) -> Result<()> {
        self.store.for_each_marked(marks, &mut f)?;
        let o = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        for ((t, id), loc) in o.iter() {
            // `get` prefers the store: an entry shadowed by it is not the location in use.
            if self.store.get(*t, id)?.is_none() {
                f(*t, *id, *loc, marks.contains(*t, id)?)?;
            }
        }
        Ok(())
    }

    /// Calls `f` for every indexed pack with its size.
    pub fn for_each_pack(&self, mut f: impl FnMut(PackId, u64) -> Result<()>) -> Result<()> {
        self.store.for_each_pack(&mut f)?;
        let o = self.overlay_packs.read().unwrap_or_else(|p| p.into_inner());
        for (id, size) in o.iter() {
            f(*id, *size)?;
        }
        Ok(())
    }
}
