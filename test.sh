#!/usr/bin/env bash
# One command on a fresh machine: install what the tests need (build dependencies, PostgreSQL
# for dump round trips, S3/Azure/SFTP/WebDAV servers for the backend tests), then run formatting, lints and the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"
VAULT_DEPS_TESTS=1 source ./deps.sh
cargo fmt --all -- --check
# The fault-injection feature compiles the test-only machinery (VAULT_FAULTS) into the binary
# the tests run; release builds never have it. Lint both builds.
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features fault-injection -- -D warnings
cargo test --all-targets --features fault-injection
