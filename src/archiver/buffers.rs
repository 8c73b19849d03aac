//! Reused buffers for the snapshot pipeline.
//!
//! Allocating a read batch per file and a sealed-blob buffer per chunk made the allocator keep
//! large freed blocks resident (glibc raises its mmap threshold after the first large free) and
//! cost page-clearing time. Read buffers come from a small pool shared by the workers
//! ([`crate::buffers::BufferPool`]); each worker thread keeps one buffer for sealing.

use std::cell::RefCell;

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
