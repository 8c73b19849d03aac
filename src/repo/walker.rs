//! Walking and rewriting snapshot trees, iteratively.
//!
//! Every engine that follows trees (check, prune, the damage report, repair, copy, `ls -R`)
//! does it through this module: an explicit stack on the heap, never the call stack, so a
//! tree of any depth is handled (depth 10 000 is tested). Paths are kept in one cursor that
//! grows and shrinks with the stack, so memory is proportional to the depth, not its square.
//!
//! * [`walk`] visits nodes depth-first in name order; the visitor may skip a subtree (already
//!   seen) and decides what an unreadable tree means.
//! * [`rewrite`] rebuilds a tree bottom-up from rewritten leaves, saving only changed trees;
//!   results may be memoised by tree id (on disk, by the caller) so shared subtrees are done
//!   once.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::{Error, Result};

use super::Repository;

/// What [`walk`] reports to its visitor.
pub trait TreeVisitor {
    /// A tree is about to be read; `Ok(false)` skips it (and everything below it).
    fn enter(&mut self, _tree: &BlobId, _path: &Path) -> Result<bool> {
        Ok(true)
    }
    /// One node of a tree (directories before their contents). `path` is the node's path.
    fn node(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// A tree could not be read. The default stops the walk with the error; visitors that
    /// report damage record it and return `Ok(())` to go on with the rest.
    fn unreadable(&mut self, _tree: &BlobId, _path: &Path, error: Error) -> Result<()> {
        Err(error)
    }
    /// Every node below `tree` was visited.
    fn leave(&mut self, _tree: &BlobId, _path: &Path) -> Result<()> {
        Ok(())
    }
}

/// Visits the tree `root` (whose path is `base`) depth-first, in name order.
pub fn walk(
    repo: &Repository,
    root: &BlobId,
    base: &Path,
    visitor: &mut dyn TreeVisitor,
) -> Result<()> {
    let mut cursor = base.to_path_buf();
    if !visitor.enter(root, &cursor)? {
        return Ok(());
    }
    let first = match repo.load_tree(root) {
        Ok(t) => t,
        Err(e) if e.is_damage() => return visitor.unreadable(root, &cursor, e),
        Err(e) => return Err(e),
    };
    // (tree id, remaining nodes, whether the cursor was extended for it)
    let mut stack = vec![(*root, first.nodes.into_iter(), false)];
    while let Some((tree, entries, pushed)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            let (tree, pushed) = (*tree, *pushed);
            visitor.leave(&tree, &cursor)?;
            stack.pop();
            if pushed {
                cursor.pop();
            }
            continue;
        };
        cursor.push(OsStr::from_bytes(&node.name));
        visitor.node(&cursor, &node)?;
        let sub = (node.kind == NodeKind::Dir)
            .then_some(node.subtree)
            .flatten();
        let Some(sub) = sub else {
            cursor.pop();
            continue;
        };
        if !visitor.enter(&sub, &cursor)? {
            cursor.pop();
            continue;
        }
        match repo.load_tree(&sub) {
            Ok(t) => stack.push((sub, t.nodes.into_iter(), true)),
            Err(e) if e.is_damage() => {
                visitor.unreadable(&sub, &cursor, e)?;
                cursor.pop();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a tree became in a [`rewrite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// Unchanged (same id).
    Same,
    /// Replaced by this tree.
    Changed(BlobId),
    /// Dropped: the directory disappears from its parent.
    Dropped,
}

impl Rewritten {
    /// Writes the outcome (for memos on disk): `0`, `1 || id`, or `2`.
    pub(crate) fn encode(self, w: &mut crate::format::wire::Writer) {
        match self {
            Rewritten::Same => w.u8(0),
            Rewritten::Changed(id) => {
                w.u8(1);
                w.id(&id.0);
            }
            Rewritten::Dropped => w.u8(2),
        }
    }

    /// Reads what [`Rewritten::encode`] wrote.
    pub(crate) fn decode(r: &mut crate::format::wire::Reader<'_>) -> Option<Self> {
        Some(match r.u8().ok()? {
            0 => Rewritten::Same,
            1 => Rewritten::Changed(BlobId(r.id().ok()?)),
            2 => Rewritten::Dropped,
            _ => return None,
        })
    }
}

/// The decisions of a [`rewrite`].
pub trait TreeRewriter {
    /// A known outcome for `tree` (memoised by an earlier visit), or `None` to rewrite it.
    fn known(&mut self, _tree: &BlobId, _path: &Path) -> Result<Option<Rewritten>> {
        Ok(None)
    }
    /// A non-directory node: `Ok(Some(node))` keeps it (possibly changed), `Ok(None)` drops
    /// it.
    fn leaf(&mut self, path: &Path, node: Node) -> Result<Option<Node>>;
    /// A directory node, before its tree is rewritten: `Ok(false)` drops it whole.
    fn keep_dir(&mut self, _path: &Path, _node: &Node) -> Result<bool> {
        Ok(true)
    }
    /// A tree could not be read: what becomes of it (the default stops with the error).
    fn unreadable(&mut self, _tree: &BlobId, _path: &Path, error: Error) -> Result<Rewritten> {
        Err(error)
    }
    /// All nodes of `old` were rewritten into `nodes` and at least one changed (or
    /// [`TreeRewriter::always_save`]): store the new tree and return its id.
    fn save(&mut self, path: &Path, old: &BlobId, nodes: Vec<Node>) -> Result<BlobId>;
    /// Save every tree, changed or not (copying into another repository).
    fn always_save(&self) -> bool {
        false
    }
    /// The outcome for `tree`, for memoisation.
    fn done(&mut self, _tree: &BlobId, _path: &Path, _outcome: Rewritten) -> Result<()> {
        Ok(())
    }
}

struct Frame {
    old: BlobId,
    /// The directory node in the parent (absent for the root).
    node: Option<Node>,
    entries: std::vec::IntoIter<Node>,
    out: Vec<Node>,
    changed: bool,
}

/// Rewrites the tree `root` (whose path is `base`) bottom-up.
pub fn rewrite(
    repo: &Repository,
    root: &BlobId,
    base: &Path,
    rw: &mut dyn TreeRewriter,
) -> Result<Rewritten> {
    let mut cursor: PathBuf = base.to_path_buf();
    if let Some(k) = rw.known(root, &cursor)? {
        return Ok(k);
    }
    let first = match repo.load_tree(root) {
        Ok(t) => t,
        Err(e) if e.is_damage() => {
            let r = rw.unreadable(root, &cursor, e)?;
            rw.done(root, &cursor, r)?;
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let mut stack = vec![Frame {
        old: *root,
        node: None,
        entries: first.nodes.into_iter(),
        out: Vec::new(),
        changed: false,
    }];
    loop {
        let top = stack
            .last_mut()
            .expect("invariant: the root frame is popped last");
        let Some(node) = top.entries.next() else {
            let f = stack.pop().expect("invariant: non-empty");
            let outcome = if f.changed || rw.always_save() {
                Rewritten::Changed(rw.save(&cursor, &f.old, f.out)?)
            } else {
                Rewritten::Same
            };
            rw.done(&f.old, &cursor, outcome)?;
            let Some(parent) = stack.last_mut() else {
                return Ok(outcome);
            };
            let node = f.node.expect("invariant: only the root has no node");
            attach(parent, node, outcome);
            cursor.pop();
            continue;
        };
        cursor.push(OsStr::from_bytes(&node.name));
        if node.kind != NodeKind::Dir {
            let kept = rw.leaf(&cursor, node.clone())?;
            let top = stack.last_mut().expect("invariant: non-empty");
            match kept {
                Some(n) => {
                    top.changed |= n != node;
                    top.out.push(n);
                }
                None => top.changed = true,
            }
            cursor.pop();
            continue;
        }
        if !rw.keep_dir(&cursor, &node)? {
            stack.last_mut().expect("invariant: non-empty").changed = true;
            cursor.pop();
            continue;
        }
        let Some(sub) = node.subtree else {
            // A directory without a tree is malformed; keep it as it is.
            stack
                .last_mut()
                .expect("invariant: non-empty")
                .out
                .push(node);
            cursor.pop();
            continue;
        };
        if let Some(k) = rw.known(&sub, &cursor)? {
            attach(stack.last_mut().expect("invariant: non-empty"), node, k);
            cursor.pop();
            continue;
        }
        match repo.load_tree(&sub) {
            Ok(t) => stack.push(Frame {
                old: sub,
                node: Some(node),
                entries: t.nodes.into_iter(),
                out: Vec::new(),
                changed: false,
            }),
            Err(e) if e.is_damage() => {
                let r = rw.unreadable(&sub, &cursor, e)?;
                rw.done(&sub, &cursor, r)?;
                attach(stack.last_mut().expect("invariant: non-empty"), node, r);
                cursor.pop();
            }
            Err(e) => return Err(e),
        }
    }
}

fn attach(parent: &mut Frame, mut node: Node, outcome: Rewritten) {
    match outcome {
        Rewritten::Same => parent.out.push(node),
        Rewritten::Changed(id) => {
            node.subtree = Some(id);
            parent.out.push(node);
            parent.changed = true;
        }
        Rewritten::Dropped => parent.changed = true,
    }
}

/// Counts what a tree holds into a snapshot summary's totals (files, their bytes, other
/// entries): the summary of a snapshot whose tree was rewritten.
pub fn recount(
    repo: &Repository,
    root: &BlobId,
    summary: &mut crate::format::snapshot::Summary,
) -> Result<()> {
    struct Totals<'a>(&'a mut crate::format::snapshot::Summary);
    impl TreeVisitor for Totals<'_> {
        fn node(&mut self, _path: &Path, node: &Node) -> Result<()> {
            match node.kind {
                NodeKind::File => {
                    self.0.total_files += 1;
                    self.0.total_bytes += node.size;
                }
                NodeKind::Dir => {}
                _ => self.0.other_entries += 1,
            }
            Ok(())
        }
    }
    summary.total_files = 0;
    summary.total_bytes = 0;
    summary.other_entries = 0;
    walk(repo, root, Path::new("/"), &mut Totals(summary))
}
