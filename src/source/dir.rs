//! Directories as open handles: every lookup below a directory is relative to its descriptor
//! (`openat`, `fstatat`, `readlinkat`, …), so neither walking nor restoring depends on the
//! length of a path (paths longer than `PATH_MAX` work) and a directory renamed while it is
//! being read cannot make vault look somewhere else. Entries are never followed: a symlink is
//! recorded or created as a symlink.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use crate::format::time::Timestamp;

/// What `fstatat` says about one entry (only the fields vault records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// File type.
    pub file_type: FileType,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Inode number.
    pub ino: u64,
    /// Device of the file system.
    pub dev: u64,
    /// Hard-link count.
    pub nlink: u64,
    /// Device number (devices only).
    pub rdev: u64,
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    // The kernel reports nanoseconds in 0..1e9 even for times before 1970.
    Timestamp::new(secs, nanos.clamp(0, 999_999_999) as u32)
}

/// At most `cap` descriptors, and never more than an eighth of this process's open-file
/// limit: the share one kind of long-held descriptor may take (files a snapshot's listing hands
/// to its workers, directories of a restore's batches), leaving the rest for deep trees, which
/// hold one per level, and everything else.
pub fn descriptor_share(cap: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(cap, |l| cap.min(usize::try_from(l / 8).unwrap_or(cap)))
}

impl From<rustix::fs::Stat> for Stat {
    #[allow(clippy::unnecessary_cast)]
    fn from(s: rustix::fs::Stat) -> Self {
        Self {
            file_type: FileType::from_raw_mode(s.st_mode as _),
            mode: (s.st_mode as u32) & 0o7777,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            size: s.st_size as u64,
            mtime: ts(s.st_mtime as i64, s.st_mtime_nsec as i64),
            ctime: ts(s.st_ctime as i64, s.st_ctime_nsec as i64),
            atime: ts(s.st_atime as i64, s.st_atime_nsec as i64),
            ino: s.st_ino as u64,
            dev: s.st_dev as u64,
            nlink: s.st_nlink as u64,
            rdev: s.st_rdev as u64,
        }
    }
}

/// An open directory.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DirHandle {
    /// Opens a directory by path (not following a final symlink).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let fd = rustix::fs::openat(CWD, path, dir_flags(), Mode::empty())?;
        Ok(Self { fd })
    }

    /// Opens the subdirectory `name` (never following a symlink).
    pub fn open_dir(&self, name: &OsStr) -> std::io::Result<Self> {
        let fd = rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty())?;
        Ok(Self { fd })
    }

    /// Opens this directory's parent (`..`).
    pub fn open_parent(&self) -> std::io::Result<Self> {
        self.open_dir(OsStr::new(".."))
    }

    /// `fstat` of the directory itself.
    pub fn stat_self(&self) -> std::io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?.into())
    }

    /// `lstat` of the entry `name`.
    pub fn stat(&self, name: &OsStr) -> std::io::Result<Stat> {
        Ok(rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?.into())
    }

    /// The entries' names, sorted by raw bytes (the order trees store), without `.` and `..`.
    pub fn entries(&self) -> std::io::Result<Vec<OsString>> {
        // `read_from` reads through a descriptor of its own (our offset stays untouched).
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsString::from_vec(name.to_vec()));
            }
        }
        out.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(out)
    }

    /// Opens the regular file `name` for reading (never through a symlink), without
    /// updating its access time where that is permitted. Non-blocking: if the entry was
    /// replaced by a FIFO since it was listed, the open returns at once instead of waiting
    /// for a writer forever (it has no effect on regular files); callers that read content
    /// check the type of what they opened.
    pub fn open_file(&self, name: &OsStr) -> std::io::Result<File> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, name, flags | OFlags::NOATIME, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::PERM) => {
                rustix::fs::openat(&self.fd, name, flags, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(File::from(fd))
    }

    /// The target of the symlink `name`, as raw bytes.
    pub fn read_link(&self, name: &OsStr) -> std::io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    /// A short path naming the entry `name` through this descriptor
    /// (`/proc/self/fd/N/name`), for the few calls that exist only with paths (extended
    /// attributes of symlinks and special files). Not usable after the handle is dropped.
    pub fn proc_path(&self, name: &OsStr) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        p.push(name);
        p
    }

    /// Creates the subdirectory `name` (mode 0700 until its metadata is applied); an
    /// existing directory is accepted.
    pub fn make_dir(&self, name: &OsStr) -> std::io::Result<bool> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => match self.stat(name) {
                Ok(s) if s.file_type == FileType::Directory => Ok(false),
                Ok(_) => Err(std::io::Error::other(
                    "something else than a directory is in the way",
                )),
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a new file `name` for writing (fails if it exists), mode 0600.
    pub fn create_file(&self, name: &OsStr) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Opens the existing file `name` for writing (never through a symlink).
    pub fn open_for_write(&self, name: &OsStr) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Renames `from` (in this directory) to `to` (in this directory), replacing `to`.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the non-directory `name`; a missing one is fine.
    pub fn remove_file(&self, name: &OsStr) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a hard link `name` here to `target_name` in `target_dir` (not following a
    /// symlink: a link to a symlink is a link to the symlink).
    pub fn hard_link(
        &self,
        name: &OsStr,
        target_dir: &DirHandle,
        target_name: &OsStr,
    ) -> std::io::Result<()> {
        Ok(rustix::fs::linkat(
            &target_dir.fd,
            target_name,
            &self.fd,
            name,
            AtFlags::empty(),
        )?)
    }

    /// Creates the symlink `name` pointing at the raw bytes `target`.
    pub fn symlink(&self, name: &OsStr, target: &[u8]) -> std::io::Result<()> {
        Ok(rustix::fs::symlinkat(
            OsStr::from_bytes(target),
            &self.fd,
            name,
        )?)
    }

    /// Creates a fifo, socket or device node.
    pub fn make_node(
        &self,
        name: &OsStr,
        ft: FileType,
        mode: u32,
        rdev: u64,
    ) -> std::io::Result<()> {
        Ok(rustix::fs::mknodat(
            &self.fd,
            name,
            ft,
            Mode::from_raw_mode(mode),
            rdev,
        )?)
    }
}
