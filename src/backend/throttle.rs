//! Bandwidth limits (`--limit-upload`, `--limit-download`) around any backend: bytes written
//! and read are paced to an average rate, shared by every thread of the process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Access, Backend, DynBackend};
use crate::Result;

/// Paces a byte stream to `rate` bytes per second on average.
#[derive(Debug)]
struct Pacer {
    rate: u64,
    state: Mutex<(Instant, u64)>,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            state: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Accounts `n` bytes and sleeps until they are due.
    fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // Idle time is not credit: after a pause the next transfer is paced from now, so
            // a burst never exceeds the limit.
            let due_so_far = Duration::from_secs_f64(s.1 as f64 / self.rate as f64);
            if s.0.elapsed() > due_so_far {
                *s = (Instant::now(), 0);
            }
            s.1 += n;
            let due = Duration::from_secs_f64(s.1 as f64 / self.rate as f64);
            due.saturating_sub(s.0.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A backend whose transfers are paced.
#[derive(Debug)]
pub struct ThrottleBackend {
    inner: DynBackend,
    up: Option<Pacer>,
    down: Option<Pacer>,
}

impl ThrottleBackend {
    /// Wraps `inner` with limits in bytes per second (`None`: unlimited).
    pub fn new(inner: DynBackend, upload: Option<u64>, download: Option<u64>) -> Self {
        Self {
            inner,
            up: upload.map(Pacer::new),
            down: download.map(Pacer::new),
        }
    }

    /// Paces downloads: `n` bytes were just read.
    fn downloaded(&self, n: usize) {
        if let Some(p) = &self.down {
            p.take(n as u64);
        }
    }

    fn got(&self, data: Result<Vec<u8>>) -> Result<Vec<u8>> {
        if let Ok(d) = &data {
            self.downloaded(d.len());
        }
        data
    }
}

impl Backend for ThrottleBackend {
    forward_to_inner!(
        location,
        create,
        staging_dir,
        object_lock_days,
        append_only,
        delete,
        list,
        list_each,
        stat,
    );
    // `will_read` is not forwarded: reading ahead into the page cache would read outside
    // the limit.
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.got(self.inner.read(path))
    }
    fn read_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.read_into(path, buf)?;
        self.downloaded(buf.len());
        Ok(())
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.got(self.inner.read_range(path, offset, len))
    }
    fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.read_range_into(path, offset, len, buf)?;
        self.downloaded(buf.len());
        Ok(())
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        if let Some(p) = &self.up {
            p.take(data.len() as u64);
        }
        self.inner.write(path, data)
    }
    fn write_file(&self, path: &str, local: &std::path::Path, access: Access) -> Result<()> {
        if let Some(p) = &self.up {
            let n = std::fs::metadata(local).map(|m| m.len()).unwrap_or(0);
            p.take(n);
        }
        self.inner.write_file(path, local, access)
    }
    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        if let Some(p) = &self.up {
            p.take(data.len() as u64);
        }
        self.inner.replace(path, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pacing only ever delays: the transfer cannot finish before its bytes are due (a lower
    /// bound, which no scheduling noise can break).
    #[test]
    fn transfers_take_at_least_bytes_over_rate() {
        let mem: DynBackend = std::sync::Arc::new(crate::backend::memory::MemoryBackend::new());
        let t = ThrottleBackend::new(mem, Some(256 << 10), Some(256 << 10));
        let start = Instant::now();
        for i in 0..4 {
            t.write(&format!("data/x{i}"), &[7u8; 32 << 10]).unwrap();
        }
        // 128 KiB at 256 KiB/s: at least half a second.
        assert!(
            start.elapsed() >= Duration::from_millis(490),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        for i in 0..4 {
            assert_eq!(t.read(&format!("data/x{i}")).unwrap().len(), 32 << 10);
        }
        assert!(
            start.elapsed() >= Duration::from_millis(490),
            "{:?}",
            start.elapsed()
        );
    }
}
