//! Repository locks (`format-spec/09-locks.md`).
//!
//! A lock is an object in `locks/`. Shared locks coexist; an exclusive lock excludes every
//! other lock. Taking a lock writes it and then lists `locks/` again, so two processes racing
//! for conflicting locks cannot both win. A held lock is refreshed every five minutes by
//! writing a new object and deleting the old one. A lock is stale (ignored, and removed by
//! `vault unlock`) when it was not refreshed for 30 minutes, or at once when its owner is
//! provably gone: same kernel boot and PID namespace, and no process with its PID and start
//! time ([`super::process`]); a reused PID does not keep a dead owner's lock alive.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};

use crate::format::layout::{Dir, lock_path};
use crate::format::lock::{Lock, LockOwner, decode_lock, encode_lock};
use crate::format::time::Timestamp;
use crate::format::{KIND_LOCK, LOCK_REFRESH_SECS, LOCK_STALE_SECS};
use crate::id::LockId;
use crate::{Error, ObjectRef, Result};

use super::Repository;
use super::process::{Liveness, ProcessIdentity};

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Coexists with other shared locks (snapshot, restore, ls, check).
    Shared,
    /// Excludes every other lock (prune, forget, key removal).
    Exclusive,
}

/// A lock object as found in the repository.
#[derive(Clone, Debug)]
pub struct LockEntry {
    /// The object's id.
    pub id: LockId,
    /// Its content, or why it could not be read.
    pub lock: std::result::Result<Lock, String>,
}

impl LockEntry {
    /// Whether the lock's owner is provably gone (see the module documentation). Version-1
    /// locks, which record only a PID, count as gone when their host is this one and no
    /// process has that PID.
    pub fn owner_gone(&self, this_host: &str) -> bool {
        match &self.lock {
            Ok(Lock {
                owner: Some(o),
                pid,
                ..
            }) => {
                ProcessIdentity {
                    boot_id: o.boot_id.clone(),
                    pid_ns: o.pid_ns,
                    pid: *pid,
                    start_ticks: o.start_ticks,
                }
                .liveness()
                    == Liveness::Gone
            }
            Ok(l) => l.hostname == this_host && !process_alive(l.pid),
            Err(_) => false,
        }
    }

    /// Whether this lock no longer counts: not refreshed for 30 minutes, or its owner is
    /// provably gone. Unreadable locks are never stale (they might be exclusive).
    pub fn is_stale(&self, now: Timestamp, this_host: &str) -> bool {
        match &self.lock {
            Ok(l) => now.secs - l.refreshed.secs > LOCK_STALE_SECS || self.owner_gone(this_host),
            Err(_) => false,
        }
    }

    /// One line describing the holder, for messages.
    pub fn describe(&self, now: Timestamp) -> String {
        match &self.lock {
            Ok(l) => format!(
                "{} lock by {}@{} pid {} (taken {}s ago, refreshed {}s ago)",
                if l.exclusive { "exclusive" } else { "shared" },
                l.username,
                l.hostname,
                l.pid,
                now.secs - l.created.secs,
                now.secs - l.refreshed.secs
            ),
            Err(e) => format!("unreadable lock {} ({e})", self.id.short()),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

struct Held {
    repo: Repository,
    current: Mutex<(LockId, Lock)>,
    last_refresh: Mutex<Instant>,
}

/// A held lock; released (its object deleted) on drop.
pub struct LockGuard {
    held: Arc<Held>,
    acquired: std::time::SystemTime,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LockGuard({:?})",
            self.held.current.lock().map(|c| c.0).ok()
        )
    }
}

impl Repository {
    /// Every lock object, decoded where possible.
    pub fn list_locks(&self) -> Result<Vec<LockEntry>> {
        let ids: Vec<LockId> = self
            .backend()
            .list(Dir::Locks.name())?
            .iter()
            .filter_map(|o| Dir::Locks.name_of(&o.path).map(LockId))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let r = self.read_object_versioned(Dir::Locks, KIND_LOCK, &id.0, ObjectRef::Lock(id));
            let lock = match r {
                Ok((version, plain)) => decode_lock(&plain, version).map_err(|e| e.0),
                // Deleted between list and read: it was released.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
                Err(e) => Err(e.to_string()),
            };
            out.push(LockEntry { id, lock });
        }
        Ok(out)
    }

    fn conflicts(&self, kind: LockKind, own: Option<LockId>) -> Result<Option<String>> {
        let now = Timestamp::now();
        let host = crate::source::owner::hostname();
        for l in self.list_locks()? {
            if Some(l.id) == own || l.is_stale(now, &host) {
                continue;
            }
            let other_exclusive = l.lock.as_ref().map(|x| x.exclusive).unwrap_or(true);
            if kind == LockKind::Exclusive || other_exclusive {
                return Ok(Some(l.describe(now)));
            }
        }
        Ok(None)
    }

