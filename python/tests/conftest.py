"""Shared helpers of the binding's tests: random K/V streams, the `landmark` command."""
import os
import shutil

import numpy as np
import pytest

import landmark

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))


def find_cli():
    """$LANDMARK_CLI, the build tree's command, the one installed beside the package, or
    the one on PATH; None when there is none."""
    cands = [os.environ.get("LANDMARK_CLI"),
             os.path.join(SOURCE_ROOT, "build", "cli", "landmark"),
             os.path.join(os.path.dirname(os.path.dirname(landmark.__file__)), "bin", "landmark"),
             shutil.which("landmark")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture
def cli():
    c = find_cli()
    if c is None:
        pytest.skip("no `landmark` command found (set LANDMARK_CLI)")
    return c


@pytest.fixture
def rng(request):
    seed = 1234 + sum(map(ord, request.node.name))
    print("seed", seed)
    return np.random.default_rng(seed)


def kv(rng, n, kv_heads, head_dim, dtype=np.float32):
    k = rng.standard_normal((n, kv_heads, head_dim)).astype(dtype)
    v = rng.standard_normal((n, kv_heads, head_dim)).astype(dtype)
    return k, v


def pytest_report_header(config):
    return "landmark: %s (library %s)" % (os.path.dirname(landmark.__file__),
                                          landmark.library_path())
