//! Keys, hashing and authenticated encryption (`format-spec/03-ids-and-hashing.md`,
//! `format-spec/04-keys-and-encryption.md`).
//!
//! * Object names: unkeyed BLAKE3 of the stored bytes, so anyone can check an object's integrity.
//! * Blob ids: BLAKE3 keyed with the repository's id key, so the storage provider cannot confirm
//!   that a repository holds a known file.
//! * Sealing: XChaCha20-Poly1305 with a random 192-bit nonce per message; the output is
//!   `NONCE(24) || CIPHERTEXT || TAG(16)`.
//! * Password wrapping: Argon2id derives a key-encryption key that seals the master key.
//!
//! Pure: no I/O besides the OS random generator.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::format::key::KdfParams;
use crate::format::{GEAR_CONTEXT, KEY_PART_LEN, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use crate::id::{BlobId, BlobType};
use crate::{Error, Result};

/// The secret that unlocks a repository: the current encryption key, the keys of retired
/// epochs that still open older objects (the key ring), the id key, the chunker seed and, for
/// full keys, the ring authority that derives every key file's ring seal key
/// (`format-spec` 4.1, 4.6). Each epoch's encryption key also derives that epoch's shared key
/// (config, index, locks) and reader key pair (4.8). A write-only key holds no encryption key:
/// only the current epoch's shared key and reader public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    encryption: [u8; KEY_PART_LEN],
    id_key: [u8; KEY_PART_LEN],
    chunker_seed: [u8; KEY_PART_LEN],
    /// The epoch of `encryption` (0 for a repository that never rotated).
    epoch: u64,
    /// Older epochs' encryption keys, newest first.
    retired: Vec<(u64, [u8; KEY_PART_LEN])>,
    /// Derives ring seal keys; only full keys carry it.
    authority: Option<[u8; KEY_PART_LEN]>,
    /// Write-only keys: the current epoch's shared key.
    wo_shared: Option<[u8; KEY_PART_LEN]>,
    /// Write-only keys: the current epoch's reader public key.
    wo_reader_public: Option<[u8; KEY_PART_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(epoch {}, ..)", self.epoch)
    }
}

/// Fills `buf` from the operating system's random generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::io("getrandom", std::io::Error::other(e.to_string())))
}

/// A fresh random 32-byte key.
pub fn random_key() -> Result<[u8; KEY_PART_LEN]> {
    let mut k = [0u8; KEY_PART_LEN];
    random_bytes(&mut k)?;
    Ok(k)
}

/// The X25519 public key of a secret.
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// An epoch's shared key (seals config, index and lock objects; 4.8).
pub fn shared_key_of(encryption: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(SHARED_KEY_CONTEXT, encryption)
}

/// An epoch's reader X25519 secret (4.8).
pub fn reader_secret_of(encryption: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(READER_SECRET_CONTEXT, encryption)
}

/// The key of a message sealed to the reader (4.8): BLAKE3 derive_key over the X25519 shared
/// secret, the ephemeral public key and the reader's public key. `None` for an all-zero shared
/// secret (a low-order point: refused).
pub fn sealed_to_reader_key(
    dh: &[u8; 32],
    ephemeral_public: &[u8; 32],
    reader_public: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    if dh.iter().all(|b| *b == 0) {
        return None;
    }
    let mut h = blake3::Hasher::new_derive_key(SEALED_TO_READER_CONTEXT);
    h.update(dh);
    h.update(ephemeral_public);
    h.update(reader_public);
    Some(Zeroizing::new(*h.finalize().as_bytes()))
}

/// BLAKE3 context of keys sealed to the reader (4.8).
pub const SEALED_TO_READER_CONTEXT: &str = "vault 2026-11-30 sealed to reader v1";
/// BLAKE3 context of an epoch's shared key (4.8).
pub const SHARED_KEY_CONTEXT: &str = "vault 2026-11-30 shared key v1";
/// BLAKE3 context of an epoch's reader secret (4.8).
pub const READER_SECRET_CONTEXT: &str = "vault 2026-11-30 reader secret v1";

