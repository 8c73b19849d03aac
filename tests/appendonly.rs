//! Append-only access: with `--append-only`, snapshot, check, restore, dump, copy-into and
//! friends work and never delete or change an existing object; the commands that must delete
//! are refused before they change anything; an ordinary client prunes afterwards.

use std::collections::BTreeMap;

use crate::support::*;

/// Every object present in `before` is still there with the same bytes.
fn nothing_removed_or_changed(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) {
    for (path, bytes) in before {
        match after.get(path) {
            None => panic!("{path} was deleted"),
            Some(b) => assert!(b == bytes, "{path} was changed"),
        }
    }
}

/// The command was refused (exit 1, `permission_denied`) because of append-only access.
fn refused_as_append_only(out: &std::process::Output, args: &[&str]) {
    assert_exit(out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "permission_denied", "{args:?}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("append-only"),
        "{v}"
    );
}

fn exercise(r: &TestRepo, second: Option<&TestRepo>) {
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(300_000, 1)).unwrap();
    r.ok(&["snapshot", src.to_str().unwrap()]);
    let before = r.objects();
    let ao = |args: &[&str]| {
        let mut a = vec!["--append-only"];
        a.extend_from_slice(args);
        r.run(&a)
    };
    // What an append-only client can do.
    std::fs::write(src.join("b"), pseudo_random(300_000, 2)).unwrap();
    let target = r.scratch("t");
    for args in [
        vec!["snapshot", src.to_str().unwrap()],
        vec!["snapshot", src.to_str().unwrap()],
        vec!["check", "--verify-data"],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
        vec!["dump", "latest", src.join("a").to_str().unwrap()],
        vec!["ls", "latest"],
        vec!["snapshots"],
        vec!["stats"],
        vec!["hold", "latest", "--reason", "kept"],
        vec!["log"],
    ] {
        let out = ao(&args);
        assert_success(&out, &args);
    }
    assert_eq!(
        std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("b")).unwrap(),
        pseudo_random(300_000, 2)
    );
    if let Some(dst) = second {
        let out = r
            .cmd(&[
                "--append-only",
                "copy",
                "--to-repo",
                &dst.location(),
                "--to-password-file",
                dst.password_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_success(&out, &["append-only copy"]);
    }
    let mid = r.objects();
    nothing_removed_or_changed(&before, &mid);
    // What it cannot do: refused, nothing changed.
    let latest = r.json(&["snapshots"]).as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["--json", "release", &latest],
        vec!["--json", "forget", &latest],
        vec!["--json", "prune", "--keep-last", "1"],
        vec!["--json", "unlock", "--remove-all"],
        vec!["--json", "tag", "--add", "x", "latest"],
    ] {
        refused_as_append_only(&ao(&args), &args);
    }
    nothing_removed_or_changed(&mid, &r.objects());
    // An ordinary client releases and prunes right away: the append-only runs' locks belong
    // to processes that are provably gone.
    r.ok(&["release", "latest"]);
    r.ok(&["prune", "--keep-last", "1"]);
    r.ok(&["check"]);
}

#[test]
fn an_append_only_client_never_deletes_local() {
    let r = TestRepo::new();
    let dst = TestRepo::new();
    exercise(&r, Some(&dst));
    assert_eq!(dst.json(&["snapshots"]).as_array().unwrap().len(), 3);
}

#[test]
fn an_append_only_client_never_deletes_s3() {
    let s3 = crate::servers::Server::s3();
    let r = TestRepo::remote(s3.remote("append-only"));
    exercise(&r, None);
}

