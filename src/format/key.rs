//! Key files: the master key wrapped by a password (`format-spec/04-keys-and-encryption.md`).
//!
//! ```text
//! KEYFILE = HEADER(8, kind 'K') || PARAMS || NONCE(24) || CIPHERTEXT(96) || TAG(16)
//! PARAMS  = kdf(u8 = 1: Argon2id v0x13) || m_cost_kib(uvarint) || t_cost(uvarint) ||
//!           p_cost(uvarint) || salt(bytes, 16..=64) || created(time) || hostname(str) || username(str)
//!           [|| capabilities(uvarint), version 2 only]
//! ```
//! A key file without restrictions is written at envelope version 1; one with capability bits
//! (bit 0: append-only) at version 2, which older readers refuse rather than ignore.
//! The additional data of the seal is `HEADER || PARAMS`, so no parameter can be changed
//! without the password failing. The 96 plaintext bytes are the master key:
//! `encryption_key(32) || id_key(32) || chunker_seed(32)`.

use super::envelope::{HeaderError, decode_header, encode_header_version};
use super::time::Timestamp;
use super::wire::{DecodeError, DecodeResult, Reader, Writer, err};
use super::{KDF_ARGON2ID, KEY_PART_LEN, KIND_KEY, SEAL_OVERHEAD};

/// Envelope version of key files that carry capabilities.
pub const KEY_VERSION_WITH_CAPABILITIES: u8 = 2;

/// Capability bit: the key never deletes or replaces objects (append-only client).
pub const CAP_APPEND_ONLY: u64 = 1;

/// Every capability bit this build knows.
pub const KNOWN_CAPABILITIES: u64 = CAP_APPEND_ONLY;

/// Length of the sealed master key inside a key file.
pub const SEALED_MASTER_LEN: usize = 3 * KEY_PART_LEN + SEAL_OVERHEAD;

/// Argon2id cost parameters, stored so that they can be tuned per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The defaults for new keys: 64 MiB, 3 passes, 1 lane (about 0.2 s on a current core).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    /// Refuses parameters that are too weak to be a KDF or too large to be honest (a forged key
    /// file must not make `open` allocate gigabytes).
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=4 * 1024 * 1024).contains(&self.m_cost_kib) {
            return Err(format!(
                "argon2 memory {} KiB out of range",
                self.m_cost_kib
            ));
        }
        if !(1..=64).contains(&self.t_cost) {
            return Err(format!("argon2 iterations {} out of range", self.t_cost));
        }
        if !(1..=64).contains(&self.p_cost) {
            return Err(format!("argon2 lanes {} out of range", self.p_cost));
        }
        if self.m_cost_kib < 8 * self.p_cost {
            return Err("argon2 memory must be at least 8 KiB per lane".into());
        }
        Ok(())
    }
}

/// A decoded key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// KDF cost parameters.
    pub kdf: KdfParams,
    /// Random salt for the KDF.
    pub salt: Vec<u8>,
    /// When the key was added.
    pub created: Timestamp,
    /// Host that added the key.
    pub hostname: String,
    /// User that added the key.
    pub username: String,
    /// Restrictions of the key (`CAP_*` bits; 0 for a full key, written at version 1).
    pub capabilities: u64,
    /// `NONCE || CIPHERTEXT || TAG` of the master key.
    pub sealed_master: Vec<u8>,
}

impl KeyFile {
    /// The bytes authenticated as additional data: `HEADER || PARAMS`.
    pub fn aad(&self) -> Vec<u8> {
        let version = if self.capabilities == 0 {
            1
        } else {
            KEY_VERSION_WITH_CAPABILITIES
        };
        let mut w = Writer::with_buffer(encode_header_version(KIND_KEY, version).to_vec());
        w.u8(KDF_ARGON2ID);
        w.uvarint(u64::from(self.kdf.m_cost_kib));
        w.uvarint(u64::from(self.kdf.t_cost));
        w.uvarint(u64::from(self.kdf.p_cost));
        w.bytes(&self.salt);
        self.created.encode(&mut w);
        w.str(&self.hostname);
        w.str(&self.username);
        if version >= KEY_VERSION_WITH_CAPABILITIES {
            w.uvarint(self.capabilities);
        }
        w.into_bytes()
    }
}

/// Encodes a whole key file.
pub fn encode_key_file(k: &KeyFile) -> Vec<u8> {
    let mut out = k.aad();
    out.extend_from_slice(&k.sealed_master);
    out
}

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The envelope header is wrong (including an unknown version).
    Header(HeaderError),
    /// The parameters do not decode or are out of range.
    Decode(DecodeError),
}

/// Decodes a whole key file (without unsealing the master key).
pub fn decode_key_file(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
    let (header, rest) = decode_header(bytes, KIND_KEY).map_err(KeyFileError::Header)?;
    decode_params(rest, header[6]).map_err(KeyFileError::Decode)
}

fn decode_params(rest: &[u8], version: u8) -> DecodeResult<KeyFile> {
    let mut r = Reader::new(rest);
    let kdf_id = r.u8()?;
    if kdf_id != KDF_ARGON2ID {
        return err(format!("unknown key derivation function {kdf_id}"));
    }
    let kdf = KdfParams {
        m_cost_kib: r.u32v()?,
        t_cost: r.u32v()?,
        p_cost: r.u32v()?,
    };
    kdf.validate().map_err(DecodeError)?;
    let salt = r.bytes()?.to_vec();
    if !(16..=64).contains(&salt.len()) {
        return err(format!("salt of {} bytes", salt.len()));
    }
    let created = Timestamp::decode(&mut r)?;
    let hostname = r.str()?.to_string();
    let username = r.str()?.to_string();
    let capabilities = if version >= KEY_VERSION_WITH_CAPABILITIES {
        let c = r.uvarint()?;
        if c == 0 {
            return err("a version-2 key file without capabilities (write version 1)");
        }
        if c & !KNOWN_CAPABILITIES != 0 {
            return err(format!("unknown key capabilities {c:#x}"));
        }
        c
    } else {
        0
    };
    if r.remaining() != SEALED_MASTER_LEN {
        return err(format!(
            "sealed master key is {} bytes, expected {SEALED_MASTER_LEN}",
            r.remaining()
        ));
    }
    let sealed_master = r.take(SEALED_MASTER_LEN)?.to_vec();
    Ok(KeyFile {
        kdf,
        salt,
        created,
        hostname,
        username,
        capabilities,
        sealed_master,
    })
}
