/* landmark base — e^x over arrays (lmk_vexp.h). e^x = 2^t * e^r with t an integer near
 * x log2 e and r = x - t ln 2 (ln 2 split in two so that t ln 2 is exact in its high part),
 * e^r by the minimax polynomial of degree 6 on |r| <= ln 2 / 2 that Cephes' expf uses (its
 * published coefficients), 2^t built in the exponent field. Three paths, chosen once per
 * process: eight lanes with AVX2 and FMA (masked loads for the last partial group, so every
 * element takes the same path), four lanes with SSE2 (every x86-64 CPU), and a portable one
 * that does the SSE2 path's operations element by element (the same bits; no FMA is enabled
 * for this file outside the AVX2 functions). The AVX2 path rounds differently (fused
 * multiply-adds): each path is within 2 ulp of the exact value (tests/test_vexp.c), and a
 * process uses one path for every call, so results never depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_vexp.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#define LMK_VEXP_SSE2 1
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdatomic.h>
#define LMK_VEXP_AVX2 1
#define AVX2 __attribute__((target("avx2,fma")))
#endif

#define EXP_HI 88.72283935546875f   /* above: +inf (the largest x with a finite expf) */
#define EXP_LO -87.33654022216797f  /* below: 0 (where expf's result leaves the normal range) */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f         /* ln 2 = LN2_HI + LN2_LO; t * LN2_HI is exact */
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f

static inline float exp_one(float x)
{
    if (x != x)
        return x;
    if (x > EXP_HI)
        return INFINITY;
    if (x < EXP_LO)
        return 0.0f;
    float fx = x * LOG2E + 0.5f;
    float t = (float)(int32_t)fx; /* truncation, then floor */
    if (t > fx)
        t -= 1.0f;
    float r = x - t * LN2_HI;
    r = r - t * LN2_LO;
    float r2 = r * r;
    float p = P0;
    p = p * r + P1;
    p = p * r + P2;
    p = p * r + P3;
    p = p * r + P4;
    p = p * r + P5;
    p = p * r2 + r + 1.0f;
    /* t reaches 128 just below EXP_HI: 2^127 in the exponent field, the last factor 2 apart */
    float extra = t > 127.0f ? 2.0f : 1.0f;
    int32_t n = (int32_t)(t > 127.0f ? 127.0f : t) + 127;
    uint32_t bits = (uint32_t)n << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * extra * scale;
}

#ifdef LMK_VEXP_SSE2
static inline __m128 exp_four(__m128 x)
{
    const __m128 one = _mm_set1_ps(1.0f);
    __m128 nan = _mm_cmpunord_ps(x, x);
    __m128 over = _mm_cmpgt_ps(x, _mm_set1_ps(EXP_HI));
    __m128 under = _mm_cmplt_ps(x, _mm_set1_ps(EXP_LO));
    __m128 xc = _mm_min_ps(_mm_max_ps(x, _mm_set1_ps(EXP_LO)), _mm_set1_ps(EXP_HI));
    __m128 fx = _mm_add_ps(_mm_mul_ps(xc, _mm_set1_ps(LOG2E)), _mm_set1_ps(0.5f));
    __m128 t = _mm_cvtepi32_ps(_mm_cvttps_epi32(fx));
    t = _mm_sub_ps(t, _mm_and_ps(_mm_cmpgt_ps(t, fx), one));
    __m128 r = _mm_sub_ps(xc, _mm_mul_ps(t, _mm_set1_ps(LN2_HI)));
    r = _mm_sub_ps(r, _mm_mul_ps(t, _mm_set1_ps(LN2_LO)));
    __m128 r2 = _mm_mul_ps(r, r);
    __m128 p = _mm_set1_ps(P0);
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(P1));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(P2));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(P3));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(P4));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(P5));
    p = _mm_add_ps(_mm_add_ps(_mm_mul_ps(p, r2), r), one);
    __m128 big = _mm_cmpgt_ps(t, _mm_set1_ps(127.0f));
    __m128 extra = _mm_add_ps(one, _mm_and_ps(big, one));
    __m128 tc = _mm_min_ps(t, _mm_set1_ps(127.0f));
    __m128i n = _mm_add_epi32(_mm_cvttps_epi32(tc), _mm_set1_epi32(127));
    __m128 scale = _mm_castsi128_ps(_mm_slli_epi32(n, 23));
    __m128 y = _mm_mul_ps(_mm_mul_ps(p, extra), scale);
    y = _mm_or_ps(_mm_andnot_ps(over, y), _mm_and_ps(over, _mm_set1_ps(INFINITY)));
    y = _mm_andnot_ps(under, y);
    return _mm_or_ps(_mm_andnot_ps(nan, y), _mm_and_ps(nan, x));
}
#endif

#ifdef LMK_VEXP_AVX2
AVX2 static inline __m256 exp_eight(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 t = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(t, _mm256_set1_ps(LN2_HI), xc);
    r = _mm256_fnmadd_ps(t, _mm256_set1_ps(LN2_LO), r);
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), one);
    __m256 big = _mm256_cmp_ps(t, _mm256_set1_ps(127.0f), _CMP_GT_OQ);
    __m256 extra = _mm256_add_ps(one, _mm256_and_ps(big, one));
    __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_min_ps(t, _mm256_set1_ps(127.0f))),
                                 _mm256_set1_epi32(127));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, extra), _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, x, nan);
}

