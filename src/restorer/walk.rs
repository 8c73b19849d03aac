//! Depth-first restore of a snapshot's trees into the target directory, without recursion.
//!
//! The walk keeps an explicit stack of directory frames on the heap, so depth does not touch
//! the call stack. Every directory is created and entered through its parent's descriptor
//! (`mkdirat`/`openat`), so restored paths may exceed `PATH_MAX`; at most [`OPEN_FRAMES`]
//! frames keep their descriptor open, deeper ones are reopened through `..` (checked against
//! the device and inode recorded when they were created) when the walk returns to them.
//!
//! No restored entry appears under its real name before it is complete: files are written
//! under a temporary name in their directory and renamed into place only after every blob
//! of theirs was verified and their metadata applied; symlinks and special files are created
//! under a temporary name too. A file whose data is damaged or missing is never renamed: it
//! is removed (or kept as `NAME.vault-damaged` with `keep_damaged`), named in the summary,
//! and the restore goes on. Directory metadata is applied after everything inside them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::tree::{ContentPart, Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::apply::{apply_metadata_at, create_special};
use crate::source::dir::DirHandle;
use crate::{Error, Result};

mod batch;

use super::{RestoreError, RestoreOptions, RestoreSummary};
use batch::{PendingLink, link_into_place};

/// Frames (from the top of the stack) that keep their directory descriptor open.
const OPEN_FRAMES: usize = 64;
/// Distinct directories with files in one batch, and directories whose metadata waits for
/// a flush, at most this many each (each holds a descriptor; two batches are open at a time,
/// one fetched while the next is collected), and never more than an eighth of the process's
/// descriptor limit each. Each batch ends in a barrier (its last spans and its settling run
/// on fewer threads than the pool has): 128 directories per batch made ~140 batches of the
/// benchmark tree and cost 7 % of its restore time.
const MAX_BATCH_DIRS: usize = 2048;

/// Files in one batch, at most: a batch's jobs and fetch plan take about 0.9 KiB per file
/// and two batches are held (20 000 cost 30 MiB more peak RSS than 10 000 for 3 % of time).
const MAX_BATCH_FILES: usize = 10_000;

/// Files in the first batch: the walk collects it alone, before anything is fetched, so it is
/// small; each later batch may hold twice as many as the one before, up to
/// [`MAX_BATCH_FILES`].
const FIRST_BATCH_FILES: usize = 256;

/// Files batch number `seq` may hold.
fn batch_files(seq: u64) -> usize {
    // 256 << 6 is already past the maximum: the shift never overflows.
    (FIRST_BATCH_FILES << seq.min(6)).min(MAX_BATCH_FILES)
}

/// [`MAX_BATCH_DIRS`] under this process's descriptor limit, 16 at the least.
fn dir_budget() -> usize {
    crate::source::dir::descriptor_share(MAX_BATCH_DIRS).max(16)
}

/// A regular file waiting for its content.
pub(super) struct FileJob {
    /// The directory it is restored into.
    pub dir: Arc<DirHandle>,
    /// Its temporary name there (until every blob is verified).
    pub tmp: OsString,
    /// Its real name.
    pub name: OsString,
    /// Its path in the snapshot, quoted for messages.
    pub snap_path: String,
    /// Its node.
    pub node: Node,
    /// Created, written, given its metadata and renamed by the fetch workers (at most one
    /// blob); otherwise created here at full length and finished after its content.
    pub deferred: bool,
    /// Its path relative to the target, when later hard links will point at it.
    pub link_rel: Option<PathBuf>,
}

/// Where the first restored member of a hard-link group is.
#[derive(Clone)]
enum LinkSource {
    /// In a batch not settled yet: batch number, job number.
    Batch(u64, usize),
    /// Restored: its path relative to the target.
    Done(PathBuf),
    /// Could not be restored.
    Failed,
}

struct DirFrame {
    /// The name in the parent (empty for the target itself).
    name: OsString,
    node: Option<Node>,
    handle: Option<Arc<DirHandle>>,
    /// (device, inode) of the created directory, to recognise it when reopened via `..`.
    identity: Option<(u64, u64)>,
    created: bool,
    /// Created by this restore (it was not there): nothing in it needs an overwrite decision.
    fresh: bool,
    included: bool,
    entries: std::vec::IntoIter<Node>,
    /// The names the snapshot has here (only with `--delete`).
    names: Option<std::collections::HashSet<Vec<u8>>>,
}

