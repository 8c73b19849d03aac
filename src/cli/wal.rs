//! `vault wal push|fetch|list|check`: PostgreSQL's archive_command and restore_command.
//!
//! ```text
//! archive_command = 'vault wal push %p'
//! restore_command = 'vault wal fetch %f %p'
//! ```
//! The repository, password and profile come from the environment or the configuration file
//! (`VAULT_PROFILE`), so the command lines stay short. Per-file cost is one unlock (give the
//! database host a key with cheap KDF parameters: its password file is on the host anyway),
//! one existence check and one write; no lock, no index, no audit record.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use vault::format::wal::{segment_name, segment_number};
use vault::repo::Repository;
use vault::repo::wal::Pushed;

use super::global::GlobalArgs;
use super::output;

/// WAL subcommands.
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Archive one WAL file (archive_command = 'vault wal push %p'); exit 0 only once it is
    /// stored, or already stored with the same content
    Push(PushArgs),
    /// Restore one archived WAL file (restore_command = 'vault wal fetch %f %p'); exit 1 when
    /// it is not archived, which ends recovery at the end of the archive
    Fetch(FetchArgs),
    /// List the archived WAL files and the gaps between segments
    List(ListArgs),
    /// Verify every archived WAL file and report gaps (exit 1 on a gap or damage)
    Check(ListArgs),
}

/// Options of `vault wal push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The WAL file (PostgreSQL's %p, relative to the data directory)
    pub path: PathBuf,
}

/// Options of `vault wal fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The WAL file name (PostgreSQL's %f)
    pub name: String,
    /// Where to write it (PostgreSQL's %p)
    pub dest: PathBuf,
    /// Also fetch the next N segments in parallel into a local spool, so that the following
    /// calls are served without a round trip
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub prefetch: usize,
}

/// Options of `vault wal list` and `vault wal check`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// WAL segment size of the cluster (16MiB unless initdb --wal-segsize said otherwise)
    #[arg(long, default_value = "16MiB", value_parser = output::parse_size)]
    pub wal_segment_size: u64,
}

/// Runs a WAL subcommand.
pub fn run(g: &GlobalArgs, c: WalCommand) -> Result<i32> {
    match c {
        WalCommand::Push(a) => push(g, a),
        WalCommand::Fetch(a) => fetch(g, a),
        WalCommand::List(a) => list(g, a, false),
        WalCommand::Check(a) => list(g, a, true),
    }
}

fn push(g: &GlobalArgs, a: PushArgs) -> Result<i32> {
    let name = a
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the WAL path has no file name")?
        .to_string();
    let file =
        std::fs::File::open(&a.path).with_context(|| format!("reading {}", a.path.display()))?;
    // Mapped, not read: a segment is 16 MiB and each call handles one.
    // SAFETY: PostgreSQL does not modify a WAL file while it is being archived (it is
    // complete and the archiver holds it until archive_command returns).
    let len = file.metadata()?.len();
    let map = if len == 0 {
        None
    } else {
        Some(
            unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("mapping {}", a.path.display()))?,
        )
    };
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    let repo = g.open()?;
    let pushed = repo.wal_push(&name, data)?;
    g.facts.update(|f| {
        f.bytes = Some(data.len() as u64);
        f.summary = Some(format!("archived {name}"));
    });
    if g.json {
        output::json(&serde_json::json!({
            "name": name,
            "bytes": data.len(),
            "stored": pushed == Pushed::Stored,
        }))?;
    } else if g.verbose > 0 {
        eprintln!(
            "{name}: {}",
            match pushed {
                Pushed::Stored => "archived",
                Pushed::AlreadyIdentical => "already archived with the same content",
            }
        );
    }
    Ok(super::exit::OK)
}

/// The local spool of prefetched segments.
fn spool_dir(repo: &Repository) -> Option<PathBuf> {
    repo.cache_dir().map(|d| d.join("wal-prefetch"))
}

/// Writes `data` to `dest` atomically (temporary name, fsync, rename).
fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.vault-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

