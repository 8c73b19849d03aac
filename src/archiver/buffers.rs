//! Reused buffers for the snapshot pipeline.
//!
//! Allocating a read batch per file and a sealed-blob buffer per chunk made the allocator keep
//! large freed blocks resident (glibc raises its mmap threshold after the first large free) and
//! cost page-clearing time. Read buffers come from a small pool shared by the workers; each
//! worker thread keeps one buffer for sealing.

use std::cell::RefCell;
use std::sync::Mutex;

/// A bounded pool of byte buffers.
pub(super) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` idle buffers.
    pub(super) fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer with at least `cap` bytes of capacity.
    pub(super) fn get(&self, cap: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        match free.iter().position(|b| b.capacity() >= cap) {
            Some(i) => free.swap_remove(i),
            // Small requests (small files) are not worth pooling large buffers for.
            None => Vec::with_capacity(cap),
        }
    }

    /// Returns a buffer for reuse.
    pub(super) fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep && buf.capacity() >= 1 << 20 {
            free.push(buf);
        }
    }
}

thread_local! {
    static SEAL_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's sealing buffer (taken out and put back, so `f` owns it).
pub(super) fn with_seal_buffer<T>(f: impl FnOnce(Vec<u8>) -> (Vec<u8>, T)) -> T {
    let buf = SEAL_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let (buf, out) = f(buf);
    SEAL_BUF.with(|b| *b.borrow_mut() = buf);
    out
}
