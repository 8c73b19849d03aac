//! Key files: adding, listing, removing and unlocking (`format-spec/04-keys-and-encryption.md`).
//!
//! Every key file wraps the same master key under a different password, so passwords can be
//! added, changed and revoked without re-encrypting anything. Revoking a key file does not
//! revoke knowledge of the master key by whoever could already open it (see the threat model).

use crate::backend::DynBackend;
use crate::crypto::{Cipher, MasterKey, derive_kek, random_bytes, storage_hash};
use crate::format::key::{KdfParams, KeyFile, KeyFileError, decode_key_file, encode_key_file};
use crate::format::layout::{Dir, key_path};
use crate::format::time::Timestamp;
use crate::format::{KEY_PART_LEN, envelope::HeaderError};
use crate::id::KeyId;
use crate::{Error, ObjectRef, Result};

/// A key file's public description (what `vault key list` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key file's id.
    pub id: KeyId,
    /// When it was added.
    pub created: Timestamp,
    /// Host that added it.
    pub hostname: String,
    /// User that added it.
    pub username: String,
    /// Its KDF parameters.
    pub kdf: KdfParams,
    /// Why it cannot be used, when it is damaged (it can still be removed).
    pub damaged: Option<String>,
    /// Restrictions (`CAP_*` bits; 0: a full key).
    pub capabilities: u64,
}

/// Wraps `key` under `password` and writes a new key file; returns its id.
pub fn write_key(
    backend: &DynBackend,
    key: &MasterKey,
    password: &[u8],
    kdf: &KdfParams,
) -> Result<KeyId> {
    write_key_with(backend, key, password, kdf, 0)
}

/// Like [`write_key`], for a key with `capabilities` (`CAP_*` restrictions).
pub fn write_key_with(
    backend: &DynBackend,
    key: &MasterKey,
    password: &[u8],
    kdf: &KdfParams,
    capabilities: u64,
) -> Result<KeyId> {
    let bytes = encode_new_key_with(key, password, kdf, capabilities)?;
    let id = KeyId(storage_hash(&bytes));
    backend.write(&key_path(&id), &bytes)?;
    Ok(id)
}

/// Builds the bytes of a key file (exposed for test vectors).
pub fn encode_new_key(key: &MasterKey, password: &[u8], kdf: &KdfParams) -> Result<Vec<u8>> {
    encode_new_key_with(key, password, kdf, 0)
}

/// Like [`encode_new_key`], with capability bits.
pub fn encode_new_key_with(
    key: &MasterKey,
    password: &[u8],
    kdf: &KdfParams,
    capabilities: u64,
) -> Result<Vec<u8>> {
    let mut salt = vec![0u8; 32];
    random_bytes(&mut salt)?;
    let mut kf = KeyFile {
        kdf: *kdf,
        salt,
        created: Timestamp::now(),
        hostname: crate::source::owner::hostname(),
        username: crate::source::owner::current_username(),
        capabilities,
        sealed_master: Vec::new(),
    };
    let kek = derive_kek(password, &kf.salt, kdf)?;
    kf.sealed_master = Cipher::new(&kek).seal(&kf.aad(), &key.to_bytes()[..])?;
    Ok(encode_key_file(&kf))
}

/// Tries to open one key file's bytes with a password.
pub fn open_key_bytes(bytes: &[u8], password: &[u8], id: KeyId) -> Result<Option<MasterKey>> {
    Ok(open_key(bytes, password, id)?.map(|(k, _)| k))
}

/// Like [`open_key_bytes`], also returning the key's capability bits.
fn open_key(bytes: &[u8], password: &[u8], id: KeyId) -> Result<Option<(MasterKey, u64)>> {
    let kf = decode_key_file(bytes).map_err(|e| match e {
        KeyFileError::Header(HeaderError::UnknownVersion(v)) => {
            Error::Unsupported(format!("key {id} uses format version {v}; upgrade vault"))
        }
        KeyFileError::Header(h) => Error::corrupt(ObjectRef::Key(id), h.to_string()),
        KeyFileError::Decode(d) => Error::corrupt(ObjectRef::Key(id), d.0),
    })?;
    let kek = derive_kek(password, &kf.salt, &kf.kdf)?;
    match Cipher::new(&kek).open(&kf.aad(), &kf.sealed_master) {
        Ok(plain) if plain.len() == 3 * KEY_PART_LEN => {
            let mut b = zeroize::Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
            b.copy_from_slice(&plain);
            let mut plain = plain;
            zeroize::Zeroize::zeroize(&mut plain);
            Ok(Some((MasterKey::from_bytes(&b), kf.capabilities)))
        }
        Ok(_) => Err(Error::corrupt(
            ObjectRef::Key(id),
            "master key has the wrong length",
        )),
        Err(_) => Ok(None),
    }
}

