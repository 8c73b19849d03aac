//! Reading backups in small ways: diff, find, snapshots --latest/--group-by, tag, cat, dump of
//! a directory as tar or zip, and rewrite (the GDPR erasure, proven on every pack).

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Every blob of every pack in the repository, decrypted (whatever the index says).
fn every_blob(r: &TestRepo) -> Vec<Vec<u8>> {
    let repo = r.library();
    let mut out = Vec::new();
    for p in walkdir(&r.repo.join("data")) {
        if !p.is_file() {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let id = vault::id::PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        let entries = repo.parse_pack(&id, &bytes).unwrap();
        // Each stored unit once: a lone blob, or a frame and its members.
        for unit in vault::format::pack::units(&entries) {
            let (at, len) = (unit[0].offset as usize, unit[0].length as usize);
            let mut sealed = bytes[at..at + len].to_vec();
            let mut scratch = Vec::new();
            repo.open_unit(id, unit, &mut sealed, &mut scratch, &mut |_, plain| {
                out.push(plain.unwrap().to_vec())
            });
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn rewrite_then_prune_erases_a_file_from_every_snapshot_and_every_pack() {
    let r = TestRepo::new();
    let src = r.scratch("uploads");
    let marker = b"CUSTOMER-4711-PERSONAL-DATA-7f3a9c";
    let export = src.join("exports").join("customer-4711.csv");
    std::fs::create_dir_all(export.parent().unwrap()).unwrap();
    let mut body = pseudo_random(300_000, 1);
    body.extend_from_slice(marker);
    body.extend(pseudo_random(300_000, 2));
    std::fs::write(&export, &body).unwrap();
    std::fs::write(src.join("keep.txt"), "ordinary data\n".repeat(1000)).unwrap();
    let mut ids = Vec::new();
    for day in 0..4 {
        std::fs::write(
            src.join(format!("day{day}.txt")),
            format!("day {day}\n").repeat(100),
        )
        .unwrap();
        ids.push(r.snapshot(&[&src]));
    }
    r.ok(&["hold", &ids[0], "--reason", "litigation 12"]);
    assert!(every_blob(&r).iter().any(|b| contains(b, marker)));

    let pattern = format!("{}/exports/customer-4711.csv", src.display());
    // A dry run changes nothing.
    let v = r.json(&[
        "rewrite",
        "--dry-run",
        "--forget",
        "--exclude",
        &pattern,
        "--path",
        src.to_str().unwrap(),
    ]);
    assert_eq!(v["rewritten"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 4);
    // The held snapshot is rewritten but its original stays (exit 1 says so).
    let out = r.run(&[
        "--json",
        "rewrite",
        "--forget",
        "--exclude",
        &pattern,
        "--path",
        src.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept: Vec<_> = v["rewritten"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kept_because"].is_string())
        .collect();
    assert_eq!(kept.len(), 1, "{v}");
    assert_eq!(kept[0]["snapshot"], ids[0].as_str());
    // Rewritten snapshots keep time, host and tags, gain `rewritten`, and name their original.
    let snaps = r.json(&["snapshots", "--tag", "rewritten"]);
    assert_eq!(snaps.as_array().unwrap().len(), 4);
    for s in snaps.as_array().unwrap() {
        assert!(ids.contains(&s["original"].as_str().unwrap().to_string()));
    }
    // Release the hold, forget the original, prune without tolerance for unused space.
    r.ok(&["release", &ids[0]]);
    r.ok(&["forget", &ids[0]]);
    r.ok(&["prune", "--max-unused", "0"]);
    // Not restorable from any snapshot, not in any pack; everything else restores.
    let snaps = r.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 4);
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let out = r.run(&["dump", id, export.to_str().unwrap()]);
        assert_exit(&out, 1);
        let keep = r.ok(&["dump", id, src.join("keep.txt").to_str().unwrap()]);
        assert_eq!(keep.len(), "ordinary data\n".len() * 1000);
    }
    let found = r.ok(&["--json", "find", "customer-4711.csv"]);
    assert_eq!(found, "", "still found: {found}");
    let blobs = every_blob(&r);
    assert!(!blobs.is_empty());
    assert!(
        !blobs.iter().any(|b| contains(b, marker)),
        "the marker survived in a pack"
    );
    assert!(
        !blobs.iter().any(|b| contains(b, b"customer-4711.csv")),
        "the file name survived in a tree"
    );
    r.ok(&["check", "--verify-data"]);
}

#[test]
fn diff_reads_only_changed_trees_and_compares_with_a_local_directory() {
    let r = TestRepo::new();
    let src = r.scratch("tree");
    for d in 0..20 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
    let a = r.snapshot(&[&src]);
    std::fs::write(src.join("d03/f1"), "changed\n").unwrap();
    std::fs::remove_file(src.join("d07/f2")).unwrap();
    std::fs::create_dir(src.join("new")).unwrap();
    std::fs::write(src.join("new/x"), "x").unwrap();
    let b = r.snapshot(&[&src]);
    let out = r.ok(&["--json", "diff", &a, &b]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let changes: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["message_type"] == "change")
        .map(|l| {
            (
                l["modifier"].as_str().unwrap().to_string(),
                l["path"]
                    .as_str()
                    .unwrap()
                    .rsplit(&format!("{}/", src.display()))
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("M".to_string(), "d03/f1".to_string()),
            ("-".into(), "d07/f2".into()),
            ("+".into(), "new".into()),
            ("+".into(), "new/x".into()),
        ]
    );
    let stats = lines.last().unwrap();
    assert_eq!(stats["message_type"], "statistics");
    // The unchanged directories (18 of 20) were never read: the path down to the tree, the
    // tree itself, d03 and d07 on both sides, and the new directory.
    let depth = src.components().count() as u64; // `/` … `tree`
    let read = stats["trees_read"].as_u64().unwrap();
    assert!(read <= 2 * depth + 5, "read {read} trees");
    // Same snapshot: nothing, nothing read.
    let out = r.ok(&["--json", "diff", &a, &a]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["trees_read"], 0);
    // Against the local directory: one more change on disk.
    std::fs::write(src.join("d10/f0"), "edited after the snapshot\n").unwrap();
    let out = r.ok(&["diff", &b, src.to_str().unwrap()]);
    assert!(out.contains("M    ") && out.contains("d10/f0"), "{out}");
    assert!(out.contains("1 modified"), "{out}");
}

#[test]
fn find_tag_snapshots_and_cat() {
    let r = TestRepo::new();
    let src = r.scratch("etc");
    std::fs::create_dir_all(src.join("nginx")).unwrap();
    std::fs::write(src.join("nginx/nginx.conf"), "worker_processes 1;\n").unwrap();
    let first = r.snapshot(&[&src]);
    std::fs::write(src.join("nginx/nginx.conf"), "worker_processes 4;\n").unwrap();
    std::fs::write(src.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    let second = r.snapshot(&[&src]);
    // find: by name, in both; by path glob; by time.
    let out = r.ok(&["--json", "find", "nginx.conf"]);
    let hits: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 2);
    let out = r.ok(&["--json", "find", "HOSTS", "-i"]);
    assert_eq!(out.lines().count(), 1);
    let out = r.ok(&["--json", "find", &format!("{}/nginx/*", src.display())]);
    assert_eq!(out.lines().count(), 2);
    let out = r.ok(&["--json", "find", "nginx.conf", "--newest", "2999-01-01"]);
    assert_eq!(out.lines().count(), 0);
    // find --blob: the file that holds a given chunk.
    let tree = r.json(&["cat", "snapshot", &first])["tree"]
        .as_str()
        .unwrap()
        .to_string();
    let root = r.ok(&["cat", "tree", &tree]);
    assert!(root.contains("\"nodes\""));
    let conf = r.json(&["ls", &first, src.join("nginx/nginx.conf").to_str().unwrap()]);
    let _ = conf;
    let repo = r.library();
    let snap = repo
        .load_snapshot(&vault::id::SnapshotId::from_hex(&first).unwrap())
        .unwrap();
    let node =
        vault::restorer::find_node(&repo, &snap.tree, &src.join("nginx/nginx.conf")).unwrap();
    let vault::format::tree::ContentPart::Chunk(blob) = node.content[0] else {
        panic!()
    };
    drop(repo);
    let out = r.ok(&["--json", "find", "--blob", &blob.to_hex()]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["snapshot"], first.as_str());
    assert_eq!(
        r.ok(&["cat", "blob", &blob.to_hex()]),
        "worker_processes 1;\n"
    );
    let cfg = r.json(&["cat", "config"]);
    assert!(cfg["repository_id"].is_string());
    // tag: add, remove, set; holds move with the snapshot.
    r.ok(&["hold", &second, "--reason", "audit"]);
    let v = r.json(&["tag", "--add", "prod,web", &second]);
    let new = v["changed"][0]["new"].as_str().unwrap().to_string();
    let listed = r.json(&["snapshots", "--tag", "prod"]);
    assert_eq!(listed[0]["id"], new.as_str());
    assert_eq!(listed[0]["holds"][0]["reason"], "audit");
    assert_eq!(listed[0]["original"], second.as_str());
    let v = r.json(&["tag", "--remove", "web", "latest"]);
    let newer = v["changed"][0]["new"].as_str().unwrap().to_string();
    assert_eq!(
        r.json(&["cat", "snapshot", &newer])["tags"],
        serde_json::json!(["prod"])
    );
    let v = r.json(&["tag", "--set", "", "latest"]);
    assert_eq!(v["changed"][0]["tags"], serde_json::json!([]));
    // Nothing to change: nothing rewritten.
    let v = r.json(&["tag", "--remove", "absent", "latest"]);
    assert_eq!(v["changed"], serde_json::json!([]));
    assert_exit(&r.run(&["tag", "--add", "x"]), 2);
    // snapshots --latest / --group-by / --compact
    let other = r.scratch("other");
    std::fs::write(other.join("a"), "a").unwrap();
    r.snapshot(&[&other]);
    let latest = r.json(&["snapshots", "--latest", "1"]);
    assert_eq!(latest.as_array().unwrap().len(), 2);
    let grouped = r.json(&["snapshots", "--group-by", "paths"]);
    assert_eq!(grouped.as_array().unwrap().len(), 2);
    assert_eq!(
        grouped[0]["snapshots"].as_array().unwrap().len()
            + grouped[1]["snapshots"].as_array().unwrap().len(),
        3
    );
    let compact = r.ok(&["snapshots", "--compact"]);
    assert!(!compact.contains("Paths"), "{compact}");
}

#[test]
fn dump_of_a_directory_is_a_tar_or_zip_that_extracts_to_the_same_tree() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::create_dir_all(src.join("a/b/empty")).unwrap();
    std::fs::write(src.join("a/file.txt"), "text\n".repeat(5000)).unwrap();
    std::fs::write(src.join("a/b/big.bin"), pseudo_random(3 << 20, 5)).unwrap();
    std::fs::set_permissions(
        src.join("a/file.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(src.join("a/b"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("../file.txt", src.join("a/b/link")).unwrap();
    std::fs::hard_link(src.join("a/file.txt"), src.join("a/b/hard.txt")).unwrap();
    let long = "n".repeat(150);
    std::fs::write(src.join(&long), "long name").unwrap();
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin1").unwrap();
    let fifo = src.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let id = r.snapshot(&[&src]);
    let tar_file = r.dir.path().join("out.tar");
    let out = r
        .cmd(&["dump", &id, src.to_str().unwrap()])
        .stdout(std::fs::File::create(&tar_file).unwrap())
        .output()
        .unwrap();
    assert_success(&out, &["dump dir"]);
    let x = r.scratch("x");
    let st = Command::new("tar")
        .args(["-x", "--same-owner", "-p", "-f"])
        .arg(&tar_file)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let extracted = x.join(src.strip_prefix("/").unwrap());
    let diffs: Vec<String> = compare_trees(&src, &extracted)
        .into_iter()
        // tar keeps whole seconds (and no atime).
        .filter(|d| !d.contains("mtime") && !d.contains("atime"))
        .collect();
    assert!(diffs.is_empty(), "{diffs:#?}");
    // zip: names and contents.
    let zip_file = r.dir.path().join("out.zip");
    let out = r
        .cmd(&["dump", "--archive", "zip", &id, src.to_str().unwrap()])
        .stdout(std::fs::File::create(&zip_file).unwrap())
        .output()
        .unwrap();
    assert_success(&out, &["dump zip"]);
    let listing = Command::new("python3")
        .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); print(z.testzip()); print(len(z.namelist()))"])
        .arg(&zip_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.starts_with("None\n"), "{text}");
    // A damaged file is left out of the archive, named, exit 1.
    let damaged_pack = walkdir(&r.repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(&damaged_pack).unwrap();
    b[40] ^= 1;
    std::fs::write(&damaged_pack, b).unwrap();
    let out = r
        .cmd(&["--no-cache", "dump", &id, src.to_str().unwrap()])
        .stdout(std::fs::File::create(r.dir.path().join("d.tar")).unwrap())
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("left out of the archive"));
    let _ = Path::new("/");
}

#[test]
fn restore_overwrite_delete_dry_run_and_resume() {
    let r = TestRepo::new();
    let src = r.scratch("site");
    std::fs::create_dir_all(src.join("css")).unwrap();
    std::fs::write(src.join("index.html"), "<h1>v1</h1>\n".repeat(100)).unwrap();
    std::fs::write(src.join("css/site.css"), "body{}\n".repeat(100)).unwrap();
    std::fs::write(src.join("big.bin"), pseudo_random(2 << 20, 3)).unwrap();
    r.snapshot(&[&src]);
    let target = r.scratch("t");
    let t = target.to_str().unwrap();
    let restored = target.join(src.strip_prefix("/").unwrap());
    // Positional snapshot.
    let v = r.json(&["restore", "latest", "--target", t]);
    assert_eq!(v["files"], 3);
    // Again (an interrupted restore resumed): everything identical is kept, nothing written.
    let v = r.json(&["restore", "latest", "--target", t]);
    assert_eq!(
        (v["files"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    assert_eq!(v["bytes_written"], 0);
    // A changed file is replaced by default (if-changed), even with the same size and time.
    let f = restored.join("index.html");
    let meta = std::fs::metadata(&f).unwrap();
    let mut body = std::fs::read(&f).unwrap();
    body[5] = b'X';
    std::fs::write(&f, &body).unwrap();
    set_mtime(&f, meta.mtime(), meta.mtime_nsec());
    std::fs::write(restored.join("stray.txt"), "not in the snapshot").unwrap();
    // --dry-run says what would happen and changes nothing.
    let out = r.ok(&[
        "--json",
        "restore",
        "latest",
        "--target",
        t,
        "--delete",
        "--dry-run",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let action = |name: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .map(|l| l["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action("index.html").as_deref(), Some("replace"));
    assert_eq!(action("site.css").as_deref(), Some("keep"));
    assert_eq!(action("stray.txt").as_deref(), Some("delete"));
    assert_eq!(lines.last().unwrap()["delete"], 1);
    assert!(restored.join("stray.txt").exists());
    assert_eq!(std::fs::read(&f).unwrap(), body);
    // never: nothing existing is touched.
    let v = r.json(&["restore", "latest", "--target", t, "--overwrite", "never"]);
    assert_eq!(v["files"], 0);
    assert_eq!(std::fs::read(&f).unwrap(), body);
    // if-newer: the snapshot's file is not newer than the one on disk.
    std::fs::write(&f, "local edit, newer").unwrap();
    let v = r.json(&[
        "restore",
        "latest",
        "--target",
        t,
        "--overwrite",
        "if-newer",
    ]);
    assert_eq!(v["files"], 0, "{v}");
    // always + --delete: back to the snapshot exactly.
    let v = r.json(&[
        "restore",
        "latest",
        "--target",
        t,
        "--overwrite",
        "always",
        "--delete",
        "--verify",
    ]);
    assert_eq!(v["deleted"], 1);
    assert!(!restored.join("stray.txt").exists());
    assert_eq!(v["verify"]["mismatches"], serde_json::json!([]));
    assert!(compare_trees(&src, &restored).is_empty());
    // --delete cleans only what was backed up: the directories above the snapshot's path
    // (`/tmp`, …) hold things that were never in it, and they stay.
    let above = restored.parent().unwrap();
    std::fs::write(above.join("unrelated.txt"), "not part of the backup").unwrap();
    std::fs::write(target.join("at-the-top.txt"), "neither").unwrap();
    let v = r.json(&["restore", "latest", "--target", t, "--delete"]);
    assert_eq!(v["deleted"], 0, "{v}");
    assert!(above.join("unrelated.txt").exists());
    assert!(target.join("at-the-top.txt").exists());
    let out = r.ok(&[
        "restore",
        "latest",
        "--target",
        t,
        "--delete",
        "--dry-run",
        "-v",
    ]);
    assert!(
        !out.contains("unrelated.txt") && !out.contains("at-the-top.txt"),
        "{out}"
    );
    // --delete leaves excluded entries alone.
    std::fs::write(restored.join("keep.log"), "local log").unwrap();
    r.ok(&[
        "restore",
        "latest",
        "--target",
        t,
        "--delete",
        "--exclude",
        "*.log",
    ]);
    assert!(restored.join("keep.log").exists());
    assert_exit(&r.run(&["restore", "--target", t]), 2);
    assert_exit(
        &r.run(&["restore", "latest", "--snapshot", "latest", "--target", t]),
        2,
    );
    assert_exit(
        &r.run(&[
            "restore",
            "latest",
            "--target",
            t,
            "--overwrite",
            "sometimes",
        ]),
        2,
    );
    use std::os::unix::fs::MetadataExt;
    let _ = meta.ino();
}

#[test]
fn snapshot_options_restic_users_type_from_memory() {
    use std::os::unix::ffi::OsStrExt;
    let r = TestRepo::new();
    let src = r.scratch("home");
    for d in ["cache", "node_modules/pkg", "docs", "build"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )
    .unwrap();
    std::fs::write(src.join("cache/blob"), "cached").unwrap();
    std::fs::write(src.join("node_modules/pkg/index.js"), "js").unwrap();
    std::fs::write(src.join("node_modules/.skip-backup"), "").unwrap();
    std::fs::write(src.join("docs/README.TXT"), "readme").unwrap();
    std::fs::write(src.join("docs/notes.md"), "notes").unwrap();
    std::fs::write(src.join("build/huge.iso"), pseudo_random(3 << 20, 4)).unwrap();
    // A fake tag (wrong signature) does not exclude.
    std::fs::create_dir_all(src.join("fake")).unwrap();
    std::fs::write(src.join("fake/CACHEDIR.TAG"), "not a tag").unwrap();
    // --dry-run: counts, stores nothing.
    let before = r.objects().len();
    let v = r.json(&["snapshot", "--dry-run", src.to_str().unwrap()]);
    assert_eq!(v["dry_run"], true);
    assert!(v["summary"]["bytes_added"].as_u64().unwrap() > 3 << 20);
    assert_eq!(r.objects().len(), before, "a dry run stored something");
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 0);
    let id = r.snapshot_with(
        &[
            "--exclude-caches",
            "--exclude-if-present",
            ".skip-backup",
            "--exclude-larger-than",
            "1MiB",
            "--iexclude",
            "*.txt",
            "--read-concurrency",
            "1",
        ],
        &src,
    );
    let listed = r.ok(&["ls", &id, "-R", src.to_str().unwrap()]);
    for gone in ["cache", "node_modules", "README.TXT", "huge.iso"] {
        assert!(!listed.contains(gone), "{gone} in\n{listed}");
    }
    for kept in ["notes.md", "fake/CACHEDIR.TAG", "build"] {
        assert!(listed.contains(kept), "{kept} missing in\n{listed}");
    }
    // --files-from (comments, blanks) and --files-from-verbatim (NUL-separated, any bytes).
    let odd = src.join(std::ffi::OsStr::from_bytes(b"odd \xff name"));
    std::fs::write(&odd, "odd").unwrap();
    let list = r.dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("# docs only\n\n{}\n", src.join("docs/notes.md").display()),
    )
    .unwrap();
    let v = r.json(&["snapshot", "--files-from", list.to_str().unwrap()]);
    assert_eq!(v["summary"]["total_files"], 1);
    let list0 = r.dir.path().join("list0");
    let mut raw = odd.as_os_str().as_bytes().to_vec();
    raw.push(0);
    raw.extend_from_slice(src.join("docs/notes.md").as_os_str().as_bytes());
    raw.push(0);
    std::fs::write(&list0, raw).unwrap();
    let v = r.json(&["snapshot", "--files-from-verbatim", list0.to_str().unwrap()]);
    assert_eq!(v["summary"]["total_files"], 2);
    // Bandwidth limits apply (a lower bound: pacing only delays).
    let start = std::time::Instant::now();
    let big = r.scratch("big");
    std::fs::write(big.join("x"), pseudo_random(1 << 20, 8)).unwrap();
    r.ok(&["--limit-upload", "1024", "snapshot", big.to_str().unwrap()]);
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_exit(&r.run(&["--limit-upload", "0", "snapshots"]), 2);
}

/// A running `vault mount`, unmounted with SIGINT.
struct Mounted {
    child: std::process::Child,
    at: std::path::PathBuf,
}

impl Mounted {
    fn start(r: &TestRepo, at: &Path) -> Mounted {
        let child = r
            .cmd(&["--json", "mount", at.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Polled, not slept on: the mount is up when its top directory lists.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !at.join("snapshots").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the mount did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Mounted {
            child,
            at: at.to_path_buf(),
        }
    }

    /// SIGINT, then the `--json` statistics the mount printed on its way out.
    fn stop(mut self) -> serde_json::Value {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!self.at.join("snapshots").exists(), "still mounted");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn mount_serves_snapshots_ranges_and_metadata_over_real_fuse() {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/dev/fuse").exists() {
        panic!("/dev/fuse is missing: FUSE is needed for this test");
    }
    let r = TestRepo::new();
    let src = r.scratch("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = pseudo_random(48 << 20, 21);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/a.txt"), "alpha\n").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("sub/link")).unwrap();
    std::fs::hard_link(src.join("sub/a.txt"), src.join("sub/hard.txt")).unwrap();
    xattr::set(src.join("sub/a.txt"), "user.origin", b"mount-test").unwrap();
    let id = r.snapshot(&[&src]);
    let short = &id[..8];
    let mnt = r.scratch("mnt");

    // A range in the middle of the large file: only the blobs that cover it are fetched.
    let m = Mounted::start(&r, &mnt);
    let latest = mnt.join("snapshots/latest");
    let inside = latest.join(src.strip_prefix("/").unwrap());
    let mut f = std::fs::File::open(inside.join("big.bin")).unwrap();
    let mid = 24 << 20;
    f.seek(SeekFrom::Start(mid)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, big[mid as usize..mid as usize + (1 << 20)]);
    drop(f);
    let stats = m.stop();
    let fetched = stats["bytes_fetched"].as_u64().unwrap();
    // 1 MiB plus at most one chunk (256 KiB at most here) on each side, and the kernel's
    // read-ahead of at most a few chunks more: far below the file's 48 MiB.
    assert!(
        fetched <= 3 << 20,
        "fetched {fetched} bytes for a 1 MiB range"
    );
    assert!(fetched >= 1 << 20);

    // The whole tree: find, cmp, symlinks, hard links, xattrs, modes; hosts/ and tags/.
    let m = Mounted::start(&r, &mnt);
    let inside = mnt
        .join("snapshots/latest")
        .join(src.strip_prefix("/").unwrap());
    let listed = Command::new("find").arg(&inside).output().unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    for n in ["big.bin", "sub/a.txt", "sub/link", "sub/hard.txt"] {
        assert!(text.contains(n), "{n} not found:\n{text}");
    }
    assert!(
        Command::new("cmp")
            .arg(inside.join("big.bin"))
            .arg(src.join("big.bin"))
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        std::fs::read_link(inside.join("sub/link")).unwrap(),
        Path::new("a.txt")
    );
    let md = std::fs::metadata(inside.join("sub/a.txt")).unwrap();
    let orig = std::fs::metadata(src.join("sub/a.txt")).unwrap();
    assert_eq!(md.nlink(), 2);
    assert_eq!(md.mode() & 0o7777, orig.mode() & 0o7777);
    assert_eq!(md.mtime(), orig.mtime());
    assert_eq!(
        xattr::get(inside.join("sub/a.txt"), "user.origin")
            .unwrap()
            .as_deref(),
        Some(&b"mount-test"[..])
    );
    let names: Vec<String> = std::fs::read_dir(mnt.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(short)), "{names:?}");
    let host = std::fs::read_dir(mnt.join("hosts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        host.join("latest")
            .join(src.strip_prefix("/").unwrap())
            .join("sub/a.txt")
            .exists()
    );
    // Read-only.
    assert!(std::fs::write(inside.join("new.txt"), "x").is_err());
    m.stop();
}

/// The same commands against a real S3 API (moto): nothing above depends on a local backend.
#[test]
fn explore_commands_work_on_s3() {
    let s3 = crate::servers::Server::s3();
    let r = TestRepo::remote(s3.remote("explore"));
    let src = r.scratch("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/keep.txt"), "keep\n").unwrap();
    std::fs::write(src.join("d/secret.txt"), "SECRET-MARKER\n").unwrap();
    let a = r.snapshot(&[&src]);
    std::fs::write(src.join("d/keep.txt"), "kept, changed\n").unwrap();
    // Snapshot options: a dry run stores nothing on S3 either.
    let objects = |r: &TestRepo| {
        r.json(&["stats"])["backend"]["total_bytes"]
            .as_u64()
            .unwrap()
    };
    let before = objects(&r);
    let v = r.json(&[
        "snapshot",
        "--dry-run",
        "--exclude-caches",
        "--iexclude",
        "*.TMP",
        src.to_str().unwrap(),
    ]);
    assert_eq!(v["dry_run"], true);
    assert_eq!(objects(&r), before);
    let b = r.snapshot(&[&src]);
    assert_eq!(
        r.json(&["snapshots", "--latest", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        r.json(&["snapshots", "--group-by", "host"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = r.ok(&["diff", &a, &b]);
    assert!(out.contains("M    ") && out.contains("keep.txt"), "{out}");
    assert_eq!(r.ok(&["--json", "find", "secret.txt"]).lines().count(), 2);
    let v = r.json(&["tag", "--add", "s3", "latest"]);
    assert_eq!(v["changed"].as_array().unwrap().len(), 1);
    assert!(r.json(&["cat", "config"])["repository_id"].is_string());
    let out = r
        .cmd(&["dump", "latest", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out, &["dump tar on s3"]);
    assert!(out.stdout.len() > 1024 && contains(&out.stdout, b"kept, changed"));
    let t = r.scratch("t");
    let out = r.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.contains("would create"), "{out}");
    r.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--verify",
    ]);
    let pattern = format!("{}/d/secret.txt", src.display());
    r.ok(&["rewrite", "--forget", "--exclude", &pattern]);
    r.ok(&["prune", "--max-unused", "0"]);
    assert_eq!(r.ok(&["--json", "find", "secret.txt"]), "");
    let mnt = r.scratch("mnt");
    let m = Mounted::start(&r, &mnt);
    let inside = mnt
        .join("snapshots/latest")
        .join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(inside.join("d/keep.txt")).unwrap(),
        "kept, changed\n"
    );
    assert!(!inside.join("d/secret.txt").exists());
    m.stop();
    r.ok(&["check", "--verify-data"]);
}
