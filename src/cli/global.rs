//! Global options: where the repository is, how to get the password, how to print.
//!
//! This is the only place that reads the process environment for the library: backend
//! credentials, the cache location and the temporary directory are captured here and passed
//! down as options.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use vault::backend::DynBackend;
use vault::repo::lock::{LockGuard, LockKind};
use vault::repo::{OpenOptions, Repository};
use zeroize::Zeroizing;

use super::progress::CliProgress;

/// Options every command accepts.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location: /path, s3:BUCKET/PREFIX, azblob:CONTAINER/PREFIX, gcs:BUCKET/PREFIX,
    /// sftp:USER@HOST:/PATH, webdav:https://HOST/PATH, opendal:SCHEME
    #[arg(short = 'r', long, env = "VAULT_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Backend option KEY=VALUE, repeatable (e.g. -o endpoint=http://127.0.0.1:9000,
    /// -o storage_class=STANDARD_IA)
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    pub options: Vec<String>,
    /// Read the password from the first line of this file
    #[arg(long, env = "VAULT_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use the first line of its output as the password
    #[arg(long, env = "VAULT_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Print machine-readable JSON instead of text (errors too: {"error": {...}})
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more: -v lists new and changed files, -vv adds unchanged ones and progress notes
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Do not show progress
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Directory of the local cache (default: $XDG_CACHE_HOME/vault or ~/.cache/vault)
    #[arg(long, env = "VAULT_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Use a temporary cache that is deleted on exit
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Do not lock the repository (reading commands only; a read-only repository is read
    /// without a lock automatically)
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Wait this long for a conflicting lock to go away (e.g. 10m) instead of failing
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub wait_lock: Option<Duration>,
    /// Configuration file (default: $VAULT_CONFIG, ~/.config/vault/vault.toml,
    /// /etc/vault/vault.toml); read only with --profile or `vault config`
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Take settings from this profile of the configuration file (typed flags win)
    #[arg(long, env = "VAULT_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// After the command, write Prometheus metrics to this file (textfile-collector format,
    /// replaced atomically; other commands' metrics in it are kept)
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// After the command, push the metrics to this Prometheus Pushgateway (http://HOST:9091)
    #[arg(long, global = true, value_name = "URL")]
    pub metrics_push: Option<String>,
    /// Never delete anything: snapshot, check, restore and copy work with storage credentials
    /// that cannot delete; forget, prune, release and unlock are refused
    #[arg(long, env = "VAULT_APPEND_ONLY", global = true)]
    pub append_only: bool,
    /// Limit uploads to this many KiB/s (every backend)
    #[arg(long, global = true, value_name = "KiB/s")]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s (every backend)
    #[arg(long, global = true, value_name = "KiB/s")]
    pub limit_download: Option<u64>,
    /// Whether the command removes or replaces objects (set before it runs): an append-only
    /// key then refuses it at once.
    #[arg(skip)]
    pub command_deletes: Option<&'static str>,
    /// The running command's name (set by the dispatcher).
    #[arg(skip)]
    pub command_name: &'static str,
    /// Whether a write-only key may run the command (set by the dispatcher).
    #[arg(skip)]
    pub command_writes_only: bool,
    /// What the command did, for hooks and metrics (filled in by the command).
    #[arg(skip)]
    pub facts: super::facts::Facts,
}

static LIMITS: std::sync::OnceLock<(Option<u64>, Option<u64>)> = std::sync::OnceLock::new();
static APPEND_ONLY: AtomicBool = AtomicBool::new(false);

/// Records `--append-only` for every backend opened.
pub fn set_append_only(on: bool) {
    APPEND_ONLY.store(on, Ordering::Relaxed);
}

/// Records `--limit-upload` and `--limit-download` (KiB/s) for every backend opened.
pub fn set_limits(up: Option<u64>, down: Option<u64>) -> Result<()> {
    if up == Some(0) || down == Some(0) {
        return Err(super::usage("a bandwidth limit must be at least 1 KiB/s"));
    }
    let _ = LIMITS.set((up.map(|k| k * 1024), down.map(|k| k * 1024)));
    Ok(())
}

