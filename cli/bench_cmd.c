/* landmark bench: dense attention, exact landmark search and ANN index specs measured side
 * by side in one run, on one ingested stream (README, "Benchmark").
 *
 * Flow: ingest the stream once (session with a Flat index, and the dense baseline in RAM);
 * compute the exact top-k of every step's queries from the stored landmarks; time dense
 * steps; then for every index spec rebuild the session's indices from the same stored
 * landmarks (lmk_session_reindex), and for every search parameter run the same steps,
 * scoring recall, needle hits and the error against dense attention; a child process
 * (this program, `bench --child`) reopens the session read-only, runs the steps and reports
 * its resident memory. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <omp.h>

#include "bench_priv.h"
#include "commands.h"
#include "opt.h"
#include "lmk_dense.h"
#include "lmk_f16.h"
#include "lmk_index.h"
#include "lmk_session.h"
#include "lmk_synth.h"

#define CMD "bench"
#define WARMUP_STEPS 3

/* ---- small helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile (0..1) of n values, sorting them in place (nearest rank). */
static double percentile(double *x, int n, double p)
{
    if (n <= 0)
        return NAN;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    int i = (int)ceil(p * n) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return x[i];
}

static void progress(const char *what, int64_t done, int64_t total)
{
    if (!isatty(2) || total <= 0)
        return;
    int w = 40, n = (int)(w * done / total);
    fprintf(stderr, "\r%-22.22s [%.*s%*s] %5.1f%%", what, n,
            "########################################", w - n, "",
            100.0 * (double)done / (double)total);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (!isatty(2))
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "landmark bench: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void log_cb(void *ud, const char *msg)
{
    (void)ud;
    note("%s", msg);
}

/* Anonymous and file-backed resident memory of this process, from /proc/self/status. */
static void read_rss(double *anon_mb, double *file_mb)
{
    *anon_mb = *file_mb = NAN;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "RssAnon: %lld kB", &kb) == 1)
            *anon_mb = kb / 1024.0;
        else if (sscanf(line, "RssFile: %lld kB", &kb) == 1)
            *file_mb = kb / 1024.0;
    }
    fclose(f);
}

/* ---- recorded streams ----
 * Little-endian file: a 48-byte header
 *   char magic[8] = "LMKREC1\0"; uint32 n_layers, n_heads, n_kv_heads, head_dim;
 *   uint64 n_tokens, n_queries; uint32 dtype (0 f32, 1 f16); uint32 reserved (0)
 * then for each layer: keys (n_tokens, n_kv_heads, head_dim), values (same shape),
 * queries (n_queries, n_heads, head_dim). Query i of a layer is a decoding query at the
 * last position (n_tokens - 1). The file size must match exactly. */
#define REC_MAGIC "LMKREC1"
#define REC_HEADER 48

typedef struct rec_file {
    int fd;
    int n_layers, n_heads, n_kv_heads, head_dim, f16;
    int64_t n_tokens, n_queries;
    uint16_t *conv; /* f16 read buffer */
    size_t conv_cap;
} rec_file;

static int rec_open(const char *path, rec_file *r, char *err, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char h[REC_HEADER];
    struct stat st;
    if (fstat(r->fd, &st) || pread(r->fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
        memcmp(h, REC_MAGIC, 8) != 0) {
        snprintf(err, cap, "%s: not a recorded stream (bad magic or short header)", path);
        close(r->fd);
        return -1;
    }
    uint32_t u[4], dt, res;
    uint64_t nt, nq;
    memcpy(u, h + 8, 16);
    memcpy(&nt, h + 24, 8);
    memcpy(&nq, h + 32, 8);
    memcpy(&dt, h + 40, 4);
    memcpy(&res, h + 44, 4);
    if (u[0] < 1 || u[0] > 1024 || u[1] < 1 || u[1] > 4096 || u[2] < 1 || u[2] > u[1] ||
        u[1] % u[2] || u[3] < 1 || u[3] > 1024 || dt > 1 || res != 0 || nt < 1 ||
        nt > (1ull << 40) || nq < 1 || nq > (1ull << 24)) {
        snprintf(err, cap, "%s: header out of range (layers %u, heads %u/%u, head_dim %u, "
                 "tokens %llu, queries %llu, dtype %u)", path, u[0], u[1], u[2], u[3],
                 (unsigned long long)nt, (unsigned long long)nq, dt);
        close(r->fd);
        return -1;
    }
    r->n_layers = (int)u[0];
    r->n_heads = (int)u[1];
    r->n_kv_heads = (int)u[2];
    r->head_dim = (int)u[3];
    r->n_tokens = (int64_t)nt;
    r->n_queries = (int64_t)nq;
    r->f16 = (int)dt;
    uint64_t esz = dt ? 2 : 4;
    uint64_t per_layer = (2 * nt * u[2] + nq * u[1]) * u[3] * esz;
    uint64_t want = REC_HEADER + per_layer * u[0];
    if ((uint64_t)st.st_size != want) {
        snprintf(err, cap, "%s: %llu bytes, the header's shape needs %llu", path,
                 (unsigned long long)st.st_size, (unsigned long long)want);
        close(r->fd);
        return -1;
    }
    return 0;
}

static void rec_close(rec_file *r)
{
    if (r->fd > 0)
        close(r->fd);
    free(r->conv);
    r->fd = -1;
    r->conv = NULL;
}

/* Read n rows of `width` numbers starting at row `row0` of the array at byte offset `base`
 * into out (f32). Returns 0 or -1 (message in err). */
static int rec_read(rec_file *r, uint64_t base, int64_t row0, int64_t n, int width, float *out,
                    char *err, size_t cap)
{
    size_t esz = r->f16 ? 2 : 4;
    size_t cnt = (size_t)n * width;
    uint64_t off = base + (uint64_t)row0 * width * esz;
    void *dst = out;
    if (r->f16) {
        if (r->conv_cap < cnt) {
            free(r->conv);
            r->conv = malloc(cnt * 2);
            r->conv_cap = r->conv ? cnt : 0;
            if (!r->conv) {
                snprintf(err, cap, "out of memory");
                return -1;
            }
        }
        dst = r->conv;
    }
    size_t len = cnt * esz, got = 0;
    while (got < len) {
        ssize_t k = pread(r->fd, (char *)dst + got, len - got, (off_t)(off + got));
        if (k <= 0) {
            snprintf(err, cap, "reading the recorded stream: %s", k < 0 ? strerror(errno) : "short file");
            return -1;
        }
        got += (size_t)k;
    }
    if (r->f16)
        lmk_f16_to_f32_n(r->conv, out, cnt);
    return 0;
}

static uint64_t rec_layer_base(const rec_file *r, int layer)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t per_layer = (2 * (uint64_t)r->n_tokens * r->n_kv_heads +
                          (uint64_t)r->n_queries * r->n_heads) * r->head_dim * esz;
    return REC_HEADER + per_layer * layer;
}

