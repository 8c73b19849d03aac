//! Retention and garbage collection through the real CLI: policies against a reference model
//! of restic's documented semantics, shrinking, crash safety at every step, holds and locks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::process::Stdio;

use crate::support::*;

/// A snapshot as the reference model sees it.
#[derive(Clone, Debug)]
struct Snap {
    id: String,
    secs: i64,
    offset: i32,
    host: String,
    path: String,
    tags: Vec<String>,
}

/// Reference model of `restic forget` (written from restic's documentation, independently of
/// the implementation): group by host+paths; newest first; `last n`; for each bucket rule, the
/// first snapshot seen in each new bucket is kept while the rule's count lasts; `within`
/// relative to the group's newest; tags; a snapshot matched by several rules counts for each.
/// The policy as the reference model takes it.
#[derive(Clone, Copy, Default)]
struct RefPolicy {
    last: u32,
    hourly: u32,
    daily: u32,
    weekly: u32,
    monthly: u32,
    yearly: u32,
    within_days: Option<i32>,
    tag: Option<&'static str>,
}

fn reference(snaps: &[Snap], p: RefPolicy) -> BTreeSet<String> {
    let mut groups: BTreeMap<(String, String), Vec<&Snap>> = BTreeMap::new();
    for s in snaps {
        groups
            .entry((s.host.clone(), s.path.clone()))
            .or_default()
            .push(s);
    }
    let mut keep = BTreeSet::new();
    for (_, mut list) in groups {
        list.sort_by(|a, b| b.secs.cmp(&a.secs).then(b.id.cmp(&a.id)));
        let civil =
            |s: &Snap| {
                let z = jiff::Timestamp::from_second(s.secs).unwrap().to_zoned(
                    jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(s.offset).unwrap()),
                );
                let iso = z.date().iso_week_date();
                (
                    z.year() as i64,
                    z.month() as i64,
                    z.day() as i64,
                    z.hour() as i64,
                    iso.year() as i64,
                    iso.week() as i64,
                    z,
                )
            };
        let mut counts = [p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
        let mut lasts: [Option<i64>; 5] = [None; 5];
        let newest = civil(list[0]).6;
        let limit = p.within_days.map(|d| {
            newest
                .checked_sub(jiff::Span::new().days(d))
                .unwrap()
                .timestamp()
                .as_second()
        });
        for (i, s) in list.iter().enumerate() {
            let (y, m, d, h, iy, iw, _) = civil(s);
            let keys = [
                ((y * 100 + m) * 100 + d) * 100 + h,
                (y * 100 + m) * 100 + d,
                iy * 100 + iw,
                y * 100 + m,
                y,
            ];
            let mut kept = (i as u32) < p.last;
            for k in 0..5 {
                if counts[k] > 0 && lasts[k] != Some(keys[k]) {
                    lasts[k] = Some(keys[k]);
                    counts[k] -= 1;
                    kept = true;
                }
            }
            if limit.is_some_and(|l| s.secs >= l) {
                kept = true;
            }
            if p.tag.is_some_and(|t| s.tags.iter().any(|x| x == t)) {
                kept = true;
            }
            if kept {
                keep.insert(s.id.clone());
            }
        }
    }
    keep
}

