//! Strict input: vault does exactly what was typed or stops before touching anything; paths
//! are bytes; failures are machine-readable; the small things users hit on day one.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

/// Every command, with an unknown option somewhere in its arguments: a usage error (exit 2),
/// and the repository is exactly as it was.
#[test]
fn unknown_options_are_usage_errors_before_anything_happens() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"data").unwrap();
    let id = r.snapshot(&[&d]);
    let before = r.objects();
    let ds = d.to_str().unwrap();
    let t = r.scratch("t");
    let ts = t.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["snapshot", "--dry-rnu", ds],
        vec!["snapshot", "--exlude", "*.tmp", ds],
        vec!["snapshot", ds, "--exclude-cache"],
        vec!["snapshot", "--stdin-from-command", "pg_dump", "shop"],
        vec!["snapshot", ds, "--", "pg_dump"],
        vec!["restore", "--snapshot", "latest", "--target", ts, "--bogus"],
        vec!["restore", "--snapshot", "latest"],
        vec!["ls", "latest", "--long-listing"],
        vec!["dump", "latest", "/x", "--tar"],
        vec!["snapshots", "--latest", "x"],
        vec!["check", "--verify"],
        vec!["check", "--verify-data-subset"],
        vec!["prune", "--keep-dayly", "3"],
        vec!["prune", "--keep-daily", "three"],
        vec!["forget", &id, "--prune-now"],
        vec!["hold", "latest"],
        vec!["release", "latest", "--all"],
        vec!["copy", "--to-repo", ts, "--bogus"],
        vec!["repair", "index", "--force"],
        vec!["repair", "nothing"],
        vec!["key", "add", "--password", "x"],
        vec!["unlock", "--all"],
        vec!["init", "--encryption", "none"],
        vec!["--wait-lock", "soon", "snapshots"],
        vec!["bogus-command"],
    ];
    for args in cases {
        let out = r.run(&args);
        assert_exit(&out, 2);
        // With --json the failure is one JSON object on stdout.
        let mut j = vec!["--json"];
        j.extend_from_slice(&args);
        let out = r.run(&j);
        assert_exit(&out, 2);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", out.stdout));
        assert_eq!(v["error"]["kind"], "usage", "{args:?}");
        assert_eq!(v["error"]["exit_code"], 2, "{args:?}");
    }
    assert_eq!(r.objects().len(), before.len(), "something was written");
    assert!(
        r.objects().keys().eq(before.keys()),
        "the repository changed"
    );
    // The command after `--` is taken only with --stdin-from-command, and a path that starts
    // with `-` is written `./-x`.
    std::fs::write(d.join("-x"), b"dash").unwrap();
    let v = r.json(&["snapshot", &format!("{ds}/./-x")]);
    assert_eq!(v["summary"]["files_new"], 1);
    let v = r.json(&[
        "snapshot",
        "--stdin-from-command",
        "--stdin-name",
        "echo.txt",
        "--",
        "echo",
        "--not-an-option-of-vault",
    ]);
    let id = v["id"].as_str().unwrap();
    let out = r.run(&["dump", id, "echo.txt"]);
    assert_eq!(out.stdout, b"--not-an-option-of-vault\n");
}

