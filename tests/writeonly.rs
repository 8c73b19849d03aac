//! Write-only keys (issue 13, `format-spec` 4.8): a host with a write-only key makes
//! incremental, deduplicated snapshots, and reads nothing — not other hosts' data, not its own
//! earlier snapshots, not the snapshot list — while a full key restores what it wrote, and
//! prune, check and re-encryption handle its packs.

use std::path::{Path, PathBuf};
use std::process::Output;

use vault::id::{BlobId, BlobType, SnapshotId};

use crate::support::*;

const HOST_PASSWORD: &str = "write-only host password";

/// Adds a write-only key; returns its password file.
fn add_write_only(r: &TestRepo) -> PathBuf {
    let pw = r.dir.path().join("host-password");
    std::fs::write(&pw, format!("{HOST_PASSWORD}\n")).unwrap();
    let v = r.json(&[
        "key",
        "add",
        "--write-only",
        "--new-password-file",
        pw.to_str().unwrap(),
        "--kdf-memory",
        "1MiB",
        "--kdf-iterations",
        "1",
    ]);
    assert_eq!(v["write_only"], true);
    pw
}

/// A command as the write-only host: its password and its own cache directory (another
/// machine).
fn host(r: &TestRepo, pw: &Path, args: &[&str]) -> Output {
    r.cmd(args)
        .env("VAULT_PASSWORD_FILE", pw)
        .env("VAULT_CACHE_DIR", r.dir.path().join("host-cache"))
        .output()
        .unwrap()
}

