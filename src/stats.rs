//! Repository statistics: size on the backend, unique data, compression and deduplication.
//!
//! [`backend_size`] is cheap (pack sizes from the local index, a listing of the small
//! directories): it runs after every command that writes metrics. [`data_stats`] scans the
//! index once (streaming; memory does not grow with it) and [`snapshot_totals`] reads every
//! snapshot manifest.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Result;
use crate::format::layout::Dir;
use crate::id::BlobType;
use crate::repo::Repository;

/// What the repository occupies on the backend.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendSize {
    /// Pack files (from the index).
    pub packs: u64,
    /// Bytes in pack files.
    pub pack_bytes: u64,
    /// Snapshot manifests.
    pub snapshots: u64,
    /// Bytes of index objects, snapshots, keys, holds, audit records and the config.
    pub metadata_bytes: u64,
    /// Everything.
    pub total_bytes: u64,
}

/// Sizes on the backend: packs from the index, other objects from a listing.
pub fn backend_size(repo: &Repository) -> Result<BackendSize> {
    let mut s = BackendSize::default();
    repo.index()?.for_each_pack(|_, size| {
        s.packs += 1;
        s.pack_bytes += size;
        Ok(())
    })?;
    for dir in [
        Dir::Index,
        Dir::Snapshots,
        Dir::Keys,
        Dir::Holds,
        Dir::Audit,
    ] {
        repo.backend().list_each(dir.name(), &mut |o| {
            if dir == Dir::Snapshots {
                s.snapshots += 1;
            }
            s.metadata_bytes += o.size;
            Ok(())
        })?;
    }
    if let Ok(c) = repo.backend().stat(crate::format::layout::CONFIG_PATH) {
        s.metadata_bytes += c.size;
    }
    s.total_bytes = s.pack_bytes + s.metadata_bytes;
    Ok(s)
}

/// The unique data the index holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataStats {
    /// Data blobs.
    pub data_blobs: u64,
    /// Tree blobs.
    pub tree_blobs: u64,
    /// Size of the unique blobs before compression.
    pub raw_bytes: u64,
    /// Size stored (compressed and encrypted).
    pub stored_bytes: u64,
}

/// Scans the index once.
pub fn data_stats(repo: &Repository) -> Result<DataStats> {
    let mut d = DataStats::default();
    repo.index()?.for_each_blob(|t, _, loc| {
        match t {
            BlobType::Data => d.data_blobs += 1,
            BlobType::Tree => d.tree_blobs += 1,
        }
        d.raw_bytes += loc.raw_length;
        d.stored_bytes += loc.stored_share();
        Ok(())
    })?;
    Ok(d)
}

/// Totals of a set of snapshots, from their summaries.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotTotals {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files in them (counted once per snapshot).
    pub files: u64,
    /// Bytes of file data in them (what restoring each would write).
    pub raw_bytes: u64,
    /// Bytes their runs added to the repository.
    pub bytes_added: u64,
}

/// Totals per group key (`host` + paths, as prune groups by default), and overall.
pub fn snapshot_totals(
    repo: &Repository,
    filter: &crate::repo::snapshots::SnapshotFilter,
) -> Result<(SnapshotTotals, BTreeMap<String, SnapshotTotals>, u64)> {
    let acc: std::sync::Mutex<(SnapshotTotals, BTreeMap<String, SnapshotTotals>, u64)> =
        Default::default();
    repo.for_each_snapshot(&|_, s| {
        let mut guard = acc.lock().unwrap_or_else(|p| p.into_inner());
        let a = &mut *guard;
        let s = match s {
            Ok(s) => s,
            Err(_) => {
                a.2 += 1;
                return Ok(());
            }
        };
        if !filter.matches(&s) {
            return Ok(());
        }
        // Grouped as prune groups by default: host and the set of paths.
        let by = crate::pruner::GroupBy {
            host: true,
            paths: true,
            tags: false,
        };
        let k = crate::pruner::group_key(&s, by);
        let key = format!(
            "{} {}",
            k.hostname.unwrap_or_default(),
            k.paths.unwrap_or_default().join(",")
        );
        for t in [&mut a.0, a.1.entry(key).or_default()] {
            t.snapshots += 1;
            t.files += s.summary.total_files;
            t.raw_bytes += s.summary.total_bytes;
            t.bytes_added += s.summary.bytes_added;
        }
        Ok(())
    })?;
    Ok(acc.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// A ratio `a / b`, 0 when `b` is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
