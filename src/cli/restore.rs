//! `vault restore`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use std::collections::HashSet;

use vault::restorer::{RestoreOptions, Sample, VerifyReport, restore, verify_restore};
use vault::source::apply::ApplyOptions;
use vault::source::exclude::PathMatcher;

use super::global::GlobalArgs;
use super::output::{self, bytes, parse_time};
use super::snapshots::FilterArgs;

/// Options of `vault restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot to restore: an id, a unique prefix, or `latest` (also as `--snapshot`)
    #[arg(
        value_name = "SNAPSHOT",
        required_unless_present = "snapshot_flag",
        conflicts_with = "snapshot_flag"
    )]
    pub snapshot: Option<String>,
    /// Snapshot to restore (the same as the positional SNAPSHOT)
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    pub snapshot_flag: Option<String>,
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
    /// What to do with entries that exist at the target: always (replace), if-changed (keep
    /// what already is identical, by content), if-newer (replace only older ones), never
    #[arg(long, default_value = "if-changed", value_parser = vault::restorer::Overwrite::parse)]
    pub overwrite: vault::restorer::Overwrite,
    /// Remove entries in restored directories that the snapshot does not have (not those
    /// matching --exclude)
    #[arg(long)]
    pub delete: bool,
    /// Only show what would be created, replaced, kept and deleted; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// After restoring, re-read everything restored and compare it with the snapshot (keyed
    /// hashes of the content, sizes, kinds, link targets, permissions); exit 1 on a difference
    #[arg(long)]
    pub verify: bool,
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
    let spec = a
        .snapshot
        .clone()
        .or_else(|| a.snapshot_flag.clone())
        .expect("invariant: the parser requires one");
    let (id, snap) = repo.resolve_snapshot(&spec, &a.filter.filter(), a.as_of.map(|t| t.0))?;
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
        sample: None,
        overwrite: a.overwrite,
        delete: a.delete,
    };
    if a.dry_run {
        g.facts.update(|f| f.dry_run = true);
        return dry_run(g, &repo, &id, &snap, &opts);
    }
    let progress = g.progress();
    g.facts.update(|f| f.snapshots = vec![id.0]);
    let sum = restore(&repo, &id, &opts, &progress)
        .with_context(|| format!("restoring snapshot {}", id.short()))?;
    g.facts.update(|f| {
        f.bytes = Some(sum.bytes_written);
        f.summary = Some(format!(
            "restored {} files ({} bytes) to {}; {} paths not restored",
            sum.files,
            sum.bytes_written,
            a.target.display(),
            sum.errors.len()
        ));
    });
    g.facts.gauge(
        "vault_restore_bytes_written",
        "Bytes written by the last restore.",
        sum.bytes_written as f64,
    );
    g.facts.gauge(
        "vault_restore_errors",
        "Paths the last restore could not restore completely.",
        sum.errors.len() as f64,
    );
    let verified = if a.verify {
        let skip: HashSet<String> = sum.errors.iter().map(|e| e.path.clone()).collect();
        let report = verify_restore(&repo, &snap.tree, &opts, &skip)?;
        record_verify(g, "restore", &report);
        Some(report)
    } else {
        None
    };
    if g.json {
        let mut v = serde_json::to_value(&sum)?;
        v["snapshot"] = serde_json::Value::String(id.to_hex());
        v["time"] = serde_json::Value::String(output::time(snap.time, snap.tz_offset_secs));
        if let Some(r) = &verified {
            v["verify"] = serde_json::to_value(r)?;
        }
        output::json(&v)?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} ({}) to {}: {} files, {} dirs, {} other, {} hard links, {}; {} kept as they were, {} deleted",
            id.short(),
            output::short_time(snap.time, snap.tz_offset_secs),
            a.target.display(),
            sum.files,
            sum.dirs,
            sum.others,
            sum.hardlinks,
            bytes(sum.bytes_written),
            sum.skipped,
            sum.deleted
        );
    }
    if let Some(v) = &verified {
        if !g.json && !g.quiet {
            println!(
                "verified {} files ({}) and {} other entries: {}",
                v.files,
                bytes(v.bytes),
                v.others,
                if v.is_ok() {
                    "identical to the snapshot".to_string()
                } else {
                    format!("{} differ", v.mismatches.len())
                }
            );
        }
        for m in &v.mismatches {
            eprintln!("error: verify: {}: {}", m.path, m.error);
        }
    }
    let verify_failed = verified.as_ref().is_some_and(|v| !v.is_ok());
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
        if sum.errors.is_empty() && sum.unmatched_includes.is_empty() && !verify_failed {
            super::exit::OK
        } else {
            super::exit::FATAL
        },
    )
}

