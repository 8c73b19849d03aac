//! Blob payload compression (`format-spec/06-packs.md`, "Blob payload").
//!
//! A blob's sealed plaintext is `method(u8) || payload`: method 0 stores the bytes as they are,
//! method 1 is one zstd frame. zstd is used only when it makes the blob smaller, so
//! already-compressed data costs one failed attempt and no space. Decompression is bounded by
//! the expected plaintext length from the index, so damaged input cannot exhaust memory.

use crate::format::config::Compression;
use crate::format::{COMPRESSION_NONE, COMPRESSION_ZSTD, NONCE_LEN};

thread_local! {
    /// One compression context per thread, reused: creating a context per blob cost about 10 %
    /// of a snapshot's CPU time (measured with perf).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> Option<T>,
) -> Option<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        f(&mut slot.as_mut().expect("invariant: set above").1)
    })
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        f(slot.as_mut().expect("invariant: set above"))
    })
}

/// Builds `placeholder_nonce(NONCE_LEN) || method || payload` for [`crate::crypto::Cipher::seal_in_place`].
pub fn encode_payload(data: &[u8], compression: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    encode_payload_into(data, compression, &mut out);
    out
}

/// Like [`encode_payload`], into a caller-owned buffer (reused across blobs to avoid
/// allocating a chunk-sized buffer per blob).
pub fn encode_payload_into(data: &[u8], compression: Compression, out: &mut Vec<u8>) {
    out.clear();
    if let Compression::Zstd(level) = compression
        && data.len() >= 64
    {
        // Worst case for zstd is a little above the input; reserving it avoids reallocations.
        let bound = zstd::zstd_safe::compress_bound(data.len());
        out.reserve(NONCE_LEN + 1 + bound + crate::format::TAG_LEN);
        out.resize(NONCE_LEN + 1, 0);
        out[NONCE_LEN] = COMPRESSION_ZSTD;
        out.resize(NONCE_LEN + 1 + bound, 0);
        if let Some(n) = with_compressor(level, |c| {
            c.compress_to_buffer(data, &mut out[NONCE_LEN + 1..]).ok()
        }) && n < data.len()
        {
            out.truncate(NONCE_LEN + 1 + n);
            return;
        }
    }
    out.clear();
    out.reserve(NONCE_LEN + 1 + data.len() + crate::format::TAG_LEN);
    out.resize(NONCE_LEN, 0);
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(data);
}

/// Like [`encode_payload_into`] without the nonce placeholder, compressing one large input
/// with `workers` threads (zstd's multithreaded mode: still one frame). For a single large
/// object on a latency-bound path, such as one WAL segment per archive_command call, where
/// there is no other work to run in parallel.
pub fn encode_payload_parallel(
    data: &[u8],
    compression: Compression,
    workers: u32,
    out: &mut Vec<u8>,
) {
    out.clear();
    if let Compression::Zstd(level) = compression
        && data.len() >= 64
    {
        // Into spare capacity (a Vec is written without being zeroed first: zeroing a 16 MiB
        // bound cost more page faults than the compression itself), then the method byte.
        out.reserve(zstd::zstd_safe::compress_bound(data.len()) + 1);
        let n = zstd::bulk::Compressor::new(level).ok().and_then(|mut c| {
            if workers > 1 {
                // Falls back to one thread if the library was built without it.
                let _ = c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(workers));
            }
            c.compress_to_buffer(data, out).ok()
        });
        if let Some(n) = n
            && n < data.len()
        {
            out.truncate(n);
            out.insert(0, COMPRESSION_ZSTD);
            return;
        }
    }
    out.clear();
    out.push(COMPRESSION_NONE);
    out.extend_from_slice(data);
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError(pub String);

