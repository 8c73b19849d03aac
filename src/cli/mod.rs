//! The `vault` command line: clap arguments → validated options → library call → output and
//! exit code. Nothing here is used by the library.

mod browse;
mod check;
mod copy;
mod global;
mod hold;
mod init;
mod key;
mod output;
mod progress;
mod prune;
mod repair;
mod restore;
mod snapshot;
mod snapshots;
mod unlock;

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
    Snapshot(snapshot::SnapshotArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// Restore a snapshot, whole or in part
    Restore(restore::RestoreArgs),
    /// List the contents of a snapshot
    Ls(browse::LsArgs),
    /// Write one file of a snapshot to standard output
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
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Snapshot(a) => snapshot::run(g, a),
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
        Command::Unlock(a) => unlock::run(g, a),
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
