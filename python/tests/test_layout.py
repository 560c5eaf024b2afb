"""The package's C declarations (landmark/_ffi.py, cffi ABI mode) lay the structs out as the
C compiler does from the public headers, and the shared library exports only lmk_*."""
import os
import shutil
import subprocess

import pytest

import landmark
from landmark._ffi import ffi
from conftest import SOURCE_ROOT

STRUCTS = {
    "lmk_session_opts": ["n_layers", "block_len", "dtype", "landmark", "n_repr", "index_spec",
                         "fingerprint", "create", "read_only", "n_threads", "durability",
                         "log", "log_ud"],
    "lmk_attend_opts": ["top_k", "n_recent", "mode", "retrieve", "n_sink", "n_local",
                        "ef_search", "nprobe", "pos"],
    "lmk_attend_stats": ["search_s", "attn_s", "blocks_fetched", "bytes_fetched", "blocks",
                         "blocks_cap"],
    "lmk_session_info": ["format_version", "block_len", "dtype", "landmark", "n_repr", "index_spec",
                         "fingerprint", "tokens", "blocks", "disk_bytes"],
    "lmk_bench_cfg": ["tokens", "n_layers", "block_len", "top_k", "dtype_f16", "mode_union",
                      "threads", "steps", "probes", "seed", "needle_span", "recorded",
                      "preset", "n_specs", "specs", "n_ef", "n_nprobe", "ef", "nprobe", "dir",
                      "child_exe", "child_timeout_s", "log", "progress", "ud"],
    "lmk_bench_result": ["index", "ef_search", "nprobe", "recall_at_k", "speedup",
                         "rss_anon_mb", "disk_mb", "blocks_fetched", "bound_ms"],
    "lmk_bench_facts": ["ingest_s", "kv_bytes", "blocks", "n_needles", "wall_s", "read_gbs"],
    "lmk_bench_report": ["cfg", "run", "dense", "results", "n_results"],
}


def test_struct_layouts_match_the_headers(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists(os.path.join(SOURCE_ROOT, "engine", "lmk_session.h")):
        pytest.skip("needs a C compiler and the source tree")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "lmk_session.h"',
             '#include "lmk_bench.h"', 'int main(void) {']
    for st, fields in STRUCTS.items():
        lines.append('printf("%s %%zu\\n", sizeof(%s));' % (st, st))
        for f in fields:
            lines.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));' % (st, f, st, f))
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(SOURCE_ROOT, "base"),
                    "-I", os.path.join(SOURCE_ROOT, "engine"),
                    "-I", os.path.join(SOURCE_ROOT, "bench"), str(src), "-o", str(exe)],
                   check=True)
    want = dict(line.split() for line in
                subprocess.run([str(exe)], capture_output=True, text=True,
                               check=True).stdout.splitlines())
    for st, fields in STRUCTS.items():
        assert ffi.sizeof(st) == int(want[st]), st
        for f in fields:
            assert ffi.offsetof(st, f) == int(want["%s.%s" % (st, f)]), (st, f)


def test_only_the_public_api_is_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", landmark.library_path()],
                         capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert "lmk_session_open" in names and "lmk_bench_run" in names
    assert [n for n in names if not n.startswith("lmk_")] == []


def test_passive_wait_policy_before_the_library_loads():
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, landmark; print(os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "passive"
    env["OMP_WAIT_POLICY"] = "active"  # a value the user set is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "active"
