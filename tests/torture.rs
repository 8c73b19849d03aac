//! The torture suite: kill every writing command at random points, damage every object kind
//! in every way, run commands concurrently, and feed bad input; after each trial prove that
//! every kept snapshot restores identical, that `check` names what is damaged, that nothing
//! wrong is ever written under a real name, that nothing panics, and that repair works.
//!
//! `VAULT_TORTURE=full` runs the full mode (≥ 50 kill points, 200 000 files in a directory,
//! many garbage command lines); the default quick mode runs a few of each in CI. Each test
//! prints `torture: NAME: T trials, P passed` (see the README's reliability section).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::*;

fn full() -> bool {
    std::env::var("VAULT_TORTURE").is_ok_and(|v| v == "full")
}

fn report(name: &str, trials: usize) {
    println!("torture: {name}: {trials} trials, {trials} passed");
}

/// A small deterministic pseudo-random generator (xorshift), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes version `v` of the source tree: some files stay, some change, some come and go.
fn write_state(src: &Path, v: u64) {
    for d in 0..3u64 {
        let dir = src.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..6u64 {
            let p = dir.join(format!("file{f}"));
            // file0..2 never change; file3 changes every version; file4 exists on odd ones.
            let seed = match f {
                0..=2 => d * 100 + f,
                3 => d * 100 + f + 1000 * v,
                _ => d * 100 + f,
            };
            if f == 4 && v % 2 == 0 {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            let len = 40_000 + (seed % 7) as usize * 60_000;
            let data = pseudo_random(len, seed);
            if std::fs::read(&p).ok().as_deref() != Some(&data[..]) {
                std::fs::write(&p, &data).unwrap();
            }
        }
    }
}

/// Keeps a copy of the source as it is now (for later comparison).
fn keep_state(src: &Path, states: &Path, v: u64) -> PathBuf {
    let dst = states.join(format!("v{v}"));
    let ok = std::process::Command::new("cp")
        .args(["-a"])
        .arg(src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(ok.success());
    dst
}

fn no_panic(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    let code = out.status.code();
    assert!(
        matches!(code, Some(0..=3) | Some(10..=12)) || code.is_none(),
        "{what}: unexpected exit {code:?}: {stderr}"
    );
}

/// Every snapshot of `r` is tagged `v<N>`: restore each and compare with `states/vN`.
#[cfg(feature = "fault-injection")]
fn every_snapshot_restores(r: &TestRepo, src: &Path, states: &Path, scratch: &str) -> usize {
    let v = r.json(&["snapshots"]);
    let mut n = 0;
    for s in v.as_array().unwrap() {
        let tag = s["tags"][0].as_str().unwrap();
        let target = r
            .dir
            .path()
            .join(format!("{scratch}-{}", &s["id"].as_str().unwrap()[..8]));
        let _ = std::fs::remove_dir_all(&target);
        r.ok(&[
            "restore",
            "--snapshot",
            s["id"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ]);
        let got = target.join(src.strip_prefix("/").unwrap());
        let diffs = compare_trees(&states.join(tag), &got);
        assert!(
            diffs.is_empty(),
            "snapshot {tag} restores differently: {diffs:?}"
        );
        std::fs::remove_dir_all(&target).unwrap();
        n += 1;
    }
    n
}

/// Kills snapshot, prune, copy and repair at random points (after the N-th change each makes
/// to the repository) and proves that every kept snapshot restores identical and that
/// `check --verify-data` passes, in both repositories for copy.
#[cfg(feature = "fault-injection")]
#[test]
fn kill_at_random_points() {
    let per_command = if full() { 15 } else { 2 };
    let mut rng = Rng(0x5eed_0001);
    let r = TestRepo::new();
    let src = r.scratch("src");
    let states = r.scratch("states");
    let target = TestRepo::new();
    let mut v = 0u64;
    let take = |r: &TestRepo, v: u64, faults: Option<String>| -> Output {
        let mut c = r.cmd(&["snapshot", "--tag", &format!("v{v}"), src.to_str().unwrap()]);
        if let Some(f) = faults {
            c.env("VAULT_FAULTS", f);
        }
        c.output().unwrap()
    };
    write_state(&src, v);
    keep_state(&src, &states, v);
    r.ok(&["snapshot", "--tag", "v0", src.to_str().unwrap()]);
    let mut trials = 0;
    for round in 0..per_command {
        // snapshot
        v += 1;
        write_state(&src, v);
        keep_state(&src, &states, v);
        let n = 1 + rng.below(14);
        let out = take(&r, v, Some(format!("kill_after_mutations={n}")));
        no_panic(&out, "killed snapshot");
        r.ok(&["check", "--verify-data"]);
        every_snapshot_restores(&r, &src, &states, "after-snapshot");
        // The next run finishes the job.
        if !out.status.success() {
            let out = take(&r, v, None);
            assert_success(&out, &["snapshot after a killed one"]);
        }
        trials += 1;
        // prune (forget the oldest, collect)
        let n = 1 + rng.below(10);
        let out = r
            .cmd(&["forget", "--keep-last", "3", "--prune"])
            .env("VAULT_FAULTS", format!("kill_after_mutations={n}"))
            .output()
            .unwrap();
        no_panic(&out, "killed prune");
        r.ok(&["check", "--verify-data"]);
        every_snapshot_restores(&r, &src, &states, "after-prune");
        r.ok(&["prune"]);
        r.ok(&["check", "--verify-data"]);
        trials += 1;
        // copy
        let n = 1 + rng.below(16);
        let out = r
            .cmd(&["copy", "--to-repo", target.repo.to_str().unwrap()])
            .env("VAULT_TO_PASSWORD_FILE", &target.password_file)
            .env("VAULT_FAULTS", format!("kill_after_mutations={n}"))
            .output()
            .unwrap();
        no_panic(&out, "killed copy");
        target.ok(&["check", "--verify-data"]);
        every_snapshot_restores(&target, &src, &states, "after-copy");
        trials += 1;
        // repair index
        let n = 1 + rng.below(4);
        let out = r
            .cmd(&["repair", "index"])
            .env("VAULT_FAULTS", format!("kill_after_mutations={n}"))
            .output()
            .unwrap();
        no_panic(&out, "killed repair");
        r.ok(&["check", "--verify-data"]);
        every_snapshot_restores(&r, &src, &states, "after-repair");
        trials += 1;
        let _ = round;
    }
    // The copy, run to completion, has everything.
    let out = r
        .cmd(&["copy", "--to-repo", target.repo.to_str().unwrap()])
        .env("VAULT_TO_PASSWORD_FILE", &target.password_file)
        .output()
        .unwrap();
    assert_success(&out, &["copy"]);
    target.ok(&["check", "--verify-data"]);
    // Killed commands left temporary databases; the commands after them removed them.
    for t in [&r, &target] {
        let left: Vec<_> = std::fs::read_dir(t.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
    report("kill points", trials);
}

/// How an object is damaged.
#[derive(Clone, Copy, Debug)]
enum Harm {
    Flip,
    TruncateHalf,
    TruncateZero,
    Delete,
    Swap,
    AppendGarbage,
}

const HARMS: [Harm; 6] = [
    Harm::Flip,
    Harm::TruncateHalf,
    Harm::TruncateZero,
    Harm::Delete,
    Harm::Swap,
    Harm::AppendGarbage,
];

fn harm(p: &Path, other: Option<&Path>, h: Harm) {
    let b = std::fs::read(p).unwrap();
    match h {
        Harm::Flip => {
            let mut b = b;
            let i = b.len() * 2 / 3;
            b[i] ^= 0x20;
            std::fs::write(p, b).unwrap();
        }
        Harm::TruncateHalf => std::fs::write(p, &b[..b.len() / 2]).unwrap(),
        Harm::TruncateZero => std::fs::write(p, b"").unwrap(),
        Harm::Delete => std::fs::remove_file(p).unwrap(),
        Harm::Swap => {
            let o = other.expect("swap needs a second object");
            let ob = std::fs::read(o).unwrap();
            std::fs::write(p, ob).unwrap();
            std::fs::write(o, b).unwrap();
        }
        Harm::AppendGarbage => {
            let mut b = b;
            b.extend_from_slice(b"garbage appended by the torture suite");
            std::fs::write(p, b).unwrap();
        }
    }
}

/// The base repository of the damage matrix: two snapshots, three keys, two holds, two
/// locks left by a killed process, packs of data and of trees.
struct DamageBase {
    r: TestRepo,
    /// The files of snapshot `b` (the one trials restore).
    files: BTreeMap<PathBuf, Vec<u8>>,
    passwords: Vec<PathBuf>,
}

fn damage_base() -> DamageBase {
    let r = TestRepo::new();
    let src = r.scratch("src");
    write_state(&src, 1);
    r.ok(&["snapshot", "--tag", "a", src.to_str().unwrap()]);
    write_state(&src, 2);
    r.ok(&["snapshot", "--tag", "b", src.to_str().unwrap()]);
    let files = walkdir(&src)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect();
    let mut passwords = vec![r.password_file.clone()];
    for i in 2..=3 {
        let pw = r.dir.path().join(format!("pw{i}"));
        std::fs::write(&pw, format!("password number {i}\n")).unwrap();
        r.ok(&[
            "key",
            "add",
            "--new-password-file",
            pw.to_str().unwrap(),
            "--kdf-memory",
            "1MiB",
            "--kdf-iterations",
            "1",
        ]);
        passwords.push(pw);
    }
    r.ok(&["hold", "latest", "--reason", "one"]);
    r.ok(&["hold", "latest", "--reason", "two"]);
    DamageBase {
        r,
        files,
        passwords,
    }
}

/// Copies the base repository for one trial.
fn copy_repo(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Two lock objects of a process that was killed (this test process is not, but the objects
/// are written as if by another one that died: a PID that does not exist).
fn write_dead_locks(repo: &Path, password: &[u8]) {
    use vault::format::lock::{Lock, LockOwner, encode_lock};
    use vault::format::time::Timestamp;
    let backend = vault::backend::location::open(
        &vault::backend::location::parse(repo.to_str().unwrap()).unwrap(),
    )
    .unwrap();
    let lib = vault::repo::Repository::open(backend, password, Default::default()).unwrap();
    let me = vault::repo::process::ProcessIdentity::current();
    for i in 0..2u64 {
        let now = Timestamp::now();
        let lock = Lock {
            exclusive: false,
            hostname: "torture".into(),
            username: "x".into(),
            pid: 4_000_000 + i as u32,
            uid: 0,
            created: now,
            refreshed: now,
            owner: Some(LockOwner {
                boot_id: me.boot_id.clone(),
                pid_ns: me.pid_ns,
                start_ticks: 1 + i,
            }),
        };
        lib.write_object(
            vault::format::layout::Dir::Locks,
            vault::format::KIND_LOCK,
            &encode_lock(&lock),
        )
        .unwrap();
    }
}

/// Damages every object kind in every way; each trial must be detected by `check` (which
/// names the object), must never make restore or dump produce wrong bytes, must not panic,
/// and must be repairable to a repository that passes `check --verify-data` and restores
/// every undamaged file identical.
#[test]
fn damage_every_object_kind_in_every_way() {
    let base = damage_base();
    let kinds = [
        "config",
        "key",
        "index",
        "snapshot",
        "hold",
        "lock",
        "data-pack",
        "tree-pack",
    ];
    let tree_packs: Vec<PathBuf> = {
        // Tree packs are the small ones written last in each snapshot; find them through
        // the library.
        let backend = vault::backend::location::open(
            &vault::backend::location::parse(base.r.repo.to_str().unwrap()).unwrap(),
        )
        .unwrap();
        let lib = vault::repo::Repository::open(
            backend,
            b"correct horse battery staple",
            Default::default(),
        )
        .unwrap();
        let mut packs = std::collections::BTreeSet::new();
        lib.index()
            .unwrap()
            .for_each_blob(|t, _, loc| {
                if t == vault::id::BlobType::Tree {
                    packs.insert(loc.pack);
                }
                Ok(())
            })
            .unwrap();
        packs
            .iter()
            .map(|p| PathBuf::from(vault::format::layout::pack_path(p)))
            .collect()
    };
    let mut trials = 0;
    for kind in kinds {
        for h in HARMS {
            // Deleting a lock, a hold, a key or a snapshot is what unlock, release, key
            // remove and forget do: not damage, nothing to detect.
            if matches!(h, Harm::Delete) && matches!(kind, "lock" | "hold" | "key" | "snapshot") {
                continue;
            }
            if matches!(h, Harm::Swap) && kind == "config" {
                continue; // there is one config
            }
            if damage_trial(&base, kind, h, &tree_packs) {
                trials += 1;
            }
        }
    }
    report("damage matrix", trials);
}

/// One damage trial; returns false when it does not apply (nothing to swap with).
fn damage_trial(base: &DamageBase, kind: &str, h: Harm, tree_packs: &[PathBuf]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_repo(&base.r.repo, &repo);
    if kind == "lock" {
        write_dead_locks(&repo, b"correct horse battery staple");
    }
    let cache = dir.path().join("cache");
    let what = format!("{kind} / {h:?}");
    // Which password survives: the third key is never the one damaged.
    let password = &base.passwords[2];
    let run = |args: &[&str]| -> Output {
        base.r
            .cmd(args)
            .env("VAULT_REPOSITORY", &repo)
            .env("VAULT_CACHE_DIR", &cache)
            .env("VAULT_PASSWORD_FILE", password)
            .output()
            .unwrap()
    };
    let objects = |sub: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir(&repo.join(sub))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    };
    let (victim, other): (PathBuf, Option<PathBuf>) = match kind {
        "config" => (repo.join("config"), None),
        "key" => {
            // The first password's key: find it by trying it through the library.
            let keys = objects("keys");
            let mine = keys
                .iter()
                .find(|k| {
                    let b = std::fs::read(k).unwrap();
                    let id = vault::id::KeyId::from_hex(k.file_name().unwrap().to_str().unwrap())
                        .unwrap();
                    vault::repo::keys::open_key_bytes(&b, b"correct horse battery staple", id)
                        .ok()
                        .flatten()
                        .is_some()
                })
                .unwrap()
                .clone();
            let other = keys
                .iter()
                .find(|k| {
                    **k != mine && {
                        let b = std::fs::read(k).unwrap();
                        let id =
                            vault::id::KeyId::from_hex(k.file_name().unwrap().to_str().unwrap())
                                .unwrap();
                        vault::repo::keys::open_key_bytes(&b, b"password number 3", id)
                            .ok()
                            .flatten()
                            .is_none()
                    }
                })
                .cloned();
            (mine, other)
        }
        "data-pack" | "tree-pack" => {
            let all = objects("data");
            let trees: Vec<PathBuf> = tree_packs.iter().map(|p| repo.join(p)).collect();
            let pick: Vec<PathBuf> = all
                .into_iter()
                .filter(|p| trees.contains(p) == (kind == "tree-pack"))
                .collect();
            (pick[0].clone(), pick.get(1).cloned())
        }
        dir_kind => {
            let sub = match dir_kind {
                "index" => "index",
                "snapshot" => "snapshots",
                "hold" => "holds",
                _ => "locks",
            };
            let v = objects(sub);
            (v[0].clone(), v.get(1).cloned())
        }
    };
    if matches!(h, Harm::Swap) && other.is_none() {
        return false;
    }
    let short = |p: &Path| {
        let n = p.file_name().unwrap().to_str().unwrap();
        n[..n.len().min(8)].to_string()
    };
    let victim_name = short(&victim);
    harm(&victim, other.as_deref(), h);
    // 1. check detects it and names the object (or says there is no repository / it is
    //    locked by an unreadable lock).
    let out = run(&["--json", "check", "--verify-data"]);
    no_panic(&out, &format!("check of {what}"));
    assert!(!out.status.success(), "{what}: check did not notice");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let named = match kind {
        "config" => said.contains("config") || said.contains("no repository"),
        "data-pack" | "tree-pack" | "index" => {
            // Damage to a pack or index shows as the pack, its blobs, or the missing blobs.
            said.contains(&victim_name)
                || said.contains("missing")
                || other.as_ref().is_some_and(|o| said.contains(&short(o)))
        }
        _ => {
            said.contains(&victim_name) || other.as_ref().is_some_and(|o| said.contains(&short(o)))
        }
    };
    assert!(named, "{what}: check does not name the object: {said}");
    // 2. restore and dump never produce wrong bytes.
    let target = dir.path().join("restore");
    let out = run(&[
        "restore",
        "--snapshot",
        "latest",
        "--tag",
        "b",
        "--target",
        target.to_str().unwrap(),
    ]);
    no_panic(&out, &format!("restore of {what}"));
    restored_files_are_right(base, &target, &what);
    for (p, data) in base.files.iter().take(4) {
        let out = run(&["dump", "latest", "--tag", "b", p.to_str().unwrap()]);
        no_panic(&out, &format!("dump of {what}"));
        if out.status.success() {
            assert_eq!(&out.stdout, data, "{what}: dump wrote wrong bytes");
        } else {
            assert!(out.stdout.is_empty(), "{what}: a failed dump wrote bytes");
        }
    }
    // 3. repair, then check --verify-data passes and every undamaged file restores.
    if kind == "config" {
        return true; // the root of the repository: nothing to rebuild it from (README)
    }
    let repairs: Vec<Vec<String>> = match kind {
        "key" => {
            let v: serde_json::Value =
                serde_json::from_slice(&run(&["--json", "key", "list"]).stdout).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .filter(|k| !k["damaged"].is_null())
                .map(|k| {
                    vec![
                        "key".into(),
                        "remove".into(),
                        k["id"].as_str().unwrap().into(),
                    ]
                })
                .collect()
        }
        "hold" => vec![vec!["repair".into(), "holds".into()]],
        "lock" => vec![vec!["unlock".into()]],
        "snapshot" => vec![vec!["repair".into(), "snapshots".into(), "--forget".into()]],
        _ => vec![
            vec!["repair".into(), "index".into(), "--verify-data".into()],
            vec!["repair".into(), "snapshots".into(), "--forget".into()],
        ],
    };
    for args in repairs {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&a);
        no_panic(&out, &format!("repair of {what}"));
        assert!(
            out.status.success(),
            "{what}: {a:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&["check", "--verify-data"]);
    assert!(
        out.status.success(),
        "{what}: check after repair: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let target = dir.path().join("restore-after-repair");
    let out = run(&[
        "restore",
        "--snapshot",
        "latest",
        "--tag",
        "b",
        "--target",
        target.to_str().unwrap(),
    ]);
    no_panic(&out, &format!("restore after repairing {what}"));
    let restored = restored_files_are_right(base, &target, &what);
    if matches!(kind, "key" | "hold" | "lock" | "index") {
        assert_eq!(
            restored,
            base.files.len(),
            "{what}: not everything restores"
        );
    }
    true
}

/// Every restored file is identical to its source; none is half-written. Returns how many
/// files were restored.
fn restored_files_are_right(base: &DamageBase, target: &Path, what: &str) -> usize {
    let mut n = 0;
    for (p, data) in &base.files {
        let got = target.join(p.strip_prefix("/").unwrap());
        if got.exists() {
            assert_eq!(
                &std::fs::read(&got).unwrap(),
                data,
                "{what}: {} restored wrong",
                p.display()
            );
            n += 1;
        }
    }
    for p in walkdir(target) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".vault-restore-"),
            "{what}: leftover {name}"
        );
    }
    n
}

/// Snapshot, restore, check and prune at the same time on one repository: every command
/// succeeds (they wait for each other's locks), and the result is whole.
#[test]
fn commands_run_concurrently() {
    let rounds = if full() { 8 } else { 3 };
    let r = TestRepo::new();
    let src = r.scratch("src");
    let states = r.scratch("states");
    write_state(&src, 0);
    keep_state(&src, &states, 0);
    r.ok(&["snapshot", "--tag", "v0", src.to_str().unwrap()]);
    // The writer works on its own copy of the source per version, so readers of `src` in
    // other threads never see a half-written version.
    std::thread::scope(|s| {
        let snapshots = s.spawn(|| {
            for v in 1..=rounds {
                let dir = r.dir.path().join(format!("src-v{v}"));
                write_state(&dir, v);
                let out = r
                    .cmd(&[
                        "--wait-lock",
                        "10m",
                        "snapshot",
                        "--tag",
                        &format!("w{v}"),
                        dir.to_str().unwrap(),
                    ])
                    .output()
                    .unwrap();
                assert_success(&out, &["concurrent snapshot"]);
            }
        });
        let restores = s.spawn(|| {
            for i in 0..rounds {
                let t = r.dir.path().join(format!("concurrent-restore-{i}"));
                let out = r
                    .cmd(&[
                        "--wait-lock",
                        "10m",
                        "restore",
                        "--snapshot",
                        "latest",
                        "--tag",
                        "v0",
                        "--target",
                        t.to_str().unwrap(),
                    ])
                    .output()
                    .unwrap();
                assert_success(&out, &["concurrent restore"]);
                let got = t.join(src.strip_prefix("/").unwrap());
                assert!(compare_trees(&states.join("v0"), &got).is_empty());
            }
        });
        let checks = s.spawn(|| {
            for _ in 0..rounds {
                let out = r.cmd(&["--wait-lock", "10m", "check"]).output().unwrap();
                assert_success(&out, &["concurrent check"]);
            }
        });
        let prunes = s.spawn(|| {
            for _ in 0..rounds {
                let out = r
                    .cmd(&[
                        "--wait-lock",
                        "10m",
                        "prune",
                        "--keep-last",
                        "3",
                        "--keep-tag",
                        "v0",
                    ])
                    .output()
                    .unwrap();
                assert_success(&out, &["concurrent prune"]);
            }
        });
        for h in [snapshots, restores, checks, prunes] {
            h.join().unwrap();
        }
    });
    r.ok(&["check", "--verify-data"]);
    // Every snapshot that remains restores to its version.
    for v in 1..=rounds {
        let dir = r.dir.path().join(format!("src-v{v}"));
        let _ = keep_state(&dir, &states, 100 + v);
    }
    let v = r.json(&["snapshots"]);
    for s in v.as_array().unwrap() {
        let tag = s["tags"][0].as_str().unwrap();
        let t = r
            .dir
            .path()
            .join(format!("final-{}", &s["id"].as_str().unwrap()[..8]));
        r.ok(&[
            "restore",
            "--snapshot",
            s["id"].as_str().unwrap(),
            "--target",
            t.to_str().unwrap(),
        ]);
        let (expected, path) = if tag == "v0" {
            (states.join("v0"), src.clone())
        } else {
            let n: u64 = tag[1..].parse().unwrap();
            (
                states.join(format!("v{}", 100 + n)),
                r.dir.path().join(format!("src-v{n}")),
            )
        };
        let diffs = compare_trees(&expected, &t.join(path.strip_prefix("/").unwrap()));
        assert!(diffs.is_empty(), "{tag}: {diffs:?}");
    }
    report("concurrent commands", rounds as usize * 4);
}

/// Garbage command lines: every one is a usage error (exit 2) and changes nothing.
#[test]
fn garbage_command_lines_change_nothing() {
    let n = if full() { 400 } else { 40 };
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    r.snapshot(&[&d]);
    let before = r.objects();
    let commands = [
        "snapshot",
        "restore",
        "ls",
        "dump",
        "check",
        "prune",
        "forget",
        "hold",
        "release",
        "snapshots",
        "copy",
        "unlock",
        "init",
        "key",
        "repair",
    ];
    let mut rng = Rng(0xbad_1e77);
    let ds = d.to_str().unwrap().to_string();
    for _ in 0..n {
        let cmd = commands[rng.below(commands.len() as u64) as usize];
        let junk = format!("--x{}", rng.next() % 100_000);
        let mut args: Vec<String> = vec![cmd.into()];
        let pos = rng.below(3);
        if pos == 0 {
            args.push(junk.clone());
            args.push(ds.clone());
        } else {
            args.push(ds.clone());
            args.push(junk.clone());
        }
        if rng.below(2) == 0 {
            args.insert(0, "--json".into());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = r.run(&a);
        no_panic(&out, &format!("{a:?}"));
        assert_eq!(out.status.code(), Some(2), "{a:?} was not a usage error");
    }
    assert!(
        r.objects().keys().eq(before.keys()),
        "garbage changed the repository"
    );
    report("garbage command lines", n);
}

/// A file that grows while it is read, and one that shrinks: the snapshot succeeds (0) or
/// says what it could not read (3); what it stored is a state the file really had.
#[test]
fn files_changing_while_read() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    let grows = d.join("grows.log");
    let shrinks = d.join("shrinks.bin");
    let base = pseudo_random(4_000_000, 77);
    std::fs::write(&grows, &base[..1_000_000]).unwrap();
    std::fs::write(&shrinks, &base).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let trials = if full() { 10 } else { 3 };
    for _ in 0..trials {
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&grows)
                    .unwrap();
                let mut i = 0usize;
                while !done.load(std::sync::atomic::Ordering::SeqCst) && i < 3_000 {
                    let at = 1_000_000 + (i % 3_000) * 1000;
                    f.write_all(&base[at..at + 1000]).unwrap();
                    i += 1;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&shrinks)
                    .unwrap()
                    .set_len(1_000)
                    .unwrap();
            });
            let out = r.run(&["--json", "snapshot", d.to_str().unwrap()]);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            writer.join().unwrap();
            no_panic(&out, "snapshot of changing files");
            assert!(matches!(out.status.code(), Some(0) | Some(3)));
        });
        done.store(false, std::sync::atomic::Ordering::SeqCst);
        // What was stored is a prefix of what the file held (appends only), and the shrunk
        // file is one of its two states.
        let g = r.run(&["dump", "latest", grows.to_str().unwrap()]);
        assert_success(&g, &["dump grows.log"]);
        let now = std::fs::read(&grows).unwrap();
        assert!(
            now.starts_with(&g.stdout),
            "stored bytes the file never had"
        );
        let sh = r.run(&["dump", "latest", shrinks.to_str().unwrap()]);
        assert_success(&sh, &["dump shrinks.bin"]);
        assert!(
            base.starts_with(&sh.stdout),
            "the shrinking file was stored with bytes it never had"
        );
        std::fs::write(&grows, &base[..1_000_000]).unwrap();
        std::fs::write(&shrinks, &base).unwrap();
    }
    r.ok(&["check", "--verify-data"]);
    report("files changing while read", trials);
}

