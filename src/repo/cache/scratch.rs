//! Private, temporary sets and maps on disk: what engines use instead of hash sets and maps
//! that would grow with the repository (trees visited, blobs in use, trees already
//! converted). Each is a RocksDB database in the command's temporary directory, removed when
//! dropped, with a small memory profile.

use std::path::Path;
use std::sync::Mutex;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::{CF_BLOBS, CacheDb, Profile, blob_key, cache_err, db_err, decode_location};
use crate::Result;
use crate::id::{BlobId, BlobType};
use crate::repo::index::BlobLocation;

/// Writes buffered before they are applied (buffered writes are invisible to lookups until
/// [`MarkSet::flush`]).
const BATCH: usize = 50_000;

/// A set of blob keys: the "used" marks of `prune` and the trees a walk has visited.
/// Iterates in the same key order as the blob index, so the two can be merge-joined.
pub struct MarkSet {
    db: CacheDb,
    batch: Mutex<(WriteBatch, usize)>,
}

impl std::fmt::Debug for MarkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MarkSet({:?})", self.db)
    }
}

fn unlogged() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    wo
}

impl MarkSet {
    /// An empty set in a new directory below `temp_dir` (removed on drop).
    pub fn new(temp_dir: &Path) -> Result<Self> {
        Ok(Self {
            db: CacheDb::open_temporary(temp_dir, b"marks", Profile::Scratch)?,
            batch: Mutex::new((WriteBatch::default(), 0)),
        })
    }

    /// Adds a key (buffered; visible to `contains` after [`MarkSet::flush`]).
    pub fn insert(&self, t: BlobType, id: &BlobId) -> Result<()> {
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        b.0.put_cf(self.db.cf(CF_BLOBS), blob_key(t, id), []);
        b.1 += 1;
        if b.1 >= BATCH {
            let full = std::mem::take(&mut b.0);
            b.1 = 0;
            self.write(full)?;
        }
        Ok(())
    }

    /// Adds a key and reports whether it was new (unbuffered; for visiting trees once).
    /// Not atomic across threads: two threads may both see a key as new.
    pub fn insert_new(&self, t: BlobType, id: &BlobId) -> Result<bool> {
        if self.contains(t, id)? {
            return Ok(false);
        }
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_BLOBS), blob_key(t, id), []);
        self.write(b)?;
        Ok(true)
    }

    fn write(&self, b: WriteBatch) -> Result<()> {
        self.db
            .db
            .write_opt(b, &unlogged())
            .map_err(|e| db_err(&self.db.path, e))
    }

    /// Writes buffered keys.
    pub fn flush(&self) -> Result<()> {
        let full = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.1 = 0;
            std::mem::take(&mut b.0)
        };
        self.write(full)
    }

    /// Whether a key was inserted (and flushed).
    pub fn contains(&self, t: BlobType, id: &BlobId) -> Result<bool> {
        self.db
            .db
            .get_pinned_cf(self.db.cf(CF_BLOBS), blob_key(t, id))
            .map(|v| v.is_some())
            .map_err(|e| db_err(&self.db.path, e))
    }

    /// Calls `f` for every key in the set, in key order.
    pub fn for_each(&self, mut f: impl FnMut(BlobType, BlobId) -> Result<()>) -> Result<()> {
        self.flush()?;
        for item in self.db.db.iterator_cf_opt(
            self.db.cf(CF_BLOBS),
            super::scan_options(),
            IteratorMode::Start,
        ) {
            let (k, _) = item.map_err(|e| db_err(&self.db.path, e))?;
            let Some(t) = k.first().and_then(|c| BlobType::from_code(*c)) else {
                return Err(cache_err(&self.db.path, "undecodable key"));
            };
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[1..33]);
            f(t, BlobId(id))?;
        }
        Ok(())
    }
}

/// Merge-joins the blob entries of `index` after `after` with `marks`, in key order: calls `f`
/// for every indexed blob with whether it is marked. Memory stays constant.
pub(crate) fn for_each_marked(
    index: &CacheDb,
    marks: &MarkSet,
    after: Option<(BlobType, BlobId)>,
    mut f: impl FnMut(BlobType, BlobId, BlobLocation, bool) -> Result<()>,
) -> Result<()> {
    marks.flush()?;
    let start = after.map(|(t, id)| blob_key(t, &id));
    let mode = || match &start {
        Some(k) => IteratorMode::From(k, rocksdb::Direction::Forward),
        None => IteratorMode::Start,
    };
    let mut m = marks
        .db
        .db
        .iterator_cf_opt(marks.db.cf(CF_BLOBS), super::scan_options(), mode());
    let mut next_mark: Option<Box<[u8]>> = match m.next() {
        Some(r) => Some(r.map_err(|e| db_err(&marks.db.path, e))?.0),
        None => None,
    };
    for item in index
        .db
        .iterator_cf_opt(index.cf(CF_BLOBS), super::scan_options(), mode())
    {
        let (k, v) = item.map_err(|e| db_err(&index.path, e))?;
        if start.as_ref().map(|s| &s[..]) == Some(&k[..]) {
            continue;
        }
        let (Some(t), Some(loc)) = (
            k.first().and_then(|c| BlobType::from_code(*c)),
            decode_location(&v),
        ) else {
            return Err(cache_err(&index.path, "undecodable blob entry"));
        };
        while let Some(mk) = &next_mark
            && mk.as_ref() < &k[..]
        {
            next_mark = match m.next() {
                Some(r) => Some(r.map_err(|e| db_err(&marks.db.path, e))?.0),
                None => None,
            };
        }
        let marked = next_mark.as_deref() == Some(&k[..]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&k[1..33]);
        f(t, BlobId(id), loc, marked)?;
    }
    Ok(())
}

/// A map from 32-byte ids to byte values (trees converted by `copy`, rewritten by `repair`).
pub struct ScratchMap {
    db: CacheDb,
}

impl std::fmt::Debug for ScratchMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScratchMap({:?})", self.db)
    }
}

impl ScratchMap {
    /// An empty map in a new directory below `temp_dir` (removed on drop).
    pub fn new(temp_dir: &Path) -> Result<Self> {
        Ok(Self {
            db: CacheDb::open_temporary(temp_dir, b"scratch", Profile::Scratch)?,
        })
    }

    /// The value stored for `key`.
    pub fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.db
            .db
            .get_cf(self.db.cf(CF_BLOBS), key)
            .map_err(|e| db_err(&self.db.path, e))
    }

    /// Calls `f` for every entry, in key order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8; 32], &[u8]) -> Result<()>) -> Result<()> {
        for item in self.db.db.iterator_cf_opt(
            self.db.cf(CF_BLOBS),
            super::scan_options(),
            IteratorMode::Start,
        ) {
            let (k, v) = item.map_err(|e| db_err(&self.db.path, e))?;
            let Ok(key) = <[u8; 32]>::try_from(&k[..]) else {
                return Err(cache_err(&self.db.path, "undecodable key"));
            };
            f(&key, &v)?;
        }
        Ok(())
    }

    /// Stores `value` for `key`.
    pub fn put(&self, key: &[u8; 32], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_BLOBS), key, value);
        self.db
            .db
            .write_opt(b, &unlogged())
            .map_err(|e| db_err(&self.db.path, e))
    }
}
