//! Re-sealing stored objects under the current key epoch (`format-spec` 4.7).
//!
//! Re-encryption after a key rotation must not rename anything: snapshot ids are what users
//! type, holds and audit records name snapshots, audit records chain by name, and the index
//! names packs. A re-sealed object therefore keeps its name and carries the re-sealed flag in
//! its envelope header; its seal binds the name instead of the name being its hash. Blobs
//! keep their exact lengths, so a re-sealed pack has the same layout and the index stays
//! valid. Pure transformation of bytes: the caller reads and replaces.

use crate::crypto::blob_aad;
use crate::format::envelope::decode_header;
use crate::format::pack::decode_trailer;
use crate::format::{KIND_PACK_HEADER, PACK_TRAILER_LEN, SEAL_OVERHEAD};
use crate::{Error, ObjectRef, Result};

use super::Repository;

/// What re-sealing one object found.
#[derive(Debug)]
pub enum Resealed {
    /// Already sealed under the current epoch: nothing to write.
    Current,
    /// A pack written by a write-only key: its header carries the writer's ephemeral key, so
    /// re-sealed it would be shorter than the index says; it is repacked instead.
    Repack,
    /// New bytes for the same name; `from` is the epoch it was sealed under.
    Bytes {
        /// The re-sealed object.
        bytes: Vec<u8>,
        /// The retired epoch it was sealed under.
        from: u64,
    },
}

impl Repository {
    /// Re-seals an envelope of `kind` stored as `object` under the current epoch.
    pub fn reseal_envelope(&self, kind: u8, bytes: &[u8], object: &ObjectRef) -> Result<Resealed> {
        let (header, rest) = decode_header(bytes, kind)
            .map_err(|e| Error::corrupt(object.clone(), e.to_string()))?;
        let mut body = rest.to_vec();
        let (plain, epoch) = super::open_sealed_in_place(self.ring(), header, &mut body, object)?;
        let want = if super::is_shared_kind(kind) {
            crate::crypto::Via::Shared
        } else {
            crate::crypto::Via::Epoch
        };
        if epoch.via == want && epoch.epoch == self.master_key().epoch() {
            return Ok(Resealed::Current);
        }
        // Same header (kind and version: the plaintext is not re-encoded), name-bound.
        let out = self.seal_bound(header, object, plain);
        zeroize::Zeroize::zeroize(&mut body);
        Ok(Resealed::Bytes {
            bytes: out?,
            from: epoch.epoch,
        })
    }

    /// Re-seals the config with the shared key if it is not sealed with it yet (so that
    /// write-only keys can read it); returns whether it did.
    pub fn reseal_config_shared(&self) -> Result<bool> {
        let bytes = self.backend().read(crate::format::layout::CONFIG_PATH)?;
        match self.reseal_envelope(crate::format::KIND_CONFIG, &bytes, &ObjectRef::Config)? {
            Resealed::Current | Resealed::Repack => Ok(false),
            Resealed::Bytes { bytes, .. } => {
                self.backend()
                    .replace(crate::format::layout::CONFIG_PATH, &bytes)?;
                Ok(true)
            }
        }
    }

    /// Re-seals a whole pack: every blob and the header, same offsets and lengths.
    pub fn reseal_pack(&self, pack: &crate::id::PackId, bytes: &[u8]) -> Result<Resealed> {
        let object = ObjectRef::Pack(*pack);
        let entries = self.parse_pack(pack, bytes)?;
        let size = bytes.len() as u64;
        let (hdr_off, hdr_len) = decode_trailer(&bytes[bytes.len() - PACK_TRAILER_LEN..], size)
            .map_err(|e| Error::corrupt(object.clone(), e.0))?;
        let header_obj = &bytes[hdr_off as usize..(hdr_off + hdr_len) as usize];
        if header_obj.len() > 7
            && header_obj[7] & crate::format::envelope::FLAG_SEALED_TO_READER != 0
        {
            return Ok(Resealed::Repack);
        }
        let header = match self.reseal_envelope(KIND_PACK_HEADER, header_obj, &object)? {
            Resealed::Current => return Ok(Resealed::Current),
            Resealed::Repack => return Ok(Resealed::Repack),
            Resealed::Bytes { bytes, from } => (bytes, from),
        };
        let mut out = Vec::with_capacity(bytes.len());
        let mut buf = Vec::new();
        for unit in crate::format::pack::units(&entries) {
            let e = &unit[0];
            let sealed = &bytes[e.offset as usize..e.end() as usize];
            // A frame is one seal, bound to its plaintext length (D57).
            let aad = match e.frame {
                Some(f) => crate::crypto::frame_aad(e.blob_type, f.frame_raw).to_vec(),
                None => blob_aad(e.blob_type, &e.id).to_vec(),
            };
            buf.clear();
            buf.extend_from_slice(sealed);
            let blob = ObjectRef::Blob {
                blob_type: e.blob_type,
                id: e.id,
                pack: Some(*pack),
            };
            let plain = self.open_blob_slice(&aad, &mut buf, Some(pack), &blob)?;
            let mut sealed_new = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
            sealed_new.resize(crate::format::NONCE_LEN, 0);
            sealed_new.extend_from_slice(plain);
            self.cipher().seal_in_place(&aad, &mut sealed_new)?;
            debug_assert_eq!(sealed_new.len(), sealed.len());
            out.extend_from_slice(&sealed_new);
        }
        debug_assert_eq!(out.len() as u64, hdr_off);
        out.extend_from_slice(&header.0);
        out.extend_from_slice(&(header.0.len() as u32).to_le_bytes());
        Ok(Resealed::Bytes {
            bytes: out,
            from: header.1,
        })
    }
}
