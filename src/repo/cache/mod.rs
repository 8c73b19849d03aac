//! The local blob index: a RocksDB database in the cache directory (`format-spec/07-index.md`,
//! "Local cache").
//!
//! This is the only module that uses RocksDB. It stores what the backend's index objects say,
//! so RAM stays flat however large the repository grows: lookups go through bloom filters and
//! a small block cache, not a hash map. It never talks to the backend; [`super::index`]
//! decides what to ingest. The cache is disposable: a damaged or mismatched database is wiped
//! and rebuilt from the backend.
//!
//! Column families:
//! * `blobs`:   `type(1) || blob_id(32)` → `pack_id(32) || offset || length || raw_length` (uvarints)
//! * `packs`:   `pack_id(32)` → `size` (uvarint)
//! * `indexes`: `index_id(32)` → `blob_count` (uvarint): the index objects already ingested
//! * `default`: `schema` and `repo` markers
//!
//! One process per cache directory opens the database read-write (guarded by an `flock` on
//! `writer.lock`); any other process opens it read-only and keeps what it adds in memory.
//!
//! The cache is only a mirror, so no cache error ever fails a command: [`super::index`]
//! replaces a store that fails at any time by a fresh one rebuilt from the repository, and
//! leaves a `rebuild` marker so that the next process wipes the damaged database. Errors are
//! classified by RocksDB's own kind: an I/O error (a full disk) is not called corruption.
//!
//! [`scratch`] holds the same machinery for private, temporary sets and maps that engines use
//! instead of hash sets that would grow with the repository.

pub mod scratch;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, DB, DBCompressionType, IteratorMode, Options,
    WriteBatch, WriteOptions,
};

use crate::format::index::Index;
use crate::format::pack::PackEntry;
use crate::format::wire::{Reader, Writer};
use crate::id::{BlobId, BlobType, IndexId, PackId};
use crate::{Error, ObjectRef, Result};

use super::index::BlobLocation;
use super::process::ProcessIdentity;

pub(crate) const CF_BLOBS: &str = "blobs";
const CF_PACKS: &str = "packs";
const CF_INDEXES: &str = "indexes";
const CFS: [&str; 4] = ["default", CF_BLOBS, CF_PACKS, CF_INDEXES];
const SCHEMA: &[u8] = b"vault-cache-2";

/// Block cache shared by all column families: the cache's whole steady-state RAM budget
/// (index and filter blocks included, none pinned outside it, so it is a hard budget).
const BLOCK_CACHE_BYTES: usize = 16 << 20;
/// The same for private scratch databases (several may be open in one command).
const SCRATCH_CACHE_BYTES: usize = 4 << 20;

/// Names of temporary databases: `vault-scratch-TAG-RANDOM`, where TAG is the owner's
/// [`ProcessIdentity::tag`].
const TEMPORARY_PREFIX: &str = "vault-scratch-";

/// Removes, once per process, the temporary databases in `temp_dir` whose owner is provably
/// gone (a command killed before it could remove them; they can be as large as the index).
/// Directories of live processes, of other hosts, containers or boots are left alone.
pub(crate) fn sweep_dead_temporaries(temp_dir: &Path) {
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        if swept.iter().any(|p| p == temp_dir) {
            return;
        }
        swept.push(temp_dir.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMPORARY_PREFIX)) else {
            continue;
        };
        let Some((tag, _random)) = rest.rsplit_once('-') else {
            continue;
        };
        // Only directories this user owns (the sticky /tmp would refuse others anyway).
        let mine = e.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.uid() == rustix::process::getuid().as_raw()
        });
        if mine && ProcessIdentity::tag_is_gone(tag) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::debug!(path = %e.path().display(), "removed the temporary database of a process that is gone")
                }
                Err(err) => {
                    tracing::debug!(path = %e.path().display(), error = %err, "could not remove a dead temporary database")
                }
            }
        }
    }
}

/// Name of the marker that asks the next writer to wipe and rebuild the database.
const REBUILD_MARKER: &str = "rebuild";

/// Memory profile of a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The blob index.
    Index,
    /// A temporary set or map (smaller caches and memtables).
    Scratch,
}

/// An open cache database.
pub struct CacheDb {
    pub(crate) db: DB,
    writable: bool,
    pub(crate) path: PathBuf,
    /// Removes a temporary database's directory; declared after `db` so that it runs after
    /// the database is closed (fields drop in order), when RocksDB writes no more files.
    temporary: RemoveDir,
    _writer_lock: Option<File>,
    ingest_lock: Mutex<()>,
}

