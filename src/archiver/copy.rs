//! Copying snapshots into another repository (`vault copy`).
//!
//! The target has its own keys, id key and chunker seed, so no source blob id means anything
//! there: file content is streamed out of the source and chunked, hashed, compressed and
//! sealed again by the target's own pipeline (the same code as a snapshot of a stream), and
//! every tree is rebuilt with the new ids. Metadata is copied unchanged.
//!
//! What makes repeated copies cheap:
//! * a snapshot whose origin (its `original`, or its own id) is already the origin of a target
//!   snapshot is skipped, so copying is idempotent and chains (A → B → C) keep their identity;
//! * a memo in the target's cache maps each source file content to the target chunks it
//!   became; a remembered mapping is used only if every one of those chunks is still in the
//!   target's index, so a prune in between can never produce a snapshot with missing data;
//! * identical subtrees are converted once per run (the map of converted trees is on disk).
//!
//! Trees are converted bottom-up by [`crate::repo::walker::rewrite`] (any depth); each file's
//! content is chunked on all cores.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentPart, Node, NodeKind, Tree};
use crate::id::{BlobId, BlobType, SnapshotId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::cache::scratch::ScratchMap;
use crate::repo::lock::LockGuard;
use crate::repo::memo::Memo;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::repo::walker::{Rewritten, TreeRewriter, rewrite};
use crate::{Error, Result};
use std::path::Path;

use super::{Counters, Ctx, SnapshotOptions};

/// Tuning of a copy run.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Worker threads for chunking, hashing, compression and sealing.
    pub threads: usize,
    /// Upload threads.
    pub upload_concurrency: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        let d = SnapshotOptions::default();
        Self {
            threads: d.threads,
            upload_concurrency: d.upload_concurrency,
        }
    }
}

/// What a copy run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// (source id, new target id) of every snapshot copied.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Source snapshots the target already had.
    pub skipped: Vec<SnapshotId>,
    /// Files whose content was read from the source and stored again.
    pub files_copied: u64,
    /// Files whose content the target already had (remembered from earlier runs).
    pub files_reused: u64,
    /// Bytes of content read from the source.
    pub bytes_read: u64,
    /// Bytes of new content added to the target (before compression).
    pub bytes_added: u64,
    /// Bytes written to the target's packs.
    pub bytes_stored: u64,
}

/// The identity a snapshot keeps through copies.
fn origin(id: &SnapshotId, s: &Snapshot) -> SnapshotId {
    s.original.unwrap_or(*id)
}

