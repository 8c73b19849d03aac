//! Fault injection for tests: a backend wrapper that fails on purpose.
//!
//! Configured from `VAULT_FAULTS` (a testing aid; never set it in production), a comma-separated
//! list such as `transient=0.1,truncate=0.05,seed=7` or `kill_after_mutations=12`:
//! * `transient=P` — each operation fails first with a transient error with probability P;
//! * `timeout=P` — likewise, reported as a timed-out request;
//! * `truncate=P` — reads fail as if the connection dropped mid-body (transient);
//! * `kill_after_mutations=N` — the process kills itself with SIGKILL right after its N-th
//!   successful write or delete, to test crash safety at every step;
//! * `latency_ms=N` — every read waits N ms first, like a request to distant storage (for
//!   benchmarks of how many reads a command keeps in flight; never used by a test's verdict);
//! * `seed=S` — seed of the fault sequence (deterministic runs).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Access, Backend, DynBackend, ObjectInfo};
use crate::{Error, Result};

/// What to inject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultOptions {
    /// Probability of a transient error per operation.
    pub transient: f64,
    /// Probability of a timeout per operation.
    pub timeout: f64,
    /// Probability of a truncated read.
    pub truncate: f64,
    /// SIGKILL after this many successful mutations.
    pub kill_after_mutations: Option<u64>,
    /// Milliseconds every read waits before it starts.
    pub latency_ms: u64,
    /// Seed of the pseudo-random fault sequence.
    pub seed: u64,
}

impl FaultOptions {
    /// Parses the `VAULT_FAULTS` syntax.
    pub fn parse(s: &str) -> Result<Self> {
        let mut o = FaultOptions::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!("VAULT_FAULTS: {part:?} is not key=value"))
            })?;
            let bad = || Error::InvalidInput(format!("VAULT_FAULTS: bad value in {part:?}"));
            match k {
                "transient" => o.transient = v.parse().map_err(|_| bad())?,
                "timeout" => o.timeout = v.parse().map_err(|_| bad())?,
                "truncate" => o.truncate = v.parse().map_err(|_| bad())?,
                "kill_after_mutations" => {
                    o.kill_after_mutations = Some(v.parse().map_err(|_| bad())?)
                }
                "latency_ms" => o.latency_ms = v.parse().map_err(|_| bad())?,
                "seed" => o.seed = v.parse().map_err(|_| bad())?,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "VAULT_FAULTS: unknown key {k:?}"
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// A backend that injects faults into another.
#[derive(Debug)]
pub struct FaultBackend {
    inner: DynBackend,
    opts: FaultOptions,
    rng: Mutex<u64>,
    mutations: AtomicU64,
}

impl FaultBackend {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend, opts: FaultOptions) -> Self {
        let seed = opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        Self {
            inner,
            opts,
            rng: Mutex::new(seed),
            mutations: AtomicU64::new(0),
        }
    }

    /// A uniform draw in [0, 1) from a xorshift sequence (deterministic per seed).
    fn draw(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    fn maybe_fail(&self, op: &'static str, path: &str, reading: bool) -> Result<()> {
        if reading && self.opts.latency_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.opts.latency_ms));
        }
        let x = self.draw();
        let (t, to, tr) = (
            self.opts.transient,
            self.opts.timeout,
            if reading { self.opts.truncate } else { 0.0 },
        );
        let message = if x < t {
            "injected transient failure (503)"
        } else if x < t + to {
            "injected timeout"
        } else if x < t + to + tr {
            "injected truncated read (connection reset)"
        } else {
            return Ok(());
        };
        Err(Error::Backend {
            op,
            path: path.to_string(),
            message: message.into(),
            transient: true,
        })
    }

    fn mutated(&self) {
        let n = self.mutations.fetch_add(1, Ordering::SeqCst) + 1;
        if self.opts.kill_after_mutations == Some(n) {
            tracing::debug!(n, "injected kill");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Backend for FaultBackend {
    forward_to_inner!(location, create, staging_dir, append_only, will_read);
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.maybe_fail("read", path, true)?;
        self.inner.read(path)
    }
    fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        self.maybe_fail("read", path, true)?;
        self.inner.read_into(path, buf)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.maybe_fail("read", path, true)?;
        self.inner.read_range(path, offset, len)
    }
    fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        self.maybe_fail("read", path, true)?;
        self.inner.read_range_into(path, offset, len, buf)
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        self.maybe_fail("write", path, false)?;
        self.inner.write(path, data)?;
        self.mutated();
        Ok(())
    }
    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        self.maybe_fail("write", path, false)?;
        self.inner.write_file(path, local, access)?;
        self.mutated();
        Ok(())
    }
    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        self.maybe_fail("write", path, false)?;
        self.inner.replace(path, data)?;
        self.mutated();
        Ok(())
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.maybe_fail("delete", path, false)?;
        self.inner.delete(path)?;
        self.mutated();
        Ok(())
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.maybe_fail("list", dir, false)?;
        self.inner.list(dir)
    }
    fn list_each(&self, dir: &str, f: &mut dyn FnMut(ObjectInfo) -> Result<()>) -> Result<()> {
        self.maybe_fail("list", dir, false)?;
        self.inner.list_each(dir, f)
    }
    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.maybe_fail("stat", path, false)?;
        self.inner.stat(path)
    }
}
