//! `vault snapshots`.

use anyhow::Result;
use clap::Args;
use vault::format::snapshot::Snapshot;
use vault::id::SnapshotId;
use vault::repo::snapshots::SnapshotFilter;

use super::global::GlobalArgs;
use super::output;

/// Snapshot filters shared by several commands.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (`a,b` = both; repeat for alternatives)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long = "path")]
    pub paths: Vec<std::path::PathBuf>,
}

impl FilterArgs {
    /// The library filter.
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self
                .paths
                .iter()
                .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
                .collect(),
        }
    }
}

/// Options of `vault snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// A snapshot as JSON (the stable `--json` shape shared by several commands).
pub fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": output::time(s.time, s.tz_offset_secs),
        "hostname": s.hostname,
        "username": s.username,
        "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "parent": s.parent.map(|p| p.to_hex()),
        "original": s.original.map(|p| p.to_hex()),
        "program_version": s.program_version,
        "summary": s.summary,
    })
}

/// Runs `vault snapshots`.
pub fn run(g: &GlobalArgs, a: SnapshotsArgs) -> Result<i32> {
    let repo = g.open()?;
    let (snaps, damaged) = repo.list_snapshots()?;
    let (holds, damaged_holds) = repo.list_holds()?;
    for (id, e) in &damaged_holds {
        eprintln!(
            "warning: hold {} cannot be read ({e}); `vault repair holds` removes it",
            id.short()
        );
    }
    let filter = a.filter.filter();
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    for (id, e) in &damaged {
        eprintln!("warning: snapshot {}: {e}", id.short());
    }
    if g.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                let mut j = snapshot_json(id, s);
                j["holds"] = holds
                    .iter()
                    .filter(|(_, h)| h.snapshot == *id)
                    .map(|(_, h)| serde_json::json!({"reason": h.reason, "created": output::time(h.created, 0), "hostname": h.hostname, "username": h.username}))
                    .collect();
                j
            })
            .collect();
        output::json(&serde_json::Value::Array(v))?;
        return Ok(damaged_exit(damaged.len() + damaged_holds.len()));
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|(id, s)| {
            vec![
                id.short(),
                output::short_time(s.time, s.tz_offset_secs),
                s.hostname.clone(),
                s.tags.join(","),
                s.paths
                    .iter()
                    .map(|p| vault::quote::quote_bytes(p))
                    .collect::<Vec<_>>()
                    .join(" "),
                output::bytes(s.summary.total_bytes),
                holds
                    .iter()
                    .filter(|(_, h)| h.snapshot == *id)
                    .map(|(_, h)| h.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    output::table(
        &["ID", "Time", "Host", "Tags", "Paths", "Size", "Hold"],
        &rows,
    )?;
    if !g.quiet {
        println!("{} snapshots", rows.len());
    }
    Ok(damaged_exit(damaged.len() + damaged_holds.len()))
}

/// Exit 1 when some snapshot or hold objects could not be read (they were named on stderr).
fn damaged_exit(damaged: usize) -> i32 {
    if damaged == 0 {
        super::exit::OK
    } else {
        super::exit::FATAL
    }
}