pub(super) struct Restorer<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
    summary: RestoreSummary,
    root: Arc<DirHandle>,
    stack: Vec<DirFrame>,
    /// The snapshot path of the entry being handled.
    cursor: PathBuf,
    batch: Vec<FileJob>,
    /// Where the blobs of `batch` are stored, once it is collected.
    locations: super::fetch::Locations,
    batch_bytes: u64,
    batch_dirs: usize,
    /// Number of the batch being collected.
    seq: u64,
    /// The batch is full: the walk stops at the next entry so that it can be fetched.
    flush_wanted: bool,
    /// Directories per batch and pending directories, at most (see [`dir_budget`]).
    dir_budget: usize,
    links: Vec<PendingLink>,
    dirs_done: Vec<(Arc<DirHandle>, Node, String)>,
    hardlinks: HashMap<(u64, u64), LinkSource>,
    include_hits: Vec<bool>,
    /// The target's handle and the snapshot's root names, for `--delete` after the last batch.
    stack_root: Option<(Arc<DirHandle>, std::collections::HashSet<Vec<u8>>)>,
    /// Where `--delete` may clean (the snapshot's paths and below).
    delete_roots: Vec<PathBuf>,
}

/// A temporary name for an entry being restored: `.vault-restore-` and 16 hex digits, random
/// per process and then counted (one random draw per restore, not one system call per file;
/// files are created with `O_EXCL`, so a name that is taken fails loudly, never overwrites).
fn temp_name() -> Result<OsString> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = match BASE.get() {
        Some(b) => *b,
        None => {
            let mut rnd = [0u8; 8];
            crate::crypto::random_bytes(&mut rnd)?;
            *BASE.get_or_init(|| u64::from_le_bytes(rnd))
        }
    };
    let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    Ok(OsString::from(format!(".vault-restore-{n:016x}")))
}

