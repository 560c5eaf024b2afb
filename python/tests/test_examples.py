"""The examples run (small sizes)."""
import json
import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run(*args):
    p = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_transformer_layer(tmp_path):
    out = run(os.path.join(EXAMPLES, "transformer_layer.py"), "--tokens", 1024, "--chunk", 128,
              "--dir", tmp_path / "s")
    assert "1024 tokens" in out and "every block (union) vs dense" in out
    diff = float(out.split("max difference ")[1].split()[0])
    assert diff < 1e-4


def test_bench_indexes(tmp_path):
    out = run(os.path.join(EXAMPLES, "bench_indexes.py"), "--tokens", 4096, "--steps", 5,
              "--index", "HNSW16", "--json", tmp_path / "b.json")
    assert "HNSW16" in out
    with open(tmp_path / "b.json") as f:
        assert [r["index"] for r in json.load(f)["results"]] == ["Flat", "HNSW16"]
