//! Finding the data and the holes of a sparse file with `SEEK_DATA`/`SEEK_HOLE`.
//!
//! Holes are recorded as such in the tree, so a 4 GiB sparse file is neither read nor stored
//! as 4 GiB of zeros, and it is restored sparse.

use rustix::fs::SeekFrom;
use std::fs::File;

/// A region of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Whether the region is a hole (reads as zeros, not stored).
    pub hole: bool,
}

/// Holes shorter than this are read like data: recording them would cost more than it saves.
pub const MIN_HOLE: u64 = 64 * 1024;

/// Splits a file of `size` bytes into data and hole extents. File systems without
/// `SEEK_DATA` support yield one data extent.
pub fn extents(file: &File, size: u64) -> Vec<Extent> {
    let whole = vec![Extent {
        offset: 0,
        len: size,
        hole: false,
    }];
    if size < MIN_HOLE {
        return whole;
    }
    let mut out: Vec<Extent> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(_) => return whole,
        };
        if data > pos {
            push(&mut out, pos, data - pos, true);
        }
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(_) => return whole,
        };
        push(&mut out, data, hole - data, false);
        pos = hole;
    }
    // Small holes become data so that the recorded layout is stable across file systems.
    let mut merged: Vec<Extent> = Vec::new();
    for mut e in out {
        if e.hole && e.len < MIN_HOLE {
            e.hole = false;
        }
        match merged.last_mut() {
            Some(last) if last.hole == e.hole => last.len += e.len,
            _ => merged.push(e),
        }
    }
    if merged.is_empty() { whole } else { merged }
}

fn push(out: &mut Vec<Extent>, offset: u64, len: u64, hole: bool) {
    if len > 0 {
        out.push(Extent { offset, len, hole });
    }
}
