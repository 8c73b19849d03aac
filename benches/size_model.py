#!/usr/bin/env python3
"""Models the repository size of a tree under different ways of compressing small blobs
(D57): every 512 KiB chunk on its own at zstd levels 2 and 3 (vault today: level 2), with a
dictionary trained on small files, and with small chunks grouped into ~512 KiB compression
units. Sizes are before deduplication. Needs `pip install zstandard`.

    python3 benches/size_model.py /var/tmp/vault-bench/tree-src
"""

import os
import random
import sys

import zstandard as zs

CHUNK = 512 * 1024


def chunks(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            for i in range(0, len(data), CHUNK):
                yield data[i:i + CHUNK]


def main():
    root = sys.argv[1]
    data = list(chunks(root))
    level = {l: zs.ZstdCompressor(level=l) for l in (2, 3)}

    def size(l, b, c=None):
        return min(len((c or level[l]).compress(b)), len(b))

    random.seed(1)
    samples = [b[:16384] for b in data if len(b) < 65536 and random.random() < 0.1]
    dictionary = zs.train_dictionary(112640, samples, level=3)
    with_dict = {l: zs.ZstdCompressor(level=l, dict_data=dictionary) for l in (2, 3)}
    out = {}
    for l in (2, 3):
        out[f"each chunk alone, level {l}"] = sum(size(l, b) for b in data)
        out[f"dictionary for chunks < 64 KiB, level {l}"] = sum(
            min(size(l, b), size(l, b, with_dict[l])) if len(b) < 65536 else size(l, b) for b in data)
        for limit in (16384, 65536, 131072):
            total, group, grouped = 0, [], 0
            for b in data:
                if len(b) >= limit:
                    total += size(l, b)
                    continue
                group.append(b)
                grouped += len(b)
                if grouped >= CHUNK:
                    total += size(l, b"".join(group))
                    group, grouped = [], 0
            if group:
                total += size(l, b"".join(group))
            out[f"chunks < {limit // 1024} KiB grouped by 512 KiB, level {l}"] = total
    print(f"{len(data)} chunks, {sum(map(len, data)) / 2**20:.1f} MiB")
    print("| way | MiB |\n|---|---|")
    for k, v in out.items():
        print(f"| {k} | {v / 2**20:.1f} |")


if __name__ == "__main__":
    main()
