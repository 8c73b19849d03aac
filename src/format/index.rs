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

/// Most blob entries vault puts in one index object. A pack with more blobs (a 16 MiB pack of
/// tiny blobs holds ~180 000) is described by several objects, each listing part of it, so
/// that no index object, and no reader's buffer for it, grows beyond a few MiB.
pub const MAX_INDEX_ENTRIES: usize = 50_000;

/// Splits packs into index objects of at most [`MAX_INDEX_ENTRIES`] entries (a pack may be
/// split across objects; every object lists only whole, valid entries).
pub fn split_into_indexes(packs: Vec<IndexPack>) -> Vec<Index> {
    let mut out = Vec::new();
    let mut cur = Index::default();
    let mut n = 0usize;
    for p in packs {
        let mut blobs = p.blobs.into_iter().peekable();
        loop {
            let room = MAX_INDEX_ENTRIES - n;
            let part: Vec<PackEntry> = blobs.by_ref().take(room).collect();
            if !part.is_empty() || n < MAX_INDEX_ENTRIES {
                n += part.len();
                cur.packs.push(IndexPack {
                    id: p.id,
                    size: p.size,
                    blobs: part,
                });
            }
            if n >= MAX_INDEX_ENTRIES {
                out.push(std::mem::take(&mut cur));
                n = 0;
            }
            if blobs.peek().is_none() {
                break;
            }
        }
    }
    if !cur.packs.is_empty() {
        out.push(cur);
    }
    out
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
    let mut idx = Index::default();
    visit_index(bytes, &mut |ev| {
        match ev {
            IndexEvent::Supersedes(s) => idx.supersedes.push(s),
            IndexEvent::Pack(id, size) => idx.packs.push(IndexPack {
                id,
                size,
                blobs: Vec::new(),
            }),
            IndexEvent::Entry(e) => {
                if let Some(p) = idx.packs.last_mut() {
                    p.blobs.push(e);
                }
            }
        }
        Ok(())
    })?;
    Ok(idx)
}

/// One item of an index plaintext, in order (see [`visit_index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexEvent {
    /// An index object this one supersedes.
    Supersedes(IndexId),
    /// The start of a pack: its id and size; its entries follow.
    Pack(PackId, u64),
    /// One entry of the current pack.
    Entry(PackEntry),
}

/// Decodes an index plaintext without building it, calling `f` for each item in order.
/// Validates exactly what [`decode_index`] validates; `f` may stop with an error.
pub fn visit_index(
    bytes: &[u8],
    f: &mut dyn FnMut(IndexEvent) -> DecodeResult<()>,
) -> DecodeResult<()> {
    let mut r = Reader::new(bytes);
    let ns = r.count(32)?;
    for _ in 0..ns {
        f(IndexEvent::Supersedes(IndexId(r.id()?)))?;
    }
    let np = r.count(32 + 2)?;
    for _ in 0..np {
        let id = PackId(r.id()?);
        let size = r.uvarint()?;
        f(IndexEvent::Pack(id, size))?;
        let nb = r.count(MIN_ENTRY_LEN)?;
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
            f(IndexEvent::Entry(e))?;
        }
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{BlobId, BlobType};

    #[test]
    fn splitting_keeps_every_entry_and_bounds_objects() {
        let pack = |n: usize, tag: u8| IndexPack {
            id: PackId([tag; 32]),
            size: 1 << 30,
            blobs: (0..n)
                .map(|i| PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId([(i % 251) as u8; 32]),
                    offset: i as u64 * 100,
                    length: 100,
                    raw_length: 90,
                    frame: None,
                })
                .collect(),
        };
        let packs = vec![pack(3, 1), pack(120_000, 2), pack(10, 3)];
        let total: usize = packs.iter().map(|p| p.blobs.len()).sum();
        let objects = split_into_indexes(packs);
        assert_eq!(objects.len(), 3);
        assert!(objects.iter().all(|o| o.blob_count() <= MAX_INDEX_ENTRIES));
        assert_eq!(objects.iter().map(Index::blob_count).sum::<usize>(), total);
        assert!(split_into_indexes(Vec::new()).is_empty());
        // Encoded and decoded again, each part stays valid.
        for o in &objects {
            assert_eq!(&decode_index(&encode_index(o)).unwrap(), o);
        }
    }
}
