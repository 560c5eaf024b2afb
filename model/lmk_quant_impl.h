/* landmark — private to lmk_quant*.c: GGML block layouts unpacked into one common form.
 *
 * Every supported quantized block, whatever its packing, decodes to
 *     value[i] = (d * sc[g]) * w[i]  -  (dmin * mn[g])        g = i / 16
 * with small integers w (int8), sc and mn (per group of 16 values) and two f32 scales. The
 * products are formed in that order, in f32, which is exactly how GGML's dequantize_row_*
 * form them, so dequantization through this form is bit-identical to GGML's. (Q4_1/Q5_1's
 * "+ m" is "- (m * -1)", the same float.) The dot products use the same integers.
 *
 * Byte offsets below are those of the structs in ggml/src/ggml-common.h (no padding).
 */
#ifndef LMK_QUANT_IMPL_H
#define LMK_QUANT_IMPL_H

#include <stdint.h>
#include <string.h>

/* The paths agree bit for bit only if no compiler fuses a * b - c into one FMA behind our
 * back: GCC does not in ISO C mode (the build's -std=c11); clang must be told. */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "lmk_export.h"
#include "lmk_f16.h"
#include "lmk_quant.h"

typedef struct {
    float d, dmin;
    int has_min; /* 0: the "- dmin * mn" term is absent (not merely zero) */
    int8_t w[256];
    int16_t sc[16];
    int16_t mn[16];
} lmk_qblk;

/* IQ4_NL / IQ4_XS non-linear 4-bit code book (GGML's kvalues_iq4nl). */
static const int8_t lmk_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

/* f16 -> f32, exact; a file may define LMK_Q_H2F (e.g. to a hardware conversion) first. */
#ifndef LMK_Q_H2F
#define LMK_Q_H2F lmk_f16_to_f32
#endif

static inline float lmk_q_h(const uint8_t *p)
{
    return LMK_Q_H2F((uint16_t)(p[0] | (p[1] << 8)));
}

static inline uint32_t lmk_q_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q4_K / Q5_K: 8 pairs (scale, min) of 6 bits packed in 12 bytes; k = sub-block of 32. */
static inline void lmk_q_k4_scale(const uint8_t *s, int k, int *sc, int *mn)
{
    if (k < 4) {
        *sc = s[k] & 63;
        *mn = s[k + 4] & 63;
    } else {
        *sc = (s[k + 4] & 15) | ((s[k - 4] >> 6) << 4);
        *mn = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
    }
}

/* Blocks of 32: two groups with sc = 1. */
static inline void lmk_q_unpack32_common(lmk_qblk *b)
{
    b->sc[0] = b->sc[1] = 1;
    b->mn[0] = b->mn[1] = -1; /* used by the types with "+ m" only */
}

