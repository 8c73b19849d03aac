//! `vault dump` of a directory: a tar (or zip) stream of the subtree, with metadata, that
//! `tar x` turns back into the same tree.
//!
//! Every file is verified before its entry is written: a file whose data is damaged is left
//! out of the archive (and reported), never written with wrong bytes. Files up to
//! [`super::find::VERIFIED_IN_MEMORY`] are held in memory between verifying and writing,
//! larger ones are read twice. Entries are paths inside the snapshot without the leading `/`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType};
use crate::repo::Repository;
use crate::{Error, Result};

use super::RestoreError;
use super::find::{TreeEntry, walk_tree};

/// Archive formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// POSIX/GNU tar (long names, devices, hard links, owners, modes, times).
    Tar,
    /// Zip (streamed; zip64 for large files; modes and symlinks, no owners).
    Zip,
}

/// What went into an archive.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ArchiveReport {
    /// Entries written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Files left out because their data is damaged or missing.
    pub errors: Vec<RestoreError>,
}

/// Reads a file's content from its blobs, in order (holes as zeros); every blob is
/// authenticated as it is loaded.
struct PartsReader<'a> {
    repo: &'a Repository,
    parts: std::slice::Iter<'a, ContentPart>,
    buf: Vec<u8>,
    pos: usize,
    hole: u64,
}

impl<'a> PartsReader<'a> {
    fn new(repo: &'a Repository, parts: &'a [ContentPart]) -> Self {
        Self {
            repo,
            parts: parts.iter(),
            buf: Vec::new(),
            pos: 0,
            hole: 0,
        }
    }
}

impl Read for PartsReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.hole > 0 {
                let n = (out.len() as u64).min(self.hole) as usize;
                out[..n].fill(0);
                self.hole -= n as u64;
                return Ok(n);
            }
            match self.parts.next() {
                None => return Ok(0),
                Some(ContentPart::Hole(n)) => self.hole = *n,
                Some(ContentPart::Chunk(id)) => {
                    self.buf = load(self.repo, id)?;
                    self.pos = 0;
                }
            }
        }
    }
}

fn load(repo: &Repository, id: &BlobId) -> std::io::Result<Vec<u8>> {
    repo.load_blob(BlobType::Data, id)
        .map_err(std::io::Error::other)
}

/// A file's verified content: in memory when small, else `None` (verified by a full read;
/// read again to write).
fn verify(repo: &Repository, node: &Node) -> Result<Option<Vec<u8>>> {
    let mut r = PartsReader::new(repo, &node.content);
    let res = if node.size <= super::find::VERIFIED_IN_MEMORY {
        let mut v = Vec::with_capacity(node.size as usize);
        r.read_to_end(&mut v).map(|_| Some(v))
    } else {
        std::io::copy(&mut r, &mut std::io::sink()).map(|_| None)
    };
    res.map_err(|e| match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(v)) => *v,
        Some(Err(other)) => Error::Aborted(other.to_string()),
        None => Error::Aborted("reading a file's blobs failed".into()),
    })
}

