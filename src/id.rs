//! Typed identifiers.
//!
//! Every id in vault is 32 bytes (a BLAKE3 output). The newtypes keep a pack id from being
//! passed where a blob id is expected. Ids print as lowercase hex; `short()` is the 8-character
//! prefix shown in tables. Spec: `format-spec/03-ids-and-hashing.md`.

use std::fmt;
use std::str::FromStr;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The raw bytes of the id.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lowercase hex form (64 characters).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, as shown in tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses a full 64-character hex id.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s).ok_or_else(|| {
                    crate::Error::InvalidInput(format!("not a 64-character hex id: {s:?}"))
                })
            }
        }
    };
}

define_id!(
    /// Keyed BLAKE3 of a blob's plaintext (a file chunk or an encoded tree).
    BlobId
);
define_id!(
    /// BLAKE3 of a pack file's stored bytes; also its object name.
    PackId
);
define_id!(
    /// BLAKE3 of a snapshot object's stored bytes; also its object name.
    SnapshotId
);
define_id!(
    /// BLAKE3 of an index object's stored bytes; also its object name.
    IndexId
);
define_id!(
    /// BLAKE3 of a key file's stored bytes; also its object name.
    KeyId
);
define_id!(
    /// BLAKE3 of a lock object's stored bytes; also its object name.
    LockId
);
define_id!(
    /// BLAKE3 of a hold object's stored bytes; also its object name.
    HoldId
);
define_id!(
    /// BLAKE3 of an audit record's stored bytes; also its object name.
    AuditId
);
define_id!(
    /// Random identity of a repository, chosen at `init`; names the local cache directory.
    RepoId
);

/// The two kinds of blob a pack can hold. Data and tree blobs never share a pack.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum BlobType {
    /// A chunk of file content.
    Data,
    /// One encoded directory (a tree).
    Tree,
}

impl BlobType {
    /// The byte that represents this type on disk.
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => crate::format::BLOB_TYPE_DATA,
            BlobType::Tree => crate::format::BLOB_TYPE_TREE,
        }
    }

    /// Inverse of [`BlobType::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            crate::format::BLOB_TYPE_DATA => Some(BlobType::Data),
            crate::format::BLOB_TYPE_TREE => Some(BlobType::Tree),
            _ => None,
        }
    }

    /// Lowercase name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

impl fmt::Display for BlobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = BlobId([0xab; 32]);
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(BlobId::from_hex(&hex), Some(id));
        assert_eq!(id.short(), "abababab");
        assert!(BlobId::from_hex("abc").is_none());
        assert!("zz".parse::<PackId>().is_err());
    }

    #[test]
    fn blob_type_codes_round_trip() {
        for t in [BlobType::Data, BlobType::Tree] {
            assert_eq!(BlobType::from_code(t.code()), Some(t));
        }
        assert_eq!(BlobType::from_code(7), None);
    }
}
