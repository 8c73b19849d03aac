//! `vault hold` and `vault release`.

use anyhow::{Result, bail};
use clap::Args;
use vault::format::hold::Hold;
use vault::format::time::Timestamp;
use vault::repo::lock::LockKind;

use super::global::GlobalArgs;
use super::output;

/// Options of `vault hold`.
#[derive(Args, Debug)]
pub struct HoldArgs {
    /// Snapshot to hold (id, unique prefix or `latest`)
    pub snapshot: String,
    /// Why (a ticket or case reference); recorded with the hold
    #[arg(long)]
    pub reason: String,
}

/// Options of `vault release`.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Snapshot to release (id, unique prefix or `latest`)
    pub snapshot: String,
}

/// Runs `vault hold`.
pub fn hold(g: &GlobalArgs, a: HoldArgs) -> Result<i32> {
    if a.reason.trim().is_empty() {
        bail!("a hold needs a --reason");
    }
    let repo = g.open()?;
    // Shared: a running prune (exclusive) must not miss a hold placed meanwhile.
    let _lock = g.lock(&repo, LockKind::Shared)?;
    let (id, _) = repo.resolve_snapshot(&a.snapshot, &Default::default(), None)?;
    let created = Timestamp::now();
    let hold_id = repo.add_hold(&Hold {
        snapshot: id,
        reason: a.reason.clone(),
        created,
        hostname: vault::source::owner::hostname(),
        username: vault::source::owner::current_username(),
    })?;
    if g.json {
        output::json(&serde_json::json!({
            "hold": hold_id.to_hex(),
            "snapshot": id.to_hex(),
            "short_id": id.short(),
            "reason": a.reason,
            "created": output::time(created, 0),
        }))?;
    } else if !g.quiet {
        println!("snapshot {} is held: {}", id.short(), a.reason);
    }
    Ok(super::exit::OK)
}

/// Runs `vault release`.
pub fn release(g: &GlobalArgs, a: ReleaseArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.lock(&repo, LockKind::Shared)?;
    let (id, _) = repo.resolve_snapshot(&a.snapshot, &Default::default(), None)?;
    g.facts.update(|f| f.snapshots = vec![id.0]);
    let n = repo.release_holds(&id)?;
    if n == 0 {
        bail!("snapshot {} is not held", id.short());
    }
    if g.json {
        output::json(&serde_json::json!({
            "snapshot": id.to_hex(),
            "short_id": id.short(),
            "released": n,
        }))?;
    } else if !g.quiet {
        println!("released {n} hold(s) on snapshot {}", id.short());
    }
    Ok(super::exit::OK)
}
