/* Attention against a naive reference written here in plain C (double precision, no BLAS,
 * no FAISS), from the values the session stored (lmk_session_read_kv):
 * - top_k = all: union equals dense softmax attention, grouped equals the dense grouped
 *   computation, for f32 and f16 storage, over randomized shapes, sinks, local windows,
 *   forced recent blocks and token counts around block boundaries;
 * - top_k < all with a Flat index: the retrieved set is the exact top-k, and the output is
 *   the reference computed with that set;
 * - a prefill chunk equals single-token steps; results do not depend on n_threads;
 * - the slots position policy with every block retrieved equals attention over keys rotated
 *   at their original positions;
 * - when several KV heads' searches fail at once on worker threads, the message is the whole
 *   message of the first failing head in head order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_index.h"
#include "lmk_internal.h" /* lmk_fault_search_kvh */
#include "lmk_session.h"
#include "lmk_test.h"

typedef struct cfg {
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    lmk_dtype dtype;
    lmk_landmark_src landmark;
} cfg;

/* ---- the reference ---- */

typedef struct refin {
    const cfg *c;
    const float *K, *V; /* (T, n_kv_heads, head_dim), stored values */
    int64_t T;
} refin;

static double rdot(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void ref_landmark(const refin *in, int kvh, int64_t b, double *lm)
{
    const cfg *c = in->c;
    int D = c->head_dim, L = c->block_len;
    for (int d = 0; d < D; d++)
        lm[d] = 0;
    if (c->landmark == LMK_LANDMARK_TOKEN) {
        const float *k = in->K + ((size_t)(b * L + L - 1) * c->n_kv_heads + kvh) * D;
        for (int d = 0; d < D; d++)
            lm[d] = k[d];
        return;
    }
    for (int i = 0; i < L; i++) {
        const float *k = in->K + ((size_t)(b * L + i) * c->n_kv_heads + kvh) * D;
        for (int d = 0; d < D; d++)
            lm[d] += k[d];
    }
    for (int d = 0; d < D; d++)
        lm[d] = (double)(float)(lm[d] / L); /* the engine stores landmarks as f32 */
}

/* Reference output for the query at position p, head h, with retrieved set R (n_R ids). */
static void ref_attend(const refin *in, int64_t p, int h, const float *q, const lmk_attend_opts *o,
                       const int64_t *R, int n_R, double *out)
{
    const cfg *c = in->c;
    const int D = c->head_dim, L = c->block_len, kvh = h / (c->n_heads / c->n_kv_heads);
    const double sc = 1.0 / sqrt((double)D);
    const int token = c->landmark == LMK_LANDMARK_TOKEN;
    int64_t S = p / L, ls = S * L;
    if (o->n_local > 0) {
        int64_t lw = p - o->n_local + 1;
        if (lw < 0)
            lw = 0;
        lw = lw / L * L;
        if (lw < ls)
            ls = lw;
    }
    /* classify every position */
    double *score = calloc((size_t)p + 1, sizeof(double));
    int *cls = calloc((size_t)p + 1, sizeof(int)); /* 0 skip, 1 direct, 2 block member */
    for (int64_t j = 0; j <= p; j++) {
        int64_t b = j / L;
        int sealed = (b + 1) * L <= p;
        if (token && sealed && j % L == L - 1)
            continue;
        int inR = 0;
        for (int r = 0; r < n_R; r++)
            inR |= R[r] == b;
        if (j >= ls)
            cls[j] = 1;
        else if (inR)
            cls[j] = 2;
        else if (j < o->n_sink)
            cls[j] = 1;
        score[j] = sc * rdot(q, in->K + ((size_t)j * c->n_kv_heads + kvh) * D, D);
    }
    for (int d = 0; d < D; d++)
        out[d] = 0;
    if (o->mode == LMK_MODE_UNION) {
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j <= p; j++)
            if (cls[j] && score[j] > m)
                m = score[j];
        for (int64_t j = 0; j <= p; j++) {
            if (!cls[j])
                continue;
            double e = exp(score[j] - m);
            z += e;
            const float *v = in->V + ((size_t)j * c->n_kv_heads + kvh) * D;
            for (int d = 0; d < D; d++)
                out[d] += e * v[d];
        }
        for (int d = 0; d < D; d++)
            out[d] /= z;
    } else {
        double *gate = calloc((size_t)n_R + 1, sizeof(double)), lm[1024];
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j <= p; j++)
            if (cls[j] == 1 && score[j] > m)
                m = score[j];
        for (int r = 0; r < n_R; r++) {
            ref_landmark(in, kvh, R[r], lm);
            double g = 0;
            for (int d = 0; d < D; d++)
                g += (double)q[d] * lm[d];
            gate[r] = sc * g;
            if (gate[r] > m)
                m = gate[r];
        }
        for (int64_t j = 0; j <= p; j++) {
            if (cls[j] != 1)
                continue;
            double e = exp(score[j] - m);
            z += e;
            const float *v = in->V + ((size_t)j * c->n_kv_heads + kvh) * D;
            for (int d = 0; d < D; d++)
                out[d] += e * v[d];
        }
        for (int r = 0; r < n_R; r++) {
            double pg = exp(gate[r] - m);
            z += pg;
            double mb = -INFINITY, zb = 0;
            for (int64_t j = R[r] * L; j < (R[r] + 1) * L; j++)
                if (cls[j] == 2 && score[j] > mb)
                    mb = score[j];
            for (int64_t j = R[r] * L; j < (R[r] + 1) * L; j++)
                if (cls[j] == 2)
                    zb += exp(score[j] - mb);
            for (int64_t j = R[r] * L; j < (R[r] + 1) * L; j++) {
                if (cls[j] != 2)
                    continue;
                double w = pg * exp(score[j] - mb) / zb;
                const float *v = in->V + ((size_t)j * c->n_kv_heads + kvh) * D;
                for (int d = 0; d < D; d++)
                    out[d] += w * v[d];
            }
        }
        for (int d = 0; d < D; d++)
            out[d] /= z;
        free(gate);
    }
    free(score);
    free(cls);
}

