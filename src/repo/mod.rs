//! The repository: the one place where bytes, crypto and storage meet.
//!
//! A [`Repository`] is an unlocked repository: a backend, the master key and the config. It
//! seals and opens objects (`format-spec/04`), reads and writes blobs, packs and index objects,
//! keeps the local blob index ([`index::BlobIndex`], backed by RocksDB) in step with the
//! backend, and takes locks. The engines in `archiver`, `restorer`, `checker` and `pruner` use
//! this layer and never the backend directly.

pub mod adopt;
pub mod audit;
pub mod blob;
pub mod cache;
pub mod index;
pub mod keys;
pub mod lock;
pub mod memo;
pub mod own;
pub mod packer;
pub mod process;
pub mod reseal;
pub mod snapshots;
pub mod staging;
mod treecache;
pub mod wal;
pub mod walker;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::backend::DynBackend;
use crate::crypto::{Cipher, CipherRing, IdHasher, MasterKey, storage_hash};
use crate::format::config::{ChunkerParams, Compression, Config, decode_config, encode_config};
use crate::format::envelope::{HeaderError, decode_header, encode_header};
use crate::format::key::KdfParams;
use crate::format::layout::{CONFIG_PATH, Dir};
use crate::format::time::Timestamp;
use crate::format::{KIND_CONFIG, MAX_OBJECT_LEN};
use crate::id::{KeyId, RepoId};
use crate::{Error, ObjectRef, Result};

pub use index::{BlobIndex, BlobLocation};

/// Choices made once, at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Compression of blobs.
    pub compression: Compression,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: DEFAULT_CHUNKER,
            compression: Compression::Zstd(2),
            pack_size: 16 << 20,
            kdf: KdfParams::DEFAULT,
        }
    }
}

/// Default chunking: 256 KiB minimum, 512 KiB average, 4 MiB maximum. The measurements behind
/// it (database dumps and file trees) are in `docs/decisions.md` (D12).
pub const DEFAULT_CHUNKER: ChunkerParams = ChunkerParams {
    min_size: 256 * 1024,
    avg_size: 512 * 1024,
    max_size: 4 * 1024 * 1024,
};

/// How to open a repository.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Root of the local cache; the repository's cache lives in `<root>/<repo id>`.
    /// `None` uses a private temporary directory that is removed on exit.
    pub cache_root: Option<PathBuf>,
    /// Where temporary files and databases go (the caller decides; the library reads no
    /// environment).
    pub temp_dir: PathBuf,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            cache_root: None,
            temp_dir: PathBuf::from("/tmp"),
        }
    }
}

/// A location known to hold a repository, not yet unlocked (see [`Repository::locate`]).
#[derive(Debug)]
pub struct Located {
    backend: DynBackend,
    config_bytes: Vec<u8>,
}

impl Located {
    /// Unlocks the repository with `password`.
    pub fn unlock(self, password: &[u8], options: OpenOptions) -> Result<Repository> {
        let keys::Unlocked {
            id: key_id,
            key,
            capabilities: caps,
            version,
        } = keys::unlock_key(&self.backend, password)?;
        // An append-only key gets a client that can never delete, whatever the caller asked.
        let backend: DynBackend = if caps & crate::format::key::CAP_APPEND_ONLY != 0 {
            Arc::new(crate::backend::appendonly::AppendOnlyBackend::new(
                self.backend,
            ))
        } else {
            self.backend
        };
        let repo =
            Repository::open_with_key(backend, key_id, key, caps, &self.config_bytes, options)?;
        repo.inner
            .key_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
        Ok(repo)
    }
}

/// An unlocked repository. Cheap to clone: clones share one session (key, config, index).
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: DynBackend,
    key: MasterKey,
    /// The current epoch's cipher seals; every epoch in the ring opens.
    ring: CipherRing,
    /// The envelope version of the key file that unlocked this session.
    key_version: std::sync::atomic::AtomicU8,
    hasher: IdHasher,
    config: Config,
    key_id: KeyId,
    options: OpenOptions,
    index: RwLock<Option<Arc<BlobIndex>>>,
    /// Held while a whole tree pack is fetched (one at a time, see `blob`).
    tree_fetch: std::sync::Mutex<()>,
    /// The plaintexts of the frames opened last by single-blob reads (`load_blob`): reading
    /// the small files of one directory one by one opens each frame once, not once per file.
    frames: blob::FrameCache,
    /// The capability bits of the key in use (`format::key::CAP_*`).
    capabilities: u64,
    /// The ephemeral public key of packs sealed to the reader (`None`: an ordinary pack).
    pack_sessions: std::sync::Mutex<std::collections::HashMap<crate::id::PackId, Option<[u8; 32]>>>,
}

