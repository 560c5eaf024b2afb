"""landmark.bench on the caller's arrays: the records of `landmark bench --json`, measured by
the library with its reopening helper; the recorded stream it writes is the command's
format."""
import json
import math
import subprocess

import numpy as np
import pytest

import landmark


def arrays(rng, layers=1, T=2048, H=4, G=2, D=32, nq=6):
    k = rng.standard_normal((layers, T, G, D)).astype(np.float32)
    v = rng.standard_normal((layers, T, G, D)).astype(np.float32)
    q = rng.standard_normal((layers, nq, H, D)).astype(np.float32)
    return k, v, q


def test_bench_records(tmp_path, rng):
    k, v, q = arrays(rng, layers=2)
    notes = []
    rep = landmark.bench(k, v, q, indexes=["HNSW16", "IVF8,Flat"], ef_search=[16, 64],
                         nprobe=[2], block_len=32, steps=5, top_k=4, dtype="f32",
                         mode="grouped", json=tmp_path / "b.json",
                         log=lambda level, msg: notes.append((level, msg)))
    assert notes and all(level in ("note", "warn") for level, _ in notes)
    got = [(r["index"], r["ef_search"], r["nprobe"]) for r in rep["results"]]
    assert got == [("Flat", 0, 0), ("HNSW16", 16, 0), ("HNSW16", 64, 0), ("IVF8,Flat", 0, 2)]
    flat = rep["results"][0]
    assert flat["recall_at_k"] == 1.0
    for r in rep["results"]:
        assert 0 <= r["recall_at_k"] <= 1 and r["step_ms_p50"] > 0 and r["disk_mb"] > 0
        assert math.isfinite(r["rss_anon_mb"]), "the reopening helper ran"
        assert math.isnan(r["needle_hit_rate"])  # no needles in a recorded stream
    assert rep["config"]["layers"] == 2 and rep["config"]["tokens"] == 2048
    assert rep["config"]["mode"] == "grouped" and rep["run"]["blocks"] == 2048 // 32 - 1  # the last is not sealed
    assert rep["dense"]["step_ms_p50"] > 0
    # the bandwidth bound: measured for Flat and IVF, not modelled for HNSW
    assert rep["run"]["read_gbs"] > 0
    assert [math.isfinite(r["bound_ms"]) for r in rep["results"]] == [True, False, False, True]
    assert flat["bound_ms"] > 0
    with open(tmp_path / "b.json") as f:
        doc = json.load(f)
    assert set(doc) == {"config", "dense", "targets", "results"}
    assert doc["config"]["workload"]["kind"] == "recorded"
    assert [r["index"] for r in doc["results"]] == [r[0] for r in got]
    for a, b in zip(doc["results"], rep["results"]):
        assert a["recall_at_k"] == pytest.approx(b["recall_at_k"], abs=1e-6)
    assert "Flat" in landmark.format_table(rep)


def test_every_block_equals_dense(rng):
    """With top_k covering every block, union attention equals the dense baseline."""
    k, v, q = arrays(rng, T=1024, nq=3)
    rep = landmark.bench(k, v, q, indexes=[], block_len=32, top_k=1024 // 32, steps=3,
                         dtype="f32", mode="union", child=False,
                         log=lambda level, msg: None)
    r = rep["results"][0]
    assert r["attn_rel_err"] < 1e-4 and r["recall_at_k"] == 1.0
    assert math.isnan(r["rss_anon_mb"])  # no helper asked for


def test_recorded_file_is_the_commands_format(tmp_path, rng, cli):
    k, v, q = arrays(rng, T=1024, nq=4)
    path = tmp_path / "s.lmkrec"
    shape = landmark.write_recorded(path, k[0], v[0], q[0], dtype="f16")
    assert shape == {"layers": 1, "tokens": 1024, "heads": 4, "kv_heads": 2, "head_dim": 32,
                     "queries": 4}
    p = subprocess.run([cli, "bench", "--recorded", str(path), "--block-len", "32",
                        "--steps", "100", "--json", str(tmp_path / "c.json")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    with open(tmp_path / "c.json") as f:
        doc = json.load(f)
    assert doc["config"]["tokens"] == 1024 and doc["config"]["heads"] == 4


def test_bench_bad_arrays(rng):
    k, v, q = arrays(rng, T=256)
    with pytest.raises(landmark.InvalidError, match="one shape"):
        landmark.bench(k, v[:, :100], q)
    with pytest.raises(landmark.InvalidError, match="queries"):
        landmark.bench(k, v, q[..., :16])
    with pytest.raises(landmark.DtypeError):
        landmark.bench(k.astype(np.int16), v, q)
    with pytest.raises(landmark.InvalidError):  # the library's check: too few tokens
        landmark.bench(k[:, :40], v[:, :40], q, block_len=32, steps=2)