/// An append-only key: whoever holds its password gets an append-only client, whatever flags
/// they pass; it cannot add keys.
#[test]
fn an_append_only_key_restricts_every_client_that_uses_it() {
    let r = TestRepo::new();
    let pw2 = r.dir.path().join("host-password");
    std::fs::write(&pw2, "host password\n").unwrap();
    let v = r.json(&[
        "key",
        "add",
        "--restrict",
        "append-only",
        "--new-password-file",
        pw2.to_str().unwrap(),
        "--kdf-memory",
        "1MiB",
        "--kdf-iterations",
        "1",
    ]);
    assert_eq!(v["append_only"], true);
    let keys = r.json(&["key", "list"]);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["append_only"] == true)
            .count(),
        1
    );
    let host = |args: &[&str]| {
        r.cmd(args)
            .env("VAULT_PASSWORD_FILE", &pw2)
            .output()
            .unwrap()
    };
    let src = r.scratch("src");
    std::fs::write(src.join("f"), pseudo_random(100_000, 3)).unwrap();
    for args in [
        vec!["snapshot", src.to_str().unwrap()],
        vec!["snapshot", src.to_str().unwrap()],
        vec!["check", "--verify-data"],
        vec!["hold", "latest", "--reason", "kept"],
    ] {
        assert_success(&host(&args), &args);
    }
    let before = r.objects();
    let latest = r.json(&["snapshots"]).as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["--json", "forget", &latest],
        vec!["--json", "prune"],
        vec!["--json", "release", "latest"],
        vec!["--json", "unlock", "--remove-all"],
        vec![
            "--json",
            "key",
            "passwd",
            "--new-password-file",
            pw2.to_str().unwrap(),
        ],
    ] {
        refused_as_append_only(&host(&args), &args);
    }
    // It cannot make keys at all (only the ring authority of a full key can), neither a
    // full one nor another append-only one.
    let pw3 = r.dir.path().join("third");
    std::fs::write(&pw3, "third password\n").unwrap();
    for restrict in [&[][..], &["--restrict", "append-only"][..]] {
        let mut args = vec!["key", "add"];
        args.extend_from_slice(restrict);
        args.extend_from_slice(&[
            "--new-password-file",
            pw3.to_str().unwrap(),
            "--kdf-memory",
            "1MiB",
            "--kdf-iterations",
            "1",
        ]);
        let out = host(&args);
        assert_exit(&out, 1);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only a full key can add keys"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    nothing_removed_or_changed(&before, &r.objects());
    // The full key administers.
    r.ok(&["release", "latest"]);
    r.ok(&["forget", &latest]);
    r.ok(&["prune"]);
}

