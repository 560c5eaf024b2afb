"""landmark.bench: index types measured on the caller's own arrays (bench/lmk_bench.h).

The arrays are written once as a recorded stream (README, "Recorded streams") and one
lmk_bench_run() measures them: dense attention over every key and value in RAM, exact
landmark search (Flat) and every index spec and search parameter asked, with recall@k, the
error against dense, step times, build time, disk use and the resident memory of a separate
reopening process the library starts (`landmark-bench-child`). The records are those of
`landmark bench --json`; pass json=PATH to write that file.
"""
import os
import shutil
import struct
import tempfile

import numpy as np

from ._errors import InvalidError, error_for
from ._ffi import child_exe, ffi, lib
from ._session import _floats, _int

_REC_MAGIC = b"LMKREC1\0"


def write_recorded(path, keys, values, queries, dtype="f32"):
    """Write a recorded stream file: keys, values (layers, tokens, kv_heads, head_dim) (or
    without the layer axis for one layer), queries (layers, n_queries, heads, head_dim) (or
    without the layer axis). dtype "f32" or "f16" is the file's number format. Returns the
    shape as a dict."""
    k, v, q = _stream_arrays(keys, values, queries)
    nl, nt, nkv, d = k.shape
    nq, nh = q.shape[1], q.shape[2]
    if dtype not in ("f32", "f16"):
        raise InvalidError("dtype must be 'f32' or 'f16', not %r" % (dtype,))
    ft = np.dtype("<f4") if dtype == "f32" else np.dtype("<f2")
    hdr = _REC_MAGIC + struct.pack("<4I2Q2I", nl, nh, nkv, d, nt, nq, 0 if dtype == "f32" else 1, 0)
    with open(path, "wb") as f:
        f.write(hdr)
        for layer in range(nl):
            for a in (k[layer], v[layer], q[layer]):
                f.write(np.ascontiguousarray(a, dtype=ft).tobytes())
    return {"layers": nl, "tokens": nt, "heads": nh, "kv_heads": nkv, "head_dim": d,
            "queries": nq}


def _stream_arrays(keys, values, queries):
    k = _floats("keys", keys)
    v = _floats("values", values)
    q = _floats("queries", queries)
    if k.ndim == 3:
        k, v = k[None], v[None]
    if q.ndim == 3:
        q = q[None]
    if k.ndim != 4 or k.shape != v.shape:
        raise InvalidError("keys and values must have one shape (layers, tokens, kv_heads, "
                           "head_dim) or (tokens, kv_heads, head_dim), not %s and %s"
                           % (keys.shape, values.shape))
    if q.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or \
            q.shape[2] % k.shape[2] != 0 or q.shape[1] < 1:
        raise InvalidError("queries must have shape (layers, n_queries, heads, head_dim) with "
                           "the keys' layers and head_dim and heads a multiple of kv_heads "
                           "(keys %s, queries %s)" % (k.shape, q.shape))
    return k, v, q


