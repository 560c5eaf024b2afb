/* landmark demo: the main job on an embedded default. Ingests the deterministic synthetic
 * stream (bench/lmk_synth.h) into a session, decodes probe queries that target planted
 * needle blocks with retrieval and with dense attention, and reports accuracy and speed.
 * The steps, in order: parse_args, demo_open, demo_ingest, demo_load, demo_probes,
 * demo_time_dense, report_json or report_text. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_clock.h"
#include "lmk_dense.h"
#include "lmk_fs.h"
#include "lmk_session.h"
#include "lmk_synth.h"
#include "opt.h"
#include "probe.h"

#define CMD "demo"

typedef struct demo_args {
    long long tokens, probes;
    const char *dir, *spec;
    int top_k, threads, json, ef, nprobe;
    int mode, dtype; /* lmk_mode, lmk_dtype */
} demo_args;

/* Everything one run holds; released by demo_free. */
typedef struct demo {
    demo_args a;
    lmk_synth_cfg gc;
    int NL, NH, H, D;
    size_t row, qrow;     /* floats per token of K (or V), floats per query */
    char tmpdir[4096];
    const char *dir;
    int own_dir;          /* dir is a temporary directory of ours, removed at the end */
    lmk_synth *gen;
    lmk_session *s;
    lmk_session_info info;
    int64_t start, T;     /* tokens held before this run, after it */
    double ingest_s;
    float **kv_all;       /* per layer: K then V, (T, H, D) each, as stored */
    lmk_dense **dense;    /* per layer: the dense baseline over the same keys and values */
    float *o;             /* (probes, NL, NH, D): retrieval outputs, hashed into the digest */
    double *step, *dstep; /* (probes): seconds per decode step, retrieval and dense */
    double err_max;
    int64_t hits, targets;
} demo;

static const lmk_opt_word mode_words[] = {
    {"grouped", LMK_MODE_GROUPED}, {"union", LMK_MODE_UNION}, {NULL, 0}};
static const lmk_opt_word dtype_words[] = {
    {"f32", LMK_DTYPE_F32}, {"f16", LMK_DTYPE_F16}, {NULL, 0}};
static const lmk_opt_word top_k_words[] = {{"all", LMK_TOP_K_ALL}, {NULL, 0}};

/* Returns -1 to go on, else the exit status (0 after --help, 2 on a usage error). */
static int parse_args(int argc, char **argv, demo_args *a)
{
    *a = (demo_args){.tokens = 65536, .probes = 32, .spec = "Flat", .top_k = 8, .threads = 1,
                     .mode = LMK_MODE_GROUPED, .dtype = LMK_DTYPE_F16};
    const lmk_opt opts[] = {
        {.name = "--tokens", .kind = LMK_OPT_COUNT, .dst = &a->tokens, .min = 1, .max = 0x1p40,
         .metavar = "N", .help = "tokens in the stream (k/m suffixes; default 64k)"},
        {.name = "--dir", .kind = LMK_OPT_STR, .dst = &a->dir, .metavar = "DIR",
         .help = "session directory (default: a temporary one, removed after)"},
        {.name = "--index", .kind = LMK_OPT_STR, .dst = &a->spec, .metavar = "SPEC",
         .help = "FAISS factory string for landmark indices (default Flat)"},
        {.name = "--top-k", .kind = LMK_OPT_INT, .dst = &a->top_k, .min = 0, .max = 1 << 30,
         .words = top_k_words, .metavar = "K|all",
         .help = "blocks retrieved per query head (default 8)"},
        {.name = "--mode", .kind = LMK_OPT_CHOICE, .dst = &a->mode, .words = mode_words,
         .metavar = "grouped|union", .help = "softmax mode (default grouped)"},
        {.name = "--dtype", .kind = LMK_OPT_CHOICE, .dst = &a->dtype, .words = dtype_words,
         .metavar = "f32|f16", .help = "storage dtype (default f16)"},
        {.name = "--probes", .kind = LMK_OPT_COUNT, .dst = &a->probes, .min = 1, .max = 1e6,
         .metavar = "N", .help = "probe queries (default 32)"},
        {.name = "--ef-search", .kind = LMK_OPT_INT, .dst = &a->ef, .min = 1, .max = 1 << 20,
         .metavar = "N", .help = "HNSW efSearch, 1..1m (default: the index's)"},
        {.name = "--nprobe", .kind = LMK_OPT_INT, .dst = &a->nprobe, .min = 1, .max = 1 << 20,
         .metavar = "N", .help = "IVF nprobe, 1..1m (default: the index's)"},
        {.name = "--threads", .alias = 't', .kind = LMK_OPT_INT, .dst = &a->threads, .min = 1,
         .max = 256, .metavar = "N", .help = "threads (default 1)"},
        {.name = "--json", .kind = LMK_OPT_FLAG, .dst = &a->json,
         .help = "print one JSON object instead of text"},
    };
    const lmk_opt_spec spec = {
        .cmd = CMD,
        .usage = "landmark demo [options]",
        .about = "Ingest a deterministic synthetic stream (keys, values; planted needle blocks) "
                 "into a\nsession, then decode probe queries with retrieval and with dense "
                 "attention.\nOn an existing session DIR the same stream is continued up to "
                 "--tokens.\n",
        .opts = opts,
        .n_opts = (int)(sizeof opts / sizeof opts[0]),
        .epilog = "Shape of the embedded default: 2 layers, 8 query heads, 2 KV heads, "
                  "head_dim 64,\nblock_len 64; generator seed 42 (README: \"The synthetic "
                  "workload\").\n",
    };
    int rc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    return rc == 0 ? -1 : rc == 1 ? 0 : 2;
}

