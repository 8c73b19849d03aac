//! Trees: one blob per directory (`format-spec/08-trees-and-snapshots.md`).
//!
//! ```text
//! TREE  = version(u8 = 1) || count(uvarint) || NODE*count      (nodes sorted by name, unique)
//! NODE  = name(bytes) || kind(u8) || mode(uvarint ≤ 0o7777) || uid(uvarint) || gid(uvarint) ||
//!         user(str) || group(str) || mtime(time) || has_atime(bool) [|| atime(time)] ||
//!         ctime(time) || inode(uvarint) || device(uvarint) || nlink(uvarint) ||
//!         xattr_count(uvarint) || (name(bytes) || value(bytes))*  (sorted by name, unique) ||
//!         PAYLOAD(kind)
//! PAYLOAD(file=1)    = size(uvarint) || part_count(uvarint) || PART*
//!   PART             = 0 || chunk_id(32)      a data blob
//!                    | 1 || length(uvarint>0) a hole (zeros not stored)
//! PAYLOAD(dir=2)     = subtree_id(32)
//! PAYLOAD(symlink=3) = target(bytes)
//! PAYLOAD(fifo=4, socket=5) = nothing
//! PAYLOAD(chardev=6, blockdev=7) = rdev(uvarint)
//! ```
//! Names are raw bytes (any byte except `/` and NUL; never empty, `.` or `..`), so file
//! names that are not UTF-8 survive. The encoding is canonical, so identical directories
//! produce identical bytes and therefore identical blob ids.

use super::TREE_VERSION;
use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer, err};
use crate::id::BlobId;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NodeKind {
    /// Regular file.
    #[default]
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
}

impl NodeKind {
    /// On-disk code.
    pub fn code(self) -> u8 {
        match self {
            NodeKind::File => 1,
            NodeKind::Dir => 2,
            NodeKind::Symlink => 3,
            NodeKind::Fifo => 4,
            NodeKind::Socket => 5,
            NodeKind::CharDevice => 6,
            NodeKind::BlockDevice => 7,
        }
    }

    /// Inverse of [`NodeKind::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::Socket,
            6 => NodeKind::CharDevice,
            7 => NodeKind::BlockDevice,
            _ => return None,
        })
    }

    /// Lowercase name for listings and JSON.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "chardev",
            NodeKind::BlockDevice => "blockdev",
        }
    }
}

/// One piece of a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentPart {
    /// A data blob.
    Chunk(BlobId),
    /// `n` zero bytes that were a hole in the source and are not stored.
    Hole(u64),
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    /// File name, raw bytes.
    pub name: Vec<u8>,
    /// Kind of entry.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Owner user name, empty when unknown.
    pub user: String,
    /// Owner group name, empty when unknown.
    pub group: String,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time, when recorded (`--with-atime`).
    pub atime: Option<Timestamp>,
    /// Status change time.
    pub ctime: Timestamp,
    /// Inode number on the source file system.
    pub inode: u64,
    /// Device number of the source file system.
    pub device: u64,
    /// Hard-link count.
    pub nlink: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// File size in bytes (files only).
    pub size: u64,
    /// File content (files only).
    pub content: Vec<ContentPart>,
    /// Tree of a directory (directories only).
    pub subtree: Option<BlobId>,
    /// Symlink target (symlinks only).
    pub link_target: Vec<u8>,
    /// Device number (character and block devices only).
    pub rdev: u64,
}

impl Node {
    /// Whether `name` is acceptable as a node name.
    pub fn valid_name(name: &[u8]) -> bool {
        !name.is_empty()
            && name != b"."
            && name != b".."
            && !name.contains(&b'/')
            && !name.contains(&0)
    }
}

/// A decoded tree: nodes sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries, sorted by name bytes, unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Finds a node by name (binary search over the sorted nodes).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Encodes a tree. Nodes must already be sorted by name (the archiver sorts directory entries).
pub fn encode_tree(tree: &Tree) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TREE_VERSION);
    w.uvarint(tree.nodes.len() as u64);
    for n in &tree.nodes {
        encode_node(&mut w, n);
    }
    w.into_bytes()
}

