#!/usr/bin/env bash
# Runs vault, restic and borg on the same data on this machine and prints medians and ratios;
# writes benches/RESULTS.md. Installs restic and borg from the distribution if missing, and
# PostgreSQL (for the dumps). Data sets are built once under $BENCH_DIR (default
# /var/tmp/vault-bench, ~5 GB; the runs need ~15 GB more).
#   benches/compare.sh [--runs 3] [--files 100000] [--tree-bytes 2147483648] [--big-bytes 2147483648]
set -euo pipefail
cd "$(dirname "$0")/.."
VAULT_DEPS_TESTS=1 source ./deps.sh
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
command -v /usr/bin/time >/dev/null || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  _sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive _sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build -q --bins
exec python3 benches/compare.py "$@"
