//! Key rotation and re-encryption (issue 13, `format-spec` 4.6–4.7): every password keeps
//! working across a rotation, snapshot ids do not change, and after `vault key reencrypt` a
//! copy of an old key file with its password opens nothing in the repository, checked object
//! by object on disk.

use std::path::Path;

use vault::crypto::{CipherRing, blob_aad};
use vault::format::envelope::header_is_resealed;
use vault::id::{KeyId, PackId};

use crate::support::*;

const KDF: [&str; 4] = ["--kdf-memory", "1MiB", "--kdf-iterations", "1"];

fn add_key(r: &TestRepo, name: &str, password: &str, restrict: Option<&str>) -> std::path::PathBuf {
    let pw = r.dir.path().join(name);
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    let mut args = vec!["key", "add", "--new-password-file", pw.to_str().unwrap()];
    if let Some(c) = restrict {
        args.extend_from_slice(&["--restrict", c]);
    }
    args.extend_from_slice(&KDF);
    r.ok(&args);
    pw
}

/// The key files on disk: (id, bytes).
fn key_files(repo: &Path) -> Vec<(KeyId, Vec<u8>)> {
    std::fs::read_dir(repo.join("keys"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let id = KeyId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
            (id, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Opens the ring of an old key file with its password.
fn old_ring(files: &[(KeyId, Vec<u8>)], password: &str) -> CipherRing {
    for (id, bytes) in files {
        if let Some(k) = vault::repo::keys::open_key_bytes(bytes, password.as_bytes(), *id).unwrap()
        {
            return k.cipher_ring().unwrap();
        }
    }
    panic!("no old key file opens with {password:?}");
}

/// Tries `ring` on every sealed thing in the repository (every envelope, every pack header,
/// every blob); returns how many it tried and how many opened.
fn try_everything(r: &TestRepo, ring: &CipherRing) -> (usize, usize) {
    let lib = r.library();
    let (mut tried, mut opened) = (0, 0);
    for path in walkdir(&r.repo) {
        let rel = path.strip_prefix(&r.repo).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        if matches!(top, "keys" | "tmp") || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let mut try_one = |aad: &[u8], sealed: &[u8]| {
            tried += 1;
            if ring.open(aad, sealed).is_ok() {
                opened += 1;
            }
        };
        if top == "data" {
            let id = PackId::from_hex(name).unwrap();
            let entries = lib.parse_pack(&id, &bytes).unwrap();
            for e in &entries {
                try_one(
                    &blob_aad(e.blob_type, &e.id),
                    &bytes[e.offset as usize..e.end() as usize],
                );
            }
            let hdr_len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
            let obj = &bytes[bytes.len() - 4 - hdr_len..bytes.len() - 4];
            let mut aad = obj[..8].to_vec();
            if header_is_resealed(&obj[..8]) {
                aad.extend_from_slice(&id.0);
            }
            try_one(&aad, &obj[8..]);
        } else {
            assert!(bytes.starts_with(b"VAULT"), "{}", rel.display());
            let mut aad = bytes[..8].to_vec();
            if header_is_resealed(&bytes[..8]) {
                if top == "config" {
                    aad.extend_from_slice(&[0; 32]);
                } else {
                    aad.extend_from_slice(&hex::decode(name).unwrap());
                }
            }
            try_one(&aad, &bytes[8..]);
        }
    }
    (tried, opened)
}

fn epochs(r: &TestRepo) -> Vec<u64> {
    r.json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["epoch"].as_u64().unwrap())
        .collect()
}

/// Restores every snapshot and compares it with the source state it was taken of.
#[cfg(feature = "fault-injection")]
fn every_snapshot_restores(r: &TestRepo, src: &Path, expect: &[(String, std::path::PathBuf)]) {
    for (i, (id, state)) in expect.iter().enumerate() {
        let out = r.scratch(&format!("restore-{i}-{}", rand_suffix()));
        r.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        let restored = out.join(src.strip_prefix("/").unwrap());
        let diffs = compare_trees(state, &restored);
        assert!(diffs.is_empty(), "snapshot {id}: {diffs:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[cfg(feature = "fault-injection")]
fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    vault::crypto::random_bytes(&mut b).unwrap();
    hex::encode(b)
}

/// A source tree and a copy of it per snapshot (restores are compared with the copy).
fn snapshot_state(r: &TestRepo, src: &Path, n: usize) -> (String, std::path::PathBuf) {
    let id = r.snapshot(&[src]);
    let copy = r.scratch(&format!("state-{n}"));
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", src.display()),
            copy.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    (id, copy)
}

#[test]
fn rotation_keeps_every_password_and_reencryption_locks_out_old_keys() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    build_rich_tree(&src);
    let pw2 = add_key(&r, "second", "second password", None);
    let host = add_key(&r, "host", "host password", Some("append-only"));
    let state1 = snapshot_state(&r, &src, 1);
    let id1 = state1.0.clone();
    r.ok(&["hold", &id1, "--reason", "kept across rotation"]);
    let old_keys = key_files(&r.repo);
    let ids_before = r.snapshot_ids();

    // Rotate: every key file moves to epoch 1, no other password needed.
    let v = r.json(&["key", "rotate"]);
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["rewritten"].as_array().unwrap().len(), 3);
    assert_eq!(epochs(&r), vec![1, 1, 1]);
    // Every password still opens and reads; the append-only host still snapshots.
    std::fs::write(src.join("after-rotation"), pseudo_random(200_000, 9)).unwrap();
    let out = r
        .cmd(&["snapshot", src.to_str().unwrap()])
        .env("VAULT_PASSWORD_FILE", &host)
        .output()
        .unwrap();
    assert_success(&out, &["append-only snapshot after rotation"]);
    let out = r
        .cmd(&["check", "--verify-data"])
        .env("VAULT_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert_success(&out, &["check with the second password"]);
    // check says what is still under the retired epoch.
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("retired key epoch (0)"), "{text}");
    // Before re-encryption the old keys still open the old objects.
    let (tried, opened) = try_everything(&r, &old_ring(&old_keys, "correct horse battery staple"));
    assert!(opened > 0 && opened < tried, "{opened} of {tried}");

    // Re-encrypt: everything re-sealed under epoch 1, epoch 0 retired everywhere.
    let v = r.json(&["key", "reencrypt"]);
    assert_eq!(v["retired_epochs"], serde_json::json!([0]));
    assert!(v["resealed"].as_u64().unwrap() > 0);
    // Snapshot ids do not change: re-sealed objects keep their names.
    let ids_after = r.snapshot_ids();
    assert_eq!(ids_after.len(), ids_before.len() + 1);
    assert!(ids_before.iter().all(|id| ids_after.contains(id)));
    let out = r.run(&["check", "--verify-data"]);
    assert_success(&out, &["check after reencrypt"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("retired"));
    // The hold still names its snapshot; restores match.
    let holds = r.json(&["snapshots"]);
    assert!(
        holds
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id1.as_str() && s["holds"].as_array().unwrap().len() == 1),
        "{holds}"
    );
    // On disk: each old key file with its password opens nothing at all.
    for password in [
        "correct horse battery staple",
        "second password",
        "host password",
    ] {
        let (tried, opened) = try_everything(&r, &old_ring(&old_keys, password));
        assert!(tried > 20, "only {tried} sealed things found");
        assert_eq!(
            opened, 0,
            "an old key ({password}) still opens {opened} of {tried}"
        );
    }
    // And through the CLI: the old key files back in place open nothing.
    let stale = TestRepo::uninitialised();
    let status = std::process::Command::new("cp")
        .args(["-a", r.repo.to_str().unwrap(), stale.repo.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    for e in std::fs::read_dir(stale.repo.join("keys")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (id, bytes) in &old_keys {
        std::fs::write(stale.repo.join("keys").join(id.to_hex()), bytes).unwrap();
    }
    let out = stale.run(&["snapshots"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The current passwords read everything.
    let out = r
        .cmd(&[
            "restore",
            &id1,
            "--target",
            r.scratch("second-restore").to_str().unwrap(),
        ])
        .env("VAULT_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert_success(&out, &["restore with the second password"]);
    let diffs = compare_trees(
        &state1.1,
        &r.dir
            .path()
            .join("second-restore")
            .join(src.strip_prefix("/").unwrap()),
    );
    assert!(diffs.is_empty(), "{diffs:?}");
    // A second rotation works the same way (epoch 2), and dedup continues across epochs.
    let v = r.json(&["key", "rotate", "--reencrypt"]);
    assert_eq!(v["epoch"], 2);
    assert_eq!(v["reencrypt"]["retired_epochs"], serde_json::json!([1]));
    let packs = |r: &TestRepo| {
        r.objects()
            .keys()
            .filter(|k| k.starts_with("data/"))
            .count()
    };
    let before = packs(&r);
    r.snapshot(&[&src]);
    assert!(
        packs(&r) <= before + 1,
        "an unchanged snapshot re-uploaded data"
    );
    r.ok(&["check", "--verify-data"]);
}

/// A legacy (version-1) key file is upgraded in place by its owner; rotation refuses while
/// another legacy key would be left behind.
#[test]
fn legacy_keys_are_upgraded_before_rotation() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::write(src.join("f"), pseudo_random(300_000, 4)).unwrap();
    let id = r.snapshot(&[&src]);
    // Replace the version-3 key file by a version-1 one for the same keys, and add a second
    // legacy key: the state of a repository made before key files version 3.
    let lib = r.library();
    let master = lib.master_key().to_bytes();
    let legacy = |password: &str, salt: u8| -> Vec<u8> {
        use vault::format::key::{KdfParams, KeyBody, KeyFile, encode_key_file};
        let kdf = KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let mut kf = KeyFile {
            kdf,
            salt: vec![salt; 16],
            created: vault::format::time::Timestamp::now(),
            hostname: "old".into(),
            username: "old".into(),
            capabilities: 0,
            body: KeyBody::Master(Vec::new()),
        };
        let kek = vault::crypto::derive_kek(password.as_bytes(), &kf.salt, &kdf).unwrap();
        kf.body = KeyBody::Master(
            vault::crypto::Cipher::new(&kek)
                .seal(&kf.aad(), &master[..])
                .unwrap(),
        );
        encode_key_file(&kf)
    };
    for e in std::fs::read_dir(r.repo.join("keys")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (pw, salt) in [("correct horse battery staple", 1u8), ("other owner", 2)] {
        let bytes = legacy(pw, salt);
        let name = hex::encode(vault::crypto::storage_hash(&bytes));
        std::fs::write(r.repo.join("keys").join(name), bytes).unwrap();
    }
    let other = r.dir.path().join("other");
    std::fs::write(&other, "other owner\n").unwrap();
    let list = r.json(&["key", "list"]);
    assert!(list.as_array().unwrap().iter().all(|k| k["version"] == 1));
    let out = r.run(&["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("vault key upgrade"));
    // The other legacy key would be left behind: refused, nothing changed.
    let before = r.objects();
    let out = r.run(&["key", "rotate"]);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vault key upgrade"), "{err}");
    // (the key in use was upgraded first; it keeps its password)
    assert_eq!(
        r.json(&["key", "list"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["version"] == 3)
            .count(),
        1
    );
    let content = |m: &std::collections::BTreeMap<String, Vec<u8>>| {
        m.iter()
            .filter(|(k, _)| !k.starts_with("audit/") && !k.starts_with("keys/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(content(&before), content(&r.objects()));
    // The other owner upgrades their own key; then rotation reaches both.
    let out = r
        .cmd(&["key", "upgrade"])
        .env("VAULT_PASSWORD_FILE", &other)
        .output()
        .unwrap();
    assert_success(&out, &["key upgrade"]);
    r.ok(&["key", "rotate", "--reencrypt"]);
    assert_eq!(epochs(&r), vec![1, 1]);
    for pw in [&r.password_file, &other] {
        let out = r
            .cmd(&["dump", &id, &format!("{}/f", src.display())])
            .env("VAULT_PASSWORD_FILE", pw)
            .output()
            .unwrap();
        assert_success(&out, &["dump after upgrade and rotation"]);
        assert_eq!(out.stdout, pseudo_random(300_000, 4));
    }
}

/// Killed at every point, rotation and re-encryption leave a repository that every password
/// reads, and running the command again finishes the job.
#[cfg(feature = "fault-injection")]
#[test]
fn rotation_and_reencryption_resume_after_a_kill_at_any_point() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    build_rich_tree(&src);
    let pw2 = add_key(&r, "second", "second password", None);
    let mut states = vec![snapshot_state(&r, &src, 0)];
    let killed = |args: &[&str], n: u64| {
        let out = r
            .cmd(args)
            .env("VAULT_FAULTS", format!("kill_after_mutations={n}"))
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    };
    // Rotation: kill after the lock and the first key file write (the new file is written,
    // the old one not yet deleted).
    assert!(!killed(&["key", "rotate"], 2));
    // Both passwords still open everything (one key file at epoch 1, one or two at 0).
    for pw in [&r.password_file, &pw2] {
        let out = r
            .cmd(&["check", "--verify-data"])
            .env("VAULT_PASSWORD_FILE", pw)
            .output()
            .unwrap();
        // An interrupted rotation is an error check names, with its remedy.
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("vault key rotate") || out.status.success(),
            "{text}"
        );
    }
    let v = r.json(&["key", "rotate"]);
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["resumed"], true);
    assert_eq!(epochs(&r), vec![1, 1]);
    // Every other kill point of a rotation (lock, each write, each delete, unlock): the next
    // run leaves every key file at one epoch and both passwords reading everything.
    for n in [1, 3, 4, 5, 6] {
        killed(&["key", "rotate"], n);
        r.ok(&["key", "rotate"]);
        let e = epochs(&r);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0], e[1], "{e:?}");
        let out = r
            .cmd(&["check", "--verify-data"])
            .env("VAULT_PASSWORD_FILE", &pw2)
            .output()
            .unwrap();
        assert_success(&out, &["check after a killed rotation"]);
    }
    std::fs::write(src.join("new"), pseudo_random(150_000, 7)).unwrap();
    states.push(snapshot_state(&r, &src, 1));
    // Re-encryption killed after 1, 2, 3, … object replacements until a run completes.
    let mut n = 1;
    loop {
        let done = killed(&["key", "reencrypt"], n);
        // Every blob of every pack opens (verify-data), with either password in turn.
        let pw = if n % 2 == 0 { &r.password_file } else { &pw2 };
        let out = r
            .cmd(&["check", "--verify-data"])
            .env("VAULT_PASSWORD_FILE", pw)
            .output()
            .unwrap();
        assert_success(&out, &["check after a killed reencrypt"]);
        if done || n % 5 == 0 {
            every_snapshot_restores(&r, &src, &states);
        }
        if done {
            break;
        }
        n += 1;
        assert!(n < 200, "re-encryption never completed");
    }
    assert!(n > 3, "the kills did not interrupt anything ({n})");
    let e = epochs(&r);
    assert_eq!(e[0], e[1]);
    let v = r.json(&["key", "reencrypt"]);
    assert_eq!(v["resealed"], 0);
    assert_eq!(v["retired_epochs"], serde_json::json!([]));
}

/// The same on S3 (moto): rotation, re-encryption in place, restore.
#[test]
fn rotation_and_reencryption_on_s3() {
    let s3 = crate::servers::Server::s3();
    let r = TestRepo::remote(s3.remote("rekey"));
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(500_000, 1)).unwrap();
    std::fs::write(src.join("b"), b"small file").unwrap();
    let id = r.snapshot(&[&src]);
    let v = r.json(&["key", "rotate", "--reencrypt"]);
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["reencrypt"]["retired_epochs"], serde_json::json!([0]));
    assert!(v["reencrypt"]["resealed"].as_u64().unwrap() >= 4);
    let out = r.run(&["check", "--verify-data"]);
    assert_success(&out, &["check on s3 after reencrypt"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("retired"));
    let out = r.run(&["dump", &id, &format!("{}/a", src.display())]);
    assert_success(&out, &["dump on s3"]);
    assert_eq!(out.stdout, pseudo_random(500_000, 1));
}

/// The audit record of a run killed after naming it in the local head but before publishing
/// it (found by the kill test above as a forked chain): check does not call it deleted, and
/// the next audited command publishes it before extending the chain.
#[test]
fn an_audit_record_killed_before_publishing_is_published_by_the_next_run() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    r.snapshot(&[&src]);
    let cache = std::fs::read_dir(&r.cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("audit-writer").exists())
        .unwrap();
    let head = std::fs::read_to_string(cache.join("audit-writer")).unwrap();
    let last = head.split_whitespace().nth(2).unwrap().to_string();
    // The state of a kill between the head update and the publish.
    let record = r.repo.join("audit").join(&last);
    std::fs::rename(&record, cache.join("audit-pending")).unwrap();
    let out = r.run(&["check"]);
    assert_success(&out, &["check with a pending audit record"]);
    assert!(
        record.exists(),
        "the next audited run publishes the pending record"
    );
    assert!(!cache.join("audit-pending").exists());
    r.ok(&["check"]);
    let log = r.json(&["log"]);
    assert!(log.as_array().unwrap().len() >= 4, "{log}");
}
