//! Micro-benchmarks of the hot paths, with throughput in bytes (or lookups).
//! Run: `cargo bench --profile dev --bench micro` (the dev profile optimises dependencies and
//! shares the one RocksDB build; see README). Add `-- 'index lookup'` to run one group.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vault::backend::memory::MemoryBackend;
use vault::compress::{decode_payload, encode_payload};
use vault::crypto::{Cipher, IdHasher, gear_table};
use vault::format::config::Compression;
use vault::format::index::{Index, IndexPack};
use vault::format::key::KdfParams;
use vault::format::pack::PackEntry;
use vault::id::{BlobId, BlobType, IndexId, PackId};
use vault::repo::cache::CacheDb;
use vault::repo::packer::{BlobSaver, SaverOptions};
use vault::repo::{DEFAULT_CHUNKER, InitOptions, OpenOptions, Repository};

fn random(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_keyed(&[seed; 32])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Text-like data that compresses about 3:1, like source code and logs.
fn texty(len: usize) -> Vec<u8> {
    let words: Vec<&[u8]> = vec![
        b"backup ",
        b"vault ",
        b"chunk ",
        b"index ",
        b"pack ",
        b"snapshot ",
        b"the ",
        b"of ",
        b"\n",
    ];
    let r = random(len, 9);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(r[i % len] as usize) % words.len()]);
        if r[(i * 7) % len] < 40 {
            out.extend_from_slice(format!("{}", r[i % len]).as_bytes());
        }
        i += 1;
    }
    out.truncate(len);
    out
}

