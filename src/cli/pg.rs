//! `vault pg backup|restore`: base backups of a running PostgreSQL cluster and point-in-time
//! restores (`format-spec/15-postgresql.md`).
//!
//! A base backup is an ordinary snapshot of the data directory taken between
//! `pg_backup_start` and `pg_backup_stop` (PostgreSQL's non-exclusive low-level API, held in one
//! psql session), so unchanged relation files are skipped by metadata like any incremental
//! snapshot. The backup label PostgreSQL returns at the stop is stored in the WAL archive as
//! `<start segment>.<offset>.vault-backup`, named by a tag of the snapshot. A restore picks the
//! newest base backup that stopped before the target, restores it, and writes the recovery
//! settings so that starting PostgreSQL replays the archived WAL exactly to the target.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use vault::format::time::Timestamp;
use vault::format::wal::{LABEL_SUFFIX, segment_number};
use vault::id::SnapshotId;
use vault::repo::Repository;

use super::global::GlobalArgs;
use super::output;

/// The tag every base backup carries.
pub const BASE_TAG: &str = "pg-base";
/// The tag naming a base backup's label object: `pg-label=<name>`.
pub const LABEL_TAG: &str = "pg-label=";

/// PostgreSQL subcommands.
#[derive(Subcommand, Debug)]
pub enum PgCommand {
    /// Take a base backup of a running cluster (archive_command must be `vault wal push %p`)
    Backup(BackupArgs),
    /// Restore the newest base backup before a point in time and set up recovery to it
    Restore(RestoreArgs),
}

/// Options of `vault pg backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The cluster's data directory (default: what the server reports)
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Connection string or database name for psql (default: PG* environment variables)
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// The psql program
    #[arg(long, default_value = "psql")]
    pub psql: PathBuf,
    /// More tags for the snapshot
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

/// Options of `vault pg restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The new data directory (must not exist, or be empty)
    #[arg(long)]
    pub target: PathBuf,
    /// Recover to this point in time (RFC 3339, e.g. 2026-11-30T05:10:11.5Z)
    #[arg(long, value_parser = output::parse_time, conflicts_with = "latest")]
    pub as_of: Option<(Timestamp, i32)>,
    /// Recover to the end of the archived WAL
    #[arg(long)]
    pub latest: bool,
    /// The restore_command to write (default: this vault binary with this repository and
    /// password file, `wal fetch %f %p`)
    #[arg(long)]
    pub restore_command: Option<String>,
}

/// Runs a PostgreSQL subcommand.
pub fn run(g: &GlobalArgs, c: PgCommand) -> Result<i32> {
    match c {
        PgCommand::Backup(a) => backup(g, a),
        PgCommand::Restore(a) => restore(g, a),
    }
}

/// One psql session held open across the backup.
struct Psql {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Psql {
    fn start(program: &Path, dbname: &str) -> Result<Psql> {
        let mut child = Command::new(program)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\x1f",
                "-d",
                dbname,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take().expect("invariant: piped");
        let stdout = BufReader::new(child.stdout.take().expect("invariant: piped"));
        Ok(Psql {
            child,
            stdin,
            stdout,
        })
    }

