"""Every call of landmark.Session, its errors, and the argument checks."""
import os

import numpy as np
import pytest

import landmark
from conftest import kv

SHAPE = dict(layers=2, heads=4, kv_heads=2, head_dim=16, block_len=8)


def make(path, rng, tokens=100, **kw):
    opts = dict(SHAPE, **kw)
    s = landmark.Session(path, create=True, **opts)
    for layer in range(s.layers):
        s.append(layer, *kv(rng, tokens, s.kv_heads, s.head_dim))
    return s


def test_create_info_tokens_reopen(tmp_path, rng):
    d = tmp_path / "s"
    with make(d, rng, dtype="f32", index="Flat", fingerprint="model-x") as s:
        assert s.tokens(0) == 100 and s.tokens(1) == 100
        inf = s.info()
        assert inf["layers"] == 2 and inf["heads"] == 4 and inf["kv_heads"] == 2
        assert inf["head_dim"] == 16 and inf["block_len"] == 8
        assert inf["dtype"] == "f32" and inf["landmark"] == "mean" and inf["index"] == "Flat"
        assert inf["fingerprint"] == "model-x"
        assert inf["tokens"] == 100 and inf["blocks"] == 100 // 8 and inf["disk_bytes"] > 0
        digest = s.data_digest()
        assert isinstance(digest, int) and 0 <= digest < 2 ** 64
        s.sync()
    assert s.closed
    with landmark.Session(d) as s:  # shape taken from the session
        assert (s.layers, s.heads, s.kv_heads, s.head_dim, s.block_len) == (2, 4, 2, 16, 8)
        assert s.dtype == "f32" and s.data_digest() == digest
        assert "Session" in repr(s)
    with pytest.raises(landmark.MismatchError) as e:
        landmark.Session(d, heads=8)
    assert e.value.code == -1007 and "heads" in e.value.message
    with pytest.raises(landmark.MismatchError):
        landmark.Session(d, fingerprint="model-y")


def test_defaults_on_create(tmp_path, rng):
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=2, kv_heads=1,
                          head_dim=8) as s:
        assert s.block_len == 64 and s.dtype == "f16" and s.landmark == "mean"
        assert s.info()["index"] == "Flat"


def test_multi_entry_representatives(tmp_path, rng):
    # every key of a block in the index (n_repr = block_len) and a chosen count of outliers
    for name, n_repr, want in [("keys", 0, 8), ("outlier", 3, 3)]:
        d = tmp_path / name
        with landmark.Session(d, create=True, layers=1, heads=2, kv_heads=1, head_dim=16,
                              block_len=8, landmark=name, n_repr=n_repr) as s:
            s.append(0, *kv(rng, 41, 1, 16))
            inf = s.info()
            assert inf["landmark"] == name and inf["n_repr"] == want
            out = s.attend(0, rng.standard_normal((1, 2, 16)), top_k=2, mode="union")
            assert out.shape == (1, 2, 16) and np.isfinite(out).all()
        with landmark.Session(d) as s:
            assert s.info()["landmark"] == name and s.info()["n_repr"] == want
            assert s.tokens(0) == 41


def test_append_attend_shapes(tmp_path, rng):
    with make(tmp_path / "s", rng) as s:
        q = rng.standard_normal((3, 4, 16))
        out = s.attend(0, q)
        assert out.shape == (3, 4, 16) and out.dtype == np.float32
        one = s.attend(0, q[-1])  # one query: (heads, head_dim)
        assert one.shape == (4, 16)
        np.testing.assert_array_equal(one, out[-1])
        # one token: (kv_heads, head_dim)
        s.append(0, *[a[0] for a in kv(rng, 1, 2, 16)])
        assert s.tokens(0) == 101
        s.append(0, *kv(rng, 0, 2, 16))  # zero tokens: nothing
        assert s.tokens(0) == 101
        assert s.stats["blocks_fetched"] >= 0 and s.stats["search_s"] >= 0


