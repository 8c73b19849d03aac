//! `repair index`: a new index from what the packs say about themselves.
//!
//! Packs are listed and read in groups (headers only, or whole with `--verify-data`), and
//! index objects are written as whole packs are found, so neither the listing nor the index
//! is ever held in memory. Damaged packs (few) are remembered; the intact blobs of damaged
//! packs are copied into new packs unless a whole pack already holds them (the blobs of whole
//! packs are marked in an on-disk set). Last, one index object supersedes every old one, and
//! only then are the old ones deleted.

use rayon::prelude::*;

use crate::crypto::storage_hash;
use crate::format::index::IndexPack;
use crate::format::layout::{Dir, index_path, pack_path};
use crate::format::pack::{PackEntry, units};
use crate::id::{BlobType, IndexId, PackId};
use crate::progress::{Progress, Unit};
use crate::repo::Repository;
use crate::repo::cache::scratch::MarkSet;
use crate::repo::index::IndexWriter;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::{ObjectRef, Result};

use super::Problem;

/// Packs read in parallel at a time.
const GROUP: usize = 64;

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs in the backend.
    pub packs: u64,
    /// Packs indexed as they are.
    pub packs_indexed: u64,
    /// Blob entries in the new index (including salvaged blobs).
    pub blobs_indexed: u64,
    /// Packs left out of the index (damaged), with why.
    pub damaged_packs: Vec<Problem>,
    /// Blobs found damaged and left out.
    pub damaged_blobs: Vec<Problem>,
    /// Intact blobs copied out of damaged packs into new packs.
    pub salvaged_blobs: u64,
    /// Index objects replaced.
    pub old_indexes_removed: u64,
}

enum Outcome {
    Whole(IndexPack),
    Damaged {
        reason: String,
        good: Vec<PackEntry>,
        bad: Vec<Problem>,
    },
}

