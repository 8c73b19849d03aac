//! The production backend: any OpenDAL service behind the synchronous [`Backend`] trait.
//!
//! This is the only module that touches tokio: it owns a small multi-threaded runtime and
//! blocks on each OpenDAL future. Callers use plain threads; concurrency is bounded by them.
//! OpenDAL errors are mapped to [`crate::Error`] by kind, and `is_temporary()` decides whether
//! an error is transient (retried by [`super::retry`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use opendal::{ErrorKind as OdKind, Operator};

use super::{Access, Backend, ObjectInfo};
use crate::{Error, Result};

/// Multipart part size. Packs (16 MiB by default) fit in one request: a multipart upload costs
/// the service an extra assembly step and three requests instead of one.
const PART_SIZE: usize = 64 << 20;

/// How an OpenDAL-backed repository behaves.
#[derive(Clone, Debug, Default)]
pub struct OpendalOptions {
    /// Per-request timeout for metadata operations (stat, list, delete).
    pub timeout: Option<Duration>,
    /// Per-chunk I/O timeout for reads and writes.
    pub io_timeout: Option<Duration>,
    /// The service's writes are not atomic (SFTP, WebDAV): write below `tmp/` and rename.
    pub atomic_rename: bool,
}

/// A [`Backend`] over an OpenDAL [`Operator`].
pub struct OpendalBackend {
    op: Operator,
    /// Writes of cold objects (data packs) when a storage class was asked for.
    cold: Option<Operator>,
    rt: tokio::runtime::Runtime,
    atomic_rename: bool,
    /// Directories known to exist (rename mode creates parents once).
    made_dirs: Mutex<HashSet<String>>,
    location: String,
    can_if_not_exists: bool,
    /// For the local file-system service: the repository root (objects are files below it).
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for OpendalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpendalBackend({})", self.location)
    }
}

impl OpendalBackend {
    /// A ranged read from the service into `buf` (the response's chunks copied as they
    /// arrive), checked to have exactly `len` bytes.
    fn read_range_to(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        let read = self
            .rt
            .block_on(async {
                let reader = self.op.reader(path).await?;
                reader.read_into(buf, offset..offset + len).await
            })
            .map_err(|e| {
                let mapped = map_err("read", path, e);
                // Services report a range beyond the end differently (416, a short body);
                // whether the object is truncated is decided by its size, not by wording.
                if mapped.kind() == crate::ErrorKind::Backend
                    && !mapped.is_transient()
                    && self.stat(path).is_ok_and(|st| st.size < offset + len)
                {
                    return Error::corrupt(
                        crate::ObjectRef::Path(path.to_string()),
                        format!("truncated: bytes {offset}..{} are not there", offset + len),
                    );
                }
                mapped
            })?;
        if read as u64 != len {
            // The object is shorter than what refers to it: damage (a truncated object).
            return Err(Error::corrupt(
                crate::ObjectRef::Path(path.to_string()),
                format!("truncated: {read} of {len} bytes readable at offset {offset}"),
            ));
        }
        Ok(())
    }

    /// Wraps an operator. `location` is what messages show (it must not contain secrets).
    pub fn new(op: Operator, location: String, options: &OpendalOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let op = with_timeouts(op, options);
        let can_if_not_exists = op.info().capability().write_with_if_not_exists;
        Ok(Self {
            op,
            cold: None,
            rt,
            atomic_rename: options.atomic_rename,
            made_dirs: Mutex::new(HashSet::new()),
            location,
            can_if_not_exists,
            local_root: None,
        })
    }

