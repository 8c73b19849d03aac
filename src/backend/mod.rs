//! Storage backends: opaque, flat byte stores addressed by slash-separated paths.
//!
//! A backend never decrypts or parses what it stores; it reads, writes (create-only, atomic),
//! lists, stats and deletes. The [`Backend`] trait is synchronous; the OpenDAL implementation
//! owns the only tokio runtime in the program. [`memory::MemoryBackend`] serves tests, and the
//! wrappers add retries ([`retry`]), bandwidth limits ([`throttle`]), append-only access
//! ([`appendonly`]) and, in test builds only (feature `fault-injection`), fault injection. Every implementation must pass the conformance suite in `tests/`.

/// Implements the listed [`Backend`] methods by calling the same method of `self.inner`: the
/// forwarding every wrapper layer needs, so that a layer spells out only what it changes.
macro_rules! forward_to_inner {
    ($($m:ident),+ $(,)?) => { $( forward_to_inner!(@ $m); )+ };
    (@ location) => { fn location(&self) -> String { self.inner.location() } };
    (@ create) => { fn create(&self) -> Result<()> { self.inner.create() } };
    (@ read) => { fn read(&self, path: &str) -> Result<Vec<u8>> { self.inner.read(path) } };
    (@ read_into) => {
        fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
            self.inner.read_into(path, buf)
        }
    };
    (@ read_range) => {
        fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(path, offset, len)
        }
    };
    (@ read_range_into) => {
        fn read_range_into(
            &self,
            path: &str,
            offset: u64,
            len: u64,
            buf: &mut Vec<u8>,
        ) -> Result<()> {
            self.inner.read_range_into(path, offset, len, buf)
        }
    };
    (@ write) => {
        fn write(&self, path: &str, data: &[u8]) -> Result<()> { self.inner.write(path, data) }
    };
    (@ write_file) => {
        fn write_file(
            &self,
            path: &str,
            local: &std::path::Path,
            access: crate::backend::Access,
        ) -> Result<()> {
            self.inner.write_file(path, local, access)
        }
    };
    (@ replace) => {
        fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
            self.inner.replace(path, data)
        }
    };
    (@ delete) => { fn delete(&self, path: &str) -> Result<()> { self.inner.delete(path) } };
    (@ list) => {
        fn list(&self, dir: &str) -> Result<Vec<crate::backend::ObjectInfo>> {
            self.inner.list(dir)
        }
    };
    (@ list_each) => {
        fn list_each(
            &self,
            dir: &str,
            f: &mut dyn FnMut(crate::backend::ObjectInfo) -> Result<()>,
        ) -> Result<()> {
            self.inner.list_each(dir, f)
        }
    };
    (@ stat) => {
        fn stat(&self, path: &str) -> Result<crate::backend::ObjectInfo> { self.inner.stat(path) }
    };
    (@ staging_dir) => {
        fn staging_dir(&self) -> Option<std::path::PathBuf> { self.inner.staging_dir() }
    };
    (@ append_only) => { fn append_only(&self) -> bool { self.inner.append_only() } };
    (@ will_read) => {
        fn will_read(&self, path: &str, offset: u64, len: u64) {
            self.inner.will_read(path, offset, len)
        }
    };
    (@ object_lock_days) => {
        fn object_lock_days(&self) -> Option<u32> { self.inner.object_lock_days() }
    };
}

pub mod appendonly;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub(crate) mod local;
pub mod location;
pub mod memory;
pub mod objectlock;
pub mod opendal;
pub mod options;
pub mod retry;
pub mod service_keys;
pub mod throttle;

use std::sync::Arc;

use crate::Result;

/// A stored object as seen by `list` and `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root, e.g. `data/ab/ab12…`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written, where the service says (`stat` always tries; listings may
    /// not carry it).
    pub modified: Option<crate::format::time::Timestamp>,
}

