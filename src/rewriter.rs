//! `vault rewrite`: new snapshots without the paths that match exclude patterns (the erasure
//! path: rewrite, forget the originals, then prune with `--max-unused 0`).
//!
//! Each snapshot's tree is rebuilt bottom-up ([`crate::repo::walker::rewrite`]) without the
//! excluded entries; only changed trees are stored. A subtree's outcome is remembered on disk
//! by tree id and path, so a directory shared by many snapshots is rewritten once. The new
//! snapshot keeps time, host, paths and tags, gains the tag `rewritten`, and names its
//! original; its summary counts what it holds. A snapshot under a legal hold is rewritten,
//! but its original is never removed while the hold stands (`--forget` refuses it): a hold
//! means the data must be kept.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, Tree};
use crate::format::wire::{Reader, Writer};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::repo::cache::scratch::ScratchMap;
use crate::repo::lock::LockGuard;
use crate::repo::packer::{BlobSaver, SaverOptions};
use crate::repo::walker::{Rewritten, TreeRewriter, recount, rewrite};
use crate::source::exclude::PathMatcher;
use crate::{Error, Result};

/// Tag of a rewritten snapshot.
pub const REWRITTEN_TAG: &str = "rewritten";

/// Options of a rewrite.
pub struct RewriteOptions {
    /// Entries to leave out (with everything below them).
    pub exclude: PathMatcher,
    /// Remove the originals once their rewrites are written.
    pub forget: bool,
    /// Only report what would change.
    pub dry_run: bool,
}

/// One snapshot's rewrite.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotRewrite {
    /// The original.
    pub snapshot: String,
    /// The rewritten snapshot (absent in a dry run, or when everything was excluded).
    pub rewritten: Option<String>,
    /// Entries left out (directories count once, with what was below them).
    pub excluded: u64,
    /// Whether the original was removed.
    pub forgotten: bool,
    /// Why the original was kept although `--forget` was given (a legal hold).
    pub kept_because: Option<String>,
}

/// What a rewrite did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RewriteReport {
    /// Snapshots that had something to leave out.
    pub rewritten: Vec<SnapshotRewrite>,
    /// Snapshots looked at.
    pub snapshots: u64,
}

fn memo_key(tree: &BlobId, path: &Path) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&tree.0);
    h.update(path.as_os_str().as_bytes());
    *h.finalize().as_bytes()
}

fn encode_memo(outcome: Rewritten, excluded: u64) -> Vec<u8> {
    let mut w = Writer::new();
    outcome.encode(&mut w);
    w.uvarint(excluded);
    w.into_bytes()
}

fn decode_memo(v: &[u8]) -> Option<(Rewritten, u64)> {
    let mut r = Reader::new(v);
    let outcome = Rewritten::decode(&mut r)?;
    Some((outcome, r.uvarint().ok()?))
}

struct Excluder<'a> {
    saver: &'a BlobSaver,
    memo: &'a ScratchMap,
    exclude: &'a PathMatcher,
    /// Entries excluded below each open tree (innermost last).
    open: Vec<u64>,
    excluded: u64,
}

impl Excluder<'_> {
    fn count(&mut self) {
        self.excluded += 1;
        for c in &mut self.open {
            *c += 1;
        }
    }
}

