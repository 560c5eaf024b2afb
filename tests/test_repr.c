/* Block representatives against plain references: the index entries each source stores
 * (recomputed naively from the keys and queries appended), the blocks a query retrieves
 * (the top-k by the maximum over a block's entries, computed naively), the format-version
 * rule, and the benchmark's oracle against dense softmax attention. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_index.h"
#include "lmk_oracle.h"
#include "lmk_session.h"
#include "lmk_test.h"

static uint64_t g_rng;

static double urand(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static float nrand(void)
{
    double u1 = urand() + 1e-12, u2 = urand();
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

enum { NL = 1, NH = 4, NKV = 2, D = 8, L = 6, T = 61, R = 3 };
#define G (NH / NKV)

/* Naive entries of block b of KV head h: keys k (T, NKV, D), queries q (T, NH, D) (NULL:
 * none). out (n, D); returns n. */
static int ref_entries(int src, int b, int h, const float *k, const float *q, float *out)
{
    const float *kb[L];
    for (int i = 0; i < L; i++)
        kb[i] = k + ((size_t)(b * L + i) * NKV + h) * D;
    if (src == LMK_LANDMARK_MEAN || src == LMK_LANDMARK_OUTLIER) {
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int i = 0; i < L; i++)
                acc += kb[i][d];
            out[d] = (float)(acc / L);
        }
        if (src == LMK_LANDMARK_MEAN)
            return 1;
    }
    if (src == LMK_LANDMARK_TOKEN) {
        memcpy(out, kb[L - 1], D * 4);
        return 1;
    }
    if (src == LMK_LANDMARK_KEYS) {
        for (int i = 0; i < L; i++)
            memcpy(out + i * D, kb[i], D * 4);
        return L;
    }
    double score[L];
    for (int i = 0; i < L; i++) {
        score[i] = src == LMK_LANDMARK_QUERY ? -INFINITY : 0;
        if (src == LMK_LANDMARK_OUTLIER) {
            for (int d = 0; d < D; d++)
                score[i] += ((double)kb[i][d] - out[d]) * ((double)kb[i][d] - out[d]);
        } else if (!q) {
            score[i] = 0;
            for (int d = 0; d < D; d++)
                score[i] += (double)kb[i][d] * kb[i][d];
        } else {
            for (int j = i; j < L; j++)
                for (int g = 0; g < G; g++) {
                    const float *qj = q + ((size_t)(b * L + j) * NH + h * G + g) * D;
                    double sc[L], mx = -INFINITY, z = 0;
                    for (int t = 0; t <= j; t++) {
                        sc[t] = 0;
                        for (int d = 0; d < D; d++)
                            sc[t] += (double)qj[d] * kb[t][d];
                        if (src == LMK_LANDMARK_ATTN)
                            sc[t] /= sqrt((double)D);
                        mx = sc[t] > mx ? sc[t] : mx;
                    }
                    if (src == LMK_LANDMARK_QUERY) {
                        score[i] = sc[i] > score[i] ? sc[i] : score[i];
                        continue;
                    }
                    for (int t = 0; t <= j; t++)
                        z += exp(sc[t] - mx);
                    score[i] += exp(sc[i] - mx) / z;
                }
        }
    }
    int want = src == LMK_LANDMARK_OUTLIER ? R - 1 : R, taken[L] = {0};
    for (int r = 0; r < want; r++) {
        int best = -1;
        for (int i = 0; i < L; i++)
            if (!taken[i] && (best < 0 || score[i] > score[best]))
                best = i;
        taken[best] = 1;
    }
    int n = src == LMK_LANDMARK_OUTLIER ? 1 : 0;
    for (int i = 0; i < L; i++)
        if (taken[i])
            memcpy(out + (size_t)n++ * D, kb[i], D * 4);
    return n;
}

