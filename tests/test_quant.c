/* lmk_quant against llama.cpp's own ggml (libggml-base.so from the npm package node-llama-cpp,
 * fetched by tests/llama/fetch.sh into $LMK_LLAMA_REF):
 *   - block size and bytes per block equal ggml's for every supported type;
 *   - other types are refused with LMK_EUNSUPPORTED and their name in the message;
 *   - rows quantized by ggml (ggml_quantize_chunk and the from_float_ref of the type traits)
 *     and rows of random bytes dequantize to exactly ggml's to_float, bit for bit, on the
 *     portable and on the AVX2 path;
 *   - dot products, portable and AVX2, are within the bounds printed below of a double
 *     precision dot of ggml's dequantized row; dot_act is identical on both paths, for the
 *     random-byte rows too; lmk_quant_matvec gives each row's dot.
 * Without the reference: exit 77 (skip) with the reason, or failure under CI=true.
 * `test_quant --bench` times a 4096 x 4096 matrix-vector product per path instead. */
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <time.h>

#include "lmk_f16.h"
#include "lmk_quant.h"
#include "lmk_test.h"

/* The part of ggml.h used here, declared locally so that this file builds before the
 * reference is fetched; layout as in ggml/include/ggml.h (struct ggml_type_traits). */
typedef void (*ggml_to_float_t)(const void *x, float *y, int64_t k);
typedef void (*ggml_from_float_t)(const float *x, void *y, int64_t k);
struct ggml_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    ggml_to_float_t to_float;
    ggml_from_float_t from_float_ref;
};

static const struct ggml_type_traits *(*g_traits)(int type);
static size_t (*g_quantize_chunk)(int type, const float *src, void *dst, int64_t start,
                                  int64_t nrows, int64_t n_per_row, const float *imatrix);
static void (*g_quantize_init)(int type);
static void (*g_quantize_free)(void);

static const uint32_t types[] = {
    LMK_QUANT_Q2_K, LMK_QUANT_Q3_K, LMK_QUANT_Q4_K, LMK_QUANT_Q5_K,   LMK_QUANT_Q6_K,
    LMK_QUANT_Q4_0, LMK_QUANT_Q4_1, LMK_QUANT_Q5_0, LMK_QUANT_Q5_1,   LMK_QUANT_Q8_0,
    LMK_QUANT_IQ4_NL, LMK_QUANT_IQ4_XS, LMK_QUANT_F16, LMK_QUANT_BF16, LMK_QUANT_F32,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* Rounding allowance of the f32 dots, times sum_i |x_i| * (|w_i| + 2 max|w| of its group of
 * 16): f32 sums of at most 32 terms per lane plus the fused/unfused difference of
 * "s * q - m" (whose rounding scales with |s q| + |m|, not with |w|). */
#define ROUND_TOL 1e-5

static int skip_or_fail(const char *why)
{
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "test_quant: FAILED: %s (CI=true: the llama.cpp reference is required)\n",
                why);
        return 1;
    }
    printf("test_quant: SKIP: %s\n", why);
    return 77;
}

static int load_ref(void **handle)
{
    const char *dir = getenv("LMK_LLAMA_REF");
    char path[4096], why[4200];
    if (!dir || !*dir)
        return skip_or_fail("LMK_LLAMA_REF is not set (run tests/llama/fetch.sh DIR)");
    snprintf(path, sizeof path, "%s/lib/libggml-base.so", dir);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "cannot load the reference %s: %s", path, dlerror());
        return skip_or_fail(why);
    }
    *(void **)&g_traits = dlsym(h, "ggml_get_type_traits");
    *(void **)&g_quantize_chunk = dlsym(h, "ggml_quantize_chunk");
    *(void **)&g_quantize_init = dlsym(h, "ggml_quantize_init");
    *(void **)&g_quantize_free = dlsym(h, "ggml_quantize_free");
    if (!g_traits || !g_quantize_chunk || !g_quantize_init || !g_quantize_free) {
        fprintf(stderr, "test_quant: %s lacks a ggml symbol this test needs\n", path);
        dlclose(h);
        return 1;
    }
    *handle = h;
    printf("test_quant: reference %s\n", path);
    return 0;
}

