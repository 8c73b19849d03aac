//! The production backend: any OpenDAL service behind the synchronous [`Backend`] trait.
//!
//! This is the only module that touches tokio: it owns a small multi-threaded runtime and
//! blocks on each OpenDAL future. Callers use plain threads; concurrency is bounded by them.
//! OpenDAL errors are mapped to [`crate::Error`] by kind, and `is_temporary()` decides whether
//! an error is transient (retried by [`super::retry`]).

use std::time::Duration;

use opendal::{ErrorKind as OdKind, Operator};

use super::{Backend, ObjectInfo};
use crate::{Error, Result};

/// How an OpenDAL-backed repository behaves.
#[derive(Clone, Debug, Default)]
pub struct OpendalOptions {
    /// Per-request timeout for metadata operations (stat, list, delete).
    pub timeout: Option<Duration>,
    /// Per-chunk I/O timeout for reads and writes.
    pub io_timeout: Option<Duration>,
}

/// A [`Backend`] over an OpenDAL [`Operator`].
pub struct OpendalBackend {
    op: Operator,
    rt: tokio::runtime::Runtime,
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
    /// Wraps an operator. `location` is what messages show (it must not contain secrets).
    pub fn new(op: Operator, location: String, options: &OpendalOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let mut layer = opendal::layers::TimeoutLayer::new();
        if let Some(t) = options.timeout {
            layer = layer.with_timeout(t);
        }
        if let Some(t) = options.io_timeout {
            layer = layer.with_io_timeout(t);
        }
        let op = op.layer(layer);
        let can_if_not_exists = op.info().capability().write_with_if_not_exists;
        Ok(Self {
            op,
            rt,
            location,
            can_if_not_exists,
            local_root: None,
        })
    }

    /// A local directory, written atomically through a temporary directory inside it.
    pub fn fs(root: &std::path::Path) -> Result<Self> {
        let root_s = root.to_string_lossy().to_string();
        let tmp = root.join("tmp");
        let builder = opendal::services::Fs::default()
            .root(&root_s)
            .atomic_write_dir(&tmp.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| map_err("open", &root_s, e))?;
        let mut b = Self::new(op, root_s, &OpendalOptions::default())?;
        b.local_root = Some(root.to_path_buf());
        Ok(b)
    }

    /// Moves a staged file into place: fsync it, rename it (create-only), fsync the directory.
    fn publish_local(
        &self,
        root: &std::path::Path,
        path: &str,
        local: &std::path::Path,
    ) -> Result<()> {
        let dst = root.join(path);
        let parent = dst
            .parent()
            .expect("invariant: object paths have a directory");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        std::fs::File::open(local)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(local, e))?;
        // link + unlink instead of rename: link fails if the target exists (create-only).
        match std::fs::hard_link(local, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(local);
                return Err(Error::AlreadyExists(path.to_string()));
            }
            Err(e) => return Err(Error::io(&dst, e)),
        }
        std::fs::remove_file(local).map_err(|e| Error::io(local, e))?;
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(parent, e))
    }
}

/// Maps an OpenDAL error to vault's error type.
pub(crate) fn map_err(op: &'static str, path: &str, e: opendal::Error) -> Error {
    match e.kind() {
        OdKind::NotFound => Error::NotFound {
            object: crate::ObjectRef::Path(path.to_string()),
        },
        OdKind::AlreadyExists | OdKind::ConditionNotMatch => Error::AlreadyExists(path.to_string()),
        _ => Error::Backend {
            op,
            path: path.to_string(),
            message: e.to_string(),
            transient: e.is_temporary() || e.kind() == OdKind::RateLimited,
        },
    }
}

impl Backend for OpendalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
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

    fn write_file(&self, path: &str, local: &std::path::Path) -> Result<()> {
        if let Some(root) = &self.local_root
            && local.starts_with(root.join("tmp"))
        {
            return self.publish_local(root, path, local);
        }
        if !self.can_if_not_exists && self.exists(path)? {
            return Err(Error::AlreadyExists(path.to_string()));
        }
        // Stream the file in 8 MiB parts (multipart uploads on object stores).
        let mut f = std::fs::File::open(local).map_err(|e| Error::io(local, e))?;
        let expected = f.metadata().map_err(|e| Error::io(local, e))?.len();
        self.rt.block_on(async {
            use std::io::Read;
            let mut w = self
                .op
                .writer_with(path)
                .if_not_exists(self.can_if_not_exists)
                .chunk(8 << 20)
                .await
                .map_err(|e| map_err("write", path, e))?;
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
            let reported = meta.content_length();
            if reported != 0 && reported != expected {
                return Err(Error::Backend {
                    op: "write",
                    path: path.to_string(),
                    message: format!("stored {reported} bytes of {expected}"),
                    transient: true,
                });
            }
            Ok(())
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.rt
            .block_on(self.op.read(path))
            .map(|b| b.to_vec())
            .map_err(|e| map_err("read", path, e))
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let buf = self
            .rt
            .block_on(async { self.op.read_with(path).range(offset..offset + len).await })
            .map_err(|e| map_err("read", path, e))?;
        if buf.len() as u64 != len {
            return Err(Error::Backend {
                op: "read",
                path: path.to_string(),
                message: format!("short read: {} of {len} bytes at {offset}", buf.len()),
                transient: false,
            });
        }
        Ok(buf.to_vec())
    }

    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        if !self.can_if_not_exists && self.exists(path)? {
            return Err(Error::AlreadyExists(path.to_string()));
        }
        let bytes = opendal::Buffer::from(data.to_vec());
        let mut w = self.op.write_with(path, bytes);
        if self.can_if_not_exists {
            w = w.if_not_exists(true);
        }
        let meta = self
            .rt
            .block_on(async { w.await })
            .map_err(|e| map_err("write", path, e))?;
        // Verify what the service reports back, where it reports anything.
        let reported = meta.content_length();
        if reported != 0 && reported != data.len() as u64 {
            return Err(Error::Backend {
                op: "write",
                path: path.to_string(),
                message: format!("stored {reported} bytes of {}", data.len()),
                transient: true,
            });
        }
        Ok(())
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
            })
            .collect())
    }

    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        let m = self
            .rt
            .block_on(self.op.stat(path))
            .map_err(|e| map_err("stat", path, e))?;
        Ok(ObjectInfo {
            path: path.to_string(),
            size: m.content_length(),
        })
    }
}
