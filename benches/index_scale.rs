//! Memory stays flat as the index grows: builds a real repository whose index names 10^7 blobs
//! (fake packs, real index objects), then runs the real `vault snapshot` of a directory twice —
//! first with an empty cache (ingests all 10^7 entries into RocksDB), then with the cache built —
//! and prints the peak RSS of each, next to the same snapshot in an empty repository.
//! Run: `cargo bench --profile dev --bench index_scale [-- BLOBS [DIR]]` (defaults 10^7 and
//! /usr/share/doc). Results are recorded in benches/RESULTS.md.

use std::process::Command;
use vault::format::index::{Index, IndexPack};
use vault::format::key::KdfParams;
use vault::format::pack::PackEntry;
use vault::id::{BlobId, BlobType, PackId};
use vault::repo::{InitOptions, OpenOptions, Repository};

fn peak_rss(repo: &std::path::Path, cache: &std::path::Path, dir: &str) -> (f64, u64) {
    let t = std::time::Instant::now();
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%M",
            env!("CARGO_BIN_EXE_vault"),
            "snapshot",
            "-q",
            "--force",
            dir,
        ])
        .env("VAULT_REPOSITORY", repo)
        .env("VAULT_PASSWORD", "pw")
        .env("VAULT_CACHE_DIR", cache)
        .output()
        .expect("vault runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: u64 = String::from_utf8_lossy(&out.stderr)
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (t.elapsed().as_secs_f64(), kib)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let blobs: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/usr/share/doc".into());
    let work = tempfile::Builder::new()
        .prefix("vault-index-scale-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let repo_path = work.path().join("repo");
    let backend = vault::backend::location::open_with(
        &vault::backend::location::parse(repo_path.to_str().unwrap()).unwrap(),
        &Default::default(),
        &vault::backend::location::OpenSettings {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    let init = InitOptions {
        kdf: KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"pw", &init, OpenOptions::default()).unwrap();

    // Baseline: the same snapshot in an (almost) empty repository.
    let (t0, base) = peak_rss(&repo_path, &work.path().join("cache0"), &dir);
    println!(
        "empty index:        snapshot of {dir}: {t0:.1} s, peak RSS {} MiB",
        base / 1024
    );

    let started = std::time::Instant::now();
    // As large as the largest index objects vault writes (prune and repair: 50 000 entries).
    let per_index = 50_000u64;
    let mut made = 0u64;
    let mut seed = 0u64;
    while made < blobs {
        let count = per_index.min(blobs - made);
        let mut ids = vec![0u8; count as usize * 32];
        blake3::Hasher::new_keyed(&[0x5c; 32])
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut ids);
        seed += 1;
        let mut idx = Index::default();
        for (k, chunk) in ids.chunks(32 * 50).enumerate() {
            let mut pack = [0u8; 32];
            pack[..8].copy_from_slice(&(made + k as u64).to_le_bytes());
            pack[8] = 0xfe;
            let mut p = IndexPack {
                id: PackId(pack),
                size: 16 << 20,
                blobs: Vec::new(),
            };
            for (j, id) in chunk.chunks(32).enumerate() {
                let mut b = [0u8; 32];
                b.copy_from_slice(id);
                p.blobs.push(PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId(b),
                    offset: j as u64 * 300_000,
                    length: 300_000,
                    raw_length: 524_288,
                    frame: None,
                });
            }
            idx.packs.push(p);
        }
        repo.write_index(&idx).unwrap();
        made += count;
    }
    println!(
        "wrote index objects naming {blobs} blobs in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let cache = work.path().join("cache");
    let (t1, cold) = peak_rss(&repo_path, &cache, &dir);
    println!(
        "{blobs} blobs, cold cache (ingests the whole index): {t1:.1} s, peak RSS {} MiB",
        cold / 1024
    );
    let (t2, warm) = peak_rss(&repo_path, &cache, &dir);
    println!(
        "{blobs} blobs, warm cache:                        {t2:.1} s, peak RSS {} MiB",
        warm / 1024
    );
    let db = du(&cache);
    println!("cache size on disk: {} MiB", db >> 20);
}

fn du(p: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}
