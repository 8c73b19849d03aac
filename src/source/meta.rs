//! Turning `lstat` results, xattrs and link targets into tree nodes.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::format::time::Timestamp;
use crate::format::tree::{Node, NodeKind};
use crate::{Error, Result};

use super::owner::{group_name, user_name};

/// The node kind of a file type, or `None` for types vault does not know.
pub fn kind_of(ft: &std::fs::FileType) -> Option<NodeKind> {
    Some(if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        return None;
    })
}

/// What to record besides the always-recorded fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetaOptions {
    /// Record access times (off by default: reading a tree changes them, which would make
    /// every directory look changed on the next run).
    pub with_atime: bool,
}

/// Builds a node (without content or subtree) for `path` from its `lstat` metadata.
/// `unchanged` is the previous snapshot's node when the entry has the same kind, ctime, inode,
/// size and mtime: its xattrs and symlink target are reused (changing either changes ctime).
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    md: &std::fs::Metadata,
    opts: MetaOptions,
    unchanged: Option<&Node>,
) -> Result<Node> {
    let kind = kind_of(&md.file_type())
        .ok_or_else(|| Error::io(path, std::io::Error::other("unsupported file type")))?;
    let mut n = Node {
        name: name.to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: user_name(md.uid()),
        group: group_name(md.gid()),
        mtime: Timestamp::new(md.mtime(), md.mtime_nsec() as u32),
        atime: opts
            .with_atime
            .then(|| Timestamp::new(md.atime(), md.atime_nsec() as u32)),
        ctime: Timestamp::new(md.ctime(), md.ctime_nsec() as u32),
        inode: md.ino(),
        device: md.dev(),
        nlink: md.nlink(),
        ..Node::default()
    };
    if kind == NodeKind::File {
        n.size = md.len();
    }
    let same = unchanged.filter(|p| {
        p.kind == kind
            && p.ctime == n.ctime
            && p.inode == n.inode
            && p.mtime == n.mtime
            && p.size == n.size
    });
    if let Some(p) = same {
        n.xattrs = p.xattrs.clone();
        n.link_target = p.link_target.clone();
        n.rdev = p.rdev;
        return Ok(n);
    }
    match kind {
        NodeKind::Symlink => {
            n.link_target = std::fs::read_link(path)
                .map_err(|e| Error::io(path, e))?
                .as_os_str()
                .as_bytes()
                .to_vec();
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => n.rdev = md.rdev(),
        _ => {}
    }
    n.xattrs = read_xattrs(path)?;
    Ok(n)
}

/// Reads extended attributes without following symlinks, sorted by name. File systems without
/// xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    out.sort();
    Ok(out)
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM)
    )
}