/* Decode one block of `type` at p into b. The caller has checked the type. */
static inline void lmk_q_unpack(uint32_t type, const uint8_t *p, lmk_qblk *b)
{
    switch (type) {
    case LMK_QUANT_Q4_0: /* d | qs[16]: low nibbles are values 0..15, high 16..31; q - 8 */
        b->d = lmk_q_h(p);
        b->has_min = 0;
        for (int j = 0; j < 16; j++) {
            b->w[j] = (int8_t)((p[2 + j] & 15) - 8);
            b->w[j + 16] = (int8_t)((p[2 + j] >> 4) - 8);
        }
        lmk_q_unpack32_common(b);
        break;
    case LMK_QUANT_Q4_1: /* d | m | qs[16]; q * d + m */
        b->d = lmk_q_h(p);
        b->dmin = lmk_q_h(p + 2);
        b->has_min = 1;
        for (int j = 0; j < 16; j++) {
            b->w[j] = (int8_t)(p[4 + j] & 15);
            b->w[j + 16] = (int8_t)(p[4 + j] >> 4);
        }
        lmk_q_unpack32_common(b);
        break;
    case LMK_QUANT_Q5_0: /* d | qh (32 fifth bits, LE) | qs[16]; q - 16 */
    case LMK_QUANT_Q5_1: { /* d | m | qh | qs[16]; q * d + m */
        int o = type == LMK_QUANT_Q5_1 ? 2 : 0, off = type == LMK_QUANT_Q5_1 ? 0 : 16;
        b->d = lmk_q_h(p);
        if (o) {
            b->dmin = lmk_q_h(p + 2);
        }
        b->has_min = o != 0;
        uint32_t qh = lmk_q_u32(p + 2 + o);
        const uint8_t *qs = p + 6 + o;
        for (int j = 0; j < 16; j++) {
            b->w[j] = (int8_t)(((qs[j] & 15) | (((qh >> j) & 1) << 4)) - off);
            b->w[j + 16] = (int8_t)(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - off);
        }
        lmk_q_unpack32_common(b);
        break;
    }
    case LMK_QUANT_Q8_0: /* d | qs[32] int8 */
        b->d = lmk_q_h(p);
        b->has_min = 0;
        memcpy(b->w, p + 2, 32);
        lmk_q_unpack32_common(b);
        break;
    case LMK_QUANT_IQ4_NL: /* d | qs[16]: nibbles index the code book, layout as Q4_0 */
        b->d = lmk_q_h(p);
        b->has_min = 0;
        for (int j = 0; j < 16; j++) {
            b->w[j] = lmk_iq4nl_values[p[2 + j] & 15];
            b->w[j + 16] = lmk_iq4nl_values[p[2 + j] >> 4];
        }
        lmk_q_unpack32_common(b);
        break;
    case LMK_QUANT_Q2_K: { /* scales[16] (lo: scale, hi: min) | qs[64] | d | dmin */
        const uint8_t *qs = p + 16;
        b->d = lmk_q_h(p + 80);
        b->dmin = lmk_q_h(p + 82);
        b->has_min = 1;
        for (int g = 0; g < 16; g++) {
            b->sc[g] = p[g] & 15;
            b->mn[g] = p[g] >> 4;
        }
        /* value 128h + 32j + l (l < 32) is bits 2j..2j+1 of qs[32h + l] */
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++)
                    b->w[128 * h + 32 * j + l] = (int8_t)((qs[32 * h + l] >> (2 * j)) & 3);
        break;
    }
    case LMK_QUANT_Q3_K: { /* hmask[32] | qs[64] | scales[12] (16 x 6 bits) | d */
        const uint8_t *hm = p, *qs = p + 32, *s = p + 96;
        b->d = lmk_q_h(p + 108);
        b->has_min = 0;
        for (int g = 0; g < 16; g++) {
            int lo = g < 8 ? s[g] & 15 : s[g - 8] >> 4;
            int hi = (s[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
            b->sc[g] = (int16_t)((lo | (hi << 4)) - 32);
        }
        /* as Q2_K, minus 4 where bit (4h + j) of hmask[l] is clear */
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int q = (qs[32 * h + l] >> (2 * j)) & 3;
                    int hb = (hm[l] >> (4 * h + j)) & 1;
                    b->w[128 * h + 32 * j + l] = (int8_t)(q - (hb ? 0 : 4));
                }
        break;
    }
    case LMK_QUANT_Q4_K:   /* d | dmin | scales[12] | qs[128] */
    case LMK_QUANT_Q5_K: { /* d | dmin | scales[12] | qh[32] | qs[128] */
        int five = type == LMK_QUANT_Q5_K;
        const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
        b->d = lmk_q_h(p);
        b->dmin = lmk_q_h(p + 2);
        b->has_min = 1;
        for (int k = 0; k < 8; k++) {
            int sc, mn;
            lmk_q_k4_scale(p + 4, k, &sc, &mn);
            b->sc[2 * k] = b->sc[2 * k + 1] = (int16_t)sc;
            b->mn[2 * k] = b->mn[2 * k + 1] = (int16_t)mn;
        }
        /* values 64j + l: low nibble of qs[32j + l]; 64j + 32 + l: its high nibble;
         * Q5_K's fifth bits: bit 2j (resp. 2j + 1) of qh[l] */
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
                if (five) {
                    lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                    hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                }
                b->w[64 * j + l] = (int8_t)lo;
                b->w[64 * j + 32 + l] = (int8_t)hi;
            }
        break;
    }
    case LMK_QUANT_Q6_K: { /* ql[128] | qh[64] | scales[16] int8 | d */
        const uint8_t *ql = p, *qh = p + 128;
        b->d = lmk_q_h(p + 208);
        b->has_min = 0;
        for (int g = 0; g < 16; g++)
            b->sc[g] = (int8_t)p[192 + g];
        /* per half h: values 128h + 32k + l from ql[64h + l (+32 for k odd)], nibble k/2,
         * and bits 2k..2k+1 of qh[32h + l]; minus 32 */
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    int lo = ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1)) & 15;
                    int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                    b->w[128 * h + 32 * k + l] = (int8_t)((lo | (hi << 4)) - 32);
                }
        break;
    }
    case LMK_QUANT_IQ4_XS: { /* d | scales_h (u16) | scales_l[4] | qs[128] */
        unsigned sh = (unsigned)(p[2] | (p[3] << 8));
        const uint8_t *sl = p + 4, *qs = p + 8;
        b->d = lmk_q_h(p);
        b->has_min = 0;
        for (int k = 0; k < 8; k++) {
            int ls = ((sl[k / 2] >> (4 * (k % 2))) & 15) | (((sh >> (2 * k)) & 3) << 4);
            b->sc[2 * k] = b->sc[2 * k + 1] = (int16_t)(ls - 32);
            for (int j = 0; j < 16; j++) {
                b->w[32 * k + j] = lmk_iq4nl_values[qs[16 * k + j] & 15];
                b->w[32 * k + 16 + j] = lmk_iq4nl_values[qs[16 * k + j] >> 4];
            }
        }
        break;
    }
    default:
        break;
    }
}

/* Activation buffer: per block of A (32 or 256) values, at a stride of lmk_q_act_stride(A):
 *   f32 d | int16 bsum[A / 16] (sum of q per group of 16) | int8 q[A]
 * read with memcpy so the buffer may have any alignment. */
static inline size_t lmk_q_act_stride(int64_t a)
{
    return 4 + 2 * (size_t)(a / 16) + (size_t)a;
}

/* Per-type kernels of one path. n is already checked; out is written on success. */
typedef struct {
    void (*dequant)(uint32_t type, const uint8_t *row, int64_t n, int64_t bs, size_t ts,
                    float *dst);
    void (*dot_f32)(uint32_t type, const uint8_t *row, const float *x, int64_t n,
                    int64_t bs, size_t ts, float *out);
    void (*dot_act)(uint32_t type, const uint8_t *row, const uint8_t *act, int64_t n,
                    int64_t bs, size_t ts, float *out);
} lmk_q_kernels;

/* The AVX2 kernels (lmk_quant_avx2.c); NULL when the build has none. */
LMK_INTERNAL const lmk_q_kernels *lmk_q_kernels_avx2(void);

/* Combine one block's integer sums into its contribution (shared by both paths, so that
 * equal integer sums give equal floats). */
static inline float lmk_q_combine(const lmk_qblk *b, int32_t sumi, int32_t summ, float da)
{
    float v = b->d * (float)sumi;
    if (b->has_min)
        v -= b->dmin * (float)summ;
    return da * v;
}

#endif
