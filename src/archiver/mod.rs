//! The snapshot engine (`format-spec/11-ordering-and-invariants.md`).
//!
//! Walks the sources in sorted order on one rayon pool; directories fan out over their entries,
//! large files are chunked in batches whose chunks are hashed, compressed and sealed in
//! parallel. A file whose size, mtime, ctime and inode match the parent snapshot is not read:
//! its chunk list is reused (if every chunk is still indexed). New blobs go to a
//! [`BlobSaver`]; trees are saved bottom-up; the snapshot manifest is written last, after every
//! pack and index object it depends on, and only while our lock is still held.

mod buffers;
mod content;
pub mod copy;
mod walk;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::format::snapshot::{Snapshot, Summary};
use crate::format::time::Timestamp;
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::source::exclude::PathMatcher;
use crate::source::meta::MetaOptions;
use crate::{Error, Result};

/// Which snapshot to compare against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot with the same host and paths.
    #[default]
    Auto,
    /// No parent: every file is read.
    None,
    /// This snapshot.
    Id(SnapshotId),
}

/// What to back up.
pub enum Source {
    /// Files and directories (absolute or relative paths).
    Paths(Vec<PathBuf>),
    /// A stream stored as one file called `name` (stdin or a command's stdout).
    Stream {
        /// The file name in the snapshot (raw bytes).
        name: Vec<u8>,
        /// The bytes.
        reader: Box<dyn Read + Send>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Paths(p) => write!(f, "Paths({p:?})"),
            Source::Stream { name, .. } => {
                write!(f, "Stream({})", crate::quote::quote_bytes(name))
            }
        }
    }
}

/// Options of one snapshot run.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Tags to record.
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    pub host: Option<String>,
    /// Time to record (default: now) with its UTC offset in seconds.
    pub time: Option<(Timestamp, i32)>,
    /// Paths to leave out.
    pub excludes: PathMatcher,
    /// Do not descend into other file systems.
    pub one_file_system: bool,
    /// Parent selection.
    pub parent: ParentChoice,
    /// Read every file even if unchanged.
    pub force: bool,
    /// Metadata options.
    pub meta: MetaOptions,
    /// Worker threads for chunking, hashing, compression and sealing.
    pub threads: usize,
    /// Upload threads.
    pub upload_concurrency: usize,
    /// Read large files through a memory map.
    pub mmap: bool,
    /// Paths never to back up (the local cache).
    pub skip: Vec<PathBuf>,
    /// Compare the new snapshot with its group's history and tag it `anomaly` when it looks
    /// wrong (`None`: do not).
    pub anomaly: Option<crate::anomaly::Thresholds>,
    /// Leave out paths matching these, compared without regard to ASCII case.
    pub iexcludes: PathMatcher,
    /// Leave out directories that hold an entry with one of these names (with an optional
    /// required start of its content, e.g. the CACHEDIR.TAG signature).
    pub exclude_if_present: Vec<(std::ffi::OsString, Option<Vec<u8>>)>,
    /// Leave out files larger than this.
    pub exclude_larger_than: Option<u64>,
    /// Read, chunk and compare everything, store nothing, save no snapshot.
    pub dry_run: bool,
}

/// The first bytes of a valid `CACHEDIR.TAG` (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            host: None,
            time: None,
            excludes: PathMatcher::new::<&str>(&[]).expect("invariant: empty pattern set"),
            one_file_system: false,
            parent: ParentChoice::Auto,
            force: false,
            meta: MetaOptions::default(),
            // Twice the cores: on a cold cache the workers wait for small-file reads, and
            // more reads in flight keep both the disk and the cores busy (D50).
            threads: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            upload_concurrency: 2,
            mmap: false,
            anomaly: Some(crate::anomaly::Thresholds::default()),
            iexcludes: PathMatcher::new::<&str>(&[]).expect("invariant: empty pattern set"),
            exclude_if_present: Vec::new(),
            exclude_larger_than: None,
            dry_run: false,
            skip: Vec::new(),
        }
    }
}

/// A source entry that could not be read (and was left out of the snapshot).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceError {
    /// The path.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// The outcome of a snapshot run.
#[derive(Debug)]
pub struct SnapshotOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The manifest as written.
    pub snapshot: Snapshot,
    /// Entries left out because they could not be read.
    pub errors: Vec<SourceError>,
    /// Anomalies found against the group's history (the snapshot is tagged `anomaly`).
    pub anomalies: Vec<crate::anomaly::Anomaly>,
    /// Previous snapshots of the group it was compared with.
    pub history_len: usize,
}

/// Tag given to a snapshot with anomalies.
pub const ANOMALY_TAG: &str = "anomaly";

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    bytes_read: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    other: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