impl MasterKey {
    /// Generates a fresh random master key (epoch 0, with a ring authority).
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
        random_bytes(&mut bytes[..])?;
        let mut k = Self::from_bytes(&bytes);
        k.authority = Some(random_key()?);
        Ok(k)
    }

    /// Builds a master key from the 96-byte serialisation of a version-1/2 key file (epoch 0).
    /// A full legacy key derives its ring authority from the original keys (4.6).
    pub fn from_bytes(b: &[u8; 3 * KEY_PART_LEN]) -> Self {
        let mut k = MasterKey {
            encryption: [0; KEY_PART_LEN],
            id_key: [0; KEY_PART_LEN],
            chunker_seed: [0; KEY_PART_LEN],
            epoch: 0,
            retired: Vec::new(),
            authority: None,
            wo_shared: None,
            wo_reader_public: None,
        };
        k.encryption.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k.chunker_seed.copy_from_slice(&b[64..96]);
        k
    }

    /// Assembles a key from a decoded ring (`format::key::Ring`); `file_epoch` is the key
    /// file's public epoch (a write-only ring holds no epoch of its own).
    pub fn from_ring(ring: &crate::format::key::Ring, file_epoch: u64) -> Self {
        MasterKey {
            encryption: ring.epochs.first().map_or([0; KEY_PART_LEN], |e| e.1),
            id_key: ring.id_key,
            chunker_seed: ring.chunker_seed,
            epoch: ring.epochs.first().map_or(file_epoch, |e| e.0),
            retired: ring.epochs.iter().skip(1).copied().collect(),
            authority: ring.authority,
            wo_shared: ring.write_only.map(|w| w.0),
            wo_reader_public: ring.write_only.map(|w| w.1),
        }
    }

    /// The ring as stored in a key file with `capabilities`: full keys get everything;
    /// restricted ones no authority; write-only ones no encryption key, only the current
    /// epoch's shared key and reader public key.
    pub fn to_ring(&self, capabilities: u64) -> crate::format::key::Ring {
        use crate::format::key::{CAP_WRITE_ONLY, Ring};
        let write_only = capabilities & CAP_WRITE_ONLY != 0;
        let mut epochs = Vec::new();
        if !write_only {
            epochs.push((self.epoch, self.encryption));
            epochs.extend(self.retired.iter().copied());
        }
        Ring {
            id_key: self.id_key,
            chunker_seed: self.chunker_seed,
            authority: if capabilities == 0 {
                self.authority
            } else {
                None
            },
            epochs,
            write_only: write_only.then(|| (self.shared_key(), self.reader_public())),
        }
    }

    /// The legacy ring authority of a repository created before key files version 3:
    /// derived from the original encryption and id keys, so that every holder of an old key
    /// can upgrade it on its own.
    pub fn derive_legacy_authority(&mut self) {
        let mut m = Zeroizing::new([0u8; 2 * KEY_PART_LEN]);
        m[..32].copy_from_slice(&self.encryption);
        m[32..].copy_from_slice(&self.id_key);
        self.authority = Some(blake3::derive_key(LEGACY_AUTHORITY_CONTEXT, &m[..]));
    }

    /// The 96-byte serialisation `encryption || id_key || chunker_seed` (version-1 key files).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 3 * KEY_PART_LEN]> {
        let mut out = Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
        out[..32].copy_from_slice(&self.encryption);
        out[32..64].copy_from_slice(&self.id_key);
        out[64..].copy_from_slice(&self.chunker_seed);
        out
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The retired epochs still in the ring, newest first.
    pub fn retired_epochs(&self) -> Vec<u64> {
        self.retired.iter().map(|(e, _)| *e).collect()
    }

    /// Whether this key can derive ring seal keys (add keys, rotate).
    pub fn has_authority(&self) -> bool {
        self.authority.is_some()
    }

    /// Whether this is a write-only key (it holds no key that decrypts stored content).
    pub fn is_write_only(&self) -> bool {
        self.wo_shared.is_some()
    }

    /// The current epoch's shared key.
    pub fn shared_key(&self) -> [u8; 32] {
        self.wo_shared
            .unwrap_or_else(|| shared_key_of(&self.encryption))
    }

    /// The current epoch's reader public key.
    pub fn reader_public(&self) -> [u8; 32] {
        self.wo_reader_public
            .unwrap_or_else(|| x25519_public(&reader_secret_of(&self.encryption)))
    }

    /// The seal key of the ring in a key file with `salt` (4.6), if this key has the authority.
    pub fn ring_seal_key(&self, salt: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let a = self.authority.as_ref()?;
        let mut h = blake3::Hasher::new_derive_key(RING_SEAL_CONTEXT);
        h.update(a);
        h.update(salt);
        Some(Zeroizing::new(*h.finalize().as_bytes()))
    }

    /// A new epoch: a fresh encryption key; the current one joins the retired keys.
    pub fn rotated(&self, new_epoch: u64) -> Result<Self> {
        let mut k = self.clone();
        k.retired.insert(0, (self.epoch, self.encryption));
        k.epoch = new_epoch;
        k.encryption = random_key()?;
        Ok(k)
    }

    /// The same key without retired epochs (after every object was re-sealed).
    pub fn retire_old(&self) -> Self {
        let mut k = self.clone();
        k.retired.zeroize();
        k.retired.clear();
        k
    }

    /// The cipher of the current epoch's encryption key.
    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.encryption)
    }

    /// Ciphers for every epoch in the ring (current first), with each epoch's shared key and
    /// reader secret. A write-only key gets the current shared key and a fresh session sealed
    /// to the reader.
    pub fn cipher_ring(&self) -> Result<CipherRing> {
        let all: Vec<(u64, [u8; 32])> = if self.is_write_only() {
            Vec::new()
        } else {
            std::iter::once((self.epoch, self.encryption))
                .chain(self.retired.iter().copied())
                .collect()
        };
        let session = match self.wo_reader_public {
            Some(public) => Some(Session::new(&public)?),
            None => None,
        };
        let shared = match self.wo_shared {
            Some(k) => vec![(self.epoch, Cipher::new(&k))],
            None => all
                .iter()
                .map(|(e, k)| (*e, Cipher::new(&shared_key_of(k))))
                .collect(),
        };
        let readers = all
            .iter()
            .map(|(e, k)| {
                let s = reader_secret_of(k);
                (*e, x25519_dalek::StaticSecret::from(s), x25519_public(&s))
            })
            .collect();
        Ok(CipherRing {
            ciphers: all.iter().map(|(e, k)| (*e, Cipher::new(k))).collect(),
            shared,
            readers,
            session,
            sessions: std::sync::Mutex::new(std::collections::HashMap::new()),
            retired_opens: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The keyed hash that names blobs.
    pub fn hasher(&self) -> IdHasher {
        IdHasher { key: self.id_key }
    }

    /// The chunker's gear table, derived from the secret seed.
    pub fn gear_table(&self) -> Box<[u64; 256]> {
        gear_table(&self.chunker_seed)
    }
}

/// BLAKE3 context of ring seal keys (4.6).
pub const RING_SEAL_CONTEXT: &str = "vault 2026-11-30 key ring seal key v1";
/// BLAKE3 context of the legacy ring authority (4.6).
pub const LEGACY_AUTHORITY_CONTEXT: &str = "vault 2026-11-30 legacy ring authority v1";

/// Which kind of key opened a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// An epoch's encryption key.
    Epoch,
    /// An epoch's shared key.
    Shared,
    /// An epoch's reader secret (a message sealed to the reader).
    Reader,
}

/// What opened a message: the epoch and the kind of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The epoch of the key.
    pub epoch: u64,
    /// Which of the epoch's keys.
    pub via: Via,
}

