//! The tree walk: sources → nodes → tree blobs, bottom-up, in parallel, without recursion.
//!
//! Every directory is a task on the pool; a task lists its directory through the parent's
//! open descriptor (`openat`/`fstatat`, so path length does not matter), finishes the entries
//! it can at once (unchanged files, symlinks, special files) and spawns a task per changed
//! file and per subdirectory. A directory's [`DirState`] counts its unfinished entries; the
//! task that finishes the last one saves the directory's tree and hands its node to the
//! parent, and so on upwards in a loop. No task waits for another, so neither the call stack
//! nor the number of threads grows with the depth of the tree (depth 10 000 is tested), and
//! descriptors are held only while a directory still has entries to open.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::FileType;

use crate::format::time::Timestamp;
use crate::format::tree::{ContentPart, Node, NodeKind, Tree};
use crate::id::{BlobId, BlobType};
use crate::progress::EntryStatus;
use crate::source::dir::{DirHandle, Stat, descriptor_share};
use crate::source::meta::{node_from_stat, same_as};
use crate::{Error, Result};

use super::{Counters, Ctx};

/// The absolute source paths as a tree of path components; `target` marks the paths given.
#[derive(Default, Debug, Clone)]
struct PathNode {
    children: BTreeMap<Vec<u8>, Arc<PathNode>>,
    target: bool,
}

impl PathNode {
    fn insert(&mut self, path: &Path) {
        let mut node = self;
        for c in path.components().skip(1) {
            if node.target {
                return; // an ancestor is already backed up whole
            }
            node = Arc::make_mut(
                node.children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default(),
            );
        }
        node.target = true;
        node.children.clear();
    }
}

/// A directory whose tree is being assembled.
struct DirState {
    /// The directory's own node (`None` for the root).
    node: Mutex<Option<Node>>,
    /// The parent snapshot's tree id for this directory, for the dirs counters.
    previous: Option<Option<BlobId>>,
    /// An intermediate directory on the way to a source path: left out when nothing in it
    /// could be read.
    intermediate: bool,
    /// One slot per entry, in name order; `None` = left out.
    slots: Mutex<Vec<Option<Node>>>,
    /// Entries not finished yet, plus one while the directory's own task still runs.
    pending: AtomicUsize,
    /// Where the finished node goes.
    up: Option<(Arc<DirState>, usize)>,
}

/// Shared state of one walk.
struct Walk {
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    root: Mutex<Option<BlobId>>,
    /// Bytes of files read ahead by [`Walk::prefetch`] and not read by a worker yet.
    prefetched: AtomicU64,
    /// Descriptors of files opened by the listing and handed to a worker, not closed yet.
    held: Arc<AtomicUsize>,
    /// At most this many are held (see [`Walk::hold`]).
    max_held: usize,
}

/// At most this many bytes are read ahead of the workers (page cache, not process memory).
const PREFETCH_BYTES: u64 = 64 << 20;
/// Files up to this size are read ahead; larger ones stream through the kernel's ordinary
/// read-ahead.
const PREFETCH_MAX_SIZE: u64 = 1 << 20;
/// At most this many file descriptors opened by the listing wait for their worker (and never
/// more than [`descriptor_share`] allows).
const MAX_HELD: usize = 1024;

impl Walk {
    /// Asks the kernel to start reading a small file that a worker will read later
    /// (`posix_fadvise(WILLNEED)`, asynchronous); returns the bytes to give back to the
    /// budget once the worker has read it. Cold small files are bound by I/O latency and a
    /// worker reads one file at a time; reads started while the directory is listed keep
    /// many in flight with no more threads or buffers (D56). 0 when the budget is spent.
    fn prefetch(&self, file: &std::fs::File, size: u64) -> u64 {
        let Some(len) = std::num::NonZeroU64::new(size).filter(|_| size <= PREFETCH_MAX_SIZE)
        else {
            return 0;
        };
        if self.prefetched.fetch_add(size, Ordering::AcqRel) + size > PREFETCH_BYTES {
            self.prefetched.fetch_sub(size, Ordering::AcqRel);
            return 0;
        }
        // Advice only: a failure changes nothing but speed.
        let _ = rustix::fs::fadvise(file, 0, Some(len), rustix::fs::Advice::WillNeed);
        size
    }

    /// Keeps a file the listing opened for the worker that will read it, so that it is
    /// opened once (its xattrs were read and its read started through the same descriptor);
    /// `None` (closed) when [`Walk::max_held`] are already waiting: the worker opens it again.
    fn hold(&self, file: std::fs::File) -> Option<HeldFile> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.max_held {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(HeldFile {
            file,
            count: self.held.clone(),
        })
    }

