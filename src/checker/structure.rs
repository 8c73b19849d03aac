//! Structural checks of every object kind in the layout: keys, snapshots, holds, locks, index
//! objects against the pack listing, and what is left in `tmp/`.
//!
//! Order matters when other processes write meanwhile (`check` runs beside snapshots):
//! snapshots are listed first, then the index is loaded and its objects listed, then packs
//! are listed. A writer
//! stores packs, then the index objects naming them, then the snapshot; so every snapshot
//! listed has its index objects already written, and every pack they name is listed. Work in
//! progress (packs not indexed yet, staging files) is only ever a note, never damage.

use rayon::prelude::*;

use crate::crypto::storage_hash;
use crate::format::key::decode_key_file;
use crate::format::layout::Dir;
use crate::format::pack::PackEntry;
use crate::format::snapshot::Snapshot;
use crate::format::time::Timestamp;
use crate::id::{KeyId, PackId, SnapshotId};
use crate::repo::cache::scratch::ScratchMap;
use crate::{ObjectRef, Result};

use super::Ctx;

/// What the backend holds and what the index says about it, on disk (all three grow with
/// the repository).
pub(crate) struct PackSets {
    /// Packs present in the backend → their size (u64 LE).
    pub in_backend: ScratchMap,
    /// Packs the index objects name → the size they record (u64 LE).
    pub indexed: ScratchMap,
    /// Packs → how many blobs the (merged) index serves from them (u64 LE).
    pub counts: ScratchMap,
}

fn u64_of(v: Option<Vec<u8>>) -> Option<u64> {
    v.and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
}

/// Counts, per pack, the blobs the index serves from it: one pass over the on-disk index in
/// key order, summed in memory for at most `FLUSH` packs at a time and added into `counts`.
/// Returns how many blobs the index serves (each distinct blob once).
fn count_blobs_per_pack(ctx: &Ctx<'_>, counts: &ScratchMap) -> Result<u64> {
    const FLUSH: usize = 1 << 16;
    let mut acc: std::collections::HashMap<PackId, u64> = std::collections::HashMap::new();
    let flush = |acc: &mut std::collections::HashMap<PackId, u64>| -> Result<()> {
        for (p, n) in acc.drain() {
            let prev = u64_of(counts.get(&p.0)?).unwrap_or(0);
            counts.put(&p.0, &(prev + n).to_le_bytes())?;
        }
        Ok(())
    };
    let mut total = 0u64;
    ctx.repo.index()?.for_each_blob(|_, _, loc| {
        total += 1;
        *acc.entry(loc.pack).or_default() += 1;
        if acc.len() >= FLUSH {
            flush(&mut acc)?;
        }
        Ok(())
    })?;
    flush(&mut acc)?;
    Ok(total)
}