/// Reads one pack: its header, or with `verify_data` every blob.
fn read_pack(repo: &Repository, id: &PackId, size: u64, verify_data: bool) -> Result<Outcome> {
    if !verify_data {
        return Ok(match repo.read_pack_header(id, Some(size)) {
            Ok(blobs) => Outcome::Whole(IndexPack {
                id: *id,
                size,
                blobs,
            }),
            Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                Outcome::Damaged {
                    reason: e.to_string(),
                    good: Vec::new(),
                    bad: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        });
    }
    let bytes = match repo.backend().read(&pack_path(id)) {
        Ok(b) => b,
        Err(e) if e.is_damage() => {
            return Ok(Outcome::Damaged {
                reason: e.to_string(),
                good: Vec::new(),
                bad: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    let name_ok = storage_hash(&bytes) == id.0 || crate::format::envelope::is_resealed(&bytes);
    let entries = match repo.parse_pack(id, &bytes) {
        Ok(e) => e,
        Err(e) => {
            return Ok(Outcome::Damaged {
                reason: e.to_string(),
                good: Vec::new(),
                bad: Vec::new(),
            });
        }
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut scratch = Vec::new();
    for unit in units(&entries) {
        let first = unit[0];
        let mut sealed = bytes[first.offset as usize..first.end() as usize].to_vec();
        repo.open_unit(*id, unit, &mut sealed, &mut scratch, &mut |e, r| match r {
            Ok(_) => good.push(*e),
            Err(err) => bad.push(Problem {
                object: ObjectRef::Blob {
                    blob_type: e.blob_type,
                    id: e.id,
                    pack: Some(*id),
                }
                .to_string(),
                message: err.to_string(),
            }),
        });
    }
    if name_ok && bad.is_empty() {
        Ok(Outcome::Whole(IndexPack {
            id: *id,
            size,
            blobs: good,
        }))
    } else {
        let reason = if name_ok {
            format!("{} damaged blobs", bad.len())
        } else {
            "content does not match its name".to_string()
        };
        Ok(Outcome::Damaged { reason, good, bad })
    }
}

/// Rebuilds the index from the pack headers (and, with `verify_data`, every blob).
pub fn repair_index(
    repo: &Repository,
    lock: &LockGuard,
    verify_data: bool,
    progress: &dyn Progress,
) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old_ids: Vec<IndexId> = repo.list_index_ids()?;
    let have = MarkSet::new(repo.temp_dir())?;
    let mut writer = IndexWriter::new(repo, false);
    let mut damaged: Vec<(PackId, String, Vec<PackEntry>)> = Vec::new();
    progress.phase("read packs", None, Unit::Items);
    let mut group: Vec<(PackId, u64)> = Vec::with_capacity(GROUP);
    let seen_packs = MarkSet::new(repo.temp_dir())?;
    // Packs are read on all cores; each outcome goes to the writer as soon as it is known
    // (a header of a pack of tiny blobs can hold 180 000 entries: none is kept longer).
    let handle_group = |group: &mut Vec<(PackId, u64)>,
                        report: &mut RepairIndexReport,
                        writer: &mut IndexWriter<'_>,
                        damaged: &mut Vec<(PackId, String, Vec<PackEntry>)>|
     -> Result<()> {
        let state = std::sync::Mutex::new((report, writer, damaged));
        group.par_iter().try_for_each(|(id, size)| -> Result<()> {
            progress.advance(1);
            let outcome = read_pack(repo, id, *size, verify_data)?;
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let (report, writer, damaged) = &mut *st;
            report.packs += 1;
            match outcome {
                Outcome::Whole(p) => {
                    for b in &p.blobs {
                        have.insert(b.blob_type, &b.id)?;
                    }
                    report.packs_indexed += 1;
                    report.blobs_indexed += p.blobs.len() as u64;
                    writer.add_pack(p)?;
                }
                Outcome::Damaged { reason, good, bad } => {
                    report.damaged_blobs.extend(bad);
                    damaged.push((*id, reason, good));
                }
            }
            Ok(())
        })?;
        group.clear();
        Ok(())
    };
    repo.backend().list_each(Dir::Data.name(), &mut |o| {
        let Some(raw) = Dir::Data.name_of(&o.path) else {
            return Ok(());
        };
        // A restarted listing may repeat packs: each is read once.
        let id = PackId(raw);
        if !seen_packs.insert_new(BlobType::Data, &crate::id::BlobId(raw))? {
            return Ok(());
        }
        group.push((id, o.size));
        if group.len() == GROUP {
            handle_group(&mut group, &mut report, &mut writer, &mut damaged)?;
        }
        Ok(())
    })?;
    handle_group(&mut group, &mut report, &mut writer, &mut damaged)?;
    drop(seen_packs);
    progress.finish_phase();
    have.flush()?;
    salvage(repo, &old_ids, &damaged, &have, &mut report)?;
    // The last object names everything it replaces: its presence means the new index is whole.
    writer.finish(old_ids.clone())?;
    lock.check()?;
    for id in &old_ids {
        match repo.backend().delete(&index_path(id)) {
            Ok(()) => report.old_indexes_removed += 1,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    repo.reload_index();
    Ok(report)
}

/// Copies the intact blobs of damaged packs into new packs (never a blob a whole pack holds).
fn salvage(
    repo: &Repository,
    old_ids: &[IndexId],
    damaged: &[(PackId, String, Vec<PackEntry>)],
    have: &MarkSet,
    report: &mut RepairIndexReport,
) -> Result<()> {
    if damaged.is_empty() {
        return Ok(());
    }
    let saver = BlobSaver::new(
        repo,
        SaverOptions {
            dedup_against_index: false,
            ..SaverOptions::default()
        },
    )?;
    for (id, reason, good) in damaged {
        report.damaged_packs.push(Problem {
            object: ObjectRef::Pack(*id).to_string(),
            message: reason.clone(),
        });
        // A pack whose header is unreadable: its blobs may still be located through the old
        // index objects that can be read.
        let candidates: Vec<PackEntry> = if good.is_empty() {
            let mut v = Vec::new();
            for idx_id in old_ids {
                if let Ok(idx) = repo.read_index(idx_id) {
                    for p in idx.packs.into_iter().filter(|p| p.id == *id) {
                        v.extend(p.blobs);
                    }
                }
            }
            v
        } else {
            good.clone()
        };
        if candidates.is_empty() {
            continue;
        }
        let Ok(bytes) = repo.backend().read(&pack_path(id)) else {
            continue;
        };
        let mut candidates = candidates;
        candidates.sort_by_key(|e| (e.offset, e.frame.map(|f| f.inner)));
        // A write-only key's blobs are sealed with its session, which only this pack's
        // header names: sealed anew in the new pack (as prune's repacking does).
        let session = repo.pack_session_in(id, &bytes).is_some();
        let mut scratch = Vec::new();
        // Candidates at one offset are one stored unit (a blob, or members of one frame).
        for unit in candidates.chunk_by(|a, b| a.offset == b.offset) {
            let e = unit[0];
            let mut needed = false;
            for m in unit {
                needed |= !have.contains(m.blob_type, &m.id)?;
            }
            if !needed || e.end() > bytes.len() as u64 {
                continue;
            }
            let sealed = &bytes[e.offset as usize..e.end() as usize];
            let mut probe = sealed.to_vec();
            let mut result: Result<()> = Ok(());
            repo.open_unit(*id, unit, &mut probe, &mut scratch, &mut |m, plain| {
                // A blob that does not verify is left out (its pack is reported damaged).
                let (Ok(plain), Ok(())) = (plain, &result) else {
                    return;
                };
                result = (|| {
                    if !have.contains(m.blob_type, &m.id)? {
                        have.insert_new(m.blob_type, &m.id)?;
                        saver.copy_blob(m, plain, sealed, session)?;
                        report.salvaged_blobs += 1;
                    }
                    Ok(())
                })();
            });
            result?;
        }
    }
    saver.finish()?;
    report.blobs_indexed += report.salvaged_blobs;
    Ok(())
}
