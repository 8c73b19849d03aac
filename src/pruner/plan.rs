//! Marking used blobs and deciding, pack by pack, what to delete and what to repack.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::format::layout::Dir;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType, IndexId, PackId, SnapshotId};
use crate::progress::{Progress, Unit};
use crate::repo::cache::scratch::MarkSet;
use crate::repo::walker::{TreeVisitor, walk};
use crate::repo::{BlobIndex, Repository};
use crate::{Error, ObjectRef, Result};
use std::path::Path;

/// How much unused space `prune` may leave behind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// A fraction of the repository's used size (`5%` is the default).
    Fraction(f64),
    /// An absolute number of bytes.
    Bytes(u64),
    /// Never repack partly used packs (only delete wholly unused ones).
    Unlimited,
    /// Delete nothing; repack exactly the packs written by write-only keys (re-encryption,
    /// never typed by a user).
    WriterPacksOnly,
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused::Fraction(0.05)
    }
}

impl MaxUnused {
    /// Parses `5%`, `200MiB` or `unlimited`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let f: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("invalid --max-unused {s:?}"))?;
            if !(0.0..=100.0).contains(&f) {
                return Err(format!("--max-unused {s:?} must be between 0% and 100%"));
            }
            return Ok(MaxUnused::Fraction(f / 100.0));
        }
        match crate::checker::Subset::parse(s) {
            Ok(crate::checker::Subset::Bytes(b)) => Ok(MaxUnused::Bytes(b)),
            _ => Err(format!(
                "invalid --max-unused {s:?} (use 5%, 200MiB or unlimited)"
            )),
        }
    }
}

/// Per-pack accounting.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackStat {
    pub size: u64,
    pub blob_bytes: u64,
    pub blobs: u64,
    pub used_bytes: u64,
    pub used_blobs: u64,
    /// Blobs the index serves from this pack (fewer than `blobs` when some of its blobs are
    /// served from another copy).
    pub served: u64,
    pub tree: bool,
}

/// The garbage-collection plan, and afterwards what was done.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcPlan {
    /// Blobs reachable from the remaining snapshots.
    pub used_blobs: u64,
    /// Their stored bytes.
    pub used_bytes: u64,
    /// Stored bytes of blobs nothing references.
    pub unused_bytes: u64,
    /// Packs in the repository.
    pub packs_total: u64,
    /// Packs deleted whole (nothing in them is used).
    pub packs_to_delete: Vec<PackId>,
    /// Packs whose used blobs are copied into new packs, then deleted.
    pub packs_to_repack: Vec<PackId>,
    /// Bytes of the packs deleted whole.
    pub bytes_deleted: u64,
    /// Bytes of the packs repacked (before).
    pub bytes_repacked: u64,
    /// Bytes of used blobs copied by repacking.
    pub bytes_copied: u64,
    /// Unused bytes left after the plan runs.
    pub unused_after: u64,
    /// Index objects that the new index supersedes.
    pub old_indexes: Vec<IndexId>,
    /// Packs written by repacking (after execution).
    pub packs_written: u64,
    /// Their bytes (after execution).
    pub bytes_written: u64,
    /// Index objects written (after execution).
    pub indexes_written: u64,
    /// Bytes freed (after execution: deleted + repacked − written).
    pub bytes_freed: u64,
    /// Packs and index objects not deleted because the storage still retains them (object
    /// lock); unreferenced now, a later prune deletes them.
    pub deferred: u64,
    /// When the last of them may go.
    pub deferred_until: Option<String>,
    /// Stale temporary files removed (after execution).
    pub tmp_files_removed: u64,
    #[serde(skip)]
    pub(crate) stats: HashMap<PackId, PackStat>,
    #[serde(skip)]
    pub(crate) marks: Option<std::sync::Arc<MarkSet>>,
    /// Packs the index objects name that the backend does not hold.
    #[serde(skip)]
    pub(crate) missing_packs: HashSet<PackId>,
}

/// Marks every blob reachable from `snapshots`: snapshots are walked in parallel, each tree
/// once (the trees seen are marks too, on disk). Fails with the damage error if a used blob is
/// not indexed or a tree cannot be read: pruning a damaged repository could delete what
/// remains of it. Other errors (an outage, a full disk) keep their kind.
pub(crate) fn mark(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    progress: &dyn Progress,
) -> Result<MarkSet> {
    let marks = MarkSet::new(repo.temp_dir())?;
    let index = repo.index()?;
    progress.phase("mark", None, Unit::Items);
    snapshots.par_iter().try_for_each(|(_, s)| {
        let mut m = Marker {
            index: &index,
            marks: &marks,
            progress,
        };
        walk(repo, &s.tree, Path::new("/"), &mut m)
    })?;
    marks.flush()?;
    progress.finish_phase();
    Ok(marks)
}

struct Marker<'a> {
    index: &'a BlobIndex,
    marks: &'a MarkSet,
    progress: &'a dyn Progress,
}

impl TreeVisitor for Marker<'_> {
    fn enter(&mut self, tree: &BlobId, _path: &Path) -> Result<bool> {
        let new = self.marks.insert_new(BlobType::Tree, tree)?;
        if new {
            self.progress.advance(1);
        }
        Ok(new)
    }

    fn node(&mut self, _path: &Path, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File {
            for part in &node.content {
                if let ContentPart::Chunk(c) = part {
                    if !self.index.contains(BlobType::Data, c)? {
                        return Err(Error::NotFound {
                            object: ObjectRef::Blob {
                                blob_type: BlobType::Data,
                                id: *c,
                                pack: None,
                            },
                        });
                    }
                    self.marks.insert(BlobType::Data, c)?;
                }
            }
        }
        Ok(())
    }
}

