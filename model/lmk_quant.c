/* landmark — GGML block formats: type table, dequantization, the portable dot products and
 * the choice of path. The AVX2 kernels are in lmk_quant_avx2.c. */
#include "lmk_quant.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "lmk_export.h"
#include "lmk_quant_impl.h"

/* ---- types ---- */

/* GGML's names, by type id (ggml.c type_traits); gaps are ids GGML removed. */
static const char *const type_names[] = {
    [0] = "f32",      [1] = "f16",     [2] = "q4_0",     [3] = "q4_1",     [6] = "q5_0",
    [7] = "q5_1",     [8] = "q8_0",    [9] = "q8_1",     [10] = "q2_K",    [11] = "q3_K",
    [12] = "q4_K",    [13] = "q5_K",   [14] = "q6_K",    [15] = "q8_K",    [16] = "iq2_xxs",
    [17] = "iq2_xs",  [18] = "iq3_xxs", [19] = "iq1_s",  [20] = "iq4_nl",  [21] = "iq3_s",
    [22] = "iq2_s",   [23] = "iq4_xs", [24] = "i8",      [25] = "i16",     [26] = "i32",
    [27] = "i64",     [28] = "f64",    [29] = "iq1_m",   [30] = "bf16",    [34] = "tq1_0",
    [35] = "tq2_0",   [39] = "mxfp4",  [40] = "nvfp4",   [41] = "q1_0",    [42] = "q2_0",
};

typedef struct {
    int64_t bs;
    size_t ts;
} type_row;

/* Block size and bytes per block of the supported types; bs == 0: not supported. */
static const type_row type_rows[] = {
    [LMK_QUANT_F32] = {1, 4},       [LMK_QUANT_F16] = {1, 2},
    [LMK_QUANT_BF16] = {1, 2},      [LMK_QUANT_Q4_0] = {32, 18},
    [LMK_QUANT_Q4_1] = {32, 20},    [LMK_QUANT_Q5_0] = {32, 22},
    [LMK_QUANT_Q5_1] = {32, 24},    [LMK_QUANT_Q8_0] = {32, 34},
    [LMK_QUANT_IQ4_NL] = {32, 18},  [LMK_QUANT_Q2_K] = {256, 84},
    [LMK_QUANT_Q3_K] = {256, 110},  [LMK_QUANT_Q4_K] = {256, 144},
    [LMK_QUANT_Q5_K] = {256, 176},  [LMK_QUANT_Q6_K] = {256, 210},
    [LMK_QUANT_IQ4_XS] = {256, 136},
};

static _Thread_local char errmsg[160];

static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return code;
}

LMK_API const char *lmk_quant_errmsg(void)
{
    return errmsg;
}

LMK_API const char *lmk_quant_type_name(uint32_t type)
{
    if (type < sizeof type_names / sizeof type_names[0] && type_names[type])
        return type_names[type];
    return "unknown";
}

static int is_float_type(uint32_t type)
{
    return type == LMK_QUANT_F32 || type == LMK_QUANT_F16 || type == LMK_QUANT_BF16;
}

static int get_row(uint32_t type, type_row *r)
{
    if (type >= sizeof type_rows / sizeof type_rows[0] || type_rows[type].bs == 0)
        return fail(LMK_EUNSUPPORTED, "GGML type %s (%u) is not supported (lmk_quant)",
                    lmk_quant_type_name(type), (unsigned)type);
    *r = type_rows[type];
    return LMK_OK;
}

/* Type known, n a positive multiple of its block size. */
static int check(uint32_t type, int64_t n, type_row *r)
{
    int rc = get_row(type, r);
    if (rc)
        return rc;
    if (n <= 0 || n % r->bs)
        return fail(LMK_EINVAL, "row length %lld is not a positive multiple of %s's block of %lld",
                    (long long)n, lmk_quant_type_name(type), (long long)r->bs);
    return LMK_OK;
}

LMK_API int lmk_quant_type_info(uint32_t type, lmk_quant_info *out)
{
    type_row r = {0, 0};
    int rc = get_row(type, &r);
    if (rc)
        return rc;
    if (!out)
        return fail(LMK_EINVAL, "lmk_quant_type_info: out is NULL");
    out->name = lmk_quant_type_name(type);
    out->block_size = r.bs;
    out->type_size = r.ts;
    out->act_block = r.bs;
    return LMK_OK;
}

