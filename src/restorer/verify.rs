//! Verifying a restore: re-reads what was written and compares it with the snapshot, without
//! reading the repository's data again. Every file is cut at its recorded blob boundaries and
//! each piece hashed with the repository's keyed blob hash, which must give the recorded blob
//! id; holes must read as zeros; kinds, sizes, link targets and permission bits must match.
//! Walks with directory handles (any depth, any path length) and the same include, exclude
//! and sample rules as the restore it checks.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{RestoreError, RestoreOptions};
use crate::format::tree::{ContentPart, Node, NodeKind};
use crate::id::{BlobId, BlobType};
use crate::repo::Repository;
use crate::source::dir::DirHandle;
use crate::{Error, Result};

/// What a verification found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Regular files compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories, links and special files compared.
    pub others: u64,
    /// Entries that differ from the snapshot (or are missing).
    pub mismatches: Vec<RestoreError>,
}

impl VerifyReport {
    /// Whether everything matched.
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

struct Frame {
    dir: Option<DirHandle>,
    entries: std::vec::IntoIter<Node>,
    included: bool,
}

/// Compares what a restore with `opts` wrote below `opts.target` with the snapshot tree
/// `root`. Paths in `skip` (as restore reports them) are not compared: the restore already
/// said they are not there.
pub fn verify_restore(
    repo: &Repository,
    root: &BlobId,
    opts: &RestoreOptions,
    skip: &HashSet<String>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let top = DirHandle::open(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let mut cursor = PathBuf::from("/");
    let mut stack = vec![Frame {
        dir: Some(top),
        entries: repo.load_tree(root)?.nodes.into_iter(),
        included: opts.include.is_empty(),
    }];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.entries.next() else {
            stack.pop();
            cursor.pop();
            continue;
        };
        let parent_included = frame.included;
        let name = OsStr::from_bytes(&node.name).to_owned();
        cursor.push(&name);
        let shown = crate::quote::quote_path(&cursor);
        if opts.exclude.matches(&cursor) || skip.contains(&shown) {
            cursor.pop();
            continue;
        }
        let included = opts.includes(parent_included, &cursor);
        let parent = stack.last().and_then(|f| f.dir.as_ref());
        if node.kind == NodeKind::Dir {
            // Directories leading to included entries are restored too; compare what exists.
            let handle = parent.and_then(|p| p.open_dir(&name).ok());
            if included && handle.is_none() {
                report
                    .mismatches
                    .push(mismatch(&shown, "directory missing"));
            } else if included {
                report.others += 1;
            }
            let entries = match node.subtree {
                Some(t) => repo.load_tree(&t)?.nodes,
                None => Vec::new(),
            };
            stack.push(Frame {
                dir: handle,
                entries: entries.into_iter(),
                included,
            });
            continue;
        }
        let selected = included && opts.samples(&node, &cursor);
        if selected {
            match parent {
                None => report
                    .mismatches
                    .push(mismatch(&shown, "missing (its directory is missing)")),
                Some(dir) => {
                    if let Err(why) = compare(repo, dir, &name, &node, &mut buf, &mut report)? {
                        report.mismatches.push(mismatch(&shown, &why));
                    }
                }
            }
        }
        cursor.pop();
    }
    Ok(report)
}

fn mismatch(path: &str, why: &str) -> RestoreError {
    RestoreError {
        path: path.to_string(),
        error: why.to_string(),
    }
}

/// Compares one non-directory entry. `Ok(Err(why))` is a mismatch; `Err` stops the run
/// (the repository's index could not be read).
fn compare(
    repo: &Repository,
    dir: &DirHandle,
    name: &OsString,
    node: &Node,
    buf: &mut [u8],
    report: &mut VerifyReport,
) -> Result<std::result::Result<(), String>> {
    let st = match dir.stat(name) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("missing ({e})"))),
    };
    if crate::source::meta::kind_of(st.file_type) != Some(node.kind) {
        return Ok(Err(format!(
            "is a {:?}, the snapshot has a {}",
            st.file_type,
            node.kind.name()
        )));
    }
    if node.kind == NodeKind::Symlink {
        report.others += 1;
        return Ok(match dir.read_link(name) {
            Ok(t) if t == node.link_target => Ok(()),
            Ok(_) => Err("link target differs".into()),
            Err(e) => Err(format!("link cannot be read ({e})")),
        });
    }
    if st.mode & 0o777 != node.mode & 0o777 {
        return Ok(Err(format!(
            "permissions {:o}, the snapshot has {:o}",
            st.mode & 0o777,
            node.mode & 0o777
        )));
    }
    if node.kind != NodeKind::File {
        report.others += 1;
        return Ok(Ok(()));
    }
    if st.size != node.size {
        return Ok(Err(format!(
            "{} bytes, the snapshot has {}",
            st.size, node.size
        )));
    }
    let mut file = match dir.open_file(name) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("cannot be read ({e})"))),
    };
    if let Some(why) = content_mismatch(repo, &mut file, node, buf)? {
        return Ok(Err(why));
    }
    report.files += 1;
    report.bytes += node.size;
    Ok(Ok(()))
}

/// Whether the regular file `name` in `dir` holds exactly `node`'s content.
pub(super) fn same_content(
    repo: &Repository,
    dir: &DirHandle,
    name: &OsStr,
    node: &Node,
) -> Result<bool> {
    let Ok(mut file) = dir.open_file(name) else {
        return Ok(false);
    };
    let mut buf = vec![0u8; 1 << 20];
    Ok(content_mismatch(repo, &mut file, node, &mut buf)?.is_none())
}

/// Reads `file` against `node`'s content parts: `Some(why)` at the first difference.
fn content_mismatch(
    repo: &Repository,
    file: &mut std::fs::File,
    node: &Node,
    buf: &mut [u8],
) -> Result<Option<String>> {
    let index = repo.index()?;
    let mut offset = 0u64;
    for part in &node.content {
        match part {
            ContentPart::Hole(n) => {
                let mut left = *n;
                while left > 0 {
                    let take = left.min(buf.len() as u64) as usize;
                    if let Err(e) = file.read_exact(&mut buf[..take]) {
                        return Ok(Some(format!("ends early at {offset} ({e})")));
                    }
                    if buf[..take].iter().any(|&b| b != 0) {
                        return Ok(Some(format!("a hole at {offset} is not zeros")));
                    }
                    offset += take as u64;
                    left -= take as u64;
                }
            }
            ContentPart::Chunk(id) => {
                let Some(loc) = index.get(BlobType::Data, id)? else {
                    return Ok(Some(format!("blob {} is not in the index", id.short())));
                };
                let mut chunk = vec![0u8; loc.raw_length as usize];
                if let Err(e) = file.read_exact(&mut chunk) {
                    return Ok(Some(format!("ends early at {offset} ({e})")));
                }
                if repo.hasher().blob_id(&chunk) != *id {
                    return Ok(Some(format!(
                        "content differs from the snapshot in the {} bytes at {offset}",
                        chunk.len()
                    )));
                }
                offset += chunk.len() as u64;
            }
        }
    }
    match file.read(&mut buf[..1]) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some("longer than in the snapshot".into())),
        Err(e) => Ok(Some(format!("cannot be read ({e})"))),
    }
}
