//! Packing and uploading new blobs (`format-spec/11-ordering-and-invariants.md`).
//!
//! A [`BlobSaver`] is shared by the worker threads of one run. `add` appends a sealed blob to
//! the open pack of its type, which is a staged file (inside the repository's `tmp/` for local
//! repositories, so publishing it is a rename; in the cache directory otherwise), hashed as it
//! is written; packs never sit in RAM. Full packs go through a bounded queue to a fixed set of
//! upload threads. Once uploaded, a pack's blobs wait in a pending list until an index object naming
//! them is written (every few hundred MiB, and at `finish`), after which they are in the local
//! cache. Until then the saver remembers them itself, so a blob is never stored twice in a run.
//!
//! Ordering invariant: a pack is fully written before any index object names it, and every
//! index object a snapshot depends on is written before the snapshot. Memory does not depend
//! on the pack size: only the open packs' header entries are kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use std::path::{Path, PathBuf};

use crate::backend::Access;
use crate::format::KIND_PACK_HEADER;
use crate::format::index::IndexPack;
use crate::format::layout::pack_path;
use crate::format::pack::{FrameSlot, PackEntry, encode_pack_header, encode_trailer};
use crate::id::{BlobId, BlobType, IndexId, PackId};
use crate::{Error, Result};

use super::Repository;
use super::blob::PreparedBlob;

/// Tuning of a [`BlobSaver`].
#[derive(Clone, Copy, Debug)]
pub struct SaverOptions {
    /// Upload threads (and queued packs).
    pub upload_concurrency: usize,
    /// Write an index object once this many uploaded blobs are not yet indexed…
    pub index_flush_blobs: usize,
    /// …or once this much time has passed since the last one.
    pub index_flush_interval: Duration,
    /// Skip blobs the index already knows (off when repacking: the old copy is going away).
    pub dedup_against_index: bool,
    /// Count what would be stored, store nothing (`snapshot --dry-run`).
    pub dry_run: bool,
}

impl Default for SaverOptions {
    fn default() -> Self {
        Self {
            upload_concurrency: 2,
            index_flush_blobs: 20_000,
            index_flush_interval: Duration::from_secs(300),
            dedup_against_index: true,
            dry_run: false,
        }
    }
}

/// What a saver stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaverStats {
    /// New data blobs.
    pub data_blobs: u64,
    /// New tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of the new blobs.
    pub bytes_added: u64,
    /// Stored bytes of the new blobs.
    pub bytes_stored: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Their sizes, headers included.
    pub pack_bytes: u64,
}

/// A pack being filled: blobs go straight to a staged file, hashed on the way.
struct OpenPack {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    size: u64,
}

/// A failure to write a staged pack is a failure to write the repository (a full disk, a
/// read-only file system), never a problem of the source being read: the run must stop
/// rather than leave a file out.
fn staging_error(e: Error) -> Error {
    match e {
        Error::Io { path, error } => Error::Backend {
            op: "write",
            path: path.display().to_string(),
            message: crate::error::io_message(&error),
            transient: false,
        },
        Error::PermissionDenied { what, reason } => Error::Backend {
            op: "write",
            path: what,
            message: format!("permission denied ({reason})"),
            transient: false,
        },
        other => other,
    }
}