fn rel(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

fn io_out(e: std::io::Error) -> Error {
    Error::io("(output)", e)
}

/// Writes the entry `top` (a directory with everything below it, or one entry) at
/// `top_path` inside the snapshot as an archive to `out`.
pub fn write_archive(
    repo: &Repository,
    top: &Node,
    top_path: &Path,
    format: ArchiveFormat,
    out: &mut dyn Write,
) -> Result<ArchiveReport> {
    let mut report = ArchiveReport::default();
    let sink = |e: &TreeEntry, report: &mut ArchiveReport, w: &mut dyn EntryWriter| -> Result<()> {
        if e.node.kind == NodeKind::File {
            match verify(repo, &e.node) {
                Ok(held) => {
                    w.file(repo, e, held)?;
                    report.bytes += e.node.size;
                }
                Err(err) if err.is_damage() => {
                    report.errors.push(RestoreError {
                        path: crate::quote::quote_path(&e.path),
                        error: err.to_string(),
                    });
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        } else {
            w.other(e)?;
        }
        report.entries += 1;
        Ok(())
    };
    let mut tar_w;
    let mut zip_w;
    let w: &mut dyn EntryWriter = match format {
        ArchiveFormat::Tar => {
            tar_w = TarWriter {
                b: tar::Builder::new(out),
                links: HashMap::new(),
            };
            &mut tar_w
        }
        ArchiveFormat::Zip => {
            zip_w = ZipOut {
                z: Some(zip::ZipWriter::new_stream(out)),
            };
            &mut zip_w
        }
    };
    let root = TreeEntry {
        path: top_path.to_path_buf(),
        node: top.clone(),
    };
    if top_path != Path::new("/") {
        sink(&root, &mut report, w)?;
    }
    if top.kind == NodeKind::Dir
        && let Some(tree) = top.subtree
    {
        walk_tree(repo, &tree, top_path, true, &mut |e| {
            // Directories are written as they come (before their entries).
            sink(e, &mut report, w)
        })?;
    }
    w.finish()?;
    Ok(report)
}

trait EntryWriter {
    fn file(&mut self, repo: &Repository, e: &TreeEntry, held: Option<Vec<u8>>) -> Result<()>;
    fn other(&mut self, e: &TreeEntry) -> Result<()>;
    fn finish(&mut self) -> Result<()>;
}

struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    /// (device, inode) → first path of a hard-linked file.
    links: HashMap<(u64, u64), PathBuf>,
}

fn tar_header(n: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(n.mode & 0o7777);
    h.set_uid(u64::from(n.uid));
    h.set_gid(u64::from(n.gid));
    let _ = h.set_username(&n.user);
    let _ = h.set_groupname(&n.group);
    h.set_mtime(n.mtime.secs.max(0) as u64);
    h.set_size(size);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        let major = ((n.rdev >> 32) & 0xffff_f000) | ((n.rdev >> 8) & 0x0000_0fff);
        let minor = ((n.rdev >> 12) & 0xffff_ff00) | (n.rdev & 0x0000_00ff);
        let _ = h.set_device_major(major as u32);
        let _ = h.set_device_minor(minor as u32);
    }
    h
}

impl<W: Write> EntryWriter for TarWriter<W> {
    fn file(&mut self, repo: &Repository, e: &TreeEntry, held: Option<Vec<u8>>) -> Result<()> {
        let n = &e.node;
        let path = rel(&e.path);
        if n.nlink > 1 {
            if let Some(first) = self.links.get(&(n.device, n.inode)) {
                let mut h = tar_header(n, tar::EntryType::Link, 0);
                return self.b.append_link(&mut h, &path, first).map_err(io_out);
            }
            self.links.insert((n.device, n.inode), path.clone());
        }
        let mut h = tar_header(n, tar::EntryType::Regular, n.size);
        match held {
            Some(bytes) => self.b.append_data(&mut h, &path, &bytes[..]),
            None => self
                .b
                .append_data(&mut h, &path, PartsReader::new(repo, &n.content)),
        }
        .map_err(io_out)
    }

    fn other(&mut self, e: &TreeEntry) -> Result<()> {
        let n = &e.node;
        let path = rel(&e.path);
        let kind = match n.kind {
            NodeKind::Dir => tar::EntryType::Directory,
            NodeKind::Symlink => tar::EntryType::Symlink,
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDevice => tar::EntryType::Char,
            NodeKind::BlockDevice => tar::EntryType::Block,
            // Sockets cannot be archived (tar has no type for them); restore does not create
            // them either.
            NodeKind::Socket | NodeKind::File => return Ok(()),
        };
        let mut h = tar_header(n, kind, 0);
        if n.kind == NodeKind::Symlink {
            let target = std::ffi::OsStr::from_bytes(&n.link_target);
            return self.b.append_link(&mut h, &path, target).map_err(io_out);
        }
        self.b
            .append_data(&mut h, &path, std::io::empty())
            .map_err(io_out)
    }

    fn finish(&mut self) -> Result<()> {
        self.b.finish().map_err(io_out)
    }
}

struct ZipOut<W: Write> {
    z: Option<zip::ZipWriter<zip::write::StreamWriter<W>>>,
}

fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => io_out(io),
        other => Error::Aborted(format!("zip: {other}")),
    }
}

fn zip_options(n: &Node) -> zip::write::SimpleFileOptions {
    let mut o = zip::write::SimpleFileOptions::default()
        .unix_permissions(n.mode & 0o7777)
        .large_file(n.size >= u64::from(u32::MAX));
    if let Ok(ts) = jiff::Timestamp::new(n.mtime.secs, 0) {
        let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
        if let Ok(t) = zip::DateTime::from_date_and_time(
            dt.year().clamp(1980, 2107) as u16,
            dt.month() as u8,
            dt.day() as u8,
            dt.hour() as u8,
            dt.minute() as u8,
            dt.second() as u8,
        ) {
            o = o.last_modified_time(t);
        }
    }
    o
}

fn zip_name(path: &Path) -> String {
    String::from_utf8_lossy(rel(path).as_os_str().as_bytes()).into_owned()
}

impl<W: Write> EntryWriter for ZipOut<W> {
    fn file(&mut self, repo: &Repository, e: &TreeEntry, held: Option<Vec<u8>>) -> Result<()> {
        let z = self.z.as_mut().expect("open until finish");
        z.start_file(zip_name(&e.path), zip_options(&e.node))
            .map_err(zip_err)?;
        match held {
            Some(bytes) => z.write_all(&bytes).map_err(io_out),
            None => std::io::copy(&mut PartsReader::new(repo, &e.node.content), z)
                .map(|_| ())
                .map_err(io_out),
        }
    }

    fn other(&mut self, e: &TreeEntry) -> Result<()> {
        let z = self.z.as_mut().expect("open until finish");
        let o = zip_options(&e.node);
        match e.node.kind {
            NodeKind::Dir => z.add_directory(zip_name(&e.path), o).map_err(zip_err),
            NodeKind::Symlink => z
                .add_symlink(
                    zip_name(&e.path),
                    String::from_utf8_lossy(&e.node.link_target),
                    o,
                )
                .map_err(zip_err),
            // Zip has no special files.
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(z) = self.z.take() {
            z.finish().map_err(zip_err)?;
        }
        Ok(())
    }
}
