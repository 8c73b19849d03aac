#!/usr/bin/env bash
# Installs what building and testing vault needs from the system. Sourced by demo.sh and test.sh.
# Idempotent: only installs what is missing. Debian/Ubuntu (apt-get); run as root or with sudo.
set -euo pipefail

_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
# RocksDB's bindings are generated with bindgen, which needs libclang; its C++ needs a compiler.
command -v clang >/dev/null 2>&1 || need_pkgs+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
if [ "${VAULT_DEPS_TESTS:-0}" = 1 ]; then
  # Tests run real PostgreSQL dumps, and compare retention policies with the real restic.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
  command -v restic >/dev/null 2>&1 || need_pkgs+=(restic)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${need_pkgs[*]}" >&2
  _sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive _sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "deps: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
