//! Key files: adding, listing, removing and unlocking (`format-spec/04-keys-and-encryption.md`).
//!
//! Every key file wraps the same key ring under a different password, so passwords can be
//! added, changed and revoked without re-encrypting anything. A holder of the ring authority
//! (any full key) rewrites every key file's ring without their passwords, which is how key
//! rotation reaches every password (`format-spec` 4.6). Revoking a key file does not revoke
//! knowledge of the ring by whoever could already open it: rotation plus re-encryption does.

use crate::backend::DynBackend;
use crate::crypto::{Cipher, MasterKey, derive_kek, random_bytes, storage_hash};
use crate::format::key::{
    KdfParams, KeyBody, KeyFile, KeyFileError, decode_key_file, decode_ring, encode_key_file,
    encode_ring,
};
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
    /// Envelope version (1 and 2: no key ring).
    pub version: u8,
    /// The epoch of the ring (version 3), public.
    pub epoch: Option<u64>,
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

/// Like [`encode_new_key`], with capability bits. Writes a version-3 key file; `key` must hold
/// the ring authority (only full keys add keys).
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
        body: KeyBody::Ring {
            sealed_ring_key: Vec::new(),
            epoch: key.epoch(),
            sealed_ring: Vec::new(),
        },
    };
    let ring_key = key.ring_seal_key(&kf.salt).ok_or_else(|| {
        Error::InvalidInput(
            "the key in use is restricted: only a full key can add keys or rotate".into(),
        )
    })?;
    let kek = derive_kek(password, &kf.salt, kdf)?;
    let sealed_ring_key = Cipher::new(&kek).seal(&kf.aad(), &ring_key[..])?;
    seal_ring(&mut kf, key, &ring_key, Some(sealed_ring_key))?;
    Ok(encode_key_file(&kf))
}

/// Seals `key`'s ring into `kf` (keeping its sealed ring seal key unless one is given).
/// Restricted keys get the ring without the authority.
fn seal_ring(
    kf: &mut KeyFile,
    key: &MasterKey,
    ring_key: &[u8; 32],
    new_sealed_ring_key: Option<Vec<u8>>,
) -> Result<()> {
    let ring = key.to_ring(kf.capabilities);
    let epoch = key.epoch();
    let plain = encode_ring(&ring);
    let sealed_ring = Cipher::new(ring_key).seal(&kf.ring_aad(epoch), &plain)?;
    let sealed_ring_key = match (new_sealed_ring_key, &kf.body) {
        (Some(k), _) => k,
        (
            None,
            KeyBody::Ring {
                sealed_ring_key, ..
            },
        ) => sealed_ring_key.clone(),
        (None, KeyBody::Master(_)) => {
            return Err(Error::InvalidInput(
                "a version-1 key file has no ring to rewrite".into(),
            ));
        }
    };
    kf.body = KeyBody::Ring {
        sealed_ring_key,
        epoch,
        sealed_ring,
    };
    Ok(())
}

/// Tries to open one key file's bytes with a password.
pub fn open_key_bytes(bytes: &[u8], password: &[u8], id: KeyId) -> Result<Option<MasterKey>> {
    Ok(open_key(bytes, password, id)?.map(|u| u.key))
}

/// What a password opened.
pub struct Unlocked {
    /// The key file's id.
    pub id: KeyId,
    /// The key ring.
    pub key: MasterKey,
    /// The key's restrictions.
    pub capabilities: u64,
    /// The key file's envelope version (1 and 2 cannot take part in rotation).
    pub version: u8,
}

/// The key files in `keys/` (well-formed names only), each read when the caller gets to it
/// (unlocking stops at the first that opens): its bytes, `None` where they do not hash to the
/// name (damaged, truncated or renamed).
fn key_files(
    backend: &DynBackend,
) -> Result<impl Iterator<Item = Result<(KeyId, Option<Vec<u8>>)>> + '_> {
    let listed = backend.list(Dir::Keys.name())?;
    Ok(listed.into_iter().filter_map(move |f| {
        let raw = Dir::Keys.name_of(&f.path)?;
        Some(
            backend
                .read(&f.path)
                .map(|bytes| (KeyId(raw), (storage_hash(&bytes) == raw).then_some(bytes))),
        )
    }))
}