/// A handle that does not keep the repository alive (held by its own index).
pub(crate) type WeakRepository = std::sync::Weak<Inner>;

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.inner.backend.location())
    }
}

impl InitOptions {
    /// Checks the settings a repository would be created with.
    pub fn validate(&self) -> Result<()> {
        let probe = Config {
            repo_id: RepoId([0; 32]),
            created: Timestamp::now(),
            chunker: self.chunker,
            compression: self.compression,
            pack_size: self.pack_size,
        };
        probe.validate().map_err(Error::InvalidInput)?;
        self.kdf.validate().map_err(Error::InvalidInput)
    }
}

impl Repository {
    /// Creates a new repository at an empty location and returns it unlocked.
    pub fn init(
        backend: DynBackend,
        password: &[u8],
        init: &InitOptions,
        options: OpenOptions,
    ) -> Result<Self> {
        // Settings are checked before the location is touched: a failed init creates nothing.
        init.validate()?;
        if backend.exists(CONFIG_PATH)? {
            return Err(Error::AlreadyExists(format!(
                "a repository at {}",
                backend.location()
            )));
        }
        if !backend.list(Dir::Keys.name())?.is_empty() || !backend.list("data")?.is_empty() {
            return Err(Error::AlreadyExists(format!(
                "data at {} (not an empty location)",
                backend.location()
            )));
        }
        let mut repo_id = [0u8; 32];
        crate::crypto::random_bytes(&mut repo_id)?;
        let config = Config {
            repo_id: RepoId(repo_id),
            created: Timestamp::now(),
            chunker: init.chunker,
            compression: init.compression,
            pack_size: init.pack_size,
        };
        backend.create()?;
        let key = MasterKey::generate()?;
        let key_id = keys::write_key(&backend, &key, password, &init.kdf)?;
        let repo = Self::assemble(backend, key, key_id, 0, config, options)?;
        let sealed = repo.seal_object(KIND_CONFIG, &encode_config(repo.config()))?;
        // The config goes last: a location with a config is a complete repository.
        repo.backend().write(CONFIG_PATH, &sealed)?;
        Ok(repo)
    }

