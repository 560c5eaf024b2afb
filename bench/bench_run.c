/* landmark bench — one run: configuration, ingest, dense baseline, exact reference, and every
 * index spec at every search parameter (lmk_bench.h describes the flow). */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <omp.h>

#include "bench_measure.h"
#include "lmk_clock.h"
#include "lmk_dense.h"
#include "lmk_f16.h"
#include "lmk_index.h"

#define INGEST_CHUNK 4096 /* tokens per append */

/* ---- configuration ---- */

typedef struct preset {
    const char *name;
    int threads;
    int64_t tokens;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len, needle_span;
    const char *specs[6]; /* NULL-terminated */
    int ef[6], nprobe[6]; /* 0-terminated */
} preset;

static const preset presets[] = {
    /* 18 settings: fits the 20 minutes this preset is defined for on 2 cores (the plain
     * inner-product HNSW build alone takes minutes: FAISS computes its inner products
     * without SIMD there); 2 threads: the machine it is defined for has 2 cores */
    {"1m", 2, 1048576, 2, 16, 4, 128, 64, 256,
     {"Flat", "HNSW32", "HNSW32+l2", "IVF256,Flat", "IVF256,SQ8"},
     {16, 64, 256, 512}, {4, 16, 64, 128, 192}},
    {"small", 1, 262144, 2, 8, 2, 64, 64, 64,
     {"Flat", "HNSW32", "HNSW32+l2", "IVF64,Flat", "IVF64,SQ8"},
     {16, 64, 256}, {1, 8, 32}},
    {"tiny", 1, 16384, 1, 4, 2, 32, 32, 16, {"Flat", "HNSW16", "IVF8,Flat"}, {16, 64}, {1, 8}},
};

int lmk_bench_cfg_preset(lmk_bench_cfg *c, const char *name)
{
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (name && !strcmp(name, presets[i].name))
            p = &presets[i];
    if (!p)
        return LMK_EINVAL;
    c->preset = name;
    c->dtype_f16 = 1;
    c->top_k = 8;
    c->steps = 100;
    c->threads = p->threads;
    c->tokens = p->tokens;
    c->n_layers = p->n_layers;
    c->n_heads = p->n_heads;
    c->n_kv_heads = p->n_kv_heads;
    c->head_dim = p->head_dim;
    c->block_len = p->block_len;
    c->needle_span = p->needle_span;
    for (c->n_specs = 0; p->specs[c->n_specs]; c->n_specs++)
        snprintf(c->specs[c->n_specs], LMK_BENCH_SPEC_LEN, "%s", p->specs[c->n_specs]);
    for (c->n_ef = 0; p->ef[c->n_ef]; c->n_ef++)
        c->ef[c->n_ef] = p->ef[c->n_ef];
    for (c->n_nprobe = 0; p->nprobe[c->n_nprobe]; c->n_nprobe++)
        c->nprobe[c->n_nprobe] = p->nprobe[c->n_nprobe];
    return LMK_OK;
}

lmk_bench_cfg lmk_bench_cfg_default(void)
{
    lmk_bench_cfg c;
    memset(&c, 0, sizeof c);
    lmk_bench_cfg_preset(&c, "small");
    c.preset = NULL;
    c.seed = 42;
    c.mode_union = 1;
    c.probes = 1;
    c.child_timeout_s = 900;
    return c;
}

static int spec_is_hnsw(const char *s)
{
    return strstr(s, "HNSW") != NULL;
}

static int spec_is_ivf(const char *s)
{
    return strstr(s, "IVF") != NULL;
}

/* Values swept for spec i: 1 (index default) or the length of its sweep list. */
static int n_values(const lmk_bench_cfg *c, const char *spec, int *hnsw, int *ivf)
{
    *hnsw = spec_is_hnsw(spec) && c->n_ef;
    *ivf = !*hnsw && spec_is_ivf(spec) && c->n_nprobe;
    return *hnsw ? c->n_ef : *ivf ? c->n_nprobe : 1;
}

