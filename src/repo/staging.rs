//! Staging files left in a local repository's `tmp/` by runs that were killed, and their
//! collection.
//!
//! A staging file is named after its owner (`crate::backend::local::create_staging_file`). It
//! is **left over** when its owner is provably gone (same boot and PID namespace, no such
//! process), or when no live lock belongs to its owner and it was not written to for the lock
//! stale time (30 minutes): a live writer holds a lock that it refreshes. Left-over files are
//! reported by `check`; a snapshot collects those of provably gone owners when it starts, and
//! `prune`, which holds the exclusive lock, collects every staging file older than its lock.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::format::LOCK_STALE_SECS;
use crate::format::time::Timestamp;
use crate::repo::process::ProcessIdentity;
use crate::{Error, Result};

use super::Repository;

/// Count and size of staging files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Leftovers {
    /// Files.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One staging file.
struct Staged {
    path: std::path::PathBuf,
    owner: Option<String>,
    modified: SystemTime,
    size: u64,
}

impl Repository {
    fn staged_files(&self) -> Result<Vec<Staged>> {
        let Some(dir) = self.backend().staging_dir() else {
            return Ok(Vec::new());
        };
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            out.push(Staged {
                path: e.path(),
                owner: crate::backend::local::staging_owner(&name).map(str::to_string),
                modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: md.len(),
            });
        }
        Ok(out)
    }

    /// Owner tags of the processes that hold live locks.
    fn live_owner_tags(&self) -> Result<HashSet<String>> {
        let now = Timestamp::now();
        let host = crate::source::owner::hostname();
        Ok(self
            .list_locks()?
            .into_iter()
            .filter(|l| !l.is_stale(now, &host))
            .filter_map(|l| {
                let l = l.lock.ok()?;
                let o = l.owner?;
                Some(
                    ProcessIdentity {
                        boot_id: o.boot_id,
                        pid_ns: o.pid_ns,
                        pid: l.pid,
                        start_ticks: o.start_ticks,
                    }
                    .tag(),
                )
            })
            .collect())
    }

    fn is_leftover(f: &Staged, live: &HashSet<String>) -> bool {
        let me = ProcessIdentity::current().tag();
        match &f.owner {
            Some(o) if *o == me => false,
            Some(o) if ProcessIdentity::tag_is_gone(o) => true,
            Some(o) if live.contains(o) => false,
            _ => f
                .modified
                .elapsed()
                .is_ok_and(|age| age > Duration::from_secs(LOCK_STALE_SECS as u64)),
        }
    }

    /// The staging files that interrupted runs left behind (see the module documentation).
    pub fn leftover_staging(&self) -> Result<Leftovers> {
        let live = self.live_owner_tags()?;
        let mut l = Leftovers::default();
        for f in self.staged_files()? {
            if Self::is_leftover(&f, &live) {
                l.count += 1;
                l.bytes += f.size;
            }
        }
        Ok(l)
    }

    /// Removes staging files whose owner is provably gone (safe at any time).
    pub fn collect_dead_staging(&self) -> Result<Leftovers> {
        let mut l = Leftovers::default();
        if self.backend().append_only() {
            return Ok(l);
        }
        for f in self.staged_files()? {
            if f.owner.as_deref().is_some_and(ProcessIdentity::tag_is_gone)
                && std::fs::remove_file(&f.path).is_ok()
            {
                l.count += 1;
                l.bytes += f.size;
            }
        }
        Ok(l)
    }

    /// Removes every staging file written before `locked_at` that is not this process's, and
    /// on services that write through `tmp/` (SFTP, WebDAV) every object there. Only for a
    /// holder of the exclusive lock: no other live writer can own one of them (a writer whose
    /// lock went stale aborts before it publishes anything).
    pub fn collect_staging_under_exclusive_lock(&self, locked_at: SystemTime) -> Result<Leftovers> {
        let me = ProcessIdentity::current().tag();
        let mut l = Leftovers::default();
        if self.backend().staging_dir().is_none() {
            let mut objects = Vec::new();
            self.backend().list_each("tmp", &mut |o| {
                objects.push(o);
                Ok(())
            })?;
            for o in objects {
                if self.backend().delete(&o.path).is_ok() {
                    l.count += 1;
                    l.bytes += o.size;
                }
            }
            return Ok(l);
        }
        for f in self.staged_files()? {
            if f.owner.as_deref() != Some(me.as_str())
                && f.modified < locked_at
                && std::fs::remove_file(&f.path).is_ok()
            {
                l.count += 1;
                l.bytes += f.size;
            }
        }
        Ok(l)
    }
}
