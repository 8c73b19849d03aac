//! `vault forget` and `vault prune`.

use anyhow::{Result, bail};
use clap::Args;
use vault::pruner::{GroupBy, MaxUnused, Policy, PruneOptions, PruneReport, Span, prune};
use vault::repo::Repository;
use vault::repo::lock::LockKind;

use super::global::GlobalArgs;
use super::output;
use super::snapshots::FilterArgs;

/// Retention policy flags (restic's semantics; see the README).
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// … of the last N days
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// … of the last N ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// … of the last N months
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// … of the last N years
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this span of the group's newest (e.g. 30d, 1y2m, 12h)
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub keep_within: Option<Span>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Group snapshots by these before applying the policy: host, paths, tags, combinations, or ''
    #[arg(long, default_value = "host,paths", value_parser = GroupBy::parse)]
    pub group_by: GroupBy,
    /// Allow an empty policy: remove every matching snapshot that is not held
    #[arg(long)]
    pub keep_none: bool,
    /// Only show what would be kept and removed (and the space freed)
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: self.keep_tag.clone(),
        }
    }
}

/// Options of `vault forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or unique prefixes)
    pub ids: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Collect garbage afterwards, as `vault prune` does (default --max-unused)
    #[arg(long)]
    pub prune: bool,
}

/// Options of `vault prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Unused space to tolerate before repacking: a percentage of the used data, a size, or unlimited
    #[arg(long, default_value = "5%", value_parser = MaxUnused::parse)]
    pub max_unused: MaxUnused,
    /// Worker threads (default: number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep audit records younger than this (e.g. 7y, 90d); older ones are removed
    #[arg(long, default_value = "7y", value_parser = Span::parse)]
    pub audit_retention: Span,
}

/// Runs `vault forget`.
pub fn forget(g: &GlobalArgs, a: ForgetArgs) -> Result<i32> {
    let policy = a.policy.policy();
    if a.ids.is_empty() && policy.is_empty() && !a.policy.keep_none {
        bail!(
            "refusing to forget with no policy and no ids: give ids, --keep-* rules, or --keep-none to remove every matching snapshot"
        );
    }
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Exclusive)?;
    let forget_ids = a
        .ids
        .iter()
        .map(|s| repo.resolve_snapshot_id(s))
        .collect::<vault::Result<Vec<_>>>()?;
    let opts = PruneOptions {
        policy,
        group_by: a.policy.group_by,
        filter: a.policy.filter.filter(),
        forget: forget_ids,
        keep_none: a.policy.keep_none,
        gc: a.prune,
        dry_run: a.policy.dry_run,
        ..PruneOptions::default()
    };
    let report = prune(&repo, &lock, &opts, &g.progress()).map_err(refusal)?;
    print_report(g, &repo, &report, a.policy.dry_run, None)
}

/// Damage found while planning stops a prune before it deletes anything; say so, and what to
/// do. Other errors (an outage, a full disk) are reported as what they are.
fn refusal(e: vault::Error) -> anyhow::Error {
    if e.is_damage() {
        anyhow::Error::new(e).context(
            "refusing to collect garbage in a damaged repository: no pack or index object was deleted \
             (run `vault check --verify-data`, then `vault repair index` / `vault repair snapshots`)",
        )
    } else {
        e.into()
    }
}

/// Runs `vault prune`.
pub fn run(g: &GlobalArgs, a: PruneArgs) -> Result<i32> {
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Exclusive)?;
    let opts = PruneOptions {
        policy: a.policy.policy(),
        group_by: a.policy.group_by,
        filter: a.policy.filter.filter(),
        keep_none: a.policy.keep_none,
        gc: true,
        dry_run: a.policy.dry_run,
        max_unused: a.max_unused,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        ..PruneOptions::default()
    };
    let report = prune(&repo, &lock, &opts, &g.progress()).map_err(refusal)?;
    // Audit records past their retention, oldest first (never younger ones).
    let now = vault::format::time::Timestamp::now();
    let cutoff = a.audit_retention.before(now).ok_or_else(|| {
        super::usage(format!(
            "--audit-retention {:?} reaches before the start of time",
            a.audit_retention
        ))
    })?;
    lock.check()?;
    let expired = repo.expire_audit(cutoff, a.policy.dry_run)?;
    g.facts.gauge(
        "vault_prune_audit_records_removed",
        "Audit records removed by retention in the last run.",
        expired as f64,
    );
    let wal = expire_wal(&repo, &report, a.policy.dry_run)?;
    g.facts.gauge(
        "vault_prune_wal_files_removed",
        "Archived WAL files removed by retention in the last run.",
        wal.as_ref().map_or(0, |(n, _)| *n) as f64,
    );
    let code = print_report(g, &repo, &report, a.policy.dry_run, Some(expired))?;
    if let Some((n, before)) = wal
        && n > 0
        && !g.quiet
        && !g.json
    {
        println!(
            "{} {n} archived WAL files older than {before} (the oldest kept base backup's start)",
            if a.policy.dry_run {
                "would remove"
            } else {
                "removed"
            }
        );
    }
    if expired > 0 && !g.quiet && !g.json {
        println!(
            "{} {expired} audit records older than {}",
            if a.policy.dry_run {
                "would remove"
            } else {
                "removed"
            },
            output::time(cutoff, 0)
        );
    }
    Ok(code)
}

