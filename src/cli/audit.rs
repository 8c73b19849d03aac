//! The audit trail from the command line: the record every audited command appends (with
//! secrets removed from its command line), and `vault log`.

use std::sync::OnceLock;

use anyhow::Result;
use clap::Args;
use vault::format::audit::AuditRecord;

use super::global::GlobalArgs;
use super::output::{self, parse_time};

/// Commands that change the repository or read data out of it; each appends a record.
pub const AUDITED: [&str; 13] = [
    "init", "snapshot", "forget", "prune", "hold", "release", "key", "repair", "copy", "restore",
    "dump", "check", "unlock",
];

static ARGS: OnceLock<Vec<String>> = OnceLock::new();

/// Keeps the command line for the record.
pub fn remember_args(args: &[std::ffi::OsString]) {
    let _ = ARGS.set(redact(
        &args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
    ));
}

/// Options whose value may hold a secret as a whole.
const SECRET_VALUE_FLAGS: [&str; 2] = ["--password-command", "--to-password-command"];
/// Options whose `KEY=VALUE` value is secret when the key names a secret.
const KV_FLAGS: [&str; 3] = ["-o", "--option", "--to-option"];

fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["secret", "password", "token", "key", "credential", "sas"]
        .iter()
        .any(|s| k.contains(s))
}

fn redact_kv(v: &str) -> String {
    match v.split_once('=') {
        Some((k, _)) if secret_key(k) => format!("{k}=***"),
        _ => super::profile::mask_url(v),
    }
}

/// The command line with secrets replaced by `***`: password commands, secret backend
/// options, and passwords in URLs.
pub fn redact(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut next_secret = false;
    let mut next_kv = false;
    for a in args {
        if next_secret {
            out.push("***".into());
            next_secret = false;
            continue;
        }
        if next_kv {
            out.push(redact_kv(a));
            next_kv = false;
            continue;
        }
        if a == "--" {
            // A command after `--` is kept: it is what was backed up.
            out.push(a.clone());
            next_secret = false;
            continue;
        }
        if SECRET_VALUE_FLAGS.contains(&a.as_str()) {
            next_secret = true;
            out.push(a.clone());
        } else if KV_FLAGS.contains(&a.as_str()) {
            next_kv = true;
            out.push(a.clone());
        } else if let Some((flag, v)) = a.split_once('=')
            && flag.starts_with("--")
        {
            if SECRET_VALUE_FLAGS.contains(&flag) {
                out.push(format!("{flag}=***"));
            } else if KV_FLAGS.contains(&flag) {
                out.push(format!("{flag}={}", redact_kv(v)));
            } else {
                out.push(format!("{flag}={}", super::profile::mask_url(v)));
            }
        } else if let Some(v) = a.strip_prefix("-o")
            && !v.is_empty()
        {
            out.push(format!("-o{}", redact_kv(v)));
        } else {
            out.push(super::profile::mask_url(a));
        }
    }
    out
}

/// A draft naming this run (for records a command writes itself).
pub fn base_draft(command: &str, g: &GlobalArgs) -> AuditRecord {
    AuditRecord {
        profile: g.profile.clone().unwrap_or_default(),
        command: command.to_string(),
        args: ARGS.get().cloned().unwrap_or_default(),
        ..AuditRecord::default()
    }
}

/// Appends the run's audit record to every repository it opened. A repository that cannot
/// be written (read-only storage) only costs a warning: never a failed restore.
pub fn record(command: &str, profile: &str, code: i32, error: Option<&str>, g: &GlobalArgs) {
    let repos = g.facts.take_repos();
    let f = g.facts.get();
    if !AUDITED.contains(&command) || f.dry_run {
        return;
    }
    let draft = AuditRecord {
        exit_code: code.max(0) as u32,
        error: error.unwrap_or("").to_string(),
        snapshots: f.snapshots.clone(),
        bytes: f.bytes.unwrap_or(0),
        summary: f.summary.clone().unwrap_or_default(),
        profile: profile.to_string(),
        ..base_draft(command, g)
    };
    let mut seen = Vec::new();
    // The newest session of a repository writes (after a key rotation it holds the new key).
    for repo in repos.into_iter().rev() {
        let id = repo.config().repo_id;
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        if let Err(e) = repo.append_audit(draft.clone())
            && !g.quiet
        {
            eprintln!(
                "warning: the audit record of this run could not be written to {}: {e}",
                repo.backend().location()
            );
        }
    }
}