int lmk_bench_cfg_n_settings(const lmk_bench_cfg *c)
{
    int n = 0, has_flat = 0, h, v;
    for (int i = 0; i < c->n_specs && i < LMK_BENCH_MAX_SPECS; i++) {
        n += n_values(c, c->specs[i], &h, &v);
        has_flat |= !strcmp(c->specs[i], "Flat");
    }
    return n + !has_flat;
}

/* Flat first: the exact reference row, and the spec the stream is ingested with. */
static void flat_first(lmk_bench_cfg *c)
{
    int at = -1;
    for (int i = 0; i < c->n_specs && at < 0; i++)
        if (!strcmp(c->specs[i], "Flat"))
            at = i;
    if (at == 0)
        return;
    if (at < 0) {
        memmove(c->specs[1], c->specs[0], (size_t)c->n_specs * LMK_BENCH_SPEC_LEN);
        c->n_specs++;
    } else {
        memmove(c->specs[1], c->specs[0], (size_t)at * LMK_BENCH_SPEC_LEN);
    }
    snprintf(c->specs[0], LMK_BENCH_SPEC_LEN, "Flat");
}

int bench_cfg_check(const lmk_bench_cfg *c, char *err, size_t cap)
{
    if (c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 2 ||
        c->block_len < 1 || c->top_k < 1 || c->steps < 1 || c->threads < 1 ||
        c->n_specs < 0 || c->n_specs >= LMK_BENCH_MAX_SPECS || c->n_ef < 0 ||
        c->n_ef > LMK_BENCH_MAX_VALUES || c->n_nprobe < 0 ||
        c->n_nprobe > LMK_BENCH_MAX_VALUES) {
        snprintf(err, cap, "configuration out of range (layers %d, heads %d/%d, head_dim %d, "
                 "block_len %d, top-k %d, steps %d, threads %d, %d specs)", c->n_layers,
                 c->n_heads, c->n_kv_heads, c->head_dim, c->block_len, c->top_k, c->steps,
                 c->threads, c->n_specs);
        return LMK_EINVAL;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        snprintf(err, cap, "heads (%d) must be a multiple of kv-heads (%d)", c->n_heads,
                 c->n_kv_heads);
        return LMK_EINVAL;
    }
    if (c->tokens < 2 * (int64_t)c->block_len) {
        snprintf(err, cap, "tokens (%lld) must hold at least two blocks of %d",
                 (long long)c->tokens, c->block_len);
        return LMK_EINVAL;
    }
    /* refuse a bad spec now, not after a long ingest */
    for (int i = 0; i < c->n_specs; i++) {
        lmk_index_opts io = lmk_index_opts_default();
        io.spec = c->specs[i];
        io.dim = c->head_dim;
        lmk_index *ix = NULL;
        char ierr[512] = "";
        if (lmk_index_create(&io, &ix, ierr, sizeof ierr)) {
            snprintf(err, cap, "index \"%s\": %s", c->specs[i], ierr);
            return LMK_EINVAL;
        }
        lmk_index_free(ix);
    }
    return LMK_OK;
}

/* ---- small helpers ---- */

