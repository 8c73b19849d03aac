//! `vault diff`: what changed between two snapshots, or between a snapshot and a local
//! directory.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use vault::diff::{Difference, diff_local, diff_trees};
use vault::format::tree::NodeKind;
use vault::restorer::find_node;

use super::global::GlobalArgs;
use super::output;

/// Options of `vault diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The first snapshot (id, prefix or `latest`)
    pub first: String,
    /// The second snapshot, or a local directory (anything containing `/`, e.g. `/etc` or
    /// `./data`), compared by size and modification time
    pub second: std::ffi::OsString,
    /// Only below this path inside the snapshots (default: everything; with a local
    /// directory, the directory's own absolute path)
    pub path: Option<PathBuf>,
    /// Also list entries whose metadata only changed (`U`)
    #[arg(long)]
    pub metadata: bool,
}

fn subtree(
    repo: &vault::repo::Repository,
    root: &vault::id::BlobId,
    path: &Path,
) -> Result<Option<vault::id::BlobId>> {
    if path
        .components()
        .all(|c| matches!(c, std::path::Component::RootDir))
    {
        return Ok(Some(*root));
    }
    match find_node(repo, root, path) {
        Ok(n) if n.kind == NodeKind::Dir => Ok(n.subtree),
        Ok(_) => Err(anyhow::anyhow!(
            "{} is not a directory in the snapshot",
            vault::quote::quote_path(path)
        )),
        Err(e) if e.kind() == vault::ErrorKind::NoMatch => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs `vault diff`.
pub fn run(g: &GlobalArgs, a: DiffArgs) -> Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let local = a.second.as_bytes().contains(&b'/');
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let (id_a, snap_a) = repo.resolve_snapshot(&a.first, &Default::default(), None)?;
    let mut warnings = 0u64;
    let json = g.json;
    let show_metadata = a.metadata;
    let mut print = |d: &Difference| -> vault::Result<()> {
        if d.change == vault::diff::Change::Metadata && !show_metadata {
            return Ok(());
        }
        if json {
            let v = serde_json::json!({
                "message_type": "change",
                "path": String::from_utf8_lossy(d.path.as_os_str().as_bytes()),
                "modifier": d.change,
                "before": d.before.map(|k| k.name()),
                "after": d.after.map(|k| k.name()),
                "size_before": d.size_before,
                "size_after": d.size_after,
            });
            output::json_line(&v).map_err(|e| vault::Error::io("stdout", e))?;
        } else {
            let mut p = vault::quote::quote_path(&d.path);
            if d.after == Some(NodeKind::Dir)
                || (d.after.is_none() && d.before == Some(NodeKind::Dir))
            {
                p.push('/');
            }
            println!("{}    {p}", d.change.marker());
        }
        Ok(())
    };
    let (stats, what) = if local {
        let dir = PathBuf::from(&a.second);
        let abs = std::path::absolute(&dir)?;
        let inside = a.path.clone().unwrap_or_else(|| abs.clone());
        let tree_a = subtree(&repo, &snap_a.tree, &inside)?;
        let mut warn = |p: &Path, e: &std::io::Error| {
            warnings += 1;
            eprintln!("warning: {}: {e}", vault::quote::quote_path(p));
        };
        let stats = diff_local(&repo, tree_a, &abs, &inside, &mut print, &mut warn)?;
        (
            stats,
            format!("snapshot {} and {}", id_a.short(), abs.display()),
        )
    } else {
        let spec = a.second.to_string_lossy();
        let (id_b, snap_b) = repo.resolve_snapshot(&spec, &Default::default(), None)?;
        let inside = a.path.clone().unwrap_or_else(|| PathBuf::from("/"));
        let ta = subtree(&repo, &snap_a.tree, &inside)?;
        let tb = subtree(&repo, &snap_b.tree, &inside)?;
        let stats = diff_trees(&repo, ta, tb, &inside, &mut print)?;
        (
            stats,
            format!("snapshots {} and {}", id_a.short(), id_b.short()),
        )
    };
    if g.json {
        let mut v = serde_json::to_value(&stats)?;
        v["message_type"] = serde_json::Value::String("statistics".into());
        output::json_line(&v)?;
    } else if !g.quiet {
        println!();
        println!(
            "{what}: {} added, {} removed, {} modified, {} metadata only; +{} -{} (read {} trees)",
            stats.added,
            stats.removed,
            stats.modified,
            stats.metadata_only,
            output::bytes(stats.bytes_added),
            output::bytes(stats.bytes_removed),
            stats.trees_read
        );
    }
    Ok(if warnings > 0 {
        super::exit::FATAL
    } else {
        super::exit::OK
    })
}
