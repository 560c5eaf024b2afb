/* landmark — dense attention baseline (see lmk_dense.h).
 *
 * Layout: per KV head, contiguous (capacity, head_dim) arrays of keys and values, so a
 * step reads each head's keys once for the whole query group as one sgemm operand. */
#include "lmk_dense.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_f16.h"

#include "lmk_export.h"

/* f16 tokens converted per chunk: big enough for sgemm to run at full speed, small enough
 * to stay in L2. */
#define DENSE_CHUNK 2048

struct lmk_dense {
    int n_kv_heads, head_dim, n_heads, group;
    lmk_dtype dtype;
    int64_t capacity, n;
    void **k, **v;   /* (n_kv_heads) arrays of (capacity, head_dim), f32 or f16 */
    float *scores;   /* (group, capacity) */
    float *conv;     /* (DENSE_CHUNK, head_dim) f16 -> f32 scratch */
    float *qs;       /* (group, head_dim) scaled query */
};

LMK_API void lmk_dense_free(lmk_dense *d)
{
    if (!d)
        return;
    for (int h = 0; d->k && h < d->n_kv_heads; h++)
        free(d->k[h]);
    for (int h = 0; d->v && h < d->n_kv_heads; h++)
        free(d->v[h]);
    free(d->k);
    free(d->v);
    free(d->scores);
    free(d->conv);
    free(d->qs);
    free(d);
}

static size_t elem_size(lmk_dtype t)
{
    return t == LMK_DTYPE_F16 ? 2 : 4;
}

LMK_API int lmk_dense_create(int n_kv_heads, int head_dim, int n_heads, lmk_dtype dtype,
                             int64_t capacity_tokens, lmk_dense **out)
{
    if (!out)
        return LMK_EINVAL;
    *out = NULL;
    if (n_kv_heads < 1 || n_heads < 1 || n_heads % n_kv_heads != 0 || head_dim < 1 ||
        capacity_tokens < 1 || (dtype != LMK_DTYPE_F32 && dtype != LMK_DTYPE_F16))
        return LMK_EINVAL;
    /* sgemm takes int dimensions */
    if (capacity_tokens > 0x7fffffff)
        return LMK_EINVAL;
    lmk_dense *d = calloc(1, sizeof *d);
    if (!d)
        return ENOMEM;
    d->n_kv_heads = n_kv_heads;
    d->head_dim = head_dim;
    d->n_heads = n_heads;
    d->group = n_heads / n_kv_heads;
    d->dtype = dtype;
    d->capacity = capacity_tokens;
    size_t bytes = (size_t)capacity_tokens * head_dim * elem_size(dtype);
    d->k = calloc(n_kv_heads, sizeof *d->k);
    d->v = calloc(n_kv_heads, sizeof *d->v);
    d->scores = malloc((size_t)d->group * capacity_tokens * sizeof(float));
    d->conv = malloc((size_t)DENSE_CHUNK * head_dim * sizeof(float));
    d->qs = malloc((size_t)d->group * head_dim * sizeof(float));
    if (!d->k || !d->v || !d->scores || !d->conv || !d->qs) {
        lmk_dense_free(d);
        return ENOMEM;
    }
    for (int h = 0; h < n_kv_heads; h++) {
        d->k[h] = malloc(bytes);
        d->v[h] = malloc(bytes);
        if (!d->k[h] || !d->v[h]) {
            lmk_dense_free(d);
            return ENOMEM;
        }
    }
    *out = d;
    return LMK_OK;
}

