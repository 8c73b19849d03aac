//! `vault copy`: replicate snapshots into another repository.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vault::archiver::copy::{CopyOptions, copy_snapshots};
use vault::repo::Repository;
use vault::repo::lock::LockKind;

use super::global::{GlobalArgs, open_backend, read_password};
use super::snapshots::FilterArgs;

/// Options of `vault copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The repository to copy into (any location form --repo accepts)
    #[arg(long, env = "VAULT_TO_REPOSITORY", value_name = "LOCATION")]
    pub to_repo: String,
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
}

/// Runs `vault copy`.
pub fn run(g: &GlobalArgs, a: CopyArgs) -> Result<i32> {
    let src = g.open()?;
    let dst_backend = open_backend(&a.to_repo, &a.to_options, false)?;
    let dst_password = read_password(
        a.to_password_file.as_ref(),
        a.to_password_command.as_deref(),
        "VAULT_TO_PASSWORD",
        "target repository password: ",
    )?;
    let dst = Repository::open(dst_backend, dst_password.as_bytes(), g.open_options())
        .with_context(|| format!("opening the target repository {}", a.to_repo))?;
    if src.config().repo_id == dst.config().repo_id {
        anyhow::bail!("the source and the target are the same repository");
    }
    let _src_lock = g.read_lock(&src)?;
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
    let report = copy_snapshots(&src, &dst, selected, &opts, &dst_lock, &progress)?;
    if g.json {
        super::output::json(&serde_json::to_value(&report)?)?;
    } else if !g.quiet {
        for (from, to) in &report.copied {
            println!("copied snapshot {} to {}", from.short(), to.short());
        }
        println!(
            "{} copied, {} already in the target; {} files read ({}), {} reused; {} added, {} stored",
            report.copied.len(),
            report.skipped.len(),
            report.files_copied,
            super::output::bytes(report.bytes_read),
            report.files_reused,
            super::output::bytes(report.bytes_added),
            super::output::bytes(report.bytes_stored),
        );
    }
    Ok(super::exit::OK)
}
