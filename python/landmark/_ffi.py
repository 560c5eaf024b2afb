"""The C declarations the package uses (engine/lmk_session.h, bench/lmk_bench.h,
base/lmk_error.h), copied exactly (cffi's ABI mode lays the structs out from them; the
tests check the layouts against the C compiler), and the loading of liblandmark.

OMP_WAIT_POLICY is set to passive before the library (and with it libgomp) is loaded, as the
`landmark` command does: libgomp's default spinning starves FAISS and OpenBLAS on few cores.
A value already in the environment is kept.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import cffi  # noqa: E402

CDEF = r"""
enum {
    LMK_OK = 0, LMK_EINVAL = -1001, LMK_EUNSUPPORTED = -1002, LMK_EINDEX = -1003,
    LMK_ESTORE = -1004, LMK_ECORRUPT = -1005, LMK_EVERSION = -1006, LMK_EMISMATCH = -1007,
    LMK_EBUSY = -1008, LMK_ENOTFOUND = -1009, LMK_EREADONLY = -1010, LMK_EMAPFULL = -1011,
    LMK_ESTATE = -1012, LMK_EFORMAT = -1013,
};
const char *lmk_strerror(int code);

typedef struct lmk_session lmk_session;
typedef enum { LMK_DTYPE_AUTO = 0, LMK_DTYPE_F32 = 1, LMK_DTYPE_F16 = 2 } lmk_dtype;
typedef enum { LMK_LANDMARK_AUTO = 0, LMK_LANDMARK_MEAN = 1, LMK_LANDMARK_TOKEN = 2,
               LMK_LANDMARK_KEYS = 3, LMK_LANDMARK_ATTN = 4, LMK_LANDMARK_QUERY = 5,
               LMK_LANDMARK_OUTLIER = 6 } lmk_landmark_src;
typedef enum { LMK_MODE_GROUPED = 0, LMK_MODE_UNION = 1 } lmk_mode;
typedef enum { LMK_RETRIEVE_QHEAD = 0, LMK_RETRIEVE_KVHEAD = 1, LMK_RETRIEVE_CHUNK = 2 } lmk_retrieve;
typedef enum { LMK_DURABLE_FULL = 0, LMK_DURABLE_NOMETA = 1, LMK_DURABLE_NONE = 2 } lmk_durability;

typedef struct lmk_session_opts {
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int block_len;
    lmk_dtype dtype;
    lmk_landmark_src landmark;
    int n_repr;
    const char *index_spec;
    const char *fingerprint;
    int create;
    int read_only;
    int n_threads;
    lmk_durability durability;
    void (*log)(void *ud, const char *msg);
    void *log_ud;
} lmk_session_opts;

lmk_session_opts lmk_session_opts_default(void);
int lmk_session_open(const char *dir, const lmk_session_opts *opts, lmk_session **out,
                     char *errmsg, size_t errmsg_cap);
void lmk_session_close(lmk_session *s);
const char *lmk_session_errmsg(const lmk_session *s);
int lmk_session_append(lmk_session *s, int layer, int64_t n, const float *k, const float *v);

typedef enum { LMK_POS_AS_GIVEN = 0, LMK_POS_SLOTS = 1, LMK_POS_FIXED = 2 } lmk_pos_kind;
typedef struct lmk_pos_policy {
    lmk_pos_kind kind;
    void (*rotate)(void *ud, float *x, int n, int head_dim, const int64_t *pos);
    void *ud;
    int64_t rank_pos;
    int64_t fixed_distance;
} lmk_pos_policy;

typedef struct lmk_attend_opts {
    int top_k;
    int n_recent;
    lmk_mode mode;
    lmk_retrieve retrieve;
    int n_sink;
    int n_local;
    int ef_search;
    int nprobe;
    const lmk_pos_policy *pos;
} lmk_attend_opts;

lmk_attend_opts lmk_attend_opts_default(void);

typedef struct lmk_attend_stats {
    double search_s, fetch_s, attn_s;
    int64_t blocks_fetched;
    int64_t bytes_fetched;
    int64_t *blocks;
    int blocks_cap;
} lmk_attend_stats;

int lmk_session_attend(lmk_session *s, int layer, int64_t n_queries, const float *q,
                       const lmk_attend_opts *opts, float *out, lmk_attend_stats *stats);

typedef struct lmk_session_info {
    int format_version;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    lmk_dtype dtype;
    lmk_landmark_src landmark;
    int n_repr;
    char index_spec[128];
    char fingerprint[256];
    int64_t tokens;
    int64_t blocks;
    uint64_t disk_bytes;
} lmk_session_info;

