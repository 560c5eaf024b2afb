#!/usr/bin/env python3
"""Benchmark landmark index types on your own keys, values and queries.

Give NumPy files of your model's tensors (one layer or several):
    keys.npy, values.npy   (layers, tokens, kv_heads, head_dim) or (tokens, kv_heads, head_dim)
    queries.npy            (layers, n_queries, heads, head_dim) or (n_queries, heads, head_dim)
and the index specs to compare; the library ingests them once, measures dense attention,
exact search (Flat) and every spec and search parameter on the same steps, and starts its
own reopening process for the memory figures. The records are those of
`landmark bench --json` (--json FILE writes them).

    python3 examples/bench_indexes.py --keys k.npy --values v.npy --queries q.npy \\
        --index HNSW32 --index IVF256,Flat --ef 64,256 --nprobe 16,64 --json out.json

Without files it makes a random stream with a little structure (a shared key mean, slowly
drifting topics) so the example runs on its own.
"""
import argparse
import sys

import numpy as np

import landmark


def ints(s):
    return [int(x) for x in s.split(",") if x]


def synthetic(rng, tokens, heads, kv_heads, head_dim, n_queries):
    mean = rng.standard_normal(head_dim) * 2
    topics = rng.standard_normal((tokens // 512 + 1, kv_heads, head_dim))
    k = (rng.standard_normal((tokens, kv_heads, head_dim)) + mean
         + 2 * topics[np.arange(tokens) // 512]).astype(np.float32)
    v = rng.standard_normal((tokens, kv_heads, head_dim)).astype(np.float32)
    # queries leaning towards random earlier topics
    pick = topics[rng.integers(0, len(topics), n_queries)]
    q = (rng.standard_normal((n_queries, heads, head_dim))
         + 2 * np.repeat(pick, heads // kv_heads, axis=1)).astype(np.float32)
    return k, v, q


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys")
    ap.add_argument("--values")
    ap.add_argument("--queries")
    ap.add_argument("--index", action="append", help="FAISS spec (repeatable; Flat always)")
    ap.add_argument("--ef", type=ints, default=[], help="efSearch values for HNSW specs")
    ap.add_argument("--nprobe", type=ints, default=[], help="nprobe values for IVF specs")
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--mode", default="union", choices=["union", "grouped"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--json", help="write the `landmark bench --json` record here")
    ap.add_argument("--recorded", help="also keep the arrays as a recorded stream file here")
    ap.add_argument("--tokens", type=int, default=65536, help="random stream length")
    a = ap.parse_args()

    if a.keys or a.values or a.queries:
        if not (a.keys and a.values and a.queries):
            ap.error("--keys, --values and --queries go together")
        k, v, q = (np.load(p, mmap_mode="r") for p in (a.keys, a.values, a.queries))
    else:
        k, v, q = synthetic(np.random.default_rng(42), a.tokens, 8, 2, 64, 32)
    specs = a.index or ["HNSW32", "IVF256,Flat"]

    def log(level, msg):
        if level == "warn" or sys.stderr.isatty():
            print("%s: %s" % (level, msg), file=sys.stderr)

    try:
        rep = landmark.bench(k, v, q, indexes=specs, ef_search=a.ef, nprobe=a.nprobe,
                             top_k=a.top_k, block_len=a.block_len, dtype=a.dtype,
                             mode=a.mode, threads=a.threads, steps=a.steps, json=a.json,
                             recorded=a.recorded, log=log)
    except landmark.Error as e:
        sys.exit("bench_indexes: %s" % e)
    c = rep["config"]
    print("%d layers, %d tokens, %d/%d heads, head_dim %d, block %d, top-k %d, %s, %s"
          % (c["layers"], c["tokens"], c["heads"], c["kv_heads"], c["head_dim"],
             c["block_len"], c["top_k"], c["dtype"], c["mode"]))
    print(landmark.format_table(rep))
    if a.json:
        print("records written to", a.json)


if __name__ == "__main__":
    main()
