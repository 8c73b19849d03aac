//! Audit records (`format-spec/14-audit.md`): one sealed object per audited command, in a hash
//! chain per writer.
//!
//! Plaintext, sealed in an envelope of kind `A`:
//! ```text
//! writer(32) || seq(uvarint) || prev(opt id) || time(time)
//! || hostname(str) || username(str) || profile(str) || command(str)
//! || args: count(uvarint) str*
//! || exit_code(uvarint) || error(str)
//! || snapshots: count(uvarint) id*
//! || bytes(uvarint) || summary(str)
//! || truncations: count(uvarint) (writer(32) || through_seq(uvarint))*
//! || acknowledged: count(uvarint) (writer(32) || from_seq(uvarint) || to_seq(uvarint))*
//! ```
//! `prev` is the object name of the same writer's record `seq - 1` (absent for `seq = 0`).
//! Because names are hashes of the stored bytes and the contents are authenticated, altering
//! or replacing a record breaks its name or its successor's `prev`; deleting one leaves a gap
//! in the sequence. A `truncations` entry says that audit records of `writer` up to and
//! including `through_seq` were removed on purpose (retention), so the gap is expected. An
//! `acknowledged` entry (written by `vault repair audit`) says that records `from_seq..=to_seq`
//! of `writer` are known to be missing, unreadable or replaced: the break is on record.

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer};

/// A decoded audit record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// The chain (random; one per machine and repository, kept in the local cache).
    pub writer: [u8; 32],
    /// Position in the writer's chain, from 0.
    pub seq: u64,
    /// Object name of the writer's previous record.
    pub prev: Option<[u8; 32]>,
    /// When the command finished.
    pub time: Timestamp,
    /// Host it ran on.
    pub hostname: String,
    /// User it ran as.
    pub username: String,
    /// Configuration profile ("" without one).
    pub profile: String,
    /// Command name (`snapshot`, `restore`, …).
    pub command: String,
    /// The command line, secrets replaced by `***`.
    pub args: Vec<String>,
    /// Exit code.
    pub exit_code: u32,
    /// Error message of a failed run ("" on success).
    pub error: String,
    /// Snapshots created, removed, restored or held.
    pub snapshots: Vec<[u8; 32]>,
    /// Bytes added, restored or freed.
    pub bytes: u64,
    /// What was done, in words.
    pub summary: String,
    /// Audit records removed by retention: (writer, last removed seq).
    pub truncations: Vec<([u8; 32], u64)>,
    /// Breaks acknowledged by a repair: (writer, first seq, last seq).
    pub acknowledged: Vec<([u8; 32], u64, u64)>,
}

/// Encodes an audit record plaintext.
pub fn encode_audit(a: &AuditRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.id(&a.writer);
    w.uvarint(a.seq);
    w.opt_id(a.prev.as_ref());
    a.time.encode(&mut w);
    w.str(&a.hostname);
    w.str(&a.username);
    w.str(&a.profile);
    w.str(&a.command);
    w.uvarint(a.args.len() as u64);
    for s in &a.args {
        w.str(s);
    }
    w.uvarint(u64::from(a.exit_code));
    w.str(&a.error);
    w.uvarint(a.snapshots.len() as u64);
    for s in &a.snapshots {
        w.id(s);
    }
    w.uvarint(a.bytes);
    w.str(&a.summary);
    w.uvarint(a.truncations.len() as u64);
    for (writer, seq) in &a.truncations {
        w.id(writer);
        w.uvarint(*seq);
    }
    w.uvarint(a.acknowledged.len() as u64);
    for (writer, from, to) in &a.acknowledged {
        w.id(writer);
        w.uvarint(*from);
        w.uvarint(*to);
    }
    w.into_bytes()
}

/// Decodes an audit record plaintext.
pub fn decode_audit(bytes: &[u8]) -> DecodeResult<AuditRecord> {
    let mut r = Reader::new(bytes);
    let writer = r.id()?;
    let seq = r.uvarint()?;
    let prev = r.opt_id()?;
    let time = Timestamp::decode(&mut r)?;
    let hostname = r.str()?.to_string();
    let username = r.str()?.to_string();
    let profile = r.str()?.to_string();
    let command = r.str()?.to_string();
    let n = r.count(1)?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        args.push(r.str()?.to_string());
    }
    let exit_code = r.u32v()?;
    let error = r.str()?.to_string();
    let n = r.count(32)?;
    let mut snapshots = Vec::with_capacity(n);
    for _ in 0..n {
        snapshots.push(r.id()?);
    }
    let b = r.uvarint()?;
    let summary = r.str()?.to_string();
    let n = r.count(33)?;
    let mut truncations = Vec::with_capacity(n);
    for _ in 0..n {
        truncations.push((r.id()?, r.uvarint()?));
    }
    let n = r.count(34)?;
    let mut acknowledged = Vec::with_capacity(n);
    for _ in 0..n {
        let (writer, from, to) = (r.id()?, r.uvarint()?, r.uvarint()?);
        if from > to {
            return super::wire::err("an acknowledged range ends before it starts");
        }
        acknowledged.push((writer, from, to));
    }
    r.finish()?;
    if (seq == 0) != prev.is_none() {
        return super::wire::err("an audit record has a predecessor exactly when its seq is not 0");
    }
    Ok(AuditRecord {
        writer,
        seq,
        prev,
        time,
        hostname,
        username,
        profile,
        command,
        args,
        exit_code,
        error,
        snapshots,
        bytes: b,
        summary,
        truncations,
        acknowledged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_seq_prev_agreement() {
        let a = AuditRecord {
            writer: [7; 32],
            seq: 3,
            prev: Some([9; 32]),
            time: Timestamp {
                secs: 1_800_000_000,
                nanos: 5,
            },
            hostname: "db1".into(),
            username: "backup".into(),
            profile: "db".into(),
            command: "snapshot".into(),
            args: vec!["vault".into(), "snapshot".into()],
            exit_code: 0,
            error: String::new(),
            snapshots: vec![[1; 32]],
            bytes: 42,
            summary: "snapshot saved".into(),
            truncations: vec![([2; 32], 10)],
            acknowledged: vec![([3; 32], 4, 6)],
        };
        let b = encode_audit(&a);
        assert_eq!(decode_audit(&b).unwrap(), a);
        let mut first = a.clone();
        first.seq = 0;
        assert!(decode_audit(&encode_audit(&first)).is_err());
        for cut in 0..b.len() {
            assert!(decode_audit(&b[..cut]).is_err());
        }
    }
}