def bench(keys, values, queries, indexes=("HNSW32", "IVF256,Flat"), ef_search=(), nprobe=(),
          top_k=8, block_len=64, dtype="f16", mode="union", threads=1, steps=100,
          dir=None, json=None, recorded=None, child=True, child_timeout_s=900.0, log=None):
    """Measure index types on the caller's arrays (see write_recorded for the shapes; step p
    uses query p mod n_queries at the last position).

    indexes: FAISS factory specs (optionally "+l2"); Flat is always measured first.
    ef_search / nprobe: values swept for HNSW / IVF specs. dtype: the session's storage.
    mode: "union" or "grouped". dir: where the session is built (DIR/session must not
    exist), default a temporary directory. json: write the `landmark bench --json` record
    there. recorded: keep the recorded stream file written from the arrays at this path
    (`landmark bench --recorded PATH` measures it again), else it is temporary. child: measure the reopening process's memory (False: its figures are NaN).
    log(level, msg): the run's notes ("note") and warnings ("warn").

    Returns {"config", "run", "dense", "results"} with one dict per measured setting.
    Note: the library sets OpenBLAS's and OpenMP's thread counts during the run and leaves
    them at 1 (lmk_bench.h).
    """
    steps = _int("steps", steps, 1)
    top_k = _int("top_k", top_k, 1)
    block_len = _int("block_len", block_len, 1)
    threads = _int("threads", threads, 1)
    if isinstance(indexes, str):
        indexes = [indexes]
    specs = [str(s) for s in indexes]
    if len(specs) > 31 or any(len(s.encode()) >= 128 for s in specs):
        raise InvalidError("at most 31 index specs of fewer than 128 bytes")
    ef_search, nprobe = list(ef_search), list(nprobe)
    if len(ef_search) > 32 or len(nprobe) > 32:
        raise InvalidError("at most 32 values per sweep")
    if mode not in ("union", "grouped"):
        raise InvalidError("mode must be 'union' or 'grouped', not %r" % (mode,))
    if dtype not in ("f16", "f32"):
        raise InvalidError("dtype must be 'f16' or 'f32', not %r" % (dtype,))

    tmp = tempfile.mkdtemp(prefix="landmark-bench-")
    try:
        rec = os.fspath(recorded) if recorded is not None else os.path.join(tmp, "stream.lmkrec")
        shape = write_recorded(rec, keys, values, queries,
                               "f16" if np.asarray(keys).dtype == np.float16 else "f32")
        c = lib.lmk_bench_cfg_default()
        keep = [ffi.new("char[]", os.fsencode(rec))]
        c.recorded = keep[-1]
        c.tokens = shape["tokens"]
        c.n_layers, c.n_heads = shape["layers"], shape["heads"]
        c.n_kv_heads, c.head_dim = shape["kv_heads"], shape["head_dim"]
        c.block_len, c.top_k, c.threads, c.steps = block_len, top_k, threads, steps
        c.dtype_f16 = 1 if dtype == "f16" else 0
        c.mode_union = 1 if mode == "union" else 0
        c.probes = 0
        c.preset = ffi.NULL
        c.n_specs = len(specs)
        for i, s in enumerate(specs):
            c.specs[i] = s.encode()
        c.n_ef, c.n_nprobe = len(ef_search), len(nprobe)
        for i, x in enumerate(ef_search):
            c.ef[i] = _int("ef_search", x, 1)
        for i, x in enumerate(nprobe):
            c.nprobe[i] = _int("nprobe", x, 1)
        keep.append(ffi.new("char[]", os.fsencode(dir if dir is not None else tmp)))
        c.dir = keep[-1]
        if child:
            keep.append(ffi.new("char[]", os.fsencode(child_exe())))
        else:  # a helper that cannot start: the library logs a warning, figures are NaN
            keep.append(ffi.new("char[]", os.fsencode(os.path.join(tmp, "no-child"))))
        c.child_exe = keep[-1]
        c.child_timeout_s = float(child_timeout_s)

        def on_log(ud, level, msg):
            if log is not None:
                log("warn" if level == lib.LMK_BENCH_WARN else "note",
                    ffi.string(msg).decode(errors="replace"))

        cb = ffi.callback("lmk_bench_log_fn", on_log)
        c.log = cb
        rep = ffi.new("lmk_bench_report *")
        err = ffi.new("char[1024]")
        rc = lib.lmk_bench_run(ffi.new("lmk_bench_cfg *", c), rep, err, 1024)
        try:
            if rc != 0:
                raise error_for(rc, ffi.string(err).decode(errors="replace"))
            if json is not None:
                rc = lib.lmk_bench_write_json(os.fsencode(json), rep, err, 1024)
                if rc != 0:
                    raise error_for(rc, ffi.string(err).decode(errors="replace"))
            return _report(rep, shape, specs, ef_search, nprobe)
        finally:
            lib.lmk_bench_report_free(rep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_RESULT_FIELDS = ("ef_search", "nprobe", "recall_at_k", "needle_hit_rate", "attn_rel_err",
                  "attn_rel_err_p50", "step_ms_p50", "step_ms_p99", "search_ms", "fetch_ms",
                  "attn_ms", "speedup", "ingest_tokens_per_s", "build_s", "rss_anon_mb",
                  "rss_file_mb", "child_step_ms_p50", "disk_mb", "blocks_fetched",
                  "bound_ms")


def _report(rep, shape, specs, ef, nprobe):
    c = rep.cfg
    results = []
    for i in range(rep.n_results):
        r = rep.results[i]
        d = {"index": ffi.string(r.index).decode()}
        for f in _RESULT_FIELDS:
            d[f] = getattr(r, f)
        results.append(d)
    return {
        "config": dict(shape, block_len=c.block_len, top_k=c.top_k,
                       dtype="f16" if c.dtype_f16 else "f32",
                       mode="union" if c.mode_union else "grouped", threads=c.threads,
                       steps=c.steps, indexes=list(specs), ef_search=list(ef),
                       nprobe=list(nprobe)),
        "run": {"ingest_s": rep.run.ingest_s, "kv_bytes": rep.run.kv_bytes,
                "blocks": rep.run.blocks, "wall_s": rep.run.wall_s,
                "read_gbs": rep.run.read_gbs},
        "dense": {"step_ms_p50": rep.dense.step_ms_p50, "step_ms_p99": rep.dense.step_ms_p99,
                  "memory_mb": rep.dense.memory_mb, "threads": rep.dense.threads},
        "results": results,
    }


def format_table(report):
    """The records as an aligned text table."""
    cols = [("index", "%-16s"), ("ef_search", "%4d"), ("nprobe", "%4d"),
            ("recall_at_k", "%7.4f"), ("attn_rel_err", "%9.2e"), ("step_ms_p50", "%8.2f"),
            ("step_ms_p99", "%8.2f"), ("speedup", "%7.1f"), ("build_s", "%7.2f"),
            ("rss_anon_mb", "%8.1f"), ("disk_mb", "%7.1f")]
    head = ["index", "ef", "np", "recall", "attn_err", "p50 ms", "p99 ms", "speedup",
            "build s", "anon MB", "disk MB"]
    widths = [len(f % 0) if "s" not in f else 16 for _, f in cols]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                       enumerate(zip(head, widths)))]
    for r in report["results"]:
        lines.append("  ".join(f % r[k] for k, f in cols))
    d = report["dense"]
    lines.append("dense: step p50 %.2f ms, p99 %.2f ms, %.1f MB in RAM"
                 % (d["step_ms_p50"], d["step_ms_p99"], d["memory_mb"]))
    return "\n".join(lines)
