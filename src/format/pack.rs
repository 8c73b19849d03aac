//! Pack files and their headers (`format-spec/06-packs.md`).
//!
//! ```text
//! PACK        = BLOB_0 || … || BLOB_n-1 || HEADER_OBJ || HEADER_LEN(4, u32 little-endian)
//! BLOB_i      = NONCE(24) || CIPHERTEXT || TAG(16)       (see crypto; AAD binds type and id)
//! HEADER_OBJ  = envelope of kind 'P' sealing the header plaintext
//! plaintext   = count(uvarint ≥ 1) || ENTRY*count
//! ENTRY       = type(u8) || id(32) || offset(uvarint) || length(uvarint) || raw_length(uvarint)
//!               [ || inner(uvarint) || frame_raw(uvarint) ]     (when type has bit 0x80)
//! ```
//! In a pack header the entries are in file order and contiguous: the first starts at 0 and
//! each starts where the previous ended; the header object starts where the last blob ends.
//! `length` is the stored (sealed) length, `raw_length` the plaintext length after
//! decompression.
//!
//! A *frame* (format 4, D57) is one sealed unit holding several small data blobs compressed
//! together. Each member has its own entry, flagged with bit 0x80 of the type byte: `offset`
//! and `length` are the frame's (shared by all its members), `inner` is where the member
//! starts in the frame's plaintext and `frame_raw` the frame's plaintext length. In a pack
//! header a frame's members are consecutive and tile the frame's plaintext in order.

use super::wire::{DecodeResult, Reader, Writer, err};
use super::{MAX_BLOB_LEN, PACK_TRAILER_LEN, SEAL_OVERHEAD};
use crate::id::{BlobId, BlobType};

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// Data or tree.
    pub blob_type: BlobType,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Stored (sealed) length.
    pub length: u64,
    /// Plaintext length.
    pub raw_length: u64,
    /// Set when the blob is a member of a frame: `offset` and `length` are then the frame's.
    pub frame: Option<FrameSlot>,
}

/// Where a frame member lies in its frame's plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameSlot {
    /// Offset of the member in the frame's plaintext.
    pub inner: u64,
    /// The frame's whole plaintext length.
    pub frame_raw: u64,
}

impl PackEntry {
    /// Offset just past this blob (past its frame, for a member).
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// This blob's share of the stored bytes: its sealed length, or for a frame member the
    /// frame's sealed length in proportion to the member's part of the plaintext (the shares
    /// of a frame's members add up to the frame's length, give or take rounding).
    pub fn stored_share(&self) -> u64 {
        stored_share(self.length, self.raw_length, self.frame)
    }
}

/// See [`PackEntry::stored_share`].
pub fn stored_share(length: u64, raw_length: u64, frame: Option<FrameSlot>) -> u64 {
    match frame {
        None => length,
        Some(f) if f.frame_raw == 0 => length,
        Some(f) => (u128::from(length) * u128::from(raw_length) / u128::from(f.frame_raw)) as u64,
    }
}

/// Type-byte flag of a frame member's entry.
pub const FRAME_MEMBER_FLAG: u8 = 0x80;

/// Splits entries in file order (a pack header) into stored units: a lone blob, or all the
/// members of one frame (consecutive entries at the same offset).
pub fn units(entries: &[PackEntry]) -> impl Iterator<Item = &[PackEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let n = if first.frame.is_some() {
            rest.iter()
                .take_while(|e| e.frame.is_some() && e.offset == first.offset)
                .count()
        } else {
            1
        };
        let (unit, tail) = rest.split_at(n);
        rest = tail;
        Some(unit)
    })
}

/// Smallest stored blob: a seal of the one compression byte and nothing else.
pub const MIN_STORED_BLOB: u64 = SEAL_OVERHEAD as u64 + 1;

pub(crate) fn encode_entry(w: &mut Writer, e: &PackEntry) {
    let flag = if e.frame.is_some() {
        FRAME_MEMBER_FLAG
    } else {
        0
    };
    w.u8(e.blob_type.code() | flag);
    w.id(&e.id.0);
    encode_place(w, e);
}

/// `offset || length || raw_length [|| inner || frame_raw]`: where an entry's blob is (also
/// the tail of the local cache's locations, format-spec 7.2).
pub(crate) fn encode_place(w: &mut Writer, e: &PackEntry) {
    w.uvarint(e.offset);
    w.uvarint(e.length);
    w.uvarint(e.raw_length);
    if let Some(f) = e.frame {
        w.uvarint(f.inner);
        w.uvarint(f.frame_raw);
    }
}

