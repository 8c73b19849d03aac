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

/// The snapshots `specs` name (ids, prefixes or `latest`; each once, resolved within
/// `filter`), or when there are none, every readable snapshot `filter` matches; unreadable
/// ones are named on stderr as not `verb` (searched, changed, …).
pub fn select(
    repo: &vault::repo::Repository,
    specs: &[String],
    filter: &vault::repo::snapshots::SnapshotFilter,
    verb: &str,
) -> anyhow::Result<Vec<(SnapshotId, Snapshot)>> {
    if specs.is_empty() {
        let (all, damaged) = repo.list_snapshots()?;
        for (id, e) in &damaged {
            eprintln!(
                "warning: snapshot {} cannot be read and is not {verb}: {e}",
                id.short()
            );
        }
        return Ok(all.into_iter().filter(|(_, s)| filter.matches(s)).collect());
    }
    let mut v: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for spec in specs {
        let found = repo.resolve_snapshot(spec, filter, None)?;
        if !v.iter().any(|(id, _)| *id == found.0) {
            v.push(found);
        }
    }
    Ok(v)
}

/// Options of `vault snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the N newest snapshots of each group (host and paths unless --group-by says)
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Group the list by host, paths, tags or a combination (`host,paths`)
    #[arg(long, value_parser = vault::pruner::GroupBy::parse)]
    pub group_by: Option<vault::pruner::GroupBy>,
    /// One short line per snapshot: id, time, host, tags
    #[arg(long, short = 'c')]
    pub compact: bool,
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
    // Groups in key order; within a group oldest first (the list is oldest first).
    let by = a.group_by.unwrap_or(vault::pruner::GroupBy {
        host: true,
        paths: true,
        tags: false,
    });
    let mut groups: std::collections::BTreeMap<
        vault::pruner::GroupKey,
        Vec<&(SnapshotId, Snapshot)>,
    > = std::collections::BTreeMap::new();
    for e in &snaps {
        let key = if a.group_by.is_some() || a.latest.is_some() {
            vault::pruner::group_key(&e.1, by)
        } else {
            vault::pruner::GroupKey::default()
        };
        groups.entry(key).or_default().push(e);
    }
    if let Some(n) = a.latest {
        for list in groups.values_mut() {
            let skip = list.len().saturating_sub(n);
            list.drain(..skip);
        }
    }
    let holds_of = |id: &SnapshotId| -> Vec<&vault::format::hold::Hold> {
        holds
            .iter()
            .filter(|(_, h)| h.snapshot == *id)
            .map(|(_, h)| h)
            .collect()
    };
    let to_json = |(id, s): &(SnapshotId, Snapshot)| {
        let mut j = snapshot_json(id, s);
        j["holds"] = holds_of(id)
            .iter()
            .map(|h| serde_json::json!({"reason": h.reason, "created": output::time(h.created, 0), "hostname": h.hostname, "username": h.username}))
            .collect();
        j
    };
    if g.json {
        let v = if a.group_by.is_some() {
            serde_json::Value::Array(
                groups
                    .iter()
                    .map(|(k, list)| {
                        serde_json::json!({
                            "group_key": {"hostname": k.hostname, "paths": k.paths, "tags": k.tags},
                            "snapshots": list.iter().map(|e| to_json(e)).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            )
        } else {
            let mut all: Vec<&(SnapshotId, Snapshot)> =
                groups.values().flatten().copied().collect();
            all.sort_by_key(|(id, s)| (s.time, *id));
            serde_json::Value::Array(all.into_iter().map(to_json).collect())
        };
        output::json(&v)?;
        return Ok(damaged_exit(damaged.len() + damaged_holds.len()));
    }
    let row = |(id, s): &(SnapshotId, Snapshot)| -> Vec<String> {
        let mut r = vec![
            id.short(),
            output::short_time(s.time, s.tz_offset_secs),
            s.hostname.clone(),
            s.tags.join(","),
        ];
        if !a.compact {
            r.push(
                s.paths
                    .iter()
                    .map(|p| vault::quote::quote_bytes(p))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            r.push(output::bytes(s.summary.total_bytes));
            r.push(
                holds_of(id)
                    .iter()
                    .map(|h| h.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        r
    };
    let header: &[&str] = if a.compact {
        &["ID", "Time", "Host", "Tags"]
    } else {
        &["ID", "Time", "Host", "Tags", "Paths", "Size", "Hold"]
    };
    let mut count = 0;
    if a.group_by.is_some() {
        for (k, list) in &groups {
            let mut label = Vec::new();
            if let Some(h) = &k.hostname {
                label.push(format!("host [{h}]"));
            }
            if let Some(p) = &k.paths {
                label.push(format!("paths [{}]", p.join(", ")));
            }
            if let Some(t) = &k.tags {
                label.push(format!("tags [{}]", t.join(", ")));
            }
            println!("snapshots for {}:", label.join(", "));
            let rows: Vec<Vec<String>> = list.iter().map(|e| row(e)).collect();
            count += rows.len();
            output::table(header, &rows)?;
            println!();
        }
    } else {
        let mut all: Vec<&(SnapshotId, Snapshot)> = groups.values().flatten().copied().collect();
        all.sort_by_key(|(id, s)| (s.time, *id));
        let rows: Vec<Vec<String>> = all.into_iter().map(row).collect();
        count = rows.len();
        output::table(header, &rows)?;
    }
    if !g.quiet {
        println!("{count} snapshots");
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
