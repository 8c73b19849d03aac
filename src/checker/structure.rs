//! Structural checks: keys, index objects against the pack listing, snapshots and their trees,
//! locks.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::crypto::storage_hash;
use crate::format::key::decode_key_file;
use crate::format::layout::Dir;
use crate::format::time::Timestamp;
use crate::format::tree::{ContentPart, NodeKind};
use crate::id::{BlobId, BlobType, KeyId, PackId};
use crate::{ObjectRef, Result};

use super::{Ctx, SnapshotRoots};

/// What the backend holds and what the index says about it.
pub(crate) struct PackSets {
    /// Packs present in the backend, with their sizes.
    pub in_backend: HashMap<PackId, u64>,
    /// Packs the index objects name, with the size they record.
    pub indexed: HashMap<PackId, u64>,
}

pub(crate) fn check_keys(ctx: &Ctx<'_>) -> Result<()> {
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
        let bytes = ctx.repo.backend().read(&f.path)?;
        ctx.stat(|s| s.keys += 1);
        if storage_hash(&bytes) != raw {
            ctx.error(
                &object,
                "content does not match its name (damaged, truncated or renamed)",
            );
            continue;
        }
        if let Err(e) = decode_key_file(&bytes) {
            ctx.error(&object, format!("does not decode: {e:?}"));
        }
    }
    Ok(())
}

