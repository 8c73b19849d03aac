//! Blobs and packs on the read and write paths (`format-spec/06-packs.md`).
//!
//! Writing: `prepare_blob` hashes, compresses and seals one blob (pure CPU; called from the
//! engines' worker threads). Reading: `open_blob` authenticates, decompresses and re-hashes,
//! so every blob vault hands out is verified against its id. `read_pack_header` reads a pack's
//! trailer and sealed header with at most two ranged reads.

use crate::compress::{decode_payload, encode_payload_into};
use crate::crypto::{blob_aad, frame_aad};
use crate::format::layout::pack_path;
use crate::format::pack::{FrameSlot, PackEntry, decode_pack_header, decode_trailer};
use crate::format::{KIND_PACK_HEADER, PACK_TRAILER_LEN};
use crate::id::{BlobId, BlobType, PackId};
use crate::{Error, ObjectRef, Result};

use super::Repository;

/// A blob ready to be packed.
#[derive(Debug)]
pub struct PreparedBlob {
    /// Data or tree.
    pub blob_type: BlobType,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// `NONCE || CIPHERTEXT || TAG`.
    pub sealed: Vec<u8>,
    /// Plaintext length.
    pub raw_len: u64,
}

/// Frames kept for single-blob reads: the small files of one directory were stored by up to
/// one worker each (one open frame per worker), so reading them in order alternates between
/// that many frames.
const FRAMES_KEPT: usize = 8;

/// The plaintexts of the last few frames opened, by (pack, offset); bounded (a frame is at
/// most ~2.25 MiB). Opened (authenticated) plaintext only; every member taken from it is still
/// checked against its id.
pub struct FrameCache {
    kept: std::sync::Mutex<std::collections::VecDeque<FrameKept>>,
    capacity: usize,
}

type FrameKept = ((PackId, u64), std::sync::Arc<Vec<u8>>);

impl Default for FrameCache {
    fn default() -> Self {
        Self::new(FRAMES_KEPT)
    }
}

impl FrameCache {
    /// A cache of at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// The frame at `offset` in `pack`, if kept.
    pub fn get(&self, pack: PackId, offset: u64) -> Option<std::sync::Arc<Vec<u8>>> {
        let q = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .find(|(k, _)| *k == (pack, offset))
            .map(|(_, f)| f.clone())
    }

    /// Keeps a frame's plaintext (the oldest goes when full); returns the one that went, so
    /// that its buffer can be reused.
    pub fn put(
        &self,
        pack: PackId,
        offset: u64,
        frame: std::sync::Arc<Vec<u8>>,
    ) -> Option<std::sync::Arc<Vec<u8>>> {
        let mut q = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if self.capacity == 0 || q.iter().any(|(k, _)| *k == (pack, offset)) {
            return Some(frame);
        }
        let old = if q.len() >= self.capacity {
            q.pop_front().map(|(_, f)| f)
        } else {
            None
        };
        q.push_back(((pack, offset), frame));
        old
    }
}

/// How many bytes to read from a pack's end in the first attempt at its header.
const HEADER_GUESS: u64 = 16 * 1024;

