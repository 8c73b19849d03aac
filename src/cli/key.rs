//! `vault key list|add|remove|passwd|upgrade|rotate|reencrypt`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use vault::format::key::KdfParams;
use vault::repo::Repository;
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
    /// Rewrite the key in use (a version-1/2 key file) as a version-3 key file with a key
    /// ring, keeping its password, so that it can take part in key rotation
    Upgrade,
    /// Start a new key epoch: a new encryption key for everything written from now on, given
    /// to every key file (no other password needed); older epochs stay readable until
    /// `vault key reencrypt`. Run again after an interruption, it finishes the same rotation
    Rotate(RotateArgs),
    /// Re-seal every object still sealed under a retired epoch, then remove the retired keys
    /// from every key file: old key files and their passwords then open nothing. Resumable:
    /// run it again after an interruption
    Reencrypt,
}

/// Options of `vault key rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Re-encrypt everything under the new key and retire the old ones in the same run
    #[arg(long)]
    pub reencrypt: bool,
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
    /// Argon2id lanes (computed in parallel; 1..=64)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_lanes: u32,
}

/// Options of `vault key add`.
#[derive(Args, Debug)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub key: NewKeyArgs,
    /// Restrict the new key: `append-only` (it can add snapshots, read and verify, but never
    /// delete or replace anything; forget, prune, release and unlock need another key)
    #[arg(long = "restrict", value_name = "CAPABILITY", value_parser = ["append-only", "write-only"])]
    pub restrict: Vec<String>,
    /// A write-only key: it can add snapshots (deduplicated against the repository) but
    /// cannot decrypt, list or delete anything stored; what it writes is sealed to the
    /// repository's reader key (same as `--restrict write-only`)
    #[arg(long)]
    pub write_only: bool,
}

impl NewKeyArgs {
    fn kdf(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: (self.kdf_memory / 1024).min(u64::from(u32::MAX)) as u32,
            t_cost: self.kdf_iterations,
            p_cost: self.kdf_lanes,
        }
    }
}

/// Runs a key subcommand.
pub fn run(g: &GlobalArgs, c: KeyCommand) -> Result<i32> {
    let (repo, password) = g.open_keeping_password()?;
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
                            "write_only": k.capabilities & vault::format::key::CAP_WRITE_ONLY != 0,
                            "version": k.version,
                            "epoch": k.epoch,
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
                            if k.capabilities & vault::format::key::CAP_WRITE_ONLY != 0 {
                                "write-only".into()
                            } else if k.capabilities & vault::format::key::CAP_APPEND_ONLY != 0 {
                                "append-only".into()
                            } else {
                                "full".into()
                            },
                            match k.epoch {
                                Some(e) => e.to_string(),
                                None => format!("- (v{})", k.version),
                            },
                        ]
                    })
                    .collect();
                output::table(
                    &[" ID", "User", "Host", "Created (UTC)", "Rights", "Epoch"],
                    &rows,
                )?;
            }
        }
        KeyCommand::Add(a) => {
            let mut caps = 0u64;
            if a.restrict.iter().any(|r| r == "append-only") {
                caps |= vault::format::key::CAP_APPEND_ONLY;
            }
            if a.write_only || a.restrict.iter().any(|r| r == "write-only") {
                // Write-only implies append-only: it never deletes either.
                caps |= vault::format::key::CAP_APPEND_ONLY | vault::format::key::CAP_WRITE_ONLY;
                // The write-only host must read the config: re-seal it with the shared key if
                // it is not (a repository made before write-only keys, or rotated since).
                if repo.reseal_config_shared()? && !g.quiet {
                    eprintln!(
                        "note: the config was re-sealed with the shared key; index objects \
                         sealed before are not readable by write-only keys (they deduplicate \
                         only against newer ones) until `vault key rotate --reencrypt`"
                    );
                }
            }
            // Adding a key derives its ring seal key from the ring authority, which only full
            // keys hold: a compromised restricted host cannot mint keys.
            if repo.key_capabilities() != 0 {
                bail!("the key in use is restricted (append-only): only a full key can add keys");
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
                    "write_only": caps & vault::format::key::CAP_WRITE_ONLY != 0,
                }))?;
            } else if !g.quiet {
                println!(
                    "added {}key {}",
                    if caps & vault::format::key::CAP_WRITE_ONLY != 0 {
                        "write-only "
                    } else if caps != 0 {
                        "append-only "
                    } else {
                        ""
                    },
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
        KeyCommand::Upgrade => {
            let _lock = g.lock(&repo, LockKind::Exclusive)?;
            if repo.key_version() >= vault::format::key::KEY_VERSION_RING {
                bail!(
                    "key {} is already a version-3 key file",
                    repo.key_id().short()
                );
            }
            if repo.key_capabilities() != 0 {
                bail!(
                    "the key in use is restricted: ask a holder of a full key to add a new \
                     restricted key (`vault key add --restrict ...`) and remove this one"
                );
            }
            let id = vault::repo::keys::upgrade_key(
                repo.backend(),
                &repo.key_id(),
                repo.master_key(),
                password.as_bytes(),
                0,
            )?;
            g.facts
                .update(|f| f.summary = Some(format!("upgraded key to {}", id.short())));
            if g.json {
                output::json(&serde_json::json!({
                    "upgraded": repo.key_id().to_hex(),
                    "new": id.to_hex(),
                }))?;
            } else if !g.quiet {
                println!(
                    "key {} rewritten as version-3 key {} (same password)",
                    repo.key_id().short(),
                    id.short()
                );
            }
        }
        KeyCommand::Rotate(a) => {
            let lock = g.lock(&repo, LockKind::Exclusive)?;
            let repo = upgrade_in_use(g, repo, password.as_bytes())?;
            let (key, report) = vault::rekey::rotate(&repo)?;
            drop(lock);
            let repo = repo.with_key(key)?;
            g.facts.opened(&repo);
            let verb = if report.resumed {
                "finished the interrupted rotation to"
            } else {
                "rotated to"
            };
            if !g.quiet && !g.json {
                println!(
                    "{verb} key epoch {} ({} key file{} rewritten)",
                    report.to_epoch,
                    report.rewritten.len(),
                    if report.rewritten.len() == 1 { "" } else { "s" }
                );
            }
            let reencrypted = if a.reencrypt {
                Some(reencrypt(g, &repo)?)
            } else {
                None
            };
            g.facts.update(|f| {
                f.summary = Some(format!(
                    "{verb} key epoch {}{}",
                    report.to_epoch,
                    if a.reencrypt { ", re-encrypted" } else { "" }
                ))
            });
            if g.json {
                output::json(&serde_json::json!({
                    "epoch": report.to_epoch,
                    "previous_epoch": report.from_epoch,
                    "resumed": report.resumed,
                    "rewritten": report.rewritten.iter().map(|(a, b)| serde_json::json!({"old": a.to_hex(), "new": b.to_hex()})).collect::<Vec<_>>(),
                    "reencrypt": reencrypted.as_ref().map(reencrypt_json),
                }))?;
            } else if !g.quiet && !a.reencrypt {
                println!(
                    "older epochs stay readable; run `vault key reencrypt` to re-seal everything \
                     under epoch {} and retire the old keys",
                    report.to_epoch
                );
            }
            if let Some(r) = reencrypted
                && !r.damaged.is_empty()
            {
                return Ok(super::exit::FATAL);
            }
        }
        KeyCommand::Reencrypt => {
            let r = reencrypt(g, &repo)?;
            if g.json {
                output::json(&reencrypt_json(&r))?;
            }
            if !r.damaged.is_empty() {
                return Ok(super::exit::FATAL);
            }
        }
    }
    Ok(super::exit::OK)
}

