//! Repairs: rebuilding the index from the packs, and rewriting snapshots around lost data.
//!
//! Neither makes things worse: new objects are written before anything is deleted, damaged
//! packs are never deleted (they only stop being indexed; `prune` collects them), and original
//! snapshots are only removed with `--forget`, after their replacements exist.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rayon::prelude::*;

use crate::crypto::storage_hash;
use crate::format::index::{Index, IndexPack};
use crate::format::layout::{Dir, index_path, pack_path};
use crate::format::pack::PackEntry;
use crate::format::tree::{ContentPart, NodeKind, Tree, encode_tree};
use crate::id::{BlobId, BlobType, PackId, SnapshotId};
use crate::progress::{Progress, Unit};
use crate::repo::Repository;
use crate::repo::blob::PreparedBlob;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::{Error, ObjectRef, Result};

use super::Problem;

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs in the backend.
    pub packs: u64,
    /// Packs indexed as they are.
    pub packs_indexed: u64,
    /// Blob entries in the new index (including salvaged blobs).
    pub blobs_indexed: u64,
    /// Packs left out of the index (damaged), with why.
    pub damaged_packs: Vec<Problem>,
    /// Blobs found damaged and left out.
    pub damaged_blobs: Vec<Problem>,
    /// Intact blobs copied out of damaged packs into new packs.
    pub salvaged_blobs: u64,
    /// Index objects replaced.
    pub old_indexes_removed: u64,
}