/// A write-only session: one ephemeral X25519 key pair per process; everything it seals uses
/// the key derived from it and the reader's public key (4.8).
pub struct Session {
    /// The ephemeral public key, written in front of every envelope and pack header.
    pub ephemeral_public: [u8; 32],
    cipher: Cipher,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    fn new(reader_public: &[u8; 32]) -> Result<Self> {
        Self::with_secret(random_key()?, reader_public)
    }

    /// A session with a given ephemeral secret (test vectors only: it must be fresh).
    pub fn with_secret(secret: [u8; 32], reader_public: &[u8; 32]) -> Result<Self> {
        let secret = x25519_dalek::StaticSecret::from(secret);
        let ephemeral_public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*reader_public));
        let key = sealed_to_reader_key(dh.as_bytes(), &ephemeral_public, reader_public)
            .ok_or_else(|| {
                Error::InvalidInput("the reader's public key is a low-order point".into())
            })?;
        Ok(Session {
            ephemeral_public,
            cipher: Cipher::new(&key),
        })
    }

    /// The session's cipher.
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }
}

/// Ciphers with the epoch each belongs to.
type EpochCiphers = Vec<(u64, Cipher)>;

/// The keys of a ring, ready to use. Seals with the current epoch (or a write-only session);
/// opens by trying the current epoch first, then retired ones newest first (`format-spec` 4.2:
/// the epoch of a message is not stored; a tag that verifies under no key is damage). A
/// failed try costs one Poly1305 pass and leaves the buffer untouched.
pub struct CipherRing {
    ciphers: Vec<(u64, Cipher)>,
    shared: Vec<(u64, Cipher)>,
    readers: Vec<(u64, x25519_dalek::StaticSecret, [u8; 32])>,
    session: Option<Session>,
    /// Keys derived for ephemeral public keys already seen (bounded).
    sessions: std::sync::Mutex<std::collections::HashMap<[u8; 32], EpochCiphers>>,
    retired_opens: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CipherRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CipherRing({} epochs)", self.ciphers.len())
    }
}

