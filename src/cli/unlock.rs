//! `vault unlock`.

use anyhow::Result;
use clap::Args;

use super::global::GlobalArgs;

/// Options of `vault unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones
    #[arg(long)]
    pub remove_all: bool,
}

/// Runs `vault unlock`.
pub fn run(g: &GlobalArgs, a: UnlockArgs) -> Result<i32> {
    let repo = g.open()?;
    let n = repo.remove_locks(a.remove_all)?;
    if g.json {
        super::output::json(&serde_json::json!({ "removed": n }))?;
    } else if !g.quiet {
        println!("removed {n} lock(s)");
    }
    Ok(super::exit::OK)
}
