/* Synthetic workload generator (bench/lmk_synth.h) and dense baseline (bench/lmk_dense.h):
 * determinism, prefix property, needles found by a naive exact landmark search, the
 * anisotropy and query/key shift the benchmark relies on, and dense attention against a
 * naive loop. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_dense.h"
#include "lmk_f16.h"
#include "lmk_synth.h"
#include "lmk_test.h"

static lmk_synth_cfg small_cfg(void)
{
    lmk_synth_cfg c = lmk_synth_cfg_default();
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.block_len = 64;
    c.needle_span = 16;
    return c;
}

static int test_invalid(void)
{
    lmk_synth *g = (lmk_synth *)1;
    lmk_synth_cfg c = small_cfg();
    c.n_heads = 3; /* not a multiple of n_kv_heads */
    CHECK_RC(lmk_synth_create(&c, &g), EINVAL);
    CHECK(g == NULL);
    c = small_cfg();
    c.head_dim = 0;
    CHECK_RC(lmk_synth_create(&c, &g), EINVAL);
    c = small_cfg();
    c.needle_span = 3;
    CHECK_RC(lmk_synth_create(&c, &g), EINVAL);
    c = small_cfg();
    c.block_len = 0;
    CHECK_RC(lmk_synth_create(&c, &g), EINVAL);
    c = small_cfg();
    c.needle_gain = NAN;
    CHECK_RC(lmk_synth_create(&c, &g), EINVAL);
    CHECK_RC(lmk_synth_create(NULL, &g), EINVAL);
    CHECK(g == NULL);
    lmk_synth_free(NULL);
    return 0;
}

static int test_determinism(void)
{
    lmk_synth_cfg c = small_cfg();
    lmk_synth *g = NULL, *g2 = NULL;
    REQUIRE_OK(lmk_synth_create(&c, &g));
    REQUIRE_OK(lmk_synth_create(&c, &g2));
    const int64_t t0 = 1000, n = 700, split = 277; /* crosses blocks, segments, chunks */
    size_t row = (size_t)c.n_kv_heads * c.head_dim;
    float *k1 = malloc(n * row * 4), *v1 = malloc(n * row * 4);
    float *k2 = malloc(n * row * 4), *v2 = malloc(n * row * 4);
    float *k3 = malloc(n * row * 4), *v3 = malloc(n * row * 4);
    REQUIRE(k1 && v1 && k2 && v2 && k3 && v3);
    for (int layer = 0; layer < c.n_layers; layer++) {
        lmk_synth_kv(g, layer, t0, n, k1, v1);
        lmk_synth_kv(g, layer, t0, n, k2, v2);
        CHECK(memcmp(k1, k2, n * row * 4) == 0 && memcmp(v1, v2, n * row * 4) == 0);
        /* one call vs two sub-calls, and on another instance */
        lmk_synth_kv(g2, layer, t0, split, k3, v3);
        lmk_synth_kv(g2, layer, t0 + split, n - split, k3 + split * row, v3 + split * row);
        CHECK(memcmp(k1, k3, n * row * 4) == 0 && memcmp(v1, v3, n * row * 4) == 0);
        /* a single token alone */
        lmk_synth_kv(g, layer, t0 + 500, 1, k3, v3);
        CHECK(memcmp(k1 + 500 * row, k3, row * 4) == 0);
        CHECK(memcmp(v1 + 500 * row, v3, row * 4) == 0);
    }
    /* layers, heads and keys vs values differ */
    lmk_synth_kv(g, 0, t0, n, k1, v1);
    lmk_synth_kv(g, 1, t0, n, k2, v2);
    CHECK(memcmp(k1, k2, n * row * 4) != 0 && memcmp(v1, v2, n * row * 4) != 0);
    CHECK(memcmp(k1, k1 + c.head_dim, c.head_dim * 4) != 0);
    /* another seed gives another stream */
    lmk_synth *g3 = NULL;
    c.seed = 7;
    REQUIRE_OK(lmk_synth_create(&c, &g3));
    lmk_synth_kv(g3, 0, t0, n, k2, v2);
    CHECK(memcmp(k1, k2, n * row * 4) != 0);
    /* queries: deterministic, distinct per index and per head */
    int qn = c.n_heads * c.head_dim;
    float *q1 = malloc(qn * 4), *q2 = malloc(qn * 4);
    REQUIRE(q1 && q2);
    lmk_synth_query(g, 1, 5, q1);
    lmk_synth_query(g2, 1, 5, q2);
    CHECK(memcmp(q1, q2, qn * 4) == 0);
    lmk_synth_query(g, 1, 6, q2);
    CHECK(memcmp(q1, q2, qn * 4) != 0);
    CHECK(memcmp(q1, q1 + c.head_dim, c.head_dim * 4) != 0);
    for (int i = 0; i < qn; i++)
        CHECK(isfinite(q1[i]));
    for (size_t i = 0; i < n * row; i++)
        if (!isfinite(k1[i]) || !isfinite(v1[i])) {
            CHECK(!"non-finite key or value");
            break;
        }
    free(q1);
    free(q2);
    free(k1);
    free(v1);
    free(k2);
    free(v2);
    free(k3);
    free(v3);
    lmk_synth_free(g);
    lmk_synth_free(g2);
    lmk_synth_free(g3);
    return 0;
}