pub(crate) fn decode_entry(r: &mut Reader<'_>) -> DecodeResult<PackEntry> {
    let byte = r.u8()?;
    let code = byte & !FRAME_MEMBER_FLAG;
    let blob_type = match BlobType::from_code(code) {
        Some(t) => t,
        None => return err(format!("unknown blob type {byte}")),
    };
    let id = BlobId(r.id()?);
    let offset = r.uvarint()?;
    let length = r.uvarint()?;
    let raw_length = r.uvarint()?;
    let frame = if byte & FRAME_MEMBER_FLAG != 0 {
        if blob_type != BlobType::Data {
            return err(format!("tree blob {} in a frame", id.short()));
        }
        let inner = r.uvarint()?;
        let frame_raw = r.uvarint()?;
        if frame_raw > MAX_BLOB_LEN || inner.checked_add(raw_length).is_none_or(|e| e > frame_raw) {
            return err(format!(
                "blob {} lies outside its frame of {frame_raw} bytes",
                id.short()
            ));
        }
        Some(FrameSlot { inner, frame_raw })
    } else {
        None
    };
    if length < MIN_STORED_BLOB {
        return err(format!(
            "blob {} has impossible length {length}",
            id.short()
        ));
    }
    if raw_length > MAX_BLOB_LEN || length > MAX_BLOB_LEN + MIN_STORED_BLOB + 64 {
        return err(format!(
            "blob {} is larger than any vault writes",
            id.short()
        ));
    }
    if offset.checked_add(length).is_none() {
        return err("blob extent overflows");
    }
    Ok(PackEntry {
        blob_type,
        id,
        offset,
        length,
        raw_length,
        frame,
    })
}

/// Smallest encoded entry: type, id and three one-byte varints.
pub(crate) const MIN_ENTRY_LEN: usize = 1 + 32 + 3;

/// Encodes a pack header plaintext.
pub fn encode_pack_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.uvarint(entries.len() as u64);
    for e in entries {
        encode_entry(&mut w, e);
    }
    w.into_bytes()
}

/// Decodes a pack header plaintext, checking that the entries are contiguous from offset 0.
pub fn decode_pack_header(bytes: &[u8]) -> DecodeResult<Vec<PackEntry>> {
    let mut r = Reader::new(bytes);
    let n = r.count(MIN_ENTRY_LEN)?;
    if n == 0 {
        return err("pack header lists no blobs");
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(decode_entry(&mut r)?);
    }
    // Stored units (lone blobs and frames) are contiguous from 0; a frame's members share its
    // place and tile its plaintext in order.
    let mut next = 0u64;
    for unit in units(&entries) {
        let first = &unit[0];
        if first.offset != next {
            return err(format!(
                "blob {} at offset {} where {next} was expected",
                first.id.short(),
                first.offset
            ));
        }
        next = first.end();
        let Some(frame) = first.frame else { continue };
        let mut inner = 0;
        for e in unit {
            let slot = e.frame.expect("invariant: units groups frame members only");
            if slot.inner != inner || (e.length, slot.frame_raw) != (first.length, frame.frame_raw)
            {
                return err(format!(
                    "blob {} does not follow the previous member of its frame",
                    e.id.short()
                ));
            }
            inner += e.raw_length;
        }
        if inner != frame.frame_raw {
            return err(format!(
                "the frame at {} is not filled by its members",
                first.offset
            ));
        }
    }
    r.finish()?;
    Ok(entries)
}

/// The trailer that ends a pack: the header object's length, little-endian.
pub fn encode_trailer(header_obj_len: usize) -> [u8; PACK_TRAILER_LEN] {
    (header_obj_len as u32).to_le_bytes()
}

/// Reads the header object's length from the last four bytes of a pack of `pack_len` bytes and
/// returns the header object's offset.
pub fn decode_trailer(trailer: &[u8], pack_len: u64) -> DecodeResult<(u64, u64)> {
    if trailer.len() != PACK_TRAILER_LEN || pack_len < PACK_TRAILER_LEN as u64 {
        return err("pack is shorter than its trailer");
    }
    let len = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    let body = pack_len - PACK_TRAILER_LEN as u64;
    if len > body || len < (super::ENVELOPE_HEADER_LEN + SEAL_OVERHEAD) as u64 {
        return err(format!(
            "pack header length {len} does not fit a pack of {pack_len} bytes"
        ));
    }
    Ok((body - len, len))
}