/* Candidates and the exact top-k of the reference's own scoring. */
static int ref_select(const refin *in, int64_t p, int h, const float *q, const lmk_attend_opts *o,
                      int64_t *R)
{
    const cfg *c = in->c;
    const int D = c->head_dim, L = c->block_len, kvh = h / (c->n_heads / c->n_kv_heads);
    int64_t S = p / L, ls = S * L;
    if (o->n_local > 0) {
        int64_t lw = p - o->n_local + 1;
        lw = lw < 0 ? 0 : lw / L * L;
        if (lw < ls)
            ls = lw;
    }
    int64_t C = ls / L, F = o->n_recent < C ? o->n_recent : C, pool = C - F;
    int64_t k = o->top_k < 0 || o->top_k > pool ? pool : o->top_k;
    double *s = malloc(sizeof(double) * (size_t)(pool + 1)), lm[1024];
    int *taken = calloc((size_t)pool + 1, sizeof(int));
    for (int64_t b = 0; b < pool; b++) {
        ref_landmark(in, kvh, b, lm);
        s[b] = 0;
        for (int d = 0; d < D; d++)
            s[b] += (double)q[d] * lm[d];
    }
    int n = 0;
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t b = 0; b < pool; b++)
            if (!taken[b] && (best < 0 || s[b] > s[best]))
                best = b;
        taken[best] = 1;
        R[n++] = best;
    }
    for (int64_t b = pool; b < C; b++)
        R[n++] = b;
    free(s);
    free(taken);
    return n;
}

/* ---- harness ---- */

static int open_session(const char *dir, const cfg *c, const char *spec, int threads,
                        lmk_session **s)
{
    lmk_session_opts so = lmk_session_opts_default();
    so.n_layers = c->n_layers;
    so.n_heads = c->n_heads;
    so.n_kv_heads = c->n_kv_heads;
    so.head_dim = c->head_dim;
    so.block_len = c->block_len;
    so.dtype = c->dtype;
    so.landmark = c->landmark;
    so.index_spec = spec;
    so.create = 1;
    so.n_threads = threads;
    so.durability = LMK_DURABLE_NONE;
    char msg[512] = "";
    int rc = lmk_session_open(dir, &so, s, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "open %s: %s\n", dir, msg);
    return rc;
}

static void fill(uint64_t *seed, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * lmk_test_uniform(seed);
}

static int64_t count_tokens(uint64_t *seed, int L)
{
    /* around block boundaries: 0, 1, L-1, L, L+1 blocks worth, plus a few more blocks */
    int64_t base = (int64_t)(lmk_test_rand(seed) % 6) * L;
    int64_t off = (int64_t)(lmk_test_rand(seed) % 3) - 1;
    int64_t t = base + off;
    return t < 1 ? 1 : t;
}

