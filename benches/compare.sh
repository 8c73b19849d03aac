#!/usr/bin/env bash
# Runs vault, restic and borg (and with --tools also bupstash and rustic) on the same data on
# this machine and prints medians and ratios; writes benches/RESULTS.md. Installs restic and borg
# from the distribution if missing, bupstash and rustic with cargo, and PostgreSQL (for the
# dumps). `--cold` drops the page cache before every timed step (root). Data sets are built once under $BENCH_DIR (default
# /var/tmp/vault-bench, ~5 GB; the runs need ~15 GB more).
#   benches/compare.sh [--runs 3] [--files 100000] [--tree-bytes 2147483648] [--big-bytes 2147483648]
set -euo pipefail
cd "$(dirname "$0")/.."
VAULT_DEPS_TESTS=1 source ./deps.sh
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
command -v /usr/bin/time >/dev/null || missing+=(time)
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libsodium-dev >/dev/null 2>&1 || missing+=(libsodium-dev)
if [ ${#missing[@]} -gt 0 ]; then
  _sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive _sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
case " $* " in *bupstash*) command -v bupstash >/dev/null || cargo install --locked bupstash ;; esac
case " $* " in *rustic*) command -v rustic >/dev/null || cargo install --locked rustic-rs ;; esac
cargo build -q --bins
exec python3 benches/compare.py "$@"
