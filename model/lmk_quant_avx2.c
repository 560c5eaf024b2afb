/* landmark — AVX2 + FMA kernels of lmk_quant, compiled per function (target attribute), so
 * the rest of the build keeps its baseline ISA; lmk_quant.c calls them only after checking
 * the CPU.
 *
 * Every type has an AVX2 path: a generic one that unpacks a block to int8 (lmk_q_unpack,
 * inlined here and so compiled for AVX2 too) and multiplies with vector instructions; fused
 * kernels work on the packed bytes directly for Q4_K and Q8_0 (f32 and integer dots) and
 * Q5_K, Q6_K, Q4_0 (integer dots). The integer sums
 * of dot_act are exact, and are combined by lmk_q_combine() exactly as the portable path
 * does, so both paths give the same float there. */
#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <stdint.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* F16C's conversion (exact, as lmk_f16_to_f32, without its branches): every CPU with AVX2
 * has F16C, and lmk_quant.c checks for it too. */
AVX2 static inline float h2f_f16c(uint16_t h)
{
    return _cvtsh_ss(h);
}
#define LMK_Q_H2F h2f_f16c

#include "lmk_quant_impl.h"

AVX2 static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 8 int8 at p -> 8 f32 */
AVX2 static inline __m256 i8x8_ps(const int8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* ---- f32 dot ---- */

/* acc += dequantized block b (nv values) * x */
AVX2 static inline __m256 blk_fma(const lmk_qblk *b, int nv, const float *x, __m256 acc)
{
    for (int g = 0; g < nv / 16; g++) {
        __m256 s = _mm256_set1_ps(b->d * (float)b->sc[g]);
        __m256 w0 = i8x8_ps(b->w + 16 * g), w1 = i8x8_ps(b->w + 16 * g + 8);
        __m256 y0, y1;
        if (b->has_min) {
            __m256 m = _mm256_set1_ps(b->dmin * (float)b->mn[g]);
            y0 = _mm256_fmsub_ps(s, w0, m);
            y1 = _mm256_fmsub_ps(s, w1, m);
        } else {
            y0 = _mm256_mul_ps(s, w0);
            y1 = _mm256_mul_ps(s, w1);
        }
        acc = _mm256_fmadd_ps(y0, _mm256_loadu_ps(x + 16 * g), acc);
        acc = _mm256_fmadd_ps(y1, _mm256_loadu_ps(x + 16 * g + 8), acc);
    }
    return acc;
}

/* Q4_K block (144 bytes) * x[256] added to acc */
AVX2 static inline __m256 q4k_fma(const uint8_t *p, const float *x, __m256 acc)
{
    float d = lmk_q_h(p), dmin = lmk_q_h(p + 2);
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int j = 0; j < 4; j++) {
        int sc0, mn0, sc1, mn1;
        lmk_q_k4_scale(p + 4, 2 * j, &sc0, &mn0);
        lmk_q_k4_scale(p + 4, 2 * j + 1, &sc1, &mn1);
        __m256 s0 = _mm256_set1_ps(d * (float)sc0), m0 = _mm256_set1_ps(dmin * (float)mn0);
        __m256 s1 = _mm256_set1_ps(d * (float)sc1), m1 = _mm256_set1_ps(dmin * (float)mn1);
        const float *xj = x + 64 * j;
        for (int h = 0; h < 2; h++) { /* 16 bytes: values 64j + 16h.. (lo), +32 (hi) */
            __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 + 32 * j + 16 * h));
            __m128i lo = _mm_and_si128(v, lo4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
            __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            __m256 e = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            acc = _mm256_fmadd_ps(_mm256_fmsub_ps(s0, a, m0), _mm256_loadu_ps(xj + 16 * h), acc);
            acc = _mm256_fmadd_ps(_mm256_fmsub_ps(s0, b, m0), _mm256_loadu_ps(xj + 16 * h + 8), acc);
            acc = _mm256_fmadd_ps(_mm256_fmsub_ps(s1, c, m1), _mm256_loadu_ps(xj + 32 + 16 * h), acc);
            acc = _mm256_fmadd_ps(_mm256_fmsub_ps(s1, e, m1),
                                  _mm256_loadu_ps(xj + 32 + 16 * h + 8), acc);
        }
    }
    return acc;
}

