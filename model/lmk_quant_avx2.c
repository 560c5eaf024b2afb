/* landmark — AVX2 + FMA kernels of lmk_quant, compiled per function (target attribute), so
 * the rest of the build keeps its baseline ISA; lmk_quant.c calls them only after checking
 * the CPU.
 *
 * Every type has an AVX2 path: a generic one that unpacks a block to int8 (lmk_q_unpack,
 * inlined here and so compiled for AVX2 too) and multiplies with vector instructions (the f32
 * dots of all but Q4_K and Q8_0, which have fused kernels); the integer dots of every type
 * work on the packed bytes directly. The integer sums
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

/* ---- dequantization: the products formed as GGML forms them (mul, then sub; no FMA) ---- */

AVX2 static void avx2_dequant(uint32_t type, const uint8_t *row, int64_t n, int64_t bs,
                              size_t ts, float *dst)
{
    if (bs == 1) {
        int64_t i = 0;
        if (type == LMK_QUANT_F32) {
            memcpy(dst, row, (size_t)n * 4);
            return;
        }
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, f16x8_ps(type, row + 2 * i));
        for (; i < n; i++) {
            uint16_t h = (uint16_t)(row[2 * i] | (row[2 * i + 1] << 8));
            dst[i] = type == LMK_QUANT_BF16 ? lmk_bf16_to_f32(h) : h2f_f16c(h);
        }
        return;
    }
    lmk_qblk b;
    for (int64_t i = 0; i < n / bs; i++) {
        lmk_q_unpack(type, row + (size_t)i * ts, &b);
        float *y = dst + i * bs;
        for (int g = 0; g < bs / 16; g++) {
            __m256 s = _mm256_set1_ps(b.d * (float)b.sc[g]);
            __m256 w0 = _mm256_mul_ps(s, i8x8_ps(b.w + 16 * g));
            __m256 w1 = _mm256_mul_ps(s, i8x8_ps(b.w + 16 * g + 8));
            if (b.has_min) {
                __m256 m = _mm256_set1_ps(b.dmin * (float)b.mn[g]);
                w0 = _mm256_sub_ps(w0, m);
                w1 = _mm256_sub_ps(w1, m);
            }
            _mm256_storeu_ps(y + 16 * g, w0);
            _mm256_storeu_ps(y + 16 * g + 8, w1);
        }
    }
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

/* Q2_K block * Q8 activation block: 2-bit values x per-16 scales, mins from bsums */
AVX2 static inline float q2k_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    int16_t bsum[16];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 32);
    const int8_t *q = (const int8_t *)(a + 36);
    b.d = lmk_q_h(p + 80);
    b.dmin = lmk_q_h(p + 82);
    b.has_min = 1;
    const __m256i three = _mm256_set1_epi8(3);
    __m256i acc = _mm256_setzero_si256();
    int32_t summ = 0;
    for (int g = 0; g < 16; g++)
        summ += (p[g] >> 4) * bsum[g];
    for (int h = 0; h < 2; h++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * h));
        for (int j = 0; j < 4; j++) {
            __m256i u = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), three);
            __m256i pr = _mm256_maddubs_epi16(
                u, _mm256_loadu_si256((const __m256i *)(q + 128 * h + 32 * j)));
            int g = 8 * h + 2 * j;
            __m256i s = _mm256_setr_m128i(_mm_set1_epi16(p[g] & 15), _mm_set1_epi16(p[g + 1] & 15));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, s));
        }
    }
    return lmk_q_combine(&b, hsum_epi32(acc), summ, da);
}

/* Q3_K block * Q8 activation block: u = 2 low bits + 4 * high bit in 0..7, w = u - 4 */
AVX2 static inline float q3k_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    int16_t bsum[16];
    memcpy(&da, a, 4);
    memcpy(bsum, a + 4, 32);
    const int8_t *q = (const int8_t *)(a + 36);
    const uint8_t *s = p + 96;
    b.d = lmk_q_h(p + 108);
    b.has_min = 0;
    int16_t sc[16];
    int32_t corr = 0;
    for (int g = 0; g < 16; g++) {
        int lo = g < 8 ? s[g] & 15 : s[g - 8] >> 4;
        int hi = (s[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
        sc[g] = (int16_t)((lo | (hi << 4)) - 32);
        corr += sc[g] * bsum[g];
    }
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)p);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + 32 + 32 * h));
        for (int j = 0; j < 4; j++) {
            __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
            __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2 * j), three),
                                        _mm256_slli_epi16(hb, 2));
            __m256i pr = _mm256_maddubs_epi16(
                u, _mm256_loadu_si256((const __m256i *)(q + 128 * h + 32 * j)));
            int g = 8 * h + 2 * j;
            __m256i sv = _mm256_setr_m128i(_mm_set1_epi16(sc[g]), _mm_set1_epi16(sc[g + 1]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, sv));
        }
    }
    return lmk_q_combine(&b, hsum_epi32(acc) - 4 * corr, 0, da);
}

