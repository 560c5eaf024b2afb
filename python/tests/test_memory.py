"""Opening and closing sessions does not leak: resident memory after 2,000 open/close
cycles stays within 5 MB of the figure after 200."""
import time

import numpy as np

import landmark
from conftest import kv


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def test_open_close_cycles(tmp_path, rng):
    d = tmp_path / "s"
    with landmark.Session(d, create=True, layers=2, heads=4, kv_heads=2, head_dim=16,
                          block_len=8) as s:
        for layer in range(2):
            s.append(layer, *kv(rng, 100, 2, 16))
    q = rng.standard_normal((2, 4, 16))
    t0 = time.perf_counter()
    at200 = None
    for i in range(2000):
        # mostly readers; every 10th a writer, every 10th an attend
        with landmark.Session(d, read_only=i % 10 != 5) as s:
            assert s.tokens(1) == 100
            if i % 10 == 0:
                s.attend(i % 2, q, top_k=2)
        if i == 199:
            at200 = rss_mb()
    at2000 = rss_mb()
    print("RSS after 200 cycles %.1f MB, after 2000 %.1f MB (%.1f s)"
          % (at200, at2000, time.perf_counter() - t0))
    assert at2000 - at200 < 5.0