/* Q8_0 block (34 bytes) * x[32] added to acc */
AVX2 static inline __m256 q80_fma(const uint8_t *p, const float *x, __m256 acc)
{
    __m256 d = _mm256_set1_ps(lmk_q_h(p));
    const int8_t *q = (const int8_t *)(p + 2);
    for (int k = 0; k < 32; k += 8)
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8_ps(q + k)), _mm256_loadu_ps(x + k), acc);
    return acc;
}

/* 8 halves / bfloat16s at p -> 8 f32 */
AVX2 static inline __m256 f16x8_ps(uint32_t type, const uint8_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (type == LMK_QUANT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

AVX2 static void avx2_dot_f32(uint32_t type, const uint8_t *row, const float *x, int64_t n,
                              int64_t bs, size_t ts, float *out)
{
    double sum = 0;
    if (bs == 1) { /* F32/F16/BF16: f32 lanes over chunks of 256, then the tail */
        size_t es = ts;
        int64_t i = 0;
        while (i < n) {
            int64_t end = n - i < 256 ? n : i + 256;
            __m256 acc = _mm256_setzero_ps();
            float tail = 0;
            for (; i + 8 <= end; i += 8) {
                __m256 w = type == LMK_QUANT_F32 ? _mm256_loadu_ps((const float *)(row + 4 * i))
                                                 : f16x8_ps(type, row + es * i);
                acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), acc);
            }
            for (; i < end; i++) {
                float w;
                if (type == LMK_QUANT_F32)
                    memcpy(&w, row + 4 * i, 4);
                else {
                    uint16_t h = (uint16_t)(row[2 * i] | (row[2 * i + 1] << 8));
                    w = type == LMK_QUANT_BF16 ? lmk_bf16_to_f32(h) : h2f_f16c(h);
                }
                tail += w * x[i];
            }
            sum += (double)hsum_ps(acc) + tail;
        }
        *out = (float)sum;
        return;
    }
    int64_t nb = n / bs, per = 256 / bs; /* blocks per f32 chunk of 256 values */
    lmk_qblk b;
    for (int64_t i = 0; i < nb; i += per) {
        int64_t end = nb - i < per ? nb : i + per;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t k = i; k < end; k++) {
            const uint8_t *p = row + (size_t)k * ts;
            const float *xk = x + k * bs;
            if (type == LMK_QUANT_Q4_K) {
                acc = q4k_fma(p, xk, acc);
            } else if (type == LMK_QUANT_Q8_0) {
                acc = q80_fma(p, xk, acc);
            } else {
                lmk_q_unpack(type, p, &b);
                acc = blk_fma(&b, (int)bs, xk, acc);
            }
        }
        sum += hsum_ps(acc);
    }
    *out = (float)sum;
}

/* ---- integer dot with a quantized activation ---- */

/* sum over the 16 groups of 16 of sc[g] * sum_k w[16g + k] * q[16g + k], ng groups */
AVX2 static inline int32_t blk_isum(const lmk_qblk *b, const int8_t *q, int ng)
{
    __m256i acc = _mm256_setzero_si256();
    for (int g = 0; g < ng; g++) {
        __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b->w + 16 * g)));
        __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 16 * g)));
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_madd_epi16(w, a),
                                                       _mm256_set1_epi32(b->sc[g])));
    }
    return hsum_epi32(acc);
}

