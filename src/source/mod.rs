//! Reading the things to back up: directory listings, metadata, file content and excludes.
//!
//! I/O only, never repository logic: this layer turns the local file system into
//! [`crate::format::tree::Node`] metadata and byte ranges, and knows which paths are excluded.
//! It is also what the restorer uses to apply metadata back (`apply`).

pub mod apply;
pub mod command;
pub mod dir;
pub mod exclude;
pub mod extents;
pub mod meta;
pub mod owner;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

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
