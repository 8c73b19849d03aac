//! Walking every snapshot's trees: each tree once (the set of trees seen is on disk), every
//! referenced blob looked up in the index.
//!
//! A blob that a snapshot references but the index does not name is judged only after the
//! index was loaded again: a snapshot saved while `check` ran may name index objects written
//! after `check` loaded the index, and that is not damage.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentPart, NodeKind};
use crate::id::{BlobId, BlobType, SnapshotId};
use crate::repo::BlobIndex;
use crate::repo::cache::scratch::MarkSet;
use crate::{Error, ObjectRef, Result};

use super::Ctx;

/// What every step of the walk shares.
struct Walk<'a, 'c> {
    ctx: &'a Ctx<'c>,
    index: &'a BlobIndex,
    seen: &'a MarkSet,
    /// Blobs not found in the index (judged after a reload).
    missing: &'a Mutex<HashSet<(BlobType, BlobId)>>,
    /// The first error that stops the walk.
    failed: Mutex<Option<Error>>,
}

impl<'a, 'c> Walk<'a, 'c> {
    fn new(
        ctx: &'a Ctx<'c>,
        index: &'a BlobIndex,
        seen: &'a MarkSet,
        missing: &'a Mutex<HashSet<(BlobType, BlobId)>>,
    ) -> Self {
        Self {
            ctx,
            index,
            seen,
            missing,
            failed: Mutex::new(None),
        }
    }

    /// Checks the trees `roots` and everything below them not seen before. Every tree is a
    /// task on the pool (one snapshot's tree is most of a check's tree work, so parallelism
    /// over snapshots alone left a core idle); tasks are queued, not nested, so neither the
    /// call stack nor the thread count grows with depth (10 000 levels are tested). A queued
    /// task holds one tree id. `again` walks roots already marked seen (they failed to load
    /// the first time).
    fn run(self, roots: &[BlobId], again: bool) -> Result<()> {
        rayon::scope(|s| {
            for root in roots {
                let walk = &self;
                let root = *root;
                s.spawn(move |s| walk.tree(s, root, again));
            }
        });
        match self.failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn tree<'s>(&'s self, s: &rayon::Scope<'s>, tree: BlobId, again: bool) {
        if self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        match self.visit(tree, again) {
            Ok(subtrees) => {
                for sub in subtrees {
                    s.spawn(move |s| self.tree(s, sub, false));
                }
            }
            Err(e) => {
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        }
    }

    /// Checks one tree's nodes; returns its subtrees to walk.
    fn visit(&self, tree: BlobId, again: bool) -> Result<Vec<BlobId>> {
        if !again {
            if !self.seen.insert_new(BlobType::Tree, &tree)? {
                return Ok(Vec::new());
            }
            self.ctx.stat(|s| s.trees += 1);
            self.ctx.progress.advance(1);
        }
        let loaded = match self.ctx.repo.load_tree(&tree) {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                self.unreadable(tree, e);
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut subtrees = Vec::new();
        for node in &loaded.nodes {
            match node.kind {
                NodeKind::File => {
                    for part in &node.content {
                        if let ContentPart::Chunk(c) = part
                            && !self.index.contains(BlobType::Data, c)?
                        {
                            self.note_missing(BlobType::Data, *c);
                        }
                    }
                }
                NodeKind::Dir => match node.subtree {
                    Some(sub) => subtrees.push(sub),
                    None => self.ctx.error(
                        &ObjectRef::Path(String::from_utf8_lossy(&node.name).into_owned()),
                        "a directory entry has no tree",
                    ),
                },
                _ => {}
            }
        }
        Ok(subtrees)
    }

    fn note_missing(&self, t: BlobType, id: BlobId) {
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((t, id));
    }

    fn unreadable(&self, tree: BlobId, error: Error) {
        match &error {
            // Not in the index: judged after a reload.
            Error::NotFound {
                object: ObjectRef::Blob { .. },
            } => self.note_missing(BlobType::Tree, tree),
            _ => {
                self.ctx.error(
                    &ObjectRef::Blob {
                        blob_type: BlobType::Tree,
                        id: tree,
                        pack: None,
                    },
                    super::structure::reason(&error),
                );
                self.ctx.bad_blob(BlobType::Tree, tree);
            }
        }
    }
}

/// Walks every snapshot's trees, in parallel over snapshots.
pub(crate) fn check_trees(ctx: &Ctx<'_>, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    let index = ctx.repo.index()?;
    let seen = MarkSet::new(ctx.repo.temp_dir())?;
    let missing = Mutex::new(HashSet::new());
    ctx.progress
        .phase("trees", None, crate::progress::Unit::Items);
    let roots: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    Walk::new(ctx, &index, &seen, &missing).run(&roots, false)?;
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
                Walk::new(ctx, &index, &seen, &still).run(&[id], true)?;
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
