//! Pack-level checks: headers against the index, and `--verify-data`, which reads each
//! selected pack exactly once and verifies its header and every blob in it.
//!
//! Packs are streamed from the on-disk pack sets in id order and handled in parallel in
//! groups, so memory does not depend on how many packs there are.

use rayon::prelude::*;

use crate::format::layout::pack_path;
use crate::format::pack::{PackEntry, units};
use crate::id::PackId;
use crate::{ObjectRef, Result};

use super::structure::{PackSets, compare_with_index, for_each_indexed_pack, reason};
use super::{Ctx, Subset};

/// Packs handled in parallel at a time.
const GROUP: usize = 64;

/// Calls `f` on groups of the selected packs (indexed, present, not already known bad).
fn for_each_group(
    ctx: &Ctx<'_>,
    sets: &PackSets,
    subset: Subset,
    mut f: impl FnMut(&[(PackId, u64, u64)]) -> Result<()>,
) -> Result<()> {
    // A random sample by bytes needs the total first (one more pass over the disk set).
    let mut total = 0u64;
    if let Subset::Bytes(_) = subset {
        for_each_indexed_pack(sets, |_, size, _| {
            total += size;
            Ok(())
        })?;
    }
    let probability = match subset {
        Subset::Fraction(p) => p,
        Subset::Bytes(limit) if total > 0 => (limit as f64 / total as f64).min(1.0),
        _ => 1.0,
    };
    let mut group = Vec::with_capacity(GROUP);
    for_each_indexed_pack(sets, |id, size, counted| {
        if ctx.is_bad_pack(&id) {
            return Ok(());
        }
        let take = match subset {
            Subset::All => true,
            Subset::Part { n, m } => {
                let prefix = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
                prefix % m == n - 1
            }
            Subset::Fraction(_) | Subset::Bytes(_) => random_unit() < probability,
        };
        if take {
            group.push((id, size, counted));
            if group.len() == GROUP {
                f(&group)?;
                group.clear();
            }
        }
        Ok(())
    })?;
    if !group.is_empty() {
        f(&group)?;
    }
    Ok(())
}

