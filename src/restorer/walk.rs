//! Depth-first restore of a snapshot's trees into the target directory.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::format::tree::{ContentPart, Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::apply::{apply_metadata, create_special, create_symlink};
use crate::{Error, Result};

use super::fetch::restore_content;
use super::{RestoreError, RestoreOptions, RestoreSummary};

/// A regular file waiting for its content.
pub(super) struct FileJob {
    /// Where it is being restored.
    pub out: PathBuf,
    /// Its path in the snapshot (for messages).
    pub snap_path: String,
    /// Its node.
    pub node: Node,
    /// Created, written and given its metadata by the fetch workers (at most one blob, no
    /// hard link); otherwise created here at full length and finished after its content.
    pub deferred: bool,
}

struct DirFrame {
    out: PathBuf,
    node: Option<Node>,
    created: bool,
}

pub(super) struct Restorer<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
    summary: RestoreSummary,
    batch: Vec<FileJob>,
    batch_bytes: u64,
    stack: Vec<DirFrame>,
    dirs_done: Vec<(PathBuf, Node)>,
    hardlinks: HashMap<(u64, u64), PathBuf>,
}

fn is_fatal(e: &Error) -> bool {
    !matches!(
        e.kind(),
        crate::ErrorKind::Corrupt | crate::ErrorKind::NotFound | crate::ErrorKind::Io
    )
}