    /// Checks that `backend` holds a repository (reads its config) without unlocking it, so
    /// that "no repository" is said before any password is asked for.
    pub fn locate(backend: DynBackend) -> Result<Located> {
        match backend.read(CONFIG_PATH) {
            Ok(config_bytes) => Ok(Located {
                backend,
                config_bytes,
            }),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Err(Error::NoRepository {
                location: backend.location(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens and unlocks an existing repository.
    pub fn open(backend: DynBackend, password: &[u8], options: OpenOptions) -> Result<Self> {
        Self::locate(backend)?.unlock(password, options)
    }

    fn open_with_key(
        backend: DynBackend,
        key_id: KeyId,
        key: MasterKey,
        capabilities: u64,
        config_bytes: &[u8],
        options: OpenOptions,
    ) -> Result<Self> {
        let ring = key.cipher_ring()?;
        let plain = open_envelope(&ring, KIND_CONFIG, config_bytes, ObjectRef::Config)?;
        let config = decode_config(&plain).map_err(|e| Error::corrupt(ObjectRef::Config, e.0))?;
        Self::assemble(backend, key, key_id, capabilities, config, options)
    }

    fn assemble(
        backend: DynBackend,
        key: MasterKey,
        key_id: KeyId,
        capabilities: u64,
        config: Config,
        options: OpenOptions,
    ) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                ring: key.cipher_ring()?,
                key_version: std::sync::atomic::AtomicU8::new(crate::format::key::KEY_VERSION_RING),
                hasher: key.hasher(),
                backend,
                key,
                config,
                key_id,
                options,
                index: RwLock::new(None),
                tree_fetch: std::sync::Mutex::new(()),
                frames: blob::FrameCache::default(),
                capabilities,
                pack_sessions: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The same repository with another key ring (after a rotation or retirement of epochs):
    /// a new session sharing the backend, config and options, with its own index handle.
    pub fn with_key(&self, key: MasterKey) -> Result<Repository> {
        let version = self.key_version();
        let r = Self::assemble(
            self.inner.backend.clone(),
            key,
            self.inner.key_id,
            self.inner.capabilities,
            self.inner.config.clone(),
            self.inner.options.clone(),
        )?;
        r.inner
            .key_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
        Ok(r)
    }

    /// Whether the key in use is write-only: it can add snapshots but read nothing stored.
    pub fn is_write_only(&self) -> bool {
        self.inner.key.is_write_only()
    }

    /// Drops every local copy of a tree pack (their bytes were re-sealed in the repository).
    pub fn clear_tree_cache(&self) {
        if let Some(t) = self.tree_cache() {
            t.retain(&std::collections::HashSet::new());
        }
    }

    pub(crate) fn downgrade(&self) -> WeakRepository {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &WeakRepository) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    /// The capability bits of the key in use (`format::key::CAP_*`; 0: a full key).
    pub fn key_capabilities(&self) -> u64 {
        self.inner.capabilities
    }

    /// The storage backend (for layers that copy or inspect raw objects, such as `check`).
    pub fn backend(&self) -> &DynBackend {
        &self.inner.backend
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key file that unlocked this session.
    pub fn key_id(&self) -> KeyId {
        self.inner.key_id
    }

    /// The master key (for adding key files).
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.key
    }

    pub(crate) fn cipher(&self) -> &Cipher {
        self.inner.ring.current()
    }

    /// Every epoch's cipher (opening tries them in turn).
    pub(crate) fn ring(&self) -> &CipherRing {
        &self.inner.ring
    }

    /// The envelope version of the key file in use (1 or 2: a legacy key without a ring).
    pub fn key_version(&self) -> u8 {
        self.inner
            .key_version
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many objects and blobs this session opened with a retired epoch's key.
    pub fn retired_opens(&self) -> u64 {
        self.inner.ring.retired_opens()
    }

    /// The blob-id hasher.
    pub fn hasher(&self) -> &IdHasher {
        &self.inner.hasher
    }

    /// The repository's chunker.
    pub fn chunker(&self) -> crate::chunker::Chunker {
        crate::chunker::Chunker::new(self.inner.config.chunker, self.inner.key.gear_table())
    }

    /// The local copies of tree packs, when there is a cache directory.
    pub(crate) fn tree_cache(&self) -> Option<treecache::TreePackCache> {
        self.cache_dir()
            .map(|d| treecache::TreePackCache::new(d.join("trees")))
    }

    /// Where temporary files and databases go.
    pub fn temp_dir(&self) -> &std::path::Path {
        &self.inner.options.temp_dir
    }

    /// Where this repository's local cache lives (`None`: a private temporary directory).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.inner
            .options
            .cache_root
            .as_ref()
            .map(|r| r.join(self.inner.config.repo_id.to_hex()))
    }

    /// The local blob index, synchronised with the backend's index objects on first use.
    pub fn index(&self) -> Result<Arc<BlobIndex>> {
        if let Some(i) = self
            .inner
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(i.clone());
        }
        let mut slot = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let idx = Arc::new(BlobIndex::open(self, self.cache_dir().as_deref())?);
        if idx.was_rebuilt()
            && let Some(trees) = self.tree_cache()
        {
            // Packs were replaced (prune, repair): drop local copies of packs that are gone.
            let mut keep = std::collections::HashSet::new();
            idx.for_each_pack(|id, _| {
                keep.insert(id);
                Ok(())
            })?;
            trees.retain(&keep);
        }
        *slot = Some(idx.clone());
        Ok(idx)
    }

    /// Drops the in-process index so the next [`Repository::index`] re-synchronises (after
    /// this process replaced index objects, as prune and repair do).
    pub fn reload_index(&self) {
        *self.inner.index.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Seals a plaintext as an envelope of `kind`: `HEADER || NONCE || CIPHERTEXT || TAG`.
    ///
    /// Config, index and lock objects are sealed with the shared key where the repository has
    /// one (write-only keys read them); a write-only session seals everything else to the
    /// reader: `HEADER(flag 0x02) || EPHEMERAL(32) || SEAL(session key, HEADER || EPHEMERAL)`.
    pub fn seal_object(&self, kind: u8, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut header = encode_header(kind);
        let ring = &self.inner.ring;
        if is_shared_kind(kind) {
            let mut buf = header.to_vec();
            buf.extend_from_slice(&ring.shared().seal(&header, plaintext)?);
            return Ok(buf);
        }
        if let Some(session) = ring.session() {
            header[7] |= crate::format::envelope::FLAG_SEALED_TO_READER;
            let mut buf = header.to_vec();
            buf.extend_from_slice(&session.ephemeral_public);
            let aad = buf.clone();
            buf.extend_from_slice(&session.cipher().seal(&aad, plaintext)?);
            return Ok(buf);
        }
        let mut buf = Vec::with_capacity(header.len() + plaintext.len() + 40);
        buf.extend_from_slice(&header);
        let sealed = self.cipher().seal(&header, plaintext)?;
        buf.extend_from_slice(&sealed);
        Ok(buf)
    }

    /// Seals `plaintext` under `header` (its kind and version) bound to `object`'s name
    /// (flag 0x01, `format-spec` 4.3): for objects not named by their hash — WAL files, and
    /// objects re-sealed in place. Config, index and lock objects take the current shared key,
    /// everything else the current epoch's.
    pub(crate) fn seal_bound(
        &self,
        header: &[u8],
        object: &ObjectRef,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut header = crate::format::envelope::resealed_header(header);
        header[7] &= !crate::format::envelope::FLAG_SEALED_TO_READER;
        let cipher = if is_shared_kind(header[5]) {
            self.inner.ring.shared()
        } else {
            self.cipher()
        };
        let mut aad = header.to_vec();
        aad.extend_from_slice(&object.name_bytes());
        let mut out = header.to_vec();
        out.extend_from_slice(&cipher.seal(&aad, plaintext)?);
        Ok(out)
    }

    /// Opens a sealed blob in place: with the ring, else (a pack written by a write-only key)
    /// with the key of the pack's session, derived through the reader key.
    pub(crate) fn open_blob_slice<'a>(
        &self,
        aad: &[u8],
        buf: &'a mut [u8],
        pack: Option<&crate::id::PackId>,
        object: &ObjectRef,
    ) -> Result<&'a mut [u8]> {
        if buf.len() < crate::format::SEAL_OVERHEAD {
            return Err(Error::corrupt(object.clone(), "shorter than a seal"));
        }
        if self.inner.ring.can_read() && self.inner.ring.open_slice(aad, buf).is_ok() {
            let end = buf.len() - crate::format::TAG_LEN;
            return Ok(&mut buf[crate::format::NONCE_LEN..end]);
        }
        if !self.inner.ring.can_read() {
            return Err(write_only_refusal(object));
        }
        if let Some(pack) = pack
            && let Some(eph) = self.pack_session(pack)?
        {
            return self
                .inner
                .ring
                .open_from_writer(&eph, aad, buf)
                .map(|(p, _)| p)
                .map_err(|_| Error::corrupt(object.clone(), "authentication failed"));
        }
        Err(Error::corrupt(object.clone(), "authentication failed"))
    }

    /// The ephemeral public key of a pack written by a write-only key, read from its header
    /// object (remembered per pack; bounded).
    pub(crate) fn pack_session(&self, pack: &crate::id::PackId) -> Result<Option<[u8; 32]>> {
        if let Some(e) = self.remembered_session(pack) {
            return Ok(e);
        }
        let path = crate::format::layout::pack_path(pack);
        let size = self.backend().stat(&path)?.size;
        let eph = session_in(size, |off, len| self.backend().read_range(&path, off, len))?;
        self.remember_session(pack, eph);
        Ok(eph)
    }

    /// [`Self::pack_session`] of a pack whose bytes are in hand (no request to the storage).
    pub(crate) fn pack_session_in(
        &self,
        pack: &crate::id::PackId,
        bytes: &[u8],
    ) -> Option<[u8; 32]> {
        if let Some(e) = self.remembered_session(pack) {
            return e;
        }
        let eph = session_in(bytes.len() as u64, |off, len| {
            Ok(bytes[off as usize..(off + len) as usize].to_vec())
        })
        .unwrap_or(None);
        self.remember_session(pack, eph);
        eph
    }

    fn remembered_session(&self, pack: &crate::id::PackId) -> Option<Option<[u8; 32]>> {
        self.inner
            .pack_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pack)
            .copied()
    }

    pub(crate) fn remember_session(&self, pack: &crate::id::PackId, eph: Option<[u8; 32]>) {
        let mut m = self
            .inner
            .pack_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(*pack, eph);
    }

    /// Opens an envelope of `kind`, naming `object` in any error.
    pub fn open_object(&self, kind: u8, bytes: &[u8], object: ObjectRef) -> Result<Vec<u8>> {
        open_envelope(&self.inner.ring, kind, bytes, object)
    }

    /// The names (ids) of the well-formed objects in `dir` (not `data/`, which fans out).
    pub fn list_names(&self, dir: Dir) -> Result<Vec<[u8; 32]>> {
        Ok(self
            .backend()
            .list(dir.name())?
            .iter()
            .filter_map(|o| dir.name_of(&o.path))
            .collect())
    }

    /// Seals `plaintext`, names it by the hash of the stored bytes and writes it to `dir`.
    pub fn write_object(&self, dir: Dir, kind: u8, plaintext: &[u8]) -> Result<[u8; 32]> {
        let sealed = self.seal_object(kind, plaintext)?;
        let id = storage_hash(&sealed);
        self.backend().write(&dir.path(&hex::encode(id)), &sealed)?;
        Ok(id)
    }

    /// Reads the object `id` from `dir`, checks that it matches its name and opens it.
    pub fn read_object(
        &self,
        dir: Dir,
        kind: u8,
        id: &[u8; 32],
        object: ObjectRef,
    ) -> Result<Vec<u8>> {
        self.read_object_versioned(dir, kind, id, object)
            .map(|(_, plain)| plain)
    }

    /// Like [`Repository::read_object`], also returning the envelope's format version.
    pub fn read_object_versioned(
        &self,
        dir: Dir,
        kind: u8,
        id: &[u8; 32],
        object: ObjectRef,
    ) -> Result<(u8, Vec<u8>)> {
        let bytes = self.read_stored(dir, id, object.clone())?;
        let plain = self.open_object(kind, &bytes, object)?;
        Ok((bytes[6], plain))
    }

    /// Reads object `id` of `dir`, checks it against its name, decrypts it in place and hands
    /// the plaintext to `f` (one buffer: large index objects are never held twice).
    pub(crate) fn with_object_plaintext<T>(
        &self,
        dir: Dir,
        kind: u8,
        id: &[u8; 32],
        object: ObjectRef,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let mut bytes = self.read_stored(dir, id, object.clone())?;
        f(self.open_object_in_place(kind, &mut bytes, object)?)
    }

    /// Opens an envelope of `kind` held in `bytes`, decrypting in place; returns the
    /// plaintext part of `bytes` (no copy).
    pub(crate) fn open_object_in_place<'a>(
        &self,
        kind: u8,
        bytes: &'a mut [u8],
        object: ObjectRef,
    ) -> Result<&'a mut [u8]> {
        if bytes.len() < crate::format::ENVELOPE_HEADER_LEN {
            return Err(Error::corrupt(object, "shorter than its header"));
        }
        let (header, rest) = bytes.split_at_mut(crate::format::ENVELOPE_HEADER_LEN);
        decode_header(header, kind).map_err(|e| header_error(e, &object))?;
        open_sealed_in_place(&self.inner.ring, header, rest, &object).map(|(p, _)| p)
    }