LMK_API int lmk_dense_append(lmk_dense *d, int64_t n, const float *k, const float *v)
{
    if (!d || n < 0 || (n > 0 && (!k || !v)) || n > d->capacity - d->n)
        return LMK_EINVAL;
    int H = d->n_kv_heads, D = d->head_dim;
    for (int64_t t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            const float *ks = k + ((size_t)t * H + h) * D;
            const float *vs = v + ((size_t)t * H + h) * D;
            size_t at = (size_t)(d->n + t) * D;
            if (d->dtype == LMK_DTYPE_F16) {
                lmk_f32_to_f16_n(ks, (uint16_t *)d->k[h] + at, D);
                lmk_f32_to_f16_n(vs, (uint16_t *)d->v[h] + at, D);
            } else {
                memcpy((float *)d->k[h] + at, ks, D * sizeof(float));
                memcpy((float *)d->v[h] + at, vs, D * sizeof(float));
            }
        }
    }
    d->n += n;
    return LMK_OK;
}

/* Rows [t0, t0 + m) of a head's K or V as f32: the stored array itself, or converted into
 * the scratch. */
static const float *rows_f32(lmk_dense *d, void *base, int64_t t0, int64_t m)
{
    if (d->dtype == LMK_DTYPE_F32)
        return (const float *)base + (size_t)t0 * d->head_dim;
    lmk_f16_to_f32_n((const uint16_t *)base + (size_t)t0 * d->head_dim, d->conv,
                     (size_t)m * d->head_dim);
    return d->conv;
}

LMK_API int lmk_dense_attend(lmk_dense *d, const float *q, float *out)
{
    if (!d || !q || !out || d->n < 1)
        return LMK_EINVAL;
    int D = d->head_dim, G = d->group;
    int64_t T = d->n;
    /* With f32 storage the whole array is one operand; with f16 it goes chunk by chunk. */
    int64_t chunk = d->dtype == LMK_DTYPE_F32 ? T : DENSE_CHUNK;
    float scale = 1.0f / sqrtf((float)D);
    for (int h = 0; h < d->n_kv_heads; h++) {
        const float *qg = q + (size_t)h * G * D;
        float *og = out + (size_t)h * G * D;
        for (int i = 0; i < G * D; i++)
            d->qs[i] = qg[i] * scale;
        /* scores (G, T) = qs (G, D) x K^T */
        for (int64_t t0 = 0; t0 < T; t0 += chunk) {
            int64_t m = T - t0 < chunk ? T - t0 : chunk;
            const float *K = rows_f32(d, d->k[h], t0, m);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, G, (int)m, D, 1.0f, d->qs,
                        D, K, D, 0.0f, d->scores + t0, (int)T);
        }
        /* softmax per row; the sum in double so a million terms lose nothing */
        for (int g = 0; g < G; g++) {
            float *s = d->scores + (size_t)g * T;
            float mx = s[0];
            for (int64_t t = 1; t < T; t++)
                mx = s[t] > mx ? s[t] : mx;
            double sum = 0;
            for (int64_t t = 0; t < T; t++) {
                s[t] = expf(s[t] - mx);
                sum += s[t];
            }
            float inv = (float)(1.0 / sum);
            for (int64_t t = 0; t < T; t++)
                s[t] *= inv;
        }
        /* out (G, D) = P (G, T) x V (T, D) */
        for (int64_t t0 = 0; t0 < T; t0 += chunk) {
            int64_t m = T - t0 < chunk ? T - t0 : chunk;
            const float *V = rows_f32(d, d->v[h], t0, m);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, D, (int)m, 1.0f,
                        d->scores + t0, (int)T, V, D, t0 == 0 ? 0.0f : 1.0f, og, D);
        }
    }
    return LMK_OK;
}

LMK_API int64_t lmk_dense_tokens(const lmk_dense *d)
{
    return d ? d->n : 0;
}

LMK_API size_t lmk_dense_memory_bytes(const lmk_dense *d)
{
    if (!d)
        return 0;
    return 2 * (size_t)d->n_kv_heads * d->capacity * d->head_dim * elem_size(d->dtype) +
           (size_t)d->group * d->capacity * sizeof(float) +
           (size_t)DENSE_CHUNK * d->head_dim * sizeof(float) +
           (size_t)d->group * d->head_dim * sizeof(float);
}