fn stdin_snapshot(
    r: &TestRepo,
    time: &str,
    host: &str,
    name: &str,
    tags: &[&str],
    content: &[u8],
) -> String {
    let mut args = vec![
        "--json",
        "snapshot",
        "--stdin",
        "--stdin-name",
        name,
        "--time",
        time,
        "--host",
        host,
    ];
    for t in tags {
        args.push("--tag");
        args.push(t);
    }
    let mut child = r
        .cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &args);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn policies_match_the_reference_model() {
    let r = TestRepo::new();
    let mut snaps = Vec::new();
    // ~300 snapshots over three years, two hosts, two paths, irregular times, mixed offsets.
    let mut rnd = 12345u64;
    let mut next = || {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        rnd
    };
    let mut t = 1_704_067_200i64; // 2024-01-01
    for i in 0..300 {
        t += (next() % (4 * 86_400)) as i64 + 600;
        let host = if next() % 3 == 0 { "web" } else { "db" };
        let path = if next() % 4 == 0 {
            "logs.tar"
        } else {
            "db.sql"
        };
        let offset = [0, 3600, -18_000, 19_800][(next() % 4) as usize];
        let tags: Vec<&str> = if i % 37 == 0 {
            vec!["monthly-audit"]
        } else {
            vec![]
        };
        let z = jiff::Timestamp::from_second(t)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::fixed(
                jiff::tz::Offset::from_seconds(offset).unwrap(),
            ));
        let time = z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
        let id = stdin_snapshot(&r, &time, host, path, &tags, format!("{i}").as_bytes());
        snaps.push(Snap {
            id,
            secs: t,
            offset,
            host: host.into(),
            path: path.to_string(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        });
    }
    let r0 = RefPolicy::default();
    let cases: Vec<(Vec<&str>, RefPolicy)> = vec![
        (vec!["--keep-last", "5"], RefPolicy { last: 5, ..r0 }),
        (vec!["--keep-daily", "7"], RefPolicy { daily: 7, ..r0 }),
        (vec!["--keep-weekly", "10"], RefPolicy { weekly: 10, ..r0 }),
        (
            vec!["--keep-monthly", "12"],
            RefPolicy { monthly: 12, ..r0 },
        ),
        (vec!["--keep-yearly", "7"], RefPolicy { yearly: 7, ..r0 }),
        (vec!["--keep-hourly", "30"], RefPolicy { hourly: 30, ..r0 }),
        (
            vec![
                "--keep-daily",
                "30",
                "--keep-weekly",
                "12",
                "--keep-monthly",
                "12",
                "--keep-yearly",
                "7",
            ],
            RefPolicy {
                daily: 30,
                weekly: 12,
                monthly: 12,
                yearly: 7,
                ..r0
            },
        ),
        (
            vec!["--keep-last", "2", "--keep-within", "60d"],
            RefPolicy {
                last: 2,
                within_days: Some(60),
                ..r0
            },
        ),
        (
            vec!["--keep-tag", "monthly-audit", "--keep-daily", "3"],
            RefPolicy {
                daily: 3,
                tag: Some("monthly-audit"),
                ..r0
            },
        ),
        (
            vec!["--keep-within", "400d", "--keep-monthly", "3"],
            RefPolicy {
                monthly: 3,
                within_days: Some(400),
                ..r0
            },
        ),
    ];
    for (flags, policy) in cases {
        let mut args = vec!["prune", "--dry-run"];
        args.extend(flags.iter().copied());
        let v = r.json(&args);
        let mut kept = BTreeSet::new();
        let mut removed = BTreeSet::new();
        for g in v["groups"].as_array().unwrap() {
            for k in g["keep"].as_array().unwrap() {
                kept.insert(k["id"].as_str().unwrap().to_string());
            }
            for k in g["remove"].as_array().unwrap() {
                removed.insert(k["id"].as_str().unwrap().to_string());
            }
            assert_eq!(
                g["reasons"].as_array().unwrap().len(),
                g["keep"].as_array().unwrap().len()
            );
        }
        let expected = reference(&snaps, policy);
        assert_eq!(kept, expected, "policy {flags:?}");
        eprintln!("{flags:?}: keep {} of {}", kept.len(), snaps.len());
        assert_eq!(kept.len() + removed.len(), snaps.len());
        assert!(kept.is_disjoint(&removed));
    }
    // A dry run changes nothing.
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 300);
}

#[test]
fn refuses_empty_policy_and_forgets_by_id() {
    let r = TestRepo::new();
    let a = stdin_snapshot(&r, "2026-01-01T00:00:00Z", "h", "f", &[], b"a");
    let b = stdin_snapshot(&r, "2026-01-02T00:00:00Z", "h", "f", &[], b"b");
    let out = r.run(&["forget"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    // prune with no policy only collects garbage: both snapshots stay.
    r.ok(&["prune"]);
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 2);
    r.ok(&["forget", &a[..8]]);
    let left = r.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], b.as_str());
    r.ok(&["forget", "--keep-none"]);
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

