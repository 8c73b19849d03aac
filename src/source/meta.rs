//! Turning `fstatat` results, xattrs and link targets into tree nodes.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;

use crate::format::tree::{Node, NodeKind};
use crate::{Error, Result};

use super::dir::{DirHandle, Stat};
use super::owner::{group_name, user_name};

/// The node kind of a file type, or `None` for types vault does not know.
pub fn kind_of(ft: FileType) -> Option<NodeKind> {
    Some(match ft {
        FileType::RegularFile => NodeKind::File,
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::Fifo => NodeKind::Fifo,
        FileType::Socket => NodeKind::Socket,
        FileType::CharacterDevice => NodeKind::CharDevice,
        FileType::BlockDevice => NodeKind::BlockDevice,
        _ => return None,
    })
}

/// What to record besides the always-recorded fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetaOptions {
    /// Record access times (off by default: reading a tree changes them, which would make
    /// every directory look changed on the next run).
    pub with_atime: bool,
}

/// Builds a node (without content or subtree) for the entry `name` of `dir` from its `lstat`.
/// `unchanged` is the previous snapshot's node when the entry has the same kind, ctime, inode,
/// size and mtime: its xattrs and symlink target are reused (changing either changes ctime).
/// `open` is a descriptor of the entry itself when the caller holds one (a regular file it is
/// about to read): extended attributes are then read through it, without a path lookup.
/// `path` is only used in error messages.
pub fn node_from_stat(
    dir: &DirHandle,
    name: &OsStr,
    path: &Path,
    st: &Stat,
    opts: MetaOptions,
    unchanged: Option<&Node>,
    open: Option<&File>,
) -> Result<Node> {
    let kind = kind_of(st.file_type)
        .ok_or_else(|| Error::io(path, std::io::Error::other("unsupported file type")))?;
    let mut n = Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        user: user_name(st.uid),
        group: group_name(st.gid),
        mtime: st.mtime,
        atime: opts.with_atime.then_some(st.atime),
        ctime: st.ctime,
        inode: st.ino,
        device: st.dev,
        nlink: st.nlink,
        ..Node::default()
    };
    if kind == NodeKind::File {
        n.size = st.size;
    }
    if let Some(p) = unchanged.filter(|p| p.kind == kind && same_as(p, st)) {
        n.xattrs = p.xattrs.clone();
        n.link_target = p.link_target.clone();
        n.rdev = p.rdev;
        return Ok(n);
    }
    match kind {
        NodeKind::Symlink => {
            n.link_target = dir.read_link(name).map_err(|e| Error::io(path, e))?;
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => n.rdev = st.rdev,
        _ => {}
    }
    n.xattrs = match open {
        Some(f) => read_xattrs_of(f, path)?,
        None => read_xattrs(&dir.proc_path(name), path)?,
    };
    Ok(n)
}

/// Whether the previous snapshot's node `p` has the `lstat` `st` (ctime, inode, mtime and,
/// for files, size): its xattrs and symlink target still hold and a file's content can be
/// reused without reading it.
pub fn same_as(p: &Node, st: &Stat) -> bool {
    let size = if st.file_type == FileType::RegularFile {
        st.size
    } else {
        0
    };
    p.ctime == st.ctime && p.inode == st.ino && p.mtime == st.mtime && p.size == size
}

/// Reads extended attributes of `at` without following a final symlink, sorted by name
/// (`shown` names the entry in errors). File systems without xattr support give an empty
/// list.
pub fn read_xattrs(at: &Path, shown: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    collect_xattrs(xattr::list(at), |name| xattr::get(at, name), shown)
}

/// [`read_xattrs`] through an open descriptor of the file.
pub fn read_xattrs_of(file: &File, shown: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use xattr::FileExt;
    collect_xattrs(file.list_xattr(), |name| file.get_xattr(name), shown)
}

fn collect_xattrs<I: Iterator<Item = OsString>>(
    names: std::io::Result<I>,
    get: impl Fn(&OsStr) -> std::io::Result<Option<Vec<u8>>>,
    shown: &Path,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match names {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(shown, e)),
    };
    let mut out = Vec::new();
    for name in names {
        match get(&name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(Error::io(shown, e)),
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
