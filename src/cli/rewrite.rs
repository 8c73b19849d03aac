//! `vault rewrite`: snapshots without excluded paths (the GDPR erasure path).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vault::repo::lock::LockKind;
use vault::rewriter::{RewriteOptions, rewrite_snapshots};
use vault::source::exclude::PathMatcher;

use super::global::GlobalArgs;
use super::output;
use super::snapshots::FilterArgs;

/// Options of `vault rewrite`.
#[derive(Args, Debug)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (ids, prefixes or `latest`); without any, every snapshot matching
    /// the filters
    pub snapshots: Vec<String>,
    /// Leave out paths matching this glob, with everything below them (repeatable)
    #[arg(short, long = "exclude")]
    pub excludes: Vec<std::ffi::OsString>,
    /// Read exclude globs from this file, one per line (repeatable)
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// Remove the originals once their rewrites are written (never one under a legal hold)
    #[arg(long)]
    pub forget: bool,
    /// Only show what would be left out
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `vault rewrite`.
pub fn run(g: &GlobalArgs, a: RewriteArgs) -> Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut patterns: Vec<Vec<u8>> = a.excludes.iter().map(|p| p.as_bytes().to_vec()).collect();
    for f in &a.exclude_files {
        patterns.extend(PathMatcher::read_pattern_file(f)?);
    }
    if patterns.is_empty() {
        return Err(super::usage("give --exclude or --exclude-file"));
    }
    let exclude = PathMatcher::new_bytes(&patterns)?;
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Exclusive)?;
    let filter = a.filter.filter();
    let selected = super::snapshots::select(&repo, &a.snapshots, &filter, "rewritten")?;
    let opts = RewriteOptions {
        exclude,
        forget: a.forget,
        dry_run: a.dry_run,
    };
    let report = rewrite_snapshots(&repo, &lock, selected, &opts)?;
    if a.dry_run {
        g.facts.update(|f| f.dry_run = true);
    }
    g.facts.update(|f| {
        f.snapshots = report
            .rewritten
            .iter()
            .filter_map(|r| vault::id::SnapshotId::from_hex(&r.snapshot))
            .map(|id| id.0)
            .collect();
        f.summary = Some(format!(
            "rewrote {} of {} snapshots{}",
            report.rewritten.len(),
            report.snapshots,
            if a.forget {
                ", originals forgotten"
            } else {
                ""
            }
        ));
    });
    let kept = report
        .rewritten
        .iter()
        .filter(|r| r.kept_because.is_some())
        .count();
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["dry_run"] = serde_json::Value::Bool(a.dry_run);
        output::json(&v)?;
    } else if !g.quiet {
        for r in &report.rewritten {
            let verb = if a.dry_run {
                "would leave out"
            } else {
                "left out"
            };
            match &r.rewritten {
                Some(n) => println!(
                    "snapshot {}: {verb} {} entries; rewritten as {}{}",
                    &r.snapshot[..8],
                    r.excluded,
                    &n[..8],
                    if r.forgotten {
                        ", original removed"
                    } else {
                        ""
                    }
                ),
                None => println!(
                    "snapshot {}: {verb} {} entries",
                    &r.snapshot[..8],
                    r.excluded
                ),
            }
            if let Some(why) = &r.kept_because {
                println!("  the original is kept: {why} (release it, then forget it)");
            }
        }
        println!(
            "{} of {} snapshots {}",
            report.rewritten.len(),
            report.snapshots,
            if a.dry_run { "would change" } else { "changed" }
        );
        if a.forget && !a.dry_run && !report.rewritten.is_empty() {
            println!(
                "run `vault prune --max-unused 0` to delete the left-out data from the repository"
            );
        }
    }
    Ok(if kept > 0 && !a.dry_run {
        super::exit::FATAL
    } else {
        super::exit::OK
    })
}
