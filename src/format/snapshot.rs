//! Snapshot manifests (`format-spec/08-trees-and-snapshots.md`).
//!
//! Plaintext, sealed in an envelope of kind `S`:
//! ```text
//! SNAPSHOT = time(time) || tz_offset_secs(ivarint) || hostname(str) || username(str) ||
//!            uid(uvarint) || gid(uvarint) || path_count(uvarint) || path(bytes)* ||
//!            tag_count(uvarint) || tag(str)* || tree(32) || parent(opt_id) || original(opt_id) ||
//!            program_version(str) || SUMMARY
//! SUMMARY  = field_count(uvarint = 16) || uvarint*16 in the order of [`Summary::FIELDS`]
//! ```
//! `original` is set when the snapshot was rewritten (by `repair snapshots`) from another.

use super::time::Timestamp;
use super::wire::{DecodeResult, Reader, Writer, err};
use crate::id::{BlobId, SnapshotId};

/// Counters recorded with every snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose content or metadata changed.
    pub files_changed: u64,
    /// Files identical to the parent (content reused without reading).
    pub files_unmodified: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose tree changed.
    pub dirs_changed: u64,
    /// Directories whose tree is identical to the parent's.
    pub dirs_unmodified: u64,
    /// Data blobs added to the repository.
    pub data_blobs: u64,
    /// Tree blobs added to the repository.
    pub tree_blobs: u64,
    /// Bytes read from the sources.
    pub bytes_read: u64,
    /// Plaintext bytes of the blobs added.
    pub bytes_added: u64,
    /// Stored (compressed and sealed) bytes of the blobs added.
    pub bytes_stored: u64,
    /// Regular files in the snapshot.
    pub total_files: u64,
    /// Sum of the sizes of all regular files in the snapshot.
    pub total_bytes: u64,
    /// Source entries that could not be read and were left out.
    pub errors: u64,
    /// Wall-clock duration of the run in milliseconds.
    pub duration_ms: u64,
    /// Non-regular entries (symlinks, devices, fifos, sockets).
    pub other_entries: u64,
}

impl Summary {
    /// Field names, in their on-disk order.
    pub const FIELDS: [&'static str; 16] = [
        "files_new",
        "files_changed",
        "files_unmodified",
        "dirs_new",
        "dirs_changed",
        "dirs_unmodified",
        "data_blobs",
        "tree_blobs",
        "bytes_read",
        "bytes_added",
        "bytes_stored",
        "total_files",
        "total_bytes",
        "errors",
        "duration_ms",
        "other_entries",
    ];

    fn values(&self) -> [u64; 16] {
        [
            self.files_new,
            self.files_changed,
            self.files_unmodified,
            self.dirs_new,
            self.dirs_changed,
            self.dirs_unmodified,
            self.data_blobs,
            self.tree_blobs,
            self.bytes_read,
            self.bytes_added,
            self.bytes_stored,
            self.total_files,
            self.total_bytes,
            self.errors,
            self.duration_ms,
            self.other_entries,
        ]
    }

    fn from_values(v: [u64; 16]) -> Self {
        Summary {
            files_new: v[0],
            files_changed: v[1],
            files_unmodified: v[2],
            dirs_new: v[3],
            dirs_changed: v[4],
            dirs_unmodified: v[5],
            data_blobs: v[6],
            tree_blobs: v[7],
            bytes_read: v[8],
            bytes_added: v[9],
            bytes_stored: v[10],
            total_files: v[11],
            total_bytes: v[12],
            errors: v[13],
            duration_ms: v[14],
            other_entries: v[15],
        }
    }
}

/// A decoded snapshot manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// When the snapshot was taken (or the `--time` override).
    pub time: Timestamp,
    /// The local UTC offset at `time`, in seconds east of UTC.
    pub tz_offset_secs: i32,
    /// Host name.
    pub hostname: String,
    /// User name of the process that took it.
    pub username: String,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// The absolute source paths (or the stdin name).
    pub paths: Vec<Vec<u8>>,
    /// Tags, sorted and unique.
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    /// The snapshot used as parent for change detection.
    pub parent: Option<SnapshotId>,
    /// For rewritten snapshots, the snapshot they replace.
    pub original: Option<SnapshotId>,
    /// vault version that wrote it.
    pub program_version: String,
    /// Counters.
    pub summary: Summary,
}

impl Snapshot {
    /// Adds `tag` unless present, keeping the tags sorted.
    pub fn add_tag(&mut self, tag: &str) {
        if !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_string());
            self.tags.sort();
        }
    }
}

/// Encodes a snapshot plaintext.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut w = Writer::new();
    s.time.encode(&mut w);
    w.ivarint(i64::from(s.tz_offset_secs));
    w.str(&s.hostname);
    w.str(&s.username);
    w.uvarint(u64::from(s.uid));
    w.uvarint(u64::from(s.gid));
    w.uvarint(s.paths.len() as u64);
    for p in &s.paths {
        w.bytes(p);
    }
    w.uvarint(s.tags.len() as u64);
    for t in &s.tags {
        w.str(t);
    }
    w.id(&s.tree.0);
    w.opt_id(s.parent.as_ref().map(|p| &p.0));
    w.opt_id(s.original.as_ref().map(|p| &p.0));
    w.str(&s.program_version);
    let values = s.summary.values();
    w.uvarint(values.len() as u64);
    for v in values {
        w.uvarint(v);
    }
    w.into_bytes()
}

/// Decodes a snapshot plaintext.
pub fn decode_snapshot(bytes: &[u8]) -> DecodeResult<Snapshot> {
    let mut r = Reader::new(bytes);
    let time = Timestamp::decode(&mut r)?;
    let tz = r.ivarint()?;
    if tz.abs() > 26 * 3600 {
        return err(format!("time zone offset {tz}s out of range"));
    }
    let hostname = r.str()?.to_string();
    let username = r.str()?.to_string();
    let uid = r.u32v()?;
    let gid = r.u32v()?;
    let np = r.count(1)?;
    let mut paths = Vec::with_capacity(np);
    for _ in 0..np {
        paths.push(r.bytes()?.to_vec());
    }
    let nt = r.count(1)?;
    let mut tags = Vec::with_capacity(nt);
    for _ in 0..nt {
        tags.push(r.str()?.to_string());
    }
    let tree = BlobId(r.id()?);
    let parent = r.opt_id()?.map(SnapshotId);
    let original = r.opt_id()?.map(SnapshotId);
    let program_version = r.str()?.to_string();
    let nfields = r.uvarint()?;
    if nfields != 16 {
        return err(format!("summary has {nfields} fields, expected 16"));
    }
    let mut v = [0u64; 16];
    for slot in &mut v {
        *slot = r.uvarint()?;
    }
    r.finish()?;
    Ok(Snapshot {
        time,
        tz_offset_secs: tz as i32,
        hostname,
        username,
        uid,
        gid,
        paths,
        tags,
        tree,
        parent,
        original,
        program_version,
        summary: Summary::from_values(v),
    })
}