/// WAL retention (format-spec 15.5): files older than the start segment of the oldest base
/// backup that is kept. Returns how many (and that segment), or `None` without base backups.
fn expire_wal(repo: &Repository, r: &PruneReport, dry_run: bool) -> Result<Option<(u64, String)>> {
    let removed: std::collections::HashSet<_> = r.removed.iter().map(|(id, _)| *id).collect();
    let oldest = repo
        .list_snapshots()?
        .0
        .into_iter()
        .filter(|(id, s)| !removed.contains(id) && s.tags.iter().any(|t| t == super::pg::BASE_TAG))
        .filter_map(|(_, s)| {
            let label = s
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(super::pg::LABEL_TAG))?;
            Some((s.time, label.get(..24)?.to_string()))
        })
        .min();
    let Some((_, start)) = oldest else {
        return Ok(None);
    };
    let mut n = 0;
    for (name, _) in repo.wal_list()? {
        let old = !name.ends_with(".history")
            && name.len() >= 24
            && name.as_bytes()[8..24] < start.as_bytes()[8..24];
        if old {
            if !dry_run {
                match repo.wal_delete(&name) {
                    Ok(()) => {}
                    // Retained by the storage (object lock): a later prune removes it.
                    Err(e) if e.kind() == vault::ErrorKind::Retained => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            n += 1;
        }
    }
    Ok(Some((n, start)))
}

fn print_report(
    g: &GlobalArgs,
    repo: &Repository,
    r: &PruneReport,
    dry_run: bool,
    audit_removed: Option<u64>,
) -> Result<i32> {
    record_facts(g, repo, r, dry_run);
    let all = repo.list_snapshots()?.0;
    let removed_map: std::collections::HashMap<_, _> = r.removed.iter().cloned().collect();
    let find = |id: &vault::id::SnapshotId| {
        all.iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s.clone())
            .or_else(|| removed_map.get(id).cloned())
    };
    let snap_json = |id: &vault::id::SnapshotId| -> serde_json::Value {
        match find(id) {
            Some(s) => serde_json::json!({
                "id": id.to_hex(), "short_id": id.short(),
                "time": output::time(s.time, s.tz_offset_secs), "hostname": s.hostname,
                "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
                "tags": s.tags,
            }),
            None => serde_json::json!({ "id": id.to_hex(), "short_id": id.short() }),
        }
    };
    if g.json {
        let groups: Vec<serde_json::Value> = r
            .groups
            .iter()
            .map(|gr| {
                serde_json::json!({
                    "group": { "hostname": gr.key.hostname, "paths": gr.key.paths, "tags": gr.key.tags },
                    "keep": gr.keep.iter().map(&snap_json).collect::<Vec<_>>(),
                    "remove": gr.remove.iter().map(&snap_json).collect::<Vec<_>>(),
                    "reasons": gr.reasons.iter().map(|k| serde_json::json!({ "snapshot": snap_json(&k.snapshot), "matches": k.matches })).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&serde_json::json!({
            "dry_run": dry_run,
            "groups": groups,
            "removed": r.removed.iter().map(|(id, _)| snap_json(id)).collect::<Vec<_>>(),
            "damaged_removed": r.damaged_removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "gc": r.gc,
            "audit_records_removed": audit_removed,
            "duration_ms": r.duration_ms,
        }))?;
        return Ok(super::exit::OK);
    }
    if g.quiet {
        return Ok(super::exit::OK);
    }
    for gr in &r.groups {
        let mut label = Vec::new();
        if let Some(h) = &gr.key.hostname {
            label.push(format!("host {h}"));
        }
        if let Some(p) = &gr.key.paths {
            label.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &gr.key.tags {
            label.push(format!("tags {}", t.join(",")));
        }
        println!(
            "group {}: keep {}, remove {}",
            if label.is_empty() {
                "(all)".into()
            } else {
                label.join(", ")
            },
            gr.keep.len(),
            gr.remove.len()
        );
        let mut rows = Vec::new();
        for k in &gr.reasons {
            if let Some(s) = find(&k.snapshot) {
                rows.push(vec![
                    k.snapshot.short(),
                    output::short_time(s.time, s.tz_offset_secs),
                    "keep".into(),
                    k.matches.join(", "),
                ]);
            }
        }
        for id in &gr.remove {
            if let Some(s) = find(id) {
                rows.push(vec![
                    id.short(),
                    output::short_time(s.time, s.tz_offset_secs),
                    "remove".into(),
                    String::new(),
                ]);
            }
        }
        rows.sort_by(|a, b| b[1].cmp(&a[1]));
        output::table(&["ID", "Time", "Action", "Reasons"], &rows)?;
        println!();
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!("{verb} {} snapshots", r.removed.len());
    for (id, until) in &r.retained {
        println!(
            "kept snapshot {}: the storage retains it until {until} (object lock); a later \
             forget or prune removes it",
            id.short()
        );
    }
    for id in &r.damaged_removed {
        println!("{verb} unreadable snapshot object {}", id.short());
    }
    if let Some(p) = &r.gc {
        println!(
            "used: {} blobs, {}; unused: {}",
            p.used_blobs,
            output::bytes(p.used_bytes),
            output::bytes(p.unused_bytes)
        );
        if dry_run {
            println!(
                "would delete {} packs ({}), repack {} packs ({}, copying {}), leaving {} unused",
                p.packs_to_delete.len(),
                output::bytes(p.bytes_deleted),
                p.packs_to_repack.len(),
                output::bytes(p.bytes_repacked),
                output::bytes(p.bytes_copied),
                output::bytes(p.unused_after)
            );
        } else {
            println!(
                "deleted {} packs, repacked {} into {} new packs, wrote {} index objects; freed {} in {:.1}s",
                p.packs_to_delete.len(),
                p.packs_to_repack.len(),
                p.packs_written,
                p.indexes_written,
                output::bytes(p.bytes_freed),
                r.duration_ms as f64 / 1000.0
            );
            if p.deferred > 0 {
                println!(
                    "scheduled {} packs and index objects for deletion: the storage retains them \
                     until {} at the latest (object lock); nothing references them any more and a \
                     later prune deletes them",
                    p.deferred,
                    p.deferred_until.as_deref().unwrap_or("?")
                );
            }
        }
    }
    Ok(super::exit::OK)
}

/// What hooks and metrics report of a forget or prune.
fn record_facts(g: &GlobalArgs, repo: &Repository, r: &PruneReport, dry_run: bool) {
    if dry_run {
        g.facts.update(|f| f.dry_run = true);
        return;
    }
    let c = if r.gc.is_some() { "prune" } else { "forget" };
    g.facts.update(|f| {
        f.snapshots = r
            .removed
            .iter()
            .map(|(id, _)| id.0)
            .chain(r.damaged_removed.iter().map(|id| id.0))
            .collect();
        f.bytes = r.gc.as_ref().map(|p| p.bytes_freed);
        f.summary = Some(match &r.gc {
            Some(p) => format!(
                "removed {} snapshots; deleted {} packs, repacked {}, freed {} bytes",
                r.removed.len() + r.damaged_removed.len(),
                p.packs_to_delete.len(),
                p.packs_to_repack.len(),
                p.bytes_freed
            ),
            None => format!(
                "removed {} snapshots",
                r.removed.len() + r.damaged_removed.len()
            ),
        });
    });
    g.facts.gauge(
        &format!("vault_{c}_snapshots_removed"),
        "Snapshots removed by the last run.",
        (r.removed.len() + r.damaged_removed.len()) as f64,
    );
    if let Some(p) = &r.gc {
        g.facts.gauge(
            "vault_prune_bytes_freed",
            "Bytes freed on the backend by the last run.",
            p.bytes_freed as f64,
        );
        g.facts.gauge(
            "vault_prune_packs_deleted",
            "Packs deleted by the last run.",
            p.packs_to_delete.len() as f64,
        );
        g.facts.gauge(
            "vault_prune_unused_bytes",
            "Unused bytes left in packs after the last run.",
            p.unused_after as f64,
        );
    }
    super::repository_gauges(g, repo);
}