int lmk_session_info_get(lmk_session *s, lmk_session_info *info);
int64_t lmk_session_tokens(const lmk_session *s, int layer);
int lmk_session_data_digest(lmk_session *s, uint64_t *digest);
int lmk_session_sync(lmk_session *s);
int lmk_session_truncate(lmk_session *s, int64_t n_tokens);
int lmk_session_fork(lmk_session *s, const char *dst);
int lmk_session_reindex(lmk_session *s, const char *spec);
int lmk_session_verify(lmk_session *s, void (*report)(void *ud, const char *msg), void *ud,
                       int64_t *blocks_checked, int64_t *n_errors);
int lmk_session_read_kv(lmk_session *s, int layer, int64_t t0, int64_t n, float *k, float *v);
int lmk_session_landmark(lmk_session *s, int layer, int kv_head, int64_t b, float *l);
int lmk_session_begin(lmk_session *s);
int lmk_session_commit(lmk_session *s);
int lmk_session_abort(lmk_session *s);
int lmk_session_in_txn(const lmk_session *s);

#define LMK_BENCH_MAX_SPECS 32
#define LMK_BENCH_MAX_VALUES 32
#define LMK_BENCH_SPEC_LEN 128

typedef enum lmk_bench_level { LMK_BENCH_NOTE, LMK_BENCH_WARN } lmk_bench_level;
typedef void (*lmk_bench_log_fn)(void *ud, lmk_bench_level level, const char *msg);
typedef void (*lmk_bench_progress_fn)(void *ud, const char *what, int64_t done, int64_t total);

typedef struct lmk_bench_cfg {
    int64_t tokens;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    int top_k;
    int dtype_f16;
    int mode_union;
    int threads;
    int steps;
    int probes;
    uint64_t seed;
    int needle_span;
    const char *recorded;
    const char *preset;
    int n_specs;
    char specs[32][128];
    int n_ef, n_nprobe;
    int ef[32], nprobe[32];
    const char *dir;
    const char *child_exe;
    double child_timeout_s;
    lmk_bench_log_fn log;
    lmk_bench_progress_fn progress;
    void *ud;
} lmk_bench_cfg;

typedef struct lmk_bench_result {
    char index[128];
    int ef_search, nprobe;
    double recall_at_k;
    double needle_hit_rate;
    double attn_rel_err;
    double attn_rel_err_p50;
    double step_ms_p50, step_ms_p99;
    double search_ms, fetch_ms, attn_ms;
    double speedup;
    double ingest_tokens_per_s;
    double build_s;
    double rss_anon_mb, rss_file_mb;
    double child_step_ms_p50;
    double disk_mb;
    double blocks_fetched;
    double bound_ms;
} lmk_bench_result;

typedef struct lmk_bench_dense {
    double step_ms_p50, step_ms_p99;
    double memory_mb;
    int threads;
} lmk_bench_dense;

typedef struct lmk_bench_facts {
    double ingest_s;
    double kv_bytes;
    int64_t blocks;
    int n_needles;
    double wall_s;
    double read_gbs;
} lmk_bench_facts;

typedef struct lmk_bench_report {
    lmk_bench_cfg cfg;
    lmk_bench_facts run;
    lmk_bench_dense dense;
    lmk_bench_result *results;
    int n_results;
} lmk_bench_report;

lmk_bench_cfg lmk_bench_cfg_default(void);
int lmk_bench_cfg_n_settings(const lmk_bench_cfg *c);
int lmk_bench_run(const lmk_bench_cfg *c, lmk_bench_report *out, char *err, size_t err_cap);
void lmk_bench_report_free(lmk_bench_report *r);
int lmk_bench_write_json(const char *path, const lmk_bench_report *r, char *err, size_t err_cap);
const char *lmk_bench_child_exe_default(void);
"""

HERE = os.path.dirname(os.path.abspath(__file__))

ffi = cffi.FFI()
ffi.cdef(CDEF)


def _library_path():
    """liblandmark.so beside the package (installed), else $LANDMARK_LIB (a build tree)."""
    env = os.environ.get("LANDMARK_LIB")
    here = os.path.join(HERE, "liblandmark.so")
    if os.path.exists(here):
        return here
    if env:
        return env
    raise ImportError(
        "landmark: liblandmark.so is not beside the package (%s) and LANDMARK_LIB is not set; "
        "install the package with `python3 -m pip install --no-build-isolation .` from the "
        "source tree (README, \"Python\")" % HERE)


LIB_PATH = _library_path()
lib = ffi.dlopen(LIB_PATH)


def child_exe():
    """The benchmark's reopening helper installed beside the package, else the library's
    default (the build tree's, else the installed one)."""
    here = os.path.join(os.path.dirname(LIB_PATH), "landmark-bench-child")
    if os.access(here, os.X_OK):
        return here
    return ffi.string(lib.lmk_bench_child_exe_default()).decode()