/// Copies `snapshots` (from `src`) into `dst`, oldest first, skipping those already there. The
/// caller holds a shared lock on both; `dst_lock` is checked before each manifest is written.
pub fn copy_snapshots(
    src: &Repository,
    dst: &Repository,
    mut snapshots: Vec<(SnapshotId, Snapshot)>,
    opts: &CopyOptions,
    dst_lock: &LockGuard,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let (run, _adopted) = dst.begin_run()?;
    let (existing, _) = dst.list_snapshots()?;
    // source origin → target snapshot id, for skipping and for mapping parents
    let mut copied: HashMap<SnapshotId, SnapshotId> = existing
        .iter()
        .map(|(id, s)| (origin(id, s), *id))
        .collect();
    snapshots.sort_by_key(|(_, s)| s.time);
    // Origins of the source snapshots at hand, to map parents without reading them again.
    let src_origins: HashMap<SnapshotId, SnapshotId> = snapshots
        .iter()
        .map(|(id, s)| (*id, origin(id, s)))
        .collect();
    let memo = Memo::open(
        dst.cache_dir()
            .map(|d| d.join(format!("copy-from-{}", src.config().repo_id.to_hex())))
            .as_deref(),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("vault-copy-{i}"))
        .build()
        .map_err(|e| Error::Aborted(format!("thread pool: {e}")))?;
    let snap_opts = SnapshotOptions {
        threads: opts.threads,
        upload_concurrency: opts.upload_concurrency,
        // A copy keeps the source's tags; it is not a new backup to judge.
        anomaly: None,
        ..SnapshotOptions::default()
    };
    let converted = ScratchMap::new(dst.temp_dir())?;
    let stats = Stats::default();
    for (id, snap) in snapshots {
        if copied.contains_key(&origin(&id, &snap)) {
            report.skipped.push(id);
            continue;
        }
        progress.phase(
            &format!("copy snapshot {}", id.short()),
            None,
            crate::progress::Unit::Bytes,
        );
        let saver = BlobSaver::new(
            dst,
            SaverOptions {
                upload_concurrency: opts.upload_concurrency.max(1),
                ..SaverOptions::default()
            },
        )?;
        let chunker = dst.chunker();
        let batch = (4 << 20).max(chunker.max_size());
        let ctx = Ctx {
            repo: dst,
            saver: &saver,
            chunker,
            opts: &snap_opts,
            counters: Counters::default(),
            errors: Mutex::new(Vec::new()),
            progress,
            batch,
            buffers: crate::buffers::BufferPool::new(opts.threads.max(1) + 1),
            frame_limit: crate::repo::packer::frame_limit(dst.config()),
        };
        let mut job = Job {
            ctx: &ctx,
            src,
            memo: &memo,
            converted: &converted,
            stats: &stats,
        };
        let tree = pool.install(|| job.tree(&snap.tree))?;
        progress.finish_phase();
        let saved = saver.finish()?;
        report.bytes_added += saved.bytes_added;
        report.bytes_stored += saved.bytes_stored;
        let parent = snap
            .parent
            .and_then(|p| {
                src_origins
                    .get(&p)
                    .copied()
                    .or_else(|| src.load_snapshot(&p).ok().map(|ps| origin(&p, &ps)))
            })
            .and_then(|o| copied.get(&o).copied());
        let new = Snapshot {
            tree,
            parent,
            original: Some(origin(&id, &snap)),
            ..snap.clone()
        };
        dst_lock.check()?;
        let new_id = dst.save_snapshot(&new)?;
        copied.insert(origin(&id, &snap), new_id);
        report.copied.push((id, new_id));
    }
    run.finish();
    report.files_copied = stats.files_copied.load(Ordering::Relaxed);
    report.files_reused = stats.files_reused.load(Ordering::Relaxed);
    report.bytes_read = stats.bytes_read.load(Ordering::Relaxed);
    Ok(report)
}

#[derive(Default)]
struct Stats {
    files_copied: AtomicU64,
    files_reused: AtomicU64,
    bytes_read: AtomicU64,
}

struct Job<'a> {
    ctx: &'a Ctx<'a>,
    src: &'a Repository,
    memo: &'a Memo,
    /// Source tree id → target tree id, for this run (on disk: it grows with the source).
    converted: &'a ScratchMap,
    stats: &'a Stats,
}

impl TreeRewriter for Job<'_> {
    fn known(&mut self, tree: &BlobId, _path: &Path) -> Result<Option<Rewritten>> {
        Ok(self
            .converted
            .get(&tree.0)?
            .and_then(|v| <[u8; 32]>::try_from(&v[..]).ok())
            .map(|id| Rewritten::Changed(BlobId(id))))
    }

    fn leaf(&mut self, _path: &Path, mut node: Node) -> Result<Option<Node>> {
        if node.kind == NodeKind::File {
            node.content = self.content(&node.content)?;
        }
        Ok(Some(node))
    }

    fn save(&mut self, _path: &Path, _old: &BlobId, nodes: Vec<Node>) -> Result<BlobId> {
        super::walk::save_tree(self.ctx, &Tree { nodes })
    }

    fn always_save(&self) -> bool {
        true // every tree is new in the target (its keys differ)
    }

    fn done(&mut self, tree: &BlobId, _path: &Path, outcome: Rewritten) -> Result<()> {
        if let Rewritten::Changed(new) = outcome {
            self.converted.put(&tree.0, &new.0)?;
        }
        Ok(())
    }
}

