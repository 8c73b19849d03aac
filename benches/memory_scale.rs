//! Peak memory of every command on a large repository: builds a synthetic repository of N blobs
//! and S snapshots through the library (small chunks, real packs, index objects, trees and
//! snapshots), then runs the real `vault` binary for each command under `/usr/bin/time` and
//! prints wall time and peak RSS.
//!
//! ```text
//! cargo bench --profile dev --bench memory_scale -- BLOBS SNAPSHOTS [DIR]   # build, measure
//! cargo bench --profile dev --bench memory_scale -- measure DIR   # measure an existing build
//! ```
//! Every snapshot holds 10-chunk files of its own (BLOBS/SNAPSHOTS chunks) in directories of
//! 100, plus the first snapshot's files shared by all. Under `cargo test` (no `--bench`) a small
//! repository is built and every command is run once, as a smoke test. Results are recorded in
//! `benches/RESULTS.md` ("Memory at scale").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;
use vault::format::key::KdfParams;
use vault::format::snapshot::{Snapshot, Summary};
use vault::format::time::Timestamp;
use vault::format::tree::{ContentPart, Node, NodeKind, Tree, encode_tree};
use vault::id::{BlobId, BlobType};
use vault::repo::packer::{BlobSaver, SaverOptions};
use vault::repo::{InitOptions, OpenOptions, Repository};

const CHUNKS_PER_FILE: u64 = 10;
const CHUNK_LEN: usize = 48;
const FILES_PER_DIR: u64 = 100;
const PACK_SIZE: u32 = 4 << 20;
const PASSWORD: &str = "memory-scale";

fn file_node(name: String, ids: Vec<BlobId>, t: Timestamp) -> Node {
    Node {
        name: name.into_bytes(),
        kind: NodeKind::File,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: "bench".into(),
        group: "bench".into(),
        mtime: t,
        ctime: t,
        nlink: 1,
        size: ids.len() as u64 * CHUNK_LEN as u64,
        content: ids.into_iter().map(ContentPart::Chunk).collect(),
        ..Node::default()
    }
}

fn dir_node(name: &str, tree: BlobId, t: Timestamp) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::Dir,
        mode: 0o755,
        mtime: t,
        ctime: t,
        nlink: 2,
        subtree: Some(tree),
        ..Node::default()
    }
}

fn save_tree(repo: &Repository, saver: &BlobSaver, nodes: Vec<Node>) -> BlobId {
    let bytes = encode_tree(&Tree { nodes });
    let blob = repo.prepare_blob(BlobType::Tree, &bytes).unwrap();
    saver.add(&blob).unwrap();
    blob.id
}

/// The files of snapshot `s` (unique chunks), as one directory tree of 100-file directories.
fn snapshot_files(
    repo: &Repository,
    saver: &BlobSaver,
    s: u64,
    files: u64,
    t: Timestamp,
) -> BlobId {
    let dirs: Vec<Node> = (0..files.div_ceil(FILES_PER_DIR))
        .into_par_iter()
        .map(|d| {
            let nodes: Vec<Node> = (0..FILES_PER_DIR.min(files - d * FILES_PER_DIR))
                .map(|f| {
                    let file = s * files + d * FILES_PER_DIR + f;
                    let ids = (0..CHUNKS_PER_FILE)
                        .map(|c| {
                            let mut data = [0u8; CHUNK_LEN];
                            blake3::Hasher::new()
                                .update(&file.to_le_bytes())
                                .update(&c.to_le_bytes())
                                .finalize_xof()
                                .fill(&mut data);
                            let blob = repo.prepare_blob(BlobType::Data, &data).unwrap();
                            saver.add(&blob).unwrap();
                            blob.id
                        })
                        .collect();
                    file_node(format!("f{f:03}"), ids, t)
                })
                .collect();
            dir_node(&format!("d{d:05}"), save_tree(repo, saver, nodes), t)
        })
        .collect();
    save_tree(repo, saver, dirs)
}