static int rec_kv(rec_file *r, int layer, int64_t t0, int64_t n, float *k, float *v, char *err,
                  size_t cap)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t kb = rec_layer_base(r, layer);
    uint64_t vb = kb + (uint64_t)r->n_tokens * r->n_kv_heads * r->head_dim * esz;
    int w = r->n_kv_heads * r->head_dim;
    if (rec_read(r, kb, t0, n, w, k, err, cap) || rec_read(r, vb, t0, n, w, v, err, cap))
        return -1;
    return 0;
}

static int rec_query(rec_file *r, int layer, int64_t i, float *q, char *err, size_t cap)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t qb = rec_layer_base(r, layer) +
                  2 * (uint64_t)r->n_tokens * r->n_kv_heads * r->head_dim * esz;
    return rec_read(r, qb, i % r->n_queries, 1, r->n_heads * r->head_dim, q, err, cap);
}

/* ---- the workload: queries of every step ---- */

typedef struct workload {
    lmk_synth *gen;  /* synthetic stream, or NULL */
    rec_file rec;    /* recorded stream when gen is NULL */
    int64_t T;
} workload;

/* Queries of step p at every layer: q (n_layers, n_heads, head_dim); targets (n_layers)
 * gets the needle block of each layer (-1: none). Steps p >= 0 are measured; warm-up steps
 * use p = steps + i, which are other queries of the same kind. */
static int step_queries(workload *w, const bench_cfg *c, int p, float *q, int64_t *targets,
                        char *err, size_t cap)
{
    size_t qrow = (size_t)c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        targets[l] = -1;
        if (w->gen) {
            if (c->probes)
                targets[l] = lmk_synth_probe(w->gen, l, p, w->T, q + l * qrow);
            else
                lmk_synth_query(w->gen, l, p, q + l * qrow);
        } else if (rec_query(&w->rec, l, p, q + l * qrow, err, cap)) {
            return -1;
        }
    }
    return 0;
}

/* ---- argument parsing ---- */

static void help(FILE *f)
{
    fprintf(f,
        "usage: landmark bench [options]\n\n"
        "Dense attention, exact landmark search (Flat) and ANN index specs measured side by\n"
        "side on one ingested stream: recall@k against exact top-k, needle hit rate, error\n"
        "against dense attention, decode step time, ingest, build, memory and disk.\n\n"
        "workload (default: the synthetic stream of `landmark demo`, README \"The synthetic\n"
        "workload\"; shape defaults are those of --preset small):\n"
        "  --preset NAME        1m (1,048,576 tokens, 2 layers, 16/4 heads, head_dim 128,\n"
        "                       block 64, top-k 8, f16), small, tiny\n"
        "  --tokens N           tokens (k/m suffixes)\n"
        "  --layers N  --heads N  --kv-heads N  --head-dim N  --block-len N\n"
        "  --top-k K            blocks retrieved per query head\n"
        "  --dtype f16|f32      session storage dtype (the dense baseline holds the same\n"
        "                       values as f32)\n"
        "  --queries probe|ordinary  probe queries targeting needles (default) or ordinary\n"
        "                       decoding queries (no needle)\n"
        "  --seed N             generator seed (default 42)\n"
        "  --needle-span N      blocks per planted needle (default 256 with --preset 1m, 64\n"
        "                       with small, 16 with tiny: short streams get more needles)\n"
        "  --recorded FILE      read keys, values and queries from a recorded stream (README:\n"
        "                       \"Recorded streams\") instead of the generator\n"
        "  --save-stream FILE   write the synthetic stream with its step queries in that\n"
        "                       format, then exit\n"
        "indices:\n"
        "  --index SPEC         FAISS factory string, optionally with +l2 (repeatable; Flat is\n"
        "                       always measured first)\n"
        "  --sweep NAME=V1,V2   efSearch (HNSW specs) or nprobe (IVF specs)\n"
        "run:\n"
        "  --steps N            decode steps per setting (default 100, at least 100)\n"
        "  --mode union|grouped softmax (default union: equals dense when all is retrieved)\n"
        "  -t, --threads N      threads of the engine and of the dense baseline (default 1,\n"
        "                       2 with --preset 1m)\n"
        "  --dir DIR            session directory (default: temporary, removed after)\n"
        "output:\n"
        "  --json FILE          one object: config, dense, results\n"
        "  --plot FILE.png      recall against step time per index (needs gnuplot)\n"
        "  -h, --help           this help\n");
}

static int set_preset(bench_cfg *c, const char *name)
{
    c->preset = name;
    c->dtype_f16 = 1;
    c->top_k = 8;
    c->steps = 100;
    c->threads = 1;
    if (!strcmp(name, "1m")) {
        c->threads = 2; /* the machine it is defined for has 2 cores; -t overrides */
        c->tokens = 1048576;
        c->n_layers = 2;
        c->n_heads = 16;
        c->n_kv_heads = 4;
        c->head_dim = 128;
        c->block_len = 64;
        c->needle_span = 256;
        c->n_specs = 0;
        /* 18 settings: fits the 20 minutes this preset is defined for on 2 cores (the
         * plain inner-product HNSW build alone takes minutes: FAISS computes its inner
         * products without SIMD there) */
        const char *sp[] = {"Flat", "HNSW32", "HNSW32+l2", "IVF256,Flat", "IVF256,SQ8"};
        for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
            snprintf(c->specs[c->n_specs++], BENCH_SPEC_LEN, "%s", sp[i]);
        int ef[] = {16, 64, 256, 512}, np[] = {4, 16, 64, 128, 192};
        c->n_ef = 4;
        memcpy(c->ef, ef, sizeof ef);
        c->n_nprobe = 5;
        memcpy(c->nprobe, np, sizeof np);
    } else if (!strcmp(name, "small")) {
        c->tokens = 262144;
        c->n_layers = 2;
        c->n_heads = 8;
        c->n_kv_heads = 2;
        c->head_dim = 64;
        c->block_len = 64;
        c->needle_span = 64;
        c->n_specs = 0;
        const char *sp[] = {"Flat", "HNSW32", "HNSW32+l2", "IVF64,Flat", "IVF64,SQ8"};
        for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
            snprintf(c->specs[c->n_specs++], BENCH_SPEC_LEN, "%s", sp[i]);
        int ef[] = {16, 64, 256}, np[] = {1, 8, 32};
        c->n_ef = 3;
        memcpy(c->ef, ef, sizeof ef);
        c->n_nprobe = 3;
        memcpy(c->nprobe, np, sizeof np);
    } else if (!strcmp(name, "tiny")) {
        c->tokens = 16384;
        c->n_layers = 1;
        c->n_heads = 4;
        c->n_kv_heads = 2;
        c->head_dim = 32;
        c->block_len = 32;
        c->needle_span = 16;
        c->n_specs = 0;
        const char *sp[] = {"Flat", "HNSW16", "IVF8,Flat"};
        for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
            snprintf(c->specs[c->n_specs++], BENCH_SPEC_LEN, "%s", sp[i]);
        int ef[] = {16, 64}, np[] = {1, 8};
        c->n_ef = 2;
        memcpy(c->ef, ef, sizeof ef);
        c->n_nprobe = 2;
        memcpy(c->nprobe, np, sizeof np);
    } else {
        return -1;
    }
    return 0;
}

