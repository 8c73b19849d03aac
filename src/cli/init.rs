//! `vault init`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use vault::format::config::{ChunkerParams, Compression};
use vault::format::key::KdfParams;
use vault::repo::{DEFAULT_CHUNKER, InitOptions, Repository};

use super::global::GlobalArgs;
use super::output::parse_size;

/// Options of `vault init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Read the new repository's password from this file (else prompt twice, or VAULT_PASSWORD)
    #[arg(long)]
    pub new_password_file: Option<PathBuf>,
    /// Compression: `zstd`, `zstd:LEVEL` (-7..=22) or `none`
    #[arg(long, default_value = "zstd:2")]
    pub compression: String,
    /// Target pack size
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub pack_size: u64,
    /// Minimum chunk size
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u64>,
    /// Average chunk size (a power of two)
    #[arg(long, value_parser = parse_size)]
    pub chunk_avg: Option<u64>,
    /// Maximum chunk size
    #[arg(long, value_parser = parse_size)]
    pub chunk_max: Option<u64>,
    /// Argon2id memory for the key (e.g. 64MiB)
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub kdf_memory: u64,
    /// Argon2id iterations for the key
    #[arg(long, default_value_t = 3)]
    pub kdf_iterations: u32,
    /// Argon2id lanes for the key (computed in parallel; 1..=64)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_lanes: u32,
}

fn parse_compression(s: &str) -> Result<Compression> {
    Ok(match s {
        "none" | "off" => Compression::None,
        "zstd" => Compression::Zstd(2),
        other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(level)) => Compression::Zstd(level),
            _ => bail!("unknown compression {other:?} (use zstd, zstd:LEVEL or none)"),
        },
    })
}

/// Runs `vault init`.
pub fn run(g: &GlobalArgs, a: InitArgs) -> Result<i32> {
    let to_u32 = |v: u64, what: &str| -> Result<u32> {
        u32::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v} is too large"))
    };
    let chunker = ChunkerParams {
        min_size: a
            .chunk_min
            .map(|v| to_u32(v, "chunk minimum"))
            .transpose()?
            .unwrap_or(DEFAULT_CHUNKER.min_size),
        avg_size: a
            .chunk_avg
            .map(|v| to_u32(v, "chunk average"))
            .transpose()?
            .unwrap_or(DEFAULT_CHUNKER.avg_size),
        max_size: a
            .chunk_max
            .map(|v| to_u32(v, "chunk maximum"))
            .transpose()?
            .unwrap_or(DEFAULT_CHUNKER.max_size),
    };
    let opts = InitOptions {
        chunker,
        compression: parse_compression(&a.compression)?,
        pack_size: to_u32(a.pack_size, "pack size")?,
        kdf: KdfParams {
            m_cost_kib: to_u32(a.kdf_memory / 1024, "kdf memory")?,
            t_cost: a.kdf_iterations,
            p_cost: a.kdf_lanes,
        },
    };
    // Settings and password are settled before the location is touched: a failed init
    // creates nothing.
    opts.validate()?;
    let password = match (&a.new_password_file, std::env::var("VAULT_PASSWORD")) {
        (None, Ok(p)) if g.password_file.is_none() && g.password_command.is_none() => {
            zeroize::Zeroizing::new(p)
        }
        (None, _) if g.password_file.is_some() || g.password_command.is_some() => g.password()?,
        _ => g.new_password(a.new_password_file.as_ref())?,
    };
    if password.is_empty() {
        bail!("an empty password is not allowed");
    }
    let backend = g.backend_for_init()?;
    let repo = Repository::init(backend, password.as_bytes(), &opts, g.open_options())?;
    g.facts.opened(&repo);
    let c = repo.config();
    if g.json {
        super::output::json(&serde_json::json!({
            "repository_id": c.repo_id.to_hex(),
            "location": repo.backend().location(),
            "key_id": repo.key_id().to_hex(),
            "chunker": {"min": c.chunker.min_size, "avg": c.chunker.avg_size, "max": c.chunker.max_size},
            "pack_size": c.pack_size,
        }))?;
    } else if !g.quiet {
        println!(
            "created repository {} at {}",
            c.repo_id.short(),
            repo.backend().location()
        );
        println!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(super::exit::OK)
}
