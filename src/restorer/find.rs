//! Finding nodes by path, walking trees for `ls`, and streaming one file for `dump`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType};
use crate::repo::Repository;
use crate::{Error, Result};

/// A node and its full path in the snapshot.
#[derive(Clone, Debug)]
pub struct TreeEntry {
    /// Absolute path inside the snapshot.
    pub path: PathBuf,
    /// The node.
    pub node: Node,
}

/// Finds the node at `path` (absolute or relative to the snapshot root). The root itself is
/// returned as a directory node named `/`.
pub fn find_node(repo: &Repository, root: &BlobId, path: &Path) -> Result<Node> {
    let mut node = Node {
        name: b"/".to_vec(),
        kind: NodeKind::Dir,
        subtree: Some(*root),
        ..Node::default()
    };
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Err(Error::NoMatch {
                what: "path",
                name: path.display().to_string(),
            });
        };
        let tree = repo.load_tree(&sub)?;
        node = tree
            .find(name.as_bytes())
            .cloned()
            .ok_or_else(|| Error::NoMatch {
                what: "path",
                name: path.display().to_string(),
            })?;
    }
    Ok(node)
}

/// Calls `f` for each entry below the directory `tree` (whose path is `prefix`), depth-first
/// in name order; descends into subdirectories when `recursive`.
pub fn walk_tree(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&TreeEntry) -> Result<()>,
) -> Result<()> {
    let t = repo.load_tree(tree)?;
    for node in t.nodes {
        let path = prefix.join(std::ffi::OsStr::from_bytes(&node.name));
        let sub = (node.kind == NodeKind::Dir)
            .then_some(node.subtree)
            .flatten();
        f(&TreeEntry {
            path: path.clone(),
            node,
        })?;
        if recursive && let Some(sub) = sub {
            walk_tree(repo, &sub, &path, true, f)?;
        }
    }
    Ok(())
}

/// Writes a file's content to `out`, verifying every blob. Blobs are fetched a few at a time
/// in parallel and written in order.
pub fn dump(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::InvalidInput(format!(
            "{} is a {}, not a file",
            String::from_utf8_lossy(&node.name),
            node.kind.name()
        )));
    }
    let mut written = 0u64;
    let zeros = vec![0u8; 1 << 16];
    for window in node.content.chunks(8) {
        let blobs: Vec<Result<Option<Vec<u8>>>> = window
            .par_iter()
            .map(|p| match p {
                ContentPart::Chunk(id) => repo.load_blob(BlobType::Data, id).map(Some),
                ContentPart::Hole(_) => Ok(None),
            })
            .collect();
        for (part, blob) in window.iter().zip(blobs) {
            match (part, blob?) {
                (_, Some(data)) => {
                    out.write_all(&data).map_err(|e| Error::io("(output)", e))?;
                    written += data.len() as u64;
                }
                (ContentPart::Hole(n), None) => {
                    let mut left = *n;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64) as usize;
                        out.write_all(&zeros[..k])
                            .map_err(|e| Error::io("(output)", e))?;
                        left -= k as u64;
                    }
                    written += n;
                }
                (ContentPart::Chunk(_), None) => unreachable!("chunks always yield data"),
            }
        }
    }
    out.flush().map_err(|e| Error::io("(output)", e))?;
    Ok(written)
}
