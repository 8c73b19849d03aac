//! `vault snapshot`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use vault::archiver::{ParentChoice, SnapshotOptions, Source, snapshot};
use vault::repo::lock::LockKind;
use vault::source::command::CommandReader;
use vault::source::exclude::PathMatcher;
use vault::source::meta::MetaOptions;

use super::global::GlobalArgs;
use super::output::{self, bytes, parse_time};

/// Options of `vault snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Files and directories to back up (any bytes; a path starting with `-` is written `./-x`)
    pub paths: Vec<PathBuf>,
    /// With --stdin-from-command: the command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    pub host: Option<String>,
    /// Record this time instead of now (RFC 3339, e.g. 2026-01-05T10:00:00+01:00)
    #[arg(long, value_parser = parse_time)]
    pub time: Option<(vault::format::time::Timestamp, i32)>,
    /// Leave out paths matching this glob (repeatable)
    #[arg(short, long = "exclude")]
    pub excludes: Vec<std::ffi::OsString>,
    /// Read exclude globs from this file, one per line (repeatable)
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Compare against this snapshot instead of the newest with the same host and paths
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Also record access times
    #[arg(long)]
    pub with_atime: bool,
    /// Back up standard input as one file
    #[arg(long, conflicts_with_all = ["stdin_from_command", "paths"])]
    pub stdin: bool,
    /// File name for --stdin or --stdin-from-command
    #[arg(long, default_value = "stdin")]
    pub stdin_name: std::ffi::OsString,
    /// Run the command given after `--` and back up its standard output; no snapshot if it
    /// fails
    #[arg(long, requires = "command", conflicts_with = "paths")]
    pub stdin_from_command: bool,
    /// Worker threads that read, chunk, compress and seal (default: twice the cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Concurrent uploads
    #[arg(long, default_value_t = 2)]
    pub upload_concurrency: usize,
    /// Read large files through a memory map (faster; the files must not be truncated meanwhile)
    #[arg(long)]
    pub mmap: bool,
    /// Do not compare the snapshot with the previous ones of its group (no anomaly flags)
    #[arg(long)]
    pub no_anomaly_check: bool,
    /// Read, chunk and compare everything and report what would be added; store nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Also back up the paths listed in this file, one per line (`#` comments and blank lines
    /// ignored; repeatable)
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Also back up the paths in this file, separated by NUL bytes, taken exactly as they are
    /// (`find … -print0`; repeatable)
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Leave out paths matching this glob, ignoring ASCII case (repeatable)
    #[arg(long = "iexclude", value_name = "GLOB")]
    pub iexcludes: Vec<std::ffi::OsString>,
    /// Leave out directories marked with a valid CACHEDIR.TAG
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out directories that contain an entry with this name (repeatable)
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<std::ffi::OsString>,
    /// Leave out files larger than this (e.g. 2GiB)
    #[arg(long, value_name = "SIZE", value_parser = super::output::parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Files read at once (the size of the reading and chunking pool; the same as --threads)
    #[arg(long, value_name = "N", conflicts_with = "threads")]
    pub read_concurrency: Option<usize>,
    /// Anomaly thresholds from the profile.
    #[arg(skip)]
    pub anomaly: super::profile::AnomalySection,
}

/// The anomaly thresholds: the defaults, changed by the profile.
fn thresholds(a: &SnapshotArgs) -> Option<vault::anomaly::Thresholds> {
    let p = &a.anomaly;
    if a.no_anomaly_check || p.enabled == Some(false) {
        return None;
    }
    let mut t = vault::anomaly::Thresholds::default();
    if let Some(v) = p.history {
        t.history = v.max(1) as usize;
    }
    if let Some(v) = p.shrink_percent {
        t.shrink_percent = v;
    }
    if let Some(v) = p.growth_factor {
        t.growth_factor = v;
    }
    if let Some(v) = p.min_added_bytes {
        t.min_added_bytes = v;
    }
    if let Some(v) = p.changed_percent {
        t.changed_percent = v;
    }
    if let Some(v) = p.incompressible_percent {
        t.incompressible_percent = v;
    }
    Some(t)
}

