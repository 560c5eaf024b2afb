/* Tests of index/: exact search against a plain-C reference, ANN recall (measured and
 * printed, asserted loosely), the "+l2" transform, training thresholds, truncation,
 * files (round trip and damaged images) and concurrent searches on separate handles. */
#include <pthread.h>
#include <time.h>

#include "lmk_index.h"
#include "lmk_test.h"

#define MSG_CAP 512

/* ---- data ---- */

static float *alloc_f(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void fill_uniform(float *x, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lmk_test_uniform(s);
}

/* small integers in [-2, 2]: every dot product is exact in float, whatever the order of
 * summation, so ties are exact and tie-breaking by id can be checked */
static void fill_ints(float *x, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)(lmk_test_rand(s) % 5) - 2);
}

static float gauss(uint64_t *s)
{
    float g = 0;
    for (int i = 0; i < 4; i++)
        g += lmk_test_uniform(s);
    return g * 0.866f; /* about unit variance */
}

/* Landmark-like keys: a shared non-zero mean (components up to mean_mag), 16 clusters,
 * per-dimension scales falling with the index (anisotropic), and norms varying by a
 * factor exp(+-spread) between vectors. Queries come from another distribution (their
 * own mean, no clusters), as queries and keys do in attention. */
typedef struct {
    int d;
    float mean_mag, spread;
    float *mean, *qmean, *scale, *centers; /* (d), (d), (d), (16, d) */
} structured;

static void structured_init(structured *g, int d, float mean_mag, float spread, uint64_t *s)
{
    g->d = d;
    g->mean_mag = mean_mag;
    g->spread = spread;
    g->mean = alloc_f(d);
    g->qmean = alloc_f(d);
    g->scale = alloc_f(d);
    g->centers = alloc_f((size_t)16 * d);
    for (int j = 0; j < d; j++) {
        g->mean[j] = mean_mag * lmk_test_uniform(s);
        g->qmean[j] = 0.5f * lmk_test_uniform(s);
        g->scale[j] = 1.0f / (1.0f + 0.15f * j);
    }
    for (int c = 0; c < 16; c++)
        for (int j = 0; j < d; j++)
            g->centers[(size_t)c * d + j] = 0.7f * gauss(s) * g->scale[j];
}

static void structured_keys(const structured *g, float *x, int64_t n, uint64_t *s)
{
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(lmk_test_rand(s) % 16);
        float r = expf(g->spread * lmk_test_uniform(s));
        for (int j = 0; j < g->d; j++)
            x[(size_t)i * g->d + j] =
                r * (g->mean[j] + g->centers[(size_t)c * g->d + j] +
                     0.5f * g->scale[j] * gauss(s));
    }
}

static void structured_queries(const structured *g, float *q, int64_t n, uint64_t *s)
{
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < g->d; j++)
            q[(size_t)i * g->d + j] = g->qmean[j] + g->scale[j] * gauss(s);
}

static void structured_free(structured *g)
{
    free(g->mean);
    free(g->qmean);
    free(g->scale);
    free(g->centers);
}

/* ---- plain reference: top-k by inner product among ids < lim, ties to the lower id ---- */

static void naive_topk(const float *x, int d, int64_t lim, const float *q, int k, int64_t *ids,
                       float *scores)
{
    for (int j = 0; j < k; j++) {
        ids[j] = -1;
        scores[j] = -INFINITY;
    }
    for (int64_t i = 0; i < lim; i++) {
        float s = 0;
        for (int t = 0; t < d; t++)
            s += q[t] * x[(size_t)i * d + t];
        /* insertion: strictly better than the slot, or the slot is empty */
        int pos = k;
        while (pos > 0 && (ids[pos - 1] < 0 || s > scores[pos - 1]))
            pos--;
        if (pos >= k)
            continue;
        for (int j = k - 1; j > pos; j--) {
            ids[j] = ids[j - 1];
            scores[j] = scores[j - 1];
        }
        ids[pos] = i;
        scores[pos] = s;
    }
}

static float dot(const float *a, const float *b, int d)
{
    double s = 0;
    for (int t = 0; t < d; t++)
        s += (double)a[t] * b[t];
    return (float)s;
}

/* Result rows must hold distinct ids in [0, lim), then only -1. */
static int rows_valid(const int64_t *ids, int64_t nq, int k, int64_t lim)
{
    for (int64_t i = 0; i < nq; i++) {
        const int64_t *r = ids + i * k;
        int ended = 0;
        for (int j = 0; j < k; j++) {
            if (r[j] < 0) {
                ended = 1;
                continue;
            }
            if (ended || r[j] >= lim)
                return 0;
            for (int t = 0; t < j; t++)
                if (r[t] == r[j])
                    return 0;
        }
    }
    return 1;
}

static double recall(const int64_t *got, const int64_t *truth, int64_t nq, int k)
{
    int64_t hit = 0, tot = 0;
    for (int64_t i = 0; i < nq; i++)
        for (int j = 0; j < k; j++) {
            if (truth[i * k + j] < 0)
                continue;
            tot++;
            for (int t = 0; t < k; t++)
                if (got[i * k + t] == truth[i * k + j]) {
                    hit++;
                    break;
                }
        }
    return tot ? (double)hit / tot : 1.0;
}

static void truth_topk(const float *x, int d, int64_t lim, const float *q, int64_t nq, int k,
                       int64_t *ids)
{
    float *sc = alloc_f(k);
    for (int64_t i = 0; i < nq; i++)
        naive_topk(x, d, lim, q + i * d, k, ids + i * k, sc);
    free(sc);
}

static lmk_index *mk(const char *spec, int dim, int64_t train_min)
{
    lmk_index_opts o = lmk_index_opts_default();
    o.spec = spec;
    o.dim = dim;
    o.train_min = train_min;
    lmk_index *idx = NULL;
    char msg[MSG_CAP] = "";
    int rc = lmk_index_create(&o, &idx, msg, sizeof msg);
    if (rc != LMK_OK)
        fprintf(stderr, "create \"%s\" dim %d: %s (%s)\n", spec, dim, lmk_strerror(rc), msg);
    return idx;
}

/* ---- 1. exact search equals the reference ---- */

/* Compare one search against naive_topk. With exact_ties the data are small integers so
 * ids and scores must be identical; with float data an id may differ only where the
 * reference scores of the two ids are within rounding of each other. */
