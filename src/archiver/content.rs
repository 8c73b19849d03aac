//! File content → chunks → data blobs.
//!
//! Input is read in batches of a few MiB (`ctx.batch`); the chunks of a batch are hashed,
//! compressed and sealed in parallel while the next batch is read (`rayon::join`), so a single
//! large file keeps every core busy and memory stays at two batches per file in flight.
//! Holes found with `SEEK_DATA`/`SEEK_HOLE` are recorded, not read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::format::tree::ContentPart;
use crate::id::{BlobId, BlobType};
use crate::repo::packer::Near;
use crate::source::extents::extents;
use crate::{Error, Result};

use super::{Counters, Ctx};

/// Reads one region of a file through `pread`.
struct RangeReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Stores the content of an open file (`path` names it in errors); returns its parts and the
/// number of bytes it had.
pub(super) fn store_file(
    ctx: &Ctx<'_>,
    file: &File,
    path: &Path,
) -> Result<(Vec<ContentPart>, u64)> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_file() {
        // Replaced (by a FIFO, a device, …) between listing and opening: not read.
        return Err(Error::io(
            path,
            std::io::Error::other("is no longer a regular file (it changed while being backed up)"),
        ));
    }
    let size = meta.len();
    let mut parts = Vec::new();
    let mut total = 0u64;
    let near = Near::of(path);
    if ctx.opts.mmap && size >= 4 * ctx.batch as u64 {
        return store_mapped(ctx, path, file, size, near);
    }
    for ext in extents(file, size) {
        if ext.hole {
            parts.push(ContentPart::Hole(ext.len));
            total += ext.len;
            continue;
        }
        let mut r = RangeReader {
            file,
            pos: ext.offset,
            end: ext.offset + ext.len,
        };
        let n =
            store_reader(ctx, &mut r, Some(ext.len), &mut parts, near).map_err(|e| match e {
                Error::Io { error, .. } => Error::io(path, error),
                other => other,
            })?;
        total += n;
        if n < ext.len {
            break; // the file shrank while being read: keep what was there
        }
    }
    Ok((parts, total))
}

/// Stores everything `reader` yields as one file's content.
pub(super) fn store_stream(
    ctx: &Ctx<'_>,
    reader: &mut (dyn Read + Send),
) -> Result<(Vec<ContentPart>, u64)> {
    let mut parts = Vec::new();
    let n = store_reader(ctx, reader, None, &mut parts, Near::default())?;
    Ok((parts, n))
}

/// Fills `buf` up to `cap` bytes (reading into spare capacity, without zeroing it first);
/// returns whether the input ended.
fn fill(r: &mut (dyn Read + Send), buf: &mut Vec<u8>, cap: usize) -> Result<bool> {
    let want = cap.saturating_sub(buf.len());
    buf.reserve_exact(want);
    let n = r
        .take(want as u64)
        .read_to_end(buf)
        .map_err(|e| Error::io("(source)", e))?;
    Ok(n < want)
}

/// Stores what `r` yields; `size_hint` (the expected length, when known) keeps buffers small
/// for small files.
///
/// Input that fits one batch (most files) is cut and its chunks processed in parallel. Longer
/// input streams through a sliding window: every chunk becomes a task on the pool as soon as it
/// is cut, and the reader only waits (helping with pending tasks meanwhile) when more than
/// [`window`] bytes are in flight. Uneven chunk sizes then never leave a core idle, and memory
/// stays at a few batches whatever the file's size.
fn store_reader(
    ctx: &Ctx<'_>,
    r: &mut (dyn Read + Send),
    size_hint: Option<u64>,
    parts: &mut Vec<ContentPart>,
    near: Near,
) -> Result<u64> {
    let full = ctx.batch + ctx.chunker.max_size();
    // One byte more than expected, so that reaching the end is seen without a second read.
    let cap = size_hint.map_or(full, |h| full.min(h as usize + 1));
    let mut cur = ctx.buffers.get(cap);
    let eof = fill(r, &mut cur, cap)?;
    if eof {
        let cuts = cut(ctx, &cur, true).0;
        let n = cur.len() as u64;
        Counters::add(&ctx.counters.bytes_read, n);
        ctx.progress.advance(n);
        let ids = store_chunks(ctx, &cur, &cuts, near);
        ctx.buffers.put(cur);
        push_ids(parts, ids?);
        return Ok(n);
    }
    stream(ctx, r, cur, full, parts, near)
}

/// Cut points of `buf`: (offset, length) pairs and the number of bytes they cover.
fn cut(ctx: &Ctx<'_>, buf: &[u8], eof: bool) -> (Vec<(usize, usize)>, usize) {
    let mut cuts = Vec::new();
    let mut pos = 0;
    while let Some(n) = ctx.chunker.next_cut(&buf[pos..], eof) {
        cuts.push((pos, n));
        pos += n;
    }
    (cuts, pos)
}

/// Bytes of chunk data allowed in flight while streaming.
fn window(ctx: &Ctx<'_>) -> usize {
    2 * ctx.batch
}

