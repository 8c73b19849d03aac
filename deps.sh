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
  # Real storage servers for the backend tests: SFTP (OpenSSH), WebDAV (rclone), and the
  # tools the S3 (moto, PyPI) and Azure (Azurite, npm) servers are installed with below.
  [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
  command -v rclone >/dev/null 2>&1 || need_pkgs+=(rclone)
  command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
  command -v npm >/dev/null 2>&1 || need_pkgs+=(nodejs npm)
  command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3 python3-venv)
  # Metrics are checked with the real tools: promtool (package prometheus) validates the
  # textfile format, and pushes go to a real Pushgateway.
  command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
  command -v prometheus-pushgateway >/dev/null 2>&1 || need_pkgs+=(prometheus-pushgateway)
  # vault mount is tested over real FUSE.
  command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1 || need_pkgs+=(fuse3)
  # The anomaly tests encrypt files in place the way ransomware does.
  command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${need_pkgs[*]}" >&2
  _sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive _sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if [ "${VAULT_DEPS_TESTS:-0}" = 1 ]; then
  # Pinned server versions, in a directory of their own (tests look there first).
  tools="${VAULT_TEST_TOOLS:-/opt/vault-test-tools}"
  _sudo mkdir -p "$tools"
  if [ ! -x "$tools/venv/bin/moto_server" ]; then
    echo "deps: installing moto[server] into $tools/venv" >&2
    _sudo python3 -m venv "$tools/venv"
    _sudo "$tools/venv/bin/pip" install --quiet 'moto[server]==5.2.1'
  fi
  if [ ! -x "$tools/node_modules/.bin/azurite-blob" ]; then
    echo "deps: installing azurite into $tools" >&2
    (cd "$tools" && _sudo npm install --silent --no-audit --no-fund azurite@3.35.0 >/dev/null)
  fi
  export VAULT_TEST_TOOLS="$tools"
fi
command -v cargo >/dev/null 2>&1 || { echo "deps: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
