//! Fail closed: damage never turns into wrong bytes under a real name, no damaged object
//! blocks the others, locks of dead owners do not outlive them, check does not cry wolf, a
//! read-only repository can be read, the cache heals itself, and trees of any depth work.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use vault::id::BlobType;
use vault::source::dir::DirHandle;

use crate::support::*;

/// The pack files holding blobs of `t`.
fn packs_of(r: &TestRepo, t: BlobType) -> Vec<PathBuf> {
    let repo = r.library();
    let mut packs = BTreeSet::new();
    repo.index()
        .unwrap()
        .for_each_blob(|bt, _, loc| {
            if bt == t {
                packs.insert(loc.pack);
            }
            Ok(())
        })
        .unwrap();
    packs
        .into_iter()
        .map(|p| r.repo.join(vault::format::layout::pack_path(&p)))
        .collect()
}

fn flip_middle(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 3;
    b[i] ^= 0x10;
    std::fs::write(p, b).unwrap();
}

/// Files below `root` whose name shows a restore that did not finish.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    walkdir(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".vault-restore-"))
        })
        .collect()
}

struct Fixture {
    r: TestRepo,
    src: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let mut files = Vec::new();
    for d in 0..3 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..5u64 {
            let p = src.join(format!("d{d}/f{f}"));
            // Some multi-chunk files, some single-chunk, some empty.
            let len = match f {
                0 => 0,
                1 => 2_000,
                _ => 200_000 * f as usize,
            };
            let data = pseudo_random(len, d * 10 + f);
            std::fs::write(&p, &data).unwrap();
            files.push((p, data));
        }
    }
    r.snapshot(&[&src]);
    Fixture { r, src, files }
}

#[test]
fn damaged_data_never_appears_under_its_name() {
    let fx = fixture();
    let r = &fx.r;
    // Damage one data pack.
    let packs = packs_of(r, BlobType::Data);
    flip_middle(&packs[0]);
    let damaged = damaged_paths(r);
    assert!(!damaged.is_empty());
    for keep in [false, true] {
        let target = r.scratch(if keep { "t-keep" } else { "t" });
        let reported = restore_damaged(r, &target, keep);
        assert_eq!(reported, damaged, "restore names exactly the damaged files");
        for (p, data) in &fx.files {
            let got = target.join(p.strip_prefix("/").unwrap());
            if damaged.contains(&p.display().to_string()) {
                assert!(!got.exists(), "damaged {} under its real name", p.display());
                let mut kept = got.clone().into_os_string();
                kept.push(".vault-damaged");
                assert_eq!(Path::new(&kept).exists(), keep);
            } else {
                assert_eq!(&std::fs::read(&got).unwrap(), data, "{}", p.display());
            }
        }
        assert!(leftovers(&target).is_empty(), "{:?}", leftovers(&target));
    }
    // dump writes nothing of a damaged file (unless streaming is asked for).
    let bad = damaged.iter().next().unwrap();
    let out = r.run(&["dump", "latest", bad]);
    assert_exit(&out, 1);
    assert!(
        out.stdout.is_empty(),
        "dump wrote {} bytes",
        out.stdout.len()
    );
    let out = r.run(&["--json", "dump", "latest", bad]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "damaged");
    let out = r.run(&["dump", "--stream", "latest", bad]);
    assert_exit(&out, 1);
    let ok = fx
        .files
        .iter()
        .find(|(p, d)| !damaged.contains(&p.display().to_string()) && d.len() > 300_000)
        .unwrap();
    let out = r.run(&["dump", "latest", ok.0.to_str().unwrap()]);
    assert_success(&out, &["dump"]);
    assert_eq!(out.stdout, ok.1);
}