impl OpenPack {
    fn create(dir: &Path) -> Result<Self> {
        let (file, path) =
            crate::backend::local::create_staging_file(dir, "pack").map_err(staging_error)?;
        Ok(Self {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            path,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            size: 0,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file
            .write_all(bytes)
            .map_err(|e| staging_error(Error::io(&self.path, e)))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// Data blobs shorter than this, and than the repository's minimum chunk size (so only whole
/// small files and the tails of larger ones), are stored in frames (D57): compressed together
/// with others. See [`frame_limit`].
pub const FRAME_MEMBER_MAX: usize = 256 * 1024;

/// Data blobs shorter than this go into frames in a repository with `config`.
pub fn frame_limit(config: &crate::format::config::Config) -> usize {
    FRAME_MEMBER_MAX.min(config.chunker.min_size as usize)
}
/// A frame is sealed once its members add up to this many plaintext bytes.
pub const FRAME_TARGET: usize = 2 << 20;
/// Sealed frames' buffers kept for the next frames, at most (about as many frames as are
/// sealed at once on two cores; a worker that finds none allocates one).
const SPARE_FRAMES: usize = 2;

/// Where a small blob comes from: its file's directory and that directory's parent (hashed).
/// A frame holds blobs from directories near each other (see [`BlobSaver::add_framed`]), so
/// that a restore, which goes through the tree in order, needs each frame for a short while.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Near {
    dir: u64,
    up: u64,
}

impl Near {
    /// The place of the file at `path`.
    pub fn of(path: &std::path::Path) -> Self {
        let hash = |p: Option<&std::path::Path>| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            p.hash(&mut h);
            h.finish()
        };
        let dir = path.parent();
        Self {
            dir: hash(dir),
            up: hash(dir.and_then(std::path::Path::parent)),
        }
    }

    /// Same directory, a parent, a child or a sibling: what a depth-first walk meets next.
    fn is_near(self, prev: Near) -> bool {
        self.dir == prev.dir || self.up == prev.dir || self.dir == prev.up || self.up == prev.up
    }
}

/// A frame being filled: members' plaintexts end to end. Sealed by the thread whose blob
/// filled it, outside the lock.
#[derive(Default)]
struct OpenFrame {
    plain: Vec<u8>,
    members: Vec<(BlobId, u64)>,
    /// Where the last member came from.
    last: Near,
}

struct State {
    open: [Option<OpenPack>; 2],
    /// One open frame per worker thread (and one for other threads), so that a frame holds
    /// files its worker stored one after the other (mostly of one directory: they compress
    /// better together than files of unrelated directories interleaved).
    frames: Vec<OpenFrame>,
    /// Plaintext buffers of sealed frames, cleared, for the next frames: a fresh ~2 MiB
    /// buffer per frame was mapped, grown by copying and unmapped again, page by page
    /// (a third of a first snapshot's page faults). At most [`SPARE_FRAMES`].
    spare: Vec<Vec<u8>>,
    /// Blobs added in this run and not yet in the cache.
    known: HashSet<(BlobType, BlobId)>,
    /// Uploaded packs not yet named by an index object.
    pending: Vec<IndexPack>,
    pending_blobs: usize,
    last_flush: Instant,
    stats: SaverStats,
    indexes: Vec<IndexId>,
    error: Option<Error>,
}

struct Shared {
    repo: Repository,
    state: Mutex<State>,
    options: SaverOptions,
    staging: PathBuf,
}

struct Finished {
    id: PackId,
    path: PathBuf,
    size: u64,
    entries: Vec<PackEntry>,
}

/// Stores new blobs for one run (a snapshot, a repack, a copy). Shared by reference between
/// the run's worker threads.
pub struct BlobSaver {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Finished>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for BlobSaver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSaver")
    }
}

fn slot(t: BlobType) -> usize {
    match t {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn upload(&self, f: Finished) -> Result<()> {
        let id = f.id;
        // Data packs are only read to restore or verify content: they may go to a cold class.
        let access = match f.entries.first().map(|e| e.blob_type) {
            Some(BlobType::Data) => Access::Cold,
            _ => Access::Hot,
        };
        let res = self
            .repo
            .backend()
            .write_file(&pack_path(&id), &f.path, access);
        let _ = std::fs::remove_file(&f.path);
        match res {
            Ok(()) => {}
            // Same name means same bytes: an earlier, interrupted run already stored it.
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let flush = {
            let mut s = self.lock();
            s.stats.packs += 1;
            s.stats.pack_bytes += f.size;
            s.pending_blobs += f.entries.len();
            s.pending.push(IndexPack {
                id,
                size: f.size,
                blobs: f.entries,
            });
            let due = s.pending_blobs >= self.options.index_flush_blobs
                || s.last_flush.elapsed() >= self.options.index_flush_interval;
            if due {
                Some(take_pending(&mut s))
            } else {
                None
            }
        };
        if let Some(packs) = flush {
            self.write_index(packs)?;
        }
        Ok(())
    }

    fn write_index(&self, packs: Vec<IndexPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let mut w = super::index::IndexWriter::new(&self.repo, true);
        let mut done: Vec<(BlobType, BlobId)> = Vec::new();
        for p in packs {
            done.extend(p.blobs.iter().map(|b| (b.blob_type, b.id)));
            w.add_pack(p)?;
        }
        let ids = w.finish(Vec::new())?;
        let mut s = self.lock();
        s.indexes.extend(ids);
        {
            for b in &done {
                s.known.remove(b);
            }
        }
        Ok(())
    }

    fn fail_if_broken(&self) -> Result<()> {
        let s = self.lock();
        match &s.error {
            Some(e) => Err(Error::Aborted(format!("an upload failed: {e}"))),
            None => Ok(()),
        }
    }
}

fn take_pending(s: &mut State) -> Vec<IndexPack> {
    s.pending_blobs = 0;
    s.last_flush = Instant::now();
    std::mem::take(&mut s.pending)
}

impl BlobSaver {
    /// Starts the upload threads.
    pub fn new(repo: &Repository, options: SaverOptions) -> Result<Self> {
        // Open the index first so that uploaders and `contains` never race to create it.
        repo.index()?;
        // Stage packs where publishing them is a rename (local repositories), else in the cache.
        let staging = repo
            .backend()
            .staging_dir()
            .or_else(|| repo.cache_dir().map(|d| d.join("staging")))
            .unwrap_or_else(|| repo.temp_dir().join("vault-staging"));
        crate::backend::local::private_dir_all(&staging)?;
        let shared = Arc::new(Shared {
            repo: repo.clone(),
            staging,
            state: Mutex::new(State {
                open: [None, None],
                frames: Vec::new(),
                spare: Vec::new(),
                known: HashSet::new(),
                pending: Vec::new(),
                pending_blobs: 0,
                last_flush: Instant::now(),
                stats: SaverStats::default(),
                indexes: Vec::new(),
                error: None,
            }),
            options,
        });
        let n = options.upload_concurrency.max(1);
        let (tx, rx): (Sender<Finished>, Receiver<Finished>) = bounded(n);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            let shared = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("vault-upload-{i}"))
                .spawn(move || {
                    for f in rx.iter() {
                        if let Err(e) = shared.upload(f) {
                            let mut s = shared.lock();
                            s.error.get_or_insert(e);
                        }
                    }
                })
                .map_err(|e| Error::io("upload thread", e))?;
            workers.push(h);
        }
        Ok(Self {
            shared,
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
        })
    }

    /// Whether a blob is already stored or was added in this run.
    pub fn contains(&self, blob_type: BlobType, id: &BlobId) -> Result<bool> {
        if self.shared.lock().known.contains(&(blob_type, *id)) {
            return Ok(true);
        }
        if !self.shared.options.dedup_against_index {
            return Ok(false);
        }
        self.shared.repo.index()?.contains(blob_type, id)
    }

    /// Encodes, stores (unless already stored) and names a tree blob.
    pub fn save_tree(&self, tree: &crate::format::tree::Tree) -> Result<BlobId> {
        let bytes = crate::format::tree::encode_tree(tree);
        let repo = &self.shared.repo;
        let id = repo.blob_id(&bytes);
        if repo.is_write_only() && !self.shared.options.dry_run {
            // It cannot read the tree back from the repository next time.
            repo.remember_own_tree(&id, &bytes)?;
        }
        if !self.contains(BlobType::Tree, &id)? {
            self.add(&repo.prepare_blob_with_id(BlobType::Tree, id, &bytes)?)?;
        }
        Ok(id)
    }

    /// Claims a blob for this run: false when it is already stored or claimed.
    fn claim(&self, blob_type: BlobType, id: &BlobId) -> Result<bool> {
        {
            let mut s = self.shared.lock();
            if let Some(e) = &s.error {
                return Err(Error::Aborted(format!("an upload failed: {e}")));
            }
            if !s.known.insert((blob_type, *id)) {
                return Ok(false);
            }
        }
        // Checked outside the lock: the cache lookup may touch the disk.
        if self.shared.options.dedup_against_index
            && self.shared.repo.index()?.contains(blob_type, id)?
        {
            self.shared.lock().known.remove(&(blob_type, *id));
            return Ok(false);
        }
        Ok(true)
    }

    /// Adds a prepared blob unless it is already stored. Returns whether it was added. The blob
    /// is only read, so callers can reuse its buffer.
    pub fn add(&self, blob: &PreparedBlob) -> Result<bool> {
        if !self.claim(blob.blob_type, &blob.id)? {
            return Ok(false);
        }
        let full = {
            let mut s = self.shared.lock();
            match blob.blob_type {
                BlobType::Data => s.stats.data_blobs += 1,
                BlobType::Tree => s.stats.tree_blobs += 1,
            }
            s.stats.bytes_added += blob.raw_len;
            let entry = PackEntry {
                blob_type: blob.blob_type,
                id: blob.id,
                offset: 0,
                length: 0,
                raw_length: blob.raw_len,
                frame: None,
            };
            self.append_unit(&mut s, blob.blob_type, &blob.sealed, &mut [entry])?
        };
        if let Some(p) = full {
            self.send(p)?;
        }
        Ok(true)
    }

    /// Stores again a blob read and verified from a pack that goes away (prune's repacking,
    /// repair's salvage): a frame member is framed again; a lone blob keeps its sealed bytes,
    /// or with `reseal` is sealed anew (a write-only key's blobs open only through their own
    /// pack's header).
    pub fn copy_blob(
        &self,
        e: &PackEntry,
        plain: &[u8],
        sealed: &[u8],
        reseal: bool,
    ) -> Result<bool> {
        if e.frame.is_some() {
            return self.add_framed(e.id, plain, Near::default());
        }
        if reseal {
            let repo = &self.shared.repo;
            return self.add(&repo.prepare_blob_with_id(e.blob_type, e.id, plain)?);
        }
        self.add(&PreparedBlob {
            blob_type: e.blob_type,
            id: e.id,
            sealed: sealed.to_vec(),
            raw_len: e.raw_length,
        })
    }

    /// Adds a small data blob (shorter than [`FRAME_MEMBER_MAX`]) to the open frame unless it
    /// is already stored; returns whether it was added. Its bytes are copied.
    ///
    /// Each worker thread fills a frame of its own (a worker stores one directory's files one
    /// after another: they compress well together). When a worker moves to a part of the tree
    /// that is not `near` the last member (it took over another worker's pending work), a
    /// frame at least half full is sealed first, so that a frame's members stay together in
    /// the tree's order.
    pub fn add_framed(&self, id: BlobId, data: &[u8], near: Near) -> Result<bool> {
        debug_assert!(data.len() < FRAME_MEMBER_MAX);
        // The frame's plaintext and each member's raw length stay far below MAX_BLOB_LEN.
        if !self.claim(BlobType::Data, &id)? {
            return Ok(false);
        }
        let full = {
            let mut s = self.shared.lock();
            s.stats.data_blobs += 1;
            s.stats.bytes_added += data.len() as u64;
            let slot = rayon::current_thread_index().map_or(0, |i| i + 1);
            if s.frames.len() <= slot {
                s.frames.resize_with(slot + 1, OpenFrame::default);
            }
            let s = &mut *s;
            let frame = &mut s.frames[slot];
            let elsewhere = !frame.members.is_empty()
                && !near.is_near(frame.last)
                && frame.plain.len() >= FRAME_TARGET / 2;
            let before = elsewhere.then(|| std::mem::take(&mut *frame));
            if frame.plain.capacity() == 0 {
                // Room for the target and one more member: filled without growing.
                frame.plain = s
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(FRAME_TARGET + FRAME_MEMBER_MAX));
            }
            frame.plain.extend_from_slice(data);
            frame.members.push((id, data.len() as u64));
            frame.last = near;
            let full = (frame.plain.len() >= FRAME_TARGET).then(|| std::mem::take(frame));
            before.into_iter().chain(full).collect::<Vec<_>>()
        };
        for frame in full {
            self.seal_frame(frame)?;
        }
        Ok(true)
    }

