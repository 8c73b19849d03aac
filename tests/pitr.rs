//! Point-in-time recovery for PostgreSQL (issue 14): a real cluster archives its WAL with
//! `vault wal push`, `vault pg backup` takes base backups, and `vault pg restore --as-of`
//! brings back exactly the state at a chosen moment: markers committed before it exist, those
//! after do not, and pgbench's tables match a fingerprint taken at that moment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::pg::{as_server_user, free_port, pg_bin, psql, uid_of};
use crate::support::*;

/// A cluster archiving to a vault repository, everything owned by the server user.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    /// `vault` as the server user, with this cluster's repository, password and cache.
    fn vault(&self, args: &[&str]) -> Command {
        let mut c = as_server_user(Path::new(vault_bin()));
        c.args(args)
            .env("VAULT_REPOSITORY", self.root().join("repo"))
            .env("VAULT_PASSWORD_FILE", self.root().join("pw"))
            .env("VAULT_CACHE_DIR", self.root().join("cache"))
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("TMPDIR", self.root())
            .env_remove("VAULT_PASSWORD")
            .stdin(Stdio::null());
        c
    }

    fn vault_ok(&self, args: &[&str]) -> String {
        let out = self.vault(args).output().unwrap();
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new cluster whose archive_command runs `archive` (a shell snippet given %p).
    fn start(archive_wrapper: bool) -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("vault-pitr-")
            .tempdir()
            .unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(uid_of("postgres")), None).unwrap();
        }
        let c = Cluster {
            dir,
            bin,
            port: free_port(),
        };
        std::fs::write(c.root().join("pw"), "pitr password\n").unwrap();
        if is_root() {
            std::os::unix::fs::chown(c.root().join("pw"), Some(uid_of("postgres")), None).unwrap();
        }
        c.vault_ok(&["init", "--kdf-memory", "8MiB", "--kdf-iterations", "1"]);
        let st = as_server_user(&c.bin.join("initdb"))
            .args([
                "-D",
                c.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ])
            .args(["--no-sync"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        // The archive command: vault with the repository in its environment; optionally
        // through a wrapper that kills vault (SIGKILL after its write) once per marker file.
        let env = format!(
            "VAULT_REPOSITORY={} VAULT_PASSWORD_FILE={} VAULT_CACHE_DIR={}",
            c.root().join("repo").display(),
            c.root().join("pw").display(),
            c.root().join("cache").display()
        );
        let archive = if archive_wrapper {
            let w = c.root().join("archive.sh");
            std::fs::write(
                &w,
                format!(
                    "#!/bin/sh\nif [ -e {kill} ]; then rm -f {kill}; export VAULT_FAULTS=kill_after_mutations=1; fi\nexport {env}\nexec {vault} wal push \"$1\"\n",
                    kill = c.root().join("kill-next-push").display(),
                    vault = vault_bin()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            format!("{} %p", w.display())
        } else {
            format!("{env} {} wal push %p", vault_bin())
        };
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n\
             archive_mode = on\narchive_command = '{archive}'\nwal_level = replica\nfsync = off\n",
            port = c.port,
            root = c.root().display()
        );
        let mut pgconf = std::fs::read_to_string(c.data().join("postgresql.conf")).unwrap();
        pgconf.push_str(&conf);
        std::fs::write(c.data().join("postgresql.conf"), pgconf).unwrap();
        c.pg_ctl(&c.data(), "start");
        c
    }

    fn pg_ctl(&self, data: &Path, what: &str) {
        let mut cmd = as_server_user(&self.bin.join("pg_ctl"));
        cmd.args(["-D", data.to_str().unwrap(), "-w", "-t", "120"]);
        if what == "start" {
            cmd.arg("-l").arg(data.with_extension("log"));
        } else {
            cmd.args(["-m", "fast"]);
        }
        let st = cmd.arg(what).stdout(Stdio::null()).status().unwrap();
        assert!(
            st.success(),
            "pg_ctl {what} {}: {}",
            data.display(),
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
    }

    fn sql_on(&self, port: u16, sql: &str) -> String {
        psql(&self.bin, port, "postgres", sql)
    }

    fn sql(&self, sql: &str) -> String {
        self.sql_on(self.port, sql)
    }

    fn pgbench(&self, args: &[&str]) {
        let st = Command::new(self.bin.join("pgbench"))
            .args(args)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "pgbench {args:?}");
    }

    /// Switches to a new WAL segment and waits (a bounded poll on the server's own counter,
    /// not a sleep) until the finished one is archived.
    fn switch_and_archive(&self) {
        // A switch on an idle server does nothing: write something first.
        self.sql("CREATE TEMP TABLE IF NOT EXISTS w (i int); INSERT INTO w VALUES (1)");
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        for _ in 0..600 {
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if last.as_str() >= seg.as_str() && !last.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "segment {seg} was never archived: {}",
            self.sql("SELECT * FROM pg_stat_archiver")
        );
    }

    fn fingerprint_on(&self, port: u16) -> String {
        self.sql_on(
            port,
            "SELECT count(*) || ':' || sum(abalance) || ':' || md5(string_agg(aid || '=' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts",
        )
    }

    /// Restores into a fresh directory and starts a second server there; returns its port.
    fn restore_and_start(&self, name: &str, how: &[&str]) -> (PathBuf, u16) {
        let target = self.root().join(name);
        let mut args = vec!["pg", "restore", "--target", target.to_str().unwrap()];
        args.extend_from_slice(how);
        self.vault_ok(&args);
        let port = free_port();
        let conf = target.join("postgresql.conf");
        let text = std::fs::read_to_string(&conf)
            .unwrap()
            .replace(&format!("port = {}", self.port), &format!("port = {port}"))
            // The restored server must not archive into the same repository.
            .replace("archive_mode = on", "archive_mode = off");
        std::fs::write(&conf, text).unwrap();
        self.pg_ctl(&target, "start");
        // pg_ctl returns once read-only connections are accepted, during recovery: wait (a
        // bounded poll of the server's own state) until recovery ended and it promoted.
        for _ in 0..1200 {
            if self.sql_on(port, "SELECT pg_is_in_recovery()") == "f" {
                return (target, port);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "recovery did not finish: {}",
            std::fs::read_to_string(target.with_extension("log")).unwrap_or_default()
        );
    }

    /// A timestamp the server gives now (after everything it already committed).
    fn now(&self) -> String {
        self.sql(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in std::fs::read_dir(self.root())
            .into_iter()
            .flatten()
            .flatten()
        {
            if d.path().join("PG_VERSION").exists() {
                let _ = as_server_user(&self.bin.join("pg_ctl"))
                    .args(["-D", d.path().to_str().unwrap(), "-m", "immediate", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn point_in_time_recovery_to_between_two_markers() {
    let c = Cluster::start(true);
    c.sql("CREATE TABLE marker (n int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    c.pgbench(&["-i", "-s", "2"]);
    c.sql("INSERT INTO marker (n) VALUES (1)");
    c.switch_and_archive();
    // A base backup killed halfway leaves nothing usable and nothing broken.
    let out = c
        .vault(&["pg", "backup"])
        .env("VAULT_FAULTS", "kill_after_mutations=2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the killed backup should fail");
    let v: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "pg", "backup"])).unwrap();
    assert!(
        v["label"].as_str().unwrap().ends_with(".vault-backup"),
        "{v}"
    );
    // A day's work, with a push killed right after its write: PostgreSQL retries it.
    c.pgbench(&["-t", "300"]);
    std::fs::write(c.root().join("kill-next-push"), "").unwrap();
    c.sql("INSERT INTO marker (n) VALUES (2)");
    c.switch_and_archive();
    assert!(
        !c.root().join("kill-next-push").exists(),
        "the kill never happened"
    );
    let target = c.now();
    let fingerprint = c.fingerprint_on(c.port);
    c.pgbench(&["-t", "300"]);
    c.sql("INSERT INTO marker (n) VALUES (3)");
    c.switch_and_archive();
    // The archive is complete: no gap, every file verified.
    let check: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "wal", "check"])).unwrap();
    assert_eq!(check["gaps"], serde_json::json!([]), "{check}");
    assert_eq!(check["damaged"], serde_json::json!([]), "{check}");
    // Restore to the moment between marker 2 and marker 3.
    let (dir, port) = c.restore_and_start("restored", &["--as-of", &target]);
    assert_eq!(
        c.sql_on(
            port,
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM marker"
        ),
        "1,2"
    );
    assert_eq!(c.fingerprint_on(port), fingerprint);
    c.pg_ctl(&dir, "stop");
    // And to the end of the archive.
    let (dir, port) = c.restore_and_start("latest", &["--latest"]);
    assert_eq!(
        c.sql_on(
            port,
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM marker"
        ),
        "1,2,3",
        "{}",
        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
    );
    c.pg_ctl(&dir, "stop");
    // Retention: a second base backup, then keep only it; the WAL before its start goes, the
    // rest stays whole, and an old target is now refused.
    let v: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "pg", "backup"])).unwrap();
    let start2 = v["start_wal"].as_str().unwrap().to_string();
    c.vault_ok(&["prune", "--keep-last", "1"]);
    let listed: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "wal", "check"])).unwrap();
    let names: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .filter(|n| !n.ends_with(".history"))
            .all(|n| n[8..24] >= start2[8..24]),
        "{names:?} (start {start2})"
    );
    assert!(names.iter().any(|n| n.starts_with(&start2)), "{names:?}");
    let err = failed(
        &c.vault(&[
            "pg",
            "restore",
            "--target",
            c.root().join("too-old").to_str().unwrap(),
            "--as-of",
            &target,
        ])
        .output()
        .unwrap(),
    );
    assert!(err.contains("before the oldest base backup"), "{err}");
    // Times outside the archive are refused with the range.
    for t in ["2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
        let target = c.root().join("refused");
        let err = failed(
            &c.vault(&[
                "pg",
                "restore",
                "--target",
                target.to_str().unwrap(),
                "--as-of",
                t,
            ])
            .output()
            .unwrap(),
        );
        assert!(err.contains("available:"), "{err}");
        assert!(!target.exists());
    }
}

