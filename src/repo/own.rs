//! A write-only host's memory of its own snapshots (`format-spec` 4.8).
//!
//! A write-only key cannot read anything back from the repository, not even what it wrote:
//! everything it stores is sealed to the reader key. So that its next snapshot is still
//! incremental (metadata skip against the parent) and anomaly checks still have a history,
//! the host keeps, in its local cache directory, the plaintext manifests of its newest
//! snapshots per group and the tree blobs of those snapshots. This is the host's own metadata
//! (names, sizes, times of its own files), which it holds anyway; nothing of other hosts'
//! data is ever there. Trees no kept manifest reaches are removed after each snapshot, so the
//! store holds one snapshot's trees per group, whatever the size of the repository.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::format::snapshot::{Snapshot, Summary, decode_snapshot, encode_snapshot};
use crate::id::{BlobId, SnapshotId};
use crate::{Error, Result};

use super::Repository;

/// How many manifests are kept per group (the anomaly history reads at most this many).
const KEEP_PER_GROUP: usize = 10;

impl Repository {
    fn own_dir(&self) -> Option<PathBuf> {
        self.cache_dir().map(|d| d.join("own"))
    }

    /// Keeps the plaintext of a tree blob this write-only session stored.
    pub(crate) fn remember_own_tree(&self, id: &BlobId, plain: &[u8]) -> Result<()> {
        let Some(dir) = self.own_dir().map(|d| d.join("trees")) else {
            return Ok(());
        };
        let path = dir.join(id.to_hex());
        if path.exists() {
            return Ok(());
        }
        crate::backend::local::private_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.{}", id.to_hex(), std::process::id()));
        std::fs::write(&tmp, plain).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// A tree blob this host stored earlier, verified against its id.
    pub(crate) fn own_tree(&self, id: &BlobId) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.own_dir()?.join("trees").join(id.to_hex())).ok()?;
        (self.hasher().blob_id(&bytes) == *id).then_some(bytes)
    }

    fn group_dir(&self, host: &str, paths: &[Vec<u8>]) -> Option<PathBuf> {
        let mut h = blake3::Hasher::new();
        h.update(host.as_bytes());
        for p in paths {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Some(
            self.own_dir()?
                .join("snapshots")
                .join(h.finalize().to_hex().as_str()),
        )
    }

    /// Remembers a snapshot this write-only host saved, keeps the newest few of its group and
    /// drops the trees no kept snapshot reaches.
    pub(crate) fn remember_own_snapshot(&self, id: &SnapshotId, s: &Snapshot) -> Result<()> {
        let Some(dir) = self.group_dir(&s.hostname, &s.paths) else {
            return Ok(());
        };
        crate::backend::local::private_dir_all(&dir)?;
        let path = dir.join(id.to_hex());
        std::fs::write(&path, encode_snapshot(s)).map_err(|e| Error::io(&path, e))?;
        let mut kept = self.own_group(&dir);
        for (_, old_path, _) in kept.split_off(KEEP_PER_GROUP.min(kept.len())) {
            let _ = std::fs::remove_file(old_path);
        }
        self.collect_own_trees()
    }

    /// The manifests of one group, newest first.
    fn own_group(&self, dir: &std::path::Path) -> Vec<(SnapshotId, PathBuf, Snapshot)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Some(id) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(SnapshotId::from_hex)
            else {
                continue;
            };
            if let Some(s) = std::fs::read(&p)
                .ok()
                .and_then(|b| decode_snapshot(&b).ok())
            {
                out.push((id, p, s));
            }
        }
        out.sort_by_key(|(id, _, s)| std::cmp::Reverse((s.time, *id)));
        out
    }

    /// The parent (newest own snapshot of the group) and the summaries of the `history`
    /// newest, for a write-only host.
    pub(crate) fn own_history(
        &self,
        host: &str,
        paths: &[Vec<u8>],
        history: usize,
    ) -> (Option<(SnapshotId, Snapshot)>, Vec<Summary>) {
        let Some(dir) = self.group_dir(host, paths) else {
            return (None, Vec::new());
        };
        let group = self.own_group(&dir);
        let summaries = group
            .iter()
            .take(history)
            .map(|(_, _, s)| s.summary)
            .collect();
        let parent = group.into_iter().next().map(|(id, _, s)| (id, s));
        (parent, summaries)
    }

    /// Removes kept trees that no kept manifest reaches (walks the kept trees locally).
    fn collect_own_trees(&self) -> Result<()> {
        let Some(own) = self.own_dir() else {
            return Ok(());
        };
        let mut reach: HashSet<BlobId> = HashSet::new();
        let mut todo: Vec<BlobId> = Vec::new();
        for group in std::fs::read_dir(own.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for (_, _, s) in self.own_group(&group.path()) {
                todo.push(s.tree);
            }
        }
        while let Some(id) = todo.pop() {
            if !reach.insert(id) {
                continue;
            }
            let Some(bytes) = self.own_tree(&id) else {
                continue;
            };
            if let Ok(tree) = crate::format::tree::decode_tree(&bytes) {
                todo.extend(tree.nodes.iter().filter_map(|n| n.subtree));
            }
        }
        for e in std::fs::read_dir(own.join("trees"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let keep = e
                .file_name()
                .to_str()
                .and_then(BlobId::from_hex)
                .is_some_and(|id| reach.contains(&id));
            if !keep {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}