/// The storage operations vault needs.
///
/// Contract (checked by the conformance suite):
/// * `write` is atomic (no reader ever sees part of an object) and create-only: writing a path
///   that exists fails with [`crate::ErrorKind::AlreadyExists`].
/// * `read`/`read_range`/`stat`/`delete` of a missing path fail with
///   [`crate::ErrorKind::NotFound`].
/// * `list(dir)` returns every object below `dir/` (recursively), in no particular order.
/// * transient failures are reported with `is_transient() == true`.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Human-readable location, without secrets.
    fn location(&self) -> String;
    /// Prepares an empty repository location (creates directories where that matters).
    fn create(&self) -> Result<()> {
        Ok(())
    }
    /// Reads a whole object.
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    /// Reads a whole object into `buf` (replacing what it held), reusing its memory: a
    /// command that reads pack after pack (check) then does not fault in and zero a fresh
    /// 16 MiB buffer per pack, which cost a third of its system time. Backends that cannot do
    /// better replace the buffer.
    fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.read(path)?;
        Ok(())
    }
    /// Reads `len` bytes at `offset`; fails if the object is shorter.
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Like [`Backend::read_range`], into `buf`, reusing its memory (see
    /// [`Backend::read_into`]).
    fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.read_range(path, offset, len)?;
        Ok(())
    }
    /// A hint that `len` bytes at `offset` will be read soon. A local directory starts
    /// reading them into the page cache (`posix_fadvise(WILLNEED)`: the kernel reads while
    /// the caller works on what it already has, and no process memory is used); other
    /// backends ignore it. Never fails: at worst the later read waits as it would have.
    fn will_read(&self, path: &str, offset: u64, len: u64) {
        let _ = (path, offset, len);
    }
    /// Writes a new object atomically; refuses to overwrite.
    fn write(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Replaces an existing object atomically: a reader sees the old bytes or the new ones,
    /// never a mix or nothing. Only key re-encryption uses it (objects re-sealed under a new
    /// key epoch keep their names; `format-spec` 4.3).
    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        let _ = data;
        Err(crate::Error::Unsupported(format!(
            "replacing {path} on {}",
            self.location()
        )))
    }
    /// Deletes an object.
    fn delete(&self, path: &str) -> Result<()>;
    /// Lists every object below `dir`.
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>>;
    /// Calls `f` for every object below `dir` as the listing arrives, without holding it
    /// whole (directories of packs grow with the repository). After a transient failure a
    /// listing may be restarted, so `f` must tolerate seeing an object twice.
    fn list_each(&self, dir: &str, f: &mut dyn FnMut(ObjectInfo) -> Result<()>) -> Result<()> {
        for o in self.list(dir)? {
            f(o)?;
        }
        Ok(())
    }
    /// Size of one object.
    fn stat(&self, path: &str) -> Result<ObjectInfo>;
    /// A local directory where objects can be staged so that [`Backend::write_file`] publishes
    /// them by renaming (same file system as the repository). `None` for remote backends.
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Writes a new object from a local file (create-only, atomic). A file inside
    /// [`Backend::staging_dir`] is moved into place; any other file is copied and left alone.
    /// `access` says how the object will be read, for services with storage classes.
    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        let _ = access;
        let data = std::fs::read(local).map_err(|e| crate::Error::io(local, e))?;
        self.write(path, &data)
    }
    /// Whether this client may never delete (`--append-only`): lock and staging cleanup then
    /// leave things for staleness to expire instead of deleting them.
    fn append_only(&self) -> bool {
        false
    }
    /// The storage's retention in days (`-o object_lock=DAYS`), if any: young data objects
    /// are then never deleted (prune schedules them).
    fn object_lock_days(&self) -> Option<u32> {
        None
    }
    /// Whether an object exists.
    fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// How an object is expected to be read: a hint for services with storage classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read by listing, browsing and planning (config, keys, indexes, snapshots, tree packs).
    Hot,
    /// Read only to restore or verify file content (packs of data blobs).
    Cold,
}

/// Shared handle to a backend.
pub type DynBackend = Arc<dyn Backend>;

/// Shorthand for a NotFound error on a backend path.
pub(crate) fn not_found(path: &str) -> crate::Error {
    crate::Error::NotFound {
        object: crate::ObjectRef::Path(path.to_string()),
    }
}