void bench_log(const lmk_bench_cfg *c, lmk_bench_level lvl, const char *fmt, ...)
{
    if (!c->log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->log(c->ud, lvl, msg);
}

static void progress(const lmk_bench_cfg *c, const char *what, int64_t done, int64_t total)
{
    if (c->progress)
        c->progress(c->ud, what, done, total);
}

void bench_blas_threads(int n)
{
    openblas_set_num_threads(n > 0 ? n : 1);
}

void bench_omp_threads(int n)
{
    omp_set_num_threads(n > 0 ? n : 1);
}

lmk_attend_opts bench_attend_opts(const lmk_bench_cfg *c, int ef, int nprobe)
{
    lmk_attend_opts ao = lmk_attend_opts_default();
    ao.top_k = c->top_k;
    ao.mode = c->mode_union ? LMK_MODE_UNION : LMK_MODE_GROUPED;
    ao.ef_search = ef;
    ao.nprobe = nprobe;
    return ao;
}

/* ---- the state of one run ---- */

typedef struct bench_state {
    lmk_bench_cfg *c;     /* the report's copy, resolved */
    lmk_bench_report *rep;
    bench_workload w;
    char dir[PATH_MAX];
    int own_dir;          /* dir is a temporary directory of this run */
    char sdir[PATH_MAX + 32];
    lmk_session *s;
    float *Q, *Qw;        /* (steps, NL, NH, D), (warm-up steps, NL, NH, D) */
    float *dout;          /* dense outputs, like Q */
    int64_t *targets;     /* (steps, NL) */
    bench_exact x;
    bench_scratch ws;
    char *err;
    size_t cap;
} bench_state;

static void session_log(void *ud, const char *msg)
{
    bench_log(ud, LMK_BENCH_NOTE, "%s", msg);
}

/* The session directory: cfg.dir or a temporary one; DIR/session must not exist. */
static int make_dir(bench_state *b)
{
    if (!b->c->dir) {
        const char *td = getenv("TMPDIR");
        snprintf(b->dir, sizeof b->dir, "%s/landmark-bench-XXXXXX", td && *td ? td : "/tmp");
        if (!mkdtemp(b->dir)) {
            int e = errno;
            snprintf(b->err, b->cap, "cannot create a temporary directory %s: %s", b->dir,
                     strerror(e));
            return e;
        }
        b->own_dir = 1;
    } else {
        snprintf(b->dir, sizeof b->dir, "%s", b->c->dir);
        if (mkdir(b->dir, 0755) && errno != EEXIST) {
            int e = errno;
            snprintf(b->err, b->cap, "cannot create %s: %s", b->dir, strerror(e));
            return e;
        }
    }
    snprintf(b->sdir, sizeof b->sdir, "%s/session", b->dir);
    /* a fresh session: the bench never appends to or reindexes a user's session */
    struct stat st;
    if (stat(b->sdir, &st) == 0) {
        snprintf(b->err, b->cap, "%s exists; give an empty or new directory", b->sdir);
        return EEXIST;
    }
    return LMK_OK;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) ? -1 : 0;
}

/* Resolve the configuration into the report, open the workload, check it all. */
static int prepare(bench_state *b, const lmk_bench_cfg *in)
{
    *b->c = *in;
    lmk_bench_cfg *c = b->c;
    flat_first(c);
    b->w.rec.fd = -1;
    if (c->recorded) {
        int rc = bench_workload_open(&b->w, c, b->err, b->cap);
        if (rc)
            return rc;
        c->n_layers = b->w.rec.n_layers;
        c->n_heads = b->w.rec.n_heads;
        c->n_kv_heads = b->w.rec.n_kv_heads;
        c->head_dim = b->w.rec.head_dim;
        c->tokens = b->w.rec.n_tokens;
        c->probes = 0;
    }
    int rc = bench_cfg_check(c, b->err, b->cap);
    if (rc || c->recorded)
        return rc;
    return bench_workload_open(&b->w, c, b->err, b->cap);
}