static int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    long long v = lmk_opt_count(s);
    if (v < lo || v > hi) {
        lmk_cli_error(CMD, "%s wants a count in %lld..%lld, got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_sweep(bench_cfg *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq) {
        lmk_cli_error(CMD, "--sweep wants NAME=V1,V2,..., got '%s'", arg);
        return -1;
    }
    size_t nl = (size_t)(eq - arg);
    int *dst, *n;
    if ((nl == 8 && !strncmp(arg, "efSearch", nl)) || (nl == 9 && !strncmp(arg, "ef_search", nl)) ||
        (nl == 2 && !strncmp(arg, "ef", nl))) {
        dst = c->ef;
        n = &c->n_ef;
    } else if (nl == 6 && !strncmp(arg, "nprobe", nl)) {
        dst = c->nprobe;
        n = &c->n_nprobe;
    } else {
        lmk_cli_error(CMD, "--sweep: unknown parameter '%.*s' (efSearch or nprobe)", (int)nl, arg);
        return -1;
    }
    *n = 0;
    const char *p = eq + 1;
    while (*p) {
        char buf[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof buf || *n >= BENCH_MAX_VALUES) {
            lmk_cli_error(CMD, "--sweep: bad value list '%s'", eq + 1);
            return -1;
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        long long v = lmk_opt_count(buf);
        if (v < 1 || v > 1 << 20) {
            lmk_cli_error(CMD, "--sweep: '%s' is not a positive count", buf);
            return -1;
        }
        dst[(*n)++] = (int)v;
        p += len;
        if (*p == ',')
            p++;
    }
    if (*n == 0) {
        lmk_cli_error(CMD, "--sweep: no values in '%s'", arg);
        return -1;
    }
    return 0;
}

static int spec_is_hnsw(const char *s)
{
    return strstr(s, "HNSW") != NULL;
}

static int spec_is_ivf(const char *s)
{
    return strstr(s, "IVF") != NULL;
}

/* ---- exact top-k from the stored landmarks ---- */

/* For every (step, layer, query head): the exact k-th best score (double) among the
 * candidate blocks [0, C). The engine's retrieved blocks are then judged by their exact
 * score against it, so ties and rounding cannot make exact search look inexact. */
typedef struct exact_ref {
    double *kth;      /* (steps, n_layers, n_heads) */
    int64_t cand;     /* candidate blocks C */
    int k;            /* min(top_k, C) */
} exact_ref;

static double dot_d(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static int exact_topk(lmk_session *s, const bench_cfg *c, const float *Q, exact_ref *x,
                      char *err, size_t cap)
{
    const int NL = c->n_layers, NH = c->n_heads, H = c->n_kv_heads, D = c->head_dim;
    const int G = NH / H, S = c->steps;
    const int64_t C = x->cand;
    const int K = x->k, M = K + 32; /* float preselection, then double rescoring */
    size_t qrow = (size_t)NH * D;
    float *qs = malloc((size_t)S * G * D * sizeof(float));
    float *sc = malloc((size_t)S * G * (C > 0 ? C : 1) * sizeof(float));
    int64_t *best = malloc((size_t)M * sizeof(int64_t));
    float *bests = malloc((size_t)M * sizeof(float));
    double *dd = malloc((size_t)M * sizeof(double));
    if (!qs || !sc || !best || !bests || !dd) {
        free(qs), free(sc), free(best), free(bests), free(dd);
        snprintf(err, cap, "out of memory for the exact reference");
        return -1;
    }
    for (int l = 0; l < NL; l++) {
        for (int h = 0; h < H; h++) {
            lmk_index *ix = lmk_session_index(s, l, h);
            const float *lm = ix ? lmk_index_vectors(ix) : NULL;
            if (!ix || lmk_index_ntotal(ix) < C || (C > 0 && !lm)) {
                snprintf(err, cap, "layer %d KV head %d: index holds %lld landmarks, %lld expected",
                         l, h, ix ? (long long)lmk_index_ntotal(ix) : -1LL, (long long)C);
                free(qs), free(sc), free(best), free(bests), free(dd);
                return -1;
            }
            for (int p = 0; p < S; p++)
                memcpy(qs + (size_t)p * G * D, Q + ((size_t)p * NL + l) * qrow + (size_t)h * G * D,
                       (size_t)G * D * sizeof(float));
            if (C > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S * G, (int)C, D, 1.0f, qs,
                            D, lm, D, 0.0f, sc, (int)C);
            for (int r = 0; r < S * G; r++) {
                int p = r / G, qh = h * G + r % G;
                double *dst = &x->kth[((size_t)p * NL + l) * NH + qh];
                if (K == 0) {
                    *dst = INFINITY;
                    continue;
                }
                /* the M best by float score (sorted insertion) */
                int nb = 0;
                const float *row = sc + (size_t)r * C;
                for (int64_t b = 0; b < C; b++) {
                    float v = row[b];
                    if (nb == M && v <= bests[M - 1])
                        continue;
                    int j = nb < M ? nb++ : M - 1;
                    while (j > 0 && bests[j - 1] < v) {
                        bests[j] = bests[j - 1];
                        best[j] = best[j - 1];
                        j--;
                    }
                    bests[j] = v;
                    best[j] = b;
                }
                const float *qv = qs + (size_t)r * D;
                for (int j = 0; j < nb; j++)
                    dd[j] = dot_d(qv, lm + (size_t)best[j] * D, D);
                qsort(dd, (size_t)nb, sizeof *dd, cmp_double); /* ascending */
                *dst = dd[nb - K];
            }
        }
    }
    free(qs), free(sc), free(best), free(bests), free(dd);
    return 0;
}

/* ---- one measured setting ---- */

typedef struct step_scratch {
    float *out;      /* (n_layers, n_heads, head_dim) */
    int64_t *blocks; /* (n_heads, top_k) */
    double *t, *errs;
} step_scratch;

/* Run the steps on session s with the given search parameters; fill timing, recall,
 * needle and error figures of res. Q (steps, n_layers, n_heads, head_dim); targets
 * (steps, n_layers); dense_out like Q (NULL: no error figures). */
static int run_steps(lmk_session *s, const bench_cfg *c, const lmk_attend_opts *ao,
                     const float *Q, const float *Qwarm, const int64_t *targets,
                     const float *dense_out, const exact_ref *x, step_scratch *w,
                     bench_result *res, const char *label, char *err, size_t cap)
{
    const int NL = c->n_layers, NH = c->n_heads, D = c->head_dim, S = c->steps;
    const int K = c->top_k > 0 ? c->top_k : 1;
    size_t qrow = (size_t)NH * D;
    lmk_attend_stats st;
    int64_t hits = 0, tgt = 0;
    double rec_sum = 0, rec_n = 0, search = 0, fetch = 0, attn = 0, fetched = 0;
    int n_err = 0;
    for (int p = -WARMUP_STEPS; p < S; p++) {
        const float *qp = p < 0 ? Qwarm + (size_t)(p + WARMUP_STEPS) * NL * qrow
                                : Q + (size_t)p * NL * qrow;
        double t = 0;
        for (int l = 0; l < NL; l++) {
            memset(&st, 0, sizeof st);
            st.blocks = w->blocks;
            st.blocks_cap = K;
            double t0 = now_s();
            int rc = lmk_session_attend(s, l, 1, qp + l * qrow, ao, w->out + l * qrow, &st);
            t += now_s() - t0;
            if (rc) {
                snprintf(err, cap, "%s: attend: %s", label, lmk_session_errmsg(s));
                return -1;
            }
            if (p < 0)
                continue;
            search += st.search_s;
            fetch += st.fetch_s;
            attn += st.attn_s;
            fetched += (double)st.blocks_fetched;
            int64_t target = targets[(size_t)p * NL + l];
            for (int h = 0; h < NH; h++) {
                const int64_t *bl = w->blocks + (size_t)h * K;
                if (target >= 0) {
                    int hit = 0;
                    for (int j = 0; j < K; j++)
                        hit |= bl[j] == target;
                    hits += hit;
                    tgt++;
                }
                if (x->k > 0) {
                    double kth = x->kth[((size_t)p * NL + l) * NH + h];
                    const float *qv = qp + l * qrow + (size_t)h * D;
                    lmk_index *ix = lmk_session_index(s, l, h / (NH / c->n_kv_heads));
                    const float *lm = lmk_index_vectors(ix);
                    int good = 0;
                    for (int j = 0; j < K; j++) {
                        if (bl[j] < 0 || bl[j] >= x->cand)
                            continue;
                        double sc = dot_d(qv, lm + (size_t)bl[j] * D, D);
                        good += sc >= kth - 1e-9 * fabs(kth);
                    }
                    rec_sum += (double)(good < x->k ? good : x->k) / x->k;
                    rec_n++;
                }
                if (dense_out) {
                    const float *o = w->out + l * qrow + (size_t)h * D;
                    const float *r = dense_out + ((size_t)p * NL + l) * qrow + (size_t)h * D;
                    double num = 0, den = 0;
                    for (int d = 0; d < D; d++) {
                        double e = (double)o[d] - r[d];
                        num += e * e;
                        den += (double)r[d] * r[d];
                    }
                    w->errs[n_err++] = den > 0 ? sqrt(num / den) : sqrt(num);
                }
            }
        }
        if (p >= 0)
            w->t[p] = t;
    }
    res->recall_at_k = rec_n > 0 ? rec_sum / rec_n : NAN;
    res->needle_hit_rate = tgt > 0 ? (double)hits / (double)tgt : NAN;
    if (n_err > 0) {
        res->attn_rel_err = percentile(w->errs, n_err, 1.0);
        res->attn_rel_err_p50 = percentile(w->errs, n_err, 0.5);
    } else {
        res->attn_rel_err = res->attn_rel_err_p50 = NAN;
    }
    res->search_ms = 1e3 * search / S;
    res->fetch_ms = 1e3 * fetch / S;
    res->attn_ms = 1e3 * attn / S;
    res->blocks_fetched = fetched / S;
    res->step_ms_p50 = 1e3 * percentile(w->t, S, 0.5);
    res->step_ms_p99 = 1e3 * percentile(w->t, S, 0.99);
    return 0;
}

/* OpenMP threads of FAISS's own parallel loops. Decoding steps run with 1: the engine
 * parallelises over heads itself (num_threads clause), and a FAISS search that opens its
 * own team for a single query costs more than it saves (on a loaded 2-core machine,
 * tens of milliseconds per step). Index builds get the run's thread count. */
static void faiss_threads(int n)
{
    omp_set_num_threads(n > 0 ? n : 1);
}

static lmk_attend_opts attend_opts(const bench_cfg *c, int ef, int nprobe)
{
    lmk_attend_opts ao = lmk_attend_opts_default();
    ao.top_k = c->top_k;
    ao.mode = c->mode_union ? LMK_MODE_UNION : LMK_MODE_GROUPED;
    ao.ef_search = ef;
    ao.nprobe = nprobe;
    return ao;
}

/* ---- the child: reopen read-only, run the steps, report memory ---- */

static int child_main(int argc, char **argv)
{
    /* landmark bench --child DIR STEPS TOPK MODE THREADS EF NPROBE SOURCE SEED SPAN PROBES
     * where SOURCE is "-" (synthetic) or the recorded file */
    if (argc != 13) {
        fprintf(stderr, "landmark bench --child: bad arguments\n");
        return 2;
    }
    const char *dir = argv[2];
    bench_cfg c;
    memset(&c, 0, sizeof c);
    c.steps = atoi(argv[3]);
    c.top_k = atoi(argv[4]);
    c.mode_union = atoi(argv[5]);
    c.threads = atoi(argv[6]);
    int ef = atoi(argv[7]), np = atoi(argv[8]);
    c.recorded = strcmp(argv[9], "-") ? argv[9] : NULL;
    c.seed = strtoull(argv[10], NULL, 10);
    c.needle_span = atoi(argv[11]);
    c.probes = atoi(argv[12]);
    if (c.steps < 1 || c.threads < 1)
        return 2;
    char err[1024] = "";
    double t0 = now_s();
    lmk_session_opts so = lmk_session_opts_default();
    so.read_only = 1;
    so.n_threads = c.threads;
    so.index_spec = NULL;
    lmk_session *s = NULL;
    if (lmk_session_open(dir, &so, &s, err, sizeof err)) {
        fprintf(stderr, "landmark bench --child: %s\n", err);
        return 1;
    }
    double open_s = now_s() - t0;
    lmk_cli_set_blas_threads(1);
    faiss_threads(1);
    lmk_session_info info;
    lmk_session_info_get(s, &info);
    c.n_layers = info.n_layers;
    c.n_heads = info.n_heads;
    c.n_kv_heads = info.n_kv_heads;
    c.head_dim = info.head_dim;
    c.block_len = info.block_len;
    workload w;
    memset(&w, 0, sizeof w);
    w.rec.fd = -1;
    w.T = info.tokens;
    int status = 1;
    size_t qrow = (size_t)c.n_heads * c.head_dim, ql = (size_t)c.n_layers * qrow;
    float *q = malloc(ql * sizeof(float)), *out = malloc(ql * sizeof(float));
    int64_t *tg = malloc((size_t)c.n_layers * sizeof(int64_t));
    double *t = malloc((size_t)c.steps * sizeof(double));
    if (!q || !out || !tg || !t)
        goto done;
    if (c.recorded) {
        if (rec_open(c.recorded, &w.rec, err, sizeof err))
            goto done;
    } else {
        lmk_synth_cfg gc = lmk_synth_cfg_default();
        gc.n_layers = c.n_layers;
        gc.n_heads = c.n_heads;
        gc.n_kv_heads = c.n_kv_heads;
        gc.head_dim = c.head_dim;
        gc.block_len = c.block_len;
        gc.seed = c.seed;
        gc.needle_span = c.needle_span;
        if (lmk_synth_create(&gc, &w.gen)) {
            snprintf(err, sizeof err, "cannot create the generator");
            goto done;
        }
    }
    lmk_attend_opts ao = attend_opts(&c, ef, np);
    for (int p = -WARMUP_STEPS; p < c.steps; p++) {
        if (step_queries(&w, &c, p < 0 ? c.steps - p : p, q, tg, err, sizeof err))
            goto done;
        double ts = now_s();
        for (int l = 0; l < c.n_layers; l++)
            if (lmk_session_attend(s, l, 1, q + l * qrow, &ao, out + l * qrow, NULL)) {
                snprintf(err, sizeof err, "attend: %s", lmk_session_errmsg(s));
                goto done;
            }
        if (p >= 0)
            t[p] = now_s() - ts;
    }
    double anon, file;
    read_rss(&anon, &file);
    printf("{\"rss_anon_mb\": %.3f, \"rss_file_mb\": %.3f, \"step_ms_p50\": %.4f, "
           "\"open_s\": %.3f}\n", anon, file, 1e3 * percentile(t, c.steps, 0.5), open_s);
    fflush(stdout);
    status = 0;
done:
    if (status && err[0])
        fprintf(stderr, "landmark bench --child: %s\n", err);
    free(q);
    free(out);
    free(tg);
    free(t);
    lmk_synth_free(w.gen);
    rec_close(&w.rec);
    lmk_session_close(s);
    return status;
}

/* Run the child for one setting; fills rss_* and child_step_ms_p50 (NAN on failure). */
static void run_child(const char *dir, const bench_cfg *c, int ef, int np, bench_result *res)
{
    res->rss_anon_mb = res->rss_file_mb = res->child_step_ms_p50 = NAN;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        lmk_cli_error(CMD, "cannot find this program (/proc/self/exe): %s", strerror(errno));
        return;
    }
    exe[n] = 0;
    char a[11][64];
    snprintf(a[0], 64, "%d", c->steps);
    snprintf(a[1], 64, "%d", c->top_k);
    snprintf(a[2], 64, "%d", c->mode_union);
    snprintf(a[3], 64, "%d", c->threads);
    snprintf(a[4], 64, "%d", ef);
    snprintf(a[5], 64, "%d", np);
    snprintf(a[6], 64, "%llu", (unsigned long long)c->seed);
    snprintf(a[7], 64, "%d", c->needle_span);
    snprintf(a[8], 64, "%d", c->probes);
    char *argv[] = {exe, "bench", "--child", (char *)dir, a[0], a[1], a[2], a[3], a[4], a[5],
                    c->recorded ? (char *)c->recorded : "-", a[6], a[7], a[8], NULL};
    int fd[2];
    if (pipe(fd)) {
        lmk_cli_error(CMD, "pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        lmk_cli_error(CMD, "fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(exe, argv);
        _exit(127);
    }
    close(fd[1]);
    char buf[1024];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof buf - 1 && (k = read(fd[0], buf + got, sizeof buf - 1 - got)) != 0) {
        if (k < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)k;
    }
    buf[got] = 0;
    close(fd[0]);
    int wst = 0;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
        lmk_cli_error(CMD, "the reopening process failed (status %d); memory not measured", wst);
        return;
    }
    const char *p;
    if ((p = strstr(buf, "\"rss_anon_mb\": ")))
        res->rss_anon_mb = strtod(p + 15, NULL);
    if ((p = strstr(buf, "\"rss_file_mb\": ")))
        res->rss_file_mb = strtod(p + 15, NULL);
    if ((p = strstr(buf, "\"step_ms_p50\": ")))
        res->child_step_ms_p50 = strtod(p + 15, NULL);
}

