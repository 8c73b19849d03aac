//! Fetching a batch of files' content, planned by pack.
//!
//! Every needed blob is located through the index and grouped by pack; within a pack, blobs
//! close to each other are read with one ranged request (gaps up to [`MAX_GAP`] are read and
//! dropped). Blobs are opened in place inside the fetched buffer (decrypted, decompressed,
//! verified) on all workers and written with `pwrite` at each target offset, into each file's
//! temporary name. Files made of at most one blob are created, written, given their metadata
//! through a single descriptor and renamed into place here, in parallel. All-zero blobs are
//! skipped (the file already has its length), so sparse files stay sparse.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::Result;
use crate::format::layout::pack_path;
use crate::format::tree::ContentPart;
use crate::id::{BlobId, BlobType, PackId};
use crate::progress::Progress;
use crate::repo::BlobLocation;
use crate::repo::Repository;
use crate::source::apply::{ApplyOptions, apply_metadata_fd};
use std::path::Path;

use super::walk::FileJob;

/// Frames kept between batches: those of the last two batches or so (at most ~2.25 MiB each).
const FRAMES_KEPT: usize = 12;

/// Bytes of small frame members kept (see [`MemberCache`]).
const MEMBERS_KEPT_BYTES: usize = 8 << 20;
/// Largest member kept.
const MEMBER_KEPT_MAX: u64 = 64 * 1024;