pub(crate) fn check_index(ctx: &Ctx<'_>) -> Result<PackSets> {
    let mut in_backend = HashMap::new();
    for o in ctx.repo.backend().list(Dir::Data.name())? {
        match Dir::Data.name_of(&o.path) {
            Some(raw) if o.path == Dir::Data.path(&hex::encode(raw)) => {
                in_backend.insert(PackId(raw), o.size);
            }
            _ => ctx.note(
                &ObjectRef::Path(o.path.clone()),
                "not a vault pack name; ignored",
            ),
        }
    }
    ctx.stat(|s| s.packs = in_backend.len() as u64);
    let index = ctx.repo.index()?;
    let mut indexed: HashMap<PackId, u64> = HashMap::new();
    let mut duplicates = 0u64;
    let ids = ctx.repo.list_index_ids()?;
    ctx.progress.phase(
        "index",
        Some(ids.len() as u64),
        crate::progress::Unit::Items,
    );
    for id in ids {
        ctx.progress.advance(1);
        let object = ObjectRef::Index(id);
        let idx = match ctx.repo.read_index(&id) {
            Ok(i) => i,
            Err(e)
                if matches!(
                    e.kind(),
                    crate::ErrorKind::Corrupt
                        | crate::ErrorKind::Unsupported
                        | crate::ErrorKind::NotFound
                ) =>
            {
                ctx.error(&object, e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        ctx.stat(|s| s.index_objects += 1);
        for p in &idx.packs {
            let pack = ObjectRef::Pack(p.id);
            if let Some(prev) = indexed.insert(p.id, p.size)
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
            match in_backend.get(&p.id) {
                None => {
                    ctx.error(&pack, format!("missing (named by index {})", id.short()));
                    ctx.bad_packs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(p.id);
                    for b in &p.blobs {
                        ctx.bad_blob(b.blob_type, b.id);
                    }
                }
                Some(&size) if size != p.size => {
                    ctx.error(
                        &pack,
                        format!(
                            "has {size} bytes, index {} says {} (truncated or replaced)",
                            id.short(),
                            p.size
                        ),
                    );
                    ctx.bad_packs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(p.id);
                    for b in p.blobs.iter().filter(|b| b.end() > size) {
                        ctx.bad_blob(b.blob_type, b.id);
                    }
                }
                Some(_) => {}
            }
            ctx.stat(|s| s.index_entries += p.blobs.len() as u64);
            for b in &p.blobs {
                if let Some(loc) = index.get(b.blob_type, &b.id)?
                    && loc.pack != p.id
                {
                    duplicates += 1;
                }
            }
        }
    }
    ctx.progress.finish_phase();
    if duplicates > 0 {
        ctx.note(
            &ObjectRef::Path("index/".into()),
            format!("{duplicates} blobs are stored more than once (harmless; `prune` removes the copies)"),
        );
    }
    for (id, _) in in_backend
        .iter()
        .filter(|(id, _)| !indexed.contains_key(id))
    {
        ctx.note(
            &ObjectRef::Pack(*id),
            "no index names it (left by an interrupted run; `prune` deletes it, `repair index` indexes it)",
        );
    }
    Ok(PackSets {
        in_backend,
        indexed,
    })
}

pub(crate) fn check_snapshots(ctx: &Ctx<'_>) -> Result<SnapshotRoots> {
    let mut roots = Vec::new();
    for id in ctx.repo.list_snapshot_ids()? {
        match ctx.repo.load_snapshot(&id) {
            Ok(s) => roots.push((id, s)),
            Err(e)
                if matches!(
                    e.kind(),
                    crate::ErrorKind::Corrupt
                        | crate::ErrorKind::Unsupported
                        | crate::ErrorKind::NotFound
                ) =>
            {
                ctx.error(&ObjectRef::Snapshot(id), e.to_string())
            }
            Err(e) => return Err(e),
        }
    }
    ctx.stat(|s| s.snapshots = roots.len() as u64);
    let index = ctx.repo.index()?;
    let mut visited: HashSet<BlobId> = HashSet::new();
    let mut missing_reported: HashSet<BlobId> = HashSet::new();
    let mut frontier: Vec<BlobId> = roots.iter().map(|(_, s)| s.tree).collect();
    ctx.progress
        .phase("trees", None, crate::progress::Unit::Items);
    // Breadth-first, one level at a time, loading the trees of a level in parallel.
    while !frontier.is_empty() {
        frontier.retain(|t| visited.insert(*t));
        let results: Vec<Result<(Vec<BlobId>, Vec<BlobId>)>> = frontier
            .par_iter()
            .map(|tid| -> Result<(Vec<BlobId>, Vec<BlobId>)> {
                let object = ObjectRef::Blob {
                    blob_type: BlobType::Tree,
                    id: *tid,
                    pack: None,
                };
                let tree = match ctx.repo.load_tree(tid) {
                    Ok(t) => t,
                    Err(e)
                        if e.kind() == crate::ErrorKind::NotFound
                            && matches!(
                                e,
                                crate::Error::NotFound {
                                    object: ObjectRef::Blob { .. }
                                }
                            ) =>
                    {
                        ctx.error(
                            &object,
                            "referenced by a snapshot but not in the index (missing)",
                        );
                        ctx.bad_blob(BlobType::Tree, *tid);
                        return Ok((Vec::new(), Vec::new()));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            crate::ErrorKind::Corrupt | crate::ErrorKind::NotFound
                        ) =>
                    {
                        ctx.error(&object, e.to_string());
                        ctx.bad_blob(BlobType::Tree, *tid);
                        return Ok((Vec::new(), Vec::new()));
                    }
                    Err(e) => return Err(e),
                };
                ctx.progress.advance(1);
                let mut subtrees = Vec::new();
                let mut missing = Vec::new();
                for node in &tree.nodes {
                    match node.kind {
                        NodeKind::File => {
                            for part in &node.content {
                                if let ContentPart::Chunk(c) = part
                                    && !index.contains(BlobType::Data, c)?
                                {
                                    missing.push(*c);
                                }
                            }
                        }
                        NodeKind::Dir => match node.subtree {
                            Some(s) => subtrees.push(s),
                            None => ctx.error(&object, "a directory entry has no tree"),
                        },
                        _ => {}
                    }
                }
                Ok((subtrees, missing))
            })
            .collect();
        ctx.stat(|s| s.trees += frontier.len() as u64);
        let mut next = Vec::new();
        for r in results {
            let (subtrees, missing) = r?;
            next.extend(subtrees);
            for m in missing {
                ctx.bad_blob(BlobType::Data, m);
                if missing_reported.insert(m) {
                    ctx.error(
                        &ObjectRef::Blob {
                            blob_type: BlobType::Data,
                            id: m,
                            pack: None,
                        },
                        "referenced by a snapshot but not in the index (missing)",
                    );
                }
            }
        }
        frontier = next;
    }
    ctx.progress.finish_phase();
    Ok(roots)
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