impl Repository {
    /// Computes the id of a blob.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        self.hasher().blob_id(data)
    }

    /// Compresses and seals a blob whose id is already known.
    pub fn prepare_blob_with_id(
        &self,
        blob_type: BlobType,
        id: BlobId,
        data: &[u8],
    ) -> Result<PreparedBlob> {
        self.prepare_blob_into(blob_type, id, data, Vec::new())
    }

    /// Like [`Repository::prepare_blob_with_id`], reusing `buf`'s allocation for the sealed
    /// bytes (take it back from [`PreparedBlob::sealed`] afterwards).
    pub fn prepare_blob_into(
        &self,
        blob_type: BlobType,
        id: BlobId,
        data: &[u8],
        mut buf: Vec<u8>,
    ) -> Result<PreparedBlob> {
        encode_payload_into(data, self.config().compression, &mut buf);
        self.cipher()
            .seal_in_place(&blob_aad(blob_type, &id), &mut buf)?;
        Ok(PreparedBlob {
            blob_type,
            id,
            sealed: buf,
            raw_len: data.len() as u64,
        })
    }

    /// Hashes, compresses and seals a blob.
    pub fn prepare_blob(&self, blob_type: BlobType, data: &[u8]) -> Result<PreparedBlob> {
        let id = self.blob_id(data);
        self.prepare_blob_with_id(blob_type, id, data)
    }

    /// Compresses and seals the plaintext of a frame (small data blobs laid end to end) into
    /// `buf`'s allocation.
    pub fn prepare_frame_into(&self, plain: &[u8], mut buf: Vec<u8>) -> Result<Vec<u8>> {
        encode_payload_into(plain, self.config().compression, &mut buf);
        self.cipher()
            .seal_in_place(&frame_aad(BlobType::Data, plain.len() as u64), &mut buf)?;
        Ok(buf)
    }

    /// Opens a sealed frame (at `offset` in `pack`) in place and decompresses it into
    /// `scratch`. Its members are not verified here: [`Repository::frame_member`] checks each
    /// one's keyed hash. Damage is reported against the pack, naming the frame's offset.
    pub fn open_frame_ref<'a>(
        &self,
        frame_raw: u64,
        sealed: &'a mut [u8],
        pack: PackId,
        offset: u64,
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let aad = frame_aad(BlobType::Data, frame_raw);
        let payload = self
            .open_blob_slice(&aad, sealed, Some(&pack), &ObjectRef::Pack(pack))
            .map_err(|e| match e {
                Error::Corrupt { reason, .. } => frame_damage(pack, offset, reason),
                other => other,
            })?;
        crate::compress::decode_payload_ref(payload, frame_raw, scratch)
            .map_err(|e| frame_damage(pack, offset, e.0))
    }

    /// One member of an opened frame, verified against its id.
    pub fn frame_member<'a>(
        &self,
        blob_type: BlobType,
        id: BlobId,
        frame: &'a [u8],
        slot: FrameSlot,
        raw_len: u64,
        pack: Option<PackId>,
    ) -> Result<&'a [u8]> {
        let object = ObjectRef::Blob {
            blob_type,
            id,
            pack,
        };
        let data = slot
            .inner
            .checked_add(raw_len)
            .filter(|&end| end <= frame.len() as u64)
            .map(|end| &frame[slot.inner as usize..end as usize])
            .ok_or_else(|| Error::corrupt(object.clone(), "lies outside its frame"))?;
        if self.hasher().blob_id(data) != id {
            return Err(Error::corrupt(
                object,
                "plaintext does not hash to the blob id",
            ));
        }
        Ok(data)
    }

    /// Opens one stored unit of a pack (a lone blob, or a frame and all its members, as
    /// [`crate::format::pack::units`] yields them) in place and calls `f` with each entry and
    /// its verified plaintext or the reason it failed.
    pub fn open_unit(
        &self,
        pack: PackId,
        unit: &[PackEntry],
        sealed: &mut [u8],
        scratch: &mut Vec<u8>,
        f: &mut dyn FnMut(&PackEntry, Result<&[u8]>),
    ) {
        let Some(first) = unit.first() else { return };
        let Some(slot) = first.frame else {
            let r = self.open_blob_ref(
                first.blob_type,
                first.id,
                sealed,
                first.raw_length,
                Some(pack),
                scratch,
            );
            return f(first, r);
        };
        match self.open_frame_ref(slot.frame_raw, sealed, pack, first.offset, scratch) {
            Ok(frame) => {
                for e in unit {
                    let slot = e.frame.unwrap_or(slot);
                    f(
                        e,
                        self.frame_member(e.blob_type, e.id, frame, slot, e.raw_length, Some(pack)),
                    );
                }
            }
            Err(err) => {
                // Every member fails with its frame. Damage is named per member; another
                // failure (an outage, a write-only key) goes to the first member as it is.
                let damage = match &err {
                    Error::Corrupt { reason, .. } => Some(format!("in a damaged {reason}")),
                    _ => None,
                };
                let mut err = Some(err);
                for e in unit {
                    let member_err = match &damage {
                        Some(why) => Error::corrupt(
                            ObjectRef::Blob {
                                blob_type: e.blob_type,
                                id: e.id,
                                pack: Some(pack),
                            },
                            why.clone(),
                        ),
                        None => err.take().unwrap_or_else(|| {
                            Error::Aborted("its frame could not be opened".into())
                        }),
                    };
                    f(e, Err(member_err));
                }
            }
        }
    }

    /// Opens a sealed blob and verifies that its plaintext hashes to `id`.
    pub fn open_blob(
        &self,
        blob_type: BlobType,
        id: BlobId,
        mut sealed: Vec<u8>,
        raw_len: u64,
        pack: Option<PackId>,
    ) -> Result<Vec<u8>> {
        let object = ObjectRef::Blob {
            blob_type,
            id,
            pack,
        };
        let len = self
            .open_blob_slice(
                &blob_aad(blob_type, &id),
                &mut sealed,
                pack.as_ref(),
                &object,
            )?
            .len();
        sealed.truncate(crate::format::NONCE_LEN + len);
        sealed.drain(..crate::format::NONCE_LEN);
        let plain =
            decode_payload(sealed, raw_len).map_err(|e| Error::corrupt(object.clone(), e.0))?;
        if self.hasher().blob_id(&plain) != id {
            return Err(Error::corrupt(
                object,
                "plaintext does not hash to the blob id",
            ));
        }
        Ok(plain)
    }

    /// Like [`Repository::open_blob`], in place: decrypts inside `sealed`, decompresses into
    /// `scratch` (reused), verifies the id, and returns the plaintext without copying it.
    pub fn open_blob_ref<'a>(
        &self,
        blob_type: BlobType,
        id: BlobId,
        sealed: &'a mut [u8],
        raw_len: u64,
        pack: Option<PackId>,
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let object = ObjectRef::Blob {
            blob_type,
            id,
            pack,
        };
        let plain =
            self.open_blob_slice(&blob_aad(blob_type, &id), sealed, pack.as_ref(), &object)?;
        let data = crate::compress::decode_payload_ref(plain, raw_len, scratch)
            .map_err(|e| Error::corrupt(object.clone(), e.0))?;
        if self.hasher().blob_id(data) != id {
            return Err(Error::corrupt(
                object,
                "plaintext does not hash to the blob id",
            ));
        }
        Ok(data)
    }

    /// Loads and verifies one blob through the index. Tree blobs are served from local copies of
    /// their packs (fetched whole on first use), see `treecache`.
    pub fn load_blob(&self, blob_type: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        if self.is_write_only() {
            // Only its own trees, kept locally (`own`); nothing is read from the repository.
            let object = ObjectRef::Blob {
                blob_type,
                id: *id,
                pack: None,
            };
            return match blob_type {
                BlobType::Tree => self
                    .own_tree(id)
                    .ok_or_else(|| super::write_only_refusal(&object)),
                BlobType::Data => Err(super::write_only_refusal(&object)),
            };
        }
        let loc = self.index()?.get(blob_type, id)?.ok_or(Error::NotFound {
            object: ObjectRef::Blob {
                blob_type,
                id: *id,
                pack: None,
            },
        })?;
        self.load_blob_at(blob_type, id, &loc)
    }

    /// Loads and verifies one blob stored at `loc` (what the index says of it).
    pub fn load_blob_at(
        &self,
        blob_type: BlobType,
        id: &BlobId,
        loc: &super::BlobLocation,
    ) -> Result<Vec<u8>> {
        let loc = *loc;
        if blob_type == BlobType::Tree
            && let Some(cache) = self.tree_cache()
        {
            if let Some(plain) = self.tree_from_copy(&cache, id, &loc) {
                return Ok(plain);
            }
            // One whole-pack fetch at a time: memory stays at one pack whatever the number of
            // threads. Others read just their blob meanwhile (uncached).
            if let Ok(_only) = self.inner.tree_fetch.try_lock() {
                if let Some(plain) = self.tree_from_copy(&cache, id, &loc) {
                    return Ok(plain); // fetched by another thread just before
                }
                let bytes = self
                    .backend()
                    .read(&pack_path(&loc.pack))
                    .map_err(|e| relabel_missing(e, ObjectRef::Pack(loc.pack)))?;
                // The local copy is an optimisation: failing to keep it never fails a read.
                if let Err(e) = cache.store(&loc.pack, &bytes) {
                    tracing::warn!(pack = %loc.pack, error = %e, "could not keep a local copy of a tree pack");
                }
                let end = loc
                    .offset
                    .checked_add(loc.length)
                    .filter(|&e| e <= bytes.len() as u64);
                let Some(end) = end else {
                    return Err(Error::corrupt(
                        ObjectRef::Pack(loc.pack),
                        format!(
                            "{} bytes, but the index places a blob up to {}",
                            bytes.len(),
                            loc.offset + loc.length
                        ),
                    ));
                };
                let sealed = bytes[loc.offset as usize..end as usize].to_vec();
                drop(bytes);
                return self.open_blob(blob_type, *id, sealed, loc.raw_length, Some(loc.pack));
            }
        }
        if let Some(slot) = loc.frame
            && let Some(frame) = self.inner.frames.get(loc.pack, loc.offset)
        {
            return self
                .frame_member(blob_type, *id, &frame, slot, loc.raw_length, Some(loc.pack))
                .map(<[u8]>::to_vec);
        }
        let mut sealed = self
            .backend()
            .read_range(&pack_path(&loc.pack), loc.offset, loc.length)
            .map_err(|e| relabel_missing(e, ObjectRef::Pack(loc.pack)))?;
        let Some(slot) = loc.frame else {
            return self.open_blob(blob_type, *id, sealed, loc.raw_length, Some(loc.pack));
        };
        // Kept (see FrameCache): copied out of the worker's reused buffer.
        let frame = crate::buffers::with_scratch(|buf| {
            self.open_frame_ref(slot.frame_raw, &mut sealed, loc.pack, loc.offset, buf)
                .map(|f| std::sync::Arc::new(f.to_vec()))
        })?;
        drop(sealed);
        let member = self
            .frame_member(blob_type, *id, &frame, slot, loc.raw_length, Some(loc.pack))
            .map(<[u8]>::to_vec);
        self.inner.frames.put(loc.pack, loc.offset, frame);
        member
    }

    /// A tree blob from the local copy of its pack, if there is a good one (a copy that fails
    /// verification is removed and the blob is fetched again).
    fn tree_from_copy(
        &self,
        cache: &super::treecache::TreePackCache,
        id: &BlobId,
        loc: &super::BlobLocation,
    ) -> Option<Vec<u8>> {
        let sealed = cache.read(&loc.pack, loc.offset, loc.length)?;
        match self.open_blob(BlobType::Tree, *id, sealed, loc.raw_length, Some(loc.pack)) {
            Ok(plain) => Some(plain),
            Err(e) => {
                tracing::warn!(pack = %loc.pack, error = %e, "local copy of a tree pack is damaged; fetching it again");
                cache.remove(&loc.pack);
                None
            }
        }
    }

    /// Keeps a verified copy of a tree pack read for another reason (`check --verify-data`).
    pub fn cache_tree_pack(&self, pack: &PackId, bytes: &[u8]) -> Result<()> {
        if let Some(c) = self.tree_cache()
            && let Err(e) = c.store(pack, bytes)
        {
            tracing::warn!(%pack, error = %e, "could not keep a local copy of a tree pack");
        }
        Ok(())
    }

    /// Loads and decodes a tree blob.
    pub fn load_tree(&self, id: &BlobId) -> Result<crate::format::tree::Tree> {
        let bytes = self.load_blob(BlobType::Tree, id)?;
        crate::format::tree::decode_tree(&bytes).map_err(|e| {
            Error::corrupt(
                ObjectRef::Blob {
                    blob_type: BlobType::Tree,
                    id: *id,
                    pack: None,
                },
                e.0,
            )
        })
    }

    /// Reads and decodes a pack's header. `size` avoids a `stat` when the caller knows it.
    pub fn read_pack_header(&self, pack: &PackId, size: Option<u64>) -> Result<Vec<PackEntry>> {
        let path = pack_path(pack);
        let object = ObjectRef::Pack(*pack);
        let size = match size {
            Some(s) => s,
            None => {
                self.backend()
                    .stat(&path)
                    .map_err(|e| relabel_missing(e, object.clone()))?
                    .size
            }
        };
        if size < PACK_TRAILER_LEN as u64 {
            return Err(Error::corrupt(object, "shorter than a pack trailer"));
        }
        let first = HEADER_GUESS.min(size);
        let tail = self
            .backend()
            .read_range(&path, size - first, first)
            .map_err(|e| relabel_missing(e, object.clone()))?;
        let trailer = &tail[tail.len() - PACK_TRAILER_LEN..];
        let (hdr_off, hdr_len) =
            decode_trailer(trailer, size).map_err(|e| Error::corrupt(object.clone(), e.0))?;
        let mut tail = tail;
        if size - hdr_off <= first {
            let start = (hdr_off - (size - first)) as usize;
            let header_obj = &mut tail[start..start + hdr_len as usize];
            self.decode_pack_header_object(pack, header_obj, hdr_off)
        } else {
            drop(tail);
            let mut header_obj = self
                .backend()
                .read_range(&path, hdr_off, hdr_len)
                .map_err(|e| relabel_missing(e, object.clone()))?;
            self.decode_pack_header_object(pack, &mut header_obj, hdr_off)
        }
    }

    /// Reads the header of a whole pack held in memory (as `check --verify-data` does).
    pub fn parse_pack(&self, pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let object = ObjectRef::Pack(*pack);
        let size = bytes.len() as u64;
        if size < PACK_TRAILER_LEN as u64 {
            return Err(Error::corrupt(object, "shorter than a pack trailer"));
        }
        let (hdr_off, hdr_len) = decode_trailer(&bytes[bytes.len() - PACK_TRAILER_LEN..], size)
            .map_err(|e| Error::corrupt(object, e.0))?;
        // A copy: the caller's bytes stay as stored (verify keeps tree packs by their hash).
        let mut header = bytes[hdr_off as usize..(hdr_off + hdr_len) as usize].to_vec();
        // Blobs of a write-only key's pack open with the session its header names: remembered
        // now, so opening them asks the storage for nothing more.
        self.remember_session(pack, super::session_of_header(&header));
        self.decode_pack_header_object(pack, &mut header, hdr_off)
    }

    /// Opens a pack header object in place and decodes it.
    fn decode_pack_header_object(
        &self,
        pack: &PackId,
        header_obj: &mut [u8],
        hdr_off: u64,
    ) -> Result<Vec<PackEntry>> {
        let object = ObjectRef::Pack(*pack);
        let plain = self.open_object_in_place(KIND_PACK_HEADER, header_obj, object.clone())?;
        let entries = decode_pack_header(plain).map_err(|e| Error::corrupt(object.clone(), e.0))?;
        let end = entries.last().map(|e| e.end()).unwrap_or(0);
        if end != hdr_off {
            return Err(Error::corrupt(
                object,
                format!("blobs end at {end} but the header starts at {hdr_off}"),
            ));
        }
        Ok(entries)
    }
}

/// Damage of the frame at `offset` in `pack`.
fn frame_damage(pack: PackId, offset: u64, reason: String) -> Error {
    Error::corrupt(
        ObjectRef::Pack(pack),
        format!("frame at offset {offset}: {reason}"),
    )
}

/// Turns a backend error about a path (missing, truncated) into one naming the object.
pub(crate) fn relabel_missing(e: Error, object: ObjectRef) -> Error {
    match e {
        Error::NotFound { .. } => Error::NotFound { object },
        Error::Corrupt {
            object: ObjectRef::Path(_),
            reason,
        } => Error::Corrupt { object, reason },
        other => other,
    }
}