def test_any_float_array_is_converted(tmp_path, rng):
    k, v = kv(rng, 40, 2, 16)
    with make(tmp_path / "a", rng, tokens=0, dtype="f32") as a, \
            make(tmp_path / "b", rng, tokens=0, dtype="f32") as b:
        a.append(0, k, v)
        # float64 in Fortran order, and a strided (non-contiguous) view: converted once to
        # the same float32 data
        wide = np.repeat(v, 2, axis=2)
        b.append(0, np.asfortranarray(k.astype(np.float64)), wide[:, :, ::2])
        assert a.data_digest() == b.data_digest()
        ka, va = a.read_kv(0, 0, 40)
        np.testing.assert_array_equal(ka, k)
        np.testing.assert_array_equal(va, v)
        q = rng.standard_normal((2, 4, 16))
        ref = a.attend(0, q.astype(np.float32))
        np.testing.assert_array_equal(a.attend(0, q), ref)  # float64
        np.testing.assert_array_equal(a.attend(0, np.asfortranarray(q)), ref)
        np.testing.assert_array_equal(a.attend(0, q.tolist()), ref)  # nested lists
        h = q.astype(np.float16)
        np.testing.assert_array_equal(a.attend(0, h), a.attend(0, h.astype(np.float32)))


@pytest.mark.parametrize("bad", [
    np.zeros((5, 3, 16)),          # kv_heads
    np.zeros((5, 2, 15)),          # head_dim
    np.zeros((5, 2, 16, 1)),       # rank
    np.zeros((32,)),               # rank
])
def test_append_bad_shapes(tmp_path, rng, bad):
    with make(tmp_path / "s", rng, tokens=0) as s:
        with pytest.raises(landmark.InvalidError) as e:
            s.append(0, bad, bad)
        assert "shape" in str(e.value) and "(n_tokens, 2, 16)" in str(e.value)
        assert isinstance(e.value, ValueError) and e.value.code == -1001
        assert s.tokens(0) == 0


def test_append_k_v_differ(tmp_path, rng):
    with make(tmp_path / "s", rng, tokens=0) as s:
        with pytest.raises(landmark.InvalidError, match="same shape"):
            s.append(0, np.zeros((5, 2, 16)), np.zeros((4, 2, 16)))


@pytest.mark.parametrize("bad", [np.zeros((5, 2, 16), dtype=np.int32),
                                 np.zeros((5, 2, 16), dtype=np.complex64),
                                 np.array([["a"] * 16] * 2), "text"])
def test_bad_dtypes(tmp_path, rng, bad):
    with make(tmp_path / "s", rng) as s:
        with pytest.raises(landmark.DtypeError) as e:
            s.append(0, bad, bad)
        assert "float array" in str(e.value) and isinstance(e.value, TypeError)
        with pytest.raises(landmark.DtypeError):
            s.attend(0, bad)


@pytest.mark.parametrize("q", [np.zeros((3, 2, 16)), np.zeros((3, 4, 8)), np.zeros((0, 4, 16)),
                               np.zeros((4,))])
def test_attend_bad_shapes(tmp_path, rng, q):
    with make(tmp_path / "s", rng) as s:
        with pytest.raises(landmark.InvalidError, match=r"\(n_queries, 4, 16\)"):
            s.attend(0, q)


def test_bad_arguments(tmp_path, rng):
    with make(tmp_path / "s", rng) as s:
        q = np.zeros((1, 4, 16))
        with pytest.raises(landmark.InvalidError, match="layer 2 is out of range"):
            s.attend(2, q)
        with pytest.raises(landmark.InvalidError, match="layer"):
            s.append(-1, *kv(rng, 1, 2, 16))
        with pytest.raises(landmark.InvalidError, match="mode"):
            s.attend(0, q, mode="dense")
        with pytest.raises(landmark.InvalidError, match="retrieve"):
            s.attend(0, q, retrieve="x")
        with pytest.raises(landmark.InvalidError, match="top_k"):
            s.attend(0, q, top_k=1.5)
        with pytest.raises(landmark.InvalidError) as e:  # the library's own check
            s.attend(0, np.zeros((101, 4, 16)))
        assert e.value.code == -1001 and e.value.message
    with pytest.raises(landmark.InvalidError, match="dtype"):
        landmark.Session(tmp_path / "t", create=True, dtype="bf16", **SHAPE)
    with pytest.raises(landmark.InvalidError, match="threads"):
        landmark.Session(tmp_path / "t", create=True, threads=0, **SHAPE)