    /// Compresses and seals a full frame, then appends it to the open data pack.
    fn seal_frame(&self, frame: OpenFrame) -> Result<()> {
        let r = self.seal_frame_members(&frame);
        let mut plain = frame.plain;
        if plain.capacity() > 0 {
            plain.clear();
            let mut s = self.shared.lock();
            if s.spare.len() < SPARE_FRAMES {
                s.spare.push(plain);
            }
        }
        r
    }

    fn seal_frame_members(&self, frame: &OpenFrame) -> Result<()> {
        if frame.members.is_empty() {
            return Ok(());
        }
        let frame_raw = frame.plain.len() as u64;
        let mut inner = 0;
        let mut entries: Vec<PackEntry> = frame
            .members
            .iter()
            .map(|&(id, raw_length)| {
                let e = PackEntry {
                    blob_type: BlobType::Data,
                    id,
                    offset: 0,
                    length: 0,
                    raw_length,
                    frame: Some(FrameSlot { inner, frame_raw }),
                };
                inner += raw_length;
                e
            })
            .collect();
        // Sealed into the worker's reused buffer (a fresh one per frame cost page faults),
        // given back once appended.
        let full = crate::buffers::with_scratch(|buf| -> Result<Option<OpenPack>> {
            let sealed = self
                .shared
                .repo
                .prepare_frame_into(&frame.plain, std::mem::take(buf))?;
            let full = {
                let mut s = self.shared.lock();
                self.append_unit(&mut s, BlobType::Data, &sealed, &mut entries)
            };
            *buf = sealed;
            full
        })?;
        if let Some(p) = full {
            self.send(p)?;
        }
        Ok(())
    }