static int check_source(int src, int with_q)
{
    char dir[4096];
    char name[64];
    snprintf(name, sizeof name, "repr-%d-%d", src, with_q);
    lmk_test_dir(dir, sizeof dir, name);
    size_t nk = (size_t)T * NKV * D, nq = (size_t)T * NH * D;
    float *k = malloc(nk * 4), *v = malloc(nk * 4), *q = malloc(nq * 4);
    REQUIRE(k && v && q);
    for (size_t i = 0; i < nk; i++)
        k[i] = nrand(), v[i] = nrand();
    for (size_t i = 0; i < nq; i++)
        q[i] = 2 * nrand();
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = NL, o.n_heads = NH, o.n_kv_heads = NKV, o.head_dim = D, o.block_len = L;
    o.dtype = LMK_DTYPE_F32;
    o.landmark = (lmk_landmark_src)src;
    o.n_repr = src >= LMK_LANDMARK_ATTN ? R : 0;
    o.create = 1;
    lmk_session *s = NULL;
    char err[512];
    REQUIRE_OK(lmk_session_open(dir, &o, &s, err, sizeof err));
    /* appended in uneven pieces so blocks are sealed from the tail and from new tokens */
    for (int64_t t = 0; t < T;) {
        int64_t n = 1 + (int64_t)(urand() * 9);
        if (n > T - t)
            n = T - t;
        REQUIRE_OK(lmk_session_append_q(s, 0, n, k + (size_t)t * NKV * D, v + (size_t)t * NKV * D,
                                        with_q ? q + (size_t)t * NH * D : NULL));
        t += n;
    }
    lmk_session_info info;
    REQUIRE_OK(lmk_session_info_get(s, &info));
    int n_ent = ref_entries(src, 0, 0, k, with_q ? q : NULL, (float[L * D]){0});
    CHECK(info.n_repr == n_ent);
    CHECK(info.format_version == (src > LMK_LANDMARK_TOKEN ? 2 : 1));
    const int64_t nb = (T - 1) / L;
    float ref[L * D], got[L * D];
    for (int h = 0; h < NKV; h++)
        for (int64_t b = 0; b < nb; b++) {
            ref_entries(src, (int)b, h, k, with_q ? q : NULL, ref);
            REQUIRE_OK(lmk_session_landmark(s, 0, h, b, got));
            for (int i = 0; i < n_ent * D; i++)
                CHECK_NEAR(got[i], ref[i], 1e-6);
        }
    /* retrieval: the top-k blocks by max over entries, for the last query */
    const int K = 3;
    lmk_attend_opts a = lmk_attend_opts_default();
    a.top_k = K;
    a.mode = LMK_MODE_UNION;
    float out[NH * D];
    int64_t blocks[NH * K];
    lmk_attend_stats st;
    memset(&st, 0, sizeof st);
    st.blocks = blocks;
    st.blocks_cap = K;
    const float *ql = q + (size_t)(T - 1) * NH * D;
    REQUIRE_OK(lmk_session_attend(s, 0, 1, ql, &a, out, &st));
    const int64_t C = (T - 1) / L; /* candidates: sealed blocks before the tail */
    for (int hq = 0; hq < NH; hq++) {
        double sc[C];
        for (int64_t b = 0; b < C; b++) {
            ref_entries(src, (int)b, hq / G, k, with_q ? q : NULL, ref);
            sc[b] = -INFINITY;
            for (int e = 0; e < n_ent; e++) {
                double x = 0;
                for (int d = 0; d < D; d++)
                    x += (double)ql[hq * D + d] * ref[e * D + d];
                sc[b] = x > sc[b] ? x : sc[b];
            }
        }
        for (int j = 0; j < K; j++) {
            int64_t best = -1;
            for (int64_t b = 0; b < C; b++) {
                int used = 0;
                for (int i = 0; i < j; i++)
                    used |= blocks[hq * K + i] == b;
                if (!used && (best < 0 || sc[b] > sc[best]))
                    best = b;
            }
            CHECK(blocks[hq * K + j] == best);
        }
    }
    lmk_session_close(s);
    /* reopen: the same entries, the stored count; another count is refused */
    o.create = 0;
    REQUIRE_OK(lmk_session_open(dir, &o, &s, err, sizeof err));
    REQUIRE_OK(lmk_session_landmark(s, 0, NKV - 1, nb - 1, got));
    ref_entries(src, (int)nb - 1, NKV - 1, k, with_q ? q : NULL, ref);
    for (int i = 0; i < n_ent * D; i++)
        CHECK_NEAR(got[i], ref[i], 1e-6);
    int64_t checked = 0, errors = 0;
    REQUIRE_OK(lmk_session_verify(s, NULL, NULL, &checked, &errors));
    CHECK(errors == 0);
    REQUIRE_OK(lmk_session_truncate(s, 2 * L + 1));
    REQUIRE_OK(lmk_session_verify(s, NULL, NULL, &checked, &errors));
    CHECK(errors == 0);
    /* a transaction's abort takes back every entry of the blocks it sealed */
    REQUIRE_OK(lmk_session_begin(s));
    REQUIRE_OK(lmk_session_append_q(s, 0, 3 * L, k + (size_t)(2 * L + 1) * NKV * D,
                                    v + (size_t)(2 * L + 1) * NKV * D,
                                    with_q ? q + (size_t)(2 * L + 1) * NH * D : NULL));
    CHECK(lmk_index_ntotal(lmk_session_index(s, 0, 0)) == 5 * (int64_t)n_ent);
    REQUIRE_OK(lmk_session_abort(s));
    CHECK(lmk_index_ntotal(lmk_session_index(s, 0, 0)) == 2 * (int64_t)n_ent);
    REQUIRE_OK(lmk_session_verify(s, NULL, NULL, &checked, &errors));
    CHECK(errors == 0);
    lmk_session_close(s);
    if (src >= LMK_LANDMARK_ATTN) {
        o.n_repr = R + 1;
        CHECK_RC(lmk_session_open(dir, &o, &s, err, sizeof err), LMK_EMISMATCH);
    }
    free(k);
    free(v);
    free(q);
    lmk_test_rmdir(dir);
    return 0;
}