/// Rebuilds the index from the pack headers (and, with `verify_data`, every blob).
pub fn repair_index(
    repo: &Repository,
    lock: &LockGuard,
    verify_data: bool,
    progress: &dyn Progress,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old_ids = repo.list_index_ids()?;
    let packs: Vec<(PackId, u64)> = repo
        .backend()
        .list(Dir::Data.name())?
        .into_iter()
        .filter_map(|o| Dir::Data.name_of(&o.path).map(|raw| (PackId(raw), o.size)))
        .collect();
    report.packs = packs.len() as u64;
    progress.phase("read packs", Some(packs.len() as u64), Unit::Items);
    // First pass: every pack's entries, or why it is damaged (with the entries that verified).
    enum Outcome {
        Whole(IndexPack),
        Damaged {
            reason: String,
            good: Vec<PackEntry>,
            bad: Vec<Problem>,
        },
    }
    let outcomes: Vec<(PackId, Result<Outcome>)> = packs
        .par_iter()
        .map(|(id, size)| {
            progress.advance(1);
            let r = (|| -> Result<Outcome> {
                if !verify_data {
                    return Ok(match repo.read_pack_header(id, Some(*size)) {
                        Ok(blobs) => Outcome::Whole(IndexPack {
                            id: *id,
                            size: *size,
                            blobs,
                        }),
                        Err(e) if damage(&e) => Outcome::Damaged {
                            reason: e.to_string(),
                            good: Vec::new(),
                            bad: Vec::new(),
                        },
                        Err(e) => return Err(e),
                    });
                }
                let bytes = repo.backend().read(&pack_path(id))?;
                let name_ok = storage_hash(&bytes) == id.0;
                let entries = match repo.parse_pack(id, &bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        return Ok(Outcome::Damaged {
                            reason: e.to_string(),
                            good: Vec::new(),
                            bad: Vec::new(),
                        });
                    }
                };
                let mut good = Vec::new();
                let mut bad = Vec::new();
                let mut scratch = Vec::new();
                for e in entries {
                    let mut sealed = bytes[e.offset as usize..e.end() as usize].to_vec();
                    match repo.open_blob_ref(
                        e.blob_type,
                        e.id,
                        &mut sealed,
                        e.raw_length,
                        Some(*id),
                        &mut scratch,
                    ) {
                        Ok(_) => good.push(e),
                        Err(err) => bad.push(Problem {
                            object: ObjectRef::Blob {
                                blob_type: e.blob_type,
                                id: e.id,
                                pack: Some(*id),
                            }
                            .to_string(),
                            message: err.to_string(),
                        }),
                    }
                }
                if name_ok && bad.is_empty() {
                    Ok(Outcome::Whole(IndexPack {
                        id: *id,
                        size: *size,
                        blobs: good,
                    }))
                } else {
                    let reason = if name_ok {
                        format!("{} damaged blobs", bad.len())
                    } else {
                        "content does not match its name".to_string()
                    };
                    Ok(Outcome::Damaged { reason, good, bad })
                }
            })();
            (*id, r)
        })
        .collect();
    progress.finish_phase();
    let mut whole = Vec::new();
    let mut damaged: HashMap<PackId, (String, Vec<PackEntry>)> = HashMap::new();
    for (id, r) in outcomes {
        match r? {
            Outcome::Whole(p) => whole.push(p),
            Outcome::Damaged { reason, good, bad } => {
                report.damaged_blobs.extend(bad);
                damaged.insert(id, (reason, good));
            }
        }
    }
    // Packs whose header could not be read: their blobs may still be located through the old
    // index objects that can be read.
    let need_old: HashSet<PackId> = damaged
        .iter()
        .filter(|(_, (_, g))| g.is_empty())
        .map(|(id, _)| *id)
        .collect();
    let mut old_entries: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    if !need_old.is_empty() {
        for id in &old_ids {
            if let Ok(idx) = repo.read_index(id) {
                for p in idx.packs.into_iter().filter(|p| need_old.contains(&p.id)) {
                    old_entries.entry(p.id).or_default().extend(p.blobs);
                }
            }
        }
    }
    // Salvage intact blobs of damaged packs into new packs (never twice, never if already whole).
    let mut have: HashSet<(BlobType, BlobId)> = whole
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| (b.blob_type, b.id)))
        .collect();
    let saver = BlobSaver::new(
        repo,
        SaverOptions {
            dedup_against_index: false,
            ..SaverOptions::default()
        },
    )?;
    for (id, (reason, good)) in &damaged {
        report.damaged_packs.push(Problem {
            object: ObjectRef::Pack(*id).to_string(),
            message: reason.clone(),
        });
        let candidates: Vec<PackEntry> = if good.is_empty() {
            old_entries.remove(id).unwrap_or_default()
        } else {
            good.clone()
        };
        if candidates.is_empty() {
            continue;
        }
        let Ok(bytes) = repo.backend().read(&pack_path(id)) else {
            continue;
        };
        for e in candidates {
            if !have.insert((e.blob_type, e.id)) || e.end() > bytes.len() as u64 {
                continue;
            }
            let sealed = bytes[e.offset as usize..e.end() as usize].to_vec();
            let mut probe = sealed.clone();
            let mut scratch = Vec::new();
            if repo
                .open_blob_ref(
                    e.blob_type,
                    e.id,
                    &mut probe,
                    e.raw_length,
                    Some(*id),
                    &mut scratch,
                )
                .is_ok()
            {
                saver.add(&PreparedBlob {
                    blob_type: e.blob_type,
                    id: e.id,
                    sealed,
                    raw_len: e.raw_length,
                })?;
                report.salvaged_blobs += 1;
            } else {
                have.remove(&(e.blob_type, e.id));
            }
        }
    }
    saver.finish()?;
    // The new index: whole packs, then one object superseding every old index object.
    report.packs_indexed = whole.len() as u64;
    let mut current = Index::default();
    let mut entries = 0;
    for p in whole {
        entries += p.blobs.len();
        report.blobs_indexed += p.blobs.len() as u64;
        current.packs.push(p);
        if entries >= 50_000 {
            repo.write_index(&std::mem::take(&mut current))?;
            entries = 0;
        }
    }
    report.blobs_indexed += report.salvaged_blobs;
    current.supersedes = old_ids.clone();
    current.supersedes.sort();
    repo.write_index(&current)?;
    lock.check()?;
    for id in &old_ids {
        match repo.backend().delete(&index_path(id)) {
            Ok(()) => report.old_indexes_removed += 1,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    repo.reload_index();
    Ok(report)
}

fn damage(e: &Error) -> bool {
    matches!(
        e.kind(),
        crate::ErrorKind::Corrupt | crate::ErrorKind::NotFound | crate::ErrorKind::Unsupported
    )
}

/// One snapshot's repair.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// The damaged snapshot.
    pub snapshot: String,
    /// Its replacement, when one was written.
    pub replacement: Option<String>,
    /// Paths left out of the replacement, with why.
    pub removed: Vec<Problem>,
    /// Whether the original was removed (`--forget`).
    pub forgotten: bool,
}

/// What `repair snapshots` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots that needed repair.
    pub repaired: Vec<SnapshotRepair>,
    /// Snapshots checked.
    pub snapshots: u64,
}

enum Rewrite {
    Same,
    Changed(BlobId),
    Lost(String),
}

/// A rewritten tree (`None`: unchanged) and the paths, relative to it, that were left out.
type Rewritten = (Option<BlobId>, Vec<(String, String)>);

struct Rewriter<'a> {
    repo: &'a Repository,
    saver: &'a BlobSaver,
    memo: HashMap<BlobId, Rewritten>,
}