/* Byte offsets of the f16 scale fields in one block (so random blocks stay finite). */
static int f16_fields(uint32_t t, int off[2])
{
    switch (t) {
    case LMK_QUANT_Q4_1: case LMK_QUANT_Q5_1: case LMK_QUANT_Q4_K: case LMK_QUANT_Q5_K:
        off[0] = 0, off[1] = 2;
        return 2;
    case LMK_QUANT_Q2_K:
        off[0] = 80, off[1] = 82;
        return 2;
    case LMK_QUANT_Q3_K:
        off[0] = 108;
        return 1;
    case LMK_QUANT_Q6_K:
        off[0] = 208;
        return 1;
    default: /* Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS */
        off[0] = 0;
        return 1;
    }
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

/* A row of random bytes of `type`, scale fields finite (|d| < 2, subnormals included). */
static void random_row(uint32_t t, const lmk_quant_info *in, int64_t n, uint8_t *row,
                       uint64_t *s)
{
    size_t nb = (size_t)(n / in->block_size);
    if (t == LMK_QUANT_F32 || t == LMK_QUANT_F16 || t == LMK_QUANT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float v = lmk_test_uniform(s) * 4.0f;
            if (t == LMK_QUANT_F32)
                memcpy(row + 4 * i, &v, 4);
            else
                put16(row + 2 * i, t == LMK_QUANT_F16 ? lmk_f32_to_f16(v) : lmk_f32_to_bf16(v));
        }
        return;
    }
    for (size_t i = 0; i < nb * in->type_size; i++)
        row[i] = (uint8_t)lmk_test_rand(s);
    int off[2], nf = f16_fields(t, off);
    for (size_t b = 0; b < nb; b++)
        for (int f = 0; f < nf; f++) {
            float v = lmk_test_uniform(s) * (lmk_test_rand(s) % 8 == 0 ? 1e-5f : 2.0f);
            put16(row + b * in->type_size + off[f], lmk_f32_to_f16(v));
        }
}

/* Source data of row r: a mix of scales, offsets, outliers and a zero row. */
static void source_row(int r, int64_t n, float *x, uint64_t *s)
{
    float scale = (float)pow(10.0, (double)(r % 5) - 2.0);
    for (int64_t i = 0; i < n; i++) {
        float v = lmk_test_uniform(s) * scale;
        if (r % 4 == 1)
            v += 0.5f * scale; /* off-centre: exercises the mins */
        if (r % 4 == 2 && lmk_test_rand(s) % 64 == 0)
            v *= 30.0f; /* outliers */
        x[i] = r == 7 ? 0.0f : v;
    }
}

typedef struct {
    double worst_f32[2], worst_act; /* worst |err| / bound seen */
    int rows, bit_fail, dot_fail;
} stats;

