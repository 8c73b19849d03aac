//! Lock objects (`format-spec/09-locks.md`).
//!
//! Plaintext, sealed in an envelope of kind `L`:
//! `kind(u8: 1 shared, 2 exclusive) || hostname(str) || username(str) || pid(uvarint) ||
//!  uid(uvarint) || created(time) || refreshed(time)`, and in envelope version 2 also
//! `|| boot_id(str) || pid_ns(uvarint) || start_ticks(uvarint)`: the owner's identity beyond
//! its PID, so that a lock whose owner is gone is recognised even after the PID was reused.
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
    /// The holder's kernel boot id (32 hex digits), PID namespace and start time in clock
    /// ticks since boot; `None` in version-1 locks.
    pub owner: Option<LockOwner>,
}

/// Who holds a lock, beyond the PID (envelope version 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOwner {
    /// Kernel boot id, 32 lowercase hex digits (empty when unknown).
    pub boot_id: String,
    /// Inode number of the holder's PID namespace (0 when unknown).
    pub pid_ns: u64,
    /// Start time of the holder in clock ticks since boot (0 when unknown).
    pub start_ticks: u64,
}

/// Envelope version of lock objects that carry a [`LockOwner`].
pub const LOCK_VERSION_WITH_OWNER: u8 = 2;

/// Encodes a lock plaintext: version 2 when it has an owner, else version 1.
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
    if let Some(o) = &l.owner {
        w.str(&o.boot_id);
        w.uvarint(o.pid_ns);
        w.uvarint(o.start_ticks);
    }
    w.into_bytes()
}

/// Decodes a lock plaintext of envelope `version` (1 or 2).
pub fn decode_lock(bytes: &[u8], version: u8) -> DecodeResult<Lock> {
    let mut r = Reader::new(bytes);
    let exclusive = match r.u8()? {
        LOCK_SHARED => false,
        LOCK_EXCLUSIVE => true,
        k => return err(format!("unknown lock kind {k}")),
    };
    let mut l = Lock {
        exclusive,
        hostname: r.str()?.to_string(),
        username: r.str()?.to_string(),
        pid: r.u32v()?,
        uid: r.u32v()?,
        created: Timestamp::decode(&mut r)?,
        refreshed: Timestamp::decode(&mut r)?,
        owner: None,
    };
    if version >= LOCK_VERSION_WITH_OWNER {
        let boot_id = r.str()?.to_string();
        if !(boot_id.is_empty()
            || boot_id.len() == 32
                && boot_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return err("boot id is not 32 lowercase hex digits");
        }
        l.owner = Some(LockOwner {
            boot_id,
            pid_ns: r.uvarint()?,
            start_ticks: r.uvarint()?,
        });
    }
    r.finish()?;
    Ok(l)
}
