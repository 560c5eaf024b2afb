/* landmark demo: the main job on an embedded default. Ingests the deterministic synthetic
 * stream (bench/lmk_synth.h) into a session, decodes probe queries that target planted
 * needle blocks with retrieval and with dense attention, and reports accuracy and speed. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "opt.h"
#include "lmk_dense.h"
#include "lmk_session.h"
#include "lmk_synth.h"
#include "probe.h"

#define CMD "demo"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void help(FILE *f)
{
    fprintf(f,
            "usage: landmark demo [options]\n\n"
            "Ingest a deterministic synthetic stream (keys, values; planted needle blocks) into a\n"
            "session, then decode probe queries with retrieval and with dense attention.\n"
            "On an existing session DIR the same stream is continued up to --tokens.\n\n"
            "  --tokens N         tokens in the stream (k/m suffixes; default 64k)\n"
            "  --dir DIR          session directory (default: a temporary one, removed after)\n"
            "  --index SPEC       FAISS factory string for landmark indices (default Flat)\n"
            "  --top-k K|all      blocks retrieved per query head (default 8)\n"
            "  --mode grouped|union  softmax mode (default grouped)\n"
            "  --dtype f32|f16    storage dtype (default f16)\n"
            "  --probes N         probe queries (default 32)\n"
            "  --ef-search N      HNSW efSearch;  --nprobe N  IVF nprobe\n"
            "  -t, --threads N    threads (default 1)\n"
            "  --json             print one JSON object instead of text\n"
            "  -h, --help         this help\n\n"
            "Shape of the embedded default: 2 layers, 8 query heads, 2 KV heads, head_dim 64,\n"
            "block_len 64; generator seed 42 (README: \"The synthetic workload\").\n");
}

static void log_cb(void *ud, const char *msg)
{
    (void)ud;
    fprintf(stderr, "landmark demo: %s\n", msg);
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

int lmk_cmd_demo(int argc, char **argv)
{
    long long tokens = 65536, probes = 32;
    const char *dir = NULL, *spec = "Flat";
    int top_k = 8, threads = 1, json = 0, ef = 0, nprobe = 0;
    lmk_mode mode = LMK_MODE_GROUPED;
    lmk_dtype dtype = LMK_DTYPE_F16;
    static const struct option lo[] = {
        {"tokens", required_argument, 0, 'n'}, {"dir", required_argument, 0, 'd'},
        {"index", required_argument, 0, 'i'},  {"top-k", required_argument, 0, 'k'},
        {"mode", required_argument, 0, 'm'},   {"dtype", required_argument, 0, 'y'},
        {"probes", required_argument, 0, 'p'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},         {"ef-search", required_argument, 0, 'e'},
        {"nprobe", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'n':
            if ((tokens = lmk_opt_count(optarg)) < 1 || tokens > (1LL << 40)) {
                lmk_cli_error(CMD, "--tokens wants a positive count, got '%s'", optarg);
                return 2;
            }
            break;
        case 'd': dir = optarg; break;
        case 'i': spec = optarg; break;
        case 'k':
            if (!strcmp(optarg, "all")) {
                top_k = LMK_TOP_K_ALL;
            } else {
                long long k = lmk_opt_count(optarg);
                if (k < 0 || k > 1 << 30) {
                    lmk_cli_error(CMD, "--top-k wants a count or 'all', got '%s'", optarg);
                    return 2;
                }
                top_k = (int)k;
            }
            break;
        case 'm':
            if (!strcmp(optarg, "grouped"))
                mode = LMK_MODE_GROUPED;
            else if (!strcmp(optarg, "union"))
                mode = LMK_MODE_UNION;
            else {
                lmk_cli_error(CMD, "--mode is grouped or union, got '%s'", optarg);
                return 2;
            }
            break;
        case 'y':
            if (!strcmp(optarg, "f16"))
                dtype = LMK_DTYPE_F16;
            else if (!strcmp(optarg, "f32"))
                dtype = LMK_DTYPE_F32;
            else {
                lmk_cli_error(CMD, "--dtype is f32 or f16, got '%s'", optarg);
                return 2;
            }
            break;
        case 'p':
            if ((probes = lmk_opt_count(optarg)) < 1 || probes > 1000000) {
                lmk_cli_error(CMD, "--probes wants a positive count, got '%s'", optarg);
                return 2;
            }
            break;
        case 't': {
            long long t = lmk_opt_count(optarg);
            if (t < 1 || t > 256) {
                lmk_cli_error(CMD, "--threads wants 1..256, got '%s'", optarg);
                return 2;
            }
            threads = (int)t;
            break;
        }
        case 'e': ef = atoi(optarg); break;
        case 'r': nprobe = atoi(optarg); break;
        case 'j': json = 1; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind < argc) {
        lmk_cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return 2;
    }

    lmk_synth_cfg gc = lmk_synth_cfg_default();
    gc.n_layers = 2;
    gc.n_heads = 8;
    gc.n_kv_heads = 2;
    gc.head_dim = 64;
    gc.block_len = 64;
    const int NL = gc.n_layers, NH = gc.n_heads, H = gc.n_kv_heads, D = gc.head_dim;
    const size_t row = (size_t)H * D, qrow = (size_t)NH * D;

    static char tmpdir[4096];
    int own_dir = 0;
    if (!dir) {
        const char *td = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/landmark-demo-XXXXXX", td && *td ? td : "/tmp");
        if (!mkdtemp(tmpdir)) {
            lmk_cli_error(CMD, "cannot create a temporary directory %s: %s", tmpdir,
                          strerror(errno));
            return 1;
        }
        dir = tmpdir;
        own_dir = 1;
    }

    int status = 1;
    lmk_synth *gen = NULL;
    lmk_session *s = NULL;
    lmk_dense **dense = NULL;
    float *k = NULL, *v = NULL, *q = NULL, *o = NULL, *oref = NULL, *od = NULL;
    float **kv_all = NULL;
    double *scratch = NULL;
    int64_t *blocks = NULL;
    double *step = NULL, *dstep = NULL;
    char msg[1024] = "";
    if (lmk_synth_create(&gc, &gen)) {
        lmk_cli_error(CMD, "cannot create the synthetic workload generator");
        goto out;
    }
    char fp[128];
    snprintf(fp, sizeof fp, "landmark-demo-synth-v1 seed=%llu", (unsigned long long)gc.seed);
    lmk_session_opts so = lmk_session_opts_default();
    so.n_layers = NL;
    so.n_heads = NH;
    so.n_kv_heads = H;
    so.head_dim = D;
    so.block_len = gc.block_len;
    so.dtype = dtype;
    so.landmark = LMK_LANDMARK_MEAN;
    so.index_spec = spec;
    so.fingerprint = fp;
    so.create = 1;
    so.n_threads = threads;
    so.log = log_cb;
    /* an existing session is checked in a child first: a damaged file must not crash us */
    if (!own_dir && lmk_cli_probe_session(CMD, dir, LMK_PROBE_WALK))
        goto out;
    int rc = lmk_session_open(dir, &so, &s, msg, sizeof msg);
    if (rc == LMK_EMISMATCH) {
        /* an existing session with other settings: say which, keep it untouched */
        lmk_cli_error(CMD, "%s: %s", dir, msg);
        goto out;
    }
    if (rc) {
        lmk_cli_error(CMD, "%s", msg);
        goto out;
    }
    lmk_cli_set_blas_threads(1);

    /* ingest (or continue) the stream */
    const int64_t chunk = 4096;
    k = malloc((size_t)chunk * row * 4);
    v = malloc((size_t)chunk * row * 4);
    if (!k || !v) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    int64_t start = tokens;
    for (int l = 0; l < NL; l++)
        if (lmk_session_tokens(s, l) < start)
            start = lmk_session_tokens(s, l);
    if (start > 0 && !json)
        fprintf(stderr, "landmark demo: %s holds %lld tokens, continuing to %lld\n", dir,
                (long long)start, tokens);
    double t_ing = now_s();
    for (int64_t t = start; t < tokens; t += chunk) {
        for (int l = 0; l < NL; l++) {
            int64_t have = lmk_session_tokens(s, l);
            if (have >= t + chunk || have >= tokens)
                continue;
            int64_t from = have > t ? have : t;
            int64_t n = (t + chunk < tokens ? t + chunk : tokens) - from;
            lmk_synth_kv(gen, l, from, n, k, v);
            if ((rc = lmk_session_append(s, l, n, k, v))) {
                lmk_cli_error(CMD, "appending tokens %lld..%lld at layer %d: %s", (long long)from,
                              (long long)(from + n), l, lmk_session_errmsg(s));
                goto out;
            }
        }
        progress("ingest", (t + chunk < tokens ? t + chunk : tokens) - start, tokens - start);
    }
    double ingest_s = now_s() - t_ing;
    if ((rc = lmk_session_sync(s))) {
        lmk_cli_error(CMD, "sync: %s", lmk_session_errmsg(s));
        goto out;
    }
    int64_t T = lmk_session_tokens(s, 0);
    for (int l = 1; l < NL; l++)
        if (lmk_session_tokens(s, l) != T) {
            lmk_cli_error(CMD, "layers hold different token counts");
            goto out;
        }
    lmk_session_info info;
    lmk_session_info_get(s, &info);

    /* probes: retrieval, exact over all blocks (same mode), dense in RAM */
    int cap = top_k == LMK_TOP_K_ALL ? (int)info.blocks + 1 : top_k;
    if (cap < 1)
        cap = 1;
    q = malloc(qrow * 4);
    o = malloc((size_t)probes * NL * qrow * 4);
    oref = malloc(qrow * 4);
    od = malloc(qrow * 4);
    blocks = malloc((size_t)NH * cap * sizeof(int64_t));
    step = calloc((size_t)probes, sizeof(double));
    dstep = calloc((size_t)probes, sizeof(double));
    dense = calloc((size_t)NL, sizeof *dense);
    if (!q || !o || !oref || !od || !blocks || !step || !dstep || !dense) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    lmk_attend_opts ao = lmk_attend_opts_default();
    ao.top_k = top_k;
    ao.mode = mode;
    ao.ef_search = ef;
    ao.nprobe = nprobe;
    /* every stored key and value in RAM: for the reference and the dense baseline, in the
     * session's dtype (the stored, rounded values) */
    kv_all = calloc((size_t)NL, sizeof *kv_all);
    scratch = malloc(((size_t)T + (size_t)info.blocks + 1 + (size_t)D) * sizeof(double));
    if (!kv_all || !scratch) {
        lmk_cli_error(CMD, "out of memory");
        goto out;
    }
    for (int l = 0; l < NL; l++) {
        kv_all[l] = malloc(2 * (size_t)T * row * 4);
        if (!kv_all[l]) {
            lmk_cli_error(CMD, "out of memory for the reference (%lld tokens)", (long long)T);
            goto out;
        }
        float *kk = kv_all[l], *vv = kk + (size_t)T * row;
        if ((rc = lmk_session_read_kv(s, l, 0, T, kk, vv)) ||
            (rc = lmk_dense_create(H, D, NH, dtype, T, &dense[l])) ||
            (rc = lmk_dense_append(dense[l], T, kk, vv))) {
            lmk_cli_error(CMD, "building the dense baseline: %s",
                          rc > 0 ? strerror(rc) : lmk_session_errmsg(s));
            goto out;
        }
    }
    double err_max = 0;
    int64_t hits = 0, targets = 0;
    for (long long p = 0; p < probes; p++) {
        for (int l = 0; l < NL; l++) {
            int64_t needle = lmk_synth_probe(gen, l, (int)p, T, q);
            float *out = o + ((size_t)p * NL + l) * qrow;
            lmk_attend_stats st = {0};
            st.blocks = blocks;
            st.blocks_cap = cap;
            double t0 = now_s();
            if ((rc = lmk_session_attend(s, l, 1, q, &ao, out, &st))) {
                lmk_cli_error(CMD, "attend: %s", lmk_session_errmsg(s));
                goto out;
            }
            step[p] += now_s() - t0;
            if (needle >= 0) {
                for (int h = 0; h < NH; h++) {
                    int hit = 0;
                    for (int j = 0; j < cap; j++)
                        hit |= blocks[(size_t)h * cap + j] == needle;
                    hits += hit;
                    targets++;
                }
            }
            reference(kv_all[l], kv_all[l] + (size_t)T * row, T, NH, H, D, gc.block_len, mode,
                      q, oref, scratch, scratch + T + info.blocks + 1);
            for (int h = 0; h < NH; h++) {
                double num = 0, den = 0;
                for (int d = 0; d < D; d++) {
                    double e = (double)out[h * D + d] - oref[h * D + d];
                    num += e * e;
                    den += (double)oref[h * D + d] * oref[h * D + d];
                }
                double rel = den > 0 ? sqrt(num / den) : sqrt(num);
                if (rel > err_max)
                    err_max = rel;
            }
        }
        progress("probes", p + 1, probes);
    }

    lmk_cli_set_blas_threads(threads);
    for (long long p = 0; p < probes; p++) {
        for (int l = 0; l < NL; l++) {
            lmk_synth_probe(gen, l, (int)p, T, q);
            double t0 = now_s();
            lmk_dense_attend(dense[l], q, od);
            dstep[p] += now_s() - t0;
        }
    }
    lmk_cli_set_blas_threads(1);
    uint64_t dig = fnv(0xcbf29ce484222325ull, o, (size_t)probes * NL * qrow * 4);
    qsort(step, (size_t)probes, sizeof *step, cmp_double);
    qsort(dstep, (size_t)probes, sizeof *dstep, cmp_double);
    double step_ms = 1e3 * step[probes / 2], dense_ms = 1e3 * dstep[probes / 2];
    double hit_rate = targets ? (double)hits / (double)targets : NAN;
    if (json) {
        printf("{\"tokens\": %lld, \"blocks\": %lld, ", (long long)T, (long long)info.blocks);
        if (targets)
            printf("\"needle_hit_rate\": %.6f, ", hit_rate);
        else
            printf("\"needle_hit_rate\": null, ");
        printf("\"attn_rel_err_max\": %.3e, \"step_ms\": %.4f, \"dense_step_ms\": %.4f, "
               "\"speedup\": %.2f, \"probe_digest\": \"%016llx\", \"index\": \"%s\", "
               "\"mode\": \"%s\", \"top_k\": %d, \"dtype\": \"%s\", \"threads\": %d, "
               "\"probes\": %lld, \"ingest_tokens_per_s\": %.0f}\n",
               err_max, step_ms, dense_ms, step_ms > 0 ? dense_ms / step_ms : 0.0,
               (unsigned long long)dig, info.index_spec, mode == LMK_MODE_UNION ? "union" : "grouped",
               top_k, dtype == LMK_DTYPE_F16 ? "f16" : "f32", threads, probes,
               ingest_s > 0 && tokens > start ? (double)(tokens - start) / ingest_s : 0.0);
    } else {
        printf("session          %s%s\n", dir, own_dir ? " (temporary)" : "");
        printf("tokens           %lld (%lld sealed blocks of %d, %d layers, %d/%d heads, "
               "head_dim %d, %s)\n",
               (long long)T, (long long)info.blocks, gc.block_len, NL, NH, H, D,
               dtype == LMK_DTYPE_F16 ? "f16" : "f32");
        printf("index            %s, top-k %s, %s softmax\n", info.index_spec,
               top_k == LMK_TOP_K_ALL ? "all" : (snprintf(msg, sizeof msg, "%d", top_k), msg),
               mode == LMK_MODE_UNION ? "union" : "grouped");
        if (targets)
            printf("needle hit rate  %.4f (%lld of %lld probe x layer x head)\n", hit_rate,
                   (long long)hits, (long long)targets);
        else
            printf("needle hit rate  n/a (the stream holds no needle yet)\n");
        printf("attn rel err max %.3e (vs the same mode over every block, computed apart)\n", err_max);
        printf("decode step      %.3f ms with retrieval, %.3f ms dense (median of %lld, "
               "%d thread%s): %.1fx\n",
               step_ms, dense_ms, probes, threads, threads > 1 ? "s" : "",
               step_ms > 0 ? dense_ms / step_ms : 0.0);
        printf("probe digest     %016llx\n", (unsigned long long)dig);
    }
    status = 0;
out:
    if (dense)
        for (int l = 0; l < NL; l++)
            lmk_dense_free(dense[l]);
    free(dense);
    if (kv_all)
        for (int l = 0; l < NL; l++)
            free(kv_all[l]);
    free(kv_all);
    free(scratch);
    lmk_session_close(s);
    lmk_synth_free(gen);
    free(k);
    free(v);
    free(q);
    free(o);
    free(oref);
    free(od);
    free(blocks);
    free(step);
    free(dstep);
    if (own_dir) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            lmk_cli_error(CMD, "could not remove %s", dir);
    }
    return status;
}