fn encode_node(w: &mut Writer, n: &Node) {
    w.bytes(&n.name);
    w.u8(n.kind.code());
    w.uvarint(u64::from(n.mode));
    w.uvarint(u64::from(n.uid));
    w.uvarint(u64::from(n.gid));
    w.str(&n.user);
    w.str(&n.group);
    n.mtime.encode(w);
    w.bool(n.atime.is_some());
    if let Some(a) = n.atime {
        a.encode(w);
    }
    n.ctime.encode(w);
    w.uvarint(n.inode);
    w.uvarint(n.device);
    w.uvarint(n.nlink);
    w.uvarint(n.xattrs.len() as u64);
    for (k, v) in &n.xattrs {
        w.bytes(k);
        w.bytes(v);
    }
    match n.kind {
        NodeKind::File => {
            w.uvarint(n.size);
            w.uvarint(n.content.len() as u64);
            for p in &n.content {
                match p {
                    ContentPart::Chunk(id) => {
                        w.u8(0);
                        w.id(&id.0);
                    }
                    ContentPart::Hole(len) => {
                        w.u8(1);
                        w.uvarint(*len);
                    }
                }
            }
        }
        NodeKind::Dir => w.id(&n.subtree.unwrap_or_default().0),
        NodeKind::Symlink => w.bytes(&n.link_target),
        NodeKind::Fifo | NodeKind::Socket => {}
        NodeKind::CharDevice | NodeKind::BlockDevice => w.uvarint(n.rdev),
    }
}

/// Decodes a tree, enforcing sort order, name rules and every field's range.
pub fn decode_tree(bytes: &[u8]) -> DecodeResult<Tree> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != TREE_VERSION {
        return err(format!("unknown tree version {v}"));
    }
    let count = r.count(16)?;
    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    for _ in 0..count {
        let n = decode_node(&mut r)?;
        if let Some(prev) = nodes.last()
            && prev.name >= n.name
        {
            return err("tree entries are not sorted by name or not unique");
        }
        nodes.push(n);
    }
    r.finish()?;
    Ok(Tree { nodes })
}

fn decode_node(r: &mut Reader<'_>) -> DecodeResult<Node> {
    let name = r.bytes()?.to_vec();
    if !Node::valid_name(&name) {
        return err(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(&name)
        ));
    }
    let code = r.u8()?;
    let Some(kind) = NodeKind::from_code(code) else {
        return err(format!("unknown node kind {code}"));
    };
    let mode = r.u32v()?;
    if mode > 0o7777 {
        return err(format!("mode {mode:o} has bits beyond 0o7777"));
    }
    let mut n = Node {
        name,
        kind,
        mode,
        uid: r.u32v()?,
        gid: r.u32v()?,
        user: r.str()?.to_string(),
        group: r.str()?.to_string(),
        mtime: Timestamp::decode(r)?,
        ..Node::default()
    };
    if r.bool()? {
        n.atime = Some(Timestamp::decode(r)?);
    }
    n.ctime = Timestamp::decode(r)?;
    n.inode = r.uvarint()?;
    n.device = r.uvarint()?;
    n.nlink = r.uvarint()?;
    let nx = r.count(2)?;
    for _ in 0..nx {
        let k = r.bytes()?.to_vec();
        let v = r.bytes()?.to_vec();
        if k.is_empty() {
            return err("empty extended attribute name");
        }
        if let Some((pk, _)) = n.xattrs.last()
            && *pk >= k
        {
            return err("extended attributes are not sorted or not unique");
        }
        n.xattrs.push((k, v));
    }
    match kind {
        NodeKind::File => {
            n.size = r.uvarint()?;
            let parts = r.count(2)?;
            n.content.reserve(parts);
            let mut total: u64 = 0;
            for _ in 0..parts {
                let p = match r.u8()? {
                    0 => ContentPart::Chunk(BlobId(r.id()?)),
                    1 => {
                        let len = r.uvarint()?;
                        if len == 0 {
                            return err("empty hole");
                        }
                        total = total.saturating_add(len);
                        ContentPart::Hole(len)
                    }
                    t => return err(format!("unknown content part {t}")),
                };
                n.content.push(p);
            }
            if total > n.size {
                return err("holes are longer than the file");
            }
        }
        NodeKind::Dir => n.subtree = Some(BlobId(r.id()?)),
        NodeKind::Symlink => n.link_target = r.bytes()?.to_vec(),
        NodeKind::Fifo | NodeKind::Socket => {}
        NodeKind::CharDevice | NodeKind::BlockDevice => n.rdev = r.uvarint()?,
    }
    Ok(n)
}
