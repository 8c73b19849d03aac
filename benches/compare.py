#!/usr/bin/env python3
"""End-to-end comparison of vault, restic and borg on the same data, same machine, one run.

Data sets (built once under --work, from real files on this machine):
  tree/    ~100k files / ~2 GB copied from /usr (and, if /usr is small, other system dirs)
  big.bin  ~2 GB single file mixing binary (.so), text and already-compressed (.gz/.xz/...) data
  dump1.sql, dump2.sql  pg_dumps of a real PostgreSQL database before and after a day's writes

Per tool and run, in a fresh repository with encryption and compression on:
  snapshot tree; snapshot big file; unchanged re-snapshot of the tree; re-snapshot after ~1 %
  of the files changed; snapshot dump1 then dump2 (growth); full restore of the tree (verified
  identical); check --verify-data.
Each step records wall time, CPU time (user+sys) and peak RSS (/usr/bin/time), and the
repository size. Medians over --runs runs; ratios vault/restic and vault/borg.
"""

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAULT = os.environ.get("VAULT_BIN", os.path.join(ROOT, "target", "debug", "vault"))
PASSWORD = "benchmark password"


def replace_block(path, name, heading, block):
    """Writes `block` between the `<!-- name -->` markers of `path`, or appends a section
    with `heading` and the markers when they are not there yet."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + block + text[text.index(end):]
    else:
        text += f"\n## {heading}\n\n{start}\n{block}{end}\n"
    open(path, "w").write(text)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def du(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- data sets

def build_tree(dst, files_goal, bytes_goal):
    if os.path.exists(dst + ".done"):
        return
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    sources = ["/usr/share", "/usr/lib", "/usr/include", "/usr/bin", "/usr/sbin", "/usr/libexec",
               "/usr/src", "/usr/local", os.path.expanduser("~/.cargo/registry/src"), "/etc", "/opt"]
    n, size = 0, 0
    for src in sources:
        for dp, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(dp, "/")
            for f in sorted(files):
                p = os.path.join(dp, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not (os.path.isfile(p) and not os.path.islink(p)) or st.st_size > 3 << 20:
                    continue
                d = os.path.join(dst, rel)
                os.makedirs(d, exist_ok=True)
                try:
                    shutil.copy2(p, os.path.join(d, f))
                except OSError:
                    continue
                n += 1
                size += st.st_size
                if n >= files_goal and size >= bytes_goal:
                    break
            if n >= files_goal and size >= bytes_goal:
                break
        if n >= files_goal and size >= bytes_goal:
            break
    open(dst + ".done", "w").write(f"{n} {size}\n")


def build_big(dst, goal):
    if os.path.exists(dst) and os.path.getsize(dst) >= goal:
        return
    kinds = {"binary": [], "text": [], "compressed": []}
    for dp, _, files in os.walk("/usr"):
        for f in files:
            p = os.path.join(dp, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            if f.endswith((".gz", ".xz", ".bz2", ".zst", ".png", ".jpg", ".zip", ".jar", ".whl")):
                kinds["compressed"].append(p)
            elif ".so" in f or f.endswith((".a", ".o")):
                kinds["binary"].append(p)
            elif f.endswith((".txt", ".py", ".h", ".c", ".rs", ".html", ".md", ".xml", ".json", ".pm", ".rst")):
                kinds["text"].append(p)
    rnd = random.Random(42)
    for v in kinds.values():
        rnd.shuffle(v)
    per_kind = goal // 3 + 1
    with open(dst + ".tmp", "wb") as out:
        written = {k: 0 for k in kinds}
        idx = {k: 0 for k in kinds}
        while sum(written.values()) < goal:
            k = rnd.choice(list(kinds))
            if written[k] >= per_kind or not kinds[k]:
                if all(written[x] >= per_kind or not kinds[x] for x in kinds):
                    idx = {x: 0 for x in kinds}
                    per_kind += goal // 3
                continue
            p = kinds[k][idx[k] % len(kinds[k])]
            idx[k] += 1
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            out.write(data)
            written[k] += len(data)
    os.replace(dst + ".tmp", dst)


def build_dumps(work):
    if os.path.exists(os.path.join(work, "dump2.sql")):
        return
    sh(f'bash -c \'set -e; source "{ROOT}/benches/pg.sh"; pg_start "{work}"; '
       f'trap pg_stop EXIT; SCALE=${{SCALE:-5}} make_dumps "{work}"\'')


def change_one_percent(tree, run):
    files = []
    for dp, dirs, fs in os.walk(tree):
        dirs.sort()
        for f in sorted(fs):
            files.append(os.path.join(dp, f))
    changed = 0
    for p in files[run::100]:
        with open(p, "ab") as fh:
            fh.write(b"changed in run %d\n" % run)
        changed += 1
    return changed


# ---------------------------------------------------------------- tools

class Tool:
    name = ""

    def __init__(self, base):
        self.base = base
        self.repo = os.path.join(base, "repo")
        self.env = dict(os.environ)

    def cmd(self, args):
        raise NotImplementedError


class Vault(Tool):
    name = "vault"

    def __init__(self, base):
        super().__init__(base)
        self.env.update(VAULT_REPOSITORY=self.repo, VAULT_PASSWORD=PASSWORD,
                        VAULT_CACHE_DIR=os.path.join(base, "cache"))

    def init(self):
        return [VAULT, "init"]

    def backup(self, path):
        return [VAULT, "snapshot", "-q", path]

    def backup_stdin(self, name):
        return [VAULT, "snapshot", "-q", "--stdin", "--stdin-name", name]

    def restore(self, target, include):
        return [VAULT, "restore", "-q", "--snapshot", "latest", "--path", include, "--target", target]

    def restore_file(self, target, path):
        return self.restore(target, path), None, target + path

    def check(self):
        return [VAULT, "check", "--verify-data"]


class Restic(Tool):
    name = "restic"

    def __init__(self, base):
        super().__init__(base)
        self.env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD=PASSWORD,
                        RESTIC_CACHE_DIR=os.path.join(base, "cache"))

    def init(self):
        return ["restic", "init", "--repository-version", "2"]

    def backup(self, path):
        return ["restic", "backup", "-q", "--compression", "auto", path]

    def backup_stdin(self, name):
        return ["restic", "backup", "-q", "--compression", "auto", "--stdin", "--stdin-filename", name]

    def restore(self, target, include):
        return ["restic", "restore", "latest", "--path", include, "--target", target]

    def restore_file(self, target, path):
        return self.restore(target, path), None, target + path

    def check(self):
        return ["restic", "check", "--read-data"]


class Borg(Tool):
    name = "borg"

    def __init__(self, base):
        super().__init__(base)
        self.n = 0
        self.env.update(BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=os.path.join(base, "home"),
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def archive(self):
        self.n += 1
        return f"{self.repo}::a{self.n}"

    def init(self):
        return ["borg", "init", "-e", "repokey-blake2", self.repo]

    def backup(self, path):
        return ["borg", "create", "--compression", "zstd,3", self.archive(), path]

    def backup_stdin(self, name):
        return ["borg", "create", "--compression", "zstd,3", "--stdin-name", name, self.archive(), "-"]

    def restore(self, target, include):
        # borg extracts into the current directory; paths are stored without the leading slash.
        return ["borg", "extract", f"{self.repo}::a{self.tree_archive}", include.lstrip("/")]

    def restore_file(self, target, path):
        # The big file is the second archive.
        return ["borg", "extract", f"{self.repo}::a2", path.lstrip("/")], target, target + path

    def check(self):
        return ["borg", "check", "--verify-data", self.repo]


class Bupstash(Tool):
    """bupstash (cargo install bupstash): no verify-data command; restores by id."""
    name = "bupstash"

    def __init__(self, base):
        super().__init__(base)
        self.key = os.path.join(base, "key")
        self.env.update(BUPSTASH_REPOSITORY=self.repo, BUPSTASH_KEY=self.key,
                        BUPSTASH_QUERY_CACHE=os.path.join(base, "query-cache"),
                        BUPSTASH_SEND_LOG=os.path.join(base, "send-log"))

    def init(self):
        subprocess.run(["bupstash", "new-key", "-o", self.key], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        return ["bupstash", "init"]

    def backup(self, path):
        return ["bupstash", "put", "-q", "--no-progress", path]

    def backup_stdin(self, name):
        return ["bupstash", "put", "-q", "--no-progress", f"name={name}", "-"]

    def latest_tree_id(self):
        out = subprocess.run(["bupstash", "list", "--format=jsonl1", "name=tree.tar"], env=self.env,
                             check=True, stdout=subprocess.PIPE).stdout.decode().splitlines()
        items = [json.loads(l) for l in out if l.strip()]
        items.sort(key=lambda i: i.get("unix_timestamp_millis", 0))
        return items[-1]["id"]

    def restore(self, target, include):
        dest = target + include
        os.makedirs(dest, exist_ok=True)
        return ["bupstash", "restore", "--into", dest, f"id={self.latest_tree_id()}"]

    def restore_file(self, target, path):
        out = subprocess.run(["bupstash", "list", "--format=jsonl1", f"name={os.path.basename(path)}"],
                             env=self.env, check=True, stdout=subprocess.PIPE).stdout.decode().splitlines()
        item = [json.loads(l) for l in out if l.strip()][-1]["id"]
        dest = os.path.join(target, os.path.basename(path))
        return ["sh", "-c", f'exec bupstash get id={item} > "{dest}"'], None, dest

    def check(self):
        return None


class Rustic(Tool):
    """rustic (cargo install rustic-rs): restic's format, its own engine."""
    name = "rustic"

    def __init__(self, base):
        super().__init__(base)
        self.env.update(RUSTIC_REPOSITORY=self.repo, RUSTIC_PASSWORD=PASSWORD,
                        RUSTIC_CACHE_DIR=os.path.join(base, "cache"))

    def init(self):
        return ["rustic", "init"]

    def backup(self, path):
        return ["rustic", "backup", "--no-progress", path]

    def backup_stdin(self, name):
        return ["rustic", "backup", "--no-progress", "--stdin-filename", name, "-"]

    def restore(self, target, include):
        dest = target + include
        os.makedirs(dest, exist_ok=True)
        return ["rustic", "restore", "--no-progress", "--filter-paths", include,
                f"latest:{include}", dest]

    def restore_file(self, target, path):
        dest = target + path
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        return ["rustic", "restore", "--no-progress", "--filter-paths", path,
                f"latest:{path}", dest], None, dest

    def check(self):
        return ["rustic", "check", "--read-data", "--no-progress"]