/* Q4_K block * Q8 activation block: sumi over the packed nibbles, summ from bsums */
AVX2 static inline float q4k_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b; /* only d, dmin, has_min are used: lmk_q_combine's inputs */
    float da;
    int16_t bsum[16];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 32);
    const int8_t *q = (const int8_t *)(a + 36);
    b.d = lmk_q_h(p);
    b.dmin = lmk_q_h(p + 2);
    b.has_min = 1;
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256i acc = _mm256_setzero_si256();
    int32_t summ = 0;
    for (int j = 0; j < 4; j++) {
        int sc0, mn0, sc1, mn1;
        lmk_q_k4_scale(p + 4, 2 * j, &sc0, &mn0);
        lmk_q_k4_scale(p + 4, 2 * j + 1, &sc1, &mn1);
        summ += mn0 * (bsum[4 * j] + bsum[4 * j + 1]) + mn1 * (bsum[4 * j + 2] + bsum[4 * j + 3]);
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * j));
        __m256i lo = _mm256_and_si256(v, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
        /* unsigned nibble x signed int8, pairs summed: |.| <= 2 * 15 * 127, no saturation */
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(q + 64 * j)));
        __m256i phi =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q + 64 * j + 32)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(plo, _mm256_set1_epi16((int16_t)sc0)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(phi, _mm256_set1_epi16((int16_t)sc1)));
    }
    return lmk_q_combine(&b, hsum_epi32(acc), summ, da);
}

/* Q8_0 block * Q8 activation block of 32 */
AVX2 static inline float q80_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    memcpy(&da, a, 4);
    b.d = lmk_q_h(p);
    b.has_min = 0;
    const __m128i *w = (const __m128i *)(p + 2), *q = (const __m128i *)(a + 8);
    __m256i s = _mm256_add_epi32(
        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(w)),
                          _mm256_cvtepi8_epi16(_mm_loadu_si128(q))),
        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(w + 1)),
                          _mm256_cvtepi8_epi16(_mm_loadu_si128(q + 1))));
    return lmk_q_combine(&b, hsum_epi32(s), 0, da);
}

/* Q5_K block * Q8 activation block: as Q4_K, the fifth bits from qh */
AVX2 static inline float q5k_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    int16_t bsum[16];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 32);
    const int8_t *q = (const int8_t *)(a + 36);
    b.d = lmk_q_h(p);
    b.dmin = lmk_q_h(p + 2);
    b.has_min = 1;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 16));
    __m256i acc = _mm256_setzero_si256();
    int32_t summ = 0;
    for (int j = 0; j < 4; j++) {
        int sc0, mn0, sc1, mn1;
        lmk_q_k4_scale(p + 4, 2 * j, &sc0, &mn0);
        lmk_q_k4_scale(p + 4, 2 * j + 1, &sc1, &mn1);
        summ += mn0 * (bsum[4 * j] + bsum[4 * j + 1]) + mn1 * (bsum[4 * j + 2] + bsum[4 * j + 3]);
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 48 + 32 * j));
        /* bit 2j (2j + 1) of each qh byte, moved to bit 4; 16-bit shifts, masked per byte */
        __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4);
        __m256i h1 =
            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4);
        __m256i lo = _mm256_or_si256(_mm256_and_si256(v, lo4), h0);
        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4), h1);
        /* values 0..31 x int8: |pair| <= 2 * 31 * 127 */
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(q + 64 * j)));
        __m256i phi =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q + 64 * j + 32)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(plo, _mm256_set1_epi16((int16_t)sc0)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(phi, _mm256_set1_epi16((int16_t)sc1)));
    }
    return lmk_q_combine(&b, hsum_epi32(acc), summ, da);
}

/* Q6_K block * Q8 activation block: unsigned 6-bit u = w + 32, so
 * sum sc * w * q = sum sc * u * q - 32 * sum sc * bsum */