impl<'a> Restorer<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        opts: &'a RestoreOptions,
        progress: &'a dyn Progress,
        root: DirHandle,
    ) -> Self {
        Self {
            repo,
            opts,
            progress,
            summary: RestoreSummary::default(),
            root: Arc::new(root),
            stack: Vec::new(),
            cursor: PathBuf::from("/"),
            batch: Vec::new(),
            locations: Default::default(),
            batch_bytes: 0,
            batch_dirs: 0,
            seq: 0,
            flush_wanted: false,
            dir_budget: dir_budget(),
            links: Vec::new(),
            dirs_done: Vec::new(),
            hardlinks: HashMap::new(),
            include_hits: vec![false; opts.include.texts().len()],
            stack_root: None,
            delete_roots: Vec::new(),
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

    fn shown(&self) -> String {
        crate::quote::quote_path(&self.cursor)
    }

    /// Sets the snapshot's paths: `--delete` cleans only at and below them.
    pub(super) fn with_paths(mut self, paths: &[Vec<u8>]) -> Self {
        self.delete_roots = super::overwrite::delete_roots(paths);
        self
    }

    pub(super) fn run(mut self, root: &BlobId) -> Result<RestoreSummary> {
        let tree = self.repo.load_tree(root)?;
        self.stack.push(DirFrame {
            name: OsString::new(),
            node: None,
            handle: Some(self.root.clone()),
            identity: None,
            created: true,
            fresh: false,
            included: self.opts.include.is_empty(),
            names: self
                .opts
                .delete
                .then(|| tree.nodes.iter().map(|n| n.name.clone()).collect()),
            entries: tree.nodes.into_iter(),
        });
        self.walk_and_fetch()?;
        if let Some(root) = self.stack_root.take() {
            self.delete_extra(&root.0, &root.1, &PathBuf::from("/"));
        }
        for (i, hit) in self.include_hits.iter().enumerate() {
            if !hit {
                self.summary
                    .unmatched_includes
                    .push(self.opts.include.texts()[i].clone());
            }
        }
        Ok(self.summary)
    }

    /// Walks until the batch is full (`Ok(true)`) or everything was walked (`Ok(false)`).
    fn walk(&mut self) -> Result<bool> {
        loop {
            if self.flush_wanted {
                return Ok(true);
            }
            let next = match self.stack.last_mut() {
                Some(top) => top.entries.next(),
                None => return Ok(false),
            };
            let Some(node) = next else {
                self.leave_dir()?;
                continue;
            };
            let name = OsStr::from_bytes(&node.name).to_owned();
            self.cursor.push(&name);
            if self.opts.exclude.matches(&self.cursor) {
                self.cursor.pop();
                continue;
            }
            let mut included = self.stack.last().is_some_and(|f| f.included);
            if !included {
                let hits = &mut self.include_hits;
                self.opts.include.for_each_match(&self.cursor, |i| {
                    hits[i] = true;
                    included = true;
                });
            }
            if node.kind == NodeKind::Dir {
                self.enter_dir(name, node, included)?;
                continue;
            }
            if included && self.opts.samples(&node, &self.cursor) {
                let sp = self.shown();
                if let Err(e) = self
                    .ensure_parents()
                    .and_then(|_| self.restore_leaf(&name, &node, &sp))
                {
                    if !is_local_or_damage(&e) {
                        return Err(e);
                    }
                    self.error(&sp, e);
                }
            }
            self.cursor.pop();
        }
    }

    fn enter_dir(&mut self, name: OsString, node: Node, included: bool) -> Result<()> {
        let sub = match node.subtree {
            Some(id) => self.repo.load_tree(&id),
            None => Ok(Tree::default()),
        };
        let entries = match sub {
            Ok(t) => t.nodes,
            Err(e) if e.is_damage() => {
                // The listing is lost: everything below is named once, by this path; the
                // directory itself is still restored (empty) if it is included.
                let sp = self.shown();
                self.error(
                    &sp,
                    format!("directory listing cannot be read ({e}); nothing below it is restored"),
                );
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        self.stack.push(DirFrame {
            name,
            node: Some(node),
            handle: None,
            identity: None,
            created: false,
            fresh: false,
            included,
            names: self
                .opts
                .delete
                .then(|| entries.iter().map(|n| n.name.clone()).collect()),
            entries: entries.into_iter(),
        });
        if included && let Err(e) = self.ensure_parents() {
            if !is_local_or_damage(&e) {
                return Err(e);
            }
            // Nothing below can be restored: skip the directory's entries.
            let sp = self.shown();
            self.error(&sp, e);
            if let Some(top) = self.stack.last_mut() {
                top.entries = Vec::new().into_iter();
                top.included = false;
            }
        }
        self.trim_handles();
        Ok(())
    }

    fn leave_dir(&mut self) -> Result<()> {
        let f = self.stack.pop().expect("invariant: called with a frame");
        if self.stack.is_empty() {
            // The target itself keeps its metadata; its extra entries go after the last batch.
            if f.included
                && let (Some(h), Some(names)) = (f.handle, f.names)
            {
                self.stack_root = Some((h, names));
            }
            return Ok(());
        }
        let sp = self.shown();
        self.cursor.pop();
        // The parent's descriptor may have been closed while the walk was deep.
        if let Some(parent) = self.stack.last()
            && parent.created
            && parent.handle.is_none()
        {
            let reopened = match &f.handle {
                Some(h) => self.reopen_parent(h, parent.identity),
                None => self.open_frame_by_path(self.stack.len() - 1),
            };
            match reopened {
                Ok(h) => self.stack.last_mut().expect("invariant: non-empty").handle = Some(h),
                Err(e) => return Err(e),
            }
        }
        if self.opts.delete
            && f.included
            && f.created
            && let Some(names) = &f.names
        {
            let handle = match &f.handle {
                Some(h) => Some(h.clone()),
                None => self
                    .stack
                    .last()
                    .and_then(|p| p.handle.clone())
                    .and_then(|p| p.open_dir(&f.name).ok().map(Arc::new)),
            };
            if let Some(h) = handle {
                let at = self.cursor.join(&f.name);
                self.delete_extra(&h, names, &at);
            }
        }
        if f.created
            && let (Some(h), Some(node)) = (f.handle, f.node)
        {
            self.summary.dirs += 1;
            self.dirs_done.push((h, node, sp));
            if self.dirs_done.len() >= self.dir_budget {
                self.flush_wanted = true;
            }
        }
        Ok(())
    }

    fn reopen_parent(
        &self,
        child: &DirHandle,
        identity: Option<(u64, u64)>,
    ) -> Result<Arc<DirHandle>> {
        let p = child
            .open_parent()
            .map_err(|e| Error::io(&self.cursor, e))?;
        let st = p.stat_self().map_err(|e| Error::io(&self.cursor, e))?;
        if identity.is_some_and(|id| id != (st.dev, st.ino)) {
            return Err(Error::io(
                &self.cursor,
                std::io::Error::other("a restored directory was moved while restoring"),
            ));
        }
        Ok(Arc::new(p))
    }

    /// Opens frame `i`'s directory by walking from the target (slow path, rarely needed).
    fn open_frame_by_path(&self, i: usize) -> Result<Arc<DirHandle>> {
        let mut h: Option<DirHandle> = None;
        for f in &self.stack[1..=i] {
            let next = match &h {
                None => self.root.open_dir(&f.name),
                Some(d) => d.open_dir(&f.name),
            }
            .map_err(|e| Error::io(&self.cursor, e))?;
            h = Some(next);
        }
        Ok(h.map(Arc::new).unwrap_or_else(|| self.root.clone()))
    }

    /// Closes the descriptors of frames deep below the top of the stack.
    fn trim_handles(&mut self) {
        let n = self.stack.len();
        if n > OPEN_FRAMES + 1 {
            let f = &mut self.stack[n - OPEN_FRAMES - 1];
            if f.created && f.handle.is_some() && n - OPEN_FRAMES - 1 > 0 {
                f.handle = None;
            }
        }
    }

    /// Creates the directories on the stack that do not exist yet (restored lazily, so that
    /// `--include` creates only what leads to included entries).
    fn ensure_parents(&mut self) -> Result<()> {
        let Some(first) = self.stack.iter().position(|f| !f.created) else {
            return Ok(());
        };
        for i in first..self.stack.len() {
            let parent = match &self.stack[i - 1].handle {
                Some(h) => h.clone(),
                None => {
                    let h = self.open_frame_by_path(i - 1)?;
                    self.stack[i - 1].handle = Some(h.clone());
                    h
                }
            };
            let f = &self.stack[i];
            let shown = crate::quote::quote_path(&self.cursor);
            let fresh = parent.make_dir(&f.name).map_err(|e| Error::io(&shown, e))?;
            let h = parent.open_dir(&f.name).map_err(|e| Error::io(&shown, e))?;
            let st = h.stat_self().map_err(|e| Error::io(&shown, e))?;
            let f = &mut self.stack[i];
            f.handle = Some(Arc::new(h));
            f.identity = Some((st.dev, st.ino));
            f.created = true;
            f.fresh = fresh;
            if i > 1 && i - 1 + OPEN_FRAMES + 1 < self.stack.len() {
                // Deep below the top: reopened through `..` when the walk gets back here.
                self.stack[i - 1].handle = None;
            }
        }
        Ok(())
    }

    fn current_dir(&self) -> Arc<DirHandle> {
        self.stack
            .last()
            .and_then(|f| f.handle.clone())
            .expect("invariant: the current directory was created")
    }

    fn restore_leaf(&mut self, name: &OsStr, node: &Node, sp: &str) -> Result<()> {
        let dir = self.current_dir();
        let key = (node.device, node.inode);
        // Members of hard-link groups are always (re)made: they must end up linked. In a
        // directory this restore created there is nothing to decide about (one lookup less
        // per file).
        let fresh = self.stack.last().is_some_and(|f| f.fresh);
        if node.nlink <= 1 && self.opts.overwrite != super::Overwrite::Always && !fresh {
            match super::decide(self.repo, &dir, name, node, self.opts.overwrite)? {
                super::Decision::Keep => {
                    self.summary.skipped += 1;
                    // The same entry (if-changed): give it the snapshot's metadata too.
                    if self.opts.overwrite == super::Overwrite::IfChanged {
                        for e in apply_metadata_at(&dir, name, Path::new(sp), node, self.opts.apply)
                        {
                            self.error(sp, e);
                        }
                    }
                    return Ok(());
                }
                super::Decision::Create | super::Decision::Replace => {}
            }
        }
        if node.nlink > 1
            && let Some(src) = self.hardlinks.get(&key).cloned()
        {
            return self.link_to(dir, name, sp, src);
        }
        if node.kind == NodeKind::File {
            let chunks = node
                .content
                .iter()
                .filter(|p| matches!(p, ContentPart::Chunk(_)))
                .count();
            let deferred = node.nlink <= 1 && chunks <= 1;
            let tmp = temp_name()?;
            if !deferred {
                let f = dir.create_file(&tmp).map_err(|e| Error::io(sp, e))?;
                f.set_len(node.size).map_err(|e| Error::io(sp, e))?;
            }
            if node.nlink > 1 {
                self.hardlinks
                    .insert(key, LinkSource::Batch(self.seq, self.batch.len()));
            }
            if !self.batch.last().is_some_and(|j| Arc::ptr_eq(&j.dir, &dir)) {
                self.batch_dirs += 1;
            }
            self.batch_bytes += node.size;
            self.batch.push(FileJob {
                dir,
                tmp,
                name: name.to_owned(),
                snap_path: sp.to_string(),
                node: node.clone(),
                deferred,
                link_rel: (node.nlink > 1).then(|| self.relative_cursor()),
            });
            if self.batch_bytes >= self.opts.batch_bytes
                || self.batch.len() >= batch_files(self.seq)
                || self.batch_dirs >= self.dir_budget
            {
                self.flush_wanted = true;
            }
            return Ok(());
        }
        // Symlinks and special files: made under a temporary name, given their metadata,
        // renamed into place.
        let tmp = temp_name()?;
        create_special(&dir, &tmp, Path::new(sp), node)?;
        for e in apply_metadata_at(&dir, &tmp, Path::new(sp), node, self.opts.apply) {
            self.error(sp, e);
        }
        if let Err(e) = dir.rename(&tmp, name) {
            let _ = dir.remove_file(&tmp);
            return Err(Error::io(sp, e));
        }
        self.summary.others += 1;
        if node.nlink > 1 {
            self.hardlinks
                .insert(key, LinkSource::Done(self.relative_cursor()));
        }
        Ok(())
    }

    /// `--delete`: removes the entries of `dir` (at snapshot path `at`) that the snapshot does
    /// not have, except excluded ones and this restore's own temporary files.
    fn delete_extra(
        &mut self,
        dir: &DirHandle,
        names: &std::collections::HashSet<Vec<u8>>,
        at: &Path,
    ) {
        use std::os::unix::ffi::OsStrExt;
        if !super::overwrite::delete_allowed(at, &self.delete_roots) {
            return;
        }
        let entries = match dir.entries() {
            Ok(e) => e,
            Err(e) => {
                self.error(
                    &crate::quote::quote_path(at),
                    format!("cannot list it to delete extra entries: {e}"),
                );
                return;
            }
        };
        for name in entries {
            let b = name.as_bytes();
            if names.contains(b) || b.starts_with(b".vault-restore-") {
                continue;
            }
            let p = at.join(&name);
            if self.opts.exclude.matches(&p) {
                continue;
            }
            let shown = crate::quote::quote_path(&p);
            let is_dir = dir
                .stat(&name)
                .is_ok_and(|s| s.file_type == rustix::fs::FileType::Directory);
            let r = if is_dir {
                std::fs::remove_dir_all(dir.proc_path(&name))
            } else {
                dir.remove_file(&name)
            };
            match r {
                Ok(()) => self.summary.deleted += 1,
                Err(e) => self.error(&shown, format!("cannot be deleted: {e}")),
            }
        }
    }

    fn relative_cursor(&self) -> PathBuf {
        self.cursor
            .strip_prefix("/")
            .unwrap_or(&self.cursor)
            .to_path_buf()
    }

    /// A later member of a hard-link group: a link to the first one.
    fn link_to(
        &mut self,
        dir: Arc<DirHandle>,
        name: &OsStr,
        sp: &str,
        src: LinkSource,
    ) -> Result<()> {
        match src {
            LinkSource::Failed => Err(Error::io(
                sp,
                std::io::Error::other("the file it is a hard link of could not be restored"),
            )),
            LinkSource::Batch(batch, job) => {
                self.links.push(PendingLink {
                    dir,
                    name: name.to_owned(),
                    snap_path: sp.to_string(),
                    batch,
                    job,
                });
                Ok(())
            }
            LinkSource::Done(rel) => {
                let (parent, file) = match (rel.parent(), rel.file_name()) {
                    (Some(p), Some(f)) => (p.to_path_buf(), f.to_owned()),
                    _ => return Err(Error::io(sp, std::io::Error::other("bad link source"))),
                };
                let mut h: Option<DirHandle> = None;
                for c in parent.components() {
                    let next = match &h {
                        None => self.root.open_dir(c.as_os_str()),
                        Some(d) => d.open_dir(c.as_os_str()),
                    }
                    .map_err(|e| Error::io(sp, e))?;
                    h = Some(next);
                }
                let src_dir = match &h {
                    Some(d) => d,
                    None => &*self.root,
                };
                link_into_place(&dir, name, src_dir, &file).map_err(|e| Error::io(sp, e))?;
                self.summary.hardlinks += 1;
                Ok(())
            }
        }
    }
}

/// Errors that concern one entry (local file system, damaged data) rather than the run.
fn is_local_or_damage(e: &Error) -> bool {
    e.is_damage()
        || matches!(
            e.kind(),
            crate::ErrorKind::Io | crate::ErrorKind::PermissionDenied
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_from_small_to_the_maximum() {
        assert_eq!(batch_files(0), FIRST_BATCH_FILES);
        assert_eq!(batch_files(1), 2 * FIRST_BATCH_FILES);
        assert_eq!(batch_files(5), 32 * FIRST_BATCH_FILES);
        assert_eq!(batch_files(6), MAX_BATCH_FILES);
        assert_eq!(batch_files(u64::MAX), MAX_BATCH_FILES);
    }
}