/* All checks on one row. ref[n] is ggml's to_float of it. */
static void check_row(uint32_t t, const uint8_t *row, const float *ref, int64_t n,
                      const float *x, float *mine, void *act, bool dots, stats *st,
                      const char *what)
{
    lmk_quant_info in;
    lmk_quant_type_info(t, &in);
    st->rows++;
    for (int p = LMK_QUANT_PATH_PORTABLE; p <= LMK_QUANT_PATH_AVX2; p++) {
        if (!lmk_quant_path_available((lmk_quant_path)p))
            continue;
        memset(mine, 0xff, (size_t)n * 4);
        CHECK_RC(lmk_quant_dequantize_row(t, row, n, (lmk_quant_path)p, mine), LMK_OK);
        if (memcmp(mine, ref, (size_t)n * 4) != 0) {
            int64_t i = 0;
            while (i < n && memcmp(mine + i, ref + i, 4) == 0)
                i++;
            fprintf(stderr, "%s n=%lld %s path %d: dequant differs from ggml at %lld: %.9g vs %.9g\n",
                    in.name, (long long)n, what, p, (long long)i, mine[i], ref[i]);
            st->bit_fail++;
            lmk_test_failures++;
        }
    }
    if (!dots) { /* random bytes: no bound, but the integer dots must agree across paths */
        float a[2];
        if (in.act_block == 1 || !lmk_quant_path_available(LMK_QUANT_PATH_AVX2))
            return;
        CHECK_RC(lmk_quant_act_quantize(t, x, n, act), LMK_OK);
        CHECK_RC(lmk_quant_dot_act(t, row, act, n, LMK_QUANT_PATH_PORTABLE, &a[0]), LMK_OK);
        CHECK_RC(lmk_quant_dot_act(t, row, act, n, LMK_QUANT_PATH_AVX2, &a[1]), LMK_OK);
        if (memcmp(&a[0], &a[1], 4) != 0) {
            fprintf(stderr, "%s n=%lld %s: dot_act portable %.9g != AVX2 %.9g\n", in.name,
                    (long long)n, what, a[0], a[1]);
            st->dot_fail++;
            lmk_test_failures++;
        }
        return;
    }
    double exact = 0, mag = 0, qerr = 0;
    for (int64_t i = 0; i < n; i++) {
        float gmax = 0;
        for (int64_t k = i & ~(int64_t)15; k < (i | 15) + 1 && k < n; k++)
            gmax = fmaxf(gmax, fabsf(ref[k]));
        exact += (double)ref[i] * x[i];
        mag += fabs((double)x[i]) * (fabs((double)ref[i]) + 2.0 * gmax);
    }
    double tol_f32 = ROUND_TOL * mag + 1e-30;
    /* quantizing x: |x - d q| <= d / 2 per value, d = max|x| / 127 over the act block */
    int64_t ab = in.act_block;
    for (int64_t b = 0; ab > 1 && b < n / ab; b++) {
        double amax = 0, sw = 0;
        for (int64_t i = b * ab; i < (b + 1) * ab; i++) {
            amax = fmax(amax, fabs((double)x[i]));
            sw += fabs((double)ref[i]);
        }
        qerr += amax / 254.0 * sw * (1 + 1e-5);
    }
    double mag_act = 0;
    for (int64_t i = 0; i < n; i++) /* rounding of the f32 combination, x widened by d / 2 */
        mag_act += fabs((double)ref[i]) * fabs((double)x[i]);
    double tol_act = qerr + ROUND_TOL * (mag + mag_act) + 1e-30;

    float got[2] = {0, 0}, got_act[2] = {0, 0};
    lmk_quant_path paths[2] = {LMK_QUANT_PATH_PORTABLE, LMK_QUANT_PATH_AVX2};
    int np = lmk_quant_path_available(LMK_QUANT_PATH_AVX2) ? 2 : 1;
    CHECK_RC(lmk_quant_act_quantize(t, x, n, act), LMK_OK);
    for (int p = 0; p < np; p++) {
        CHECK_RC(lmk_quant_dot_f32(t, row, x, n, paths[p], &got[p]), LMK_OK);
        CHECK_RC(lmk_quant_dot_act(t, row, act, n, paths[p], &got_act[p]), LMK_OK);
        double e = fabs(got[p] - exact), ea = fabs(got_act[p] - exact);
        st->worst_f32[p] = fmax(st->worst_f32[p], e / tol_f32);
        st->worst_act = fmax(st->worst_act, ea / tol_act);
        if (!(e <= tol_f32) || !(ea <= tol_act)) {
            fprintf(stderr,
                    "%s n=%lld %s path %d: dot_f32 %.9g, dot_act %.9g, exact %.9g; "
                    "bounds %.3g, %.3g\n",
                    in.name, (long long)n, what, (int)paths[p], got[p], got_act[p], exact,
                    tol_f32, tol_act);
            st->dot_fail++;
            lmk_test_failures++;
        }
    }
    if (np == 2 && ab > 1 && memcmp(&got_act[0], &got_act[1], 4) != 0) {
        fprintf(stderr, "%s n=%lld %s: dot_act portable %.9g != AVX2 %.9g\n", in.name,
                (long long)n, what, got_act[0], got_act[1]);
        st->dot_fail++;
        lmk_test_failures++;
    }
}

/* ggml's to_float, and for F32 (where ggml has none) a copy */
static void ref_to_float(const struct ggml_type_traits *tr, const void *row, float *y, int64_t n)
{
    if (tr->to_float)
        tr->to_float(row, y, n);
    else
        memcpy(y, row, (size_t)n * 4);
}