    /// A local directory. Objects are created by [`super::local`] (private, atomic,
    /// create-only); OpenDAL reads, lists and deletes them. Unless `create` (only `init`), a
    /// directory that does not exist is reported as "no repository" and nothing is created.
    pub fn fs(root: &std::path::Path, create: bool) -> Result<Self> {
        let root_s = root.to_string_lossy().to_string();
        match std::fs::symlink_metadata(root) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                return Err(Error::NoRepository { location: root_s });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                super::local::private_dir_all(root)?;
            }
            Err(e) => return Err(Error::io(root, e)),
        }
        let builder = opendal::services::Fs::default().root(&root_s);
        let op = Operator::new(builder).map_err(|e| map_err("open", &root_s, e))?;
        let mut b = Self::new(op, root_s, &OpendalOptions::default())?;
        b.local_root = Some(root.to_path_buf());
        Ok(b)
    }

    /// Any OpenDAL service by scheme name and configuration; `storage_class` (if any) is the
    /// class data packs are written with.
    pub fn service(
        scheme: &str,
        config: BTreeMap<String, String>,
        storage_class: Option<String>,
        location: String,
        options: &OpendalOptions,
    ) -> Result<Self> {
        opendal::install_default();
        let shown = location.clone();
        let build = |cfg: BTreeMap<String, String>| {
            Operator::via_iter(scheme, cfg).map_err(|e| match e.kind() {
                OdKind::Unsupported => Error::Unsupported(format!(
                    "OpenDAL service {scheme:?} is not built into this vault"
                )),
                _ => Error::InvalidInput(format!("{shown}: {}", e.message())),
            })
        };
        let op = build(config.clone())?;
        let mut b = Self::new(op, location, options)?;
        if let Some(class) = storage_class {
            let mut cfg = config;
            cfg.insert("default_storage_class".into(), class);
            b.cold = Some(with_timeouts(build(cfg)?, options));
        }
        Ok(b)
    }

    fn op_for(&self, access: Access) -> &Operator {
        match (access, &self.cold) {
            (Access::Cold, Some(cold)) => cold,
            _ => &self.op,
        }
    }

    /// Create-only check for services that cannot refuse an overwrite themselves.
    fn refuse_existing(&self, path: &str) -> Result<()> {
        if (!self.can_if_not_exists || self.atomic_rename) && self.exists(path)? {
            return Err(Error::AlreadyExists(path.to_string()));
        }
        Ok(())
    }

    /// Where a write goes first: the object itself, or a temporary name for rename mode.
    fn write_target(&self, path: &str) -> Result<String> {
        if !self.atomic_rename {
            return Ok(path.to_string());
        }
        let mut r = [0u8; 16];
        crate::crypto::random_bytes(&mut r)?;
        Ok(format!("tmp/{}", hex::encode(r)))
    }

    /// Checks the stored size and, in rename mode, moves the object into place.
    fn complete_write(
        &self,
        path: &str,
        written: &str,
        reported: u64,
        expected: u64,
    ) -> Result<()> {
        // Verify what the service reports back; where it reports nothing, ask.
        let stored = if reported != 0 || expected == 0 {
            reported
        } else {
            self.rt
                .block_on(self.op.stat(written))
                .map_err(|e| map_err("write", path, e))?
                .content_length()
        };
        if stored != expected {
            if written != path {
                let _ = self.rt.block_on(self.op.delete(written));
            }
            return Err(Error::Backend {
                op: "write",
                path: path.to_string(),
                message: format!("stored {stored} bytes of {expected}"),
                transient: true,
            });
        }
        if written == path {
            return Ok(());
        }
        if let Some((dir, _)) = path.rsplit_once('/') {
            let dir = format!("{dir}/");
            let known = self
                .made_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&dir);
            if !known {
                self.rt
                    .block_on(self.op.create_dir(&dir))
                    .map_err(|e| map_err("write", path, e))?;
                self.made_dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(dir);
            }
        }
        let res = self.rt.block_on(self.op.rename(written, path));
        if res.is_err() {
            let _ = self.rt.block_on(self.op.delete(written));
        }
        res.map_err(|e| map_err("write", path, e))
    }

    /// Writes a whole object in one request through `op`.
    fn write_with(&self, op: &Operator, path: &str, data: &[u8]) -> Result<()> {
        self.refuse_existing(path)?;
        let target = self.write_target(path)?;
        let bytes = opendal::Buffer::from(data.to_vec());
        let mut w = op.write_with(&target, bytes);
        if self.can_if_not_exists && !self.atomic_rename {
            w = w.if_not_exists(true);
        }
        let meta = self
            .rt
            .block_on(async { w.await })
            .map_err(|e| map_err("write", path, e))?;
        self.complete_write(path, &target, meta.content_length(), data.len() as u64)
    }
}

/// Per-request timeouts: a hung connection becomes a transient error that is retried.
fn with_timeouts(op: Operator, options: &OpendalOptions) -> Operator {
    let mut layer = opendal::layers::TimeoutLayer::new();
    if let Some(t) = options.timeout {
        layer = layer.with_timeout(t);
    }
    if let Some(t) = options.io_timeout {
        layer = layer.with_io_timeout(t);
    }
    op.layer(layer)
}

