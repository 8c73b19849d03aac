//! Key rotation and re-encryption (`format-spec/04-keys-and-encryption.md` 4.6–4.7).
//!
//! * [`rotate`] starts a new key epoch: a fresh encryption key, the old ones kept in every key
//!   file's ring so older objects stay readable. It rewrites every key file's ring with the
//!   ring authority, so no other password is needed. Killed halfway, key files sit at two
//!   epochs; running it again finishes the same rotation instead of starting another.
//! * [`reencrypt`] re-seals every object and pack still sealed under a retired epoch (same
//!   names, same layout), then rewrites every key file without the retired keys: from then on
//!   an old key file (and its password) opens nothing. Every object is replaced atomically
//!   and both epochs open until the last step, so a kill at any point leaves a readable
//!   repository and running it again continues where it stopped.
//!
//! Both need an exclusive lock and a full key; the caller takes the lock.

use rayon::prelude::*;

use crate::crypto::MasterKey;
use crate::format::layout::{CONFIG_PATH, Dir};
use crate::format::{KIND_AUDIT, KIND_CONFIG, KIND_HOLD, KIND_INDEX, KIND_LOCK, KIND_SNAPSHOT};
use crate::id::{AuditId, HoldId, IndexId, KeyId, LockId, PackId, SnapshotId};
use crate::progress::{Progress, Unit};
use crate::repo::Repository;
use crate::repo::keys::{RingView, rewrite_ring, ring_views};
use crate::repo::reseal::Resealed;
use crate::{Error, ObjectRef, Result};

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// The epoch before.
    pub from_epoch: u64,
    /// The epoch now current.
    pub to_epoch: u64,
    /// Key files rewritten: (old id, new id).
    pub rewritten: Vec<(KeyId, KeyId)>,
    /// True when an interrupted rotation was finished instead of a new one started.
    pub resumed: bool,
    /// The new id of the key file in use.
    pub current_key: KeyId,
}

/// Starts a new key epoch, or finishes an interrupted rotation. Returns the new key ring
/// (open the repository again with [`Repository::with_key`]) and a report.
pub fn rotate(repo: &Repository) -> Result<(MasterKey, RotateReport)> {
    let key = repo.master_key();
    if !key.has_authority() {
        return Err(Error::InvalidInput(
            "the key in use is restricted: only a full key can rotate".into(),
        ));
    }
    let views = ring_views(repo.backend(), key)?;
    refuse_unusable(&views)?;
    let newest = views
        .iter()
        .filter_map(|v| v.ring.as_ref().ok())
        .max_by_key(|k| k.epoch())
        .cloned()
        .expect("invariant: refuse_unusable saw at least the key in use");
    let lagging = views
        .iter()
        .any(|v| v.ring.as_ref().is_ok_and(|k| k.epoch() != newest.epoch()));
    let (target, resumed) = if lagging || newest.epoch() > key.epoch() {
        (newest, true)
    } else {
        (key.rotated(key.epoch() + 1)?, false)
    };
    // A lagging file whose salt (hence password part) also sits at the target epoch is the
    // left-over of a rewrite killed between writing the new file and deleting the old one.
    let mut views = views;
    if resumed {
        let done: Vec<Vec<u8>> = views
            .iter()
            .filter(|v| v.ring.as_ref().is_ok_and(|k| k.epoch() == target.epoch()))
            .map(|v| v.file.salt.clone())
            .collect();
        let (leftover, keep): (Vec<_>, Vec<_>) = views.into_iter().partition(|v| {
            v.ring.as_ref().is_ok_and(|k| k.epoch() != target.epoch())
                && done.contains(&v.file.salt)
        });
        for v in leftover {
            repo.backend()
                .delete(&crate::format::layout::key_path(&v.id))?;
        }
        views = keep;
    }
    let (rewritten, current_key) = rewrite_all(repo, &views, &target, |k| {
        k.epoch() != target.epoch() || !resumed
    })?;
    // Write-only keys now hold only the new epoch's shared key: the config they must read is
    // re-sealed with it at once (everything else waits for `reencrypt`).
    repo.with_key(target.clone())?.reseal_config_shared()?;
    Ok((
        target.clone(),
        RotateReport {
            from_epoch: key.epoch(),
            to_epoch: target.epoch(),
            rewritten,
            resumed,
            current_key,
        },
    ))
}

/// Key files that cannot take part: legacy ones (no ring) and rings this authority does not
/// open. Rotation would leave them behind, unable to read anything written afterwards.
fn refuse_unusable(views: &[RingView]) -> Result<()> {
    let bad: Vec<String> = views
        .iter()
        .filter_map(|v| {
            v.ring
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", v.id.short()))
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "these key files cannot receive a new key ring: {}. A version-1/2 key is upgraded by \
         its owner with `vault key upgrade`, or replaced: `vault key add` a new password for \
         its owner, then `vault key remove ID`; remove damaged or foreign key files with \
         `vault key remove ID`",
        bad.join("; ")
    )))
}