static int test_prefix(void)
{
    lmk_synth_cfg c = small_cfg();
    lmk_synth *g = NULL;
    REQUIRE_OK(lmk_synth_create(&c, &g));
    int64_t L = c.block_len, S = c.needle_span;
    /* needle positions: never block 0, one per span, inside its span, fixed */
    for (int i = 0; i < 200; i++) {
        int64_t b = lmk_synth_needle_block(g, i);
        CHECK(b > 0 && b >= i * S && b < (i + 1) * S);
        CHECK(b == lmk_synth_needle_block(g, i));
    }
    CHECK(lmk_synth_n_needles(g, 0) == 0);
    CHECK(lmk_synth_n_needles(g, L) == 0); /* block 0 is never a needle */
    /* n_needles counts exactly the needles whose block is complete */
    int prev = 0;
    for (int64_t T = 1; T <= 40 * S * L; T += 37) {
        int nn = lmk_synth_n_needles(g, T);
        CHECK(nn >= prev);
        prev = nn;
        if (nn > 0)
            CHECK((lmk_synth_needle_block(g, nn - 1) + 1) * L <= T);
        CHECK((lmk_synth_needle_block(g, nn) + 1) * L > T);
    }
    /* a probe of needle i is the same whatever the stream length, once both have it */
    int qn = c.n_heads * c.head_dim;
    float *q1 = malloc(qn * 4), *q2 = malloc(qn * 4);
    REQUIRE(q1 && q2);
    int64_t T1 = 10 * S * L, T2 = 30 * S * L + 5;
    int n1 = lmk_synth_n_needles(g, T1);
    REQUIRE(n1 >= 9);
    for (int p = 0; p < n1; p++) {
        int64_t b1 = lmk_synth_probe(g, 0, p, T1, q1);
        int64_t b2 = lmk_synth_probe(g, 0, p, T2, q2);
        CHECK(b1 == b2 && b1 == lmk_synth_needle_block(g, p));
        CHECK(memcmp(q1, q2, qn * 4) == 0);
    }
    /* probe p wraps around the needles the stream holds */
    CHECK(lmk_synth_probe(g, 0, n1 + 2, T1, q1) == lmk_synth_needle_block(g, 2));
    /* no needle yet: an ordinary query and -1 */
    CHECK(lmk_synth_probe(g, 0, 3, L, q1) == -1);
    free(q1);
    free(q2);
    lmk_synth_free(g);
    return 0;
}

/* Naive exact landmark search over mean landmarks: every probe's needle is in the top-k of
 * every query head. Also checks the value marker of needle blocks. */
