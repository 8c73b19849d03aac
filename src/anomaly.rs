//! Backup size anomalies: compares a new snapshot's summary with the previous snapshots of its
//! group (same host and paths). Pure: no I/O.
//!
//! Flags (README, "Anomalies"):
//! - `empty`: the snapshot holds no bytes where the previous ones held some;
//! - `shrank`: it is smaller than the median of the previous ones by more than
//!   `shrink_percent` (a dump of an emptied database);
//! - `growth`: it added more than `growth_factor` × the usual new data (and at least
//!   `min_added_bytes`);
//! - `mass-change`: most of the files that existed changed at once (more than
//!   `changed_percent` of them, where the previous snapshots changed fewer) and the new data
//!   did not compress (stored/added above `incompressible_percent`): files encrypted in place.

use serde::Serialize;

use crate::format::snapshot::Summary;

/// Thresholds; the defaults suit daily backups of files and database dumps.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Previous snapshots compared with (the newest of the group).
    pub history: usize,
    /// `shrank` when smaller than the median by more than this percentage.
    pub shrink_percent: f64,
    /// `growth` when the data added exceeds this factor times the median.
    pub growth_factor: f64,
    /// … and at least this many bytes.
    pub min_added_bytes: u64,
    /// `mass-change` when more than this percentage of existing files changed …
    pub changed_percent: f64,
    /// … and the stored size of the new data is above this percentage of its size.
    pub incompressible_percent: f64,
    /// `mass-change` needs at least this many existing files.
    pub min_files: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            history: 5,
            shrink_percent: 50.0,
            growth_factor: 5.0,
            min_added_bytes: 64 << 20,
            changed_percent: 50.0,
            incompressible_percent: 90.0,
            min_files: 10,
        }
    }
}

/// One flag raised on a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    /// `empty`, `shrank`, `growth` or `mass-change`.
    pub kind: &'static str,
    /// What was seen, in words.
    pub message: String,
}

/// Every kind, in the order they are reported (metrics list each one).
pub const KINDS: [&str; 4] = ["empty", "shrank", "growth", "mass-change"];

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Share (percent) of the files that existed before which changed.
fn changed_share(s: &Summary) -> f64 {
    let existing = s.files_changed + s.files_unmodified;
    if existing == 0 {
        0.0
    } else {
        s.files_changed as f64 * 100.0 / existing as f64
    }
}

/// Flags `current` against `previous` (the group's earlier snapshots, any order; only the
/// first `t.history` are used, so pass the newest first). No history, no flags.
pub fn assess(current: &Summary, previous: &[Summary], t: &Thresholds) -> Vec<Anomaly> {
    let prev: Vec<&Summary> = previous.iter().take(t.history.max(1)).collect();
    if prev.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let total = median(prev.iter().map(|s| s.total_bytes as f64).collect());
    if total > 0.0 && current.total_bytes == 0 {
        out.push(Anomaly {
            kind: "empty",
            message: format!(
                "the snapshot holds 0 bytes; the previous ones held {total:.0} (median)"
            ),
        });
    } else if total > 0.0 && (current.total_bytes as f64) < total * (1.0 - t.shrink_percent / 100.0)
    {
        out.push(Anomaly {
            kind: "shrank",
            message: format!(
                "the snapshot holds {} bytes, {:.0}% less than the median {total:.0} of the previous {}",
                current.total_bytes,
                100.0 - current.total_bytes as f64 * 100.0 / total,
                prev.len()
            ),
        });
    }
    let added = median(prev.iter().map(|s| s.bytes_added as f64).collect());
    let limit = (added * t.growth_factor).max(t.min_added_bytes as f64);
    if current.bytes_added as f64 > limit {
        out.push(Anomaly {
            kind: "growth",
            message: format!(
                "{} bytes of new data, more than {:.0} (the usual {added:.0} × {})",
                current.bytes_added, limit, t.growth_factor
            ),
        });
    }
    let existing = current.files_changed + current.files_unmodified;
    let share = changed_share(current);
    let usual = median(prev.iter().map(|s| changed_share(s)).collect());
    let stored_share = if current.bytes_added == 0 {
        0.0
    } else {
        current.bytes_stored as f64 * 100.0 / current.bytes_added as f64
    };
    if existing >= t.min_files
        && share > t.changed_percent
        && usual <= t.changed_percent
        && stored_share > t.incompressible_percent
    {
        out.push(Anomaly {
            kind: "mass-change",
            message: format!(
                "{share:.0}% of the existing files changed (usually {usual:.0}%) and the new data does not compress ({stored_share:.0}% of its size stored): files encrypted in place?"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(total: u64, added: u64, stored: u64, changed: u64, unmodified: u64) -> Summary {
        Summary {
            total_bytes: total,
            bytes_added: added,
            bytes_stored: stored,
            files_changed: changed,
            files_unmodified: unmodified,
            total_files: changed + unmodified,
            ..Summary::default()
        }
    }

    #[test]
    fn no_history_no_flags() {
        assert!(assess(&s(0, 0, 0, 0, 0), &[], &Thresholds::default()).is_empty());
    }

    #[test]
    fn an_emptied_dump_is_flagged() {
        let t = Thresholds::default();
        let prev = [s(90 << 20, 1 << 20, 1 << 19, 1, 0)];
        let kinds = |c: &Summary| {
            assess(c, &prev, &t)
                .iter()
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&s(4096, 4096, 1000, 1, 0)), ["shrank"]);
        assert_eq!(kinds(&s(0, 0, 0, 0, 0)), ["empty"]);
        assert!(kinds(&s(88 << 20, 1 << 20, 1 << 19, 1, 0)).is_empty());
    }

    #[test]
    fn encryption_in_place_is_flagged_and_a_normal_day_is_not() {
        let t = Thresholds::default();
        let prev = vec![s(100 << 20, 2 << 20, 1 << 20, 5, 195); 5];
        let encrypted = s(100 << 20, 100 << 20, 101 << 20, 200, 0);
        let kinds: Vec<_> = assess(&encrypted, &prev, &t)
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, ["growth", "mass-change"]);
        let normal = s(101 << 20, 3 << 20, 1 << 20, 8, 192);
        assert!(assess(&normal, &prev, &t).is_empty());
        // Everything changes every day, compressible: not an anomaly.
        let churn = vec![s(10 << 20, 10 << 20, 3 << 20, 100, 0); 5];
        assert!(assess(&s(10 << 20, 10 << 20, 3 << 20, 100, 0), &churn, &t).is_empty());
    }
}