    /// Reads the stored bytes of object `id` in `dir` and checks them against the name.
    pub fn read_stored(&self, dir: Dir, id: &[u8; 32], object: ObjectRef) -> Result<Vec<u8>> {
        let path = dir.path(&hex::encode(id));
        let bytes = self.backend().read(&path).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                object: object.clone(),
            },
            other => other,
        })?;
        if bytes.len() as u64 > MAX_OBJECT_LEN {
            return Err(Error::corrupt(
                object,
                "larger than any object vault writes",
            ));
        }
        // A re-sealed object (key rotation) keeps its name; its seal binds the name instead.
        if &storage_hash(&bytes) != id && !crate::format::envelope::is_resealed(&bytes) {
            return Err(Error::corrupt(
                object,
                "content does not match its name (damaged, truncated or renamed)",
            ));
        }
        Ok(bytes)
    }
}

/// Opens an envelope with the ring, mapping failures to typed errors about `object`.
pub(crate) fn open_envelope(
    ring: &CipherRing,
    kind: u8,
    bytes: &[u8],
    object: ObjectRef,
) -> Result<Vec<u8>> {
    let (header, rest) = decode_header(bytes, kind).map_err(|e| header_error(e, &object))?;
    let mut body = rest.to_vec();
    let base = body.as_ptr() as usize;
    let (plain, _) = open_sealed_in_place(ring, header, &mut body, &object)?;
    // The plaintext is a part of `body`: keep that part (one copy of the object, not two).
    let (start, len) = (plain.as_ptr() as usize - base, plain.len());
    body.truncate(start + len);
    body.drain(..start);
    Ok(body)
}

