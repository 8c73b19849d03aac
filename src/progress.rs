//! Progress reporting hooks.
//!
//! The library reports progress through the [`Progress`] trait and never draws anything itself;
//! the CLI implements it with indicatif on a terminal or periodic log lines under cron.
//! Implementations must be cheap and thread-safe: the hot paths call them from worker threads.

/// Receives progress events from long-running operations.
pub trait Progress: Send + Sync {
    /// A new phase starts; `total` is the expected amount of work in `unit`s, when known.
    fn phase(&self, _name: &str, _total: Option<u64>, _unit: Unit) {}
    /// `n` more units of work were done in the current phase.
    fn advance(&self, _n: u64) {}
    /// One more item (file, pack, snapshot) was finished; `bytes` is its size.
    fn item_done(&self, _bytes: u64) {}
    /// A non-fatal problem worth telling the user now (it is also counted in the summary).
    fn warn(&self, _message: &str) {}
    /// The current phase ended.
    fn finish_phase(&self) {}
    /// Whether [`Progress::entry`] is wanted (building paths costs; it is skipped otherwise).
    fn wants_entries(&self) -> bool {
        false
    }
    /// A file was found new, changed or unchanged (snapshot), for displays that list files.
    fn entry(&self, _status: EntryStatus, _path: &std::path::Path) {}
}

/// What happened to a file in a snapshot, compared with the parent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    /// Not in the parent snapshot.
    New,
    /// In the parent, with other content or metadata.
    Changed,
    /// As in the parent.
    Unchanged,
}

/// What a phase counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Items (files, packs, snapshots).
    Items,
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
