//! Lock objects (`format-spec/09-locks.md`).
//!
//! Plaintext, sealed in an envelope of kind `L`:
//! `kind(u8: 1 shared, 2 exclusive) || hostname(str) || username(str) || pid(uvarint) ||
//!  uid(uvarint) || created(time) || refreshed(time)`.
//! A lock is refreshed by writing a new lock object (same `created`, new `refreshed`) and then
//! deleting the old one; objects are never modified in place.

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer, err};
use super::{LOCK_EXCLUSIVE, LOCK_SHARED};

/// A decoded lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// Exclusive (prune, forget, key removal) or shared (everything else that needs a lock).
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Uid of the holder.
    pub uid: u32,
    /// When the lock was first taken.
    pub created: Timestamp,
    /// When this lock object was written.
    pub refreshed: Timestamp,
}

/// Encodes a lock plaintext.
pub fn encode_lock(l: &Lock) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(if l.exclusive {
        LOCK_EXCLUSIVE
    } else {
        LOCK_SHARED
    });
    w.str(&l.hostname);
    w.str(&l.username);
    w.uvarint(u64::from(l.pid));
    w.uvarint(u64::from(l.uid));
    l.created.encode(&mut w);
    l.refreshed.encode(&mut w);
    w.into_bytes()
}

/// Decodes a lock plaintext.
pub fn decode_lock(bytes: &[u8]) -> DecodeResult<Lock> {
    let mut r = Reader::new(bytes);
    let exclusive = match r.u8()? {
        LOCK_SHARED => false,
        LOCK_EXCLUSIVE => true,
        k => return err(format!("unknown lock kind {k}")),
    };
    let l = Lock {
        exclusive,
        hostname: r.str()?.to_string(),
        username: r.str()?.to_string(),
        pid: r.u32v()?,
        uid: r.u32v()?,
        created: Timestamp::decode(&mut r)?,
        refreshed: Timestamp::decode(&mut r)?,
    };
    r.finish()?;
    Ok(l)
}
