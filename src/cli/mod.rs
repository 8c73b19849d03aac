//! The `vault` command line: clap arguments → validated options → library call → output and
//! exit code. Nothing here is used by the library.

mod apply;
mod audit;
mod browse;
mod cat;
mod check;
mod config;
mod copy;
mod diff;
mod facts;
mod find;
mod global;
mod hold;
mod hooks;
mod init;
mod key;
mod metrics;
mod mount;
mod output;
mod pg;
mod profile;
mod progress;
mod prune;
mod repair;
mod restore;
mod rewrite;
mod snapshot;
mod snapshots;
mod stats;
mod tag;
mod unlock;
mod wal;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use global::GlobalArgs;

/// vault — deduplicating, encrypted backups.
#[derive(Parser, Debug)]
#[command(name = "vault", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up files, directories or a stream
    Snapshot(Box<snapshot::SnapshotArgs>),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// Restore a snapshot, whole or in part
    Restore(restore::RestoreArgs),
    /// List the contents of a snapshot
    Ls(browse::LsArgs),
    /// Write one file of a snapshot to standard output (a directory as a tar or zip stream)
    Dump(browse::DumpArgs),
    /// Copy snapshots into another repository (re-chunked with its keys; already copied ones skipped)
    Copy(copy::CopyArgs),
    /// Remove snapshots (by id or policy) without collecting garbage
    Forget(prune::ForgetArgs),
    /// Apply a retention policy and collect garbage
    Prune(prune::PruneArgs),
    /// Place a legal hold on a snapshot: forget and prune will never remove it
    Hold(hold::HoldArgs),
    /// Remove the holds on a snapshot
    Release(hold::ReleaseArgs),
    /// Verify the repository: structure, and with --verify-data every byte
    Check(check::CheckArgs),
    /// Repair a damaged repository
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Manage passwords (key files)
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Remove stale locks
    Unlock(unlock::UnlockArgs),
    /// Find which snapshots hold matching paths (or a blob or tree)
    Find(find::FindArgs),
    /// Show what changed between two snapshots, or a snapshot and a local directory
    Diff(diff::DiffArgs),
    /// Write snapshots without the paths matching --exclude (with --forget and a prune, the
    /// erasure path)
    Rewrite(rewrite::RewriteArgs),
    /// Browse the snapshots as a read-only file system (FUSE) until Ctrl-C
    Mount(mount::MountArgs),
    /// Print one repository object, decrypted (JSON where structured)
    Cat(cat::CatArgs),
    /// Add, remove or set tags of snapshots (each changed snapshot is replaced; holds move)
    Tag(tag::TagArgs),
    /// Show the audit trail: who did what to the repository, when, with what result
    Log(audit::LogArgs),
    /// Repository size, unique data, compression and deduplication (per group, or per snapshot)
    Stats(stats::StatsArgs),
    /// PostgreSQL base backups and point-in-time restores
    #[command(subcommand)]
    Pg(pg::PgCommand),
    /// PostgreSQL WAL archiving: archive_command and restore_command
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Show the effective settings of a profile of the configuration file
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(config::CompletionArgs),
    /// Write man pages (one per command) into a directory
    Man(config::ManArgs),
}

