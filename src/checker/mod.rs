//! Repository verification: `vault check` (`format-spec/11-ordering-and-invariants.md`).
//!
//! Every object kind of the layout is verified: keys decode and match their names; every
//! snapshot and hold decodes; every index object opens and decodes; every indexed pack exists
//! with the size the index records and its header agrees with the index; every snapshot's
//! whole tree is reachable with every referenced blob indexed; locks decode; staging files
//! left in `tmp/` are counted. Duplicates, stale locks, unindexed packs and leftovers are
//! notes, never damage. `--verify-data` additionally reads every selected pack once and opens,
//! decompresses and re-hashes every blob, on all cores. Every problem names its object;
//! damaged blobs are mapped to the snapshots and paths that need them.
//!
//! Memory does not grow with the repository: lookups go through the on-disk index, and the
//! pack sets, the trees visited and the subtrees found clean are kept in on-disk scratch sets.

mod damage;
mod packs;
mod structure;
mod trees;

use std::collections::HashSet;
use std::sync::Mutex;

use crate::id::{BlobId, BlobType, PackId, SnapshotId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::{Error, ObjectRef, Result};

pub use damage::{AffectedPath, Damage};

/// Which packs `--verify-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// Part `n` of `m` (1-based): packs whose id, read as a big-endian u32 prefix, is `n-1`
    /// modulo `m`. Parts 1..=m together cover every pack exactly once.
    Part {
        /// Which part.
        n: u32,
        /// Of how many.
        m: u32,
    },
    /// A random sample of this fraction of the packs (0 < f ≤ 1).
    Fraction(f64),
    /// A random sample of packs adding up to about this many bytes.
    Bytes(u64),
}

impl Subset {
    /// Parses `1/5`, `10%` or `2GiB`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidInput(format!("subset {s:?}: use n/m, a percentage or a size"));
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (
                n.trim().parse().map_err(|_| bad())?,
                m.trim().parse().map_err(|_| bad())?,
            );
            if m == 0 || n == 0 || n > m {
                return Err(bad());
            }
            return Ok(Subset::Part { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let f: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(f > 0.0 && f <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Fraction(f / 100.0));
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" | "kb" => 1024.0,
            "m" | "mib" | "mb" => 1024.0 * 1024.0,
            "g" | "gib" | "gb" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tib" | "tb" => 1024.0f64.powi(4),
            _ => return Err(bad()),
        };
        Ok(Subset::Bytes((v * mult) as u64))
    }
}

/// Options of a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Read and verify pack contents (which packs).
    pub verify_data: Option<Subset>,
    /// Worker threads.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            verify_data: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// One finding.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// The object concerned, as text (`pack 1a2b…`, `snapshot …`, `data blob … in pack …`).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// Counters of what was checked.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckStats {
    /// Key files.
    pub keys: u64,
    /// Index objects.
    pub index_objects: u64,
    /// Packs in the backend.
    pub packs: u64,
    /// Blob entries in the index objects.
    pub index_entries: u64,
    /// Snapshots.
    pub snapshots: u64,
    /// Hold objects.
    pub holds: u64,
    /// Audit records.
    pub audit_records: u64,
    /// Staging files left in `tmp/` by interrupted runs.
    pub tmp_files: u64,
    /// Their bytes.
    pub tmp_bytes: u64,
    /// Distinct trees walked.
    pub trees: u64,
    /// Packs read whole by --verify-data.
    pub packs_read: u64,
    /// Bytes read by --verify-data.
    pub bytes_read: u64,
    /// Blobs opened and re-hashed by --verify-data.
    pub blobs_verified: u64,
    /// Archived PostgreSQL WAL files (chapter 15).
    pub wal_files: u64,
    /// Of them, opened and decoded by --verify-data.
    pub wal_verified: u64,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Errors: the repository is damaged.
    pub errors: Vec<Problem>,
    /// Notes: worth knowing, not damage (duplicates, unreferenced packs, stale locks).
    pub notes: Vec<Problem>,
    /// For each affected snapshot, the paths that cannot be restored intact.
    pub damage: Vec<Damage>,
    /// What was checked.
    pub stats: CheckStats,
}

impl CheckReport {
    /// Whether no error was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Shared state of a running check.
pub(crate) struct Ctx<'a> {
    pub repo: &'a Repository,
    pub progress: &'a dyn Progress,
    pub errors: Mutex<Vec<Problem>>,
    pub notes: Mutex<Vec<Problem>>,
    /// Blobs that are missing or damaged.
    pub bad_blobs: Mutex<HashSet<(BlobType, BlobId)>>,
    /// Packs that are missing or damaged as a whole.
    pub bad_packs: Mutex<HashSet<PackId>>,
    pub stats: Mutex<CheckStats>,
    /// Pack buffers reused from pack to pack by `--verify-data`.
    pub pack_buffers: crate::buffers::BufferPool,
    /// Threads that only read packs for `--verify-data` (remote storage), 0 when the pool's
    /// workers read them themselves (a local directory).
    pub reads_ahead: usize,
}

