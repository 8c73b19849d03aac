//! The tree walk: sources → nodes → tree blobs, bottom-up, in parallel over directory entries.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::format::time::Timestamp;
use crate::format::tree::{ContentPart, Node, NodeKind, Tree, encode_tree};
use crate::id::{BlobId, BlobType};
use crate::source::meta::node_from_metadata;
use crate::{Error, Result};

use super::{Counters, Ctx};

/// The absolute source paths as a tree of path components; `target` marks the paths given.
#[derive(Default, Debug)]
struct PathNode {
    children: BTreeMap<Vec<u8>, PathNode>,
    target: bool,
}

impl PathNode {
    fn insert(&mut self, path: &Path) {
        let mut node = self;
        for c in path.components().skip(1) {
            if node.target {
                return; // an ancestor is already backed up whole
            }
            node = node
                .children
                .entry(c.as_os_str().as_bytes().to_vec())
                .or_default();
        }
        node.target = true;
        node.children.clear();
    }
}

/// Archives the given absolute paths under a root tree that mirrors their full paths.
pub(super) fn archive_paths(
    ctx: &Ctx<'_>,
    paths: &[PathBuf],
    parent: Option<Tree>,
) -> Result<BlobId> {
    let mut root = PathNode::default();
    for p in paths {
        root.insert(p);
    }
    if root.target {
        return archive_dir(ctx, Path::new("/"), parent.as_ref(), None);
    }
    let tree = archive_virtual(ctx, Path::new("/"), &root, parent.as_ref())?;
    if tree.nodes.is_empty() && !paths.is_empty() {
        return Err(Error::InvalidInput(
            "none of the paths to back up could be read".into(),
        ));
    }
    save_tree(ctx, &tree)
}

/// An intermediate directory: only the children on the way to a target are included.
fn archive_virtual(
    ctx: &Ctx<'_>,
    dir: &Path,
    pn: &PathNode,
    parent: Option<&Tree>,
) -> Result<Tree> {
    let children: Vec<(&Vec<u8>, &PathNode)> = pn.children.iter().collect();
    let nodes: Vec<Option<Node>> = children
        .par_iter()
        .map(|(name, child)| -> Result<Option<Node>> {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let pnode = parent.and_then(|t| t.find(name));
            if child.target {
                return archive_entry(ctx, &path, name, pnode, None, None);
            }
            let md = match std::fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => md,
                Ok(_) => {
                    ctx.source_error(&path, "is not a directory");
                    return Ok(None);
                }
                Err(e) => {
                    ctx.source_error(&path, e);
                    return Ok(None);
                }
            };
            let mut node = match node_from_metadata(name, &path, &md, ctx.opts.meta, pnode) {
                Ok(n) => n,
                Err(e) => {
                    ctx.source_error(&path, e);
                    return Ok(None);
                }
            };
            let ptree = load_subtree(ctx, pnode)?;
            let sub = archive_virtual(ctx, &path, child, ptree.as_ref())?;
            if sub.nodes.is_empty() {
                return Ok(None);
            }
            node.subtree = Some(save_tree(ctx, &sub)?);
            Ok(Some(node))
        })
        .collect::<Result<_>>()?;
    Ok(Tree {
        nodes: nodes.into_iter().flatten().collect(),
    })
}