/// Decodes `method || payload` without copying stored payloads: returns a slice of `plain`
/// (method 0) or of `scratch`, into which zstd frames are decompressed (its allocation is
/// reused across calls). The result is exactly `raw_len` bytes.
pub fn decode_payload_ref<'a>(
    plain: &'a [u8],
    raw_len: u64,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], PayloadError> {
    let Some((&method, payload)) = plain.split_first() else {
        return Err(PayloadError("empty blob payload".into()));
    };
    match method {
        COMPRESSION_NONE if payload.len() as u64 == raw_len => Ok(payload),
        COMPRESSION_NONE => Err(PayloadError(format!(
            "stored blob has {} bytes, index says {raw_len}",
            payload.len()
        ))),
        COMPRESSION_ZSTD => {
            if raw_len > crate::format::MAX_BLOB_LEN {
                return Err(PayloadError(format!("blob length {raw_len} too large")));
            }
            scratch.clear();
            scratch.reserve_exact(raw_len as usize);
            // Decompression stops at the buffer's capacity: a frame promising more fails.
            let n = with_decompressor(|d| d.decompress_to_buffer(payload, scratch))
                .map_err(|e| PayloadError(format!("zstd: {e}")))?;
            if n as u64 != raw_len {
                return Err(PayloadError(format!(
                    "blob decompresses to {n} bytes, index says {raw_len}"
                )));
            }
            Ok(&scratch[..])
        }
        m => Err(PayloadError(format!("unknown compression method {m}"))),
    }
}

/// Decodes `method || payload` into exactly `raw_len` bytes.
pub fn decode_payload(plain: Vec<u8>, raw_len: u64) -> Result<Vec<u8>, PayloadError> {
    let Some((&method, payload)) = plain.split_first() else {
        return Err(PayloadError("empty blob payload".into()));
    };
    match method {
        COMPRESSION_NONE => {
            if payload.len() as u64 != raw_len {
                return Err(PayloadError(format!(
                    "stored blob has {} bytes, index says {raw_len}",
                    payload.len()
                )));
            }
            let mut plain = plain;
            plain.remove(0);
            Ok(plain)
        }
        COMPRESSION_ZSTD => {
            if raw_len > crate::format::MAX_BLOB_LEN {
                return Err(PayloadError(format!("blob length {raw_len} too large")));
            }
            // The capacity bounds the output: a frame that would decompress to more fails.
            let out = with_decompressor(|d| d.decompress(payload, raw_len as usize))
                .map_err(|e| PayloadError(format!("zstd: {e}")))?;
            if out.len() as u64 != raw_len {
                return Err(PayloadError(format!(
                    "blob decompresses to {} bytes, index says {raw_len}",
                    out.len()
                )));
            }
            Ok(out)
        }
        m => Err(PayloadError(format!("unknown compression method {m}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: &[u8]) -> Vec<u8> {
        v[NONCE_LEN..].to_vec()
    }

    #[test]
    fn compressible_data_is_compressed_and_round_trips() {
        let data = vec![b'a'; 100_000];
        let enc = body(&encode_payload(&data, Compression::Zstd(3)));
        assert_eq!(enc[0], COMPRESSION_ZSTD);
        assert!(enc.len() < 1000);
        assert_eq!(decode_payload(enc, data.len() as u64).unwrap(), data);
    }

    #[test]
    fn incompressible_data_is_stored() {
        let mut data = vec![0u8; 10_000];
        crate::crypto::random_bytes(&mut data).unwrap();
        let enc = body(&encode_payload(&data, Compression::Zstd(3)));
        assert_eq!(enc[0], COMPRESSION_NONE);
        assert_eq!(decode_payload(enc, 10_000).unwrap(), data);
    }

    #[test]
    fn length_mismatch_and_bombs_are_refused() {
        let data = vec![b'z'; 50_000];
        let enc = body(&encode_payload(&data, Compression::Zstd(3)));
        assert!(decode_payload(enc.clone(), 49_999).is_err());
        assert!(decode_payload(enc, 50_001).is_err());
        assert!(decode_payload(vec![9, 1, 2], 2).is_err());
        assert!(decode_payload(vec![], 0).is_err());
    }
}