/* signed int8 w x signed int8 q (|q| <= 127), pairs summed, as int16: |w| q stays within
 * 2 * 128 * 127 < 32768, so maddubs does not saturate */
AVX2 static inline __m256i mul_s8(__m256i w, __m256i q)
{
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
}

/* the IQ4 code book in both 128-bit lanes, for pshufb */
AVX2 static inline __m256i iq4_table(void)
{
    __m128i t = _mm_loadu_si128((const __m128i *)lmk_iq4nl_values);
    return _mm256_setr_m128i(t, t);
}

/* IQ4_XS block * Q8 activation block */
AVX2 static inline float iq4xs_act(const uint8_t *p, const uint8_t *a)
{
    lmk_qblk b;
    float da;
    memcpy(&da, a, 4);
    const int8_t *q = (const int8_t *)(a + 36);
    unsigned sh = (unsigned)(p[2] | (p[3] << 8));
    b.d = lmk_q_h(p);
    b.has_min = 0;
    const __m256i tab = iq4_table();
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        int ls = ((p[4 + k / 2] >> (4 * (k % 2))) & 15) | (((sh >> (2 * k)) & 3) << 4);
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 8 + 16 * k));
        __m256i idx =
            _mm256_setr_m128i(_mm_and_si128(v, lo4), _mm_and_si128(_mm_srli_epi16(v, 4), lo4));
        __m256i w = _mm256_shuffle_epi8(tab, idx);
        __m256i pr = mul_s8(w, _mm256_loadu_si256((const __m256i *)(q + 32 * k)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, _mm256_set1_epi16((int16_t)(ls - 32))));
    }
    return lmk_q_combine(&b, hsum_epi32(acc), 0, da);
}

/* One block of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) against its activation block:
 * 8 int32 whose total, plus *corr, is the block's sumi; also the inputs of lmk_q_combine.
 * Inlined into a loop per type, so `type` is a constant there. */
AVX2 static inline __attribute__((always_inline)) __m256i
blk32_parts(uint32_t type, const uint8_t *p, const uint8_t *a, float *d, float *dmin,
            float *da, int32_t *corr, int32_t *summ)
{
    int16_t bsum[2];
    memcpy(da, a, 4);
    memcpy(bsum, a + 4, 4);
    __m256i q = _mm256_loadu_si256((const __m256i *)(a + 8));
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    *d = lmk_q_h(p);
    *corr = 0;
    *summ = -(bsum[0] + bsum[1]); /* mn = -1: "+ m" (Q4_1, Q5_1 only) */
    __m256i pr;
    if (type == LMK_QUANT_Q8_0) {
        pr = mul_s8(_mm256_loadu_si256((const __m256i *)(p + 2)), q);
    } else {
        int o = type == LMK_QUANT_Q4_1 || type == LMK_QUANT_Q5_1 ? 2 : 0;
        int five = type == LMK_QUANT_Q5_0 || type == LMK_QUANT_Q5_1;
        const uint8_t *qs = p + 2 + o + (five ? 4 : 0);
        if (o)
            *dmin = lmk_q_h(p + 2);
        __m128i v = _mm_loadu_si128((const __m128i *)qs);
        __m256i u = _mm256_setr_m128i(_mm_and_si128(v, lo4),
                                      _mm_and_si128(_mm_srli_epi16(v, 4), lo4));
        if (five) { /* bit i of qh -> bit 4 of value i */
            uint32_t qh = lmk_q_u32(p + 2 + o);
            const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                    2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
            __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
            x = _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
            u = _mm256_or_si256(u, _mm256_and_si256(x, _mm256_set1_epi8(16)));
        }
        if (type == LMK_QUANT_IQ4_NL) {
            pr = mul_s8(_mm256_shuffle_epi8(iq4_table(), u), q);
        } else {
            pr = _mm256_maddubs_epi16(u, q); /* 0..31 x int8 */
            if (type == LMK_QUANT_Q4_0)
                *corr = -8 * (bsum[0] + bsum[1]);
            else if (type == LMK_QUANT_Q5_0)
                *corr = -16 * (bsum[0] + bsum[1]);
        }
    }
    return _mm256_madd_epi16(pr, _mm256_set1_epi16(1));
}