/// Rewrites the ring of every key file for which `needs` says so, the key in use last (so
/// that an interruption is seen, and finished, by the same password). Returns the pairs and
/// the new id of the key in use.
fn rewrite_all(
    repo: &Repository,
    views: &[RingView],
    target: &MasterKey,
    needs: impl Fn(&MasterKey) -> bool,
) -> Result<(Vec<(KeyId, KeyId)>, KeyId)> {
    let mut done = Vec::new();
    let mut current = repo.key_id();
    let mut order: Vec<&RingView> = views.iter().collect();
    order.sort_by_key(|v| v.id == repo.key_id());
    for v in order {
        let Ok(k) = &v.ring else { continue };
        if !needs(k) {
            continue;
        }
        let new = rewrite_ring(repo.backend(), v, target)?;
        if v.id == repo.key_id() {
            current = new;
        }
        done.push((v.id, new));
    }
    Ok((done, current))
}

/// What [`reencrypt`] did.
#[derive(Debug, Clone, Default)]
pub struct ReencryptReport {
    /// Objects examined (config, index, snapshots, holds, audit, locks, packs).
    pub objects: u64,
    /// Objects re-sealed by this run.
    pub resealed: u64,
    /// Bytes of the re-sealed objects.
    pub bytes: u64,
    /// Packs written by write-only keys, repacked under the current epoch.
    pub writer_packs: u64,
    /// Objects that open under no key of the ring (damaged): retirement did not happen.
    pub damaged: Vec<String>,
    /// Epochs whose keys were removed from every key file.
    pub retired: Vec<u64>,
    /// Key files rewritten without the retired keys: (old id, new id).
    pub rewritten: Vec<(KeyId, KeyId)>,
    /// The new id of the key file in use.
    pub current_key: KeyId,
}

/// Re-seals everything still sealed under a retired epoch and then retires those epochs in
/// every key file. Safe to interrupt and to run again.
pub fn reencrypt(
    repo: &Repository,
    lock: &crate::repo::lock::LockGuard,
    progress: &dyn Progress,
) -> Result<ReencryptReport> {
    let key = repo.master_key();
    if !key.has_authority() {
        return Err(Error::InvalidInput(
            "the key in use is restricted: only a full key can re-encrypt".into(),
        ));
    }
    let views = ring_views(repo.backend(), key)?;
    refuse_unusable(&views)?;
    if let Some(v) = views
        .iter()
        .find(|v| v.ring.as_ref().is_ok_and(|k| k.epoch() != key.epoch()))
    {
        return Err(Error::InvalidInput(format!(
            "key {} is at another epoch than the key in use: a rotation was interrupted; run \
             `vault key rotate` to finish it first",
            v.id.short()
        )));
    }
    let mut report = ReencryptReport {
        current_key: repo.key_id(),
        ..Default::default()
    };
    let mut retired: Vec<u64> = views
        .iter()
        .filter_map(|v| v.ring.as_ref().ok())
        .flat_map(|k| k.retired_epochs())
        .collect();
    retired.sort_unstable();
    retired.dedup();
    // Objects sealed to the reader (by write-only keys) are re-sealed too: the reader
    // secret belongs to an epoch like every other key.
    reseal_all(repo, progress, &mut report)?;
    repo.clear_tree_cache();
    if !report.damaged.is_empty() {
        return Ok(report);
    }
    if report.writer_packs > 0 {
        // Same names cannot work for them (the header shrinks): prune's repacking writes
        // their blobs into ordinary packs, re-sealed, and drops the old ones, crash-safe.
        let opts = crate::pruner::PruneOptions {
            gc: true,
            max_unused: crate::pruner::MaxUnused::WriterPacksOnly,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ..Default::default()
        };
        crate::pruner::prune(repo, lock, &opts, progress)?;
        repo.reload_index();
    }
    // Every object opens under the current epoch: the old keys can go.
    let fresh = key.retire_old();
    let (rewritten, current) =
        rewrite_all(repo, &views, &fresh, |k| !k.retired_epochs().is_empty())?;
    report.retired = retired;
    report.rewritten = rewritten;
    report.current_key = current;
    Ok(report)
}

