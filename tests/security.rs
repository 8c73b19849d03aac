//! Confidentiality and integrity: nothing readable in the repository, and any damaged object
//! is detected, named, and never turns into a panic or silently wrong output.

use std::path::{Path, PathBuf};

use crate::support::*;

const MARKERS: [&[u8]; 4] = [
    b"MARKER-CONTENT-7f3a9c",
    b"MARKER-NAME-41d2e8",
    b"MARKER-DIR-b9c0f1",
    b"MARKER-STDIN-55aa01",
];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_content_name_or_path_in_plaintext() {
    let r = TestRepo::new();
    let d = r.scratch("MARKER-DIR-b9c0f1");
    let mut content = Vec::new();
    for _ in 0..1000 {
        content.extend_from_slice(b"MARKER-CONTENT-7f3a9c ");
    }
    std::fs::write(d.join("MARKER-NAME-41d2e8.txt"), &content).unwrap();
    std::fs::write(d.join("plain.txt"), b"MARKER-CONTENT-7f3a9c").unwrap();
    r.snapshot(&[&d]);
    let mut child = r
        .cmd(&["snapshot", "--stdin", "--stdin-name", "MARKER-STDIN-55aa01"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"MARKER-CONTENT-7f3a9c")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let objects = r.objects();
    assert!(objects.len() > 5);
    for (path, bytes) in &objects {
        for m in MARKERS {
            assert!(
                !contains(bytes, m),
                "{} found in {path}",
                String::from_utf8_lossy(m)
            );
            assert!(
                !contains(path.as_bytes(), m),
                "marker in object name {path}"
            );
        }
        // The temp directory's random name is part of every path: it must not leak either.
        let dir_name = r
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .as_bytes();
        assert!(!contains(bytes, dir_name), "source path found in {path}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for p in walkdir(from) {
        let rel = p.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        if p.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

fn flip_middle_bit(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    std::fs::write(p, b).unwrap();
}

/// The repository damaged at one object, with a fresh cache and the commands to run.
struct Damaged {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    cache: PathBuf,
}

fn damaged_copy(r: &TestRepo, object: &Path) -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&r.repo, &repo);
    flip_middle_bit(&repo.join(object.strip_prefix(&r.repo).unwrap()));
    let cache = dir.path().join("cache");
    Damaged {
        _dir: dir,
        repo,
        cache,
    }
}

fn run_on(r: &TestRepo, d: &Damaged, args: &[&str]) -> std::process::Output {
    r.cmd(args)
        .env("VAULT_REPOSITORY", &d.repo)
        .env("VAULT_CACHE_DIR", &d.cache)
        .output()
        .unwrap()
}

#[test]
fn any_flipped_bit_fails_the_reading_command_and_names_the_object() {
    let r = TestRepo::new();
    let src = r.scratch("data");
    std::fs::write(src.join("file.bin"), pseudo_random(400_000, 11)).unwrap();
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/small"), b"small").unwrap();
    let id = r.snapshot(&[&src]);
    let restore_to = r.scratch("target");
    let restore: Vec<String> = [
        "restore",
        "--snapshot",
        "latest",
        "--target",
        restore_to.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();

    let name_of = |p: &Path| p.file_name().unwrap().to_str().unwrap()[..8].to_string();
    let mut cases: Vec<(PathBuf, Vec<&str>, String)> = Vec::new();
    cases.push((r.repo.join("config"), vec!["snapshots"], "config".into()));
    for k in r.object_paths("keys") {
        let n = name_of(&k);
        cases.push((k, vec!["snapshots"], n));
    }
    for s in r.object_paths("snapshots") {
        let n = name_of(&s);
        cases.push((s, restore.clone(), n));
    }
    for i in r.object_paths("index") {
        let n = name_of(&i);
        cases.push((i, restore.clone(), n));
    }
    for p in r.object_paths("data") {
        let n = name_of(&p);
        cases.push((p, restore.clone(), n));
    }
    assert!(
        cases.len() >= 6,
        "expected config, key, snapshot, index and two packs"
    );
    for (object, args, expect) in cases {
        let d = damaged_copy(&r, &object);
        let out = run_on(&r, &d, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{}: panic: {stderr}",
            object.display()
        );
        assert_ne!(
            out.status.code(),
            Some(0),
            "damage in {} went unnoticed:\n{stderr}",
            object.display()
        );
        assert!(
            stderr.contains(&expect),
            "error for {} does not name it ({expect}):\n{stderr}",
            object.display()
        );
    }
    // The undamaged repository still restores.
    r.ok(&[
        "restore",
        "--snapshot",
        &id,
        "--target",
        restore_to.to_str().unwrap(),
    ]);
}

#[test]
fn truncated_and_missing_objects_are_reported() {
    let r = TestRepo::new();
    let src = r.scratch("data");
    std::fs::write(src.join("file.bin"), pseudo_random(300_000, 12)).unwrap();
    r.snapshot(&[&src]);
    let target = r.scratch("t");
    for pack in r.object_paths("data") {
        let d = damaged_copy(&r, &pack);
        let rel = pack.strip_prefix(&r.repo).unwrap();
        let p = d.repo.join(rel);
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
        let out = run_on(
            &r,
            &d,
            &[
                "restore",
                "--snapshot",
                "latest",
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        assert_ne!(out.status.code(), Some(0));
        std::fs::remove_file(&p).unwrap();
        let out = run_on(
            &r,
            &d,
            &[
                "restore",
                "--snapshot",
                "latest",
                "--target",
                target.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr.contains(&pack.file_name().unwrap().to_str().unwrap()[..8]),
            "{stderr}"
        );
    }
}