/// The OS error behind an OpenDAL error, if any (local files, SFTP's local side).
fn os_error(e: &opendal::Error) -> Option<&std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = c.source();
    }
    None
}

/// Maps an OpenDAL error to vault's error type. Refusals (permissions, read-only storage) and
/// a full disk are permanent whatever OpenDAL guesses: retrying them only delays the error.
pub(crate) fn map_err(op: &'static str, path: &str, e: opendal::Error) -> Error {
    let os = os_error(&e);
    if e.kind() == OdKind::PermissionDenied || os.is_some_and(crate::error::is_permission_error) {
        return Error::PermissionDenied {
            what: format!("{op} of {path}"),
            reason: os.map_or_else(|| e.to_string(), crate::error::io_message),
        };
    }
    let no_space =
        os.is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)));
    match e.kind() {
        OdKind::NotFound => Error::NotFound {
            object: crate::ObjectRef::Path(path.to_string()),
        },
        OdKind::AlreadyExists | OdKind::ConditionNotMatch => Error::AlreadyExists(path.to_string()),
        _ => Error::Backend {
            op,
            path: path.to_string(),
            message: match os {
                Some(io) => crate::error::io_message(io),
                None => e.to_string(),
            },
            transient: !no_space && (e.is_temporary() || e.kind() == OdKind::RateLimited),
        },
    }
}