fn stream(
    ctx: &Ctx<'_>,
    r: &mut (dyn Read + Send),
    first: Vec<u8>,
    full: usize,
    parts: &mut Vec<ContentPart>,
    near: Near,
) -> Result<u64> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let results: Mutex<Vec<Option<Result<BlobId>>>> = Mutex::new(Vec::new());
    let in_flight = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done = (Mutex::new(()), Condvar::new());
    let mut total = 0u64;
    let outcome = rayon::in_place_scope(|s| -> Result<()> {
        let mut cur = first;
        let mut eof = false;
        loop {
            let (cuts, pos) = cut(ctx, &cur, eof);
            total += pos as u64;
            Counters::add(&ctx.counters.bytes_read, pos as u64);
            ctx.progress.advance(pos as u64);
            let mut next = if eof {
                Vec::new()
            } else {
                ctx.buffers.get(full)
            };
            next.extend_from_slice(&cur[pos..]);
            let batch = Arc::new(cur);
            for (off, len) in cuts {
                let seq = {
                    let mut res = results.lock().unwrap_or_else(|p| p.into_inner());
                    res.push(None);
                    res.len() - 1
                };
                in_flight.fetch_add(len, Ordering::SeqCst);
                let batch = batch.clone();
                let (results, in_flight, failed, done) = (&results, &in_flight, &failed, &done);
                s.spawn(move |_| {
                    let r = store_chunk(ctx, &batch[off..off + len], near);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[seq] = Some(r);
                    // The last task done with a batch hands its buffer back to the pool.
                    if let Ok(buf) = Arc::try_unwrap(batch) {
                        ctx.buffers.put(buf);
                    }
                    in_flight.fetch_sub(len, Ordering::SeqCst);
                    let _g = done.0.lock().unwrap_or_else(|p| p.into_inner());
                    done.1.notify_all();
                });
            }
            if let Ok(buf) = Arc::try_unwrap(batch) {
                ctx.buffers.put(buf);
            }
            if eof || failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            eof = fill(r, &mut next, full)?;
            cur = next;
            // Bound memory: help with pending work, or wait for some to finish.
            while in_flight.load(Ordering::SeqCst) > window(ctx) {
                if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                    let g = done.0.lock().unwrap_or_else(|p| p.into_inner());
                    if in_flight.load(Ordering::SeqCst) > window(ctx) {
                        let _ = done.1.wait_timeout(g, std::time::Duration::from_millis(5));
                    }
                }
            }
        }
    });
    outcome?;
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut ids = Vec::with_capacity(results.len());
    for r in results {
        ids.push(r.expect("invariant: the scope waited for every task")?);
    }
    push_ids(parts, ids);
    Ok(total)
}

fn push_ids(parts: &mut Vec<ContentPart>, ids: Vec<BlobId>) {
    parts.extend(ids.into_iter().map(ContentPart::Chunk));
}

fn store_chunks(
    ctx: &Ctx<'_>,
    buf: &[u8],
    cuts: &[(usize, usize)],
    near: Near,
) -> Result<Vec<BlobId>> {
    cuts.par_iter()
        .map(|&(s, n)| store_chunk(ctx, &buf[s..s + n], near))
        .collect()
}

/// Hashes one chunk and stores it unless the repository already has it.
fn store_chunk(ctx: &Ctx<'_>, data: &[u8], near: Near) -> Result<BlobId> {
    let id = ctx.repo.blob_id(data);
    if ctx.saver.contains(BlobType::Data, &id)? {
        return Ok(id);
    }
    if data.len() < ctx.frame_limit {
        // Small blobs are compressed together with others (D57).
        return ctx.saver.add_framed(id, data, near).map(|_| id);
    }
    super::buffers::with_seal_buffer(|buf| {
        match ctx.repo.prepare_blob_into(BlobType::Data, id, data, buf) {
            Ok(blob) => {
                let r = ctx.saver.add(&blob).map(|_| id);
                (blob.sealed, r)
            }
            Err(e) => (Vec::new(), Err(e)),
        }
    })
}

/// `--mmap`: chunks a large file straight from a read-only memory map.
fn store_mapped(
    ctx: &Ctx<'_>,
    path: &Path,
    file: &File,
    size: u64,
    near: Near,
) -> Result<(Vec<ContentPart>, u64)> {
    // SAFETY: the map is read-only and private to this call. If another process truncates the
    // file while we read it, the kernel raises SIGBUS; that risk is why mapping is opt-in
    // (`--mmap`) and documented in the README. No reference into the map outlives this call.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let data = &map[..size.min(map.len() as u64) as usize];
    let mut parts = Vec::new();
    for ext in extents(file, data.len() as u64) {
        if ext.hole {
            parts.push(ContentPart::Hole(ext.len));
            continue;
        }
        let region = &data[ext.offset as usize..(ext.offset + ext.len) as usize];
        let mut pos = 0;
        let mut batch = Vec::new();
        while let Some(n) = ctx.chunker.next_cut(&region[pos..], true) {
            batch.push((pos, n));
            pos += n;
            if pos - batch[0].0 >= ctx.batch {
                push_ids(&mut parts, store_chunks(ctx, region, &batch, near)?);
                batch.clear();
            }
        }
        push_ids(&mut parts, store_chunks(ctx, region, &batch, near)?);
        Counters::add(&ctx.counters.bytes_read, ext.len);
        ctx.progress.advance(ext.len);
    }
    Ok((parts, data.len() as u64))
}