#[test]
fn unreadable_trees_cost_only_what_is_below_them() {
    let fx = fixture();
    let r = &fx.r;
    // Damage the tree of one directory in its pack; restore without a local cache, so that
    // the tree is read from the damaged pack.
    let repo = r.library();
    let (_, snap) = repo
        .resolve_snapshot("latest", &Default::default(), None)
        .unwrap();
    let lost_dir = fx.src.join("d1");
    let node = vault::restorer::find_node(&repo, &snap.tree, &lost_dir).unwrap();
    let loc = repo
        .index()
        .unwrap()
        .get(BlobType::Tree, &node.subtree.unwrap())
        .unwrap()
        .unwrap();
    let pack = r.repo.join(vault::format::layout::pack_path(&loc.pack));
    let mut b = std::fs::read(&pack).unwrap();
    b[(loc.offset + loc.length / 2) as usize] ^= 0x01;
    std::fs::write(&pack, b).unwrap();
    drop(repo);
    let target = r.scratch("t");
    let out = r.run(&[
        "--no-cache",
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: directory listing", lost_dir.display())),
        "{stderr}"
    );
    // Everything else is restored right; nothing below the lost listing, nothing half-written.
    for (p, data) in &fx.files {
        let got = target.join(p.strip_prefix("/").unwrap());
        if p.starts_with(&lost_dir) {
            assert!(
                !got.exists(),
                "{} restored from a lost listing",
                p.display()
            );
        } else {
            assert_eq!(&std::fs::read(&got).unwrap(), data, "{}", p.display());
        }
    }
    assert!(leftovers(&target).is_empty());
}

#[test]
fn damaged_holds_locks_and_snapshots_block_nothing() {
    let fx = fixture();
    let r = &fx.r;
    let d2 = r.scratch("d2");
    std::fs::write(d2.join("x"), b"x").unwrap();
    let second = r.snapshot(&[&d2]);
    r.ok(&["hold", "latest", "--reason", "case 1"]);
    let hold = r.object_paths("holds")[0].clone();
    let b = std::fs::read(&hold).unwrap();
    std::fs::write(&hold, &b[..b.len() / 2]).unwrap();
    let hold_id = hold.file_name().unwrap().to_str().unwrap()[..16].to_string();
    // check names it; listing works and names it; removing snapshots is refused; garbage
    // collection alone is fine.
    let out = r.run(&["--json", "check"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&hold_id));
    let out = r.run(&["snapshots"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&second[..8]));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&hold_id[..8]));
    let out = r.run(&["forget", &second[..12]]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hold"));
    r.ok(&["prune"]);
    // repair removes it; then everything passes again.
    let v = r.json(&["repair", "holds"]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 1);
    r.ok(&["check"]);
    // A damaged lock: named by check, removed by unlock.
    let d = r.scratch("lockdir");
    r.ok(&["snapshot", d.to_str().unwrap()]);
    let repo = r.library();
    let guard = repo
        .lock(vault::repo::lock::LockKind::Shared, None)
        .unwrap();
    let lock = r.object_paths("locks")[0].clone();
    std::mem::forget(guard); // keep its object (as a killed process would)
    let b = std::fs::read(&lock).unwrap();
    std::fs::write(&lock, &b[..10]).unwrap();
    // An unreadable lock counts as exclusive (it might be a prune): commands say which lock
    // stops them, and `unlock` removes it.
    let lock_id = lock.file_name().unwrap().to_str().unwrap()[..8].to_string();
    let out = r.run(&["--json", "check"]);
    assert_exit(&out, 11);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&lock_id));
    assert_eq!(r.json(&["unlock"])["removed"], 1);
    // A damaged snapshot object: listed as damaged, removed by forget.
    let snap = r.repo.join("snapshots").join(&second);
    let b = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &b[..b.len() - 3]).unwrap();
    let out = r.run(&["snapshots"]);
    assert_exit(&out, 1);
    r.ok(&["forget", &second[..12]]);
    r.ok(&["check"]);
}

