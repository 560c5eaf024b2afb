"""Threads: the GIL is released during attends and appends (another Python thread makes
progress), and one Session shared by threads serializes its calls."""
import threading
import time

import numpy as np

import landmark
from conftest import kv


class Spinner:
    """A pure-Python thread counting as fast as it can while it holds the GIL."""

    def __init__(self):
        self.n = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            self.n += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()


def test_other_thread_progresses_during_attend(tmp_path, rng):
    H, G, D = 8, 2, 64
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=H, kv_heads=G,
                          head_dim=D, block_len=64, dtype="f16") as s:
        for _ in range(4):
            s.append(0, *kv(rng, 4096, G, D))
        q = rng.standard_normal((32, H, D)).astype(np.float32)
        s.attend(0, q[:1], top_k="all")  # warm up
        with Spinner() as sp:
            time.sleep(0.2)  # the spinner's rate alone (this thread sleeping)
            n0, t0 = sp.n, time.perf_counter()
            time.sleep(0.2)
            rate = (sp.n - n0) / (time.perf_counter() - t0)
            # a long attend: with the GIL held the spinner would get at most one switch
            # interval (5 ms) of it
            a0, t0 = sp.n, time.perf_counter()
            s.attend(0, q, top_k="all", mode="union")
            a1, dt = sp.n, time.perf_counter() - t0
        share = (a1 - a0) / (rate * dt)
        print("attend %.3f s, spinner ran %.0f%% of its solo rate" % (dt, 100 * share))
        assert dt > 0.05, "the attend is too short to judge"
        assert share > 0.1, share


def test_other_thread_progresses_during_append(tmp_path, rng):
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=4, kv_heads=2,
                          head_dim=64, block_len=64, durability="full") as s:
        k, v = kv(rng, 20000, 2, 64)
        with Spinner() as sp:
            time.sleep(0.1)
            a0, t0 = sp.n, time.perf_counter()
            s.append(0, k, v)
            a1, dt = sp.n, time.perf_counter() - t0
        print("append %.3f s, spinner %d" % (dt, a1 - a0))
        assert a1 - a0 > 1000


def test_one_session_shared_by_threads(tmp_path, rng):
    """Appends and attends from several threads on one handle: serialized by the Session's
    lock, every append lands once and every attend sees whole appends."""
    with landmark.Session(tmp_path / "s", create=True, layers=1, heads=4, kv_heads=2,
                          head_dim=16, block_len=8, threads=2) as s:
        s.append(0, *kv(rng, 64, 2, 16))
        chunks = [kv(np.random.default_rng(i), 10, 2, 16) for i in range(40)]
        q = rng.standard_normal((1, 4, 16))
        errors = []

        def writer(part):
            try:
                for k, v in part:
                    s.append(0, k, v)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def reader():
            try:
                for _ in range(50):
                    out = s.attend(0, q, top_k=2)
                    assert np.isfinite(out).all()
                    assert (s.tokens(0) - 64) % 10 == 0
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=writer, args=(chunks[i::4],)) for i in range(4)]
        ts += [threading.Thread(target=reader) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        assert s.tokens(0) == 64 + 400


def test_sessions_in_parallel_threads(tmp_path, rng):
    """Separate Sessions in separate threads give the results they give alone."""
    q = rng.standard_normal((8, 4, 16))
    data = [kv(np.random.default_rng(i), 500, 2, 16) for i in range(3)]
    alone = []
    for i, (k, v) in enumerate(data):
        with landmark.Session(tmp_path / ("s%d" % i), create=True, layers=1, heads=4,
                              kv_heads=2, head_dim=16, block_len=8) as s:
            s.append(0, k, v)
            alone.append(s.attend(0, q, top_k=3))
    got = [None] * 3

    def run(i):
        with landmark.Session(tmp_path / ("s%d" % i)) as s:
            for _ in range(20):
                got[i] = s.attend(0, q, top_k=3)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for a, b in zip(alone, got):
        np.testing.assert_array_equal(a, b)
