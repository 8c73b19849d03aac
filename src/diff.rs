//! Differences between two snapshot trees, or between a snapshot tree and a local directory.
//!
//! Two snapshots are compared by walking both trees together (an explicit stack, any depth):
//! a subtree whose id is the same on both sides is identical and never read, so a diff costs
//! the changed directories only. Entries are reported in path order as added (`+`), removed
//! (`-`), modified content (`M`), changed type (`T`) or changed metadata only (`U`); the entries
//! below an added or removed directory are reported one by one.
//!
//! Against a local directory, files count as modified when their size or modification time
//! differs from the snapshot's (the test a snapshot uses to skip unchanged files); content is
//! not read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::source::dir::DirHandle;

/// What changed about one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Change {
    /// Only in the second tree.
    #[serde(rename = "+")]
    Added,
    /// Only in the first tree.
    #[serde(rename = "-")]
    Removed,
    /// Content (or link target, or device) differs.
    #[serde(rename = "M")]
    Modified,
    /// The kind of entry differs (a file became a directory, …).
    #[serde(rename = "T")]
    TypeChanged,
    /// Only metadata differs (mode, owner, times, extended attributes).
    #[serde(rename = "U")]
    Metadata,
}

impl Change {
    /// The one-character marker.
    pub fn marker(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::Metadata => 'U',
        }
    }
}

/// One difference.
#[derive(Clone, Debug)]
pub struct Difference {
    /// Path (inside the snapshots, absolute).
    pub path: PathBuf,
    /// What changed.
    pub change: Change,
    /// Entry kind in the first tree, if any.
    pub before: Option<NodeKind>,
    /// Entry kind in the second tree, if any.
    pub after: Option<NodeKind>,
    /// File size in the first tree (files only).
    pub size_before: u64,
    /// File size in the second tree (files only).
    pub size_after: u64,
}

/// Totals of a diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffStats {
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries whose content or type changed.
    pub modified: u64,
    /// Entries whose metadata only changed.
    pub metadata_only: u64,
    /// Bytes of files added (and the new side of modified files).
    pub bytes_added: u64,
    /// Bytes of files removed (and the old side of modified files).
    pub bytes_removed: u64,
    /// Trees read (identical subtrees are skipped).
    pub trees_read: u64,
}

fn same_content(a: &Node, b: &Node) -> bool {
    a.size == b.size && a.content == b.content && a.link_target == b.link_target && a.rdev == b.rdev
}

fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

/// The entries of tree `t` (none for `None`: an empty side), counted as read.
fn read_tree(repo: &Repository, t: Option<BlobId>, stats: &mut DiffStats) -> Result<Vec<Node>> {
    match t {
        Some(id) => {
            stats.trees_read += 1;
            Ok(repo.load_tree(&id)?.nodes)
        }
        None => Ok(Vec::new()),
    }
}

/// Counts one difference into `stats` and hands it to `f`.
fn report(
    stats: &mut DiffStats,
    path: &Path,
    change: Change,
    na: &Option<Node>,
    nb: &Option<Node>,
    f: &mut dyn FnMut(&Difference) -> Result<()>,
) -> Result<()> {
    let size = |n: &Option<Node>| {
        n.as_ref()
            .filter(|n| n.kind == NodeKind::File)
            .map_or(0, |n| n.size)
    };
    let d = Difference {
        path: path.to_path_buf(),
        change,
        before: na.as_ref().map(|n| n.kind),
        after: nb.as_ref().map(|n| n.kind),
        size_before: size(na),
        size_after: size(nb),
    };
    match change {
        Change::Added => {
            stats.added += 1;
            stats.bytes_added += d.size_after;
        }
        Change::Removed => {
            stats.removed += 1;
            stats.bytes_removed += d.size_before;
        }
        Change::Modified | Change::TypeChanged => {
            stats.modified += 1;
            stats.bytes_added += d.size_after;
            stats.bytes_removed += d.size_before;
        }
        Change::Metadata => stats.metadata_only += 1,
    }
    f(&d)
}