fn host_snapshot(r: &TestRepo, pw: &Path, src: &Path) -> serde_json::Value {
    let out = host(r, pw, &["--json", "snapshot", src.to_str().unwrap()]);
    assert_success(&out, &["write-only snapshot"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused_as_write_only(out: &Output, what: &str) {
    assert_exit(out, 1);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("permission_denied") && text.contains("write-only"),
        "{what}: {text}"
    );
}

fn exercise(r: &TestRepo, src: &Path) {
    std::fs::write(src.join("big"), pseudo_random(700_000, 11)).unwrap();
    let full_id = r.snapshot(&[src]);
    let pw = add_write_only(r);
    // First snapshot by the host: every data chunk is already in the repository.
    let v = host_snapshot(r, &pw, src);
    assert_eq!(v["summary"]["data_blobs"], 0, "{v}");
    let host1 = v["id"].as_str().unwrap().to_string();
    // Second one: incremental from the host's own local memory (metadata skip).
    std::fs::write(src.join("new"), pseudo_random(90_000, 12)).unwrap();
    let v = host_snapshot(r, &pw, src);
    assert!(
        v["summary"]["files_unmodified"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert_eq!(v["summary"]["files_new"], 1, "{v}");
    assert_eq!(v["parent"].as_str().unwrap(), host1);
    let host2 = v["id"].as_str().unwrap().to_string();
    let state2 = r.scratch("state2");
    assert!(
        std::process::Command::new("cp")
            .args([
                "-a",
                &format!("{}/.", src.display()),
                state2.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    // Everything that reads, lists, changes or deletes is refused before it starts.
    let target = r.scratch("host-restore");
    let file = src.join("big");
    for args in [
        vec!["--json", "snapshots"],
        vec!["--json", "ls", &host2],
        vec![
            "--json",
            "restore",
            &full_id,
            "--target",
            target.to_str().unwrap(),
        ],
        vec!["--json", "dump", &host1, file.to_str().unwrap()],
        vec!["--json", "check"],
        vec!["--json", "find", "big"],
        vec!["--json", "diff", &host1, &host2],
        vec!["--json", "stats"],
        vec!["--json", "cat", "config"],
        vec!["--json", "log"],
        vec!["--json", "hold", &host2, "--reason", "x"],
        vec!["--json", "forget", &full_id],
        vec!["--json", "prune"],
        vec!["--json", "tag", "--add", "x", &host2],
        vec![
            "--json",
            "key",
            "passwd",
            "--new-password-file",
            "/dev/null",
        ],
        vec!["--json", "key", "rotate"],
    ] {
        refused_as_write_only(&host(r, &pw, &args), &format!("{args:?}"));
    }
    // It can list key files (nothing is decrypted there).
    assert_success(&host(r, &pw, &["key", "list"]), &["write-only key list"]);
    // A full key sees, checks and restores what the host wrote.
    let ids = r.snapshot_ids();
    assert!(ids.contains(&host1) && ids.contains(&host2), "{ids:?}");
    r.ok(&["check", "--verify-data"]);
    let out = r.scratch("full-restore");
    r.ok(&["restore", &host2, "--target", out.to_str().unwrap()]);
    let diffs = compare_trees(&state2, &out.join(src.strip_prefix("/").unwrap()));
    assert!(diffs.is_empty(), "{diffs:?}");
    // Prune repacks the host's packs (their blobs are re-sealed, not copied raw) and keeps
    // what it must; re-encryption turns everything into ordinary objects.
    r.ok(&["forget", &full_id, &host1]);
    r.ok(&["prune", "--max-unused", "0"]);
    r.ok(&["check", "--verify-data"]);
    let v = r.json(&["key", "rotate", "--reencrypt"]);
    assert!(v["reencrypt"]["writer_packs"].as_u64().unwrap() >= 1, "{v}");
    r.ok(&["check", "--verify-data"]);
    if r.remote.is_none() {
        // Nothing sealed to the reader is left: every envelope and pack header is ordinary.
        for (path, bytes) in r.objects() {
            let header: &[u8] = if path.starts_with("data/") {
                let n = bytes.len();
                let len = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
                &bytes[n - 4 - len..n - 4 - len + 8]
            } else {
                &bytes[..8]
            };
            assert_eq!(
                header[7] & vault::format::envelope::FLAG_SEALED_TO_READER,
                0,
                "{path} is still sealed to the reader"
            );
        }
    }
    let out = r.scratch("after-rotation");
    r.ok(&["restore", &host2, "--target", out.to_str().unwrap()]);
    let diffs = compare_trees(&state2, &out.join(src.strip_prefix("/").unwrap()));
    assert!(diffs.is_empty(), "{diffs:?}");
    // The host goes on after the rotation (its key file got the new ring).
    std::fs::write(src.join("third"), b"third").unwrap();
    let v = host_snapshot(r, &pw, src);
    assert_eq!(v["parent"].as_str().unwrap(), host2);
    r.ok(&["check", "--verify-data"]);
}

#[test]
fn a_write_only_key_snapshots_and_dedups_but_reads_nothing() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    build_rich_tree(&src);
    exercise(&r, &src);
}

#[test]
fn a_write_only_key_on_s3() {
    let s3 = crate::servers::Server::s3();
    let r = TestRepo::remote(s3.remote("write-only"));
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(300_000, 1)).unwrap();
    exercise(&r, &src);
}

/// Through the library: every read a write-only key could attempt is refused with the
/// write-only error, including reads of what this key wrote itself.
#[test]
fn every_read_through_the_library_is_refused() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::write(src.join("a"), pseudo_random(200_000, 3)).unwrap();
    let full_id = r.snapshot(&[&src]);
    let pw = add_write_only(&r);
    let host_id = host_snapshot(&r, &pw, &src)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let backend = vault::backend::location::open(
        &vault::backend::location::parse(r.repo.to_str().unwrap()).unwrap(),
    )
    .unwrap();
    let wo = vault::repo::Repository::open(
        backend,
        HOST_PASSWORD.as_bytes(),
        vault::repo::OpenOptions::default(),
    )
    .unwrap();
    assert!(wo.is_write_only());
    let full = r.library();
    let snap = full
        .load_snapshot(&SnapshotId::from_hex(&full_id).unwrap())
        .unwrap();
    let refused = |e: vault::Error| {
        assert_eq!(e.kind(), vault::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("write-only"), "{e}");
    };
    for id in [&full_id, &host_id] {
        refused(
            wo.load_snapshot(&SnapshotId::from_hex(id).unwrap())
                .unwrap_err(),
        );
    }
    refused(wo.load_tree(&snap.tree).unwrap_err());
    // Every data blob of the full key's snapshot (walk the trees with the full key).
    let mut some_data: Vec<BlobId> = Vec::new();
    let mut todo = vec![snap.tree];
    while let Some(t) = todo.pop() {
        for n in full.load_tree(&t).unwrap().nodes {
            todo.extend(n.subtree);
            for p in n.content {
                if let vault::format::tree::ContentPart::Chunk(id) = p {
                    some_data.push(id);
                }
            }
        }
    }
    assert!(!some_data.is_empty());
    for id in &some_data {
        refused(wo.load_blob(BlobType::Data, id).unwrap_err());
    }
    // The index and the config it can read (deduplication), nothing else.
    assert!(
        wo.index()
            .unwrap()
            .contains(BlobType::Data, &some_data[0])
            .unwrap()
    );
    refused(wo.list_snapshots().unwrap_err());
    for id in wo.list_audit_ids().unwrap() {
        refused(wo.load_audit(&id).unwrap_err());
    }
}

/// `repair index` salvages the intact blobs of a damaged pack a write-only key wrote: they
/// are sealed with that key's session, so they are sealed anew, not copied raw (raw copies
/// would not open in the new pack).
#[test]
fn repair_salvages_a_damaged_write_only_pack() {
    let r = TestRepo::new();
    let src = r.scratch("src");
    std::fs::write(src.join("seed"), b"a full key's snapshot").unwrap();
    r.snapshot(&[&src]);
    let pw = add_write_only(&r);
    for i in 0..4u64 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(40_000, 100 + i)).unwrap();
    }
    host_snapshot(&r, &pw, &src);
    // The host's data pack: the one whose listing holds the most lone data blobs.
    let (pack, blobs) = r
        .object_paths("data")
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let v = r.json(&["cat", "pack", &name]);
            let lone: Vec<serde_json::Value> = v["blobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["type"] == "data" && b["frame"].is_null())
                .cloned()
                .collect();
            (p, lone)
        })
        .max_by_key(|(_, lone)| lone.len())
        .unwrap();
    assert!(blobs.len() >= 4, "{blobs:?}");
    let hit = &blobs[0];
    let at = hit["offset"].as_u64().unwrap() + hit["length"].as_u64().unwrap() / 2;
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[at as usize] ^= 0x10;
    std::fs::write(&pack, bytes).unwrap();

    let damaged = damaged_paths(&r);
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    r.ok(&["repair", "index", "--verify-data"]);
    r.ok(&["repair", "snapshots", "--forget"]);
    r.ok(&["check", "--verify-data"]);
    let target = r.scratch("restore");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let back = target.join(src.strip_prefix("/").unwrap());
    let lost = damaged.iter().next().unwrap();
    for i in 0..4u64 {
        let p = src.join(format!("f{i}"));
        let restored = std::fs::read(back.join(format!("f{i}")));
        if p.to_str().unwrap() == lost {
            assert!(restored.is_err(), "{lost} restored after repair");
        } else {
            assert_eq!(restored.unwrap(), std::fs::read(&p).unwrap(), "{p:?}");
        }
    }
}