#[test]
fn holds_protect_snapshots_until_released() {
    let r = TestRepo::new();
    let old = stdin_snapshot(&r, "2026-01-01T00:00:00Z", "h", "f", &[], b"old data");
    stdin_snapshot(&r, "2026-01-02T00:00:00Z", "h", "f", &[], b"new data");
    r.ok(&["hold", &old[..8], "--reason", "case 42"]);
    let listing = r.ok(&["snapshots"]);
    assert!(listing.contains("case 42"), "{listing}");
    let v = r.json(&["snapshots"]);
    assert_eq!(v[0]["holds"][0]["reason"], "case 42");
    r.ok(&["prune", "--keep-last", "1"]);
    assert_eq!(
        r.json(&["snapshots"]).as_array().unwrap().len(),
        2,
        "held snapshot was removed"
    );
    let out = r.run(&["forget", &old]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("held"));
    let dry = r.json(&["prune", "--dry-run", "--keep-last", "1"]);
    let reasons = dry["groups"][0]["reasons"].to_string();
    assert!(reasons.contains("hold: case 42"), "{reasons}");
    r.ok(&["release", &old[..8]]);
    r.ok(&["prune", "--keep-last", "1"]);
    assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 1);
    let dumped = r.cmd(&["dump", "latest", "f"]).output().unwrap();
    assert_eq!(dumped.stdout, b"new data");
    r.ok(&["check", "--verify-data"]);
}

fn repo_size(r: &TestRepo) -> u64 {
    r.objects().values().map(|v| v.len() as u64).sum()
}

/// A tree that changes every "day": a few files rewritten, some added, some removed.
fn evolve(dir: &std::path::Path, day: u64) {
    for i in 0..20u64 {
        let p = dir.join(format!("stable-{i}"));
        if !p.exists() {
            std::fs::write(&p, pseudo_random(60_000, 1000 + i)).unwrap();
        }
    }
    std::fs::write(dir.join("daily.log"), pseudo_random(300_000, day)).unwrap();
    std::fs::write(
        dir.join(format!("new-{day}")),
        pseudo_random(100_000, 5000 + day),
    )
    .unwrap();
    if day >= 3 {
        let _ = std::fs::remove_file(dir.join(format!("new-{}", day - 3)));
    }
}

#[test]
fn prune_keep_last_shrinks_to_a_fresh_repository() {
    let r = TestRepo::new();
    let data = r.scratch("data");
    for day in 0..30 {
        evolve(&data, day);
        let time = format!("2026-03-{:02}T02:00:00Z", day + 1);
        r.ok(&["snapshot", "--time", &time, data.to_str().unwrap()]);
    }
    let before = repo_size(&r);
    let v = r.json(&["prune", "--keep-last", "1"]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 29);
    let after = repo_size(&r);
    // A fresh repository holding only the last state.
    let fresh = TestRepo::new();
    fresh.ok(&["snapshot", data.to_str().unwrap()]);
    let fresh_size = repo_size(&fresh);
    eprintln!("before {before}, after {after}, fresh {fresh_size}");
    assert!(after < before);
    assert!(
        (after as f64) <= fresh_size as f64 * 1.10,
        "after prune {after} bytes, fresh {fresh_size} bytes"
    );
    r.ok(&["check", "--verify-data"]);
    let out = r.scratch("out");
    r.ok(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ]);
    let diffs = compare_trees(&data, &out.join(data.strip_prefix("/").unwrap()));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Contents of every snapshot's restore, keyed by snapshot id.
fn restore_all(r: &TestRepo, ids: &[String], tag: &str) -> BTreeMap<String, Vec<u8>> {
    dump_each(r, ids, tag, "f.bin")
}

