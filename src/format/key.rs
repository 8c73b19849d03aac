//! Key files: the key ring wrapped for a password (`format-spec/04-keys-and-encryption.md`).
//!
//! ```text
//! version 1/2: HEADER || PARAMS || SEAL(kek, MASTER(96))
//! version 3:   HEADER || PARAMS || SEAL(kek, RING_SEAL_KEY(32)) || epoch(uvarint) ||
//!              SEAL(RING_SEAL_KEY, aad = HEADER || PARAMS || epoch, RING)
//! PARAMS  = kdf(u8 = 1: Argon2id v0x13) || m_cost_kib(uvarint) || t_cost(uvarint) ||
//!           p_cost(uvarint) || salt(bytes, 16..=64) || created(time) || hostname(str) || username(str)
//!           [|| capabilities(uvarint), version 2 (non-zero) and 3]
//! RING    = id_key(32) || chunker_seed(32) || authority(opt 32) ||
//!           count(uvarint) || (epoch(uvarint) || encryption_key(32))*   newest first ||
//!           write_only(opt: shared_key(32) || reader_public(32))   (exactly when count = 0)
//! ```
//! Version 3 separates what the password protects (the ring seal key, which never changes)
//! from what rotation rewrites (the ring): a holder of the ring authority derives any key
//! file's ring seal key from its salt and rewrites its ring without knowing its password.

use super::envelope::{HeaderError, decode_header, encode_header_version};
use super::time::Timestamp;
use super::wire::{DecodeError, DecodeResult, Reader, Writer, err};
use super::{KDF_ARGON2ID, KEY_PART_LEN, KIND_KEY, SEAL_OVERHEAD};

/// Envelope version of key files that carry capabilities (legacy, still read).
pub const KEY_VERSION_WITH_CAPABILITIES: u8 = 2;

/// Envelope version of key files with a key ring (every key vault writes now).
pub const KEY_VERSION_RING: u8 = 3;

/// Length of the sealed ring seal key in a version-3 key file.
pub const SEALED_RING_KEY_LEN: usize = KEY_PART_LEN + SEAL_OVERHEAD;

/// At most this many epochs in one ring (a forged key file must not allocate without bound).
pub const MAX_RING_EPOCHS: usize = 1024;

/// Capability bit: the key never deletes or replaces objects (append-only client).
pub const CAP_APPEND_ONLY: u64 = 1;

/// Capability bit: the key holds no key that decrypts stored content; what it writes is sealed
/// to the repository's reader key (4.8). Always set together with [`CAP_APPEND_ONLY`].
pub const CAP_WRITE_ONLY: u64 = 2;

/// Every capability bit this build knows.
pub const KNOWN_CAPABILITIES: u64 = CAP_APPEND_ONLY | CAP_WRITE_ONLY;

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
    /// The defaults for new keys: 64 MiB, 3 passes, 4 lanes, RFC 9106's second recommended
    /// setting. Lanes cost an attacker the same memory and passes per guess as one lane does,
    /// but they are computed in parallel: about 0.05 s on two cores instead of 0.1 s on one,
    /// paid by every command that unlocks the repository (D62).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
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
    /// What the password unlocks.
    pub body: KeyBody,
}

/// The sealed part of a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyBody {
    /// Versions 1 and 2: `NONCE || CIPHERTEXT || TAG` of the 96-byte master key.
    Master(Vec<u8>),
    /// Version 3: the sealed ring seal key, the ring's epoch and the sealed ring.
    Ring {
        /// `SEAL(kek, ring seal key)`.
        sealed_ring_key: Vec<u8>,
        /// The current epoch of the ring (public: shows interrupted rotations).
        epoch: u64,
        /// `SEAL(ring seal key, RING)`.
        sealed_ring: Vec<u8>,
    },
}

/// The plaintext of a version-3 key file's ring.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Ring {
    /// Keys blob ids (never rotates: ids and dedup stay stable across epochs).
    pub id_key: [u8; KEY_PART_LEN],
    /// Seeds the chunker (never rotates).
    pub chunker_seed: [u8; KEY_PART_LEN],
    /// Derives ring seal keys; present only in full keys.
    pub authority: Option<[u8; KEY_PART_LEN]>,
    /// `(epoch, encryption key)`, current first, epochs strictly decreasing; empty exactly
    /// in a write-only key.
    pub epochs: Vec<(u64, [u8; KEY_PART_LEN])>,
    /// A write-only key's (shared key, reader public key) of the current epoch.
    pub write_only: Option<([u8; KEY_PART_LEN], [u8; KEY_PART_LEN])>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ring({} epochs, ..)", self.epochs.len())
    }
}