    /// Runs one query that returns one row; fields are separated by the unit separator (no
    /// field holds it: paths, hex, LSNs and numbers).
    fn row(&mut self, sql: &str) -> Result<Vec<String>> {
        writeln!(self.stdin, "{sql}")
            .and_then(|_| self.stdin.flush())
            .context("sending a query to psql")?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).context("reading psql")? == 0 {
            let status = self.child.wait().ok();
            bail!("psql ended ({status:?}) while running: {sql}");
        }
        Ok(line
            .trim_end_matches('\n')
            .split('\x1f')
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        // Ending the session aborts a backup that was not stopped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The label object of a base backup (format-spec 15.3).
struct Label {
    stop_time: Timestamp,
    stop_lsn: String,
    labelfile: String,
    spcmapfile: String,
}

fn encode_label(snapshot: &SnapshotId, start_lsn: &str, l: &Label) -> Vec<u8> {
    format!(
        "vault-pg-backup 1\nsnapshot={}\nstart_lsn={start_lsn}\nstop_lsn={}\nstop_time={}.{:09}\nspcmap={}\n\n{}",
        snapshot.to_hex(),
        l.stop_lsn,
        l.stop_time.secs,
        l.stop_time.nanos,
        hex::encode(l.spcmapfile.as_bytes()),
        l.labelfile
    )
    .into_bytes()
}

fn decode_label(bytes: &[u8]) -> Result<Label> {
    let text = std::str::from_utf8(bytes).context("label is not UTF-8")?;
    let (head, labelfile) = text.split_once("\n\n").context("label without a body")?;
    let mut lines = head.lines();
    if lines.next() != Some("vault-pg-backup 1") {
        bail!("not a vault base-backup label");
    }
    let get = |key: &str| -> Result<String> {
        head.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("label without {key}"))
    };
    let stop = get("stop_time")?;
    let (s, n) = stop.split_once('.').context("bad stop_time")?;
    Ok(Label {
        stop_time: Timestamp::new(s.parse()?, n.parse()?),
        stop_lsn: get("stop_lsn")?,
        spcmapfile: String::from_utf8(hex::decode(get("spcmap")?)?)?,
        labelfile: labelfile.to_string(),
    })
}

/// Directories whose contents a base backup leaves out (WAL, temporary and runtime state, per
/// PostgreSQL's documentation); a restore creates them empty.
const RUNTIME_DIRS: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// What PostgreSQL must not get back from a base backup. The directories themselves stay.
fn excludes(pgdata: &Path) -> Vec<String> {
    let d = pgdata.display();
    let mut v: Vec<String> = RUNTIME_DIRS
        .iter()
        .map(|dir| format!("{d}/{dir}/*"))
        .collect();
    for f in [
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "recovery.signal",
        "standby.signal",
    ] {
        v.push(format!("{d}/{f}"));
    }
    v.push("pgsql_tmp*".into());
    v
}

fn backup(g: &GlobalArgs, a: BackupArgs) -> Result<i32> {
    // Fail before PostgreSQL is touched if the repository cannot be opened.
    let repo = g.open()?;
    let mut psql = Psql::start(&a.psql, &a.dbname)?;
    let start = psql.row(
        "SELECT pg_walfile_name(lsn), lsn::text, current_setting('data_directory'), \
         (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
         current_setting('archive_mode') FROM pg_backup_start('vault', true) AS lsn;",
    )?;
    let [start_wal, start_lsn, data_dir, seg_size, archive_mode] = &start[..] else {
        bail!("unexpected answer from pg_backup_start: {start:?}");
    };
    if archive_mode == "off" {
        bail!("archive_mode is off: a base backup is useless without the WAL archive");
    }
    let seg_size: u64 = seg_size.parse().context("wal_segment_size")?;
    let offset = lsn_value(start_lsn)? % seg_size;
    let label_name = format!("{start_wal}.{offset:08X}{LABEL_SUFFIX}");
    let pgdata = a.pgdata.clone().unwrap_or_else(|| PathBuf::from(data_dir));
    // The snapshot, with every ordinary snapshot option's behaviour (parent, metadata skip,
    // progress, anomaly checks, hooks and metrics of `snapshot`).
    let mut argv: Vec<std::ffi::OsString> = vec!["snapshot".into(), pgdata.clone().into()];
    for e in excludes(&pgdata) {
        argv.push("--exclude".into());
        argv.push(e.into());
    }
    for t in [BASE_TAG.to_string(), format!("{LABEL_TAG}{label_name}")]
        .into_iter()
        .chain(a.tags.iter().cloned())
    {
        argv.push("--tag".into());
        argv.push(t.into());
    }
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: super::snapshot::SnapshotArgs,
    }
    let args = Wrap::try_parse_from(argv)
        .map_err(|e| anyhow!("building the snapshot: {e}"))?
        .a;
    // The snapshot's own report would interleave with ours (and break --json): it speaks only
    // through the shared run facts.
    let mut inner = g.clone();
    inner.json = false;
    inner.quiet = true;
    let code = super::snapshot::run(&inner, args)?;
    let id = g
        .facts
        .get()
        .snapshots
        .last()
        .copied()
        .map(SnapshotId)
        .context("the base backup's snapshot was not saved")?;
    // An anomaly flag (exit 4) is a warning about the data, not a broken backup: the snapshot
    // is whole and the backup goes on (its exit code is passed on). Unreadable files (3) make
    // the backup unusable.
    if code != super::exit::OK && code != super::exit::ANOMALY {
        bail!(
            "the snapshot of {} had errors (exit {code}); the base backup is not usable",
            pgdata.display()
        );
    }
    // Waits until PostgreSQL has archived every WAL file the backup needs.
    let stop = psql.row(
        "SELECT encode(convert_to(labelfile, 'UTF8'), 'hex'), \
         encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') || 'x', lsn::text, \
         pg_walfile_name(lsn), extract(epoch from clock_timestamp())::text \
         FROM pg_backup_stop(true);",
    )?;
    let [labelfile, spcmap, stop_lsn, stop_wal, stop_epoch] = &stop[..] else {
        bail!("unexpected answer from pg_backup_stop: {stop:?}");
    };
    let (secs, frac) = stop_epoch.split_once('.').unwrap_or((stop_epoch, "0"));
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().unwrap_or(0);
    let label = Label {
        stop_time: Timestamp::new(secs.parse().context("stop time")?, nanos),
        stop_lsn: stop_lsn.clone(),
        labelfile: String::from_utf8(hex::decode(labelfile)?)?,
        spcmapfile: String::from_utf8(hex::decode(spcmap.trim_end_matches('x'))?)?,
    };
    repo.wal_push(&label_name, &encode_label(&id, start_lsn, &label))?;
    g.facts.update(|f| {
        f.summary = Some(format!(
            "base backup {} from {start_wal} to {stop_wal}",
            id.short()
        ))
    });
    if g.json {
        output::json(&serde_json::json!({
            "snapshot": id.to_hex(),
            "start_wal": start_wal,
            "start_lsn": start_lsn,
            "stop_wal": stop_wal,
            "stop_lsn": stop_lsn,
            "stop_time": output::time(label.stop_time, 0),
            "label": label_name,
        }))?;
    } else if !g.quiet {
        println!(
            "base backup {}: WAL {start_wal} .. {stop_wal}, consistent from {}",
            id.short(),
            output::time(label.stop_time, 0)
        );
    }
    Ok(code)
}

/// A time as PostgreSQL reads it, to the microsecond, in UTC.
fn pg_time(t: Timestamp) -> String {
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        Err(_) => format!("@{}", t.secs),
    }
}