impl Command {
    /// The command's name (hooks, metrics, audit records).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Snapshot(_) => "snapshot",
            Command::Snapshots(_) => "snapshots",
            Command::Restore(_) => "restore",
            Command::Ls(_) => "ls",
            Command::Dump(_) => "dump",
            Command::Copy(_) => "copy",
            Command::Forget(_) => "forget",
            Command::Prune(_) => "prune",
            Command::Hold(_) => "hold",
            Command::Release(_) => "release",
            Command::Check(_) => "check",
            Command::Repair(_) => "repair",
            Command::Key(_) => "key",
            Command::Unlock(_) => "unlock",
            Command::Stats(_) => "stats",
            Command::Log(_) => "log",
            Command::Tag(_) => "tag",
            Command::Cat(_) => "cat",
            Command::Diff(_) => "diff",
            Command::Find(_) => "find",
            Command::Rewrite(_) => "rewrite",
            Command::Mount(_) => "mount",
            Command::Wal(_) => "wal",
            Command::Pg(_) => "pg",
            Command::Config(_) => "config",
            Command::Completion(_) => "completion",
            Command::Man(_) => "man",
        }
    }

    /// Whether the command deletes (or replaces) repository objects, which an append-only
    /// client must never do.
    fn deletes(&self) -> bool {
        match self {
            Command::Forget(_)
            | Command::Prune(_)
            | Command::Release(_)
            | Command::Unlock(_)
            | Command::Tag(_)
            | Command::Repair(_) => true,
            Command::Rewrite(a) => a.forget,
            Command::Key(k) => matches!(
                k,
                key::KeyCommand::Remove { .. }
                    | key::KeyCommand::Passwd(_)
                    | key::KeyCommand::Upgrade
                    | key::KeyCommand::Rotate(_)
                    | key::KeyCommand::Reencrypt
            ),
            _ => false,
        }
    }

    /// Whether a write-only key may run the command: it adds snapshots, or only lists key
    /// files (nothing stored is decrypted).
    fn writes_only(&self) -> bool {
        match self {
            Command::Snapshot(_) => true,
            Command::Key(k) => matches!(k, key::KeyCommand::List),
            _ => false,
        }
    }

    /// Commands that run hooks and write metrics (those that work on a repository).
    fn supervised(&self) -> bool {
        !matches!(
            self,
            Command::Config(_) | Command::Completion(_) | Command::Man(_)
        )
    }
}

/// Parses the command line, applies the profile, runs the command with its hooks and
/// metrics; returns the exit code. Errors are reported here.
pub fn main_run(args: &[std::ffi::OsString], json: bool) -> i32 {
    audit::remember_args(args);
    use clap::{CommandFactory, FromArgMatches};
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        // Unknown options, missing values, bad numbers: a usage error (exit 2) before anything
        // is touched; with --json also as a JSON error object on stdout.
        Err(e) => return usage_error(e, json),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage_error(e, json),
    };
    crate::init_logging(&cli.global);
    if let Err(e) = global::set_limits(cli.global.limit_upload, cli.global.limit_download) {
        return report_error(&e, json);
    }
    let profile = match load_profile(&mut cli, &matches) {
        Ok(p) => p,
        Err(e) => return report_error(&e, json),
    };
    global::set_append_only(cli.global.append_only);
    if !cli.command.supervised() {
        return finish(run(cli, profile.as_ref()), json);
    }
    supervise(cli, profile, json)
}

/// Adds the repository's size and snapshot count to the metrics (when metrics are wanted;
/// cheap: pack sizes come from the local index). A failure only costs the gauges.
pub fn repository_gauges(g: &GlobalArgs, repo: &vault::repo::Repository) {
    if g.metrics_file.is_none() && g.metrics_push.is_none() {
        return;
    }
    match vault::stats::backend_size(repo) {
        Ok(s) => {
            g.facts.gauge(
                "vault_repository_size_bytes",
                "Bytes the repository occupies on the backend.",
                s.total_bytes as f64,
            );
            g.facts.gauge(
                "vault_repository_snapshots",
                "Snapshots in the repository.",
                s.snapshots as f64,
            );
            g.facts.gauge(
                "vault_repository_packs",
                "Pack files in the repository.",
                s.packs as f64,
            );
        }
        Err(e) => tracing::warn!(error = %e, "repository size for the metrics"),
    }
}

/// Loads and applies `--profile` (the configuration file is read only then).
fn load_profile(cli: &mut Cli, matches: &clap::ArgMatches) -> Result<Option<profile::Resolved>> {
    if matches!(cli.command, Command::Completion(_) | Command::Man(_)) {
        return Ok(None);
    }
    let Some(name) = cli.global.profile.clone() else {
        if cli.global.config.is_some() && !matches!(cli.command, Command::Config(_)) {
            return Err(usage(
                "--config is read only with --profile NAME (or `vault config show`)",
            ));
        }
        return Ok(None);
    };
    let file = profile::config_path(cli.global.config.as_deref())?;
    let r = profile::load(&file, &name)?;
    apply::apply(cli, matches, &r)?;
    Ok(Some(r))
}

fn finish(r: Result<i32>, json: bool) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) => report_error(&e, json),
    }
}