    /// Takes a lock, waiting up to `wait` for conflicting locks to go away.
    pub fn lock(&self, kind: LockKind, wait: Option<Duration>) -> Result<LockGuard> {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut delay = Duration::from_millis(200);
        let mut said = false;
        loop {
            match self.try_lock(kind)? {
                Ok(g) => return Ok(g),
                Err(holder) => match deadline {
                    Some(d) if Instant::now() < d => {
                        if !said {
                            // Said once, at the default level: a command that seems to hang
                            // must say why.
                            tracing::warn!(%holder, "waiting for lock");
                            said = true;
                        }
                        std::thread::sleep(delay.min(d.saturating_duration_since(Instant::now())));
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    _ => return Err(Error::Locked { holder }),
                },
            }
        }
    }

    fn try_lock(&self, kind: LockKind) -> Result<std::result::Result<LockGuard, String>> {
        if let Some(holder) = self.conflicts(kind, None)? {
            return Ok(Err(holder));
        }
        let now = Timestamp::now();
        let me = ProcessIdentity::current();
        let lock = Lock {
            exclusive: kind == LockKind::Exclusive,
            hostname: crate::source::owner::hostname(),
            username: crate::source::owner::current_username(),
            pid: me.pid,
            uid: rustix::process::getuid().as_raw(),
            created: now,
            refreshed: now,
            owner: Some(LockOwner {
                boot_id: me.boot_id.clone(),
                pid_ns: me.pid_ns,
                start_ticks: me.start_ticks,
            }),
        };
        let id = LockId(self.write_object(Dir::Locks, KIND_LOCK, &encode_lock(&lock))?);
        // Check again now that ours is visible: of two racing writers at least one sees the other.
        if let Some(holder) = self.conflicts(kind, Some(id))? {
            // Append-only: ours stays, and counts as gone once this process has exited.
            if !self.backend().append_only() {
                let _ = self.backend().delete(&lock_path(&id));
            }
            return Ok(Err(holder));
        }
        let held = Arc::new(Held {
            repo: self.clone(),
            current: Mutex::new((id, lock)),
            last_refresh: Mutex::new(Instant::now()),
        });
        let (tx, rx) = bounded::<()>(1);
        let h2 = held.clone();
        let refresher = std::thread::Builder::new()
            .name("vault-lock-refresh".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(Duration::from_secs(LOCK_REFRESH_SECS))
                {
                    if let Err(e) = h2.refresh() {
                        tracing::warn!(error = %e, "could not refresh the repository lock");
                    }
                }
            })
            .map_err(|e| Error::io("lock refresh thread", e))?;
        Ok(Ok(LockGuard {
            held,
            acquired: std::time::SystemTime::now(),
            stop: Some(tx),
            refresher: Some(refresher),
        }))
    }

    /// Removes stale locks (or every lock with `all`); returns how many were removed.
    pub fn remove_locks(&self, all: bool) -> Result<usize> {
        let now = Timestamp::now();
        let host = crate::source::owner::hostname();
        let mut n = 0;
        for l in self.list_locks()? {
            let unreadable = l.lock.is_err();
            if all || unreadable || l.is_stale(now, &host) {
                match self.backend().delete(&lock_path(&l.id)) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }
}

impl Held {
    fn refresh(&self) -> Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut lock = cur.1.clone();
        lock.refreshed = Timestamp::now();
        let new_id = LockId(
            self.repo
                .write_object(Dir::Locks, KIND_LOCK, &encode_lock(&lock))?,
        );
        let old = cur.0;
        *cur = (new_id, lock);
        drop(cur);
        *self.last_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if self.repo.backend().append_only() {
            return Ok(()); // the old object goes stale on its own
        }
        if let Err(e) = self.repo.backend().delete(&lock_path(&old))
            && e.kind() != crate::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "could not delete the previous lock object");
        }
        Ok(())
    }
}

impl LockGuard {
    /// When the lock was taken (after conflicting locks were checked).
    pub fn acquired_at(&self) -> std::time::SystemTime {
        self.acquired
    }

    /// Fails if the lock may have been lost: not refreshed for longer than the stale time (the
    /// process was suspended, or the backend unreachable), or removed by someone else.
    pub fn check(&self) -> Result<()> {
        let age = self
            .held
            .last_refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if age > Duration::from_secs(LOCK_STALE_SECS as u64 - 60) {
            return Err(Error::Locked {
                holder: "our own lock went stale (not refreshed for 29 minutes); aborting".into(),
            });
        }
        let id = self
            .held
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if !self.held.repo.backend().exists(&lock_path(&id))? {
            return Err(Error::Locked {
                holder: "our lock was removed by another process (vault unlock?); aborting".into(),
            });
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let id = self
            .held
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if self.held.repo.backend().append_only() {
            return; // stale as soon as this process has exited (or 30 minutes after its last refresh)
        }
        if let Err(e) = self.held.repo.backend().delete(&lock_path(&id))
            && e.kind() != crate::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "could not remove the repository lock");
        }
    }
}