AVX2 static inline float q6k_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    int16_t bsum[16];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 32);
    const int8_t *q = (const int8_t *)(a + 36), *sc = (const int8_t *)(p + 192);
    b.d = lmk_q_h(p + 208);
    b.has_min = 0;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
    __m256i acc = _mm256_setzero_si256();
    int32_t corr = 0;
    for (int g = 0; g < 16; g++)
        corr += sc[g] * bsum[g];
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        __m256i u[4];
        u[0] = _mm256_and_si256(l0, lo4);
        u[1] = _mm256_and_si256(l1, lo4);
        u[2] = _mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4);
        u[3] = _mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4);
        for (int k = 0; k < 4; k++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), three);
            __m256i v = _mm256_or_si256(u[k], _mm256_slli_epi16(hi, 4));
            /* 0..63 x int8: |pair| <= 2 * 63 * 127 */
            __m256i pr = _mm256_maddubs_epi16(
                v, _mm256_loadu_si256((const __m256i *)(q + 128 * h + 32 * k)));
            int g = 8 * h + 2 * k; /* bytes 0..15: group g, 16..31: group g + 1 */
            __m256i s = _mm256_setr_m128i(_mm_set1_epi16(sc[g]), _mm_set1_epi16(sc[g + 1]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, s));
        }
    }
    return lmk_q_combine(&b, hsum_epi32(acc) - 32 * corr, 0, da);
}

/* Q4_0 block * Q8 activation block of 32: w = u - 8 */
AVX2 static inline float q40_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    int16_t bsum[2];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 4);
    b.d = lmk_q_h(p);
    b.has_min = 0;
    __m128i v = _mm_loadu_si128((const __m128i *)(p + 2)), lo4 = _mm_set1_epi8(0x0f);
    __m256i u = _mm256_setr_m128i(_mm_and_si128(v, lo4), _mm_and_si128(_mm_srli_epi16(v, 4), lo4));
    __m256i pr = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(a + 8)));
    int32_t s = hsum_epi32(_mm256_madd_epi16(pr, _mm256_set1_epi16(1)));
    return lmk_q_combine(&b, s - 8 * (bsum[0] + bsum[1]), 0, da);
}

AVX2 static void avx2_dot_act(uint32_t type, const uint8_t *row, const uint8_t *act, int64_t n,
                              int64_t bs, size_t ts, float *out)
{
    size_t as = lmk_q_act_stride(bs);
    int ng = (int)(bs / 16);
    double sum = 0;
    lmk_qblk b;
    for (int64_t i = 0; i < n / bs; i++) {
        const uint8_t *p = row + (size_t)i * ts, *a = act + (size_t)i * as;
        if (type == LMK_QUANT_Q4_K) {
            sum += q4k_act(p, a);
        } else if (type == LMK_QUANT_Q8_0) {
            sum += q80_act(p, a);
        } else if (type == LMK_QUANT_Q6_K) {
            sum += q6k_act(p, a);
        } else if (type == LMK_QUANT_Q5_K) {
            sum += q5k_act(p, a);
        } else if (type == LMK_QUANT_Q4_0) {
            sum += q40_act(p, a);
        } else {
            float da;
            int16_t bsum[16];
            memcpy(&da, a, 4);
            memcpy(bsum, a + 4, 2 * (size_t)ng);
            lmk_q_unpack(type, p, &b);
            int32_t summ = 0;
            for (int g = 0; b.has_min && g < ng; g++)
                summ += (int32_t)b.mn[g] * bsum[g];
            sum += lmk_q_combine(&b, blk_isum(&b, (const int8_t *)(a + 4 + 2 * ng), ng),
                                 summ, da);
        }
    }
    *out = (float)sum;
}

static const lmk_q_kernels avx2_kernels = {avx2_dot_f32, avx2_dot_act};

LMK_INTERNAL const lmk_q_kernels *lmk_q_kernels_avx2(void)
{
    return &avx2_kernels;
}

#else

#include "lmk_quant_impl.h"

LMK_INTERNAL const lmk_q_kernels *lmk_q_kernels_avx2(void)
{
    return NULL;
}

#endif