impl Rewriter<'_> {
    /// Rewrites one tree without the entries whose data is gone; `removed` gets their paths.
    fn rewrite(&mut self, id: &BlobId, path: &Path, removed: &mut Vec<Problem>) -> Result<Rewrite> {
        if let Some((new, lost)) = self.memo.get(id) {
            // Paths are relative to the tree, so the same subtree at the same path reports alike.
            for (p, why) in lost {
                removed.push(Problem {
                    object: path.join(p).display().to_string(),
                    message: why.clone(),
                });
            }
            return Ok(match new {
                None => Rewrite::Same,
                Some(n) => Rewrite::Changed(*n),
            });
        }
        let mut tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e) if damage(&e) => {
                return Ok(Rewrite::Lost(format!(
                    "its directory listing is gone ({e})"
                )));
            }
            Err(e) => return Err(e),
        };
        let index = self.repo.index()?;
        let mut changed = false;
        let mut local: Vec<(String, String)> = Vec::new();
        let mut keep = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
            match node.kind {
                NodeKind::File => {
                    let mut missing = None;
                    for part in &node.content {
                        if let ContentPart::Chunk(c) = part
                            && !index.contains(BlobType::Data, c)?
                        {
                            missing = Some(*c);
                            break;
                        }
                    }
                    if let Some(c) = missing {
                        changed = true;
                        local.push((
                            name.to_string_lossy().into_owned(),
                            format!("data blob {} is gone", c.short()),
                        ));
                        continue;
                    }
                }
                NodeKind::Dir => {
                    let sub = node.subtree.unwrap_or_default();
                    let mut sub_removed = Vec::new();
                    match self.rewrite(&sub, Path::new(&name), &mut sub_removed)? {
                        Rewrite::Same => {}
                        Rewrite::Changed(n) => {
                            node.subtree = Some(n);
                            changed = true;
                        }
                        Rewrite::Lost(why) => {
                            changed = true;
                            local.push((name.to_string_lossy().into_owned(), why));
                            continue;
                        }
                    }
                    for p in sub_removed {
                        local.push((p.object, p.message));
                    }
                }
                _ => {}
            }
            keep.push(node);
        }
        for (p, why) in &local {
            removed.push(Problem {
                object: path.join(p).display().to_string(),
                message: why.clone(),
            });
        }
        if !changed {
            self.memo.insert(*id, (None, local));
            return Ok(Rewrite::Same);
        }
        let bytes = encode_tree(&Tree { nodes: keep });
        let new_id = self.repo.blob_id(&bytes);
        if !self.saver.contains(BlobType::Tree, &new_id)? {
            self.saver.add(
                &self
                    .repo
                    .prepare_blob_with_id(BlobType::Tree, new_id, &bytes)?,
            )?;
        }
        self.memo.insert(*id, (Some(new_id), local));
        Ok(Rewrite::Changed(new_id))
    }
}

/// Writes replacement snapshots without the files whose data is gone. With `forget`, removes
/// the originals (and snapshots that cannot be read or have nothing left) afterwards.
pub fn repair_snapshots(
    repo: &Repository,
    lock: &LockGuard,
    forget: bool,
) -> Result<RepairSnapshotsReport> {
    let (snapshots, unreadable) = repo.list_snapshots()?;
    let mut report = RepairSnapshotsReport {
        snapshots: (snapshots.len() + unreadable.len()) as u64,
        ..Default::default()
    };
    let saver = BlobSaver::new(repo, SaverOptions::default())?;
    let mut rewriter = Rewriter {
        repo,
        saver: &saver,
        memo: HashMap::new(),
    };
    let mut plans: Vec<(
        SnapshotId,
        crate::format::snapshot::Snapshot,
        Option<BlobId>,
        Vec<Problem>,
    )> = Vec::new();
    for (id, snap) in &snapshots {
        let mut removed = Vec::new();
        match rewriter.rewrite(&snap.tree, Path::new("/"), &mut removed)? {
            Rewrite::Same => {}
            Rewrite::Changed(root) => plans.push((*id, snap.clone(), Some(root), removed)),
            Rewrite::Lost(why) => {
                removed.push(Problem {
                    object: "/".into(),
                    message: why,
                });
                plans.push((*id, snap.clone(), None, removed));
            }
        }
    }
    // Trees first, then manifests, then (with --forget) deletions.
    saver.finish()?;
    lock.check()?;
    for (id, snap, root, removed) in plans {
        let mut r = SnapshotRepair {
            snapshot: id.to_hex(),
            removed,
            ..Default::default()
        };
        if let Some(root) = root {
            let mut new = snap.clone();
            new.tree = root;
            new.original = Some(id);
            if !new.tags.iter().any(|t| t == "repaired") {
                new.tags.push("repaired".into());
                new.tags.sort();
            }
            r.replacement = Some(repo.save_snapshot(&new)?.to_hex());
        }
        if forget {
            repo.delete_snapshot(&id)?;
            r.forgotten = true;
        }
        report.repaired.push(r);
    }
    for (id, e) in unreadable {
        let mut r = SnapshotRepair {
            snapshot: id.to_hex(),
            removed: vec![Problem {
                object: ObjectRef::Snapshot(id).to_string(),
                message: format!("unreadable: {e}"),
            }],
            ..Default::default()
        };
        if forget {
            repo.delete_snapshot(&id)?;
            r.forgotten = true;
        }
        report.repaired.push(r);
    }
    Ok(report)
}