/// An account SAS for Azurite signed with its published development key: read, add, create,
/// write and list, but no delete (`sp=racwl`). Computed with Python's standard library (the
/// account-SAS string to sign of service version 2019-12-12).
fn azurite_sas_without_delete() -> String {
    let script = r#"
import base64, hashlib, hmac, sys, urllib.parse
account, key = sys.argv[1], sys.argv[2]
f = dict(sp="racwl", ss="b", srt="sco", st="2020-01-01T00:00:00Z", se="2099-01-01T00:00:00Z",
         sip="", spr="https,http", sv="2019-12-12")
s = "\n".join([account, f["sp"], f["ss"], f["srt"], f["st"], f["se"], f["sip"], f["spr"], f["sv"]]) + "\n"
sig = base64.b64encode(hmac.new(base64.b64decode(key), s.encode(), hashlib.sha256).digest()).decode()
q = {k: v for k, v in f.items() if v}
q["sig"] = sig
print(urllib.parse.urlencode(q))
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            crate::servers::AZURITE_ACCOUNT,
            crate::servers::AZURITE_KEY,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Storage that refuses deletes (an Azurite SAS without the delete permission): an
/// append-only client does everything it is for without a single refused request, and an
/// ordinary client's delete is refused by the storage itself, which proves the credentials
/// really cannot delete.
#[test]
fn an_append_only_client_works_with_credentials_that_cannot_delete() {
    let az = crate::servers::Server::azurite();
    let mut remote = az.remote("no-delete");
    remote
        .env
        .retain(|(k, _)| k != "AZURE_STORAGE_KEY" && k != "AZURE_STORAGE_ACCOUNT_KEY");
    remote.env.push((
        "AZURE_STORAGE_SAS_TOKEN".into(),
        azurite_sas_without_delete(),
    ));
    let r = TestRepo::remote(remote);
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(400_000, 5)).unwrap();
    let target = r.scratch("t");
    for args in [
        vec!["--append-only", "snapshot", src.to_str().unwrap()],
        vec!["--append-only", "snapshot", src.to_str().unwrap()],
        vec!["--append-only", "check", "--verify-data"],
        vec![
            "--append-only",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
        vec!["--append-only", "hold", "latest", "--reason", "kept"],
        vec!["--append-only", "log"],
    ] {
        let out = r.run(&args);
        assert_success(&out, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("denied") && !err.contains("403") && !err.contains("warning"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("a")).unwrap(),
        pseudo_random(400_000, 5)
    );
    // The storage itself refuses deletes: an ordinary forget fails there.
    let first = r.json(&["snapshots"]).as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = r.run(&["--json", "forget", &first]);
    assert!(!out.status.success(), "a delete went through the SAS");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.to_lowercase().contains("permission") || text.contains("403"),
        "{text}"
    );
    assert_eq!(
        r.json(&["--append-only", "snapshots"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Object lock (`-o object_lock=DAYS`): storage that retains every object for a period. A
/// bucket with S3 object lock and a default retention (moto): vault writes into it, and forget
/// and prune never delete a retained object — they keep the snapshot, say until when, and
/// leave no delete marker on any data object.
#[test]
fn object_lock_retention_is_respected_on_s3() {
    let s3 = crate::servers::Server::s3();
    let url = format!("http://127.0.0.1:{}/locked", s3.port);
    let ok = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail-with-body"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "-X",
        "PUT",
        "-H",
        "x-amz-bucket-object-lock-enabled: true",
        &url,
    ]);
    let conf = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
    let md5 = {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("printf '%s' '{conf}' | openssl md5 -binary | base64"),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    ok(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/xml",
        "-H",
        &format!("Content-MD5: {md5}"),
        "--data-binary",
        conf,
        &format!("{url}?object-lock"),
    ]);
    let mut remote = s3.remote("unused");
    remote.location = "s3:locked/repo".into();
    remote.options = vec!["object_lock=1".into()];
    let r = TestRepo::remote(remote);
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(400_000, 8)).unwrap();
    let first = r.snapshot(&[&src]);
    std::fs::write(src.join("b"), pseudo_random(200_000, 9)).unwrap();
    r.snapshot(&[&src]);
    let out = r.ok(&["forget", &first, "--prune"]);
    assert!(out.contains("retains it until"), "{out}");
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 2);
    r.ok(&["check", "--verify-data"]);
    // No delete marker on any data object (locks may go: they are meant to).
    let versions = ok(&[&format!("{url}?versions&prefix=repo/")]);
    for marker in versions.split("<DeleteMarker>").skip(1) {
        let key = marker
            .split("<Key>")
            .nth(1)
            .and_then(|k| k.split("</Key>").next())
            .unwrap_or("");
        assert!(key.starts_with("repo/locks/"), "delete marker on {key}");
    }
}

/// Unreferenced packs younger than the retention are scheduled, not deleted, and a later
/// prune (after the retention) deletes them.
#[test]
fn object_lock_schedules_pack_deletion() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(600_000, 4)).unwrap();
    r.snapshot(&[&src]);
    std::fs::write(src.join("a"), pseudo_random(600_000, 5)).unwrap();
    r.snapshot(&[&src]);
    // Forgotten before the retention was known (or by a client without it): its data is
    // garbage now, but the storage still retains the packs.
    let first = r.json(&["snapshots"]).as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    r.ok(&["forget", &first]);
    let packs = |r: &TestRepo| {
        r.objects()
            .keys()
            .filter(|k| k.starts_with("data/"))
            .count()
    };
    let before = packs(&r);
    let out = r.ok(&["-o", "object_lock=30", "prune"]);
    assert!(out.contains("scheduled"), "{out}");
    assert_eq!(packs(&r), before, "a retained pack was deleted");
    r.ok(&["check", "--verify-data"]);
    // After the retention (here: a prune that does not know of one) they go.
    r.ok(&["prune"]);
    assert!(packs(&r) < before);
    r.ok(&["check", "--verify-data"]);
}
