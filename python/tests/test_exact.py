"""The exactness property through the binding: with every block retrieved (top_k="all"),
union attention equals dense softmax attention and grouped attention equals the dense
grouped computation, from the same stored (f16-rounded when f16) keys and values. The
reference below is plain NumPy in float64, written from the README's "Method"."""
import numpy as np
import pytest

import landmark
from conftest import kv


def reference(K, V, q, p, h, heads, kv_heads, L, mode, n_sink, n_local, token_landmarks):
    """Output of query head h at position p over every candidate block.

    K, V: the stored keys and values (T, kv_heads, head_dim), float64. q: (head_dim,)."""
    D = K.shape[2]
    g = h // (heads // kv_heads)  # the KV head this query head reads
    s = 1.0 / np.sqrt(D)
    # local window: the tail of the block holding p, widened to whole blocks holding any
    # of the n_local most recent positions (p - n_local, p]
    local_start = (p // L) * L
    if n_local > 0:
        local_start = min(local_start, max(p - n_local + 1, 0) // L * L)
    pos = np.arange(p + 1)
    block = pos // L
    sealed = (block + 1) * L <= p
    attended = np.ones(p + 1, bool)
    if token_landmarks:  # the last position of a sealed block is its landmark token
        attended &= ~(sealed & (pos % L == L - 1))
    in_local = attended & (pos >= local_start)
    n_cand = local_start // L  # candidate blocks: sealed, entirely before the window;
    # all of them are retrieved, so no position is a sink (n_sink changes nothing)
    in_blocks = attended & (pos < local_start)
    score = s * (K[: p + 1, g] @ q)
    if mode == "union":
        use = in_local | in_blocks
        w = np.exp(score[use] - score[use].max())
        return (w / w.sum()) @ V[: p + 1, g][use]
    # grouped: one softmax over the local scores and one gate per retrieved block
    gates = []
    for b in range(n_cand):
        if token_landmarks:
            lm = K[b * L + L - 1, g]
        else:
            lm = K[b * L:(b + 1) * L, g].mean(axis=0).astype(np.float32).astype(np.float64)
        gates.append(s * (lm @ q))
    logits = np.concatenate([score[in_local], np.array(gates)])
    w = np.exp(logits - logits.max())
    w /= w.sum()
    out = w[: in_local.sum()] @ V[: p + 1, g][in_local]
    for b, pb in zip(range(n_cand), w[in_local.sum():]):
        members = np.flatnonzero(in_blocks & (block == b))
        e = np.exp(score[members] - score[members].max())
        out = out + pb * (e / e.sum()) @ V[members, g]
    return out


def rel_err(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("mode", ["union", "grouped"])
@pytest.mark.parametrize("landmark_src", ["mean", "token"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 3), (2, 2)])
def test_every_block_retrieved_equals_reference(tmp_path, rng, dtype, mode, landmark_src,
                                                heads, kv_heads):
    D, L = 16, 8
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=heads,
                          kv_heads=kv_heads, head_dim=D, block_len=L, dtype=dtype,
                          landmark=landmark_src) as s:
        Ks, Vs = [], []
        worst = 0.0
        # appends of uneven sizes, attends after each, so query positions fall on and
        # around block boundaries
        for n in (5, 3, 8, 1, 30, 17, 64, 9, 7):
            k, v = kv(rng, n, kv_heads, D)
            s.append(0, k, v)
            Ks.append(k)
            Vs.append(v)
            K = np.concatenate(Ks).astype(np.float64)
            V = np.concatenate(Vs).astype(np.float64)
            if dtype == "f16":  # what the session stores
                K = K.astype(np.float16).astype(np.float64)
                V = V.astype(np.float16).astype(np.float64)
            T = K.shape[0]
            nq = min(T, 6)
            q = rng.standard_normal((nq, heads, D)).astype(np.float32)
            for n_sink, n_local in ((0, 0), (2, 11)):
                out = s.attend(0, q, top_k="all", mode=mode, n_sink=n_sink, n_local=n_local)
                for i in range(nq):
                    p = T - nq + i
                    for h in range(heads):
                        ref = reference(K, V, q[i, h].astype(np.float64), p, h, heads,
                                        kv_heads, L, mode, n_sink, n_local,
                                        landmark_src == "token")
                        worst = max(worst, rel_err(out[i, h], ref))
            # per KV head retrieval of every block is the same set
            np.testing.assert_array_equal(
                s.attend(0, q, top_k="all", mode=mode, retrieve="kvhead"),
                s.attend(0, q, top_k="all", mode=mode))
        print("worst relative error", worst)
        assert worst < 1e-5, worst
        # the stored values are what the reference used
        k, v = s.read_kv(0, 0, T)
        np.testing.assert_array_equal(k, K.astype(np.float32))
        np.testing.assert_array_equal(v, V.astype(np.float32))


def test_union_of_everything_is_dense_causal_attention(tmp_path, rng):
    """The plainest statement: union over every block = softmax(q K^T / sqrt(d)) V."""
    T, H, G, D = 300, 8, 2, 32
    k, v = kv(rng, T, G, D)
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=H, kv_heads=G,
                          head_dim=D, block_len=16, dtype="f32") as s:
        s.append(0, k, v)
        out = s.attend(0, q, top_k="all", mode="union")  # T queries at positions 0..T-1
    kk = np.repeat(k.astype(np.float64), H // G, axis=1)  # (T, H, D)
    vv = np.repeat(v.astype(np.float64), H // G, axis=1)
    scores = np.einsum("thd,shd->hts", q.astype(np.float64), kk) / np.sqrt(D)
    scores[:, np.triu(np.ones((T, T), bool), 1)] = -np.inf  # causal
    w = np.exp(scores - scores.max(axis=2, keepdims=True))
    w /= w.sum(axis=2, keepdims=True)
    ref = np.einsum("hts,shd->thd", w, vv)
    err = np.linalg.norm(out - ref, axis=2) / np.linalg.norm(ref, axis=2)
    assert err.max() < 1e-5, err.max()
