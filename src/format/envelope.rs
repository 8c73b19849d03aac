//! The 8-byte header that opens every stored object except packs (`format-spec/04-keys-and-encryption.md`).
//!
//! `"VAULT" || KIND(1) || VERSION(1) || FLAGS(1)` (flags: bit 0 re-sealed, others 0). The header is authenticated as the
//! additional data of the seal that follows it, so a kind or version byte cannot be altered, and
//! a reader learns the version before it tries to decrypt: an unknown version is refused as
//! unsupported rather than reported as damage.

use super::{ENVELOPE_HEADER_LEN, ENVELOPE_MAGIC, FORMAT_VERSION, KIND_LOCK};

/// The newest envelope version of objects of `kind`; readers accept `1..=` this. Lock objects
/// are written at version 2; key files at version 3; pack headers and index objects at
/// version 2, because they may list frame members (`format-spec/CHANGES.md`).
pub fn current_version(kind: u8) -> u8 {
    if kind == KIND_LOCK {
        super::lock::LOCK_VERSION_WITH_OWNER
    } else if kind == super::KIND_KEY {
        super::key::KEY_VERSION_RING
    } else if kind == super::KIND_PACK_HEADER || kind == super::KIND_INDEX {
        super::FRAMES_VERSION
    } else {
        1
    }
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than 8 bytes.
    Truncated,
    /// The first five bytes are not `VAULT`.
    BadMagic,
    /// The kind byte is not the one expected at this place.
    WrongKind {
        /// Expected kind byte.
        expected: u8,
        /// Kind byte found.
        found: u8,
    },
    /// A format version this build does not understand.
    UnknownVersion(u8),
    /// The reserved byte is not zero.
    Reserved(u8),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Truncated => f.write_str("shorter than its 8-byte header"),
            HeaderError::BadMagic => f.write_str("does not start with VAULT"),
            HeaderError::WrongKind { expected, found } => write!(
                f,
                "kind byte {:?} where {:?} was expected",
                *found as char, *expected as char
            ),
            HeaderError::UnknownVersion(v) => write!(
                f,
                "format version {v} (this vault reads versions up to {FORMAT_VERSION}); upgrade vault"
            ),
            HeaderError::Reserved(b) => write!(f, "unknown header flags {b:#04x}"),
        }
    }
}

/// The header for an object of `kind` in the current format version.
pub fn encode_header(kind: u8) -> [u8; ENVELOPE_HEADER_LEN] {
    encode_header_version(kind, current_version(kind))
}

/// The header for an object of `kind` at envelope `version`.
pub fn encode_header_version(kind: u8, version: u8) -> [u8; ENVELOPE_HEADER_LEN] {
    let mut h = [0u8; ENVELOPE_HEADER_LEN];
    h[..5].copy_from_slice(ENVELOPE_MAGIC);
    h[5] = kind;
    h[6] = version;
    h
}

/// Checks the header at the start of `bytes` and returns the header and the rest.
pub fn decode_header(bytes: &[u8], kind: u8) -> Result<(&[u8], &[u8]), HeaderError> {
    if bytes.len() < ENVELOPE_HEADER_LEN {
        return Err(HeaderError::Truncated);
    }
    let (h, rest) = bytes.split_at(ENVELOPE_HEADER_LEN);
    if &h[..5] != ENVELOPE_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if h[5] != kind {
        return Err(HeaderError::WrongKind {
            expected: kind,
            found: h[5],
        });
    }
    if h[6] == 0 || h[6] > current_version(kind) {
        return Err(HeaderError::UnknownVersion(h[6]));
    }
    // Key files are rewritten, never re-sealed in place: they carry no flags.
    let allowed = if kind == super::KIND_KEY {
        0
    } else {
        FLAG_RESEALED | FLAG_SEALED_TO_READER
    };
    if h[7] & !allowed != 0 {
        return Err(HeaderError::Reserved(h[7]));
    }
    Ok((h, rest))
}

/// Header flag (byte 7, bit 0): the object was re-sealed under a newer key epoch and kept its
/// name, so its name is not the hash of its bytes; the seal's additional data is
/// `HEADER || name(32)` instead of `HEADER`.
pub const FLAG_RESEALED: u8 = 0x01;

/// Header flag (byte 7, bit 1): written by a write-only key, sealed to the repository's reader
/// key; the body starts with the writer's ephemeral X25519 public key (4.8).
pub const FLAG_SEALED_TO_READER: u8 = 0x02;

/// Whether an envelope header carries [`FLAG_RESEALED`].
pub fn header_is_resealed(header: &[u8]) -> bool {
    header.len() >= ENVELOPE_HEADER_LEN && header[7] & FLAG_RESEALED != 0
}

/// Whether stored bytes are a re-sealed envelope, or a pack whose header object is one.
pub fn is_resealed(bytes: &[u8]) -> bool {
    if bytes.starts_with(ENVELOPE_MAGIC) {
        return header_is_resealed(bytes);
    }
    // A pack: the header object sits before the 4-byte trailer.
    let n = bytes.len();
    if n < 4 + ENVELOPE_HEADER_LEN {
        return false;
    }
    let len = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]) as usize;
    if len < ENVELOPE_HEADER_LEN || len > n - 4 {
        return false;
    }
    let h = &bytes[n - 4 - len..];
    h.starts_with(ENVELOPE_MAGIC) && header_is_resealed(h)
}

/// The header with [`FLAG_RESEALED`] set.
pub fn resealed_header(header: &[u8]) -> [u8; ENVELOPE_HEADER_LEN] {
    let mut h = [0u8; ENVELOPE_HEADER_LEN];
    h.copy_from_slice(&header[..ENVELOPE_HEADER_LEN]);
    h[7] |= FLAG_RESEALED;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_refusals() {
        let h = encode_header(b'S');
        assert_eq!(&h, b"VAULTS\x01\x00");
        let mut obj = h.to_vec();
        obj.extend_from_slice(b"rest");
        let (hdr, rest) = decode_header(&obj, b'S').unwrap();
        assert_eq!(hdr, &h);
        assert_eq!(rest, b"rest");
        assert_eq!(
            decode_header(&obj, b'I'),
            Err(HeaderError::WrongKind {
                expected: b'I',
                found: b'S'
            })
        );
        obj[6] = 2;
        assert_eq!(
            decode_header(&obj, b'S'),
            Err(HeaderError::UnknownVersion(2))
        );
        // Locks are at version 2 and still read version 1.
        let mut lock = encode_header(KIND_LOCK).to_vec();
        assert_eq!(lock[6], 2);
        assert!(decode_header(&lock, KIND_LOCK).is_ok());
        lock[6] = 1;
        assert!(decode_header(&lock, KIND_LOCK).is_ok());
        lock[6] = 3;
        assert_eq!(
            decode_header(&lock, KIND_LOCK),
            Err(HeaderError::UnknownVersion(3))
        );
        lock[6] = 0;
        assert_eq!(
            decode_header(&lock, KIND_LOCK),
            Err(HeaderError::UnknownVersion(0))
        );
        assert_eq!(decode_header(b"VAU", b'S'), Err(HeaderError::Truncated));
        assert_eq!(
            decode_header(b"XAULTS\x01\x00", b'S'),
            Err(HeaderError::BadMagic)
        );
    }
}
