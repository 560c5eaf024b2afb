"""landmark: retrieval attention with block K/V on disk (LMDB) and landmark keys in FAISS.

    import numpy as np, landmark
    with landmark.Session("ctx", create=True, layers=1, heads=8, kv_heads=2, head_dim=64,
                          block_len=64, dtype="f16") as s:
        s.append(0, k, v)                     # (n_tokens, kv_heads, head_dim) each
        out = s.attend(0, q, top_k=8)         # (n_queries, heads, head_dim) -> same shape

Session: engine/lmk_session.h from Python (see landmark.Session). bench: index types
measured on your own arrays (bench/lmk_bench.h). Errors are landmark.Error subclasses
carrying the library's `code` and `message`. Importing the module sets OMP_WAIT_POLICY to
passive unless it is set (libgomp reads it when the library loads).
"""
from ._ffi import LIB_PATH as _LIB_PATH, ffi as _ffi, lib as _lib
from ._errors import (BusyError, CorruptError, DtypeError, ErrnoError, Error,  # noqa: F401
                      FormatError, IndexBackendError, InvalidError, MapFullError,
                      MismatchError, NotFoundError, ReadOnlyError, StateError, StoreError,
                      UnsupportedError, VersionError)
from ._session import Session  # noqa: F401
from ._bench import bench, format_table, write_recorded  # noqa: F401

__version__ = "0.1.0"


def strerror(code):
    """The library's description of a status code."""
    return _ffi.string(_lib.lmk_strerror(int(code))).decode()


def library_path():
    """The liblandmark.so this module loaded."""
    return _LIB_PATH