struct Frame {
    path: PathBuf,
    a: std::iter::Peekable<std::vec::IntoIter<Node>>,
    b: std::iter::Peekable<std::vec::IntoIter<Node>>,
}

/// Compares the trees `a` and `b` (`None`: an empty directory) below `prefix`, calling `f`
/// for every difference in path order.
pub fn diff_trees(
    repo: &Repository,
    a: Option<BlobId>,
    b: Option<BlobId>,
    prefix: &Path,
    f: &mut dyn FnMut(&Difference) -> Result<()>,
) -> Result<DiffStats> {
    let mut stats = DiffStats::default();
    if a.is_some() && a == b {
        return Ok(stats);
    }
    let load = |t, stats: &mut DiffStats| read_tree(repo, t, stats);
    let mut stack = vec![Frame {
        path: prefix.to_path_buf(),
        a: load(a, &mut stats)?.into_iter().peekable(),
        b: load(b, &mut stats)?.into_iter().peekable(),
    }];
    while let Some(top) = stack.last_mut() {
        let order = match (top.a.peek(), top.b.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        let (na, nb) = match order {
            std::cmp::Ordering::Less => (top.a.next(), None),
            std::cmp::Ordering::Greater => (None, top.b.next()),
            std::cmp::Ordering::Equal => (top.a.next(), top.b.next()),
        };
        let name = na
            .as_ref()
            .or(nb.as_ref())
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let path = top.path.join(OsStr::from_bytes(&name));
        let change = match (&na, &nb) {
            (Some(_), None) => Some(Change::Removed),
            (None, Some(_)) => Some(Change::Added),
            (Some(x), Some(y)) if x.kind != y.kind => Some(Change::TypeChanged),
            (Some(x), Some(y)) if x.kind == NodeKind::Dir => {
                (!same_metadata(x, y)).then_some(Change::Metadata)
            }
            (Some(x), Some(y)) if !same_content(x, y) => Some(Change::Modified),
            (Some(x), Some(y)) if !same_metadata(x, y) => Some(Change::Metadata),
            _ => None,
        };
        if let Some(change) = change {
            report(&mut stats, &path, change, &na, &nb, f)?;
        }
        // Descend where a directory is on either side, unless both are the same tree.
        let sub = |n: &Option<Node>| {
            n.as_ref()
                .filter(|n| n.kind == NodeKind::Dir)
                .and_then(|n| n.subtree)
        };
        let dir_a = na.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
        let dir_b = nb.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
        let (sa, sb) = (sub(&na), sub(&nb));
        if (dir_a || dir_b) && !(dir_a && dir_b && sa == sb) {
            let a_nodes = if dir_a {
                load(sa, &mut stats)?
            } else {
                Vec::new()
            };
            let b_nodes = if dir_b {
                load(sb, &mut stats)?
            } else {
                Vec::new()
            };
            stack.push(Frame {
                path,
                a: a_nodes.into_iter().peekable(),
                b: b_nodes.into_iter().peekable(),
            });
        }
    }
    Ok(stats)
}

/// A local entry seen as a node (the fields a diff compares).
fn local_node(dir: &DirHandle, name: &OsStr) -> std::io::Result<Node> {
    let st = dir.stat(name)?;
    let kind = crate::source::meta::kind_of(st.file_type).unwrap_or(NodeKind::BlockDevice);
    Ok(Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
        size: if kind == NodeKind::File { st.size } else { 0 },
        link_target: if kind == NodeKind::Symlink {
            dir.read_link(name)?
        } else {
            Vec::new()
        },
        ..Node::default()
    })
}

struct LocalFrame {
    path: PathBuf,
    dir: Option<DirHandle>,
    a: std::iter::Peekable<std::vec::IntoIter<Node>>,
    b: std::iter::Peekable<std::vec::IntoIter<std::ffi::OsString>>,
}

