//! Mapping damaged or missing blobs to the snapshots and paths that need them.

use std::collections::HashSet;
use std::path::Path;

use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType};
use crate::repo::Repository;
use crate::repo::cache::scratch::MarkSet;
use crate::repo::walker::{TreeVisitor, walk};
use crate::{Error, Result};

use super::SnapshotRoots;

/// One path that cannot be restored intact.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AffectedPath {
    /// Path inside the snapshot (quoted like `ls -b` when it has unusual bytes).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The damage one snapshot suffers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Damage {
    /// Snapshot id.
    pub snapshot: String,
    /// Its short id.
    pub short_id: String,
    /// Affected paths.
    pub paths: Vec<AffectedPath>,
}

struct Mapper<'a> {
    bad: &'a HashSet<(BlobType, BlobId)>,
    /// Subtrees found clean (on disk: their number grows with the repository).
    clean: &'a MarkSet,
    paths: Vec<AffectedPath>,
    /// Per open tree: whether something below it is damaged.
    damaged: Vec<bool>,
}

impl Mapper<'_> {
    fn listing_lost(&mut self, tree: &BlobId, path: &Path, why: &str) {
        self.paths.push(AffectedPath {
            path: crate::quote::quote_path(path),
            reason: format!(
                "directory listing (tree blob {}) {why}; everything below it is lost",
                tree.short()
            ),
        });
        self.mark_damaged();
    }

    fn mark_damaged(&mut self) {
        for d in &mut self.damaged {
            *d = true;
        }
    }
}

impl TreeVisitor for Mapper<'_> {
    fn enter(&mut self, tree: &BlobId, path: &Path) -> Result<bool> {
        if self.clean.contains(BlobType::Tree, tree)? {
            return Ok(false);
        }
        if self.bad.contains(&(BlobType::Tree, *tree)) {
            self.listing_lost(tree, path, "is damaged or missing");
            return Ok(false);
        }
        self.damaged.push(false);
        Ok(true)
    }

    fn node(&mut self, path: &Path, node: &Node) -> Result<()> {
        if node.kind != NodeKind::File {
            return Ok(());
        }
        let lost: Vec<&BlobId> = node
            .content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Chunk(c) if self.bad.contains(&(BlobType::Data, *c)) => Some(c),
                _ => None,
            })
            .collect();
        if let Some(first) = lost.first() {
            self.paths.push(AffectedPath {
                path: crate::quote::quote_path(path),
                reason: format!(
                    "{} of its {} chunks damaged or missing (first: data blob {})",
                    lost.len(),
                    node.content.len(),
                    first.short()
                ),
            });
            self.mark_damaged();
        }
        Ok(())
    }

    fn unreadable(&mut self, tree: &BlobId, path: &Path, error: Error) -> Result<()> {
        // `enter` pushed a frame for it; `leave` is not called for an unreadable tree.
        self.damaged.pop();
        self.listing_lost(tree, path, &format!("cannot be read: {error}"));
        Ok(())
    }

    fn leave(&mut self, tree: &BlobId, _path: &Path) -> Result<()> {
        if !self.damaged.pop().unwrap_or(true) {
            self.clean.insert_new(BlobType::Tree, tree)?;
        }
        Ok(())
    }
}

/// Walks every snapshot and lists the paths whose data or listing is in `bad`. Subtrees found
/// clean are remembered (on disk), so shared subtrees are walked once.
pub(crate) fn affected(
    repo: &Repository,
    snapshots: &SnapshotRoots,
    bad: &HashSet<(BlobType, BlobId)>,
) -> Result<Vec<Damage>> {
    let clean = MarkSet::new(repo.temp_dir())?;
    let mut out = Vec::new();
    for (id, snap) in snapshots {
        let mut m = Mapper {
            bad,
            clean: &clean,
            paths: Vec::new(),
            damaged: Vec::new(),
        };
        walk(repo, &snap.tree, Path::new("/"), &mut m)?;
        if !m.paths.is_empty() {
            out.push(Damage {
                snapshot: id.to_hex(),
                short_id: id.short(),
                paths: m.paths,
            });
        }
    }
    Ok(out)
}
