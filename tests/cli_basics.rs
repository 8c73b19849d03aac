//! The CLI's contract: exit codes, messages, stdin sources, listing, keys.

use std::io::Write;
use std::process::Stdio;

use crate::support::*;

#[test]
fn init_refuses_to_overwrite_and_missing_repo_exits_10() {
    let r = TestRepo::new();
    let again = r.run(&["init", "--kdf-memory", "1MiB", "--kdf-iterations", "1"]);
    assert_exit(&again, 1);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let missing = TestRepo::uninitialised();
    let out = missing.run(&["snapshots"]);
    assert_exit(&out, 10);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no repository"));
}

#[test]
fn wrong_password_exits_12_with_a_clear_message() {
    let r = TestRepo::new();
    std::fs::write(&r.password_file, "not the password\n").unwrap();
    let out = r.run(&["snapshots"]);
    assert_exit(&out, 12);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
}

#[test]
fn password_from_env_and_command() {
    let r = TestRepo::new();
    let pw = std::fs::read_to_string(&r.password_file).unwrap();
    let out = r
        .cmd(&["snapshots"])
        .env_remove("VAULT_PASSWORD_FILE")
        .env("VAULT_PASSWORD", pw.trim())
        .output()
        .unwrap();
    assert_success(&out, &["snapshots (env password)"]);
    let out = r
        .cmd(&["snapshots"])
        .env_remove("VAULT_PASSWORD_FILE")
        .env(
            "VAULT_PASSWORD_COMMAND",
            format!("cat {}", r.password_file.display()),
        )
        .output()
        .unwrap();
    assert_success(&out, &["snapshots (password command)"]);
}