static void progress(const char *what, int64_t done, int64_t total)
{
    if (!isatty(2) || total <= 0)
        return;
    int w = 40, n = (int)(w * done / total);
    fprintf(stderr, "\r%-8s [%.*s%*s] %5.1f%%", what, n, "########################################",
            w - n, "", 100.0 * (double)done / (double)total);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The exact result of `mode` over every block, computed here in double precision from the
 * stored (dtype-rounded) keys and values, independently of the engine: for the query at
 * the last position p = T - 1 with no sinks and no extra local window.
 * union: softmax over all tokens (dense attention). grouped: one softmax over the tail's
 * scores and every sealed block's landmark score (landmark = mean of its stored keys, kept
 * as f32 like the session), each block's tokens weighted by their in-block softmax.
 * K, V: (T, n_kv_heads, D); q, out: (n_heads, D). */
static void reference(const float *K, const float *V, int64_t T, int NH, int H, int D, int L,
                      lmk_mode mode, const float *q, float *out, double *sc, double *acc)
{
    const double scale = 1.0 / sqrt((double)D);
    const int64_t p = T - 1, S = p / L; /* blocks sealed at p */
    for (int h = 0; h < NH; h++) {
        int kvh = h / (NH / H);
        const float *qh = q + (size_t)h * D;
        for (int64_t t = 0; t < T; t++) {
            const float *k = K + ((size_t)t * H + kvh) * D;
            double x = 0;
            for (int d = 0; d < D; d++)
                x += (double)qh[d] * k[d];
            sc[t] = scale * x;
        }
        for (int d = 0; d < D; d++)
            acc[d] = 0;
        double m = -INFINITY, z = 0;
        if (mode == LMK_MODE_UNION) {
            for (int64_t t = 0; t < T; t++)
                m = sc[t] > m ? sc[t] : m;
            for (int64_t t = 0; t < T; t++) {
                double w = exp(sc[t] - m);
                z += w;
                const float *v = V + ((size_t)t * H + kvh) * D;
                for (int d = 0; d < D; d++)
                    acc[d] += w * v[d];
            }
        } else {
            double *gate = sc + T; /* (S) */
            for (int64_t b = 0; b < S; b++) {
                double g = 0;
                for (int d = 0; d < D; d++) {
                    double mean = 0;
                    for (int i = 0; i < L; i++)
                        mean += K[((size_t)(b * L + i) * H + kvh) * D + d];
                    g += (double)qh[d] * (float)(mean / L);
                }
                gate[b] = scale * g;
                m = gate[b] > m ? gate[b] : m;
            }
            for (int64_t t = S * L; t < T; t++)
                m = sc[t] > m ? sc[t] : m;
            for (int64_t t = S * L; t < T; t++) {
                double w = exp(sc[t] - m);
                z += w;
                const float *v = V + ((size_t)t * H + kvh) * D;
                for (int d = 0; d < D; d++)
                    acc[d] += w * v[d];
            }
            for (int64_t b = 0; b < S; b++) {
                double pg = exp(gate[b] - m), mb = -INFINITY, zb = 0;
                z += pg;
                for (int i = 0; i < L; i++)
                    mb = sc[b * L + i] > mb ? sc[b * L + i] : mb;
                for (int i = 0; i < L; i++)
                    zb += exp(sc[b * L + i] - mb);
                for (int i = 0; i < L; i++) {
                    double w = pg * exp(sc[b * L + i] - mb) / zb;
                    const float *v = V + ((size_t)(b * L + i) * H + kvh) * D;
                    for (int d = 0; d < D; d++)
                        acc[d] += w * v[d];
                }
            }
        }
        for (int d = 0; d < D; d++)
            out[(size_t)h * D + d] = (float)(acc[d] / z);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *dtype_name(int dtype)
{
    return dtype == LMK_DTYPE_F16 ? "f16" : "f32";
}

static const char *mode_name(int mode)
{
    return mode == LMK_MODE_UNION ? "union" : "grouped";
}

/* A fresh directory under $TMPDIR (or /tmp) for the session, removed by demo_free. */
static int demo_tmpdir(demo *d)
{
    const char *td = getenv("TMPDIR");
    snprintf(d->tmpdir, sizeof d->tmpdir, "%s/landmark-demo-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(d->tmpdir)) {
        lmk_cli_error(CMD, "cannot create a temporary directory %s: %s", d->tmpdir,
                      strerror(errno));
        return -1;
    }
    d->dir = d->tmpdir;
    d->own_dir = 1;
    return 0;
}

/* The generator and the session (created, or an existing one continued). */
static int demo_open(demo *d)
{
    lmk_synth_cfg *gc = &d->gc;
    *gc = lmk_synth_cfg_default();
    gc->n_layers = 2;
    gc->n_heads = 8;
    gc->n_kv_heads = 2;
    gc->head_dim = 64;
    gc->block_len = 64;
    d->NL = gc->n_layers, d->NH = gc->n_heads, d->H = gc->n_kv_heads, d->D = gc->head_dim;
    d->row = (size_t)d->H * d->D, d->qrow = (size_t)d->NH * d->D;
    if (lmk_synth_create(gc, &d->gen)) {
        lmk_cli_error(CMD, "cannot create the synthetic workload generator");
        return -1;
    }
    char fp[128];
    snprintf(fp, sizeof fp, "landmark-demo-synth-v1 seed=%llu", (unsigned long long)gc->seed);
    lmk_session_opts so = lmk_session_opts_default();
    so.n_layers = d->NL;
    so.n_heads = d->NH;
    so.n_kv_heads = d->H;
    so.head_dim = d->D;
    so.block_len = gc->block_len;
    so.dtype = (lmk_dtype)d->a.dtype;
    so.landmark = LMK_LANDMARK_MEAN;
    so.index_spec = d->a.spec;
    so.fingerprint = fp;
    so.create = 1;
    so.n_threads = d->a.threads;
    /* an existing session is checked in a child first: a damaged file must not crash us */
    if (lmk_cli_session_open(CMD, d->dir, d->own_dir ? LMK_PROBE_SKIP : LMK_PROBE_WALK, &so,
                             &d->s))
        return -1;
    lmk_cli_set_blas_threads(1);
    return 0;
}

/* Append the stream from where every layer has it up to --tokens, in chunks. */
static int demo_ingest(demo *d)
{
    const int64_t chunk = 4096, tokens = d->a.tokens;
    int rc = -1;
    float *k = malloc((size_t)chunk * d->row * 4), *v = malloc((size_t)chunk * d->row * 4);
    if (!k || !v) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    d->start = tokens;
    for (int l = 0; l < d->NL; l++)
        if (lmk_session_tokens(d->s, l) < d->start)
            d->start = lmk_session_tokens(d->s, l);
    if (d->start > 0 && !d->a.json)
        fprintf(stderr, "landmark demo: %s holds %lld tokens, continuing to %lld\n", d->dir,
                (long long)d->start, (long long)tokens);
    double t_ing = lmk_clock_s();
    for (int64_t t = d->start; t < tokens; t += chunk) {
        int64_t end = t + chunk < tokens ? t + chunk : tokens;
        for (int l = 0; l < d->NL; l++) {
            int64_t have = lmk_session_tokens(d->s, l);
            if (have >= end)
                continue;
            int64_t from = have > t ? have : t, n = end - from;
            lmk_synth_kv(d->gen, l, from, n, k, v);
            if (lmk_session_append(d->s, l, n, k, v)) {
                lmk_cli_error(CMD, "appending tokens %lld..%lld at layer %d: %s", (long long)from,
                              (long long)(from + n), l, lmk_session_errmsg(d->s));
                goto out;
            }
        }
        progress("ingest", end - d->start, tokens - d->start);
    }
    d->ingest_s = lmk_clock_s() - t_ing;
    if (lmk_session_sync(d->s)) {
        lmk_cli_error(CMD, "sync: %s", lmk_session_errmsg(d->s));
        goto out;
    }
    d->T = lmk_session_tokens(d->s, 0);
    for (int l = 1; l < d->NL; l++)
        if (lmk_session_tokens(d->s, l) != d->T) {
            lmk_cli_error(CMD, "layers hold different token counts");
            goto out;
        }
    lmk_session_info_get(d->s, &d->info);
    rc = 0;
out:
    free(k);
    free(v);
    return rc;
}

/* Every stored key and value in RAM, for the reference and the dense baseline, in the
 * session's dtype (the stored, rounded values). */
static int demo_load(demo *d)
{
    d->kv_all = calloc((size_t)d->NL, sizeof *d->kv_all);
    d->dense = calloc((size_t)d->NL, sizeof *d->dense);
    if (!d->kv_all || !d->dense) {
        lmk_cli_error(CMD, "out of memory");
        return -1;
    }
    const int64_t T = d->T;
    for (int l = 0; l < d->NL; l++) {
        d->kv_all[l] = malloc(2 * (size_t)T * d->row * 4);
        if (!d->kv_all[l]) {
            lmk_cli_error(CMD, "out of memory for the reference (%lld tokens)", (long long)T);
            return -1;
        }
        float *kk = d->kv_all[l], *vv = kk + (size_t)T * d->row;
        int rc;
        if ((rc = lmk_session_read_kv(d->s, l, 0, T, kk, vv)) ||
            (rc = lmk_dense_create(d->H, d->D, d->NH, (lmk_dtype)d->a.dtype, T, &d->dense[l])) ||
            (rc = lmk_dense_append(d->dense[l], T, kk, vv))) {
            lmk_cli_error(CMD, "building the dense baseline: %s",
                          rc > 0 ? strerror(rc) : lmk_session_errmsg(d->s));
            return -1;
        }
    }
    return 0;
}

/* Count the query heads whose retrieved blocks (NH, cap) include the needle. */
static void count_hits(demo *d, const int64_t *blocks, int cap, int64_t needle)
{
    if (needle < 0)
        return;
    for (int h = 0; h < d->NH; h++) {
        int hit = 0;
        for (int j = 0; j < cap; j++)
            hit |= blocks[(size_t)h * cap + j] == needle;
        d->hits += hit;
        d->targets++;
    }
}

/* Track the largest relative error per head of out against ref, both (NH, D). */
static void track_error(demo *d, const float *out, const float *ref)
{
    const int D = d->D;
    for (int h = 0; h < d->NH; h++) {
        double num = 0, den = 0;
        for (int dd = 0; dd < D; dd++) {
            double e = (double)out[h * D + dd] - ref[h * D + dd];
            num += e * e;
            den += (double)ref[h * D + dd] * ref[h * D + dd];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > d->err_max)
            d->err_max = rel;
    }
}

/* Decode every probe with retrieval (timed), and check it against the exact result over
 * every block in the same mode and the planted needle. */
static int demo_probes(demo *d)
{
    const long long probes = d->a.probes;
    const int64_t T = d->T, nb = d->info.blocks;
    int rc = -1;
    int cap = d->a.top_k == LMK_TOP_K_ALL ? (int)nb + 1 : d->a.top_k;
    if (cap < 1)
        cap = 1;
    float *q = malloc(d->qrow * 4), *oref = malloc(d->qrow * 4);
    int64_t *blocks = malloc((size_t)d->NH * cap * sizeof(int64_t));
    double *scratch = malloc(((size_t)T + (size_t)nb + 1 + (size_t)d->D) * sizeof(double));
    d->o = malloc((size_t)probes * d->NL * d->qrow * 4);
    d->step = calloc((size_t)probes, sizeof(double));
    if (!q || !oref || !blocks || !scratch || !d->o || !d->step) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    lmk_attend_opts ao = lmk_attend_opts_default();
    ao.top_k = d->a.top_k;
    ao.mode = (lmk_mode)d->a.mode;
    ao.ef_search = d->a.ef;
    ao.nprobe = d->a.nprobe;
    for (long long p = 0; p < probes; p++) {
        for (int l = 0; l < d->NL; l++) {
            int64_t needle = lmk_synth_probe(d->gen, l, (int)p, T, q);
            float *out = d->o + ((size_t)p * d->NL + l) * d->qrow;
            lmk_attend_stats st = {.blocks = blocks, .blocks_cap = cap};
            double t0 = lmk_clock_s();
            if (lmk_session_attend(d->s, l, 1, q, &ao, out, &st)) {
                lmk_cli_error(CMD, "attend: %s", lmk_session_errmsg(d->s));
                goto out;
            }
            d->step[p] += lmk_clock_s() - t0;
            count_hits(d, blocks, cap, needle);
            const float *kk = d->kv_all[l], *vv = kk + (size_t)T * d->row;
            reference(kk, vv, T, d->NH, d->H, d->D, d->gc.block_len, ao.mode, q, oref, scratch,
                      scratch + T + nb + 1);
            track_error(d, out, oref);
        }
        progress("probes", p + 1, probes);
    }
    rc = 0;
out:
    free(q);
    free(oref);
    free(blocks);
    free(scratch);
    return rc;
}

/* The same probes with dense attention, timed, on --threads BLAS threads. */
static int demo_time_dense(demo *d)
{
    const long long probes = d->a.probes;
    float *q = malloc(d->qrow * 4), *od = malloc(d->qrow * 4);
    d->dstep = calloc((size_t)probes, sizeof(double));
    if (!q || !od || !d->dstep) {
        free(q);
        free(od);
        lmk_cli_error(CMD, "out of memory");
        return -1;
    }
    lmk_cli_set_blas_threads(d->a.threads);
    for (long long p = 0; p < probes; p++) {
        for (int l = 0; l < d->NL; l++) {
            lmk_synth_probe(d->gen, l, (int)p, d->T, q);
            double t0 = lmk_clock_s();
            lmk_dense_attend(d->dense[l], q, od);
            d->dstep[p] += lmk_clock_s() - t0;
        }
    }
    lmk_cli_set_blas_threads(1);
    free(q);
    free(od);
    return 0;
}

/* What both reports print. */
typedef struct demo_result {
    uint64_t digest;
    double step_ms, dense_ms, speedup, hit_rate, ingest_rate;
} demo_result;

static demo_result demo_result_get(demo *d)
{
    const long long probes = d->a.probes;
    demo_result r;
    r.digest = fnv(0xcbf29ce484222325ull, d->o, (size_t)probes * d->NL * d->qrow * 4);
    qsort(d->step, (size_t)probes, sizeof *d->step, cmp_double);
    qsort(d->dstep, (size_t)probes, sizeof *d->dstep, cmp_double);
    r.step_ms = 1e3 * d->step[probes / 2];
    r.dense_ms = 1e3 * d->dstep[probes / 2];
    r.speedup = r.step_ms > 0 ? r.dense_ms / r.step_ms : 0.0;
    r.hit_rate = d->targets ? (double)d->hits / (double)d->targets : NAN;
    r.ingest_rate = d->ingest_s > 0 && d->a.tokens > d->start
                        ? (double)(d->a.tokens - d->start) / d->ingest_s
                        : 0.0;
    return r;
}

static void report_json(const demo *d, const demo_result *r)
{
    printf("{\"tokens\": %lld, \"blocks\": %lld, ", (long long)d->T, (long long)d->info.blocks);
    if (d->targets)
        printf("\"needle_hit_rate\": %.6f, ", r->hit_rate);
    else
        printf("\"needle_hit_rate\": null, ");
    printf("\"attn_rel_err_max\": %.3e, \"step_ms\": %.4f, \"dense_step_ms\": %.4f, "
           "\"speedup\": %.2f, \"probe_digest\": \"%016llx\", \"index\": ",
           d->err_max, r->step_ms, r->dense_ms, r->speedup, (unsigned long long)r->digest);
    lmk_cli_json_str(stdout, d->info.index_spec);
    printf(", \"mode\": \"%s\", \"top_k\": %d, \"dtype\": \"%s\", \"threads\": %d, "
           "\"probes\": %lld, \"ingest_tokens_per_s\": %.0f}\n",
           mode_name(d->a.mode), d->a.top_k, dtype_name(d->a.dtype), d->a.threads, d->a.probes,
           r->ingest_rate);
}

static void report_text(const demo *d, const demo_result *r)
{
    char k[32] = "all";
    if (d->a.top_k != LMK_TOP_K_ALL)
        snprintf(k, sizeof k, "%d", d->a.top_k);
    printf("session          %s%s\n", d->dir, d->own_dir ? " (temporary)" : "");
    printf("tokens           %lld (%lld sealed blocks of %d, %d layers, %d/%d heads, "
           "head_dim %d, %s)\n",
           (long long)d->T, (long long)d->info.blocks, d->gc.block_len, d->NL, d->NH, d->H,
           d->D, dtype_name(d->a.dtype));
    printf("index            %s, top-k %s, %s softmax\n", d->info.index_spec, k,
           mode_name(d->a.mode));
    if (d->targets)
        printf("needle hit rate  %.4f (%lld of %lld probe x layer x head)\n", r->hit_rate,
               (long long)d->hits, (long long)d->targets);
    else
        printf("needle hit rate  n/a (the stream holds no needle yet)\n");
    printf("attn rel err max %.3e (vs the same mode over every block, computed apart)\n",
           d->err_max);
    printf("decode step      %.3f ms with retrieval, %.3f ms dense (median of %lld, "
           "%d thread%s): %.1fx\n",
           r->step_ms, r->dense_ms, d->a.probes, d->a.threads, d->a.threads > 1 ? "s" : "",
           r->speedup);
    printf("probe digest     %016llx\n", (unsigned long long)r->digest);
}

static void demo_free(demo *d)
{
    if (d->dense)
        for (int l = 0; l < d->NL; l++)
            lmk_dense_free(d->dense[l]);
    free(d->dense);
    if (d->kv_all)
        for (int l = 0; l < d->NL; l++)
            free(d->kv_all[l]);
    free(d->kv_all);
    lmk_session_close(d->s);
    lmk_synth_free(d->gen);
    free(d->o);
    free(d->step);
    free(d->dstep);
    int rc;
    if (d->own_dir && (rc = lmk_fs_rmtree(d->dir)) != 0)
        lmk_cli_error(CMD, "could not remove %s: %s", d->dir, strerror(rc));
}

int lmk_cmd_demo(int argc, char **argv)
{
    demo d = {0};
    int rc = parse_args(argc, argv, &d.a);
    if (rc >= 0)
        return rc;
    d.dir = d.a.dir;
    if (!d.dir && demo_tmpdir(&d))
        return 1;
    int status = 1;
    if (!demo_open(&d) && !demo_ingest(&d) && !demo_load(&d) && !demo_probes(&d) &&
        !demo_time_dense(&d)) {
        demo_result r = demo_result_get(&d);
        if (d.a.json)
            report_json(&d, &r);
        else
            report_text(&d, &r);
        status = 0;
    }
    demo_free(&d);
    return status;
}