/// A repository on a full disk (a 6 MiB tmpfs): the snapshot fails with a clear error and
/// exit 1, nothing panics, the repository stays whole, and prune frees what was left behind.
#[test]
fn a_full_disk_fails_cleanly() {
    let r = TestRepo::uninitialised();
    let mnt = r.dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs here (no privilege): full-disk test skipped");
        return;
    }
    let repo = mnt.join("repo");
    let run =
        |args: &[&str]| -> Output { r.cmd(args).env("VAULT_REPOSITORY", &repo).output().unwrap() };
    let mut init = vec!["init"];
    init.extend_from_slice(FAST_INIT);
    let out = run(&init);
    assert_success(&out, &["init on tmpfs"]);
    let d = r.scratch("d");
    std::fs::write(d.join("small"), pseudo_random(100_000, 1)).unwrap();
    assert_success(
        &run(&["snapshot", d.to_str().unwrap()]),
        &["small snapshot"],
    );
    std::fs::write(d.join("big"), pseudo_random(12_000_000, 2)).unwrap();
    let out = run(&["--json", "snapshot", d.to_str().unwrap()]);
    no_panic(&out, "snapshot on a full disk");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("space"), "{v}");
    assert_ne!(v["error"]["kind"], "damaged", "{v}");
    // The failed run removed its own staged packs: nothing of it is left in tmp/.
    let left: Vec<_> = std::fs::read_dir(repo.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in tmp/: {left:?}");
    std::fs::remove_file(d.join("big")).unwrap();
    let checked = run(&["check", "--verify-data"]);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_success(&checked, &["check after a full disk"]);
    report("full disk", 1);
}

/// Very many files in one directory: snapshot, listing and restore of all of them.
#[test]
fn many_files_in_one_directory() {
    let n: usize = if full() { 200_000 } else { 20_000 };
    let r = TestRepo::new();
    let d = r.scratch("many");
    for i in 0..n {
        std::fs::write(d.join(format!("f{i:06}")), format!("{i}\n")).unwrap();
    }
    let v = r.json(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_new"], n as u64);
    let out = r.run(&["ls", "latest", d.to_str().unwrap()]);
    assert_success(&out, &["ls"]);
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), n);
    let t = r.scratch("t");
    r.ok(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        t.to_str().unwrap(),
    ]);
    let got = t.join(d.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_dir(&got).unwrap().count(), n);
    for i in [0, n / 2, n - 1] {
        assert_eq!(
            std::fs::read_to_string(got.join(format!("f{i:06}"))).unwrap(),
            format!("{i}\n")
        );
    }
    let v = r.json(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_unmodified"], n as u64);
    report(&format!("{n} files in one directory"), 1);
}
