//! Where objects live in the backend (`format-spec/01-layout.md`).
//!
//! ```text
//! config                      the repository config (one object)
//! keys/<hex id>               key files
//! data/<first 2 hex>/<hex id> pack files, fanned out by the first byte of their id
//! index/<hex id>              index objects
//! snapshots/<hex id>          snapshot manifests
//! holds/<hex id>              legal holds on snapshots
//! locks/<hex id>              locks
//! audit/<hex id>              audit records
//! ```
//! Every name except `config` is the lowercase hex BLAKE3 of the object's stored bytes.

use crate::id::{AuditId, HoldId, IndexId, KeyId, LockId, PackId, SnapshotId};

/// Path of the config object.
pub const CONFIG_PATH: &str = "config";

/// The directories of a repository, in the order `init` creates them.
pub const DIRS: [&str; 7] = [
    "keys",
    "data",
    "index",
    "snapshots",
    "holds",
    "locks",
    "audit",
];

/// Kinds of object that live in a directory of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// `keys/`
    Keys,
    /// `data/` (with one level of fan-out)
    Data,
    /// `index/`
    Index,
    /// `snapshots/`
    Snapshots,
    /// `holds/`
    Holds,
    /// `locks/`
    Locks,
    /// `audit/`
    Audit,
}

impl Dir {
    /// The directory name, without slash.
    pub fn name(self) -> &'static str {
        match self {
            Dir::Keys => "keys",
            Dir::Data => "data",
            Dir::Index => "index",
            Dir::Snapshots => "snapshots",
            Dir::Holds => "holds",
            Dir::Locks => "locks",
            Dir::Audit => "audit",
        }
    }

    /// The backend path of the object named `hex` in this directory.
    pub fn path(self, hex: &str) -> String {
        match self {
            Dir::Data => format!("data/{}/{}", &hex[..2], hex),
            other => format!("{}/{}", other.name(), hex),
        }
    }

    /// The object name (hex id) of a backend path in this directory, if it is well formed.
    pub fn name_of(self, path: &str) -> Option<[u8; 32]> {
        let file = path.rsplit('/').next()?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(file, &mut out).ok()?;
        if file.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        Some(out)
    }
}

/// Path of a pack file.
pub fn pack_path(id: &PackId) -> String {
    Dir::Data.path(&id.to_hex())
}
/// Path of an index object.
pub fn index_path(id: &IndexId) -> String {
    Dir::Index.path(&id.to_hex())
}
/// Path of a snapshot manifest.
pub fn snapshot_path(id: &SnapshotId) -> String {
    Dir::Snapshots.path(&id.to_hex())
}
/// Path of a key file.
pub fn key_path(id: &KeyId) -> String {
    Dir::Keys.path(&id.to_hex())
}
/// Path of a lock object.
pub fn lock_path(id: &LockId) -> String {
    Dir::Locks.path(&id.to_hex())
}
/// Path of an audit record.
pub fn audit_path(id: &AuditId) -> String {
    Dir::Audit.path(&id.to_hex())
}
/// Path of a hold object.
pub fn hold_path(id: &HoldId) -> String {
    Dir::Holds.path(&id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_paths_fan_out_by_first_byte() {
        let id = PackId([0xab; 32]);
        let p = pack_path(&id);
        assert!(p.starts_with("data/ab/abab"));
        assert_eq!(Dir::Data.name_of(&p), Some([0xab; 32]));
        assert_eq!(Dir::Index.name_of("index/xyz"), None);
        assert_eq!(
            Dir::Index.name_of(&format!("index/{}", "AB".repeat(32))),
            None
        );
    }
}