#[test]
fn a_lock_whose_pid_was_reused_is_stale() {
    use vault::format::lock::{Lock, LockOwner, encode_lock};
    use vault::format::time::Timestamp;
    use vault::repo::process::{ProcessIdentity, start_ticks};
    let r = TestRepo::new();
    let d = r.scratch("d");
    let repo = r.library();
    // A live, unrelated process holds the PID the dead owner had.
    let mut other = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = other.id();
    let me = ProcessIdentity::current();
    let real_start = start_ticks(pid).unwrap();
    let write = |start: u64| {
        let now = Timestamp::now();
        let lock = Lock {
            exclusive: true,
            hostname: vault::source::owner::hostname(),
            username: "x".into(),
            pid,
            uid: 0,
            created: now,
            refreshed: now,
            owner: Some(LockOwner {
                boot_id: me.boot_id.clone(),
                pid_ns: me.pid_ns,
                start_ticks: start,
            }),
        };
        repo.write_object(
            vault::format::layout::Dir::Locks,
            vault::format::KIND_LOCK,
            &encode_lock(&lock),
        )
        .unwrap()
    };
    if me.boot_id.is_empty() || me.pid_ns == 0 {
        other.kill().unwrap();
        other.wait().unwrap();
        return; // no /proc here: nothing can be proven
    }
    // The owner started at another time: the PID was reused, the lock is stale at once.
    write(real_start + 1);
    r.ok(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(r.json(&["unlock"])["removed"], 1);
    // The very process that holds the PID: a live lock, respected and kept by plain unlock.
    write(real_start);
    assert_exit(&r.run(&["snapshot", d.to_str().unwrap()]), 11);
    assert_eq!(r.json(&["unlock"])["removed"], 0);
    other.kill().unwrap();
    other.wait().unwrap();
    // Its owner is gone now: stale.
    assert_eq!(r.json(&["unlock"])["removed"], 1);
}

#[test]
fn check_beside_running_snapshots_finds_no_damage() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..12u64 {
                std::fs::write(d.join(format!("f{i}")), pseudo_random(400_000, i)).unwrap();
                r.ok(&["snapshot", d.to_str().unwrap()]);
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut rounds = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
            let out = r.run(&["--json", "check"]);
            assert_success(&out, &["check beside a running snapshot"]);
            rounds += 1;
        }
        writer.join().unwrap();
    });
    r.ok(&["check", "--verify-data"]);
}

/// Mounts `dir` read-only over itself (needs the right to mount; returns false without it).
fn read_only_bind(dir: &Path) -> bool {
    let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
    if !ok(std::process::Command::new("mount")
        .args(["--bind"])
        .arg(dir)
        .arg(dir)
        .stderr(std::process::Stdio::null()))
    {
        return false;
    }
    ok(std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(dir)
        .stderr(std::process::Stdio::null()))
}

#[test]
fn a_read_only_repository_can_be_read() {
    let fx = fixture();
    let r = &fx.r;
    if !read_only_bind(&r.repo) {
        eprintln!("cannot mount here (no privilege): read-only repository test skipped");
        return;
    }
    let unmount = || {
        let _ = std::process::Command::new("umount").arg(&r.repo).status();
    };
    let target = r.scratch("t");
    let results = [
        r.run(&[
            "restore",
            "--snapshot",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ]),
        r.run(&["ls", "latest", "-R"]),
        r.run(&["dump", "latest", fx.files[3].0.to_str().unwrap()]),
        r.run(&["check", "--verify-data"]),
        r.run(&["--json", "snapshot", fx.src.to_str().unwrap()]),
    ];
    unmount();
    for out in &results[..4] {
        assert_success(out, &["reading a read-only repository"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("without a lock"));
    }
    assert_eq!(results[2].stdout, fx.files[3].1);
    // The audit record of the restore cannot be written: a warning, not a failure.
    assert!(
        String::from_utf8_lossy(&results[0].stderr)
            .contains("audit record of this run could not be written"),
        "{}",
        String::from_utf8_lossy(&results[0].stderr)
    );
    // Writing fails at once as what it is.
    let out = &results[4];
    assert_exit(out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "permission_denied", "{v}");
}

#[test]
fn a_damaged_cache_heals_itself() {
    let fx = fixture();
    let r = &fx.r;
    // Flip a bit in every table file of the cache's database.
    let mut flipped = 0;
    for p in walkdir(&r.cache) {
        if p.extension().is_some_and(|e| e == "sst") {
            flip_middle(&p);
            flipped += 1;
        }
    }
    if flipped == 0 {
        // Force the index into table files first.
        r.ok(&["snapshot", fx.src.to_str().unwrap()]);
    }
    let target = r.scratch("t");
    let out = r.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_success(&out, &["restore with a damaged cache"]);
    for (p, data) in &fx.files {
        assert_eq!(
            &std::fs::read(target.join(p.strip_prefix("/").unwrap())).unwrap(),
            data
        );
    }
    r.ok(&["check", "--verify-data"]);
    let v = r.json(&["snapshot", fx.src.to_str().unwrap()]);
    assert_eq!(
        v["summary"]["data_blobs"], 0,
        "the healed cache knows every blob"
    );
}

#[test]
fn leftovers_in_tmp_are_reported_and_collected() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), pseudo_random(100_000, 1)).unwrap();
    r.snapshot(&[&d]);
    let tmp = r.repo.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // One of a process that provably died (this boot, this PID namespace, a start time no
    // process with that PID has), one from before owners were recorded, an hour old.
    let me = vault::repo::process::ProcessIdentity::current();
    let dead = vault::repo::process::ProcessIdentity {
        start_ticks: 1,
        ..me.clone()
    };
    let provable = !me.boot_id.is_empty() && me.pid_ns != 0;
    std::fs::write(
        tmp.join(format!("pack-{}-0123456789abcdef.tmp", dead.tag())),
        vec![7u8; 5000],
    )
    .unwrap();
    let old = tmp.join("pack-1234-0123456789abcdef.tmp");
    std::fs::write(&old, vec![7u8; 3000]).unwrap();
    let hour_ago = vault::format::time::Timestamp::now().secs - 3600;
    set_mtime(&old, hour_ago, 0);
    let v = r.json(&["check"]);
    assert_eq!(v["stats"]["tmp_files"], if provable { 2 } else { 1 }, "{v}");
    // A snapshot removes what provably dead owners left; prune removes the rest.
    r.ok(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the dead owner's file is gone, the old one stays"
    );
    let v = r.json(&["prune"]);
    assert_eq!(v["gc"]["tmp_files_removed"], 1, "{v}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(r.json(&["check"])["stats"]["tmp_files"], 0);
}

