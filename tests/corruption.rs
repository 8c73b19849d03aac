//! The corruption suite: each kind of damage is detected by `check` (or `check --verify-data`),
//! named, mapped to the snapshots and paths it affects, and repaired until
//! `check --verify-data` passes and every undamaged file restores identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

struct Base {
    r: TestRepo,
    src: PathBuf,
    /// Source file contents by path, as snapshotted.
    files: BTreeMap<PathBuf, Vec<u8>>,
    pw2: PathBuf,
}

fn base() -> Base {
    let r = TestRepo::new();
    let src = r.scratch("src");
    let mut files = BTreeMap::new();
    for d in 0..4 {
        std::fs::create_dir_all(src.join(format!("dir{d}"))).unwrap();
        for f in 0..6u64 {
            let p = src.join(format!("dir{d}/file{f}"));
            let data = pseudo_random(150_000 + (f as usize) * 40_000, d * 100 + f);
            std::fs::write(&p, &data).unwrap();
            files.insert(p, data);
        }
    }
    r.snapshot(&[&src]);
    // A second snapshot sharing most data, with one more file.
    let extra = src.join("dir0/extra");
    std::fs::write(&extra, pseudo_random(90_000, 999)).unwrap();
    files.insert(extra, pseudo_random(90_000, 999));
    r.snapshot(&[&src]);
    let pw2 = r.dir.path().join("pw2");
    std::fs::write(&pw2, "second key\n").unwrap();
    r.ok(&[
        "key",
        "add",
        "--new-password-file",
        pw2.to_str().unwrap(),
        "--kdf-memory",
        "1MiB",
        "--kdf-iterations",
        "1",
    ]);
    Base { r, src, files, pw2 }
}

/// A damaged copy of the base repository with its own cache.
struct Case<'a> {
    base: &'a Base,
    _dir: tempfile::TempDir,
    repo: PathBuf,
    cache: PathBuf,
    password: PathBuf,
}

