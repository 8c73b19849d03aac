//! `vault key list|add|remove|passwd`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use vault::format::key::KdfParams;
use vault::repo::keys::{list_keys, remove_key, resolve_key, write_key};
use vault::repo::lock::LockKind;

use super::global::GlobalArgs;
use super::output;

/// Key subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List key files
    List,
    /// Add a password
    Add(AddKeyArgs),
    /// Remove a key file (revoke a password)
    Remove {
        /// Key id or unique prefix
        id: String,
    },
    /// Change the password of the key in use
    Passwd(NewKeyArgs),
}

/// Options for a new key.
#[derive(Args, Debug)]
pub struct NewKeyArgs {
    /// Read the new password from this file (else prompt twice)
    #[arg(long)]
    pub new_password_file: Option<PathBuf>,
    /// Argon2id memory (e.g. 64MiB)
    #[arg(long, default_value = "64MiB", value_parser = output::parse_size)]
    pub kdf_memory: u64,
    /// Argon2id iterations
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
}

/// Options of `vault key add`.
#[derive(Args, Debug)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub key: NewKeyArgs,
    /// Restrict the new key: `append-only` (it can add snapshots, read and verify, but never
    /// delete or replace anything; forget, prune, release and unlock need another key)
    #[arg(long = "restrict", value_name = "CAPABILITY", value_parser = ["append-only"])]
    pub restrict: Vec<String>,
}

impl NewKeyArgs {
    fn kdf(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: (self.kdf_memory / 1024).min(u64::from(u32::MAX)) as u32,
            t_cost: self.kdf_iterations,
            p_cost: 1,
        }
    }
}

/// Runs a key subcommand.
pub fn run(g: &GlobalArgs, c: KeyCommand) -> Result<i32> {
    let repo = g.open()?;
    match c {
        KeyCommand::List => {
            let keys = list_keys(repo.backend())?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id.to_hex(),
                            "current": k.id == repo.key_id(),
                            "created": output::time(k.created, 0),
                            "hostname": k.hostname,
                            "username": k.username,
                            "kdf": {"memory_kib": k.kdf.m_cost_kib, "iterations": k.kdf.t_cost, "lanes": k.kdf.p_cost},
                            "damaged": k.damaged,
                            "append_only": k.capabilities & vault::format::key::CAP_APPEND_ONLY != 0,
                        })
                    })
                    .collect();
                output::json(&serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            format!(
                                "{}{}",
                                if k.id == repo.key_id() { "*" } else { " " },
                                k.id.short()
                            ),
                            k.username.clone(),
                            k.hostname.clone(),
                            match &k.damaged {
                                Some(why) => format!("DAMAGED: {why}"),
                                None => output::short_time(k.created, 0),
                            },
                            if k.capabilities & vault::format::key::CAP_APPEND_ONLY != 0 {
                                "append-only".into()
                            } else {
                                "full".into()
                            },
                        ]
                    })
                    .collect();
                output::table(&[" ID", "User", "Host", "Created (UTC)", "Rights"], &rows)?;
            }
        }
        KeyCommand::Add(a) => {
            let mut caps = 0u64;
            if a.restrict.iter().any(|r| r == "append-only") {
                caps |= vault::format::key::CAP_APPEND_ONLY;
            }
            // A restricted key can only hand out keys at least as restricted as itself.
            if repo.key_capabilities() & !caps != 0 {
                bail!(
                    "the key in use is append-only: it can only add append-only keys (--restrict append-only)"
                );
            }
            let pw = g.new_password(a.key.new_password_file.as_ref())?;
            let id = vault::repo::keys::write_key_with(
                repo.backend(),
                repo.master_key(),
                pw.as_bytes(),
                &a.key.kdf(),
                caps,
            )?;
            if g.json {
                output::json(&serde_json::json!({
                    "added": id.to_hex(),
                    "append_only": caps & vault::format::key::CAP_APPEND_ONLY != 0,
                }))?;
            } else if !g.quiet {
                println!(
                    "added {}key {}",
                    if caps != 0 { "append-only " } else { "" },
                    id.short()
                );
            }
        }
        KeyCommand::Remove { id } => {
            let _lock = g.lock(&repo, LockKind::Exclusive)?;
            let id = resolve_key(repo.backend(), &id)?;
            remove_key(repo.backend(), &id, &repo.key_id(), false)?;
            if g.json {
                output::json(&serde_json::json!({ "removed": id.to_hex() }))?;
            } else if !g.quiet {
                println!("removed key {}", id.short());
            }
        }
        KeyCommand::Passwd(a) => {
            let _lock = g.lock(&repo, LockKind::Exclusive)?;
            let pw = g.new_password(a.new_password_file.as_ref())?;
            let id = write_key(repo.backend(), repo.master_key(), pw.as_bytes(), &a.kdf())?;
            remove_key(repo.backend(), &repo.key_id(), &id, true)?;
            if g.json {
                output::json(&serde_json::json!({
                    "added": id.to_hex(),
                    "removed": repo.key_id().to_hex(),
                }))?;
            } else if !g.quiet {
                println!("password changed (new key {})", id.short());
            }
        }
    }
    Ok(super::exit::OK)
}