/// Builds a chain of `depth` directories named `d` below `root` (paths far beyond PATH_MAX),
/// with a file every `every` levels, through descriptors.
fn deep_tree(root: &Path, depth: usize, every: usize) -> usize {
    std::fs::create_dir_all(root).unwrap();
    let mut h = DirHandle::open(root).unwrap();
    let mut files = 0;
    for i in 0..depth {
        h.make_dir(OsStr::new("d")).unwrap();
        if i % every == 0 {
            let f = h.create_file(OsStr::new("f")).unwrap();
            use std::io::Write;
            (&f).write_all(format!("level {i}\n").as_bytes()).unwrap();
            files += 1;
        }
        h = h.open_dir(OsStr::new("d")).unwrap();
    }
    files
}

/// Compares two trees through descriptors (any depth): names, kinds, sizes, file contents.
fn same_deep_tree(a: &Path, b: &Path) {
    let mut stack = vec![(
        DirHandle::open(a).unwrap(),
        DirHandle::open(b).unwrap(),
        0usize,
    )];
    while let Some((x, y, depth)) = stack.pop() {
        let (ex, ey) = (x.entries().unwrap(), y.entries().unwrap());
        assert_eq!(ex, ey, "entries differ at depth {depth}");
        for n in ex {
            let (sx, sy) = (x.stat(&n).unwrap(), y.stat(&n).unwrap());
            assert_eq!(sx.file_type, sy.file_type);
            assert_eq!(sx.size, sy.size, "{n:?} at depth {depth}");
            assert_eq!(sx.mode, sy.mode, "{n:?} at depth {depth}");
            if sx.file_type == rustix::fs::FileType::RegularFile {
                use std::io::Read;
                let (mut cx, mut cy) = (Vec::new(), Vec::new());
                x.open_file(&n).unwrap().read_to_end(&mut cx).unwrap();
                y.open_file(&n).unwrap().read_to_end(&mut cy).unwrap();
                assert_eq!(cx, cy);
            }
            if sx.file_type == rustix::fs::FileType::Directory {
                stack.push((x.open_dir(&n).unwrap(), y.open_dir(&n).unwrap(), depth + 1));
            }
        }
    }
}

