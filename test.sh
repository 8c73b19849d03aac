#!/usr/bin/env bash
# One command on a fresh machine: install what the tests need (build dependencies, PostgreSQL
# for dump round trips, S3/Azure/SFTP/WebDAV servers for the backend tests), then run formatting, lints and the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"
VAULT_DEPS_TESTS=1 source ./deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