/// `vault dump ID PATH` of every snapshot (a file's bytes, or a directory as a tar stream: the
/// same bytes as long as the snapshot restores), keyed by snapshot id.
fn dump_each(r: &TestRepo, ids: &[String], tag: &str, path: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let d = r.cmd(&["dump", id, path]).output().unwrap();
        assert!(
            d.status.success(),
            "{tag}: snapshot {id} no longer restores: {}",
            String::from_utf8_lossy(&d.stderr)
        );
        out.insert(id.clone(), d.stdout);
    }
    out
}

#[test]
fn prune_killed_at_every_step_never_loses_a_kept_snapshot() {
    let r = TestRepo::new();
    // Snapshots whose data overlaps, so that pruning both deletes and repacks packs.
    let mut ids = Vec::new();
    let base = pseudo_random(1_500_000, 77);
    for day in 0..8u64 {
        let mut content = base.clone();
        content.extend(pseudo_random(400_000, day));
        let time = format!("2026-04-{:02}T01:00:00Z", day + 1);
        ids.push(stdin_snapshot(&r, &time, "h", "f.bin", &[], &content));
    }
    let kept: Vec<String> = ids[5..].to_vec();
    prune_survives_a_kill_at_every_step(&r, &kept, &restore_all);
}

/// The same with small files in frames (D57): members of forgotten snapshots make frames
/// partly unused, so prune frames the used members again while it may be killed.
#[test]
fn prune_of_frames_killed_at_every_step_never_loses_a_kept_snapshot() {
    let r = TestRepo::new();
    let src = r.scratch("small");
    let mut ids = Vec::new();
    for day in 0..8u64 {
        // Each day adds 40 small files and removes 30 of the oldest.
        for i in 0..40u64 {
            let body = format!("day {day} file {i}\n").repeat(50 + (i as usize * 31) % 200);
            std::fs::write(src.join(format!("d{day}-{i:02}.conf")), body).unwrap();
        }
        if day >= 2 {
            for i in 0..30u64 {
                let _ = std::fs::remove_file(src.join(format!("d{}-{i:02}.conf", day - 2)));
            }
        }
        let time = format!("2026-04-{:02}T01:00:00Z", day + 1);
        ids.push(r.snapshot_with(&["--time", &time], &src));
    }
    let kept: Vec<String> = ids[5..].to_vec();
    let tree = src.to_str().unwrap().to_string();
    let dump_all = |r: &TestRepo, ids: &[String], tag: &str| dump_each(r, ids, tag, &tree);
    prune_survives_a_kill_at_every_step(&r, &kept, &dump_all);
}

/// Kills `prune --keep-last 3` after each of its changes in turn (on a fresh copy of the
/// repository each time): after every kill, and after the prune run again, the repository
/// checks clean and every kept snapshot restores to what it did before (`restore` gives each
/// kept snapshot's content by id).
/// Each kept snapshot's content by id (`tag` names the moment in failure messages).
type RestoreAll<'a> = &'a dyn Fn(&TestRepo, &[String], &str) -> BTreeMap<String, Vec<u8>>;