impl Ctx<'_> {
    pub(crate) fn error(&self, object: &ObjectRef, message: impl Into<String>) {
        let p = Problem {
            object: object.to_string(),
            message: message.into(),
        };
        tracing::debug!(object = %p.object, message = %p.message, "check error");
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }

    pub(crate) fn note(&self, object: &ObjectRef, message: impl Into<String>) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Problem {
                object: object.to_string(),
                message: message.into(),
            });
    }

    pub(crate) fn bad_blob(&self, t: BlobType, id: BlobId) {
        self.bad_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((t, id));
    }

    pub(crate) fn bad_pack(&self, p: PackId) {
        self.bad_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p);
    }

    pub(crate) fn is_bad_pack(&self, p: &PackId) -> bool {
        self.bad_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(p)
    }

    pub(crate) fn stat(&self, f: impl FnOnce(&mut CheckStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Checks the repository.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("vault-check-{i}"))
        .build()
        .map_err(|e| Error::Aborted(format!("thread pool: {e}")))?;
    let reads_ahead = crate::readahead::readers(repo, opts.threads.max(1));
    tracing::debug!(reads_ahead, "packs read ahead by --verify-data");
    let ctx = Ctx {
        repo,
        progress,
        errors: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
        bad_blobs: Mutex::new(HashSet::new()),
        bad_packs: Mutex::new(HashSet::new()),
        stats: Mutex::new(CheckStats::default()),
        pack_buffers: crate::buffers::BufferPool::new(opts.threads.max(1)),
        reads_ahead,
    };
    let damage = pool.install(|| -> Result<Vec<Damage>> {
        let mut timer = PhaseTimer::start();
        structure::check_keys(&ctx)?;
        // Snapshots before the index, the index before the packs: see `structure`.
        let snapshots = structure::check_snapshot_objects(&ctx)?;
        structure::check_holds(&ctx, &snapshots)?;
        timer.lap("keys, snapshots, holds");
        let packs = structure::check_index(&ctx)?;
        timer.lap("index");
        match opts.verify_data {
            Some(subset) => packs::verify_packs(&ctx, &packs, subset)?,
            None => packs::check_headers(&ctx, &packs)?,
        }
        drop(packs);
        timer.lap("packs");
        trees::check_trees(&ctx, &snapshots)?;
        timer.lap("trees");
        structure::check_locks(&ctx)?;
        structure::check_audit(&ctx)?;
        structure::check_tmp(&ctx)?;
        structure::check_wal(&ctx, opts.verify_data.is_some())?;
        structure::check_epochs(&ctx);
        timer.lap("locks, audit, tmp, wal, epochs");
        let bad = std::mem::take(&mut *ctx.bad_blobs.lock().unwrap_or_else(|e| e.into_inner()));
        if bad.is_empty() {
            return Ok(Vec::new());
        }
        damage::affected(repo, &snapshots, &bad)
    })?;
    Ok(CheckReport {
        errors: ctx.errors.into_inner().unwrap_or_else(|e| e.into_inner()),
        notes: ctx.notes.into_inner().unwrap_or_else(|e| e.into_inner()),
        damage,
        stats: ctx.stats.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// Logs how long each phase of a check took (at debug level: `RUST_LOG=vault=debug`), so a
/// slow check can be attributed to a phase without a profiler.
struct PhaseTimer(std::time::Instant);

impl PhaseTimer {
    fn start() -> Self {
        Self(std::time::Instant::now())
    }

    fn lap(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            phase,
            ms = (now - self.0).as_millis() as u64,
            "check phase done"
        );
        self.0 = now;
    }
}

/// Snapshots that could be read, for the damage walk.
pub(crate) type SnapshotRoots = Vec<(SnapshotId, crate::format::snapshot::Snapshot)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse() {
        assert_eq!(Subset::parse("1/5").unwrap(), Subset::Part { n: 1, m: 5 });
        assert_eq!(Subset::parse("10%").unwrap(), Subset::Fraction(0.1));
        assert_eq!(Subset::parse("2GiB").unwrap(), Subset::Bytes(2 << 30));
        assert!(Subset::parse("0/5").is_err());
        assert!(Subset::parse("6/5").is_err());
        assert!(Subset::parse("150%").is_err());
        assert!(Subset::parse("x").is_err());
    }
}
