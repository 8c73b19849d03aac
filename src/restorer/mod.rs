//! The restore engine, and single-file `dump`.
//!
//! Restore walks the snapshot's trees depth-first (an explicit stack, never the call stack),
//! creating directories, links and special files as it goes and collecting regular files
//! into batches. Each batch's content is planned by pack: every pack is fetched once per batch
//! with adjacent ranges merged, blobs are opened and verified on all cores and written at
//! their offsets into temporary files, which are renamed to their real names only when every
//! blob verified. Metadata is applied last: files after their content, directories after
//! everything inside them. A damaged or missing blob fails only the files that need it: they
//! never appear under their names, they are reported, and the exit code says so.
//! `format-spec/13-restore.md` specifies the result.

mod archive;
mod fetch;
mod find;
mod overwrite;
mod plan;
mod verify;
mod walk;

use std::path::PathBuf;

use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::apply::ApplyOptions;
use crate::source::dir::DirHandle;
use crate::source::exclude::PathMatcher;
use crate::{Error, Result};

pub use archive::{ArchiveFormat, ArchiveReport, write_archive};
pub use find::{DumpMode, TreeEntry, dump, find_node, walk_tree};
pub use overwrite::{Decision, Overwrite, decide};
pub use plan::{Action, PlanStats, plan_restore};
pub use verify::{VerifyReport, verify_restore};

/// A pseudo-random sample of the files (restore tests): a file is selected when a keyed hash
/// of its path falls below the fraction, so the same seed selects the same files.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Share of the files to select, 0.0 to 1.0.
    pub fraction: f64,
    /// Hash key: a fresh random one per run samples different files each time.
    pub seed: [u8; 32],
}

impl Sample {
    /// Whether the file at `path` (inside the snapshot) is selected.
    pub fn selects(&self, path: &std::path::Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let h = blake3::keyed_hash(&self.seed, path.as_os_str().as_bytes());
        let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        (v as f64) < self.fraction * (u64::MAX as f64)
    }
}

impl RestoreOptions {
    /// Whether the entry at snapshot path `path` is restored: its parent is, or an
    /// `--include` pattern matches it (exclusion is checked first, by the caller).
    pub(crate) fn includes(&self, parent_included: bool, path: &std::path::Path) -> bool {
        parent_included || {
            let mut hit = false;
            self.include.for_each_match(path, |_| hit = true);
            hit
        }
    }

    /// Whether the sample (restore tests) keeps the non-directory `node` at `path`: every
    /// entry but files is always kept.
    pub(crate) fn samples(&self, node: &crate::format::tree::Node, path: &std::path::Path) -> bool {
        node.kind != crate::format::tree::NodeKind::File
            || self.sample.as_ref().is_none_or(|s| s.selects(path))
    }
}

/// Options of a restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only restore paths matching these (with their contents); empty means everything.
    pub include: PathMatcher,
    /// Never restore paths matching these.
    pub exclude: PathMatcher,
    /// Worker threads.
    pub threads: usize,
    /// Which metadata to restore.
    pub apply: ApplyOptions,
    /// Plan at most this many content bytes at once (bounds memory).
    pub batch_bytes: u64,
    /// Keep the verified part of a damaged file as `NAME.vault-damaged` instead of removing it.
    pub keep_damaged: bool,
    /// Restore only a sample of the regular files (restore tests); `None`: all.
    pub sample: Option<Sample>,
    /// What to do with entries that already exist at the target.
    pub overwrite: Overwrite,
    /// Remove entries of restored directories that the snapshot does not have (entries that
    /// match `exclude` are left alone).
    pub delete: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            target: PathBuf::from("."),
            include: PathMatcher::new::<&str>(&[]).expect("invariant: empty pattern set"),
            exclude: PathMatcher::new::<&str>(&[]).expect("invariant: empty pattern set"),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            apply: ApplyOptions::default(),
            batch_bytes: 1 << 30,
            keep_damaged: false,
            sample: None,
            overwrite: Overwrite::default(),
            delete: false,
        }
    }
}

/// A path that could not be restored (or not completely).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreError {
    /// Path in the snapshot.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Regular files restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, fifos, sockets and devices restored.
    pub others: u64,
    /// Hard links recreated.
    pub hardlinks: u64,
    /// Existing entries kept (`--overwrite`: already what the snapshot holds, or not newer,
    /// or never replaced).
    pub skipped: u64,
    /// Entries removed because the snapshot does not have them (`--delete`).
    pub deleted: u64,
    /// Content bytes written (holes excluded).
    pub bytes_written: u64,
    /// Packs read.
    pub packs_read: u64,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
    /// Problems, per path.
    pub errors: Vec<RestoreError>,
    /// Files not restored because their data is damaged or missing (also in `errors`).
    pub damaged: Vec<String>,
    /// `--include` patterns that matched nothing.
    pub unmatched_includes: Vec<String>,
}

/// Restores snapshot `id` into `opts.target`.
pub fn restore(
    repo: &Repository,
    id: &SnapshotId,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    let snap = repo.load_snapshot(id)?;
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let root = DirHandle::open(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("vault-restore-{i}"))
        .build()
        .map_err(|e| Error::Aborted(format!("thread pool: {e}")))?;
    progress.phase(
        "restore",
        Some(snap.summary.total_bytes),
        crate::progress::Unit::Bytes,
    );
    let summary = pool.install(|| {
        walk::Restorer::new(repo, opts, progress, root)
            .with_paths(&snap.paths)
            .run(&snap.tree)
    })?;
    progress.finish_phase();
    Ok(summary)
}