static int test_type(uint32_t t, uint64_t *seed)
{
    lmk_quant_info in;
    REQUIRE_OK(lmk_quant_type_info(t, &in));
    const struct ggml_type_traits *tr = g_traits((int)t);
    REQUIRE(tr && (tr->to_float || t == LMK_QUANT_F32)); /* ggml's f32 has no to_float */
    CHECK(tr->blck_size == in.block_size);
    CHECK(tr->type_size == in.type_size);
    CHECK(strcmp(tr->type_name, in.name) == 0);
    g_quantize_init((int)t);

    static const int64_t widths_k[] = {256, 512, 4096};
    static const int64_t widths[] = {32, 96, 256, 512, 4096};
    bool k = in.block_size == 256;
    const int64_t *ws = k ? widths_k : widths;
    int nw = k ? 3 : 5;
    enum { NR = 8 }; /* rows per width from ggml_quantize_chunk */
    stats st = {{0, 0}, 0, 0, 0, 0};
    for (int wi = 0; wi < nw; wi++) {
        int64_t n = ws[wi];
        size_t rs, as;
        REQUIRE_OK(lmk_quant_row_size(t, n, &rs));
        REQUIRE_OK(lmk_quant_act_size(t, n, &as));
        float *src = malloc((size_t)n * NR * 4), *ref = malloc((size_t)n * 4),
              *mine = malloc((size_t)n * 4), *x = malloc((size_t)n * 4);
        uint8_t *q = malloc(rs * NR), *one = malloc(rs), *act = malloc(as);
        REQUIRE(src && ref && mine && x && q && one && act);
        for (int r = 0; r < NR; r++)
            source_row(r, n, src + r * n, seed);
        size_t wrote = g_quantize_chunk((int)t, src, q, 0, NR, n, NULL);
        CHECK(wrote == rs * NR);
        for (int r = 0; r < NR; r++) {
            for (int64_t i = 0; i < n; i++)
                x[i] = lmk_test_uniform(seed);
            ref_to_float(tr, q + rs * r, ref, n);
            check_row(t, q + rs * r, ref, n, x, mine, act, true, &st, "ggml_quantize_chunk");
            if (tr->from_float_ref) {
                tr->from_float_ref(src + r * n, one, n);
                ref_to_float(tr, one, ref, n);
                check_row(t, one, ref, n, x, mine, act, true, &st, "from_float_ref");
            }
        }
        { /* lmk_quant_matvec over the NR rows gives each row's dot, bit for bit */
            float yv[NR], ya[NR], d1;
            for (int64_t i = 0; i < n; i++)
                x[i] = lmk_test_uniform(seed);
            CHECK_RC(lmk_quant_act_quantize(t, x, n, act), LMK_OK);
            CHECK_RC(lmk_quant_matvec(t, q, NR, n, x, NULL, LMK_QUANT_PATH_AUTO, yv), LMK_OK);
            CHECK_RC(lmk_quant_matvec(t, q, NR, n, NULL, act, LMK_QUANT_PATH_AUTO, ya), LMK_OK);
            for (int r = 0; r < NR; r++) {
                CHECK_RC(lmk_quant_dot_f32(t, q + rs * r, x, n, LMK_QUANT_PATH_AUTO, &d1), LMK_OK);
                CHECK(memcmp(&d1, &yv[r], 4) == 0);
                CHECK_RC(lmk_quant_dot_act(t, q + rs * r, act, n, LMK_QUANT_PATH_AUTO, &d1), LMK_OK);
                CHECK(memcmp(&d1, &ya[r], 4) == 0);
            }
        }
        for (int r = 0; r < 16; r++) { /* every bit pattern of the packed fields */
            random_row(t, &in, n, one, seed);
            ref_to_float(tr, one, ref, n);
            check_row(t, one, ref, n, x, mine, act, false, &st, "random bytes");
        }
        free(src), free(ref), free(mine), free(x), free(q), free(one), free(act);
    }
    printf("  %-7s block %3lld x %3zu B: %3d rows, dequant %s; dot error / bound: "
           "f32 portable %.3f, f32 AVX2 %.3f, act %.3f\n",
           in.name, (long long)in.block_size, in.type_size, st.rows,
           st.bit_fail ? "DIFFERS" : "bit-identical to ggml on both paths", st.worst_f32[0],
           st.worst_f32[1], st.worst_act);
    return 0;
}

static void test_errors(void)
{
    static const uint32_t bad[] = {9, 15, 16, 17, 18, 19, 21, 22, 29, 34, 39, 42, 4, 77};
    float x[256] = {0}, y[256];
    uint8_t row[1024] = {0};
    size_t sz;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(lmk_quant_dequantize_row(bad[i], row, 256, LMK_QUANT_PATH_AUTO, y), LMK_EUNSUPPORTED);
        const char *name = lmk_quant_type_name(bad[i]);
        CHECK(strstr(lmk_quant_errmsg(), name) != NULL);
        CHECK_RC(lmk_quant_row_size(bad[i], 256, &sz), LMK_EUNSUPPORTED);
        CHECK_RC(lmk_quant_dot_f32(bad[i], row, x, 256, LMK_QUANT_PATH_AUTO, y), LMK_EUNSUPPORTED);
    }
    CHECK(strcmp(lmk_quant_type_name(16), "iq2_xxs") == 0);
    CHECK(strcmp(lmk_quant_type_name(4), "unknown") == 0);
    CHECK_RC(lmk_quant_dequantize_row(LMK_QUANT_Q4_K, row, 128, LMK_QUANT_PATH_AUTO, y), LMK_EINVAL);
    CHECK_RC(lmk_quant_dequantize_row(LMK_QUANT_Q8_0, row, 33, LMK_QUANT_PATH_AUTO, y), LMK_EINVAL);
    CHECK_RC(lmk_quant_dequantize_row(LMK_QUANT_Q8_0, row, 0, LMK_QUANT_PATH_AUTO, y), LMK_EINVAL);
    CHECK_RC(lmk_quant_dequantize_row(LMK_QUANT_Q8_0, NULL, 32, LMK_QUANT_PATH_AUTO, y), LMK_EINVAL);
    CHECK_RC(lmk_quant_dot_f32(LMK_QUANT_Q8_0, row, x, 32, (lmk_quant_path)9, y), LMK_EINVAL);
    x[3] = NAN;
    CHECK_RC(lmk_quant_act_quantize(LMK_QUANT_Q8_0, x, 32, row), LMK_EINVAL);
    CHECK_RC(lmk_quant_row_size(LMK_QUANT_Q6_K, 512, &sz), LMK_OK);
    CHECK(sz == 420);
}