static int compare_search(lmk_index *idx, const float *x, int d, const float *q, int64_t nq,
                          int k, int64_t limit, int exact_ties, const lmk_search_params *p)
{
    int64_t lim = (limit <= 0 || limit > lmk_index_ntotal(idx)) ? lmk_index_ntotal(idx)
                                                                 : limit;
    int64_t *ids = malloc(sizeof(int64_t) * nq * k), *rid = malloc(sizeof(int64_t) * k);
    float *sc = alloc_f((size_t)nq * k), *rsc = alloc_f(k);
    int bad = 0;
    int rc = lmk_index_search(idx, nq, q, k, limit, p, ids, sc);
    CHECK_RC(rc, LMK_OK);
    if (rc != LMK_OK)
        bad = 1;
    for (int64_t i = 0; i < nq && !bad; i++) {
        naive_topk(x, d, lim, q + i * d, k, rid, rsc);
        for (int j = 0; j < k; j++) {
            int64_t g = ids[i * k + j];
            if (exact_ties) {
                if (g != rid[j] || (g >= 0 && sc[i * k + j] != rsc[j])) {
                    fprintf(stderr,
                            "  q%lld slot %d: got id %lld (%g), want %lld (%g) [k %d limit "
                            "%lld]\n",
                            (long long)i, j, (long long)g, sc[i * k + j], (long long)rid[j],
                            rsc[j], k, (long long)limit);
                    bad = 1;
                    break;
                }
            } else if (g != rid[j]) {
                float a = g >= 0 ? dot(q + i * d, x + g * d, d) : -INFINITY;
                float b = rid[j] >= 0 ? dot(q + i * d, x + rid[j] * d, d) : -INFINITY;
                if (!(fabsf(a - b) <= 1e-4f * (1 + fabsf(b)))) {
                    fprintf(stderr, "  q%lld slot %d: got id %lld (%g), want %lld (%g)\n",
                            (long long)i, j, (long long)g, a, (long long)rid[j], b);
                    bad = 1;
                    break;
                }
            } else if (g >= 0 && fabsf(sc[i * k + j] - rsc[j]) > 1e-4f * (1 + fabsf(rsc[j]))) {
                fprintf(stderr, "  q%lld slot %d: score %g, want %g\n", (long long)i, j,
                        sc[i * k + j], rsc[j]);
                bad = 1;
                break;
            }
        }
    }
    free(ids);
    free(rid);
    free(sc);
    free(rsc);
    return bad;
}

static int test_flat_exact(uint64_t seed)
{
    const int d = 24;
    const int64_t n = 3000, nq = 70; /* nq > 64: two query blocks in the exact path */
    uint64_t s = seed;
    for (int ints = 1; ints >= 0; ints--) {
        float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
        if (ints) {
            fill_ints(x, (size_t)n * d, &s);
            fill_ints(q, (size_t)nq * d, &s);
        } else {
            fill_uniform(x, (size_t)n * d, &s);
            fill_uniform(q, (size_t)nq * d, &s);
        }
        /* IVF16,Flat probing every list is exact too, through FAISS and the over-fetch
         * for limits (float data only: FAISS does not order ties by id) */
        const char *specs[] = {"Flat", "Flat+l2", "IVF16,Flat", "IVF16,Flat+l2"};
        lmk_search_params all = {0, 16};
        for (int si = 0; si < 4; si++) {
            if (si >= 1 && ints)
                continue; /* exact ties are only checked where no rounding can break them */
            lmk_index *idx = mk(specs[si], d, si >= 2 ? 1000 : 0);
            REQUIRE(idx);
            CHECK(lmk_index_is_trained(idx) == (si < 2));
            /* empty index: all -1 */
            int64_t e[4];
            CHECK_RC(lmk_index_search(idx, 1, q, 4, 0, NULL, e, NULL), LMK_OK);
            CHECK(e[0] == -1 && e[3] == -1);
            /* added in uneven batches */
            REQUIRE_OK(lmk_index_add(idx, 1, x));
            REQUIRE_OK(lmk_index_add(idx, 999, x + d));
            REQUIRE_OK(lmk_index_add(idx, n - 1000, x + 1000 * d));
            CHECK(lmk_index_ntotal(idx) == n);
            CHECK(lmk_index_is_trained(idx) == 1);
            CHECK(memcmp(lmk_index_vectors(idx), x, sizeof(float) * n * d) == 0);
            const int ks[] = {1, 5, 10, 64};
            const int64_t limits[] = {0, n, n - 1, 2900, 1500, 40, 7, 3, 1, n + 5};
            for (size_t a = 0; a < sizeof ks / sizeof *ks; a++)
                for (size_t b = 0; b < sizeof limits / sizeof *limits; b++) {
                    if (compare_search(idx, x, d, q, nq, ks[a], limits[b], ints, &all)) {
                        fprintf(stderr, "flat mismatch: %s ints %d k %d limit %lld\n",
                                specs[si], ints, ks[a], (long long)limits[b]);
                        CHECK(0);
                    }
                }
            /* one query (the sgemv path) and k larger than the allowed set */
            CHECK(compare_search(idx, x, d, q, 1, 10, 0, ints, &all) == 0);
            CHECK(compare_search(idx, x, d, q + d, 1, 20, 12, ints, &all) == 0);
            lmk_index_free(idx);
        }
        free(x);
        free(q);
    }
    printf("flat: exact search equals the reference (ints and floats, limits, k)\n");
    return 0;
}

/* ---- 2. ANN recall on structured data ---- */