impl Job<'_> {
    /// Converts one source tree (and everything below it); returns the target tree id.
    fn tree(&mut self, id: &BlobId) -> Result<BlobId> {
        match rewrite(self.src, id, Path::new("/"), self)? {
            Rewritten::Changed(new) => Ok(new),
            // `always_save` makes every outcome a new tree; an unreadable one is an error.
            Rewritten::Same | Rewritten::Dropped => Err(Error::Aborted(format!(
                "tree {} could not be converted",
                id.short()
            ))),
        }
    }

    /// Converts one file's content: from the memo when the target still has every chunk of
    /// it, else by streaming it out of the source into the target's chunker.
    fn content(&self, parts: &[ContentPart]) -> Result<Vec<ContentPart>> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let key = memo_key(parts);
        if let Some(v) = self.memo.get(&key)?
            && let Some(mapped) = decode_parts(&v)
            && self.all_present(&mapped)?
        {
            self.stats.files_reused.fetch_add(1, Ordering::Relaxed);
            return Ok(mapped);
        }
        let mut out = Vec::new();
        let mut run: Vec<BlobId> = Vec::new();
        for p in parts.iter().chain(std::iter::once(&ContentPart::Hole(0))) {
            match p {
                ContentPart::Chunk(id) => run.push(*id),
                ContentPart::Hole(n) => {
                    if !run.is_empty() {
                        let mut r = SourceReader {
                            src: self.src,
                            ids: std::mem::take(&mut run).into_iter(),
                            buf: Vec::new(),
                            pos: 0,
                            error: None,
                        };
                        let res = super::content::store_stream(self.ctx, &mut r);
                        // A source read failure surfaces as an I/O error of the stream; report
                        // the real (typed) error instead.
                        if let Some(e) = r.error.take() {
                            return Err(e);
                        }
                        let (stored, n) = res?;
                        self.stats.bytes_read.fetch_add(n, Ordering::Relaxed);
                        out.extend(stored);
                    }
                    if *n > 0 {
                        out.push(ContentPart::Hole(*n));
                    }
                }
            }
        }
        self.memo.put(&key, &encode_parts(&out))?;
        self.stats.files_copied.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    fn all_present(&self, parts: &[ContentPart]) -> Result<bool> {
        let mut seen = HashSet::new();
        for p in parts {
            if let ContentPart::Chunk(id) = p
                && seen.insert(*id)
                && !self.ctx.saver.contains(BlobType::Data, id)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads the plaintext of a list of source data blobs as one stream.
struct SourceReader<'a> {
    src: &'a Repository,
    ids: std::vec::IntoIter<BlobId>,
    buf: Vec<u8>,
    pos: usize,
    error: Option<Error>,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            match self.src.load_blob(BlobType::Data, &id) {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Memo key of a source content list: a hash of its parts.
fn memo_key(parts: &[ContentPart]) -> Vec<u8> {
    let mut k = b"content:".to_vec();
    k.extend_from_slice(blake3::hash(&encode_parts(parts)).as_bytes());
    k
}

/// `0 || id(32)` per chunk, `1 || len(u64 le)` per hole.
fn encode_parts(parts: &[ContentPart]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.len() * 33);
    for p in parts {
        match p {
            ContentPart::Chunk(id) => {
                v.push(0);
                v.extend_from_slice(&id.0);
            }
            ContentPart::Hole(n) => {
                v.push(1);
                v.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    v
}

fn decode_parts(mut v: &[u8]) -> Option<Vec<ContentPart>> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = v.split_first() {
        match tag {
            0 if rest.len() >= 32 => {
                out.push(ContentPart::Chunk(BlobId(rest[..32].try_into().ok()?)));
                v = &rest[32..];
            }
            1 if rest.len() >= 8 => {
                out.push(ContentPart::Hole(u64::from_le_bytes(
                    rest[..8].try_into().ok()?,
                )));
                v = &rest[8..];
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_reject_garbage() {
        let parts = vec![
            ContentPart::Chunk(BlobId([7; 32])),
            ContentPart::Hole(1 << 40),
            ContentPart::Chunk(BlobId([9; 32])),
        ];
        assert_eq!(decode_parts(&encode_parts(&parts)), Some(parts.clone()));
        assert_eq!(decode_parts(&[0, 1, 2]), None);
        assert_eq!(decode_parts(&[5]), None);
        assert_ne!(memo_key(&parts), memo_key(&parts[..2]));
    }
}
