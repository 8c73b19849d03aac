#!/usr/bin/env python3
"""diff of two snapshots of the benchmark tree with 1 % of the files changed, against the
time of an unchanged re-snapshot (the bound the issue sets), vault vs restic vs borg.

    python3 benches/diff.py [--runs 3] [--work /var/tmp/vault-bench] [--no-borg]

Uses the tree compare.py builds (`tree-src` under the work directory); prints medians and
writes the "diff" block of benches/RESULTS.md (between <!-- diff --> markers)."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import compare  # noqa: E402  (the tools, the tree builder and the timer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/var/tmp/vault-bench"))
    ap.add_argument("--no-borg", action="store_true")
    a = ap.parse_args()
    src = os.path.join(a.work, "tree-src")
    if not os.path.exists(src + ".done"):
        compare.build_tree(src, 100_000, 2 << 30)
    tree = os.path.join(a.work, "diff-tree")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["cp", "-a", src, tree], check=True)
    tools = [compare.Vault, compare.Restic] + ([] if a.no_borg else [compare.Borg])
    rows = []
    for cls in tools:
        base = os.path.join(a.work, f"diff-{cls.name}")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        t = cls(base)
        subprocess.run(t.init(), env=t.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        compare.timed(t, t.backup(tree))
        first = t.n if cls is compare.Borg else None
        unchanged = [compare.timed(t, t.backup(tree))[0] for _ in range(a.runs)]
        changed = compare.change_one_percent(tree, 7 + len(rows))
        compare.timed(t, t.backup(tree))
        last = t.n if cls is compare.Borg else None
        if cls is compare.Vault:
            ids = subprocess.run([compare.VAULT, "--json", "snapshots"], env=t.env, check=True,
                                 stdout=subprocess.PIPE).stdout
            import json
            snaps = json.loads(ids)
            argv = [compare.VAULT, "diff", snaps[0]["id"], snaps[-1]["id"]]
        elif cls is compare.Restic:
            ids = subprocess.run(["restic", "snapshots", "--json"], env=t.env, check=True,
                                 stdout=subprocess.PIPE).stdout
            import json
            snaps = json.loads(ids)
            argv = ["restic", "diff", snaps[0]["short_id"], snaps[-1]["short_id"]]
        else:
            argv = ["borg", "diff", f"{t.repo}::a{first}", f"a{last}"]
        diffs = [compare.timed(t, argv) for _ in range(a.runs)]
        rows.append((cls.name, statistics.median(d[0] for d in diffs),
                     statistics.median(d[2] for d in diffs) / 1024,
                     statistics.median(unchanged), changed))
        shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    lines = ["| tool | diff, 1 % changed (s) | peak RSS (MiB) | unchanged re-snapshot (s) | diff / re-snapshot |",
             "|---|---|---|---|---|"]
    for name, d, rss, u, _ in rows:
        lines.append(f"| {name} | {d:.2f} | {rss:.0f} | {u:.2f} | {d / u:.2f} |")
    v = rows[0][1]
    others = ", ".join(f"{n} {d / v:.1f}× vault's time" for n, d, *_ in rows[1:])
    block = "\n".join(lines) + (f"\n\nFiles changed: {rows[0][4]}; medians of {a.runs} runs; {others}.\n"
                                "Command: `python3 benches/diff.py --runs %d`.\n" % a.runs)
    print(block)
    compare.replace_block(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "diff", "diff", block)


if __name__ == "__main__":
    main()
