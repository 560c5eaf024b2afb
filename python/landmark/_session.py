"""landmark.Session: one session directory (engine/lmk_session.h) from Python.

Arrays: any float array (float16, float32, float64; contiguous or not) is accepted and
converted to contiguous float32 once; outputs are new float32 arrays. Shapes:
  append(layer, k, v)   k, v (n_tokens, kv_heads, head_dim), or (kv_heads, head_dim) for one
  attend(layer, q)      q (n_queries, heads, head_dim) -> out of the same shape, or
                        (heads, head_dim) -> (heads, head_dim) for one query
Positions are used as given (the caller rotates keys and queries): the engine's position
policies with rotation callbacks stay in the C API.

Threads: the GIL is released during appends, attends and the maintenance calls (cffi
releases it around every C call); a lock per Session serializes calls on one handle (the
library's handles are used by one thread at a time), so one Session may be shared by
threads and separate Sessions run in parallel.
"""
import contextlib
import os
import threading

import numpy as np

from ._errors import DtypeError, InvalidError, StateError, error_for
from ._ffi import ffi, lib

_DTYPES = {None: lib.LMK_DTYPE_AUTO, "auto": lib.LMK_DTYPE_AUTO, "f32": lib.LMK_DTYPE_F32,
           "f16": lib.LMK_DTYPE_F16}
_LANDMARKS = {None: lib.LMK_LANDMARK_AUTO, "auto": lib.LMK_LANDMARK_AUTO,
              "mean": lib.LMK_LANDMARK_MEAN, "token": lib.LMK_LANDMARK_TOKEN,
              "keys": lib.LMK_LANDMARK_KEYS, "attn": lib.LMK_LANDMARK_ATTN,
              "query": lib.LMK_LANDMARK_QUERY, "outlier": lib.LMK_LANDMARK_OUTLIER}
_DURABILITY = {"full": lib.LMK_DURABLE_FULL, "nometa": lib.LMK_DURABLE_NOMETA,
               "none": lib.LMK_DURABLE_NONE}
_MODES = {"grouped": lib.LMK_MODE_GROUPED, "union": lib.LMK_MODE_UNION}
_RETRIEVE = {"qhead": lib.LMK_RETRIEVE_QHEAD, "kvhead": lib.LMK_RETRIEVE_KVHEAD,
             "chunk": lib.LMK_RETRIEVE_CHUNK}
_DTYPE_NAMES = {lib.LMK_DTYPE_F32: "f32", lib.LMK_DTYPE_F16: "f16"}
_LANDMARK_NAMES = {v: k for k, v in _LANDMARKS.items() if isinstance(k, str) and k != "auto"}


def _choice(name, value, table):
    key = value.lower() if isinstance(value, str) else value
    if key not in table:
        names = ", ".join(repr(k) for k in table if isinstance(k, str))
        raise InvalidError("%s must be one of %s, not %r" % (name, names, value))
    return table[key]