/// The backend open settings from the environment (credentials, test-only fault injection).
pub fn open_settings(create: bool) -> Result<vault::backend::location::OpenSettings> {
    use vault::backend::location::{ENV_VARS, Environment, OpenSettings};
    #[allow(unused_mut)]
    let mut s = OpenSettings {
        env: Environment::from_pairs(
            ENV_VARS
                .iter()
                .filter_map(|n| std::env::var(n).ok().map(|v| (*n, v))),
        ),
        create,
        append_only: APPEND_ONLY.load(Ordering::Relaxed),
        limit_upload: LIMITS.get().and_then(|l| l.0),
        limit_download: LIMITS.get().and_then(|l| l.1),
        ..OpenSettings::default()
    };
    #[cfg(feature = "fault-injection")]
    {
        if let Ok(spec) = std::env::var("VAULT_FAULTS")
            && !spec.is_empty()
        {
            s.faults = Some(vault::backend::fault::FaultOptions::parse(&spec)?);
        }
        if let Some(ms) = std::env::var("VAULT_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            s.retry.base = Duration::from_millis(ms);
        }
    }
    Ok(s)
}

/// Default root of the local cache: `$XDG_CACHE_HOME/vault`, else `$HOME/.cache/vault`.
fn default_cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(Path::new(&d).join("vault"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| Path::new(&h).join(".cache").join("vault"))
}

static READ_ONLY_WARNED: AtomicBool = AtomicBool::new(false);

impl GlobalArgs {
    pub fn location(&self) -> Result<&str> {
        self.repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository given: use --repo or set VAULT_REPOSITORY"))
    }

    /// The backend named by `--repo` (never creates anything).
    pub fn backend(&self) -> Result<DynBackend> {
        open_backend(self.location()?, &self.options, false)
    }

    /// The backend named by `--repo`, for `init` (may create a local directory).
    pub fn backend_for_init(&self) -> Result<DynBackend> {
        open_backend(self.location()?, &self.options, true)
    }

