//! `vault ls` and `vault dump`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use vault::format::tree::{Node, NodeKind};
use vault::restorer::{DumpMode, TreeEntry, dump as dump_node, find_node, walk_tree};

use super::global::GlobalArgs;
use super::output;
use super::snapshots::FilterArgs;

/// Options of `vault ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: an id, a unique prefix, or `latest`
    pub snapshot: String,
    /// Directory (or file) inside the snapshot
    #[arg(default_value = "/")]
    pub path: PathBuf,
    /// List everything below the path
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Options of `vault dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot: an id, a unique prefix, or `latest`
    pub snapshot: String,
    /// File inside the snapshot (e.g. db.sql or /etc/hosts); a directory (or `/`) is written
    /// as an archive
    pub path: PathBuf,
    /// Write each part as soon as it is verified instead of verifying the whole file before
    /// the first byte (faster for large files, but a damaged file stops midway)
    #[arg(long)]
    pub stream: bool,
    /// Archive format for a directory (or with a file, to wrap it): tar or zip
    #[arg(long, value_parser = ["tar", "zip"])]
    pub archive: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `ls -l`-style mode: type, then rwx triples with setuid/setgid (`s`/`S`) and sticky
/// (`t`/`T`) shown where `ls` shows them.
pub fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
    };
    let mut s = String::from(t);
    // (shift, special bit, letter when executable, letter when not)
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let b = (n.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        let x = b & 1 != 0;
        s.push(match (n.mode & special != 0, x) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A path for JSON: its text, and when that is not exact (not UTF-8), its bytes in hex.
fn json_bytes(v: &mut serde_json::Value, key: &str, bytes: &[u8]) {
    v[key] = serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned());
    if std::str::from_utf8(bytes).is_err() {
        v[format!("{key}_hex")] = serde_json::Value::String(hex::encode(bytes));
    }
}

fn entry_json(e: &TreeEntry) -> serde_json::Value {
    use std::os::unix::ffi::OsStrExt;
    let n = &e.node;
    let mut v = serde_json::json!({
        "type": n.kind.name(),
        "mode": format!("{:04o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "size": n.size,
        "mtime": output::time(n.mtime, 0),
        "inode": n.inode,
        "nlink": n.nlink,
    });
    json_bytes(&mut v, "path", e.path.as_os_str().as_bytes());
    json_bytes(&mut v, "name", &n.name);
    if n.kind == NodeKind::Symlink {
        json_bytes(&mut v, "link_target", &n.link_target);
    }
    v
}

/// Runs `vault ls`.
pub fn ls(g: &GlobalArgs, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let (_, snap) = repo.resolve_snapshot(&a.snapshot, &a.filter.filter(), None)?;
    let node = find_node(&repo, &snap.tree, &a.path)?;
    let base = Path::new("/").join(a.path.strip_prefix("/").unwrap_or(&a.path));
    let mut out = std::io::stdout().lock();
    let mut print = |e: &TreeEntry| -> vault::Result<()> {
        let r = if g.json {
            serde_json::to_writer(&mut out, &entry_json(e))
                .map_err(std::io::Error::from)
                .and_then(|_| writeln!(out))
        } else {
            let n = &e.node;
            let mut line = format!(
                "{} {:>8} {:>8} {:>12} {} {}",
                mode_string(n),
                if n.user.is_empty() {
                    n.uid.to_string()
                } else {
                    n.user.clone()
                },
                if n.group.is_empty() {
                    n.gid.to_string()
                } else {
                    n.group.clone()
                },
                n.size,
                output::short_time(n.mtime, 0),
                vault::quote::quote_path(&e.path)
            );
            if n.kind == NodeKind::Symlink {
                line.push_str(&format!(
                    " -> {}",
                    vault::quote::quote_bytes(&n.link_target)
                ));
            }
            writeln!(out, "{line}")
        };
        r.map_err(|e| vault::Error::io("(output)", e))
    };
    match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(tree)) => walk_tree(&repo, &tree, &base, a.recursive, &mut print)?,
        _ => print(&TreeEntry { path: base, node })?,
    }
    Ok(super::exit::OK)
}

/// Runs `vault dump`.
///
/// The file's bytes go to stdout; `--json` changes only how a failure is reported (nothing
/// has been written to stdout when it fails, unless `--stream` was given).
pub fn dump(g: &GlobalArgs, a: DumpArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let (id, snap) = repo.resolve_snapshot(&a.snapshot, &a.filter.filter(), None)?;
    let node = find_node(&repo, &snap.tree, &a.path)?;
    g.facts.update(|f| {
        f.snapshots = vec![id.0];
        f.bytes = Some(node.size);
        f.summary = Some(format!(
            "dumped {} of snapshot {}",
            String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(a.path.as_os_str())),
            id.short()
        ));
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    if node.kind != vault::format::tree::NodeKind::File || a.archive.is_some() {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(super::usage(
                "refusing to write an archive to a terminal: redirect it (`> dir.tar`) or pipe it (`| tar x`)",
            ));
        }
        let format = match a.archive.as_deref() {
            Some("zip") => vault::restorer::ArchiveFormat::Zip,
            _ => vault::restorer::ArchiveFormat::Tar,
        };
        let inside = if a.path.is_absolute() {
            a.path.clone()
        } else {
            PathBuf::from("/").join(&a.path)
        };
        let report = vault::restorer::write_archive(&repo, &node, &inside, format, &mut out)?;
        std::io::Write::flush(&mut out).map_err(|e| vault::Error::io("(output)", e))?;
        g.facts.update(|f| f.bytes = Some(report.bytes));
        if !report.errors.is_empty() {
            eprintln!(
                "error: {} files with damaged data were left out of the archive:",
                report.errors.len()
            );
            for e in &report.errors {
                eprintln!("  {}: {}", e.path, e.error);
            }
            return Ok(super::exit::FATAL);
        }
        return Ok(super::exit::OK);
    }
    let mode = if a.stream {
        DumpMode::Stream
    } else {
        DumpMode::Verified
    };
    dump_node(&repo, &node, &mut out, mode)?;
    Ok(super::exit::OK)
}
