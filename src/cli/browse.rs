//! `vault ls` and `vault dump`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use vault::format::tree::{Node, NodeKind};
use vault::repo::lock::LockKind;
use vault::restorer::{TreeEntry, dump as dump_node, find_node, walk_tree};

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
    /// File inside the snapshot (e.g. db.sql or /etc/hosts)
    pub path: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn mode_string(n: &Node) -> String {
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
    for shift in [6, 3, 0] {
        let b = (n.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry_json(e: &TreeEntry) -> serde_json::Value {
    let n = &e.node;
    let mut v = serde_json::json!({
        "path": e.path.to_string_lossy(),
        "name": String::from_utf8_lossy(&n.name),
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
    if n.kind == NodeKind::Symlink {
        v["link_target"] =
            serde_json::Value::String(String::from_utf8_lossy(&n.link_target).into());
    }
    v
}

/// Runs `vault ls`.
pub fn ls(g: &GlobalArgs, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.lock(&repo, LockKind::Shared)?;
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
                e.path.display()
            );
            if n.kind == NodeKind::Symlink {
                line.push_str(&format!(" -> {}", String::from_utf8_lossy(&n.link_target)));
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
pub fn dump(g: &GlobalArgs, a: DumpArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.lock(&repo, LockKind::Shared)?;
    let (_, snap) = repo.resolve_snapshot(&a.snapshot, &a.filter.filter(), None)?;
    let node = find_node(&repo, &snap.tree, &a.path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    dump_node(&repo, &node, &mut out)?;
    Ok(super::exit::OK)
}