/// What one restore reuses from batch to batch.
pub(super) struct Reuse {
    /// Read buffers (no fresh buffer of up to 16 MiB to fault in per span).
    pub buffers: crate::buffers::BufferPool,
    /// Frames opened lately.
    pub frames: crate::repo::blob::FrameCache,
    /// Small members needed again and again.
    members: MemberCache,
    /// Buffers of frames that left `frames`, for the next ones kept (no fresh pages).
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Reuse {
    pub(super) fn new() -> Self {
        Self {
            buffers: crate::buffers::BufferPool::new(rayon::current_num_threads()),
            frames: crate::repo::blob::FrameCache::new(FRAMES_KEPT),
            members: MemberCache::default(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Keeps a copy of a frame for the next batches, in a recycled buffer when there is one.
    fn keep_frame(&self, pack: PackId, offset: u64, frame: &[u8]) {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut copy = spare.unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(frame);
        if let Some(old) = self.frames.put(pack, offset, Arc::new(copy))
            && let Ok(buf) = Arc::try_unwrap(old)
        {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < 4 {
                spare.push(buf);
            }
        }
    }
}

/// Verified plaintexts of small frame members, by id, first in first out within a byte budget.
///
/// Deduplication makes some small files appear all over a tree (`__init__.py`, licences,
/// marker files): each copy names the one blob, stored in one frame, and without this every
/// batch that restores a copy would open the whole frame again for a few hundred bytes. A
/// member is kept when its frame was opened for a small part of it (a sign that it is such a
/// blob, far from the rest of its frame in the tree).
#[derive(Default)]
struct MemberCache(Mutex<MemberKept>);

#[derive(Default)]
struct MemberKept {
    by_id: HashMap<BlobId, Arc<[u8]>>,
    order: std::collections::VecDeque<BlobId>,
    bytes: usize,
}

impl MemberCache {
    fn get(&self, id: &BlobId) -> Option<Arc<[u8]>> {
        let k = self.0.lock().unwrap_or_else(|p| p.into_inner());
        k.by_id.get(id).cloned()
    }

    fn put(&self, id: BlobId, plain: &[u8]) {
        let mut k = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if k.by_id.contains_key(&id) {
            return;
        }
        k.bytes += plain.len();
        k.by_id.insert(id, Arc::from(plain));
        k.order.push_back(id);
        while k.bytes > MEMBERS_KEPT_BYTES {
            let Some(old) = k.order.pop_front() else {
                break;
            };
            if let Some(p) = k.by_id.remove(&old) {
                k.bytes -= p.len();
            }
        }
    }
}

/// Unneeded bytes between two needed blobs that are still read in one request.
const MAX_GAP: u64 = 256 * 1024;
/// Longest single ranged read.
const MAX_SPAN: u64 = 16 << 20;
/// Whether a stored unit at `offset` of `length` bytes is read with the span that starts at
/// `start` and is `len` bytes long so far (same pack): at most [`MAX_GAP`] after it, and the
/// span stays within [`MAX_SPAN`].
fn joins_span(start: u64, len: u64, offset: u64, length: u64) -> bool {
    offset <= start + len + MAX_GAP && offset + length - start <= MAX_SPAN
}
/// Stored bytes of the next batch a local repository is asked to read ahead when the walk
/// hands it over (page cache only).
const AHEAD_OF_BATCH: u64 = 64 << 20;
/// Spans after the one a worker starts that a local repository is asked to read ahead (at
/// most this many × [`MAX_SPAN`] per worker in the page cache, none in the process).
const READ_AHEAD_SPANS: usize = 2;

/// One stored unit to read: a lone blob, or a frame and the members of it that are needed.
struct Want {
    offset: u64,
    length: u64,
    /// The frame's plaintext length, for a frame.
    frame_raw: Option<u64>,
    /// Needed blobs by their offset in the frame (0 for a lone blob).
    members: BTreeMap<u64, Member>,
}

struct Member {
    id: BlobId,
    raw_length: u64,
    /// (job, offset in the file) for every place the blob goes.
    targets: Vec<(usize, u64)>,
}

impl Want {
    fn targets(&self) -> impl Iterator<Item = &(usize, u64)> {
        self.members.values().flat_map(|m| &m.targets)
    }

    /// Plaintext bytes of the needed members.
    fn needed(&self) -> u64 {
        self.members.values().map(|m| m.raw_length).sum()
    }
}

struct Span {
    pack: PackId,
    start: u64,
    len: u64,
    blobs: Vec<Want>,
}

/// What fetching a batch did.
#[derive(Default)]
pub(super) struct ContentResult {
    /// Failed jobs (by index) and why.
    pub failed: HashMap<usize, String>,
    /// Metadata problems of files finished here (by job index).
    pub meta_errors: Vec<(usize, crate::Error)>,
    /// Plaintext bytes written.
    pub bytes_written: u64,
    /// Distinct packs read.
    pub packs_read: u64,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
}

/// Creates a deferred single-blob file under its temporary name with its content, length
/// and metadata, then renames it into place.
fn finish_deferred(
    job: &FileJob,
    data: Option<(&[u8], u64)>,
    apply: ApplyOptions,
) -> std::io::Result<Vec<crate::Error>> {
    let written = (|| {
        let f = job.dir.create_file(&job.tmp)?;
        // The file is new (O_EXCL): its length is what was written here, no stat needed.
        let mut len = 0;
        if let Some((d, offset)) = data
            && d.iter().any(|&b| b != 0)
        {
            f.write_all_at(d, offset)?;
            len = offset + d.len() as u64;
        }
        if len != job.node.size {
            f.set_len(job.node.size)?;
        }
        Ok(apply_metadata_fd(
            &f,
            Path::new(&job.snap_path),
            &job.node,
            apply,
        ))
    })()
    .and_then(|errs| job.dir.rename(&job.tmp, &job.name).map(|_| errs));
    if written.is_err() {
        let _ = job.dir.remove_file(&job.tmp);
    }
    written
}

/// Where the blobs of a batch are stored (blobs the index does not know are left out).
pub(super) type Locations = HashMap<BlobId, BlobLocation>;

/// Looks up every blob of a batch at once (see `BlobIndex::get_many`).
pub(super) fn locate(repo: &Repository, jobs: &[FileJob]) -> Result<Locations> {
    let mut ids: Vec<BlobId> = jobs
        .iter()
        .flat_map(|j| j.node.content.iter())
        .filter_map(|p| match p {
            ContentPart::Chunk(id) => Some(*id),
            ContentPart::Hole(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let found = repo.index()?.get_many(BlobType::Data, &ids)?;
    Ok(ids
        .iter()
        .zip(found)
        .filter_map(|(id, loc)| Some((*id, loc?)))
        .collect())
}

/// Asks the backend to start reading a batch's stored bytes, in the order its spans will be
/// fetched, up to [`AHEAD_OF_BATCH`] bytes (a hint: the page cache of a local repository, no
/// memory of ours; other backends ignore it). Called when the walk hands over a batch, so that
/// its first spans are not read cold while the workers wait.
pub(super) fn read_ahead_of(repo: &Repository, locations: &Locations) {
    for (pack, start, len) in ahead_ranges(locations, AHEAD_OF_BATCH) {
        repo.backend().will_read(&pack_path(&pack), start, len);
    }
}

/// The stored ranges of `locations` as `(pack, start, length)`, by pack and offset, joined as
/// spans are ([`joins_span`]), until `budget` bytes are covered.
fn ahead_ranges(locations: &Locations, budget: u64) -> Vec<(PackId, u64, u64)> {
    let mut places: Vec<(PackId, u64, u64)> = locations
        .values()
        .map(|l| (l.pack, l.offset, l.offset + l.length))
        .collect();
    // Members of one frame share its place.
    places.sort_unstable();
    places.dedup();
    let mut out: Vec<(PackId, u64, u64)> = Vec::new();
    let mut covered = 0u64;
    for (pack, start, end) in places {
        match out.last_mut() {
            Some(r) if r.0 == pack && joins_span(r.1, r.2, start, end - start) => {
                let grown = end.max(r.1 + r.2) - r.1;
                covered += grown - r.2;
                r.2 = grown;
            }
            _ => {
                if covered >= budget {
                    break;
                }
                covered += end - start;
                out.push((pack, start, end - start));
            }
        }
    }
    out
}

/// Writes the content of every job's file; `locations` from [`locate`].
pub(super) fn restore_content(
    repo: &Repository,
    jobs: &[FileJob],
    locations: &Locations,
    apply: ApplyOptions,
    progress: &dyn Progress,
    reuse: &Reuse,
) -> Result<ContentResult> {
    let buffers = &reuse.buffers;
    let mut failed: HashMap<usize, String> = HashMap::new();
    // By pack in id order, as `read_ahead_of` hinted them.
    let mut by_pack: BTreeMap<PackId, BTreeMap<u64, Want>> = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        let mut off = 0u64;
        for part in &job.node.content {
            match part {
                ContentPart::Hole(n) => off += n,
                ContentPart::Chunk(id) => match locations.get(id).copied() {
                    Some(loc) => {
                        by_pack
                            .entry(loc.pack)
                            .or_default()
                            .entry(loc.offset)
                            .or_insert_with(|| Want {
                                offset: loc.offset,
                                length: loc.length,
                                frame_raw: loc.frame.map(|f| f.frame_raw),
                                members: BTreeMap::new(),
                            })
                            .members
                            .entry(loc.frame.map_or(0, |f| f.inner))
                            .or_insert_with(|| Member {
                                id: *id,
                                raw_length: loc.raw_length,
                                targets: Vec::new(),
                            })
                            .targets
                            .push((j, off));
                        off += loc.raw_length;
                    }
                    None => {
                        failed.insert(j, format!("data blob {id} is missing from the repository"));
                        break;
                    }
                },
            }
        }
        if !failed.contains_key(&j) && off != job.node.size {
            failed.insert(
                j,
                format!(
                    "content adds up to {off} bytes but the file has {}",
                    job.node.size
                ),
            );
        }
    }
    let packs_read = by_pack.len() as u64;
    let mut spans = Vec::new();
    // Frames opened for an earlier batch are not read again (a frame holds files of several
    // directories, which may fall into neighbouring batches).
    let mut cached: Vec<(PackId, Want, Arc<Vec<u8>>)> = Vec::new();
    // Small members kept from earlier batches need no frame at all.
    let mut kept: Vec<(Member, Arc<[u8]>)> = Vec::new();
    for (pack, blobs) in by_pack {
        let mut cur: Option<Span> = None;
        for (_, mut w) in blobs {
            if w.frame_raw.is_some() {
                let members = std::mem::take(&mut w.members);
                for (inner, m) in members {
                    match reuse.members.get(&m.id) {
                        Some(plain) => kept.push((m, plain)),
                        None => {
                            w.members.insert(inner, m);
                        }
                    }
                }
                if w.members.is_empty() {
                    continue;
                }
                if let Some(frame) = reuse.frames.get(pack, w.offset) {
                    cached.push((pack, w, frame));
                    continue;
                }
            }
            if let Some(s) = cur.as_mut()
                && joins_span(s.start, s.len, w.offset, w.length)
            {
                s.len = s.len.max(w.offset + w.length - s.start);
                s.blobs.push(w);
                continue;
            }
            if let Some(s) = cur.take() {
                spans.push(s);
            }
            cur = Some(Span {
                pack,
                start: w.offset,
                len: w.length,
                blobs: vec![w],
            });
        }
        spans.extend(cur);
    }
    let failed = Mutex::new(failed);
    let meta_errors = Mutex::new(Vec::new());
    let fail = |j: usize, msg: String| {
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(j)
            .or_insert(msg);
    };
    let written = AtomicU64::new(0);
    let fetched = AtomicU64::new(0);
    // Writes one verified blob's plaintext to every place it goes.
    let deliver = |m: &Member, plain: &[u8]| {
        let zero = plain.iter().all(|&b| b == 0);
        for (j, off) in &m.targets {
            let job = &jobs[*j];
            let r = if job.deferred {
                finish_deferred(job, Some((plain, *off)), apply).map(|errs| {
                    let mut m = meta_errors.lock().unwrap_or_else(|p| p.into_inner());
                    m.extend(errs.into_iter().map(|e| (*j, e)));
                })
            } else if zero {
                Ok(()) // created at full length: zeros are already there
            } else {
                job.dir
                    .open_for_write(&job.tmp)
                    .and_then(|f| f.write_all_at(plain, *off))
            };
            match r {
                Ok(()) => {
                    written.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    progress.advance(plain.len() as u64);
                }
                Err(e) => fail(*j, crate::error::io_message(&e)),
            }
        }
    };
    // Verifies and writes the needed members of an opened frame. When the frame was opened for
    // a small part of it, its members here are likely needed again elsewhere in the tree and
    // are kept once verified (see MemberCache).
    let deliver_members = |pack: PackId, w: &Want, frame: &[u8]| {
        let frame_raw = w.frame_raw.unwrap_or(frame.len() as u64);
        let keep = w.needed().saturating_mul(4) < frame_raw;
        for (&inner, m) in &w.members {
            let slot = crate::format::pack::FrameSlot { inner, frame_raw };
            match repo.frame_member(BlobType::Data, m.id, frame, slot, m.raw_length, Some(pack)) {
                Ok(plain) => {
                    if keep && m.raw_length <= MEMBER_KEPT_MAX {
                        reuse.members.put(m.id, plain);
                    }
                    deliver(m, plain)
                }
                Err(e) => m.targets.iter().for_each(|(j, _)| fail(*j, e.to_string())),
            }
        }
    };
    // Where each span is, to ask for the next ones ahead (see below).
    let places: Vec<(PackId, u64, u64)> = spans.iter().map(|s| (s.pack, s.start, s.len)).collect();
    spans.into_par_iter().enumerate().for_each(|(i, span)| {
        // The pool splits the spans into runs that each worker takes in order: the next
        // READ_AHEAD_SPANS are most likely this worker's next, and a local repository starts
        // reading them now, while this one is opened and written (page cache, no memory of
        // ours; other backends ignore the hint).
        for &(pack, start, len) in places.iter().skip(i + 1).take(READ_AHEAD_SPANS) {
            repo.backend().will_read(&pack_path(&pack), start, len);
        }
        // A reused buffer: no fresh one of up to 16 MiB to fault in per span.
        let mut buffer = buffers.take();
        match repo.backend().read_range_into(
            &pack_path(&span.pack),
            span.start,
            span.len,
            &mut buffer.buf,
        ) {
            Ok(()) => {}
            Err(e) => {
                let e = crate::repo::blob::relabel_missing(e, crate::ObjectRef::Pack(span.pack));
                for w in &span.blobs {
                    for (j, _) in w.targets() {
                        fail(*j, e.to_string());
                    }
                }
                return;
            }
        }
        let bytes = &mut buffer.buf;
        fetched.fetch_add(span.len, Ordering::Relaxed);
        // One mutable slice per blob (blobs do not overlap), opened in place in parallel.
        let mut slices: Vec<(&Want, &mut [u8])> = Vec::with_capacity(span.blobs.len());
        let mut rest: &mut [u8] = &mut bytes[..];
        let mut pos = span.start;
        for w in &span.blobs {
            let (_, tail) = rest.split_at_mut((w.offset - pos) as usize);
            let (blob, tail) = tail.split_at_mut(w.length as usize);
            slices.push((w, blob));
            rest = tail;
            pos = w.offset + w.length;
        }
        // Each unit is opened in the worker's reused buffer (no fresh one to fault in).
        slices.into_par_iter().for_each(|(w, sealed)| {
            crate::buffers::with_scratch(|scratch| {
                let Some(frame_raw) = w.frame_raw else {
                    for m in w.members.values() {
                        match repo.open_blob_ref(
                            BlobType::Data,
                            m.id,
                            sealed,
                            m.raw_length,
                            Some(span.pack),
                            scratch,
                        ) {
                            Ok(plain) => deliver(m, plain),
                            Err(e) => m.targets.iter().for_each(|(j, _)| fail(*j, e.to_string())),
                        }
                    }
                    return;
                };
                // A frame: opened once, each needed member verified on its slice; kept for
                // the next batches (copied) only when some of it was not needed here.
                let frame =
                    match repo.open_frame_ref(frame_raw, sealed, span.pack, w.offset, scratch) {
                        Ok(f) => f,
                        Err(e) => {
                            for (j, _) in w.targets() {
                                fail(*j, e.to_string());
                            }
                            return;
                        }
                    };
                deliver_members(span.pack, w, frame);
                if w.needed() < frame_raw {
                    reuse.keep_frame(span.pack, w.offset, frame);
                }
            });
        });
    });
    cached
        .par_iter()
        .for_each(|(pack, w, frame)| deliver_members(*pack, w, frame));
    // Kept members were verified when they were first taken from their frame.
    kept.par_iter().for_each(|(m, plain)| deliver(m, plain));
    // Deferred files with no blob at all (empty or all holes). Files whose blob could not be
    // restored are not created: nothing appears under their name.
    let failed_now = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    jobs.par_iter().enumerate().for_each(|(j, job)| {
        let blobless = !job
            .node
            .content
            .iter()
            .any(|p| matches!(p, ContentPart::Chunk(_)));
        if job.deferred && blobless && !failed_now.contains_key(&j) {
            match finish_deferred(job, None, apply) {
                Ok(errs) => meta_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(errs.into_iter().map(|e| (j, e))),
                Err(e) => fail(j, crate::error::io_message(&e)),
            }
        }
    });
    Ok(ContentResult {
        failed: failed.into_inner().unwrap_or_else(|p| p.into_inner()),
        meta_errors: meta_errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        bytes_written: written.into_inner(),
        packs_read,
        bytes_fetched: fetched.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: u8, offset: u64, length: u64) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
            frame: None,
        }
    }

    #[test]
    fn read_ahead_ranges_follow_the_spans_and_stop_at_the_budget() {
        let mut locs = Locations::new();
        let blobs = [
            at(2, 0, 1000),
            // Two members of one frame: one place.
            at(1, 5000, 2000),
            at(1, 5000, 2000),
            // Close enough to join the frame's range.
            at(1, 7000 + MAX_GAP, 100),
            // Too far: a range of its own.
            at(1, 7100 + 2 * MAX_GAP + 1, 10),
        ];
        for (i, l) in blobs.into_iter().enumerate() {
            locs.insert(BlobId([i as u8; 32]), l);
        }
        let all = ahead_ranges(&locs, u64::MAX);
        assert_eq!(
            all,
            [
                (PackId([1; 32]), 5000, 2000 + MAX_GAP + 100),
                (PackId([1; 32]), 7100 + 2 * MAX_GAP + 1, 10),
                (PackId([2; 32]), 0, 1000),
            ]
        );
        // Ranges are started while less than the budget is covered.
        assert_eq!(ahead_ranges(&locs, 1), all[..1]);
        assert_eq!(ahead_ranges(&locs, 2000 + MAX_GAP + 101), all[..2]);
        // A range never grows past a span.
        let mut long = Locations::new();
        long.insert(BlobId([1; 32]), at(3, 0, MAX_SPAN - 10));
        long.insert(BlobId([2; 32]), at(3, MAX_SPAN - 10, 20));
        assert_eq!(ahead_ranges(&long, u64::MAX).len(), 2);
    }
}