def test_errors_carry_code_and_message(tmp_path, rng):
    with pytest.raises(landmark.NotFoundError) as e:
        landmark.Session(tmp_path / "missing")
    assert e.value.code == -1009 and "missing" in e.value.message
    assert isinstance(e.value, landmark.Error)
    with pytest.raises(landmark.InvalidError):  # creating needs a shape
        landmark.Session(tmp_path / "noshape", create=True)
    with pytest.raises((landmark.UnsupportedError, landmark.InvalidError)) as e:
        landmark.Session(tmp_path / "badspec", create=True, index="NoSuchIndex", **SHAPE)
    assert e.value.code in (-1002, -1001)
    assert landmark.strerror(-1008)


def test_busy_and_read_only(tmp_path, rng):
    d = tmp_path / "s"
    with make(d, rng):
        with pytest.raises(landmark.BusyError) as e:
            landmark.Session(d)
        assert e.value.code == -1008
    with landmark.Session(d, read_only=True) as r:
        assert r.tokens(0) == 100
        with pytest.raises(landmark.ReadOnlyError) as e:
            r.append(0, *kv(rng, 1, 2, 16))
        assert e.value.code == -1010
        with pytest.raises(landmark.ReadOnlyError):
            r.truncate(10)
        assert r.tokens(0) == 100


def test_closed_session(tmp_path, rng):
    s = make(tmp_path / "s", rng)
    s.close()
    s.close()  # idempotent
    for call in (lambda: s.tokens(0), s.info, s.sync, s.data_digest, s.verify,
                 lambda: s.attend(0, np.zeros((1, 4, 16))),
                 lambda: s.append(0, np.zeros((1, 2, 16)), np.zeros((1, 2, 16)))):
        with pytest.raises(landmark.StateError, match="closed"):
            call()


def test_truncate_fork_reindex_verify(tmp_path, rng):
    d = tmp_path / "s"
    with make(d, rng, tokens=200) as s:
        digest200 = s.data_digest()
        q = rng.standard_normal((2, 4, 16))
        out = s.attend(1, q, top_k="all", mode="union")

        s.fork(tmp_path / "copy")
        with landmark.Session(tmp_path / "copy") as c:
            assert c.data_digest() == digest200 and c.tokens(1) == 200
            np.testing.assert_array_equal(c.attend(1, q, top_k="all", mode="union"), out)
        with pytest.raises(landmark.Error):
            s.fork(tmp_path / "copy")  # exists

        s.reindex("HNSW16")
        assert s.info()["index"] == "HNSW16"
        assert s.data_digest() == digest200  # independent of the index
        np.testing.assert_array_equal(s.attend(1, q, top_k="all", mode="union"), out)
        s.attend(1, q, top_k=2, ef_search=32)
        s.reindex("Flat")

        v = s.verify()
        assert v["ok"] and v["errors"] == 0 and v["blocks_checked"] > 0, v

        s.truncate(150)
        assert s.tokens(0) == 150 and s.tokens(1) == 150
        assert s.info()["blocks"] == 150 // 8
        with pytest.raises(landmark.InvalidError):
            s.truncate(151)
        k, v2 = kv(rng, 50, 2, 16)
    # the truncated session equals one written with the first 150 tokens
    with landmark.Session(tmp_path / "copy") as c:
        c.truncate(150)
        with landmark.Session(d) as s:
            assert s.data_digest() == c.data_digest() != digest200