static int test_ann_recall(uint64_t seed)
{
    const int d = 64, k = 10;
    const int64_t n = 6000, nq = 200;
    uint64_t s = seed + 1;
    structured g;
    structured_init(&g, d, 0.8f, 0.8f, &s);
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    structured_keys(&g, x, n, &s);
    structured_queries(&g, q, nq, &s);
    int64_t *truth = malloc(sizeof(int64_t) * nq * k), *got = malloc(sizeof(int64_t) * nq * k);
    truth_topk(x, d, n, q, nq, k, truth);

    lmk_index *h = mk("HNSW32", d, 0);
    REQUIRE(h);
    REQUIRE_OK(lmk_index_add(h, n, x));
    printf("recall@%d, %lld structured keys dim %d, %lld queries\n", k, (long long)n, d,
           (long long)nq);
    double r_h64 = 0;
    const int efs[] = {16, 32, 64, 128};
    for (int i = 0; i < 4; i++) {
        lmk_search_params p = {efs[i], 0};
        REQUIRE_OK(lmk_index_search(h, nq, q, k, 0, &p, got, NULL));
        CHECK(rows_valid(got, nq, k, n));
        double r = recall(got, truth, nq, k);
        if (efs[i] == 64)
            r_h64 = r;
        printf("  HNSW32      efSearch %4d: %.3f\n", efs[i], r);
    }
    CHECK(r_h64 > 0.3);

    lmk_index *v = mk("IVF64,Flat", d, 0);
    REQUIRE(v);
    REQUIRE_OK(lmk_index_add(v, n, x));
    CHECK(lmk_index_is_trained(v) == 1); /* 6000 >= 39 x 64 */
    double r_i8 = 0, r_all = 0;
    const int nps[] = {1, 4, 8, 16, 64};
    for (int i = 0; i < 5; i++) {
        lmk_search_params p = {0, nps[i]};
        REQUIRE_OK(lmk_index_search(v, nq, q, k, 0, &p, got, NULL));
        CHECK(rows_valid(got, nq, k, n));
        double r = recall(got, truth, nq, k);
        if (nps[i] == 8)
            r_i8 = r;
        if (nps[i] == 64)
            r_all = r;
        printf("  IVF64,Flat  nprobe   %4d: %.3f\n", nps[i], r);
    }
    CHECK(r_i8 > 0.3);
    /* every list probed: IVF,Flat is exact */
    CHECK(r_all > 0.999);

    /* a parameter is index state: searching without params keeps nprobe 64 */
    REQUIRE_OK(lmk_index_search(v, nq, q, k, 0, NULL, got, NULL));
    CHECK(recall(got, truth, nq, k) > 0.999);
    lmk_index_free(h);
    lmk_index_free(v);
    free(x);
    free(q);
    free(truth);
    free(got);
    structured_free(&g);
    return 0;
}

/* ---- 3. the +l2 transform on unnormalized data ---- */

/* Recall@k of HNSW16 and HNSW16+l2 at efSearch 16, 32, 64 on one data set; the "+l2"
 * index is built in two halves, the second with larger norms, so that adding exceeds the
 * norm bound and rebuilds. Its scores must come back as inner products. */
static int l2_case(const char *name, const float *x, int64_t n, int d, const float *q,
                   int64_t nq, int k, double *rip, double *rl2)
{
    int64_t *truth = malloc(sizeof(int64_t) * nq * k), *got = malloc(sizeof(int64_t) * nq * k);
    float *sc = alloc_f((size_t)nq * k);
    truth_topk(x, d, n, q, nq, k, truth);
    /* the second half holds the largest norms */
    float *xs = alloc_f((size_t)n * d);
    memcpy(xs, x, sizeof(float) * n * d);
    int64_t big = 0;
    double bn = 0;
    for (int64_t i = 0; i < n; i++) {
        double nn = dot(xs + i * d, xs + i * d, d);
        if (nn > bn) {
            bn = nn;
            big = i;
        }
    }
    lmk_index *ip = mk("HNSW16", d, 0), *l2 = mk("HNSW16+l2", d, 0);
    REQUIRE(ip && l2);
    REQUIRE_OK(lmk_index_add(ip, n, x));
    /* ids must stay those of x: add [0, big) then [big, n) so the largest norm arrives
     * in the second add (or first, when big == 0) */
    if (big > 0)
        REQUIRE_OK(lmk_index_add(l2, big, x));
    REQUIRE_OK(lmk_index_add(l2, n - big, x + big * d));
    CHECK(lmk_index_ntotal(l2) == n);
    const int efs[] = {16, 32, 64};
    for (int i = 0; i < 3; i++) {
        lmk_search_params p = {efs[i], 0};
        REQUIRE_OK(lmk_index_search(ip, nq, q, k, 0, &p, got, NULL));
        rip[i] = recall(got, truth, nq, k);
        REQUIRE_OK(lmk_index_search(l2, nq, q, k, 0, &p, got, sc));
        CHECK(rows_valid(got, nq, k, n));
        rl2[i] = recall(got, truth, nq, k);
        double worst = 0;
        for (int64_t t = 0; t < nq * k; t++)
            if (got[t] >= 0) {
                float want = dot(q + (t / k) * d, x + got[t] * d, d);
                double e = fabs(sc[t] - want) / (1 + fabs(want));
                if (e > worst)
                    worst = e;
            }
        CHECK(worst < 1e-3);
        printf("  %-28s HNSW16 efSearch %2d: inner product %.3f, +l2 %.3f\n", name, efs[i],
               rip[i], rl2[i]);
    }
    lmk_index_free(ip);
    lmk_index_free(l2);
    free(xs);
    free(truth);
    free(got);
    free(sc);
    return 0;
}

static int test_l2_transform(uint64_t seed)
{
    const int d = 32, k = 10;
    const int64_t n = 5000, nq = 200;
    uint64_t s = seed + 2;
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    double rip[3], rl2[3];
    /* keys sharing a large mean component, modest norm spread (as attention keys do):
     * inner-product HNSW loses most neighbours, the transform keeps them */
    structured g;
    structured_init(&g, d, 2.0f, 0.3f, &s);
    structured_keys(&g, x, n, &s);
    structured_queries(&g, q, nq, &s);
    l2_case("keys with a large mean", x, n, d, q, nq, k, rip, rl2);
    for (int i = 0; i < 3; i++)
        CHECK(rl2[i] >= rip[i]);
    structured_free(&g);
    /* centred Gaussian keys, norms spread over a factor ~20: here the inner-product graph
     * does better (the largest norms answer most queries); printed, not asserted */
    for (int64_t i = 0; i < n; i++) {
        float r = expf(1.5f * lmk_test_uniform(&s));
        for (int j = 0; j < d; j++)
            x[i * d + j] = r * gauss(&s);
    }
    fill_uniform(q, (size_t)nq * d, &s);
    l2_case("centred keys, norms x20", x, n, d, q, nq, k, rip, rl2);
    /* a vector far above the norm bound (M = 1.25 x the largest norm so far) must
     * rebuild the transform: its score comes back exact and it ranks first */
    for (int si = 0; si < 2; si++) {
        const char *spec = si ? "IVF4,Flat+l2" : "HNSW16+l2";
        lmk_index *l2 = mk(spec, 8, si ? 100 : 0);
        REQUIRE(l2);
        float small[200 * 8], big[8] = {5, 0, 0, 0, 0, 0, 0, 0}, e0[8] = {1, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 200 * 8; i++)
            small[i] = 0.1f * lmk_test_uniform(&s);
        REQUIRE_OK(lmk_index_add(l2, 200, small));
        REQUIRE_OK(lmk_index_add(l2, 1, big));
        int64_t id[3];
        float sc[3];
        lmk_search_params p = {64, 4};
        REQUIRE_OK(lmk_index_search(l2, 1, e0, 3, 0, &p, id, sc));
        CHECK(id[0] == 200);
        CHECK_NEAR(sc[0], 5.0, 1e-3);
        CHECK(fabsf(sc[1] - dot(e0, small + id[1] * 8, 8)) < 1e-3f);
        lmk_index_free(l2);
    }
    free(x);
    free(q);
    return 0;
}

