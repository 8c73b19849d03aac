//! Frames (format 4, `format-spec/06-packs.md` 6.4, D57): small files compressed together in
//! one sealed unit. Restore, dump, check, prune and repair treat every member as a blob of its
//! own; a damaged frame costs exactly its members' files, and never a wrong byte under a name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vault::format::pack::units;
use vault::id::{BlobId, BlobType, PackId};

use crate::support::*;

/// Small text-like files (0.2–12 KB, alike enough to compress better together) in four
/// directories, and one file of several chunks whose tail is small.
fn small_tree(root: &Path, n: usize, seed: u64) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..n {
        let dir = root.join(format!("site{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let mut body = String::new();
        let lines = 5 + (i * 37 + seed as usize) % 300;
        for l in 0..lines {
            body.push_str(&format!(
                "server {i}.{l} listen {} root /srv/www/{seed}/{l};\n",
                8000 + (l * 7 + i) % 97
            ));
        }
        let p = dir.join(format!("conf{i:04}.txt"));
        std::fs::write(&p, &body).unwrap();
        files.insert(p, body.into_bytes());
    }
    let big = root.join("big.bin");
    let data = pseudo_random(300_000 + 5_000, seed);
    std::fs::write(&big, &data).unwrap();
    files.insert(big, data);
    files
}

/// Every frame in the repository: (pack, offset) → its members' ids.
fn frames(r: &TestRepo) -> BTreeMap<(PackId, u64), Vec<BlobId>> {
    let repo = r.library();
    let mut out = BTreeMap::new();
    for p in walkdir(&r.repo.join("data")) {
        if !p.is_file() {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let id = PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        for unit in units(&repo.parse_pack(&id, &bytes).unwrap()) {
            if unit[0].frame.is_some() {
                out.insert((id, unit[0].offset), unit.iter().map(|e| e.id).collect());
            }
        }
    }
    out
}

/// The blob id of a small file (one chunk: its whole content).
fn blob_of(r: &TestRepo, data: &[u8]) -> BlobId {
    r.library().blob_id(data)
}

/// The blob ids of a file's chunks.
fn blobs_of(r: &TestRepo, data: &[u8]) -> Vec<BlobId> {
    let repo = r.library();
    let mut at = 0;
    let mut ids = Vec::new();
    for n in repo.chunker().cut_all(data) {
        ids.push(repo.blob_id(&data[at..at + n]));
        at += n;
    }
    ids
}

fn restored(target: &Path, p: &Path) -> PathBuf {
    target.join(p.strip_prefix("/").unwrap())
}

#[test]
fn small_files_share_frames_and_restore_dump_check_and_repair() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let files = small_tree(&src, 240, 1);
    r.snapshot(&[&src]);
    let frames = frames(&r);
    assert!(!frames.is_empty());
    assert!(
        frames.values().any(|m| m.len() >= 10),
        "small files share frames: {:?}",
        frames.values().map(Vec::len).collect::<Vec<_>>()
    );
    // Every small file is a frame member; the big file's chunks (≥ chunk_min) are not.
    let index = r.library().index().unwrap();
    for (p, data) in &files {
        if data.len() < 16 * 1024 {
            let loc = index
                .get(BlobType::Data, &blob_of(&r, data))
                .unwrap()
                .unwrap();
            assert!(loc.frame.is_some(), "{} is not framed", p.display());
        }
    }
    let big = files.keys().find(|p| p.ends_with("big.bin")).unwrap();
    let first_chunk = r.library().chunker().cut_all(&files[big])[0];
    let loc = index
        .get(BlobType::Data, &blob_of(&r, &files[big][..first_chunk]))
        .unwrap()
        .unwrap();
    assert!(
        loc.frame.is_none(),
        "a content-defined chunk is never framed"
    );
    drop(index);

    // The pack listing shows members with their place in the frame.
    let (pack, _) = frames.keys().next().unwrap();
    let v = r.json(&["cat", "pack", &pack.to_hex()]);
    let framed = v["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["frame"]["frame_raw"].as_u64().is_some())
        .count();
    assert!(framed > 0, "{v}");

    let check = |r: &TestRepo| {
        let out = r.run(&["check", "--verify-data"]);
        assert_success(&out, &["check --verify-data"]);
    };
    check(&r);
    let target = r.scratch("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
    let one = files.keys().nth(17).unwrap();
    let out = r.run(&["dump", "latest", one.to_str().unwrap()]);
    assert_success(&out, &["dump"]);
    assert_eq!(out.stdout, files[one]);

    // The index is rebuilt from pack headers, frames included.
    for p in walkdir(&r.repo.join("index")) {
        std::fs::remove_file(p).unwrap();
    }
    let _ = std::fs::remove_dir_all(&r.cache);
    r.ok(&["repair", "index"]);
    check(&r);
    let again = r.scratch("restore-again");
    r.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert!(compare_trees(&src, &restored(&again, &src)).is_empty());
}

#[test]
fn a_damaged_frame_costs_exactly_its_files_and_nothing_wrong_is_written() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let files = small_tree(&src, 160, 2);
    r.snapshot(&[&src]);
    let frames = frames(&r);
    let ((pack, offset), members) = frames
        .iter()
        .max_by_key(|(_, m)| m.len())
        .map(|(k, m)| (*k, m.clone()))
        .unwrap();
    assert!(members.len() >= 3);
    let lost: BTreeSet<String> = files
        .iter()
        .filter(|(_, d)| blobs_of(&r, d).iter().any(|b| members.contains(b)))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert_eq!(lost.len(), members.len(), "one file per member here");
    // One bit flipped inside the frame's sealed bytes.
    let path = r.repo.join(vault::format::layout::pack_path(&pack));
    let mut b = std::fs::read(&path).unwrap();
    b[offset as usize + 100] ^= 0x04;
    std::fs::write(&path, b).unwrap();

    assert_eq!(
        damaged_paths(&r),
        lost,
        "check names exactly the frame's files"
    );

    for keep in [false, true] {
        let target = r.scratch(if keep { "t-keep" } else { "t" });
        assert_eq!(restore_damaged(&r, &target, keep), lost);
        for (p, data) in &files {
            let got = restored(&target, p);
            if lost.contains(&p.display().to_string()) {
                assert!(!got.exists(), "damaged {} under its name", p.display());
                let mut kept = got.into_os_string();
                kept.push(".vault-damaged");
                let kept = PathBuf::from(kept);
                assert_eq!(kept.exists(), keep);
                if keep {
                    // Kept at its length, the unverifiable bytes left as zeros.
                    let k = std::fs::read(&kept).unwrap();
                    assert_eq!(k.len(), data.len());
                    if data.len() < 16 * 1024 {
                        assert!(k.iter().all(|&b| b == 0));
                    }
                }
            } else {
                assert_eq!(&std::fs::read(&got).unwrap(), data, "{}", p.display());
            }
        }
    }
    let bad = lost.iter().next().unwrap();
    let out = r.run(&["dump", "latest", bad]);
    assert_exit(&out, 1);
    assert!(out.stdout.is_empty());
}

#[test]
fn prune_frames_the_used_members_again_and_drops_the_rest() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let files = small_tree(&src, 200, 3);
    let first = r.snapshot(&[&src]);
    // Half the small files go; the second snapshot keeps the rest.
    let mut gone = BTreeSet::new();
    for (i, (p, d)) in files.iter().enumerate() {
        if i % 2 == 0 && d.len() < 16 * 1024 {
            std::fs::remove_file(p).unwrap();
            gone.insert(blob_of(&r, d));
        }
    }
    r.snapshot(&[&src]);
    r.ok(&["forget", &first]);
    r.ok(&["prune", "--max-unused", "0"]);
    let members: Vec<BlobId> = frames(&r).into_values().flatten().collect();
    let kept: BTreeSet<BlobId> = files
        .iter()
        .filter(|(p, d)| d.len() < 16 * 1024 && p.exists())
        .map(|(_, d)| blob_of(&r, d))
        .collect();
    assert!(!kept.is_empty() && !gone.is_empty());
    for id in &gone {
        assert!(
            !members.contains(id),
            "a member no snapshot uses survived prune"
        );
    }
    for id in &kept {
        assert!(members.contains(id), "a used member was dropped");
    }
    assert_success(&r.run(&["check", "--verify-data"]), &["check"]);
    let target = r.scratch("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
    // Sizes come from the frames' shares: stats add up to no more than the data packs hold.
    let stats = r.json(&["stats"]);
    let stored = stats["unique"]["stored_bytes"].as_u64().unwrap_or(0);
    let on_disk: u64 = walkdir(&r.repo.join("data"))
        .iter()
        .filter(|p| p.is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(stored > 0 && stored <= on_disk, "{stats}");
}

#[test]
fn frames_of_incompressible_files_are_stored_as_is_and_read_back() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let mut files = BTreeMap::new();
    for i in 0..400u64 {
        let p = src.join(format!("r{i:03}.bin"));
        let data = pseudo_random(8_000 + (i as usize * 13) % 4_000, 100 + i);
        std::fs::write(&p, &data).unwrap();
        files.insert(p, data);
    }
    r.snapshot(&[&src]);
    // Some frame is stored as is (zstd does not shrink random bytes): the payload's method
    // byte is 0, so the sealed frame is its plaintext plus the seal and that byte.
    let repo = r.library();
    let stored_as_is = frames(&r).keys().any(|(pack, offset)| {
        let bytes = std::fs::read(r.repo.join(vault::format::layout::pack_path(pack))).unwrap();
        let e = repo
            .parse_pack(pack, &bytes)
            .unwrap()
            .into_iter()
            .find(|e| e.offset == *offset)
            .unwrap();
        e.length == e.frame.unwrap().frame_raw + 41
    });
    assert!(stored_as_is);
    assert_success(&r.run(&["check", "--verify-data"]), &["check"]);
    let target = r.scratch("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(compare_trees(&src, &restored(&target, &src)).is_empty());
    let (one, data) = files.iter().nth(123).unwrap();
    let out = r.run(&["dump", "latest", one.to_str().unwrap()]);
    assert_success(&out, &["dump"]);
    assert_eq!(&out.stdout, data);
}
