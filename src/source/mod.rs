//! Reading the things to back up: directory listings, metadata, file content and excludes.
//!
//! I/O only, never repository logic: this layer turns the local file system into
//! [`crate::format::tree::Node`] metadata and byte ranges, and knows which paths are excluded.
//! It is also what the restorer uses to apply metadata back (`apply`).

pub mod apply;
pub mod command;
pub mod exclude;
pub mod extents;
pub mod meta;
pub mod owner;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One directory entry.
#[derive(Debug)]
pub struct DirEntry {
    /// The entry's name.
    pub name: OsString,
    /// Its full path.
    pub path: PathBuf,
    entry: std::fs::DirEntry,
}

impl DirEntry {
    /// `lstat` of the entry, relative to the open directory (no path lookup).
    pub fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        self.entry.metadata()
    }
}

/// Lists a directory, sorted by raw name bytes (the order trees store).
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<DirEntry>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        out.push(DirEntry {
            path: dir.join(&name),
            name,
            entry: e,
        });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Makes `p` absolute and lexically clean (no `.`/`..`, no trailing slash) without resolving a
/// final symlink, so that the snapshot records what the user named.
pub fn absolute_path(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}