/* Compare the session's output with the reference for the last nq queries. */
static double check_against_ref(lmk_session *s, const cfg *c, int layer, int64_t nq,
                                const float *q, const lmk_attend_opts *o, int check_topk)
{
    int64_t T = lmk_session_tokens(s, layer);
    size_t row = (size_t)c->n_kv_heads * c->head_dim;
    float *K = malloc(((size_t)T + 1) * row * 4), *V = malloc(((size_t)T + 1) * row * 4);
    float *out = malloc((size_t)nq * c->n_heads * c->head_dim * 4);
    int cap = 4096;
    int64_t *blocks = malloc((size_t)nq * c->n_heads * cap * sizeof(int64_t));
    int64_t *R = malloc(sizeof(int64_t) * (size_t)cap);
    double ref[1024], err = 0;
    if (lmk_session_read_kv(s, layer, 0, T, K, V)) {
        fprintf(stderr, "read_kv: %s\n", lmk_session_errmsg(s));
        err = INFINITY;
        goto done;
    }
    lmk_attend_stats st = {0};
    st.blocks = blocks;
    st.blocks_cap = cap;
    int rc = lmk_session_attend(s, layer, nq, q, o, out, &st);
    if (rc) {
        fprintf(stderr, "attend: %s\n", lmk_session_errmsg(s));
        err = INFINITY;
        goto done;
    }
    refin in = {c, K, V, T};
    for (int64_t i = 0; i < nq; i++) {
        int64_t p = T - nq + i;
        for (int h = 0; h < c->n_heads; h++) {
            const int64_t *got = blocks + ((size_t)i * c->n_heads + h) * cap;
            int n_got = 0;
            while (n_got < cap && got[n_got] >= 0)
                n_got++;
            const float *qh = q + ((size_t)i * c->n_heads + h) * c->head_dim;
            if (check_topk) {
                int n_want = ref_select(&in, p, h, qh, o, R);
                int same = n_want == n_got;
                for (int a = 0; same && a < n_want; a++) {
                    int found = 0;
                    for (int b = 0; b < n_got; b++)
                        found |= got[b] == R[a];
                    same &= found;
                }
                if (!same) {
                    fprintf(stderr, "retrieved set differs from exact top-k at p=%lld h=%d "
                            "(%d vs %d blocks)\n", (long long)p, h, n_got, n_want);
                    err = INFINITY;
                }
            }
            ref_attend(&in, p, h, qh, o, got, n_got, ref);
            const float *oh = out + ((size_t)i * c->n_heads + h) * c->head_dim;
            for (int d = 0; d < c->head_dim; d++) {
                double e = fabs(oh[d] - ref[d]);
                if (!(e <= err))
                    err = e;
            }
        }
    }
done:
    free(K);
    free(V);
    free(out);
    free(blocks);
    free(R);
    return err;
}

static int random_config_test(uint64_t seed0, int iters)
{
    uint64_t seed = seed0;
    static const int dims[] = {1, 3, 8, 16, 32};
    static const int lens[] = {1, 2, 3, 7, 16, 50};
    char dir[4096];
    double worst = 0;
    for (int it = 0; it < iters; it++) {
        cfg c;
        c.n_layers = 1 + (int)(lmk_test_rand(&seed) % 2);
        c.n_kv_heads = 1 + (int)(lmk_test_rand(&seed) % 3);
        c.n_heads = c.n_kv_heads * (1 + (int)(lmk_test_rand(&seed) % 3));
        c.head_dim = dims[lmk_test_rand(&seed) % 5];
        c.block_len = lens[lmk_test_rand(&seed) % 6];
        c.dtype = lmk_test_rand(&seed) % 2 ? LMK_DTYPE_F16 : LMK_DTYPE_F32;
        c.landmark = c.block_len >= 2 && lmk_test_rand(&seed) % 2 ? LMK_LANDMARK_TOKEN
                                                                  : LMK_LANDMARK_MEAN;
        lmk_test_dir(dir, sizeof dir, "attend");
        lmk_session *s = NULL;
        REQUIRE_OK(open_session(dir, &c, "Flat", 1 + (int)(lmk_test_rand(&seed) % 2), &s));
        size_t row = (size_t)c.n_kv_heads * c.head_dim;
        int64_t T = count_tokens(&seed, c.block_len) + (int64_t)(lmk_test_rand(&seed) % 3) * c.block_len;
        float *k = malloc((size_t)T * row * 4), *v = malloc((size_t)T * row * 4);
        for (int l = 0; l < c.n_layers; l++) {
            fill(&seed, k, (size_t)T * row, 1.5f);
            fill(&seed, v, (size_t)T * row, 1.0f);
            /* append in random chunks */
            for (int64_t t = 0; t < T;) {
                int64_t n = 1 + (int64_t)(lmk_test_rand(&seed) % (uint64_t)(2 * c.block_len + 1));
                if (t + n > T)
                    n = T - t;
                REQUIRE_OK(lmk_session_append(s, l, n, k + (size_t)t * row, v + (size_t)t * row));
                t += n;
            }
        }
        int64_t nq = 1 + (int64_t)(lmk_test_rand(&seed) % (uint64_t)(T < 5 ? T : 5));
        float *q = malloc((size_t)nq * c.n_heads * c.head_dim * 4);
        fill(&seed, q, (size_t)nq * c.n_heads * c.head_dim, 2.0f);
        for (int mode = 0; mode < 2; mode++) {
            lmk_attend_opts o = lmk_attend_opts_default();
            o.mode = mode ? LMK_MODE_UNION : LMK_MODE_GROUPED;
            o.n_sink = (int)(lmk_test_rand(&seed) % 3) * 3;
            o.n_local = (int)(lmk_test_rand(&seed) % 3) * (c.block_len + 2);
            o.n_recent = (int)(lmk_test_rand(&seed) % 3);
            int layer = (int)(lmk_test_rand(&seed) % (uint64_t)c.n_layers);
            o.top_k = LMK_TOP_K_ALL;
            double e = check_against_ref(s, &c, layer, nq, q, &o, 1);
            if (!(e <= 1e-5))
                fprintf(stderr, "iter %d (L=%d D=%d H=%d/%d %s %s T=%lld nq=%lld sink=%d local=%d "
                        "recent=%d %s): all blocks, max err %g\n", it, c.block_len, c.head_dim,
                        c.n_heads, c.n_kv_heads, c.dtype == LMK_DTYPE_F16 ? "f16" : "f32",
                        c.landmark == LMK_LANDMARK_TOKEN ? "token" : "mean", (long long)T,
                        (long long)nq, o.n_sink, o.n_local, o.n_recent, mode ? "union" : "grouped", e);
            CHECK(e <= 1e-5);
            if (e > worst)
                worst = e;
            o.top_k = 1 + (int)(lmk_test_rand(&seed) % 3);
            e = check_against_ref(s, &c, layer, nq, q, &o, 1);
            if (!(e <= 1e-5))
                fprintf(stderr, "iter %d: top_k %d, max err %g\n", it, o.top_k, e);
            CHECK(e <= 1e-5);
            /* chunk retrieval: one ranked set per head for all queries; each query's
             * output must still be the reference over the set it was given */
            o.retrieve = LMK_RETRIEVE_CHUNK;
            e = check_against_ref(s, &c, layer, nq, q, &o, nq == 1);
            if (!(e <= 1e-5))
                fprintf(stderr, "iter %d: chunk retrieval top_k %d, max err %g\n", it, o.top_k, e);
            CHECK(e <= 1e-5);
        }
        free(q);
        free(k);
        free(v);
        lmk_session_close(s);
        lmk_test_rmdir(dir);
    }
    printf("random configs: %d, worst max abs error %.3g\n", iters, worst);
    return 0;
}