/// Runs a command between its hooks, then writes its metrics.
fn supervise(cli: Cli, profile: Option<profile::Resolved>, json: bool) -> i32 {
    use hooks::Stage;
    let name = cli.command.name();
    let g = cli.global.clone();
    let hook_list = profile.as_ref().map(|p| p.hooks(name)).unwrap_or_default();
    let identity = metrics::Identity {
        command: name.to_string(),
        profile: profile.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        host: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        repository: profile::mask_url(g.repo.as_deref().unwrap_or("")),
    };
    let mut env: Vec<(String, String)> = vec![
        ("VAULT_HOOK_COMMAND".into(), name.into()),
        ("VAULT_HOOK_PROFILE".into(), identity.profile.clone()),
        ("VAULT_HOOK_REPOSITORY".into(), identity.repository.clone()),
        ("VAULT_HOOK_HOST".into(), identity.host.clone()),
    ];
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let mut error: Option<String> = None;
    let mut code = match hooks::run_stage(&hook_list, Stage::Before, &env, g.quiet) {
        Err(m) => {
            let e = anyhow::anyhow!("{m}: `vault {name}` was not run, nothing was done");
            error = Some(format!("{e:#}"));
            report_error(&e, json)
        }
        Ok(()) => match run(cli, profile.as_ref()) {
            Ok(code) => code,
            Err(e) if is_broken_pipe(&e) => exit::OK,
            Err(e) => {
                error = Some(format!("{e:#}"));
                report_error(&e, json)
            }
        },
    };
    let facts = g.facts.get();
    let duration = clock.elapsed().as_secs_f64();
    env.extend([
        ("VAULT_HOOK_EXIT_CODE".into(), code.to_string()),
        (
            "VAULT_HOOK_DURATION_SECONDS".into(),
            format!("{duration:.3}"),
        ),
        ("VAULT_HOOK_ERROR".into(), error.clone().unwrap_or_default()),
        (
            "VAULT_HOOK_SNAPSHOT_ID".into(),
            facts.snapshot_id.clone().unwrap_or_default(),
        ),
        (
            "VAULT_HOOK_BYTES_ADDED".into(),
            facts.bytes_added.map(|b| b.to_string()).unwrap_or_default(),
        ),
        ("VAULT_HOOK_ANOMALIES".into(), facts.anomalies.join(",")),
    ]);
    if code == exit::OK {
        if let Err(m) = hooks::run_stage(&hook_list, Stage::After, &env, g.quiet) {
            eprintln!("error: {m}");
            code = exit::FATAL;
        }
    } else if let Err(m) = hooks::run_stage(&hook_list, Stage::Failure, &env, g.quiet) {
        eprintln!("warning: {m}");
    }
    if let Err(m) = hooks::run_stage(&hook_list, Stage::Finally, &env, g.quiet) {
        eprintln!("error: {m}");
        if code == exit::OK {
            code = exit::FATAL;
        }
    }
    audit::record(name, &identity.profile, code, error.as_deref(), &g);
    if g.metrics_file.is_some() || g.metrics_push.is_some() {
        let start_secs = started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64().floor())
            .unwrap_or(0.0);
        let samples = metrics::run_samples(&identity, start_secs, duration, code, &facts.gauges);
        // Metrics that cannot be delivered are reported but do not change the exit code:
        // the backup itself is what the code describes, and a missing metric is what the
        // "backup missing" alert catches.
        if let Some(f) = &g.metrics_file
            && let Err(e) = metrics::write_file(f, &identity, &samples)
        {
            eprintln!("error: {e:#}");
        }
        if let Some(u) = &g.metrics_push
            && let Err(e) = metrics::push(u, &identity, &samples)
        {
            eprintln!("error: {e:#}");
        }
    }
    code
}