fn decode_checked(bytes: &[u8], id: KeyId) -> Result<KeyFile> {
    decode_key_file(bytes).map_err(|e| match e {
        KeyFileError::Header(HeaderError::UnknownVersion(v)) => {
            Error::Unsupported(format!("key {id} uses format version {v}; upgrade vault"))
        }
        KeyFileError::Header(h) => Error::corrupt(ObjectRef::Key(id), h.to_string()),
        KeyFileError::Decode(d) => Error::corrupt(ObjectRef::Key(id), d.0),
    })
}

/// Opens one key file with a password; `None` when the password is not this key's.
fn open_key(bytes: &[u8], password: &[u8], id: KeyId) -> Result<Option<Unlocked>> {
    let kf = decode_checked(bytes, id)?;
    let kek = derive_kek(password, &kf.salt, &kf.kdf)?;
    let version = kf.version();
    let key = match &kf.body {
        KeyBody::Master(sealed) => match Cipher::new(&kek).open(&kf.aad(), sealed) {
            Ok(plain) if plain.len() == 3 * KEY_PART_LEN => {
                let mut b = zeroize::Zeroizing::new([0u8; 3 * KEY_PART_LEN]);
                b.copy_from_slice(&plain);
                let mut plain = plain;
                zeroize::Zeroize::zeroize(&mut plain);
                let mut k = MasterKey::from_bytes(&b);
                if kf.capabilities == 0 {
                    k.derive_legacy_authority();
                }
                k
            }
            Ok(_) => {
                return Err(Error::corrupt(
                    ObjectRef::Key(id),
                    "master key has the wrong length",
                ));
            }
            Err(_) => return Ok(None),
        },
        KeyBody::Ring {
            sealed_ring_key, ..
        } => {
            let Ok(rk) = Cipher::new(&kek).open(&kf.aad(), sealed_ring_key) else {
                return Ok(None);
            };
            let rk = zeroize::Zeroizing::new(rk);
            let Ok(ring_key) = <[u8; 32]>::try_from(&rk[..]) else {
                return Err(Error::corrupt(
                    ObjectRef::Key(id),
                    "ring seal key has the wrong length",
                ));
            };
            let ring_key = zeroize::Zeroizing::new(ring_key);
            // The password is right: a ring that does not open is damage, not "wrong password".
            open_ring(&kf, &ring_key, id)?
        }
    };
    Ok(Some(Unlocked {
        id,
        key,
        capabilities: kf.capabilities,
        version,
    }))
}

/// Opens a version-3 key file's ring with its ring seal key.
fn open_ring(kf: &KeyFile, ring_key: &[u8; 32], id: KeyId) -> Result<MasterKey> {
    let KeyBody::Ring {
        epoch, sealed_ring, ..
    } = &kf.body
    else {
        return Err(Error::corrupt(
            ObjectRef::Key(id),
            "not a version-3 key file",
        ));
    };
    let plain = Cipher::new(ring_key)
        .open(&kf.ring_aad(*epoch), sealed_ring)
        .map_err(|_| {
            Error::corrupt(
                ObjectRef::Key(id),
                "its key ring does not open (damaged, or not written by this repository's keys)",
            )
        })?;
    let plain = zeroize::Zeroizing::new(plain);
    let ring = decode_ring(&plain, *epoch).map_err(|e| Error::corrupt(ObjectRef::Key(id), e.0))?;
    if kf.capabilities != 0 && ring.authority.is_some() {
        return Err(Error::corrupt(
            ObjectRef::Key(id),
            "a restricted key that carries the ring authority",
        ));
    }
    if (kf.capabilities & crate::format::key::CAP_WRITE_ONLY != 0) != ring.epochs.is_empty() {
        return Err(Error::corrupt(
            ObjectRef::Key(id),
            "its capabilities and its ring disagree about write-only access",
        ));
    }
    Ok(MasterKey::from_ring(&ring, *epoch))
}

/// A key file as seen by a holder of the ring authority (rotation).
pub struct RingView {
    /// The key file's id.
    pub id: KeyId,
    /// Its decoded parameters.
    pub file: KeyFile,
    /// Its ring, when it is a version-3 key file whose ring the authority opens.
    pub ring: std::result::Result<MasterKey, String>,
}

