//! Finding nodes by path, walking trees for `ls`, and writing one file for `dump`.

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
    let no_match = || Error::NoMatch {
        what: "path",
        name: crate::quote::quote_path(path),
    };
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Err(no_match());
        };
        let tree = repo.load_tree(&sub)?;
        node = tree.find(name.as_bytes()).cloned().ok_or_else(no_match)?;
    }
    Ok(node)
}

/// Calls `f` for each entry below the directory `tree` (whose path is `prefix`), depth-first
/// in name order; descends into subdirectories when `recursive`. Iterative: any depth works.
pub fn walk_tree(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&TreeEntry) -> Result<()>,
) -> Result<()> {
    let mut stack = vec![(
        prefix.to_path_buf(),
        repo.load_tree(tree)?.nodes.into_iter(),
    )];
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(std::ffi::OsStr::from_bytes(&node.name));
        let sub = (node.kind == NodeKind::Dir)
            .then_some(node.subtree)
            .flatten();
        let entry = TreeEntry { path, node };
        f(&entry)?;
        if recursive && let Some(sub) = sub {
            let t = repo.load_tree(&sub)?;
            stack.push((entry.path, t.nodes.into_iter()));
        }
    }
    Ok(())
}

/// How `dump` writes a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DumpMode {
    /// Verify every blob of the file before writing its first byte: a damaged file produces
    /// no output at all (`vault dump latest db.sql | psql` never applies half a dump). Files up
    /// to [`VERIFIED_IN_MEMORY`] are held in memory between the passes; larger ones are read
    /// twice.
    #[default]
    Verified,
    /// Write each blob as soon as it is verified (one pass); a damaged blob stops the output
    /// midway, with an error.
    Stream,
}

/// Files up to this size are verified once and written from memory by [`DumpMode::Verified`].
pub const VERIFIED_IN_MEMORY: u64 = 64 << 20;

/// Writes a file's content to `out`, verifying every blob. Blobs are fetched a few at a time
/// in parallel and written in order. Returns the number of bytes written.
pub fn dump(repo: &Repository, node: &Node, out: &mut dyn Write, mode: DumpMode) -> Result<u64> {
    if node.kind != NodeKind::File {
        return Err(Error::InvalidInput(format!(
            "{} is a {}, not a file",
            crate::quote::quote_bytes(&node.name),
            node.kind.name()
        )));
    }
    if mode == DumpMode::Stream {
        return write_parts(repo, &node.content, &mut |b| write_out(out, b));
    }
    if node.size <= VERIFIED_IN_MEMORY {
        let mut held: Vec<Vec<u8>> = Vec::new();
        write_parts(repo, &node.content, &mut |b| {
            held.push(b.to_vec());
            Ok(())
        })?;
        let mut n = 0;
        for b in held {
            write_out(out, &b)?;
            n += b.len() as u64;
        }
        out.flush().map_err(|e| Error::io("(output)", e))?;
        return Ok(n);
    }
    // Large: a first pass proves every blob readable, a second writes.
    write_parts(repo, &node.content, &mut |_| Ok(()))?;
    let n = write_parts(repo, &node.content, &mut |b| write_out(out, b))?;
    out.flush().map_err(|e| Error::io("(output)", e))?;
    Ok(n)
}

fn write_out(out: &mut dyn Write, b: &[u8]) -> Result<()> {
    out.write_all(b).map_err(|e| Error::io("(output)", e))
}

/// Feeds the file's bytes, in order, to `sink`; holes as zeros.
fn write_parts(
    repo: &Repository,
    parts: &[ContentPart],
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut written = 0u64;
    let zeros = vec![0u8; 1 << 16];
    for window in parts.chunks(8) {
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
                    sink(&data)?;
                    written += data.len() as u64;
                }
                (ContentPart::Hole(n), None) => {
                    let mut left = *n;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64) as usize;
                        sink(&zeros[..k])?;
                        left -= k as u64;
                    }
                    written += n;
                }
                (ContentPart::Chunk(_), None) => unreachable!("chunks always yield data"),
            }
        }
    }
    Ok(written)
}