LMK_API int lmk_quant_row_size(uint32_t type, int64_t n, size_t *out)
{
    type_row r = {0, 0};
    int rc = check(type, n, &r);
    if (rc)
        return rc;
    if (!out)
        return fail(LMK_EINVAL, "lmk_quant_row_size: out is NULL");
    *out = (size_t)(n / r.bs) * r.ts;
    return LMK_OK;
}

LMK_API int lmk_quant_act_size(uint32_t type, int64_t n, size_t *out)
{
    type_row r = {0, 0};
    int rc = check(type, n, &r);
    if (rc)
        return rc;
    if (!out)
        return fail(LMK_EINVAL, "lmk_quant_act_size: out is NULL");
    *out = is_float_type(type) ? (size_t)n * 4 : (size_t)(n / r.bs) * lmk_q_act_stride(r.bs);
    return LMK_OK;
}

/* ---- dequantization ---- */

static float float_at(uint32_t type, const uint8_t *p, int64_t i)
{
    switch (type) {
    case LMK_QUANT_F16:
        return lmk_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    case LMK_QUANT_BF16:
        return lmk_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    default: {
        float f;
        memcpy(&f, p + 4 * i, 4); /* GGUF is little-endian, as is every host built for */
        return f;
    }
    }
}

/* One unpacked block -> y[nv], formed as GGML forms it (see lmk_quant_impl.h). */
static void blk_to_f32(const lmk_qblk *b, int nv, float *y)
{
    for (int g = 0; g < nv / 16; g++) {
        float s = b->d * (float)b->sc[g];
        const int8_t *w = b->w + 16 * g;
        if (b->has_min) {
            float m = b->dmin * (float)b->mn[g];
            for (int i = 0; i < 16; i++)
                y[16 * g + i] = s * (float)w[i] - m;
        } else {
            for (int i = 0; i < 16; i++)
                y[16 * g + i] = s * (float)w[i];
        }
    }
}

static void port_dequant(uint32_t type, const uint8_t *row, int64_t n, int64_t bs, size_t ts,
                         float *dst)
{
    if (bs == 1) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = float_at(type, row, i);
        return;
    }
    lmk_qblk b;
    for (int64_t i = 0; i < n / bs; i++) {
        lmk_q_unpack(type, row + (size_t)i * ts, &b);
        blk_to_f32(&b, (int)bs, dst + i * bs);
    }
}

/* ---- portable kernels ---- */