    /// Open options derived from the cache flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            cache_root: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(default_cache_root)
            },
            temp_dir: std::env::temp_dir(),
        }
    }

    /// The repository password, from the first source that gives one.
    pub fn password(&self) -> Result<Zeroizing<String>> {
        read_password(
            self.password_file.as_ref(),
            self.password_command.as_deref(),
            "VAULT_PASSWORD",
            "repository password: ",
        )
    }

    /// Asks for a new password (twice on a terminal) or reads it from `file`.
    pub fn new_password(&self, file: Option<&PathBuf>) -> Result<Zeroizing<String>> {
        if let Some(f) = file {
            return password_from_file(f);
        }
        if std::io::stdin().is_terminal() {
            let a = Zeroizing::new(rpassword::prompt_password("new password: ")?);
            let b = Zeroizing::new(rpassword::prompt_password("new password again: ")?);
            if a != b {
                bail!("the passwords do not match");
            }
            if a.is_empty() {
                bail!("an empty password is not allowed");
            }
            return Ok(a);
        }
        bail!("no new password given: use --new-password-file or a terminal")
    }

    /// Opens and unlocks the repository. A location without a repository is reported before
    /// any password is asked for.
    pub fn open(&self) -> Result<Repository> {
        self.open_keeping_password().map(|(repo, _)| repo)
    }

    /// Like [`GlobalArgs::open`], also returning the password that unlocked it (for rewriting
    /// the key in use, as `vault key upgrade` does, without asking again).
    pub fn open_keeping_password(&self) -> Result<(Repository, Zeroizing<String>)> {
        let location = self.location()?;
        let context = |e: vault::Error| -> anyhow::Error {
            match e.kind() {
                // These name the location (or need no more words) already.
                vault::ErrorKind::NoRepository | vault::ErrorKind::WrongPassword => e.into(),
                _ => anyhow::Error::new(e).context(format!("opening repository {location}")),
            }
        };
        let found = Repository::locate(self.backend()?).map_err(context)?;
        let password = self.password()?;
        let repo = found
            .unlock(password.as_bytes(), self.open_options())
            .map_err(context)?;
        // Refused before anything is read or written; the append-only backend layer would
        // refuse each delete anyway, but a command must not stop halfway.
        if repo.is_write_only() && !self.command_writes_only {
            return Err(vault::Error::PermissionDenied {
                what: format!("vault {}", self.command_name),
                reason: "this key is write-only: it can add snapshots (`vault snapshot`) and list \
                         key files, but cannot read, list or change anything stored; use a key \
                         that reads"
                    .into(),
            }
            .into());
        }
        if let Some(command) = self.command_deletes
            && repo.backend().append_only()
        {
            return Err(vault::Error::PermissionDenied {
                what: format!("vault {command}"),
                reason:
                    "it removes or replaces repository objects, and this client is append-only \
                         (--append-only, or an append-only key): run it with a full key, \
                         without --append-only"
                        .into(),
            }
            .into());
        }
        self.facts.opened(&repo);
        Ok((repo, password))
    }

    /// Takes a lock of `kind` for a command that writes (honouring `--wait-lock`).
    pub fn lock(&self, repo: &Repository, kind: LockKind) -> Result<LockGuard> {
        if self.no_lock {
            bail!("--no-lock is only allowed for commands that do not change the repository");
        }
        Ok(repo.lock(kind, self.wait_lock)?)
    }

    /// Takes a shared lock for a command that only reads. Without `--no-lock`, a repository
    /// that refuses writes (read-only storage, no permission) is read without a lock, which
    /// is said once on stderr.
    pub fn read_lock(&self, repo: &Repository) -> Result<Option<LockGuard>> {
        if self.no_lock {
            return Ok(None);
        }
        match repo.lock(LockKind::Shared, self.wait_lock) {
            Ok(g) => Ok(Some(g)),
            Err(e) if e.kind() == vault::ErrorKind::PermissionDenied => {
                if !READ_ONLY_WARNED.swap(true, Ordering::Relaxed) && !self.quiet {
                    eprintln!(
                        "warning: the repository cannot be written ({e}); reading it without a lock"
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The progress display for this invocation.
    pub fn progress(&self) -> CliProgress {
        CliProgress::new(
            !(self.quiet || self.json || self.no_progress),
            if self.json || self.quiet {
                0
            } else {
                self.verbose
            },
        )
    }
}

/// The first line of a password file; an empty one is an error of its own, not a wrong
/// password.
fn password_from_file(f: &Path) -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(
        std::fs::read(f)
            .map_err(|e| vault::Error::io(f, e))
            .context("reading the password file")?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("password file {} is not UTF-8 text", f.display()))?;
    let line = first_line(text);
    if line.is_empty() {
        bail!(
            "password file {} is empty (the password is its first line)",
            f.display()
        );
    }
    Ok(Zeroizing::new(line))
}

/// A password from a file, a command, an environment variable or the terminal, in that order.
pub fn read_password(
    file: Option<&PathBuf>,
    command: Option<&str>,
    env_name: &str,
    prompt: &str,
) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        return password_from_file(f);
    }
    if let Some(cmd) = command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running password command {cmd:?}"))?;
        if !out.status.success() {
            bail!("password command {cmd:?} failed ({})", out.status);
        }
        let line = Zeroizing::new(first_line(&String::from_utf8_lossy(&out.stdout)));
        if line.is_empty() {
            bail!("password command {cmd:?} printed an empty password");
        }
        return Ok(line);
    }
    if let Ok(p) = std::env::var(env_name) {
        if p.is_empty() {
            bail!("{env_name} is set but empty");
        }
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password(prompt).context("reading the password from the terminal")?;
        return Ok(Zeroizing::new(p));
    }
    bail!("no password given: use a password file, a password command, {env_name} or a terminal")
}

/// Opens the backend at `repo` with `-o` options; only `init` may create a local directory.
pub fn open_backend(repo: &str, options: &[String], create: bool) -> Result<DynBackend> {
    use vault::backend::location;
    let loc = location::parse(repo)?;
    let opts = location::BackendOptions::parse(options)?;
    Ok(location::open_with(&loc, &opts, &open_settings(create)?)?)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