/// Options of `vault log`.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Only records at or after this time (RFC 3339 or a date, e.g. 2026-11-01)
    #[arg(long, value_parser = parse_time)]
    pub since: Option<(vault::format::time::Timestamp, i32)>,
    /// Only records of this command (repeatable)
    #[arg(long = "command")]
    pub commands: Vec<String>,
}

/// Runs `vault log`: records oldest first.
pub fn log(g: &GlobalArgs, a: LogArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let since = a.since.map(|t| t.0);
    let found = std::sync::Mutex::new((Vec::new(), Vec::new()));
    repo.for_each_audit(&|id, r| {
        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(r) => {
                if since.is_none_or(|s| r.time >= s)
                    && (a.commands.is_empty() || a.commands.contains(&r.command))
                {
                    f.0.push((id, r));
                }
            }
            Err(e) => f.1.push((id, e.to_string())),
        }
        Ok(())
    })?;
    let (mut records, damaged) = found.into_inner().unwrap_or_else(|p| p.into_inner());
    records.sort_by_key(|(id, r)| (r.time, r.writer, r.seq, *id));
    for (id, e) in &damaged {
        eprintln!(
            "warning: audit record {} cannot be read ({e}); `vault check` reports it",
            id.short()
        );
    }
    if g.json {
        let v: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, r)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "writer": hex::encode(r.writer),
                    "seq": r.seq,
                    "prev": r.prev.map(hex::encode),
                    "time": output::time(r.time, 0),
                    "hostname": r.hostname,
                    "username": r.username,
                    "profile": r.profile,
                    "command": r.command,
                    "args": r.args,
                    "exit_code": r.exit_code,
                    "error": r.error,
                    "snapshots": r.snapshots.iter().map(hex::encode).collect::<Vec<_>>(),
                    "bytes": r.bytes,
                    "summary": r.summary,
                    "truncations": r.truncations.iter().map(|(w, s)| serde_json::json!({"writer": hex::encode(w), "through_seq": s})).collect::<Vec<_>>(),
                    "acknowledged": r.acknowledged.iter().map(|(w, f, t)| serde_json::json!({"writer": hex::encode(w), "from_seq": f, "to_seq": t})).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&serde_json::Value::Array(v))?;
        return Ok(super::exit::OK);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|(_, r)| {
            let snaps: Vec<String> = r.snapshots.iter().map(|s| hex::encode(&s[..4])).collect();
            let what = if r.error.is_empty() {
                r.summary.clone()
            } else {
                r.error.clone()
            };
            vec![
                output::short_time(r.time, vault::archiver::local_offset(r.time)),
                format!("{}@{}", r.username, r.hostname),
                r.profile.clone(),
                r.command.clone(),
                r.exit_code.to_string(),
                snaps.join(","),
                what.lines().next().unwrap_or("").to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "Time",
            "Who",
            "Profile",
            "Command",
            "Exit",
            "Snapshots",
            "What",
        ],
        &rows,
    )?;
    println!("{} records", records.len());
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_leave_the_command_line() {
        let a: Vec<String> = [
            "vault",
            "-o",
            "secret_access_key=abc",
            "-oaccount_key=def",
            "--option=region=eu",
            "--password-command",
            "echo hunter2",
            "--to-password-command=echo x",
            "--metrics-push",
            "https://u:pw@gw/",
            "snapshot",
            "/data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = redact(&a).join(" ");
        for secret in ["abc", "def", "hunter2", "echo x", ":pw@"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(
            r.contains("--option=region=eu") && r.contains("/data"),
            "{r}"
        );
    }
}
