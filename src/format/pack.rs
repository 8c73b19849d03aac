//! Pack files and their headers (`format-spec/06-packs.md`).
//!
//! ```text
//! PACK        = BLOB_0 || … || BLOB_n-1 || HEADER_OBJ || HEADER_LEN(4, u32 little-endian)
//! BLOB_i      = NONCE(24) || CIPHERTEXT || TAG(16)       (see crypto; AAD binds type and id)
//! HEADER_OBJ  = envelope of kind 'P' sealing the header plaintext
//! plaintext   = count(uvarint ≥ 1) || ENTRY*count
//! ENTRY       = type(u8) || id(32) || offset(uvarint) || length(uvarint) || raw_length(uvarint)
//! ```
//! In a pack header the entries are in file order and contiguous: the first starts at 0 and
//! each starts where the previous ended; the header object starts where the last blob ends.
//! `length` is the stored (sealed) length, `raw_length` the plaintext length after
//! decompression.

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
}

impl PackEntry {
    /// Offset just past this blob.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Smallest stored blob: a seal of the one compression byte and nothing else.
pub const MIN_STORED_BLOB: u64 = SEAL_OVERHEAD as u64 + 1;

pub(crate) fn encode_entry(w: &mut Writer, e: &PackEntry) {
    w.u8(e.blob_type.code());
    w.id(&e.id.0);
    w.uvarint(e.offset);
    w.uvarint(e.length);
    w.uvarint(e.raw_length);
}

pub(crate) fn decode_entry(r: &mut Reader<'_>) -> DecodeResult<PackEntry> {
    let code = r.u8()?;
    let blob_type = match BlobType::from_code(code) {
        Some(t) => t,
        None => return err(format!("unknown blob type {code}")),
    };
    let id = BlobId(r.id()?);
    let offset = r.uvarint()?;
    let length = r.uvarint()?;
    let raw_length = r.uvarint()?;
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
    let mut next = 0u64;
    for _ in 0..n {
        let e = decode_entry(&mut r)?;
        if e.offset != next {
            return err(format!(
                "blob {} at offset {} where {next} was expected",
                e.id.short(),
                e.offset
            ));
        }
        next = e.end();
        entries.push(e);
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
