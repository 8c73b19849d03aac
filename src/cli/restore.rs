//! `vault restore`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
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
    /// Restore only paths matching this glob, with everything below them (repeatable); a
    /// pattern that matches nothing is an error (exit 1)
    #[arg(long = "include")]
    pub includes: Vec<std::ffi::OsString>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(short, long = "exclude")]
    pub excludes: Vec<std::ffi::OsString>,
    /// Keep what could be restored of a file whose data is damaged as NAME.vault-damaged
    /// (by default it is left out; either way it is reported and the exit code is 1)
    #[arg(long)]
    pub keep_damaged: bool,
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
    use std::os::unix::ffi::OsStrExt;
    let raw = |v: &[std::ffi::OsString]| -> Vec<Vec<u8>> {
        v.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    let include = PathMatcher::new_bytes(&raw(&a.includes))?;
    let exclude = PathMatcher::new_bytes(&raw(&a.excludes))?;
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let (id, snap) =
        repo.resolve_snapshot(&a.snapshot, &a.filter.filter(), a.as_of.map(|t| t.0))?;
    let defaults = RestoreOptions::default();
    let opts = RestoreOptions {
        target: a.target.clone(),
        include,
        exclude,
        keep_damaged: a.keep_damaged,
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
    for p in &sum.unmatched_includes {
        eprintln!(
            "warning: --include {p} matched nothing in snapshot {}",
            id.short()
        );
    }
    if !sum.errors.is_empty() {
        eprintln!(
            "error: {} paths were not restored completely{}:",
            sum.errors.len(),
            if sum.damaged.is_empty() {
                String::new()
            } else {
                format!(" ({} files with damaged data)", sum.damaged.len())
            }
        );
        for e in &sum.errors {
            eprintln!("  {}: {}", e.path, e.error);
        }
    }
    Ok(
        if sum.errors.is_empty() && sum.unmatched_includes.is_empty() {
            super::exit::OK
        } else {
            super::exit::FATAL
        },
    )
}