/* A chunk of n queries equals n single-token steps; n_threads does not change results. */
static int chunk_equals_steps(uint64_t seed)
{
    cfg c = {2, 4, 2, 16, 8, LMK_DTYPE_F16, LMK_LANDMARK_MEAN};
    char d1[4096], d2[4096], d3[4096];
    lmk_session *a = NULL, *b = NULL, *t2 = NULL;
    lmk_test_dir(d1, sizeof d1, "steps");
    lmk_test_dir(d2, sizeof d2, "chunk");
    lmk_test_dir(d3, sizeof d3, "threads");
    REQUIRE_OK(open_session(d1, &c, "Flat", 1, &a));
    REQUIRE_OK(open_session(d2, &c, "Flat", 1, &b));
    REQUIRE_OK(open_session(d3, &c, "Flat", 2, &t2));
    const int64_t T = 100, n = 37;
    size_t row = (size_t)c.n_kv_heads * c.head_dim, qrow = (size_t)c.n_heads * c.head_dim;
    float *k = malloc(T * row * 4), *v = malloc(T * row * 4), *q = malloc(T * qrow * 4);
    float *o1 = malloc(T * qrow * 4), *o2 = malloc(T * qrow * 4), *o3 = malloc(T * qrow * 4);
    fill(&seed, k, T * row, 1.0f);
    fill(&seed, v, T * row, 1.0f);
    fill(&seed, q, T * qrow, 3.0f);
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = 2;
    o.n_sink = 3;
    o.n_local = 10;
    o.n_recent = 1;
    int bad_steps = 0;
    for (int retr = 0; retr < 2; retr++) {
        o.retrieve = retr ? LMK_RETRIEVE_KVHEAD : LMK_RETRIEVE_QHEAD;
        for (int mode = 0; mode < 2; mode++) {
            o.mode = mode ? LMK_MODE_UNION : LMK_MODE_GROUPED;
            lmk_session_close(a);
            lmk_session_close(b);
            lmk_session_close(t2);
            lmk_test_rmdir(d1);
            lmk_test_rmdir(d2);
            lmk_test_rmdir(d3);
            REQUIRE_OK(open_session(d1, &c, "Flat", 1, &a));
            REQUIRE_OK(open_session(d2, &c, "Flat", 1, &b));
            REQUIRE_OK(open_session(d3, &c, "Flat", 2, &t2));
            for (int l = 0; l < 2; l++) {
                REQUIRE_OK(lmk_session_append(b, l, T - n, k, v));
                REQUIRE_OK(lmk_session_append(t2, l, T - n, k, v));
                for (int64_t t = 0; t < T; t++) {
                    REQUIRE_OK(lmk_session_append(a, l, 1, k + t * row, v + t * row));
                    if (t >= T - n)
                        REQUIRE_OK(lmk_session_attend(a, l, 1, q + t * qrow, &o, o1 + t * qrow, NULL));
                }
                REQUIRE_OK(lmk_session_append(b, l, n, k + (T - n) * row, v + (T - n) * row));
                REQUIRE_OK(lmk_session_append(t2, l, n, k + (T - n) * row, v + (T - n) * row));
                REQUIRE_OK(lmk_session_attend(b, l, n, q + (T - n) * qrow, &o, o2 + (T - n) * qrow, NULL));
                REQUIRE_OK(lmk_session_attend(t2, l, n, q + (T - n) * qrow, &o, o3 + (T - n) * qrow, NULL));
                if (memcmp(o1 + (T - n) * qrow, o2 + (T - n) * qrow, n * qrow * 4) != 0)
                    bad_steps++;
                CHECK(memcmp(o2 + (T - n) * qrow, o3 + (T - n) * qrow, n * qrow * 4) == 0);
            }
        }
    }
    CHECK(bad_steps == 0);
    printf("chunk of %lld == %lld single steps (bitwise), 1 thread == 2 threads: %s\n",
           (long long)n, (long long)n, bad_steps ? "NO" : "yes");
    free(k);
    free(v);
    free(q);
    free(o1);
    free(o2);
    free(o3);
    lmk_session_close(a);
    lmk_session_close(b);
    lmk_session_close(t2);
    lmk_test_rmdir(d1);
    lmk_test_rmdir(d2);
    lmk_test_rmdir(d3);
    return 0;
}