impl CipherRing {
    /// The cipher every new blob is sealed with: the current epoch's, or a write-only
    /// session's.
    pub fn current(&self) -> &Cipher {
        match &self.session {
            Some(s) => &s.cipher,
            None => &self.ciphers[0].1,
        }
    }

    /// The current epoch's shared key.
    pub fn shared(&self) -> &Cipher {
        &self.shared[0].1
    }

    /// The write-only session, if this ring belongs to a write-only key.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Whether the ring can open stored content (every key but a write-only one).
    pub fn can_read(&self) -> bool {
        self.session.is_none()
    }

    /// Opens a message sealed to the reader with `ephemeral_public` in place, trying each
    /// epoch's reader secret; returns the plaintext and what opened it.
    pub fn open_from_writer<'a>(
        &self,
        ephemeral_public: &[u8; 32],
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Result<(&'a mut [u8], Opened), OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let candidates = {
            let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(ephemeral_public) {
                c.clone()
            } else {
                let peer = x25519_dalek::PublicKey::from(*ephemeral_public);
                let c: Vec<(u64, Cipher)> = self
                    .readers
                    .iter()
                    .filter_map(|(e, secret, public)| {
                        let dh = secret.diffie_hellman(&peer);
                        sealed_to_reader_key(dh.as_bytes(), ephemeral_public, public)
                            .map(|k| (*e, Cipher::new(&k)))
                    })
                    .collect();
                if cache.len() >= 4096 {
                    cache.clear();
                }
                cache.insert(*ephemeral_public, c.clone());
                c
            }
        };
        for (i, (epoch, c)) in candidates.iter().enumerate() {
            if c.try_open_in_place(aad, buf) {
                if i > 0 {
                    self.retired_opens
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let end = buf.len() - TAG_LEN;
                return Ok((
                    &mut buf[NONCE_LEN..end],
                    Opened {
                        epoch: *epoch,
                        via: Via::Reader,
                    },
                ));
            }
        }
        Err(OpenError)
    }

    /// Opens in place with whichever key of the ring verifies (epoch keys, then shared
    /// keys); returns the plaintext and what opened it.
    pub fn open_slice<'a>(
        &self,
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Result<(&'a mut [u8], Opened), OpenError> {
        self.open_slice_ordered(aad, buf, false)
    }

    /// Like [`CipherRing::open_slice`]; `shared_first` tries the shared keys before the
    /// epoch keys (config, index and lock objects are sealed with them: one failed Poly1305
    /// pass less per object, which adds up over large index objects).
    pub fn open_slice_ordered<'a>(
        &self,
        aad: &[u8],
        buf: &'a mut [u8],
        shared_first: bool,
    ) -> Result<(&'a mut [u8], Opened), OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let opened = self.open_any(aad, buf, shared_first)?;
        let end = buf.len() - TAG_LEN;
        Ok((&mut buf[NONCE_LEN..end], opened))
    }

    /// Opens a copy, like [`Cipher::open`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        self.open_any(aad, &mut buf, false)?;
        buf.truncate(buf.len() - TAG_LEN);
        buf.drain(..NONCE_LEN);
        Ok(buf)
    }

    /// Decrypts in place with the first key that verifies.
    fn open_any(
        &self,
        aad: &[u8],
        buf: &mut [u8],
        shared_first: bool,
    ) -> Result<Opened, OpenError> {
        let mut order = [(&self.ciphers, Via::Epoch), (&self.shared, Via::Shared)];
        if shared_first {
            order.swap(0, 1);
        }
        for (list, via) in order {
            for (i, (epoch, c)) in list.iter().enumerate() {
                if c.try_open_in_place(aad, buf) {
                    if i > 0 {
                        self.retired_opens
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Opened { epoch: *epoch, via });
                }
            }
        }
        Err(OpenError)
    }

    /// How many messages this session opened with a retired epoch's key.
    pub fn retired_opens(&self) -> u64 {
        self.retired_opens
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Computes blob ids: BLAKE3 keyed with the repository's id key.
#[derive(Clone)]
pub struct IdHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(..)")
    }
}