/* ---- 4. training thresholds ---- */

static int test_training(uint64_t seed)
{
    const int d = 16, k = 8;
    uint64_t s = seed + 3;
    const int64_t n = 1000, nq = 20;
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    fill_uniform(x, (size_t)n * d, &s);
    fill_uniform(q, (size_t)nq * d, &s);
    int64_t *got = malloc(sizeof(int64_t) * nq * k), *truth = malloc(sizeof(int64_t) * nq * k);

    /* automatic threshold for IVF16: 39 x 16 = 624 */
    lmk_index *v = mk("IVF16,Flat", d, 0);
    REQUIRE(v);
    CHECK(lmk_index_is_trained(v) == 0);
    lmk_search_params all = {0, 16}; /* every list probed: results must be exact */
    int64_t at = 0;
    const int64_t steps[] = {5, 100, 400, 118, 1, 1, 200, 175};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        REQUIRE_OK(lmk_index_add(v, steps[i], x + at * d));
        at += steps[i];
        CHECK(lmk_index_ntotal(v) == at);
        CHECK(lmk_index_is_trained(v) == (at >= 624));
        REQUIRE_OK(lmk_index_search(v, nq, q, k, 0, &all, got, NULL));
        CHECK(rows_valid(got, nq, k, at));
        truth_topk(x, d, at, q, nq, k, truth);
        double r = recall(got, truth, nq, k);
        CHECK(r > 0.999);
        if (at == 623 || at == 624 || at == 625)
            printf("  IVF16,Flat at %lld vectors: trained %d, recall %.3f\n", (long long)at,
                   lmk_index_is_trained(v), r);
    }
    CHECK(at == n);
    lmk_index_free(v);

    /* explicit train_min, and one below what k-means needs */
    v = mk("IVF16,Flat", d, 50);
    REQUIRE(v);
    REQUIRE_OK(lmk_index_add(v, 49, x));
    CHECK(lmk_index_is_trained(v) == 0);
    REQUIRE_OK(lmk_index_add(v, 1, x + 49 * d));
    CHECK(lmk_index_is_trained(v) == 1);
    lmk_index_free(v);
    lmk_index_opts o = lmk_index_opts_default();
    o.spec = "IVF16,Flat";
    o.dim = d;
    o.train_min = 10;
    char msg[MSG_CAP] = "";
    lmk_index *bad = (lmk_index *)&o;
    CHECK_RC(lmk_index_create(&o, &bad, msg, sizeof msg), LMK_EINVAL);
    CHECK(bad == NULL && msg[0]);

    /* automatic thresholds of SQ (1024), PQ (39 x 256) through the is_trained flip */
    float *big = alloc_f((size_t)10000 * d);
    fill_uniform(big, (size_t)10000 * d, &s);
    struct {
        const char *spec;
        int64_t want;
    } th[] = {{"SQ8", 1024}, {"IVF8,SQ8", 1024}, {"PQ4", 9984}, {"IVF8,PQ4x6", 2496}};
    for (size_t i = 0; i < sizeof th / sizeof *th; i++) {
        v = mk(th[i].spec, d, 0);
        REQUIRE(v);
        REQUIRE_OK(lmk_index_add(v, th[i].want - 1, big));
        CHECK(lmk_index_is_trained(v) == 0);
        REQUIRE_OK(lmk_index_add(v, 1, big + (th[i].want - 1) * d));
        CHECK(lmk_index_is_trained(v) == 1);
        if (!lmk_index_is_trained(v))
            fprintf(stderr, "  %s: not trained at %lld\n", th[i].spec, (long long)th[i].want);
        lmk_index_free(v);
    }
    free(big);

    /* lossy codes work: valid ids, recall vs exact printed and loosely checked */
    truth_topk(x, d, n, q, nq, k, truth);
    struct {
        const char *spec;
        int64_t tmin;
        double floor;
    } lossy[] = {{"SQ8", 500, 0.8}, {"SQfp16", 0, 0.95}, {"PQ8", 400, 0.2},
                 {"IVF4,SQ8", 300, 0.8}, {"IVF4,PQ8x4", 200, 0.2}, {"PCA8,Flat", 200, 0.1},
                 {"HNSW8,SQ8", 500, 0.5}};
    for (size_t i = 0; i < sizeof lossy / sizeof *lossy; i++) {
        v = mk(lossy[i].spec, d, lossy[i].tmin);
        REQUIRE(v);
        REQUIRE_OK(lmk_index_add(v, n, x));
        CHECK(lmk_index_is_trained(v) == 1);
        lmk_search_params p = {64, 4};
        float sc[20 * 8];
        REQUIRE_OK(lmk_index_search(v, nq, q, k, 0, &p, got, sc));
        CHECK(rows_valid(got, nq, k, n));
        double r = recall(got, truth, nq, k);
        printf("  %-11s recall@%d %.3f\n", lossy[i].spec, k, r);
        CHECK(r >= lossy[i].floor);
        lmk_index_free(v);
    }
    free(x);
    free(q);
    free(got);
    free(truth);
    return 0;
}

/* ---- 5. refused specs and invalid arguments ---- */

