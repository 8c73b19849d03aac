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
    /// Also restore a snapshot into a scratch directory, verify it against the snapshot and
    /// remove it (the weekly restore test as one command)
    #[arg(long)]
    pub restore_test: bool,
    /// Snapshot of the restore test: an id, a prefix or `latest`
    #[arg(long, default_value = "latest", requires = "restore_test")]
    pub restore_test_snapshot: String,
    /// Share of the files the restore test restores, e.g. `10%` (default: all)
    #[arg(long, value_parser = parse_percent, requires = "restore_test")]
    pub restore_test_sample: Option<f64>,
    /// Directory of the restore test (must not exist or be empty; default: a new directory
    /// in $TMPDIR); emptied afterwards
    #[arg(long, requires = "restore_test")]
    pub restore_test_target: Option<std::path::PathBuf>,
}

/// Parses `10%` or `0.1` into a fraction in (0, 1].
pub fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("invalid share {s:?}: use e.g. 10% or 0.1"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!(
            "invalid share {s:?}: between 0% (excluded) and 100%"
        ));
    }
    Ok(v)
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
    record_facts(g, &report);
    super::repository_gauges(g, &repo);
    let test = if a.restore_test {
        let t = super::restore::restore_test(
            g,
            &repo,
            &a.restore_test_snapshot,
            a.restore_test_sample.unwrap_or(1.0),
            a.restore_test_target.as_deref(),
            a.threads,
        )?;
        record_test(g, &t);
        Some(t)
    } else {
        None
    };
    let test_ok = test.as_ref().is_none_or(|t| t.is_ok());
    if let Some(t) = &test
        && !g.json
    {
        if !g.quiet {
            println!(
                "restore test of snapshot {}: restored {} files ({}), verified {} files ({}): {}",
                &t.snapshot[..8],
                t.restore.files,
                output::bytes(t.restore.bytes_written),
                t.verify.files,
                output::bytes(t.verify.bytes),
                if t.is_ok() { "identical" } else { "FAILED" }
            );
        }
        for e in t.restore.errors.iter().chain(&t.verify.mismatches) {
            eprintln!("error: restore test: {}: {}", e.path, e.error);
        }
    }
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = serde_json::Value::Bool(report.is_ok() && test_ok);
        if let Some(t) = &test {
            v["restore_test"] = serde_json::to_value(t)?;
            v["restore_test"]["ok"] = serde_json::Value::Bool(t.is_ok());
        }
        output::json(&v)?;
    } else {
        let s = &report.stats;
        if !g.quiet {
            println!(
                "checked {} keys, {} index objects ({} entries), {} packs, {} snapshots, {} trees, {} audit records",
                s.keys,
                s.index_objects,
                s.index_entries,
                s.packs,
                s.snapshots,
                s.trees,
                s.audit_records
            );
            if subset.is_some() {
                println!(
                    "read {} packs ({}), verified {} blobs",
                    s.packs_read,
                    output::bytes(s.bytes_read),
                    s.blobs_verified
                );
            }
            if s.wal_files > 0 {
                println!(
                    "{} archived WAL files{}",
                    s.wal_files,
                    if subset.is_some() {
                        format!(", {} verified", s.wal_verified)
                    } else {
                        String::new()
                    }
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
    Ok(if report.is_ok() && test_ok {
        super::exit::OK
    } else {
        super::exit::FATAL
    })
}

/// What hooks and metrics report of a check.
fn record_facts(g: &GlobalArgs, r: &vault::checker::CheckReport) {
    let s = &r.stats;
    g.facts.update(|f| {
        f.bytes = Some(s.bytes_read);
        f.summary = Some(format!(
            "{} errors, {} notes; verified {} blobs ({} bytes)",
            r.errors.len(),
            r.notes.len(),
            s.blobs_verified,
            s.bytes_read
        ));
    });
    for (name, help, v) in [
        (
            "vault_check_errors",
            "Errors found by the last check (damaged or missing objects).",
            r.errors.len() as u64,
        ),
        (
            "vault_check_bytes_verified",
            "Bytes of pack data read and verified by the last check.",
            s.bytes_read,
        ),
        (
            "vault_check_blobs_verified",
            "Blobs verified by the last check.",
            s.blobs_verified,
        ),
        ("vault_check_snapshots", "Snapshots checked.", s.snapshots),
    ] {
        g.facts.gauge(name, help, v as f64);
    }
}

/// What hooks, metrics and the audit trail report of a restore test.
fn record_test(g: &GlobalArgs, t: &super::restore::RestoreTest) {
    for (name, help, v) in [
        (
            "vault_check_restore_test_success",
            "1 if the last restore test restored and verified everything, else 0.",
            if t.is_ok() { 1.0 } else { 0.0 },
        ),
        (
            "vault_check_restore_test_files",
            "Files the last restore test restored and verified.",
            t.verify.files as f64,
        ),
        (
            "vault_check_restore_test_bytes",
            "Bytes the last restore test restored and verified.",
            t.verify.bytes as f64,
        ),
        (
            "vault_check_restore_test_errors",
            "Paths the last restore test could not restore or found different.",
            (t.restore.errors.len() + t.verify.mismatches.len()) as f64,
        ),
    ] {
        g.facts.gauge(name, help, v);
    }
    g.facts.update(|f| {
        if let Ok(id) = vault::id::SnapshotId::from_hex(&t.snapshot).ok_or(()) {
            f.snapshots.push(id.0);
        }
        let s = f.summary.take().unwrap_or_default();
        f.summary = Some(format!(
            "{s}; restore test of {}: {} files, {} bytes, {}",
            &t.snapshot[..8],
            t.verify.files,
            t.verify.bytes,
            if t.is_ok() { "identical" } else { "FAILED" }
        ));
    });
}