/* ---- --save-stream ---- */

static int save_stream(const char *path, const bench_cfg *c, lmk_synth *gen)
{
    const int NL = c->n_layers, NH = c->n_heads, H = c->n_kv_heads, D = c->head_dim;
    const int64_t T = c->tokens, NQ = c->steps;
    FILE *f = fopen(path, "wb");
    if (!f) {
        lmk_cli_error(CMD, "%s: %s", path, strerror(errno));
        return 1;
    }
    unsigned char h[REC_HEADER] = {0};
    memcpy(h, REC_MAGIC, 8);
    uint32_t u[4] = {(uint32_t)NL, (uint32_t)NH, (uint32_t)H, (uint32_t)D}, dt = 0;
    uint64_t nt = (uint64_t)T, nq = (uint64_t)NQ;
    memcpy(h + 8, u, 16);
    memcpy(h + 24, &nt, 8);
    memcpy(h + 32, &nq, 8);
    memcpy(h + 40, &dt, 4);
    const int64_t CH = 4096;
    size_t row = (size_t)H * D;
    float *k = malloc((size_t)CH * row * 4), *v = malloc((size_t)CH * row * 4);
    float *q = malloc((size_t)NH * D * 4);
    int ok = k && v && q && fwrite(h, 1, sizeof h, f) == sizeof h;
    for (int l = 0; ok && l < NL; l++) {
        for (int pass = 0; ok && pass < 2; pass++)
            for (int64_t t = 0; ok && t < T; t += CH) {
                int64_t n = T - t < CH ? T - t : CH;
                lmk_synth_kv(gen, l, t, n, k, v);
                ok = fwrite(pass ? v : k, sizeof(float) * row, (size_t)n, f) == (size_t)n;
            }
        for (int64_t i = 0; ok && i < NQ; i++) {
            if (c->probes)
                lmk_synth_probe(gen, l, (int)i, T, q);
            else
                lmk_synth_query(gen, l, i, q);
            ok = fwrite(q, sizeof(float) * NH * D, 1, f) == 1;
        }
    }
    free(k);
    free(v);
    free(q);
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        lmk_cli_error(CMD, "writing %s failed: %s", path, strerror(errno));
        unlink(path);
        return 1;
    }
    return 0;
}