/// Runs `vault snapshot`.
pub fn run(g: &GlobalArgs, a: SnapshotArgs) -> Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut patterns: Vec<Vec<u8>> = a.excludes.iter().map(|p| p.as_bytes().to_vec()).collect();
    for f in &a.exclude_files {
        patterns.extend(PathMatcher::read_pattern_file(f)?);
    }
    let excludes = PathMatcher::new_bytes(&patterns)?;
    if !a.command.is_empty() && !a.stdin_from_command {
        return Err(super::usage(
            "a command after `--` is only taken with --stdin-from-command: \
             vault snapshot --stdin-from-command -- CMD ARGS...",
        ));
    }
    let stdin_name = a.stdin_name.as_bytes().to_vec();
    let mut paths = a.paths.clone();
    for f in &a.files_from {
        let data = std::fs::read(f).map_err(|e| vault::Error::io(f, e))?;
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line).trim_ascii();
            if !line.is_empty() && !line.starts_with(b"#") {
                paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(line)));
            }
        }
    }
    for f in &a.files_from_verbatim {
        let data = std::fs::read(f).map_err(|e| vault::Error::io(f, e))?;
        for p in data.split(|&b| b == 0).filter(|p| !p.is_empty()) {
            paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(p)));
        }
    }
    if (!a.files_from.is_empty() || !a.files_from_verbatim.is_empty()) && paths.is_empty() {
        bail!("the --files-from files list no paths: nothing to back up");
    }
    let iexcludes = PathMatcher::new_bytes(
        &a.iexcludes
            .iter()
            .map(|p| p.as_bytes().to_ascii_lowercase())
            .collect::<Vec<_>>(),
    )?;
    let mut markers: Vec<(std::ffi::OsString, Option<Vec<u8>>)> = a
        .exclude_if_present
        .iter()
        .map(|n| (n.clone(), None))
        .collect();
    if a.exclude_caches {
        markers.push((
            "CACHEDIR.TAG".into(),
            Some(vault::archiver::CACHEDIR_TAG_SIGNATURE.to_vec()),
        ));
    }
    if !a.stdin && !a.stdin_from_command && paths.is_empty() {
        bail!("nothing to back up: give paths, --stdin or --stdin-from-command -- CMD");
    }
    // Everything is validated before the repository is opened; the command (pg_dump …) is
    // started only once the repository is open and locked.
    let repo = g.open()?;
    let lock = g.lock(&repo, LockKind::Shared)?;
    let source = if a.stdin {
        Source::Stream {
            name: stdin_name,
            reader: Box::new(std::io::stdin()),
        }
    } else if a.stdin_from_command {
        Source::Stream {
            name: stdin_name,
            reader: Box::new(CommandReader::spawn(&a.command)?),
        }
    } else {
        Source::Paths(paths)
    };
    let parent = match &a.parent {
        Some(p) => ParentChoice::Id(repo.resolve_snapshot_id(p)?),
        None => ParentChoice::Auto,
    };
    let mut skip = Vec::new();
    if let Some(d) = repo.cache_dir() {
        skip.push(d);
    }
    let opts = SnapshotOptions {
        tags: a.tags.clone(),
        host: a.host.clone(),
        time: a.time,
        excludes,
        one_file_system: a.one_file_system,
        parent,
        force: a.force,
        meta: MetaOptions {
            with_atime: a.with_atime,
        },
        threads: a
            .threads
            .or(a.read_concurrency)
            .unwrap_or(SnapshotOptions::default().threads),
        upload_concurrency: a.upload_concurrency,
        mmap: a.mmap,
        skip,
        anomaly: if a.dry_run { None } else { thresholds(&a) },
        iexcludes,
        exclude_if_present: markers,
        exclude_larger_than: a.exclude_larger_than,
        dry_run: a.dry_run,
    };
    let progress = g.progress();
    let out = snapshot(&repo, source, &opts, &lock, &progress).context("snapshot failed")?;
    drop(lock);
    let s = &out.snapshot;
    let sum = &s.summary;
    if a.dry_run {
        g.facts.update(|f| f.dry_run = true);
        if g.json {
            output::json(&serde_json::json!({
                "dry_run": true,
                "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
                "summary": sum,
                "errors": out.errors,
            }))?;
        } else if !g.quiet {
            println!("dry run: nothing was stored");
            println!(
                "files: {} new, {} changed, {} unmodified",
                sum.files_new, sum.files_changed, sum.files_unmodified
            );
            println!(
                "would add {} ({} stored) in {} data and {} tree blobs; read {} files, {}",
                bytes(sum.bytes_added),
                bytes(sum.bytes_stored),
                sum.data_blobs,
                sum.tree_blobs,
                sum.total_files,
                bytes(sum.total_bytes)
            );
        }
        return Ok(if out.errors.is_empty() {
            super::exit::OK
        } else {
            super::exit::PARTIAL
        });
    }
    record_facts(g, &out);
    super::repository_gauges(g, &repo);
    if g.json {
        output::json(&serde_json::json!({
            "id": out.id.to_hex(),
            "short_id": out.id.short(),
            "time": output::time(s.time, s.tz_offset_secs),
            "hostname": s.hostname,
            "paths": s.paths.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
            "tags": s.tags,
            "parent": s.parent.map(|p| p.to_hex()),
            "tree": s.tree.to_hex(),
            "summary": sum,
            "errors": out.errors,
            "anomalies": out.anomalies,
        }))?;
    } else if !g.quiet {
        println!("snapshot {} saved", out.id.short());
        println!(
            "files: {} new, {} changed, {} unmodified",
            sum.files_new, sum.files_changed, sum.files_unmodified
        );
        println!(
            "dirs:  {} new, {} changed, {} unmodified",
            sum.dirs_new, sum.dirs_changed, sum.dirs_unmodified
        );
        println!(
            "added to the repository: {} ({} stored) in {} data and {} tree blobs",
            bytes(sum.bytes_added),
            bytes(sum.bytes_stored),
            sum.data_blobs,
            sum.tree_blobs
        );
        println!(
            "processed {} files, {} in {:.1}s",
            sum.total_files,
            bytes(sum.total_bytes),
            sum.duration_ms as f64 / 1000.0
        );
    }
    for an in &out.anomalies {
        eprintln!("anomaly ({}): {}", an.kind, an.message);
    }
    if !out.anomalies.is_empty() {
        eprintln!(
            "warning: snapshot {} is saved but looks wrong compared with the previous {} of its group; it is tagged `anomaly` (exit code {})",
            out.id.short(),
            out.history_len,
            super::exit::ANOMALY
        );
    }
    if !out.errors.is_empty() {
        eprintln!(
            "warning: {} source entries could not be read and are not in the snapshot:",
            out.errors.len()
        );
        for e in &out.errors {
            eprintln!("  {}: {}", e.path, e.error);
        }
    }
    Ok(if !out.anomalies.is_empty() {
        super::exit::ANOMALY
    } else if !out.errors.is_empty() {
        super::exit::PARTIAL
    } else {
        super::exit::OK
    })
}

