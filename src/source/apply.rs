//! Writing metadata back to the file system on restore (`format-spec/13-restore.md`).
//!
//! Order matters and is fixed here: ownership first (chown clears setuid/setgid), then the
//! mode, then extended attributes, then times last (every other change bumps them). Everything
//! goes through descriptors or through a directory descriptor and a name, never through a
//! path, so it works at any depth.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::format::time::Timestamp;
use crate::format::tree::{Node, NodeKind};
use crate::{Error, Result};

use super::dir::DirHandle;

/// What metadata to restore.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Restore uid/gid (only root may give files away).
    pub owner: bool,
    /// Restore extended attributes.
    pub xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            owner: rustix::process::geteuid().is_root(),
            xattrs: true,
        }
    }
}

fn io(path: &Path, e: rustix::io::Errno) -> Error {
    Error::io(path, std::io::Error::from(e))
}

fn ts(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos) as _,
    }
}

fn times(node: &Node) -> Timestamps {
    Timestamps {
        last_access: ts(node.atime.unwrap_or(node.mtime)),
        last_modification: ts(node.mtime),
    }
}

/// Applies ownership, mode, xattrs and times of `node` through an open descriptor of the
/// object itself (a regular file or a directory). `shown` names it in errors. Problems are
/// collected rather than stopping at the first.
pub fn apply_metadata_fd(
    fd: impl AsFd,
    shown: &Path,
    node: &Node,
    opts: ApplyOptions,
) -> Vec<Error> {
    let fd = fd.as_fd();
    let mut errors = Vec::new();
    if opts.owner
        && let Err(e) = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        )
    {
        errors.push(io(shown, e));
    }
    if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(node.mode)) {
        errors.push(io(shown, e));
    }
    if opts.xattrs {
        for (k, v) in &node.xattrs {
            // Security and trusted namespaces need privileges; tell, but go on.
            if let Err(e) = rustix::fs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty())
            {
                errors.push(io(shown, e));
            }
        }
    }
    if let Err(e) = rustix::fs::futimens(fd, &times(node)) {
        errors.push(io(shown, e));
    }
    errors
}

/// Applies metadata to the entry `name` of `dir` without following it (symlinks, fifos,
/// sockets and devices, which cannot be opened for this).
pub fn apply_metadata_at(
    dir: &DirHandle,
    name: &OsStr,
    shown: &Path,
    node: &Node,
    opts: ApplyOptions,
) -> Vec<Error> {
    let mut errors = Vec::new();
    if opts.owner
        && let Err(e) = rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    {
        errors.push(io(shown, e));
    }
    if node.kind != NodeKind::Symlink
        && let Err(e) =
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(node.mode), AtFlags::empty())
    {
        errors.push(io(shown, e));
    }
    if opts.xattrs && !node.xattrs.is_empty() {
        let at = dir.proc_path(name);
        for (k, v) in &node.xattrs {
            if let Err(e) = rustix::fs::lsetxattr(&at, OsStr::from_bytes(k), v, XattrFlags::empty())
            {
                errors.push(io(shown, e));
            }
        }
    }
    if let Err(e) = rustix::fs::utimensat(dir, name, &times(node), AtFlags::SYMLINK_NOFOLLOW) {
        errors.push(io(shown, e));
    }
    errors
}

/// Creates the symlink, fifo, socket or device `name` in `dir` as `node` describes.
pub fn create_special(dir: &DirHandle, name: &OsStr, shown: &Path, node: &Node) -> Result<()> {
    let ft = match node.kind {
        NodeKind::Symlink => {
            return dir
                .symlink(name, &node.link_target)
                .map_err(|e| Error::io(shown, e));
        }
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        other => {
            return Err(Error::InvalidInput(format!(
                "{} is not a special file",
                other.name()
            )));
        }
    };
    dir.make_node(name, ft, node.mode, node.rdev)
        .map_err(|e| Error::io(shown, e))
}