/// One pass over every object kind; packs in parallel batches (memory: one pack per worker).
fn reseal_all(repo: &Repository, progress: &dyn Progress, r: &mut ReencryptReport) -> Result<()> {
    progress.phase("re-seal objects", None, Unit::Items);
    let mut one = |path: String, kind: u8, object: ObjectRef| -> Result<()> {
        let bytes = match repo.backend().read(&path) {
            Ok(b) => b,
            // Removed meanwhile (a lock released by its owner): nothing to re-seal.
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        r.objects += 1;
        progress.advance(1);
        match repo.reseal_envelope(kind, &bytes, &object) {
            Ok(Resealed::Current) | Ok(Resealed::Repack) => {}
            Ok(Resealed::Bytes { bytes, .. }) => {
                repo.backend().replace(&path, &bytes)?;
                r.resealed += 1;
                r.bytes += bytes.len() as u64;
            }
            Err(e) if e.is_damage() => r.damaged.push(format!("{object}: {e}")),
            Err(e) => return Err(e),
        }
        Ok(())
    };
    one(CONFIG_PATH.to_string(), KIND_CONFIG, ObjectRef::Config)?;
    type Named = fn([u8; 32]) -> ObjectRef;
    let kinds: [(Dir, u8, Named); 5] = [
        (Dir::Index, KIND_INDEX, |n| ObjectRef::Index(IndexId(n))),
        (Dir::Snapshots, KIND_SNAPSHOT, |n| {
            ObjectRef::Snapshot(SnapshotId(n))
        }),
        (Dir::Holds, KIND_HOLD, |n| ObjectRef::Hold(HoldId(n))),
        (Dir::Audit, KIND_AUDIT, |n| ObjectRef::Audit(AuditId(n))),
        (Dir::Locks, KIND_LOCK, |n| ObjectRef::Lock(LockId(n))),
    ];
    for (dir, kind, object) in kinds {
        // Names only (32 bytes each) are listed first: replacing while listing is avoided.
        for name in repo.list_names(dir)? {
            one(dir.path(&hex::encode(name)), kind, object(name))?;
        }
    }
    // The WAL archive: named by PostgreSQL's file names.
    for (name, _) in repo.wal_list()? {
        one(
            crate::repo::wal::wal_path(&name),
            crate::format::KIND_WAL,
            ObjectRef::Wal(name),
        )?;
    }
    progress.finish_phase();
    reseal_packs(repo, progress, r)
}

/// What re-sealing one pack came to.
enum PackOutcome {
    /// Gone meanwhile.
    Missing,
    /// Already under the current epoch.
    Current,
    /// Replaced, with this many bytes.
    Resealed(u64),
    /// Written by a write-only key: left for repacking.
    Repack,
    /// Damaged: named, nothing written.
    Damaged(String),
}

/// Packs in batches: each batch is re-sealed in parallel, then the next one is listed on.
fn reseal_packs(repo: &Repository, progress: &dyn Progress, r: &mut ReencryptReport) -> Result<()> {
    progress.phase("re-seal packs", None, Unit::Bytes);
    const BATCH: usize = 64;
    let mut batch: Vec<PackId> = Vec::with_capacity(BATCH);
    let one = |id: &PackId| -> Result<PackOutcome> {
        let path = crate::format::layout::pack_path(id);
        let damaged = |e: Error| PackOutcome::Damaged(format!("pack {id}: {e}"));
        let bytes = match repo.backend().read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(PackOutcome::Missing),
            Err(e) if e.is_damage() => return Ok(damaged(e)),
            Err(e) => return Err(e),
        };
        progress.advance(bytes.len() as u64);
        match repo.reseal_pack(id, &bytes) {
            Ok(Resealed::Current) => Ok(PackOutcome::Current),
            Ok(Resealed::Repack) => Ok(PackOutcome::Repack),
            Ok(Resealed::Bytes { bytes, .. }) => {
                repo.backend().replace(&path, &bytes)?;
                Ok(PackOutcome::Resealed(bytes.len() as u64))
            }
            Err(e) if e.is_damage() => Ok(damaged(e)),
            Err(e) => Err(e),
        }
    };
    let run = |batch: &[PackId], r: &mut ReencryptReport| -> Result<()> {
        let results: Vec<Result<PackOutcome>> = batch.par_iter().map(one).collect();
        for res in results {
            let outcome = res?;
            if !matches!(outcome, PackOutcome::Missing) {
                r.objects += 1;
            }
            match outcome {
                PackOutcome::Missing | PackOutcome::Current => {}
                PackOutcome::Resealed(b) => {
                    r.resealed += 1;
                    r.bytes += b;
                }
                PackOutcome::Repack => r.writer_packs += 1,
                PackOutcome::Damaged(why) => r.damaged.push(why),
            }
        }
        Ok(())
    };
    repo.backend().list_each(Dir::Data.name(), &mut |o| {
        if let Some(n) = Dir::Data.name_of(&o.path) {
            batch.push(PackId(n));
            if batch.len() == BATCH {
                run(&batch, r)?;
                batch.clear();
            }
        }
        Ok(())
    })?;
    run(&batch, r)?;
    progress.finish_phase();
    Ok(())
}