static int test_refused(void)
{
    /* FAISS's parser refuses some; others FAISS builds with an L2 metric (HNSW over PQ)
     * or they rank by Hamming distance (LSH, also with "+l2") */
    const char *refused[] = {"LSH",        "nonsense", "BFlat",      "",        "+l2",
                             "BHNSW32",    "IVF16,Flat,", "LSHrt",   "LSH+l2",  "Flat extra",
                             "HNSW16,PQ4", "HNSW16_PQ4", "IVF8,LSH"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        lmk_index_opts o = lmk_index_opts_default();
        o.spec = refused[i];
        o.dim = 16;
        lmk_index *idx = (lmk_index *)&o;
        char msg[MSG_CAP] = "";
        int rc = lmk_index_create(&o, &idx, msg, sizeof msg);
        CHECK_RC(rc, LMK_EUNSUPPORTED);
        CHECK(idx == NULL);
        CHECK(msg[0] != 0);
        printf("  refused \"%s\": %s\n", refused[i], msg);
    }
    lmk_index_opts o = lmk_index_opts_default();
    lmk_index *idx = (lmk_index *)&o;
    char msg[MSG_CAP];
    o.dim = 0;
    CHECK_RC(lmk_index_create(&o, &idx, msg, sizeof msg), LMK_EINVAL);
    CHECK(idx == NULL);
    o.dim = -3;
    CHECK_RC(lmk_index_create(&o, &idx, msg, sizeof msg), LMK_EINVAL);
    o.dim = 8;
    o.spec = NULL;
    CHECK_RC(lmk_index_create(&o, &idx, msg, sizeof msg), LMK_EINVAL);
    o.spec = "Flat";
    o.train_min = -1;
    CHECK_RC(lmk_index_create(&o, &idx, msg, sizeof msg), LMK_EINVAL);
    CHECK_RC(lmk_index_create(NULL, &idx, msg, sizeof msg), LMK_EINVAL);
    CHECK_RC(lmk_index_create(&o, NULL, NULL, 0), LMK_EINVAL);

    idx = mk("Flat", 4, 0);
    REQUIRE(idx);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, nanv[8] = {1, 2, 3, 4, 5, NAN, 7, 8};
    int64_t ids[4];
    REQUIRE_OK(lmk_index_add(idx, 2, v));
    CHECK_RC(lmk_index_add(idx, 2, nanv), LMK_EINVAL);
    CHECK(lmk_index_ntotal(idx) == 2); /* nothing added */
    CHECK(strlen(lmk_index_errmsg(idx)) > 0);
    v[0] = INFINITY;
    CHECK_RC(lmk_index_add(idx, 1, v), LMK_EINVAL);
    v[0] = 1;
    CHECK_RC(lmk_index_add(idx, -1, v), LMK_EINVAL);
    CHECK_RC(lmk_index_add(idx, 1, NULL), LMK_EINVAL);
    CHECK(lmk_index_ntotal(idx) == 2);
    CHECK_RC(lmk_index_search(idx, 1, v, 0, 0, NULL, ids, NULL), LMK_EINVAL);
    CHECK_RC(lmk_index_search(idx, -1, v, 2, 0, NULL, ids, NULL), LMK_EINVAL);
    CHECK_RC(lmk_index_search(idx, 1, NULL, 2, 0, NULL, ids, NULL), LMK_EINVAL);
    CHECK_RC(lmk_index_search(idx, 1, v, 2, 0, NULL, NULL, NULL), LMK_EINVAL);
    CHECK_RC(lmk_index_search(idx, 1, nanv + 4, 2, 0, NULL, ids, NULL), LMK_EINVAL);
    CHECK_RC(lmk_index_truncate(idx, -1), LMK_EINVAL);
    CHECK_RC(lmk_index_truncate(idx, 5), LMK_OK); /* nothing above 5 to drop */
    CHECK(lmk_index_ntotal(idx) == 2);
    /* parameters that do not apply are ignored */
    lmk_search_params p = {50, 7};
    CHECK_RC(lmk_index_search(idx, 1, v, 2, 0, &p, ids, NULL), LMK_OK);
    CHECK(ids[0] == 1 && ids[1] == 0);
    lmk_index_free(idx);
    lmk_index_free(NULL);
    CHECK(lmk_index_errmsg(NULL) != NULL);
    return 0;
}

/* ---- 6. truncation ---- */

static int test_truncate(uint64_t seed)
{
    const int d = 16, k = 10;
    const int64_t n = 1500, nq = 30;
    uint64_t s = seed + 4;
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    fill_uniform(x, (size_t)n * d, &s);
    fill_uniform(q, (size_t)nq * d, &s);
    int64_t *got = malloc(sizeof(int64_t) * nq * k), *truth = malloc(sizeof(int64_t) * nq * k);
    struct {
        const char *spec;
        int64_t tmin;
        lmk_search_params p;
        double floor;
    } cases[] = {{"Flat", 0, {0, 0}, 0.999},
                 {"HNSW32", 0, {128, 0}, 0.9},
                 {"HNSW32+l2", 0, {128, 0}, 0.9},
                 {"IVF16,Flat", 400, {0, 16}, 0.999},
                 {"IVF16_HNSW8,Flat", 400, {32, 16}, 0.999},
                 {"PCA16,IVF8,Flat", 300, {0, 8}, 0.9}}; /* PCA centres: not exact for IP */
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lmk_index *idx = mk(cases[c].spec, d, cases[c].tmin);
        REQUIRE(idx);
        REQUIRE_OK(lmk_index_add(idx, n, x));
        /* down to 900, 500 (still >= train_min), 200 (exact mode for IVF), then grow back */
        const int64_t to[] = {900, 500, 200, 0};
        for (int t = 0; t < 4; t++) {
            REQUIRE_OK(lmk_index_truncate(idx, to[t]));
            CHECK(lmk_index_ntotal(idx) == to[t]);
            if (cases[c].tmin)
                CHECK(lmk_index_is_trained(idx) == (to[t] >= cases[c].tmin));
            REQUIRE_OK(lmk_index_search(idx, nq, q, k, 0, &cases[c].p, got, NULL));
            CHECK(rows_valid(got, nq, k, to[t]));
            truth_topk(x, d, to[t], q, nq, k, truth);
            double r = recall(got, truth, nq, k);
            if (!(r >= cases[c].floor))
                fprintf(stderr, "  %s truncated to %lld: recall %.3f\n", cases[c].spec,
                        (long long)to[t], r);
            CHECK(r >= cases[c].floor);
            if (to[t] == 0)
                CHECK(got[0] == -1);
        }
        /* add again: ids continue from the truncation point */
        REQUIRE_OK(lmk_index_add(idx, n, x));
        CHECK(lmk_index_ntotal(idx) == n);
        CHECK(lmk_index_is_trained(idx) == 1);
        REQUIRE_OK(lmk_index_search(idx, nq, q, k, 0, &cases[c].p, got, NULL));
        truth_topk(x, d, n, q, nq, k, truth);
        double r = recall(got, truth, nq, k);
        printf("  truncate %-17s: recall after re-adding %.3f\n", cases[c].spec, r);
        CHECK(r >= cases[c].floor);
        lmk_index_free(idx);
    }
    free(x);
    free(q);
    free(got);
    free(truth);
    return 0;
}

