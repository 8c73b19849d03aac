//! `vault config show`, `vault completion`, `vault man`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Subcommand};

use super::global::GlobalArgs;
use super::output;
use super::profile::{Resolved, masked};

/// `vault config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a profile's effective settings (inheritance applied, secrets masked)
    Show,
}

/// Options of `vault completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// Options of `vault man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (e.g. /usr/local/share/man/man1)
    pub dir: PathBuf,
}

/// Runs `vault config …`.
pub fn run(g: &GlobalArgs, c: ConfigCommand, profile: Option<&Resolved>) -> Result<i32> {
    match c {
        ConfigCommand::Show => {
            let Some(r) = profile else {
                return Err(super::usage(
                    "vault config show needs --profile NAME (or VAULT_PROFILE)",
                ));
            };
            let shown = masked(&r.profile);
            if g.json {
                output::json(&serde_json::json!({
                    "file": r.file.display().to_string(),
                    "profile": r.name,
                    "settings": without_nulls(serde_json::to_value(&shown)?),
                }))?;
            } else {
                println!("# profile {:?} from {}", r.name, r.file.display());
                let text = toml::to_string(&shown).context("formatting the profile")?;
                println!("{}", text.trim_end());
            }
            Ok(super::exit::OK)
        }
    }
}

/// Drops unset settings (JSON nulls) from a profile, at every depth.
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        serde_json::Value::Array(a) => a.into_iter().map(without_nulls).collect(),
        other => other,
    }
}

/// Runs `vault completion SHELL`.
pub fn completion(a: CompletionArgs) -> Result<i32> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "vault", &mut std::io::stdout());
    Ok(super::exit::OK)
}

/// Runs `vault man DIR`: `vault.1` and `vault-COMMAND.1` for every command.
pub fn man(a: ManArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd, &a.dir)
        .with_context(|| format!("writing man pages into {}", a.dir.display()))?;
    Ok(super::exit::OK)
}