fn open_settings(create: bool) -> vault::backend::location::OpenSettings {
    vault::backend::location::OpenSettings {
        create,
        ..Default::default()
    }
}

fn build(dir: &Path, blobs: u64, snapshots: u64) {
    let started = Instant::now();
    let loc = vault::backend::location::parse(dir.join("repo").to_str().unwrap()).unwrap();
    let backend =
        vault::backend::location::open_with(&loc, &Default::default(), &open_settings(true))
            .unwrap();
    let init = InitOptions {
        kdf: KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        },
        // 4 MiB packs: with 48-byte chunks a pack holds ~47 000 blobs, and 1/20 of the packs
        // is several packs at 10^6 blobs too (what a pack costs is bounded by its size).
        pack_size: PACK_SIZE,
        ..InitOptions::default()
    };
    let opts = OpenOptions {
        cache_root: Some(dir.join("build-cache")),
        temp_dir: dir.to_path_buf(),
    };
    let repo = Repository::init(backend, PASSWORD.as_bytes(), &init, opts).unwrap();
    let files = (blobs / snapshots / CHUNKS_PER_FILE).max(1);
    let saver = BlobSaver::new(&repo, SaverOptions::default()).unwrap();
    let now = Timestamp::now().secs;
    let mut base: Option<BlobId> = None;
    for s in 0..snapshots {
        let t = Timestamp::new(now - ((snapshots - s) as i64) * 3600, 0);
        let own = snapshot_files(&repo, &saver, s, files, t);
        let base_tree = *base.get_or_insert(own);
        let root = save_tree(
            &repo,
            &saver,
            vec![dir_node(
                "bench",
                save_tree(
                    &repo,
                    &saver,
                    vec![dir_node("base", base_tree, t), dir_node("own", own, t)],
                ),
                t,
            )],
        );
        repo.save_snapshot(&Snapshot {
            time: t,
            tz_offset_secs: 0,
            hostname: "bench".into(),
            username: "bench".into(),
            uid: 1000,
            gid: 1000,
            paths: vec![b"/bench".to_vec()],
            tags: Vec::new(),
            tree: root,
            parent: None,
            original: None,
            program_version: "memory_scale".into(),
            summary: Summary {
                total_files: files * 2,
                total_bytes: files * 2 * CHUNKS_PER_FILE * CHUNK_LEN as u64,
                ..Summary::default()
            },
        })
        .unwrap();
        if s % (snapshots / 10).max(1) == 0 {
            eprintln!("  built {s}/{snapshots} snapshots");
        }
    }
    let stats = saver.finish().unwrap();
    eprintln!(
        "built {} data + {} tree blobs in {} packs, {snapshots} snapshots, in {:.0} s",
        stats.data_blobs,
        stats.tree_blobs,
        stats.packs,
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir.join("build-cache"));
    // A small real directory to back up.
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..50u64 {
        let mut data = vec![0u8; 200_000];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("file{i}")), data).unwrap();
    }
}

/// Runs `vault ARGS` against the built repository; returns (wall seconds, peak RSS KiB).
fn run(dir: &Path, args: &[&str], extra_env: &[(&str, &Path)]) -> (f64, u64) {
    let t = Instant::now();
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", env!("CARGO_BIN_EXE_vault"), "-q"])
        .args(args)
        .env("VAULT_REPOSITORY", dir.join("work"))
        .env("VAULT_PASSWORD", PASSWORD)
        .env("VAULT_CACHE_DIR", dir.join("cache"))
        .env("TMPDIR", dir);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c
        .output()
        .expect("/usr/bin/time runs (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vault {args:?} failed: {stderr}");
    let kib = stderr
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (t.elapsed().as_secs_f64(), kib)
}