static int test_needles_exact(void)
{
    lmk_synth_cfg c = small_cfg();
    lmk_synth *g = NULL;
    REQUIRE_OK(lmk_synth_create(&c, &g));
    const int64_t T = 16384;
    const int L = c.block_len, D = c.head_dim, H = c.n_kv_heads, QH = c.n_heads;
    const int64_t nb = T / L, top_k = 8;
    size_t row = (size_t)H * D;
    float *k = malloc(T * row * 4), *v = malloc(T * row * 4);
    float *lm = calloc((size_t)H * nb * D, 4), *vm = calloc((size_t)H * nb * D, 4);
    float *q = malloc((size_t)QH * D * 4);
    double *sc = malloc(nb * sizeof(double));
    REQUIRE(k && v && lm && vm && q && sc);
    int nn = lmk_synth_n_needles(g, T);
    REQUIRE(nn >= 15);
    int64_t hits = 0, trials = 0, dominant = 0;
    double *att = malloc(T * sizeof(double));
    REQUIRE(att);
    for (int layer = 0; layer < c.n_layers; layer++) {
        lmk_synth_kv(g, layer, 0, T, k, v);
        memset(lm, 0, (size_t)H * nb * D * 4);
        memset(vm, 0, (size_t)H * nb * D * 4);
        for (int64_t t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < D; i++) {
                    lm[((size_t)h * nb + t / L) * D + i] += k[t * row + h * D + i] / L;
                    vm[((size_t)h * nb + t / L) * D + i] += v[t * row + h * D + i] / L;
                }
        /* value marker: needle blocks' mean value stands out */
        for (int h = 0; h < H; h++) {
            double max_plain = 0, min_needle = 1e30;
            for (int64_t b = 0; b < nb; b++) {
                double s = 0;
                for (int i = 0; i < D; i++)
                    s += (double)vm[((size_t)h * nb + b) * D + i] * vm[((size_t)h * nb + b) * D + i];
                s = sqrt(s);
                int is_needle = lmk_synth_needle_block(g, (int)(b / c.needle_span)) == b;
                if (is_needle)
                    min_needle = s < min_needle ? s : min_needle;
                else
                    max_plain = s > max_plain ? s : max_plain;
            }
            CHECK(min_needle > 2 * max_plain);
        }
        /* candidates for a query at position T-1: blocks b < floor((T-1)/L) */
        int64_t cand = (T - 1) / L;
        for (int p = 0; p < 2 * nn; p++) {
            int64_t target = lmk_synth_probe(g, layer, p, T, q);
            REQUIRE(target == lmk_synth_needle_block(g, p % nn));
            for (int qh = 0; qh < QH; qh++) {
                int h = qh / (QH / H);
                for (int64_t b = 0; b < cand; b++) {
                    double s = 0;
                    for (int i = 0; i < D; i++)
                        s += (double)q[qh * D + i] * lm[((size_t)h * nb + b) * D + i];
                    sc[b] = s;
                }
                /* rank of the target: blocks scoring strictly higher */
                int64_t above = 0;
                for (int64_t b = 0; b < cand; b++)
                    above += sc[b] > sc[target];
                hits += above < top_k;
                trials++;
                /* dense attention over every token puts its weight on the needle block */
                double mx = -1e300, tot = 0, on = 0;
                for (int64_t t = 0; t < T; t++) {
                    double a = 0;
                    for (int i = 0; i < D; i++)
                        a += (double)q[qh * D + i] * k[t * row + h * D + i];
                    att[t] = a / sqrt((double)D);
                    mx = att[t] > mx ? att[t] : mx;
                }
                for (int64_t t = 0; t < T; t++) {
                    double e = exp(att[t] - mx);
                    tot += e;
                    on += t / L == target ? e : 0;
                }
                dominant += on / tot > 0.9;
            }
        }
    }
    printf("needles found by exact top-%d: %lld / %lld\n", (int)top_k, (long long)hits,
           (long long)trials);
    CHECK(hits == trials);
    printf("needle block holds > 90%% of dense attention: %lld / %lld\n", (long long)dominant,
           (long long)trials);
    CHECK(dominant >= trials * 95 / 100);
    free(att);
    free(k);
    free(v);
    free(lm);
    free(vm);
    free(q);
    free(sc);
    lmk_synth_free(g);
    return 0;
}

/* Largest eigenvalue of the symmetric (D, D) matrix C by power iteration. */
static double top_eig(const double *C, int D, double *vec)
{
    for (int i = 0; i < D; i++)
        vec[i] = 1.0 / sqrt(D) + 0.01 * i;
    double lam = 0;
    double w[1024];
    for (int it = 0; it < 500; it++) {
        double n = 0;
        for (int i = 0; i < D; i++) {
            w[i] = 0;
            for (int j = 0; j < D; j++)
                w[i] += C[i * D + j] * vec[j];
            n += w[i] * w[i];
        }
        n = sqrt(n);
        lam = n;
        for (int i = 0; i < D; i++)
            vec[i] = w[i] / n;
    }
    return lam;
}

