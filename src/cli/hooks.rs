//! Hooks: shell commands run before and after a command, described by `VAULT_HOOK_*`
//! environment variables. Their output goes to vault's standard error (its log), line by line
//! with the hook's stage, so that `--json` output on stdout stays clean.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::profile::Hooks;

/// Default time a hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The stages, in the order they can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Before the command.
    Before,
    /// After a successful command.
    After,
    /// After a failed command.
    Failure,
    /// Always, last.
    Finally,
}

impl Stage {
    /// Name used in messages and `VAULT_HOOK_STAGE`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::After => "after",
            Stage::Failure => "failure",
            Stage::Finally => "finally",
        }
    }

    fn commands(self, h: &Hooks) -> Vec<String> {
        let c = match self {
            Stage::Before => &h.before,
            Stage::After => &h.after,
            Stage::Failure => &h.failure,
            Stage::Finally => &h.finally,
        };
        c.as_ref().map(|c| c.list()).unwrap_or_default()
    }
}

/// Runs every hook of `stage` (in order; the first failure stops the rest of this stage).
/// Returns the failure, described.
pub fn run_stage(
    hooks: &[Hooks],
    stage: Stage,
    env: &[(String, String)],
    quiet: bool,
) -> Result<(), String> {
    for h in hooks {
        let timeout = h
            .timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(DEFAULT_TIMEOUT);
        for cmd in stage.commands(h) {
            run_one(stage, &cmd, env, timeout, quiet)?;
        }
    }
    Ok(())
}

fn run_one(
    stage: Stage,
    cmd: &str,
    env: &[(String, String)],
    timeout: Duration,
    quiet: bool,
) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("VAULT_HOOK_STAGE", stage.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so that a timeout kills everything the hook started.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{} hook {cmd:?} could not start: {e}", stage.name()))?;
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let forward = |r: Box<dyn Read + Send>| {
        let tx = tx.clone();
        let prefix = format!("hook {}: ", stage.name());
        std::thread::spawn(move || {
            for line in BufReader::new(r).split(b'\n').map_while(Result::ok) {
                if !quiet {
                    eprintln!("{prefix}{}", String::from_utf8_lossy(&line));
                }
            }
            let _ = tx.send(());
        });
    };
    if let Some(o) = child.stdout.take() {
        forward(Box::new(o));
    }
    if let Some(e) = child.stderr.take() {
        forward(Box::new(e));
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break Err(format!(
                    "{} hook {cmd:?} did not finish within {} and was killed",
                    stage.name(),
                    humantime::format_duration(timeout)
                ));
            }
            Ok(None) => {
                // Polling the child: a hook is a short shell command, and a blocking wait
                // could not honour the timeout.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Err(format!("{} hook {cmd:?}: {e}", stage.name())),
        }
    };
    // Let the output of the hook drain (a background process it left may hold the pipes:
    // do not wait for it forever).
    let drain_until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = drain_until.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} hook {cmd:?} failed ({})",
            stage.name(),
            match status.code() {
                Some(c) => format!("exit code {c}"),
                None => format!("{status}"),
            }
        ))
    }
}
