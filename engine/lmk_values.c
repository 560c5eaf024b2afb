/* Stored values: f32 rows encoded to the session's dtype (f16 or f32) and back. Decoding
 * retrieved blocks is on the decode path. */
#include <stdint.h>
#include <string.h>

#include "lmk_f16.h"
#include "lmk_internal.h"

/* f32 -> f16 -> f32, round to nearest even: what an f16 session stores. */
static void round_portable(const float *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lmk_f16_to_f32(lmk_f32_to_f16(src[i]));
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* Decoding retrieved blocks is on the decode path: use the F16C instruction when the CPU has
 * it (bit-identical to the portable conversion: half to single is exact). */
__attribute__((target("f16c,avx"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst,
                                                               size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = lmk_f16_to_f32(src[i]);
}
/* Encoding appended keys and values: F16C rounds to nearest even like lmk_f32_to_f16,
 * subnormals included; only a NaN's payload would differ, so a group of eight holding a NaN
 * takes the portable conversion (the stored bits never depend on the CPU). */
__attribute__((target("f16c,avx"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst,
                                                               size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) {
            lmk_f32_to_f16_n(src + i, dst + i, 8);
            continue;
        }
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
    lmk_f32_to_f16_n(src + i, dst + i, n - i);
}

/* f32 -> f16 -> f32, as above */
__attribute__((target("f16c,avx"))) static void round_f16c(const float *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) {
            round_portable(src + i, dst + i, 8);
            continue;
        }
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)));
    }
    round_portable(src + i, dst + i, n - i);
}
#include <cpuid.h>
static int have_f16c(void)
{
    /* cpuid directly: not every compiler's __builtin_cpu_supports knows "f16c" */
    /* atomic: sessions on several threads may ask first at once (they store the same) */
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a, b, c, d;
        v = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && (c & bit_AVX) &&
            (c & bit_OSXSAVE) && __builtin_cpu_supports("avx");
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#else
static int have_f16c(void)
{
    return 0;
}
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    lmk_f16_to_f32_n(src, dst, n);
}
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    lmk_f32_to_f16_n(src, dst, n);
}
static void round_f16c(const float *src, float *dst, size_t n)
{
    round_portable(src, dst, n);
}
#endif

void lmk_values_encode(const lmk_session *s, const float *src, size_t n, void *dst)
{
    if (s->dtype == LMK_DTYPE_F16) {
        if (have_f16c())
            f32_to_f16_f16c(src, dst, n);
        else
            lmk_f32_to_f16_n(src, dst, n);
    } else {
        memcpy(dst, src, n * 4);
    }
}

void lmk_values_decode(const lmk_session *s, const void *src, size_t n, float *dst)
{
    if (s->dtype == LMK_DTYPE_F16) {
        if (have_f16c())
            f16_to_f32_f16c(src, dst, n);
        else
            lmk_f16_to_f32_n(src, dst, n);
    } else {
        memcpy(dst, src, n * 4);
    }
}

void lmk_values_round(const lmk_session *s, const float *src, size_t n, float *dst)
{
    if (s->dtype == LMK_DTYPE_F16) {
        if (have_f16c())
            round_f16c(src, dst, n);
        else
            round_portable(src, dst, n);
    } else {
        memcpy(dst, src, n * 4);
    }
}