impl std::fmt::Debug for CacheDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CacheDb({}, writable: {})",
            self.path.display(),
            self.writable
        )
    }
}

fn db_options(profile: Profile) -> Options {
    let cache = Cache::new_lru_cache(match profile {
        Profile::Index => BLOCK_CACHE_BYTES,
        Profile::Scratch => SCRATCH_CACHE_BYTES,
    });
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks live in the (bounded) block cache, partitioned so that only the
    // small top level is pinned and the partitions a lookup needs are loaded; at high priority,
    // so that data blocks read for present keys do not evict the filters that answer "absent"
    // (new chunks) without touching the disk.
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_optimize_filters_for_memory(true);
    table.set_block_size(4 * 1024);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Keys are random hashes and values mostly hashes too: compression would not pay.
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(match profile {
        Profile::Index => 8 << 20,
        Profile::Scratch => 2 << 20,
    });
    opts.set_max_write_buffer_number(2);
    // A hard cap on memtable memory for the whole database (all column families), so that a
    // burst of writes waits for a flush instead of growing RSS.
    opts.set_db_write_buffer_size(match profile {
        Profile::Index => 24 << 20,
        Profile::Scratch => 6 << 20,
    });
    opts.set_arena_block_size(256 << 10);
    opts.set_max_open_files(256);
    opts.set_keep_log_file_num(2);
    opts.set_max_background_jobs(2);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts.set_paranoid_checks(true);
    opts
}

/// Every column family with the database's options (the same block cache, filters and
/// memtable sizes). Opening column families by name alone would give them RocksDB's defaults:
/// a 32 MiB block cache of their own each, no bloom filters, 64 MiB memtables.
///
/// The index's blob entries also get a bloom filter over their memtable's whole keys (a tenth
/// of its size): the many lookups of absent keys (a snapshot's new chunks) then skip the
/// skip-list search, which was 2 % of a first snapshot's CPU. Only there: every memtable
/// allocates its filter up front, and on every column family of every database it cost 5–11
/// MiB of peak RSS in most commands.
fn descriptors(opts: &Options, profile: Profile) -> Vec<rocksdb::ColumnFamilyDescriptor> {
    CFS.iter()
        .map(|name| {
            let mut o = opts.clone();
            if *name == CF_BLOBS && matches!(profile, Profile::Index) {
                o.set_memtable_whole_key_filtering(true);
                o.set_memtable_prefix_bloom_ratio(0.1);
            }
            rocksdb::ColumnFamilyDescriptor::new(*name, o)
        })
        .collect()
}

pub(crate) fn cache_err(path: &Path, reason: &str) -> Error {
    Error::corrupt(
        ObjectRef::Path(format!("local cache {}", path.display())),
        reason,
    )
}

/// Read options of full scans: blocks read by a scan are not kept in the block cache (it
/// would fill it with blocks read once, and grow RSS to its limit), and read ahead.
pub(crate) fn scan_options() -> rocksdb::ReadOptions {
    let mut o = rocksdb::ReadOptions::default();
    o.fill_cache(false);
    o.set_readahead_size(1 << 20);
    o
}

/// Maps a RocksDB error by its kind: only RocksDB's own corruption reports are damage.
pub(crate) fn db_err(path: &Path, e: rocksdb::Error) -> Error {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => Error::corrupt(
            ObjectRef::Path(format!("local cache {}", path.display())),
            e.to_string(),
        ),
        _ => Error::io(path, std::io::Error::other(e.into_string())),
    }
}