/// Whether an envelope header says "sealed to the reader".
fn is_sealed_to_reader(header: &[u8]) -> bool {
    header[7] & crate::format::envelope::FLAG_SEALED_TO_READER != 0
}

/// Opens an envelope's body (after the header) in place; returns the plaintext and the epoch
/// (or pseudo-epoch) that opened it.
pub(crate) fn open_sealed_in_place<'a>(
    ring: &CipherRing,
    header: &[u8],
    rest: &'a mut [u8],
    object: &ObjectRef,
) -> Result<(&'a mut [u8], crate::crypto::Opened)> {
    let aad = envelope_aad(header, &rest[..rest.len().min(32)], object);
    if is_sealed_to_reader(header) {
        if rest.len() < 32 + crate::format::SEAL_OVERHEAD {
            return Err(auth_failed(object.clone()));
        }
        if !ring.can_read() {
            return Err(write_only_refusal(object));
        }
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&rest[..32]);
        return ring
            .open_from_writer(&eph, &aad, &mut rest[32..])
            .map_err(|_| auth_failed(object.clone()));
    }
    ring.open_slice_ordered(&aad, rest, is_shared_kind(header[5]))
        .map_err(|_| {
            if ring.can_read() || is_shared_kind(header[5]) {
                auth_failed(object.clone())
            } else {
                write_only_refusal(object)
            }
        })
}

