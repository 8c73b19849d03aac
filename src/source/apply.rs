//! Writing metadata back to the file system on restore.
//!
//! Order matters and is fixed here: ownership first (chown clears setuid/setgid), then the
//! mode, then extended attributes, then times last (every other change bumps them).

use std::path::Path;

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps};

use crate::format::time::Timestamp;
use crate::format::tree::{Node, NodeKind};
use crate::{Error, Result};

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

/// Applies ownership, mode, xattrs and times of `node` to `path` (which must exist).
/// Problems are collected rather than stopping at the first.
pub fn apply_metadata(path: &Path, node: &Node, opts: ApplyOptions) -> Vec<Error> {
    let mut errors = Vec::new();
    if opts.owner {
        let r = rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        if let Err(e) = r {
            errors.push(io(path, e));
        }
    }
    if node.kind != NodeKind::Symlink
        && let Err(e) = rustix::fs::chmod(path, Mode::from_raw_mode(node.mode))
    {
        errors.push(io(path, e));
    }
    if opts.xattrs {
        for (k, v) in &node.xattrs {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(k);
            if let Err(e) = xattr::set(path, name, v) {
                // Security and trusted namespaces need privileges; tell, but go on.
                errors.push(Error::io(path, e));
            }
        }
    }
    let times = Timestamps {
        last_access: ts(node.atime.unwrap_or(node.mtime)),
        last_modification: ts(node.mtime),
    };
    if let Err(e) = rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW) {
        errors.push(io(path, e));
    }
    errors
}

/// Like [`apply_metadata`] through an open file (no path lookups): for regular files the
/// restorer has just written.
pub fn apply_metadata_fd(
    file: &std::fs::File,
    path: &Path,
    node: &Node,
    opts: ApplyOptions,
) -> Vec<Error> {
    let mut errors = Vec::new();
    if opts.owner
        && let Err(e) = rustix::fs::fchown(
            file,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        )
    {
        errors.push(io(path, e));
    }
    if let Err(e) = rustix::fs::fchmod(file, Mode::from_raw_mode(node.mode)) {
        errors.push(io(path, e));
    }
    if opts.xattrs {
        use xattr::FileExt;
        for (k, v) in &node.xattrs {
            use std::os::unix::ffi::OsStrExt;
            if let Err(e) = file.set_xattr(std::ffi::OsStr::from_bytes(k), v) {
                errors.push(Error::io(path, e));
            }
        }
    }
    let times = Timestamps {
        last_access: ts(node.atime.unwrap_or(node.mtime)),
        last_modification: ts(node.mtime),
    };
    if let Err(e) = rustix::fs::futimens(file, &times) {
        errors.push(io(path, e));
    }
    errors
}

/// Creates a fifo, socket or device node.
pub fn create_special(path: &Path, node: &Node) -> Result<()> {
    let ft = match node.kind {
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
    rustix::fs::mknodat(CWD, path, ft, Mode::from_raw_mode(node.mode), node.rdev)
        .map_err(|e| io(path, e))
}

/// Creates a symlink pointing at the raw target bytes.
pub fn create_symlink(path: &Path, target: &[u8]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
        .map_err(|e| Error::io(path, e))
}
