//! Index objects: which blob lives where (`format-spec/07-index.md`).
//!
//! Plaintext, sealed in an envelope of kind `I`:
//! ```text
//! INDEX      = supersedes_count(uvarint) || INDEX_ID(32)*count || pack_count(uvarint) || PACK*
//! PACK       = pack_id(32) || pack_size(uvarint) || blob_count(uvarint) || ENTRY*blob_count
//! ENTRY      = as in a pack header (type, id, offset, length, raw_length)
//! ```
//! `supersedes` names index objects whose every entry this one repeats or deliberately drops;
//! it lets `prune` and `repair index` replace index objects crash-safely. A pack's blobs may
//! be listed in any order but each must lie inside the pack, before its header.

use super::pack::{MIN_ENTRY_LEN, PackEntry, decode_entry, encode_entry};
use super::wire::{DecodeResult, Reader, Writer, err};
use crate::id::{IndexId, PackId};

/// One pack and the blobs of it that an index lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack's id (and name).
    pub id: PackId,
    /// The pack's total size in bytes.
    pub size: u64,
    /// The blobs it holds.
    pub blobs: Vec<PackEntry>,
}

/// A decoded index object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// Index objects this one replaces.
    pub supersedes: Vec<IndexId>,
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
}

impl Index {
    /// Number of blob entries.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}

/// Encodes an index plaintext.
pub fn encode_index(idx: &Index) -> Vec<u8> {
    let mut w = Writer::new();
    w.uvarint(idx.supersedes.len() as u64);
    for s in &idx.supersedes {
        w.id(&s.0);
    }
    w.uvarint(idx.packs.len() as u64);
    for p in &idx.packs {
        w.id(&p.id.0);
        w.uvarint(p.size);
        w.uvarint(p.blobs.len() as u64);
        for b in &p.blobs {
            encode_entry(&mut w, b);
        }
    }
    w.into_bytes()
}

/// Decodes an index plaintext.
pub fn decode_index(bytes: &[u8]) -> DecodeResult<Index> {
    let mut r = Reader::new(bytes);
    let ns = r.count(32)?;
    let mut supersedes = Vec::with_capacity(ns);
    for _ in 0..ns {
        supersedes.push(IndexId(r.id()?));
    }
    let np = r.count(32 + 2)?;
    let mut packs = Vec::with_capacity(np);
    for _ in 0..np {
        let id = PackId(r.id()?);
        let size = r.uvarint()?;
        let nb = r.count(MIN_ENTRY_LEN)?;
        let mut blobs = Vec::with_capacity(nb);
        for _ in 0..nb {
            let e = decode_entry(&mut r)?;
            if e.end() > size {
                return err(format!(
                    "blob {} ends at {} beyond pack {} of {size} bytes",
                    e.id.short(),
                    e.end(),
                    id.short()
                ));
            }
            blobs.push(e);
        }
        packs.push(IndexPack { id, size, blobs });
    }
    r.finish()?;
    Ok(Index { supersedes, packs })
}