/* ---- --bench: GB/s of weights, 4096 x 4096 matrix-vector product ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench(uint64_t seed)
{
    const int64_t R = 4096, C = 4096;
    float *x = malloc(C * 4), *y = malloc(R * 4), *row = malloc(C * 4);
    REQUIRE(x && y && row);
    for (int64_t i = 0; i < C; i++)
        x[i] = lmk_test_uniform(&seed);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t t = types[ti];
        lmk_quant_info in;
        size_t rs, as;
        REQUIRE_OK(lmk_quant_type_info(t, &in));
        REQUIRE_OK(lmk_quant_row_size(t, C, &rs));
        REQUIRE_OK(lmk_quant_act_size(t, C, &as));
        uint8_t *w = malloc(rs * R), *act = malloc(as);
        REQUIRE(w && act);
        for (int64_t r = 0; r < R; r++)
            random_row(t, &in, C, w + rs * r, &seed);
        for (int p = LMK_QUANT_PATH_PORTABLE; p <= LMK_QUANT_PATH_AVX2; p++) {
            if (!lmk_quant_path_available((lmk_quant_path)p))
                continue;
            static const char *const kname[] = {"dequant", "dot_f32", "dot_act"};
            for (int kind = 0; kind < 3; kind++) {
                double best = 1e9;
                for (int rep = 0; rep < 5; rep++) {
                    double t0 = now_s();
                    if (kind == 0) { /* row by row into one cached buffer */
                        for (int64_t r = 0; r < R; r++)
                            REQUIRE_OK(lmk_quant_dequantize_row(t, w + rs * r, C,
                                                                (lmk_quant_path)p, row));
                    } else {
                        if (kind == 2)
                            REQUIRE_OK(lmk_quant_act_quantize(t, x, C, act));
                        REQUIRE_OK(lmk_quant_matvec(t, w, R, C, x, kind == 2 ? act : NULL,
                                                    (lmk_quant_path)p, y));
                    }
                    best = fmin(best, now_s() - t0);
                }
                printf("{\"bench\":\"quant_matvec\",\"type\":\"%s\",\"rows\":%lld,\"cols\":%lld,"
                       "\"path\":\"%s\",\"kernel\":\"%s\",\"ms\":%.3f,\"weight_GBps\":%.2f}\n",
                       in.name, (long long)R, (long long)C, p == 1 ? "portable" : "avx2",
                       kname[kind], best * 1e3, rs * R / best / 1e9);
            }
        }
        free(w), free(act);
    }
    free(x), free(y), free(row);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t seed = lmk_test_seed("test_quant", 20261130);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(seed) ? 1 : 0;
    test_errors(); /* needs no reference: a failure here is reported even when skipping */
    void *h = NULL;
    int rc = load_ref(&h);
    if (rc)
        return lmk_test_failures ? lmk_test_finish("test_quant", 0) : rc;
    printf("test_quant: AUTO path is %s; f32 dot bound %.0e * sum|x|(|w| + 2 max|w| in its 16);"
           " act dot bound adds sum over x blocks of max|x| / 254 * sum|w|\n",
           lmk_quant_path_auto() == LMK_QUANT_PATH_AVX2 ? "AVX2" : "portable", ROUND_TOL);
    for (size_t i = 0; i < N_TYPES; i++)
        test_type(types[i], &seed);
    g_quantize_free();
    dlclose(h);
    return lmk_test_finish("test_quant", 0);
}
