//! Hold objects: legal holds on snapshots (`format-spec/08-trees-and-snapshots.md`, "Holds").
//!
//! Plaintext, sealed in an envelope of kind `H`:
//! `snapshot(32) || reason(str) || created(time) || hostname(str) || username(str)`.
//! A snapshot is held while at least one hold object names it. `release` deletes the hold
//! objects; nothing is ever modified in place.

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer};
use crate::id::SnapshotId;

/// A decoded hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The held snapshot.
    pub snapshot: SnapshotId,
    /// Why (ticket number, case name).
    pub reason: String,
    /// When the hold was placed.
    pub created: Timestamp,
    /// Host that placed it.
    pub hostname: String,
    /// User that placed it.
    pub username: String,
}

/// Encodes a hold plaintext.
pub fn encode_hold(h: &Hold) -> Vec<u8> {
    let mut w = Writer::new();
    w.id(&h.snapshot.0);
    w.str(&h.reason);
    h.created.encode(&mut w);
    w.str(&h.hostname);
    w.str(&h.username);
    w.into_bytes()
}

/// Decodes a hold plaintext.
pub fn decode_hold(bytes: &[u8]) -> DecodeResult<Hold> {
    let mut r = Reader::new(bytes);
    let h = Hold {
        snapshot: SnapshotId(r.id()?),
        reason: r.str()?.to_string(),
        created: Timestamp::decode(&mut r)?,
        hostname: r.str()?.to_string(),
        username: r.str()?.to_string(),
    };
    r.finish()?;
    Ok(h)
}
