//! Database dumps: a real PostgreSQL server, `pg_dump` piped into vault, a day's writes, a
//! second dump that mostly deduplicates, and `vault dump latest … | psql` restoring it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::*;

/// A throwaway PostgreSQL cluster on 127.0.0.1, stopped on drop.
pub struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

pub fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (./test.sh installs it)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server binary directory")
}

/// Runs a server-side program, as the `postgres` user when we are root.
pub fn as_server_user(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// Initialises and starts a cluster.
    pub fn start() -> Pg {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("vault-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(uid_of("postgres")), None).unwrap();
        }
        let st = as_server_user(&bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "initdb failed");
        let port = free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        let st = as_server_user(&bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "pg_ctl start failed");
        Pg {
            _dir: dir,
            data,
            bin,
            port,
        }
    }

    /// A client command (psql, pg_dump, …) connected to this server.
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    /// Runs SQL in `db`, returning stdout (unaligned, tuples only).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        psql(&self.bin, self.port, db, sql)
    }

    /// The pg_dump command line for `db`, for `--stdin-from-command`.
    pub fn dump_argv(&self, db: &str) -> Vec<String> {
        vec![
            self.bin.join("pg_dump").display().to_string(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            db.into(),
        ]
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs SQL in `db` of the server on 127.0.0.1:`port` as `postgres`, returning stdout
/// (unaligned, tuples only); fails the test on an SQL error.
pub fn psql(bin: &std::path::Path, port: u16, db: &str, sql: &str) -> String {
    let out = Command::new(bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "postgres")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .expect("user exists")
        .uid
        .as_raw()
}

/// A small shop: customers, orders, order lines and an event log.
pub const SCHEMA: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, address text, created timestamptz);
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, status text, total numeric(12,2), created timestamptz);
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind text, payload jsonb);
INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com', i || ' Long Street, Springfield', now() - (i || ' minutes')::interval FROM generate_series(1, 40000) i;
INSERT INTO orders SELECT i, 1 + (i * 7919) % 40000, 'delivered', (i % 997) * 1.25, now() - ((200000 - i) || ' seconds')::interval FROM generate_series(1, 200000) i;
INSERT INTO events (at, kind, payload) SELECT now() - ((300000 - i) || ' seconds')::interval, 'page_view', jsonb_build_object('session', md5(i::text), 'path', '/product/' || (i % 5000)) FROM generate_series(1, 300000) i;
";

/// A day's writes: new orders and events appended, recent orders updated, a few customers edited.
pub const DAY_OF_WRITES: &str = "
INSERT INTO orders SELECT i, 1 + (i * 7919) % 40000, 'new', (i % 997) * 1.25, now() FROM generate_series(200001, 203000) i;
UPDATE orders SET status = 'shipped' WHERE id > 199000 AND id <= 200000;
INSERT INTO events (at, kind, payload) SELECT now(), 'checkout', jsonb_build_object('session', md5(i::text)) FROM generate_series(1, 6000) i;
UPDATE customers SET address = 'moved ' || id WHERE id % 4000 = 0;
DELETE FROM events WHERE id <= 3000;
";

fn checksums(pg: &Pg, db: &str) -> String {
    ["customers", "orders", "events"]
        .iter()
        .map(|t| {
            pg.sql(
                db,
                &format!(
                    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM {t} t"
                ),
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn pg_dump_round_trip_and_incremental_dedup() {
    let pg = Pg::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql("shop", SCHEMA);
    let r = TestRepo::with_init(&["--kdf-memory", "1MiB", "--kdf-iterations", "1"]);
    let snap = |r: &TestRepo| -> serde_json::Value {
        let mut args = vec![
            "snapshot".to_string(),
            "--stdin-from-command".into(),
            "--stdin-name".into(),
            "shop.sql".into(),
            "--".into(),
        ];
        args.extend(pg.dump_argv("shop"));
        let mut a = vec!["--json"];
        a.extend(args.iter().map(String::as_str));
        r.json(&a[1..]).clone()
    };
    let first = snap(&r);
    let size1 = first["summary"]["total_bytes"].as_u64().unwrap();
    assert!(size1 > 20 << 20, "dump is only {size1} bytes");
    pg.sql("shop", DAY_OF_WRITES);
    let expected = checksums(&pg, "shop");
    let second = snap(&r);
    let size2 = second["summary"]["total_bytes"].as_u64().unwrap();
    let added = second["summary"]["bytes_added"].as_u64().unwrap();
    let fraction = added as f64 / size2 as f64;
    eprintln!(
        "pg_dump: {size2} bytes, second dump added {added} bytes ({:.1}%)",
        fraction * 100.0
    );
    assert!(
        fraction < 0.25,
        "second dump stored {:.1}% of its size",
        fraction * 100.0
    );

    // Restore: vault dump latest shop.sql | psql
    pg.sql("postgres", "CREATE DATABASE restored");
    let mut dump = r
        .cmd(&["dump", "latest", "shop.sql"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = pg
        .client("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "restored"])
        .stdin(dump.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(st.success(), "psql could not load the restored dump");
    assert_eq!(checksums(&pg, "restored"), expected);
}
