//! Snapshot manifests and holds: saving, loading, listing and resolving user-supplied ids.

use std::sync::Mutex;

use crate::format::hold::{Hold, decode_hold, encode_hold};
use crate::format::layout::{Dir, hold_path, snapshot_path};
use crate::format::snapshot::{Snapshot, decode_snapshot, encode_snapshot};
use crate::format::{KIND_HOLD, KIND_SNAPSHOT};
use crate::id::{HoldId, SnapshotId};
use crate::{Error, ObjectRef, Result};

use super::Repository;

/// Readable snapshots (oldest first) and the ones that could not be read.
pub type SnapshotList = (Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>);

/// Readable holds and the hold objects that could not be read.
pub type HoldList = (Vec<(HoldId, Hold)>, Vec<(HoldId, Error)>);

/// Resolves a full id or a unique prefix of at least 4 hex characters among `ids`.
pub fn resolve_prefix(
    spec: &str,
    ids: impl Iterator<Item = [u8; 32]>,
    what: &'static str,
) -> Result<[u8; 32]> {
    let spec = spec.to_ascii_lowercase();
    if spec.len() < 4 || spec.len() > 64 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "{what} id {spec:?} must be 4 to 64 hex characters (or `latest` where allowed)"
        )));
    }
    let mut found: Option<[u8; 32]> = None;
    for id in ids {
        if hex::encode(id).starts_with(&spec) {
            if found.is_some_and(|f| f != id) {
                return Err(Error::InvalidInput(format!(
                    "{what} id prefix {spec:?} is ambiguous; give more characters"
                )));
            }
            found = Some(id);
        }
    }
    found.ok_or(Error::NoMatch { what, name: spec })
}