/// A legacy key in use is rewritten as version 3 (its password is at hand) before rotating.
fn upgrade_in_use(g: &GlobalArgs, repo: Repository, password: &[u8]) -> Result<Repository> {
    if repo.key_version() >= vault::format::key::KEY_VERSION_RING {
        return Ok(repo);
    }
    let id = vault::repo::keys::upgrade_key(
        repo.backend(),
        &repo.key_id(),
        repo.master_key(),
        password,
        repo.key_capabilities(),
    )?;
    if !g.quiet && !g.json {
        println!(
            "key in use {} rewritten as version-3 key {} (same password)",
            repo.key_id().short(),
            id.short()
        );
    }
    let found = Repository::locate(repo.backend().clone())?;
    Ok(found.unlock(password, g.open_options())?)
}

/// Takes the exclusive lock and re-encrypts; prints the outcome.
fn reencrypt(g: &GlobalArgs, repo: &Repository) -> Result<vault::rekey::ReencryptReport> {
    let lock = g.lock(repo, LockKind::Exclusive)?;
    let progress = g.progress();
    let r = vault::rekey::reencrypt(repo, &lock, &progress)?;
    g.facts.update(|f| {
        f.bytes = Some(r.bytes);
        f.summary = Some(format!(
            "re-sealed {} of {} objects; retired epochs {:?}",
            r.resealed, r.objects, r.retired
        ));
    });
    if !g.quiet && !g.json {
        println!(
            "re-sealed {} of {} objects ({}) under epoch {}",
            r.resealed,
            r.objects,
            output::bytes(r.bytes),
            repo.master_key().epoch()
        );
        if r.damaged.is_empty() {
            if r.retired.is_empty() {
                println!("no retired epochs remain in any key file");
            } else {
                println!(
                    "retired epoch{} {} from {} key file{}: old key files open nothing now",
                    if r.retired.len() == 1 { "" } else { "s" },
                    r.retired
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.rewritten.len(),
                    if r.rewritten.len() == 1 { "" } else { "s" }
                );
            }
        } else {
            eprintln!(
                "{} damaged object{} could not be re-sealed; the old keys were kept:",
                r.damaged.len(),
                if r.damaged.len() == 1 { "" } else { "s" }
            );
            for d in &r.damaged {
                eprintln!("  {d}");
            }
            eprintln!("run `vault check`, repair or remove them, then `vault key reencrypt` again");
        }
    }
    Ok(r)
}

fn reencrypt_json(r: &vault::rekey::ReencryptReport) -> serde_json::Value {
    serde_json::json!({
        "objects": r.objects,
        "resealed": r.resealed,
        "bytes": r.bytes,
        "damaged": r.damaged,
        "writer_packs": r.writer_packs,
        "retired_epochs": r.retired,
        "current_key": r.current_key.to_hex(),
    })
}