/* Every buffer of the run, allocated once; the step queries generated. */
static int alloc_buffers(bench_state *b)
{
    const lmk_bench_cfg *c = b->c;
    const int NL = c->n_layers, NH = c->n_heads, S = c->steps;
    const size_t qrow = (size_t)NH * c->head_dim;
    b->rep->results = calloc((size_t)lmk_bench_cfg_n_settings(c), sizeof *b->rep->results);
    b->Q = malloc((size_t)S * NL * qrow * sizeof(float));
    b->Qw = malloc((size_t)BENCH_WARMUP_STEPS * NL * qrow * sizeof(float));
    b->dout = malloc((size_t)S * NL * qrow * sizeof(float));
    b->targets = malloc((size_t)S * NL * sizeof(int64_t));
    int64_t *tw = malloc((size_t)NL * sizeof(int64_t));
    b->x.kth = malloc((size_t)S * NL * NH * sizeof(double));
    b->ws.out = malloc((size_t)NL * qrow * sizeof(float));
    b->ws.blocks = malloc((size_t)NH * c->top_k * sizeof(int64_t));
    b->ws.t = malloc((size_t)S * sizeof(double));
    b->ws.errs = malloc((size_t)S * NL * NH * sizeof(double));
    int rc = LMK_OK;
    if (!b->rep->results || !b->Q || !b->Qw || !b->dout || !b->targets || !tw || !b->x.kth ||
        !b->ws.out || !b->ws.blocks || !b->ws.t || !b->ws.errs) {
        snprintf(b->err, b->cap, "out of memory");
        rc = ENOMEM;
    }
    for (int p = 0; !rc && p < S; p++)
        rc = bench_step_queries(&b->w, c, p, b->Q + (size_t)p * NL * qrow,
                                b->targets + (size_t)p * NL, b->err, b->cap);
    for (int i = 0; !rc && i < BENCH_WARMUP_STEPS; i++)
        rc = bench_step_queries(&b->w, c, S + i, b->Qw + (size_t)i * NL * qrow, tw, b->err,
                                b->cap);
    free(tw);
    return rc;
}

static int open_session(bench_state *b)
{
    const lmk_bench_cfg *c = b->c;
    lmk_session_opts so = lmk_session_opts_default();
    so.n_layers = c->n_layers;
    so.n_heads = c->n_heads;
    so.n_kv_heads = c->n_kv_heads;
    so.head_dim = c->head_dim;
    so.block_len = c->block_len;
    so.dtype = c->dtype_f16 ? LMK_DTYPE_F16 : LMK_DTYPE_F32;
    so.landmark = LMK_LANDMARK_MEAN;
    so.index_spec = "Flat";
    so.create = 1;
    so.n_threads = c->threads;
    so.durability = LMK_DURABLE_NONE; /* a benchmark session: synced once at the end */
    so.log = session_log;
    so.log_ud = (void *)c;
    return lmk_session_open(b->sdir, &so, &b->s, b->err, b->cap);
}

/* Append chunk [t, t + n) of every layer to the session (timed) and to the dense baseline,
 * which holds the session's stored (dtype-rounded) values. k, v, kr, vr: (n, H, D). */
static int ingest_chunk(bench_state *b, lmk_dense **dense, int64_t t, int64_t n, float *k,
                        float *v, float *kr, float *vr)
{
    const lmk_bench_cfg *c = b->c;
    const size_t row = (size_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        if (b->w.gen) {
            lmk_synth_kv(b->w.gen, l, t, n, k, v);
        } else {
            int rc = bench_rec_kv(&b->w.rec, l, t, n, k, v, b->err, b->cap);
            if (rc)
                return rc;
        }
        double t0 = lmk_clock_s();
        int rc = lmk_session_append(b->s, l, n, k, v);
        if (rc) {
            snprintf(b->err, b->cap, "appending tokens %lld..%lld at layer %d: %s",
                     (long long)t, (long long)(t + n), l, lmk_session_errmsg(b->s));
            return rc;
        }
        b->rep->run.ingest_s += lmk_clock_s() - t0;
        const float *kd = k, *vd = v;
        if (c->dtype_f16) {
            for (size_t i = 0; i < (size_t)n * row; i++) {
                kr[i] = lmk_f16_to_f32(lmk_f32_to_f16(k[i]));
                vr[i] = lmk_f16_to_f32(lmk_f32_to_f16(v[i]));
            }
            kd = kr;
            vd = vr;
        }
        lmk_dense_append(dense[l], n, kd, vd);
    }
    return LMK_OK;
}

