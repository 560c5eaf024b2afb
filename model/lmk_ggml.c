/* GGML tensor types: the block table and the f32 conversions. */
#include "lmk_ggml.h"

#include <stdio.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_f16.h"
#include "lmk_le.h"
#include "lmk_quant.h"

/* ---- tensor types: block size and bytes per block (GGML numbering) ---- */

typedef struct {
    uint32_t type;
    const char *name;
    uint32_t blck;
    uint32_t bytes;
} type_info;

static const type_info k_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},     {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74}, {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136},{24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},  {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},
};

static const type_info *find_type(uint32_t t)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].type == t)
            return &k_types[i];
    return NULL;
}

LMK_API int lmk_ggml_convertible(uint32_t t)
{
    lmk_quant_info qi;
    return lmk_quant_type_info(t, &qi) == LMK_OK;
}

LMK_API const char *lmk_ggml_type_name(uint32_t type)
{
    static __thread char buf[32];
    const type_info *ti = find_type(type);
    if (ti)
        return ti->name;
    snprintf(buf, sizeof buf, "type %u", type);
    return buf;
}

LMK_API int lmk_ggml_type_size(uint32_t type, uint32_t *blck, uint32_t *block_bytes)
{
    const type_info *ti = find_type(type);
    if (!ti)
        return LMK_ENOTFOUND;
    *blck = ti->blck;
    *block_bytes = ti->bytes;
    return LMK_OK;
}

LMK_API uint64_t lmk_ggml_row_bytes(uint32_t type, int64_t row_len)
{
    const type_info *ti = find_type(type);
    if (!ti || !lmk_ggml_convertible(type) || row_len < 0 || row_len % ti->blck)
        return 0;
    return (uint64_t)(row_len / ti->blck) * ti->bytes;
}

/* ---- to f32 ---- */

LMK_API int lmk_ggml_to_f32(uint32_t type, const void *src, int64_t n, float *dst)
{
    const uint8_t *p = src;
    switch (type) {
    case LMK_GGML_F32:
        memcpy(dst, p, (size_t)n * 4); /* the format is little-endian, as is every host here */
        return LMK_OK;
    case LMK_GGML_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = lmk_f16_to_f32(lmk_get_u16le(p + 2 * i));
        return LMK_OK;
    case LMK_GGML_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = lmk_bf16_to_f32(lmk_get_u16le(p + 2 * i));
        return LMK_OK;
    case LMK_GGML_Q8_0: /* blocks of 32: f16 scale d, 32 x int8 q; x = d * q */
        if (n % 32)
            return LMK_EINVAL;
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = lmk_f16_to_f32(lmk_get_u16le(p));
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < 32; j++)
                dst[b * 32 + j] = d * (float)q[j];
        }
        return LMK_OK;
    case LMK_GGML_Q4_0: /* blocks of 32: f16 d, 16 bytes; low nibbles 0..15, high 16..31 */
        if (n % 32)
            return LMK_EINVAL;
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = lmk_f16_to_f32(lmk_get_u16le(p));
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((p[2 + j] & 0x0f) - 8);
                dst[b * 32 + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return LMK_OK;
    default: /* the K-quants, Q4_1, Q5_x, IQ4_x: bit-identical to ggml's to_float */
        if (!lmk_ggml_convertible(type))
            return LMK_EUNSUPPORTED;
        return lmk_quant_dequantize_row(type, src, n, LMK_QUANT_PATH_AUTO, dst) == LMK_OK
                   ? LMK_OK
                   : LMK_EINVAL;
    }
}

/* ---- from f32 ---- */

static void quant_q8_0(const float *x, int64_t n, uint8_t *out)
{
    for (int64_t b = 0; b < n / 32; b++, out += 34) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            float a = x[b * 32 + j] < 0 ? -x[b * 32 + j] : x[b * 32 + j];
            if (a > amax)
                amax = a;
        }
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        lmk_put_u16le(out, lmk_f32_to_f16(d));
        for (int j = 0; j < 32; j++) {
            float v = x[b * 32 + j] * id;
            out[2 + j] = (uint8_t)(int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
        }
    }
}

static void quant_q4_0(const float *x, int64_t n, uint8_t *out)
{
    for (int64_t b = 0; b < n / 32; b++, out += 18) {
        const float *xb = x + b * 32;
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++) {
            float a = xb[j] < 0 ? -xb[j] : xb[j];
            if (a > amax) {
                amax = a;
                max = xb[j];
            }
        }
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        lmk_put_u16le(out, lmk_f32_to_f16(d));
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(xb[j] * id + 8.5f), q1 = (int)(xb[j + 16] * id + 8.5f);
            q0 = q0 < 0 ? 0 : q0 > 15 ? 15 : q0;
            q1 = q1 < 0 ? 0 : q1 > 15 ? 15 : q1;
            out[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

LMK_API int lmk_ggml_from_f32(uint32_t type, const float *src, int64_t n, void *dst)
{
    uint8_t *out = dst;
    switch (type) {
    case LMK_GGML_F32:
        memcpy(out, src, (size_t)n * 4);
        return LMK_OK;
    case LMK_GGML_F16:
        for (int64_t i = 0; i < n; i++)
            lmk_put_u16le(out + 2 * i, lmk_f32_to_f16(src[i]));
        return LMK_OK;
    case LMK_GGML_BF16:
        for (int64_t i = 0; i < n; i++)
            lmk_put_u16le(out + 2 * i, lmk_f32_to_bf16(src[i]));
        return LMK_OK;
    case LMK_GGML_Q8_0:
    case LMK_GGML_Q4_0:
        if (n % 32)
            return LMK_EINVAL;
        (type == LMK_GGML_Q8_0 ? quant_q8_0 : quant_q4_0)(src, n, out);
        return LMK_OK;
    default:
        return LMK_EUNSUPPORTED;
    }
}
