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
/// (`format-spec/04-keys-and-encryption.md` 4.6).
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
        };
        k.encryption.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k.chunker_seed.copy_from_slice(&b[64..96]);
        k
    }

    /// Assembles a key from a decoded ring (`format::key::Ring`).
    pub fn from_ring(ring: &crate::format::key::Ring) -> Self {
        MasterKey {
            encryption: ring.epochs[0].1,
            id_key: ring.id_key,
            chunker_seed: ring.chunker_seed,
            epoch: ring.epochs[0].0,
            retired: ring.epochs[1..].to_vec(),
            authority: ring.authority,
        }
    }

    /// The ring as stored in a key file; `with_authority` false for restricted keys.
    pub fn to_ring(&self, with_authority: bool) -> crate::format::key::Ring {
        let mut epochs = vec![(self.epoch, self.encryption)];
        epochs.extend(self.retired.iter().copied());
        crate::format::key::Ring {
            id_key: self.id_key,
            chunker_seed: self.chunker_seed,
            authority: if with_authority { self.authority } else { None },
            epochs,
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

    /// Drops the ring authority (restricted keys never hold it).
    pub fn without_authority(&self) -> Self {
        let mut k = self.clone();
        k.authority = None;
        k
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

    /// The cipher that seals every new repository object under this key.
    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.encryption)
    }

    /// Ciphers for every epoch in the ring, current first.
    pub fn cipher_ring(&self) -> CipherRing {
        let mut ciphers = vec![(self.epoch, Cipher::new(&self.encryption))];
        ciphers.extend(self.retired.iter().map(|(e, k)| (*e, Cipher::new(k))));
        CipherRing {
            ciphers,
            retired_opens: std::sync::atomic::AtomicU64::new(0),
        }
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

/// The ciphers of every epoch in a key ring. Seals with the current epoch; opens by trying the
/// current epoch first, then retired ones newest first (`format-spec` 4.6: the epoch of a
/// message is not stored; a tag that verifies under no key is damage). A failed try costs one
/// Poly1305 pass and leaves the buffer untouched.
#[derive(Debug)]
pub struct CipherRing {
    ciphers: Vec<(u64, Cipher)>,
    retired_opens: std::sync::atomic::AtomicU64,
}

impl CipherRing {
    /// The cipher of the current epoch (every seal uses it).
    pub fn current(&self) -> &Cipher {
        &self.ciphers[0].1
    }

    /// Opens in place with whichever epoch's key verifies; returns the plaintext and the epoch.
    pub fn open_slice<'a>(
        &self,
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Result<(&'a mut [u8], u64), OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let epoch = self.open_any(aad, buf)?;
        let end = buf.len() - TAG_LEN;
        Ok((&mut buf[NONCE_LEN..end], epoch))
    }

    /// Opens a copy, like [`Cipher::open`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        self.open_in_place(aad, &mut buf)?;
        Ok(buf)
    }

    /// Opens in place, like [`Cipher::open_in_place`].
    pub fn open_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), OpenError> {
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        self.open_any(aad, buf)?;
        buf.truncate(buf.len() - TAG_LEN);
        buf.drain(..NONCE_LEN);
        Ok(())
    }

    /// Decrypts in place with the first key that verifies; returns its epoch.
    fn open_any(&self, aad: &[u8], buf: &mut [u8]) -> Result<u64, OpenError> {
        for (i, (epoch, c)) in self.ciphers.iter().enumerate() {
            if c.try_open_in_place(aad, buf) {
                if i > 0 {
                    self.retired_opens
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(*epoch);
            }
        }
        Err(OpenError)
    }

    /// How many messages this session opened with a retired epoch's key.
    pub fn retired_opens(&self) -> u64 {
        self.retired_opens
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the ring holds retired epochs.
    pub fn has_retired(&self) -> bool {
        self.ciphers.len() > 1
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
    argon
        .hash_password_into(password, salt, &mut out[..])
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