impl TreeRewriter for Excluder<'_> {
    fn known(&mut self, tree: &BlobId, path: &Path) -> Result<Option<Rewritten>> {
        match self
            .memo
            .get(&memo_key(tree, path))?
            .as_deref()
            .and_then(decode_memo)
        {
            Some((outcome, n)) => {
                self.excluded += n;
                for c in &mut self.open {
                    *c += n;
                }
                Ok(Some(outcome))
            }
            None => {
                self.open.push(0);
                Ok(None)
            }
        }
    }

    fn leaf(&mut self, path: &Path, node: Node) -> Result<Option<Node>> {
        if self.exclude.matches(path) {
            self.count();
            return Ok(None);
        }
        Ok(Some(node))
    }

    fn keep_dir(&mut self, path: &Path, _node: &Node) -> Result<bool> {
        if self.exclude.matches(path) {
            self.count();
            return Ok(false);
        }
        Ok(true)
    }

    fn save(&mut self, _path: &Path, _old: &BlobId, nodes: Vec<Node>) -> Result<BlobId> {
        // A dry run's saver counts and stores nothing.
        self.saver.save_tree(&Tree { nodes })
    }

    fn done(&mut self, tree: &BlobId, path: &Path, outcome: Rewritten) -> Result<()> {
        let n = self.open.pop().unwrap_or(0);
        self.memo
            .put(&memo_key(tree, path), &encode_memo(outcome, n))
    }
}

/// Rewrites `snapshots` without the excluded paths. The caller holds an exclusive lock.
pub fn rewrite_snapshots(
    repo: &Repository,
    lock: &LockGuard,
    snapshots: Vec<(SnapshotId, Snapshot)>,
    opts: &RewriteOptions,
) -> Result<RewriteReport> {
    if opts.exclude.is_empty() {
        return Err(Error::InvalidInput("nothing to exclude".into()));
    }
    let (holds, bad_holds) = repo.list_holds()?;
    if opts.forget
        && let Some((id, e)) = bad_holds.first()
    {
        return Err(Error::Aborted(format!(
            "hold {} cannot be read ({e}); it might hold a snapshot to forget; `vault repair holds` removes it",
            id.short()
        )));
    }
    let mut report = RewriteReport {
        snapshots: snapshots.len() as u64,
        ..Default::default()
    };
    let saver = BlobSaver::new(
        repo,
        SaverOptions {
            dry_run: opts.dry_run,
            ..SaverOptions::default()
        },
    )?;
    let memo = ScratchMap::new(repo.temp_dir())?;
    let mut plans = Vec::new();
    for (id, snap) in snapshots {
        let mut rw = Excluder {
            saver: &saver,
            memo: &memo,
            exclude: &opts.exclude,
            open: Vec::new(),
            excluded: 0,
        };
        let outcome = rewrite(repo, &snap.tree, Path::new("/"), &mut rw)?;
        if !matches!(outcome, Rewritten::Same) {
            plans.push((id, snap, outcome, rw.excluded));
        }
    }
    // Trees first, then manifests, then (with --forget) removals.
    saver.finish()?;
    for (id, snap, outcome, excluded) in plans {
        let mut r = SnapshotRewrite {
            snapshot: id.to_hex(),
            excluded,
            ..Default::default()
        };
        let held: Vec<_> = holds.iter().filter(|(_, h)| h.snapshot == id).collect();
        if !opts.dry_run {
            lock.check()?;
            // The root is never dropped (only an unreadable tree is, and that stops the
            // rewrite); excluding everything leaves an empty root tree.
            let root = match outcome {
                Rewritten::Changed(root) => Some(root),
                Rewritten::Dropped | Rewritten::Same => None,
            };
            if let Some(root) = root {
                let mut new = snap.clone();
                new.tree = root;
                new.original = Some(snap.original.unwrap_or(id));
                new.add_tag(REWRITTEN_TAG);
                recount(repo, &root, &mut new.summary)?;
                let new_id = repo.save_snapshot(&new)?;
                r.rewritten = Some(new_id.to_hex());
                if opts.forget {
                    if let Some((_, h)) = held.first() {
                        r.kept_because = Some(format!("legal hold: {}", h.reason));
                    } else {
                        repo.delete_snapshot(&id)?;
                        r.forgotten = true;
                    }
                }
            }
        } else if opts.forget
            && let Some((_, h)) = held.first()
        {
            r.kept_because = Some(format!("legal hold: {}", h.reason));
        }
        report.rewritten.push(r);
    }
    Ok(report)
}