fn prune_survives_a_kill_at_every_step(r: &TestRepo, kept: &[String], restore: RestoreAll<'_>) {
    let expected = restore(r, kept, "before");
    let pristine = r.dir.path().join("pristine");
    copy_tree(&r.repo, &pristine);
    // Count the mutations of an uninterrupted prune.
    let probe = r.json(&["prune", "--keep-last", "3"]);
    assert!(
        probe["gc"]["packs_to_repack"].as_array().unwrap().len()
            + probe["gc"]["packs_to_delete"].as_array().unwrap().len()
            > 2
    );
    let total = count_mutations(&pristine, r);
    assert!(total >= 6, "prune made only {total} changes");
    eprintln!("prune makes {total} changes; plan: {}", probe["gc"]);
    for n in 1..=total {
        std::fs::remove_dir_all(&r.repo).unwrap();
        copy_tree(&pristine, &r.repo);
        let _ = std::fs::remove_dir_all(&r.cache);
        let out = r
            .cmd(&["prune", "--keep-last", "3"])
            .env("VAULT_FAULTS", format!("kill_after_mutations={n}"))
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(0),
            "prune was supposed to be killed after {n} changes"
        );
        // Leave the lock of the dead process behind, as a real crash would; unlock removes it.
        r.ok(&["unlock", "--remove-all"]);
        let c = r.run(&["check", "--verify-data"]);
        assert_success(&c, &["check after kill", &n.to_string()]);
        assert_eq!(restore(r, kept, &format!("kill after {n}")), expected);
        r.ok(&["prune", "--keep-last", "3"]);
        r.ok(&["check", "--verify-data"]);
        assert_eq!(restore(r, kept, &format!("rerun after {n}")), expected);
        assert_eq!(r.json(&["snapshots"]).as_array().unwrap().len(), 3);
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for p in walkdir(from) {
        let dst = to.join(p.strip_prefix(from).unwrap());
        if p.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

/// Runs prune once on a copy of `pristine` with a huge kill threshold and counts the changes it
/// made (objects added + objects removed).
fn count_mutations(pristine: &std::path::Path, r: &TestRepo) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_tree(pristine, &repo);
    let before: BTreeSet<String> = walkdir(&repo)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    let out = r
        .cmd(&["prune", "--keep-last", "3"])
        .env("VAULT_REPOSITORY", &repo)
        .env("VAULT_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert_success(&out, &["prune (counting)"]);
    let after: BTreeSet<String> = walkdir(&repo)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    // Lock objects come and go too (written and deleted once each).
    (after.symmetric_difference(&before).count() + 2) as u64
}

#[test]
fn snapshot_concurrent_with_prune_completes_or_fails_cleanly() {
    let r = TestRepo::new();
    let data = r.scratch("data");
    for i in 0..40 {
        std::fs::write(data.join(format!("f{i}")), pseudo_random(200_000, i)).unwrap();
    }
    for day in 0..4 {
        let time = format!("2026-05-{:02}T01:00:00Z", day + 1);
        r.ok(&["snapshot", "--time", &time, data.to_str().unwrap()]);
    }
    for round in 0..4u64 {
        std::fs::write(data.join("changing"), pseudo_random(3_000_000, 100 + round)).unwrap();
        let snap = r
            .cmd(&["snapshot", "--force", data.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let prune = r
            .cmd(&["prune", "--keep-last", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (s, p) = (
            snap.wait_with_output().unwrap(),
            prune.wait_with_output().unwrap(),
        );
        for (what, o) in [("snapshot", &s), ("prune", &p)] {
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
            assert!(
                matches!(o.status.code(), Some(0) | Some(11)),
                "{what} failed uncleanly ({:?}): {stderr}",
                o.status.code()
            );
        }
        // Whatever the interleaving: the repository is whole and every snapshot restores.
        r.ok(&["check", "--verify-data"]);
        for s in r.json(&["snapshots"]).as_array().unwrap() {
            let out = r.scratch(&format!("out-{round}-{}", &s["short_id"].as_str().unwrap()));
            r.ok(&[
                "restore",
                "--snapshot",
                s["id"].as_str().unwrap(),
                "--target",
                out.to_str().unwrap(),
            ]);
        }
    }
}

#[test]
fn locks_stale_unlock_and_wait() {
    use vault::format::lock::{Lock, LockOwner, encode_lock};
    use vault::format::time::Timestamp;
    use vault::repo::process::ProcessIdentity;
    let r = TestRepo::new();
    let repo = r.library();
    // A lock not refreshed for an hour, from another host: stale, ignored, removed by unlock.
    let now = Timestamp::now();
    let stale = Lock {
        exclusive: true,
        hostname: "elsewhere".into(),
        username: "x".into(),
        pid: 1,
        uid: 0,
        created: Timestamp::new(now.secs - 7200, 0),
        refreshed: Timestamp::new(now.secs - 3600, 0),
        owner: Some(LockOwner {
            boot_id: "0123456789abcdef0123456789abcdef".into(),
            pid_ns: 1,
            start_ticks: 1,
        }),
    };
    repo.write_object(
        vault::format::layout::Dir::Locks,
        vault::format::KIND_LOCK,
        &encode_lock(&stale),
    )
    .unwrap();
    // A lock of a dead process on this host: stale at once.
    let mut dead_child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead_child.id();
    dead_child.wait().unwrap();
    let me = ProcessIdentity::current();
    let dead = Lock {
        hostname: vault::source::owner::hostname(),
        pid: dead_pid,
        created: now,
        refreshed: now,
        owner: Some(LockOwner {
            boot_id: me.boot_id.clone(),
            pid_ns: me.pid_ns,
            start_ticks: me.start_ticks,
        }),
        ..stale.clone()
    };
    repo.write_object(
        vault::format::layout::Dir::Locks,
        vault::format::KIND_LOCK,
        &encode_lock(&dead),
    )
    .unwrap();
    let d = r.scratch("d");
    r.ok(&["snapshot", d.to_str().unwrap()]);
    let check = r.json(&["check"]);
    assert_eq!(
        check["notes"].to_string().matches("stale").count(),
        2,
        "{check}"
    );
    let v = r.json(&["unlock"]);
    assert_eq!(v["removed"], 2);
    // A live lock is not removed without --remove-all.
    let guard = repo
        .lock(vault::repo::lock::LockKind::Shared, None)
        .unwrap();
    assert_eq!(r.json(&["unlock"])["removed"], 0);
    // prune waits for it with --wait-lock, and proceeds once it is released.
    let mut waiting = r
        .cmd(&["-v", "prune", "--wait-lock", "2m"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(waiting.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("prune reports that it waits").unwrap();
        if line.contains("waiting for lock") {
            break;
        }
    }
    drop(guard);
    assert!(waiting.wait().unwrap().success());
    // Without --wait-lock a held exclusive lock means exit 11.
    let guard = repo
        .lock(vault::repo::lock::LockKind::Exclusive, None)
        .unwrap();
    assert_exit(&r.run(&["snapshot", d.to_str().unwrap()]), 11);
    assert_eq!(r.json(&["unlock", "--remove-all"])["removed"], 1);
    drop(guard);
    r.ok(&["snapshot", d.to_str().unwrap()]);
}

/// Differential test against the anchor: the same snapshot times in a restic repository and a
/// vault repository give the same keep sets for the same policies.
#[test]
fn policies_agree_with_restic_forget() {
    let restic = which("restic").expect("restic is installed (./test.sh installs it)");
    let r = TestRepo::new();
    let rrepo = r.dir.path().join("restic-repo");
    let restic_cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(&restic);
        c.args(args)
            .env("RESTIC_REPOSITORY", &rrepo)
            .env("RESTIC_PASSWORD", "pw")
            .env("RESTIC_CACHE_DIR", r.dir.path().join("restic-cache"))
            .env("TZ", "UTC");
        c
    };
    assert!(restic_cmd(&["init", "-q"]).status().unwrap().success());
    let mut t = 1_735_689_600i64; // 2025-01-01T00:00:00Z
    let mut rnd = 99u64;
    for i in 0..40 {
        rnd = rnd
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        t += ((rnd >> 33) % (9 * 86_400)) as i64 + 3600;
        let host = if i % 5 == 0 { "b" } else { "a" };
        let z = jiff::Timestamp::from_second(t).unwrap();
        stdin_snapshot(&r, &z.to_string(), host, "data.bin", &[], b"x");
        let rt = z.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let mut child = restic_cmd(&[
            "backup",
            "-q",
            "--stdin",
            "--stdin-filename",
            "data.bin",
            "--host",
            host,
            "--time",
            &rt,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
        child.stdin.take().unwrap().write_all(b"x").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let key = |v: &serde_json::Value| -> (String, i64) {
        let ts: jiff::Timestamp = v["time"].as_str().unwrap().parse().unwrap();
        (v["hostname"].as_str().unwrap().to_string(), ts.as_second())
    };
    for policy in [
        vec!["--keep-last", "3"],
        vec!["--keep-daily", "5"],
        vec!["--keep-weekly", "4", "--keep-monthly", "3"],
        vec![
            "--keep-daily",
            "30",
            "--keep-weekly",
            "12",
            "--keep-monthly",
            "12",
            "--keep-yearly",
            "7",
        ],
        vec!["--keep-within", "2m", "--keep-yearly", "2"],
        vec!["--keep-hourly", "10", "--keep-last", "1"],
    ] {
        let mut args = vec!["forget", "--dry-run", "--json"];
        args.extend(policy.iter().copied());
        let out = restic_cmd(&args).output().unwrap();
        assert!(
            out.status.success(),
            "restic forget: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let restic_keep: BTreeSet<(String, i64)> = rv
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["keep"].as_array().unwrap().iter().map(key))
            .collect();
        let mut vargs = vec!["prune", "--dry-run"];
        vargs.extend(policy.iter().copied());
        let vv = r.json(&vargs);
        let vault_keep: BTreeSet<(String, i64)> = vv["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["keep"].as_array().unwrap().iter().map(key))
            .collect();
        assert_eq!(
            vault_keep, restic_keep,
            "policy {policy:?} differs from restic"
        );
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.exists())
}

/// Prune updates the local cache in place instead of rebuilding it. A blob stored twice,
/// served from the copy that prune deletes, must afterwards be served from the copy that
/// stays: a snapshot of it then stores nothing new, and check agrees.
#[test]
fn prune_updates_the_cache_in_place_and_keeps_duplicates_served() {
    let r = TestRepo::new();
    let x = pseudo_random(10_000, 71);
    let z = pseudo_random(10_000, 72);
    let d1 = r.scratch("d1");
    std::fs::write(d1.join("x"), &x).unwrap();
    std::fs::write(d1.join("z"), &z).unwrap();
    let s1 = r.json(&["snapshot", d1.to_str().unwrap()]);
    // A second copy of x, in a pack of its own, indexed after the first: the cache serves it.
    {
        let repo = r.library();
        let saver = vault::repo::packer::BlobSaver::new(
            &repo,
            vault::repo::packer::SaverOptions {
                dedup_against_index: false,
                ..Default::default()
            },
        )
        .unwrap();
        let blob = repo.prepare_blob(vault::id::BlobType::Data, &x).unwrap();
        assert!(saver.add(&blob).unwrap());
        assert_eq!(saver.finish().unwrap().packs, 1);
    }
    let d2 = r.scratch("d2");
    std::fs::write(d2.join("z"), &z).unwrap();
    r.ok(&["snapshot", d2.to_str().unwrap()]);
    let check = r.json(&["check"]);
    assert!(
        check["notes"].to_string().contains("more than once"),
        "the duplicate is seen: {check}"
    );
    // Forget the snapshot that used x: x's served copy (alone in its pack) is deleted, the
    // other copy stays in a pack kept for z.
    r.ok(&["forget", s1["id"].as_str().unwrap()]);
    let out = r.run(&["-vv", "prune", "--max-unused", "unlimited"]);
    assert_success(&out, &["prune"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("rebuilding"),
        "prune updated the cache in place: {log}"
    );
    r.ok(&["check", "--verify-data"]);
    let d3 = r.scratch("d3");
    std::fs::write(d3.join("x"), &x).unwrap();
    let s3 = r.json(&["snapshot", d3.to_str().unwrap()]);
    assert_eq!(
        s3["summary"]["data_blobs"], 0,
        "x is still known, served from the copy that stayed: {s3}"
    );
    let t = r.scratch("t");
    r.ok(&[
        "restore",
        "--snapshot",
        s3["id"].as_str().unwrap(),
        "--target",
        t.to_str().unwrap(),
    ]);
    let got = t.join(d3.strip_prefix("/").unwrap()).join("x");
    assert_eq!(std::fs::read(got).unwrap(), x);
}