/// Encodes a ring's plaintext.
pub fn encode_ring(r: &Ring) -> zeroize::Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    w.raw(&r.id_key);
    w.raw(&r.chunker_seed);
    match &r.authority {
        Some(a) => {
            w.u8(1);
            w.raw(a);
        }
        None => w.u8(0),
    }
    w.uvarint(r.epochs.len() as u64);
    for (e, k) in &r.epochs {
        w.uvarint(*e);
        w.raw(k);
    }
    match &r.write_only {
        Some((shared, reader_public)) => {
            w.u8(1);
            w.raw(shared);
            w.raw(reader_public);
        }
        None => w.u8(0),
    }
    zeroize::Zeroizing::new(w.into_bytes())
}

/// Decodes a ring's plaintext; `epoch` is the key file's public epoch, which must be the
/// ring's first.
pub fn decode_ring(b: &[u8], epoch: u64) -> DecodeResult<Ring> {
    let mut r = Reader::new(b);
    let key = |r: &mut Reader<'_>| -> DecodeResult<[u8; KEY_PART_LEN]> {
        let mut k = [0u8; KEY_PART_LEN];
        k.copy_from_slice(r.take(KEY_PART_LEN)?);
        Ok(k)
    };
    let id_key = key(&mut r)?;
    let chunker_seed = key(&mut r)?;
    let authority = match r.u8()? {
        0 => None,
        1 => Some(key(&mut r)?),
        t => return err(format!("authority tag {t}")),
    };
    let count = r.uvarint()?;
    if count > MAX_RING_EPOCHS as u64 {
        return err(format!("a ring of {count} epochs"));
    }
    let mut epochs: Vec<(u64, [u8; KEY_PART_LEN])> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let e = r.uvarint()?;
        if epochs.last().is_some_and(|(prev, _)| *prev <= e) {
            return err("ring epochs are not strictly decreasing");
        }
        epochs.push((e, key(&mut r)?));
    }
    let write_only = match r.u8()? {
        0 => None,
        1 => Some((key(&mut r)?, key(&mut r)?)),
        t => return err(format!("write-only tag {t}")),
    };
    if r.remaining() != 0 {
        return err("trailing bytes after the ring");
    }
    match (epochs.first(), &write_only) {
        (None, Some(_)) if authority.is_none() => {}
        (Some((first, _)), None) if *first == epoch => {}
        (Some((first, _)), None) => {
            return err(format!(
                "ring starts at epoch {first} but the key file says {epoch}"
            ));
        }
        _ => return err("a ring must hold epochs or be a write-only ring, not both"),
    }
    Ok(Ring {
        id_key,
        chunker_seed,
        authority,
        epochs,
        write_only,
    })
}

impl KeyFile {
    /// The envelope version this key file is written at.
    pub fn version(&self) -> u8 {
        match self.body {
            KeyBody::Ring { .. } => KEY_VERSION_RING,
            KeyBody::Master(_) if self.capabilities == 0 => 1,
            KeyBody::Master(_) => KEY_VERSION_WITH_CAPABILITIES,
        }
    }

    /// The additional data of the ring's seal: `HEADER || PARAMS || epoch`.
    pub fn ring_aad(&self, epoch: u64) -> Vec<u8> {
        let mut w = Writer::with_buffer(self.aad());
        w.uvarint(epoch);
        w.into_bytes()
    }

    /// The bytes authenticated as additional data: `HEADER || PARAMS`.
    pub fn aad(&self) -> Vec<u8> {
        let version = self.version();
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
    match &k.body {
        KeyBody::Master(sealed) => out.extend_from_slice(sealed),
        KeyBody::Ring {
            sealed_ring_key,
            epoch,
            sealed_ring,
        } => {
            out.extend_from_slice(sealed_ring_key);
            let mut w = Writer::with_buffer(out);
            w.uvarint(*epoch);
            out = w.into_bytes();
            out.extend_from_slice(sealed_ring);
        }
    }
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
        if c == 0 && version == KEY_VERSION_WITH_CAPABILITIES {
            return err("a version-2 key file without capabilities (write version 1)");
        }
        if c & !KNOWN_CAPABILITIES != 0 {
            return err(format!("unknown key capabilities {c:#x}"));
        }
        c
    } else {
        0
    };
    let body = if version >= KEY_VERSION_RING {
        let sealed_ring_key = r.take(SEALED_RING_KEY_LEN)?.to_vec();
        let epoch = r.uvarint()?;
        let rest = r.remaining();
        // id, seed, authority, count and one epoch at the least.
        if rest < 2 * KEY_PART_LEN + 1 + 1 + 1 + KEY_PART_LEN + SEAL_OVERHEAD {
            return err(format!("sealed ring of {rest} bytes is too short"));
        }
        let sealed_ring = r.take(rest)?.to_vec();
        KeyBody::Ring {
            sealed_ring_key,
            epoch,
            sealed_ring,
        }
    } else {
        if r.remaining() != SEALED_MASTER_LEN {
            return err(format!(
                "sealed master key is {} bytes, expected {SEALED_MASTER_LEN}",
                r.remaining()
            ));
        }
        KeyBody::Master(r.take(SEALED_MASTER_LEN)?.to_vec())
    };
    Ok(KeyFile {
        kdf,
        salt,
        created,
        hostname,
        username,
        capabilities,
        body,
    })
}