fn measure(dir: &Path) {
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    // Every measurement starts from the same repository: a fresh copy of the built one.
    let _ = std::fs::remove_dir_all(dir.join("work"));
    let copied = Command::new("cp")
        .arg("-a")
        .arg(dir.join("repo"))
        .arg(dir.join("work"))
        .status()
        .unwrap();
    assert!(copied.success());
    let _ = std::fs::remove_dir_all(dir.join("cache"));
    let _ = std::fs::remove_dir_all(dir.join("restore"));
    let _ = std::fs::remove_dir_all(dir.join("copy"));
    let latest: Vec<String> = {
        let out = Command::new(env!("CARGO_BIN_EXE_vault"))
            .args(["--json", "snapshots"])
            .env("VAULT_REPOSITORY", dir.join("work"))
            .env("VAULT_PASSWORD", PASSWORD)
            .env("VAULT_CACHE_DIR", dir.join("cache"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let all = v.as_array().unwrap();
        all.iter()
            .rev()
            .take(3)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let snapshots = {
        let out = Command::new(env!("CARGO_BIN_EXE_vault"))
            .args(["--json", "snapshots"])
            .env("VAULT_REPOSITORY", dir.join("work"))
            .env("VAULT_PASSWORD", PASSWORD)
            .env("VAULT_CACHE_DIR", dir.join("cache"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().len()
    };
    // Copy target.
    let ok = Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(["init", "--kdf-memory", "1MiB", "--kdf-iterations", "1"])
        .env("VAULT_REPOSITORY", dir.join("copy"))
        .env("VAULT_PASSWORD", PASSWORD)
        .env("VAULT_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    let keep = format!("{}", snapshots / 2);
    let mut copy_args = vec!["copy".to_string(), "--to-repo".into(), d("copy")];
    copy_args.extend(latest.iter().cloned());
    let copy_args: Vec<&str> = copy_args.iter().map(String::as_str).collect();
    let src = d("src");
    let restore = d("restore");
    let steps: Vec<(&str, Vec<&str>)> = vec![
        (
            "snapshot, cold cache (ingests the index)",
            vec!["snapshot", &src],
        ),
        ("snapshot, warm cache", vec!["snapshot", &src]),
        ("snapshots (list)", vec!["snapshots"]),
        (
            "restore of one snapshot",
            vec!["restore", "--snapshot", "latest", "--target", &restore],
        ),
        ("check", vec!["check"]),
        (
            "check --verify-data-subset 1/20",
            vec!["check", "--verify-data-subset", "1/20"],
        ),
        ("copy of the 3 newest snapshots", copy_args),
        ("repair index", vec!["repair", "index"]),
        (
            "prune (forget half the snapshots, collect)",
            vec!["prune", "--keep-last", &keep],
        ),
    ];
    let pw = dir.join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    println!("| step | wall s | peak RSS MiB |");
    println!("|---|---|---|");
    for (name, args) in steps {
        let (t, kib) = run(dir, &args, &[("VAULT_TO_PASSWORD_FILE", &pw)]);
        println!("| {name} | {t:.1} | {} |", kib / 1024);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let args: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    if args.first().map(String::as_str) == Some("measure") {
        measure(Path::new(&args[1]));
        return;
    }
    let (blobs, snapshots) = if bench {
        (
            args.first()
                .and_then(|a| a.parse().ok())
                .unwrap_or(10_000_000u64),
            args.get(1)
                .and_then(|a| a.parse().ok())
                .unwrap_or(10_000u64),
        )
    } else {
        (20_000, 20) // smoke test under `cargo test`
    };
    let keep = args.get(2).map(PathBuf::from);
    let work = match &keep {
        Some(p) => {
            let _ = std::fs::remove_dir_all(p);
            std::fs::create_dir_all(p).unwrap();
            None
        }
        None => Some(
            tempfile::Builder::new()
                .prefix("vault-memory-scale-")
                .tempdir_in("/var/tmp")
                .unwrap(),
        ),
    };
    let dir = keep.unwrap_or_else(|| work.as_ref().unwrap().path().to_path_buf());
    eprintln!(
        "building {blobs} blobs in {snapshots} snapshots in {}",
        dir.display()
    );
    build(&dir, blobs, snapshots);
    println!("{blobs} blobs, {snapshots} snapshots:");
    measure(&dir);
}
