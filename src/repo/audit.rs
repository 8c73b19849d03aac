//! The audit trail: appending records to this machine's chain, listing them, expiring old
//! ones, and verifying the chains (`format-spec/14-audit.md`).
//!
//! Each machine (per repository) writes its own chain: a random writer id and the position and
//! name of its newest record are kept in the local cache directory, in `audit-writer`, under
//! an advisory lock so that concurrent commands on one machine extend the chain one after the
//! other. Without a local cache, every record starts a chain of its own. Records are never
//! overwritten; prune removes only the oldest records of a chain, older than the retention,
//! after writing a record that names what it removes.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::format::KIND_AUDIT;
use crate::format::audit::{AuditRecord, decode_audit, encode_audit};
use crate::format::layout::{Dir, audit_path};
use crate::format::time::Timestamp;
use crate::id::AuditId;
use crate::{Error, ObjectRef, Result};

use super::Repository;

/// The sealed record being published (write-ahead, 14.2).
const PENDING_FILE: &str = "audit-pending";

/// Name of the writer state file in the repository's cache directory.
const WRITER_FILE: &str = "audit-writer";

/// This machine's position in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterHead {
    /// The chain.
    pub writer: [u8; 32],
    /// Sequence number of the newest record.
    pub seq: u64,
    /// Its name.
    pub last: AuditId,
}

fn parse_head(text: &str) -> Option<WriterHead> {
    let mut it = text.split_whitespace();
    let mut writer = [0u8; 32];
    hex::decode_to_slice(it.next()?, &mut writer).ok()?;
    let seq = it.next()?.parse().ok()?;
    let last = AuditId::from_hex(it.next()?)?;
    Some(WriterHead { writer, seq, last })
}

fn state_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

impl Repository {
    /// This machine's chain head, if it has written a record (read without locking).
    /// A record of a run killed between naming it in the head and publishing it is not yet
    /// the chain's newest: its predecessor is (the next append publishes it).
    pub fn audit_head(&self) -> Option<WriterHead> {
        let dir = self.cache_dir()?;
        let head = parse_head(&std::fs::read_to_string(dir.join(WRITER_FILE)).ok()?)?;
        let Ok(bytes) = std::fs::read(dir.join(PENDING_FILE)) else {
            return Some(head);
        };
        if crate::crypto::storage_hash(&bytes) != head.last.0
            || self
                .backend()
                .exists(&Dir::Audit.path(&head.last.to_hex()))
                .unwrap_or(true)
        {
            return Some(head);
        }
        let plain = self
            .open_object(KIND_AUDIT, &bytes, ObjectRef::Audit(head.last))
            .ok()?;
        let record = decode_audit(&plain).ok()?;
        Some(WriterHead {
            writer: head.writer,
            seq: head.seq.checked_sub(1)?,
            last: AuditId(record.prev?),
        })
    }

