//! Pack-level checks: headers against the index, and `--verify-data`, which reads each
//! selected pack exactly once and verifies its name, its header and every blob in it.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::format::layout::pack_path;
use crate::format::pack::PackEntry;
use crate::id::PackId;
use crate::{ObjectRef, Result};

use super::structure::PackSets;
use super::{Ctx, Subset};

/// How many index entries point into each pack (streamed from the on-disk index).
fn index_counts(ctx: &Ctx<'_>) -> Result<HashMap<PackId, u64>> {
    let mut counts: HashMap<PackId, u64> = HashMap::new();
    ctx.repo.index()?.for_each_blob(|_, _, loc| {
        *counts.entry(loc.pack).or_default() += 1;
        Ok(())
    })?;
    Ok(counts)
}

/// Compares a pack's header with the index: every header entry the index places in this pack
/// must agree with it, and the index must not place more blobs in the pack than the header has.
fn compare_with_index(
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
                if (loc.offset, loc.length, loc.raw_length) != (e.offset, e.length, e.raw_length) {
                    ctx.error(
                        &object,
                        format!(
                            "header and index disagree about {} blob {}",
                            e.blob_type, e.id
                        ),
                    );
                }
            }
            Some(_) => {} // a duplicate: the index points at another copy
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

/// Structure only: reads every indexed pack's header (two small ranged reads each).
pub(crate) fn check_headers(ctx: &Ctx<'_>, packs: &PackSets) -> Result<()> {
    let counts = index_counts(ctx)?;
    let bad = ctx
        .bad_packs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let todo: Vec<(PackId, u64)> = packs
        .indexed
        .iter()
        .filter(|(id, _)| !bad.contains(id) && packs.in_backend.contains_key(id))
        .map(|(id, _)| (*id, packs.in_backend[id]))
        .collect();
    ctx.progress.phase(
        "pack headers",
        Some(todo.len() as u64),
        crate::progress::Unit::Items,
    );
    todo.par_iter().try_for_each(|(id, size)| -> Result<()> {
        ctx.progress.advance(1);
        match ctx.repo.read_pack_header(id, Some(*size)) {
            Ok(entries) => {
                compare_with_index(ctx, *id, &entries, counts.get(id).copied().unwrap_or(0))
            }
            Err(e) if is_damage(&e) => {
                ctx.error(&ObjectRef::Pack(*id), format!("header unreadable: {e}"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?;
    ctx.progress.finish_phase();
    Ok(())
}

fn is_damage(e: &crate::Error) -> bool {
    matches!(
        e.kind(),
        crate::ErrorKind::Corrupt | crate::ErrorKind::NotFound | crate::ErrorKind::Unsupported
    )
}

/// Random 64-bit values from the OS generator, for sampling.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = crate::crypto::random_bytes(&mut b);
    u64::from_le_bytes(b)
}

/// The indexed packs to verify. Packs no index names are not part of the repository's content
/// (check notes them; prune deletes them), so they are not read.
fn select(packs: &PackSets, subset: Subset) -> Vec<(PackId, u64)> {
    let mut all: Vec<(PackId, u64)> = packs
        .in_backend
        .iter()
        .filter(|(id, _)| packs.indexed.contains_key(id))
        .map(|(id, s)| (*id, *s))
        .collect();
    all.sort();
    match subset {
        Subset::All => all,
        Subset::Part { n, m } => all
            .into_iter()
            .filter(|(id, _)| {
                let prefix = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
                prefix % m == n - 1
            })
            .collect(),
        Subset::Fraction(f) => {
            shuffle(&mut all);
            let k = ((all.len() as f64) * f).ceil() as usize;
            all.truncate(k.min(all.len()));
            all
        }
        Subset::Bytes(limit) => {
            shuffle(&mut all);
            let mut total = 0u64;
            all.into_iter()
                .take_while(|(_, s)| {
                    let take = total < limit;
                    total += s;
                    take
                })
                .collect()
        }
    }
}

fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (random_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// `--verify-data`: reads each selected pack once, verifies its name, header and blobs.
pub(crate) fn verify_packs(ctx: &Ctx<'_>, packs: &PackSets, subset: Subset) -> Result<()> {
    let counts = index_counts(ctx)?;
    let todo = select(packs, subset);
    let total: u64 = todo.iter().map(|(_, s)| s).sum();
    ctx.progress
        .phase("verify data", Some(total), crate::progress::Unit::Bytes);
    todo.par_iter().try_for_each(|(id, _)| -> Result<()> {
        let object = ObjectRef::Pack(*id);
        let mut bytes = match ctx.repo.backend().read(&pack_path(id)) {
            Ok(b) => b,
            Err(e) if is_damage(&e) => {
                ctx.error(&object, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        ctx.stat(|s| {
            s.packs_read += 1;
            s.bytes_read += bytes.len() as u64;
        });
        ctx.progress.advance(bytes.len() as u64);
        // No whole-pack hash here: every byte of a pack is in an authenticated blob, the
        // authenticated header or the length-checked trailer, and a pack stored under another
        // pack's name disagrees with the index. Hashing would only repeat that work.
        let entries = match ctx.repo.parse_pack(id, &bytes) {
            Ok(e) => e,
            Err(e) => {
                ctx.error(&object, format!("header unreadable: {e}"));
                mark_indexed_blobs_bad(ctx, *id)?;
                return Ok(());
            }
        };
        // Tree packs are kept locally once verified; copy them before decrypting in place.
        let tree_pack = entries
            .iter()
            .all(|e| e.blob_type == crate::id::BlobType::Tree);
        let pristine = tree_pack.then(|| bytes.clone());
        // Blobs are contiguous from offset 0: split the buffer into one slice per blob and open
        // each in place, in parallel.
        let mut slices: Vec<(PackEntry, &mut [u8])> = Vec::with_capacity(entries.len());
        let mut rest: &mut [u8] = &mut bytes[..];
        for e in &entries {
            let (blob, tail) = rest.split_at_mut(e.length as usize);
            slices.push((*e, blob));
            rest = tail;
        }
        let failures: Vec<(PackEntry, crate::Error)> = slices
            .par_iter_mut()
            .map_init(Vec::new, |scratch, (e, sealed)| {
                ctx.repo
                    .open_blob_ref(e.blob_type, e.id, sealed, e.raw_length, Some(*id), scratch)
                    .err()
                    .map(|err| (*e, err))
            })
            .flatten()
            .collect();
        ctx.stat(|s| s.blobs_verified += entries.len() as u64);
        // A verified tree pack seeds the local copy, so the tree walk does not read it again.
        if let Some(original) = pristine
            && failures.is_empty()
        {
            ctx.repo.cache_tree_pack(id, &original)?;
        }
        for (e, err) in failures {
            ctx.error(
                &ObjectRef::Blob {
                    blob_type: e.blob_type,
                    id: e.id,
                    pack: Some(*id),
                },
                err.to_string(),
            );
            ctx.bad_blob(e.blob_type, e.id);
        }
        if packs.indexed.contains_key(id) {
            compare_with_index(ctx, *id, &entries, counts.get(id).copied().unwrap_or(0))?;
        }
        Ok(())
    })?;
    ctx.progress.finish_phase();
    Ok(())
}

/// When a pack's header is unreadable, every blob the index places in it is suspect.
fn mark_indexed_blobs_bad(ctx: &Ctx<'_>, pack: PackId) -> Result<()> {
    ctx.repo.index()?.for_each_blob(|t, id, loc| {
        if loc.pack == pack {
            ctx.bad_blob(t, id);
        }
        Ok(())
    })
}