/// Runs the parsed command; returns the exit code.
fn run(mut cli: Cli, profile: Option<&profile::Resolved>) -> Result<i32> {
    cli.global.command_deletes = cli.command.deletes().then_some(cli.command.name());
    cli.global.command_name = cli.command.name();
    cli.global.command_writes_only = cli.command.writes_only();
    let g = &cli.global;
    match cli.command {
        Command::Config(c) => config::run(g, c, profile),
        Command::Completion(a) => config::completion(a),
        Command::Man(a) => config::man(a),
        Command::Init(a) => init::run(g, a),
        Command::Snapshot(a) => snapshot::run(g, *a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Ls(a) => browse::ls(g, a),
        Command::Dump(a) => browse::dump(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Forget(a) => prune::forget(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Hold(a) => hold::hold(g, a),
        Command::Release(a) => hold::release(g, a),
        Command::Repair(c) => repair::run(g, c),
        Command::Key(c) => key::run(g, c),
        Command::Wal(c) => wal::run(g, c),
        Command::Pg(c) => pg::run(g, c),
        Command::Unlock(a) => unlock::run(g, a),
        Command::Stats(a) => stats::run(g, a),
        Command::Log(a) => audit::log(g, a),
        Command::Tag(a) => tag::run(g, a),
        Command::Cat(a) => cat::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Find(a) => find::run(g, a),
        Command::Rewrite(a) => rewrite::run(g, a),
        Command::Mount(a) => mount::run(g, a),
    }
}

/// Exit codes (the same as restic's).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Fatal error.
    pub const FATAL: i32 = 1;
    /// Usage error: unknown option, missing or malformed value (nothing was done).
    pub const USAGE: i32 = 2;
    /// Snapshot saved, but some sources could not be read (or restore incomplete).
    pub const PARTIAL: i32 = 3;
    /// Snapshot saved, but flagged as an anomaly (tagged `anomaly`; takes precedence over 3).
    pub const ANOMALY: i32 = 4;
    /// No repository at the location.
    pub const NO_REPOSITORY: i32 = 10;
    /// The repository is locked.
    pub const LOCKED: i32 = 11;
    /// Wrong password.
    pub const WRONG_PASSWORD: i32 = 12;
}

/// A usage error found after parsing (arguments that parse but do not go together).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error (exit 2, `"kind": "usage"`), for argument combinations clap cannot express.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The library error anywhere in an anyhow chain.
fn vault_error(e: &anyhow::Error) -> Option<&vault::Error> {
    e.chain().find_map(|c| c.downcast_ref::<vault::Error>())
}

/// The exit code for an error, from the library error kind anywhere in its chain.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Usage>().is_some() {
        return exit::USAGE;
    }
    match vault_error(e).map(vault::Error::kind) {
        Some(vault::ErrorKind::NoRepository) => exit::NO_REPOSITORY,
        Some(vault::ErrorKind::Locked) => exit::LOCKED,
        Some(vault::ErrorKind::WrongPassword) => exit::WRONG_PASSWORD,
        _ => exit::FATAL,
    }
}

/// Whether `--json` was given as an option (before any `--`), so that even a usage error can
/// be reported as JSON.
pub fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != "--")
        .any(|a| a.as_os_str() == "--json")
}

/// The `--json` error object: `{"error": {"kind", "message", "exit_code", "object"?}}`.
pub fn error_json(
    kind: &str,
    message: &str,
    exit_code: i32,
    object: Option<String>,
) -> serde_json::Value {
    let mut e = serde_json::json!({
        "kind": kind,
        "message": message,
        "exit_code": exit_code,
    });
    if let Some(o) = object {
        e["object"] = serde_json::Value::String(o);
    }
    serde_json::json!({ "error": e })
}

fn print_json_line(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
}

/// Reports a command-line parsing error (help and version requests are printed as usual);
/// returns the exit code.
pub fn usage_error(e: clap::Error, json: bool) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = e.print();
        return exit::OK;
    }
    if json {
        let message = e.render().to_string();
        let first = message
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        print_json_line(&error_json("usage", &first, exit::USAGE, None));
    }
    let _ = e.print();
    exit::USAGE
}

/// Prints an error (and, with `--json`, its JSON object on stdout); returns the exit code.
pub fn report_error(e: &anyhow::Error, json: bool) -> i32 {
    let code = exit_code(e);
    let message = format!("{e:#}");
    if json {
        let v = vault_error(e);
        let kind = if e.downcast_ref::<Usage>().is_some() {
            "usage"
        } else {
            v.map_or("error", |v| v.kind().name())
        };
        let object = v.and_then(|v| v.object()).map(|o| o.to_string());
        print_json_line(&error_json(kind, &message, code, object));
    }
    eprintln!("error: {message}");
    code
}

/// Raises the soft limit on open files to the hard limit: walking and restoring very deep
/// trees keeps one descriptor per directory level in flight.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Whether the error is a closed stdout (`vault ls | head`), which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<vault::Error>()
                .and_then(vault::Error::io_error)
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