    /// Appends `record` to this machine's chain; returns its id. The caller fills in what the
    /// command contributes; the chain fields (writer, seq, prev), the time, host and user are
    /// set here.
    pub fn append_audit(&self, mut record: AuditRecord) -> Result<AuditId> {
        record.time = Timestamp::now();
        record.hostname = crate::source::owner::hostname();
        record.username = crate::source::owner::current_username();
        let new_writer = || -> Result<[u8; 32]> {
            let mut writer = [0u8; 32];
            getrandom::fill(&mut writer).map_err(|e| Error::Aborted(format!("random: {e}")))?;
            Ok(writer)
        };
        let Some(dir) = self.cache_dir() else {
            (record.writer, record.seq, record.prev) = (new_writer()?, 0, None);
            return self
                .write_object(Dir::Audit, KIND_AUDIT, &encode_audit(&record))
                .map(AuditId);
        };
        crate::backend::local::private_dir_all(&dir)?;
        let path = dir.join(WRITER_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| state_err(&path, e))?;
        // One command at a time extends this machine's chain.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| state_err(&path, e.into()))?;
        // Dated once the chain is ours: a command that asked for the time earlier but got the
        // lock later must not be dated before the record it follows (check reports that as
        // reordering).
        record.time = Timestamp::now();
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| state_err(&path, e))?;
        let head = parse_head(&text);
        // A record sealed and named in the head but never published (killed in between) is
        // published now, before the chain is extended past it; a pending record the head does
        // not name was never part of the chain.
        let pending = dir.join(PENDING_FILE);
        if let Ok(bytes) = std::fs::read(&pending) {
            if head
                .as_ref()
                .is_some_and(|h| h.last.0 == crate::crypto::storage_hash(&bytes))
            {
                let name = crate::crypto::storage_hash(&bytes);
                match self
                    .backend()
                    .write(&Dir::Audit.path(&hex::encode(name)), &bytes)
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            std::fs::remove_file(&pending).map_err(|e| state_err(&pending, e))?;
        }
        (record.writer, record.seq, record.prev) = match head {
            Some(h) => (h.writer, h.seq + 1, Some(h.last.0)),
            None => (new_writer()?, 0, None),
        };
        // Write-ahead: the sealed record goes to a local file and the head names it before it
        // is published, so a process killed at any point neither forks the chain (two records
        // at one seq) nor loses the record.
        let sealed = self.seal_object(KIND_AUDIT, &encode_audit(&record))?;
        let id = AuditId(crate::crypto::storage_hash(&sealed));
        std::fs::write(&pending, &sealed)
            .and_then(|_| std::fs::File::open(&pending)?.sync_all())
            .map_err(|e| state_err(&pending, e))?;
        let line = format!(
            "{} {} {}\n",
            hex::encode(record.writer),
            record.seq,
            id.to_hex()
        );
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(line.as_bytes())?;
            file.sync_all()
        })()
        .map_err(|e| state_err(&path, e))?;
        self.backend()
            .write(&Dir::Audit.path(&id.to_hex()), &sealed)?;
        std::fs::remove_file(&pending).map_err(|e| state_err(&pending, e))?;
        Ok(id)
    }

    /// Loads one audit record.
    pub fn load_audit(&self, id: &AuditId) -> Result<AuditRecord> {
        let object = ObjectRef::Audit(*id);
        let plain = self.read_object(Dir::Audit, KIND_AUDIT, &id.0, object.clone())?;
        decode_audit(&plain).map_err(|e| Error::corrupt(object, e.0))
    }

    /// Ids of every audit record.
    pub fn list_audit_ids(&self) -> Result<Vec<AuditId>> {
        Ok(self
            .list_names(Dir::Audit)?
            .into_iter()
            .map(AuditId)
            .collect())
    }

    /// Calls `f` for every audit record (or the error that makes it unreadable), in no
    /// particular order, holding none.
    pub fn for_each_audit(
        &self,
        f: &(dyn Fn(AuditId, Result<AuditRecord>) -> Result<()> + Sync),
    ) -> Result<()> {
        super::snapshots::for_each_loaded(self.list_audit_ids()?, &|id| self.load_audit(id), f)
    }

    /// Removes, from the start of every chain, the records older than `cutoff`. A record
    /// naming what is removed (`truncations`) is appended first, so the gap is never taken
    /// for tampering, even if the removal is interrupted. Returns how many were (or, with
    /// `dry_run`, would be) removed. The caller holds an exclusive lock.
    pub fn expire_audit(&self, cutoff: Timestamp, dry_run: bool) -> Result<u64> {
        let links = chain_links(self)?;
        let mut remove: Vec<AuditId> = Vec::new();
        let mut truncations = Vec::new();
        for (writer, chain) in &links.chains {
            let mut through = None;
            for l in chain.values() {
                if l.time >= cutoff {
                    break;
                }
                remove.push(l.id);
                through = Some(l.seq);
            }
            if let Some(seq) = through {
                truncations.push((*writer, seq));
            }
        }
        if dry_run || remove.is_empty() {
            return Ok(remove.len() as u64);
        }
        self.append_audit(AuditRecord {
            command: "prune".into(),
            summary: format!(
                "audit retention: removing {} records older than {}",
                remove.len(),
                cutoff.secs
            ),
            truncations,
            ..AuditRecord::default()
        })?;
        for id in &remove {
            match self.backend().delete(&audit_path(id)) {
                Ok(()) => {}
                // Already gone, or retained by the storage (object lock): covered by the
                // truncation record, removed by a later run.
                Err(e)
                    if e.kind() == crate::ErrorKind::NotFound
                        || e.kind() == crate::ErrorKind::Retained => {}
                Err(e) => return Err(e),
            }
        }
        Ok(remove.len() as u64)
    }
}