impl Backend for OpendalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            for dir in crate::format::layout::DIRS {
                super::local::private_dir_all(&root.join(dir))?;
            }
            return Ok(());
        }
        // Object stores need no directory markers (names are prefixes), and buckets with object
        // lock refuse the empty uploads that would make them (no checksum on an empty body).
        let scheme = self.op.info().scheme().to_string();
        if matches!(
            scheme.as_str(),
            "s3" | "gcs" | "azblob" | "oss" | "cos" | "obs" | "b2" | "tos"
        ) {
            return Ok(());
        }
        for dir in crate::format::layout::DIRS {
            let p = format!("{dir}/");
            self.rt
                .block_on(self.op.create_dir(&p))
                .map_err(|e| map_err("create", &p, e))?;
        }
        Ok(())
    }

    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|r| r.join("tmp"))
    }

    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        if let Some(root) = &self.local_root {
            return super::local::replace(root, path, data);
        }
        // Object stores replace atomically on PUT; rename-mode services rename over the old
        // object (OpenDAL's rename overwrites).
        let target = self.write_target(path)?;
        let meta = self
            .rt
            .block_on(self.op.write(&target, opendal::Buffer::from(data.to_vec())))
            .map_err(|e| map_err("replace", path, e))?;
        self.complete_write(path, &target, meta.content_length(), data.len() as u64)
    }

    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        if let Some(root) = &self.local_root {
            if local.starts_with(root.join("tmp")) {
                return super::local::publish(root, path, local, true);
            }
            let data = std::fs::read(local).map_err(|e| Error::io(local, e))?;
            return super::local::write_new(root, path, &data, "object");
        }
        let op = self.op_for(access);
        if !op.info().capability().write_can_multi {
            // One-shot services (WebDAV): one request with the whole object.
            let data = std::fs::read(local).map_err(|e| Error::io(local, e))?;
            return self.write_with(op, path, &data);
        }
        self.refuse_existing(path)?;
        let target = self.write_target(path)?;
        let if_not_exists = self.can_if_not_exists && !self.atomic_rename;
        // Stream the file; objects up to PART_SIZE go in one request, larger ones in parts.
        let mut f = std::fs::File::open(local).map_err(|e| Error::io(local, e))?;
        let expected = f.metadata().map_err(|e| Error::io(local, e))?.len();
        let reported = self.rt.block_on(async {
            use std::io::Read;
            let mut w = op
                .writer_with(&target)
                .if_not_exists(if_not_exists)
                .chunk(PART_SIZE)
                .await
                .map_err(|e| map_err("write", path, e))?;
            if expected <= PART_SIZE as u64 {
                // One request: the file is read once into the buffer that is sent (a fixed
                // read buffer plus a copy of each piece held a pack and a half per upload).
                let mut data = Vec::with_capacity(expected as usize);
                f.read_to_end(&mut data).map_err(|e| Error::io(local, e))?;
                w.write(data).await.map_err(|e| map_err("write", path, e))?;
                let meta = w.close().await.map_err(|e| map_err("write", path, e))?;
                return Ok::<u64, Error>(meta.content_length());
            }
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(local, e))?;
                if n == 0 {
                    break;
                }
                w.write(buf[..n].to_vec())
                    .await
                    .map_err(|e| map_err("write", path, e))?;
            }
            let meta = w.close().await.map_err(|e| map_err("write", path, e))?;
            Ok::<u64, Error>(meta.content_length())
        })?;
        self.complete_write(path, &target, reported, expected)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        if let Some(root) = &self.local_root {
            // One read into one exact buffer (OpenDAL's chunked buffer would be copied again).
            return super::local::read(root, path);
        }
        self.rt
            .block_on(self.op.read(path))
            .map(|b| Vec::from(b.to_bytes()))
            .map_err(|e| map_err("read", path, e))
    }

    fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(root) = &self.local_root {
            return super::local::read_into(root, path, buf);
        }
        // The response's chunks are copied into memory the caller reuses as they arrive
        // (`read` makes the body contiguous first: one more copy and twice the pack in memory
        // at the peak; collecting the chunks first still holds the pack twice).
        buf.clear();
        self.rt
            .block_on(async { self.op.reader(path).await?.read_into(buf, ..).await })
            .map_err(|e| map_err("read", path, e))?;
        Ok(())
    }

    fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(root) = &self.local_root {
            return super::local::read_range_into(root, path, offset, len, buf);
        }
        self.read_range_to(path, offset, len, buf)
    }

    fn will_read(&self, path: &str, offset: u64, len: u64) {
        if let Some(root) = &self.local_root {
            super::local::will_read(root, path, offset, len);
        }
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if let Some(root) = &self.local_root {
            return super::local::read_range(root, path, offset, len);
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        self.read_range_to(path, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        if let Some(root) = &self.local_root {
            return super::local::write_new(root, path, data, "object");
        }
        self.write_with(&self.op, path, data)
    }

    fn delete(&self, path: &str) -> Result<()> {
        if !self.exists(path)? {
            return Err(super::not_found(path));
        }
        self.rt
            .block_on(self.op.delete(path))
            .map_err(|e| map_err("delete", path, e))
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let entries = match self
            .rt
            .block_on(async { self.op.list_with(&prefix).recursive(true).await })
        {
            Ok(e) => e,
            Err(e) if e.kind() == OdKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(map_err("list", &prefix, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| ObjectInfo {
                path: e.path().trim_start_matches('/').to_string(),
                size: e.metadata().content_length(),
                modified: modified(e.metadata()),
            })
            .collect())
    }

    fn list_each(&self, dir: &str, f: &mut dyn FnMut(ObjectInfo) -> Result<()>) -> Result<()> {
        use futures_util::TryStreamExt;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.rt.block_on(async {
            let mut lister = match self.op.lister_with(&prefix).recursive(true).await {
                Ok(l) => l,
                Err(e) if e.kind() == OdKind::NotFound => return Ok(()),
                Err(e) => return Err(map_err("list", &prefix, e)),
            };
            loop {
                let next = match lister.try_next().await {
                    Ok(n) => n,
                    Err(e) if e.kind() == OdKind::NotFound => return Ok(()),
                    Err(e) => return Err(map_err("list", &prefix, e)),
                };
                let Some(e) = next else { return Ok(()) };
                if e.metadata().is_file() {
                    f(ObjectInfo {
                        path: e.path().trim_start_matches('/').to_string(),
                        size: e.metadata().content_length(),
                        modified: modified(e.metadata()),
                    })?;
                }
            }
        })
    }

    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        let m = self
            .rt
            .block_on(self.op.stat(path))
            .map_err(|e| map_err("stat", path, e))?;
        Ok(ObjectInfo {
            path: path.to_string(),
            size: m.content_length(),
            modified: modified(&m),
        })
    }
}

/// The service's last-modified time of an object, if it reports one.
fn modified(m: &opendal::Metadata) -> Option<crate::format::time::Timestamp> {
    let t = m.last_modified()?.into_inner();
    Some(crate::format::time::Timestamp::new(
        t.as_second(),
        t.subsec_nanosecond().max(0) as u32,
    ))
}
