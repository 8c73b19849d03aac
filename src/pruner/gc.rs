//! Executing a garbage-collection plan in crash-safe order (`format-spec/11`, "Prune"):
//! repacked packs and their index objects first, then index objects for the packs kept as they
//! are (the last one superseding every old index object), then the old index objects, then the
//! packs. Every copied blob is authenticated and re-hashed before it is written again.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::Result;
use crate::format::index::{Index, IndexPack};
use crate::format::layout::{index_path, pack_path};
use crate::id::{IndexId, PackId};
use crate::progress::{Progress, Unit};
use crate::repo::Repository;
use crate::repo::blob::PreparedBlob;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};

use super::plan::GcPlan;

/// Entries per index object written by prune.
const INDEX_ENTRIES: usize = 50_000;

fn delete_ignoring_missing(repo: &Repository, path: &str) -> Result<()> {
    match repo.backend().delete(path) {
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
    plan.packs_to_repack
        .par_iter()
        .try_for_each(|pack| -> Result<()> {
            let bytes = repo.backend().read(&pack_path(pack))?;
            progress.advance(bytes.len() as u64);
            // Damage stops the prune (the caller says what to do); nothing is deleted.
            let entries = repo.parse_pack(pack, &bytes)?;
            for e in entries {
                let here = index
                    .get(e.blob_type, &e.id)?
                    .is_some_and(|l| l.pack == *pack && l.offset == e.offset);
                if !here || !marks.contains(e.blob_type, &e.id)? {
                    continue;
                }
                let sealed = bytes[e.offset as usize..e.end() as usize].to_vec();
                // Verify before copying: prune must never turn damage into silent loss.
                repo.open_blob(e.blob_type, e.id, sealed.clone(), e.raw_length, Some(*pack))?;
                saver.add(&PreparedBlob {
                    blob_type: e.blob_type,
                    id: e.id,
                    sealed,
                    raw_len: e.raw_length,
                })?;
            }
            Ok(())
        })?;
    progress.finish_phase();
    let stats = saver.finish()?;
    plan.packs_written = stats.packs;
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
    let written_before: u64 = plan.packs_written;
    // Index objects for the packs that stay, streamed from the old ones.
    let mut emitted: HashSet<PackId> = HashSet::new();
    let mut current = Index::default();
    let mut entries = 0usize;
    let mut written = new_from_repack.len() as u64;
    for id in &plan.old_indexes {
        let idx = repo.read_index(id)?;
        for p in idx.packs {
            if gone.contains(&p.id) || !plan.stats.contains_key(&p.id) || !emitted.insert(p.id) {
                continue;
            }
            entries += p.blobs.len();
            current.packs.push(IndexPack {
                id: p.id,
                size: p.size,
                blobs: p.blobs,
            });
            if entries >= INDEX_ENTRIES {
                repo.write_index(&std::mem::take(&mut current))?;
                written += 1;
                entries = 0;
            }
        }
    }
    // The last object names everything it replaces: its presence means the new index is whole.
    current.supersedes = plan.old_indexes.clone();
    current.supersedes.sort();
    repo.write_index(&current)?;
    written += 1;
    plan.indexes_written = written;
    // Nothing is deleted unless our exclusive lock is still ours.
    lock.check()?;
    progress.phase("delete", Some((old.len() + gone.len()) as u64), Unit::Items);
    for id in &plan.old_indexes {
        delete_ignoring_missing(repo, &index_path(id))?;
        progress.advance(1);
    }
    let mut gone_sorted: Vec<PackId> = gone.into_iter().collect();
    gone_sorted.sort();
    for p in &gone_sorted {
        delete_ignoring_missing(repo, &pack_path(p))?;
        progress.advance(1);
    }
    progress.finish_phase();
    let new_bytes: u64 = if written_before > 0 {
        // Sizes of the packs just written, as the refreshed index reports them.
        repo.reload_index();
        let mut total = 0;
        let keep: HashSet<PackId> = plan.stats.keys().copied().collect();
        repo.index()?.for_each_pack(|id, size| {
            if !keep.contains(&id) {
                total += size;
            }
            Ok(())
        })?;
        total
    } else {
        0
    };
    plan.bytes_freed = (plan.bytes_deleted + plan.bytes_repacked).saturating_sub(new_bytes);
    clean_tmp(repo, lock, plan);
    repo.reload_index();
    Ok(())
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
