//! `vault find`: which snapshots hold matching paths (or a given blob or tree).

use std::path::Path;

use anyhow::Result;
use clap::Args;
use vault::format::time::Timestamp;
use vault::format::tree::{ContentPart, Node, NodeKind};
use vault::id::BlobId;
use vault::search::{NoMatchMemo, search};
use vault::source::exclude::PathMatcher;

use super::global::GlobalArgs;
use super::output::{self, parse_time};
use super::snapshots::FilterArgs;

/// Options of `vault find`.
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob patterns: with a `/` they match the whole path, without one the name at any
    /// depth (as `--exclude`); an entry matching any of them is listed
    pub patterns: Vec<std::ffi::OsString>,
    /// Match case-insensitively (ASCII)
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// Only entries modified at or after this time
    #[arg(long, short = 'N', value_parser = parse_time)]
    pub newest: Option<(Timestamp, i32)>,
    /// Only entries modified at or before this time
    #[arg(long, short = 'O', value_parser = parse_time)]
    pub oldest: Option<(Timestamp, i32)>,
    /// Only in these snapshots (ids, prefixes or `latest`; repeatable)
    #[arg(long = "snapshot", short = 's')]
    pub snapshots: Vec<String>,
    /// Find the files that contain this data blob (a full id), for damage investigation
    #[arg(long, value_parser = parse_id, conflicts_with_all = ["patterns", "tree"])]
    pub blob: Option<BlobId>,
    /// Find the directories that are this tree (a full id)
    #[arg(long, value_parser = parse_id, conflicts_with_all = ["patterns", "blob"])]
    pub tree: Option<BlobId>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn parse_id(s: &str) -> std::result::Result<BlobId, String> {
    BlobId::from_hex(s).ok_or_else(|| format!("{s:?} is not a 64-character hex id"))
}

/// Runs `vault find`.
pub fn run(g: &GlobalArgs, a: FindArgs) -> Result<i32> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let (blob, tree) = (a.blob, a.tree);
    if a.patterns.is_empty() && blob.is_none() && tree.is_none() {
        return Err(super::usage("give patterns, --blob ID or --tree ID"));
    }
    let raw: Vec<Vec<u8>> = a
        .patterns
        .iter()
        .map(|p| {
            let b = p.as_bytes();
            if a.ignore_case {
                b.to_ascii_lowercase()
            } else {
                b.to_vec()
            }
        })
        .collect();
    let matcher = PathMatcher::new_bytes(&raw)?;
    let path_independent =
        blob.is_some() || tree.is_some() || raw.iter().all(|p| !p.contains(&b'/'));
    let (newest, oldest) = (a.newest.map(|t| t.0), a.oldest.map(|t| t.0));
    let ignore_case = a.ignore_case;
    let matches = move |path: &Path, n: &Node| -> bool {
        if newest.is_some_and(|t| n.mtime < t) || oldest.is_some_and(|t| n.mtime > t) {
            return false;
        }
        if let Some(b) = blob {
            return n.kind == NodeKind::File && n.content.contains(&ContentPart::Chunk(b));
        }
        if let Some(t) = tree {
            return n.kind == NodeKind::Dir && n.subtree == Some(t);
        }
        if ignore_case {
            let lower =
                std::ffi::OsString::from_vec(path.as_os_str().as_bytes().to_ascii_lowercase());
            matcher.matches(Path::new(&lower))
        } else {
            matcher.matches(path)
        }
    };
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let filter = a.filter.filter();
    let mut snaps = super::snapshots::select(&repo, &a.snapshots, &filter, "searched")?;
    snaps.sort_by_key(|(id, s)| (s.time, *id));
    let mut memo = NoMatchMemo::new(200_000, path_independent);
    let mut total = 0u64;
    let mut trees = 0u64;
    for (id, s) in &snaps {
        let mut hits: Vec<serde_json::Value> = Vec::new();
        let mut shown_header = false;
        trees += search(&repo, s.tree, &matches, &mut memo, &mut |p, n| {
            total += 1;
            if g.json {
                hits.push(serde_json::json!({
                    "path": String::from_utf8_lossy(p.as_os_str().as_bytes()),
                    "type": n.kind.name(),
                    "size": n.size,
                    "mtime": output::time(n.mtime, 0),
                    "mode": format!("{:04o}", n.mode),
                }));
            } else {
                if !shown_header {
                    println!(
                        "found in snapshot {} from {}:",
                        id.short(),
                        output::short_time(s.time, s.tz_offset_secs)
                    );
                    shown_header = true;
                }
                println!("{}", vault::quote::quote_path(p));
            }
            Ok(())
        })?;
        if g.json && !hits.is_empty() {
            output::json_line(&serde_json::json!({
                "snapshot": id.to_hex(),
                "short_id": id.short(),
                "time": output::time(s.time, s.tz_offset_secs),
                "hostname": s.hostname,
                "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
                "matches": hits,
            }))?;
        } else if shown_header {
            println!();
        }
    }
    if !g.json && !g.quiet {
        println!(
            "{total} matches in {} snapshots (read {trees} trees)",
            snaps.len()
        );
    }
    Ok(super::exit::OK)
}
