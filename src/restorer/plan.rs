//! `restore --dry-run`: what a restore would create, replace, keep and delete, found by
//! walking the snapshot and looking at the target, changing nothing.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::overwrite::{Decision, decide};
use super::{Overwrite, RestoreOptions};
use crate::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::source::dir::DirHandle;

/// One planned action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The entry does not exist and would be created.
    Create,
    /// The entry exists and would be replaced.
    Replace,
    /// The entry exists and would be kept.
    Keep,
    /// The entry is not in the snapshot and would be deleted (`--delete`).
    Delete,
}

/// Totals of a plan.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PlanStats {
    /// Entries that would be created.
    pub create: u64,
    /// Entries that would be replaced.
    pub replace: u64,
    /// Entries that would be kept.
    pub keep: u64,
    /// Entries that would be deleted.
    pub delete: u64,
    /// File bytes that would be written.
    pub bytes: u64,
}

struct Frame {
    dir: Option<DirHandle>,
    entries: std::vec::IntoIter<Node>,
    included: bool,
    names: HashSet<Vec<u8>>,
}

/// Walks the snapshot tree `root` against `opts.target`, calling `f` for every action.
pub fn plan_restore(
    repo: &Repository,
    root: &BlobId,
    paths: &[Vec<u8>],
    opts: &RestoreOptions,
    f: &mut dyn FnMut(&std::path::Path, Action, &Node) -> Result<()>,
) -> Result<PlanStats> {
    let mut stats = PlanStats::default();
    let roots = super::overwrite::delete_roots(paths);
    let top = DirHandle::open(&opts.target).ok();
    let nodes = repo.load_tree(root)?.nodes;
    let mut cursor = PathBuf::from("/");
    let mut stack = vec![Frame {
        names: nodes.iter().map(|n| n.name.clone()).collect(),
        dir: top,
        entries: nodes.into_iter(),
        included: opts.include.is_empty(),
    }];
    let count = |stats: &mut PlanStats, a: Action, n: &Node| {
        match a {
            Action::Create => stats.create += 1,
            Action::Replace => stats.replace += 1,
            Action::Keep => stats.keep += 1,
            Action::Delete => stats.delete += 1,
        }
        if matches!(a, Action::Create | Action::Replace) && n.kind == NodeKind::File {
            stats.bytes += n.size;
        }
    };
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.entries.next() else {
            let done = stack.pop().expect("a frame");
            if opts.delete
                && done.included
                && super::overwrite::delete_allowed(&cursor, &roots)
                && let Some(dir) = &done.dir
            {
                for name in dir.entries().unwrap_or_default() {
                    let p = cursor.join(&name);
                    if !done.names.contains(name.as_bytes()) && !opts.exclude.matches(&p) {
                        let gone = Node {
                            name: name.as_bytes().to_vec(),
                            ..Node::default()
                        };
                        count(&mut stats, Action::Delete, &gone);
                        f(&p, Action::Delete, &gone)?;
                    }
                }
            }
            cursor.pop();
            continue;
        };
        let name = OsStr::from_bytes(&node.name).to_owned();
        cursor.push(&name);
        if opts.exclude.matches(&cursor) {
            cursor.pop();
            continue;
        }
        let included = opts.includes(frame.included, &cursor);
        let parent = frame.dir.as_ref();
        if node.kind == NodeKind::Dir {
            let handle = parent.and_then(|p| p.open_dir(&name).ok());
            if included {
                let a = if handle.is_some() {
                    Action::Keep
                } else {
                    Action::Create
                };
                count(&mut stats, a, &node);
                f(&cursor, a, &node)?;
            }
            let entries = match node.subtree {
                Some(t) => repo.load_tree(&t)?.nodes,
                None => Vec::new(),
            };
            stack.push(Frame {
                names: entries.iter().map(|n| n.name.clone()).collect(),
                dir: handle,
                entries: entries.into_iter(),
                included,
            });
            continue;
        }
        let selected = included && opts.samples(&node, &cursor);
        if selected {
            let a = match parent {
                None => Action::Create,
                Some(d) => {
                    let policy = if node.nlink > 1 {
                        Overwrite::Always
                    } else {
                        opts.overwrite
                    };
                    match decide(repo, d, &name, &node, policy)? {
                        Decision::Create => Action::Create,
                        Decision::Replace => Action::Replace,
                        Decision::Keep => Action::Keep,
                    }
                }
            };
            count(&mut stats, a, &node);
            f(&cursor, a, &node)?;
        }
        cursor.pop();
    }
    Ok(stats)
}