impl Drop for IdHasher {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl IdHasher {
    /// A hasher for the given id key (used by test vectors).
    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The id of a blob with plaintext `data`.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        // Large chunks hash on several SIMD lanes; rayon-based hashing is left to callers' pools.
        BlobId(*blake3::keyed_hash(&self.key, data).as_bytes())
    }
}

/// The name of a stored object: unkeyed BLAKE3 of its bytes.
pub fn storage_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Derives the 256-entry gear table for FastCDC from a chunker seed
/// (`format-spec/10-chunking.md`): the BLAKE3 XOF of `derive_key(GEAR_CONTEXT, seed)` read as
/// 256 little-endian `u64`s.
pub fn gear_table(seed: &[u8; 32]) -> Box<[u64; 256]> {
    let key = blake3::derive_key(GEAR_CONTEXT, seed);
    let mut xof = blake3::Hasher::new_keyed(&key).finalize_xof();
    let mut bytes = [0u8; 256 * 8];
    xof.fill(&mut bytes);
    let mut table = Box::new([0u64; 256]);
    for (i, v) in table.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *v = u64::from_le_bytes(b);
    }
    table
}

/// The additional data that binds a sealed blob to its type and id: `'B' || type || id`.
pub fn blob_aad(blob_type: BlobType, id: &BlobId) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[0] = crate::format::BLOB_AAD_TAG;
    aad[1] = blob_type.code();
    aad[2..].copy_from_slice(&id.0);
    aad
}

/// Additional data of a sealed frame: its tag, the members' type and the frame's plaintext
/// length. Members are bound by their keyed hashes, checked on their slices after opening.
pub fn frame_aad(blob_type: BlobType, frame_raw: u64) -> [u8; 10] {
    let mut aad = [0u8; 10];
    aad[0] = crate::format::FRAME_AAD_TAG;
    aad[1] = blob_type.code();
    aad[2..].copy_from_slice(&frame_raw.to_le_bytes());
    aad
}

/// Authentication failed: wrong key, or the bytes were damaged or tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// XChaCha20-Poly1305 under one key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A cipher for a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        let aead = XChaCha20Poly1305::new_from_slice(key).expect("invariant: key is 32 bytes");
        Self { aead }
    }

    /// Seals `plaintext` with a fresh random nonce: `NONCE || CIPHERTEXT || TAG`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        buf.resize(NONCE_LEN, 0);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(aad, &mut buf)?;
        Ok(buf)
    }

    /// Seals with a caller-chosen nonce. Only for test vectors: a nonce must never repeat.
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        buf.extend_from_slice(nonce);
        buf.extend_from_slice(plaintext);
        self.seal_prepared(aad, &mut buf);
        buf
    }

    /// Seals in place. `buf` holds `NONCE_LEN` placeholder bytes followed by the plaintext; on
    /// return it holds `NONCE || CIPHERTEXT || TAG`. Avoids copying large blobs.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        random_bytes(&mut buf[..NONCE_LEN])?;
        self.seal_prepared(aad, buf);
        Ok(())
    }

    fn seal_prepared(&self, aad: &[u8], buf: &mut Vec<u8>) {
        let (nonce, body) = buf.split_at_mut(NONCE_LEN);
        let nonce = XNonce::try_from(&*nonce).expect("invariant: nonce is 24 bytes");
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, aad, body.into())
            .expect("invariant: XChaCha20 accepts messages below 256 GiB");
        buf.extend_from_slice(tag.as_slice());
    }

    /// Opens `NONCE || CIPHERTEXT || TAG`, returning the plaintext.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        self.open_in_place(aad, &mut buf)?;
        Ok(buf)
    }

    /// Opens `NONCE || CIPHERTEXT || TAG` held in a mutable slice, decrypting in place; returns
    /// the plaintext part of the slice (no allocation, no copy).
    pub fn open_slice<'a>(&self, aad: &[u8], buf: &'a mut [u8]) -> Result<&'a mut [u8], OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let tag_at = buf.len() - TAG_LEN;
        let (head, tag) = buf.split_at_mut(tag_at);
        let tag = Tag::try_from(&*tag).map_err(|_| OpenError)?;
        let (nonce, body) = head.split_at_mut(NONCE_LEN);
        let nonce = XNonce::try_from(&*nonce).map_err(|_| OpenError)?;
        self.aead
            .decrypt_inout_detached(&nonce, aad, (&mut *body).into(), &tag)
            .map_err(|_| OpenError)?;
        Ok(body)
    }

    /// Decrypts `NONCE || CIPHERTEXT || TAG` in place if the tag verifies and says whether it
    /// did. chacha20poly1305 checks the tag before it applies the key stream, so on failure
    /// the buffer is unchanged and another key can be tried on the same bytes.
    pub fn try_open_in_place(&self, aad: &[u8], buf: &mut [u8]) -> bool {
        self.open_slice(aad, buf).is_ok()
    }

    /// Opens in place: on success `buf` holds the plaintext.
    pub fn open_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let tag_at = buf.len() - TAG_LEN;
        let tag = Tag::try_from(&buf[tag_at..]).map_err(|_| OpenError)?;
        let nonce = XNonce::try_from(&buf[..NONCE_LEN]).map_err(|_| OpenError)?;
        self.aead
            .decrypt_inout_detached(&nonce, aad, (&mut buf[NONCE_LEN..tag_at]).into(), &tag)
            .map_err(|_| OpenError)?;
        buf.truncate(tag_at);
        buf.drain(..NONCE_LEN);
        Ok(())
    }
}