    /// Appends one sealed unit (a blob, or a frame) to the open pack of its type; `entries`
    /// get the unit's offset and length. Returns the pack when it is full.
    fn append_unit(
        &self,
        s: &mut State,
        blob_type: BlobType,
        sealed: &[u8],
        entries: &mut [PackEntry],
    ) -> Result<Option<OpenPack>> {
        let stored = sealed.len() as u64;
        s.stats.bytes_stored += stored;
        if self.shared.options.dry_run {
            return Ok(None);
        }
        let target = u64::from(self.shared.repo.config().pack_size);
        let slot = &mut s.open[slot(blob_type)];
        if slot.is_none() {
            *slot = Some(OpenPack::create(&self.shared.staging)?);
        }
        let p = slot.as_mut().expect("invariant: just created");
        for e in entries.iter_mut() {
            e.offset = p.size;
            e.length = stored;
        }
        p.entries.extend_from_slice(entries);
        if let Err(e) = p.append(sealed) {
            // The staged pack is now incomplete: drop it and its file.
            if let Some(p) = slot.take() {
                let _ = std::fs::remove_file(&p.path);
            }
            return Err(e);
        }
        Ok(if p.size >= target { slot.take() } else { None })
    }

    /// Closes a pack (header, trailer, name) and queues it for upload. On failure (a full
    /// disk while closing it, the uploaders gone) its staged file is removed: a failed run
    /// leaves nothing of its own in `tmp/`.
    fn send(&self, p: OpenPack) -> Result<()> {
        let path = p.path.clone();
        let r = self.close_and_queue(p);
        if r.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        r
    }