fn load_subtree(ctx: &Ctx<'_>, pnode: Option<&Node>) -> Result<Option<Tree>> {
    match pnode {
        Some(n) if n.kind == NodeKind::Dir => match n.subtree {
            Some(id) => match ctx.repo.load_tree(&id) {
                Ok(t) => Ok(Some(t)),
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::ErrorKind::NotFound | crate::ErrorKind::Corrupt
                    ) =>
                {
                    // A damaged parent only costs re-reading; it must not stop a backup.
                    tracing::warn!(error = %e, "parent tree unreadable; reading files again");
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

fn excluded(ctx: &Ctx<'_>, path: &Path) -> bool {
    ctx.opts.excludes.matches(path) || ctx.opts.skip.iter().any(|s| s == path)
}

/// Archives one entry; `Ok(None)` means left out (excluded or unreadable, already reported).
/// `entry` (when walking a directory) gives the metadata without a path lookup.
fn archive_entry(
    ctx: &Ctx<'_>,
    path: &Path,
    name: &[u8],
    pnode: Option<&Node>,
    dev_limit: Option<u64>,
    entry: Option<&crate::source::DirEntry>,
) -> Result<Option<Node>> {
    if excluded(ctx, path) {
        return Ok(None);
    }
    let md = match entry.map_or_else(|| std::fs::symlink_metadata(path), |e| e.metadata()) {
        Ok(m) => m,
        Err(e) => {
            ctx.source_error(path, e);
            return Ok(None);
        }
    };
    let mut node = match node_from_metadata(name, path, &md, ctx.opts.meta, pnode) {
        Ok(n) => n,
        Err(e) => {
            ctx.source_error(path, e);
            return Ok(None);
        }
    };
    let pnode = pnode.filter(|p| p.kind == node.kind);
    match node.kind {
        NodeKind::File => {
            Counters::add(&ctx.counters.total_files, 1);
            if let Some(p) = pnode
                && !ctx.opts.force
                && unchanged(p, &node)
                && all_indexed(ctx, &p.content)?
            {
                node.content = p.content.clone();
                Counters::add(&ctx.counters.files_unmodified, 1);
                Counters::add(&ctx.counters.total_bytes, node.size);
                ctx.progress.item_done(node.size);
                return Ok(Some(node));
            }
            match super::content::store_file(ctx, path) {
                Ok((content, size)) => {
                    node.content = content;
                    node.size = size;
                }
                Err(e) if e.kind() == crate::ErrorKind::Io => {
                    ctx.source_error(path, e);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            Counters::add(&ctx.counters.total_bytes, node.size);
            let counter = if pnode.is_some() {
                &ctx.counters.files_changed
            } else {
                &ctx.counters.files_new
            };
            Counters::add(counter, 1);
            ctx.progress.item_done(node.size);
        }
        NodeKind::Dir => {
            let limit = match dev_limit {
                Some(d) => Some(d),
                None if ctx.opts.one_file_system => Some(md.dev()),
                None => None,
            };
            let id = if limit.is_some_and(|d| d != md.dev()) {
                // A mount point under --one-file-system: keep the directory, not its content.
                save_tree(ctx, &Tree::default())?
            } else {
                let ptree = load_subtree(ctx, pnode)?;
                archive_dir(ctx, path, ptree.as_ref(), limit)?
            };
            let counter = match pnode {
                None => &ctx.counters.dirs_new,
                Some(p) if p.subtree == Some(id) => &ctx.counters.dirs_unmodified,
                Some(_) => &ctx.counters.dirs_changed,
            };
            Counters::add(counter, 1);
            node.subtree = Some(id);
        }
        _ => Counters::add(&ctx.counters.other, 1),
    }
    Ok(Some(node))
}

/// Whether a file looks unchanged since the parent snapshot (content may be reused).
fn unchanged(p: &Node, n: &Node) -> bool {
    p.size == n.size && p.mtime == n.mtime && p.ctime == n.ctime && p.inode == n.inode
}

fn all_indexed(ctx: &Ctx<'_>, content: &[ContentPart]) -> Result<bool> {
    let index = ctx.repo.index()?;
    for part in content {
        if let ContentPart::Chunk(id) = part
            && !index.contains(BlobType::Data, id)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn archive_dir(
    ctx: &Ctx<'_>,
    path: &Path,
    parent: Option<&Tree>,
    dev_limit: Option<u64>,
) -> Result<BlobId> {
    let entries = match crate::source::read_dir_sorted(path) {
        Ok(e) => e,
        Err(e) => {
            ctx.source_error(path, e);
            Vec::new()
        }
    };
    let nodes: Vec<Option<Node>> = entries
        .par_iter()
        .map(|e| {
            let name = e.name.as_bytes();
            archive_entry(
                ctx,
                &e.path,
                name,
                parent.and_then(|t| t.find(name)),
                dev_limit,
                Some(e),
            )
        })
        .collect::<Result<_>>()?;
    save_tree(
        ctx,
        &Tree {
            nodes: nodes.into_iter().flatten().collect(),
        },
    )
}

/// Stores a tree blob (unless already stored) and returns its id.
pub(super) fn save_tree(ctx: &Ctx<'_>, tree: &Tree) -> Result<BlobId> {
    let bytes = encode_tree(tree);
    let id = ctx.repo.blob_id(&bytes);
    if !ctx.saver.contains(BlobType::Tree, &id)? {
        let blob = ctx.repo.prepare_blob_with_id(BlobType::Tree, id, &bytes)?;
        ctx.saver.add(&blob)?;
    }
    Ok(id)
}

/// Archives a stream as a single file named `name` in the root tree.
pub(super) fn archive_stream(
    ctx: &Ctx<'_>,
    name: &str,
    mut reader: Box<dyn Read + Send>,
) -> Result<BlobId> {
    if !Node::valid_name(name.as_bytes()) {
        return Err(Error::InvalidInput(format!(
            "invalid stdin file name {name:?}"
        )));
    }
    let (content, size) = super::content::store_stream(ctx, &mut reader).map_err(|e| match e {
        Error::Io { source, .. } => Error::Aborted(source.to_string()),
        other => other,
    })?;
    let now = Timestamp::now();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let node = Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::File,
        mode: 0o600,
        uid,
        gid,
        user: crate::source::owner::user_name(uid),
        group: crate::source::owner::group_name(gid),
        mtime: now,
        ctime: now,
        nlink: 1,
        size,
        content,
        ..Node::default()
    };
    Counters::add(&ctx.counters.files_new, 1);
    Counters::add(&ctx.counters.total_files, 1);
    Counters::add(&ctx.counters.total_bytes, size);
    save_tree(ctx, &Tree { nodes: vec![node] })
}
