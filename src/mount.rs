//! A read-only FUSE view of a repository (`vault mount`).
//!
//! ```text
//! /snapshots/<time>_<id>/…      every snapshot's tree, with its stored metadata
//! /snapshots/latest             → the newest snapshot
//! /hosts/<host>/<time>_<id>     → ../../snapshots/<time>_<id>  (and `latest`)
//! /tags/<tag>/<time>_<id>       → ../../snapshots/<time>_<id>  (and `latest`)
//! ```
//!
//! Directories are read when they are first looked at; a file read fetches only the blobs
//! that cover the requested range (each blob authenticated as it is loaded), through a cache
//! of decrypted blobs bounded in bytes. Modes, owners, times, symlink targets, hard-link counts
//! and extended attributes are the stored ones. The inode table grows with what is browsed,
//! never with the repository.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyXattr, Request,
};

use crate::format::snapshot::Snapshot;
use crate::format::time::Timestamp;
use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType, SnapshotId};
use crate::repo::Repository;

/// Extended attributes: (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// How long the kernel may cache attributes and names (the view never changes).
const TTL: Duration = Duration::from_secs(3600);

/// Counters of what the mount read from the repository.
#[derive(Debug, Default)]
pub struct MountStats {
    /// Data blobs loaded from the repository (cache misses).
    pub blobs_loaded: AtomicU64,
    /// Stored bytes of those blobs (what was fetched from the backend).
    pub bytes_fetched: AtomicU64,
    /// Bytes served to readers.
    pub bytes_served: AtomicU64,
}

enum Kind {
    /// A directory made by the mount (root, snapshots, hosts, tags and their groups).
    Virtual(Vec<(OsString, u64)>),
    /// A directory of a snapshot; children are read on first use.
    Tree {
        tree: Option<BlobId>,
        children: Option<Vec<(OsString, u64)>>,
    },
    /// A symlink made by the mount.
    Link(Vec<u8>),
    /// A file, symlink or special file of a snapshot.
    Leaf {
        /// Cumulative end offsets of the content parts (computed on first read).
        ends: Option<Vec<u64>>,
    },
}

struct Entry {
    kind: Kind,
    /// Stored metadata (absent for the mount's own directories and links).
    node: Option<Node>,
    /// Time shown for the mount's own entries.
    time: Timestamp,
}

struct State {
    entries: Vec<Entry>,
}

/// Decrypted blobs, bounded in bytes, oldest evicted first.
struct BlobCache {
    map: HashMap<BlobId, std::sync::Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
    capacity: usize,
}

impl BlobCache {
    fn get(&self, id: &BlobId) -> Option<std::sync::Arc<Vec<u8>>> {
        self.map.get(id).cloned()
    }

    fn put(&mut self, id: BlobId, data: std::sync::Arc<Vec<u8>>) {
        if self.map.contains_key(&id) {
            return;
        }
        self.bytes += data.len();
        self.map.insert(id, data);
        self.order.push_back(id);
        while self.bytes > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            if let Some(d) = self.map.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }
}

/// The filesystem.
pub struct VaultFs {
    repo: Repository,
    state: Mutex<State>,
    cache: Mutex<BlobCache>,
    stats: std::sync::Arc<MountStats>,
    uid: u32,
    gid: u32,
}