/* sum a[i] * b[i], i < n (n a multiple of 8), in 8 f32 lanes */
static float dot8(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    for (int i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[i + k] * b[i + k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static void port_dot_f32(uint32_t type, const uint8_t *row, const float *x, int64_t n,
                         int64_t bs, size_t ts, float *out)
{
    float y[256];
    double sum = 0;
    if (bs == 1) { /* F32/F16/BF16 in chunks of 256 (and a tail) */
        for (int64_t i = 0; i < n; i += 256) {
            int m = (int)(n - i < 256 ? n - i : 256), m8 = m & ~7;
            for (int k = 0; k < m; k++)
                y[k] = float_at(type, row, i + k);
            float s = dot8(y, x + i, m8);
            for (int k = m8; k < m; k++)
                s += y[k] * x[i + k];
            sum += s;
        }
    } else {
        lmk_qblk b;
        for (int64_t i = 0; i < n / bs; i++) {
            lmk_q_unpack(type, row + (size_t)i * ts, &b);
            blk_to_f32(&b, (int)bs, y);
            sum += dot8(y, x + i * bs, (int)bs);
        }
    }
    *out = (float)sum;
}

static void port_dot_act(uint32_t type, const uint8_t *row, const uint8_t *act, int64_t n,
                         int64_t bs, size_t ts, float *out)
{
    size_t as = lmk_q_act_stride(bs);
    int ng = (int)(bs / 16);
    lmk_qblk b;
    double sum = 0;
    for (int64_t i = 0; i < n / bs; i++) {
        const uint8_t *a = act + (size_t)i * as;
        const int8_t *q = (const int8_t *)(a + 4 + 2 * ng);
        float da;
        int16_t bsum[16];
        memcpy(&da, a, 4);
        memcpy(bsum, a + 4, 2 * (size_t)ng);
        lmk_q_unpack(type, row + (size_t)i * ts, &b);
        int32_t sumi = 0, summ = 0;
        for (int g = 0; g < ng; g++) {
            int32_t s = 0;
            for (int k = 0; k < 16; k++)
                s += (int32_t)b.w[16 * g + k] * q[16 * g + k];
            sumi += s * b.sc[g];
            if (b.has_min)
                summ += (int32_t)b.mn[g] * bsum[g];
        }
        sum += lmk_q_combine(&b, sumi, summ, da);
    }
    *out = (float)sum;
}

static const lmk_q_kernels portable_kernels = {port_dequant, port_dot_f32, port_dot_act};

/* ---- activation quantization ---- */

LMK_API int lmk_quant_act_quantize(uint32_t type, const float *x, int64_t n, void *act)
{
    type_row r = {0, 0};
    int rc = check(type, n, &r);
    if (rc)
        return rc;
    if (!x || !act)
        return fail(LMK_EINVAL, "lmk_quant_act_quantize: NULL x or act");
    if (is_float_type(type)) {
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return fail(LMK_EINVAL, "lmk_quant_act_quantize: x[%lld] is not finite",
                            (long long)i);
        memcpy(act, x, (size_t)n * 4);
        return LMK_OK;
    }
    int64_t bs = r.bs;
    size_t as = lmk_q_act_stride(bs);
    int ng = (int)(bs / 16);
    for (int64_t i = 0; i < n / bs; i++) {
        const float *xb = x + i * bs;
        uint8_t *a = (uint8_t *)act + (size_t)i * as;
        float amax = 0;
        for (int k = 0; k < bs; k++) {
            if (!isfinite(xb[k]))
                return fail(LMK_EINVAL, "lmk_quant_act_quantize: x[%lld] is not finite",
                            (long long)(i * bs + k));
            float v = fabsf(xb[k]);
            amax = v > amax ? v : amax;
        }
        /* Blocks of 32 are quantized as ggml's quantize_row_q8_0 does (its Q8_0 / Q8_1
         * activations): q = round-to-nearest-even(x * (127 / amax)) in f32 and the scale
         * rounded to f16, so that products match llama.cpp's to f32 rounding (without
         * this, its f16 scales alone move a random 2-layer model's logits by tenths).
         * 127 / amax in double where f32 overflows (a subnormal amax). */
        float d = amax / 127.0f;
        float idf = amax > 0 ? 127.0f / amax : 0.0f;
        double id = amax > 0 ? 127.0 / amax : 0.0;
        int ggml32 = bs == 32 && isfinite(idf);
        if (bs == 32)
            d = lmk_f16_to_f32(lmk_f32_to_f16(d));
        int8_t *q = (int8_t *)(a + 4 + 2 * ng);
        int16_t bsum[16];
        for (int g = 0; g < ng; g++) {
            int s = 0;
            for (int k = 16 * g; k < 16 * g + 16; k++) {
                long v = ggml32 ? lrintf(xb[k] * idf) : lround(xb[k] * id);
                v = v > 127 ? 127 : v < -127 ? -127 : v;
                q[k] = (int8_t)v;
                s += (int)v;
            }
            bsum[g] = (int16_t)s;
        }
        memcpy(a, &d, 4);
        memcpy(a + 4, bsum, 2 * (size_t)ng);
    }
    return LMK_OK;
}

/* ---- paths ---- */

/* AVX2 + FMA + F16C, and AVX2 kernels built: 1 or 0, probed once (CPUID is slow, and
 * traps to the hypervisor in a VM). Racing first calls store the same value. */
static int cpu_probe(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) /* F16C */
        return 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           lmk_q_kernels_avx2() != NULL;
#else
    return 0;
#endif
}

static int cpu_has_avx2(void)
{
    static int cached; /* 0 unknown, 1 no, 2 yes */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!v) {
        v = cpu_probe() ? 2 : 1;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v == 2;
}

static int auto_path; /* 0 unresolved; else an lmk_quant_path. Races write the same value. */

LMK_API lmk_quant_path lmk_quant_path_auto(void)
{
    int p = __atomic_load_n(&auto_path, __ATOMIC_RELAXED);
    if (!p) {
        const char *e = getenv("LMK_PORTABLE");
        int portable = e && strcmp(e, "1") == 0;
        p = !portable && cpu_has_avx2() ? LMK_QUANT_PATH_AVX2
                                                                : LMK_QUANT_PATH_PORTABLE;
        __atomic_store_n(&auto_path, p, __ATOMIC_RELAXED);
    }
    return (lmk_quant_path)p;
}

LMK_API int lmk_quant_path_available(lmk_quant_path path)
{
    switch (path) {
    case LMK_QUANT_PATH_AUTO:
    case LMK_QUANT_PATH_PORTABLE:
        return 1;
    case LMK_QUANT_PATH_AVX2:
        return cpu_has_avx2();
    default:
        return 0;
    }
}

static int kernels(lmk_quant_path path, const lmk_q_kernels **k)
{
    if (path == LMK_QUANT_PATH_AUTO)
        path = lmk_quant_path_auto();
    if (path == LMK_QUANT_PATH_PORTABLE) {
        *k = &portable_kernels;
        return LMK_OK;
    }
    if (path == LMK_QUANT_PATH_AVX2 && lmk_quant_path_available(path)) {
        *k = lmk_q_kernels_avx2();
        return LMK_OK;
    }
    return fail(path == LMK_QUANT_PATH_AVX2 ? LMK_EUNSUPPORTED : LMK_EINVAL,
                path == LMK_QUANT_PATH_AVX2 ? "the AVX2 path needs a CPU with AVX2, FMA and F16C"
                                            : "unknown lmk_quant_path %d", (int)path);
}

LMK_API int lmk_quant_dequantize_row(uint32_t type, const void *row, int64_t n,
                                     lmk_quant_path path, float *dst)
{
    type_row r = {0, 0};
    const lmk_q_kernels *k = NULL;
    int rc = check(type, n, &r);
    if (!rc)
        rc = kernels(path, &k);
    if (rc)
        return rc;
    if (!row || !dst)
        return fail(LMK_EINVAL, "lmk_quant_dequantize_row: NULL row or dst");
    k->dequant(type, row, n, r.bs, r.ts, dst);
    return LMK_OK;
}

LMK_API int lmk_quant_dot_f32(uint32_t type, const void *row, const float *x, int64_t n,
                              lmk_quant_path path, float *out)
{
    type_row r = {0, 0};
    const lmk_q_kernels *k = NULL;
    int rc = check(type, n, &r);
    if (!rc)
        rc = kernels(path, &k);
    if (rc)
        return rc;
    if (!row || !x || !out)
        return fail(LMK_EINVAL, "lmk_quant_dot_f32: NULL argument");
    k->dot_f32(type, row, x, n, r.bs, r.ts, out);
    return LMK_OK;
}

LMK_API int lmk_quant_dot_act(uint32_t type, const void *row, const void *act, int64_t n,
                              lmk_quant_path path, float *out)
{
    type_row r = {0, 0};
    const lmk_q_kernels *k = NULL;
    int rc = check(type, n, &r);
    if (!rc)
        rc = kernels(path, &k);
    if (rc)
        return rc;
    if (!row || !act || !out)
        return fail(LMK_EINVAL, "lmk_quant_dot_act: NULL argument");
    if (is_float_type(type))
        k->dot_f32(type, row, act, n, r.bs, r.ts, out);
    else
        k->dot_act(type, row, act, n, r.bs, r.ts, out);
    return LMK_OK;
}

LMK_API int lmk_quant_matvec(uint32_t type, const void *w, int64_t n_rows, int64_t n_cols,
                             const float *x, const void *act, lmk_quant_path path, float *y)
{
    type_row r = {0, 0};
    const lmk_q_kernels *k = NULL;
    int rc = check(type, n_cols, &r);
    if (!rc)
        rc = kernels(path, &k);
    if (rc)
        return rc;
    if (!w || !y || n_rows < 0 || (!x && !act))
        return fail(LMK_EINVAL, "lmk_quant_matvec: NULL argument or negative n_rows");
    size_t rs = (size_t)(n_cols / r.bs) * r.ts;
    const uint8_t *p = w;
    for (int64_t i = 0; i < n_rows; i++) {
        if (act && !is_float_type(type))
            k->dot_act(type, p + (size_t)i * rs, act, n_cols, r.bs, r.ts, y + i);
        else
            k->dot_f32(type, p + (size_t)i * rs, act ? act : x, n_cols, r.bs, r.ts, y + i);
    }
    return LMK_OK;
}