#[test]
fn archive_command_contract() {
    let c = Cluster::start(false);
    c.switch_and_archive();
    let files: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "wal", "list"])).unwrap();
    let name = files["files"][0]["name"].as_str().unwrap().to_string();
    let scratch = c.root().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&scratch, Some(uid_of("postgres")), None).unwrap();
    }
    // Fetch writes the archived bytes; pushing them again is fine (identical).
    let copy = scratch.join(&name);
    c.vault_ok(&["wal", "fetch", &name, copy.to_str().unwrap()]);
    c.vault_ok(&["wal", "push", copy.to_str().unwrap()]);
    // The same name with other content is refused loudly and changes nothing.
    let mut other = std::fs::read(&copy).unwrap();
    other[100] ^= 0xff;
    std::fs::write(&copy, &other).unwrap();
    let err = failed(
        &c.vault(&["wal", "push", copy.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(err.contains("different content"), "{err}");
    let again = scratch.join("again");
    c.vault_ok(&["wal", "fetch", &name, again.to_str().unwrap()]);
    assert_ne!(std::fs::read(&again).unwrap(), other);
    // A file that is not archived: non-zero, nothing written (recovery ends there).
    let missing = scratch.join("missing");
    let out = c
        .vault(&[
            "wal",
            "fetch",
            "0000000100000000000000FE",
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(!missing.exists());
    // Names that are not WAL file names are refused before anything is written.
    let bad = scratch.join("..weird");
    std::fs::write(&bad, b"x").unwrap();
    let out = c
        .vault(&["wal", "push", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A gap is reported (exit 1, metric) when a segment goes missing from the archive.
    c.switch_and_archive();
    c.switch_and_archive();
    let listed: serde_json::Value =
        serde_json::from_str(&c.vault_ok(&["--json", "wal", "list"])).unwrap();
    let segs: Vec<String> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(c.root().join("repo/wal").join(&segs[1])).unwrap();
    let out = c.vault(&["--json", "wal", "check"]).output().unwrap();
    assert_exit(&out, 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gaps"][0]["first_missing"], segs[1].as_str(), "{v}");
    // A damaged archived file is named by `vault check --verify-data` too.
    c.vault_ok(&["check", "--verify-data"]);
    let victim = c.root().join("repo/wal").join(&segs[2]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let out = c.vault(&["check", "--verify-data"]).output().unwrap();
    assert_exit(&out, 1);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&format!("WAL file {}", segs[2])), "{text}");
}