/* The oracle: per-block mass of dense softmax attention, and its top-k. */
static int check_oracle(void)
{
    enum { TT = 200, BL = 16 };
    float k[TT * D], qv[D];
    for (int i = 0; i < TT * D; i++)
        k[i] = nrand();
    for (int d = 0; d < D; d++)
        qv[d] = 3 * nrand();
    const int64_t C = 9;
    double mass[C];
    lmk_oracle_block_mass(k, D, TT, qv, D, BL, C, mass);
    double w[TT], mx = -INFINITY, z = 0;
    for (int j = 0; j < TT; j++) {
        w[j] = 0;
        for (int d = 0; d < D; d++)
            w[j] += (double)qv[d] * k[j * D + d];
        w[j] /= sqrt((double)D);
        mx = w[j] > mx ? w[j] : mx;
    }
    for (int j = 0; j < TT; j++)
        z += exp(w[j] - mx);
    for (int64_t b = 0; b < C; b++) {
        double m = 0;
        for (int i = 0; i < BL; i++)
            m += exp(w[b * BL + i] - mx) / z;
        CHECK_NEAR(mass[b], m, 1e-9);
    }
    int64_t top[3];
    lmk_oracle_topk(mass, C, 3, top);
    for (int j = 0; j < 3; j++)
        for (int64_t b = 0; b < C; b++) {
            int used = 0;
            for (int i = 0; i < j; i++)
                used |= top[i] == b;
            if (!used)
                CHECK(mass[b] <= mass[top[j]]);
        }
    return 0;
}

/* Quest's bounds: the inner product of (q+, q-) with each block's (max, min) per channel
 * (the form an index of twice the head dimension could search), never below the block's
 * best key score, and equal to it for blocks of one token. */
static int check_quest(void)
{
    enum { TT = 160, BL = 16, C = TT / BL };
    float k[TT * D], qv[D];
    for (int i = 0; i < TT * D; i++)
        k[i] = nrand();
    for (int d = 0; d < D; d++)
        qv[d] = 3 * nrand();
    double bound[C], one[TT];
    lmk_oracle_quest_bounds(k, D, qv, D, BL, C, bound);
    for (int b = 0; b < C; b++) {
        double ip = 0, best = -INFINITY;
        for (int d = 0; d < D; d++) {
            float mn = INFINITY, mx = -INFINITY;
            for (int t = b * BL; t < (b + 1) * BL; t++) {
                mn = fminf(mn, k[t * D + d]);
                mx = fmaxf(mx, k[t * D + d]);
            }
            ip += (double)fmaxf(qv[d], 0) * mx + (double)fminf(qv[d], 0) * mn;
        }
        for (int t = b * BL; t < (b + 1) * BL; t++) {
            double sc = 0;
            for (int d = 0; d < D; d++)
                sc += (double)qv[d] * k[t * D + d];
            best = sc > best ? sc : best;
        }
        CHECK_NEAR(bound[b], ip, 1e-9);
        CHECK(bound[b] >= best - 1e-9);
    }
    lmk_oracle_quest_bounds(k, D, qv, D, 1, TT, one);
    for (int t = 0; t < TT; t++) {
        double sc = 0;
        for (int d = 0; d < D; d++)
            sc += (double)qv[d] * k[t * D + d];
        CHECK_NEAR(one[t], sc, 1e-9);
    }
    return 0;
}

int main(void)
{
    const char *seed = getenv("LMK_SEED");
    g_rng = seed ? strtoull(seed, NULL, 0) : 12345;
    printf("test_repr: seed %llu\n", (unsigned long long)g_rng);
    const int srcs[] = {LMK_LANDMARK_MEAN, LMK_LANDMARK_TOKEN, LMK_LANDMARK_KEYS,
                        LMK_LANDMARK_ATTN, LMK_LANDMARK_QUERY, LMK_LANDMARK_OUTLIER};
    for (int i = 0; i < 6; i++) {
        int before = lmk_test_failures;
        check_source(srcs[i], 1);
        if (lmk_test_failures != before)
            fprintf(stderr, "test_repr: source %d: %d failures\n", srcs[i],
                    lmk_test_failures - before);
    }
    check_source(LMK_LANDMARK_ATTN, 0);
    check_source(LMK_LANDMARK_QUERY, 0);
    check_oracle();
    check_quest();
    if (lmk_test_failures)
        fprintf(stderr, "test_repr: %d failures\n", lmk_test_failures);
    return lmk_test_failures ? 1 : 0;
}