def test_return_blocks(tmp_path, rng):
    with make(tmp_path / "s", rng, tokens=200) as s:
        q = rng.standard_normal((3, 4, 16))
        out, blocks = s.attend(0, q, top_k=3, n_recent=1, return_blocks=True)
        assert blocks.shape == (3, 4, 4) and blocks.dtype == np.int64
        sealed = 200 // 8
        assert ((blocks >= -1) & (blocks < sealed)).all()
        assert (blocks[:, :, :3] >= 0).all()
        np.testing.assert_array_equal(out, s.attend(0, q, top_k=3, n_recent=1))
        out, blocks = s.attend(0, q, top_k="all", return_blocks=True)
        assert blocks.shape == (3, 4, sealed)
        for row in blocks.reshape(-1, sealed):
            got = sorted(b for b in row if b >= 0)
            assert got == list(range(len(got))) and len(got) >= sealed - 1
        one, b1 = s.attend(0, q[-1], top_k=2, return_blocks=True)
        assert one.shape == (4, 16) and b1.shape == (4, 2)


def test_log_notes_on_rebuilt_index(tmp_path, rng):
    d = tmp_path / "s"
    with make(d, rng):
        pass
    for f in os.listdir(d):
        if f.endswith(".lmki"):
            os.unlink(d / f)
    seen = []
    with landmark.Session(d, log=seen.append) as s:
        assert s.tokens(0) == 100
    assert seen, "rebuilding a missing index is reported"
    with landmark.Session(d) as s:
        assert s.open_notes == []


def test_threads_give_equal_results(tmp_path, rng):
    d = tmp_path / "s"
    q = rng.standard_normal((16, 4, 16))
    with make(d, rng, tokens=600, threads=1) as s:
        r1 = [s.attend(l, q, top_k=k, mode=m) for l in (0, 1) for k in (2, "all")
              for m in ("grouped", "union")]
    with landmark.Session(d, threads=2) as s:
        assert s.threads == 2
        r2 = [s.attend(l, q, top_k=k, mode=m) for l in (0, 1) for k in (2, "all")
              for m in ("grouped", "union")]
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)


def test_transactions(tmp_path, rng):
    d = tmp_path / "s"
    q = rng.standard_normal((4, 16)).astype(np.float32)
    with make(d, rng, tokens=40) as s:
        digest = s.data_digest()
        before = s.attend(0, q, top_k="all")
        extra = [kv(rng, 13, 2, 16) for _ in range(2)]
        # aborted: nothing stays, attention inside saw the new tokens
        s.begin()
        assert s.in_transaction
        with pytest.raises(landmark.StateError):
            s.begin()
        for layer in range(2):
            s.append(layer, *extra[layer])
        assert s.tokens(0) == 53
        inside = s.attend(0, q, top_k="all")
        with pytest.raises(landmark.StateError):
            s.truncate(10)
        with pytest.raises(landmark.StateError):
            s.data_digest()
        s.abort()
        assert not s.in_transaction and s.tokens(0) == 40 and s.data_digest() == digest
        assert np.array_equal(s.attend(0, q, top_k="all"), before)
        with pytest.raises(landmark.StateError):
            s.abort()
        # persist=False answers from the same point without changing it
        with s.transaction(persist=False):
            for layer in range(2):
                s.append(layer, *extra[layer])
            assert np.array_equal(s.attend(0, q, top_k="all"), inside)
        assert s.tokens(1) == 40 and s.data_digest() == digest
        # an exception inside aborts and propagates
        with pytest.raises(RuntimeError):
            with s.transaction():
                s.append(0, *extra[0])
                raise RuntimeError("stop")
        assert s.tokens(0) == 40 and not s.in_transaction
        # committed: the same as plain appends
        with s.transaction():
            for layer in range(2):
                s.append(layer, *extra[layer])
        assert s.tokens(0) == 53 and s.tokens(1) == 53
        assert np.array_equal(s.attend(0, q, top_k="all"), inside)
        committed = s.data_digest()
        # closing with one open aborts it
        s.begin()
        s.append(0, *kv(rng, 5, 2, 16))
    with landmark.Session(d) as s:
        assert s.tokens(0) == 53 and s.data_digest() == committed