#[test]
fn paths_and_patterns_are_bytes() {
    let r = TestRepo::new();
    let base = r.scratch("src");
    let odd = base.join(OsStr::from_bytes(b"caf\xe9 \xff\ndir"));
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join(OsStr::from_bytes(b"keep\xfe.txt")), b"kept").unwrap();
    std::fs::write(odd.join(OsStr::from_bytes(b"drop\xfd.tmp")), b"dropped").unwrap();
    // A source path that is not UTF-8, with a pattern that is not UTF-8 either.
    let out = r
        .cmd(&["--json", "snapshot"])
        .arg(&odd)
        .arg("--exclude")
        .arg(OsStr::from_bytes(b"drop\xfd*"))
        .output()
        .unwrap();
    assert_success(&out, &["snapshot (non-UTF-8)"]);
    // ls shows the names quoted like `ls -b`, and JSON carries the exact bytes in hex.
    let ls = r.ok(&["ls", "latest", "-R"]);
    assert!(ls.contains(r"caf\351\ \377\ndir"), "{ls}");
    assert!(ls.contains(r"keep\376.txt"), "{ls}");
    assert!(!ls.contains("drop"), "excluded file listed: {ls}");
    assert_eq!(ls.lines().count(), ls.matches('\n').count());
    let json = r.ok(&["--json", "ls", "latest", "-R"]);
    assert!(json.contains(&hex::encode(b"keep\xfe.txt")), "{json}");
    // dump and restore by non-UTF-8 paths, into a non-UTF-8 target, with a non-UTF-8 include.
    let file = odd.join(OsStr::from_bytes(b"keep\xfe.txt"));
    let out = r.cmd(&["dump", "latest"]).arg(&file).output().unwrap();
    assert_success(&out, &["dump (non-UTF-8)"]);
    assert_eq!(out.stdout, b"kept");
    let target = r.dir.path().join(OsStr::from_bytes(b"target\xee"));
    let out = r
        .cmd(&["restore", "--snapshot", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(OsStr::from_bytes(b"keep\xfe*"))
        .output()
        .unwrap();
    assert_success(&out, &["restore (non-UTF-8)"]);
    let got = target.join(file.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(got).unwrap(), b"kept");
    // --path filters take bytes too.
    let out = r
        .cmd(&["--json", "snapshots", "--path"])
        .arg(&odd)
        .output()
        .unwrap();
    assert_success(&out, &["snapshots --path (non-UTF-8)"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn failures_are_json_objects_with_a_kind() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    r.snapshot(&[&d]);
    let err = |out: &std::process::Output, code: i32| -> serde_json::Value {
        assert_exit(out, code);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not one JSON object ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(v["error"]["exit_code"], code);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        v
    };
    // no repository
    let out = r
        .cmd(&["--json", "snapshots"])
        .env("VAULT_REPOSITORY", r.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(err(&out, 10)["error"]["kind"], "no_repository");
    // wrong password
    let pw = r.dir.path().join("wrong");
    std::fs::write(&pw, "wrong\n").unwrap();
    let out = r
        .cmd(&["--json", "snapshots"])
        .env("VAULT_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    assert_eq!(err(&out, 12)["error"]["kind"], "wrong_password");
    // no match
    let out = r.run(&["--json", "ls", "latest", "/no/such/path"]);
    assert_eq!(err(&out, 1)["error"]["kind"], "no_match");
    // damage names its object
    let snap = r.object_paths("snapshots")[0].clone();
    let mut b = std::fs::read(&snap).unwrap();
    b[20] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let id = snap.file_name().unwrap().to_str().unwrap().to_string();
    let out = r.run(&["--json", "ls", &id]);
    let v = err(&out, 1);
    assert_eq!(v["error"]["kind"], "damaged");
    assert!(
        v["error"]["object"].as_str().unwrap().contains(&id[..16]),
        "{v}"
    );
    // success JSON of the commands that had none
    let d2 = r.scratch("d2");
    r.snapshot(&[&d2]);
    let v = r.json(&["hold", "latest", "--reason", "case 7"]);
    assert_eq!(v["reason"], "case 7");
    let v = r.json(&["release", "latest"]);
    assert_eq!(v["released"], 1);
    let pw2 = r.dir.path().join("pw2");
    std::fs::write(&pw2, "second\n").unwrap();
    let fast = ["--kdf-memory", "1MiB", "--kdf-iterations", "1"];
    let mut add = vec!["key", "add", "--new-password-file", pw2.to_str().unwrap()];
    add.extend_from_slice(&fast);
    let v = r.json(&add);
    let added = v["added"].as_str().unwrap().to_string();
    let v = r.json(&["key", "remove", &added[..12]]);
    assert_eq!(v["removed"], added.as_str());
    let mut pass = vec![
        "key",
        "passwd",
        "--new-password-file",
        pw2.to_str().unwrap(),
    ];
    pass.extend_from_slice(&fast);
    let v = r.cmd(&[&["--json"][..], &pass].concat()).output().unwrap();
    assert_success(&v, &["key passwd"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert!(v["added"].is_string() && v["removed"].is_string());
}

#[test]
fn day_one_details() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    std::fs::create_dir(d.join("sticky")).unwrap();
    std::fs::set_permissions(d.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(d.join("suid"), b"x").unwrap();
    std::fs::set_permissions(d.join("suid"), std::fs::Permissions::from_mode(0o4644)).unwrap();
    std::fs::write(d.join("two\nlines"), b"x").unwrap();
    let id = r.snapshot(&[&d]);
    // release latest works like hold latest
    r.ok(&["hold", "latest", "--reason", "x"]);
    r.ok(&["release", "latest"]);
    // --as-of with an explicit id is refused, not ignored
    let t = r.scratch("t");
    let out = r.run(&[
        "restore",
        "--snapshot",
        &id,
        "--as-of",
        "2020-01-01",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as-of"));
    // "not found at or before" prints a time, not an epoch
    let out = r.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--as-of",
        "2020-01-01T00:00:00Z",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("2020-01-01T00:00:00Z"), "{e}");
    // an --include that matches nothing is a warning and exit 1
    let out = r.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--include",
        "/no/such/thing",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("matched nothing"));
    // an empty password file says so
    let empty = r.dir.path().join("empty-pw");
    std::fs::write(&empty, "").unwrap();
    let out = r
        .cmd(&["snapshots"])
        .env("VAULT_PASSWORD_FILE", &empty)
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    // ls shows special mode bits and quotes newlines
    let ls = r.ok(&["ls", "latest", d.to_str().unwrap()]);
    assert!(ls.contains("drwxrwxrwt"), "{ls}");
    assert!(ls.contains("-rwSr--r--"), "{ls}");
    assert!(ls.contains(r"two\nlines"), "{ls}");
    // -v lists new and changed files
    std::fs::write(d.join("g"), b"new").unwrap();
    let out = r.ok(&["-v", "snapshot", d.to_str().unwrap()]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("new") && l.ends_with("/g")),
        "{out}"
    );
    assert!(!out.contains("unchanged"), "{out}");
    // RUST_LOG output into a pipe has no colour codes
    let out = r
        .cmd(&["snapshots"])
        .env("RUST_LOG", "vault=debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(!out.stderr.contains(&0x1b), "escape codes in a pipe");
    // `snapshots` at a location without a repository says so before asking for a password
    let out = r
        .cmd(&["snapshots"])
        .env("VAULT_REPOSITORY", r.dir.path().join("missing"))
        .env_remove("VAULT_PASSWORD_FILE")
        .output()
        .unwrap();
    assert_exit(&out, 10);
    // -o options the service does not know are refused
    let out = r.run(&["-o", "bogus=1", "snapshots"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn nothing_is_created_where_there_is_no_repository() {
    let r = TestRepo::new();
    let missing = r.dir.path().join("typo");
    for args in [
        vec!["snapshots"],
        vec!["check"],
        vec!["snapshot", "/etc/hostname"],
        vec!["prune", "--keep-last", "1"],
        vec!["unlock"],
    ] {
        let out = r
            .cmd(&args)
            .env("VAULT_REPOSITORY", &missing)
            .output()
            .unwrap();
        assert_exit(&out, 10);
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // An init with invalid settings fails before it creates anything.
    let out = r
        .cmd(&["init", "--chunk-min", "1MiB", "--chunk-avg", "64KiB"])
        .env("VAULT_REPOSITORY", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !missing.exists(),
        "a failed init created {}",
        missing.display()
    );
    // A failed init (a repository already there) leaves nothing behind either.
    let before = r.objects();
    let out = r.run(&["init"]);
    assert_exit(&out, 1);
    assert!(r.objects().keys().eq(before.keys()));
}

#[test]
fn local_repositories_and_caches_are_private() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    r.snapshot(&[&d]);
    let mut checked = 0;
    for p in walkdir(&r.repo).into_iter().chain([r.repo.clone()]) {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mode = md.permissions().mode() & 0o777;
        assert_eq!(
            mode,
            if md.is_dir() { 0o700 } else { 0o600 },
            "{}",
            p.display()
        );
        checked += 1;
    }
    assert!(checked > 10);
    // The cache (a mirror of the index, local copies of tree packs) is closed to others at
    // its root, and so is every directory vault creates in it.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&r.cache), 0o700);
    for p in walkdir(&r.cache).into_iter().filter(|p| p.is_dir()) {
        if p.parent() == Some(&r.cache) || p.ends_with("db") || p.ends_with("trees") {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
    }
}

/// The library reads no environment variable: the CLI passes everything down.
#[test]
fn the_library_reads_no_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for p in walkdir(&root) {
        let rel = p.strip_prefix(&root).unwrap();
        if rel.starts_with("cli") || rel == Path::new("main.rs") || !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for pat in ["env::var", "env::temp_dir", "env::vars"] {
            if text.contains(pat) {
                offenders.push(format!("{}: {pat}", rel.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn errors_never_say_the_same_thing_twice() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    let outs = [
        r.run(&[
            "snapshot",
            "--stdin-from-command",
            "--",
            "pg_dumpx-does-not-exist",
        ]),
        r.run(&["snapshot", "/nonexistent/path/for/vault"]),
        r.run(&[
            "restore",
            "--snapshot",
            "latest",
            "--target",
            d.to_str().unwrap(),
        ]),
        r.cmd(&["snapshots"])
            .env("VAULT_PASSWORD_FILE", r.dir.path().join("no-such-file"))
            .output()
            .unwrap(),
    ];
    for out in outs {
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        for line in text.lines() {
            let parts: Vec<&str> = line
                .split(": ")
                .map(|p| p.trim_end_matches(" (os error 2)"))
                .filter(|p| p.len() > 3)
                .collect();
            for (i, a) in parts.iter().enumerate() {
                for b in &parts[i + 1..] {
                    assert_ne!(a, b, "said twice: {line}");
                }
            }
            assert!(!line.contains("(os error"), "raw OS error text: {line}");
        }
    }
}