fn fetch(g: &GlobalArgs, a: FetchArgs) -> Result<i32> {
    let repo = g.open()?;
    let spool = spool_dir(&repo);
    // A prefetched copy was verified when it was fetched; it is used once.
    let spooled = spool.as_ref().map(|d| d.join(&a.name));
    let data = match spooled.as_ref().and_then(|p| std::fs::read(p).ok()) {
        Some(d) => {
            let _ = std::fs::remove_file(spooled.as_ref().expect("invariant: read from it"));
            Some(d)
        }
        None => repo.wal_fetch(&a.name)?,
    };
    let Some(data) = data else {
        if !g.quiet && !g.json {
            eprintln!("{} is not archived", a.name);
        }
        return Ok(super::exit::FATAL);
    };
    write_atomically(&a.dest, &data)?;
    if a.prefetch > 0
        && let Some(dir) = spool
    {
        prefetch(&repo, &a.name, a.prefetch, &dir);
    }
    if g.json {
        output::json(&serde_json::json!({ "name": a.name, "bytes": data.len() }))?;
    }
    Ok(super::exit::OK)
}

/// Fetches the `n` segments after `name` (same timeline) into the spool, in parallel; a
/// segment that is not archived ends the run. Failures only cost the prefetch.
fn prefetch(repo: &Repository, name: &str, n: usize, dir: &Path) {
    const SEG_PER_LOG: u64 = 256;
    let Some((tli, number)) = segment_number(name, SEG_PER_LOG) else {
        return;
    };
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .is_err()
    {
        return;
    }
    let names: Vec<String> = (1..=n as u64)
        .map(|i| segment_name(tli, number + i, SEG_PER_LOG))
        .filter(|s| !dir.join(s).exists())
        .collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len().div_ceil(4).max(1)) {
            s.spawn(move || {
                for next in chunk {
                    match repo.wal_fetch(next) {
                        Ok(Some(d)) => {
                            let _ = write_atomically(&dir.join(next), &d);
                        }
                        _ => break,
                    }
                }
            });
        }
    });
}

/// A gap between archived segments of one timeline: the first and last missing names.
fn gaps(names: &[String], seg_per_log: u64) -> Vec<(String, String)> {
    let mut segs: Vec<(u32, u64)> = names
        .iter()
        .filter_map(|n| segment_number(n, seg_per_log))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for w in segs.windows(2) {
        let ((ta, a), (tb, b)) = (w[0], w[1]);
        if ta == tb && b > a + 1 {
            out.push((
                segment_name(ta, a + 1, seg_per_log),
                segment_name(ta, b - 1, seg_per_log),
            ));
        }
    }
    out
}

fn list(g: &GlobalArgs, a: ListArgs, verify: bool) -> Result<i32> {
    if a.wal_segment_size == 0 || (1u64 << 32) % a.wal_segment_size != 0 {
        bail!("--wal-segment-size must divide 4 GiB (a power of two)");
    }
    let seg_per_log = (1u64 << 32) / a.wal_segment_size;
    let repo = g.open()?;
    let files = repo.wal_list()?;
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let gaps = gaps(&names, seg_per_log);
    let mut damaged = Vec::new();
    if verify {
        for name in &names {
            if let Err(e) = repo.wal_fetch(name) {
                damaged.push(format!("{name}: {e}"));
            }
        }
    }
    g.facts
        .gauge("vault_wal_files", "Archived WAL files.", files.len() as f64);
    g.facts.gauge(
        "vault_wal_gaps",
        "Gaps in the archived WAL sequence (a gap breaks point-in-time recovery).",
        gaps.len() as f64,
    );
    if g.json {
        output::json(&serde_json::json!({
            "files": files.iter().map(|(n, s)| serde_json::json!({"name": n, "stored_bytes": s})).collect::<Vec<_>>(),
            "gaps": gaps.iter().map(|(a, b)| serde_json::json!({"first_missing": a, "last_missing": b})).collect::<Vec<_>>(),
            "damaged": damaged,
        }))?;
    } else if !g.quiet {
        if !verify {
            for (n, s) in &files {
                println!("{n}  {}", output::bytes(*s));
            }
        }
        let segments = names
            .iter()
            .filter(|n| segment_number(n, seg_per_log).is_some())
            .count();
        println!(
            "{} archived files ({segments} segments), {} gap{}",
            files.len(),
            gaps.len(),
            if gaps.len() == 1 { "" } else { "s" }
        );
        for (a, b) in &gaps {
            eprintln!("gap: {a} .. {b} missing (point-in-time recovery cannot cross it)");
        }
        for d in &damaged {
            eprintln!("damaged: {d}");
        }
    }
    if gaps.is_empty() && damaged.is_empty() {
        Ok(super::exit::OK)
    } else {
        Ok(super::exit::FATAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_found_per_timeline() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "00000002.history",
            "000000020000000000000005",
            "000000020000000000000006",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            gaps(&names, 256),
            vec![(
                "000000010000000000000003".to_string(),
                "000000010000000000000004".to_string()
            )]
        );
    }
}