def drop_caches():
    """Empties the page cache (root only), as a nightly job meets the data."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


COLD = False


def timed(tool, argv, stdin=None, cwd=None):
    """Runs argv under /usr/bin/time; returns (wall, cpu, peak_rss_kib)."""
    if COLD:
        drop_caches()
    else:
        # The previous step's dirty pages are written back before this one starts: otherwise
        # the step that follows a large write pays for it (a process that dirties memory is
        # throttled into writing back), whoever caused it.
        subprocess.run(["sync"])
    fmt = "%e %U %S %M"
    with open(os.path.join(tool.base, "time.out"), "w+") as tf:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-o", tf.name, "-f", fmt] + argv, env=tool.env,
                           stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
        wall = time.monotonic() - t0
        if p.returncode not in (0, 1) or (p.returncode == 1 and tool.name != "borg"):
            raise RuntimeError(f"{tool.name}: {' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
        tf.seek(0)
        parts = tf.read().split()[-4:]
    return wall, float(parts[1]) + float(parts[2]), int(parts[3])


def same_tree(a, b):
    r = subprocess.run(["diff", "-r", "--no-dereference", "-q", a, b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0, r.stdout.decode()[:2000]


STEPS = ["first snapshot: tree", "first snapshot: big file", "unchanged re-snapshot: tree",
         "re-snapshot after 1% changed", "second dump", "full restore: tree",
         "full restore: big file", "check --verify-data"]


def run_tool(cls, work):
    base = os.path.join(work, f"run-{cls.name}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    tool = cls(base)
    tree, big = os.path.join(work, "tree"), os.path.join(work, "big.bin")
    res = {}
    subprocess.run(tool.init(), env=tool.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res["first snapshot: tree"] = timed(tool, tool.backup(tree)) + (du(tool.repo),)
    if cls is Borg:
        tool.tree_archive = tool.n
    res["first snapshot: big file"] = timed(tool, tool.backup(big)) + (du(tool.repo),)
    res["unchanged re-snapshot: tree"] = timed(tool, tool.backup(tree)) + (du(tool.repo),)
    return tool, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/var/tmp/vault-bench"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--tree-bytes", type=int, default=2 << 30)
    ap.add_argument("--big-bytes", type=int, default=2 << 30)
    ap.add_argument("--tools", default="vault,restic,borg")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before every timed step (root)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    a = ap.parse_args()
    global COLD
    COLD = a.cold
    os.makedirs(a.work, exist_ok=True)
    print("building data sets in", a.work, flush=True)
    build_tree(os.path.join(a.work, "tree-src"), a.files, a.tree_bytes)
    build_big(os.path.join(a.work, "big.bin"), a.big_bytes)
    build_dumps(a.work)
    tools = [{"vault": Vault, "restic": Restic, "borg": Borg, "bupstash": Bupstash,
              "rustic": Rustic}[t] for t in a.tools.split(",")]
    has_check = subprocess.run([VAULT, "help", "check"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    results = {cls.name: {s: [] for s in STEPS} for cls in tools}
    limits = {k: [] for k in LIMITS}
    for run in range(a.runs):
        for k, v in measure_limits(a.work).items():
            limits[k].append(v)
        order = tools[run % len(tools):] + tools[:run % len(tools)]
        for cls in order:
            # A fresh copy of the tree per tool and run, so that every tool sees the same changes.
            tree = os.path.join(a.work, "tree")
            shutil.rmtree(tree, ignore_errors=True)
            sh(f'cp -a "{a.work}/tree-src" "{tree}"')
            print(f"run {run + 1}/{a.runs}: {cls.name}", flush=True)
            tool, res = run_tool(cls, a.work)
            change_one_percent(tree, run)
            res["re-snapshot after 1% changed"] = timed(tool, tool.backup(tree)) + (du(tool.repo),)
            with open(os.path.join(a.work, "dump1.sql"), "rb") as f:
                timed(tool, tool.backup_stdin("shop.sql"), stdin=f)
            before = du(tool.repo)
            with open(os.path.join(a.work, "dump2.sql"), "rb") as f:
                w, c, m = timed(tool, tool.backup_stdin("shop.sql"), stdin=f)
            res["second dump"] = (w, c, m, du(tool.repo) - before)
            target = os.path.join(tool.base, "restore")
            os.makedirs(target)
            # A fresh tmpfs per restore, when root: on the shared ext4 the benchmark keeps
            # deleting 125k-file trees, and ext4's inode allocator then dominates every tool's
            # restore time (measured with perf: find_inode_bit/recently_deleted).
            tmpfs = os.geteuid() == 0 and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8g", "vault-bench", target]).returncode == 0
            if cls is Borg:
                # The changed tree is the latest archive holding the tree.
                tool.tree_archive = tool.n - 2
                argv = tool.restore(target, tree)
                res["full restore: tree"] = timed(tool, argv, cwd=target) + (0,)
            else:
                res["full restore: tree"] = timed(tool, tool.restore(target, tree)) + (0,)
            ok, diff = same_tree(tree, target + tree)
            if tmpfs:
                subprocess.run(["umount", target], check=True)
            if not ok:
                raise RuntimeError(f"{cls.name} restore differs from the source:\n{diff}")
            res["full restore: big file"] = restore_big(tool, os.path.join(a.work, "big.bin")) + (0,)
            if (cls is not Vault or has_check) and tool.check() is not None:
                res["check --verify-data"] = timed(tool, tool.check()) + (0,)
            for s, v in res.items():
                results[cls.name][s].append(v)
            shutil.rmtree(tool.base, ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
    report(a, results, limits)


LIMITS = ["parallel read of the tree (cat, 2 × cores)", "tar piped to zstd -T0 -2 of the tree",
          "tar -x of the tree into tmpfs"]


def restore_big(tool, big):
    """Restores the snapshot of the 2 GiB file into a fresh tmpfs (when root) and checks that
    the bytes are the source's."""
    target = os.path.join(tool.base, "restore-big")
    os.makedirs(target)
    tmpfs = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8g", "vault-bench", target]).returncode == 0
    argv, cwd, out = tool.restore_file(target, big)
    result = timed(tool, argv, cwd=cwd)
    # rustic may take the destination as a directory for a single file.
    if os.path.isdir(out):
        out = os.path.join(out, os.path.basename(big))
    same = subprocess.run(["cmp", "-s", big, out]).returncode == 0
    if tmpfs:
        subprocess.run(["umount", target], check=True)
    shutil.rmtree(target, ignore_errors=True)
    if not same:
        raise RuntimeError(f"{tool.name}: the restored big file differs from the source")
    return result


