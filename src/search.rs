//! Searching snapshot trees (`vault find`): an iterative walk that remembers which subtrees
//! held no match, so that the same directory in the next snapshot (the same tree id, at the
//! same path) is skipped without being read. The memory is bounded: past its capacity it is
//! cleared and starts over.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::Repository;

/// Subtrees known to hold no match.
pub struct NoMatchMemo {
    seen: HashSet<(BlobId, u64)>,
    capacity: usize,
    /// Whether the match depends only on the entries (not on their paths): then a tree id is
    /// enough, wherever it appears.
    path_independent: bool,
}

impl NoMatchMemo {
    /// A memo of at most `capacity` subtrees (about 48 bytes each).
    pub fn new(capacity: usize, path_independent: bool) -> Self {
        Self {
            seen: HashSet::new(),
            capacity,
            path_independent,
        }
    }

    fn key(&self, tree: BlobId, path: &Path) -> (BlobId, u64) {
        if self.path_independent {
            (tree, 0)
        } else {
            let h = blake3::hash(path.as_os_str().as_bytes());
            (
                tree,
                u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")),
            )
        }
    }

    fn contains(&self, tree: BlobId, path: &Path) -> bool {
        self.seen.contains(&self.key(tree, path))
    }

    fn insert(&mut self, tree: BlobId, path: &Path) {
        if self.seen.len() >= self.capacity {
            self.seen.clear();
        }
        let k = self.key(tree, path);
        self.seen.insert(k);
    }
}

struct Frame {
    path: PathBuf,
    tree: BlobId,
    entries: std::vec::IntoIter<Node>,
    matched: bool,
}

/// Walks the tree `root` (at path `/`), calling `found` for every entry `matches` accepts.
/// Returns how many trees were read.
pub fn search(
    repo: &Repository,
    root: BlobId,
    matches: &dyn Fn(&Path, &Node) -> bool,
    memo: &mut NoMatchMemo,
    found: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<u64> {
    let mut trees_read = 0u64;
    let top = PathBuf::from("/");
    if memo.contains(root, &top) {
        return Ok(0);
    }
    trees_read += 1;
    let mut stack = vec![Frame {
        path: top,
        tree: root,
        entries: repo.load_tree(&root)?.nodes.into_iter(),
        matched: false,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.entries.next() else {
            let done = stack.pop().expect("a frame");
            if !done.matched {
                memo.insert(done.tree, &done.path);
            }
            if done.matched
                && let Some(parent) = stack.last_mut()
            {
                parent.matched = true;
            }
            continue;
        };
        let path = frame.path.join(OsStr::from_bytes(&node.name));
        if matches(&path, &node) {
            frame.matched = true;
            found(&path, &node)?;
        }
        if node.kind == NodeKind::Dir
            && let Some(sub) = node.subtree
        {
            if memo.contains(sub, &path) {
                continue;
            }
            trees_read += 1;
            let entries = repo.load_tree(&sub)?.nodes.into_iter();
            stack.push(Frame {
                path,
                tree: sub,
                entries,
                matched: false,
            });
        }
    }
    Ok(trees_read)
}
