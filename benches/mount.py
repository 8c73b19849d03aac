#!/usr/bin/env python3
"""Reads the middle 1 MiB of a 2 GiB file through `vault mount` and records how many bytes
the mount fetched from the repository (it must read only the blobs that hold that range).

    python3 benches/mount.py [--work /var/tmp/vault-bench]

Writes the "mount" block of benches/RESULTS.md (between <!-- mount --> markers)."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import compare  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/var/tmp/vault-bench"))
    a = ap.parse_args()
    big = os.path.join(a.work, "big.bin")
    if not os.path.exists(big):
        compare.build_big(big, 2 << 30)
    size = os.path.getsize(big)
    base = os.path.join(a.work, "mount-bench")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    t = compare.Vault(base)
    subprocess.run(t.init(), env=t.env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(t.backup(big), env=t.env, check=True)
    repo_bytes = compare.du(t.repo)
    mnt = os.path.join(base, "mnt")
    os.makedirs(mnt)
    p = subprocess.Popen([compare.VAULT, "--json", "mount", mnt], env=t.env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    while not os.path.exists(os.path.join(mnt, "snapshots")):
        time.sleep(0.05)
    inside = os.path.join(mnt, "snapshots", "latest", big.lstrip("/"))
    middle = size // 2
    t0 = time.monotonic()
    with open(inside, "rb") as f:
        f.seek(middle)
        data = f.read(1 << 20)
    elapsed = time.monotonic() - t0
    with open(big, "rb") as f:
        f.seek(middle)
        assert f.read(1 << 20) == data, "the mount served different bytes"
    p.send_signal(signal.SIGINT)
    stats = json.loads(p.communicate()[0])
    shutil.rmtree(base, ignore_errors=True)
    block = (
        f"| file | range read | bytes fetched from the backend | blobs | time | repository |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {size / 2**30:.2f} GiB | 1 MiB at {middle / 2**30:.2f} GiB | {stats['bytes_fetched'] / 2**20:.2f} MiB "
        f"| {stats['blobs_loaded']} | {elapsed * 1000:.0f} ms | {repo_bytes / 2**30:.2f} GiB |\n\n"
        "Command: `python3 benches/mount.py` (the read goes through the kernel's FUSE read-ahead).\n")
    print(block)
    compare.replace_block(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "mount", "mount", block)


if __name__ == "__main__":
    main()
