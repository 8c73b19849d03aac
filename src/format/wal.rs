//! Archived PostgreSQL WAL files (`format-spec/15-postgresql.md`).
//!
//! One object per file PostgreSQL archives (segment, timeline history, backup history, partial
//! segment), stored as `wal/<file name>`, plus vault's own base-backup labels. The object is an
//! envelope of kind `W` whose seal binds its name (header flag 0x01): the name is what
//! PostgreSQL asks for, not a hash.
//!
//! Plaintext: `name(str) || pushed(time) || raw_length(uvarint) || PAYLOAD` (chapter 6's blob
//! payload: a compression byte and the body).

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer, err};

/// The directory of archived WAL files.
pub const WAL_DIR: &str = "wal";

/// Suffix of vault's base-backup label objects.
pub const LABEL_SUFFIX: &str = ".vault-backup";

/// A decoded WAL object (payload still encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalObject {
    /// The file name PostgreSQL gave.
    pub name: String,
    /// When it was archived.
    pub pushed: Timestamp,
    /// Its length in bytes.
    pub raw_length: u64,
    /// Compression byte and body (chapter 6).
    pub payload: Vec<u8>,
}

/// Encodes the plaintext.
pub fn encode_wal(w: &WalObject) -> Vec<u8> {
    let mut out = Writer::new();
    out.str(&w.name);
    w.pushed.encode(&mut out);
    out.uvarint(w.raw_length);
    out.raw(&w.payload);
    out.into_bytes()
}

/// Decodes the plaintext.
pub fn decode_wal(bytes: &[u8]) -> DecodeResult<WalObject> {
    let mut r = Reader::new(bytes);
    let name = r.str()?.to_string();
    if !valid_name(&name) {
        return err(format!("invalid WAL file name {name:?}"));
    }
    let pushed = Timestamp::decode(&mut r)?;
    let raw_length = r.uvarint()?;
    if raw_length > super::MAX_BLOB_LEN {
        return err(format!("WAL file of {raw_length} bytes"));
    }
    let payload = r.take(r.remaining())?.to_vec();
    if payload.is_empty() {
        return err("empty payload");
    }
    Ok(WalObject {
        name,
        pushed,
        raw_length,
        payload,
    })
}

fn hex_upper(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Whether `name` is a file name PostgreSQL archives (`000000010000000000000003`,
/// `…​.partial`, `00000002.history`, `…​.00000028.backup`) or a vault label
/// (`….00000028.vault-backup`). Nothing else is accepted: the name becomes an object path.
pub fn valid_name(name: &str) -> bool {
    if hex_upper(name, 24) {
        return true;
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex_upper(seg, 24);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return hex_upper(tli, 8);
    }
    for suffix in [".backup", LABEL_SUFFIX] {
        if let Some(rest) = name.strip_suffix(suffix) {
            return match rest.split_once('.') {
                Some((seg, off)) => hex_upper(seg, 24) && hex_upper(off, 8),
                None => false,
            };
        }
    }
    false
}

/// A segment file name's (timeline, segment number), for ordering and gap detection;
/// `None` for anything that is not a plain segment. `seg_per_log` is
/// `0x1_0000_0000 / wal_segment_size` (256 for 16 MiB segments).
pub fn segment_number(name: &str, seg_per_log: u64) -> Option<(u32, u64)> {
    if !hex_upper(name, 24) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    if seg >= seg_per_log {
        return None;
    }
    Some((tli, log * seg_per_log + seg))
}

/// The segment file name of (timeline, segment number).
pub fn segment_name(tli: u32, number: u64, seg_per_log: u64) -> String {
    format!(
        "{tli:08X}{:08X}{:08X}",
        number / seg_per_log,
        number % seg_per_log
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.00000028.vault-backup",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "00000001000000000000003",
            "000000010000000000000003x",
            "../../etc/passwd",
            "00000001000000000000000a",
            "000000010000000000000003.backup",
            "0000002.history",
            "000000010000000000000003.0000028.backup",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            segment_number("0000000100000001000000FF", 256),
            Some((1, 511))
        );
        assert_eq!(segment_name(1, 511, 256), "0000000100000001000000FF");
        assert_eq!(segment_number("000000010000000100000100", 256), None);
    }

    #[test]
    fn round_trip() {
        let w = WalObject {
            name: "000000010000000000000003".into(),
            pushed: Timestamp::new(1_767_600_000, 5),
            raw_length: 3,
            payload: vec![0, 1, 2, 3],
        };
        assert_eq!(decode_wal(&encode_wal(&w)).unwrap(), w);
    }
}
