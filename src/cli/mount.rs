//! `vault mount`: browse the snapshots as a read-only file system (FUSE).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};

use super::global::GlobalArgs;
use super::snapshots::FilterArgs;

/// Options of `vault mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Where to mount (an existing empty directory)
    pub mountpoint: PathBuf,
    /// Memory for decrypted file contents (e.g. 256MiB)
    #[arg(long, default_value = "64MiB", value_parser = super::output::parse_size)]
    pub cache_size: u64,
    /// Let other users read the mount (needs `user_allow_other` in /etc/fuse.conf when not root)
    #[arg(long)]
    pub allow_other: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `vault mount` until SIGINT/SIGTERM or an external unmount.
pub fn run(g: &GlobalArgs, a: MountArgs) -> Result<i32> {
    let meta = std::fs::metadata(&a.mountpoint)
        .with_context(|| format!("mount point {}", a.mountpoint.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("mount point {} is not a directory", a.mountpoint.display());
    }
    // Signals are taken by a thread of their own (sigwait), which unmounts: the session then
    // ends like after `fusermount -u`. They are blocked before any thread exists (opening the
    // repository starts some), and set back to their default action in case this process
    // inherited them ignored (as a background job of a script is).
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
        // SAFETY: restoring a default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
    }
    set.thread_block().context("blocking signals")?;
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let snaps = super::snapshots::select(&repo, &[], &a.filter.filter(), "shown")?;
    let count = snaps.len();
    let fs = vault::mount::VaultFs::new(repo.clone(), snaps, a.cache_size as usize);
    let stats = fs.stats();
    let mut cfg = fuser::Config::default();
    cfg.mount_options.extend([
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("vault:{}", repo.backend().location())),
        fuser::MountOption::Subtype("vault".into()),
        fuser::MountOption::DefaultPermissions,
    ]);
    if a.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(4);
    let mut session = fuser::Session::new(fs, &a.mountpoint, &cfg)
        .with_context(|| format!("mounting at {}", a.mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let mountpoint = a.mountpoint.clone();
    std::thread::spawn(move || {
        if set.wait().is_ok()
            && let Err(e) = unmounter.unmount()
        {
            // Busy at that instant (the unmounter cannot be retried: it gives its mount up).
            // A lazy unmount detaches it now and the session ends when the last user lets go;
            // without it the process would wait forever (seen once in the test suite).
            eprintln!("unmount failed ({e}); detaching the mount instead");
            for (program, args) in [
                ("fusermount3", &["-u", "-z"][..]),
                ("fusermount", &["-u", "-z"][..]),
                ("umount", &["-l"][..]),
            ] {
                let ok = std::process::Command::new(program)
                    .args(args)
                    .arg(&mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
            }
        }
    });
    if !g.quiet {
        eprintln!(
            "mounted {count} snapshots at {} (read-only); Ctrl-C or `fusermount -u {}` unmounts",
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    session.run().context("serving the mount")?;
    let fetched = stats.bytes_fetched.load(Ordering::Relaxed);
    let served = stats.bytes_served.load(Ordering::Relaxed);
    g.facts.update(|f| {
        f.bytes = Some(served);
        f.summary = Some(format!(
            "mounted {count} snapshots; served {served} bytes, fetched {fetched} bytes in {} blobs",
            stats.blobs_loaded.load(Ordering::Relaxed)
        ));
    });
    if g.json {
        super::output::json(&serde_json::json!({
            "snapshots": count,
            "blobs_loaded": stats.blobs_loaded.load(Ordering::Relaxed),
            "bytes_fetched": fetched,
            "bytes_served": served,
        }))?;
    } else if !g.quiet {
        eprintln!(
            "unmounted: served {}, fetched {} from the repository",
            super::output::bytes(served),
            super::output::bytes(fetched)
        );
    }
    Ok(super::exit::OK)
}