def measure_limits(work):
    """What the machine itself takes for the work a snapshot or restore cannot avoid, with
    plain tools on the same data in the same run (caches dropped as for the tools when
    --cold): reading every file (2 × cores readers), reading and compressing the tree as one
    stream, and creating the tree from an uncompressed tar on disk."""
    tree = os.path.join(work, "tree-src")
    class Plain:
        name, base, env = "limits", os.path.join(work, "limits"), dict(os.environ)
    tool = Plain()
    shutil.rmtree(tool.base, ignore_errors=True)
    os.makedirs(tool.base)
    readers = 2 * (os.cpu_count() or 1)
    out = {}
    out[LIMITS[0]] = timed(tool, ["sh", "-c", f'find "{tree}" -type f -print0 | xargs -0 -P{readers} -n256 cat > /dev/null'])
    out[LIMITS[1]] = timed(tool, ["sh", "-c", f'tar -C "{tree}" -cf - . | zstd -T0 -2 -q > /dev/null'])
    tar = os.path.join(tool.base, "tree.tar")
    sh(f'tar -C "{tree}" -cf "{tar}" .')
    target = os.path.join(tool.base, "x")
    os.makedirs(target)
    tmpfs = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8g", "vault-bench", target]).returncode == 0
    out[LIMITS[2]] = timed(tool, ["tar", "-C", target, "-xf", tar])
    if tmpfs:
        subprocess.run(["umount", target], check=True)
    shutil.rmtree(tool.base, ignore_errors=True)
    return out


