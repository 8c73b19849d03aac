//! Applies a profile to the parsed command line: every value the profile sets fills the
//! matching option unless that option was typed (flags override the file).

use std::ffi::OsString;

use anyhow::Result;
use clap::ArgMatches;

use super::profile::{Resolved, fill, fill_opt, option_strings, typed};
use super::{Cli, Command};

/// Applies `r` to `cli`. `top` are the top-level matches.
pub fn apply(cli: &mut Cli, top: &ArgMatches, r: &Resolved) -> Result<()> {
    let p = &r.profile;
    let (_, sub) = top
        .subcommand()
        .expect("a subcommand is required by the parser");
    // Global options may be typed before or after the command name.
    let g_typed = |id: &str| typed(top, id) || typed(sub, id);
    let g = &mut cli.global;
    if !g_typed("repo") && p.repository.is_some() {
        g.repo = p.repository.clone();
    }
    if !g_typed("options")
        && let Some(o) = &p.options
    {
        g.options = option_strings(o);
    }
    // A password source typed on the command line replaces both of the profile's.
    if !g_typed("password_file") && !g_typed("password_command") {
        if p.password_file.is_some() {
            g.password_file = p.password_file.clone();
            g.password_command = None;
        } else if p.password_command.is_some() {
            g.password_command = p.password_command.clone();
            g.password_file = None;
        }
    }
    if !g_typed("append_only") && p.append_only == Some(true) {
        g.append_only = true;
    }
    if !g_typed("cache_dir") && p.cache_dir.is_some() {
        g.cache_dir = p.cache_dir.clone();
    }
    if !g_typed("metrics_file") && p.metrics_file.is_some() {
        g.metrics_file = p.metrics_file.clone();
    }
    if !g_typed("metrics_push") && p.metrics_push.is_some() {
        g.metrics_push = p.metrics_push.clone();
    }
    match &mut cli.command {
        Command::Snapshot(a) => {
            let Some(s) = &p.snapshot else { return Ok(()) };
            // Sources: any source typed on the command line replaces the profile's.
            let source_typed = typed(sub, "paths")
                || typed(sub, "command")
                || typed(sub, "stdin")
                || typed(sub, "stdin_from_command");
            if !source_typed {
                if let Some(c) = &s.stdin_command {
                    a.stdin_from_command = true;
                    a.command = c.iter().map(OsString::from).collect();
                } else if let Some(paths) = &s.paths {
                    a.paths = paths.clone();
                }
            }
            fill(
                sub,
                "stdin_name",
                &mut a.stdin_name,
                s.stdin_name.clone().map(OsString::from),
            );
            fill(
                sub,
                "excludes",
                &mut a.excludes,
                s.exclude
                    .as_ref()
                    .map(|v| v.iter().map(OsString::from).collect()),
            );
            fill(
                sub,
                "exclude_files",
                &mut a.exclude_files,
                s.exclude_file.clone(),
            );
            fill(sub, "tags", &mut a.tags, s.tags.clone());
            fill_opt(sub, "host", &mut a.host, s.host.clone());
            fill(
                sub,
                "one_file_system",
                &mut a.one_file_system,
                s.one_file_system,
            );
            a.anomaly = p.anomaly.clone().unwrap_or_default();
        }
        Command::Forget(a) => {
            if let Some(ret) = &p.retention
                && a.ids.is_empty()
            {
                apply_policy(sub, &mut a.policy, ret)?;
            }
        }
        Command::Prune(a) => {
            if let Some(ret) = &p.retention {
                apply_policy(sub, &mut a.policy, ret)?;
            }
            if let Some(m) = p.prune.as_ref().and_then(|s| s.max_unused.as_ref()) {
                fill(
                    sub,
                    "max_unused",
                    &mut a.max_unused,
                    Some(vault::pruner::MaxUnused::parse(m).map_err(anyhow::Error::msg)?),
                );
            }
            if let Some(r) = p.audit.as_ref().and_then(|a| a.retention.as_ref()) {
                fill(
                    sub,
                    "audit_retention",
                    &mut a.audit_retention,
                    Some(vault::pruner::Span::parse(r).map_err(anyhow::Error::msg)?),
                );
            }
        }
        Command::Check(a) => {
            let Some(c) = &p.check else { return Ok(()) };
            let typed_any = typed(sub, "verify_data") || typed(sub, "verify_data_subset");
            if !typed_any {
                a.verify_data = c.verify_data.unwrap_or(false);
                a.verify_data_subset = c.verify_data_subset.clone();
            }
            fill(sub, "restore_test", &mut a.restore_test, c.restore_test);
            if let Some(v) = &c.restore_test_sample {
                fill_opt(
                    sub,
                    "restore_test_sample",
                    &mut a.restore_test_sample,
                    Some(super::check::parse_percent(v).map_err(anyhow::Error::msg)?),
                );
            }
            fill_opt(
                sub,
                "restore_test_target",
                &mut a.restore_test_target,
                c.restore_test_target.clone(),
            );
        }
        Command::Copy(a) => {
            if a.to_repo.is_none()
                && let Some(t) = p.copy.as_ref().and_then(|c| c.targets.clone())
            {
                a.profile_targets = t;
            }
        }
        _ => {}
    }
    Ok(())
}

fn apply_policy(
    sub: &ArgMatches,
    a: &mut super::prune::PolicyArgs,
    r: &super::profile::Retention,
) -> Result<()> {
    // A policy typed on the command line replaces the profile's as a whole: mixing
    // `--keep-last 1` with the file's daily/weekly rules would keep more than was typed.
    let ids = [
        "keep_last",
        "keep_hourly",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "keep_yearly",
        "keep_within",
        "keep_tag",
        "keep_none",
    ];
    if ids.iter().any(|id| typed(sub, id)) {
        return Ok(());
    }
    a.keep_last = r.keep_last.unwrap_or(0);
    a.keep_hourly = r.keep_hourly.unwrap_or(0);
    a.keep_daily = r.keep_daily.unwrap_or(0);
    a.keep_weekly = r.keep_weekly.unwrap_or(0);
    a.keep_monthly = r.keep_monthly.unwrap_or(0);
    a.keep_yearly = r.keep_yearly.unwrap_or(0);
    a.keep_within = r
        .keep_within
        .as_deref()
        .map(vault::pruner::Span::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    a.keep_tag = r.keep_tag.clone().unwrap_or_default();
    if let Some(gb) = &r.group_by {
        fill(
            sub,
            "group_by",
            &mut a.group_by,
            Some(vault::pruner::GroupBy::parse(gb).map_err(anyhow::Error::msg)?),
        );
    }
    Ok(())
}
