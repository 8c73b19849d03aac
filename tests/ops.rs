//! Running vault unattended: profiles from a configuration file, hooks, Prometheus metrics
//! (checked with the real `promtool` and pushed to a real Pushgateway), anomaly alarms on real
//! PostgreSQL dumps and on files encrypted in place with `openssl enc`, `stats`, completions
//! and man pages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::pg::{Pg, SCHEMA};
use crate::servers::Server;
use crate::support::*;

/// `promtool check metrics` on a file: fails the test with promtool's complaint.
fn promtool_check(file: &Path) {
    let text = std::fs::read(file).unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (./test.sh installs the prometheus package)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&text)
    );
}

/// The value of the sample `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs vault with a configuration file and a profile (no repository in the environment:
/// everything comes from the profile).
fn with_profile(r: &TestRepo, config: &Path, profile: &str, args: &[&str]) -> Output {
    let mut c = Command::new(vault_bin());
    c.arg("--config")
        .arg(config)
        .args(["--profile", profile])
        .args(args)
        .env_remove("VAULT_REPOSITORY")
        .env_remove("VAULT_PASSWORD_FILE")
        .env("VAULT_CACHE_DIR", &r.cache)
        .env("TMPDIR", r.tmp())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tree of compressible text files.
fn text_tree(root: &Path, files: usize) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..files {
        let body: String = (0..2000)
            .map(|n| format!("line {n} of file {i}\n"))
            .collect();
        std::fs::write(root.join(format!("doc{i:03}.txt")), body).unwrap();
    }
    root.to_path_buf()
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[test]
fn a_profile_driven_cron_setup_produces_valid_metrics_and_pushes() {
    let pg = Pg::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("shop", SCHEMA);
    let gw = Server::pushgateway();
    let r = TestRepo::new();
    let second = TestRepo::new();
    let files = text_tree(&r.scratch("files"), 30);
    let prom = r.dir.path().join("textfile").join("vault.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let dump: Vec<String> = pg.dump_argv("shop");
    let config = r.dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[profiles.base]
repository = {repo}
password_file = {pw}
metrics_file = {prom}
metrics_push = "{gw}"
[profiles.base.retention]
keep_daily = 30
keep_weekly = 12
keep_monthly = 12
keep_yearly = 7
[profiles.base.check]
verify_data_subset = "1/3"
[[profiles.base.copy.targets]]
repository = {repo2}
password_file = {pw2}

[profiles.files]
inherit = "base"
[profiles.files.snapshot]
paths = [{files}]
tags = ["files"]

[profiles.db]
inherit = "base"
[profiles.db.snapshot]
stdin_command = {dump:?}
stdin_name = "shop.sql"
tags = ["db"]
"#,
            repo = toml_str(&r.repo),
            pw = toml_str(&r.password_file),
            prom = toml_str(&prom),
            gw = gw.url(),
            repo2 = toml_str(&second.repo),
            pw2 = toml_str(&second.password_file),
            files = toml_str(&files),
        ),
    )
    .unwrap();
    for (profile, args) in [
        ("files", vec!["snapshot"]),
        ("db", vec!["snapshot"]),
        ("files", vec!["prune"]),
        ("files", vec!["check"]),
        ("files", vec!["copy"]),
    ] {
        let out = with_profile(&r, &config, profile, &args);
        assert_success(&out, &args);
        promtool_check(&prom);
    }
    // Both snapshots went to the profile's repository, with the profile's tags and sources.
    let snaps = r.json(&["snapshots"]);
    let list = snaps.as_array().unwrap();
    assert_eq!(list.len(), 2, "{snaps}");
    let db = list.iter().find(|s| s["tags"][0] == "db").unwrap();
    assert_eq!(db["paths"][0], "shop.sql");
    assert!(db["summary"]["total_bytes"].as_u64().unwrap() > 10 << 20);
    // The copy target got both.
    assert_eq!(second.json(&["snapshots"]).as_array().unwrap().len(), 2);

    let text = std::fs::read_to_string(&prom).unwrap();
    let files_l = r#"profile="files""#;
    for (name, labels) in [
        (
            "vault_snapshot_last_success_timestamp_seconds",
            vec![files_l],
        ),
        (
            "vault_snapshot_last_success_timestamp_seconds",
            vec![r#"profile="db""#],
        ),
        ("vault_prune_last_success_timestamp_seconds", vec![files_l]),
        ("vault_check_last_success_timestamp_seconds", vec![files_l]),
        ("vault_copy_last_success_timestamp_seconds", vec![files_l]),
        ("vault_repository_snapshots", vec![files_l]),
    ] {
        assert!(
            sample(&text, name, &labels).is_some_and(|v| v > 0.0),
            "{name} {labels:?} missing in\n{text}"
        );
    }
    let db_added = sample(&text, "vault_snapshot_bytes_added", &[r#"profile="db""#]).unwrap();
    assert!(db_added > (10 << 20) as f64, "{db_added}");
    assert_eq!(
        sample(&text, "vault_check_errors", &[files_l]),
        Some(0.0),
        "{text}"
    );
    assert!(sample(&text, "vault_check_bytes_verified", &[files_l]).unwrap() > 0.0);
    assert_eq!(
        sample(&text, "vault_copy_snapshots_copied", &[files_l]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "vault_repository_snapshots", &[files_l]),
        Some(2.0)
    );

    // The same metrics reached the Pushgateway, grouped by profile, host and repository.
    let pushed = gw.get("/metrics");
    for name in [
        "vault_snapshot_last_success_timestamp_seconds",
        "vault_prune_duration_seconds",
        "vault_check_bytes_verified",
        "vault_copy_snapshots_copied",
    ] {
        assert!(
            sample(&pushed, name, &[r#"job="vault""#, files_l]).is_some(),
            "{name} not pushed:\n{pushed}"
        );
    }
    assert!(
        sample(&pushed, "vault_snapshot_bytes_added", &[r#"profile="db""#]).is_some(),
        "{pushed}"
    );

    // A failed run keeps the last success and says it failed, in the file and the gateway.
    let before = sample(
        &text,
        "vault_check_last_success_timestamp_seconds",
        &[files_l],
    );
    let out = with_profile(
        &r,
        &config,
        "files",
        &["check", "--verify-data-subset", "x"],
    );
    assert_exit(&out, 1);
    let text = std::fs::read_to_string(&prom).unwrap();
    promtool_check(&prom);
    assert_eq!(
        sample(&text, "vault_check_exit_code", &[files_l]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "vault_check_success", &[files_l]), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "vault_check_last_success_timestamp_seconds",
            &[files_l]
        ),
        before
    );
    let pushed = gw.get("/metrics");
    assert_eq!(
        sample(&pushed, "vault_check_exit_code", &[files_l]),
        Some(1.0)
    );
    assert!(
        sample(
            &pushed,
            "vault_check_last_success_timestamp_seconds",
            &[files_l]
        )
        .is_some()
    );
}

#[test]
fn flags_override_the_profile_and_config_show_masks_secrets() {
    let r = TestRepo::new();
    let a = text_tree(&r.scratch("a"), 3);
    let b = text_tree(&r.scratch("b"), 3);
    let config = r.dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[profiles.p]
repository = {repo}
password_file = {pw}
options = {{ secret_access_key = "hunter2", region = "eu-west-1" }}
metrics_push = "http://user:pa55@127.0.0.1:1/"
[profiles.p.snapshot]
paths = [{a}]
tags = ["from-file"]
"#,
            repo = toml_str(&r.repo),
            pw = toml_str(&r.password_file),
            a = toml_str(&a),
        ),
    )
    .unwrap();
    let show = with_profile(&r, &config, "p", &["config", "show"]);
    assert_success(&show, &["config", "show"]);
    let text = stdout(&show);
    assert!(
        !text.contains("hunter2") && !text.contains("pa55"),
        "{text}"
    );
    assert!(text.contains("region = \"eu-west-1\""), "{text}");
    let shown = with_profile(&r, &config, "p", &["--json", "config", "show"]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["settings"]["options"]["secret_access_key"], "***");

    // Typed paths and tags replace the profile's; the repository still comes from the file.
    let out = with_profile(
        &r,
        &config,
        "p",
        &[
            "--json",
            "snapshot",
            "--tag",
            "typed",
            b.to_str().unwrap(),
            "-o",
            "region=x",
        ],
    );
    // `-o region=x` on a local repository is refused: the typed option won over the file's.
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("region"), "{}", stderr(&out));
    let out = with_profile(
        &r,
        &config,
        "p",
        &["--json", "snapshot", "--tag", "typed", b.to_str().unwrap()],
    );
    // The profile's secret_access_key is not an option of a local repository either.
    assert_exit(&out, 1);
    // Without the bogus options: a profile for a local repository.
    std::fs::write(
        &config,
        format!(
            "[profiles.p]\nrepository = {}\npassword_file = {}\n[profiles.p.snapshot]\npaths = [{}]\ntags = [\"from-file\"]\n",
            toml_str(&r.repo),
            toml_str(&r.password_file),
            toml_str(&a)
        ),
    )
    .unwrap();
    let out = with_profile(
        &r,
        &config,
        "p",
        &["--json", "snapshot", "--tag", "typed", b.to_str().unwrap()],
    );
    assert_success(&out, &["snapshot"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["typed"]));
    assert_eq!(v["paths"], serde_json::json!([b.display().to_string()]));
    let out = with_profile(&r, &config, "p", &["--json", "snapshot"]);
    assert_success(&out, &["snapshot"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["from-file"]));
    assert_eq!(v["paths"], serde_json::json!([a.display().to_string()]));
}

#[test]
fn configuration_mistakes_name_the_file_line_and_key_and_do_nothing() {
    let r = TestRepo::new();
    let config = r.dir.path().join("vault.toml");
    let cases = [
        (
            "[profiles.p]\nrepository = \"/x\"\nkeep_dayly = 3\n",
            "keep_dayly",
        ),
        (
            "[profiles.p.retention]\nkeep_daily = \"lots\"\n",
            "keep_daily",
        ),
        ("[profiles.p.snapshot]\npaths = \"/etc\"\n", "paths"),
        ("[profiles.p]\ninherit = \"nope\"\n", "nope"),
    ];
    for (text, key) in cases {
        std::fs::write(&config, text).unwrap();
        let out = with_profile(&r, &config, "p", &["snapshots"]);
        assert_exit(&out, 1);
        let e = stderr(&out);
        assert!(
            e.contains(&config.display().to_string()) && e.contains(key),
            "{text:?}: {e}"
        );
    }
    std::fs::write(
        &config,
        "[profiles.p]\nrepository = \"/x\"\nkeep_dayly = 3\n",
    )
    .unwrap();
    let e = stderr(&with_profile(&r, &config, "p", &["snapshots"]));
    assert!(e.contains("line 3"), "{e}");
    // An unknown profile, and --config without --profile.
    std::fs::write(&config, "[profiles.p]\n").unwrap();
    let out = with_profile(&r, &config, "q", &["snapshots"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("no profile \"q\""),
        "{}",
        stderr(&out)
    );
    let out = r.run(&["--config", config.to_str().unwrap(), "snapshots"]);
    assert_exit(&out, 2);
}

#[test]
fn hooks_see_the_run_and_decide_its_outcome() {
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("src"), 3);
    let log = r.dir.path().join("hooks.log");
    let config = r.dir.path().join("vault.toml");
    let write = |hooks: &str| {
        std::fs::write(
            &config,
            format!(
                "[profiles.p]\nrepository = {}\npassword_file = {}\n[profiles.p.snapshot]\npaths = [{}]\n{hooks}",
                toml_str(&r.repo),
                toml_str(&r.password_file),
                toml_str(&src)
            ),
        )
        .unwrap();
    };
    let log_cmd = |stage: &str| {
        format!(
            "echo {stage} $VAULT_HOOK_COMMAND $VAULT_HOOK_PROFILE exit=$VAULT_HOOK_EXIT_CODE snap=$VAULT_HOOK_SNAPSHOT_ID added=$VAULT_HOOK_BYTES_ADDED err=$VAULT_HOOK_ERROR >> {}",
            log.display()
        )
    };
    write(&format!(
        "[profiles.p.hooks]\nbefore = {:?}\nafter = {:?}\nfailure = {:?}\nfinally = {:?}\n",
        log_cmd("before"),
        log_cmd("after"),
        log_cmd("failure"),
        log_cmd("finally"),
    ));
    let out = with_profile(&r, &config, "p", &["--json", "snapshot"]);
    assert_success(&out, &["snapshot"]);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("before snapshot p exit= "), "{text}");
    assert!(
        lines[1].starts_with(&format!("after snapshot p exit=0 snap={id} added=")),
        "{text}"
    );
    assert!(lines[2].starts_with("finally snapshot p exit=0"), "{text}");
    // A failed run runs the failure hook with the error.
    std::fs::remove_file(&log).unwrap();
    let out = with_profile(
        &r,
        &config,
        "p",
        &["restore", "--snapshot", "zzzz", "--target", "/tmp/x"],
    );
    assert_exit(&out, 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("failure restore p exit=1") && text.contains("err="),
        "{text}"
    );
    assert!(!text.contains("after "), "{text}");

    // A failing before hook: nothing is done, exit 1, said clearly.
    let count = || r.json(&["snapshots"]).as_array().unwrap().len();
    let n = count();
    write("[profiles.p.hooks]\nbefore = \"echo not today >&2; exit 7\"\n");
    let out = with_profile(&r, &config, "p", &["snapshot"]);
    assert_exit(&out, 1);
    let e = stderr(&out);
    assert!(
        e.contains("before hook") && e.contains("exit code 7"),
        "{e}"
    );
    assert!(e.contains("hook before: not today"), "{e}");
    assert!(e.contains("was not run"), "{e}");
    assert_eq!(count(), n);
    // A failing after hook is reported and makes the exit code 1 (the snapshot is saved).
    write("[profiles.p.snapshot.hooks]\nafter = \"exit 3\"\n");
    let out = with_profile(&r, &config, "p", &["snapshot"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("after hook"), "{}", stderr(&out));
    assert_eq!(count(), n + 1);
    // A hook that hangs is killed after its timeout, with everything it started.
    write("[profiles.p.hooks]\ntimeout = \"1s\"\nbefore = \"sleep 600 & sleep 600\"\n");
    let out = with_profile(&r, &config, "p", &["snapshot"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("did not finish within 1s"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(), n + 1);
}

/// Runs a profile's snapshot; returns (exit code, the `--json` summary).
fn profile_snapshot(r: &TestRepo, config: &Path, profile: &str) -> (i32, serde_json::Value) {
    let out = with_profile(r, config, profile, &["--json", "snapshot"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), v)
}

#[test]
fn an_emptied_database_dump_is_flagged_and_still_saved() {
    let pg = Pg::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("shop", SCHEMA);
    // Grow the shop to a dump of about 90 MB.
    pg.sql(
        "shop",
        "INSERT INTO events (at, kind, payload) SELECT now(), 'page_view', jsonb_build_object('session', md5(i::text), 'path', '/product/' || (i % 5000)) FROM generate_series(1, 600000) i",
    );
    let r = TestRepo::new();
    let prom = r.dir.path().join("vault.prom");
    let hook_log = r.dir.path().join("failure.log");
    let config = r.dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.db]\nrepository = {}\npassword_file = {}\nmetrics_file = {}\n[profiles.db.snapshot]\nstdin_command = {:?}\nstdin_name = \"shop.sql\"\n[profiles.db.hooks]\nfailure = \"echo $VAULT_HOOK_EXIT_CODE $VAULT_HOOK_ANOMALIES > {}\"\n",
            toml_str(&r.repo),
            toml_str(&r.password_file),
            toml_str(&prom),
            pg.dump_argv("shop"),
            hook_log.display()
        ),
    )
    .unwrap();
    let (code, first) = profile_snapshot(&r, &config, "db");
    assert_eq!(code, 0, "{first}");
    let size = first["summary"]["total_bytes"].as_u64().unwrap();
    assert!(size > 80 << 20, "the dump is {size} bytes");
    // A normal day: a few more rows. Not flagged.
    pg.sql("shop", crate::pg::DAY_OF_WRITES);
    let (code, normal) = profile_snapshot(&r, &config, "db");
    assert_eq!(code, 0, "{normal}");
    assert_eq!(normal["anomalies"], serde_json::json!([]));
    assert!(!std::fs::exists(&hook_log).unwrap());
    // The database is dropped and recreated empty: the dump still succeeds, but shrinks.
    pg.sql("postgres", "DROP DATABASE shop");
    pg.sql("postgres", "CREATE DATABASE shop");
    let (code, empty) = profile_snapshot(&r, &config, "db");
    assert_eq!(code, 4, "{empty}");
    assert_eq!(empty["anomalies"][0]["kind"], "shrank", "{empty}");
    assert!(
        empty["tags"]
            .as_array()
            .unwrap()
            .contains(&"anomaly".into())
    );
    // Saved, tagged, in the metrics, and the failure hook was told.
    let listed = r.json(&["snapshots", "--tag", "anomaly"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], empty["id"]);
    let text = std::fs::read_to_string(&prom).unwrap();
    promtool_check(&prom);
    assert_eq!(
        sample(&text, "vault_snapshot_anomaly", &[r#"kind="shrank""#]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "vault_snapshot_exit_code", &[]), Some(4.0));
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap().trim(),
        "4 shrank"
    );
}

#[test]
fn files_encrypted_in_place_are_flagged_and_a_normal_day_is_not() {
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("docs"), 40);
    let snap = |args: &[&str]| -> (i32, serde_json::Value) {
        let mut a = vec!["--json", "snapshot"];
        a.extend_from_slice(args);
        let p = src.display().to_string();
        a.push(&p);
        let out = r.run(&a);
        (
            out.status.code().unwrap(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    };
    assert_eq!(snap(&[]).0, 0);
    // Normal days: a few documents edited, one added.
    for day in 0..3 {
        for i in 0..3 {
            let f = src.join(format!("doc{:03}.txt", day * 3 + i));
            let mut body = std::fs::read_to_string(&f).unwrap();
            body.push_str(&format!("edited on day {day}\n"));
            std::fs::write(&f, body).unwrap();
        }
        std::fs::write(
            src.join(format!("new{day}.txt")),
            "a new document\n".repeat(500),
        )
        .unwrap();
        let (code, v) = snap(&[]);
        assert_eq!(code, 0, "day {day}: {v}");
        assert_eq!(v["anomalies"], serde_json::json!([]), "day {day}");
    }
    // Every file encrypted in place, as ransomware does.
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let tmp = p.with_extension("enc");
        let st = Command::new("openssl")
            .args([
                "enc",
                "-aes-256-cbc",
                "-pbkdf2",
                "-pass",
                "pass:ransom",
                "-in",
            ])
            .arg(&p)
            .arg("-out")
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, &p).unwrap();
    }
    let (code, v) = snap(&[]);
    assert_eq!(code, 4, "{v}");
    let kinds: Vec<&str> = v["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"mass-change"), "{v}");
    assert!(v["tags"].as_array().unwrap().contains(&"anomaly".into()));
    // --no-anomaly-check turns the comparison off.
    std::fs::write(src.join("doc000.txt"), b"x").unwrap();
    let (code, v) = snap(&["--no-anomaly-check"]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn stats_report_sizes_and_ratios() {
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("src"), 20);
    r.snapshot(&[&src]);
    r.snapshot(&[&src]);
    let v = r.json(&["stats"]);
    assert_eq!(v["snapshots"]["snapshots"], 2);
    let raw = v["snapshots"]["raw_bytes"].as_u64().unwrap();
    let unique = v["unique"]["raw_bytes"].as_u64().unwrap();
    // Two identical snapshots: everything is stored once.
    assert!(raw >= 2 * unique - unique / 10, "{v}");
    assert!(v["deduplication_ratio"].as_f64().unwrap() > 1.8, "{v}");
    assert!(v["compression_ratio"].as_f64().unwrap() > 2.0, "{v}");
    // The backend size is what the repository directory holds.
    let on_disk: u64 = walkdir(&r.repo)
        .iter()
        .filter(|p| p.is_file() && !p.starts_with(r.repo.join("locks")))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        v["backend"]["total_bytes"].as_u64().unwrap(),
        on_disk,
        "{v}"
    );
    let one = r.json(&["stats", "latest"]);
    assert_eq!(one["snapshots"][0]["files"], 20);
}

#[test]
fn completions_and_man_pages_are_generated() {
    let r = TestRepo::new();
    let bash = r.ok(&["completion", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("snapshot"),
        "{bash}"
    );
    let zsh = r.ok(&["completion", "zsh"]);
    assert!(zsh.contains("#compdef vault"));
    let dir = r.dir.path().join("man");
    r.ok(&["man", dir.to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.join("vault-snapshot.1")).unwrap();
    assert!(page.contains("exclude"), "{page}");
    assert!(dir.join("vault.1").exists());
}

/// `vault log --json`, oldest first.
fn audit_log(r: &TestRepo) -> Vec<serde_json::Value> {
    r.json(&["log"]).as_array().unwrap().clone()
}

/// Copies the repository directory (for one tampering trial) and returns a TestRepo-like
/// command runner on the copy, sharing the cache (and so this machine's chain head).
fn copy_repo(r: &TestRepo, name: &str) -> PathBuf {
    let dst = r.dir.path().join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&r.repo)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

fn check_copy(r: &TestRepo, repo: &Path) -> Output {
    r.cmd(&["--json", "check"])
        .env("VAULT_REPOSITORY", repo)
        .output()
        .unwrap()
}

fn check_errors(out: &Output) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["object"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_audit_trail_records_every_change_and_read_and_check_detects_tampering() {
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("src"), 5);
    let id = r.snapshot(&[&src]);
    let target = r.scratch("restored");
    // A password given as a command: it must not reach the audit record.
    let pw_cmd = format!("cat {}", r.password_file.display());
    let out = r
        .cmd(&[
            "--password-command",
            &pw_cmd,
            "restore",
            "--snapshot",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .env_remove("VAULT_PASSWORD_FILE")
        .output()
        .unwrap();
    assert_success(&out, &["restore"]);
    r.ok(&["dump", "latest", src.join("doc001.txt").to_str().unwrap()]);
    r.ok(&["hold", "latest", "--reason", "case 9"]);
    r.ok(&["release", "latest"]);
    r.ok(&["check"]);
    r.ok(&["snapshots"]); // listing is not audited
    let log = audit_log(&r);
    let commands: Vec<&str> = log.iter().map(|e| e["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "init", "snapshot", "restore", "dump", "hold", "release", "check"
        ],
        "{log:?}"
    );
    for e in &log {
        assert_eq!(e["exit_code"], 0);
        assert!(!e["hostname"].as_str().unwrap().is_empty());
    }
    assert_eq!(log[1]["snapshots"][0], id.as_str());
    assert_eq!(log[2]["snapshots"][0], id.as_str());
    assert!(log[2]["bytes"].as_u64().unwrap() > 0);
    let args = log[2]["args"].to_string();
    assert!(
        args.contains("--password-command") && !args.contains("cat "),
        "{args}"
    );
    // One chain, in order.
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    for w in log.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["id"]);
    }
    // A failed command is recorded with its error.
    let out = r.run(&[
        "restore",
        "--snapshot",
        "ffffffff",
        "--target",
        "/nonexistent",
    ]);
    assert_exit(&out, 1);
    let log = audit_log(&r);
    let last = log.last().unwrap();
    assert_eq!(
        (last["command"].as_str(), last["exit_code"].as_u64()),
        (Some("restore"), Some(1))
    );
    assert!(!last["error"].as_str().unwrap().is_empty());
    // The intact trail checks out, and there is nothing to repair.
    assert!(check_errors(&check_copy(&r, &r.repo)).is_empty());
    let v = r.json(&["repair", "audit", "--dry-run"]);
    assert_eq!(v["removed"], serde_json::json!([]));
    assert_eq!(v["acknowledged"], serde_json::json!([]));
    let log = audit_log(&r);

    let record = |repo: &Path, i: usize| repo.join("audit").join(log[i]["id"].as_str().unwrap());
    // Deleted in the middle.
    let c = copy_repo(&r, "deleted");
    std::fs::remove_file(record(&c, 3)).unwrap();
    let out = check_copy(&r, &c);
    assert_exit(&out, 1);
    let e = check_errors(&out);
    assert!(
        e.iter()
            .any(|(o, m)| o.contains(log[4]["id"].as_str().unwrap()) && m.contains("missing")),
        "{e:?}"
    );
    // Altered (one bit).
    let c = copy_repo(&r, "altered");
    let p = record(&c, 2);
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&p, b).unwrap();
    let e = check_errors(&check_copy(&r, &c));
    assert!(
        e.iter()
            .any(|(o, _)| o.contains(log[2]["id"].as_str().unwrap())),
        "{e:?}"
    );
    // Reordered: two records' contents swapped under each other's names.
    let c = copy_repo(&r, "reordered");
    let (a, b) = (record(&c, 4), record(&c, 5));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bb).unwrap();
    std::fs::write(&b, ba).unwrap();
    let e = check_errors(&check_copy(&r, &c));
    assert!(e.len() >= 2, "{e:?}");
    // The newest record deleted: this machine knows its chain's head.
    let c = copy_repo(&r, "newest");
    std::fs::remove_file(record(&c, log.len() - 1)).unwrap();
    let e = check_errors(&check_copy(&r, &c));
    assert!(e.iter().any(|(_, m)| m.contains("newest")), "{e:?}");

    // After a known loss, `repair audit` removes what cannot be read and puts every break on
    // record: check passes again, and the log says what was lost.
    for name in ["deleted", "altered", "reordered", "newest"] {
        let c = r.dir.path().join(name);
        let out = r
            .cmd(&["--json", "repair", "audit"])
            .env("VAULT_REPOSITORY", &c)
            .output()
            .unwrap();
        assert_success(&out, &["repair audit", name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["record"].is_string(), "{name}: {v}");
        let out = check_copy(&r, &c);
        assert_success(&out, &["check after repair audit", name]);
        let log = r
            .cmd(&["--json", "log", "--command", "repair"])
            .env("VAULT_REPOSITORY", &c)
            .output()
            .unwrap();
        let log: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
        assert!(
            log.as_array().unwrap().iter().any(|e| !e["acknowledged"]
                .as_array()
                .unwrap()
                .is_empty()
                || e["summary"].as_str().unwrap().contains("removed")),
            "{name}: {log}"
        );
    }
}

#[test]
fn prune_keeps_audit_records_within_the_retention_and_the_trail_stays_valid() {
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("src"), 3);
    r.snapshot(&[&src]);
    r.snapshot(&[&src]);
    let before = audit_log(&r).len();
    // The default retention (7 years) removes nothing.
    r.ok(&["prune", "--keep-last", "5"]);
    assert_eq!(audit_log(&r).len(), before + 1);
    // A retention of zero removes every record older than now, after recording that it does.
    let out = r.json(&["prune", "--keep-last", "5", "--audit-retention", "0h"]);
    assert_eq!(out["audit_records_removed"], (before + 1) as u64, "{out}");
    let log = audit_log(&r);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["command"], "prune");
    assert_eq!(log[0]["truncations"][0]["through_seq"], before as u64);
    assert_eq!(log[1]["command"], "prune");
    // The truncated chain is not reported as tampering.
    r.ok(&["check"]);
    // --since filters.
    let later = r.json(&["log", "--since", "2999-01-01"]);
    assert_eq!(later.as_array().unwrap().len(), 0);
}

#[test]
fn restore_verify_and_restore_tests_prove_what_was_restored() {
    use std::os::unix::fs::PermissionsExt;
    let r = TestRepo::new();
    let src = text_tree(&r.scratch("src"), 12);
    std::fs::write(src.join("big.bin"), pseudo_random(3 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("doc001.txt", src.join("link")).unwrap();
    // A sparse file: its hole must read back as zeros.
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(5 << 20).unwrap();
    drop(sparse);
    let id = r.snapshot(&[&src]);
    let target = r.scratch("t");
    let v = r.json(&[
        "restore",
        "--snapshot",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(v["verify"]["files"], 14, "{v}");
    assert_eq!(v["verify"]["mismatches"], serde_json::json!([]));
    assert!(v["verify"]["bytes"].as_u64().unwrap() > 8 << 20);

    // The comparison itself finds every kind of difference (library, on the restored tree).
    let repo = r.library();
    let snap = repo
        .load_snapshot(&vault::id::SnapshotId::from_hex(&id).unwrap())
        .unwrap();
    let restored = target.join(src.strip_prefix("/").unwrap());
    let mut b = std::fs::read(restored.join("big.bin")).unwrap();
    b[2 << 20] ^= 0x40;
    std::fs::write(restored.join("big.bin"), b).unwrap();
    std::fs::remove_file(restored.join("doc003.txt")).unwrap();
    std::fs::set_permissions(
        restored.join("doc004.txt"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::remove_file(restored.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", restored.join("link")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(restored.join("sparse"))
        .unwrap();
    use std::io::{Seek, Write};
    f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    std::fs::write(restored.join("doc005.txt"), "short").unwrap();
    let opts = vault::restorer::RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let report =
        vault::restorer::verify_restore(&repo, &snap.tree, &opts, &Default::default()).unwrap();
    let mut found: Vec<(String, String)> = report
        .mismatches
        .iter()
        .map(|m| {
            (
                m.path.rsplit('/').next().unwrap().to_string(),
                m.error.clone(),
            )
        })
        .collect();
    found.sort();
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "big.bin",
            "doc003.txt",
            "doc004.txt",
            "doc005.txt",
            "link",
            "sparse"
        ],
        "{found:?}"
    );
    assert!(found[0].1.contains("content differs"), "{found:?}");
    assert!(found[1].1.contains("missing"), "{found:?}");
    assert!(found[2].1.contains("permissions"), "{found:?}");
    assert!(found[5].1.contains("hole"), "{found:?}");
    drop(repo);

    // check --restore-test: everything, then a sample; the scratch directory is removed.
    let scratch = r.dir.path().join("restore-test");
    let v = r.json(&[
        "check",
        "--restore-test",
        "--restore-test-target",
        scratch.to_str().unwrap(),
    ]);
    assert_eq!(v["restore_test"]["ok"], true, "{v}");
    assert_eq!(v["restore_test"]["verify"]["files"], 14);
    assert!(!scratch.exists());
    let v = r.json(&["check", "--restore-test", "--restore-test-sample", "50%"]);
    let files = v["restore_test"]["verify"]["files"].as_u64().unwrap();
    assert!(files < 14, "{v}");
    assert_eq!(v["restore_test"]["ok"], true);
    // A target with something in it is refused before anything is restored or removed.
    let busy = r.scratch("busy");
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let out = r.run(&[
        "check",
        "--restore-test",
        "--restore-test-target",
        busy.to_str().unwrap(),
    ]);
    assert_exit(&out, 1);
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );
    // A damaged data pack makes the restore test fail, and says where.
    let pack = walkdir(&r.repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let out = r.run(&["--json", "check", "--restore-test"]);
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["restore_test"]["ok"], false, "{v}");
    assert!(
        !v["restore_test"]["restore"]["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The audit trail has the restore tests.
    let log = audit_log(&r);
    assert!(
        log.iter()
            .any(|e| e["command"] == "check"
                && e["summary"].as_str().unwrap().contains("restore test")),
        "{log:?}"
    );
}

/// The alert rules in the README are valid and fire when they should (`promtool test rules`).
#[test]
fn the_readme_alert_rules_pass_promtool() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- alert-rules -->\n```yaml\n").unwrap() + 28;
    let end = readme[start..].find("```\n<!-- /alert-rules -->").unwrap() + start;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), &readme[start..end]).unwrap();
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("promtool is installed (./test.sh installs the prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    };
    promtool(&["check", "rules", "rules.yml"]);
    let l = r#"profile="db",host="h",repository="/r""#;
    let tests = format!(
        r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'vault_snapshot_last_success_timestamp_seconds{{{l}}}'
        values: '0x1700'
      - series: 'vault_snapshot_last_success_timestamp_seconds{{profile="fresh",host="h",repository="/r"}}'
        values: '90000x1700'
      - series: 'vault_snapshot_exit_code{{{l}}}'
        values: '0 0 1 1 4 4'
      - series: 'vault_snapshot_anomaly{{{l},kind="shrank"}}'
        values: '0 0 0 0 1 1'
      - series: 'vault_prune_success{{{l}}}'
        values: '1 1 0 0'
      - series: 'vault_check_restore_test_success{{{l}}}'
        values: '1 0'
    alert_rule_test:
      - eval_time: 27h
        alertname: VaultBackupMissing
        exp_alerts:
          - exp_labels: {{severity: critical, profile: db, host: h, repository: /r}}
            exp_annotations:
              summary: "vault db on h: no successful backup for 26 hours"
      - eval_time: 1m
        alertname: VaultBackupFailed
        exp_alerts: []
      - eval_time: 3m
        alertname: VaultBackupFailed
        exp_alerts:
          - exp_labels: {{severity: critical, profile: db, host: h, repository: /r}}
            exp_annotations:
              summary: "vault db on h: the last backup failed (exit code 1)"
      - eval_time: 5m
        alertname: VaultBackupFailed
        exp_alerts: []
      - eval_time: 5m
        alertname: VaultBackupAnomaly
        exp_alerts:
          - exp_labels: {{severity: warning, profile: db, host: h, repository: /r, kind: shrank}}
            exp_annotations:
              summary: "vault db on h: the last backup looks wrong (shrank)"
      - eval_time: 3m
        alertname: VaultCommandFailed
        exp_alerts:
          - exp_labels: {{severity: warning, profile: db, host: h, repository: /r}}
            exp_annotations:
              summary: "vault db on h: vault_prune_success is 0"
      - eval_time: 1m
        alertname: VaultRestoreTestFailed
        exp_alerts:
          - exp_labels: {{severity: critical, profile: db, host: h, repository: /r}}
            exp_annotations:
              summary: "vault db: the restore test failed"
"#
    );
    std::fs::write(dir.path().join("tests.yml"), tests).unwrap();
    promtool(&["test", "rules", "tests.yml"]);
}

/// A command that waits for this host's audit chain (another audited command holds it) dates
/// its record once it holds the chain, never before: otherwise its record could be dated
/// before the one it follows, which `check` reports as reordering (found by
/// failclosed::check_beside_running_snapshots_finds_no_damage).
#[test]
fn an_audit_record_is_dated_when_its_command_holds_the_chain() {
    use std::os::unix::fs::MetadataExt;
    let r = TestRepo::new();
    let d = r.scratch("d");
    std::fs::write(d.join("f"), b"x").unwrap();
    r.snapshot(&[&d]);
    let writer = walkdir(&r.cache)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "audit-writer"))
        .unwrap();
    let held = std::fs::File::open(&writer).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut child = r
        .cmd(&["check"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The kernel lists a process waiting for a lock as `->` on the file's inode.
    let inode = format!(":{} ", writer.metadata().unwrap().ino());
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&inode))
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "check ended without waiting"
        );
        std::thread::yield_now();
    }
    let released = vault::format::time::Timestamp::now();
    drop(held);
    assert!(child.wait().unwrap().success());
    let repo = r.library();
    let newest = repo
        .list_audit_ids()
        .unwrap()
        .iter()
        .map(|id| repo.load_audit(id).unwrap())
        .max_by_key(|a| a.seq)
        .unwrap();
    assert_eq!(newest.command, "check");
    assert!(
        newest.time >= released,
        "dated {:?}, before it held the chain ({released:?})",
        newest.time
    );
}
