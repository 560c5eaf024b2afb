/* Rotary position encoding: cos/sin tables for the first ROPE_TABLE positions, computed
 * the same way beyond; applied to query and key rows, to adjacent pairs (llama) or to
 * halves (qwen2, qwen3, phi3). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "lmk_export.h"
#include "lmk_model_impl.h"

/* cos/sin of position pos into C = (c0, c0, c1, c1, ...), S = (-s0, s0, -s1, s1, ...)
 * (rope_dim entries each), the way ggml's CPU rope forms them: the angle of pair i is
 * pos * base^(-2i/rope_dim) built by repeated f32 multiplication, divided by the pair's
 * frequency factor, times 1/scale, then cosf/sinf. Matching that bit for bit keeps f32
 * logits within 1e-4 of llama.cpp's over hundreds of positions. */
static void rope_coef_compute(const lmk_model *m, int64_t pos, float *C)
{
    int rd = m->info.rope_dim;
    float *S = C + rd;
    float theta_scale = powf(m->info.rope_base, -2.0f / (float)rd);
    float freq_scale = 1.0f / m->info.rope_scale;
    float theta = (float)pos;
    for (int i = 0; i < rd / 2; i++) {
        float ff = m->freq_factors ? m->freq_factors[i] : 1.0f;
        float th = freq_scale * (theta / ff);
        float c = cosf(th), sn = sinf(th);
        C[2 * i] = C[2 * i + 1] = c;
        S[2 * i] = -sn;
        S[2 * i + 1] = sn;
        theta *= theta_scale;
    }
}

int lmk_model__rope_init(lmk_model *m)
{
    const lmk_model_info *H = &m->info;
    int half = H->rope_dim / 2;
    m->inv_freq = calloc((size_t)(half ? half : 1), sizeof *m->inv_freq);
    m->rope_cs = malloc((size_t)ROPE_TABLE * (half ? half : 1) * 4 * sizeof(float));
    if (!m->inv_freq || !m->rope_cs)
        return ENOMEM;
    for (int i = 0; i < half; i++) {
        m->inv_freq[i] = pow((double)H->rope_base, -2.0 * i / H->rope_dim);
        if (m->freq_factors)
            m->inv_freq[i] /= m->freq_factors[i];
    }
    for (int64_t p = 0; p < ROPE_TABLE; p++)
        rope_coef_compute(m, p, m->rope_cs + (size_t)p * H->rope_dim * 2);
    return LMK_OK;
}

/* Rotation coefficients of one position, laid out for rope_apply: C = (c0, c0, c1, c1, ...),
 * S = (-s0, s0, -s1, s1, ...) over rope_dim entries. Table rows for small positions (the
 * slots policy never leaves them); computed the same way otherwise. */
static const float *rope_coef(const lmk_model *m, int64_t pos, float *buf)
{
    int rd = m->info.rope_dim;
    if (pos >= 0 && pos < ROPE_TABLE)
        return m->rope_cs + (size_t)pos * rd * 2;
    rope_coef_compute(m, pos, buf);
    return buf;
}

/* Adjacent pairs (llama): x' = x * C + swap_pairs(x) * S, i.e. a' = a c - b s,
 * b' = b c + a s for each pair (a, b) = (x[2i], x[2i+1]). */
static void rope_apply_norm(float *x, const float *cs, int rd)
{
    const float *C = cs, *S = cs + rd;
    int j = 0;
#ifdef __SSE2__
    for (; j + 4 <= rd; j += 4) {
        __m128 v = _mm_loadu_ps(x + j);
        __m128 w = _mm_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1));
        __m128 r = _mm_add_ps(_mm_mul_ps(v, _mm_loadu_ps(C + j)),
                              _mm_mul_ps(w, _mm_loadu_ps(S + j)));
        _mm_storeu_ps(x + j, r);
    }
#endif
    for (; j < rd; j += 2) {
        float a = x[j], b = x[j + 1];
        x[j] = a * C[j] + b * S[j];
        x[j + 1] = b * C[j + 1] + a * S[j + 1];
    }
}

/* Halves (qwen2, qwen3, phi3; ggml's NEOX mode): pair i is (x[i], x[i + rd/2]). */
static void rope_apply_neox(float *x, const float *cs, int rd)
{
    const float *C = cs, *S = cs + rd;
    int h = rd / 2;
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h], c = C[2 * i], s = S[2 * i + 1];
        x[i] = a * c - b * s;
        x[i + h] = a * s + b * c;
    }
}

static void rope_apply(const lmk_model *m, float *x, const float *cs, int rd)
{
    if (m->rope == ROPE_NEOX)
        rope_apply_neox(x, cs, rd);
    else
        rope_apply_norm(x, cs, rd);
}

LMK_API void lmk_model_rotate(void *model, float *x, int n, int head_dim, const int64_t *pos)
{
    const lmk_model *m = model;
    if (head_dim != m->info.head_dim)
        return;
    int rd = m->info.rope_dim;
    float buf[2 * rd + 1];
    const float *cs = NULL;
    int64_t last = INT64_MIN;
    for (int i = 0; i < n; i++) {
        if (pos[i] != last || !cs) /* runs of one position (fixed policy) share coefficients */
            cs = rope_coef(m, last = pos[i], buf);
        rope_apply(m, x + (size_t)i * head_dim, cs, rd);
    }
}

/* Rotate x (n, n_heads, head_dim): row i to position pos0 + i. */
void lmk_model__rope_rows(const lmk_model *m, float *x, int64_t n, int n_heads, int64_t pos0)
{
    int hd = m->info.head_dim, rd = m->info.rope_dim;
    float buf[2 * rd + 1];
    for (int64_t i = 0; i < n; i++) {
        const float *cs = rope_coef(m, pos0 + i, buf);
        for (int h = 0; h < n_heads; h++)
            rope_apply(m, x + ((size_t)i * n_heads + h) * hd, cs, rd);
    }
}