impl CacheDb {
    /// Opens the cache in `dir`: read-write if no other process has it, else read-only.
    /// A read-write open of a damaged or foreign database wipes and recreates it.
    pub fn open(dir: &Path, repo_marker: &[u8]) -> Result<Self> {
        crate::backend::local::private_dir_all(dir)?;
        let lock_path = dir.join("writer.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let db_path = dir.join("db");
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            let marker = dir.join(REBUILD_MARKER);
            if marker.exists() {
                tracing::info!("a previous run found the local cache damaged; rebuilding it");
                let _ = std::fs::remove_dir_all(&db_path);
                let _ = std::fs::remove_file(&marker);
            }
            let db = match Self::open_rw(&db_path, repo_marker, Profile::Index) {
                Ok(db) => db,
                Err(e) => {
                    tracing::warn!(error = %e, "local cache is damaged; rebuilding it");
                    let _ = std::fs::remove_dir_all(&db_path);
                    Self::open_rw(&db_path, repo_marker, Profile::Index)?
                }
            };
            return Ok(Self {
                db,
                writable: true,
                path: db_path,
                temporary: RemoveDir(None),
                _writer_lock: Some(lock),
                ingest_lock: Mutex::new(()),
            });
        }
        let opts = db_options(Profile::Index);
        let db = DB::open_cf_descriptors_read_only(
            &opts,
            &db_path,
            descriptors(&opts, Profile::Index),
            false,
        )
        .map_err(|e| db_err(&db_path, e))?;
        let marker_ok = db.get(b"repo").ok().flatten().as_deref() == Some(repo_marker)
            && db.get(b"schema").ok().flatten().as_deref() == Some(SCHEMA);
        if !marker_ok {
            return Err(cache_err(&db_path, "schema mismatch"));
        }
        Ok(Self {
            db,
            writable: false,
            path: db_path,
            temporary: RemoveDir(None),
            _writer_lock: None,
            ingest_lock: Mutex::new(()),
        })
    }

    /// Asks the next writer of the cache in `dir` to wipe and rebuild it (best effort).
    pub fn mark_for_rebuild(dir: &Path) {
        let _ = std::fs::write(dir.join(REBUILD_MARKER), b"");
    }

