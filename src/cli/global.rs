//! Global options: where the repository is, how to get the password, how to print.

use std::io::IsTerminal;
use std::path::PathBuf;
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
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more (repeat for debug output)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Do not show progress
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Directory of the local cache (default: $XDG_CACHE_HOME/vault)
    #[arg(long, env = "VAULT_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Use a temporary cache that is deleted on exit
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Wait this long for a conflicting lock to go away (e.g. 10m) instead of failing
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub wait_lock: Option<Duration>,
}

impl GlobalArgs {
    /// The backend named by `--repo`.
    pub fn backend(&self) -> Result<DynBackend> {
        let repo = self
            .repo
            .as_deref()
            .ok_or_else(|| anyhow!("no repository given: use --repo or set VAULT_REPOSITORY"))?;
        open_backend(repo, &self.options)
    }

    /// Open options derived from the cache flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            cache_root: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(vault::repo::default_cache_root)
            },
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
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading password file {}", f.display()))?;
            return Ok(Zeroizing::new(first_line(&text)));
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

    /// Opens and unlocks the repository.
    pub fn open(&self) -> Result<Repository> {
        let backend = self.backend()?;
        let password = self.password()?;
        Ok(Repository::open(
            backend,
            password.as_bytes(),
            self.open_options(),
        )?)
    }

    /// Takes a lock of `kind` (honouring `--wait-lock`).
    pub fn lock(&self, repo: &Repository, kind: LockKind) -> Result<LockGuard> {
        Ok(repo.lock(kind, self.wait_lock)?)
    }

    /// The progress display for this invocation.
    pub fn progress(&self) -> CliProgress {
        CliProgress::new(!(self.quiet || self.json || self.no_progress))
    }
}

/// A password from a file, a command, an environment variable or the terminal, in that order.
pub fn read_password(
    file: Option<&PathBuf>,
    command: Option<&str>,
    env_name: &str,
    prompt: &str,
) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(Zeroizing::new(first_line(&text)));
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
        return Ok(Zeroizing::new(first_line(&String::from_utf8_lossy(
            &out.stdout,
        ))));
    }
    if let Ok(p) = std::env::var(env_name) {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        let p =
            rpassword::prompt_password(prompt).context("reading the password from the terminal")?;
        return Ok(Zeroizing::new(p));
    }
    bail!("no password given: use a password file, a password command, {env_name} or a terminal")
}

/// Opens the backend at `repo` with `-o` options.
pub fn open_backend(repo: &str, options: &[String]) -> Result<DynBackend> {
    use vault::backend::location;
    let loc = location::parse(repo)?;
    let opts = location::BackendOptions::parse(options)?;
    Ok(location::open_with(&loc, &opts)?)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
