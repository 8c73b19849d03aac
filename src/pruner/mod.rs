//! Retention and garbage collection: `vault forget` and `vault prune`
//! (`format-spec/11-ordering-and-invariants.md`, "Prune").
//!
//! 1. Decide which snapshots go ([`policy`]; held snapshots never go) and delete their
//!    manifests first, so no remaining manifest can point at data deleted later.
//! 2. Mark every blob reachable from the remaining snapshots into an on-disk [`MarkSet`].
//! 3. Plan by pack, streaming the index: delete packs with no used blob, repack packs whose
//!    unused share keeps the repository above `--max-unused`, merge small packs.
//! 4. Write repacked packs and their index objects, then index objects for the packs kept as
//!    they are, the last one listing every old index object it supersedes; only then delete the
//!    old index objects, and last the packs. A kill at any point leaves every kept snapshot
//!    restorable (at worst with duplicate or unreferenced packs), and a rerun finishes the job.
//!
//! RAM holds per-pack counters, never the whole index.

mod gc;
mod plan;
pub mod policy;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::LockGuard;
use crate::repo::snapshots::SnapshotFilter;
use crate::{Error, Result};

pub use plan::{GcPlan, MaxUnused};
pub use policy::{GroupBy, GroupDecision, GroupKey, Policy, Span, group_key};

/// What to forget and whether to collect garbage.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// The retention policy.
    pub policy: Policy,
    /// How snapshots are grouped for the policy.
    pub group_by: GroupBy,
    /// Only these snapshots are candidates for removal.
    pub filter: SnapshotFilter,
    /// Snapshots to remove explicitly.
    pub forget: Vec<SnapshotId>,
    /// With an empty policy: remove every matching snapshot (deliberately).
    pub keep_none: bool,
    /// Collect garbage (prune) rather than only removing manifests (forget).
    pub gc: bool,
    /// Only report.
    pub dry_run: bool,
    /// How much unused space may remain.
    pub max_unused: MaxUnused,
    /// Worker threads.
    pub threads: usize,
}

/// What was (or would be) done.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Policy decisions per group (empty when no policy was applied).
    pub groups: Vec<GroupDecision>,
    /// Snapshots removed (or to be removed).
    pub removed: Vec<(SnapshotId, Snapshot)>,
    /// Unreadable snapshot objects removed (or to be removed) because they were named.
    pub damaged_removed: Vec<SnapshotId>,
    /// Snapshots that stay because the storage retains them (object lock): (id, until).
    pub retained: Vec<(SnapshotId, String)>,
    /// The garbage-collection plan and what it did.
    pub gc: Option<GcPlan>,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
}

/// Removes snapshots by policy or id and, with `opts.gc`, collects garbage. The caller holds
/// an exclusive lock.
pub fn prune(
    repo: &Repository,
    lock: &LockGuard,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    let (snapshots, damaged) = repo.list_snapshots()?;
    // Damaged snapshot objects named explicitly are simply deleted: that is how a user gets rid
    // of one (nothing can be read from it anyway).
    let damaged_forgotten: Vec<SnapshotId> = damaged
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| opts.forget.contains(id))
        .collect();
    if let Some((id, e)) = damaged
        .iter()
        .find(|(id, _)| !damaged_forgotten.contains(id))
        && opts.gc
    {
        return Err(Error::InvalidInput(format!(
            "snapshot {} cannot be read ({e}); refusing to collect garbage, which would delete its data. \
             Run `vault check`, then `vault repair snapshots --forget` or remove it with `vault forget {}`",
            id.short(),
            id.short()
        )));
    }
    let (holds, damaged_holds) = repo.list_holds()?;
    let removes_snapshots = !opts.forget.is_empty() || !opts.policy.is_empty() || opts.keep_none;
    if let Some((id, e)) = damaged_holds.first()
        && removes_snapshots
    {
        return Err(Error::InvalidInput(format!(
            "hold {} cannot be read ({e}); it may protect any snapshot, so none is removed. \
             `vault repair holds` removes damaged holds (then place them again)",
            id.short()
        )));
    }
    let mut held: BTreeMap<SnapshotId, String> = BTreeMap::new();
    for (_, h) in holds {
        held.entry(h.snapshot)
            .and_modify(|r| {
                r.push_str("; ");
                r.push_str(&h.reason);
            })
            .or_insert(h.reason);
    }
    // Snapshots are moved, never cloned: with 10^4 of them a copy is megabytes.
    let present: std::collections::HashSet<SnapshotId> =
        snapshots.iter().map(|(id, _)| *id).collect();
    let mut to_remove: std::collections::HashSet<SnapshotId> = std::collections::HashSet::new();
    for id in opts
        .forget
        .iter()
        .filter(|id| !damaged_forgotten.contains(id))
    {
        if let Some(reason) = held.get(id) {
            return Err(Error::InvalidInput(format!(
                "snapshot {} is held ({reason}); release it first with `vault release`",
                id.short()
            )));
        }
        if !present.contains(id) {
            return Err(Error::NoMatch {
                what: "snapshot",
                name: id.to_hex(),
            });
        }
        to_remove.insert(*id);
    }
    drop(present);
    let (candidates, others): (Vec<_>, Vec<_>) = snapshots
        .into_iter()
        .partition(|(_, s)| opts.filter.matches(s));
    let mut groups = Vec::new();
    if !opts.policy.is_empty() || opts.keep_none {
        groups = policy::apply(&candidates, &opts.policy, opts.group_by, &held);
        for g in &groups {
            to_remove.extend(g.remove.iter().copied());
        }
    }
    let mut remove: BTreeMap<SnapshotId, Snapshot> = BTreeMap::new();
    let mut remaining: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for (id, s) in candidates.into_iter().chain(others) {
        if to_remove.contains(&id) {
            remove.insert(id, s);
        } else {
            remaining.push((id, s));
        }
    }
    remaining.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut report = PruneReport {
        groups,
        removed: remove.into_iter().collect(),
        ..PruneReport::default()
    };
    report.damaged_removed = damaged_forgotten.clone();
    if !opts.dry_run {
        lock.check()?;
        for id in report
            .removed
            .iter()
            .map(|(id, _)| id)
            .chain(damaged_forgotten.iter())
        {
            match repo.delete_snapshot(id) {
                Ok(()) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(Error::Retained { until, .. }) => report.retained.push((*id, until)),
                Err(e) => return Err(e),
            }
        }
        // A snapshot the storage still retains stays whole: its data is kept like any other
        // remaining snapshot's, and a later prune removes it.
        if !report.retained.is_empty() {
            let kept: std::collections::HashSet<SnapshotId> =
                report.retained.iter().map(|(id, _)| *id).collect();
            let (stay, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut report.removed)
                .into_iter()
                .partition(|(id, _)| kept.contains(id));
            report.removed = gone;
            remaining.extend(stay);
        }
    }
    if opts.gc {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name(|i| format!("vault-prune-{i}"))
            .build()
            .map_err(|e| Error::Aborted(format!("thread pool: {e}")))?;
        let mut p = pool.install(|| plan::plan(repo, &remaining, opts.max_unused, progress))?;
        if !opts.dry_run {
            pool.install(|| gc::execute(repo, lock, &mut p, progress))?;
        }
        report.gc = Some(p);
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
