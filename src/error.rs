//! The library's one error type.
//!
//! `Error` carries typed context (which object, which path) instead of formatted strings, and
//! `kind()` classifies it so that callers decide exit codes and retries without matching text.
//! This module owns classification only; it performs no I/O.

use std::fmt;
use std::path::PathBuf;

use crate::id::{AuditId, BlobId, BlobType, HoldId, IndexId, KeyId, LockId, PackId, SnapshotId};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A repository object named in an error or a damage report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectRef {
    /// The `config` object.
    Config,
    /// A key file.
    Key(KeyId),
    /// A pack file as a whole (its header, its size or its name).
    Pack(PackId),
    /// One blob inside a pack.
    Blob {
        /// Data or tree.
        blob_type: BlobType,
        /// The blob's id.
        id: BlobId,
        /// The pack it was read from, when known.
        pack: Option<PackId>,
    },
    /// An index file.
    Index(IndexId),
    /// A snapshot manifest.
    Snapshot(SnapshotId),
    /// A lock object.
    Lock(LockId),
    /// A hold object.
    Hold(HoldId),
    /// An audit record.
    Audit(AuditId),
    /// An archived PostgreSQL WAL file, by its file name.
    Wal(String),
    /// Any object addressed by its backend path (used before the kind is known).
    Path(String),
}

impl ObjectRef {
    /// The 32-byte name bound into a re-sealed object's seal (`format-spec` 4.3): the object's
    /// id, or 32 zero bytes for the config (and for a bare path, which no re-sealed object is
    /// opened as).
    pub fn name_bytes(&self) -> [u8; 32] {
        match self {
            ObjectRef::Config | ObjectRef::Path(_) => [0; 32],
            ObjectRef::Key(id) => id.0,
            ObjectRef::Pack(id) => id.0,
            ObjectRef::Blob { id, .. } => id.0,
            ObjectRef::Index(id) => id.0,
            ObjectRef::Snapshot(id) => id.0,
            ObjectRef::Lock(id) => id.0,
            ObjectRef::Hold(id) => id.0,
            ObjectRef::Audit(id) => id.0,
            ObjectRef::Wal(name) => *blake3::hash(name.as_bytes()).as_bytes(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Config => f.write_str("config"),
            ObjectRef::Key(id) => write!(f, "key {id}"),
            ObjectRef::Pack(id) => write!(f, "pack {id}"),
            ObjectRef::Blob {
                blob_type,
                id,
                pack: Some(p),
            } => write!(f, "{blob_type} blob {id} in pack {p}"),
            ObjectRef::Blob {
                blob_type,
                id,
                pack: None,
            } => write!(f, "{blob_type} blob {id}"),
            ObjectRef::Index(id) => write!(f, "index {id}"),
            ObjectRef::Snapshot(id) => write!(f, "snapshot {id}"),
            ObjectRef::Lock(id) => write!(f, "lock {id}"),
            ObjectRef::Hold(id) => write!(f, "hold {id}"),
            ObjectRef::Audit(id) => write!(f, "audit record {id}"),
            ObjectRef::Wal(name) => write!(f, "WAL file {name}"),
            ObjectRef::Path(p) => write!(f, "object {p}"),
        }
    }
}

/// Coarse classification of an [`Error`], stable across versions.
///
/// The kinds form one taxonomy from the backend to the CLI's exit codes and `--json` errors:
/// only [`ErrorKind::Corrupt`] (stored bytes failed verification) and [`ErrorKind::NotFound`]
/// (an object the repository references is absent) are damage; everything else keeps its own
/// kind, so an outage, a full disk or a read-only mount is never reported as damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The repository does not exist at the given location.
    NoRepository,
    /// A repository object is missing (a pack, an index object, a snapshot named by id).
    NotFound,
    /// Something the user named (a snapshot prefix, a path inside a snapshot) matched nothing.
    NoMatch,
    /// Stored bytes failed authentication, hashing or decoding (tampering included).
    Corrupt,
    /// No key file opens with the given password.
    WrongPassword,
    /// Another process holds a conflicting lock.
    Locked,
    /// The storage backend failed.
    Backend,
    /// The operating system or the storage service refused access (read-only file system,
    /// missing permission). Never retried.
    PermissionDenied,
    /// The object uses a format version or feature this build does not know.
    Unsupported,
    /// The caller passed something invalid.
    InvalidInput,
    /// Something already exists and would be overwritten.
    AlreadyExists,
    /// A local file-system operation failed.
    Io,
    /// The operation was interrupted or a child command failed.
    Aborted,
    /// The object is under a storage retention (object lock) that has not expired.
    Retained,
}

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at `location`.
    #[error("no repository at {location} (run `vault init` first)")]
    NoRepository {
        /// Where we looked.
        location: String,
    },
    /// The named object does not exist.
    #[error("{object} not found")]
    NotFound {
        /// What was missing.
        object: ObjectRef,
    },
    /// A user-supplied name (snapshot prefix, path in a snapshot) matched nothing.
    #[error("{what} not found: {name}")]
    NoMatch {
        /// The kind of thing ("snapshot", "path").
        what: &'static str,
        /// What the user asked for.
        name: String,
    },
    /// Stored bytes are damaged or were tampered with.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// The damaged object.
        object: ObjectRef,
        /// What check failed.
        reason: String,
    },
    /// No key file accepts the password.
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// No readable key file accepts the password, and some key files are damaged.
    #[error(
        "no readable key opens with this password; key(s) {damaged} are damaged and one of them \
         may be this password's (use another password, then `vault key remove` the damaged key)"
    )]
    WrongPasswordOrDamagedKey {
        /// Short ids of the damaged key files.
        damaged: String,
    },
    /// The object is under object lock (storage retention) until `until`: it cannot be
    /// deleted before then.
    #[error(
        "{path} is under object lock until {until} (written {written}, retention {days} days); it can be removed after that"
    )]
    Retained {
        /// The backend path.
        path: String,
        /// When it was written (RFC 3339).
        written: String,
        /// When its retention ends (RFC 3339).
        until: String,
        /// The configured retention.
        days: u32,
    },
    /// A conflicting lock is held.
    #[error("repository is locked: {holder}")]
    Locked {
        /// Who holds the lock (host, pid, kind, age).
        holder: String,
    },
    /// The storage backend failed.
    #[error("backend error during {op} of {path}: {message}")]
    Backend {
        /// The operation (read, write, list, delete, stat).
        op: &'static str,
        /// The backend path involved.
        path: String,
        /// The backend's own message.
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
    /// Unknown format version or feature.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Invalid input from the caller.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The target exists and vault refuses to overwrite it.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Local I/O failed on `path`. The OS error is part of the message, not a separate
    /// source, so that printing the error chain never repeats it.
    #[error("{}: {}", path.display(), io_message(error))]
    Io {
        /// The local path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Access was refused (read-only file system, permissions) on a local path or object.
    #[error("{what}: permission denied ({reason})")]
    PermissionDenied {
        /// The path or object.
        what: String,
        /// The OS's or service's reason.
        reason: String,
    },
    /// Cancelled, or a child process failed.
    #[error("aborted: {0}")]
    Aborted(String),
}

impl Error {
    /// The error's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoRepository { .. } => ErrorKind::NoRepository,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::NoMatch { .. } => ErrorKind::NoMatch,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::WrongPassword | Error::WrongPasswordOrDamagedKey { .. } => {
                ErrorKind::WrongPassword
            }
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Io { .. } => ErrorKind::Io,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Aborted(_) => ErrorKind::Aborted,
            Error::Retained { .. } => ErrorKind::Retained,
        }
    }

    /// Whether retrying the same operation may succeed (network blips, throttling, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            }
        )
    }

    /// Shorthand for a [`Error::Corrupt`].
    pub fn corrupt(object: ObjectRef, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object,
            reason: reason.into(),
        }
    }

    /// Shorthand for a local I/O failure on `path`. Permission errors (EACCES, EPERM, EROFS)
    /// become [`Error::PermissionDenied`], so that they are never retried or taken for damage.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        let path = path.into();
        if is_permission_error(&error) {
            return Error::PermissionDenied {
                what: path.display().to_string(),
                reason: io_message(&error),
            };
        }
        Error::Io { path, error }
    }

    /// Whether the error means stored bytes are damaged or a referenced object is missing.
    /// The one place that decides what counts as damage.
    pub fn is_damage(&self) -> bool {
        self.kind().is_damage()
    }

    /// The object the error concerns, when it names one.
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            Error::NotFound { object } | Error::Corrupt { object, .. } => Some(object),
            _ => None,
        }
    }

    /// The underlying OS error of a local I/O failure.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Re-labels a decoding/authentication failure with the object it concerns.
    pub fn with_object(self, object: ObjectRef) -> Self {
        match self {
            Error::Corrupt { reason, .. } => Error::Corrupt { object, reason },
            other => other,
        }
    }
}

