//! `vault repair index` and `vault repair snapshots`.

use anyhow::Result;
use clap::{Args, Subcommand};
use vault::repairer::{repair_index, repair_snapshots};
use vault::repo::lock::LockKind;

use super::global::GlobalArgs;
use super::output;

/// Repair subcommands.
#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs (after lost or damaged index objects)
    Index(RepairIndexArgs),
    /// Write replacement snapshots that leave out files whose data is gone
    Snapshots(RepairSnapshotsArgs),
    /// Remove hold objects that cannot be read (damaged); place the holds again afterwards
    Holds,
    /// Remove unreadable audit records and put every break of the audit trail on record
    /// (after a known loss), so that check passes again; the log keeps what was lost
    Audit(RepairAuditArgs),
}

/// Options of `vault repair audit`.
#[derive(Args, Debug)]
pub struct RepairAuditArgs {
    /// Only show what would be removed and acknowledged
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// Options of `vault repair index`.
#[derive(Args, Debug)]
pub struct RepairIndexArgs {
    /// Also read every pack and verify every blob: damaged blobs are left out, and the intact
    /// blobs of damaged packs are copied into new packs
    #[arg(long)]
    pub verify_data: bool,
}

/// Options of `vault repair snapshots`.
#[derive(Args, Debug)]
pub struct RepairSnapshotsArgs {
    /// Remove the original snapshots (and unreadable ones) once their replacements are written
    #[arg(long)]
    pub forget: bool,
}

/// Runs a repair subcommand.
pub fn run(g: &GlobalArgs, c: RepairCommand) -> Result<i32> {
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Exclusive)?;
    match c {
        RepairCommand::Audit(a) => {
            lock.check()?;
            let base = super::audit::base_draft("repair", g);
            let r = repo.repair_audit(a.dry_run, base)?;
            if a.dry_run {
                g.facts.update(|f| f.dry_run = true);
            }
            if g.json {
                output::json(&serde_json::json!({
                    "dry_run": a.dry_run,
                    "removed": r.removed,
                    "acknowledged": r.acknowledged.iter().map(|(w, f, t)| serde_json::json!({"writer": w, "from_seq": f, "to_seq": t})).collect::<Vec<_>>(),
                    "record": r.record,
                }))?;
            } else if !g.quiet {
                let verb = if a.dry_run { "would remove" } else { "removed" };
                for id in &r.removed {
                    println!("{verb} unreadable audit record {}", &id[..8]);
                }
                for (w, f, t) in &r.acknowledged {
                    println!(
                        "{} records {f}..{t} of chain {} as missing or replaced",
                        if a.dry_run {
                            "would acknowledge"
                        } else {
                            "acknowledged"
                        },
                        &w[..8]
                    );
                }
                if r.removed.is_empty() && r.acknowledged.is_empty() {
                    println!("the audit trail is whole: nothing to repair");
                }
            }
        }
        RepairCommand::Holds => {
            lock.check()?;
            let removed = repo.remove_damaged_holds()?;
            if g.json {
                output::json(&serde_json::json!({
                    "removed": removed
                        .iter()
                        .map(|(id, e)| serde_json::json!({"hold": id.to_hex(), "error": e.to_string()}))
                        .collect::<Vec<_>>(),
                }))?;
            } else if !g.quiet {
                for (id, e) in &removed {
                    println!("removed hold {}: {e}", id.short());
                }
                println!("{} damaged hold(s) removed", removed.len());
            }
        }
        RepairCommand::Index(a) => {
            let r = repair_index(&repo, &lock, a.verify_data, &g.progress())?;
            if g.json {
                output::json(&serde_json::to_value(&r)?)?;
            } else if !g.quiet {
                for p in &r.damaged_packs {
                    eprintln!("damaged: {}: {}", p.object, p.message);
                }
                for p in &r.damaged_blobs {
                    eprintln!("damaged: {}: {}", p.object, p.message);
                }
                println!(
                    "indexed {} blobs in {} of {} packs ({} blobs salvaged from damaged packs); replaced {} index objects",
                    r.blobs_indexed,
                    r.packs_indexed,
                    r.packs,
                    r.salvaged_blobs,
                    r.old_indexes_removed
                );
                if !r.damaged_packs.is_empty() {
                    println!(
                        "damaged packs are no longer indexed; run `vault repair snapshots` for the files that needed them"
                    );
                }
            }
        }
        RepairCommand::Snapshots(a) => {
            let r = repair_snapshots(&repo, &lock, a.forget)?;
            if g.json {
                output::json(&serde_json::to_value(&r)?)?;
            } else if !g.quiet {
                for s in &r.repaired {
                    let short = &s.snapshot[..8];
                    match &s.replacement {
                        Some(n) => println!("snapshot {short}: replaced by {}", &n[..8]),
                        None => println!("snapshot {short}: nothing could be saved"),
                    }
                    for p in &s.removed {
                        println!("  left out {}: {}", p.object, p.message);
                    }
                    if s.forgotten {
                        println!("  original removed");
                    }
                }
                println!(
                    "{} of {} snapshots needed repair",
                    r.repaired.len(),
                    r.snapshots
                );
                if !a.forget && !r.repaired.is_empty() {
                    println!(
                        "the originals are kept; remove them with `vault repair snapshots --forget` or `vault forget`"
                    );
                }
            }
        }
    }
    Ok(super::exit::OK)
}
