//! Resuming after an interrupted run: packs that were uploaded completely but never named by
//! an index object are indexed from their own headers, so their blobs are not uploaded again.
//!
//! A snapshot writes index objects every 20,000 blobs or 5 minutes (see `packer`), so a run
//! killed halfway loses at most that much index, never data: every pack it finished is a
//! whole, self-describing object. The next run adopts those packs before it starts (when the
//! local cache says the last run on this machine did not finish, or when there is no cache).
//! Adopting is safe while other writers are active: a pack is only visible once complete, and
//! a blob indexed twice (by its writer and by an adopter) names the same bytes.

use std::collections::HashSet;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::format::index::IndexPack;
use crate::format::layout::Dir;
use crate::id::PackId;
use crate::{Error, Result};

use super::Repository;

/// Marks a run in progress in the local cache; removed when the run ends cleanly.
#[derive(Debug)]
pub struct RunMarker {
    path: Option<PathBuf>,
}

impl RunMarker {
    /// Ends the run cleanly.
    pub fn finish(mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Repository {
    /// Starts a writing run: adopts unindexed packs if the previous run on this machine was
    /// interrupted (or there is no cache to tell), then marks this run as in progress.
    /// Returns the marker and the number of packs adopted.
    pub fn begin_run(&self) -> Result<(RunMarker, u64)> {
        let marker = self.cache_dir().map(|d| d.join("run-in-progress"));
        let interrupted = match &marker {
            Some(p) => p.exists(),
            None => true,
        };
        // A write-only key cannot read pack headers (its own included): a full key's next
        // prune or snapshot adopts what it left.
        let adopted = if interrupted && !self.is_write_only() {
            self.adopt_unindexed_packs()?
        } else {
            0
        };
        if let Some(p) = &marker
            && let Some(dir) = p.parent()
        {
            crate::backend::local::private_dir_all(dir)?;
            std::fs::write(p, std::process::id().to_string()).map_err(|e| Error::io(p, e))?;
        }
        Ok((RunMarker { path: marker }, adopted))
    }

    /// Indexes every pack in the backend that no index object names; returns how many.
    /// Packs whose header cannot be read are left alone (`check` reports them).
    pub fn adopt_unindexed_packs(&self) -> Result<u64> {
        let index = self.index()?;
        let mut known = HashSet::new();
        index.for_each_pack(|id, _| {
            known.insert(id);
            Ok(())
        })?;
        let unknown: Vec<(PackId, u64)> = self
            .backend()
            .list(Dir::Data.name())?
            .into_iter()
            .filter_map(|o| Dir::Data.name_of(&o.path).map(|raw| (PackId(raw), o.size)))
            .filter(|(id, _)| !known.contains(id))
            .collect();
        if unknown.is_empty() {
            return Ok(0);
        }
        let packs: Vec<IndexPack> = unknown
            .par_iter()
            .filter_map(|(id, size)| match self.read_pack_header(id, Some(*size)) {
                Ok(blobs) => Some(IndexPack {
                    id: *id,
                    size: *size,
                    blobs,
                }),
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, "unindexed pack not adopted");
                    None
                }
            })
            .collect();
        let n = packs.len() as u64;
        let mut w = super::index::IndexWriter::new(self, true);
        for p in packs {
            w.add_pack(p)?;
        }
        w.finish(Vec::new())?;
        if n > 0 {
            tracing::info!(packs = n, "adopted packs left by an interrupted run");
        }
        Ok(n)
    }
}