/// `X/Y` (hex) as a 64-bit WAL position.
fn lsn_value(lsn: &str) -> Result<u64> {
    let (hi, lo) = lsn.split_once('/').context("bad LSN")?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

/// A base backup a restore can start from.
struct Base {
    id: SnapshotId,
    label: Label,
}

fn bases(repo: &Repository) -> Result<(Vec<Base>, Vec<String>)> {
    let (snapshots, _) = repo.list_snapshots()?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (id, s) in snapshots {
        if !s.tags.iter().any(|t| t == BASE_TAG) {
            continue;
        }
        let Some(name) = s.tags.iter().find_map(|t| t.strip_prefix(LABEL_TAG)) else {
            continue;
        };
        match repo.wal_fetch(name) {
            Ok(Some(bytes)) => match decode_label(&bytes) {
                Ok(label) => out.push(Base { id, label }),
                Err(e) => skipped.push(format!("{}: label {name}: {e}", id.short())),
            },
            Ok(None) => skipped.push(format!(
                "{}: its label {name} is not archived (the backup did not finish)",
                id.short()
            )),
            Err(e) => skipped.push(format!("{}: label {name}: {e}", id.short())),
        }
    }
    out.sort_by_key(|b| b.label.stop_time);
    Ok((out, skipped))
}

/// When the newest archived segment was archived: recovery cannot go past it.
fn archive_end(repo: &Repository) -> Result<Option<Timestamp>> {
    let newest = repo
        .wal_list()?
        .into_iter()
        .filter_map(|(n, _)| segment_number(&n, 256).map(|k| (k, n)))
        .max();
    match newest {
        Some((_, name)) => Ok(repo.wal_object(&name)?.map(|w| w.pushed)),
        None => Ok(None),
    }
}

fn restore(g: &GlobalArgs, a: RestoreArgs) -> Result<i32> {
    if a.as_of.is_none() && !a.latest {
        bail!("say where to recover to: --as-of TIME or --latest");
    }
    if a.target.exists()
        && std::fs::read_dir(&a.target)
            .with_context(|| format!("reading {}", a.target.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new data directory",
            a.target.display()
        );
    }
    let repo = g.open()?;
    let (bases, skipped) = bases(&repo)?;
    for s in &skipped {
        eprintln!("note: base backup {s}; not used");
    }
    let Some(oldest) = bases.first() else {
        bail!("no usable base backup (tag {BASE_TAG}) in the repository");
    };
    let end = archive_end(&repo)?;
    let range = format!(
        "available: {} .. {}",
        output::time(oldest.label.stop_time, 0),
        end.map_or("(no archived WAL)".to_string(), |e| output::time(e, 0))
    );
    let base = match a.as_of {
        Some((t, _)) => {
            if t < oldest.label.stop_time {
                bail!(
                    "{} is before the oldest base backup was consistent; {range}",
                    output::time(t, 0)
                );
            }
            if end.is_none_or(|e| t > e) {
                bail!(
                    "{} is after the newest archived WAL; {range}",
                    output::time(t, 0)
                );
            }
            bases
                .iter()
                .rev()
                .find(|b| b.label.stop_time <= t)
                .expect("invariant: the oldest qualifies")
        }
        None => bases.last().expect("invariant: not empty"),
    };
    let target = std::path::absolute(&a.target)?;
    let parent = target
        .parent()
        .context("the target has no parent directory")?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(
        ".{}.vault-restore",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("pgdata")
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let snap = repo.load_snapshot(&base.id)?;
    let [pgdata] = &snap.paths[..] else {
        bail!(
            "base backup {} has {} paths, expected one",
            base.id.short(),
            snap.paths.len()
        );
    };
    let pgdata =
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(pgdata));
    let opts = vault::restorer::RestoreOptions {
        target: staging.clone(),
        ..Default::default()
    };
    let summary = vault::restorer::restore(&repo, &base.id, &opts, &g.progress())?;
    if !summary.errors.is_empty() || !summary.damaged.is_empty() {
        bail!(
            "the base backup did not restore completely ({} problems; first: {:?}); nothing was \
             moved to {}",
            summary.errors.len(),
            summary.errors.first(),
            a.target.display()
        );
    }
    let restored = staging.join(pgdata.strip_prefix("/").unwrap_or(&pgdata));
    if target.exists() {
        std::fs::remove_dir(&target)?;
    }
    std::fs::rename(&restored, &target)
        .with_context(|| format!("moving the restored data directory to {}", target.display()))?;
    std::fs::remove_dir_all(&staging)?;
    let meta = std::fs::metadata(&target)?;
    let owner = std::os::unix::fs::MetadataExt::uid(&meta);
    let group = std::os::unix::fs::MetadataExt::gid(&meta);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
    let write = |name: &str, body: &str| -> Result<()> {
        let p = target.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
        std::os::unix::fs::chown(&p, Some(owner), Some(group)).ok();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    };
    for dir in RUNTIME_DIRS {
        let p = target.join(dir);
        if !p.exists() {
            std::fs::create_dir(&p)?;
            std::os::unix::fs::chown(&p, Some(owner), Some(group)).ok();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    write("backup_label", &base.label.labelfile)?;
    if !base.label.spcmapfile.is_empty() {
        write("tablespace_map", &base.label.spcmapfile)?;
    }
    write("recovery.signal", "")?;
    let restore_command = match &a.restore_command {
        Some(c) => c.clone(),
        None => default_restore_command(g)?,
    };
    let mut conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap_or_default();
    conf.push_str(&format!(
        "\n# written by vault pg restore (base backup {})\nrestore_command = '{}'\n",
        base.id.short(),
        restore_command.replace('\'', "''")
    ));
    if let Some((t, _)) = a.as_of {
        conf.push_str(&format!(
            "recovery_target_time = '{}'\nrecovery_target_action = 'promote'\n",
            pg_time(t)
        ));
    }
    write("postgresql.auto.conf", &conf)?;
    g.facts.update(|f| {
        f.snapshots = vec![base.id.0];
        f.summary = Some(format!(
            "restored base backup {} to {}",
            base.id.short(),
            target.display()
        ));
    });
    if g.json {
        output::json(&serde_json::json!({
            "snapshot": base.id.to_hex(),
            "target": target,
            "base_consistent_at": output::time(base.label.stop_time, 0),
            "recovery_target_time": a.as_of.map(|(t, _)| pg_time(t)),
            "restore_command": restore_command,
        }))?;
    } else if !g.quiet {
        println!(
            "restored base backup {} (consistent at {}) to {}; start PostgreSQL on it to replay the archived WAL {}",
            base.id.short(),
            output::time(base.label.stop_time, 0),
            target.display(),
            match a.as_of {
                Some((t, _)) => format!("to {}", output::time(t, 0)),
                None => "to its end".into(),
            }
        );
    }
    Ok(super::exit::OK)
}

/// This binary with this repository and password source: `… wal fetch %f %p`.
fn default_restore_command(g: &GlobalArgs) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut cmd = vec![shell_quote(&exe.display().to_string())];
    if let Some(p) = &g.profile {
        cmd.push(format!("--profile {}", shell_quote(p)));
    }
    cmd.push(format!("--repo {}", shell_quote(g.location()?)));
    if let Some(f) = &g.password_file {
        cmd.push(format!(
            "--password-file {}",
            shell_quote(&std::path::absolute(f)?.display().to_string())
        ));
    }
    if let Some(c) = &g.cache_dir {
        cmd.push(format!(
            "--cache-dir {}",
            shell_quote(&std::path::absolute(c)?.display().to_string())
        ));
    }
    cmd.push("wal fetch %f %p".into());
    Ok(cmd.join(" "))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:@=+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
