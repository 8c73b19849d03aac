//! The batch pipeline of a restore: regular files are collected into batches by the walk
//! ([`super`]); each batch is fetched and its files put in place while the walk collects the
//! next one, then settled (summary, hard links to its files, metadata of the directories it
//! completed). One batch is in flight at a time.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::format::tree::Node;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restorer::fetch::Reuse;
use crate::source::apply::apply_metadata_fd;
use crate::source::dir::DirHandle;
use crate::{Error, Result};

use super::super::fetch::{ContentResult, Locations, locate, read_ahead_of, restore_content};
use super::{FileJob, LinkSource, Restorer, temp_name};

/// A hard link to a file of a batch not settled yet, made once that file is in place.
pub(super) struct PendingLink {
    pub(super) dir: Arc<DirHandle>,
    pub(super) name: OsString,
    pub(super) snap_path: String,
    /// The batch (by number) and job of the file it links to.
    pub(super) batch: u64,
    pub(super) job: usize,
}

/// The files collected up to one flush point, with the directories completed by then (their
/// metadata goes on after the files are in place).
struct Batch {
    seq: u64,
    jobs: Vec<FileJob>,
    /// Where the jobs' blobs are stored, looked up when the walk handed the batch over.
    locations: Locations,
    dirs_done: Vec<(Arc<DirHandle>, Node, String)>,
}

/// What fetching a batch did, for [`Restorer::settle`].
struct Fetched {
    content: ContentResult,
    /// Per job: the metadata problems of a file put in place, or why it was not.
    outcomes: Vec<(usize, std::result::Result<Vec<Error>, String>)>,
}

impl Restorer<'_> {
    /// Walks and restores everything: each batch of files is fetched while the walk collects
    /// the next one (the walk is mostly system calls and tree loads on one thread; fetching
    /// keeps the other cores busy meanwhile). One batch is in flight at a time.
    pub(super) fn walk_and_fetch(&mut self) -> Result<()> {
        let mut more = match self.walk_and_locate() {
            Ok(m) => m,
            Err(e) => {
                self.abandon_batch();
                return Err(e);
            }
        };
        // Read buffers and opened frames live for the whole restore, not one batch.
        let reuse = Reuse::new();
        loop {
            let batch = self.take_batch();
            let (repo, progress) = (self.repo, self.progress);
            let (apply, keep_damaged) = (self.opts.apply, self.opts.keep_damaged);
            let fetch = || fetch_batch(repo, &batch, apply, keep_damaged, progress, &reuse);
            let (fetched, walked) = if more {
                let (f, w) = rayon::join(fetch, || self.walk_and_locate());
                (f, Some(w))
            } else {
                (fetch(), None)
            };
            let settled = fetched.map(|f| self.settle(batch, f));
            match (settled, walked) {
                (Ok(()), Some(Ok(m))) => more = m,
                (Ok(()), None) => return Ok(()),
                (Err(e), _) | (Ok(()), Some(Err(e))) => {
                    self.abandon_batch();
                    return Err(e);
                }
            }
        }
    }

    /// Walks up to the next flush point, then looks up where the collected batch's blobs are
    /// and asks for its first stored bytes to be read ahead: both happen beside the previous
    /// batch's fetch, not before this one's.
    fn walk_and_locate(&mut self) -> Result<bool> {
        let more = self.walk()?;
        self.locations = locate(self.repo, &self.batch)?;
        read_ahead_of(self.repo, &self.locations);
        Ok(more)
    }

    /// Removes the temporary files of a batch that will not be finished (fatal error).
    pub(super) fn abandon_batch(&mut self) {
        remove_temporaries(&std::mem::take(&mut self.batch));
    }

    /// Takes the batch collected so far (possibly empty: a flush for directory metadata).
    fn take_batch(&mut self) -> Batch {
        let batch = Batch {
            seq: self.seq,
            jobs: std::mem::take(&mut self.batch),
            locations: std::mem::take(&mut self.locations),
            dirs_done: std::mem::take(&mut self.dirs_done),
        };
        self.seq += 1;
        self.batch_bytes = 0;
        self.batch_dirs = 0;
        self.flush_wanted = false;
        batch
    }

    /// Records what fetching `batch` did: summary, errors, hard links to its files, then the
    /// metadata of the directories completed with it.
    fn settle(&mut self, batch: Batch, fetched: Fetched) {
        let Batch {
            seq,
            jobs,
            dirs_done,
            ..
        } = batch;
        let Fetched { content, outcomes } = fetched;
        self.summary.bytes_written += content.bytes_written;
        self.summary.packs_read += content.packs_read;
        self.summary.bytes_fetched += content.bytes_fetched;
        for (i, e) in content.meta_errors {
            self.error(&jobs[i].snap_path, e);
        }
        let mut ok = vec![false; jobs.len()];
        for (i, outcome) in outcomes {
            match outcome {
                Ok(errs) => {
                    ok[i] = true;
                    self.summary.files += 1;
                    for e in errs {
                        self.error(&jobs[i].snap_path, e);
                    }
                }
                Err(why) => {
                    if content.failed.contains_key(&i) {
                        self.summary.damaged.push(jobs[i].snap_path.clone());
                    }
                    self.error(&jobs[i].snap_path, why);
                }
            }
        }
        // Hard links to files of this batch, now that the files are in place (links made
        // while it was fetched included).
        let (links, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| l.batch == seq);
        self.links = later;
        for l in links {
            let job = &jobs[l.job];
            if !ok[l.job] {
                self.error(
                    &l.snap_path,
                    "the file it is a hard link of could not be restored",
                );
                continue;
            }
            match link_into_place(&l.dir, &l.name, &job.dir, &job.name) {
                Ok(()) => self.summary.hardlinks += 1,
                Err(e) => self.error(&l.snap_path, e),
            }
        }
        // Later members of these groups link to where the first one now is.
        for src in self.hardlinks.values_mut() {
            if let LinkSource::Batch(b, j) = *src
                && b == seq
            {
                *src = if ok[j] {
                    LinkSource::Done(jobs[j].link_rel.clone().unwrap_or_default())
                } else {
                    LinkSource::Failed
                };
            }
        }
        // Directories whose content is complete: metadata last, deepest first.
        for (h, node, sp) in dirs_done {
            for e in apply_metadata_fd(&*h, Path::new(&sp), &node, self.opts.apply) {
                self.error(&sp, e);
            }
        }
    }
}