    /// A fresh, private, writable database in a new directory below `temp_dir` (removed on
    /// drop). The directory's name carries this process's identity, so that what a killed
    /// command left behind is removed by the next one (see [`sweep_dead_temporaries`]).
    pub fn open_temporary(temp_dir: &Path, repo_marker: &[u8], profile: Profile) -> Result<Self> {
        sweep_dead_temporaries(temp_dir);
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd)?;
        let path = temp_dir.join(format!(
            "{TEMPORARY_PREFIX}{}-{}",
            ProcessIdentity::current().tag(),
            hex::encode(rnd)
        ));
        let db = Self::open_rw(&path, repo_marker, profile)?;
        Ok(Self {
            db,
            writable: true,
            temporary: RemoveDir(Some(path.clone())),
            path,
            _writer_lock: None,
            ingest_lock: Mutex::new(()),
        })
    }

    fn open_rw(path: &Path, repo_marker: &[u8], profile: Profile) -> Result<DB> {
        crate::backend::local::private_dir_all(path)?;
        let opts = db_options(profile);
        let db = DB::open_cf_descriptors(&opts, path, descriptors(&opts, profile))
            .map_err(|e| db_err(path, e))?;
        match (db.get(b"schema"), db.get(b"repo")) {
            (Ok(Some(s)), Ok(Some(r))) if s == SCHEMA && r == repo_marker => Ok(db),
            (Ok(None), Ok(None)) => {
                let mut b = WriteBatch::default();
                b.put(b"schema", SCHEMA);
                b.put(b"repo", repo_marker);
                db.write(b).map_err(|e| db_err(path, e))?;
                Ok(db)
            }
            _ => Err(cache_err(path, "foreign or old cache schema")),
        }
    }

    /// Whether this process may write to the cache.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("invariant: column families are created at open")
    }

    /// The index objects already ingested.
    pub fn ingested(&self) -> Result<HashSet<IndexId>> {
        let mut out = HashSet::new();
        for item in
            self.db
                .iterator_cf_opt(self.cf(CF_INDEXES), scan_options(), IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| db_err(&self.path, e))?;
            if k.len() == 32 {
                let mut id = [0u8; 32];
                id.copy_from_slice(&k);
                out.insert(IndexId(id));
            }
        }
        Ok(out)
    }

    /// Records every entry of one index object, atomically with the fact that it was ingested.
    pub fn ingest(&self, id: IndexId, index: &Index, bulk: bool) -> Result<()> {
        debug_assert!(self.writable);
        let _g = self.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (blobs, packs) = (self.cf(CF_BLOBS), self.cf(CF_PACKS));
        let mut batch = WriteBatch::default();
        let mut key = [0u8; 33];
        for p in &index.packs {
            let mut w = Writer::new();
            w.uvarint(p.size);
            batch.put_cf(packs, p.id.0, w.into_bytes());
            for b in &p.blobs {
                key[0] = b.blob_type.code();
                key[1..].copy_from_slice(&b.id.0);
                batch.put_cf(blobs, key, encode_location(&p.id, b));
            }
        }
        let mut w = Writer::new();
        w.uvarint(index.blob_count() as u64);
        batch.put_cf(self.cf(CF_INDEXES), id.0, w.into_bytes());
        let mut wo = WriteOptions::default();
        wo.disable_wal(bulk);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| db_err(&self.path, e))
    }

    /// Like [`CacheDb::ingest`] from an index object's plaintext, decoded straight into the
    /// write batch (the object is never materialised). The batch, entries and "ingested"
    /// marker together, is applied atomically: entries never exist without their marker.
    pub fn ingest_plain(&self, id: IndexId, plain: &[u8], bulk: bool) -> Result<()> {
        debug_assert!(self.writable);
        let (blobs, packs) = (self.cf(CF_BLOBS), self.cf(CF_PACKS));
        let mut batch = WriteBatch::default();
        let mut key = [0u8; 33];
        let mut pack = PackId([0; 32]);
        let mut count = 0u64;
        use crate::format::index::IndexEvent;
        crate::format::index::visit_index(plain, &mut |ev| {
            match ev {
                IndexEvent::Supersedes(_) => {}
                IndexEvent::Pack(p, size) => {
                    pack = p;
                    let mut w = Writer::new();
                    w.uvarint(size);
                    batch.put_cf(packs, p.0, w.into_bytes());
                }
                IndexEvent::Entry(b) => {
                    key[0] = b.blob_type.code();
                    key[1..].copy_from_slice(&b.id.0);
                    batch.put_cf(blobs, key, encode_location(&pack, &b));
                    count += 1;
                }
            }
            Ok(())
        })
        .map_err(|e| Error::corrupt(ObjectRef::Index(id), e.0))?;
        let mut w = Writer::new();
        w.uvarint(count);
        batch.put_cf(self.cf(CF_INDEXES), id.0, w.into_bytes());
        let mut wo = WriteOptions::default();
        wo.disable_wal(bulk);
        let _g = self.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| db_err(&self.path, e))
    }

    /// Makes everything written so far durable and visible to read-only openers.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| db_err(&self.path, e))?;
        self.db
            .flush_cf(self.cf(CF_BLOBS))
            .and_then(|_| self.db.flush_cf(self.cf(CF_PACKS)))
            .and_then(|_| self.db.flush_cf(self.cf(CF_INDEXES)))
            .map_err(|e| db_err(&self.path, e))
    }

    /// Compacts the blob entries into sorted, non-overlapping files. After a bulk ingest (a
    /// rebuild) lookups otherwise probe every freshly flushed level-0 file.
    pub fn compact(&self) {
        self.db
            .compact_range_cf(self.cf(CF_BLOBS), None::<&[u8]>, None::<&[u8]>);
    }

    /// Number of level-0 files of the blob entries (a measure of how much compaction is due).
    pub fn level0_files(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(CF_BLOBS), "rocksdb.num-files-at-level0")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Where a blob is stored, if the cache knows it.
    pub fn get(&self, blob_type: BlobType, id: &BlobId) -> Result<Option<BlobLocation>> {
        let mut key = [0u8; 33];
        key[0] = blob_type.code();
        key[1..].copy_from_slice(&id.0);
        match self.db.get_pinned_cf(self.cf(CF_BLOBS), key) {
            Ok(Some(v)) => decode_location(&v)
                .map(Some)
                .ok_or_else(|| cache_err(&self.path, "undecodable blob entry")),
            Ok(None) => Ok(None),
            Err(e) => Err(db_err(&self.path, e)),
        }
    }

    /// Where each of `ids` is stored, in their order, looked up together: RocksDB's batched
    /// lookup walks each table's index once per group of sorted keys instead of once per key
    /// (a restore looks up every blob of a batch; one `get` each was 7 % of its CPU).
    pub fn get_many(
        &self,
        blob_type: BlobType,
        ids: &[BlobId],
    ) -> Result<Vec<Option<BlobLocation>>> {
        /// Keys per call: the values stay pinned in the block cache until decoded.
        const GROUP: usize = 256;
        let mut keys: Vec<([u8; 33], usize)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (blob_key(blob_type, id), i))
            .collect();
        keys.sort_unstable();
        let mut out = vec![None; ids.len()];
        for group in keys.chunks(GROUP) {
            let values =
                self.db
                    .batched_multi_get_cf(self.cf(CF_BLOBS), group.iter().map(|(k, _)| k), true);
            for ((_, i), v) in group.iter().zip(values) {
                out[*i] = match v.map_err(|e| db_err(&self.path, e))? {
                    Some(v) => Some(
                        decode_location(&v)
                            .ok_or_else(|| cache_err(&self.path, "undecodable blob entry"))?,
                    ),
                    None => None,
                };
            }
        }
        Ok(out)
    }

    /// Calls `f` for every blob the cache knows whose key is after `after` (all when `None`),
    /// in key order, without loading them all.
    pub fn for_each_blob(
        &self,
        after: Option<(BlobType, BlobId)>,
        mut f: impl FnMut(BlobType, BlobId, BlobLocation) -> Result<()>,
    ) -> Result<()> {
        let start = after.map(|(t, id)| blob_key(t, &id));
        let mode = match &start {
            Some(k) => IteratorMode::From(k, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_BLOBS), scan_options(), mode)
        {
            let (k, v) = item.map_err(|e| db_err(&self.path, e))?;
            let (Some(t), Some(loc)) = (
                k.first().and_then(|c| BlobType::from_code(*c)),
                decode_location(&v),
            ) else {
                return Err(cache_err(&self.path, "undecodable blob entry"));
            };
            if start.as_ref().map(|s| &s[..]) == Some(&k[..]) {
                continue;
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[1..33]);
            f(t, BlobId(id), loc)?;
        }
        Ok(())
    }

    /// Starts an in-place update that must not be seen half done (after prune): until
    /// [`CacheDb::end_update`], the `rebuild` marker makes the next writer wipe and rebuild.
    pub fn begin_update(&self) -> Result<()> {
        debug_assert!(self.writable);
        if self.temporary.0.is_none()
            && let Some(dir) = self.path.parent()
        {
            let marker = dir.join(REBUILD_MARKER);
            let f = File::create(&marker).map_err(|e| Error::io(&marker, e))?;
            f.sync_all().map_err(|e| Error::io(&marker, e))?;
        }
        Ok(())
    }

    /// Makes the update durable and removes the marker.
    pub fn end_update(&self) -> Result<()> {
        self.flush()?;
        if self.temporary.0.is_none()
            && let Some(dir) = self.path.parent()
        {
            let marker = dir.join(REBUILD_MARKER);
            std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
        }
        Ok(())
    }

    /// Records `entries` as stored in `pack` (overwriting where each blob was served from).
    pub fn put_locations(&self, pack: PackId, entries: &[PackEntry]) -> Result<()> {
        let blobs = self.cf(CF_BLOBS);
        let mut batch = WriteBatch::default();
        for b in entries {
            batch.put_cf(
                blobs,
                blob_key(b.blob_type, &b.id),
                encode_location(&pack, b),
            );
        }
        self.write_unlogged(batch)
    }

    fn write_unlogged(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| db_err(&self.path, e))
    }

    /// Forgets the packs for which `gone` holds and every blob location in them (one scan of
    /// the blob entries, deletions written in batches). Returns the locations removed.
    pub fn forget_packs(&self, gone: &dyn Fn(&PackId) -> bool) -> Result<u64> {
        // An iterator pins the memtables that exist while it lives, among them the one the
        // deletions fill: the scan restarts after each batch of deletions (from where it
        // stopped), so that at most one batch's memtable is held beside the live ones.
        self.flush()?;
        let (blobs, packs) = (self.cf(CF_BLOBS), self.cf(CF_PACKS));
        let mut batch = WriteBatch::default();
        let mut removed = 0u64;
        let mut resume: Option<Box<[u8]>> = None;
        loop {
            let mode = match &resume {
                Some(k) => IteratorMode::From(k, rocksdb::Direction::Forward),
                None => IteratorMode::Start,
            };
            let mut full = false;
            for item in self.db.iterator_cf_opt(blobs, scan_options(), mode) {
                let (k, v) = item.map_err(|e| db_err(&self.path, e))?;
                if resume.as_deref() == Some(&k[..]) {
                    continue; // deleted in the previous batch (the snapshot predates it)
                }
                let Some(loc) = decode_location(&v) else {
                    return Err(cache_err(&self.path, "undecodable blob entry"));
                };
                if gone(&loc.pack) {
                    batch.delete_cf(blobs, &k);
                    removed += 1;
                    if batch.len() >= 50_000 {
                        resume = Some(k);
                        full = true;
                        break;
                    }
                }
            }
            if !full {
                break;
            }
            self.write_unlogged(std::mem::take(&mut batch))?;
        }
        for item in self
            .db
            .iterator_cf_opt(packs, scan_options(), IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| db_err(&self.path, e))?;
            if let Ok(raw) = <[u8; 32]>::try_from(&k[..])
                && gone(&PackId(raw))
            {
                batch.delete_cf(packs, &k);
            }
        }
        self.write_unlogged(batch)?;
        Ok(removed)
    }

    /// Replaces the record of ingested index objects: `removed` no longer exist, `added`
    /// were written and their entries are already in the cache.
    pub fn replace_ingested(&self, removed: &[IndexId], added: &[IndexId]) -> Result<()> {
        let cf = self.cf(CF_INDEXES);
        let mut batch = WriteBatch::default();
        for id in removed {
            batch.delete_cf(cf, id.0);
        }
        for id in added {
            // The entry count is informational; 0 means "not counted".
            batch.put_cf(cf, id.0, [0u8]);
        }
        self.write_unlogged(batch)
    }

    /// Calls `f` for every pack the cache knows after `after` (all when `None`), with its
    /// size, in id order.
    pub fn for_each_pack(
        &self,
        after: Option<PackId>,
        mut f: impl FnMut(PackId, u64) -> Result<()>,
    ) -> Result<()> {
        let mode = match &after {
            Some(p) => IteratorMode::From(&p.0, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_PACKS), scan_options(), mode)
        {
            let (k, v) = item.map_err(|e| db_err(&self.path, e))?;
            let size = Reader::new(&v).uvarint().ok();
            let (true, Some(size)) = (k.len() == 32, size) else {
                return Err(cache_err(&self.path, "undecodable pack entry"));
            };
            let mut id = [0u8; 32];
            id.copy_from_slice(&k);
            if after == Some(PackId(id)) {
                continue;
            }
            f(PackId(id), size)?;
        }
        Ok(())
    }
}

