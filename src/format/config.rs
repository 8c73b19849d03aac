//! The repository `config` object (`format-spec/05-config.md`).
//!
//! Plaintext layout, sealed in an envelope of kind `C`:
//! `repo_id(32) || created(time) || chunk_min(uvarint) || chunk_avg(uvarint) ||
//!  chunk_max(uvarint) || compression(u8) || compression_level(ivarint) || pack_size(uvarint)`.

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer, err};
use super::{COMPRESSION_NONE, COMPRESSION_ZSTD};
use crate::id::RepoId;

/// Content-defined chunking parameters, fixed for the life of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter than this (except a file's last).
    pub min_size: u32,
    /// Target average; must be a power of two.
    pub avg_size: u32,
    /// No chunk is longer than this.
    pub max_size: u32,
}

impl ChunkerParams {
    /// Smallest allowed average chunk size.
    pub const AVG_MIN: u32 = 1 << 12;
    /// Largest allowed average chunk size.
    pub const AVG_MAX: u32 = 1 << 23;
    /// Largest allowed maximum chunk size.
    pub const MAX_MAX: u32 = 1 << 24;

    /// Checks the constraints of `format-spec/10-chunking.md`.
    pub fn validate(&self) -> Result<(), String> {
        let ChunkerParams {
            min_size,
            avg_size,
            max_size,
        } = *self;
        if !avg_size.is_power_of_two() || !(Self::AVG_MIN..=Self::AVG_MAX).contains(&avg_size) {
            return Err(format!(
                "average chunk size {avg_size} must be a power of two in {}..={}",
                Self::AVG_MIN,
                Self::AVG_MAX
            ));
        }
        if min_size < 64 || min_size % 2 != 0 || min_size >= avg_size {
            return Err(format!(
                "minimum chunk size {min_size} must be even, at least 64 and below the average"
            ));
        }
        if max_size % 2 != 0 || max_size <= avg_size || max_size > Self::MAX_MAX {
            return Err(format!(
                "maximum chunk size {max_size} must be even, above the average and at most {}",
                Self::MAX_MAX
            ));
        }
        Ok(())
    }
}

/// How blobs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    None,
    /// zstd at the given level (1..=22, or negative "fast" levels).
    Zstd(i32),
}

/// The decoded `config` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random identity of the repository.
    pub repo_id: RepoId,
    /// When `init` ran.
    pub created: Timestamp,
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Compression of new blobs.
    pub compression: Compression,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
}

impl Config {
    /// Smallest allowed target pack size.
    pub const PACK_SIZE_MIN: u32 = 1 << 20;
    /// Largest allowed target pack size.
    pub const PACK_SIZE_MAX: u32 = 1 << 30;

    /// Checks every field's constraints.
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        if let Compression::Zstd(level) = self.compression
            && !(-7..=22).contains(&level)
        {
            return Err(format!("zstd level {level} is outside -7..=22"));
        }
        if !(Self::PACK_SIZE_MIN..=Self::PACK_SIZE_MAX).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} must be between {} and {}",
                self.pack_size,
                Self::PACK_SIZE_MIN,
                Self::PACK_SIZE_MAX
            ));
        }
        Ok(())
    }
}

/// Encodes the config plaintext.
pub fn encode_config(c: &Config) -> Vec<u8> {
    let mut w = Writer::new();
    w.id(&c.repo_id.0);
    c.created.encode(&mut w);
    w.uvarint(u64::from(c.chunker.min_size));
    w.uvarint(u64::from(c.chunker.avg_size));
    w.uvarint(u64::from(c.chunker.max_size));
    match c.compression {
        Compression::None => {
            w.u8(COMPRESSION_NONE);
            w.ivarint(0);
        }
        Compression::Zstd(level) => {
            w.u8(COMPRESSION_ZSTD);
            w.ivarint(i64::from(level));
        }
    }
    w.uvarint(u64::from(c.pack_size));
    w.into_bytes()
}

/// Decodes and validates the config plaintext.
pub fn decode_config(bytes: &[u8]) -> DecodeResult<Config> {
    let mut r = Reader::new(bytes);
    let repo_id = RepoId(r.id()?);
    let created = Timestamp::decode(&mut r)?;
    let chunker = ChunkerParams {
        min_size: r.u32v()?,
        avg_size: r.u32v()?,
        max_size: r.u32v()?,
    };
    let method = r.u8()?;
    let level = r.ivarint()?;
    let compression = match method {
        COMPRESSION_NONE if level == 0 => Compression::None,
        COMPRESSION_NONE => return err("compression level given without compression"),
        COMPRESSION_ZSTD => Compression::Zstd(
            i32::try_from(level).or_else(|_| err(format!("zstd level {level} out of range")))?,
        ),
        m => return err(format!("unknown compression method {m}")),
    };
    let pack_size = r.u32v()?;
    r.finish()?;
    let c = Config {
        repo_id,
        created,
        chunker,
        compression,
        pack_size,
    };
    c.validate().map_err(super::wire::DecodeError)?;
    Ok(c)
}
