//! A bounded pool of reused byte buffers.
//!
//! Large buffers allocated per file, pack or range made the allocator keep freed blocks
//! resident or hand them back to the kernel, and every fresh one cost page faults and page
//! clearing (a third of `check`'s system time). Commands that handle one large buffer per
//! task take them from a pool instead; the pool keeps a few idle ones, so memory stays at
//! what the concurrent tasks hold.

use std::sync::Mutex;

/// A bounded pool of byte buffers.
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` idle buffers.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer with at least `cap` bytes of capacity.
    pub(crate) fn get(&self, cap: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        match free.iter().position(|b| b.capacity() >= cap) {
            Some(i) => free.swap_remove(i),
            // Small requests (small files) are not worth pooling large buffers for.
            None => Vec::with_capacity(cap),
        }
    }

    /// Any idle buffer (or a new empty one), given back when the guard is dropped.
    pub(crate) fn take(&self) -> Pooled<'_> {
        Pooled {
            pool: self,
            buf: self.get(0),
        }
    }

    /// Returns a buffer for reuse.
    pub(crate) fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep && buf.capacity() >= 1 << 20 {
            free.push(buf);
        }
    }
}

/// A buffer taken from a [`BufferPool`], given back when dropped.
pub(crate) struct Pooled<'p> {
    pool: &'p BufferPool,
    /// The buffer (empty when taken).
    pub buf: Vec<u8>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (decompressed frames and blobs): a fresh buffer
/// of a few MiB per frame cost a page fault per 4 KiB of it. The buffer is taken out and put
/// back, so a nested call (`f` running other pool tasks) gets an empty one, never the same.
pub fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let mut buf = SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let out = f(&mut buf);
    SCRATCH.with(|b| *b.borrow_mut() = buf);
    out
}