impl<'a> Case<'a> {
    fn new(base: &'a Base) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        for p in walkdir(&base.r.repo) {
            let dst = repo.join(p.strip_prefix(&base.r.repo).unwrap());
            if p.is_dir() {
                std::fs::create_dir_all(&dst).unwrap();
            } else {
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::copy(&p, &dst).unwrap();
            }
        }
        let cache = dir.path().join("cache");
        Case {
            base,
            _dir: dir,
            repo,
            cache,
            password: base.r.password_file.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.base
            .r
            .cmd(args)
            .env("VAULT_REPOSITORY", &self.repo)
            .env("VAULT_CACHE_DIR", &self.cache)
            .env("VAULT_PASSWORD_FILE", &self.password)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Object files under a repository directory.
    fn objects(&self, dir: &str) -> Vec<PathBuf> {
        walkdir(&self.repo.join(dir))
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    }

    /// The pack holding the data of `file` in the latest snapshot (found through `vault ls`
    /// and the index of the base repository: the first data pack whose name appears in the
    /// damage report is not known in advance, so take the largest data pack).
    fn data_packs(&self) -> Vec<PathBuf> {
        let mut packs: Vec<PathBuf> = self.objects("data");
        packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
        packs
    }

    /// Runs check, expecting failure; returns its JSON report.
    fn check_fails(&self, verify: bool, names: &str) -> serde_json::Value {
        let mut args = vec!["--json", "check"];
        if verify {
            args.push("--verify-data");
        }
        let out = self.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "check panicked: {stderr}");
        assert_eq!(out.status.code(), Some(1), "check did not fail: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], false);
        let errors = v["errors"].to_string();
        assert!(
            errors.contains(names),
            "check does not name {names}: {errors}"
        );
        v
    }

    /// After repair: check --verify-data passes, every snapshot restores, and every file that
    /// comes back is identical to its source. Returns the paths restored from the latest.
    fn verify_repaired(&self) -> usize {
        let out = self.run(&["--json", "check", "--verify-data"]);
        assert_success(&out, &["check --verify-data after repair"]);
        let snaps: serde_json::Value =
            serde_json::from_str(&self.ok(&["--json", "snapshots"])).unwrap();
        let mut restored_files = 0;
        for s in snaps.as_array().unwrap() {
            let target = self
                ._dir
                .path()
                .join(format!("restore-{}", s["short_id"].as_str().unwrap()));
            self.ok(&[
                "restore",
                "--snapshot",
                s["id"].as_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
            ]);
            for (path, data) in &self.base.files {
                let got = target.join(path.strip_prefix("/").unwrap());
                if got.exists() {
                    assert_eq!(
                        &std::fs::read(&got).unwrap(),
                        data,
                        "{} restored wrong",
                        path.display()
                    );
                    restored_files += 1;
                }
            }
        }
        restored_files
    }
}

fn flip(p: &Path, at: f64) {
    let mut b = std::fs::read(p).unwrap();
    let i = ((b.len() as f64) * at) as usize;
    b[i] ^= 0x04;
    std::fs::write(p, b).unwrap();
}

fn short(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap()[..8].to_string()
}

fn damage_paths(v: &serde_json::Value) -> Vec<String> {
    v["damage"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["path"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn corruption_suite() {
    let base = base();
    let total_files = base.files.len();
    let src = base.src.display().to_string();

    // 1. One flipped bit in a data pack: only --verify-data sees it.
    let c = Case::new(&base);
    let pack = &c.data_packs()[0];
    flip(pack, 0.3);
    c.ok(&["check"]);
    let v = c.check_fails(true, &short(pack));
    let lost = damage_paths(&v);
    assert!(
        !lost.is_empty() && lost.iter().all(|p| p.starts_with(&src)),
        "damage report: {lost:?}"
    );
    c.ok(&["repair", "index", "--verify-data"]);
    c.ok(&["repair", "snapshots", "--forget"]);
    let restored = c.verify_repaired();
    assert!(restored > 0);

    // 2. A truncated pack; the damaged snapshot is under a legal hold, which moves to its
    // replacement.
    let c = Case::new(&base);
    c.ok(&["hold", "latest", "--reason", "case 12"]);
    let pack = c.data_packs()[0].clone();
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let v = c.check_fails(false, &short(&pack));
    assert!(!damage_paths(&v).is_empty());
    c.ok(&["repair", "index", "--verify-data"]);
    c.ok(&["repair", "snapshots", "--forget"]);
    let held: serde_json::Value =
        serde_json::from_str(&c.ok(&["--json", "snapshots", "--tag", "repaired"])).unwrap();
    let list = held.as_array().unwrap();
    let newest = list.last().unwrap();
    assert_eq!(newest["holds"][0]["reason"], "case 12", "{held}");
    assert!(
        list[..list.len() - 1]
            .iter()
            .all(|s| s["holds"].as_array().unwrap().is_empty())
    );
    c.ok(&["release", "latest"]);
    c.verify_repaired();

    // 3. A deleted pack.
    let c = Case::new(&base);
    let pack = c.data_packs()[1].clone();
    std::fs::remove_file(&pack).unwrap();
    let v = c.check_fails(false, &short(&pack));
    assert!(!damage_paths(&v).is_empty());
    c.ok(&["repair", "index"]);
    c.ok(&["repair", "snapshots", "--forget"]);
    c.verify_repaired();

    // 4. A deleted index object: nothing is lost once the index is rebuilt.
    let c = Case::new(&base);
    for i in c.objects("index") {
        std::fs::remove_file(i).unwrap();
    }
    c.check_fails(false, "not in the index");
    c.ok(&["repair", "index"]);
    let snaps_before: serde_json::Value =
        serde_json::from_str(&c.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(snaps_before.as_array().unwrap().len(), 2);
    assert_eq!(
        c.verify_repaired(),
        total_files + total_files - 1,
        "every file of both snapshots restores"
    );

    // 5. A corrupted index object.
    let c = Case::new(&base);
    let index = c.objects("index")[0].clone();
    flip(&index, 0.5);
    c.check_fails(false, &short(&index));
    c.ok(&["repair", "index"]);
    assert_eq!(c.verify_repaired(), total_files + total_files - 1);

    // 6. A corrupted snapshot.
    let c = Case::new(&base);
    let snap = c.objects("snapshots")[0].clone();
    flip(&snap, 0.5);
    c.check_fails(false, &short(&snap));
    c.ok(&["repair", "snapshots", "--forget"]);
    let left: serde_json::Value = serde_json::from_str(&c.ok(&["--json", "snapshots"])).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1);
    c.verify_repaired();

    // 7. A corrupted tree blob (the smallest pack holds the trees).
    let c = Case::new(&base);
    let tree_pack = c.data_packs().last().unwrap().clone();
    flip(&tree_pack, 0.2);
    let v = c.check_fails(false, "tree blob");
    assert!(!v["damage"].as_array().unwrap().is_empty());
    c.ok(&["repair", "index", "--verify-data"]);
    c.ok(&["repair", "snapshots", "--forget"]);
    c.verify_repaired();

    // 8. A pack stored under another pack's name.
    let c = Case::new(&base);
    let packs = c.data_packs();
    let (a, b) = (&packs[0], &packs[1]);
    std::fs::copy(a, b).unwrap();
    c.check_fails(false, &short(b));
    c.ok(&["repair", "index", "--verify-data"]);
    c.ok(&["repair", "snapshots", "--forget"]);
    c.verify_repaired();

    // 9. A corrupted key file (the repository still opens with the other key).
    let mut c = Case::new(&base);
    c.password = base.pw2.clone();
    let keys: serde_json::Value = serde_json::from_str(&c.ok(&["--json", "key", "list"])).unwrap();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key_file = c.repo.join("keys").join(&other);
    flip(&key_file, 0.5);
    c.check_fails(false, &other[..8]);
    let listing = c.ok(&["key", "list"]);
    assert!(listing.contains("DAMAGED"), "{listing}");
    c.ok(&["key", "remove", &other[..8]]);
    assert_eq!(c.verify_repaired(), total_files + total_files - 1);
}

#[test]
fn restore_continues_past_damaged_files_and_names_them() {
    let base = base();
    let c = Case::new(&base);
    let pack = &c.data_packs()[0];
    flip(pack, 0.3);
    let target = c._dir.path().join("out");
    let out = c.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not restored completely"), "{stderr}");
    let named: Vec<&PathBuf> = base
        .files
        .keys()
        .filter(|p| stderr.contains(p.to_str().unwrap()))
        .collect();
    assert!(!named.is_empty(), "no damaged file is named: {stderr}");
    // Every file not named restored identical.
    let mut good = 0;
    for (path, data) in &base.files {
        if named.contains(&path) {
            continue;
        }
        let got = target.join(path.strip_prefix("/").unwrap());
        assert_eq!(&std::fs::read(&got).unwrap(), data, "{}", path.display());
        good += 1;
    }
    assert!(good > 0);
    // dump of a damaged file fails loudly instead of writing wrong bytes.
    let damaged = named[0].to_str().unwrap();
    let d = c.run(&["dump", "latest", damaged]);
    assert_ne!(d.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&d.stderr).contains("damaged"));
}
