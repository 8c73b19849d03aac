#!/usr/bin/env bash
# Helpers for the benchmark scripts: a throwaway PostgreSQL cluster and the two shop dumps
# (before and after a day's writes) built from tests/pg.rs's schema, scaled by $SCALE.
# Source it; then: pg_start DIR; make_dumps DIR; pg_stop.

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
_pg_run() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_start() {
  PG_DIR="$1/pg"; mkdir -p "$PG_DIR"; chmod 755 "$1"; [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
  # A scratch cluster: one left by an interrupted run is stopped and started afresh.
  if [ -d "$PG_DIR/data" ]; then
    _pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR/data"
  fi
  _pg_run "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --no-sync >/dev/null
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  _pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR -c fsync=off" start >/dev/null
  export PGHOST=127.0.0.1 PGPORT PGUSER=postgres
}

pg_stop() { _pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true; }

# make_dumps DIR: writes DIR/dump1.sql and DIR/dump2.sql.
make_dumps() {
  local dir="$1" scale="${SCALE:-5}"
  python3 - "$scale" "$dir" "$(dirname "${BASH_SOURCE[0]}")/../tests/pg.rs" <<'PY'
import re, sys
scale, out, rs = int(sys.argv[1]), sys.argv[2], sys.argv[3]
src = open(rs).read()
schema = re.search(r'pub const SCHEMA: &str = "(.*?)";', src, re.S).group(1)
day = re.search(r'pub const DAY_OF_WRITES: &str = "(.*?)";', src, re.S).group(1)
def s(n): return str(n * scale)
schema = (schema.replace('(i * 7919)', '(i::bigint * 7919)')
    .replace('generate_series(1, 40000)', 'generate_series(1, ' + s(40000) + ')').replace('% 40000', '% ' + s(40000))
    .replace('(200000 - i)', '(' + s(200000) + ' - i)').replace('generate_series(1, 200000)', 'generate_series(1, ' + s(200000) + ')')
    .replace('(300000 - i)', '(' + s(300000) + ' - i)').replace('generate_series(1, 300000)', 'generate_series(1, ' + s(300000) + ')'))
day = (day.replace('(i * 7919)', '(i::bigint * 7919)').replace('% 40000', '% ' + s(40000))
    .replace('generate_series(200001, 203000)', 'generate_series(' + str(200000 * scale + 1) + ', ' + str(200000 * scale + 3000 * scale) + ')')
    .replace('id > 199000 AND id <= 200000', 'id > ' + str(200000 * scale - 1000 * scale) + ' AND id <= ' + s(200000))
    .replace('generate_series(1, 6000)', 'generate_series(1, ' + s(6000) + ')').replace('id % 4000', 'id % ' + s(4000))
    .replace('id <= 3000', 'id <= ' + s(3000)))
open(out + '/schema.sql', 'w').write(schema); open(out + '/day.sql', 'w').write(day)
PY
  psql -q -X -c "DROP DATABASE IF EXISTS shop" -c "CREATE DATABASE shop"
  psql -q -X -v ON_ERROR_STOP=1 -d shop -f "$dir/schema.sql"
  "$PG_BIN/pg_dump" shop > "$dir/dump1.sql"
  psql -q -X -v ON_ERROR_STOP=1 -d shop -f "$dir/day.sql"
  "$PG_BIN/pg_dump" shop > "$dir/dump2.sql"
}