/* RoPE on adjacent pairs, base 10000. */
static void rope(void *ud, float *x, int n, int D, const int64_t *pos)
{
    (void)ud;
    for (int i = 0; i < n; i++)
        for (int d = 0; d + 1 < D; d += 2) {
            double th = (double)pos[i] * pow(10000.0, -(double)d / D);
            double cs = cos(th), sn = sin(th);
            float a = x[(size_t)i * D + d], b = x[(size_t)i * D + d + 1];
            x[(size_t)i * D + d] = (float)(a * cs - b * sn);
            x[(size_t)i * D + d + 1] = (float)(a * sn + b * cs);
        }
}

/* SLOTS with every block retrieved (token landmarks, n_local 0): slot s is block s, so the
 * result equals AS_GIVEN over keys and queries rotated at their own positions. */
static int slots_policy(uint64_t seed)
{
    cfg c = {1, 2, 2, 8, 4, LMK_DTYPE_F32, LMK_LANDMARK_TOKEN};
    char d1[4096], d2[4096];
    lmk_session *a = NULL, *b = NULL;
    lmk_test_dir(d1, sizeof d1, "slots");
    lmk_test_dir(d2, sizeof d2, "rotated");
    REQUIRE_OK(open_session(d1, &c, "Flat", 1, &a));
    REQUIRE_OK(open_session(d2, &c, "Flat", 1, &b));
    const int64_t T = 30, nq = 6;
    size_t row = (size_t)c.n_kv_heads * c.head_dim, qrow = (size_t)c.n_heads * c.head_dim;
    float *k = malloc(T * row * 4), *v = malloc(T * row * 4), *kr = malloc(T * row * 4);
    float *q = malloc(nq * qrow * 4), *qr = malloc(nq * qrow * 4);
    float *o1 = malloc(nq * qrow * 4), *o2 = malloc(nq * qrow * 4);
    fill(&seed, k, T * row, 1.0f);
    fill(&seed, v, T * row, 1.0f);
    fill(&seed, q, nq * qrow, 2.0f);
    memcpy(kr, k, T * row * 4);
    for (int64_t t = 0; t < T; t++) {
        int64_t pos[2] = {t, t};
        rope(NULL, kr + t * row, c.n_kv_heads, c.head_dim, pos);
    }
    memcpy(qr, q, nq * qrow * 4);
    for (int64_t i = 0; i < nq; i++) {
        int64_t pos[2] = {T - nq + i, T - nq + i};
        rope(NULL, qr + i * qrow, c.n_heads, c.head_dim, pos);
    }
    REQUIRE_OK(lmk_session_append(a, 0, T, k, v));
    REQUIRE_OK(lmk_session_append(b, 0, T, kr, v));
    lmk_pos_policy pol = {LMK_POS_SLOTS, rope, NULL, c.block_len - 1, 0};
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = LMK_TOP_K_ALL;
    o.pos = &pol;
    REQUIRE_OK(lmk_session_attend(a, 0, nq, q, &o, o1, NULL));
    o.pos = NULL;
    REQUIRE_OK(lmk_session_attend(b, 0, nq, qr, &o, o2, NULL));
    double e = 0;
    for (size_t i = 0; i < nq * qrow; i++)
        e = fmax(e, fabs(o1[i] - o2[i]));
    printf("slots policy, all blocks vs original positions: max err %.3g\n", e);
    CHECK(e <= 1e-5);
    /* with top_k 2 + 1 recent the slots policy still runs and differs from all-blocks */
    o.pos = &pol;
    o.top_k = 2;
    o.n_recent = 1;
    REQUIRE_OK(lmk_session_attend(a, 0, nq, q, &o, o2, NULL));
    /* sinks are refused with slots */
    o.n_sink = 2;
    CHECK_RC(lmk_session_attend(a, 0, nq, q, &o, o2, NULL), LMK_EINVAL);
    free(k);
    free(v);
    free(kr);
    free(q);
    free(qr);
    free(o1);
    free(o2);
    lmk_session_close(a);
    lmk_session_close(b);
    lmk_test_rmdir(d1);
    lmk_test_rmdir(d2);
    return 0;
}

