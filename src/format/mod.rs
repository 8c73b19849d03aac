//! The repository format: every magic number, version and byte layout vault writes.
//!
//! This module is pure: bytes in, bytes out; no I/O, no crypto, no threads. Each submodule
//! encodes and decodes one kind of plaintext object, canonically: `encode(decode(b)) == b` for
//! every accepted `b`, which the fuzz targets assert. Sealing (encryption) happens in
//! [`crate::crypto`]; putting the two together happens in [`crate::repo`].
//!
//! Normative description: `format-spec/` (chapter numbers are given per submodule).

pub mod audit;
pub mod config;
pub mod envelope;
pub mod fuzzing;
pub mod hold;
pub mod index;
pub mod key;
pub mod layout;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod time;
pub mod tree;
pub mod wal;
pub mod wire;

/// The newest repository format version this build reads and writes
/// (`format-spec/CHANGES.md`). Objects carry their own version in the envelope header; every
/// kind is at version 1 except lock objects, key files, pack headers and index objects.
pub const FORMAT_VERSION: u8 = 4;

/// First five bytes of every envelope (`format-spec/04-keys-and-encryption.md`).
pub const ENVELOPE_MAGIC: &[u8; 5] = b"VAULT";
/// Length of the envelope header: magic(5) || kind(1) || version(1) || reserved(1).
pub const ENVELOPE_HEADER_LEN: usize = 8;

/// Envelope kind byte of the `config` object.
pub const KIND_CONFIG: u8 = b'C';
/// Envelope kind byte of a key file.
pub const KIND_KEY: u8 = b'K';
/// Envelope kind byte of an index object.
pub const KIND_INDEX: u8 = b'I';
/// Envelope kind byte of a snapshot manifest.
pub const KIND_SNAPSHOT: u8 = b'S';
/// Envelope kind byte of a lock object.
pub const KIND_LOCK: u8 = b'L';
/// Envelope kind byte of a hold object.
pub const KIND_HOLD: u8 = b'H';
/// Envelope kind byte of an audit record.
pub const KIND_AUDIT: u8 = b'A';
/// Envelope kind byte of an archived PostgreSQL WAL file (`format-spec/15-postgresql.md`).
pub const KIND_WAL: u8 = b'W';
/// Envelope kind byte of a pack header (at the end of a pack file).
pub const KIND_PACK_HEADER: u8 = b'P';

/// Blob type code of a data (file content) blob.
pub const BLOB_TYPE_DATA: u8 = 0;
/// Blob type code of a tree (directory) blob.
pub const BLOB_TYPE_TREE: u8 = 1;

/// First byte of the additional data that binds a sealed blob to its type and id.
pub const BLOB_AAD_TAG: u8 = b'B';
/// First byte of the additional data that binds a sealed frame (several small data blobs
/// compressed together, `format-spec/06-packs.md`) to its plaintext length.
pub const FRAME_AAD_TAG: u8 = b'F';

/// Envelope version of pack headers and index objects that may hold frame members (format 4).
pub const FRAMES_VERSION: u8 = 2;

/// Compression byte: the blob's payload is stored as is.
pub const COMPRESSION_NONE: u8 = 0;
/// Compression byte: the blob's payload is one zstd frame.
pub const COMPRESSION_ZSTD: u8 = 1;

/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Length of the little-endian header-length trailer at the very end of a pack.
pub const PACK_TRAILER_LEN: usize = 4;

/// Version byte that opens every encoded tree.
pub const TREE_VERSION: u8 = 1;

/// Largest blob plaintext vault accepts when reading (guards allocation on damaged input).
pub const MAX_BLOB_LEN: u64 = 1 << 30;
/// Largest whole-object (index, snapshot, …) vault accepts when reading.
pub const MAX_OBJECT_LEN: u64 = 1 << 31;

/// Domain-separation context for deriving the chunker's gear table from the chunker seed.
pub const GEAR_CONTEXT: &str = "vault 2026-11 chunker gear table v1";

/// Lock kinds (`format-spec/09-locks.md`).
pub const LOCK_SHARED: u8 = 1;
/// An exclusive lock: no other lock may coexist with it.
pub const LOCK_EXCLUSIVE: u8 = 2;

/// Seconds after which a lock that was not refreshed is stale.
pub const LOCK_STALE_SECS: i64 = 30 * 60;
/// Seconds between refreshes of a held lock.
pub const LOCK_REFRESH_SECS: u64 = 5 * 60;

/// KDF identifier in key files: Argon2id, version 0x13.
pub const KDF_ARGON2ID: u8 = 1;

/// Length of each part of the master key.
pub const KEY_PART_LEN: usize = 32;