impl<'a> Restorer<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        opts: &'a RestoreOptions,
        progress: &'a dyn Progress,
    ) -> Self {
        Self {
            repo,
            opts,
            progress,
            summary: RestoreSummary::default(),
            batch: Vec::new(),
            batch_bytes: 0,
            stack: Vec::new(),
            dirs_done: Vec::new(),
            hardlinks: HashMap::new(),
        }
    }

    fn error(&mut self, snap_path: &str, e: impl std::fmt::Display) {
        let msg = format!("{snap_path}: {e}");
        tracing::debug!("{msg}");
        self.progress.warn(&msg);
        self.summary.errors.push(RestoreError {
            path: snap_path.to_string(),
            error: e.to_string(),
        });
    }

    pub(super) fn run(mut self, root: &BlobId) -> Result<RestoreSummary> {
        self.stack.push(DirFrame {
            out: self.opts.target.clone(),
            node: None,
            created: true,
        });
        let tree = self.repo.load_tree(root)?;
        self.walk(&tree, Path::new("/"), self.opts.include.is_empty())?;
        self.flush()?;
        // Directories last, deepest first, so that nothing changes their times afterwards.
        for (out, node) in std::mem::take(&mut self.dirs_done).into_iter().rev() {
            for e in apply_metadata(&out, &node, self.opts.apply) {
                self.error(&out.display().to_string(), e);
            }
        }
        Ok(self.summary)
    }

    fn ensure_parents(&mut self) -> Result<()> {
        for f in self.stack.iter_mut().filter(|f| !f.created) {
            match std::fs::create_dir(&f.out) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && f.out.is_dir() => {}
                Err(e) => return Err(Error::io(&f.out, e)),
            }
            f.created = true;
        }
        Ok(())
    }

    fn walk(&mut self, tree: &Tree, snap_dir: &Path, included: bool) -> Result<()> {
        for node in &tree.nodes {
            let name = std::ffi::OsStr::from_bytes(&node.name);
            let snap_path = snap_dir.join(name);
            if self.opts.exclude.matches(&snap_path) {
                continue;
            }
            let inc = included || self.opts.include.matches(&snap_path);
            let out = self
                .stack
                .last()
                .expect("invariant: root frame")
                .out
                .join(name);
            let sp = snap_path.display().to_string();
            if node.kind == NodeKind::Dir {
                self.stack.push(DirFrame {
                    out: out.clone(),
                    node: Some(node.clone()),
                    created: false,
                });
                if inc {
                    if let Err(e) = self.ensure_parents() {
                        self.error(&sp, e);
                    }
                }
                let sub = match node.subtree {
                    Some(id) => self.repo.load_tree(&id),
                    None => Ok(Tree::default()),
                };
                match sub {
                    Ok(t) => self.walk(&t, &snap_path, inc)?,
                    Err(e) if !is_fatal(&e) => self.error(&sp, e),
                    Err(e) => return Err(e),
                }
                let f = self.stack.pop().expect("invariant: pushed above");
                if f.created {
                    self.summary.dirs += 1;
                    self.dirs_done
                        .push((f.out, f.node.expect("invariant: dir frame has a node")));
                }
                continue;
            }
            if !inc {
                continue;
            }
            if let Err(e) = self
                .ensure_parents()
                .and_then(|_| self.restore_leaf(node, &out, &sp))
            {
                if is_fatal(&e) {
                    return Err(e);
                }
                self.error(&sp, e);
            }
        }
        Ok(())
    }

    fn restore_leaf(&mut self, node: &Node, out: &Path, sp: &str) -> Result<()> {
        remove_existing(out)?;
        match node.kind {
            NodeKind::File => {
                let key = (node.device, node.inode);
                if node.nlink > 1
                    && let Some(first) = self.hardlinks.get(&key)
                {
                    std::fs::hard_link(first, out).map_err(|e| Error::io(out, e))?;
                    self.summary.hardlinks += 1;
                    return Ok(());
                }
                let chunks = node
                    .content
                    .iter()
                    .filter(|p| matches!(p, ContentPart::Chunk(_)))
                    .count();
                let deferred = node.nlink <= 1 && chunks <= 1;
                if !deferred {
                    let f = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
                    f.set_len(node.size).map_err(|e| Error::io(out, e))?;
                }
                if node.nlink > 1 {
                    self.hardlinks.insert(key, out.to_path_buf());
                }
                self.batch_bytes += node.size;
                self.batch.push(FileJob {
                    out: out.to_path_buf(),
                    snap_path: sp.to_string(),
                    node: node.clone(),
                    deferred,
                });
                if self.batch_bytes >= self.opts.batch_bytes || self.batch.len() >= 20_000 {
                    self.flush()?;
                }
                return Ok(());
            }
            NodeKind::Symlink => create_symlink(out, &node.link_target)?,
            NodeKind::Dir => unreachable!("directories are walked, not leaves"),
            _ => create_special(out, node)?,
        }
        self.summary.others += 1;
        for e in apply_metadata(out, node, self.opts.apply) {
            self.error(sp, e);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let jobs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if jobs.is_empty() {
            return Ok(());
        }
        let res = restore_content(self.repo, &jobs, self.opts.apply, self.progress)?;
        self.summary.bytes_written += res.bytes_written;
        self.summary.packs_read += res.packs_read;
        self.summary.bytes_fetched += res.bytes_fetched;
        for (i, e) in res.meta_errors {
            self.error(&jobs[i].snap_path, e);
        }
        // Files finished by path: metadata after all their content, in parallel.
        let errors: Vec<(usize, Error)> = jobs
            .par_iter()
            .enumerate()
            .filter(|(_, job)| !job.deferred)
            .flat_map_iter(|(i, job)| {
                apply_metadata(&job.out, &job.node, self.opts.apply)
                    .into_iter()
                    .map(move |e| (i, e))
            })
            .collect();
        for (i, e) in errors {
            self.error(&jobs[i].snap_path, e);
        }
        for (i, job) in jobs.iter().enumerate() {
            if let Some(msg) = res.failed.get(&i) {
                self.error(&job.snap_path, msg);
            }
            self.summary.files += 1;
        }
        Ok(())
    }
}

/// Removes a file, link or special file standing where a restored entry goes.
fn remove_existing(out: &Path) -> Result<()> {
    match std::fs::symlink_metadata(out) {
        Ok(md) if md.is_dir() => Err(Error::io(
            out,
            std::io::Error::other("a directory is in the way"),
        )),
        Ok(_) => std::fs::remove_file(out).map_err(|e| Error::io(out, e)),
        Err(_) => Ok(()),
    }
}