/// Metrics of a verification.
fn record_verify(g: &GlobalArgs, command: &str, v: &VerifyReport) {
    g.facts.gauge(
        &format!("vault_{command}_verify_mismatches"),
        "Restored entries that differ from the snapshot.",
        v.mismatches.len() as f64,
    );
    g.facts.gauge(
        &format!("vault_{command}_verified_bytes"),
        "Bytes of restored files compared with the snapshot.",
        v.bytes as f64,
    );
}

/// What a restore test found.
#[derive(Debug, serde::Serialize)]
pub struct RestoreTest {
    /// The snapshot restored.
    pub snapshot: String,
    /// Where it was restored (removed afterwards).
    pub target: String,
    /// Share of the files restored.
    pub sample: f64,
    /// The restore.
    pub restore: vault::restorer::RestoreSummary,
    /// The comparison.
    pub verify: VerifyReport,
}

impl RestoreTest {
    /// Whether everything restored and matched.
    pub fn is_ok(&self) -> bool {
        self.restore.errors.is_empty() && self.verify.is_ok()
    }
}

/// Restores (a sample of) snapshot `spec` into a scratch directory, verifies it and removes
/// what it restored. `target` must not exist or be empty: nothing of the user's is removed.
pub fn restore_test(
    g: &GlobalArgs,
    repo: &vault::repo::Repository,
    spec: &str,
    fraction: f64,
    target: Option<&std::path::Path>,
    threads: Option<usize>,
) -> Result<RestoreTest> {
    let (id, snap) = repo.resolve_snapshot(spec, &Default::default(), None)?;
    let (dir, created) = match target {
        Some(t) => {
            let existed = t.exists();
            if existed
                && std::fs::read_dir(t)
                    .with_context(|| format!("reading {}", t.display()))?
                    .next()
                    .is_some()
            {
                anyhow::bail!(
                    "the restore test target {} is not empty: it would be cleared afterwards",
                    t.display()
                );
            }
            (t.to_path_buf(), !existed)
        }
        None => {
            let mut rnd = [0u8; 8];
            getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("random: {e}"))?;
            (
                std::env::temp_dir().join(format!("vault-restore-test-{}", hex::encode(rnd))),
                true,
            )
        }
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let defaults = RestoreOptions::default();
    let opts = RestoreOptions {
        target: dir.clone(),
        threads: threads.unwrap_or(defaults.threads),
        sample: (fraction < 1.0).then_some(Sample { fraction, seed }),
        apply: vault::source::apply::ApplyOptions {
            owner: false,
            xattrs: true,
        },
        ..defaults
    };
    let result = (|| -> Result<(vault::restorer::RestoreSummary, VerifyReport)> {
        let sum = restore(repo, &id, &opts, &g.progress())
            .with_context(|| format!("restore test of snapshot {}", id.short()))?;
        let skip: HashSet<String> = sum.errors.iter().map(|e| e.path.clone()).collect();
        let v = verify_restore(repo, &snap.tree, &opts, &skip)?;
        Ok((sum, v))
    })();
    // Remove what the test restored, whatever happened.
    if created {
        let _ = std::fs::remove_dir_all(&dir);
    } else if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    let (restore, verify) = result?;
    Ok(RestoreTest {
        snapshot: id.to_hex(),
        target: dir.display().to_string(),
        sample: fraction,
        restore,
        verify,
    })
}

/// `restore --dry-run`: the plan, entry by entry (`-v` or `--json`) and in totals.
fn dry_run(
    g: &GlobalArgs,
    repo: &vault::repo::Repository,
    id: &vault::id::SnapshotId,
    snap: &vault::format::snapshot::Snapshot,
    opts: &RestoreOptions,
) -> Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let verbose = g.verbose > 0;
    let stats =
        vault::restorer::plan_restore(repo, &snap.tree, &snap.paths, opts, &mut |p, action, n| {
            if g.json {
                output::json_line(&serde_json::json!({
                    "message_type": "action",
                    "path": String::from_utf8_lossy(p.as_os_str().as_bytes()),
                    "action": action,
                    "type": n.kind.name(),
                    "size": n.size,
                }))
                .map_err(|e| vault::Error::io("(output)", e))?;
            } else if verbose || matches!(action, vault::restorer::Action::Delete) {
                println!(
                    "{:<8} {}",
                    format!("{action:?}").to_lowercase(),
                    vault::quote::quote_path(p)
                );
            }
            Ok(())
        })?;
    if g.json {
        let mut v = serde_json::to_value(&stats)?;
        v["message_type"] = serde_json::Value::String("summary".into());
        v["snapshot"] = serde_json::Value::String(id.to_hex());
        v["dry_run"] = serde_json::Value::Bool(true);
        output::json_line(&v)?;
    } else if !g.quiet {
        println!(
            "restoring snapshot {} into {} would create {}, replace {}, keep {}, delete {} entries, writing {}",
            id.short(),
            opts.target.display(),
            stats.create,
            stats.replace,
            stats.keep,
            stats.delete,
            bytes(stats.bytes)
        );
    }
    Ok(super::exit::OK)
}
