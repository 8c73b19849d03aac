//! Walking every snapshot's trees: each tree once (the set of trees seen is on disk), every
//! referenced blob looked up in the index.
//!
//! A blob that a snapshot references but the index does not name is judged only after the
//! index was loaded again: a snapshot saved while `check` ran may name index objects written
//! after `check` loaded the index, and that is not damage.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType, SnapshotId};
use crate::repo::BlobIndex;
use crate::repo::cache::scratch::MarkSet;
use crate::repo::walker::{TreeVisitor, walk};
use crate::{Error, ObjectRef, Result};

use super::Ctx;

struct Visitor<'a, 'c> {
    ctx: &'a Ctx<'c>,
    index: &'a BlobIndex,
    seen: &'a MarkSet,
    /// Blobs not found in the index (judged after a reload).
    missing: &'a Mutex<HashSet<(BlobType, BlobId)>>,
    /// A tree to walk even though it was seen (it failed to load the first time).
    again: Option<BlobId>,
}

impl TreeVisitor for Visitor<'_, '_> {
    fn enter(&mut self, tree: &BlobId, _path: &Path) -> Result<bool> {
        if self.again.take() == Some(*tree) {
            return Ok(true);
        }
        let new = self.seen.insert_new(BlobType::Tree, tree)?;
        if new {
            self.ctx.stat(|s| s.trees += 1);
            self.ctx.progress.advance(1);
        }
        Ok(new)
    }

    fn node(&mut self, _path: &Path, node: &Node) -> Result<()> {
        match node.kind {
            NodeKind::File => {
                for part in &node.content {
                    if let ContentPart::Chunk(c) = part
                        && !self.index.contains(BlobType::Data, c)?
                    {
                        self.missing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert((BlobType::Data, *c));
                    }
                }
            }
            NodeKind::Dir if node.subtree.is_none() => self.ctx.error(
                &ObjectRef::Path(String::from_utf8_lossy(&node.name).into_owned()),
                "a directory entry has no tree",
            ),
            _ => {}
        }
        Ok(())
    }

    fn unreadable(&mut self, tree: &BlobId, _path: &Path, error: Error) -> Result<()> {
        match &error {
            // Not in the index: judged after a reload.
            Error::NotFound {
                object: ObjectRef::Blob { .. },
            } => {
                self.missing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((BlobType::Tree, *tree));
            }
            _ => {
                self.ctx.error(
                    &ObjectRef::Blob {
                        blob_type: BlobType::Tree,
                        id: *tree,
                        pack: None,
                    },
                    super::structure::reason(&error),
                );
                self.ctx.bad_blob(BlobType::Tree, *tree);
            }
        }
        Ok(())
    }
}

/// Walks every snapshot's trees, in parallel over snapshots.
pub(crate) fn check_trees(ctx: &Ctx<'_>, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    let index = ctx.repo.index()?;
    let seen = MarkSet::new(ctx.repo.temp_dir())?;
    let missing = Mutex::new(HashSet::new());
    ctx.progress
        .phase("trees", None, crate::progress::Unit::Items);
    snapshots.par_iter().try_for_each(|(_, s)| {
        let mut v = Visitor {
            ctx,
            index: &index,
            seen: &seen,
            missing: &missing,
            again: None,
        };
        walk(ctx.repo, &s.tree, Path::new("/"), &mut v)
    })?;
    ctx.progress.finish_phase();
    let missing = missing.into_inner().unwrap_or_else(|p| p.into_inner());
    if missing.is_empty() {
        return Ok(());
    }
    // Load the index again before calling anything missing: a concurrent snapshot may have
    // written index objects after ours was loaded.
    ctx.repo.reload_index();
    let index = ctx.repo.index()?;
    let mut missing: Vec<_> = missing.into_iter().collect();
    missing.sort();
    let still = Mutex::new(HashSet::new());
    for (t, id) in missing {
        if index.contains(t, &id)? {
            if t == BlobType::Tree {
                // Now indexed: walk what is below it too.
                let mut v = Visitor {
                    ctx,
                    index: &index,
                    seen: &seen,
                    missing: &still,
                    again: Some(id),
                };
                walk(ctx.repo, &id, Path::new("/"), &mut v)?;
            }
            continue;
        }
        still
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((t, id));
    }
    let mut still: Vec<_> = still
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .collect();
    still.sort();
    for (t, id) in still {
        ctx.error(
            &ObjectRef::Blob {
                blob_type: t,
                id,
                pack: None,
            },
            "referenced by a snapshot but not in the index (missing)",
        );
        ctx.bad_blob(t, id);
    }
    Ok(())
}
