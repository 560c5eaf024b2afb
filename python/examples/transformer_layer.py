#!/usr/bin/env python3
"""A small NumPy transformer layer over a long random stream, with landmark as its KV store.

Every chunk of the stream goes through one pre-norm decoder layer (grouped-query attention
with rotary positions, then a SwiGLU MLP): its keys and values are appended to a landmark
session and its queries attend with retrieval (top-k blocks plus the local window), so the
layer never holds more than one chunk of K/V in memory. At the end the last chunk is
recomputed with every block retrieved and with plain dense attention over the whole stream
kept aside, to show what retrieval changes.

    python3 examples/transformer_layer.py --tokens 65536 --top-k 8 --threads 2
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np

import landmark


def rms_norm(x, w):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w


def rope(x, pos, base=10000.0):
    """Rotary embedding of x (n, heads, head_dim) at positions pos (n,), half-split layout."""
    d = x.shape[-1] // 2
    inv = base ** (-np.arange(d, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]       # (n, d)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :d], x[..., d:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(np.float32)


class Layer:
    def __init__(self, rng, d_model, heads, kv_heads, head_dim, d_ff):
        s = 1 / np.sqrt(d_model)
        f32 = np.float32
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.wq = (rng.standard_normal((d_model, heads * head_dim)) * s).astype(f32)
        self.wk = (rng.standard_normal((d_model, kv_heads * head_dim)) * s).astype(f32)
        self.wv = (rng.standard_normal((d_model, kv_heads * head_dim)) * s).astype(f32)
        self.wo = (rng.standard_normal((heads * head_dim, d_model)) / np.sqrt(heads * head_dim)).astype(f32)
        self.w1 = (rng.standard_normal((d_model, d_ff)) * s).astype(f32)
        self.w3 = (rng.standard_normal((d_model, d_ff)) * s).astype(f32)
        self.w2 = (rng.standard_normal((d_ff, d_model)) / np.sqrt(d_ff)).astype(f32)
        self.n1 = np.ones(d_model, f32)
        self.n2 = np.ones(d_model, f32)

    def qkv(self, x, pos):
        """x (n, d_model) at positions pos -> q (n, heads, hd), k, v (n, kv_heads, hd)."""
        h = rms_norm(x, self.n1)
        n = x.shape[0]
        q = (h @ self.wq).reshape(n, self.heads, self.head_dim)
        k = (h @ self.wk).reshape(n, self.kv_heads, self.head_dim)
        v = (h @ self.wv).reshape(n, self.kv_heads, self.head_dim)
        return rope(q, pos), rope(k, pos), v

    def finish(self, x, attn):
        """Residuals and the MLP after attention: attn (n, heads, hd)."""
        x = x + attn.reshape(x.shape[0], -1) @ self.wo
        h = rms_norm(x, self.n2)
        g = h @ self.w1
        return x + ((g / (1 + np.exp(-g))) * (h @ self.w3)) @ self.w2


def dense_attention(q, K, V, p0):
    """Causal softmax attention of q (n, H, hd) at positions p0.. over K, V (T, G, hd)."""
    n, H, hd = q.shape
    G = K.shape[1]
    Kh = np.repeat(K, H // G, axis=1).astype(np.float64)
    Vh = np.repeat(V, H // G, axis=1).astype(np.float64)
    s = np.matmul(q.astype(np.float64).transpose(1, 0, 2), Kh.transpose(1, 2, 0)) / np.sqrt(hd)
    T = K.shape[0]
    s[:, np.arange(T)[None, :] > (p0 + np.arange(n))[:, None]] = -np.inf
    w = np.exp(s - s.max(axis=2, keepdims=True))
    w /= w.sum(axis=2, keepdims=True)
    return np.matmul(w, Vh.transpose(1, 0, 2)).transpose(1, 0, 2).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--local", type=int, default=256, help="local window in tokens")
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", help="session directory (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    d_model, heads, kv_heads, head_dim = 256, 8, 2, 32
    layer = Layer(rng, d_model, heads, kv_heads, head_dim, 4 * d_model)
    tmp = None
    path = a.dir
    if path is None:
        tmp = tempfile.mkdtemp(prefix="landmark-example-")
        path = os.path.join(tmp, "session")
    kept_k, kept_v = [], []   # only for the dense comparison at the end
    try:
        with landmark.Session(path, create=True, layers=1, heads=heads, kv_heads=kv_heads,
                              head_dim=head_dim, block_len=a.block_len, dtype=a.dtype,
                              durability="none", threads=a.threads) as s:
            start = s.tokens(0)
            t0 = time.perf_counter()
            t_attn = 0.0
            x_last = None
            for p0 in range(start, start + a.tokens, a.chunk):
                n = min(a.chunk, start + a.tokens - p0)
                x = rng.standard_normal((n, d_model)).astype(np.float32)  # the stream
                pos = np.arange(p0, p0 + n)
                q, k, v = layer.qkv(x, pos)
                s.append(0, k, v)
                kept_k.append(k)
                kept_v.append(v)
                ta = time.perf_counter()
                attn = s.attend(0, q, top_k=a.top_k, mode="grouped", n_local=a.local)
                t_attn += time.perf_counter() - ta
                y = layer.finish(x, attn)
                x_last, q_last, y_last = x, q, y
            s.sync()
            dt = time.perf_counter() - t0
            inf = s.info()
            print("stream: %d tokens in chunks of %d, %.0f tokens/s (attention %.1f s)"
                  % (a.tokens, a.chunk, a.tokens / dt, t_attn))
            print("session: %d blocks of %d per KV head, %s, %.1f MB on disk at %s"
                  % (inf["blocks"], inf["block_len"], inf["dtype"], inf["disk_bytes"] / 2**20,
                     path))
            # the last chunk again: every block retrieved, and dense over the whole stream
            T = s.tokens(0)
            n = q_last.shape[0]
            every = s.attend(0, q_last, top_k="all", mode="union")
            K = np.concatenate(kept_k)
            V = np.concatenate(kept_v)
            if a.dtype == "f16":
                K, V = K.astype(np.float16), V.astype(np.float16)
            dense = dense_attention(q_last, K[start:], V[start:], T - n - start) \
                if start == 0 else None
            y_every = layer.finish(x_last, every)
            rel = np.linalg.norm(y_last - y_every) / np.linalg.norm(y_every)
            print("last chunk: layer output with top-%d retrieval vs every block: "
                  "relative difference %.3g" % (a.top_k, rel))
            if dense is not None:
                e = np.abs(every - dense).max() / np.abs(dense).max()
                print("every block (union) vs dense NumPy attention: max difference %.2g "
                      "(of the largest value)" % e)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