/// Fetches a batch's content and puts its files in place (metadata through their descriptor,
/// then the rename), in parallel. Touches nothing but the batch's own files, so it runs
/// beside the walk. On a fatal error the batch's temporary files are removed.
fn fetch_batch(
    repo: &Repository,
    batch: &Batch,
    apply: crate::source::apply::ApplyOptions,
    keep_damaged: bool,
    progress: &dyn Progress,
    reuse: &Reuse,
) -> Result<Fetched> {
    let jobs = &batch.jobs;
    let content = match restore_content(repo, jobs, &batch.locations, apply, progress, reuse) {
        Ok(r) => r,
        Err(e) => {
            remove_temporaries(jobs);
            return Err(e);
        }
    };
    let outcomes = jobs
        .par_iter()
        .enumerate()
        .map(|(i, job)| {
            if let Some(why) = content.failed.get(&i) {
                return (i, Err(discard(job, keep_damaged, why)));
            }
            if job.deferred {
                return (i, Ok(Vec::new())); // finished by the fetch workers
            }
            let f = match job.dir.open_for_write(&job.tmp) {
                Ok(f) => f,
                Err(e) => {
                    let _ = job.dir.remove_file(&job.tmp);
                    return (i, Err(e.to_string()));
                }
            };
            let errs = apply_metadata_fd(&f, Path::new(&job.snap_path), &job.node, apply);
            drop(f);
            match job.dir.rename(&job.tmp, &job.name) {
                Ok(()) => (i, Ok(errs)),
                Err(e) => {
                    let _ = job.dir.remove_file(&job.tmp);
                    (i, Err(e.to_string()))
                }
            }
        })
        .collect();
    Ok(Fetched { content, outcomes })
}

/// Makes `name` in `dir` a hard link of `src_name` in `src_dir`, replacing what is there,
/// atomically (link under a temporary name, then rename).
pub(super) fn link_into_place(
    dir: &DirHandle,
    name: &OsStr,
    src_dir: &DirHandle,
    src_name: &OsStr,
) -> std::io::Result<()> {
    let tmp = temp_name().map_err(|e| std::io::Error::other(e.to_string()))?;
    dir.hard_link(&tmp, src_dir, src_name)?;
    if let Err(e) = dir.rename(&tmp, name) {
        let _ = dir.remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Gets rid of a file whose content could not be verified: removed, or kept as
/// `NAME.vault-damaged` when asked. Returns the message for the summary.
fn discard(job: &FileJob, keep_damaged: bool, why: &str) -> String {
    if keep_damaged {
        let mut kept = job.name.clone();
        kept.push(".vault-damaged");
        if job.deferred {
            // A file of one blob is only created once its blob verified: kept, it is its
            // length of zeros, as the damaged parts of a longer file are.
            let _ = job
                .dir
                .create_file(&job.tmp)
                .and_then(|f| f.set_len(job.node.size));
        }
        if job.dir.rename(&job.tmp, &kept).is_ok() {
            return format!(
                "{why}; kept as {}",
                crate::quote::quote_bytes(kept.as_bytes())
            );
        }
    }
    let _ = job.dir.remove_file(&job.tmp);
    format!("{why}; not restored")
}

/// Removes the temporary files of jobs that will not be finished.
fn remove_temporaries(jobs: &[FileJob]) {
    for job in jobs {
        let _ = job.dir.remove_file(&job.tmp);
    }
}
