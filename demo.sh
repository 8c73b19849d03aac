#!/usr/bin/env bash
# One command on a fresh machine: install build dependencies, build vault, and run the main job
# end to end on real data: init a repository in a temporary directory, snapshot a real directory
# (default /usr/share/doc), list, snapshot again (incremental), restore, compare, verify.
set -euo pipefail
cd "$(dirname "$0")"
source ./deps.sh
cargo build --bins
SRC="${1:-/usr/share/doc}"
VAULT="$PWD/target/debug/vault"
WORK="$(mktemp -d /tmp/vault-demo.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export VAULT_REPOSITORY="$WORK/repo" VAULT_CACHE_DIR="$WORK/cache" VAULT_PASSWORD_FILE="$WORK/password"
head -c 24 /dev/urandom | base64 > "$VAULT_PASSWORD_FILE"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "init a repository in $VAULT_REPOSITORY"
"$VAULT" init
step "snapshot $SRC"
"$VAULT" snapshot --tag demo "$SRC"
step "snapshot again (nothing changed: nothing is read, nothing stored but a manifest)"
"$VAULT" snapshot --tag demo "$SRC"
step "list snapshots"
"$VAULT" snapshots
step "restore the latest snapshot and compare with the source"
"$VAULT" restore --snapshot latest --target "$WORK/restore"
diff -r --no-dereference "$SRC" "$WORK/restore$SRC"
echo "restored tree is identical to $SRC"
if "$VAULT" help check >/dev/null 2>&1; then
  step "verify every byte of the repository"
  "$VAULT" check --verify-data
fi
step "repository size"
du -sh "$SRC" "$VAULT_REPOSITORY"
