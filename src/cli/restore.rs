//! `vault restore`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vault::repo::lock::LockKind;
use vault::restorer::{RestoreOptions, restore};
use vault::source::apply::ApplyOptions;
use vault::source::exclude::PathMatcher;

use super::global::GlobalArgs;
use super::output::{self, bytes, parse_time};
use super::snapshots::FilterArgs;

/// Options of `vault restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot to restore: an id, a unique prefix, or `latest`
    #[arg(long)]
    pub snapshot: String,
    /// Directory to restore into
    #[arg(long)]
    pub target: PathBuf,
    /// With `latest`: the newest snapshot at or before this time (point-in-time restore)
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<(vault::format::time::Timestamp, i32)>,
    /// Restore only paths matching this glob, with everything below them (repeatable)
    #[arg(long = "include")]
    pub includes: Vec<String>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(short, long = "exclude")]
    pub excludes: Vec<String>,
    /// Do not restore ownership even when running as root
    #[arg(long)]
    pub no_owner: bool,
    /// Worker threads (default: number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `vault restore`.
pub fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.lock(&repo, LockKind::Shared)?;
    let (id, snap) =
        repo.resolve_snapshot(&a.snapshot, &a.filter.filter(), a.as_of.map(|t| t.0))?;
    let defaults = RestoreOptions::default();
    let opts = RestoreOptions {
        target: a.target.clone(),
        include: PathMatcher::new(&a.includes)?,
        exclude: PathMatcher::new(&a.excludes)?,
        threads: a.threads.unwrap_or(defaults.threads),
        apply: ApplyOptions {
            owner: defaults.apply.owner && !a.no_owner,
            xattrs: true,
        },
        batch_bytes: defaults.batch_bytes,
    };
    let progress = g.progress();
    let sum = restore(&repo, &id, &opts, &progress)
        .with_context(|| format!("restoring snapshot {}", id.short()))?;
    if g.json {
        let mut v = serde_json::to_value(&sum)?;
        v["snapshot"] = serde_json::Value::String(id.to_hex());
        v["time"] = serde_json::Value::String(output::time(snap.time, snap.tz_offset_secs));
        output::json(&v)?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} ({}) to {}: {} files, {} dirs, {} other, {} hard links, {}",
            id.short(),
            output::short_time(snap.time, snap.tz_offset_secs),
            a.target.display(),
            sum.files,
            sum.dirs,
            sum.others,
            sum.hardlinks,
            bytes(sum.bytes_written)
        );
    }
    if !sum.errors.is_empty() {
        eprintln!(
            "error: {} paths were not restored completely:",
            sum.errors.len()
        );
        for e in &sum.errors {
            eprintln!("  {}: {}", e.path, e.error);
        }
        return Ok(super::exit::FATAL);
    }
    Ok(super::exit::OK)
}