/* The search phase runs the KV heads on worker threads; a failing head describes itself in
 * its own message and the first failing head in head order writes the session's message (all
 * of them writing it, the last writer won: another head's message or a torn one). Several
 * heads fail at once (injected), on the parallel path: 4 threads over 8 KV heads, and 16
 * queries x 8 heads x 256 candidate blocks x head_dim 64 = 2M multiply-adds, over the 1M
 * under which one thread searches every head. */
static int search_errors_in_parallel(uint64_t seed)
{
    cfg c = {1, 8, 8, 64, 16, LMK_DTYPE_F32, LMK_LANDMARK_MEAN};
    const int64_t T = 256 * 16, NQ = 16;
    const int KV = c.n_kv_heads * c.head_dim, QW = c.n_heads * c.head_dim;
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "search_errors");
    lmk_session *s = NULL;
    REQUIRE_OK(open_session(dir, &c, "Flat", 4, &s));
    float *k = malloc((size_t)T * KV * sizeof *k), *v = malloc((size_t)T * KV * sizeof *v);
    float *q = malloc((size_t)NQ * QW * sizeof *q), *out = malloc((size_t)NQ * QW * sizeof *out);
    REQUIRE(k && v && q && out);
    fill(&seed, k, (size_t)T * KV, 1.0f);
    fill(&seed, v, (size_t)T * KV, 1.0f);
    fill(&seed, q, (size_t)NQ * QW, 1.0f);
    REQUIRE_OK(lmk_session_append(s, 0, T, k, v));
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = 4; /* under the candidate pool: every head searches its index */
    REQUIRE_OK(lmk_session_attend(s, 0, NQ, q, &o, out, NULL));
    int iters = getenv("LMK_ITERS") ? 10 * atoi(getenv("LMK_ITERS")) : 2000, wrong = 0;
    for (int it = 0; it < iters; it++) {
        uint64_t mask = 0;
        while (__builtin_popcountll(mask) < 2) /* at least two failing heads */
            mask |= 1ull << (lmk_test_rand(&seed) % (uint64_t)c.n_kv_heads);
        char want[128];
        snprintf(want, sizeof want, "searching layer 0 head %d: injected fault",
                 __builtin_ctzll(mask));
        lmk_fault_search_kvh = mask;
        int rc = lmk_session_attend(s, 0, NQ, q, &o, out, NULL);
        lmk_fault_search_kvh = 0;
        const char *got = lmk_session_errmsg(s);
        if (rc != LMK_EINDEX || strcmp(got, want) != 0) {
            if (wrong++ < 5)
                fprintf(stderr, "heads 0x%02llx failing: rc %d, message \"%s\", want \"%s\"\n",
                        (unsigned long long)mask, rc, got, want);
        }
    }
    if (wrong)
        fprintf(stderr, "search_errors_in_parallel: %d of %d calls wrong\n", wrong, iters);
    CHECK(wrong == 0);
    REQUIRE_OK(lmk_session_attend(s, 0, NQ, q, &o, out, NULL)); /* still usable */
    lmk_session_close(s);
    free(k);
    free(v);
    free(q);
    free(out);
    lmk_test_rmdir(dir);
    return 0;
}

static int bad_arguments(void)
{
    cfg c = {1, 2, 1, 4, 4, LMK_DTYPE_F32, LMK_LANDMARK_MEAN};
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "badargs");
    lmk_session *s = NULL;
    REQUIRE_OK(open_session(dir, &c, "Flat", 1, &s));
    float k[8] = {0}, v[8] = {0}, q[8] = {0}, out[8];
    lmk_attend_opts o = lmk_attend_opts_default();
    CHECK_RC(lmk_session_attend(s, 0, 1, q, &o, out, NULL), LMK_EINVAL); /* nothing appended */
    REQUIRE_OK(lmk_session_append(s, 0, 1, k, v));
    CHECK_RC(lmk_session_attend(s, 1, 1, q, &o, out, NULL), LMK_EINVAL);
    CHECK_RC(lmk_session_attend(s, 0, 2, q, &o, out, NULL), LMK_EINVAL);
    CHECK_RC(lmk_session_attend(s, 0, 1, NULL, &o, out, NULL), LMK_EINVAL);
    o.top_k = -5;
    CHECK_RC(lmk_session_attend(s, 0, 1, q, &o, out, NULL), LMK_EINVAL);
    o = lmk_attend_opts_default();
    o.mode = 7;
    CHECK_RC(lmk_session_attend(s, 0, 1, q, &o, out, NULL), LMK_EINVAL);
    CHECK(strlen(lmk_session_errmsg(s)) > 0);
    CHECK_RC(lmk_session_append(s, 3, 1, k, v), LMK_EINVAL);
    CHECK_RC(lmk_session_append(s, 0, -1, k, v), LMK_EINVAL);
    CHECK_RC(lmk_session_append(s, 0, 1, NULL, v), LMK_EINVAL);
    k[2] = NAN;
    CHECK_RC(lmk_session_append(s, 0, 1, k, v), LMK_EINVAL);
    CHECK(lmk_session_tokens(s, 0) == 1); /* the refused append added nothing */
    lmk_session_close(s);
    lmk_test_rmdir(dir);
    /* bad shapes at creation */
    lmk_session_opts so = lmk_session_opts_default();
    so.create = 1;
    so.n_layers = 1;
    so.n_heads = 3;
    so.n_kv_heads = 2;
    so.head_dim = 4;
    char msg[256] = "";
    CHECK_RC(lmk_session_open(dir, &so, &s, msg, sizeof msg), LMK_EINVAL);
    CHECK(s == NULL && strstr(msg, "multiple") != NULL);
    so.n_heads = 2;
    so.landmark = LMK_LANDMARK_TOKEN;
    so.block_len = 1;
    CHECK_RC(lmk_session_open(dir, &so, &s, msg, sizeof msg), LMK_EINVAL);
    so.landmark = LMK_LANDMARK_MEAN;
    so.index_spec = "NotAnIndex";
    CHECK_RC(lmk_session_open(dir, &so, &s, msg, sizeof msg), LMK_EUNSUPPORTED);
    CHECK(s == NULL);
    lmk_test_rmdir(dir);
    return 0;
}