fn chunker(c: &mut Criterion) {
    let data = random(64 << 20, 1);
    let ch = vault::chunker::Chunker::new(DEFAULT_CHUNKER, gear_table(&[7; 32]));
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc 256K/512K/4M, 64 MiB", |b| {
        b.iter(|| ch.cut_all(&data).len())
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = random(1 << 20, 2);
    let h = IdHasher::from_key([3; 32]);
    let mut g = c.benchmark_group("blake3");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("keyed blob id, 1 MiB", |b| b.iter(|| h.blob_id(&data)));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let text = texty(1 << 20);
    let noise = random(1 << 20, 4);
    let mut g = c.benchmark_group("zstd level 3");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("compress text, 1 MiB", |b| {
        b.iter(|| encode_payload(&text, Compression::Zstd(3)).len())
    });
    g.bench_function("compress incompressible, 1 MiB", |b| {
        b.iter(|| encode_payload(&noise, Compression::Zstd(3)).len())
    });
    let packed = encode_payload(&text, Compression::Zstd(3))[24..].to_vec();
    g.bench_function("decompress text, 1 MiB", |b| {
        b.iter_batched(
            || packed.clone(),
            |p| decode_payload(p, 1 << 20).unwrap().len(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let data = random(1 << 20, 5);
    let cipher = Cipher::new(&[6; 32]);
    let sealed = cipher.seal(b"aad", &data).unwrap();
    let mut g = c.benchmark_group("xchacha20-poly1305");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("seal 1 MiB", |b| {
        b.iter(|| cipher.seal(b"aad", &data).unwrap().len())
    });
    g.bench_function("open 1 MiB", |b| {
        b.iter(|| cipher.open(b"aad", &sealed).unwrap().len())
    });
    g.finish();
}

fn new_repo(dir: &std::path::Path) -> Repository {
    let init = InitOptions {
        kdf: KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(
        Arc::new(MemoryBackend::new()),
        b"pw",
        &init,
        OpenOptions {
            cache_root: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn packing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path());
    let text = texty(512 << 10);
    let mut g = c.benchmark_group("blob pipeline");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("hash+compress+seal 512 KiB", |b| {
        b.iter(|| {
            repo.prepare_blob(BlobType::Data, &text)
                .unwrap()
                .sealed
                .len()
        })
    });
    g.finish();
    // Pack building: 64 distinct prepared blobs of 512 KiB into packs (staging, header, upload).
    let blobs: Vec<_> = (0..64u8)
        .map(|i| {
            let mut d = text.clone();
            d[0] = i;
            repo.prepare_blob(BlobType::Data, &d).unwrap()
        })
        .collect();
    let total: u64 = blobs.iter().map(|b| b.sealed.len() as u64).sum();
    let mut g = c.benchmark_group("pack building");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(10);
    g.bench_function("64 blobs of 512 KiB into 16 MiB packs", |b| {
        b.iter_batched(
            // A fresh repository per iteration (else every blob is already stored); the saver
            // treats sealed bytes as opaque, so blobs prepared under another key do for timing.
            || {
                let d = tempfile::tempdir().unwrap();
                (new_repo(d.path()), d)
            },
            |(r, _d)| {
                let saver = BlobSaver::new(&r, SaverOptions::default()).unwrap();
                for blob in &blobs {
                    saver.add(blob).unwrap();
                }
                saver.finish().unwrap().packs
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Fills a cache database with `n` entries spread over packs of 50 blobs.
pub fn fill_cache(db: &CacheDb, n: u64) -> Vec<BlobId> {
    let mut sample = Vec::new();
    let per_index = 100_000u64;
    let mut made = 0u64;
    let mut seed = 0u64;
    while made < n {
        let mut idx = Index::default();
        let count = per_index.min(n - made);
        let mut ids = vec![0u8; count as usize * 32];
        blake3::Hasher::new_keyed(&[11; 32])
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut ids);
        seed += 1;
        for (k, chunk) in ids.chunks(32 * 50).enumerate() {
            let mut pack = [0u8; 32];
            pack[..8].copy_from_slice(&(made + k as u64).to_le_bytes());
            let mut p = IndexPack {
                id: PackId(pack),
                size: 16 << 20,
                blobs: Vec::new(),
            };
            for (j, id) in chunk.chunks(32).enumerate() {
                let mut b = [0u8; 32];
                b.copy_from_slice(id);
                if sample.len() < 100_000 && j == 0 {
                    sample.push(BlobId(b));
                }
                p.blobs.push(PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId(b),
                    offset: j as u64 * 300_000,
                    length: 300_000,
                    raw_length: 500_000,
                    frame: None,
                });
            }
            idx.packs.push(p);
        }
        let mut iid = [0u8; 32];
        iid[..8].copy_from_slice(&seed.to_le_bytes());
        db.ingest(IndexId(iid), &idx, true).unwrap();
        made += count;
    }
    db.flush().unwrap();
    eprintln!("level-0 files after filling: {}", db.level0_files());
    if std::env::var_os("VAULT_BENCH_COMPACT").is_some() {
        db.compact();
        eprintln!("level-0 files after compaction: {}", db.level0_files());
    }
    sample
}

fn lookups(c: &mut Criterion) {
    for n in [1_000_000u64, 10_000_000] {
        let db = CacheDb::open_temporary(
            &std::env::temp_dir(),
            b"bench",
            vault::repo::cache::Profile::Index,
        )
        .unwrap();
        let present = fill_cache(&db, n);
        let absent: Vec<BlobId> = (0..100_000u32)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let mut g = c.benchmark_group(format!("index lookup, {n} entries"));
        g.throughput(Throughput::Elements(1));
        let mut i = 0;
        g.bench_function("present (random)", |b| {
            b.iter(|| {
                i = (i + 7919) % present.len();
                db.get(BlobType::Data, &present[i]).unwrap().is_some()
            })
        });
        let mut j = 0;
        g.bench_function("absent (new chunk)", |b| {
            b.iter(|| {
                j = (j + 1) % absent.len();
                db.get(BlobType::Data, &absent[j]).unwrap().is_some()
            })
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    chunker,
    hashing,
    compression,
    sealing,
    packing,
    lookups
);
criterion_main!(benches);