/// One record's place in its chain.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Object name.
    pub id: AuditId,
    /// Position.
    pub seq: u64,
    /// Predecessor's name.
    pub prev: Option<[u8; 32]>,
    /// Time.
    pub time: Timestamp,
}

/// Every chain's links (small: no text), the truncations recorded, and unreadable records.
#[derive(Debug, Default)]
pub struct ChainLinks {
    /// writer → seq → link (a second record with the same seq goes to `forks`).
    pub chains: BTreeMap<[u8; 32], BTreeMap<u64, Link>>,
    /// Records that share a writer and seq with another.
    pub forks: Vec<([u8; 32], Link)>,
    /// writer → highest seq removed on purpose.
    pub truncated: BTreeMap<[u8; 32], u64>,
    /// Breaks acknowledged by repairs: (writer, first seq, last seq).
    pub acknowledged: Vec<([u8; 32], u64, u64)>,
    /// Records that cannot be read.
    pub damaged: Vec<(AuditId, Error)>,
}

/// Reads every record's chain fields. A listing taken while another command appends can miss
/// a record whose successor it does list: every predecessor a listed record names but the
/// listing lacks is looked up by name before anything is judged.
pub fn chain_links(repo: &Repository) -> Result<ChainLinks> {
    let mut links = list_links(repo)?;
    let mut wanted: Vec<([u8; 32], [u8; 32])> = Vec::new();
    for (w, chain) in &links.chains {
        for l in chain.values() {
            if let Some(p) = l.prev
                && l.seq > 0
                && !chain.contains_key(&(l.seq - 1))
            {
                wanted.push((*w, p));
            }
        }
    }
    while let Some((w, id)) = wanted.pop() {
        let id = AuditId(id);
        let r = match repo.load_audit(&id) {
            Ok(r) => r,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
            Err(e) if e.is_damage() || e.kind() == crate::ErrorKind::Unsupported => {
                if !links.damaged.iter().any(|(d, _)| *d == id) {
                    links.damaged.push((id, e));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if r.writer != w || links.add(id, &r).is_err() {
            continue;
        }
        if let Some(p) = r.prev
            && r.seq > 0
            && !links.chains[&w].contains_key(&(r.seq - 1))
        {
            wanted.push((w, p));
        }
    }
    Ok(links)
}

impl ChainLinks {
    /// Takes in one readable record: its truncations and acknowledgments, and its place in its
    /// chain. A place already taken is returned as `Err` with the link (a fork).
    fn add(&mut self, id: AuditId, r: &AuditRecord) -> std::result::Result<(), Link> {
        for (w, s) in &r.truncations {
            let t = self.truncated.entry(*w).or_insert(*s);
            *t = (*t).max(*s);
        }
        self.acknowledged.extend(r.acknowledged.iter().copied());
        let link = Link {
            id,
            seq: r.seq,
            prev: r.prev,
            time: r.time,
        };
        match self.chains.entry(r.writer).or_default().entry(r.seq) {
            std::collections::btree_map::Entry::Occupied(_) => Err(link),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(link);
                Ok(())
            }
        }
    }
}

fn list_links(repo: &Repository) -> Result<ChainLinks> {
    let acc = std::sync::Mutex::new(ChainLinks::default());
    repo.for_each_audit(&|id, r| {
        let mut a = acc.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Err(e) => a.damaged.push((id, e)),
            Ok(r) => {
                if let Err(fork) = a.add(id, &r) {
                    a.forks.push((r.writer, fork));
                }
            }
        }
        Ok(())
    })?;
    Ok(acc.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// A problem found in the audit chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainProblem {
    /// The record concerned (or the one after a gap).
    pub object: ObjectRef,
    /// What is wrong.
    pub message: String,
    /// The records of one chain the break concerns (writer, first seq, last seq), which a
    /// repair can acknowledge; `None` for an unreadable record (a repair removes it).
    pub range: Option<([u8; 32], u64, u64)>,
}

/// Whether acknowledgments cover `from..=to` of chain `w`.
fn covered(acks: &[([u8; 32], u64, u64)], w: &[u8; 32], from: u64, to: u64) -> bool {
    let mut mine: Vec<(u64, u64)> = acks
        .iter()
        .filter(|a| a.0 == *w)
        .map(|a| (a.1, a.2))
        .collect();
    mine.sort_unstable();
    let mut next = from;
    for (a, b) in mine {
        if a > next {
            break;
        }
        if b >= next {
            if b >= to {
                return true;
            }
            next = b + 1;
        }
    }
    false
}

/// Verifies the chains: every record but the first of a chain follows its predecessor, no
/// sequence number is missing unless a truncation or an acknowledgment covers it, no two
/// records share a place, and this machine's newest record (`head`) is present. Pure.
pub fn verify_chains(links: &ChainLinks, head: Option<&WriterHead>) -> Vec<ChainProblem> {
    let mut out = Vec::new();
    let short = |w: &[u8; 32]| hex::encode(&w[..4]);
    let acks = &links.acknowledged;
    let mut push = |object: ObjectRef, message: String, range: Option<([u8; 32], u64, u64)>| {
        if let Some((w, a, b)) = range
            && covered(acks, &w, a, b)
        {
            return;
        }
        out.push(ChainProblem {
            object,
            message,
            range,
        });
    };
    for (id, e) in &links.damaged {
        push(
            ObjectRef::Audit(*id),
            format!("cannot be read ({e}): altered, truncated or replaced"),
            None,
        );
    }
    for (w, l) in &links.forks {
        push(
            ObjectRef::Audit(l.id),
            format!(
                "a second record at position {} of chain {} (a copied or forged record)",
                l.seq,
                short(w)
            ),
            Some((*w, l.seq, l.seq)),
        );
    }
    for (w, chain) in &links.chains {
        let truncated = links.truncated.get(w).copied();
        let mut expected: u64 = truncated.map_or(0, |t| t + 1);
        let mut prev_link: Option<&Link> = None;
        for l in chain.values() {
            if l.seq > expected {
                push(
                    ObjectRef::Audit(l.id),
                    format!(
                        "records {}..{} of chain {} are missing (deleted?)",
                        expected,
                        l.seq - 1,
                        short(w)
                    ),
                    Some((*w, expected, l.seq - 1)),
                );
            } else if let (Some(p), Some(want)) = (prev_link, l.prev)
                && p.seq + 1 == l.seq
                && p.id.0 != want
            {
                push(
                    ObjectRef::Audit(l.id),
                    format!(
                        "does not follow record {} of chain {}: its predecessor was replaced",
                        p.seq,
                        short(w)
                    ),
                    Some((*w, p.seq, p.seq)),
                );
            }
            if let Some(p) = prev_link
                && p.seq + 1 == l.seq
                && l.time < p.time
            {
                push(
                    ObjectRef::Audit(l.id),
                    format!(
                        "is dated before its predecessor in chain {} (reordered?)",
                        short(w)
                    ),
                    Some((*w, p.seq, p.seq)),
                );
            }
            expected = expected.max(l.seq + 1);
            prev_link = Some(l);
        }
    }
    if let Some(h) = head {
        let present = links
            .chains
            .get(&h.writer)
            .and_then(|c| c.get(&h.seq))
            .is_some_and(|l| l.id == h.last);
        let removed = links.truncated.get(&h.writer).is_some_and(|t| *t >= h.seq);
        let top = links
            .chains
            .get(&h.writer)
            .and_then(|c| c.keys().next_back().copied());
        if !present && !removed && top.is_none_or(|t| t <= h.seq) {
            let from = top.map_or(0, |t| if t < h.seq { t + 1 } else { h.seq });
            push(
                ObjectRef::Audit(h.last),
                format!(
                    "this machine's newest audit record (position {} of chain {}) is missing (deleted?)",
                    h.seq,
                    short(&h.writer)
                ),
                Some((h.writer, from, h.seq)),
            );
        }
    }
    out
}

/// What `vault repair audit` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AuditRepair {
    /// Unreadable records removed.
    pub removed: Vec<String>,
    /// Breaks put on record: (chain, first seq, last seq).
    pub acknowledged: Vec<(String, u64, u64)>,
    /// The record that says so (when anything was done).
    pub record: Option<String>,
}

impl Repository {
    /// Removes unreadable audit records and appends a record that acknowledges every break
    /// left in the chains, so that `check` passes again while the log keeps what was lost.
    pub fn repair_audit(&self, dry_run: bool, base: AuditRecord) -> Result<AuditRepair> {
        let head = self.audit_head();
        let links = chain_links(self)?;
        let mut out = AuditRepair::default();
        for (id, _) in &links.damaged {
            out.removed.push(id.to_hex());
            if !dry_run {
                match self.backend().delete(&audit_path(id)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let links = if dry_run || links.damaged.is_empty() {
            links
        } else {
            chain_links(self)?
        };
        let mut acks: Vec<([u8; 32], u64, u64)> = verify_chains(&links, head.as_ref())
            .into_iter()
            .filter_map(|p| p.range)
            .collect();
        acks.sort_unstable();
        acks.dedup();
        out.acknowledged = acks
            .iter()
            .map(|(w, a, b)| (hex::encode(w), *a, *b))
            .collect();
        if dry_run || (acks.is_empty() && out.removed.is_empty()) {
            return Ok(out);
        }
        let id = self.append_audit(AuditRecord {
            summary: format!(
                "repair audit: removed {} unreadable records, acknowledged {} breaks",
                out.removed.len(),
                acks.len()
            ),
            acknowledged: acks,
            ..base
        })?;
        out.record = Some(id.to_hex());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(w: u8, n: u64) -> ChainLinks {
        let mut c = ChainLinks::default();
        let mut prev = None;
        for seq in 0..n {
            let id = AuditId([seq as u8 + 1; 32]);
            c.chains.entry([w; 32]).or_default().insert(
                seq,
                Link {
                    id,
                    seq,
                    prev,
                    time: Timestamp {
                        secs: seq as i64,
                        nanos: 0,
                    },
                },
            );
            prev = Some(id.0);
        }
        c
    }

    #[test]
    fn intact_chains_pass_and_gaps_forks_and_swaps_are_named() {
        assert!(verify_chains(&chain(1, 5), None).is_empty());
        let mut gap = chain(1, 5);
        gap.chains.get_mut(&[1; 32]).unwrap().remove(&2);
        let p = verify_chains(&gap, None);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("records 2..2"), "{p:?}");
        // The gap at the start is fine when a truncation covers it.
        let mut start = chain(1, 5);
        start.chains.get_mut(&[1; 32]).unwrap().remove(&0);
        assert_eq!(verify_chains(&start, None).len(), 1);
        start.truncated.insert([1; 32], 0);
        assert!(verify_chains(&start, None).is_empty());
        // A replaced predecessor.
        let mut swapped = chain(1, 3);
        swapped
            .chains
            .get_mut(&[1; 32])
            .unwrap()
            .get_mut(&1)
            .unwrap()
            .id = AuditId([99; 32]);
        assert!(
            verify_chains(&swapped, None)[0]
                .message
                .contains("replaced")
        );
        // Time going backwards.
        let mut back = chain(1, 3);
        back.chains
            .get_mut(&[1; 32])
            .unwrap()
            .get_mut(&2)
            .unwrap()
            .time
            .secs = -1;
        assert!(verify_chains(&back, None)[0].message.contains("reordered"));
        // The newest record deleted: only the local head knows.
        let c = chain(1, 3);
        let head = WriterHead {
            writer: [1; 32],
            seq: 3,
            last: AuditId([4; 32]),
        };
        assert!(verify_chains(&c, Some(&head))[0].message.contains("newest"));
        let ok_head = WriterHead {
            writer: [1; 32],
            seq: 2,
            last: AuditId([3; 32]),
        };
        assert!(verify_chains(&c, Some(&ok_head)).is_empty());
    }
}
