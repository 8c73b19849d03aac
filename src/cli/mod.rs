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

/// Exit codes (the same as restic's).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Fatal error.
    pub const FATAL: i32 = 1;
    /// Snapshot saved, but some sources could not be read (or restore incomplete).
    pub const PARTIAL: i32 = 3;
    /// No repository at the location.
    pub const NO_REPOSITORY: i32 = 10;
    /// The repository is locked.
    pub const LOCKED: i32 = 11;
    /// Wrong password.
    pub const WRONG_PASSWORD: i32 = 12;
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

/// The exit code for an error, from the library error kind anywhere in its chain.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(v) = cause.downcast_ref::<vault::Error>() {
            return match v.kind() {
                vault::ErrorKind::NoRepository => exit::NO_REPOSITORY,
                vault::ErrorKind::Locked => exit::LOCKED,
                vault::ErrorKind::WrongPassword => exit::WRONG_PASSWORD,
                _ => exit::FATAL,
            };
        }
    }
    exit::FATAL
}

/// Whether the error is a closed stdout (`vault ls | head`), which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<vault::Error>().is_some_and(|v| {
                matches!(v, vault::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}