/* Keys are strongly anisotropic; queries differ in mean and principal directions. */
static int test_distribution(void)
{
    lmk_synth_cfg c = small_cfg();
    lmk_synth *g = NULL;
    REQUIRE_OK(lmk_synth_create(&c, &g));
    const int D = c.head_dim, H = c.n_kv_heads, QH = c.n_heads;
    const int64_t T = 8192, NQ = 4096;
    size_t row = (size_t)H * D;
    float *k = malloc(T * row * 4), *v = malloc(T * row * 4), *q = malloc((size_t)QH * D * 4);
    double *mk = calloc(D, 8), *mq = calloc(D, 8), *C = calloc((size_t)D * D, 8);
    double *Cq = calloc((size_t)D * D, 8), *e1 = malloc(D * 8), *e2 = malloc(D * 8);
    double *A = malloc((size_t)D * D * 8);
    REQUIRE(k && v && q && mk && mq && C && Cq && e1 && e2 && A);
    lmk_synth_kv(g, 0, 0, T, k, v);
    /* statistics of KV head 0's keys and of its first query head */
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            mk[i] += k[t * row + i] / T;
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++)
                C[i * D + j] += (k[t * row + i] - mk[i]) * (k[t * row + j] - mk[j]) / T;
    float *qs = malloc((size_t)NQ * D * 4);
    REQUIRE(qs);
    for (int64_t n = 0; n < NQ; n++) {
        lmk_synth_query(g, 0, n, q);
        memcpy(qs + n * D, q, D * 4);
        for (int i = 0; i < D; i++)
            mq[i] += q[i] / NQ;
    }
    for (int64_t n = 0; n < NQ; n++)
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++)
                Cq[i * D + j] += (qs[n * D + i] - mq[i]) * (qs[n * D + j] - mq[j]) / NQ;
    double trace = 0;
    for (int i = 0; i < D; i++)
        trace += C[i * D + i];
    double lmax = top_eig(C, D, e1);
    /* smallest eigenvalue: top eigenvalue of lmax*I - C */
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++)
            A[i * D + j] = (i == j ? lmax : 0) - C[i * D + j];
    double lmin = lmax - top_eig(A, D, e2);
    printf("keys: top variance %.3f, mean %.3f, bottom %.5f\n", lmax, trace / D, lmin);
    CHECK(lmax > 5 * trace / D);
    CHECK(lmax > 100 * lmin);
    /* the key mean dominates the per-token noise */
    double nmk = 0;
    for (int i = 0; i < D; i++)
        nmk += mk[i] * mk[i];
    CHECK(sqrt(nmk) > 2 * sqrt(trace));
    /* query/key shift: means point apart, principal directions differ */
    double dot = 0, nmq = 0;
    for (int i = 0; i < D; i++) {
        dot += mk[i] * mq[i];
        nmq += mq[i] * mq[i];
    }
    double cosm = dot / sqrt(nmk * nmq);
    double eq[1024];
    top_eig(Cq, D, eq);
    double cosp = 0;
    for (int i = 0; i < D; i++)
        cosp += eq[i] * e1[i];
    printf("cos(mean q, mean k) = %.3f, |cos(top axis q, top axis k)| = %.3f\n", cosm,
           fabs(cosp));
    CHECK(cosm < -0.2);
    CHECK(fabs(cosp) < 0.7);
    free(qs);
    free(k);
    free(v);
    free(q);
    free(mk);
    free(mq);
    free(C);
    free(Cq);
    free(e1);
    free(e2);
    free(A);
    lmk_synth_free(g);
    return 0;
}

/* ---- dense baseline ---- */

/* out = softmax(s K q) V per query head, in double. */
static void naive_attend(const float *k, const float *v, int64_t T, int H, int QH, int D,
                         const float *q, double *out)
{
    double *p = malloc(T * sizeof(double));
    for (int qh = 0; qh < QH; qh++) {
        int h = qh / (QH / H);
        double mx = -1e300, sum = 0;
        for (int64_t t = 0; t < T; t++) {
            double s = 0;
            for (int i = 0; i < D; i++)
                s += (double)q[qh * D + i] * k[((size_t)t * H + h) * D + i];
            p[t] = s / sqrt((double)D);
            mx = p[t] > mx ? p[t] : mx;
        }
        for (int64_t t = 0; t < T; t++)
            sum += p[t] = exp(p[t] - mx);
        for (int i = 0; i < D; i++) {
            double o = 0;
            for (int64_t t = 0; t < T; t++)
                o += p[t] * v[((size_t)t * H + h) * D + i];
            out[qh * D + i] = o / sum;
        }
    }
    free(p);
}