    fn close_and_queue(&self, mut p: OpenPack) -> Result<()> {
        let header = self
            .shared
            .repo
            .seal_object(KIND_PACK_HEADER, &encode_pack_header(&p.entries))?;
        p.append(&header)?;
        p.append(&encode_trailer(header.len()))?;
        let file = p
            .file
            .into_inner()
            .map_err(|e| staging_error(Error::io(&p.path, e.into_error())))?;
        drop(file);
        let finished = Finished {
            id: PackId(*p.hasher.finalize().as_bytes()),
            path: p.path,
            size: p.size,
            entries: p.entries,
        };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) => tx
                .send(finished)
                .map_err(|_| Error::Aborted("upload threads stopped".into())),
            None => Err(Error::Aborted("saver already finished".into())),
        }
    }

    /// Uploads what is left, waits for every upload, writes the last index object.
    /// After `finish` returns, every blob added is durably stored and indexed.
    pub fn finish(&self) -> Result<SaverStats> {
        let frames = std::mem::take(&mut self.shared.lock().frames);
        for frame in frames {
            self.seal_frame(frame)?;
        }
        let open = {
            let mut s = self.shared.lock();
            [s.open[0].take(), s.open[1].take()]
        };
        for p in open.into_iter().flatten() {
            self.send(p)?;
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        for h in std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = h.join();
        }
        self.shared.fail_if_broken()?;
        let pending = take_pending(&mut self.shared.lock());
        self.shared.write_index(pending)?;
        Ok(self.shared.lock().stats)
    }

    /// Statistics so far.
    pub fn stats(&self) -> SaverStats {
        self.shared.lock().stats
    }

    /// Index objects written so far.
    pub fn written_indexes(&self) -> Vec<IndexId> {
        self.shared.lock().indexes.clone()
    }
}

impl Drop for BlobSaver {
    fn drop(&mut self) {
        // Abandoned without `finish` (an error elsewhere): stop the uploaders and drop staged
        // files. Packs already uploaded stay unreferenced until `prune` collects them.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        for p in self.shared.lock().open.iter_mut().filter_map(Option::take) {
            let _ = std::fs::remove_file(&p.path);
        }
        for h in std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = h.join();
        }
    }
}
