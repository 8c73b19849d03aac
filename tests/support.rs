//! Shared helpers: running the real `vault` binary against temporary repositories, building
//! source trees with every kind of entry, and comparing trees field by field.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Path of the binary under test.
pub fn vault_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vault")
}

/// Whether the tests run as root (devices, ownership).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A temporary repository with its password file and cache.
pub struct TestRepo {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub password_file: PathBuf,
    /// A non-local repository: its location, environment and `-o` options.
    pub remote: Option<Remote>,
}

/// How to reach a repository on a server.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    pub location: String,
    pub env: Vec<(String, String)>,
    pub options: Vec<String>,
}

/// Init flags that keep tests fast: cheap KDF, small chunks (so modest files have many).
pub const FAST_INIT: &[&str] = &[
    "--kdf-memory",
    "1MiB",
    "--kdf-iterations",
    "1",
    "--chunk-min",
    "16KiB",
    "--chunk-avg",
    "64KiB",
    "--chunk-max",
    "256KiB",
    "--pack-size",
    "1MiB",
];

impl TestRepo {
    /// A fresh repository created with `vault init` and [`FAST_INIT`].
    pub fn new() -> Self {
        Self::with_init(FAST_INIT)
    }

    /// A fresh repository created with the given init flags.
    pub fn with_init(flags: &[&str]) -> Self {
        let r = Self::uninitialised();
        let mut args = vec!["init"];
        args.extend_from_slice(flags);
        r.ok(&args);
        r
    }

    /// Paths and password, but no `vault init` yet.
    pub fn uninitialised() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vault-test-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "correct horse battery staple\n").unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Self {
            dir,
            repo,
            cache,
            password_file,
            remote: None,
        }
    }

    /// A fresh repository at a remote location, created with [`FAST_INIT`].
    pub fn remote(remote: Remote) -> Self {
        let mut r = Self::uninitialised();
        r.remote = Some(remote);
        let mut args = vec!["init"];
        args.extend_from_slice(FAST_INIT);
        r.ok(&args);
        r
    }

    /// This (local) repository opened through the library, with a private temporary cache.
    pub fn library(&self) -> vault::repo::Repository {
        let backend = vault::backend::location::open(
            &vault::backend::location::parse(self.repo.to_str().unwrap()).unwrap(),
        )
        .unwrap();
        vault::repo::Repository::open(
            backend,
            b"correct horse battery staple",
            vault::repo::OpenOptions::default(),
        )
        .unwrap()
    }

    /// The `--repo` value of this repository.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.location.clone(),
            None => self.repo.display().to_string(),
        }
    }

    /// The `TMPDIR` of this repository's commands (their temporary databases go there).
    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// A scratch directory inside the test's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A `vault` command with this repository, password and cache configured.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vault_bin());
        // `-o` goes first: after a command's file arguments it would be taken as a file.
        if let Some(r) = &self.remote {
            for o in &r.options {
                c.args(["-o", o]);
            }
        }
        c.args(args)
            .env("VAULT_REPOSITORY", &self.repo)
            .env("VAULT_PASSWORD_FILE", &self.password_file)
            .env("VAULT_CACHE_DIR", &self.cache)
            .env("TMPDIR", self.tmp())
            .env_remove("VAULT_PASSWORD")
            .env_remove("VAULT_PASSWORD_COMMAND")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(r) = &self.remote {
            c.env("VAULT_REPOSITORY", &r.location);
            for (k, v) in &r.env {
                c.env(k, v);
            }
        }
        c
    }

    /// Runs and returns the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("vault runs")
    }

    /// Runs, asserts exit code 0, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of every snapshot, sorted.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Runs with `--json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
    }

    /// Takes a snapshot of `paths` and returns its id.
    pub fn snapshot(&self, paths: &[&Path]) -> String {
        let mut args: Vec<String> = vec!["--json".into(), "snapshot".into()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let v: serde_json::Value = serde_json::from_str(&self.ok(&a)).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// Takes a snapshot of one path with extra flags and returns its id.
    pub fn snapshot_with(&self, flags: &[&str], path: &Path) -> String {
        let mut args = vec!["snapshot"];
        args.extend_from_slice(flags);
        let p = path.display().to_string();
        args.push(&p);
        self.json(&args)["id"].as_str().unwrap().to_string()
    }

    /// Every object file in the repository, relative path → bytes.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in walkdir(&self.repo) {
            if e.is_file() {
                let rel = e.strip_prefix(&self.repo).unwrap().display().to_string();
                if !rel.starts_with("tmp/") {
                    out.insert(rel, std::fs::read(&e).unwrap());
                }
            }
        }
        out
    }

    /// Object paths under a directory of the repository.
    pub fn object_paths(&self, dir: &str) -> Vec<PathBuf> {
        walkdir(&self.repo.join(dir))
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    }
}

