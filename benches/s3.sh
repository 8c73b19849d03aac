#!/usr/bin/env bash
# Snapshot throughput to a local S3 server (moto) against the same snapshot to a local
# directory, alternating, fresh repositories each run; prints medians and the ratio.
#   benches/s3.sh [DATA_DIR] [RUNS]
# Needs `./deps.sh` with VAULT_DEPS_TESTS=1 (moto) and a built target/debug/vault.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-/var/tmp/vault-bench/tree}"
runs="${2:-3}"
vault="${VAULT_BIN:-$PWD/target/debug/vault}"
tools="${VAULT_TEST_TOOLS:-/opt/vault-test-tools}"
moto="$tools/venv/bin/moto_server"
[ -x "$moto" ] || moto="$(command -v moto_server)"
work="$(mktemp -d /var/tmp/vault-s3-bench.XXXXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -s "http://127.0.0.1:$port" >/dev/null && break; sleep 0.1; done
curl -sS -X PUT "http://127.0.0.1:$port/bench" >/dev/null
export VAULT_PASSWORD=bench AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
size=$(du -sb "$data" | cut -f1)
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
fs_times=(); s3_times=()
for i in $(seq "$runs"); do
  for kind in fs s3; do
    if [ $kind = fs ]; then repo="$work/repo-$i"; else repo="s3:bench/run-$i"; fi
    export VAULT_CACHE_DIR="$work/cache-$kind-$i"
    "$vault" -q -r "$repo" init >/dev/null
    sync
    t=$(timeit "$vault" -q -r "$repo" snapshot "$data")
    if [ $kind = fs ]; then fs_times+=("$t"); rm -rf "$repo"; else s3_times+=("$t"); fi
    echo "run $i $kind: ${t}s" >&2
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mf=$(median "${fs_times[@]}"); ms=$(median "${s3_times[@]}")
echo "data: $data ($((size / 1048576)) MiB); runs: $runs"
echo "local directory: median ${mf}s ($(echo "$size / $mf / 1048576" | bc) MiB/s)"
echo "S3 (moto on 127.0.0.1): median ${ms}s ($(echo "$size / $ms / 1048576" | bc) MiB/s)"
echo "ratio S3/local: $(echo "scale=2; $ms / $mf" | bc)"
