//! Backends for real: the conformance suite on every backend, the CLI round trip against real
//! S3, Azure Blob, SFTP and WebDAV servers, `vault copy` between them, cold storage classes,
//! fault injection and resuming after a killed run.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use vault::backend::location::{self, BackendOptions};
use vault::backend::memory::MemoryBackend;
use vault::backend::{Access, Backend, DynBackend, ObjectInfo};
use vault::progress::NoProgress;
use vault::repo::lock::LockKind;
use vault::repo::{OpenOptions, Repository};
use vault::{ErrorKind, Result};

use crate::servers::Server;
use crate::support::{
    Remote, TestRepo, assert_success, compare_trees, pseudo_random, restore_latest,
};

// ---------------------------------------------------------------------------------------------
// Conformance suite

/// Every property vault relies on, checked on one backend.
fn conformance(b: &dyn Backend) {
    let kind = |r: Result<()>| r.map_err(|e| e.kind()).err();
    // missing objects
    assert_eq!(
        b.read("index/missing").map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        b.read_range("index/missing", 0, 1)
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        b.stat("index/missing").map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(kind(b.delete("index/missing")), Some(ErrorKind::NotFound));
    assert!(!b.exists("index/missing").unwrap());
    assert!(b.list("snapshots").unwrap().is_empty());
    // write, read, ranged read, stat
    let small = pseudo_random(1000, 1);
    b.write("index/aa", &small).unwrap();
    assert_eq!(b.read("index/aa").unwrap(), small);
    assert_eq!(b.read_range("index/aa", 10, 20).unwrap(), &small[10..30]);
    assert_eq!(b.read_range("index/aa", 990, 10).unwrap(), &small[990..]);
    assert!(
        b.read_range("index/aa", 995, 10)
            .is_err_and(|e| e.kind() == vault::ErrorKind::Corrupt),
        "short ranged read is damage"
    );
    assert_eq!(b.stat("index/aa").unwrap().size, 1000);
    // reads into a reused buffer replace what it held, whatever its length was
    let mut buf = vec![0xEE; 5000];
    b.read_into("index/aa", &mut buf).unwrap();
    assert_eq!(buf, small);
    b.read_range_into("index/aa", 10, 20, &mut buf).unwrap();
    assert_eq!(buf, &small[10..30]);
    b.read_into("index/aa", &mut buf).unwrap();
    assert_eq!(buf, small, "a shorter buffer grows");
    assert_eq!(
        b.read_into("index/missing", &mut buf)
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        b.read_range_into("index/missing", 0, 1, &mut buf)
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::NotFound)
    );
    assert!(
        b.read_range_into("index/aa", 995, 10, &mut buf)
            .is_err_and(|e| e.kind() == vault::ErrorKind::Corrupt),
        "short ranged read into a buffer is damage"
    );
    // overwrite refusal
    assert_eq!(
        kind(b.write("index/aa", b"other")),
        Some(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        b.read("index/aa").unwrap(),
        small,
        "refused write changed nothing"
    );
    // nested paths and recursive listing
    b.write("data/ab/ab01", b"one").unwrap();
    b.write("data/cd/cd02", b"").unwrap();
    let mut listed: Vec<(String, u64)> = b
        .list("data")
        .unwrap()
        .into_iter()
        .map(|o: ObjectInfo| (o.path, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("data/ab/ab01".into(), 3), ("data/cd/cd02".into(), 0)]
    );
    assert_eq!(b.read("data/cd/cd02").unwrap(), b"");
    // a large object, written from a file in several parts
    let big = pseudo_random(20 << 20, 2);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big");
    std::fs::write(&f, &big).unwrap();
    b.write_file("data/ef/ef03", &f, Access::Cold).unwrap();
    assert!(
        f.exists(),
        "a file outside the staging directory is left alone"
    );
    assert_eq!(b.stat("data/ef/ef03").unwrap().size, big.len() as u64);
    assert_eq!(
        b.read_range("data/ef/ef03", (20 << 20) - 100, 100).unwrap(),
        &big[big.len() - 100..]
    );
    assert!(b.read("data/ef/ef03").unwrap() == big);
    b.read_into("data/ef/ef03", &mut buf).unwrap();
    assert!(buf == big);
    b.read_range_into("data/ef/ef03", 1 << 20, 3 << 20, &mut buf)
        .unwrap();
    assert!(buf == big[1 << 20..4 << 20]);
    assert_eq!(
        kind(b.write_file("data/ef/ef03", &f, Access::Cold)),
        Some(ErrorKind::AlreadyExists)
    );
    // delete
    b.delete("data/ab/ab01").unwrap();
    assert!(!b.exists("data/ab/ab01").unwrap());
    assert_eq!(
        b.read("data/ab/ab01").map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    let left: HashSet<String> = b
        .list("data")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert_eq!(
        left,
        ["data/cd/cd02", "data/ef/ef03"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

/// The backend for a remote, configured only through `-o` options (tests share one process
/// environment, so nothing is passed through environment variables here).
fn open_remote(remote: &Remote) -> DynBackend {
    let mut opts: Vec<String> = remote.options.clone();
    for (k, v) in &remote.env {
        let key = match k.as_str() {
            "AWS_ACCESS_KEY_ID" => "access_key_id",
            "AWS_SECRET_ACCESS_KEY" => "secret_access_key",
            "AWS_REGION" => "region",
            "AWS_ENDPOINT_URL" | "AZURE_STORAGE_ENDPOINT" => "endpoint",
            "AZURE_STORAGE_ACCOUNT" => "account_name",
            "AZURE_STORAGE_KEY" => "account_key",
            "VAULT_SFTP_KEY" => "key",
            "VAULT_WEBDAV_USERNAME" => "username",
            "VAULT_WEBDAV_PASSWORD" => "password",
            other => panic!("no option for {other}"),
        };
        opts.push(format!("{key}={v}"));
    }
    let loc = location::parse(&remote.location).unwrap();
    let b = location::open_with(
        &loc,
        &BackendOptions::parse(&opts).unwrap(),
        &location::OpenSettings::default(),
    )
    .unwrap();
    b.create().unwrap();
    b
}

#[test]
fn conformance_memory_and_local_directory() {
    conformance(&MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let loc = location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    // Nothing is created at a location without a repository…
    let e = location::open(&loc).unwrap_err();
    assert_eq!(e.kind(), vault::ErrorKind::NoRepository);
    assert!(!dir.path().join("repo").exists());
    // …except by init.
    let settings = location::OpenSettings {
        create: true,
        ..Default::default()
    };
    let b = location::open_with(&loc, &BackendOptions::default(), &settings).unwrap();
    b.create().unwrap();
    conformance(b.as_ref());
}

// ---------------------------------------------------------------------------------------------
// The CLI round trip against each server

/// A repository directory reached through OpenDAL's file-system service: a backend that is
/// not a local directory to vault (reads go through OpenDAL, remote code paths run), whose
/// objects a test can still reach as files.
fn opendal_fs(root: &Path) -> Remote {
    Remote {
        location: "opendal:fs".into(),
        env: Vec::new(),
        options: vec![format!("root={}", root.display())],
    }
}

/// A fresh repository reached through [`opendal_fs`]: the directory that holds it (kept alive
/// by the caller), its root, and the repository.
fn opendal_fs_repo() -> (tempfile::TempDir, std::path::PathBuf, TestRepo) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let r = TestRepo::remote(opendal_fs(&root));
    (dir, root, r)
}

fn sample(root: &Path, seed: u64) -> std::path::PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("etc/conf.d")).unwrap();
    std::fs::write(src.join("dump.sql"), pseudo_random(3_000_000, seed)).unwrap();
    std::fs::write(src.join("etc/app.conf"), format!("seed = {seed}\n")).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("etc/conf.d/{i}.conf")),
            format!("value {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("app.conf", src.join("etc/link")).unwrap();
    src
}

fn restore_and_compare(r: &TestRepo, snapshot: &str, src: &Path) {
    let target = r.scratch(&format!("restore-{snapshot}"));
    r.ok(&[
        "restore",
        "--snapshot",
        snapshot,
        "--target",
        target.to_str().unwrap(),
    ]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    let diffs = compare_trees(src, &restored);
    assert!(diffs.is_empty(), "{}: {diffs:?}", r.location());
}

fn copy(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> Output {
    let loc = dst.location();
    let mut args = vec!["copy", "--to-repo", loc.as_str()];
    let opts: Vec<String> = dst
        .remote
        .as_ref()
        .map(|r| r.options.clone())
        .unwrap_or_default();
    for o in &opts {
        args.extend(["--to-option", o.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut c = src.cmd(&args);
    c.env("VAULT_TO_PASSWORD_FILE", &dst.password_file);
    if let Some(r) = &dst.remote {
        for (k, v) in &r.env {
            c.env(k, v);
        }
    }
    c.output().unwrap()
}

/// Runs `vault --json copy`, asserts success, returns the report.
fn copy_json(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = copy(src, dst, &args);
    assert_success(&out, &["copy"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// init, snapshot, list, restore, check --verify-data, a changed snapshot, forget + prune,
/// check again, and a copy into a repository on another backend.
fn round_trip(remote: Remote, other: &TestRepo) {
    let r = TestRepo::remote(remote);
    let work = r.scratch("work");
    let src = sample(&work, 1);
    let first = r.snapshot(&[&src]);
    let listed = r.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    restore_and_compare(&r, &first, &src);
    r.ok(&["check", "--verify-data"]);
    // change a little, snapshot again: only the change is uploaded
    std::fs::write(src.join("etc/app.conf"), "changed\n").unwrap();
    let second_json = r.json(&["snapshot", src.to_str().unwrap()]);
    let added = second_json["summary"]["bytes_added"].as_u64().unwrap();
    assert!(added < 100_000, "unchanged data uploaded again: {added}");
    let second = second_json["id"].as_str().unwrap().to_string();
    r.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 1);
    r.ok(&["check", "--verify-data"]);
    restore_and_compare(&r, &second, &src);
    // copy to another backend, twice: the second run copies nothing
    let report = copy_json(&r, other, &[]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    let report = copy_json(&r, other, &[]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 0);
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1);
    other.ok(&["check", "--verify-data"]);
    restore_and_compare(other, "latest", &src);
}

#[test]
fn s3_round_trip_conformance_and_cold_data_packs() {
    let s3 = Server::s3();
    conformance(open_remote(&s3.remote("conformance")).as_ref());
    round_trip(s3.remote("repo"), &TestRepo::new());
    // Cold storage: data packs in the class asked for, everything else in the default class.
    let mut remote = s3.remote("cold");
    remote.options.push("storage_class=STANDARD_IA".into());
    let r = TestRepo::remote(remote);
    let work = r.scratch("work");
    let src = sample(&work, 9);
    r.snapshot(&[&src]);
    let classes = s3.s3_storage_classes("cold/");
    let cold: Vec<_> = classes
        .iter()
        .filter(|(_, c)| c == "STANDARD_IA")
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!cold.is_empty(), "{classes:?}");
    assert!(cold.iter().all(|k| k.starts_with("cold/data/")), "{cold:?}");
    for dir in [
        "cold/index/",
        "cold/snapshots/",
        "cold/keys/",
        "cold/config",
    ] {
        assert!(
            classes
                .iter()
                .any(|(k, c)| k.starts_with(dir) && c == "STANDARD"),
            "{dir} not hot: {classes:?}"
        );
    }
    // the tree pack stays hot: some data/ object is STANDARD and holds the trees
    assert!(
        classes
            .iter()
            .any(|(k, c)| k.starts_with("cold/data/") && c == "STANDARD")
    );
    r.ok(&["check", "--verify-data"]);
}

#[test]
fn azure_round_trip_and_conformance() {
    let az = Server::azurite();
    conformance(open_remote(&az.remote("conformance")).as_ref());
    round_trip(az.remote("repo"), &TestRepo::new());
}

#[test]
fn sftp_round_trip_and_conformance() {
    let sftp = Server::sftp();
    conformance(open_remote(&sftp.remote("conformance")).as_ref());
    let dav = Server::webdav();
    let other = TestRepo::remote(dav.remote("from-sftp"));
    round_trip(sftp.remote("repo"), &other);
}

#[test]
fn webdav_round_trip_and_conformance() {
    let dav = Server::webdav();
    conformance(open_remote(&dav.remote("conformance")).as_ref());
    round_trip(dav.remote("repo"), &TestRepo::new());
}

#[test]
fn copy_s3_to_azure_ten_snapshots_then_nothing() {
    let s3 = Server::s3();
    let az = Server::azurite();
    let src_repo = TestRepo::remote(s3.remote("src"));
    let dst_repo = TestRepo::remote(az.remote("dst"));
    let work = src_repo.scratch("work");
    let src = sample(&work, 3);
    let mut ids = Vec::new();
    for i in 0..10 {
        std::fs::write(src.join("etc/app.conf"), format!("generation {i}\n")).unwrap();
        std::fs::write(
            src.join(format!("new-{i}.bin")),
            pseudo_random(200_000, 100 + i),
        )
        .unwrap();
        ids.push(src_repo.snapshot(&[&src]));
    }
    let first = copy_json(&src_repo, &dst_repo, &[]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 10);
    // unchanged files of later snapshots were not read again: about 5 MB of distinct content
    // (10 snapshots of the tree would be over 30 MB)
    assert!(first["bytes_read"].as_u64().unwrap() < 6_000_000, "{first}");
    assert!(first["files_reused"].as_u64().unwrap() > 20, "{first}");
    let again = copy_json(&src_repo, &dst_repo, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 10);
    assert_eq!(again["bytes_read"].as_u64().unwrap(), 0);
    src_repo.ok(&["check", "--verify-data"]);
    dst_repo.ok(&["check", "--verify-data"]);
    let copied = dst_repo.json(&["snapshots"]);
    let copied = copied.as_array().unwrap();
    assert_eq!(copied.len(), 10);
    // every copy names its original, and the newest restores identical
    let originals: HashSet<String> = copied
        .iter()
        .map(|s| s["original"].as_str().unwrap()[..8].to_string())
        .collect();
    assert_eq!(originals, ids.iter().map(|i| i[..8].to_string()).collect());
    restore_and_compare(&dst_repo, "latest", &src);
}

// ---------------------------------------------------------------------------------------------
// Copy semantics on local repositories

#[test]
fn copy_rechunks_keeps_metadata_and_survives_prune_in_between() {
    let a = TestRepo::new();
    let b = TestRepo::new();
    let work = a.scratch("work");
    let src = crate::support::build_rich_tree(&work);
    let s1 = a.snapshot(&[&src]);
    copy_json(&a, &b, &[]);
    restore_and_compare(&b, "latest", &src);
    // Different keys and chunker seeds: no pack or blob name is shared.
    let names = |r: &TestRepo| -> HashSet<String> {
        crate::support::walkdir(&r.repo.join("data"))
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.len() == 64)
            .collect()
    };
    assert!(names(&a).is_disjoint(&names(&b)));
    // Empty the target, then copy a second snapshot of mostly the same files: the memo of the
    // first copy must not be trusted for chunks the prune removed.
    b.ok(&["forget", "--keep-none", "--prune"]);
    assert_eq!(b.json(&["snapshots"]).as_array().unwrap().len(), 0);
    std::fs::write(src.join("added.txt"), "new file\n").unwrap();
    let s2 = a.snapshot(&[&src]);
    let report = copy_json(&a, &b, &[&s2]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    b.ok(&["check", "--verify-data"]);
    restore_and_compare(&b, "latest", &src);
    // The first snapshot's copy was forgotten in the target, so it is copied again on request.
    let report = copy_json(&a, &b, &[&s1]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    // Copying into itself is refused.
    let out = a
        .cmd(&["copy", "--to-repo", a.repo.to_str().unwrap()])
        .env("VAULT_TO_PASSWORD_FILE", &a.password_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A wrong target password is exit code 12, and nothing is copied.
    let wrong = a.scratch("wrong");
    std::fs::write(wrong.join("pw"), "nope\n").unwrap();
    let out = a
        .cmd(&["copy", "--to-repo", b.repo.to_str().unwrap()])
        .env("VAULT_TO_PASSWORD_FILE", wrong.join("pw"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

// ---------------------------------------------------------------------------------------------
// Robustness

#[test]
fn one_gigabyte_through_ten_percent_transient_faults() {
    let r = TestRepo::new();
    let work = r.scratch("work");
    let src = work.join("big");
    std::fs::create_dir_all(&src).unwrap();
    // 1 GiB: mostly incompressible, some repeated, across a few files.
    for i in 0..8u64 {
        let mut f = std::fs::File::create(src.join(format!("part{i}"))).unwrap();
        for j in 0..16u64 {
            let block = pseudo_random(8 << 20, if j % 5 == 4 { 7 } else { i * 100 + j });
            std::io::Write::write_all(&mut f, &block).unwrap();
        }
    }
    let faults = "transient=0.1,truncate=0.02,seed=11";
    let with_faults = |args: &[&str]| {
        let out = r
            .cmd(args)
            .env("VAULT_FAULTS", faults)
            .env("VAULT_RETRY_BASE_MS", "1")
            .output()
            .unwrap();
        assert_success(&out, args);
        out
    };
    with_faults(&["snapshot", src.to_str().unwrap()]);
    with_faults(&["check", "--verify-data"]);
    let target = r.scratch("restore");
    with_faults(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(compare_trees(&src, &target.join(src.strip_prefix("/").unwrap())).is_empty());
    // prune through faults, then everything still verifies without them
    std::fs::remove_file(src.join("part0")).unwrap();
    with_faults(&["snapshot", src.to_str().unwrap()]);
    with_faults(&["forget", "--keep-last", "1", "--prune"]);
    r.ok(&["check", "--verify-data"]);
    assert!(compare_trees(&src, &restore_latest(&r, "restore2", &src)).is_empty());
}

#[test]
fn killed_snapshot_resumes_without_uploading_finished_packs_again() {
    let r = TestRepo::new();
    let work = r.scratch("work");
    let src = work.join("data");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(2_000_000, 40 + i)).unwrap();
    }
    // 1 MiB packs: the 12 MB snapshot writes a dozen packs; die after the eighth mutation
    // (lock, then packs), long before the index or the manifest.
    let out = r
        .cmd(&["snapshot", src.to_str().unwrap()])
        .env("VAULT_FAULTS", "kill_after_mutations=8")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(r.json(&["snapshots"]).as_array().unwrap().is_empty());
    let packs_before = crate::support::walkdir(&r.repo.join("data")).len();
    assert!(packs_before >= 5, "{packs_before}");
    assert!(crate::support::walkdir(&r.repo.join("index")).is_empty());
    r.ok(&["unlock"]);
    let v = r.json(&["snapshot", src.to_str().unwrap()]);
    let added = v["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added < 12_000_000 - 4 * 1_000_000,
        "finished packs uploaded again: {added} bytes added"
    );
    r.ok(&["check", "--verify-data"]);
    restore_and_compare(&r, "latest", &src);
}

/// Records which objects were written cold and refuses to read them.
#[derive(Debug)]
struct ColdGuard {
    inner: MemoryBackend,
    cold: Mutex<HashSet<String>>,
    armed: std::sync::atomic::AtomicBool,
}

impl ColdGuard {
    fn check(&self, path: &str) -> Result<()> {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst)
            && self.cold.lock().unwrap().contains(path)
        {
            return Err(vault::Error::Unsupported(format!(
                "cold object read: {path}"
            )));
        }
        Ok(())
    }
}

impl Backend for ColdGuard {
    fn location(&self) -> String {
        "cold-guard".into()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.check(path)?;
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check(path)?;
        self.inner.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.write(path, data)
    }
    fn write_file(&self, path: &str, local: &Path, access: Access) -> Result<()> {
        if access == Access::Cold {
            self.cold.lock().unwrap().insert(path.to_string());
        }
        self.inner.write_file(path, local, access)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(dir)
    }
    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.inner.stat(path)
    }
}

#[test]
fn listing_and_browsing_never_read_cold_packs() {
    let dir = tempfile::tempdir().unwrap();
    let guard = Arc::new(ColdGuard {
        inner: MemoryBackend::new(),
        cold: Mutex::new(HashSet::new()),
        armed: false.into(),
    });
    let open = |cache: &str| OpenOptions {
        cache_root: Some(dir.path().join(cache)),
        ..Default::default()
    };
    let repo = crate::support::init_repo(guard.clone(), &dir.path().join("c1"));
    let src = sample(dir.path(), 5);
    let lock = repo.lock(LockKind::Shared, None).unwrap();
    let out = vault::archiver::snapshot(
        &repo,
        vault::archiver::Source::Paths(vec![src.clone()]),
        &vault::archiver::SnapshotOptions::default(),
        &lock,
        &NoProgress,
    )
    .unwrap();
    drop(lock);
    assert!(!guard.cold.lock().unwrap().is_empty());
    guard.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // A fresh cache: everything comes from the backend.
    let repo = Repository::open(guard.clone(), b"pw", open("c2")).unwrap();
    let (snaps, _) = repo.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let mut files = 0;
    vault::restorer::walk_tree(&repo, &out.snapshot.tree, Path::new("/"), true, &mut |e| {
        if e.node.kind == vault::format::tree::NodeKind::File {
            files += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(files, 22);
    // Restoring content does read them (so the guard works).
    let err = vault::restorer::restore(
        &repo,
        &out.id,
        &vault::restorer::RestoreOptions {
            target: dir.path().join("restore"),
            ..vault::restorer::RestoreOptions::default()
        },
        &NoProgress,
    );
    let failed = match err {
        Err(_) => true,
        Ok(summary) => !summary.errors.is_empty(),
    };
    assert!(failed, "restore read no cold pack");
}

#[test]
fn gcs_is_configured_and_fails_cleanly_without_a_server() {
    // No GCS emulator runs here: the URL and configuration are checked, and requests to a
    // closed port end in a clear error and exit code 1, not a panic or a hang.
    let port = crate::servers::free_port();
    let r = TestRepo::uninitialised();
    let out = r
        .cmd(&[
            "-o",
            &format!("endpoint=http://127.0.0.1:{port}"),
            "-o",
            "token=not-a-real-token",
            "-o",
            "timeout=2s",
            "snapshots",
        ])
        .env("VAULT_REPOSITORY", "gcs:vault-bucket/prefix")
        .env("VAULT_RETRY_BASE_MS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gcs:vault-bucket/prefix") || err.contains("gcs"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-real-token"),
        "secret in the message: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // unknown schemes and bad URLs are input errors
    let out = r
        .cmd(&["snapshots"])
        .env("VAULT_REPOSITORY", "ftp:host/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not known"));
}

#[test]
fn generic_opendal_scheme_with_options() {
    // `opendal:SCHEME` reaches any built-in OpenDAL service with nothing but -o options; the
    // file-system service is the one that needs no server.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("generic");
    let remote = opendal_fs(&root);
    conformance(open_remote(&remote).as_ref());
    std::fs::remove_dir_all(&root).unwrap();
    let r = TestRepo::remote(remote);
    let work = r.scratch("work");
    let src = sample(&work, 21);
    let id = r.snapshot(&[&src]);
    assert!(root.join("config").exists());
    restore_and_compare(&r, &id, &src);
    r.ok(&["check", "--verify-data"]);
    // an unknown service is a clear error
    let out = r
        .cmd(&["snapshots"])
        .env("VAULT_REPOSITORY", "opendal:nosuchservice")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchservice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check --verify-data` keeps more pack reads in flight than it has workers on remote storage
/// (readers hand packs to the verifying pool), and finds exactly what the plain local check
/// finds: the same directory is checked as `opendal:fs` (remote path: read ahead) and as a
/// local directory, with a flipped bit in one data pack and another pack cut short.
#[test]
fn check_reads_remote_packs_ahead_and_reports_the_same_damage() {
    let (_dir, root, r) = opendal_fs_repo();
    let work = r.scratch("work");
    for seed in 0..3 {
        let src = sample(&work.join(format!("s{seed}")), 40 + seed);
        r.snapshot(&[&src]);
    }
    let mut packs: Vec<_> = crate::support::walkdir(&root.join("data"))
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 500_000)
        .collect();
    packs.sort();
    assert!(packs.len() >= 4, "{packs:?}");
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x04;
    std::fs::write(&packs[0], bytes).unwrap();
    let len = std::fs::metadata(&packs[2]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&packs[2])
        .unwrap()
        .set_len(len - 1000)
        .unwrap();

    let report = |out: Output| {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut errors: Vec<String> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e["object"], e["message"]))
            .collect();
        errors.sort();
        let mut paths: Vec<String> = v["damage"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["paths"].as_array().unwrap().clone())
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect();
        paths.sort();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        (errors, paths, log)
    };
    let args = ["-vvv", "--json", "check", "--verify-data", "--threads", "1"];
    let (remote_errors, remote_paths, remote_log) = report(r.run(&args));
    let local = std::process::Command::new(crate::support::vault_bin())
        .args(args)
        .env("VAULT_REPOSITORY", &root)
        .env("VAULT_PASSWORD_FILE", &r.password_file)
        .env("VAULT_CACHE_DIR", &r.cache)
        .env("TMPDIR", r.tmp())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (local_errors, local_paths, local_log) = report(local);
    assert!(remote_log.contains("reads_ahead=3"), "{remote_log}");
    assert!(local_log.contains("reads_ahead=0"), "{local_log}");
    for pack in [&packs[0], &packs[2]] {
        let name = pack.file_name().unwrap().to_str().unwrap();
        assert!(
            remote_errors.iter().any(|e| e.contains(&name[..8])),
            "{name}: {remote_errors:?}"
        );
    }
    assert!(!remote_paths.is_empty());
    assert_eq!(remote_errors, local_errors);
    assert_eq!(remote_paths, local_paths);
}

/// Prune on remote storage reads the packs it repacks ahead (reader threads, `opendal:fs`)
/// and keeps what the kept snapshot needs: after `--max-unused 0` packs were repacked, the
/// repository checks clean and the kept snapshot restores identical.
#[test]
fn prune_repacks_remote_packs_read_ahead() {
    let (_dir, _, r) = opendal_fs_repo();
    let work = r.scratch("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Files interleaved in the same packs: forgetting the first snapshot leaves its packs
    // partly used.
    for i in 0..12u64 {
        std::fs::write(
            src.join(format!("keep{i}")),
            pseudo_random(150_000, 500 + i),
        )
        .unwrap();
        std::fs::write(
            src.join(format!("drop{i}")),
            pseudo_random(150_000, 600 + i),
        )
        .unwrap();
    }
    let first = r.snapshot(&[&src]);
    for i in 0..12u64 {
        std::fs::remove_file(src.join(format!("drop{i}"))).unwrap();
    }
    let kept = r.snapshot(&[&src]);
    r.ok(&["forget", &first]);
    let v = r.json(&["prune", "--max-unused", "0"]);
    assert!(
        !v["gc"]["packs_to_repack"].as_array().unwrap().is_empty(),
        "{v}"
    );
    r.ok(&["check", "--verify-data"]);
    restore_and_compare(&r, &kept, &src);
}