/// The WAL archive: counted; with --verify-data every file is opened, its name checked and
/// its content decoded to its recorded length (gaps are `vault wal check`'s, which knows the
/// segment size).
pub(crate) fn check_wal(ctx: &Ctx<'_>, verify: bool) -> Result<()> {
    let files = ctx.repo.wal_list()?;
    ctx.stat(|s| s.wal_files = files.len() as u64);
    if !verify {
        return Ok(());
    }
    for (name, _) in files {
        match ctx.repo.wal_fetch(&name) {
            Ok(Some(_)) => ctx.stat(|s| s.wal_verified += 1),
            Ok(None) => {}
            Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                ctx.error(&ObjectRef::Wal(name), reason(&e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Objects this run opened only with a retired epoch's key: re-encryption is not finished.
pub(crate) fn check_epochs(ctx: &Ctx<'_>) {
    let n = ctx.repo.retired_opens();
    if n > 0 {
        ctx.note(
            &ObjectRef::Path("keys".into()),
            format!(
                "{n} object(s) or blob(s) read by this check are still sealed under a retired key \
                 epoch ({}); run `vault key reencrypt` to re-seal them under epoch {} and retire \
                 the old keys",
                ctx.repo
                    .master_key()
                    .retired_epochs()
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                ctx.repo.master_key().epoch()
            ),
        );
    }
}

pub(crate) fn check_keys(ctx: &Ctx<'_>) -> Result<()> {
    let mut epochs = std::collections::BTreeMap::<u64, Vec<String>>::new();
    for f in ctx.repo.backend().list(Dir::Keys.name())? {
        let Some(raw) = Dir::Keys.name_of(&f.path) else {
            ctx.note(
                &ObjectRef::Path(f.path.clone()),
                "not a vault object name; ignored",
            );
            continue;
        };
        let id = KeyId(raw);
        let object = ObjectRef::Key(id);
        let bytes = match ctx.repo.backend().read(&f.path) {
            Ok(b) => b,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        ctx.stat(|s| s.keys += 1);
        if storage_hash(&bytes) != raw {
            ctx.error(
                &object,
                "content does not match its name (damaged, truncated or renamed)",
            );
            continue;
        }
        match decode_key_file(&bytes) {
            Err(e) => ctx.error(&object, format!("does not decode: {e:?}")),
            Ok(kf) => match kf.body {
                crate::format::key::KeyBody::Ring { epoch, .. } => {
                    epochs.entry(epoch).or_default().push(id.short());
                }
                crate::format::key::KeyBody::Master(_) => ctx.note(
                    &object,
                    format!(
                        "a version-{} key file (no key ring): it cannot take part in key \
                         rotation; its owner runs `vault key upgrade`",
                        kf.version()
                    ),
                ),
            },
        }
    }
    if epochs.len() > 1 {
        let (newest, _) = epochs.last_key_value().expect("invariant: two entries");
        let newest = *newest;
        for (epoch, ids) in &epochs {
            if *epoch == newest {
                continue;
            }
            for id in ids {
                ctx.error(
                    &ObjectRef::Path(format!("keys/{id}")),
                    format!(
                        "key at epoch {epoch} while others are at epoch {newest}: a key rotation \
                         was interrupted and this password cannot read what is written under \
                         the newer epoch; run `vault key rotate` to finish it"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Loads every snapshot; damaged ones are errors. Returns the readable ones.
pub(crate) fn check_snapshot_objects(ctx: &Ctx<'_>) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (good, bad) = ctx.repo.list_snapshots()?;
    for (id, e) in bad {
        ctx.error(
            &ObjectRef::Snapshot(id),
            format!("{}; `vault forget {}` removes it", reason(&e), id.short()),
        );
    }
    ctx.stat(|s| s.snapshots = good.len() as u64);
    Ok(good)
}

/// The reason part of a damage error (the object is named separately).
pub(crate) fn reason(e: &crate::Error) -> String {
    match e {
        crate::Error::Corrupt { reason, .. } => format!("damaged: {reason}"),
        crate::Error::NotFound { .. } => "missing".into(),
        other => other.to_string(),
    }
}

pub(crate) fn check_holds(ctx: &Ctx<'_>, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    let (holds, bad) = ctx.repo.list_holds()?;
    ctx.stat(|s| s.holds = (holds.len() + bad.len()) as u64);
    for (id, e) in bad {
        ctx.error(
            &ObjectRef::Hold(id),
            format!(
                "{}; while it cannot be read no snapshot is removed; `vault repair holds` removes it",
                reason(&e)
            ),
        );
    }
    for (id, h) in holds {
        if !snapshots.iter().any(|(s, _)| *s == h.snapshot) {
            ctx.note(
                &ObjectRef::Hold(id),
                format!(
                    "holds snapshot {}, which is not in the repository (or cannot be read)",
                    h.snapshot.short()
                ),
            );
        }
    }
    Ok(())
}

/// The audit trail: every record readable and every chain unbroken (deleting, altering,
/// replacing or reordering a record is reported).
pub(crate) fn check_audit(ctx: &Ctx<'_>) -> Result<()> {
    use crate::repo::audit::{chain_links, verify_chains};
    // The local head first: it only ever names a record written before it, so every record
    // it can name exists by the time the records are listed (a command finishing meanwhile
    // is not mistaken for a deletion).
    let head = ctx.repo.audit_head();
    let links = chain_links(ctx.repo)?;
    let n: usize = links.chains.values().map(|c| c.len()).sum::<usize>()
        + links.forks.len()
        + links.damaged.len();
    ctx.stat(|s| s.audit_records = n as u64);
    for p in verify_chains(&links, head.as_ref()) {
        ctx.error(&p.object, format!("audit trail: {}", p.message));
    }
    Ok(())
}

pub(crate) fn check_locks(ctx: &Ctx<'_>) -> Result<()> {
    let now = Timestamp::now();
    let host = crate::source::owner::hostname();
    for l in ctx.repo.list_locks()? {
        let object = ObjectRef::Lock(l.id);
        match &l.lock {
            Err(e) => ctx.error(
                &object,
                format!("unreadable ({e}); `vault unlock` removes it"),
            ),
            Ok(_) if l.is_stale(now, &host) => ctx.note(
                &object,
                format!("stale: {}; `vault unlock` removes it", l.describe(now)),
            ),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Staging files in `tmp/` left by interrupted runs (their owners are gone or have no lock).
pub(crate) fn check_tmp(ctx: &Ctx<'_>) -> Result<()> {
    let left = ctx.repo.leftover_staging()?;
    if left.count > 0 {
        ctx.note(
            &ObjectRef::Path("tmp/".into()),
            format!(
                "{} files ({} bytes) left by interrupted runs; `vault prune` removes them",
                left.count, left.bytes
            ),
        );
    }
    ctx.stat(|s| {
        s.tmp_files = left.count;
        s.tmp_bytes = left.bytes;
    });
    Ok(())
}

/// Loads the index, reads every index object and compares it with the pack listing.
pub(crate) fn check_index(ctx: &Ctx<'_>) -> Result<PackSets> {
    // Index objects are listed before the index is (re)loaded, so that every entry counted
    // below is in the merged index (duplicates are the difference); and before packs are
    // listed: a snapshot writes its packs before its index, so every pack a listed index
    // names is in the pack listing that follows.
    let ids = ctx.repo.list_index_ids()?;
    // The index is (re)loaded after the snapshots were listed (see the module documentation).
    ctx.repo.reload_index();
    let index = ctx.repo.index()?;
    for (id, e) in index.damaged_indexes() {
        tracing::debug!(index = %id, error = %e, "index object skipped when loading");
    }
    let temp = ctx.repo.temp_dir();
    let sets = PackSets {
        in_backend: ScratchMap::new(temp)?,
        indexed: ScratchMap::new(temp)?,
        counts: ScratchMap::new(temp)?,
    };
    ctx.repo.backend().list_each(Dir::Data.name(), &mut |o| {
        match Dir::Data.name_of(&o.path) {
            Some(raw) if o.path == Dir::Data.path(&hex::encode(raw)) => {
                sets.in_backend.put(&raw, &o.size.to_le_bytes())?;
            }
            _ => ctx.note(
                &ObjectRef::Path(o.path.clone()),
                "not a vault pack name; ignored",
            ),
        }
        Ok(())
    })?;
    ctx.progress.phase(
        "index",
        Some(ids.len() as u64),
        crate::progress::Unit::Items,
    );
    // Index objects are read in parallel; the pack sets are on disk.
    ids.par_iter().try_for_each(|id| -> Result<()> {
        ctx.progress.advance(1);
        let object = ObjectRef::Index(*id);
        let idx = match ctx.repo.read_index(id) {
            Ok(i) => i,
            Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                ctx.error(
                    &object,
                    format!("{}; `vault repair index` rebuilds the index", reason(&e)),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        ctx.stat(|s| s.index_objects += 1);
        for p in &idx.packs {
            let pack = ObjectRef::Pack(p.id);
            if let Some(prev) = u64_of(sets.indexed.get(&p.id.0)?)
                && prev != p.size
            {
                ctx.error(
                    &pack,
                    format!(
                        "index objects disagree about its size ({prev} and {})",
                        p.size
                    ),
                );
            }
            sets.indexed.put(&p.id.0, &p.size.to_le_bytes())?;
            let stored = u64_of(sets.in_backend.get(&p.id.0)?);
            match stored {
                None => {
                    ctx.error(&pack, format!("missing (named by index {})", id.short()));
                    ctx.bad_pack(p.id);
                    for b in &p.blobs {
                        ctx.bad_blob(b.blob_type, b.id);
                    }
                }
                Some(size) if size != p.size => {
                    ctx.error(
                        &pack,
                        format!(
                            "has {size} bytes, index {} says {} (truncated or replaced)",
                            id.short(),
                            p.size
                        ),
                    );
                    ctx.bad_pack(p.id);
                    for b in p.blobs.iter().filter(|b| b.end() > size) {
                        ctx.bad_blob(b.blob_type, b.id);
                    }
                }
                Some(_) => {}
            }
            ctx.stat(|s| s.index_entries += p.blobs.len() as u64);
        }
        Ok(())
    })?;
    ctx.progress.finish_phase();
    // Packs no index names: work in progress of a running snapshot, or left by a killed one.
    let mut unindexed = (0u64, 0u64);
    let mut packs = 0u64;
    sets.in_backend.for_each(|raw, v| {
        packs += 1;
        if sets.indexed.get(raw)?.is_none() {
            unindexed.0 += 1;
            unindexed.1 += v.try_into().map(u64::from_le_bytes).unwrap_or(0);
        }
        Ok(())
    })?;
    ctx.stat(|s| s.packs = packs);
    let served = count_blobs_per_pack(ctx, &sets.counts)?;
    // Every indexed blob is served once; the other entries are extra copies.
    let entries = ctx
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .index_entries;
    let duplicates = entries.saturating_sub(served);
    if duplicates > 0 {
        ctx.note(
            &ObjectRef::Path("index/".into()),
            format!("{duplicates} blobs are stored more than once (harmless; `prune` removes the copies)"),
        );
    }
    if unindexed.0 > 0 {
        ctx.note(
            &ObjectRef::Path("data/".into()),
            format!(
                "{} packs ({} bytes) are not named by any index: a snapshot in progress, or left by \
                 an interrupted one (the next snapshot on that host or `vault repair index` indexes \
                 them, `vault prune` deletes them)",
                unindexed.0, unindexed.1
            ),
        );
    }
    Ok(sets)
}

/// Calls `f` for every pack that is both indexed and present, in id order, with its size and
/// how many blobs the index serves from it.
pub(crate) fn for_each_indexed_pack(
    sets: &PackSets,
    mut f: impl FnMut(PackId, u64, u64) -> Result<()>,
) -> Result<()> {
    sets.indexed.for_each(|k, _| {
        let Some(size) = u64_of(sets.in_backend.get(k)?) else {
            return Ok(());
        };
        let counted = u64_of(sets.counts.get(k)?).unwrap_or(0);
        f(PackId(*k), size, counted)
    })
}

/// Compares a pack's header with the index: every header entry the index places in this pack
/// must agree with it, and the index must not place more blobs in the pack than the header has.
pub(crate) fn compare_with_index(
    ctx: &Ctx<'_>,
    pack: PackId,
    entries: &[PackEntry],
    counted: u64,
) -> Result<()> {
    let index = ctx.repo.index()?;
    let object = ObjectRef::Pack(pack);
    let mut here = 0u64;
    let mut unindexed = 0u64;
    for e in entries {
        match index.get(e.blob_type, &e.id)? {
            Some(loc) if loc.pack == pack => {
                here += 1;
                if !loc.matches(e) {
                    ctx.error(
                        &object,
                        format!(
                            "header and index disagree about {} blob {}",
                            e.blob_type, e.id
                        ),
                    );
                }
            }
            Some(_) => {} // a duplicate: the index serves another copy
            None => unindexed += 1,
        }
    }
    if counted > here {
        ctx.error(
            &object,
            format!("the index places {counted} blobs in it but its header agrees on only {here}"),
        );
    }
    if unindexed > 0 {
        ctx.note(
            &object,
            format!("holds {unindexed} blobs no index names (`repair index` adds them)"),
        );
    }
    Ok(())
}
