#!/usr/bin/env bash
# Measures deduplication, compression and memory for several chunk-size settings on two
# pg_dumps (before/after a day's writes) and /usr/share/doc. Results: docs/decisions.md (D12).
# Usage: benches/chunk-sizes.sh        (from the repository root; needs PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/pg.sh
cargo build -q --bins
V="$PWD/target/debug/vault"
W=$(mktemp -d /tmp/vault-chunks.XXXXXX); trap 'pg_stop; rm -rf "$W"' EXIT
pg_start "$W"; make_dumps "$W"; ls -l "$W"/dump*.sql
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['summary']; print(' '.join(str(d[k]) for k in sys.argv[2:]))" "$@"; }
for p in "128KiB 256KiB 2MiB" "256KiB 512KiB 4MiB" "512KiB 1MiB 8MiB" "1MiB 2MiB 8MiB"; do
  set -- $p; R="$W/r"; rm -rf "$R"; mkdir -p "$R"; echo pw > "$R/pw"
  export VAULT_REPOSITORY=$R/repo VAULT_PASSWORD_FILE=$R/pw VAULT_CACHE_DIR=$R/cache
  "$V" init --kdf-memory 1MiB --kdf-iterations 1 --chunk-min $1 --chunk-avg $2 --chunk-max $3 >/dev/null
  rss=$( { /usr/bin/time -f "%M" "$V" --json snapshot --stdin --stdin-name db.sql < "$W/dump1.sql" > "$R/o1"; } 2>&1 )
  "$V" --json snapshot --stdin --stdin-name db.sql < "$W/dump2.sql" > "$R/o2"
  "$V" --json snapshot /usr/share/doc > "$R/o3"
  echo "chunks $1/$2/$3: dump1 stored $(field "$R/o1" bytes_stored); dump2 added raw/stored $(field "$R/o2" bytes_added bytes_stored); doc stored $(field "$R/o3" bytes_stored); dump1 peak RSS ${rss} KiB"
done