/// Runs `load` on every item on a few threads and collects the results (order not kept).
pub(crate) fn parallel_map<T: Send, U: Send>(
    items: Vec<T>,
    threads: usize,
    load: &(dyn Fn(T) -> U + Sync),
) -> Vec<U> {
    let queue = Mutex::new(items.into_iter());
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some(item) = next else { break };
                    let r = load(item);
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Loads each of `ids` on a few threads and hands it to `f`, in no particular order, keeping
/// none. Objects removed meanwhile are skipped; damaged (or unsupported) ones are passed as
/// errors; any other failure, or an error from `f`, stops the listing.
pub(crate) fn for_each_loaded<I: Copy + Send, T>(
    ids: Vec<I>,
    load: &(dyn Fn(&I) -> Result<T> + Sync),
    f: &(dyn Fn(I, Result<T>) -> Result<()> + Sync),
) -> Result<()> {
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    parallel_map(ids, 8, &|id| {
        if first_err
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        let r = match load(&id) {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return,
            Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => f(id, Err(e)),
            Err(e) => Err(e),
            Ok(v) => f(id, Ok(v)),
        };
        if let Err(e) = r {
            first_err
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Repository {
    /// Seals and writes a snapshot manifest; returns its id.
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<SnapshotId> {
        self.write_object(Dir::Snapshots, KIND_SNAPSHOT, &encode_snapshot(s))
            .map(SnapshotId)
    }

    /// Loads one snapshot manifest.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let object = ObjectRef::Snapshot(*id);
        let plain = self.read_object(Dir::Snapshots, KIND_SNAPSHOT, &id.0, object.clone())?;
        decode_snapshot(&plain).map_err(|e| Error::corrupt(object, e.0))
    }

    /// Ids of every snapshot object.
    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .list_names(Dir::Snapshots)?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    /// Loads every snapshot on a few threads and hands each to `f`, in no particular order,
    /// keeping none: for callers that need only some of them (memory then does not grow with
    /// the number of snapshots). Snapshots forgotten meanwhile are skipped; damaged ones are
    /// passed as errors; any other failure, or an error from `f`, stops the listing.
    pub fn for_each_snapshot(
        &self,
        f: &(dyn Fn(SnapshotId, Result<Snapshot>) -> Result<()> + Sync),
    ) -> Result<()> {
        for_each_loaded(self.list_snapshot_ids()?, &|id| self.load_snapshot(id), f)
    }

    /// Loads every snapshot, oldest first. Damaged ones are returned as errors in the second
    /// list so that listing still works on a damaged repository.
    pub fn list_snapshots(&self) -> Result<SnapshotList> {
        let ids = self.list_snapshot_ids()?;
        let results = parallel_map(ids, 8, &|id| (id, self.load_snapshot(&id)));
        let mut good = Vec::with_capacity(results.len());
        let mut bad = Vec::new();
        for (id, r) in results {
            match r {
                Ok(s) => good.push((id, s)),
                // Forgotten between listing and reading.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                    bad.push((id, e))
                }
                Err(e) => return Err(e),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolves a full id or unique prefix to a snapshot id (does not load it).
    pub fn resolve_snapshot_id(&self, spec: &str) -> Result<SnapshotId> {
        if spec.len() == 64
            && let Some(id) = SnapshotId::from_hex(spec)
        {
            return Ok(id);
        }
        let ids = self.list_snapshot_ids()?;
        resolve_prefix(spec, ids.iter().map(|i| i.0), "snapshot").map(SnapshotId)
    }

    /// Places a hold on a snapshot; returns the hold's id.
    pub fn add_hold(&self, h: &Hold) -> Result<HoldId> {
        self.write_object(Dir::Holds, KIND_HOLD, &encode_hold(h))
            .map(HoldId)
    }

    /// Loads one hold object.
    pub fn load_hold(&self, id: &HoldId) -> Result<Hold> {
        let object = ObjectRef::Hold(*id);
        let plain = self.read_object(Dir::Holds, KIND_HOLD, &id.0, object.clone())?;
        decode_hold(&plain).map_err(|e| Error::corrupt(object, e.0))
    }

    /// Every hold in the repository, and the hold objects that cannot be read (damaged or
    /// of an unknown version). Callers that remove snapshots must refuse to while any hold is
    /// unreadable: it might protect the snapshot (see `pruner`); listing still works.
    pub fn list_holds(&self) -> Result<HoldList> {
        let ids: Vec<HoldId> = self
            .list_names(Dir::Holds)?
            .into_iter()
            .map(HoldId)
            .collect();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in ids {
            match self.load_hold(&id) {
                Ok(h) => good.push((id, h)),
                // Released between listing and reading.
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                    bad.push((id, e))
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, bad))
    }

    /// Removes every hold on `snapshot`; returns how many were removed.
    pub fn release_holds(&self, snapshot: &SnapshotId) -> Result<usize> {
        let mut n = 0;
        for (id, h) in self.list_holds()?.0 {
            if h.snapshot == *snapshot {
                match self.backend().delete(&hold_path(&id)) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// Removes the hold objects that cannot be read; returns their ids.
    pub fn remove_damaged_holds(&self) -> Result<Vec<(HoldId, Error)>> {
        let (_, bad) = self.list_holds()?;
        for (id, _) in &bad {
            match self.backend().delete(&hold_path(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(bad)
    }

    /// Replaces snapshot `old` by `new` (tags changed, paths rewritten): writes `new`, moves
    /// every hold of `old` to it, then deletes the old holds and `old` itself. Each step leaves
    /// a valid repository: killed before the end, both snapshots exist and both are held,
    /// never neither. The caller holds an exclusive lock. Returns the new id.
    pub fn replace_snapshot(&self, old: &SnapshotId, new: &Snapshot) -> Result<SnapshotId> {
        let (holds, bad) = self.list_holds()?;
        if let Some((id, e)) = bad.first() {
            return Err(Error::Aborted(format!(
                "hold {} cannot be read ({e}): it might hold snapshot {}, which is not replaced; `vault repair holds` removes it",
                id.short(),
                old.short()
            )));
        }
        let new_id = self.save_snapshot(new)?;
        if new_id == *old {
            return Ok(new_id);
        }
        let mine: Vec<_> = holds
            .into_iter()
            .filter(|(_, h)| h.snapshot == *old)
            .collect();
        for (_, h) in &mine {
            self.add_hold(&Hold {
                snapshot: new_id,
                ..h.clone()
            })?;
        }
        for (id, _) in &mine {
            match self.backend().delete(&hold_path(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match self.delete_snapshot(old) {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(new_id)
    }

    /// Deletes a snapshot manifest (no garbage collection).
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend().delete(&snapshot_path(id))
    }
}

/// Which snapshots a command considers (`--host`, `--tag`, `--path`).
///
/// A snapshot matches when its host is one of `hosts` (if any are given), it carries every
/// tag of at least one of the `tags` groups (each group is a comma-separated list; if any
/// are given), and its paths include every one of `paths` (if any are given).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Accepted host names.
    pub hosts: Vec<String>,
    /// Tag groups: `"a,b"` requires both a and b; several groups are alternatives.
    pub tags: Vec<String>,
    /// Paths that must all be among the snapshot's paths (raw bytes).
    pub paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &crate::format::snapshot::Snapshot) -> bool {
        if !self.hosts.is_empty() && !self.hosts.contains(&s.hostname) {
            return false;
        }
        if !self.tags.is_empty()
            && !self.tags.iter().any(|group| {
                group
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .all(|t| s.tags.iter().any(|st| st == t))
            })
        {
            return false;
        }
        self.paths.iter().all(|p| {
            let mut end = p.len();
            while end > 1 && p[end - 1] == b'/' {
                end -= 1;
            }
            s.paths.iter().any(|sp| sp[..] == p[..end])
        })
    }
}

impl Repository {
    /// Resolves `latest` (newest matching snapshot, at or before `as_of` if given), a full id
    /// or a unique prefix.
    pub fn resolve_snapshot(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
        as_of: Option<crate::format::time::Timestamp>,
    ) -> Result<(SnapshotId, Snapshot)> {
        if spec != "latest" && as_of.is_some() {
            return Err(Error::InvalidInput(format!(
                "a point in time (--as-of) picks among snapshots and only goes with `latest`, \
                 not with the snapshot id {spec:?}"
            )));
        }
        if spec == "latest" {
            let (snaps, damaged) = self.list_snapshots()?;
            for (id, e) in &damaged {
                tracing::warn!(snapshot = %id, error = %e, "ignoring damaged snapshot");
            }
            return snaps
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s) && as_of.is_none_or(|t| s.time <= t))
                .ok_or(Error::NoMatch {
                    what: "snapshot",
                    name: match as_of {
                        Some(t) => format!("latest at or before {}", t.to_rfc3339()),
                        None => "latest".into(),
                    },
                });
        }
        let id = self.resolve_snapshot_id(spec)?;
        let snap = self.load_snapshot(&id)?;
        Ok((id, snap))
    }
}