/* ---- the command ---- */

int lmk_cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--child"))
        return child_main(argc, argv);

    double t_start = now_s();
    bench_cfg c;
    memset(&c, 0, sizeof c);
    set_preset(&c, "small");
    c.preset = NULL;
    c.seed = 42;
    c.mode_union = 1;
    c.probes = 1;
    const char *json = NULL, *plot = NULL, *dir = NULL, *save = NULL;
    int user_specs = 0;
    long long lv;
    static const struct option lo[] = {
        {"preset", required_argument, 0, 'P'},   {"tokens", required_argument, 0, 'n'},
        {"layers", required_argument, 0, 'l'},   {"heads", required_argument, 0, 'H'},
        {"kv-heads", required_argument, 0, 'K'}, {"head-dim", required_argument, 0, 'D'},
        {"block-len", required_argument, 0, 'L'}, {"top-k", required_argument, 0, 'k'},
        {"dtype", required_argument, 0, 'y'},    {"queries", required_argument, 0, 'Q'},
        {"seed", required_argument, 0, 's'},     {"needle-span", required_argument, 0, 'N'},
        {"recorded", required_argument, 0, 'R'}, {"save-stream", required_argument, 0, 'W'},
        {"index", required_argument, 0, 'i'},    {"sweep", required_argument, 0, 'S'},
        {"steps", required_argument, 0, 'p'},    {"mode", required_argument, 0, 'm'},
        {"threads", required_argument, 0, 't'},  {"dir", required_argument, 0, 'd'},
        {"json", required_argument, 0, 'j'},     {"plot", required_argument, 0, 'g'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    /* --preset first, so that other flags override it whatever their order */
    for (int i = 1; i < argc; i++) {
        const char *name = NULL;
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            name = argv[i + 1];
        else if (!strncmp(argv[i], "--preset=", 9))
            name = argv[i] + 9;
        if (name && set_preset(&c, name)) {
            lmk_cli_error(CMD, "--preset is 1m, small or tiny, got '%s'", name);
            return 2;
        }
    }
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
        switch (opt) {
        case 'P': break;
        case 'n':
            if (parse_int("--tokens", optarg, 2, 1LL << 31, &lv))
                return 2;
            c.tokens = lv;
            break;
        case 'l':
            if (parse_int("--layers", optarg, 1, 256, &lv))
                return 2;
            c.n_layers = (int)lv;
            break;
        case 'H':
            if (parse_int("--heads", optarg, 1, 1024, &lv))
                return 2;
            c.n_heads = (int)lv;
            break;
        case 'K':
            if (parse_int("--kv-heads", optarg, 1, 1024, &lv))
                return 2;
            c.n_kv_heads = (int)lv;
            break;
        case 'D':
            if (parse_int("--head-dim", optarg, 2, 1024, &lv))
                return 2;
            c.head_dim = (int)lv;
            break;
        case 'L':
            if (parse_int("--block-len", optarg, 1, 1 << 16, &lv))
                return 2;
            c.block_len = (int)lv;
            break;
        case 'k':
            if (parse_int("--top-k", optarg, 1, 1 << 16, &lv))
                return 2;
            c.top_k = (int)lv;
            break;
        case 'y':
            if (!strcmp(optarg, "f16"))
                c.dtype_f16 = 1;
            else if (!strcmp(optarg, "f32"))
                c.dtype_f16 = 0;
            else {
                lmk_cli_error(CMD, "--dtype is f16 or f32, got '%s'", optarg);
                return 2;
            }
            break;
        case 'Q':
            if (!strcmp(optarg, "probe"))
                c.probes = 1;
            else if (!strcmp(optarg, "ordinary"))
                c.probes = 0;
            else {
                lmk_cli_error(CMD, "--queries is probe or ordinary, got '%s'", optarg);
                return 2;
            }
            break;
        case 's': {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 0);
            if (errno || !end || *end || optarg[0] == '-') {
                lmk_cli_error(CMD, "--seed wants a non-negative integer, got '%s'", optarg);
                return 2;
            }
            c.seed = s;
            break;
        }
        case 'N':
            if (parse_int("--needle-span", optarg, 4, 1 << 24, &lv))
                return 2;
            c.needle_span = (int)lv;
            break;
        case 'R': c.recorded = optarg; break;
        case 'W': save = optarg; break;
        case 'i':
            if (!user_specs) {
                c.n_specs = 0;
                user_specs = 1;
            }
            if (strlen(optarg) == 0 || strlen(optarg) >= BENCH_SPEC_LEN) {
                lmk_cli_error(CMD, "--index wants a factory string of 1..%d characters",
                              BENCH_SPEC_LEN - 1);
                return 2;
            }
            if (c.n_specs >= BENCH_MAX_SPECS - 1) {
                lmk_cli_error(CMD, "at most %d --index options", BENCH_MAX_SPECS - 1);
                return 2;
            }
            snprintf(c.specs[c.n_specs++], BENCH_SPEC_LEN, "%s", optarg);
            break;
        case 'S': /* replaces the preset's list for that parameter */
            if (parse_sweep(&c, optarg))
                return 2;
            break;
        case 'p':
            if (parse_int("--steps", optarg, 100, 1000000, &lv))
                return 2;
            c.steps = (int)lv;
            break;
        case 'm':
            if (!strcmp(optarg, "union"))
                c.mode_union = 1;
            else if (!strcmp(optarg, "grouped"))
                c.mode_union = 0;
            else {
                lmk_cli_error(CMD, "--mode is union or grouped, got '%s'", optarg);
                return 2;
            }
            break;
        case 't':
            if (parse_int("--threads", optarg, 1, 256, &lv))
                return 2;
            c.threads = (int)lv;
            break;
        case 'd': dir = optarg; break;
        case 'j': json = optarg; break;
        case 'g': plot = optarg; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind < argc) {
        lmk_cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (plot && !bench_have_gnuplot()) {
        lmk_cli_error(CMD, "--plot needs gnuplot, which is not installed (apt-get install gnuplot-nox)");
        return 2;
    }
    /* Flat first: the exact reference row, and the spec the stream is ingested with */
    int has_flat = 0;
    for (int i = 0; i < c.n_specs; i++)
        has_flat |= !strcmp(c.specs[i], "Flat");
    if (!has_flat) {
        memmove(c.specs[1], c.specs[0], (size_t)c.n_specs * BENCH_SPEC_LEN);
        snprintf(c.specs[0], BENCH_SPEC_LEN, "Flat");
        c.n_specs++;
    } else {
        for (int i = 0; i < c.n_specs; i++)
            if (!strcmp(c.specs[i], "Flat") && i > 0) {
                char tmp[BENCH_SPEC_LEN];
                memcpy(tmp, c.specs[i], BENCH_SPEC_LEN);
                memmove(c.specs[1], c.specs[0], (size_t)i * BENCH_SPEC_LEN);
                memcpy(c.specs[0], tmp, BENCH_SPEC_LEN);
                break;
            }
    }

    workload w;
    memset(&w, 0, sizeof w);
    w.rec.fd = -1;
    char err[2048] = "";
    if (c.recorded) {
        if (save) {
            lmk_cli_error(CMD, "--save-stream writes the synthetic stream; drop --recorded");
            return 2;
        }
        if (rec_open(c.recorded, &w.rec, err, sizeof err)) {
            lmk_cli_error(CMD, "%s", err);
            return 1;
        }
        c.n_layers = w.rec.n_layers;
        c.n_heads = w.rec.n_heads;
        c.n_kv_heads = w.rec.n_kv_heads;
        c.head_dim = w.rec.head_dim;
        c.tokens = w.rec.n_tokens;
        c.probes = 0;
    }
    if (c.n_heads % c.n_kv_heads != 0) {
        lmk_cli_error(CMD, "--heads (%d) must be a multiple of --kv-heads (%d)", c.n_heads,
                      c.n_kv_heads);
        rec_close(&w.rec);
        return 2;
    }
    if (c.tokens < 2 * (int64_t)c.block_len) {
        lmk_cli_error(CMD, "--tokens (%lld) must hold at least two blocks of %d",
                      (long long)c.tokens, c.block_len);
        rec_close(&w.rec);
        return 2;
    }
    /* refuse a bad spec now, not after a long ingest */
    for (int i = 0; i < c.n_specs; i++) {
        lmk_index_opts io = lmk_index_opts_default();
        io.spec = c.specs[i];
        io.dim = c.head_dim;
        lmk_index *ix = NULL;
        if (lmk_index_create(&io, &ix, err, sizeof err)) {
            lmk_cli_error(CMD, "--index \"%s\": %s", c.specs[i], err);
            rec_close(&w.rec);
            return 2;
        }
        lmk_index_free(ix);
    }
    w.T = c.tokens;
    if (!c.recorded) {
        lmk_synth_cfg gc = lmk_synth_cfg_default();
        gc.n_layers = c.n_layers;
        gc.n_heads = c.n_heads;
        gc.n_kv_heads = c.n_kv_heads;
        gc.head_dim = c.head_dim;
        gc.block_len = c.block_len;
        gc.seed = c.seed;
        gc.needle_span = c.needle_span;
        if (lmk_synth_create(&gc, &w.gen)) {
            lmk_cli_error(CMD, "cannot create the synthetic workload generator (shape out of range)");
            return 2;
        }
    }
    if (save) {
        int rc = save_stream(save, &c, w.gen);
        lmk_synth_free(w.gen);
        return rc;
    }

    const int NL = c.n_layers, NH = c.n_heads, H = c.n_kv_heads, D = c.head_dim, S = c.steps;
    const size_t row = (size_t)H * D, qrow = (size_t)NH * D;
    const int64_t T = c.tokens;
    const int K = c.top_k;

    /* every setting: Flat once, each other spec once per value of its sweep */
    int n_res = 0;
    for (int i = 0; i < c.n_specs; i++)
        n_res += spec_is_hnsw(c.specs[i]) && c.n_ef ? c.n_ef
               : spec_is_ivf(c.specs[i]) && c.n_nprobe ? c.n_nprobe : 1;

    static char tmpdir[PATH_MAX];
    int own_dir = 0, status = 1;
    char sdir[PATH_MAX + 32];
    lmk_session *s = NULL;
    lmk_dense **dense = NULL;
    float *k = NULL, *v = NULL, *kr = NULL, *vr = NULL, *Q = NULL, *Qw = NULL, *dout = NULL;
    int64_t *targets = NULL, *tw = NULL;
    bench_result *res = NULL;
    exact_ref x = {0};
    step_scratch ws = {0};
    double *dt = NULL;
    bench_dense dres = {0};
    bench_run run = {0};

    if (!dir) {
        const char *td = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/landmark-bench-XXXXXX", td && *td ? td : "/tmp");
        if (!mkdtemp(tmpdir)) {
            lmk_cli_error(CMD, "cannot create a temporary directory %s: %s", tmpdir, strerror(errno));
            goto out;
        }
        dir = tmpdir;
        own_dir = 1;
    } else if (mkdir(dir, 0755) && errno != EEXIST) {
        lmk_cli_error(CMD, "cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    snprintf(sdir, sizeof sdir, "%s/session", dir);
    {
        /* a fresh session: the bench never appends to or reindexes a user's session */
        struct stat st;
        if (stat(sdir, &st) == 0) {
            lmk_cli_error(CMD, "%s exists; give an empty or new --dir", sdir);
            goto out;
        }
    }

    res = calloc((size_t)n_res, sizeof *res);
    Q = malloc((size_t)S * NL * qrow * sizeof(float));
    Qw = malloc((size_t)WARMUP_STEPS * NL * qrow * sizeof(float));
    dout = malloc((size_t)S * NL * qrow * sizeof(float));
    targets = malloc((size_t)S * NL * sizeof(int64_t));
    tw = malloc((size_t)NL * sizeof(int64_t));
    x.kth = malloc((size_t)S * NL * NH * sizeof(double));
    ws.out = malloc((size_t)NL * qrow * sizeof(float));
    ws.blocks = malloc((size_t)NH * (K > 0 ? K : 1) * sizeof(int64_t));
    ws.t = malloc((size_t)S * sizeof(double));
    ws.errs = malloc((size_t)S * NL * NH * sizeof(double));
    dt = malloc((size_t)S * sizeof(double));
    const int64_t CH = 4096;
    k = malloc((size_t)CH * row * sizeof(float));
    v = malloc((size_t)CH * row * sizeof(float));
    kr = malloc((size_t)CH * row * sizeof(float));
    vr = malloc((size_t)CH * row * sizeof(float));
    dense = calloc((size_t)NL, sizeof *dense);
    if (!res || !Q || !Qw || !dout || !targets || !tw || !x.kth || !ws.out || !ws.blocks ||
        !ws.t || !ws.errs || !dt || !k || !v || !kr || !vr || !dense) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    for (int p = 0; p < S; p++)
        if (step_queries(&w, &c, p, Q + (size_t)p * NL * qrow, targets + (size_t)p * NL, err,
                         sizeof err)) {
            lmk_cli_error(CMD, "%s", err);
            goto out;
        }
    for (int i = 0; i < WARMUP_STEPS; i++)
        if (step_queries(&w, &c, S + i, Qw + (size_t)i * NL * qrow, tw, err, sizeof err)) {
            lmk_cli_error(CMD, "%s", err);
            goto out;
        }
    run.n_needles = w.gen ? lmk_synth_n_needles(w.gen, T) : 0;

    /* ---- ingest: session (Flat) and dense baseline, from the same chunks ---- */
    lmk_session_opts so = lmk_session_opts_default();
    so.n_layers = NL;
    so.n_heads = NH;
    so.n_kv_heads = H;
    so.head_dim = D;
    so.block_len = c.block_len;
    so.dtype = c.dtype_f16 ? LMK_DTYPE_F16 : LMK_DTYPE_F32;
    so.landmark = LMK_LANDMARK_MEAN;
    so.index_spec = "Flat";
    so.create = 1;
    so.n_threads = c.threads;
    so.durability = LMK_DURABLE_NONE; /* a benchmark session: synced once at the end */
    so.log = log_cb;
    if (lmk_session_open(sdir, &so, &s, err, sizeof err)) {
        lmk_cli_error(CMD, "%s", err);
        goto out;
    }
    lmk_cli_set_blas_threads(1);
    for (int l = 0; l < NL; l++)
        if (lmk_dense_create(H, D, NH, LMK_DTYPE_F32, T, &dense[l])) {
            lmk_cli_error(CMD, "out of memory for the dense baseline (%lld tokens)", (long long)T);
            goto out;
        }
    for (int64_t t = 0; t < T; t += CH) {
        int64_t n = T - t < CH ? T - t : CH;
        for (int l = 0; l < NL; l++) {
            if (w.gen) {
                lmk_synth_kv(w.gen, l, t, n, k, v);
            } else if (rec_kv(&w.rec, l, t, n, k, v, err, sizeof err)) {
                lmk_cli_error(CMD, "%s", err);
                goto out;
            }
            double t0 = now_s();
            if (lmk_session_append(s, l, n, k, v)) {
                lmk_cli_error(CMD, "appending tokens %lld..%lld at layer %d: %s", (long long)t,
                              (long long)(t + n), l, lmk_session_errmsg(s));
                goto out;
            }
            run.ingest_s += now_s() - t0;
            /* the dense baseline holds the session's stored (dtype-rounded) values */
            const float *kd = k, *vd = v;
            if (c.dtype_f16) {
                for (size_t i = 0; i < (size_t)n * row; i++) {
                    kr[i] = lmk_f16_to_f32(lmk_f32_to_f16(k[i]));
                    vr[i] = lmk_f16_to_f32(lmk_f32_to_f16(v[i]));
                }
                kd = kr;
                vd = vr;
            }
            lmk_dense_append(dense[l], n, kd, vd);
        }
        progress("ingest", t + n, T);
    }
    {
        double t0 = now_s();
        if (lmk_session_sync(s)) {
            lmk_cli_error(CMD, "sync: %s", lmk_session_errmsg(s));
            goto out;
        }
        run.ingest_s += now_s() - t0;
    }
    run.kv_bytes = 2.0 * (double)T * row * (c.dtype_f16 ? 2 : 4) * NL;
    run.blocks = (T - 1) / c.block_len;
    x.cand = run.blocks;
    x.k = K < x.cand ? K : (int)x.cand;

    /* ---- exact reference and dense steps ---- */
    note("exact top-%d of %d steps from the stored landmarks", K, S);
    if (exact_topk(s, &c, Q, &x, err, sizeof err)) {
        lmk_cli_error(CMD, "%s", err);
        goto out;
    }
    lmk_cli_set_blas_threads(c.threads);
    for (int p = -WARMUP_STEPS; p < S; p++) {
        const float *qp = p < 0 ? Qw + (size_t)(p + WARMUP_STEPS) * NL * qrow
                                : Q + (size_t)p * NL * qrow;
        float *op = p < 0 ? ws.out : dout + (size_t)p * NL * qrow;
        double t0 = now_s();
        for (int l = 0; l < NL; l++)
            lmk_dense_attend(dense[l], qp + l * qrow, op + l * qrow);
        if (p >= 0)
            dt[p] = now_s() - t0;
        progress("dense steps", p + WARMUP_STEPS + 1, S + WARMUP_STEPS);
    }
    lmk_cli_set_blas_threads(1);
    dres.threads = c.threads;
    dres.memory_mb = 0;
    for (int l = 0; l < NL; l++)
        dres.memory_mb += lmk_dense_memory_bytes(dense[l]) / 1048576.0;
    dres.step_ms_p50 = 1e3 * percentile(dt, S, 0.5);
    dres.step_ms_p99 = 1e3 * percentile(dt, S, 0.99);
    /* the baseline's RAM is not needed any more: give it back before the index runs */
    for (int l = 0; l < NL; l++) {
        lmk_dense_free(dense[l]);
        dense[l] = NULL;
    }

    /* One untimed pass of exact steps: the blocks the steps read are then in the page
     * cache for every spec alike (the first spec measured would otherwise pay the cold
     * reads alone). */
    {
        bench_result warm;
        memset(&warm, 0, sizeof warm);
        lmk_attend_opts ao = attend_opts(&c, 0, 0);
        faiss_threads(1);
        if (run_steps(s, &c, &ao, Q, Qw, targets, NULL, &x, &ws, &warm, "warm-up", err,
                      sizeof err)) {
            lmk_cli_error(CMD, "%s", err);
            goto out;
        }
    }

    /* ---- every spec, every parameter ---- */
    int r = 0;
    for (int i = 0; i < c.n_specs; i++) {
        const char *spec = c.specs[i];
        int hn = spec_is_hnsw(spec) && c.n_ef, iv = !hn && spec_is_ivf(spec) && c.n_nprobe;
        int nv = hn ? c.n_ef : iv ? c.n_nprobe : 1;
        note("building %s", spec);
        faiss_threads(c.threads);
        double t0 = now_s();
        if (lmk_session_reindex(s, spec)) {
            lmk_cli_error(CMD, "index \"%s\": %s", spec, lmk_session_errmsg(s));
            goto out;
        }
        double build = now_s() - t0;
        lmk_session_info info;
        if (lmk_session_info_get(s, &info)) {
            lmk_cli_error(CMD, "info: %s", lmk_session_errmsg(s));
            goto out;
        }
        double disk = info.disk_bytes / 1048576.0;
        for (int j = 0; j < nv; j++, r++) {
            bench_result *o = &res[r];
            snprintf(o->index, sizeof o->index, "%s", spec);
            o->ef_search = hn ? c.ef[j] : 0;
            o->nprobe = iv ? c.nprobe[j] : 0;
            char label[BENCH_SPEC_LEN + 64];
            snprintf(label, sizeof label, "%s%s%.0d", spec, hn ? " ef " : iv ? " nprobe " : "",
                     hn ? o->ef_search : o->nprobe);
            progress(label, 0, 2);
            lmk_attend_opts ao = attend_opts(&c, o->ef_search, o->nprobe);
            faiss_threads(1);
            if (run_steps(s, &c, &ao, Q, Qw, targets, dout, &x, &ws, o, label, err, sizeof err)) {
                lmk_cli_error(CMD, "%s", err);
                goto out;
            }
            o->build_s = build;
            o->disk_mb = disk;
            o->speedup = o->step_ms_p50 > 0 ? dres.step_ms_p50 / o->step_ms_p50 : NAN;
            o->ingest_tokens_per_s = (double)T / (run.ingest_s + build);
            progress(label, 1, 2);
            run_child(sdir, &c, o->ef_search, o->nprobe, o);
            progress(label, 2, 2);
        }
    }
    n_res = r;
    run.wall_s = now_s() - t_start;

    bench_print_table(stdout, &c, &run, &dres, res, n_res);
    fflush(stdout);
    if (json && bench_write_json(json, &c, &run, &dres, res, n_res)) {
        lmk_cli_error(CMD, "cannot write %s: %s", json, strerror(errno));
        goto out;
    }
    if (plot && bench_write_plot(plot, &c, &dres, res, n_res, err, sizeof err)) {
        lmk_cli_error(CMD, "%s", err);
        goto out;
    }
    status = 0;
out:
    if (dense)
        for (int l = 0; l < NL; l++)
            lmk_dense_free(dense[l]);
    free(dense);
    lmk_session_close(s);
    lmk_synth_free(w.gen);
    rec_close(&w.rec);
    free(k);
    free(v);
    free(kr);
    free(vr);
    free(Q);
    free(Qw);
    free(dout);
    free(targets);
    free(tw);
    free(x.kth);
    free(ws.out);
    free(ws.blocks);
    free(ws.t);
    free(ws.errs);
    free(dt);
    free(res);
    if (own_dir) {
        char cmd[PATH_MAX + 32];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            lmk_cli_error(CMD, "could not remove %s", dir);
    }
    return status;
}