/// Asserts that a command exited 0, showing its output if not.
pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "vault {what:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a non-zero exit with the given code and no panic.
pub fn assert_exit(out: &Output, code: i32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "vault panicked: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit code; stderr:\n{stderr}\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// All paths below `root` (not following symlinks), sorted.
pub fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    blake3::Hasher::new_keyed(&key)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Sets a file's mtime (and atime) with nanosecond precision, not following symlinks.
pub fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Builds a tree with every kind of entry the issue lists. Returns the root.
pub fn build_rich_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello world\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("sub/random.bin"), pseudo_random(3_000_000, 1)).unwrap();
    std::fs::write(
        src.join("sub/deeper/text.log"),
        "line of text\n".repeat(50_000),
    )
    .unwrap();
    // Non-UTF-8 name.
    std::fs::write(
        src.join(OsStr::from_bytes(b"caf\xe9-\xff.bin")),
        b"latin-1 name",
    )
    .unwrap();
    // Sparse file: 1 MiB hole, data, 2 MiB hole, data, trailing hole.
    let sparse = src.join("sparse.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pseudo_random(200_000, 2), 1 << 20).unwrap();
    f.write_all_at(b"tail data", (5 << 20) + 3).unwrap();
    drop(f);
    // Large sparse file over 4 GiB.
    let big = src.join("big-sparse.img");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len((4 << 30) + (512 << 20)).unwrap();
    f.write_all_at(b"beyond four gibibytes", (4 << 30) + 12345)
        .unwrap();
    f.write_all_at(&pseudo_random(100_000, 3), 7).unwrap();
    drop(f);
    // Symlinks, one dangling.
    std::os::unix::fs::symlink("hello.txt", src.join("link-to-hello")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    // Hard links.
    std::fs::write(src.join("hard-a"), b"shared inode content").unwrap();
    std::fs::hard_link(src.join("hard-a"), src.join("sub/hard-b")).unwrap();
    // Fifo.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null-device"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::lchown(src.join("hello.txt"), Some(1234), Some(5678)).unwrap();
    }
    // Unusual modes.
    std::fs::write(src.join("setuid-exec"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("setuid-exec"),
        std::fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    std::fs::write(src.join("readonly"), b"ro").unwrap();
    std::fs::set_permissions(src.join("readonly"), std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o1770)).unwrap();
    // Extended attributes.
    xattr::set(src.join("hello.txt"), "user.comment", b"an attribute").unwrap();
    xattr::set(src.join("sub"), "user.dir-attr", b"\x00\x01binary").unwrap();
    // Nanosecond times, set last (children before parents).
    for (i, p) in walkdir(&src).iter().rev().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000, 123_456_789 + i as i64);
    }
    set_mtime(&src, 1_700_000_000, 987_654_321);
    src
}