/// What hooks and metrics report of a snapshot.
fn record_facts(g: &GlobalArgs, out: &vault::archiver::SnapshotOutcome) {
    let sum = &out.snapshot.summary;
    let f = &g.facts;
    f.update(|r| {
        r.snapshot_id = Some(out.id.to_hex());
        r.bytes_added = Some(sum.bytes_added);
        r.snapshots = vec![out.id.0];
        r.bytes = Some(sum.bytes_added);
        r.summary = Some(format!(
            "snapshot {} saved: {} files new, {} changed, {} unmodified; {} bytes added{}",
            out.id.short(),
            sum.files_new,
            sum.files_changed,
            sum.files_unmodified,
            sum.bytes_added,
            if out.anomalies.is_empty() {
                String::new()
            } else {
                format!(
                    "; anomalies: {}",
                    out.anomalies
                        .iter()
                        .map(|a| a.kind)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        ));
        r.anomalies = out.anomalies.iter().map(|a| a.kind.to_string()).collect();
    });
    for (name, help, v) in [
        (
            "vault_snapshot_bytes_read",
            "Bytes read from the sources.",
            sum.bytes_read,
        ),
        (
            "vault_snapshot_bytes_added",
            "Bytes of new data added (before compression).",
            sum.bytes_added,
        ),
        (
            "vault_snapshot_bytes_stored",
            "Bytes stored for the new data (compressed, encrypted).",
            sum.bytes_stored,
        ),
        (
            "vault_snapshot_total_bytes",
            "Bytes of file data in the snapshot.",
            sum.total_bytes,
        ),
        (
            "vault_snapshot_errors",
            "Source entries that could not be read.",
            out.errors.len() as u64,
        ),
    ] {
        f.gauge(name, help, v as f64);
    }
    for (state, v) in [
        ("new", sum.files_new),
        ("changed", sum.files_changed),
        ("unmodified", sum.files_unmodified),
    ] {
        f.gauge_with(
            "vault_snapshot_files",
            "Files in the snapshot by state against its parent.",
            &[("state", state)],
            v as f64,
        );
    }
    for kind in vault::anomaly::KINDS {
        let raised = out.anomalies.iter().any(|a| a.kind == kind);
        f.gauge_with(
            "vault_snapshot_anomaly",
            "1 if the last snapshot was flagged with this anomaly.",
            &[("kind", kind)],
            if raised { 1.0 } else { 0.0 },
        );
    }
}
