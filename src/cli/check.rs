//! `vault check`.

use anyhow::Result;
use clap::Args;
use vault::checker::{CheckOptions, Subset, check};

use super::global::GlobalArgs;
use super::output;

/// Options of `vault check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob
    #[arg(long)]
    pub verify_data: bool,
    /// Verify only part of the data: `n/m` (part n of m), `10%` (random sample) or `2GiB`
    #[arg(long, value_name = "SUBSET")]
    pub verify_data_subset: Option<String>,
    /// Worker threads (default: number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `vault check`; exits 0 only when no error was found.
pub fn run(g: &GlobalArgs, a: CheckArgs) -> Result<i32> {
    let subset = match (&a.verify_data_subset, a.verify_data) {
        (Some(s), _) => Some(Subset::parse(s)?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let opts = CheckOptions {
        verify_data: subset,
        threads: a.threads.unwrap_or(CheckOptions::default().threads),
    };
    let progress = g.progress();
    let report = check(&repo, &opts, &progress)?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = serde_json::Value::Bool(report.is_ok());
        output::json(&v)?;
    } else {
        let s = &report.stats;
        if !g.quiet {
            println!(
                "checked {} keys, {} index objects ({} entries), {} packs, {} snapshots, {} trees",
                s.keys, s.index_objects, s.index_entries, s.packs, s.snapshots, s.trees
            );
            if subset.is_some() {
                println!(
                    "read {} packs ({}), verified {} blobs",
                    s.packs_read,
                    output::bytes(s.bytes_read),
                    s.blobs_verified
                );
            }
            for n in &report.notes {
                println!("note: {}: {}", n.object, n.message);
            }
        }
        for e in &report.errors {
            eprintln!("error: {}: {}", e.object, e.message);
        }
        for d in &report.damage {
            eprintln!(
                "damage in snapshot {} ({} paths):",
                d.short_id,
                d.paths.len()
            );
            for p in &d.paths {
                eprintln!("  {}: {}", p.path, p.reason);
            }
        }
        if report.is_ok() {
            if !g.quiet {
                println!("no errors were found");
            }
        } else {
            eprintln!("{} errors were found", report.errors.len());
        }
    }
    Ok(if report.is_ok() {
        super::exit::OK
    } else {
        super::exit::FATAL
    })
}
