#!/usr/bin/env python3
"""vault vs pgBackRest on one PostgreSQL cluster (issue 14), side by side, same machine.

Measures: per-segment archive-push latency (median, p95) and the sequential archive rate it
implies; base backup time and size on the first day and on following days (after pgbench load);
repository size after a week of daily backups; restore-to-a-time total time (restore, start,
replay, promote).

Run as root (PostgreSQL and both tools run as the postgres user):
    python3 benches/pitr.py [WORKDIR]      # SCALE=20 DAYS=7 SEGS=40 by default
    VAULT_INIT_ARGS="--chunk-avg 64KiB" …  # other chunk sizes for the vault repository
Needs: postgresql, pgbackrest (apt), vault built with `cargo build`.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

W = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/vault-pitr-bench"
SCALE = int(os.environ.get("SCALE", "20"))
DAYS = int(os.environ.get("DAYS", "7"))
SEGS = int(os.environ.get("SEGS", "40"))
DAY_TX = int(os.environ.get("DAY_TX", "3000"))
# pgbench (uniformly random updates: the worst case for deduplication) or shop (the schema of
# tests/pg.rs: appended orders and events, recent orders updated, a few customers edited, old
# events deleted: how most application databases change).
WORKLOAD = os.environ.get("WORKLOAD", "pgbench")
SHOP_ROWS = int(os.environ.get("SHOP_ROWS", "1000000"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAULT = os.path.join(ROOT, "target/debug/vault")
PGBIN = sorted(
    os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")
)[-1]
PORT = 55477
ENV = {
    "PATH": os.environ["PATH"],
    "VAULT_REPOSITORY": f"{W}/vault-repo",
    "VAULT_PASSWORD_FILE": f"{W}/pw",
    "VAULT_CACHE_DIR": f"{W}/vault-cache",
    "PGHOST": "127.0.0.1",
    "PGPORT": str(PORT),
    "PGUSER": "postgres",
    "HOME": W,
}
PBR = ["pgbackrest", f"--config={W}/pgbackrest.conf", "--stanza=bench"]


def run(cmd, check=True, ok=(0,), **kw):
    full = ["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in ENV.items()], *cmd]
    r = subprocess.run(full, capture_output=True, text=True, **kw)
    if check and r.returncode not in ok:
        raise SystemExit(f"{cmd}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def timed(cmd, ok=(0,)):
    t = time.monotonic()
    run(cmd, ok=ok)
    return time.monotonic() - t


def sql(q, port=PORT):
    return run([f"{PGBIN}/psql", "-X", "-q", "-A", "-t", "-p", str(port), "-d", "postgres", "-c", q]).stdout.strip()


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except FileNotFoundError:
                pass
    return total


def pg_ctl(data, what, log=None):
    args = [f"{PGBIN}/pg_ctl", "-D", data, "-w", "-t", "600"]
    if log:
        args += ["-l", log]
    if what == "stop":
        args += ["-m", "fast"]
    run(args + [what])


def wait_promoted(port):
    for _ in range(6000):
        if sql("SELECT pg_is_in_recovery()", port) == "f":
            return
        time.sleep(0.05)
    raise SystemExit("recovery did not finish")


def switch_and_wait():
    sql("CREATE TABLE IF NOT EXISTS w (i int); INSERT INTO w VALUES (1)")
    seg = sql("SELECT pg_walfile_name(pg_switch_wal())")
    for _ in range(6000):
        last = sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last and last >= seg:
            return
        time.sleep(0.05)
    raise SystemExit("archiving stalled")


def shop_init():
    n = SHOP_ROWS
    sql(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, address text, created timestamptz);"
        "CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, status text, total numeric(12,2), created timestamptz);"
        "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind text, payload jsonb);"
        f"INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com', i || ' Long Street, Springfield', now() - (i || ' minutes')::interval FROM generate_series(1, {n // 5}) i;"
        f"INSERT INTO orders SELECT i, 1 + (i::bigint * 7919) % {n // 5}, 'delivered', (i % 997) * 1.25, now() - (({n} - i) || ' seconds')::interval FROM generate_series(1, {n}) i;"
        f"INSERT INTO events (at, kind, payload) SELECT now() - (({n} - i) || ' seconds')::interval, 'page_view', jsonb_build_object('session', md5(i::text), 'path', '/product/' || (i % 5000)) FROM generate_series(1, {n * 3 // 2}) i;"
    )


def shop_day(day):
    n, base = SHOP_ROWS, SHOP_ROWS + (day - 1) * (SHOP_ROWS // 70)
    new = SHOP_ROWS // 70
    sql(
        f"INSERT INTO orders SELECT i, 1 + (i::bigint * 7919) % {n // 5}, 'new', (i % 997) * 1.25, now() FROM generate_series({base + 1}, {base + new}) i;"
        f"UPDATE orders SET status = 'shipped' WHERE id > {base - new // 3} AND id <= {base};"
        f"INSERT INTO events (at, kind, payload) SELECT now(), 'checkout', jsonb_build_object('session', md5(i::text)) FROM generate_series(1, {2 * new}) i;"
        f"UPDATE customers SET address = 'moved ' || id || ' on day {day}' WHERE id % 4000 = {day};"
        f"DELETE FROM events WHERE id <= {day * new};"
    )


def load_day(day):
    if WORKLOAD == "shop":
        shop_day(day)
    else:
        run([f"{PGBIN}/pgbench", "-t", str(DAY_TX), "-c", "2", "postgres"])


def fingerprint():
    if WORKLOAD == "shop":
        return sql("SELECT count(*) || ':' || sum(total) FROM orders")
    return sql("SELECT sum(abalance) FROM pgbench_accounts")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    for d in [f"{W}/data"]:
        if os.path.exists(f"{d}/postmaster.pid"):
            run([f"{PGBIN}/pg_ctl", "-D", d, "-m", "immediate", "stop"], check=False)
    shutil.rmtree(W, ignore_errors=True)
    os.makedirs(f"{W}/segs")
    with open(f"{W}/pw", "w") as f:
        f.write("bench password\n")
    shutil.chown(W, "postgres")
    for p in ["segs", "pw"]:
        shutil.chown(f"{W}/{p}", "postgres")
    run([f"{PGBIN}/initdb", "-D", f"{W}/data", "-U", "postgres", "--auth=trust", "--no-sync"])
    # Phase 1: collect real segments (archive_command copies them aside).
    with open(f"{W}/data/postgresql.conf", "a") as f:
        f.write(
            f"port = {PORT}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{W}'\n"
            f"archive_mode = on\narchive_command = 'cp %p {W}/segs/%f'\nwal_level = replica\n"
            "max_wal_size = 4GB\n"
        )
    pg_ctl(f"{W}/data", "start", f"{W}/pg.log")
    run([f"{PGBIN}/pgbench", "-i", "-s", str(SCALE), "-q", "postgres"])
    if WORKLOAD == "shop":
        shop_init()
    while len([s for s in os.listdir(f"{W}/segs") if len(s) == 24]) < SEGS + 2:
        run([f"{PGBIN}/pgbench", "-t", "2000", "-c", "2", "postgres"])
        switch_and_wait()
    segs = sorted(s for s in os.listdir(f"{W}/segs") if len(s) == 24)[:SEGS]
    # Repositories: vault with the recommended host key (cheap KDF: the password file is on
    # the host anyway), pgBackRest with encryption and zstd, both local.
    run([VAULT, "init", "--kdf-memory", "8MiB", "--kdf-iterations", "1",
         *os.environ.get("VAULT_INIT_ARGS", "").split()])
    with open(f"{W}/pgbackrest.conf", "w") as f:
        f.write(
            f"[global]\nrepo1-path={W}/pbr-repo\nrepo1-cipher-type=aes-256-cbc\n"
            f"repo1-cipher-pass=benchpass\nrepo2-path={W}/pbr-repo2\nrepo2-cipher-type=aes-256-cbc\n"
            f"repo2-cipher-pass=benchpass\ncompress-type=zst\nlog-level-console=warn\n"
            f"log-path={W}\nlock-path={W}/pbr-lock\nspool-path={W}/pbr-spool\nstart-fast=y\n"
            f"archive-check=y\n\n[bench]\npg1-path={W}/data\npg1-port={PORT}\npg1-socket-path={W}\n"
        )
    shutil.chown(f"{W}/pgbackrest.conf", "postgres")
    run(PBR + ["stanza-create"])
    # Phase 2: archive-push latency, one process per segment, as PostgreSQL calls it.
    lat = {"vault": [], "pgbackrest": []}
    for s in segs:
        p = f"{W}/segs/{s}"
        lat["vault"].append(timed([VAULT, "wal", "push", p]))
        lat["pgbackrest"].append(timed(PBR + ["archive-push", p]))
    seg_mib = os.path.getsize(f"{W}/segs/{segs[0]}") / 2**20
    # Phase 3: daily base backups; both tools archive every segment.
    with open(f"{W}/data/postgresql.conf", "a") as f:
        f.write(
            f"archive_command = '{VAULT} wal push %p && pgbackrest --config={W}/pgbackrest.conf "
            "--stanza=bench archive-push %p'\n"
        )
    run([f"{PGBIN}/pg_ctl", "-D", f"{W}/data", "reload"])
    days = []
    for day in range(1, DAYS + 1):
        if day > 1:
            load_day(day)
        switch_and_wait()
        # Exit 4: saved, but flagged by the anomaly checks (a day that rewrote much more).
        tv = timed([VAULT, "pg", "backup"], ok=(0, 4))
        # repo 1: a full backup every day (self-contained, like each vault snapshot);
        # repo 2: one full, then incrementals (a restore needs the chain).
        tp = timed(PBR + ["backup", "--repo=1", "--type=full"])
        ti = timed(PBR + ["backup", "--repo=2", "--type=incr"])
        days.append(
            {
                "day": day,
                "vault_s": tv,
                "pgbackrest_full_s": tp,
                "pgbackrest_incr_s": ti,
                "vault_repo": du(f"{W}/vault-repo") - du(f"{W}/vault-repo/wal"),
                "pgbackrest_full_daily_repo": du(f"{W}/pbr-repo/backup"),
                "pgbackrest_full_then_incr_repo": du(f"{W}/pbr-repo2/backup"),
            }
        )
        print(json.dumps(days[-1]), flush=True)
    # Phase 4: restore to a time (after the last day's load, before more writes).
    load_day(DAYS + 1)
    target = sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    )
    finger = fingerprint()
    load_day(DAYS + 2)
    switch_and_wait()
    pg_ctl(f"{W}/data", "stop")
    restore = {}
    for tool in ["vault", "pgbackrest"]:
        dest = f"{W}/restore-{tool}"
        os.makedirs(dest, mode=0o700)
        shutil.chown(dest, "postgres")
        t = time.monotonic()
        if tool == "vault":
            run([VAULT, "pg", "restore", "--target", dest, "--as-of", target])
        else:
            pt = target.replace("T", " ").replace("Z", "+00")
            run(PBR + ["restore", "--repo=1", f"--pg1-path={dest}", "--type=time",
                       f"--target={pt}", "--target-action=promote"])
        with open(f"{dest}/postgresql.conf", "a") as f:
            f.write("archive_mode = off\n")
        pg_ctl(dest, "start", f"{W}/{tool}-restore.log")
        wait_promoted(PORT)
        restore[tool] = time.monotonic() - t
        got = fingerprint()
        pg_ctl(dest, "stop")
        assert got == finger, f"{tool} restored {got}, expected {finger}"
    out = {
        "workload": WORKLOAD,
        "scale": SCALE,
        "db_bytes": du(f"{W}/data/base"),
        "segments": SEGS,
        "segment_mib": seg_mib,
        "push_median_s": {k: statistics.median(v) for k, v in lat.items()},
        "push_p95_s": {k: pct(v, 95) for k, v in lat.items()},
        "days": days,
        "restore_to_time_s": restore,
        "wal_archive_bytes": {"vault": du(f"{W}/vault-repo/wal"), "pgbackrest": du(f"{W}/pbr-repo/archive")},
        "archive_rate_mib_s": {k: seg_mib / statistics.median(v) for k, v in lat.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