/* The whole stream into the session (Flat) and the dense baseline, then one sync. */
static int ingest(bench_state *b, lmk_dense **dense)
{
    const lmk_bench_cfg *c = b->c;
    const int64_t T = c->tokens;
    const size_t row = (size_t)c->n_kv_heads * c->head_dim;
    lmk_bench_facts *run = &b->rep->run;
    int rc = open_session(b);
    if (rc)
        return rc;
    bench_blas_threads(1);
    for (int l = 0; l < c->n_layers; l++)
        if (lmk_dense_create(c->n_kv_heads, c->head_dim, c->n_heads, LMK_DTYPE_F32, T,
                             &dense[l])) {
            snprintf(b->err, b->cap, "out of memory for the dense baseline (%lld tokens)",
                     (long long)T);
            return ENOMEM;
        }
    float *k = malloc(INGEST_CHUNK * row * sizeof(float));
    float *v = malloc(INGEST_CHUNK * row * sizeof(float));
    float *kr = malloc(INGEST_CHUNK * row * sizeof(float));
    float *vr = malloc(INGEST_CHUNK * row * sizeof(float));
    if (!k || !v || !kr || !vr) {
        snprintf(b->err, b->cap, "out of memory");
        rc = ENOMEM;
    }
    for (int64_t t = 0; !rc && t < T; t += INGEST_CHUNK) {
        int64_t n = T - t < INGEST_CHUNK ? T - t : INGEST_CHUNK;
        rc = ingest_chunk(b, dense, t, n, k, v, kr, vr);
        progress(c, "ingest", t + n, T);
    }
    free(k), free(v), free(kr), free(vr);
    if (rc)
        return rc;
    double t0 = lmk_clock_s();
    if ((rc = lmk_session_sync(b->s))) {
        snprintf(b->err, b->cap, "sync: %s", lmk_session_errmsg(b->s));
        return rc;
    }
    run->ingest_s += lmk_clock_s() - t0;
    run->kv_bytes = 2.0 * (double)T * row * (c->dtype_f16 ? 2 : 4) * c->n_layers;
    run->blocks = (T - 1) / c->block_len;
    run->read_gbs = lmk_bench_read_bandwidth(c->threads) / 1e9;
    run->n_needles = b->w.gen ? lmk_synth_n_needles(b->w.gen, T) : 0;
    b->x.cand = run->blocks;
    b->x.k = c->top_k < b->x.cand ? c->top_k : (int)b->x.cand;
    return LMK_OK;
}

/* Dense steps with OpenBLAS on cfg.threads threads: outputs kept in b->dout. */
static int dense_steps(bench_state *b, lmk_dense **dense)
{
    const lmk_bench_cfg *c = b->c;
    const int NL = c->n_layers, S = c->steps;
    const size_t qrow = (size_t)c->n_heads * c->head_dim;
    double *dt = malloc((size_t)S * sizeof(double));
    if (!dt) {
        snprintf(b->err, b->cap, "out of memory");
        return ENOMEM;
    }
    bench_blas_threads(c->threads);
    for (int p = -BENCH_WARMUP_STEPS; p < S; p++) {
        const float *qp = p < 0 ? b->Qw + (size_t)(p + BENCH_WARMUP_STEPS) * NL * qrow
                                : b->Q + (size_t)p * NL * qrow;
        float *op = p < 0 ? b->ws.out : b->dout + (size_t)p * NL * qrow;
        double t0 = lmk_clock_s();
        for (int l = 0; l < NL; l++)
            lmk_dense_attend(dense[l], qp + l * qrow, op + l * qrow);
        if (p >= 0)
            dt[p] = lmk_clock_s() - t0;
        progress(c, "dense steps", p + BENCH_WARMUP_STEPS + 1, S + BENCH_WARMUP_STEPS);
    }
    bench_blas_threads(1);
    lmk_bench_dense *d = &b->rep->dense;
    d->threads = c->threads;
    d->memory_mb = 0;
    for (int l = 0; l < NL; l++)
        d->memory_mb += lmk_dense_memory_bytes(dense[l]) / 1048576.0;
    d->step_ms_p50 = 1e3 * bench_percentile(dt, S, 0.5);
    d->step_ms_p99 = 1e3 * bench_percentile(dt, S, 0.99);
    free(dt);
    return LMK_OK;
}