/// Kinds sealed with the shared key, which write-only keys hold (they need the config, the
/// index for deduplication and the locks).
pub(crate) fn is_shared_kind(kind: u8) -> bool {
    matches!(
        kind,
        crate::format::KIND_CONFIG | crate::format::KIND_INDEX | crate::format::KIND_LOCK
    )
}

/// The error for a write-only key that tries to read stored content.
pub(crate) fn write_only_refusal(object: &ObjectRef) -> Error {
    Error::PermissionDenied {
        what: format!("reading {object}"),
        reason: "this key is write-only: it can add snapshots but cannot read anything stored \
                 in the repository"
            .into(),
    }
}

fn header_error(e: HeaderError, object: &ObjectRef) -> Error {
    match e {
        HeaderError::UnknownVersion(_) => Error::Unsupported(format!("{object}: {e}")),
        other => Error::corrupt(object.clone(), other.to_string()),
    }
}

pub(crate) fn auth_failed(object: ObjectRef) -> Error {
    Error::corrupt(
        object,
        "authentication failed (damaged, tampered with, or sealed under a key epoch this key \
         does not hold)",
    )
}

/// The additional data of an envelope's seal: its header, and for a re-sealed object also
/// the name it is stored under (`format-spec` 4.3).
pub(crate) fn envelope_aad(header: &[u8], body_start: &[u8], object: &ObjectRef) -> Vec<u8> {
    let mut aad = header.to_vec();
    if is_sealed_to_reader(header) {
        aad.extend_from_slice(body_start);
    }
    if crate::format::envelope::header_is_resealed(header) {
        aad.extend_from_slice(&object.name_bytes());
    }
    aad
}

/// The session key a pack of `size` bytes names in its header object's envelope, if it was
/// sealed to the reader; `read(offset, len)` reads part of the pack (always within `size`).
fn session_in(size: u64, read: impl Fn(u64, u64) -> Result<Vec<u8>>) -> Result<Option<[u8; 32]>> {
    if size < 4 {
        return Ok(None);
    }
    let tail = read(size - 4, 4)?;
    let hdr_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if hdr_len < 8 + 32 || hdr_len + 4 > size {
        return Ok(None);
    }
    Ok(session_of_header(&read(size - 4 - hdr_len, 8 + 32)?))
}

/// The session key in a pack header object's first 40 bytes, if it was sealed to the reader.
pub(crate) fn session_of_header(head: &[u8]) -> Option<[u8; 32]> {
    if head.len() >= 40
        && head[..5] == *crate::format::ENVELOPE_MAGIC
        && head[7] & crate::format::envelope::FLAG_SEALED_TO_READER != 0
    {
        let mut e = [0u8; 32];
        e.copy_from_slice(&head[8..40]);
        return Some(e);
    }
    None
}
