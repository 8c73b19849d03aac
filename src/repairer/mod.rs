//! Repairs: rebuilding the index from the packs, and rewriting snapshots around lost data.
//!
//! Neither makes things worse: new objects are written before anything is deleted, damaged
//! packs are never deleted (they only stop being indexed; `prune` collects them), and original
//! snapshots are only removed with `--forget`, after their replacements exist. Memory does not
//! grow with the repository: packs are streamed and indexed as they are read, and the sets of
//! blobs seen and trees rewritten live on disk.

mod index;
mod snapshots;

pub use index::{RepairIndexReport, repair_index};
pub use snapshots::{RepairSnapshotsReport, SnapshotRepair, repair_snapshots};

/// One finding of a repair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// The object or path concerned.
    pub object: String,
    /// What is wrong with it.
    pub message: String,
}