/// A uniform draw in [0, 1) from the OS generator, for sampling.
fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = crate::crypto::random_bytes(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Structure only: reads every indexed pack's header (two small ranged reads each).
pub(crate) fn check_headers(ctx: &Ctx<'_>, sets: &PackSets) -> Result<()> {
    ctx.progress
        .phase("pack headers", None, crate::progress::Unit::Items);
    for_each_group(ctx, sets, Subset::All, |group| {
        group
            .par_iter()
            .try_for_each(|(id, size, counted)| -> Result<()> {
                ctx.progress.advance(1);
                match ctx.repo.read_pack_header(id, Some(*size)) {
                    Ok(entries) => compare_with_index(ctx, *id, &entries, *counted)?,
                    Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                        ctx.error(&ObjectRef::Pack(*id), format!("header {}", reason(&e)));
                        mark_indexed_blobs_bad(ctx, *id)?;
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            })
    })?;
    ctx.progress.finish_phase();
    Ok(())
}

/// `--verify-data`: reads each selected pack once, verifies its header and blobs.
pub(crate) fn verify_packs(ctx: &Ctx<'_>, sets: &PackSets, subset: Subset) -> Result<()> {
    ctx.progress
        .phase("verify data", None, crate::progress::Unit::Bytes);
    for_each_group(ctx, sets, subset, |group| {
        if ctx.reads_ahead == 0 {
            group.par_iter().try_for_each(|(id, _, counted)| {
                let mut buffer = ctx.pack_buffers.take();
                if read_pack(ctx, *id, &mut buffer.buf)? {
                    verify_read(ctx, *id, *counted, &mut buffer.buf)?;
                }
                Ok(())
            })
        } else {
            verify_read_ahead(ctx, group)
        }
    })?;
    ctx.progress.finish_phase();
    Ok(())
}

/// Remote storage: packs are read ahead by `ctx.reads_ahead` threads while the pool verifies
/// the ones read (`crate::readahead`).
fn verify_read_ahead(ctx: &Ctx<'_>, group: &[(PackId, u64, u64)]) -> Result<()> {
    let sizes: Vec<u64> = group.iter().map(|(_, size, _)| *size).collect();
    // Every reader busy and one pack being verified.
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let budget = largest * (ctx.reads_ahead as u64 + 1);
    crate::readahead::read_ahead(
        &sizes,
        budget,
        ctx.reads_ahead,
        |i| {
            let mut buffer = ctx.pack_buffers.take();
            read_pack(ctx, group[i].0, &mut buffer.buf).map(|ok| ok.then_some(buffer))
        },
        |i, read| {
            let (id, _, counted) = group[i];
            match read? {
                Some(mut buffer) => verify_read(ctx, id, counted, &mut buffer.buf),
                None => Ok(()),
            }
        },
    )
}

/// Reads pack `id` into `buf`; false when it could not be read as stored (damage, reported).
fn read_pack(ctx: &Ctx<'_>, id: PackId, buf: &mut Vec<u8>) -> Result<bool> {
    // Reused buffers: no fresh 16 MiB to fault in and clear per pack.
    match ctx.repo.backend().read_into(&pack_path(&id), buf) {
        Ok(()) => {}
        Err(e) if e.is_damage() => {
            ctx.error(&ObjectRef::Pack(id), reason(&e));
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    ctx.stat(|s| {
        s.packs_read += 1;
        s.bytes_read += buf.len() as u64;
    });
    ctx.progress.advance(buf.len() as u64);
    Ok(true)
}

/// Verifies a pack read whole: its header, then every blob in it.
fn verify_read(ctx: &Ctx<'_>, id: PackId, counted: u64, bytes: &mut [u8]) -> Result<()> {
    let object = ObjectRef::Pack(id);
    // No whole-pack hash here: every byte of a pack is in an authenticated blob, the
    // authenticated header or the length-checked trailer, and a pack stored under another
    // pack's name disagrees with the index. Hashing would only repeat that work.
    let entries = match ctx.repo.parse_pack(&id, bytes) {
        Ok(e) => e,
        Err(e) => {
            ctx.error(&object, format!("header {}", reason(&e)));
            mark_indexed_blobs_bad(ctx, id)?;
            return Ok(());
        }
    };
    // A tree pack is kept locally: stored now, before its blobs are decrypted in place (the
    // store checks the bytes against the pack's name; every blob read from the copy later is
    // still verified), so no second copy of the pack is held.
    if entries
        .iter()
        .all(|e| e.blob_type == crate::id::BlobType::Tree)
    {
        ctx.repo.cache_tree_pack(&id, bytes)?;
    }
    // Blobs are contiguous from offset 0: the buffer is split into groups of blobs (at most
    // 1024 blobs or about 1 MiB each), each group opened in place on a core of its own: no
    // per-blob bookkeeping is allocated (a pack of tiny blobs holds 180 000 of them), and a
    // pack of large blobs is still spread over every core (the last pack of a check would
    // otherwise keep one core busy while the other waits).
    // A group is whole stored units (a frame is opened once, its members verified on their
    // slices).
    let mut groups: Vec<(&[PackEntry], &mut [u8])> = Vec::new();
    let mut rest: &mut [u8] = bytes;
    let mut todo = &entries[..];
    while !todo.is_empty() {
        let (mut n, mut len) = (0usize, 0u64);
        for unit in units(todo) {
            if n > 0 && (n + unit.len() > 1024 || len >= 1 << 20) {
                break;
            }
            len += unit[0].length;
            n += unit.len();
        }
        let (chunk, more) = todo.split_at(n);
        let (g, tail) = std::mem::take(&mut rest).split_at_mut(len as usize);
        groups.push((chunk, g));
        rest = tail;
        todo = more;
    }
    let failures: Vec<(PackEntry, crate::Error)> = groups
        .into_par_iter()
        .flat_map_iter(|(chunk, mut buf)| {
            let mut failed = Vec::new();
            // The worker's reused buffer: decompressing into a fresh one per group cost a page
            // fault per 4 KiB (a group is often one 2 MiB frame).
            crate::buffers::with_scratch(|scratch| {
                for unit in units(chunk) {
                    let (sealed, tail) =
                        std::mem::take(&mut buf).split_at_mut(unit[0].length as usize);
                    buf = tail;
                    ctx.repo.open_unit(id, unit, sealed, scratch, &mut |e, r| {
                        if let Err(err) = r {
                            failed.push((*e, err));
                        }
                    });
                }
            });
            failed
        })
        .collect();
    ctx.stat(|s| s.blobs_verified += entries.len() as u64);
    for (e, err) in failures {
        ctx.error(
            &ObjectRef::Blob {
                blob_type: e.blob_type,
                id: e.id,
                pack: Some(id),
            },
            reason(&err),
        );
        ctx.bad_blob(e.blob_type, e.id);
    }
    compare_with_index(ctx, id, &entries, counted)
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