/// Reads every key file and opens each ring with `authority`'s derived seal keys, without any
/// password. A ring that does not open was not written with this authority (a legacy key, a
/// damaged or a foreign key file): rotation never hands a ring to such a file.
pub fn ring_views(backend: &DynBackend, authority: &MasterKey) -> Result<Vec<RingView>> {
    let mut out = Vec::new();
    for file in key_files(backend)? {
        let (id, bytes) = file?;
        let Some(bytes) = bytes else { continue };
        let Ok(file) = decode_checked(&bytes, id) else {
            continue;
        };
        let ring = match (&file.body, authority.ring_seal_key(&file.salt)) {
            (KeyBody::Master(_), _) => Err(format!(
                "key {} is a version-{} key file (no key ring)",
                id.short(),
                file.version()
            )),
            (KeyBody::Ring { .. }, None) => Err("no ring authority".into()),
            (KeyBody::Ring { .. }, Some(rk)) => {
                open_ring(&file, &rk, id).map_err(|e| e.to_string())
            }
        };
        out.push(RingView { id, file, ring });
    }
    Ok(out)
}

/// Rewrites one version-3 key file with `key`'s ring (new epoch or fewer retired epochs):
/// writes the new file, then deletes the old one. Returns the new id.
pub fn rewrite_ring(backend: &DynBackend, view: &RingView, key: &MasterKey) -> Result<KeyId> {
    let ring_key = key
        .ring_seal_key(&view.file.salt)
        .ok_or_else(|| Error::InvalidInput("the key in use holds no ring authority".into()))?;
    let mut kf = view.file.clone();
    seal_ring(&mut kf, key, &ring_key, None)?;
    let bytes = encode_key_file(&kf);
    let id = KeyId(storage_hash(&bytes));
    if id != view.id {
        match backend.write(&key_path(&id), &bytes) {
            Ok(()) => {}
            // Written by an interrupted run: the same bytes cannot be (random nonce), but be
            // tolerant of a retried write that did land.
            Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        backend.delete(&key_path(&view.id))?;
    }
    Ok(id)
}

/// Rewrites the key file `id` (opened with `password`) as a version-3 key file with `key`'s
/// ring, keeping its password and parameters' costs; deletes the old file. Returns the new id.
pub fn upgrade_key(
    backend: &DynBackend,
    id: &KeyId,
    key: &MasterKey,
    password: &[u8],
    capabilities: u64,
) -> Result<KeyId> {
    let bytes = backend.read(&key_path(id))?;
    let kf = decode_checked(&bytes, *id)?;
    let new = write_key_with(backend, key, password, &kf.kdf, capabilities)?;
    backend.delete(&key_path(id))?;
    Ok(new)
}

/// Finds the key file that `password` opens.
///
/// Damaged key files are skipped (another may still open); if none opens, the error is
/// [`Error::WrongPassword`] unless every key file was damaged, which is reported as such.
pub fn unlock(backend: &DynBackend, password: &[u8]) -> Result<(KeyId, MasterKey)> {
    unlock_key(backend, password).map(|u| (u.id, u.key))
}

/// Like [`unlock`], also returning the key's capability bits and version.
pub fn unlock_key(backend: &DynBackend, password: &[u8]) -> Result<Unlocked> {
    let mut damaged = Vec::new();
    let mut tried = 0;
    for file in key_files(backend)? {
        let (id, bytes) = file?;
        let Some(bytes) = bytes else {
            tracing::warn!(key = %id, "key file does not match its name; skipping it");
            damaged.push(Error::corrupt(
                ObjectRef::Key(id),
                "content does not match its name",
            ));
            continue;
        };
        tried += 1;
        match open_key(&bytes, password, id) {
            Ok(Some(u)) => return Ok(u),
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
    for file in key_files(backend)? {
        let (id, bytes) = file?;
        let decoded = match bytes {
            None => Err("content does not match its name".to_string()),
            Some(b) => decode_key_file(&b).map_err(|e| format!("does not decode: {e:?}")),
        };
        out.push(match decoded {
            Ok(kf) => KeyInfo {
                id,
                version: kf.version(),
                created: kf.created,
                hostname: kf.hostname,
                username: kf.username,
                kdf: kf.kdf,
                damaged: None,
                capabilities: kf.capabilities,
                epoch: match kf.body {
                    KeyBody::Ring { epoch, .. } => Some(epoch),
                    KeyBody::Master(_) => None,
                },
            },
            Err(why) => KeyInfo {
                id,
                created: Timestamp::default(),
                hostname: String::new(),
                username: String::new(),
                kdf: KdfParams::DEFAULT,
                damaged: Some(why),
                capabilities: 0,
                version: 0,
                epoch: None,
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
