//! Reads from remote storage kept in flight ahead of the work on what was read.
//!
//! A local directory answers a read at once, so commands let each worker read what it then
//! works on. Remote storage (S3, GCS, Azure, SFTP, WebDAV) answers each request after a round
//! trip, and one read per worker leaves the cores idle while they wait. There, reader threads
//! fetch items in order while the pool works on the items already fetched. What is read and
//! not yet worked on is bounded in bytes by the caller's budget, so memory does not depend on
//! how many items there are nor on how slow the work is.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;

use crate::Result;
use crate::repo::Repository;

/// Reads kept in flight on remote storage at least (`--threads` more).
const MIN_READERS: usize = 3;

/// Reader threads for `repo` given the command's worker count: 0 for a local directory (the
/// workers read themselves).
pub(crate) fn readers(repo: &Repository, workers: usize) -> usize {
    if repo.backend().staging_dir().is_some() {
        0
    } else {
        workers.max(MIN_READERS)
    }
}

/// Bytes taken from the budget by items being read or read and not yet worked on.
struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    /// Waits until `n` bytes fit (or nothing is held); false when `stop` was set meanwhile.
    fn take(&self, n: u64, stop: &AtomicBool) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + n > self.limit && !stop.load(Ordering::Relaxed) {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        *used += n;
        true
    }

    fn give(&self, n: u64) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) -= n;
        self.freed.notify_all();
    }
}

/// Calls `read(i)` for every item `i` (`sizes[i]` bytes once read) on `readers` threads (at
/// least one), and `work(i, what was read)` on the rayon pool, several items at once, as reads
/// complete. Items being read or waiting for `work` hold at most `budget` bytes (an item
/// larger than that is read alone). The first error of `work` stops the readers and is
/// returned (what was already read is dropped).
pub(crate) fn read_ahead<R: Send>(
    sizes: &[u64],
    budget: u64,
    readers: usize,
    read: impl Fn(usize) -> R + Sync,
    work: impl Fn(usize, R) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let budget = Budget {
        limit: budget,
        used: Mutex::new(0),
        freed: Condvar::new(),
    };
    let first_error = Mutex::new(None);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, R)>();
    std::thread::scope(|s| {
        for _ in 0..readers.clamp(1, sizes.len().max(1)) {
            let tx = tx.clone();
            let (next, stop, budget, read) = (&next, &stop, &budget, &read);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sizes.len() || !budget.take(sizes[i], stop) {
                        break;
                    }
                    if tx.send((i, read(i))).is_err() {
                        budget.give(sizes[i]);
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Whatever has arrived is worked on together; the readers go on meanwhile.
        while let Ok(item) = rx.recv() {
            let mut batch = vec![item];
            batch.extend(rx.try_iter());
            batch.into_par_iter().for_each(|(i, item)| {
                if !stop.load(Ordering::Relaxed)
                    && let Err(e) = work(i, item)
                {
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    stop.store(true, Ordering::Relaxed);
                }
                budget.give(sizes[i]);
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 48 << 20;

    #[test]
    fn every_item_is_worked_on_once_within_the_budget() {
        let sizes: Vec<u64> = (0..200).map(|i| (i % 7 + 1) * (4 << 20)).collect();
        let held = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let seen: Vec<AtomicUsize> = (0..sizes.len()).map(|_| AtomicUsize::new(0)).collect();
        read_ahead(
            &sizes,
            BUDGET,
            4,
            |i| {
                let now = held.fetch_add(sizes[i] as usize, Ordering::SeqCst) + sizes[i] as usize;
                peak.fetch_max(now, Ordering::SeqCst);
                i * 2
            },
            |i, v| {
                assert_eq!(v, i * 2);
                seen[i].fetch_add(1, Ordering::SeqCst);
                held.fetch_sub(sizes[i] as usize, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert!(seen.iter().all(|n| n.load(Ordering::SeqCst) == 1));
        let peak = peak.load(Ordering::SeqCst) as u64;
        assert!(peak <= BUDGET, "{peak} bytes held at once");
        // One item larger than the budget is read alone.
        let big = [BUDGET * 2, 1, BUDGET * 3];
        let got = AtomicUsize::new(0);
        read_ahead(
            &big,
            BUDGET,
            3,
            |i| i,
            |_, _| {
                got.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.load(Ordering::SeqCst), 3);
        read_ahead(&[], BUDGET, 3, |_| (), |_, ()| panic!("nothing to read")).unwrap();
    }

    #[test]
    fn an_error_stops_the_readers_and_is_returned() {
        let sizes = vec![1u64 << 20; 10_000];
        let reads = AtomicUsize::new(0);
        let worked = AtomicUsize::new(0);
        let r = read_ahead(
            &sizes,
            BUDGET,
            4,
            |_| reads.fetch_add(1, Ordering::SeqCst),
            |_, _| {
                if worked.fetch_add(1, Ordering::SeqCst) == 4 {
                    Err(crate::Error::Aborted("stop".into()))
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(r, Err(crate::Error::Aborted(_))));
        // At most a budget's worth of items is read past the error.
        let reads = reads.load(Ordering::SeqCst) as u64;
        assert!(reads < 5 + 2 * (BUDGET >> 20), "{reads} reads");
    }
}