impl Drop for CacheDb {
    fn drop(&mut self) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            // What the database held in memory at the end, for memory investigations.
            let prop = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
            tracing::debug!(
                path = %self.path.display(),
                block_cache = prop("rocksdb.block-cache-usage"),
                block_cache_pinned = prop("rocksdb.block-cache-pinned-usage"),
                table_readers = prop("rocksdb.estimate-table-readers-mem"),
                memtables = prop("rocksdb.cur-size-all-mem-tables"),
                live_sst = prop("rocksdb.live-sst-files-size"),
                "cache database memory"
            );
        }
    }
}

/// Removes a directory when dropped (if any).
struct RemoveDir(Option<PathBuf>);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub(crate) fn blob_key(t: BlobType, id: &BlobId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = t.code();
    key[1..].copy_from_slice(&id.0);
    key
}

/// `pack || offset || length || raw_length [|| inner || frame_raw]` (the last two for a frame
/// member).
fn encode_location(pack: &PackId, b: &PackEntry) -> Vec<u8> {
    let mut w = Writer::with_buffer(Vec::with_capacity(56));
    w.id(&pack.0);
    crate::format::pack::encode_place(&mut w, b);
    w.into_bytes()
}

pub(crate) fn decode_location(v: &[u8]) -> Option<BlobLocation> {
    let mut r = Reader::new(v);
    let pack = PackId(r.id().ok()?);
    let offset = r.uvarint().ok()?;
    let length = r.uvarint().ok()?;
    let raw_length = r.uvarint().ok()?;
    let frame = if r.finish().is_ok() {
        None
    } else {
        let f = crate::format::pack::FrameSlot {
            inner: r.uvarint().ok()?,
            frame_raw: r.uvarint().ok()?,
        };
        r.finish().ok()?;
        Some(f)
    };
    Some(BlobLocation {
        pack,
        offset,
        length,
        raw_length,
        frame,
    })
}

impl CacheDb {
    /// Empties a writable cache (keeping the writer lock) so it can be rebuilt.
    pub fn reset(self, repo_marker: &[u8]) -> Result<Self> {
        debug_assert!(self.writable);
        let mut this = self;
        let path = this.path.clone();
        let temporary = std::mem::replace(&mut this.temporary, RemoveDir(None));
        let lock = this._writer_lock.take();
        drop(this);
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let db = Self::open_rw(&path, repo_marker, Profile::Index)?;
        Ok(Self {
            db,
            writable: true,
            path,
            temporary,
            _writer_lock: lock,
            ingest_lock: Mutex::new(()),
        })
    }
}