def med(vals, i):
    vals = [v[i] for v in vals]
    return statistics.median(vals) if vals else None


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def report(a, results, limits):
    tree_info = open(os.path.join(a.work, "tree-src.done")).read().split()
    lines = []
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    version_cmd = {"vault": [VAULT, "--version"], "restic": ["restic", "version"],
                   "borg": ["borg", "--version"], "bupstash": ["bupstash", "version"],
                   "rustic": ["rustic", "--version"]}
    vers = {n: subprocess.run(version_cmd[n], stdout=subprocess.PIPE).stdout.decode().strip()
            for n in results}
    lines.append(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ")
    lines.append(f"Machine: {os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}, "
                 f"data and repositories on {subprocess.run(['df', '-T', a.work], stdout=subprocess.PIPE).stdout.decode().splitlines()[-1].split()[1]}  ")
    lines.append("Tools: " + "; ".join(vers.values()) + "  ")
    lines.append(f"Command: `benches/compare.sh --runs {a.runs} --tools {a.tools}"
                 f"{' --cold' if a.cold else ''}`  ")
    lines.append(f"Data: tree of {tree_info[0]} files / {int(tree_info[1]) / 2**30:.2f} GiB copied from /usr; "
                 f"{os.path.getsize(os.path.join(a.work, 'big.bin')) / 2**30:.2f} GiB mixed file; "
                 f"pg_dumps of {os.path.getsize(os.path.join(a.work, 'dump1.sql')) / 2**20:.0f} MiB.  ")
    lines.append("Settings: vault defaults (zstd 2, 512 KiB chunks); restic repo v2 `--compression auto`; "
                 "borg `repokey-blake2`, `--compression zstd,3`; bupstash and rustic defaults. "
                 + ("Page cache dropped before every step. " if a.cold else "Warm page cache. ") +
                 "Restores go to a fresh tmpfs "
                 "(ext4's inode allocator, slowed by the benchmark's own deletions, otherwise dominates every tool). "
                 "Medians of the runs.")
    lines.append("")
    names = list(results)
    hdr = "| step | " + " | ".join(f"{n} wall s" for n in names) + " | " + " | ".join(f"{n} CPU s" for n in names) + \
          " | " + " | ".join(f"{n} RSS MiB" for n in names) + " | " + " | ".join(f"{n} repo MiB" for n in names)
    if "vault" in names:
        others = [n for n in names if n != "vault"]
        hdr += " | " + " | ".join(f"wall vault/{o}" for o in others) + " | " + " | ".join(f"RSS vault/{o}" for o in others)
    lines.append(hdr + " |")
    lines.append("|" + "---|" * (hdr.count("|")))
    for s in STEPS:
        row = [s]
        for i, unit in ((0, 1), (1, 1), (2, 1024), (3, 2**20)):
            for n in names:
                v = med(results[n][s], i)
                row.append("–" if v is None else f"{v / unit:.2f}" if i < 2 else f"{v / unit:.0f}")
        if "vault" in names:
            for i in (0, 2):
                for o in [n for n in names if n != "vault"]:
                    row.append(fmt_ratio(med(results["vault"][s], i), med(results[o][s], i)))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Repo MiB is the repository size after the step; for \"second dump\" it is the growth caused by the second dump.")
    lines.append("")
    lines.append("Machine limits on the same data in the same run (plain tools, same cache treatment):")
    lines.append("")
    lines.append("| work | wall s | CPU s |")
    lines.append("|---|---|---|")
    for k in LIMITS:
        lines.append(f"| {k} | {med(limits[k], 0):.2f} | {med(limits[k], 1):.2f} |")
    text = "\n".join(lines)
    print(text)
    raw = os.path.join(os.path.dirname(a.out), "results.json")
    json.dump(results, open(raw, "w"), indent=1)
    if a.out:
        # Only the block between the markers is replaced; what follows it is kept.
        old = open(a.out).read() if os.path.exists(a.out) else "# Benchmark results\n\n"
        head, _, rest = old.partition("<!-- results -->")
        _, _, tail = rest.partition("<!-- /results -->")
        open(a.out, "w").write(head + "<!-- results -->\n" + text + "\n<!-- /results -->" + tail)


if __name__ == "__main__":
    main()
