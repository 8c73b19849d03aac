//! Writing objects into a local repository directory.
//!
//! Reads, listings and deletes of local repositories go through OpenDAL's file-system service;
//! creating objects does not, because three properties of a repository on disk are decided
//! here:
//! * **private**: objects are created `0600` and directories `0700`, whatever the umask, so key
//!   files and the config are never readable by other local users;
//! * **atomic and create-only**: an object is written to `tmp/`, made durable (fsync), then
//!   linked to its name (which fails if the name exists) and the directory is synced;
//! * **nothing is created at a location that holds no repository**: the root and `tmp/` are
//!   made only by `init` and by writes into an existing repository.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Mode of every directory vault creates in a local repository (and its cache).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file vault creates in a local repository.
pub const FILE_MODE: u32 = 0o600;

/// The owner tag in a staging file's name, if it has one.
pub fn staging_owner(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".tmp")?;
    let mut parts = stem.splitn(3, '-');
    let (_kind, owner) = (parts.next()?, parts.next()?);
    parts.next()?;
    Some(owner)
}

fn missing(path: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        super::not_found(path)
    } else {
        Error::io(path, e)
    }
}

/// Reads a whole object into one buffer of its exact size.
pub fn read(root: &Path, path: &str) -> Result<Vec<u8>> {
    std::fs::read(root.join(path)).map_err(|e| missing(path, e))
}

/// Reads a whole object into `buf`, reusing its memory (its pages are already mapped).
pub fn read_into(root: &Path, path: &str, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    let mut f = File::open(root.join(path)).map_err(|e| missing(path, e))?;
    buf.clear();
    if let Ok(m) = f.metadata() {
        buf.reserve_exact(usize::try_from(m.len()).unwrap_or(0));
    }
    f.read_to_end(buf).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Reads `len` bytes at `offset`; an object that ends earlier is truncated (damage).
pub fn read_range(root: &Path, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_range_into(root, path, offset, len, &mut buf)?;
    Ok(buf)
}

/// Starts reading `len` bytes at `offset` of an object into the page cache (advice only:
/// errors are ignored, the read that follows reports them).
pub fn will_read(root: &Path, path: &str, offset: u64, len: u64) {
    if let (Ok(f), Some(len)) = (File::open(root.join(path)), std::num::NonZeroU64::new(len)) {
        let _ = rustix::fs::fadvise(&f, offset, Some(len), rustix::fs::Advice::WillNeed);
    }
}

/// Like [`read_range`], into `buf` (replacing what it held, reusing its memory).
pub fn read_range_into(
    root: &Path,
    path: &str,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = File::open(root.join(path)).map_err(|e| missing(path, e))?;
    buf.clear();
    buf.resize(
        usize::try_from(len).map_err(|_| Error::InvalidInput("range too large".into()))?,
        0,
    );
    let mut done = 0usize;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(Error::corrupt(
                    crate::ObjectRef::Path(path.to_string()),
                    format!(
                        "truncated: bytes {}..{} are not there",
                        offset + done as u64,
                        offset + len
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn private_dir_all(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Creates a new, private staging file in `dir` (a repository's `tmp/`), named
/// `KIND-OWNER-RANDOM.tmp` where OWNER identifies this process beyond its PID
/// (`crate::repo::process::ProcessIdentity::tag`), so that files of a process that died can
/// be recognised and collected (`crate::repo::staging`).
pub fn create_staging_file(dir: &Path, kind: &str) -> Result<(File, PathBuf)> {
    private_dir_all(dir)?;
    let mut rnd = [0u8; 12];
    crate::crypto::random_bytes(&mut rnd)?;
    let owner = crate::repo::process::ProcessIdentity::current().tag();
    let path = dir.join(format!("{kind}-{owner}-{}.tmp", hex::encode(rnd)));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((f, path))
}

/// Writes a new object `path` below `root` with `data`, atomically and create-only.
pub fn write_new(root: &Path, path: &str, data: &[u8], staging_kind: &str) -> Result<()> {
    let (mut f, tmp) = create_staging_file(&root.join("tmp"), staging_kind)?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    publish(root, path, &tmp, false)
}

/// Replaces object `path` atomically: stage, fsync, rename over the old file, fsync the
/// directory.
pub fn replace(root: &Path, path: &str, data: &[u8]) -> Result<()> {
    let (mut f, tmp) = create_staging_file(&root.join("tmp"), "object")?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    drop(f);
    let dst = root.join(path);
    let result = written.map_err(|e| Error::io(&tmp, e)).and_then(|_| {
        std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        let parent = dst
            .parent()
            .expect("invariant: object paths have a directory");
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(parent, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Moves a staged file into place as object `path`: fsync it (unless the caller just did),
/// link it to its name (create-only), remove the staged name, fsync the directory.
pub fn publish(root: &Path, path: &str, staged: &Path, sync_file: bool) -> Result<()> {
    let dst = root.join(path);
    let parent = dst
        .parent()
        .expect("invariant: object paths have a directory");
    let result = (|| {
        private_dir_all(parent)?;
        if sync_file {
            File::open(staged)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(staged, e))?;
        }
        // link + unlink instead of rename: link fails if the target exists (create-only).
        match std::fs::hard_link(staged, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(path.to_string()));
            }
            Err(e) => return Err(Error::io(&dst, e)),
        }
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(parent, e))
    })();
    let _ = std::fs::remove_file(staged);
    result
}
