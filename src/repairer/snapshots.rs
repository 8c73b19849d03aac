//! `repair snapshots`: replacement snapshots that leave out what cannot be restored.
//!
//! Every snapshot's tree is rewritten bottom-up ([`crate::repo::walker::rewrite`]) without the
//! files whose data is not in the index and the directories whose listing cannot be read. A
//! subtree's outcome (and the paths it lost, relative to it) is remembered by tree id on disk,
//! so a subtree shared by many snapshots is rewritten once. A replacement records its
//! original, carries the tag `repaired`, and its summary counts what it really holds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentPart, Node, NodeKind, Tree};
use crate::format::wire::{Reader, Writer};
use crate::id::{BlobId, BlobType, SnapshotId};
use crate::repo::cache::scratch::ScratchMap;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::repo::walker::{Rewritten, TreeRewriter, recount, rewrite};
use crate::repo::{BlobIndex, Repository};
use crate::{Error, ObjectRef, Result};

use super::Problem;

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

/// Paths lost below a tree (relative to it, raw bytes) and why.
type Lost = Vec<(Vec<u8>, String)>;

/// Memo of one rewritten subtree: its outcome and the paths (relative to it) it lost.
fn encode_memo(outcome: Rewritten, lost: &[(Vec<u8>, String)]) -> Vec<u8> {
    let mut w = Writer::new();
    outcome.encode(&mut w);
    w.uvarint(lost.len() as u64);
    for (p, why) in lost {
        w.bytes(p);
        w.str(why);
    }
    w.into_bytes()
}

fn decode_memo(v: &[u8]) -> Option<(Rewritten, Lost)> {
    let mut r = Reader::new(v);
    let outcome = Rewritten::decode(&mut r)?;
    let n = r.uvarint().ok()?;
    let mut lost = Vec::new();
    for _ in 0..n {
        lost.push((r.bytes().ok()?.to_vec(), r.str().ok()?.to_string()));
    }
    Some((outcome, lost))
}

struct Rewriter<'a> {
    index: &'a BlobIndex,
    saver: &'a BlobSaver,
    memo: &'a ScratchMap,
    /// Paths lost, per open tree (relative to that tree), innermost last.
    lost: Vec<(PathBuf, Lost)>,
    /// Everything lost in this snapshot (absolute).
    removed: Vec<Problem>,
}

impl Rewriter<'_> {
    fn record(&mut self, path: &Path, why: String) {
        self.removed.push(Problem {
            object: crate::quote::quote_path(path),
            message: why.clone(),
        });
        for (base, lost) in &mut self.lost {
            if let Ok(rel) = path.strip_prefix(&*base) {
                lost.push((rel.as_os_str().as_bytes().to_vec(), why.clone()));
            }
        }
    }
}

impl TreeRewriter for Rewriter<'_> {
    fn known(&mut self, tree: &BlobId, path: &Path) -> Result<Option<Rewritten>> {
        let Some((outcome, lost)) = self.memo.get(&tree.0)?.as_deref().and_then(decode_memo) else {
            self.lost.push((path.to_path_buf(), Vec::new()));
            return Ok(None);
        };
        for (rel, why) in lost {
            let p = if rel.is_empty() {
                path.to_path_buf()
            } else {
                path.join(OsStr::from_bytes(&rel))
            };
            self.record(&p, why);
        }
        Ok(Some(outcome))
    }

    fn leaf(&mut self, path: &Path, node: Node) -> Result<Option<Node>> {
        if node.kind == NodeKind::File {
            for part in &node.content {
                if let ContentPart::Chunk(c) = part
                    && !self.index.contains(BlobType::Data, c)?
                {
                    self.record(path, format!("data blob {} is gone", c.short()));
                    return Ok(None);
                }
            }
        }
        Ok(Some(node))
    }

    fn unreadable(&mut self, _tree: &BlobId, path: &Path, error: Error) -> Result<Rewritten> {
        self.record(path, format!("its directory listing is gone ({error})"));
        Ok(Rewritten::Dropped)
    }

    fn save(&mut self, _path: &Path, _old: &BlobId, nodes: Vec<Node>) -> Result<BlobId> {
        self.saver.save_tree(&Tree { nodes })
    }

    fn done(&mut self, tree: &BlobId, _path: &Path, outcome: Rewritten) -> Result<()> {
        // `known` opened a frame for every tree it did not know (unreadable ones included).
        let lost = self.lost.pop().map(|(_, l)| l).unwrap_or_default();
        self.memo.put(&tree.0, &encode_memo(outcome, &lost))
    }
}

/// Writes replacement snapshots without the files whose data is gone. With `forget`, removes
/// the originals (and snapshots that cannot be read) afterwards.
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
    let index = repo.index()?;
    let saver = BlobSaver::new(repo, SaverOptions::default())?;
    let memo = ScratchMap::new(repo.temp_dir())?;
    let mut plans: Vec<(SnapshotId, Snapshot, Option<BlobId>, Vec<Problem>)> = Vec::new();
    for (id, snap) in &snapshots {
        let mut rw = Rewriter {
            index: &index,
            saver: &saver,
            memo: &memo,
            lost: Vec::new(),
            removed: Vec::new(),
        };
        match rewrite(repo, &snap.tree, Path::new("/"), &mut rw)? {
            Rewritten::Same => {}
            Rewritten::Changed(root) => plans.push((*id, snap.clone(), Some(root), rw.removed)),
            Rewritten::Dropped => plans.push((*id, snap.clone(), None, rw.removed)),
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
            new.add_tag("repaired");
            // What the replacement holds, not what the original held.
            recount(repo, &root, &mut new.summary)?;
            if forget {
                // The replacement takes the original's place, holds included.
                r.replacement = Some(repo.replace_snapshot(&id, &new)?.to_hex());
                r.forgotten = true;
            } else {
                r.replacement = Some(repo.save_snapshot(&new)?.to_hex());
            }
        } else if forget {
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
