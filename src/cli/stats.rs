//! `vault stats`.

use anyhow::Result;
use clap::Args;
use vault::stats::{backend_size, data_stats, ratio, snapshot_totals};

use super::global::GlobalArgs;
use super::output::{self, bytes};
use super::snapshots::FilterArgs;

/// Options of `vault stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only these snapshots (ids, prefixes or `latest`): their sizes from their summaries
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `vault stats`.
pub fn run(g: &GlobalArgs, a: StatsArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    if !a.snapshots.is_empty() {
        let mut rows = Vec::new();
        let mut js = Vec::new();
        for spec in &a.snapshots {
            let (id, s) = repo.resolve_snapshot(spec, &a.filter.filter(), None)?;
            let m = &s.summary;
            js.push(serde_json::json!({
                "id": id.to_hex(), "short_id": id.short(),
                "time": output::time(s.time, s.tz_offset_secs),
                "files": m.total_files, "raw_bytes": m.total_bytes,
                "bytes_added": m.bytes_added, "bytes_stored": m.bytes_stored,
            }));
            rows.push(vec![
                id.short(),
                output::short_time(s.time, s.tz_offset_secs),
                m.total_files.to_string(),
                bytes(m.total_bytes),
                bytes(m.bytes_added),
                bytes(m.bytes_stored),
            ]);
        }
        if g.json {
            output::json(&serde_json::json!({ "snapshots": js }))?;
        } else {
            output::table(&["ID", "Time", "Files", "Size", "Added", "Stored"], &rows)?;
        }
        return Ok(super::exit::OK);
    }
    let size = backend_size(&repo)?;
    let data = data_stats(&repo)?;
    let (total, groups, damaged) = snapshot_totals(&repo, &a.filter.filter())?;
    let compression = ratio(data.raw_bytes, data.stored_bytes);
    let dedup = ratio(total.raw_bytes, data.raw_bytes);
    if g.json {
        output::json(&serde_json::json!({
            "backend": size,
            "unique": data,
            "snapshots": total,
            "damaged_snapshots": damaged,
            "compression_ratio": compression,
            "deduplication_ratio": dedup,
            "groups": groups.iter().map(|(k, t)| {
                let (host, paths) = k.split_once(' ').unwrap_or((k, ""));
                serde_json::json!({"host": host, "paths": paths, "totals": t})
            }).collect::<Vec<_>>(),
        }))?;
        return Ok(super::exit::OK);
    }
    println!(
        "repository on the backend: {} ({} packs, {}; metadata {})",
        bytes(size.total_bytes),
        size.packs,
        bytes(size.pack_bytes),
        bytes(size.metadata_bytes)
    );
    println!(
        "unique data: {} data and {} tree blobs, {} before compression, {} stored (compression {:.2}x)",
        data.data_blobs,
        data.tree_blobs,
        bytes(data.raw_bytes),
        bytes(data.stored_bytes),
        compression
    );
    println!(
        "snapshots: {} holding {} in {} files (deduplication {:.2}x; total saving {:.2}x)",
        total.snapshots,
        bytes(total.raw_bytes),
        total.files,
        dedup,
        ratio(total.raw_bytes, data.stored_bytes)
    );
    if damaged > 0 {
        println!("{damaged} snapshot objects cannot be read and are not counted");
    }
    if groups.len() > 1 {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(k, t)| {
                let (host, paths) = k.split_once(' ').unwrap_or((k, ""));
                vec![
                    host.to_string(),
                    paths.to_string(),
                    t.snapshots.to_string(),
                    bytes(t.raw_bytes),
                    bytes(t.bytes_added),
                ]
            })
            .collect();
        println!();
        output::table(&["Host", "Paths", "Snapshots", "Size", "Added"], &rows)?;
    }
    Ok(super::exit::OK)
}