struct Ctx<'a> {
    repo: &'a Repository,
    saver: &'a BlobSaver,
    chunker: crate::chunker::Chunker,
    opts: &'a SnapshotOptions,
    counters: Counters,
    errors: Mutex<Vec<SourceError>>,
    progress: &'a dyn Progress,
    batch: usize,
    buffers: crate::buffers::BufferPool,
    /// Data blobs shorter than this are stored in frames (D57).
    frame_limit: usize,
}

impl Ctx<'_> {
    /// Reports a file's status to a progress display that lists files (`-v`).
    fn entry(&self, status: crate::progress::EntryStatus, path: &std::path::Path) {
        if self.progress.wants_entries() {
            self.progress.entry(status, path);
        }
    }

    fn source_error(&self, path: &std::path::Path, e: impl std::fmt::Display) {
        // The error usually names the path already; do not say it twice.
        let text = e.to_string();
        let shown = path.display().to_string();
        let msg = if text.starts_with(&shown) {
            text.clone()
        } else {
            format!("{shown}: {text}")
        };
        tracing::debug!("{msg}");
        self.progress.warn(&msg);
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SourceError {
                path: crate::quote::quote_path(path),
                error: text
                    .strip_prefix(&shown)
                    .map(|r| r.trim_start_matches(": ").to_string())
                    .unwrap_or(text),
            });
    }
}

/// Picks the parent snapshot for `paths` on `host`.
pub fn find_parent(
    repo: &Repository,
    choice: &ParentChoice,
    host: &str,
    paths: &[Vec<u8>],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(parent_and_history(repo, choice, host, paths, 0)?.0)
}

/// A parent snapshot with its id.
pub type Parent = (SnapshotId, Snapshot);

/// The parent snapshot for `paths` on `host`, and the summaries of the `history` newest
/// snapshots of that group (newest first), found in one streaming pass over the snapshots.
pub fn parent_and_history(
    repo: &Repository,
    choice: &ParentChoice,
    host: &str,
    paths: &[Vec<u8>],
    history: usize,
) -> Result<(Option<Parent>, Vec<Summary>)> {
    if repo.is_write_only() {
        let mut want = paths.to_vec();
        want.sort();
        let (parent, summaries) = repo.own_history(host, &want, history);
        return match choice {
            ParentChoice::None => Ok((None, summaries)),
            ParentChoice::Auto => Ok((parent, summaries)),
            ParentChoice::Id(id) if parent.as_ref().is_some_and(|p| p.0 == *id) => {
                Ok((parent, summaries))
            }
            ParentChoice::Id(id) => Err(crate::repo::write_only_refusal(
                &crate::ObjectRef::Snapshot(*id),
            )),
        };
    }
    if history == 0 {
        match choice {
            ParentChoice::None => return Ok((None, Vec::new())),
            ParentChoice::Id(id) => return Ok((Some((*id, repo.load_snapshot(id)?)), Vec::new())),
            ParentChoice::Auto => {}
        }
    }
    let mut want = paths.to_vec();
    want.sort();
    struct Found {
        best: Option<(SnapshotId, Snapshot)>,
        // (time, id, summary), newest first, at most `history` long.
        newest: Vec<(Timestamp, SnapshotId, Summary)>,
    }
    let found = std::sync::Mutex::new(Found {
        best: None,
        newest: Vec::new(),
    });
    repo.for_each_snapshot(&|id, s| {
        let Ok(s) = s else {
            return Ok(()); // damaged: never a parent, no history
        };
        let mut p = s.paths.clone();
        p.sort();
        if s.hostname != host || p != want {
            return Ok(());
        }
        let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
        if history > 0 {
            f.newest.push((s.time, id, s.summary));
            f.newest.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
            f.newest.truncate(history);
        }
        if matches!(choice, ParentChoice::Auto)
            && f.best
                .as_ref()
                .is_none_or(|(bid, bs)| (bs.time, *bid) < (s.time, id))
        {
            f.best = Some((id, s));
        }
        Ok(())
    })?;
    let f = found.into_inner().unwrap_or_else(|e| e.into_inner());
    let parent = match choice {
        ParentChoice::None => None,
        ParentChoice::Id(id) => Some((*id, repo.load_snapshot(id)?)),
        ParentChoice::Auto => f.best,
    };
    Ok((parent, f.newest.into_iter().map(|(_, _, s)| s).collect()))
}

