"""Sessions cross between the binding and the `landmark` command: a session written from
Python is read, verified, forked and continued by the command, and sessions the command
writes are read from Python."""
import json
import subprocess

import numpy as np

import landmark
from conftest import kv


def run(cli, *args):
    p = subprocess.run([cli, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def test_python_session_read_by_the_command(tmp_path, rng, cli):
    d = tmp_path / "s"
    with landmark.Session(d, create=True, layers=2, heads=4, kv_heads=2, head_dim=32,
                          block_len=16, dtype="f16", index="HNSW16",
                          fingerprint="from python") as s:
        for layer in range(2):
            s.append(layer, *kv(rng, 333, 2, 32))
        digest = s.data_digest()
        q = rng.standard_normal((3, 4, 32))
        out = s.attend(1, q, top_k=4, mode="union", ef_search=64)
    info = json.loads(run(cli, "info", d, "--json"))
    assert info["tokens"] == 333 and info["layers"] == 2 and info["heads"] == 4
    assert info["kv_heads"] == 2 and info["head_dim"] == 32 and info["block_len"] == 16
    assert info["dtype"] == "f16" and info["index"] == "HNSW16"
    assert info["fingerprint"] == "from python" and info["blocks"] == 333 // 16
    assert info["data_digest"] == "%016x" % digest
    v = json.loads(run(cli, "verify", d, "--json"))
    assert v["ok"] is True and v["errors"] == [], v
    # the command's maintenance, then back in Python
    run(cli, "fork", d, tmp_path / "f")
    run(cli, "reindex", tmp_path / "f", "--index", "Flat")
    run(cli, "truncate", tmp_path / "f", "--tokens", 300)
    with landmark.Session(tmp_path / "f") as f:
        assert f.tokens(0) == 300 and f.info()["index"] == "Flat"
    with landmark.Session(d) as s:
        assert s.data_digest() == digest
        np.testing.assert_array_equal(s.attend(1, q, top_k=4, mode="union", ef_search=64), out)
        s.truncate(300)
        with landmark.Session(tmp_path / "f") as f:
            assert f.data_digest() == s.data_digest()


def test_command_session_read_by_python(tmp_path, cli):
    d = tmp_path / "demo"
    run(cli, "demo", "--tokens", 2048, "--dir", d, "--dtype", "f32", "--json")
    info = json.loads(run(cli, "info", d, "--json"))
    with landmark.Session(d, read_only=True) as s:
        pi = s.info()
        assert pi["tokens"] == info["tokens"] == 2048 and pi["layers"] == info["layers"]
        assert (pi["heads"], pi["kv_heads"], pi["head_dim"]) == \
            (info["heads"], info["kv_heads"], info["head_dim"])
        assert pi["fingerprint"] == info["fingerprint"] and pi["dtype"] == "f32"
        assert "%016x" % s.data_digest() == info["data_digest"]
        assert s.verify()["ok"]
        # retrieval of every block over the command's data equals dense causal attention
        T, H, G, D = 2048, pi["heads"], pi["kv_heads"], pi["head_dim"]
        k, v = s.read_kv(0, 0, T)
        q = np.random.default_rng(7).standard_normal((4, H, D)).astype(np.float32)
        out = s.attend(0, q, top_k="all", mode="union")
        kk = np.repeat(k.astype(np.float64), H // G, axis=1)
        vv = np.repeat(v.astype(np.float64), H // G, axis=1)
        for i in range(4):
            p = T - 4 + i
            sc = np.einsum("hd,thd->ht", q[i].astype(np.float64), kk[: p + 1]) / np.sqrt(D)
            w = np.exp(sc - sc.max(axis=1, keepdims=True))
            ref = np.einsum("ht,thd->hd", w / w.sum(axis=1, keepdims=True), vv[: p + 1])
            err = np.linalg.norm(out[i] - ref, axis=1) / np.linalg.norm(ref, axis=1)
            assert err.max() < 1e-5, err.max()
    # Python continues the command's session; the command reads it back
    with landmark.Session(d) as s:
        for layer in range(s.layers):
            s.append(layer, *kv(np.random.default_rng(layer), 100, s.kv_heads, s.head_dim))
        digest = s.data_digest()
    info = json.loads(run(cli, "info", d, "--json"))
    assert info["tokens"] == 2148 and info["data_digest"] == "%016x" % digest