/* Ingest, the exact reference and the dense steps; the baseline's RAM is given back before
 * the index runs. */
static int baseline(bench_state *b)
{
    const int NL = b->c->n_layers;
    lmk_dense **dense = calloc((size_t)NL, sizeof *dense);
    if (!dense) {
        snprintf(b->err, b->cap, "out of memory");
        return ENOMEM;
    }
    int rc = ingest(b, dense);
    if (!rc) {
        bench_log(b->c, LMK_BENCH_NOTE, "exact top-%d of %d steps from the stored landmarks",
                  b->c->top_k, b->c->steps);
        rc = bench_exact_topk(b->s, b->c, b->Q, &b->x, b->err, b->cap);
    }
    if (!rc)
        rc = dense_steps(b, dense);
    for (int l = 0; l < NL; l++)
        lmk_dense_free(dense[l]);
    free(dense);
    if (rc)
        return rc;
    /* One untimed pass of exact steps: the blocks the steps read are then in the page
     * cache for every spec alike (the first spec measured would otherwise pay the cold
     * reads alone). */
    lmk_bench_result warm;
    memset(&warm, 0, sizeof warm);
    lmk_attend_opts ao = bench_attend_opts(b->c, 0, 0);
    bench_omp_threads(1);
    return bench_run_steps(b->s, b->c, &ao, b->Q, b->Qw, b->targets, NULL, &b->x, &b->ws,
                           &warm, "warm-up", b->err, b->cap);
}

LMK_API double lmk_bench_landmarks_scanned(const char *spec, int nprobe, double n_landmarks)
{
    int nlist = 0;
    char tail[32] = "";
    if (!strcmp(spec, "Flat"))
        return n_landmarks;
    if (sscanf(spec, "IVF%d,%31s", &nlist, tail) != 2 || nlist <= 0 || strcmp(tail, "Flat"))
        return NAN;
    int np = nprobe > 0 ? nprobe : 1;
    if (n_landmarks < 39.0 * nlist)
        return n_landmarks;
    return n_landmarks * (np < nlist ? np : nlist) / nlist + nlist;
}

/* The memory-bandwidth bound of a step: the f32 landmarks a search scans and the K/V of the
 * blocks fetched, over the measured read bandwidth; NAN where the scan is not modelled. */
static double step_bound_ms(const lmk_bench_cfg *c, const lmk_bench_facts *run,
                            const char *spec, const lmk_bench_result *o)
{
    double D = c->head_dim;
    double scanned = lmk_bench_landmarks_scanned(spec, o->nprobe, (double)run->blocks);
    if (isnan(scanned))
        return NAN;
    double bytes = (double)c->n_layers * c->n_kv_heads * scanned * D * 4 +
                   o->blocks_fetched * 2.0 * c->block_len * D * (c->dtype_f16 ? 2 : 4);
    return run->read_gbs > 0 ? 1e3 * bytes / (run->read_gbs * 1e9) : NAN;
}

/* Rebuild the indices as spec (timed, with cfg.threads for FAISS), then measure every
 * value of its sweep into the next records. */
