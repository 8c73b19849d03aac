//! `vault copy`: replicate snapshots into another repository.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vault::archiver::copy::{CopyOptions, copy_snapshots};
use vault::repo::Repository;
use vault::repo::lock::LockKind;

use super::global::{GlobalArgs, open_backend, read_password};
use super::profile::CopyTarget;
use super::snapshots::FilterArgs;

/// Options of `vault copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy into (any location form --repo accepts; default: the profile's
    /// copy targets)
    #[arg(long, env = "VAULT_TO_REPOSITORY", value_name = "LOCATION")]
    pub to_repo: Option<String>,
    /// Backend option KEY=VALUE for the target repository (repeatable)
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    pub to_options: Vec<String>,
    /// Read the target repository's password from this file
    #[arg(long, env = "VAULT_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Run this shell command for the target repository's password
    #[arg(long, env = "VAULT_TO_PASSWORD_COMMAND")]
    pub to_password_command: Option<String>,
    /// Worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Parallel uploads
    #[arg(long, default_value_t = 2)]
    pub upload_concurrency: usize,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Snapshots to copy (id prefixes or "latest"; default: every snapshot matching the filters)
    pub snapshots: Vec<String>,
    /// Targets from the profile (when --to-repo is not given).
    #[arg(skip)]
    pub profile_targets: Vec<CopyTarget>,
}

/// Runs `vault copy` into `--to-repo`, or into each of the profile's targets in turn.
pub fn run(g: &GlobalArgs, a: CopyArgs) -> Result<i32> {
    let targets = match &a.to_repo {
        Some(r) => vec![CopyTarget {
            repository: r.clone(),
            options: None,
            password_file: a.to_password_file.clone(),
            password_command: a.to_password_command.clone(),
        }],
        None if !a.profile_targets.is_empty() => a.profile_targets.clone(),
        None => {
            return Err(super::usage(
                "no target repository: give --to-repo (or VAULT_TO_REPOSITORY, or a profile with copy targets)",
            ));
        }
    };
    let src = g.open()?;
    let _src_lock = g.read_lock(&src)?;
    let (mut copied, mut skipped, mut added) = (0u64, 0u64, 0u64);
    for t in &targets {
        let to_options = match (&a.to_repo, &t.options) {
            (Some(_), _) => a.to_options.clone(),
            (None, Some(o)) => super::profile::option_strings(o),
            (None, None) => Vec::new(),
        };
        let report = copy_into(g, &a, &src, t, &to_options)?;
        copied += report.copied.len() as u64;
        g.facts
            .update(|f| f.snapshots.extend(report.copied.iter().map(|(_, to)| to.0)));
        skipped += report.skipped.len() as u64;
        added += report.bytes_added;
    }
    g.facts.gauge(
        "vault_copy_snapshots_copied",
        "Snapshots copied by the last run.",
        copied as f64,
    );
    g.facts.gauge(
        "vault_copy_snapshots_skipped",
        "Snapshots the targets already had.",
        skipped as f64,
    );
    g.facts.gauge(
        "vault_copy_bytes_added",
        "Bytes added to the targets by the last run.",
        added as f64,
    );
    g.facts.update(|f| {
        f.bytes_added = Some(added);
        f.bytes = Some(added);
        f.summary = Some(format!(
            "copied {copied} snapshots ({skipped} already there) into {} repositories",
            targets.len()
        ));
    });
    Ok(super::exit::OK)
}

fn copy_into(
    g: &GlobalArgs,
    a: &CopyArgs,
    src: &Repository,
    t: &CopyTarget,
    to_options: &[String],
) -> Result<vault::archiver::copy::CopyReport> {
    let dst_backend = open_backend(&t.repository, to_options, false)?;
    let dst_password = read_password(
        t.password_file.as_ref(),
        t.password_command.as_deref(),
        "VAULT_TO_PASSWORD",
        "target repository password: ",
    )?;
    let dst = Repository::open(dst_backend, dst_password.as_bytes(), g.open_options())
        .with_context(|| format!("opening the target repository {}", t.repository))?;
    g.facts.opened(&dst);
    if src.config().repo_id == dst.config().repo_id {
        anyhow::bail!("the source and the target are the same repository");
    }
    let dst_lock = g.lock(&dst, LockKind::Shared)?;
    let filter = a.filter.filter();
    let (all, damaged) = src.list_snapshots()?;
    for (id, e) in &damaged {
        eprintln!(
            "warning: snapshot {} cannot be read and is not copied: {e}",
            id.short()
        );
    }
    let selected: Vec<_> = if a.snapshots.is_empty() {
        all.into_iter().filter(|(_, s)| filter.matches(s)).collect()
    } else {
        let mut v = Vec::new();
        for spec in &a.snapshots {
            let (id, _) = src.resolve_snapshot(spec, &filter, None)?;
            if let Some(found) = all.iter().find(|(i, _)| *i == id) {
                v.push(found.clone());
            }
        }
        v
    };
    let defaults = CopyOptions::default();
    let opts = CopyOptions {
        threads: a.threads.unwrap_or(defaults.threads),
        upload_concurrency: a.upload_concurrency,
    };
    let progress = g.progress();
    let report = copy_snapshots(src, &dst, selected, &opts, &dst_lock, &progress)?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["target"] = serde_json::Value::String(super::profile::mask_url(&t.repository));
        super::output::json(&v)?;
    } else if !g.quiet {
        for (from, to) in &report.copied {
            println!("copied snapshot {} to {}", from.short(), to.short());
        }
        println!(
            "{}: {} copied, {} already there; {} files read ({}), {} reused; {} added, {} stored",
            super::profile::mask_url(&t.repository),
            report.copied.len(),
            report.skipped.len(),
            report.files_copied,
            super::output::bytes(report.bytes_read),
            report.files_reused,
            super::output::bytes(report.bytes_added),
            super::output::bytes(report.bytes_stored),
        );
    }
    Ok(report)
}