/// Restores the latest snapshot into a new scratch directory `name` and returns where the
/// backed-up absolute path `src` is in it.
pub fn restore_latest(r: &TestRepo, name: &str, src: &Path) -> PathBuf {
    let target = r.scratch(name);
    r.ok(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    target.join(src.strip_prefix("/").unwrap())
}

/// Every difference between two trees (empty when they are identical in content and
/// metadata). Compared: kind, mode, uid/gid, mtime (ns), size, content, link targets, xattrs,
/// device numbers and the hard-link structure.
pub fn compare_trees(a: &Path, b: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let list = |root: &Path| -> BTreeMap<PathBuf, std::fs::Metadata> {
        let mut m = BTreeMap::new();
        m.insert(PathBuf::new(), std::fs::symlink_metadata(root).unwrap());
        for p in walkdir(root) {
            m.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::symlink_metadata(&p).unwrap(),
            );
        }
        m
    };
    let (ma, mb) = (list(a), list(b));
    let keys_a: Vec<_> = ma.keys().collect();
    let keys_b: Vec<_> = mb.keys().collect();
    if keys_a != keys_b {
        diffs.push(format!("entries differ:\n  {keys_a:?}\n  {keys_b:?}"));
        return diffs;
    }
    let mut links_a: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    let mut links_b: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for (rel, x) in &ma {
        let y = &mb[rel];
        let pa = a.join(rel);
        let pb = b.join(rel);
        let mut local: Vec<String> = Vec::new();
        let mut check = |what: &str, l: String, r: String| {
            if l != r {
                local.push(format!("{}: {what}: {l} != {r}", rel.display()));
            }
        };
        check(
            "type",
            format!("{:?}", x.file_type()),
            format!("{:?}", y.file_type()),
        );
        if !x.file_type().is_symlink() {
            check(
                "mode",
                format!("{:o}", x.mode() & 0o7777),
                format!("{:o}", y.mode() & 0o7777),
            );
        }
        check("uid", x.uid().to_string(), y.uid().to_string());
        check("gid", x.gid().to_string(), y.gid().to_string());
        check(
            "mtime",
            format!("{}.{:09}", x.mtime(), x.mtime_nsec()),
            format!("{}.{:09}", y.mtime(), y.mtime_nsec()),
        );
        if x.is_file() {
            check("size", x.len().to_string(), y.len().to_string());
            if x.len() < (64 << 20) {
                if std::fs::read(&pa).unwrap() != std::fs::read(&pb).unwrap() {
                    diffs.push(format!("{}: content differs", rel.display()));
                }
            } else if !same_large_content(&pa, &pb) {
                diffs.push(format!("{}: content differs", rel.display()));
            }
            if x.nlink() > 1 {
                links_a.entry(x.ino()).or_default().push(rel);
                links_b.entry(y.ino()).or_default().push(rel);
            }
        }
        if x.file_type().is_symlink() {
            check(
                "target",
                format!("{:?}", std::fs::read_link(&pa).unwrap()),
                format!("{:?}", std::fs::read_link(&pb).unwrap()),
            );
        }
        use std::os::unix::fs::FileTypeExt;
        if x.file_type().is_char_device() || x.file_type().is_block_device() {
            check("rdev", x.rdev().to_string(), y.rdev().to_string());
        }
        let xa: BTreeMap<_, _> = xattr::list(&pa)
            .map(|l| {
                l.map(|n| (n.clone(), xattr::get(&pa, &n).ok().flatten()))
                    .collect()
            })
            .unwrap_or_default();
        let xb: BTreeMap<_, _> = xattr::list(&pb)
            .map(|l| {
                l.map(|n| (n.clone(), xattr::get(&pb, &n).ok().flatten()))
                    .collect()
            })
            .unwrap_or_default();
        check("xattrs", format!("{xa:?}"), format!("{xb:?}"));
        diffs.extend(local);
    }
    fn groups(m: HashMap<u64, Vec<&PathBuf>>) -> Vec<Vec<&PathBuf>> {
        let mut g: Vec<Vec<&PathBuf>> = m
            .into_values()
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        g.sort();
        g
    }
    let (ga, gb) = (groups(links_a), groups(links_b));
    if ga != gb {
        diffs.push(format!("hard-link groups differ: {ga:?} != {gb:?}"));
    }
    diffs
}

/// Compares two large (possibly sparse) files without reading holes twice into memory.
fn same_large_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 22], vec![0u8; 1 << 22]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

/// Allocated bytes of a file (to check sparseness).
pub fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// A repository created through the library (not the CLI) on `backend`, with the fast test
/// parameters of [`FAST_INIT`], password `pw` and its cache below `cache`.
pub fn init_repo(
    backend: std::sync::Arc<dyn vault::backend::Backend>,
    cache: &Path,
) -> vault::repo::Repository {
    let init = vault::repo::InitOptions {
        chunker: vault::format::config::ChunkerParams {
            min_size: 16 << 10,
            avg_size: 64 << 10,
            max_size: 256 << 10,
        },
        kdf: vault::format::key::KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        pack_size: 1 << 20,
        ..vault::repo::InitOptions::default()
    };
    vault::repo::Repository::init(
        backend,
        b"pw",
        &init,
        vault::repo::OpenOptions {
            cache_root: Some(cache.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Damaged paths according to `check --verify-data` (which must exit 1).
pub fn damaged_paths(r: &TestRepo) -> BTreeSet<String> {
    let out = r.run(&["--json", "check", "--verify-data"]);
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["damage"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["paths"].as_array().unwrap().clone())
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect()
}

/// Restores `latest` into `target` (keeping damaged files when asked) from a damaged
/// repository (exit 1) and returns the files the restore names as damaged.
pub fn restore_damaged(r: &TestRepo, target: &Path, keep_damaged: bool) -> BTreeSet<String> {
    let t = target.to_str().unwrap();
    let mut args = vec!["--json", "restore", "latest", "--target", t];
    if keep_damaged {
        args.push("--keep-damaged");
    }
    let out = r.run(&args);
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}
