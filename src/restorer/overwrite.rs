//! What a restore does with an entry that already exists at the target (`--overwrite`), and
//! the comparison that lets an interrupted restore resume without rewriting finished files.

use std::ffi::OsStr;

use crate::Result;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::source::dir::DirHandle;

/// The policy for existing entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace whatever is there.
    Always,
    /// Replace it unless it already is what the snapshot holds: same kind, size and content
    /// (files are hashed at their recorded chunk boundaries; a finished file of an interrupted
    /// restore is therefore kept, a half-written one never carries the real name).
    #[default]
    IfChanged,
    /// Replace it only when the snapshot's entry is newer (by modification time).
    IfNewer,
    /// Never replace an existing entry.
    Never,
}

impl Overwrite {
    /// Parses `always`, `if-changed`, `if-newer`, `never`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!(
                "invalid --overwrite {s:?}: use always, if-changed, if-newer or never"
            )),
        }
    }
}

/// What to do with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is there: create it.
    Create,
    /// Something is there and is replaced.
    Replace,
    /// Something is there and stays (its metadata is still applied when it is the same
    /// entry).
    Keep,
}

/// Decides for the non-directory `node` named `name` in `dir`.
pub fn decide(
    repo: &Repository,
    dir: &DirHandle,
    name: &OsStr,
    node: &Node,
    policy: Overwrite,
) -> Result<Decision> {
    let st = match dir.stat(name) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Decision::Create),
        // Unreadable: replacing it will say what is wrong.
        Err(_) => return Ok(Decision::Replace),
    };
    let same_kind = crate::source::meta::kind_of(st.file_type) == Some(node.kind);
    Ok(match policy {
        Overwrite::Always => Decision::Replace,
        Overwrite::Never => Decision::Keep,
        Overwrite::IfNewer => {
            if node.mtime > st.mtime {
                Decision::Replace
            } else {
                Decision::Keep
            }
        }
        Overwrite::IfChanged => {
            let same = same_kind
                && match node.kind {
                    NodeKind::File => {
                        st.size == node.size && super::verify::same_content(repo, dir, name, node)?
                    }
                    NodeKind::Symlink => dir.read_link(name).is_ok_and(|t| t == node.link_target),
                    NodeKind::CharDevice | NodeKind::BlockDevice => st.rdev == node.rdev,
                    _ => true,
                };
            if same {
                Decision::Keep
            } else {
                Decision::Replace
            }
        }
    })
}

/// The directories `--delete` may clean: the snapshot's own paths and what is below them,
/// never the directories above them (`/`, `/srv` for a snapshot of `/srv/www`), which hold
/// only the path down to what was backed up — the rest of them was never in the snapshot.
pub fn delete_roots(paths: &[Vec<u8>]) -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    paths
        .iter()
        .map(|p| std::path::Path::new("/").join(std::ffi::OsStr::from_bytes(p)))
        .collect()
}

/// Whether `--delete` may clean the directory at snapshot path `at`.
pub fn delete_allowed(at: &std::path::Path, roots: &[std::path::PathBuf]) -> bool {
    roots.iter().any(|r| at.starts_with(r))
}
