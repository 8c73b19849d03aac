//! `vault tag`: change the tags of existing snapshots (each changed snapshot is replaced by a
//! new snapshot object; its holds move with it).

use anyhow::{Result, bail};
use clap::Args;
use vault::repo::lock::LockKind;

use super::global::GlobalArgs;
use super::output;
use super::snapshots::FilterArgs;

/// Options of `vault tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Snapshots to change (ids, prefixes or `latest`); without any, every snapshot matching
    /// the filters (at least one filter is then required)
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable; `a,b` adds both)
    #[arg(long = "add", value_delimiter = ',')]
    pub add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long = "remove", value_delimiter = ',')]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` removes every tag)
    #[arg(long = "set", value_delimiter = ',', conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `vault tag`.
pub fn run(g: &GlobalArgs, a: TagArgs) -> Result<i32> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        return Err(super::usage("give --add, --remove or --set"));
    }
    let f = &a.filter;
    if a.snapshots.is_empty() && f.hosts.is_empty() && f.tags.is_empty() && f.paths.is_empty() {
        return Err(super::usage(
            "name the snapshots (ids or `latest`) or select them with --host/--tag/--path",
        ));
    }
    if a.add.iter().any(|t| t.trim().is_empty()) {
        bail!("an empty tag cannot be added");
    }
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Exclusive)?;
    let filter = f.filter();
    let selected = super::snapshots::select(&repo, &a.snapshots, &filter, "changed")?;
    let mut changed = Vec::new();
    for (id, snap) in selected {
        let mut tags: Vec<String> = if a.set.is_empty() {
            snap.tags.clone()
        } else {
            a.set.iter().filter(|t| !t.is_empty()).cloned().collect()
        };
        tags.extend(a.add.iter().cloned());
        tags.retain(|t| !a.remove.contains(t));
        tags.sort();
        tags.dedup();
        if tags == snap.tags {
            continue;
        }
        let mut new = snap.clone();
        new.tags = tags;
        new.original = Some(snap.original.unwrap_or(id));
        lock.check()?;
        let new_id = repo.replace_snapshot(&id, &new)?;
        changed.push((id, new_id, new.tags));
    }
    g.facts.update(|f| {
        f.snapshots = changed.iter().flat_map(|(o, n, _)| [o.0, n.0]).collect();
        f.summary = Some(format!("changed the tags of {} snapshots", changed.len()));
    });
    if g.json {
        output::json(&serde_json::json!({
            "changed": changed.iter().map(|(o, n, t)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex(), "tags": t})).collect::<Vec<_>>(),
        }))?;
    } else if !g.quiet {
        for (o, n, t) in &changed {
            println!(
                "snapshot {} is now {} (tags: {})",
                o.short(),
                n.short(),
                t.join(",")
            );
        }
        println!("{} snapshots changed", changed.len());
    }
    Ok(super::exit::OK)
}
