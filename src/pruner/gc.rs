//! Executing a garbage-collection plan in crash-safe order (`format-spec/11`, "Prune"):
//! repacked packs and their index objects first, then index objects for the packs kept as they
//! are (the last one superseding every old index object), then the old index objects, then the
//! packs. Every copied blob is authenticated and re-hashed before it is written again.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::ObjectRef;
use crate::Result;
use crate::format::KIND_INDEX;
use crate::format::index::{IndexEvent, visit_index};
use crate::format::layout::Dir;
use crate::format::layout::{index_path, pack_path};
use crate::format::pack::{PackEntry, units};
use crate::format::wire::DecodeError;
use crate::id::{IndexId, PackId};
use crate::progress::{Progress, Unit};
use crate::repo::Repository;
use crate::repo::cache::CacheDb;
use crate::repo::index::IndexWriter;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};

use super::plan::GcPlan;

/// Deletes, tolerating an object already gone; an object the storage still retains (object
/// lock) is left for a later prune and counted in the plan.
fn delete_ignoring_missing(repo: &Repository, path: &str, plan: &mut GcPlan) -> Result<()> {
    match repo.backend().delete(path) {
        Err(crate::Error::Retained { until, .. }) => {
            plan.deferred += 1;
            if plan.deferred_until.as_ref().is_none_or(|u| *u < until) {
                plan.deferred_until = Some(until);
            }
            Ok(())
        }
        Err(e) if e.kind() != crate::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies the used blobs of the packs to repack into new packs; returns the saver's index ids.
fn repack(repo: &Repository, plan: &mut GcPlan, progress: &dyn Progress) -> Result<Vec<IndexId>> {
    let marks = plan
        .marks
        .clone()
        .expect("invariant: a plan carries its marks");
    let index = repo.index()?;
    let saver = BlobSaver::new(
        repo,
        SaverOptions {
            dedup_against_index: false,
            ..SaverOptions::default()
        },
    )?;
    progress.phase("repack", Some(plan.bytes_repacked), Unit::Bytes);
    let fetch = |pack: &PackId| repo.backend().read(&pack_path(pack));
    let copy_used = |pack: &PackId, bytes: &[u8]| -> Result<()> {
        progress.advance(bytes.len() as u64);
        // Damage stops the prune (the caller says what to do); nothing is deleted.
        let entries = repo.parse_pack(pack, bytes)?;
        // Blobs of a pack written by a write-only key are sealed with its session's key, which
        // only that pack's header names: copied raw into another pack they would not open.
        // They are re-sealed under the current epoch instead.
        let session = repo.pack_session_in(pack, bytes).is_some();
        let all: Vec<&[PackEntry]> = units(&entries).collect();
        all.par_chunks(256).try_for_each(|chunk| -> Result<()> {
            let mut scratch = Vec::new();
            for unit in chunk {
                let mut wanted = HashSet::new();
                for e in *unit {
                    let here = index
                        .get(e.blob_type, &e.id)?
                        .is_some_and(|l| l.pack == *pack && l.offset == e.offset);
                    if here && marks.contains(e.blob_type, &e.id)? {
                        wanted.insert(e.id);
                    }
                }
                if wanted.is_empty() {
                    continue;
                }
                let e = &unit[0];
                let sealed = &bytes[e.offset as usize..e.end() as usize];
                // Verify before copying: prune must never turn damage into silent loss. The
                // unused members of a frame are the garbage being collected.
                let mut probe = sealed.to_vec();
                let mut result = Ok(());
                repo.open_unit(*pack, unit, &mut probe, &mut scratch, &mut |m, plain| {
                    if result.is_ok() && wanted.contains(&m.id) {
                        result =
                            plain.and_then(|p| saver.copy_blob(m, p, sealed, session).map(drop));
                    }
                });
                result?;
            }
            Ok(())
        })
    };
    let packs = &plan.packs_to_repack;
    let readers = crate::readahead::readers(repo, rayon::current_num_threads());
    if readers == 0 {
        // One pack at a time (memory: one pack and its header), its blobs verified and copied
        // on all cores.
        for pack in packs {
            copy_used(pack, &fetch(pack)?)?;
        }
    } else {
        // Remote storage: packs are read ahead (`crate::readahead`); every reader busy and one
        // pack being copied, at the repository's pack size.
        let size = u64::from(repo.config().pack_size);
        let sizes = vec![size; packs.len()];
        crate::readahead::read_ahead(
            &sizes,
            size * (readers as u64 + 1),
            readers,
            |i| fetch(&packs[i]),
            |i, fetched| copy_used(&packs[i], &fetched?),
        )?;
    }
    progress.finish_phase();
    let stats = saver.finish()?;
    plan.packs_written = stats.packs;
    plan.bytes_written = stats.pack_bytes;
    Ok(saver.written_indexes())
}

/// Runs the plan.
pub(crate) fn execute(
    repo: &Repository,
    lock: &LockGuard,
    plan: &mut GcPlan,
    progress: &dyn Progress,
) -> Result<()> {
    let gone: HashSet<PackId> = plan
        .packs_to_delete
        .iter()
        .chain(&plan.packs_to_repack)
        .copied()
        .collect();
    let old: HashSet<IndexId> = plan.old_indexes.iter().copied().collect();
    if gone.is_empty() && plan.old_indexes.len() <= 1 {
        clean_tmp(repo, lock, plan);
        return Ok(()); // nothing to collect and nothing to consolidate
    }
    let new_from_repack = if plan.packs_to_repack.is_empty() {
        Vec::new()
    } else {
        repack(repo, plan, progress)?
    };
    // The local cache is brought up to date in place (a rebuild costs a full ingest of the
    // index); when this process cannot write it, or an update fails, it is rebuilt later.
    let mut cache = CacheUpdate::begin(repo)?;
    // Index objects for the packs that stay, streamed entry by entry from the old ones (an
    // old object is decrypted in place and never decoded whole).
    let mut w = IndexWriter::new(repo, false);
    for id in &plan.old_indexes {
        let mut keep = false;
        // A failure to write is kept apart from a failure to decode (which is damage).
        let mut write_error: Option<crate::Error> = None;
        let decoded = repo.with_object_plaintext(
            Dir::Index,
            KIND_INDEX,
            &id.0,
            ObjectRef::Index(*id),
            |plain| {
                Ok(visit_index(plain, &mut |ev| {
                    match ev {
                        IndexEvent::Supersedes(_) => {}
                        IndexEvent::Pack(p, size) => {
                            cache.end_pack();
                            let stat = plan.stats.get(&p).filter(|_| !gone.contains(&p));
                            keep = stat.is_some();
                            if let Some(st) = stat {
                                w.pack(p, size);
                                // Some of its blobs are served from other copies, which may
                                // be gone now: serve them from here.
                                cache.start_pack(p, st.served < st.blobs);
                            }
                        }
                        IndexEvent::Entry(e) if keep => {
                            cache.entry(&e);
                            if let Err(err) = w.entry(e) {
                                write_error = Some(err);
                                return Err(DecodeError("stopped".into()));
                            }
                        }
                        IndexEvent::Entry(_) => {}
                    }
                    Ok(())
                }))
            },
        )?;
        cache.end_pack();
        if let Some(e) = write_error {
            return Err(e);
        }
        decoded.map_err(|e| crate::Error::corrupt(ObjectRef::Index(*id), e.0))?;
    }
    // The last object names everything it replaces: its presence means the new index is whole.
    let written = w.finish(plan.old_indexes.clone())?;
    plan.indexes_written = (new_from_repack.len() + written.len()) as u64;
    // Nothing is deleted unless our exclusive lock is still ours.
    lock.check()?;
    progress.phase("delete", Some((old.len() + gone.len()) as u64), Unit::Items);
    for id in plan.old_indexes.clone() {
        delete_ignoring_missing(repo, &index_path(&id), plan)?;
        progress.advance(1);
    }
    // A superseded index object the storage still retains may name any of these packs, and
    // readers may ignore `supersedes` (chapter 7): then no pack goes in this run.
    let index_retained = plan.deferred > 0;
    let mut gone_sorted: Vec<PackId> = gone.iter().copied().collect();
    gone_sorted.sort();
    for p in &gone_sorted {
        if index_retained {
            plan.deferred += 1;
        } else {
            delete_ignoring_missing(repo, &pack_path(p), plan)?;
        }
        progress.advance(1);
    }
    progress.finish_phase();
    plan.bytes_freed =
        (plan.bytes_deleted + plan.bytes_repacked).saturating_sub(plan.bytes_written);
    let forget = |p: &PackId| gone.contains(p) || plan.missing_packs.contains(p);
    cache.finish(repo, &forget, &plan.old_indexes, &written);
    clean_tmp(repo, lock, plan);
    Ok(())
}

/// The in-place update of the local cache that mirrors a collection (see `execute`).
struct CacheUpdate {
    store: Option<std::sync::Arc<CacheDb>>,
    pack: Option<PackId>,
    entries: Vec<PackEntry>,
}

impl CacheUpdate {
    fn begin(repo: &Repository) -> Result<Self> {
        let store = repo.index()?.writable_store();
        let mut u = Self {
            store,
            pack: None,
            entries: Vec::new(),
        };
        if let Some(s) = &u.store
            && let Err(e) = s.begin_update()
        {
            u.abandon(e);
        }
        Ok(u)
    }

    fn abandon(&mut self, e: crate::Error) {
        tracing::warn!(error = %e, "could not update the local cache; it will be rebuilt");
        self.store = None;
    }

    fn start_pack(&mut self, p: PackId, reserve: bool) {
        self.pack = (reserve && self.store.is_some()).then_some(p);
    }

    fn entry(&mut self, e: &PackEntry) {
        if self.pack.is_some() {
            self.entries.push(*e);
        }
    }

    fn end_pack(&mut self) {
        let (Some(p), Some(s)) = (self.pack.take(), &self.store) else {
            return;
        };
        let entries = std::mem::take(&mut self.entries);
        if let Err(e) = s.put_locations(p, &entries) {
            self.abandon(e);
        }
    }

    /// Forgets the packs gone, records the index objects replaced, and makes it durable; on
    /// any failure (or when this process could not write the cache) the index is reloaded,
    /// which rebuilds the cache.
    fn finish(
        mut self,
        repo: &Repository,
        gone: &dyn Fn(&PackId) -> bool,
        removed: &[IndexId],
        added: &[IndexId],
    ) {
        let Some(s) = self.store.take() else {
            repo.reload_index();
            return;
        };
        let r = s
            .forget_packs(gone)
            .and_then(|n| {
                tracing::debug!(locations = n, "cache: locations of collected packs removed");
                s.replace_ingested(removed, added)
            })
            .and_then(|()| s.end_update());
        match r {
            Ok(()) => {
                if let Some(trees) = repo.tree_cache() {
                    trees.forget(gone);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not update the local cache; rebuilding it");
                repo.reload_index();
            }
        }
    }
}

/// Removes what interrupted runs left in `tmp/`. Under the exclusive lock no other writer is
/// live, so every staging file written before the lock was taken is garbage (a writer whose
/// lock went stale aborts before it publishes anything).
fn clean_tmp(repo: &Repository, lock: &LockGuard, plan: &mut GcPlan) {
    match repo.collect_staging_under_exclusive_lock(lock.acquired_at()) {
        Ok(l) => plan.tmp_files_removed += l.count,
        Err(e) => tracing::warn!(error = %e, "could not clean tmp/"),
    }
}