impl ErrorKind {
    /// Whether this kind means damage (see the type's documentation).
    pub fn is_damage(self) -> bool {
        matches!(self, ErrorKind::Corrupt | ErrorKind::NotFound)
    }

    /// Stable snake_case name, used in `--json` error objects.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NoRepository => "no_repository",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NoMatch => "no_match",
            ErrorKind::Corrupt => "damaged",
            ErrorKind::WrongPassword => "wrong_password",
            ErrorKind::Locked => "locked",
            ErrorKind::Backend => "backend",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Io => "io",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Retained => "retained",
        }
    }
}

/// Whether an OS error is a refusal (permissions, read-only file system) rather than a failure.
pub fn is_permission_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
        || matches!(
            e.raw_os_error(),
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
        )
}

/// An OS error's text without the "(os error N)" suffix that std appends.
pub fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience() {
        let e = Error::Backend {
            op: "read",
            path: "data/aa/bb".into(),
            message: "timeout".into(),
            transient: true,
        };
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert!(e.is_transient());
        assert!(!Error::WrongPassword.is_transient());
        let c = Error::corrupt(ObjectRef::Path("x".into()), "bad tag")
            .with_object(ObjectRef::Pack(PackId([1; 32])));
        assert!(c.to_string().starts_with("pack 0101"));
        assert_eq!(c.kind(), ErrorKind::Corrupt);
    }
}