/// Takes a snapshot of `source` into `repo`. The caller holds a shared `lock`, which is checked
/// again right before the manifest is written.
pub fn snapshot(
    repo: &Repository,
    source: Source,
    opts: &SnapshotOptions,
    lock: &LockGuard,
    progress: &dyn Progress,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    let start_time = Timestamp::now();
    let host = opts
        .host
        .clone()
        .unwrap_or_else(crate::source::owner::hostname);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("vault-work-{i}"))
        .build()
        .map_err(|e| Error::Aborted(format!("thread pool: {e}")))?;
    // Packs a killed earlier run uploaded but never indexed are adopted, not uploaded again;
    // staging files of runs that provably died are removed.
    // A dry run writes nothing, not even that.
    let run = if opts.dry_run {
        None
    } else {
        let (run, _adopted) = repo.begin_run()?;
        match repo.collect_dead_staging() {
            Ok(l) if l.count > 0 => {
                tracing::info!(
                    files = l.count,
                    bytes = l.bytes,
                    "removed staging files of dead runs"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not clean tmp/"),
        }
        Some(run)
    };
    let saver = BlobSaver::new(
        repo,
        SaverOptions {
            upload_concurrency: opts.upload_concurrency.max(1),
            dry_run: opts.dry_run,
            ..SaverOptions::default()
        },
    )?;
    let chunker = repo.chunker();
    let batch = (4 << 20).max(chunker.max_size());
    let ctx = Ctx {
        repo,
        saver: &saver,
        chunker,
        opts,
        counters: Counters::default(),
        errors: Mutex::new(Vec::new()),
        progress,
        batch,
        buffers: crate::buffers::BufferPool::new(opts.threads.max(1) + 1),
        frame_limit: crate::repo::packer::frame_limit(repo.config()),
    };
    progress.phase("snapshot", None, crate::progress::Unit::Bytes);
    let history_len = opts.anomaly.as_ref().map_or(0, |t| t.history.max(1));
    let (paths, parent, tree, history) = match source {
        Source::Paths(list) => {
            let abs: Vec<PathBuf> = list
                .iter()
                .map(|p| crate::source::absolute_path(p))
                .collect::<Result<_>>()?;
            let mut raw: Vec<Vec<u8>> = abs
                .iter()
                .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
                .collect();
            raw.sort();
            raw.dedup();
            let (parent, history) =
                parent_and_history(repo, &opts.parent, &host, &raw, history_len)?;
            let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
            let tree = pool.install(|| walk::archive_paths(&ctx, &abs, parent_tree))?;
            (raw, parent.map(|p| p.0), tree, history)
        }
        Source::Stream { name, reader } => {
            let raw = vec![name.clone()];
            let (parent, history) =
                parent_and_history(repo, &opts.parent, &host, &raw, history_len)?;
            let tree = pool.install(|| walk::archive_stream(&ctx, &name, reader))?;
            (raw, parent.map(|p| p.0), tree, history)
        }
    };
    progress.finish_phase();
    let stats = saver.finish()?;
    let errors = ctx.errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let c = &ctx.counters;
    let (time, tz) = opts
        .time
        .unwrap_or_else(|| (start_time, local_offset(start_time)));
    let mut tags = opts.tags.clone();
    tags.sort();
    tags.dedup();
    let snapshot = Snapshot {
        time,
        tz_offset_secs: tz,
        hostname: host,
        username: crate::source::owner::current_username(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        paths,
        tags,
        tree,
        parent,
        original: None,
        program_version: format!("vault {}", env!("CARGO_PKG_VERSION")),
        summary: Summary {
            files_new: Counters::get(&c.files_new),
            files_changed: Counters::get(&c.files_changed),
            files_unmodified: Counters::get(&c.files_unmodified),
            dirs_new: Counters::get(&c.dirs_new),
            dirs_changed: Counters::get(&c.dirs_changed),
            dirs_unmodified: Counters::get(&c.dirs_unmodified),
            data_blobs: stats.data_blobs,
            tree_blobs: stats.tree_blobs,
            bytes_read: Counters::get(&c.bytes_read),
            bytes_added: stats.bytes_added,
            bytes_stored: stats.bytes_stored,
            total_files: Counters::get(&c.total_files),
            total_bytes: Counters::get(&c.total_bytes),
            errors: errors.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
            other_entries: Counters::get(&c.other),
        },
    };
    // Everything the manifest references is stored and indexed; make sure nobody pruned under
    // us (our lock must still be valid) before publishing it.
    let anomalies = match &opts.anomaly {
        Some(t) => crate::anomaly::assess(&snapshot.summary, &history, t),
        None => Vec::new(),
    };
    let mut snapshot = snapshot;
    if !anomalies.is_empty() {
        // Still saved (a backup is never dropped), but marked for everyone who lists it.
        snapshot.add_tag(ANOMALY_TAG);
    }
    if opts.dry_run {
        return Ok(SnapshotOutcome {
            id: SnapshotId([0; 32]),
            snapshot,
            errors,
            anomalies,
            history_len: history.len(),
        });
    }
    lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    if repo.is_write_only() {
        repo.remember_own_snapshot(&id, &snapshot)?;
    }
    if let Some(run) = run {
        run.finish();
    }
    Ok(SnapshotOutcome {
        id,
        snapshot,
        errors,
        anomalies,
        history_len: history.len(),
    })
}

/// The system time zone's UTC offset at `t`, in seconds.
pub fn local_offset(t: Timestamp) -> i32 {
    jiff::Timestamp::new(t.secs, 0)
        .map(|ts| jiff::tz::TimeZone::system().to_offset(ts).seconds())
        .unwrap_or(0)
}
