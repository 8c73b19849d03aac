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

/// The secret that unlocks a repository: three independent random 32-byte keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    encryption: [u8; KEY_PART_LEN],
    id_key: [u8; KEY_PART_LEN],
    chunker_seed: [u8; KEY_PART_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Fills `buf` from the operating system's random generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::io("getrandom", std::io::Error::other(e.to_string())))
}

impl MasterKey {
    /// Generates a fresh random master key.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
        random_bytes(&mut bytes[..])?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Builds a master key from its 96-byte serialisation.
    pub fn from_bytes(b: &[u8; 3 * KEY_PART_LEN]) -> Self {
        let mut k = MasterKey {
            encryption: [0; KEY_PART_LEN],
            id_key: [0; KEY_PART_LEN],
            chunker_seed: [0; KEY_PART_LEN],
        };
        k.encryption.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k.chunker_seed.copy_from_slice(&b[64..96]);
        k
    }

    /// The 96-byte serialisation `encryption || id_key || chunker_seed`.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 3 * KEY_PART_LEN]> {
        let mut out = Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
        out[..32].copy_from_slice(&self.encryption);
        out[32..64].copy_from_slice(&self.id_key);
        out[64..].copy_from_slice(&self.chunker_seed);
        out
    }

    /// The cipher that seals every repository object under this key.
    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.encryption)
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