/* Chunk retrieval's selection against a naive statement of its rule: of each run of queries
 * sharing a candidate pool, every 16th and the run's last search exactly (ref_select); the
 * union of what a head's searched queries found is ranked by the best exact score over the
 * chunk's queries that can see each block; every query takes the best k it can see, then
 * its forced blocks. The calls span many blocks (the pools differ inside a call), which the
 * engine searches in one pass with extra results per row (lmk_search.c). */
static int chunk_selection(uint64_t seed0, int iters)
{
    uint64_t seed = seed0;
    static const int lens[] = {2, 3, 5, 8};
    char dir[4096];
    int64_t checked = 0, differ = 0;
    for (int it = 0; it < iters; it++) {
        cfg c;
        c.n_layers = 1;
        c.n_kv_heads = 1 + (int)(lmk_test_rand(&seed) % 2);
        c.n_heads = c.n_kv_heads * (1 + (int)(lmk_test_rand(&seed) % 2));
        c.head_dim = 8;
        c.block_len = lens[lmk_test_rand(&seed) % 4];
        c.dtype = LMK_DTYPE_F32;
        c.landmark = lmk_test_rand(&seed) % 2 ? LMK_LANDMARK_TOKEN : LMK_LANDMARK_MEAN;
        lmk_test_dir(dir, sizeof dir, "chunksel");
        lmk_session *s = NULL;
        REQUIRE_OK(open_session(dir, &c, "Flat", 1 + (int)(lmk_test_rand(&seed) % 2), &s));
        size_t row = (size_t)c.n_kv_heads * c.head_dim;
        int64_t T = 150 + (int64_t)(lmk_test_rand(&seed) % 100);
        float *k = malloc((size_t)T * row * 4), *v = malloc((size_t)T * row * 4);
        fill(&seed, k, (size_t)T * row, 1.5f);
        fill(&seed, v, (size_t)T * row, 1.0f);
        REQUIRE_OK(lmk_session_append(s, 0, T, k, v));
        int64_t nq = 20 + (int64_t)(lmk_test_rand(&seed) % 40);
        float *q = malloc((size_t)nq * c.n_heads * c.head_dim * 4);
        fill(&seed, q, (size_t)nq * c.n_heads * c.head_dim, 2.0f);
        lmk_attend_opts o = lmk_attend_opts_default();
        o.mode = LMK_MODE_GROUPED;
        o.top_k = 1 + (int)(lmk_test_rand(&seed) % 4);
        o.n_recent = (int)(lmk_test_rand(&seed) % 3);
        o.n_local = (int)(lmk_test_rand(&seed) % 2) * (c.block_len + 1);
        o.retrieve = LMK_RETRIEVE_CHUNK;
        int cap = 256;
        int64_t *blocks = malloc((size_t)nq * c.n_heads * cap * sizeof(int64_t));
        float *out = malloc((size_t)nq * c.n_heads * c.head_dim * 4);
        float *K = malloc((size_t)T * row * 4), *V = malloc((size_t)T * row * 4);
        REQUIRE_OK(lmk_session_read_kv(s, 0, 0, T, K, V));
        lmk_attend_stats st = {0};
        st.blocks = blocks;
        st.blocks_cap = cap;
        REQUIRE_OK(lmk_session_attend(s, 0, nq, q, &o, out, &st));
        refin in = {&c, K, V, T};
        int64_t nb = T / c.block_len + 1;
        int64_t *R = malloc(sizeof(int64_t) * (size_t)(nb + 8)), *pool = malloc(8 * (size_t)nq),
                *kq = malloc(8 * (size_t)nq), *Cq = malloc(8 * (size_t)nq);
        int *found = calloc((size_t)nb, sizeof(int));
        double *best = malloc(sizeof(double) * (size_t)nb), lm[64];
        for (int h = 0; h < c.n_heads; h++) {
            int kvh = h / (c.n_heads / c.n_kv_heads);
            /* each query's pool, k and candidates (ref_select's geometry) */
            for (int64_t i = 0; i < nq; i++) {
                int n = ref_select(&in, T - nq + i, h, q + ((size_t)i * c.n_heads + h) * c.head_dim,
                                   &o, R);
                int64_t L = c.block_len, p = T - nq + i, ls = p / L * L;
                if (o.n_local > 0) {
                    int64_t lw = p - o.n_local + 1;
                    lw = lw < 0 ? 0 : lw / L * L;
                    ls = lw < ls ? lw : ls;
                }
                Cq[i] = ls / L;
                int64_t F = o.n_recent < Cq[i] ? o.n_recent : Cq[i];
                pool[i] = Cq[i] - F;
                kq[i] = n - F;
            }
            memset(found, 0, sizeof(int) * (size_t)nb);
            for (int64_t i0 = 0; i0 < nq;) {
                int64_t i1 = i0 + 1;
                while (i1 < nq && pool[i1] == pool[i0] && kq[i1] == kq[i0])
                    i1++;
                if (kq[i0] > 0 && kq[i0] < pool[i0])
                    for (int64_t i = i0; i < i1; i++)
                        if ((i - i0) % 16 == 15 || i == i1 - 1) {
                            int n = ref_select(&in, T - nq + i, h,
                                               q + ((size_t)i * c.n_heads + h) * c.head_dim, &o, R);
                            for (int j = 0; j < n - (Cq[i] - pool[i]); j++)
                                found[R[j]] = 1;
                        }
                i0 = i1;
            }
            for (int64_t b = 0; b < nb; b++) {
                best[b] = -INFINITY;
                if (!found[b])
                    continue;
                ref_landmark(&in, kvh, b, lm);
                for (int64_t i = 0; i < nq; i++)
                    if (b < pool[i]) {
                        double sc = 0;
                        for (int d = 0; d < c.head_dim; d++)
                            sc += (double)q[((size_t)i * c.n_heads + h) * c.head_dim + d] * lm[d];
                        best[b] = sc > best[b] ? sc : best[b];
                    }
            }
            for (int64_t i = 0; i < nq; i++) {
                int64_t want[512];
                int nw = 0;
                if (kq[i] > 0 && kq[i] == pool[i]) { /* every candidate: no search */
                    for (int64_t b = 0; b < pool[i]; b++)
                        want[nw++] = b;
                } else {
                    for (int j = 0; j < kq[i]; j++) {
                        int64_t arg = -1;
                        for (int64_t b = 0; b < pool[i]; b++) {
                            int used = 0;
                            for (int a = 0; a < nw; a++)
                                used |= want[a] == b;
                            if (found[b] && !used && (arg < 0 || best[b] > best[arg]))
                                arg = b;
                        }
                        if (arg >= 0)
                            want[nw++] = arg;
                    }
                }
                for (int64_t b = pool[i]; b < Cq[i]; b++)
                    want[nw++] = b;
                const int64_t *got = blocks + ((size_t)i * c.n_heads + h) * cap;
                int ng = 0;
                while (ng < cap && got[ng] >= 0)
                    ng++;
                int same = ng == nw;
                for (int a = 0; same && a < nw; a++) {
                    int hit = 0;
                    for (int b = 0; b < ng; b++)
                        hit |= got[b] == want[a];
                    same &= hit;
                }
                checked++;
                if (!same) {
                    differ++;
                    if (differ <= 3)
                        fprintf(stderr, "chunk selection: iter %d query %lld head %d: %d blocks, "
                                "want %d\n", it, (long long)i, h, ng, nw);
                }
            }
        }
        free(R), free(pool), free(kq), free(Cq), free(found), free(best);
        free(blocks), free(out), free(K), free(V), free(q), free(k), free(v);
        lmk_session_close(s);
        lmk_test_rmdir(dir);
    }
    printf("chunk selection: %lld (query, head) sets, %lld differ from the rule\n",
           (long long)checked, (long long)differ);
    CHECK(checked > 0 && differ == 0);
    return 0;
}

int main(void)
{
    uint64_t seed = lmk_test_seed("test_attend", 20261122);
    int iters = getenv("LMK_ITERS") ? atoi(getenv("LMK_ITERS")) : 60;
    random_config_test(seed, iters);
    chunk_selection(seed + 4, iters);
    chunk_equals_steps(seed + 1);
    slots_policy(seed + 2);
    bad_arguments();
    search_errors_in_parallel(seed + 3);
    return lmk_test_finish("test_attend", 0);
}