def _int(name, value, lo=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidError("%s must be an integer, not %r" % (name, value))
    value = int(value)
    if lo is not None and value < lo:
        raise InvalidError("%s must be >= %d, not %d" % (name, lo, value))
    return value


def _floats(name, a):
    """a as a C-contiguous float32 array, converting at most once."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # noqa: BLE001 - anything numpy cannot take
            raise DtypeError("%s: not an array (%s)" % (name, e)) from None
    if a.dtype.kind != "f":
        raise DtypeError("%s must be a float array (float16, float32 or float64), not %s"
                         % (name, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float32)


def _path(name, p):
    try:
        return os.fsencode(p)
    except TypeError:
        raise InvalidError("%s must be a path, not %r" % (name, p)) from None


class Session:
    """A landmark session directory.

    Session(dir, create=False, layers=0, heads=0, kv_heads=0, head_dim=0, block_len=0,
            dtype=None, landmark=None, index=None, durability="nometa", threads=1,
            read_only=False, fingerprint=None, log=None, n_repr=0)

    landmark: "mean" or "token", or a training-free representative with several index entries
    per block ("keys", "attn", "query", "outlier"; n_repr entries, 0 = the library's default;
    README "Retrieval for ordinary models").
    Creating (create=True on a directory holding no session) needs layers, heads, kv_heads
    and head_dim; block_len 0 means 64, dtype None "f16", landmark None "mean", index None
    "Flat". Reopening takes the stored shape: 0 / None mean "as stored", other values must
    match (MismatchError). `log(msg)` receives the open's progress notes (an index rebuilt or
    caught up); without it they are kept in `open_notes`. Use as a context manager, or call
    close().
    """

    def __init__(self, dir, create=False, layers=0, heads=0, kv_heads=0, head_dim=0,
                 block_len=0, dtype=None, landmark=None, index=None, durability="nometa",
                 threads=1, read_only=False, fingerprint=None, log=None, n_repr=0):
        self._h = None
        self._lock = threading.Lock()
        self.open_notes = []
        o = lib.lmk_session_opts_default()
        o.n_layers = _int("layers", layers, 0)
        o.n_heads = _int("heads", heads, 0)
        o.n_kv_heads = _int("kv_heads", kv_heads, 0)
        o.head_dim = _int("head_dim", head_dim, 0)
        o.block_len = _int("block_len", block_len, 0)
        o.dtype = _choice("dtype", dtype, _DTYPES)
        o.landmark = _choice("landmark", landmark, _LANDMARKS)
        o.n_repr = _int("n_repr", n_repr, 0)
        o.durability = _choice("durability", durability, _DURABILITY)
        o.n_threads = _int("threads", threads, 1)
        o.create = 1 if create else 0
        o.read_only = 1 if read_only else 0
        keep = []
        if index is not None:
            keep.append(ffi.new("char[]", str(index).encode()))
            o.index_spec = keep[-1]
        if fingerprint is not None:
            keep.append(ffi.new("char[]", str(fingerprint).encode()))
            o.fingerprint = keep[-1]
        notes = self.open_notes

        def on_log(ud, msg):
            text = ffi.string(msg).decode(errors="replace")
            if log is not None:
                log(text)
            else:
                notes.append(text)

        # kept for the handle's lifetime: the library may log later (e.g. on reindex)
        self._log_cb = ffi.callback("void(void *, const char *)", on_log)
        o.log = self._log_cb
        self.dir = os.fspath(dir)
        out = ffi.new("lmk_session **")
        err = ffi.new("char[1024]")
        rc = lib.lmk_session_open(_path("dir", dir), ffi.new("lmk_session_opts *", o), out,
                                  err, 1024)
        if rc != 0:
            raise error_for(rc, ffi.string(err).decode(errors="replace")
                            or ffi.string(lib.lmk_strerror(rc)).decode())
        self._h = out[0]
        self.threads = o.n_threads
        inf = self._info_locked()
        self.layers, self.heads = inf["layers"], inf["heads"]
        self.kv_heads, self.head_dim = inf["kv_heads"], inf["head_dim"]
        self.block_len, self.dtype = inf["block_len"], inf["dtype"]
        self.landmark = inf["landmark"]
        self.stats = None

    # ---- lifetime ----

    def close(self):
        """Save the index files, sync and release the handle. Idempotent."""
        with self._lock:
            h, self._h = self._h, None
            if h is not None:
                lib.lmk_session_close(h)

    @property
    def closed(self):
        return self._h is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        h = getattr(self, "_h", None)
        if h is not None:
            self._h = None
            try:
                lib.lmk_session_close(h)
            except Exception:  # noqa: BLE001 - at interpreter exit the module may be gone
                pass

    def __repr__(self):
        if self._h is None:
            return "<landmark.Session %r closed>" % self.dir
        return ("<landmark.Session %r layers=%d heads=%d/%d head_dim=%d block_len=%d %s>"
                % (self.dir, self.layers, self.heads, self.kv_heads, self.head_dim,
                   self.block_len, self.dtype))

    # ---- helpers (called with the lock held) ----

    def _handle(self):
        if self._h is None:
            raise StateError("the session %r is closed" % self.dir, -1012)
        return self._h

    def _check(self, rc):
        if rc != 0:
            msg = ffi.string(lib.lmk_session_errmsg(self._h)).decode(errors="replace")
            raise error_for(rc, msg or ffi.string(lib.lmk_strerror(rc)).decode())

    def _layer(self, layer):
        layer = _int("layer", layer)
        if not 0 <= layer < self.layers:
            raise InvalidError("layer %d is out of range (the session has %d layers)"
                               % (layer, self.layers))
        return layer

    def _info_locked(self):
        inf = ffi.new("lmk_session_info *")
        self._check(lib.lmk_session_info_get(self._handle(), inf))
        return {
            "format_version": inf.format_version,
            "layers": inf.n_layers, "heads": inf.n_heads, "kv_heads": inf.n_kv_heads,
            "head_dim": inf.head_dim, "block_len": inf.block_len,
            "dtype": _DTYPE_NAMES.get(inf.dtype, str(inf.dtype)),
            "landmark": _LANDMARK_NAMES.get(inf.landmark, str(inf.landmark)),
            "n_repr": int(inf.n_repr),
            "index": ffi.string(inf.index_spec).decode(errors="replace"),
            "fingerprint": ffi.string(inf.fingerprint).decode(errors="replace"),
            "tokens": inf.tokens, "blocks": inf.blocks, "disk_bytes": inf.disk_bytes,
        }

    def _kv_array(self, name, a):
        a = _floats(name, a)
        want = (self.kv_heads, self.head_dim)
        if a.ndim == 2:
            a = a.reshape((1,) + a.shape)
        if a.ndim != 3 or a.shape[1:] != want:
            raise InvalidError("%s must have shape (n_tokens, %d, %d) (tokens, kv_heads, head_dim)"
                               " or (%d, %d), not %s" % (name, want[0], want[1], want[0],
                                                         want[1], a.shape))
        return a

    # ---- the session API ----

    def append(self, layer, k, v):
        """Append tokens at `layer`: k, v (n_tokens, kv_heads, head_dim). Committed when it
        returns; on an error nothing is appended."""
        layer = self._layer(layer)
        k = self._kv_array("k", k)
        v = self._kv_array("v", v)
        if k.shape != v.shape:
            raise InvalidError("k and v must have the same shape, not %s and %s"
                               % (k.shape, v.shape))
        if k.shape[0] == 0:
            return
        with self._lock:
            h = self._handle()
            self._check(lib.lmk_session_append(h, layer, k.shape[0],
                                               ffi.from_buffer("float[]", k),
                                               ffi.from_buffer("float[]", v)))

    def attend(self, layer, q, top_k=8, mode="grouped", n_sink=0, n_local=0, n_recent=0,
               retrieve="qhead", ef_search=None, nprobe=None, return_blocks=False):
        """Attend at `layer` with the n_queries most recent tokens of the layer as the query
        positions: q (n_queries, heads, head_dim) -> out (n_queries, heads, head_dim) f32
        (or (heads, head_dim) -> (heads, head_dim)). top_k: blocks retrieved by search, an
        int >= 0 or "all". With return_blocks=True returns (out, blocks): the retrieved block
        ids of every (query, head), int64 (n_queries, heads, cap), -1 padded. The timing of
        the call is left in `self.stats`."""
        layer = self._layer(layer)
        q = _floats("q", q)
        single = q.ndim == 2
        if single:
            q = q.reshape((1,) + q.shape)
        if q.ndim != 3 or q.shape[1:] != (self.heads, self.head_dim) or q.shape[0] < 1:
            raise InvalidError("q must have shape (n_queries, %d, %d) (queries, heads, head_dim)"
                               " or (%d, %d), not %s" % (self.heads, self.head_dim, self.heads,
                                                         self.head_dim, q.shape))
        o = lib.lmk_attend_opts_default()
        if isinstance(top_k, str) and top_k == "all":
            o.top_k = -1
        else:
            o.top_k = _int("top_k", top_k, -1)
        o.mode = _choice("mode", mode, _MODES)
        o.retrieve = _choice("retrieve", retrieve, _RETRIEVE)
        o.n_sink = _int("n_sink", n_sink, 0)
        o.n_local = _int("n_local", n_local, 0)
        o.n_recent = _int("n_recent", n_recent, 0)
        o.ef_search = _int("ef_search", ef_search, 1, allow_none=True) or 0
        o.nprobe = _int("nprobe", nprobe, 1, allow_none=True) or 0
        nq = q.shape[0]
        out = np.empty(q.shape, dtype=np.float32)
        st = ffi.new("lmk_attend_stats *")
        blocks = None
        with self._lock:
            h = self._handle()
            if return_blocks:
                if o.top_k < 0:
                    cap = max(1, lib.lmk_session_tokens(h, layer) // self.block_len)
                else:
                    cap = max(1, o.top_k + o.n_recent)
                blocks = np.empty((nq, self.heads, cap), dtype=np.int64)
                bbuf = ffi.from_buffer("int64_t[]", blocks, require_writable=True)
                st.blocks = bbuf  # bbuf stays referenced until the call returns
                st.blocks_cap = cap
            rc = lib.lmk_session_attend(h, layer, nq, ffi.from_buffer("float[]", q),
                                        ffi.new("lmk_attend_opts *", o),
                                        ffi.from_buffer("float[]", out, require_writable=True),
                                        st)
            self._check(rc)
        self.stats = {"search_s": st.search_s, "fetch_s": st.fetch_s, "attn_s": st.attn_s,
                      "blocks_fetched": st.blocks_fetched, "bytes_fetched": st.bytes_fetched}
        if single:
            out = out[0]
            if blocks is not None:
                blocks = blocks[0]
        return (out, blocks) if return_blocks else out

    def info(self):
        """Shape, dtype, landmark source, index spec, fingerprint, tokens, sealed blocks and
        disk bytes, as a dict."""
        with self._lock:
            return self._info_locked()

    def tokens(self, layer):
        """Tokens appended so far at `layer`."""
        layer = self._layer(layer)
        with self._lock:
            return int(lib.lmk_session_tokens(self._handle(), layer))

    def data_digest(self):
        """64-bit digest of the stored data (equal for sessions holding equal data); as an
        int; `landmark info` prints it as 16 hex digits."""
        d = ffi.new("uint64_t *")
        with self._lock:
            self._handle()
            self._check(lib.lmk_session_data_digest(self._h, d))
        return int(d[0])

    def sync(self):
        """Flush the committed data and the index files to stable storage."""
        with self._lock:
            self._check(lib.lmk_session_sync(self._handle()))

    def truncate(self, n_tokens):
        """Cut every layer back to n_tokens."""
        n = _int("n_tokens", n_tokens, 0)
        with self._lock:
            self._check(lib.lmk_session_truncate(self._handle(), n))

    def fork(self, dst):
        """Write a compact copy of the session to the new directory dst."""
        p = _path("dst", dst)
        with self._lock:
            self._check(lib.lmk_session_fork(self._handle(), p))

    def reindex(self, spec):
        """Rebuild every landmark index with another FAISS factory spec."""
        s = str(spec).encode()
        with self._lock:
            self._check(lib.lmk_session_reindex(self._handle(), s))

    def verify(self):
        """Check every stored value's checksum, the metadata and the indices' coverage, in
        this process. Returns {"ok", "blocks_checked", "errors", "messages"}."""
        msgs = []

        @ffi.callback("void(void *, const char *)")
        def report(ud, msg):
            msgs.append(ffi.string(msg).decode(errors="replace"))

        checked = ffi.new("int64_t *")
        nerr = ffi.new("int64_t *")
        with self._lock:
            self._check(lib.lmk_session_verify(self._handle(), report, ffi.NULL, checked, nerr))
        return {"ok": nerr[0] == 0, "blocks_checked": int(checked[0]), "errors": int(nerr[0]),
                "messages": msgs}

    # ---- transactions ----

    def begin(self):
        """Open a transaction: the appends that follow, at any layers, become one commit at
        commit(), or are undone by abort(). Inside it attend, tokens, read_kv and info see
        the uncommitted tokens; truncate, fork, reindex, sync, verify and data_digest raise
        StateError. Closing the session with a transaction open aborts it."""
        with self._lock:
            self._check(lib.lmk_session_begin(self._handle()))

    def commit(self):
        """Commit the open transaction in one store commit. On failure it stays open."""
        with self._lock:
            self._check(lib.lmk_session_commit(self._handle()))

    def abort(self):
        """Undo the open transaction: the session is as it was at begin()."""
        with self._lock:
            self._check(lib.lmk_session_abort(self._handle()))

    @property
    def in_transaction(self):
        """True while a transaction begun with begin() is open."""
        with self._lock:
            return self._h is not None and bool(lib.lmk_session_in_txn(self._h))

    @contextlib.contextmanager
    def transaction(self, persist=True):
        """`with s.transaction(): ...` commits when the block ends and aborts when it raises;
        with persist=False it always aborts (answer from the session without changing it)."""
        self.begin()
        try:
            yield self
        except BaseException:
            if self.in_transaction:
                self.abort()
            raise
        if persist:
            self.commit()
        else:
            self.abort()

    def read_kv(self, layer, t0, n):
        """The stored (dtype-rounded) keys and values of tokens [t0, t0+n) at `layer`, as two
        float32 arrays (n, kv_heads, head_dim)."""
        layer = self._layer(layer)
        t0 = _int("t0", t0, 0)
        n = _int("n", n, 0)
        k = np.empty((n, self.kv_heads, self.head_dim), dtype=np.float32)
        v = np.empty_like(k)
        if n == 0:
            return k, v
        with self._lock:
            self._check(lib.lmk_session_read_kv(self._handle(), layer, t0, n,
                                                ffi.from_buffer("float[]", k, require_writable=True),
                                                ffi.from_buffer("float[]", v, require_writable=True)))
        return k, v
