//! Retries with exponential backoff and jitter around any backend.
//!
//! Only errors whose kind says they are transient (`Error::is_transient`) are retried; a missing
//! object, a refused overwrite or damaged data never are. A write retried after a transient
//! failure may find its own earlier attempt already stored: objects are named by their content,
//! so `AlreadyExists` on a retry means success.

use std::time::Duration;

use super::{Access, Backend, DynBackend, ObjectInfo};
use crate::{Error, Result};

/// Retry tuning.
#[derive(Clone, Copy, Debug)]
pub struct RetryOptions {
    /// Attempts in all (first try included).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// A backend that retries transient failures of another.
#[derive(Debug)]
pub struct RetryBackend {
    inner: DynBackend,
    opts: RetryOptions,
}

impl RetryBackend {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend, opts: RetryOptions) -> Self {
        Self { inner, opts }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.opts.max);
        // Full jitter: a random point in [exp/2, exp], so retrying clients spread out.
        let mut b = [0u8; 4];
        let _ = crate::crypto::random_bytes(&mut b);
        let frac = 0.5 + f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) / 2.0;
        exp.mul_f64(frac)
    }

    fn run<T>(&self, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt + 1 < self.opts.attempts => {
                    let d = self.delay(attempt);
                    tracing::info!(error = %e, attempt = attempt + 1, delay_ms = d.as_millis() as u64, "retrying {what}");
                    std::thread::sleep(d);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn run_write(&self, what: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
        let mut retried = false;
        self.run(what, || match f() {
            Err(Error::AlreadyExists(_)) if retried => Ok(()),
            Err(e) => {
                retried = true;
                Err(e)
            }
            ok => ok,
        })
    }
}

impl Backend for RetryBackend {
    forward_to_inner!(
        location,
        staging_dir,
        object_lock_days,
        append_only,
        will_read
    );
    fn create(&self) -> Result<()> {
        self.run("create", || self.inner.create())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.run("read", || self.inner.read(path))
    }
    fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        self.run("read", || self.inner.read_into(path, buf))
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run("read", || self.inner.read_range(path, offset, len))
    }
    fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        self.run("read", || {
            self.inner.read_range_into(path, offset, len, buf)
        })
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        self.run_write("write", || self.inner.write(path, data))
    }
    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        self.run_write("write", || self.inner.write_file(path, local, access))
    }
    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        // Idempotent: a retried replace writes the same bytes again.
        self.run("replace", || self.inner.replace(path, data))
    }
    fn delete(&self, path: &str) -> Result<()> {
        let mut retried = false;
        self.run("delete", || match self.inner.delete(path) {
            // Deleted by the attempt that reported a transient failure.
            Err(e) if retried && e.kind() == crate::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                retried = true;
                Err(e)
            }
            ok => ok,
        })
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.run("list", || self.inner.list(dir))
    }
    fn list_each(&self, dir: &str, f: &mut dyn FnMut(ObjectInfo) -> Result<()>) -> Result<()> {
        // A restarted listing delivers objects again (the trait allows it). An error of `f`
        // is returned as it is, never retried.
        let mut own: Option<crate::Error> = None;
        let r = self.run("list", || {
            if own.is_some() {
                return Ok(());
            }
            self.inner.list_each(dir, &mut |o| {
                f(o).map_err(|e| {
                    own = Some(e);
                    crate::Error::Aborted("listing stopped by its caller".into())
                })
            })
        });
        match own {
            Some(e) => Err(e),
            None => r,
        }
    }
    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.run("stat", || self.inner.stat(path))
    }
}