fn system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The directory name of a snapshot: its time in its own offset, then its short id.
pub fn snapshot_dir_name(id: &SnapshotId, s: &Snapshot) -> String {
    let off = jiff::tz::Offset::from_seconds(s.tz_offset_secs).unwrap_or(jiff::tz::Offset::UTC);
    let t = jiff::Timestamp::new(s.time.secs, 0)
        .map(|ts| {
            ts.to_zoned(jiff::tz::TimeZone::fixed(off))
                .strftime("%Y-%m-%dT%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| format!("@{}", s.time.secs));
    format!("{t}_{}", id.short())
}

impl VaultFs {
    /// The view of `snapshots` (oldest first) in `repo`, with a blob cache of `cache_bytes`.
    pub fn new(
        repo: Repository,
        mut snapshots: Vec<(SnapshotId, Snapshot)>,
        cache_bytes: usize,
    ) -> Self {
        snapshots.sort_by_key(|(id, s)| (s.time, *id));
        let now = Timestamp::now();
        let virt = |children| Entry {
            kind: Kind::Virtual(children),
            node: None,
            time: now,
        };
        // 1 root, 2 snapshots, 3 hosts, 4 tags.
        let mut entries = vec![
            virt(vec![
                ("snapshots".into(), 2),
                ("hosts".into(), 3),
                ("tags".into(), 4),
            ]),
            virt(Vec::new()),
            virt(Vec::new()),
            virt(Vec::new()),
        ];
        let mut names = Vec::new();
        let mut snap_children = Vec::new();
        for (id, s) in &snapshots {
            let name = snapshot_dir_name(id, s);
            entries.push(Entry {
                kind: Kind::Tree {
                    tree: Some(s.tree),
                    children: None,
                },
                node: None,
                time: s.time,
            });
            snap_children.push((OsString::from(&name), entries.len() as u64));
            names.push((name, s.hostname.clone(), s.tags.clone(), s.time));
        }
        let link = |target: String, time: Timestamp, entries: &mut Vec<Entry>| {
            entries.push(Entry {
                kind: Kind::Link(target.into_bytes()),
                node: None,
                time,
            });
            entries.len() as u64
        };
        if let Some((name, _, _, t)) = names.last() {
            let ino = link(name.clone(), *t, &mut entries);
            snap_children.push(("latest".into(), ino));
        }
        entries[1].kind = Kind::Virtual(snap_children);
        // Groups: hosts and tags.
        for (group_ino, by_tag) in [(3usize, false), (4usize, true)] {
            let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
            for (i, (_, host, tags, _)) in names.iter().enumerate() {
                if by_tag {
                    for t in tags {
                        groups.entry(t.clone()).or_default().push(i);
                    }
                } else {
                    groups.entry(host.clone()).or_default().push(i);
                }
            }
            let mut group_children = Vec::new();
            for (g, members) in groups {
                let mut children = Vec::new();
                for &i in &members {
                    let (name, _, _, t) = &names[i];
                    let ino = link(format!("../../snapshots/{name}"), *t, &mut entries);
                    children.push((OsString::from(name), ino));
                }
                if let Some(&last) = members.last() {
                    let (name, _, _, t) = &names[last];
                    let ino = link(name.clone(), *t, &mut entries);
                    children.push(("latest".into(), ino));
                }
                entries.push(virt(children));
                group_children.push((OsString::from(g), entries.len() as u64));
            }
            entries[group_ino - 1].kind = Kind::Virtual(group_children);
        }
        Self {
            repo,
            state: Mutex::new(State { entries }),
            cache: Mutex::new(BlobCache {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                capacity: cache_bytes.max(1 << 20),
            }),
            stats: std::sync::Arc::new(MountStats::default()),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    /// What the mount has read so far.
    pub fn stats(&self) -> std::sync::Arc<MountStats> {
        self.stats.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        let base = |kind, perm, size, nlink, t: Timestamp| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(t),
            mtime: system_time(t),
            ctime: system_time(t),
            crtime: system_time(t),
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        };
        match (&e.node, &e.kind) {
            (Some(n), _) => FileAttr {
                ino: INodeNo(ino),
                size: if n.kind == NodeKind::Symlink {
                    n.link_target.len() as u64
                } else {
                    n.size
                },
                blocks: n.size.div_ceil(512),
                atime: system_time(n.atime.unwrap_or(n.mtime)),
                mtime: system_time(n.mtime),
                ctime: system_time(n.ctime),
                crtime: system_time(n.mtime),
                kind: file_type(n.kind),
                perm: (n.mode & 0o7777) as u16,
                nlink: n.nlink.max(1) as u32,
                uid: n.uid,
                gid: n.gid,
                rdev: n.rdev as u32,
                flags: 0,
                blksize: 4096,
            },
            (None, Kind::Link(t)) => base(FileType::Symlink, 0o777, t.len() as u64, 1, e.time),
            (None, _) => base(FileType::Directory, 0o555, 0, 2, e.time),
        }
    }

    /// The children of directory `ino`, reading its tree on first use.
    fn children(&self, ino: u64) -> Result<Vec<(OsString, u64)>, Errno> {
        let tree = {
            let st = self.state();
            let e = st.entries.get((ino - 1) as usize).ok_or(Errno::ENOENT)?;
            match &e.kind {
                Kind::Virtual(c) => return Ok(c.clone()),
                Kind::Tree {
                    children: Some(c), ..
                } => return Ok(c.clone()),
                Kind::Tree { tree, .. } => *tree,
                _ => return Err(Errno::ENOTDIR),
            }
        };
        let nodes = match tree {
            Some(t) => {
                self.repo
                    .load_tree(&t)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "mount: a directory cannot be read");
                        Errno::EIO
                    })?
                    .nodes
            }
            None => Vec::new(),
        };
        let mut st = self.state();
        if let Some(Kind::Tree {
            children: Some(c), ..
        }) = st.entries.get((ino - 1) as usize).map(|e| &e.kind)
        {
            return Ok(c.clone()); // another thread was first
        }
        let mut children = Vec::with_capacity(nodes.len());
        for n in nodes {
            let name = OsString::from(OsStr::from_bytes(&n.name));
            let kind = if n.kind == NodeKind::Dir {
                Kind::Tree {
                    tree: n.subtree,
                    children: None,
                }
            } else {
                Kind::Leaf { ends: None }
            };
            st.entries.push(Entry {
                kind,
                time: n.mtime,
                node: Some(n),
            });
            children.push((name, st.entries.len() as u64));
        }
        if let Some(Kind::Tree { children: c, .. }) =
            st.entries.get_mut((ino - 1) as usize).map(|e| &mut e.kind)
        {
            *c = Some(children.clone());
        }
        Ok(children)
    }

    fn blob(&self, id: &BlobId) -> Result<std::sync::Arc<Vec<u8>>, Errno> {
        if let Some(b) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(b);
        }
        let fail = |e: crate::Error| {
            tracing::warn!(error = %e, "mount: a blob cannot be read");
            Errno::EIO
        };
        let loc = self
            .repo
            .index()
            .and_then(|i| i.get(BlobType::Data, id))
            .map_err(fail)?
            .ok_or(Errno::EIO)?;
        let data = self
            .repo
            .load_blob_at(BlobType::Data, id, &loc)
            .map_err(fail)?;
        self.stats.blobs_loaded.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_fetched
            .fetch_add(loc.length, Ordering::Relaxed);
        let data = std::sync::Arc::new(data);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(*id, data.clone());
        Ok(data)
    }

    /// The content parts of file `ino` and their cumulative end offsets.
    fn layout(&self, ino: u64) -> Result<(Vec<ContentPart>, Vec<u64>), Errno> {
        let (parts, known) = {
            let st = self.state();
            let e = st.entries.get((ino - 1) as usize).ok_or(Errno::ENOENT)?;
            let n = e.node.as_ref().ok_or(Errno::EISDIR)?;
            if n.kind != NodeKind::File {
                return Err(Errno::EINVAL);
            }
            let known = match &e.kind {
                Kind::Leaf { ends: Some(v) } => Some(v.clone()),
                _ => None,
            };
            (n.content.clone(), known)
        };
        if let Some(ends) = known {
            return Ok((parts, ends));
        }
        let index = self.repo.index().map_err(|_| Errno::EIO)?;
        let mut ends = Vec::with_capacity(parts.len());
        let mut at = 0u64;
        for p in &parts {
            at += match p {
                ContentPart::Hole(n) => *n,
                ContentPart::Chunk(id) => {
                    index
                        .get(BlobType::Data, id)
                        .map_err(|_| Errno::EIO)?
                        .ok_or(Errno::EIO)?
                        .raw_length
                }
            };
            ends.push(at);
        }
        if let Some(Kind::Leaf { ends: slot }) = self
            .state()
            .entries
            .get_mut((ino - 1) as usize)
            .map(|e| &mut e.kind)
        {
            *slot = Some(ends.clone());
        }
        Ok((parts, ends))
    }

    fn read_range(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (parts, ends) = self.layout(ino)?;
        let total = ends.last().copied().unwrap_or(0);
        let end = (offset + u64::from(size)).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        // The first part that ends after `offset`.
        let mut i = ends.partition_point(|&e| e <= offset);
        let mut pos = offset;
        while pos < end && i < parts.len() {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let from = (pos - start) as usize;
            let to = (end.min(ends[i]) - start) as usize;
            match &parts[i] {
                ContentPart::Hole(_) => out.resize(out.len() + (to - from), 0),
                ContentPart::Chunk(id) => {
                    let b = self.blob(id)?;
                    out.extend_from_slice(&b[from..to]);
                }
            }
            pos = start + to as u64;
            i += 1;
        }
        self.stats
            .bytes_served
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn xattrs(&self, ino: u64) -> Result<Xattrs, Errno> {
        let st = self.state();
        let e = st.entries.get((ino - 1) as usize).ok_or(Errno::ENOENT)?;
        Ok(e.node
            .as_ref()
            .map(|n| n.xattrs.clone())
            .unwrap_or_default())
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for VaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let children = match self.children(u64::from(parent)) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let Some(&(_, ino)) = children.iter().find(|(n, _)| n == name) else {
            return reply.error(Errno::ENOENT);
        };
        let st = self.state();
        let attr = self.attr(ino, &st.entries[(ino - 1) as usize]);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = u64::from(ino);
        let st = self.state();
        match st.entries.get((ino.max(1) - 1) as usize) {
            Some(e) => reply.attr(&TTL, &self.attr(ino, e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.state();
        match st.entries.get((u64::from(ino).max(1) - 1) as usize) {
            Some(Entry {
                kind: Kind::Link(t),
                ..
            }) => reply.data(t),
            Some(Entry { node: Some(n), .. }) if n.kind == NodeKind::Symlink => {
                reply.data(&n.link_target)
            }
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_range(u64::from(ino), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = u64::from(ino);
        let children = match self.children(ino) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let st = self.state();
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for (name, child) in children {
            let a = self.attr(child, &st.entries[(child - 1) as usize]);
            all.push((child, a.kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.xattrs(u64::from(ino)) {
            Ok(x) => match x.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, v)) => reply_xattr(reply, size, v),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.xattrs(u64::from(ino)) {
            Ok(x) => {
                let mut list = Vec::new();
                for (k, _) in &x {
                    list.extend_from_slice(k);
                    list.push(0);
                }
                reply_xattr(reply, size, &list);
            }
            Err(e) => reply.error(e),
        }
    }
}