static int test_dense(uint64_t seed)
{
    const int H = 2, QH = 6, D = 48;
    const int64_t T = 5000; /* not a multiple of the f16 conversion chunk */
    size_t row = (size_t)H * D;
    float *k = malloc(T * row * 4), *v = malloc(T * row * 4), *kr = malloc(T * row * 4);
    float *vr = malloc(T * row * 4), *q = malloc(QH * D * 4), *out = malloc(QH * D * 4);
    double *ref = malloc(QH * D * 8);
    REQUIRE(k && v && kr && vr && q && out && ref);
    uint64_t s = seed;
    for (size_t i = 0; i < T * row; i++) {
        k[i] = 2.0f * lmk_test_uniform(&s);
        v[i] = lmk_test_uniform(&s);
        kr[i] = lmk_f16_to_f32(lmk_f32_to_f16(k[i]));
        vr[i] = lmk_f16_to_f32(lmk_f32_to_f16(v[i]));
    }
    for (int i = 0; i < QH * D; i++)
        q[i] = 3.0f * lmk_test_uniform(&s);

    lmk_dense *d = (lmk_dense *)1;
    CHECK_RC(lmk_dense_create(2, D, 5, LMK_DTYPE_F32, 10, &d), LMK_EINVAL);
    CHECK(d == NULL);
    CHECK_RC(lmk_dense_create(H, 0, QH, LMK_DTYPE_F32, 10, &d), LMK_EINVAL);
    CHECK_RC(lmk_dense_create(H, D, QH, LMK_DTYPE_F32, 0, &d), LMK_EINVAL);
    CHECK_RC(lmk_dense_create(H, D, QH, (lmk_dtype)7, 10, &d), LMK_EINVAL);
    lmk_dense_free(NULL);

    for (int dt = 0; dt < 2; dt++) {
        lmk_dtype dtype = dt ? LMK_DTYPE_F16 : LMK_DTYPE_F32;
        REQUIRE_OK(lmk_dense_create(H, D, QH, dtype, T, &d));
        CHECK(lmk_dense_memory_bytes(d) >= 2 * (size_t)T * row * (dt ? 2 : 4));
        CHECK_RC(lmk_dense_attend(d, q, out), LMK_EINVAL); /* no token yet */
        /* appended in uneven pieces */
        REQUIRE_OK(lmk_dense_append(d, 1, k, v));
        REQUIRE_OK(lmk_dense_append(d, 1999, k + row, v + row));
        REQUIRE_OK(lmk_dense_append(d, T - 2000, k + 2000 * row, v + 2000 * row));
        CHECK(lmk_dense_tokens(d) == T);
        /* over capacity: refused, nothing appended */
        CHECK_RC(lmk_dense_append(d, 1, k, v), LMK_EINVAL);
        CHECK(lmk_dense_tokens(d) == T);
        REQUIRE_OK(lmk_dense_attend(d, q, out));
        naive_attend(dt ? kr : k, dt ? vr : v, T, H, QH, D, q, ref);
        double err = 0, nrm = 0;
        for (int i = 0; i < QH * D; i++) {
            err += (out[i] - ref[i]) * (out[i] - ref[i]);
            nrm += ref[i] * ref[i];
        }
        printf("dense %s: rel err vs naive %.3g\n", dt ? "f16" : "f32", sqrt(err / nrm));
        CHECK(sqrt(err / nrm) < 1e-4);
        /* a prefix gives attention over the prefix only */
        lmk_dense *d2 = NULL;
        REQUIRE_OK(lmk_dense_create(H, D, QH, dtype, T, &d2));
        REQUIRE_OK(lmk_dense_append(d2, 100, k, v));
        REQUIRE_OK(lmk_dense_attend(d2, q, out));
        naive_attend(dt ? kr : k, dt ? vr : v, 100, H, QH, D, q, ref);
        for (int i = 0; i < QH * D; i++)
            CHECK_NEAR(out[i], ref[i], 1e-4);
        lmk_dense_free(d2);
        lmk_dense_free(d);
        d = NULL;
    }
    free(k);
    free(v);
    free(kr);
    free(vr);
    free(q);
    free(out);
    free(ref);
    return 0;
}

int main(void)
{
    uint64_t seed = lmk_test_seed("test_synth", 20240611);
    test_invalid();
    test_determinism();
    test_prefix();
    test_needles_exact();
    test_distribution();
    test_dense(seed);
    return lmk_test_finish("test_synth", 0);
}