/* ---- 7. files ---- */

/* Independent bitwise CRC-32C, to forge checksums of edited files. */
static uint32_t crc32c_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void fix_crc(unsigned char *img, size_t len)
{
    uint32_t save = 0, c;
    memcpy(img + 72, &save, 4);
    /* the stored CRC covers everything but its own 4 bytes */
    unsigned char *tmp = malloc(len - 4);
    memcpy(tmp, img, 72);
    memcpy(tmp + 72, img + 76, len - 76);
    c = crc32c_ref(tmp, len - 4);
    free(tmp);
    memcpy(img + 72, &c, 4);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(l > 0 ? (size_t)l : 1);
    if (fread(b, 1, (size_t)l, f) != (size_t)l) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)l;
    return b;
}

static int write_file(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(b, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Loading `img` must fail with `want`, and parse_header must agree when it sees it. */
static int expect_damaged(const char *path, const unsigned char *img, size_t len, int want,
                          int parse_want, const char *what)
{
    if (write_file(path, img, len) != 0)
        return 1;
    lmk_index *idx = (lmk_index *)path;
    char msg[MSG_CAP] = "";
    int rc = lmk_index_load(path, NULL, 0, &idx, msg, sizeof msg);
    int prc = lmk_index_parse_header(img, len, NULL, NULL, NULL, 0);
    if (rc != want || idx != NULL || !msg[0] || prc != parse_want) {
        fprintf(stderr, "  damaged file (%s): load %d (%s), parse %d, want %d\n", what, rc, msg,
                prc, want);
        return 1;
    }
    return 0;
}

static int same_results(lmk_index *a, lmk_index *b, const float *q, int64_t nq, int k,
                        int64_t limit, const lmk_search_params *p)
{
    int64_t *ia = malloc(sizeof(int64_t) * nq * k), *ib = malloc(sizeof(int64_t) * nq * k);
    float *sa = alloc_f((size_t)nq * k), *sb = alloc_f((size_t)nq * k);
    int same = lmk_index_search(a, nq, q, k, limit, p, ia, sa) == LMK_OK &&
               lmk_index_search(b, nq, q, k, limit, p, ib, sb) == LMK_OK &&
               memcmp(ia, ib, sizeof(int64_t) * nq * k) == 0 &&
               memcmp(sa, sb, sizeof(float) * nq * k) == 0;
    free(ia);
    free(ib);
    free(sa);
    free(sb);
    return same;
}

static int test_files(uint64_t seed)
{
    const int d = 16, k = 10;
    const int64_t n = 1200, nq = 25;
    uint64_t s = seed + 5;
    char dir[4096], path[4200], path2[4200];
    lmk_test_dir(dir, sizeof dir, "test_index");
    REQUIRE(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/a.idx", dir);
    snprintf(path2, sizeof path2, "%s/b.idx", dir);
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    fill_uniform(x, (size_t)n * d, &s);
    fill_uniform(q, (size_t)nq * d, &s);

    /* test vector of the checksum the file uses */
    CHECK(crc32c_ref((const unsigned char *)"123456789", 9) == 0xE3069283u);

    struct {
        const char *spec;
        int64_t tmin, nadd;
        lmk_search_params p;
    } cases[] = {{"Flat", 0, n, {0, 0}},           {"HNSW32+l2", 0, n, {40, 0}},
                 {"HNSW16", 0, n, {24, 0}},        {"IVF16,Flat", 600, n, {0, 3}},
                 {"IVF16,Flat", 600, 599, {0, 3}}, {"IVF8,PQ4x4", 300, n, {0, 2}},
                 {"Flat", 0, 0, {0, 0}}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lmk_index *a = mk(cases[c].spec, d, cases[c].tmin), *b = NULL;
        REQUIRE(a);
        REQUIRE_OK(lmk_index_add(a, cases[c].nadd, x));
        /* set the parameter before saving: FAISS keeps it in its own serialization */
        int64_t tmp[10];
        REQUIRE_OK(lmk_index_search(a, 1, q, 10, 0, &cases[c].p, tmp, NULL));
        REQUIRE_OK(lmk_index_save(a, path));
        char msg[MSG_CAP] = "";
        int rc = lmk_index_load(path, cases[c].spec, d, &b, msg, sizeof msg);
        CHECK_RC(rc, LMK_OK);
        if (rc != LMK_OK) {
            fprintf(stderr, "  load %s: %s\n", cases[c].spec, msg);
            lmk_index_free(a);
            continue;
        }
        CHECK(lmk_index_ntotal(b) == cases[c].nadd);
        CHECK(lmk_index_dim(b) == d);
        CHECK(lmk_index_is_trained(b) == lmk_index_is_trained(a));
        CHECK(strcmp(lmk_index_spec(b), cases[c].spec) == 0);
        CHECK(cases[c].nadd == 0 ||
              memcmp(lmk_index_vectors(b), x, sizeof(float) * cases[c].nadd * d) == 0);
        /* with no parameters (state as saved), then with them, then a limit */
        CHECK(same_results(a, b, q, nq, k, 0, NULL));
        CHECK(same_results(a, b, q, nq, k, 0, &cases[c].p));
        CHECK(same_results(a, b, q, nq, k, cases[c].nadd - 30, &cases[c].p));
        /* and both keep working the same after more adds */
        REQUIRE_OK(lmk_index_add(a, 10, x + 100 * d));
        REQUIRE_OK(lmk_index_add(b, 10, x + 100 * d));
        if (strncmp(cases[c].spec, "HNSW", 4) != 0) /* HNSW adds are multithreaded */
            CHECK(same_results(a, b, q, nq, k, 0, &cases[c].p));

        /* the spec and dim the caller expects must match */
        lmk_index *m = (lmk_index *)path;
        CHECK_RC(lmk_index_load(path, "HNSW8", d, &m, msg, sizeof msg), LMK_EMISMATCH);
        CHECK(m == NULL);
        CHECK_RC(lmk_index_load(path, cases[c].spec, d + 1, &m, msg, sizeof msg),
                 LMK_EMISMATCH);
        CHECK(m == NULL);
        int hd = 0;
        int64_t hn = -1;
        char hs[64];
        size_t len = 0;
        unsigned char *img = read_file(path, &len);
        REQUIRE(img);
        CHECK_RC(lmk_index_parse_header(img, len, &hd, &hn, hs, sizeof hs), LMK_OK);
        CHECK(hd == d && hn == cases[c].nadd && strcmp(hs, cases[c].spec) == 0);
        char small[4];
        CHECK_RC(lmk_index_parse_header(img, len, NULL, NULL, small, sizeof small), LMK_OK);
        CHECK(strlen(small) == 3);
        free(img);
        lmk_index_free(a);
        lmk_index_free(b);
    }

    /* ---- damaged images of a trained IVF file (has every part) ---- */
    lmk_index *a = mk("IVF16,Flat", d, 600);
    REQUIRE(a);
    REQUIRE_OK(lmk_index_add(a, n, x));
    REQUIRE_OK(lmk_index_save(a, path));
    size_t len = 0;
    unsigned char *img = read_file(path, &len), *bad = malloc(len + 16);
    REQUIRE(img && bad);
    size_t vec_off = 80 + strlen("IVF16,Flat"), faiss_off = vec_off + (size_t)n * d * 4;
    int fails = 0;
    /* truncated at several points */
    const size_t cuts[] = {0, 1, 7, 11, 12, 40, 79, 80, 83, vec_off + 1, faiss_off - 1,
                           faiss_off, faiss_off + 9, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++)
        fails += expect_damaged(path2, img, cuts[i], LMK_ECORRUPT, LMK_ECORRUPT, "truncated");
    /* one byte longer */
    memcpy(bad, img, len);
    bad[len] = 0;
    fails += expect_damaged(path2, bad, len + 1, LMK_ECORRUPT, LMK_ECORRUPT, "extended");
    /* a flipped byte anywhere: header fields, spec, vectors, FAISS payload */
    const size_t flips[] = {0,  5,  9,  12, 16, 20, 25, 33, 41, 44, 50,
                            58, 65, 72, 77, 80, 85, vec_off + 3, faiss_off + 2,
                            faiss_off + 200, len - 1};
    for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
        memcpy(bad, img, len);
        bad[flips[i]] ^= 0x10;
        int want = (flips[i] >= 8 && flips[i] < 12) ? LMK_EVERSION : LMK_ECORRUPT;
        char what[64];
        snprintf(what, sizeof what, "byte %zu flipped", flips[i]);
        fails += expect_damaged(path2, bad, len, want, want, what);
    }
    /* lengths set to huge values, with the checksum forged so that only the length
     * checks stand between them and an allocation */
    struct {
        size_t off;
        int width;
        uint64_t v;
    } huge[] = {{44, 4, 0xFFFFFFFFu},         {44, 4, 257},
                {48, 8, UINT64_MAX},          {48, 8, (uint64_t)1 << 62},
                {56, 8, UINT64_MAX},          {56, 8, (uint64_t)1 << 40},
                {24, 8, (uint64_t)1 << 60},   {24, 8, UINT64_MAX},
                {24, 8, (uint64_t)n + 1},     {16, 4, 0xFFFFFFFFu},
                {16, 4, 0},                   {64, 8, 5},
                {12, 4, 1u << 30},            {76, 4, 1}};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        memcpy(bad, img, len);
        memcpy(bad + huge[i].off, &huge[i].v, (size_t)huge[i].width);
        fix_crc(bad, len);
        char what[64];
        snprintf(what, sizeof what, "field at %zu = %llu", huge[i].off,
                 (unsigned long long)huge[i].v);
        fails += expect_damaged(path2, bad, len, LMK_ECORRUPT, LMK_ECORRUPT, what);
    }
    /* empty file, wrong magic, other version (checksum forged) */
    fails += expect_damaged(path2, img, 0, LMK_ECORRUPT, LMK_ECORRUPT, "empty");
    memcpy(bad, img, len);
    memcpy(bad, "LMKIDX\0\2", 8);
    fix_crc(bad, len);
    fails += expect_damaged(path2, bad, len, LMK_ECORRUPT, LMK_ECORRUPT, "magic");
    memcpy(bad, img, len);
    uint32_t v2 = 2;
    memcpy(bad + 8, &v2, 4);
    fix_crc(bad, len);
    fails += expect_damaged(path2, bad, len, LMK_EVERSION, LMK_EVERSION, "version 2");
    /* an untouched copy with the checksum recomputed by the reference loads: the
     * module's table-driven CRC-32C agrees with the bitwise one */
    memcpy(bad, img, len);
    fix_crc(bad, len);
    CHECK(memcmp(bad, img, len) == 0);
    /* checksummed, but FAISS's part names an unknown index type: FAISS's error */
    memcpy(bad, img, len);
    memcpy(bad + faiss_off, "ZZZZ", 4);
    fix_crc(bad, len);
    fails += expect_damaged(path2, bad, len, LMK_EINDEX, LMK_OK, "FAISS fourcc");
    /* checksummed and well formed, but FAISS holds other vectors than the header says:
     * the FAISS part of a 600-vector index spliced into this 1200-vector file */
    {
        lmk_index *c6 = mk("IVF16,Flat", d, 600);
        REQUIRE(c6);
        REQUIRE_OK(lmk_index_add(c6, 600, x));
        REQUIRE_OK(lmk_index_save(c6, path2));
        size_t l6 = 0;
        unsigned char *i6 = read_file(path2, &l6);
        REQUIRE(i6);
        size_t f6 = 80 + strlen("IVF16,Flat") + (size_t)600 * d * 4, flen6 = l6 - f6;
        size_t nl = faiss_off + flen6;
        unsigned char *sp = malloc(nl);
        memcpy(sp, img, faiss_off);
        memcpy(sp + faiss_off, i6 + f6, flen6);
        uint64_t fl = flen6;
        memcpy(sp + 56, &fl, 8);
        fix_crc(sp, nl);
        fails += expect_damaged(path2, sp, nl, LMK_ECORRUPT, LMK_OK, "spliced FAISS part");
        free(sp);
        free(i6);
        lmk_index_free(c6);
    }
    CHECK(fails == 0);
    /* missing file */
    lmk_index *m = (lmk_index *)path;
    char msg[MSG_CAP];
    char nopath[4300];
    snprintf(nopath, sizeof nopath, "%s/none.idx", dir);
    CHECK_RC(lmk_index_load(nopath, NULL, 0, &m, msg, sizeof msg), LMK_ENOTFOUND);
    CHECK(m == NULL);
    /* saving over an existing file replaces it atomically (no .tmp left behind) */
    REQUIRE_OK(lmk_index_save(a, path));
    char tmpp[4300];
    snprintf(tmpp, sizeof tmpp, "%s.tmp", path);
    CHECK(access(tmpp, F_OK) != 0);
    /* a save into a missing directory fails with an errno */
    CHECK(lmk_index_save(a, "/nonexistent-dir/x.idx") > 0);
    lmk_index_free(a);
    free(img);
    free(bad);
    free(x);
    free(q);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---- 8. concurrent searches on separate handles ---- */

typedef struct {
    lmk_index *idx;
    const float *q;
    int64_t nq;
    int k, reps;
    lmk_search_params p;
    int64_t *ids;
    float *sc;
    int rc;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    for (int r = 0; r < j->reps && j->rc == LMK_OK; r++)
        j->rc = lmk_index_search(j->idx, j->nq, j->q, j->k, 0, &j->p, j->ids, j->sc);
    return NULL;
}

static int test_threads(uint64_t seed)
{
    const int d = 32, k = 10;
    const int64_t n = 4000, nq = 64;
    uint64_t s = seed + 6;
    char dir[4096], path[4200];
    lmk_test_dir(dir, sizeof dir, "test_index_thr");
    REQUIRE(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/h.idx", dir);
    float *x = alloc_f((size_t)n * d), *q = alloc_f((size_t)nq * d);
    fill_uniform(x, (size_t)n * d, &s);
    fill_uniform(q, (size_t)nq * d, &s);
    const char *specs[] = {"HNSW32", "IVF32,Flat", "Flat"};
    for (int si = 0; si < 3; si++) {
        /* two identical handles: one built, saved, loaded twice */
        lmk_index *src = mk(specs[si], d, 0), *h[2] = {NULL, NULL};
        REQUIRE(src);
        REQUIRE_OK(lmk_index_add(src, n, x));
        REQUIRE_OK(lmk_index_save(src, path));
        lmk_index_free(src);
        char msg[MSG_CAP];
        REQUIRE_OK(lmk_index_load(path, specs[si], d, &h[0], msg, sizeof msg));
        REQUIRE_OK(lmk_index_load(path, specs[si], d, &h[1], msg, sizeof msg));
        job j[3];
        for (int t = 0; t < 3; t++) {
            j[t].idx = h[t == 2 ? 0 : t];
            j[t].q = q;
            j[t].nq = nq;
            j[t].k = k;
            j[t].reps = 5;
            j[t].p.ef_search = 48;
            j[t].p.nprobe = 4;
            j[t].ids = malloc(sizeof(int64_t) * nq * k);
            j[t].sc = alloc_f((size_t)nq * k);
            j[t].rc = LMK_OK;
        }
        run_job(&j[2]); /* alone, one thread */
        pthread_t th[2];
        for (int t = 0; t < 2; t++)
            REQUIRE(pthread_create(&th[t], NULL, run_job, &j[t]) == 0);
        for (int t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
        for (int t = 0; t < 3; t++)
            CHECK_RC(j[t].rc, LMK_OK);
        for (int t = 0; t < 2; t++) {
            CHECK(memcmp(j[t].ids, j[2].ids, sizeof(int64_t) * nq * k) == 0);
            CHECK(memcmp(j[t].sc, j[2].sc, sizeof(float) * nq * k) == 0);
        }
        CHECK(rows_valid(j[2].ids, nq, k, n));
        for (int t = 0; t < 3; t++) {
            free(j[t].ids);
            free(j[t].sc);
        }
        lmk_index_free(h[0]);
        lmk_index_free(h[1]);
    }
    free(x);
    free(q);
    printf("threads: two handles searched concurrently give the single-thread results\n");
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---- 9. memory estimate ---- */

static int test_memory(uint64_t seed)
{
    const int d = 64;
    const int64_t n = 2000;
    uint64_t s = seed + 7;
    float *x = alloc_f((size_t)n * d);
    fill_uniform(x, (size_t)n * d, &s);
    const char *specs[] = {"Flat", "HNSW32", "IVF16,SQ8"};
    size_t got[3];
    for (int i = 0; i < 3; i++) {
        lmk_index *idx = mk(specs[i], d, i == 2 ? 500 : 0);
        REQUIRE(idx);
        size_t m0 = lmk_index_memory_bytes(idx);
        REQUIRE_OK(lmk_index_add(idx, n, x));
        got[i] = lmk_index_memory_bytes(idx);
        printf("  memory %-9s: %zu bytes empty, %zu bytes with %lld x %d\n", specs[i], m0,
               got[i], (long long)n, d);
        /* at least our copy; at most a few times that */
        size_t copy = (size_t)n * d * 4;
        CHECK(got[i] > m0);
        CHECK(got[i] >= copy);
        CHECK(got[i] < 4 * copy + 4096 * 64 * 4);
        lmk_index_free(idx);
    }
    size_t copy = (size_t)n * d * 4;
    /* Flat is our copy alone; HNSW32 adds FAISS's flat codes and >= 2 x 32 links per
     * vector; IVF16,SQ8 adds one byte per component and an id per vector */
    CHECK(got[0] < copy + copy / 4);
    CHECK(got[1] >= got[0] + copy + (size_t)n * 64 * 4);
    CHECK(got[2] >= got[0] + (size_t)n * (d + 8) && got[2] < got[1]);
    free(x);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define RUN(call)                                                                      \
    do {                                                                               \
        double t0_ = now();                                                            \
        call;                                                                          \
        printf("[%s: %.2f s]\n", #call, now() - t0_);                                   \
    } while (0)

int main(int argc, char **argv)
{
    /* libgomp threads spin while waiting for work; on a small or busy machine they fight
     * OpenBLAS's threads inside FAISS's k-means and training slows down 10-20x. The
     * library must not touch thread settings; this test program runs itself again with
     * OMP_WAIT_POLICY=passive (read by libgomp at load, so setenv alone is too late)
     * unless the caller chose a policy. */
    (void)argc;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
        /* if exec fails, run as we are */
    }
    uint64_t seed = lmk_test_seed("test_index", 20240611);
    RUN(test_flat_exact(seed));
    RUN(test_ann_recall(seed));
    RUN(test_l2_transform(seed));
    RUN(test_training(seed));
    RUN(test_refused());
    RUN(test_truncate(seed));
    RUN(test_files(seed));
    RUN(test_threads(seed));
    RUN(test_memory(seed));
    return lmk_test_finish("test_index", 0);
}