/// Finds the key file that `password` opens.
///
/// Damaged key files are skipped (another may still open); if none opens, the error is
/// [`Error::WrongPassword`] unless every key file was damaged, which is reported as such.
pub fn unlock(backend: &DynBackend, password: &[u8]) -> Result<(KeyId, MasterKey)> {
    unlock_with_capabilities(backend, password).map(|(id, k, _)| (id, k))
}

/// Like [`unlock`], also returning the key's capability bits.
pub fn unlock_with_capabilities(
    backend: &DynBackend,
    password: &[u8],
) -> Result<(KeyId, MasterKey, u64)> {
    let files = backend.list(Dir::Keys.name())?;
    let mut damaged = Vec::new();
    let mut tried = 0;
    for f in &files {
        let Some(raw) = Dir::Keys.name_of(&f.path) else {
            continue;
        };
        let id = KeyId(raw);
        let bytes = backend.read(&f.path)?;
        if storage_hash(&bytes) != raw {
            tracing::warn!(key = %id, "key file does not match its name; skipping it");
            damaged.push(Error::corrupt(
                ObjectRef::Key(id),
                "content does not match its name",
            ));
            continue;
        }
        tried += 1;
        match open_key(&bytes, password, id) {
            Ok(Some((k, caps))) => return Ok((id, k, caps)),
            Ok(None) => {}
            Err(e) if e.kind() == crate::ErrorKind::Unsupported => return Err(e),
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "skipping damaged key file");
                damaged.push(e);
            }
        }
    }
    if tried == 0 {
        return Err(damaged.pop().unwrap_or_else(|| Error::NotFound {
            object: ObjectRef::Path("keys/ (no key files)".into()),
        }));
    }
    if !damaged.is_empty() {
        // The key this password opens may be among the damaged ones: say so.
        return Err(Error::WrongPasswordOrDamagedKey {
            damaged: damaged
                .iter()
                .filter_map(|e| match e.object() {
                    Some(ObjectRef::Key(id)) => Some(id.short()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Err(Error::WrongPassword)
}

/// Lists the key files (their public parameters only; nothing is decrypted).
pub fn list_keys(backend: &DynBackend) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for f in backend.list(Dir::Keys.name())? {
        let Some(raw) = Dir::Keys.name_of(&f.path) else {
            continue;
        };
        let id = KeyId(raw);
        let bytes = backend.read(&f.path)?;
        let decoded = if storage_hash(&bytes) != raw {
            Err("content does not match its name".to_string())
        } else {
            decode_key_file(&bytes).map_err(|e| format!("does not decode: {e:?}"))
        };
        out.push(match decoded {
            Ok(kf) => KeyInfo {
                id,
                created: kf.created,
                hostname: kf.hostname,
                username: kf.username,
                kdf: kf.kdf,
                damaged: None,
                capabilities: kf.capabilities,
            },
            Err(why) => KeyInfo {
                id,
                created: Timestamp::default(),
                hostname: String::new(),
                username: String::new(),
                kdf: KdfParams::DEFAULT,
                damaged: Some(why),
                capabilities: 0,
            },
        });
    }
    out.sort_by_key(|k| k.created);
    Ok(out)
}

/// Removes a key file. Refuses to remove the last one, or the one in use unless `allow_current`.
pub fn remove_key(
    backend: &DynBackend,
    id: &KeyId,
    current: &KeyId,
    allow_current: bool,
) -> Result<()> {
    let keys = list_keys(backend)?;
    if !keys.iter().any(|k| k.id == *id) {
        return Err(Error::NotFound {
            object: ObjectRef::Key(*id),
        });
    }
    if keys
        .iter()
        .filter(|k| k.damaged.is_none() && k.id != *id)
        .count()
        == 0
    {
        return Err(Error::InvalidInput(
            "refusing to remove the last usable key: the repository would become unreadable".into(),
        ));
    }
    if id == current && !allow_current {
        return Err(Error::InvalidInput(
            "refusing to remove the key this session was opened with (use `vault key passwd` to change it)".into(),
        ));
    }
    backend.delete(&key_path(id))
}

/// Resolves a key id or unique prefix (at least 4 hex characters).
pub fn resolve_key(backend: &DynBackend, spec: &str) -> Result<KeyId> {
    let keys = list_keys(backend)?;
    crate::repo::snapshots::resolve_prefix(spec, keys.iter().map(|k| k.id.0), "key").map(KeyId)
}
