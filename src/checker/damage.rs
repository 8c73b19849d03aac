//! Mapping damaged or missing blobs to the snapshots and paths that need them.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Result;
use crate::format::tree::{ContentPart, NodeKind};
use crate::id::{BlobId, BlobType};
use crate::repo::Repository;

use super::SnapshotRoots;

/// One path that cannot be restored intact.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AffectedPath {
    /// Path inside the snapshot.
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

/// Walks every snapshot and lists the paths whose data or listing is in `bad`. Subtrees found
/// clean are remembered, so shared subtrees are walked once.
pub(crate) fn affected(
    repo: &Repository,
    snapshots: &SnapshotRoots,
    bad: &HashSet<(BlobType, BlobId)>,
) -> Result<Vec<Damage>> {
    let mut clean: HashSet<BlobId> = HashSet::new();
    let mut out = Vec::new();
    for (id, snap) in snapshots {
        let mut paths = Vec::new();
        walk(
            repo,
            &snap.tree,
            Path::new("/"),
            bad,
            &mut clean,
            &mut paths,
        )?;
        if !paths.is_empty() {
            out.push(Damage {
                snapshot: id.to_hex(),
                short_id: id.short(),
                paths,
            });
        }
    }
    Ok(out)
}

fn walk(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    bad: &HashSet<(BlobType, BlobId)>,
    clean: &mut HashSet<BlobId>,
    paths: &mut Vec<AffectedPath>,
) -> Result<bool> {
    if clean.contains(tree) {
        return Ok(false);
    }
    let listing_lost = |paths: &mut Vec<AffectedPath>, why: String| {
        paths.push(AffectedPath {
            path: prefix.display().to_string(),
            reason: format!(
                "directory listing (tree blob {}) {why}; everything below it is lost",
                tree.short()
            ),
        });
    };
    if bad.contains(&(BlobType::Tree, *tree)) {
        listing_lost(paths, "is damaged or missing".into());
        return Ok(true);
    }
    let t = match repo.load_tree(tree) {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.kind(),
                crate::ErrorKind::Corrupt | crate::ErrorKind::NotFound
            ) =>
        {
            listing_lost(paths, format!("cannot be read: {e}"));
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    let mut damaged = false;
    for node in &t.nodes {
        let path = prefix.join(std::ffi::OsStr::from_bytes(&node.name));
        match node.kind {
            NodeKind::File => {
                let lost: Vec<&BlobId> = node
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Chunk(c) if bad.contains(&(BlobType::Data, *c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if let Some(first) = lost.first() {
                    damaged = true;
                    paths.push(AffectedPath {
                        path: path.display().to_string(),
                        reason: format!(
                            "{} of its {} chunks damaged or missing (first: data blob {})",
                            lost.len(),
                            node.content.len(),
                            first.short()
                        ),
                    });
                }
            }
            NodeKind::Dir => {
                if let Some(sub) = node.subtree
                    && walk(repo, &sub, &path, bad, clean, paths)?
                {
                    damaged = true;
                }
            }
            _ => {}
        }
    }
    if !damaged {
        clean.insert(*tree);
    }
    Ok(damaged)
}