/// Derives the key-encryption key from a password with Argon2id.
pub fn derive_kek(password: &[u8], salt: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| Error::InvalidInput(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    // The lanes of a pass are computed in parallel (the crate's `parallel` feature, through
    // rayon) on a pool of their own, never rayon's global one: a pool that cannot start is an
    // error here, where the global pool would panic, and no threads outlive the derivation.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads((kdf.p_cost as usize).clamp(1, cores))
        .thread_name(|i| format!("vault-kdf-{i}"))
        .build()
        .map_err(|e| Error::Aborted(format!("thread pool for the key derivation: {e}")))?;
    pool.install(|| argon.hash_password_into(password, salt, &mut out[..]))
        .map_err(|e| Error::InvalidInput(format!("argon2: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1: an independent known answer.
    #[test]
    fn xchacha20poly1305_draft_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce: [u8; 24] = core::array::from_fn(|i| 0x40 + i as u8);
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let sealed = Cipher::new(&key).seal_with_nonce(&nonce, &aad, pt);
        let expected_ct = "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e";
        let expected_tag = "c0875924c1c7987947deafd8780acf49";
        assert_eq!(hex::encode(&sealed[24..sealed.len() - 16]), expected_ct);
        assert_eq!(hex::encode(&sealed[sealed.len() - 16..]), expected_tag);
        assert_eq!(Cipher::new(&key).open(&aad, &sealed).unwrap(), pt);
    }

    #[test]
    fn wrong_aad_or_key_fails() {
        let c = Cipher::new(&[7; 32]);
        let sealed = c.seal(b"a", b"hello").unwrap();
        assert!(c.open(b"b", &sealed).is_err());
        assert!(Cipher::new(&[8; 32]).open(b"a", &sealed).is_err());
        assert!(c.open(b"a", &sealed[..10]).is_err());
    }

    #[test]
    fn gear_table_depends_on_seed() {
        let a = gear_table(&[1; 32]);
        let b = gear_table(&[2; 32]);
        assert_ne!(a[..], b[..]);
        assert_eq!(a[..], gear_table(&[1; 32])[..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_bit_flip_is_rejected(pt in proptest::collection::vec(any::<u8>(), 0..300), bit in any::<usize>()) {
            let c = Cipher::new(&[3; 32]);
            let mut sealed = c.seal(b"aad", &pt).unwrap();
            let i = bit % (sealed.len() * 8);
            sealed[i / 8] ^= 1 << (i % 8);
            prop_assert!(c.open(b"aad", &sealed).is_err());
        }
    }
}