    /// A worker read a file that was read ahead.
    fn prefetch_consumed(&self, bytes: u64) {
        self.prefetched.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::SeqCst);
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn aborted(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// How a directory task reaches its directory.
enum Origin {
    /// An absolute path (the root, `/`).
    Absolute(PathBuf),
    /// The entry `name` of an open directory.
    Child(Arc<DirHandle>, OsString),
}

/// What a directory task lists.
enum Listing {
    /// Every entry of the directory.
    All,
    /// Only the given children (an intermediate directory of the source paths).
    Only(Arc<PathNode>),
}

struct DirTask {
    origin: Origin,
    path: PathBuf,
    /// This directory's node, built from its `lstat` by the parent (`None` for the root).
    node: Option<Node>,
    /// The parent snapshot's node for this directory.
    previous: Option<Node>,
    listing: Listing,
    dev_limit: Option<u64>,
    up: Option<(Arc<DirState>, usize)>,
}

/// A file the listing opened for its worker; counted in [`Walk::held`] until closed.
struct HeldFile {
    file: std::fs::File,
    count: Arc<AtomicUsize>,
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

struct FileTask {
    dir: Arc<DirHandle>,
    name: OsString,
    /// The file, when the listing opened it and could keep it open (see [`Walk::hold`]).
    file: Option<HeldFile>,
    /// Bytes read ahead for it (see [`Walk::prefetch`]).
    prefetched: u64,
    path: PathBuf,
    node: Node,
    previous: Option<Node>,
    up: (Arc<DirState>, usize),
}

/// Archives the given absolute paths under a root tree that mirrors their full paths.
pub(super) fn archive_paths(
    ctx: &Ctx<'_>,
    paths: &[PathBuf],
    parent: Option<BlobId>,
) -> Result<BlobId> {
    let mut root = PathNode::default();
    for p in paths {
        root.insert(p);
    }
    let previous = parent.map(|id| Node {
        name: b"/".to_vec(),
        kind: NodeKind::Dir,
        subtree: Some(id),
        ..Node::default()
    });
    let walk = Walk {
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        root: Mutex::new(None),
        prefetched: AtomicU64::new(0),
        held: Arc::new(AtomicUsize::new(0)),
        max_held: descriptor_share(MAX_HELD),
    };
    let task = DirTask {
        origin: Origin::Absolute(PathBuf::from("/")),
        path: PathBuf::from("/"),
        node: None,
        previous,
        listing: if root.target {
            Listing::All
        } else {
            Listing::Only(Arc::new(root))
        },
        dev_limit: None,
        up: None,
    };
    rayon::scope(|s| run_dir(ctx, s, &walk, task));
    // Every file read ahead was handed to a worker that gave its bytes back: a leak here would
    // slowly turn read-ahead off in a long-running process (tests run with this check on).
    debug_assert_eq!(walk.prefetched.load(Ordering::Acquire), 0);
    debug_assert_eq!(walk.held.load(Ordering::Acquire), 0);
    if let Some(e) = walk.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    walk.root
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| Error::InvalidInput("none of the paths to back up could be read".into()))
}

fn load_subtree(ctx: &Ctx<'_>, pnode: Option<&Node>) -> Result<Option<Tree>> {
    match pnode {
        Some(n) if n.kind == NodeKind::Dir => match n.subtree {
            Some(id) => match ctx.repo.load_tree(&id) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.is_damage() => {
                    // A damaged parent only costs re-reading; it must not stop a backup.
                    tracing::warn!(error = %e, "parent tree unreadable; reading files again");
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

fn excluded(ctx: &Ctx<'_>, path: &Path) -> bool {
    ctx.opts.excludes.matches(path)
        || ctx.opts.skip.iter().any(|s| s == path)
        || (!ctx.opts.iexcludes.is_empty() && {
            use std::os::unix::ffi::{OsStrExt, OsStringExt};
            let lower =
                std::ffi::OsString::from_vec(path.as_os_str().as_bytes().to_ascii_lowercase());
            ctx.opts.iexcludes.matches(Path::new(&lower))
        })
}

/// Whether the directory `name` in `dir` holds one of the `--exclude-if-present` markers
/// (with the required start of content, when one is given).
fn marked(ctx: &Ctx<'_>, dir: &DirHandle, name: &OsStr) -> bool {
    if ctx.opts.exclude_if_present.is_empty() {
        return false;
    }
    let Ok(d) = dir.open_dir(name) else {
        return false;
    };
    ctx.opts.exclude_if_present.iter().any(|(tag, head)| {
        let Ok(st) = d.stat(tag) else { return false };
        match head {
            None => true,
            Some(h) => {
                use std::io::Read;
                st.file_type == FileType::RegularFile
                    && d.open_file(tag).is_ok_and(|mut f| {
                        let mut buf = vec![0u8; h.len()];
                        f.read_exact(&mut buf).is_ok() && buf == *h
                    })
            }
        }
    })
}

/// Source problems (unreadable, vanished, refused) leave the entry out; anything else is a
/// repository or program error and stops the run.
fn is_source_error(e: &Error) -> bool {
    matches!(
        e.kind(),
        crate::ErrorKind::Io | crate::ErrorKind::PermissionDenied
    )
}

/// Records a finished entry; the task that finishes a directory's last entry completes it.
fn fill(ctx: &Ctx<'_>, walk: &Walk, up: &(Arc<DirState>, usize), node: Option<Node>) {
    if node.is_some() {
        up.0.slots.lock().unwrap_or_else(|p| p.into_inner())[up.1] = node;
    }
    if up.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
        complete(ctx, walk, up.0.clone());
    }
}

/// Saves a finished directory's tree and passes its node up, for as many levels as finish.
fn complete(ctx: &Ctx<'_>, walk: &Walk, mut state: Arc<DirState>) {
    loop {
        let nodes: Vec<Node> =
            std::mem::take(&mut *state.slots.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .flatten()
                .collect();
        let empty = nodes.is_empty();
        let node = if walk.aborted() || (state.intermediate && empty) {
            None
        } else {
            match save_tree(ctx, &Tree { nodes }) {
                Ok(id) => match &state.up {
                    None => {
                        *walk.root.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
                        None
                    }
                    Some(_) => {
                        let mut n = state
                            .node
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take()
                            .expect("invariant: a directory with a parent has a node");
                        n.subtree = Some(id);
                        let counter = match state.previous {
                            None => &ctx.counters.dirs_new,
                            Some(p) if p == Some(id) => &ctx.counters.dirs_unmodified,
                            Some(_) => &ctx.counters.dirs_changed,
                        };
                        if !state.intermediate {
                            Counters::add(counter, 1);
                        }
                        Some(n)
                    }
                },
                Err(e) => {
                    walk.fail(e);
                    None
                }
            }
        };
        let Some((parent, slot)) = &state.up else {
            return;
        };
        if node.is_some() {
            parent.slots.lock().unwrap_or_else(|p| p.into_inner())[*slot] = node;
        }
        if parent.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        state = parent.clone();
    }
}

fn run_dir<'s>(ctx: &'s Ctx<'_>, s: &rayon::Scope<'s>, walk: &'s Walk, task: DirTask) {
    if walk.aborted() {
        if let Some(up) = &task.up {
            fill(ctx, walk, up, None);
        }
        return;
    }
    let DirTask {
        origin,
        path,
        node,
        previous,
        listing,
        dev_limit,
        up,
    } = task;
    let opened = match &origin {
        Origin::Absolute(p) => DirHandle::open(p),
        Origin::Child(parent, name) => parent.open_dir(name),
    };
    drop(origin); // the parent's descriptor is not needed any more
    let intermediate = matches!(listing, Listing::Only(_));
    let mut names: Vec<(OsString, Option<Arc<PathNode>>)> = Vec::new();
    let handle = match opened {
        Ok(h) => {
            match &listing {
                Listing::All => match h.entries() {
                    Ok(e) => names = e.into_iter().map(|n| (n, None)).collect(),
                    Err(e) => ctx.source_error(&path, Error::io(&path, e)),
                },
                Listing::Only(pn) => {
                    names = pn
                        .children
                        .iter()
                        .map(|(k, c)| (OsStr::from_bytes(k).to_owned(), Some(c.clone())))
                        .collect();
                }
            }
            Some(Arc::new(h))
        }
        Err(e) => {
            ctx.source_error(&path, Error::io(&path, e));
            None
        }
    };
    let ptree = match load_subtree(ctx, previous.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            walk.fail(e);
            None
        }
    };
    let state = Arc::new(DirState {
        node: Mutex::new(node),
        previous: previous.as_ref().map(|p| p.subtree),
        intermediate,
        slots: Mutex::new(vec![None; names.len()]),
        pending: AtomicUsize::new(names.len() + 1),
        up,
    });
    let mut done_now: Vec<(usize, Option<Node>)> = Vec::new();
    if let Some(handle) = &handle {
        for (i, (name, pn)) in names.into_iter().enumerate() {
            if walk.aborted() {
                done_now.push((i, None));
                continue;
            }
            let entry_path = path.join(&name);
            let prev = ptree
                .as_ref()
                .and_then(|t| t.find(name.as_bytes()))
                .cloned();
            // A child that is itself on the way to a source path (not one of them) is walked
            // as an intermediate directory.
            let virtual_child = pn.filter(|c| !c.target);
            let slot = (state.clone(), i);
            match entry(
                ctx,
                walk,
                handle,
                &name,
                &entry_path,
                prev,
                dev_limit,
                virtual_child,
                slot,
            ) {
                Entry::Done(node) => done_now.push((i, node)),
                Entry::Dir(t) => s.spawn(move |s| run_dir(ctx, s, walk, t)),
                Entry::File(t) => s.spawn(move |_| run_file(ctx, walk, t)),
            }
        }
    }
    {
        let mut slots = state.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (i, n) in &mut done_now {
            slots[*i] = n.take();
        }
    }
    let n = done_now.len() + 1;
    if state.pending.fetch_sub(n, Ordering::AcqRel) == n {
        complete(ctx, walk, state);
    }
}

/// What became of one directory entry.
enum Entry {
    /// Finished (or left out) at once.
    Done(Option<Node>),
    /// A subdirectory to walk.
    Dir(DirTask),
    /// A file to read.
    File(FileTask),
}

/// Looks at one entry of an open directory.
#[allow(clippy::too_many_arguments)]
fn entry(
    ctx: &Ctx<'_>,
    walk: &Walk,
    dir: &Arc<DirHandle>,
    name: &OsStr,
    path: &Path,
    previous: Option<Node>,
    dev_limit: Option<u64>,
    intermediate: Option<Arc<PathNode>>,
    up: (Arc<DirState>, usize),
) -> Entry {
    if intermediate.is_none() && excluded(ctx, path) {
        return Entry::Done(None);
    }
    let st: Stat = match dir.stat(name) {
        Ok(s) => s,
        Err(e) => {
            ctx.source_error(path, Error::io(path, e));
            return Entry::Done(None);
        }
    };
    if intermediate.is_some() && st.file_type != FileType::Directory {
        ctx.source_error(path, "is not a directory");
        return Entry::Done(None);
    }
    let file = st.file_type == FileType::RegularFile;
    let too_large = file
        && ctx
            .opts
            .exclude_larger_than
            .is_some_and(|max| st.size > max);
    // The previous snapshot's content may be reused without reading the file.
    let reusable = file
        && !ctx.opts.force
        && previous
            .as_ref()
            .is_some_and(|p| p.kind == NodeKind::File && same_as(p, &st));
    // A regular file that will be read is opened once, here: its xattrs are read, and its
    // read started, through the descriptor the worker then reads (no second open, no path
    // lookup through /proc). When the open fails, the worker's own open reports why.
    let open = if file && !too_large && !reusable {
        dir.open_file(name).ok()
    } else {
        None
    };
    let meta = ctx.opts.meta;
    let mut node =
        match node_from_stat(dir, name, path, &st, meta, previous.as_ref(), open.as_ref()) {
            Ok(n) => n,
            Err(e) => {
                ctx.source_error(path, e);
                return Entry::Done(None);
            }
        };
    let previous = previous.filter(|p| p.kind == node.kind);
    if intermediate.is_none()
        && (too_large || (node.kind == NodeKind::Dir && marked(ctx, dir, name)))
    {
        return Entry::Done(None);
    }
    match node.kind {
        NodeKind::Dir => {
            let limit = match dev_limit {
                Some(d) => Some(d),
                None if ctx.opts.one_file_system && intermediate.is_none() => Some(st.dev),
                None => None,
            };
            if intermediate.is_none() && limit.is_some_and(|d| d != st.dev) {
                // A mount point under --one-file-system: keep the directory, not its content.
                return match save_tree(ctx, &Tree::default()) {
                    Ok(id) => {
                        node.subtree = Some(id);
                        Entry::Done(Some(node))
                    }
                    Err(e) => {
                        ctx.source_error(path, e);
                        Entry::Done(None)
                    }
                };
            }
            Entry::Dir(DirTask {
                origin: Origin::Child(dir.clone(), name.to_owned()),
                path: path.to_path_buf(),
                node: Some(node),
                previous,
                listing: match intermediate {
                    Some(pn) => Listing::Only(pn),
                    None => Listing::All,
                },
                dev_limit: limit,
                up: Some(up),
            })
        }
        NodeKind::File => {
            Counters::add(&ctx.counters.total_files, 1);
            if let Some(p) = &previous
                && reusable
            {
                match all_indexed(ctx, &p.content) {
                    Ok(true) => {
                        node.content = p.content.clone();
                        Counters::add(&ctx.counters.files_unmodified, 1);
                        Counters::add(&ctx.counters.total_bytes, node.size);
                        ctx.progress.item_done(node.size);
                        ctx.entry(EntryStatus::Unchanged, path);
                        return Entry::Done(Some(node));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        ctx.source_error(path, e);
                        return Entry::Done(None);
                    }
                }
            }
            let prefetched = open.as_ref().map_or(0, |f| walk.prefetch(f, node.size));
            Entry::File(FileTask {
                prefetched,
                file: open.and_then(|f| walk.hold(f)),
                dir: dir.clone(),
                name: name.to_owned(),
                path: path.to_path_buf(),
                node,
                previous,
                up,
            })
        }
        _ => {
            Counters::add(&ctx.counters.other, 1);
            Entry::Done(Some(node))
        }
    }
}

fn run_file(ctx: &Ctx<'_>, walk: &Walk, t: FileTask) {
    if walk.aborted() {
        walk.prefetch_consumed(t.prefetched);
        drop(t.file);
        fill(ctx, walk, &t.up, None);
        return;
    }
    let FileTask {
        dir,
        name,
        file,
        prefetched,
        path,
        mut node,
        previous,
        up,
    } = t;
    let stored = match &file {
        Some(h) => super::content::store_file(ctx, &h.file, &path),
        None => dir
            .open_file(&name)
            .map_err(|e| Error::io(&path, e))
            .and_then(|f| super::content::store_file(ctx, &f, &path)),
    };
    drop(dir);
    drop(file);
    walk.prefetch_consumed(prefetched);
    let result = match stored {
        Ok((content, size)) => {
            node.content = content;
            node.size = size;
            Counters::add(&ctx.counters.total_bytes, node.size);
            // Read again (--force, or metadata changed) but identical: not a change.
            let (counter, status) = match &previous {
                Some(p) if unchanged(p, &node) && p.content == node.content => {
                    (&ctx.counters.files_unmodified, EntryStatus::Unchanged)
                }
                Some(_) => (&ctx.counters.files_changed, EntryStatus::Changed),
                None => (&ctx.counters.files_new, EntryStatus::New),
            };
            Counters::add(counter, 1);
            ctx.progress.item_done(node.size);
            ctx.entry(status, &path);
            Some(node)
        }
        Err(e) if is_source_error(&e) => {
            ctx.source_error(&path, e);
            None
        }
        Err(e) => {
            walk.fail(e);
            None
        }
    };
    fill(ctx, walk, &up, result);
}

/// Whether a file read again has the parent snapshot's size, times and inode (what
/// [`same_as`] checks on its `lstat` before reading).
fn unchanged(p: &Node, n: &Node) -> bool {
    p.size == n.size && p.mtime == n.mtime && p.ctime == n.ctime && p.inode == n.inode
}

fn all_indexed(ctx: &Ctx<'_>, content: &[ContentPart]) -> Result<bool> {
    let index = ctx.repo.index()?;
    for part in content {
        if let ContentPart::Chunk(id) = part
            && !index.contains(BlobType::Data, id)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stores a tree blob (unless already stored) and returns its id.
pub(super) fn save_tree(ctx: &Ctx<'_>, tree: &Tree) -> Result<BlobId> {
    ctx.saver.save_tree(tree)
}

/// Archives a stream as a single file named `name` in the root tree.
pub(super) fn archive_stream(
    ctx: &Ctx<'_>,
    name: &[u8],
    mut reader: Box<dyn Read + Send>,
) -> Result<BlobId> {
    if !Node::valid_name(name) {
        return Err(Error::InvalidInput(format!(
            "invalid stdin file name {}",
            crate::quote::quote_bytes(name)
        )));
    }
    let (content, size) = super::content::store_stream(ctx, &mut reader).map_err(|e| match e {
        Error::Io { error, .. } => Error::Aborted(crate::error::io_message(&error)),
        other => other,
    })?;
    let now = Timestamp::now();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let node = Node {
        name: name.to_vec(),
        kind: NodeKind::File,
        mode: 0o600,
        uid,
        gid,
        user: crate::source::owner::user_name(uid),
        group: crate::source::owner::group_name(gid),
        mtime: now,
        ctime: now,
        nlink: 1,
        size,
        content,
        ..Node::default()
    };
    Counters::add(&ctx.counters.files_new, 1);
    Counters::add(&ctx.counters.total_files, 1);
    Counters::add(&ctx.counters.total_bytes, size);
    save_tree(ctx, &Tree { nodes: vec![node] })
}
