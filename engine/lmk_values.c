/* Stored values: f32 rows encoded to the session's dtype (f16 or f32) and back. Decoding
 * retrieved blocks is on the decode path. */
#include <stdint.h>
#include <string.h>

#include "lmk_f16.h"
#include "lmk_internal.h"

void lmk_values_encode(const lmk_session *s, const float *src, size_t n, void *dst)
{
    if (s->dtype == LMK_DTYPE_F16)
        lmk_f32_to_f16_n(src, dst, n);
    else
        memcpy(dst, src, n * 4);
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
#endif

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
        for (size_t i = 0; i < n; i++)
            dst[i] = lmk_f16_to_f32(lmk_f32_to_f16(src[i]));
    } else {
        memcpy(dst, src, n * 4);
    }
}