/// Compares the snapshot tree `a` (`None`: empty) with the local directory `local`, calling
/// `f` for every difference in path order. Unreadable local entries are reported through
/// `f` as removed with an explanation in `warn`.
pub fn diff_local(
    repo: &Repository,
    a: Option<BlobId>,
    local: &Path,
    prefix: &Path,
    f: &mut dyn FnMut(&Difference) -> Result<()>,
    warn: &mut dyn FnMut(&Path, &std::io::Error),
) -> Result<DiffStats> {
    let mut stats = DiffStats::default();
    let root = DirHandle::open(local).map_err(|e| crate::Error::io(local, e))?;
    let tree = |t, stats: &mut DiffStats| read_tree(repo, t, stats);
    let names = |d: &DirHandle, p: &Path, warn: &mut dyn FnMut(&Path, &std::io::Error)| {
        d.entries().unwrap_or_else(|e| {
            warn(p, &e);
            Vec::new()
        })
    };
    let first = names(&root, local, warn);
    let mut stack = vec![LocalFrame {
        path: prefix.to_path_buf(),
        a: tree(a, &mut stats)?.into_iter().peekable(),
        b: first.into_iter().peekable(),
        dir: Some(root),
    }];
    while let Some(top) = stack.last_mut() {
        let order = match (top.a.peek(), top.b.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.as_slice().cmp(y.as_bytes()),
        };
        let (na, lname) = match order {
            std::cmp::Ordering::Less => (top.a.next(), None),
            std::cmp::Ordering::Greater => (None, top.b.next()),
            std::cmp::Ordering::Equal => (top.a.next(), top.b.next()),
        };
        let path = match (&na, &lname) {
            (Some(n), _) => top.path.join(OsStr::from_bytes(&n.name)),
            (None, Some(l)) => top.path.join(l),
            (None, None) => continue,
        };
        let nb = match (&lname, &top.dir) {
            (Some(l), Some(d)) => match local_node(d, l) {
                Ok(n) => Some(n),
                Err(e) => {
                    warn(&path, &e);
                    None
                }
            },
            _ => None,
        };
        let change = match (&na, &nb) {
            (None, None) => None,
            (Some(_), None) => Some(Change::Removed),
            (None, Some(_)) => Some(Change::Added),
            (Some(x), Some(y)) if x.kind != y.kind => Some(Change::TypeChanged),
            (Some(x), Some(y)) if x.kind == NodeKind::Dir => {
                (x.mode != y.mode || x.uid != y.uid || x.gid != y.gid).then_some(Change::Metadata)
            }
            (Some(x), Some(y))
                if x.size != y.size || x.mtime != y.mtime || x.link_target != y.link_target =>
            {
                Some(Change::Modified)
            }
            (Some(x), Some(y)) if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid => {
                Some(Change::Metadata)
            }
            _ => None,
        };
        if let Some(change) = change {
            report(&mut stats, &path, change, &na, &nb, f)?;
        }
        let dir_a = na.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
        let dir_b = nb.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
        if dir_a || dir_b {
            let a_nodes = if dir_a {
                tree(na.as_ref().and_then(|n| n.subtree), &mut stats)?
            } else {
                Vec::new()
            };
            let (handle, b_names) = match (dir_b, &lname, &top.dir) {
                (true, Some(l), Some(d)) => match d.open_dir(l) {
                    Ok(h) => {
                        let n = names(&h, &path, warn);
                        (Some(h), n)
                    }
                    Err(e) => {
                        warn(&path, &e);
                        (None, Vec::new())
                    }
                },
                _ => (None, Vec::new()),
            };
            stack.push(LocalFrame {
                path,
                dir: handle,
                a: a_nodes.into_iter().peekable(),
                b: b_names.into_iter().peekable(),
            });
        }
    }
    Ok(stats)
}