#[test]
fn stdin_snapshot_and_dump_to_stdout() {
    let r = TestRepo::new();
    let data = pseudo_random(700_000, 7);
    let mut child = r
        .cmd(&[
            "--json",
            "snapshot",
            "--stdin",
            "--stdin-name",
            "db.sql",
            "--tag",
            "db",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["snapshot --stdin"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["paths"][0], "db.sql");
    let dumped = r.cmd(&["dump", "latest", "db.sql"]).output().unwrap();
    assert_success(&dumped, &["dump"]);
    assert_eq!(dumped.stdout, data);
}

#[test]
fn failing_command_saves_no_snapshot() {
    let r = TestRepo::new();
    let out = r.run(&[
        "snapshot",
        "--stdin-from-command",
        "--stdin-name",
        "x.sql",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 0);

    let ok = r.json(&[
        "snapshot",
        "--stdin-from-command",
        "--stdin-name",
        "x.sql",
        "--",
        "sh",
        "-c",
        "echo complete",
    ]);
    assert_eq!(ok["summary"]["total_bytes"], 9);
    let dumped = r.cmd(&["dump", "latest", "x.sql"]).output().unwrap();
    assert_eq!(dumped.stdout, b"complete\n");
}

#[test]
fn snapshots_table_json_and_filters() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    r.ok(&[
        "snapshot",
        "--host",
        "alpha",
        "--tag",
        "daily",
        d.to_str().unwrap(),
    ]);
    r.ok(&[
        "snapshot",
        "--host",
        "beta",
        "--tag",
        "daily",
        "--tag",
        "db",
        d.to_str().unwrap(),
    ]);
    let all = r.json(&["snapshots"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    for s in all.as_array().unwrap() {
        for key in [
            "id", "short_id", "time", "hostname", "paths", "tags", "summary",
        ] {
            assert!(s.get(key).is_some(), "missing {key}");
        }
    }
    assert_eq!(
        r.json(&["snapshots", "--host", "beta"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        r.json(&["snapshots", "--tag", "daily,db"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        r.json(&["snapshots", "--tag", "daily"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        r.json(&["snapshots", "--path", d.to_str().unwrap()])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        r.json(&["snapshots", "--path", "/elsewhere"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let table = r.ok(&["snapshots"]);
    assert!(table.contains("alpha") && table.contains("beta") && table.contains("daily,db"));
}

#[test]
fn ls_lists_entries_and_handles_closed_pipes() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    for i in 0..2000 {
        std::fs::write(d.join("sub").join(format!("file-{i:04}")), b"x").unwrap();
    }
    std::os::unix::fs::symlink("sub", d.join("link")).unwrap();
    let id = r.snapshot(&[&d]);
    let listing = r.ok(&["ls", &id, d.to_str().unwrap()]);
    assert!(listing.contains("link -> sub"));
    assert!(listing.lines().count() == 2, "{listing}");
    let rec = r.ok(&["ls", "--recursive", &id, d.to_str().unwrap()]);
    assert_eq!(rec.lines().count(), 2002);
    let json = r.ok(&[
        "--json",
        "ls",
        &id,
        &format!("{}/sub/file-0007", d.display()),
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["type"], "file");
    assert_eq!(v["size"], 1);
    // `vault ls | head -1` must not report an error.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' ls -R {} / | head -1", vault_bin(), id))
        .env("VAULT_REPOSITORY", &r.repo)
        .env("VAULT_PASSWORD_FILE", &r.password_file)
        .env("VAULT_CACHE_DIR", &r.cache)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_snapshot_and_ambiguous_prefix_are_clear_errors() {
    let r = TestRepo::new();
    let out = r.run(&["ls", "deadbeef"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("snapshot not found"));
    let out = r.run(&["ls", "xy"]);
    assert_exit(&out, 1);
}

#[test]
fn keys_can_be_added_changed_and_revoked() {
    let r = TestRepo::new();
    let pw2 = r.dir.path().join("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    r.ok(&[
        "key",
        "add",
        "--new-password-file",
        pw2.to_str().unwrap(),
        "--kdf-memory",
        "1MiB",
        "--kdf-iterations",
        "1",
        "--kdf-lanes",
        "2",
    ]);
    let keys = r.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The key made by `init` has the default 4 lanes; the added one the 2 asked for.
    let mut lanes: Vec<u64> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kdf"]["lanes"].as_u64().unwrap())
        .collect();
    lanes.sort_unstable();
    assert_eq!(lanes, [2, 4]);
    // Lanes out of range are refused before a key file is written.
    let out = r.run(&[
        "key",
        "add",
        "--new-password-file",
        pw2.to_str().unwrap(),
        "--kdf-lanes",
        "65",
    ]);
    assert_exit(&out, 2);
    assert_eq!(r.json(&["key", "list"]).as_array().unwrap().len(), 2);
    // The second password opens the repository.
    let out = r
        .cmd(&["snapshots"])
        .env("VAULT_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert_success(&out, &["snapshots with second key"]);
    // Revoke the first key using the second.
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = r
        .cmd(&["key", "remove", &first[..8]])
        .env("VAULT_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert_success(&out, &["key remove"]);
    assert_exit(&r.run(&["snapshots"]), 12);
    // Change the remaining password.
    let pw3 = r.dir.path().join("pw3");
    std::fs::write(&pw3, "third password\n").unwrap();
    let out = r
        .cmd(&[
            "key",
            "passwd",
            "--new-password-file",
            pw3.to_str().unwrap(),
            "--kdf-memory",
            "1MiB",
            "--kdf-iterations",
            "1",
            "--kdf-lanes",
            "1",
        ])
        .env("VAULT_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert_success(&out, &["key passwd"]);
    assert_exit(
        &r.cmd(&["snapshots"])
            .env("VAULT_PASSWORD_FILE", &pw2)
            .output()
            .unwrap(),
        12,
    );
    assert_success(
        &r.cmd(&["snapshots"])
            .env("VAULT_PASSWORD_FILE", &pw3)
            .output()
            .unwrap(),
        &["pw3"],
    );
    // The last key cannot be removed.
    let last = r
        .cmd(&["--json", "key", "list"])
        .env("VAULT_PASSWORD_FILE", &pw3)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&last.stdout).unwrap();
    let id = v[0]["id"].as_str().unwrap();
    let out = r
        .cmd(&["key", "remove", id])
        .env("VAULT_PASSWORD_FILE", &pw3)
        .output()
        .unwrap();
    assert_exit(&out, 1);
}

#[test]
fn locked_repository_exits_11() {
    let r = TestRepo::new();
    let repo = r.library();
    let guard = repo
        .lock(vault::repo::lock::LockKind::Exclusive, None)
        .unwrap();
    let d = r.scratch("d");
    let out = r.run(&["snapshot", d.to_str().unwrap()]);
    assert_exit(&out, 11);
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    drop(guard);
    r.ok(&["snapshot", d.to_str().unwrap()]);
}

#[test]
fn unreadable_source_file_is_reported_and_the_rest_saved() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("readable"), b"fine").unwrap();
    std::fs::write(d.join("secret"), b"no access").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = r.cmd(&["--json", "snapshot", d.to_str().unwrap()]);
    if is_root() {
        // Root reads everything: run vault as an unprivileged user instead.
        for p in [
            r.dir.path().to_path_buf(),
            r.repo.clone(),
            r.cache.clone(),
            d.clone(),
        ] {
            std::fs::create_dir_all(&p).unwrap();
            chown_recursive(&p, 65534);
        }
        std::fs::set_permissions(r.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(d.join("secret"), Some(0), Some(0)).unwrap();
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["errors"], 1);
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    // The snapshot exists and has the readable file.
    let dumped = r
        .cmd(&["dump", "latest", &format!("{}/readable", d.display())])
        .output()
        .unwrap();
    assert_eq!(dumped.stdout, b"fine");
}

fn chown_recursive(p: &std::path::Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    for e in walkdir(p) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(uid)).unwrap();
    }
}

#[test]
fn concurrent_processes_share_the_cache() {
    // A long-running process holds the cache open for writing; a second process must still
    // work (it falls back to a read-only view plus what it reads itself).
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), pseudo_random(300_000, 3)).unwrap();
    r.snapshot(&[&d]);
    let backend = vault::backend::location::open(
        &vault::backend::location::parse(r.repo.to_str().unwrap()).unwrap(),
    )
    .unwrap();
    let holder = vault::repo::Repository::open(
        backend,
        b"correct horse battery staple",
        vault::repo::OpenOptions {
            cache_root: Some(r.cache.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let _index = holder.index().unwrap();
    std::fs::write(d.join("g"), pseudo_random(300_000, 4)).unwrap();
    r.snapshot(&[&d]);
    let out = r.scratch("out");
    r.ok(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ]);
    let base = out.join(d.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(base.join("g")).unwrap(),
        pseudo_random(300_000, 4)
    );
}

#[test]
fn deleted_or_damaged_cache_is_rebuilt() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), pseudo_random(500_000, 8)).unwrap();
    r.snapshot(&[&d]);
    std::fs::remove_dir_all(&r.cache).unwrap();
    let v = r.json(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(
        v["summary"]["data_blobs"], 0,
        "rebuilt cache must know every blob"
    );
    // Damage every file of the database.
    for p in walkdir(&r.cache) {
        if p.is_file() && !p.ends_with("writer.lock") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    std::fs::write(d.join("f2"), pseudo_random(500_000, 8)).unwrap();
    let v = r.json(&["snapshot", d.to_str().unwrap()]);
    assert_eq!(
        v["summary"]["data_blobs"], 0,
        "duplicate content must be found after rebuild"
    );
    let out = r.scratch("out");
    r.ok(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn exclude_file_and_globs() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::create_dir_all(d.join("cache/deep")).unwrap();
    std::fs::write(d.join("keep.txt"), b"k").unwrap();
    std::fs::write(d.join("drop.tmp"), b"t").unwrap();
    std::fs::write(d.join("cache/deep/x"), b"c").unwrap();
    let list = r.dir.path().join("excludes");
    std::fs::write(
        &list,
        format!("# comment\n*.tmp\n\n{}/cache\n", d.display()),
    )
    .unwrap();
    let id = r.snapshot_with(&["--exclude-file", list.to_str().unwrap()], &d);
    let listing = r.ok(&["ls", "-R", &id, d.to_str().unwrap()]);
    assert!(listing.contains("keep.txt"));
    assert!(
        !listing.contains("drop.tmp") && !listing.contains("cache"),
        "{listing}"
    );
    let id = r.snapshot_with(&["-e", "keep.*"], &d);
    let listing = r.ok(&["ls", "-R", &id, d.to_str().unwrap()]);
    assert!(
        !listing.contains("keep.txt") && listing.contains("drop.tmp"),
        "{listing}"
    );
}

#[test]
fn one_file_system_keeps_mount_points_empty() {
    // /dev/pts is its own file system (devpts) and always holds `ptmx`.
    let r = TestRepo::new();
    let with = r.snapshot_with(&["--one-file-system"], std::path::Path::new("/dev"));
    let without = r.snapshot_with(&[], std::path::Path::new("/dev"));
    assert_eq!(
        r.ok(&["ls", &with, "/dev/pts"]).trim(),
        "",
        "-x must not descend into /dev/pts"
    );
    assert!(r.ok(&["ls", &without, "/dev/pts"]).contains("ptmx"));
    assert!(
        r.ok(&["ls", &with, "/dev"]).contains("/dev/pts"),
        "the mount point itself is kept"
    );
}

#[test]
fn explicit_parent_is_used_for_change_detection() {
    let r = TestRepo::new();
    let d = r.scratch("d");
    for i in 0..10 {
        std::fs::write(d.join(format!("f{i}")), pseudo_random(10_000, i)).unwrap();
    }
    let first = r.snapshot_with(&["--host", "one"], &d);
    // Another host name: no automatic parent, every file is read.
    let v = r.json(&["snapshot", "--host", "two", d.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_new"], 10);
    assert!(v["parent"].is_null());
    let v = r.json(&[
        "snapshot",
        "--host",
        "three",
        "--parent",
        &first[..10],
        d.to_str().unwrap(),
    ]);
    assert_eq!(v["summary"]["files_unmodified"], 10);
    assert_eq!(v["parent"], first.as_str());
    // --force reads everything even with a parent; files that turn out identical are
    // reported unmodified, not changed.
    let v = r.json(&["snapshot", "--host", "one", "--force", d.to_str().unwrap()]);
    assert_eq!(v["summary"]["files_unmodified"], 10);
    assert_eq!(v["summary"]["files_changed"], 0);
    assert_eq!(v["summary"]["bytes_read"], 100_000);
}

#[test]
fn unknown_format_version_is_refused_as_unsupported() {
    let r = TestRepo::new();
    let config = r.repo.join("config");
    let mut b = std::fs::read(&config).unwrap();
    b[6] = 2;
    std::fs::write(&config, b).unwrap();
    let out = r.run(&["snapshots"]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported") && stderr.contains("upgrade vault"),
        "{stderr}"
    );
}