/// Builds the plan: marks, then accounts every pack and decides.
pub(crate) fn plan(
    repo: &Repository,
    remaining: &[(SnapshotId, Snapshot)],
    max_unused: MaxUnused,
    progress: &dyn Progress,
) -> Result<GcPlan> {
    let marks = mark(repo, remaining, progress)?;
    let mut stats: HashMap<PackId, PackStat> = HashMap::new();
    for o in repo.backend().list(Dir::Data.name())? {
        if let Some(raw) = Dir::Data.name_of(&o.path) {
            stats.entry(PackId(raw)).or_default().size = o.size;
        }
    }
    // Totals per pack, streaming the index objects one at a time.
    let old_indexes = repo.list_index_ids()?;
    let mut counted: HashSet<PackId> = HashSet::new();
    for id in &old_indexes {
        // A damaged index object is damage (the caller says what to do); an outage is not.
        let idx = repo.read_index(id)?;
        for p in idx.packs {
            if !counted.insert(p.id) {
                continue;
            }
            let Some(st) = stats.get_mut(&p.id) else {
                continue; // indexed but missing: nothing to delete; check reports it
            };
            st.blobs = p.blobs.len() as u64;
            // A frame member counts for its share of the frame (D57).
            st.blob_bytes = p.blobs.iter().map(|b| b.stored_share()).sum();
            st.tree = p
                .blobs
                .first()
                .is_some_and(|b| b.blob_type == BlobType::Tree);
        }
    }
    // Used bytes per pack: each used blob counts in the one pack the index serves it from.
    let mut used_blobs = 0u64;
    let mut used_bytes = 0u64;
    let mut missing_pack: Option<(BlobId, PackId)> = None;
    repo.index()?.for_each_marked(&marks, |_, id, loc, used| {
        if let Some(st) = stats.get_mut(&loc.pack) {
            st.served += 1;
        }
        if !used {
            return Ok(());
        }
        match stats.get_mut(&loc.pack) {
            Some(st) => {
                st.used_bytes += loc.stored_share();
                st.used_blobs += 1;
                used_blobs += 1;
                used_bytes += loc.stored_share();
            }
            None => {
                missing_pack.get_or_insert((id, loc.pack));
            }
        }
        Ok(())
    })?;
    if let Some((_, pack)) = missing_pack {
        return Err(Error::NotFound {
            object: ObjectRef::Pack(pack),
        });
    }
    let missing_packs = counted
        .into_iter()
        .filter(|p| !stats.contains_key(p))
        .collect();
    let mut plan = GcPlan {
        used_blobs,
        used_bytes,
        packs_total: stats.len() as u64,
        old_indexes,
        missing_packs,
        ..GcPlan::default()
    };
    let unused_of = |st: &PackStat| st.size.saturating_sub(st.used_bytes);
    let mut partial: Vec<(PackId, PackStat)> = Vec::new();
    let mut unused_total = 0u64;
    for (id, st) in &stats {
        if st.used_blobs == 0 {
            plan.packs_to_delete.push(*id);
            plan.bytes_deleted += st.size;
        } else {
            unused_total += unused_of(st);
            partial.push((*id, st.clone()));
        }
    }
    plan.unused_bytes = unused_total + plan.bytes_deleted;
    let limit = match max_unused {
        MaxUnused::Fraction(f) => (used_bytes as f64 * f) as u64,
        MaxUnused::Bytes(b) => b,
        MaxUnused::Unlimited | MaxUnused::WriterPacksOnly => u64::MAX,
    };
    // Most wasteful packs first (by unused share, then by unused bytes).
    partial.sort_by(|a, b| {
        let ra = unused_of(&a.1) as f64 / a.1.size.max(1) as f64;
        let rb = unused_of(&b.1) as f64 / b.1.size.max(1) as f64;
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(unused_of(&b.1).cmp(&unused_of(&a.1)))
    });
    let repack: HashSet<PackId> = if max_unused == MaxUnused::WriterPacksOnly {
        // Re-encryption: only the packs of write-only keys (sealed to the reader, whose
        // layout changes when re-sealed) are rewritten; nothing else is touched.
        plan.packs_to_delete.clear();
        plan.bytes_deleted = 0;
        let mut writer = HashSet::new();
        for (id, _) in &partial {
            if repo.pack_session(id)?.is_some() {
                writer.insert(*id);
            }
        }
        writer
    } else {
        let mut repack: HashSet<PackId> = HashSet::new();
        for (id, st) in &partial {
            if unused_total <= limit {
                break;
            }
            // Only packs with real garbage in them; the header overhead alone is not garbage.
            if st.blob_bytes > st.used_bytes {
                repack.insert(*id);
                unused_total -= unused_of(st);
            }
        }
        // Merge packs much smaller than the target size (left by small runs), per blob type.
        let small = (repo.config().pack_size / 4) as u64;
        for tree in [false, true] {
            let smalls: Vec<PackId> = partial
                .iter()
                .filter(|(id, st)| st.tree == tree && st.size < small && !repack.contains(id))
                .map(|(id, _)| *id)
                .collect();
            if smalls.len() >= 2 {
                for id in smalls {
                    unused_total -= unused_of(&stats[&id]).min(unused_total);
                    repack.insert(id);
                }
            }
        }
        repack
    };
    for id in &repack {
        let st = &stats[id];
        plan.bytes_repacked += st.size;
        plan.bytes_copied += st.used_bytes;
    }
    plan.packs_to_repack = repack.into_iter().collect();
    plan.packs_to_repack.sort();
    plan.packs_to_delete.sort();
    plan.unused_after = unused_total;
    plan.stats = stats;
    plan.marks = Some(std::sync::Arc::new(marks));
    Ok(plan)
}