static int measure_spec(bench_state *b, const char *spec)
{
    const lmk_bench_cfg *c = b->c;
    lmk_bench_report *rep = b->rep;
    int hn, iv, nv = n_values(c, spec, &hn, &iv);
    bench_log(c, LMK_BENCH_NOTE, "building %s", spec);
    bench_omp_threads(c->threads);
    double t0 = lmk_clock_s();
    int rc = lmk_session_reindex(b->s, spec);
    if (rc) {
        snprintf(b->err, b->cap, "index \"%s\": %s", spec, lmk_session_errmsg(b->s));
        return rc;
    }
    double build = lmk_clock_s() - t0;
    lmk_session_info info;
    if ((rc = lmk_session_info_get(b->s, &info))) {
        snprintf(b->err, b->cap, "info: %s", lmk_session_errmsg(b->s));
        return rc;
    }
    for (int j = 0; j < nv; j++) {
        lmk_bench_result *o = &rep->results[rep->n_results];
        snprintf(o->index, sizeof o->index, "%s", spec);
        o->ef_search = hn ? c->ef[j] : 0;
        o->nprobe = iv ? c->nprobe[j] : 0;
        char label[LMK_BENCH_SPEC_LEN + 64];
        snprintf(label, sizeof label, "%s%s%.0d", spec, hn ? " ef " : iv ? " nprobe " : "",
                 hn ? o->ef_search : o->nprobe);
        progress(c, label, 0, 2);
        lmk_attend_opts ao = bench_attend_opts(c, o->ef_search, o->nprobe);
        bench_omp_threads(1);
        rc = bench_run_steps(b->s, c, &ao, b->Q, b->Qw, b->targets, b->dout, &b->x, &b->ws, o,
                             label, b->err, b->cap);
        if (rc)
            return rc;
        rep->n_results++;
        o->build_s = build;
        o->disk_mb = info.disk_bytes / 1048576.0;
        o->speedup = o->step_ms_p50 > 0 ? rep->dense.step_ms_p50 / o->step_ms_p50 : NAN;
        o->bound_ms = step_bound_ms(c, &rep->run, spec, o);
        o->ingest_tokens_per_s = (double)c->tokens / (rep->run.ingest_s + build);
        progress(c, label, 1, 2);
        bench_child_measure(c, b->sdir, o->ef_search, o->nprobe, o);
        progress(c, label, 2, 2);
    }
    return LMK_OK;
}

static void finish(bench_state *b)
{
    lmk_session_close(b->s);
    bench_workload_close(&b->w);
    free(b->Q);
    free(b->Qw);
    free(b->dout);
    free(b->targets);
    free(b->x.kth);
    free(b->ws.out);
    free(b->ws.blocks);
    free(b->ws.t);
    free(b->ws.errs);
    if (b->own_dir && nftw(b->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        bench_log(b->c, LMK_BENCH_WARN, "could not remove %s", b->dir);
}

int lmk_bench_run(const lmk_bench_cfg *c, lmk_bench_report *out, char *err, size_t cap)
{
    double t_start = lmk_clock_s();
    memset(out, 0, sizeof *out);
    bench_state b;
    memset(&b, 0, sizeof b);
    b.c = &out->cfg;
    b.rep = out;
    b.err = err;
    b.cap = cap;
    if (cap)
        err[0] = 0;
    int rc = prepare(&b, c);
    if (!rc)
        rc = make_dir(&b);
    if (!rc)
        rc = alloc_buffers(&b);
    if (!rc)
        rc = baseline(&b);
    for (int i = 0; !rc && i < out->cfg.n_specs; i++)
        rc = measure_spec(&b, out->cfg.specs[i]);
    finish(&b);
    out->run.wall_s = lmk_clock_s() - t_start;
    if (rc) {
        lmk_bench_report_free(out);
        if (cap && !err[0])
            snprintf(err, cap, "%s", lmk_strerror(rc));
    }
    return rc;
}

void lmk_bench_report_free(lmk_bench_report *r)
{
    if (!r)
        return;
    free(r->results);
    r->results = NULL;
    r->n_results = 0;
}

LMK_API double lmk_bench_read_bandwidth(int threads)
{
    size_t n = (size_t)256 << 20, words = n / 8;
    uint64_t *b = malloc(n);
    if (!b)
        return 0;
    if (threads < 1)
        threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < words; i++) /* first touch by the thread that reads it */
        b[i] = 0x0101010101010101ull;
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 3; r++) {
        uint64_t total = 0;
        double t0 = lmk_clock_s();
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
        for (size_t i = 0; i < words; i += 4)
            total += b[i] + b[i + 1] + b[i + 2] + b[i + 3];
        double bw = (double)n / (lmk_clock_s() - t0);
        sink += total;
        if (bw > best)
            best = bw;
    }
    free(b);
    return best;
}