#[test]
fn trees_ten_thousand_deep_work_end_to_end() {
    let r = TestRepo::new();
    let src = r.scratch("deep");
    let files = deep_tree(&src, 10_000, 500);
    let v = r.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_new"], files as u64);
    // A second snapshot reuses everything; ls, check, restore, dump of the deepest file.
    let v = r.json(&["snapshot", src.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_unmodified"], files as u64);
    let listed = r.ok(&["ls", "latest", "-R"]);
    assert!(listed.lines().count() > 10_000);
    r.ok(&["check", "--verify-data"]);
    same_deep_tree(&src, &restore_latest(&r, "t", &src));
    let mut deepest = src.clone().into_os_string();
    for _ in 0..9_500 {
        deepest.push("/d");
    }
    deepest.push("/f");
    assert!(deepest.len() > 4096 * 4);
    let out = r.cmd(&["dump", "latest"]).arg(&deepest).output().unwrap();
    assert_success(&out, &["dump of a path beyond PATH_MAX"]);
    assert_eq!(out.stdout, b"level 9500\n");
    // Prune, repair and copy walk it too.
    r.ok(&["prune", "--keep-last", "1"]);
    let v = r.json(&["repair", "snapshots"]);
    assert_eq!(v["repaired"].as_array().unwrap().len(), 0);
    let other = TestRepo::new();
    let out = r
        .cmd(&["copy", "--to-repo", other.repo.to_str().unwrap()])
        .env("VAULT_TO_PASSWORD_FILE", &other.password_file)
        .output()
        .unwrap();
    assert_success(&out, &["copy of a deep tree"]);
    other.ok(&["check", "--verify-data"]);
    let _ = Path::new(OsStr::from_bytes(b"/"));
}

/// `repair snapshots` replaces a snapshot that lost a file by one whose summary counts what
/// it really holds (finding 8: the listing kept the old size).
#[test]
fn repaired_snapshots_count_what_they_hold() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("small"), b"small file\n").unwrap();
    r.ok(&["snapshot", d.to_str().unwrap()]);
    // A second file, one chunk (below the minimum chunk size), in a data pack of its own.
    let big = pseudo_random(12_000, 5);
    std::fs::write(d.join("big"), &big).unwrap();
    let second = r.json(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(second["summary"]["total_files"], 2);
    assert_eq!(second["summary"]["total_bytes"], 12_011);
    let pack = {
        let repo = r.library();
        let loc = repo
            .index()
            .unwrap()
            .get(BlobType::Data, &repo.blob_id(&big))
            .unwrap()
            .expect("the big file's chunk is indexed");
        vault::format::layout::pack_path(&loc.pack)
    };
    std::fs::remove_file(r.repo.join(pack)).unwrap();
    // The documented order: the index first (it drops the lost pack), then the snapshots.
    r.ok(&["repair", "index"]);
    let v = r.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(v["repaired"].as_array().unwrap().len(), 1, "{v}");
    let list = r.json(&["snapshots"]);
    // The replacement keeps the original's time; it is the one tagged `repaired`.
    let newest = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"].to_string().contains("repaired"))
        .unwrap_or_else(|| panic!("no repaired snapshot: {list}"))
        .clone();
    assert_eq!(newest["summary"]["total_files"], 1, "{newest}");
    assert_eq!(newest["summary"]["total_bytes"], 11, "{newest}");
    r.ok(&["check", "--verify-data"]);
}

/// A file replaced by a FIFO between listing and reading (a race a snapshot cannot rule out)
/// must not hang the snapshot waiting for a writer: opening it returns at once, and reading
/// finds no content. Run on a thread so that a regression fails the test instead of hanging
/// the suite.
#[test]
fn opening_a_fifo_where_a_file_was_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&dir.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let handle = DirHandle::open(dir.path()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let got = handle
            .open_file(OsStr::new("pipe"))
            .and_then(|mut f| f.read_to_end(&mut buf).map(|n| (f.metadata(), n)));
        let _ = tx.send(got.map(|(m, n)| (m.map(|m| m.file_type().is_file()), n)));
    });
    let (is_file, n) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("opening a FIFO blocked")
        .unwrap();
    assert!(
        !is_file.unwrap(),
        "the opened entry is seen as not a regular file"
    );
    assert_eq!(n, 0);
}