/* lanes [0, m) of a group of eight */
AVX2 static inline __m256i lane_mask(int64_t m)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AVX2 static double exp_shift_avx2(float *y, const float *x, int64_t n, float shift)
{
    __m256 sh = _mm256_set1_ps(shift);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (int64_t i = 0; i < n; i += 8) {
        __m256 e;
        if (n - i >= 8) {
            e = exp_eight(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
            _mm256_storeu_ps(y + i, e);
        } else { /* the lanes past n read nothing, are set to 0 and are not stored */
            __m256i m = lane_mask(n - i);
            e = exp_eight(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), sh));
            e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
            _mm256_maskstore_ps(y + i, m, e);
        }
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double a[8];
    _mm256_storeu_pd(a, lo);
    _mm256_storeu_pd(a + 4, hi);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

AVX2 static void silu_mul_avx2(float *y, const float *x, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        if (n - i >= 8) {
            __m256 g = _mm256_loadu_ps(x + i);
            __m256 e = exp_eight(_mm256_sub_ps(zero, g));
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)),
                                                  _mm256_loadu_ps(u + i)));
        } else {
            __m256i m = lane_mask(n - i);
            __m256 g = _mm256_maskload_ps(x + i, m);
            __m256 e = exp_eight(_mm256_sub_ps(zero, g));
            _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)),
                                                        _mm256_maskload_ps(u + i, m)));
        }
    }
}
#endif

/* 0 auto, 1 portable, 2 SSE2, 3 AVX2 (lmk_vexp_force_path, for tests) */
static int forced_path;

static int use_avx2(void)
{
#ifdef LMK_VEXP_AVX2
    static _Atomic int cached = -1;
    if (forced_path)
        return forced_path == 3;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
#else
    return 0;
#endif
}

LMK_API double lmk_exp_shift(float *y, const float *x, int64_t n, float shift)
{
    if (n <= 0)
        return 0;
#ifdef LMK_VEXP_AVX2
    if (use_avx2())
        return exp_shift_avx2(y, x, n, shift);
#endif
    /* four double partial sums (element i into sum i mod 4), then the tail: the same order
     * on the SSE2 and the portable path */
    double acc[4] = {0, 0, 0, 0}, tail = 0;
    int64_t i = 0;
#ifdef LMK_VEXP_SSE2
    if (forced_path != 1) {
        __m128 sh = _mm_set1_ps(shift);
        __m128d lo = _mm_setzero_pd(), hi = _mm_setzero_pd();
        for (; i + 4 <= n; i += 4) {
            __m128 e = exp_four(_mm_sub_ps(_mm_loadu_ps(x + i), sh));
            _mm_storeu_ps(y + i, e);
            lo = _mm_add_pd(lo, _mm_cvtps_pd(e));
            hi = _mm_add_pd(hi, _mm_cvtps_pd(_mm_movehl_ps(e, e)));
        }
        _mm_storeu_pd(acc, lo);
        _mm_storeu_pd(acc + 2, hi);
    }
#endif
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            y[i + j] = exp_one(x[i + j] - shift);
            acc[j] += y[i + j];
        }
    for (; i < n; i++) {
        y[i] = exp_one(x[i] - shift);
        tail += y[i];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
}

LMK_API void lmk_silu_mul(float *y, const float *x, const float *u, int64_t n)
{
    int64_t i = 0;
#ifdef LMK_VEXP_AVX2
    if (use_avx2()) {
        silu_mul_avx2(y, x, u, n);
        return;
    }
#endif
#ifdef LMK_VEXP_SSE2
    const __m128 one = _mm_set1_ps(1.0f), zero = _mm_setzero_ps();
    for (; forced_path != 1 && i + 4 <= n; i += 4) {
        __m128 g = _mm_loadu_ps(x + i);
        __m128 e = exp_four(_mm_sub_ps(zero, g));
        _mm_storeu_ps(y + i, _mm_mul_ps(_mm_div_ps(g, _mm_add_ps(one, e)), _mm_loadu_ps(u + i)));
    }
#endif
    for (; i < n; i++) {
        float g = x[i];
        y[i] = g / (1.0f + exp_one(0.0f - g)) * u[i];
    }
}

/* The portable path for one element, for tests comparing it with the vector path. */
LMK_INTERNAL float lmk_vexp_portable(float x);
LMK_INTERNAL float lmk_vexp_portable(float x)
{
    return exp_one(x);
}

/* Forces a path for every later call (0 auto, 1 portable, 2 SSE2, 3 AVX2); returns 0, or -1
 * when this CPU or build lacks it. Not thread-safe: for tests only. */
LMK_INTERNAL int lmk_vexp_force_path(int path);
LMK_INTERNAL int lmk_vexp_force_path(int path)
{
    if (path < 0 || path > 3)
        return -1;
#ifndef LMK_VEXP_SSE2
    if (path == 2)
        return -1;
#endif
    if (path == 3) {
        forced_path = 0;
        if (!use_avx2())
            return -1;
    }
    forced_path = path;
    return 0;
}