/* Blocks of 32, eight at a time: the eight block sums reduced together, then combined
 * lane by lane with the same f32 operations as lmk_q_combine(), added in block order. */
AVX2 static inline __attribute__((always_inline)) double
act32_row(uint32_t type, const uint8_t *row, const uint8_t *act, int64_t nb, size_t ts)
{
    const size_t as = lmk_q_act_stride(32);
    const int has_min = type == LMK_QUANT_Q4_1 || type == LMK_QUANT_Q5_1;
    double sum = 0;
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i pt[8];
        float d[8], dm[8] = {0}, da[8];
        int32_t corr[8], summ[8];
        for (int k = 0; k < 8; k++)
            pt[k] = blk32_parts(type, row + (size_t)(i + k) * ts, act + (size_t)(i + k) * as,
                                &d[k], &dm[k], &da[k], &corr[k], &summ[k]);
        __m256i t0 = _mm256_hadd_epi32(pt[0], pt[1]), t1 = _mm256_hadd_epi32(pt[2], pt[3]);
        __m256i t2 = _mm256_hadd_epi32(pt[4], pt[5]), t3 = _mm256_hadd_epi32(pt[6], pt[7]);
        __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
        __m256i si = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                                      _mm256_permute2x128_si256(u0, u1, 0x31));
        si = _mm256_add_epi32(si, _mm256_loadu_si256((const __m256i *)corr));
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(d), _mm256_cvtepi32_ps(si));
        if (has_min)
            v = _mm256_sub_ps(v, _mm256_mul_ps(_mm256_loadu_ps(dm),
                             _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)summ))));
        v = _mm256_mul_ps(_mm256_loadu_ps(da), v);
        float r[8];
        _mm256_storeu_ps(r, v);
        for (int k = 0; k < 8; k++)
            sum += r[k];
    }
    for (; i < nb; i++) {
        lmk_qblk b;
        float da;
        int32_t corr, summ;
        __m256i pt = blk32_parts(type, row + (size_t)i * ts, act + (size_t)i * as, &b.d,
                                 &b.dmin, &da, &corr, &summ);
        b.has_min = has_min;
        sum += lmk_q_combine(&b, hsum_epi32(pt) + corr, summ, da);
    }
    return sum;
}

AVX2 static void avx2_dot_act(uint32_t type, const uint8_t *row, const uint8_t *act, int64_t n,
                              int64_t bs, size_t ts, float *out)
{
    size_t as = lmk_q_act_stride(bs);
    int64_t nb = n / bs;
    double sum = 0;
    switch (type) { /* a constant type in each call, so each loop is specialized */
    case LMK_QUANT_Q4_0: sum = act32_row(LMK_QUANT_Q4_0, row, act, nb, ts); break;
    case LMK_QUANT_Q4_1: sum = act32_row(LMK_QUANT_Q4_1, row, act, nb, ts); break;
    case LMK_QUANT_Q5_0: sum = act32_row(LMK_QUANT_Q5_0, row, act, nb, ts); break;
    case LMK_QUANT_Q5_1: sum = act32_row(LMK_QUANT_Q5_1, row, act, nb, ts); break;
    case LMK_QUANT_Q8_0: sum = act32_row(LMK_QUANT_Q8_0, row, act, nb, ts); break;
    case LMK_QUANT_IQ4_NL: sum = act32_row(LMK_QUANT_IQ4_NL, row, act, nb, ts); break;
    default:
        for (int64_t i = 0; i < nb; i++) {
            const uint8_t *p = row + (size_t)i * ts, *a = act + (size_t)i * as;
            switch (type) {
            case LMK_QUANT_Q2_K: sum += q2k_act(p, a); break;
            case LMK_QUANT_Q3_K: sum += q3k_act(p, a); break;
            case LMK_QUANT_Q4_K: sum += q4k_act(p, a); break;
            case LMK_QUANT_Q5_K: sum += q5k_act(p, a); break;
            case LMK_QUANT_Q6_K: sum += q6k_act(p, a); break;
            case LMK_QUANT_IQ4_XS: sum += iq4xs_act(p, a); break;
            default: { /* not reached: every quantized type has a kernel above */
                lmk_qblk b;
                float da;
                int16_t bsum[16];
                int ng = (int)(bs / 16);
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
        }
    }
    *out = (float)sum;
}

static const lmk_q_kernels avx2_kernels = {avx2_dequant, avx2_dot_f32, avx2_dot_act};

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
