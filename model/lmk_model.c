/* LLaMA forward pass (RMSNorm -> attention -> residual -> RMSNorm -> SwiGLU -> residual)
 * over a pluggable attention backend: a landmark session, or a dense in-memory cache used
 * as the reference. Shapes are spelled out as (rows, cols), row-major. */
#include "lmk_model.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "lmk_export.h"

#define TILE_ROWS 64      /* output rows per matrix-product tile (fixed: thread-independent) */
#define ROPE_TABLE 8192   /* positions with precomputed cos/sin */
#define DENSE_QB 16       /* dense reference: queries per score block */

/* A weight matrix (rows, cols) = GGUF dims {cols, rows}. f is NULL when the matrix stays
 * in its GGUF type and is converted tile by tile. */
typedef struct {
    const lmk_gguf_tensor *t;
    const float *f;
    float *owned;
    int64_t rows, cols;
} wmat;

typedef struct {
    float *attn_norm, *ffn_norm; /* (n_embd) */
    wmat wq, wk, wv, wo, wg, wu, wd;
} layer_w;

struct lmk_model {
    lmk_gguf *g;
    lmk_tokenizer *tok;
    lmk_model_info info;
    layer_w *layers;
    wmat embd, out;
    float *out_norm;
    double *inv_freq;  /* (rope_dim / 2) */
    float *rope_cs;    /* (ROPE_TABLE, 2, rope_dim): rope_coef layout */
    int n_threads;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int set_err(char *buf, size_t cap, int rc, const char *fmt, ...)
{
    if (buf && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, cap, fmt, ap);
        va_end(ap);
    }
    return rc;
}

LMK_API lmk_model_opts lmk_model_opts_default(void)
{
    lmk_model_opts o;
    memset(&o, 0, sizeof o);
    o.n_threads = 1;
    o.convert_limit = (int64_t)4 << 30;
    o.mem_freq = -1;
    o.landmark_token = -1;
    return o;
}

/* ---- rotary encoding ---- */

/* Rotation coefficients of one position, laid out for rope_apply: C = (c0, c0, c1, c1, ...),
 * S = (-s0, s0, -s1, s1, ...) over rope_dim entries. Table rows for small positions (the
 * slots policy never leaves them); computed in double otherwise. */
static const float *rope_coef(const lmk_model *m, int64_t pos, float *buf)
{
    int rd = m->info.rope_dim;
    if (pos >= 0 && pos < ROPE_TABLE)
        return m->rope_cs + (size_t)pos * rd * 2;
    double p = (double)pos / m->info.rope_scale;
    for (int i = 0; i < rd / 2; i++) {
        double th = p * m->inv_freq[i];
        float c = (float)cos(th), sn = (float)sin(th);
        buf[2 * i] = buf[2 * i + 1] = c;
        buf[rd + 2 * i] = -sn;
        buf[rd + 2 * i + 1] = sn;
    }
    return buf;
}

/* x' = x * C + swap_pairs(x) * S: a' = a c - b s, b' = b c + a s for each adjacent pair. */
static void rope_apply(float *x, const float *cs, int rd)
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
        rope_apply(x + (size_t)i * head_dim, cs, rd);
    }
}

/* Rotate x (n, n_heads, head_dim): row i to position pos0 + i. */
static void rope_rows(const lmk_model *m, float *x, int64_t n, int n_heads, int64_t pos0)
{
    int hd = m->info.head_dim, rd = m->info.rope_dim;
    float buf[2 * rd + 1];
    for (int64_t i = 0; i < n; i++) {
        const float *cs = rope_coef(m, pos0 + i, buf);
        for (int h = 0; h < n_heads; h++)
            rope_apply(x + ((size_t)i * n_heads + h) * hd, cs, rd);
    }
}

/* ---- loading ---- */

static int get_tensor(lmk_model *m, const char *name, int64_t cols, int64_t rows,
                      const lmk_gguf_tensor **out, char *err, size_t cap)
{
    const lmk_gguf_tensor *t = lmk_gguf_find_tensor(m->g, name);
    *out = t;
    if (!t)
        return set_err(err, cap, LMK_ENOTFOUND, "missing tensor '%s'", name);
    int64_t want_dims = rows > 1 ? 2 : 1;
    int ok = t->dims[0] == cols && t->n_rows == rows && t->n_dims <= 2 &&
             (t->n_dims == want_dims || (rows == 1 && t->n_dims == 2));
    if (!ok)
        return set_err(err, cap, LMK_EFORMAT, "tensor '%s' has shape [%lld, %lld], expected "
                       "[%lld, %lld]", name, (long long)t->dims[0], (long long)t->dims[1],
                       (long long)cols, (long long)rows);
    if (!t->supported)
        return set_err(err, cap, LMK_EUNSUPPORTED, "tensor '%s' has type %s, which is not "
                       "supported (F32, F16, BF16, Q8_0 and Q4_0 are)", name,
                       lmk_ggml_type_name(t->type));
    return LMK_OK;
}

static int load_vec(lmk_model *m, const char *name, int64_t n, float **out, char *err,
                    size_t cap)
{
    const lmk_gguf_tensor *t;
    int rc = get_tensor(m, name, n, 1, &t, err, cap);
    if (rc)
        return rc;
    *out = malloc((size_t)n * sizeof(float));
    if (!*out)
        return set_err(err, cap, ENOMEM, "out of memory");
    return lmk_gguf_tensor_rows_f32(t, 0, 1, *out);
}

static int load_mat(lmk_model *m, const char *name, int64_t rows, int64_t cols, wmat *w,
                    char *err, size_t cap)
{
    memset(w, 0, sizeof *w);
    int rc = get_tensor(m, name, cols, rows, &w->t, err, cap);
    if (rc)
        return rc;
    w->rows = rows;
    w->cols = cols;
    if (w->t->type == LMK_GGML_F32 && ((uintptr_t)w->t->data % sizeof(float)) == 0)
        w->f = (const float *)(const void *)w->t->data;
    return LMK_OK;
}

static int convert_mat(wmat *w)
{
    if (w->f || !w->t)
        return LMK_OK;
    w->owned = malloc((size_t)(w->rows * w->cols) * sizeof(float));
    if (!w->owned)
        return ENOMEM;
    int rc = lmk_gguf_tensor_rows_f32(w->t, 0, w->rows, w->owned);
    if (rc) {
        free(w->owned);
        w->owned = NULL;
        return rc;
    }
    w->f = w->owned;
    return LMK_OK;
}

static void free_mat(wmat *w) { free(w->owned); }

LMK_API void lmk_model_close(lmk_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int l = 0; l < m->info.n_layers; l++) {
            layer_w *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free_mat(&L->wq);
            free_mat(&L->wk);
            free_mat(&L->wv);
            free_mat(&L->wo);
            free_mat(&L->wg);
            free_mat(&L->wu);
            free_mat(&L->wd);
        }
        free(m->layers);
    }
    free_mat(&m->embd);
    if (m->out.owned != m->embd.owned)
        free_mat(&m->out);
    free(m->out_norm);
    free(m->inv_freq);
    free(m->rope_cs);
    lmk_tokenizer_free(m->tok);
    lmk_gguf_close(m->g);
    free(m);
}

static uint64_t mix64(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Hash of the header and of three 4 KiB samples of each tensor: cheap for any model size,
 * and any re-conversion or re-quantization changes the header or the samples. */
static void compute_digest(lmk_model *m)
{
    size_t hs;
    const uint8_t *h = lmk_gguf_header(m->g, &hs);
    uint64_t d = mix64(1469598103934665603ull, h, hs);
    for (int64_t i = 0; i < lmk_gguf_n_tensors(m->g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(m->g, i);
        uint64_t n = t->n_bytes, s = n < 4096 ? n : 4096;
        d = mix64(d, t->data, (size_t)s);
        d = mix64(d, t->data + (n - s) / 2, (size_t)s);
        d = mix64(d, t->data + (n - s), (size_t)s);
    }
    snprintf(m->info.digest, sizeof m->info.digest, "%016llx", (unsigned long long)d);
}

static int arch_key_u32(lmk_model *m, const char *suffix, uint32_t *v, int required, char *err,
                        size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->info.arch, suffix);
    int rc = lmk_gguf_get_u32(m->g, key, v);
    if (rc == LMK_ENOTFOUND && !required)
        return LMK_ENOTFOUND;
    if (rc)
        return set_err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    return LMK_OK;
}

static int arch_key_f32(lmk_model *m, const char *suffix, float *v, char *err, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->info.arch, suffix);
    int rc = lmk_gguf_get_f32(m->g, key, v);
    if (rc && rc != LMK_ENOTFOUND)
        return set_err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    return rc;
}

static int load_hparams(lmk_model *m, const lmk_model_opts *o, char *err, size_t cap)
{
    lmk_model_info *H = &m->info;
    int rc = lmk_gguf_get_strz(m->g, "general.architecture", H->arch, sizeof H->arch);
    if (rc)
        return set_err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    if (strcmp(H->arch, "llama") && strcmp(H->arch, "mistral"))
        return set_err(err, cap, LMK_EUNSUPPORTED,
                       "architecture '%s' is not supported (llama and mistral are)", H->arch);
    if (lmk_gguf_get_strz(m->g, "general.name", H->name, sizeof H->name) != 0)
        snprintf(H->name, sizeof H->name, "%s", "(unnamed)");
    uint32_t v;
    if ((rc = arch_key_u32(m, "block_count", &v, 1, err, cap)) != 0)
        return rc;
    H->n_layers = (int)v;
    if ((rc = arch_key_u32(m, "embedding_length", &v, 1, err, cap)) != 0)
        return rc;
    H->n_embd = (int)v;
    if ((rc = arch_key_u32(m, "feed_forward_length", &v, 1, err, cap)) != 0)
        return rc;
    H->n_ff = (int)v;
    if ((rc = arch_key_u32(m, "attention.head_count", &v, 1, err, cap)) != 0)
        return rc;
    H->n_heads = (int)v;
    rc = arch_key_u32(m, "attention.head_count_kv", &v, 0, err, cap);
    if (rc == LMK_ENOTFOUND)
        v = (uint32_t)H->n_heads;
    else if (rc)
        return set_err(err, cap, LMK_EUNSUPPORTED, "%s.attention.head_count_kv is not one "
                       "integer (per-layer KV head counts are not supported)", H->arch);
    H->n_kv_heads = (int)v;
    if (H->n_layers < 1 || H->n_layers > 4096 || H->n_embd < 2 || H->n_embd > (1 << 17) ||
        H->n_ff < 1 || H->n_ff > (1 << 20) || H->n_heads < 1 || H->n_heads > 4096 ||
        H->n_kv_heads < 1 || H->n_heads % H->n_kv_heads || H->n_embd % H->n_heads)
        return set_err(err, cap, LMK_EFORMAT,
                       "inconsistent hyperparameters: %d layers, width %d, ffn %d, %d heads, "
                       "%d KV heads", H->n_layers, H->n_embd, H->n_ff, H->n_heads,
                       H->n_kv_heads);
    H->head_dim = H->n_embd / H->n_heads;
    if (arch_key_u32(m, "attention.key_length", &v, 0, err, cap) == 0 &&
        (int)v != H->head_dim)
        return set_err(err, cap, LMK_EUNSUPPORTED, "key_length %u differs from width/heads %d",
                       v, H->head_dim);
    H->rope_dim = H->head_dim;
    if (arch_key_u32(m, "rope.dimension_count", &v, 0, err, cap) == 0)
        H->rope_dim = (int)v;
    if (H->rope_dim < 0 || H->rope_dim > H->head_dim || H->rope_dim % 2 || H->head_dim % 2)
        return set_err(err, cap, LMK_EFORMAT, "rope dimension %d does not fit head size %d",
                       H->rope_dim, H->head_dim);
    if (arch_key_u32(m, "context_length", &v, 0, err, cap) == 0)
        H->n_ctx_train = v > INT32_MAX ? INT32_MAX : (int)v;
    H->rms_eps = 1e-5f;
    if ((rc = arch_key_f32(m, "attention.layer_norm_rms_epsilon", &H->rms_eps, err, cap)) &&
        rc != LMK_ENOTFOUND)
        return rc;
    H->rope_base = 10000.0f;
    if ((rc = arch_key_f32(m, "rope.freq_base", &H->rope_base, err, cap)) && rc != LMK_ENOTFOUND)
        return rc;
    H->rope_scale = 1.0f;
    char key[128], stype[32];
    snprintf(key, sizeof key, "%s.rope.scaling.type", H->arch);
    if (lmk_gguf_get_strz(m->g, key, stype, sizeof stype) == 0 && strcmp(stype, "none")) {
        if (strcmp(stype, "linear"))
            return set_err(err, cap, LMK_EUNSUPPORTED,
                           "rope scaling '%s' is not supported (linear is)", stype);
        if ((rc = arch_key_f32(m, "rope.scaling.factor", &H->rope_scale, err, cap)) != 0)
            return set_err(err, cap, rc ? rc : LMK_EFORMAT, "linear rope scaling without "
                           "%s.rope.scaling.factor", H->arch);
    }
    if (!(H->rope_base > 0) || !(H->rope_scale > 0) || !(H->rms_eps >= 0))
        return set_err(err, cap, LMK_EFORMAT, "invalid rope base, scale or norm epsilon");

    H->mem_freq = 0;
    H->landmark_token = -1;
    if (o->mem_freq < 0) {
        if (lmk_gguf_get_u32(m->g, "landmark.mem_freq", &v) == 0)
            H->mem_freq = (int)(v > (1u << 20) ? (1u << 20) : v);
        else if (lmk_gguf_find_key(m->g, "landmark.mem_freq") >= 0)
            return set_err(err, cap, LMK_EFORMAT, "%s", lmk_gguf_errmsg(m->g));
    } else {
        H->mem_freq = o->mem_freq;
    }
    if (H->mem_freq > 0) {
        if (o->landmark_token >= 0)
            H->landmark_token = o->landmark_token;
        else if (lmk_gguf_get_u32(m->g, "landmark.token_id", &v) == 0)
            H->landmark_token = v > INT32_MAX ? INT32_MAX : (int)v;
        else
            return set_err(err, cap, LMK_ENOTFOUND, "landmark.mem_freq is set but "
                           "landmark.token_id is missing (give the landmark token id)");
    }
    return LMK_OK;
}

LMK_API int lmk_model_open(const char *path, const lmk_model_opts *opts, lmk_model **out,
                           char *err, size_t cap)
{
    *out = NULL;
    lmk_model_opts o = opts ? *opts : lmk_model_opts_default();
    lmk_model *m = calloc(1, sizeof *m);
    if (!m)
        return set_err(err, cap, ENOMEM, "out of memory");
    m->n_threads = o.n_threads > 0 ? o.n_threads : 1;
    int rc = lmk_gguf_open(path, &m->g, err, cap);
    if (rc)
        goto fail;
    if ((rc = load_hparams(m, &o, err, cap)) != 0)
        goto fail;
    lmk_model_info *H = &m->info;
    if ((rc = lmk_tokenizer_from_gguf(m->g, &m->tok, err, cap)) != 0)
        goto fail;
    H->bos = lmk_tokenizer_bos(m->tok);
    H->eos = lmk_tokenizer_eos(m->tok);
    const lmk_gguf_tensor *te = lmk_gguf_find_tensor(m->g, "token_embd.weight");
    if (!te) {
        rc = set_err(err, cap, LMK_ENOTFOUND, "missing tensor 'token_embd.weight'");
        goto fail;
    }
    H->n_vocab = (int)(te->n_rows > INT32_MAX ? INT32_MAX : te->n_rows);
    if (lmk_tokenizer_n_vocab(m->tok) > H->n_vocab) {
        rc = set_err(err, cap, LMK_EFORMAT, "the vocabulary has %d tokens but token_embd only "
                     "%d rows", lmk_tokenizer_n_vocab(m->tok), H->n_vocab);
        goto fail;
    }
    if (H->mem_freq > 0 && (H->landmark_token < 0 || H->landmark_token >= H->n_vocab)) {
        rc = set_err(err, cap, LMK_EFORMAT, "landmark token id %d is outside the vocabulary",
                     H->landmark_token);
        goto fail;
    }
    int E = H->n_embd, hd = H->head_dim, nq = H->n_heads * hd, nkv = H->n_kv_heads * hd;
    if ((rc = load_mat(m, "token_embd.weight", H->n_vocab, E, &m->embd, err, cap)) != 0)
        goto fail;
    if (lmk_gguf_find_tensor(m->g, "output.weight")) {
        if ((rc = load_mat(m, "output.weight", H->n_vocab, E, &m->out, err, cap)) != 0)
            goto fail;
    } else {
        m->out = m->embd; /* tied embeddings */
    }
    if ((rc = load_vec(m, "output_norm.weight", E, &m->out_norm, err, cap)) != 0)
        goto fail;
    if (lmk_gguf_find_tensor(m->g, "blk.0.attn_q.bias")) {
        rc = set_err(err, cap, LMK_EUNSUPPORTED, "attention biases are not supported");
        goto fail;
    }
    m->layers = calloc((size_t)H->n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = set_err(err, cap, ENOMEM, "out of memory");
        goto fail;
    }
    int64_t convert_bytes = 0;
    for (int l = 0; l < H->n_layers; l++) {
        layer_w *L = &m->layers[l];
        char nm[96];
#define LOADV(field, suffix)                                                       \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l);                        \
    if ((rc = load_vec(m, nm, E, &L->field, err, cap)) != 0)                       \
        goto fail;
#define LOADM(field, suffix, rows, cols)                                           \
    snprintf(nm, sizeof nm, "blk.%d." suffix ".weight", l);                        \
    if ((rc = load_mat(m, nm, rows, cols, &L->field, err, cap)) != 0)              \
        goto fail;                                                                 \
    if (!L->field.f)                                                               \
        convert_bytes += (int64_t)(rows) * (cols) * 4;
        LOADV(attn_norm, "attn_norm");
        LOADV(ffn_norm, "ffn_norm");
        LOADM(wq, "attn_q", nq, E);
        LOADM(wk, "attn_k", nkv, E);
        LOADM(wv, "attn_v", nkv, E);
        LOADM(wo, "attn_output", E, nq);
        LOADM(wg, "ffn_gate", H->n_ff, E);
        LOADM(wu, "ffn_up", H->n_ff, E);
        LOADM(wd, "ffn_down", E, H->n_ff);
#undef LOADV
#undef LOADM
    }
    if (!m->out.f)
        convert_bytes += (int64_t)H->n_vocab * E * 4;
    if (convert_bytes <= o.convert_limit) {
        for (int l = 0; l < H->n_layers && !rc; l++) {
            layer_w *L = &m->layers[l];
            wmat *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wg, &L->wu, &L->wd};
            for (size_t i = 0; i < sizeof all / sizeof all[0] && !rc; i++)
                rc = convert_mat(all[i]);
        }
        if (!rc) {
            int tied = m->out.t == m->embd.t;
            rc = convert_mat(&m->out);
            if (tied)
                m->embd = m->out, m->out.owned = m->embd.owned;
        }
        if (rc) {
            rc = set_err(err, cap, rc, "converting weights to f32: %s", lmk_strerror(rc));
            goto fail;
        }
    }
    H->weight_type = m->layers[0].wq.t->type;
    H->n_params = 0;
    for (int64_t i = 0; i < lmk_gguf_n_tensors(m->g); i++)
        H->n_params += (uint64_t)lmk_gguf_tensor_at(m->g, i)->n_elements;

    /* Rotary tables; rope_freqs.weight (llama 3.1) divides each frequency. */
    int half = H->rope_dim / 2;
    m->inv_freq = calloc((size_t)(half ? half : 1), sizeof *m->inv_freq);
    m->rope_cs = malloc((size_t)ROPE_TABLE * (half ? half : 1) * 4 * sizeof(float));
    if (!m->inv_freq || !m->rope_cs) {
        rc = set_err(err, cap, ENOMEM, "out of memory");
        goto fail;
    }
    float *ff = NULL;
    if (lmk_gguf_find_tensor(m->g, "rope_freqs.weight")) {
        if ((rc = load_vec(m, "rope_freqs.weight", half, &ff, err, cap)) != 0)
            goto fail;
    }
    for (int i = 0; i < half; i++) {
        m->inv_freq[i] = pow((double)H->rope_base, -2.0 * i / H->rope_dim);
        if (ff)
            m->inv_freq[i] /= ff[i];
    }
    free(ff);
    for (int64_t p = 0; p < ROPE_TABLE; p++) {
        float *C = m->rope_cs + (size_t)p * H->rope_dim * 2, *S = C + H->rope_dim;
        for (int i = 0; i < half; i++) {
            double th = (double)p / H->rope_scale * m->inv_freq[i];
            C[2 * i] = C[2 * i + 1] = (float)cos(th);
            S[2 * i] = -(float)sin(th);
            S[2 * i + 1] = (float)sin(th);
        }
    }
    compute_digest(m);
    *out = m;
    return LMK_OK;
fail:
    lmk_model_close(m);
    return rc;
}

LMK_API const lmk_model_info *lmk_model_get_info(const lmk_model *m) { return &m->info; }
LMK_API const lmk_tokenizer *lmk_model_tokenizer(const lmk_model *m) { return m->tok; }
LMK_API lmk_gguf *lmk_model_gguf(const lmk_model *m) { return m->g; }
LMK_API void lmk_model_set_threads(lmk_model *m, int n) { m->n_threads = n > 0 ? n : 1; }

LMK_API void lmk_model_session_opts(const lmk_model *m, lmk_pos_kind pos, int block_len,
                                    lmk_session_opts *o, char *fp)
{
    const lmk_model_info *H = &m->info;
    *o = lmk_session_opts_default();
    o->n_layers = H->n_layers;
    o->n_heads = H->n_heads;
    o->n_kv_heads = H->n_kv_heads;
    o->head_dim = H->head_dim;
    if (H->mem_freq > 0) {
        o->block_len = H->mem_freq + 1;
        o->landmark = LMK_LANDMARK_TOKEN;
    } else {
        o->block_len = block_len > 0 ? block_len : 64;
        o->landmark = LMK_LANDMARK_MEAN;
    }
    /* The key frame is part of the fingerprint: a session written with rotated keys must
     * not be continued with a policy that expects unrotated ones. */
    snprintf(fp, 256, "lmk-model/1 gguf=%s keys=%s block=%d landmark=%d", H->digest,
             pos == LMK_POS_AS_GIVEN ? "rotated" : "raw", o->block_len, H->landmark_token);
    o->fingerprint = fp;
}

/* ---- contexts ---- */

struct lmk_ctx {
    lmk_model *m;
    lmk_ctx_opts o;
    lmk_attend_opts att;
    lmk_pos_policy pol;
    int block_len;         /* landmark models: mem_freq + 1; else the session's, or 0 */
    int lm;                /* landmark token inserted (landmark model) */
    int64_t n_past;
    int n_thr;             /* threads scratch was sized for */
    /* scratch (chunk rows) */
    float *x, *xn, *q, *k, *v, *att_out, *hg, *hu;
    /* representatives chosen by queries: the chunk's queries in the ranking frame */
    int want_q;
    float *qsel;           /* (chunk, n_heads, head_dim) */
    int64_t *qpos;         /* (chunk * n_heads) */
    float *lg;             /* (lg_rows, n_vocab), grown to the most logit rows asked for */
    int lg_rows;
    int32_t *ids;
    int *lrow;             /* chunk rows whose logits are wanted */
    int64_t *ldst;         /* and where they go */
    float **tile;          /* per thread: TILE_ROWS x max cols */
    /* dense backend */
    float **kc, **vc;      /* per layer (cap, n_kv_heads, head_dim), keys rotated */
    int64_t cap;
    float **sc;            /* per thread score scratch */
    int64_t *sc_cap;
    lmk_ctx_stats st;
    char err[512];
};

LMK_API lmk_ctx_opts lmk_ctx_opts_default(void)
{
    lmk_ctx_opts o;
    memset(&o, 0, sizeof o);
    o.backend = LMK_ATTN_SESSION;
    o.mode = (lmk_mode)-1;
    o.pos = LMK_POS_SLOTS;
    o.attend = lmk_attend_opts_default();
    o.chunk = 256;
    return o;
}

LMK_API void lmk_ctx_free(lmk_ctx *c)
{
    if (!c)
        return;
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->qsel);
    free(c->qpos);
    free(c->k);
    free(c->v);
    free(c->att_out);
    free(c->hg);
    free(c->hu);
    free(c->lg);
    free(c->ids);
    free(c->lrow);
    free(c->ldst);
    if (c->tile)
        for (int i = 0; i < c->n_thr; i++)
            free(c->tile[i]);
    free(c->tile);
    if (c->kc)
        for (int l = 0; l < c->m->info.n_layers; l++) {
            free(c->kc[l]);
            free(c->vc[l]);
        }
    free(c->kc);
    free(c->vc);
    if (c->sc)
        for (int i = 0; i < c->n_thr; i++)
            free(c->sc[i]);
    free(c->sc);
    free(c->sc_cap);
    free(c);
}

LMK_API const char *lmk_ctx_errmsg(const lmk_ctx *c) { return c ? c->err : "no context"; }
LMK_API int64_t lmk_ctx_n_past(const lmk_ctx *c) { return c->n_past; }

LMK_API int64_t lmk_ctx_n_regular(const lmk_ctx *c)
{
    return c->lm ? c->n_past - c->n_past / c->block_len : c->n_past;
}

LMK_API void lmk_ctx_get_stats(const lmk_ctx *c, lmk_ctx_stats *st) { *st = c->st; }

LMK_API void lmk_ctx_set_attend(lmk_ctx *c, const lmk_attend_opts *a)
{
    const lmk_pos_policy *pos = c->att.pos;
    lmk_mode mode = c->att.mode;
    c->att = *a;
    c->att.pos = pos;
    c->att.mode = mode;
}

LMK_API int lmk_ctx_open(lmk_model *m, const lmk_ctx_opts *opts, lmk_ctx **out, char *err,
                         size_t cap)
{
    *out = NULL;
    const lmk_model_info *H = &m->info;
    lmk_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return set_err(err, cap, ENOMEM, "out of memory");
    c->m = m;
    c->o = opts ? *opts : lmk_ctx_opts_default();
    if (c->o.chunk <= 1)
        c->o.chunk = 256;
    if ((int)c->o.mode == -1)
        c->o.mode = H->mem_freq > 0 ? LMK_MODE_GROUPED : LMK_MODE_UNION;
    c->lm = H->mem_freq > 0;
    c->block_len = c->lm ? H->mem_freq + 1 : 0;
    int rc = LMK_OK;
    if (c->o.mode == LMK_MODE_GROUPED && !c->lm) {
        rc = set_err(err, cap, LMK_EINVAL, "grouped softmax needs a landmark-trained model "
                     "(use union)");
        goto fail;
    }
    if (c->o.backend == LMK_ATTN_SESSION) {
        lmk_session_info si;
        if (!c->o.session) {
            rc = set_err(err, cap, LMK_EINVAL, "no session given");
            goto fail;
        }
        if ((rc = lmk_session_info_get(c->o.session, &si)) != 0) {
            set_err(err, cap, rc, "%s", lmk_session_errmsg(c->o.session));
            goto fail;
        }
        if (si.n_layers != H->n_layers || si.n_heads != H->n_heads ||
            si.n_kv_heads != H->n_kv_heads || si.head_dim != H->head_dim ||
            (c->lm && (si.block_len != c->block_len || si.landmark != LMK_LANDMARK_TOKEN))) {
            rc = set_err(err, cap, LMK_EMISMATCH, "the session's shape (%d layers, %d/%d heads "
                         "of %d, blocks of %d) does not match the model", si.n_layers,
                         si.n_heads, si.n_kv_heads, si.head_dim, si.block_len);
            goto fail;
        }
        if (!c->lm)
            c->block_len = si.block_len;
        c->n_past = si.tokens;
        for (int l = 0; l < H->n_layers; l++)
            if (lmk_session_tokens(c->o.session, l) != si.tokens) {
                /* Layers of different lengths: an interrupted chunk; cut back to the
                 * common prefix so every layer agrees. */
                if ((rc = lmk_session_truncate(c->o.session, si.tokens)) != 0) {
                    set_err(err, cap, rc, "%s", lmk_session_errmsg(c->o.session));
                    goto fail;
                }
                break;
            }
        c->want_q = si.landmark == LMK_LANDMARK_ATTN || si.landmark == LMK_LANDMARK_QUERY ||
                    c->o.record != NULL;
        c->att = c->o.attend;
        c->att.mode = c->o.mode;
        c->pol.kind = c->o.pos;
        c->pol.rotate = lmk_model_rotate;
        c->pol.ud = m;
        c->pol.rank_pos = c->block_len - 1;
        c->pol.fixed_distance = c->o.fixed_distance;
        c->att.pos = c->o.pos == LMK_POS_AS_GIVEN ? NULL : &c->pol;
    } else {
        if (c->o.pos != LMK_POS_AS_GIVEN && c->o.pos != LMK_POS_SLOTS) {
            rc = set_err(err, cap, LMK_EINVAL, "dense attention uses absolute positions");
            goto fail;
        }
        c->kc = calloc((size_t)H->n_layers, sizeof *c->kc);
        c->vc = calloc((size_t)H->n_layers, sizeof *c->vc);
        if (!c->kc || !c->vc) {
            rc = set_err(err, cap, ENOMEM, "out of memory");
            goto fail;
        }
    }
    int C = c->o.chunk, E = H->n_embd, nq = H->n_heads * H->head_dim;
    int nkv = H->n_kv_heads * H->head_dim;
    c->x = malloc((size_t)C * E * sizeof(float));
    c->xn = malloc((size_t)C * E * sizeof(float));
    c->q = malloc((size_t)C * nq * sizeof(float));
    c->k = malloc((size_t)C * nkv * sizeof(float));
    c->v = malloc((size_t)C * nkv * sizeof(float));
    c->att_out = malloc((size_t)C * nq * sizeof(float));
    c->hg = malloc((size_t)C * H->n_ff * sizeof(float));
    c->hu = malloc((size_t)C * H->n_ff * sizeof(float));
    c->ids = malloc((size_t)C * sizeof(int32_t));
    c->lrow = malloc((size_t)C * sizeof(int));
    c->ldst = malloc((size_t)C * sizeof(int64_t));
    if (c->want_q) {
        c->qsel = malloc((size_t)C * nq * sizeof(float));
        c->qpos = malloc((size_t)C * H->n_heads * sizeof(int64_t));
        if (!c->qsel || !c->qpos) {
            rc = set_err(err, cap, ENOMEM, "out of memory");
            goto fail;
        }
    }
    c->n_thr = m->n_threads;
    c->tile = calloc((size_t)c->n_thr, sizeof *c->tile);
    c->sc = calloc((size_t)c->n_thr, sizeof *c->sc);
    c->sc_cap = calloc((size_t)c->n_thr, sizeof *c->sc_cap);
    int64_t maxcols = E > H->n_ff ? E : H->n_ff;
    if (nq > maxcols)
        maxcols = nq;
    int ok = c->x && c->xn && c->q && c->k && c->v && c->att_out && c->hg && c->hu &&
             c->ids && c->lrow && c->ldst && c->tile && c->sc && c->sc_cap;
    for (int i = 0; ok && i < c->n_thr; i++)
        ok = (c->tile[i] = malloc((size_t)TILE_ROWS * maxcols * sizeof(float))) != NULL;
    if (!ok) {
        rc = set_err(err, cap, ENOMEM, "out of memory for a chunk of %d", C);
        goto fail;
    }
    *out = c;
    return LMK_OK;
fail:
    lmk_ctx_free(c);
    return rc;
}

/* ---- forward pass pieces ---- */

/* y (n, w->rows) = x (n, w->cols) . w^T, or += when acc. Fixed 64-row tiles of w, one
 * single-threaded BLAS call each, so the result is the same for any thread count. */
static void matmul(lmk_ctx *c, const wmat *w, const float *x, int64_t n, float *y, int acc)
{
    int64_t n_tiles = (w->rows + TILE_ROWS - 1) / TILE_ROWS, cols = w->cols, rows = w->rows;
    int nt = c->m->n_threads < c->n_thr ? c->m->n_threads : c->n_thr;
    if (nt > n_tiles)
        nt = (int)n_tiles;
    if ((double)n * (double)rows * (double)cols < (double)(1 << 21))
        nt = 1; /* a parallel region costs more than it saves on small products */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t t = 0; t < n_tiles; t++) {
        int64_t r0 = t * TILE_ROWS, nr = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        const float *wt = w->f ? w->f + r0 * cols : NULL;
        if (!wt) {
            float *s = c->tile[omp_get_thread_num()];
            lmk_gguf_tensor_rows_f32(w->t, r0, nr, s); /* type checked at open */
            wt = s;
        }
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nr, (int)cols, 1.0f, wt, (int)cols, x,
                        1, acc ? 1.0f : 0.0f, y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)cols,
                        1.0f, x, (int)cols, wt, (int)cols, acc ? 1.0f : 0.0f, y + r0,
                        (int)rows);
    }
}

static void rmsnorm(const float *x, const float *w, int64_t n, int E, float eps, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * E;
        double ss = 0;
        for (int j = 0; j < E; j++)
            ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / E + eps));
        for (int j = 0; j < E; j++)
            y[i * E + j] = xi[j] * r * w[j];
    }
}

/* Dense reference attention weights for one query at position p over scores s[0..p]
 * (scaled dot products with keys at their absolute positions); written in place, zeros
 * for positions the query does not read. */
static void dense_weights(const lmk_ctx *c, float *s, int64_t p)
{
    int L = c->block_len;
    int64_t c0 = L > 0 ? p / L * L : 0;
    if (c->lm && c->o.mode == LMK_MODE_GROUPED) {
        /* One softmax over the current block's tokens and the landmark gates of every
         * earlier block; inside each block a softmax over its L - 1 regular tokens. */
        float mx = -INFINITY;
        for (int64_t j = c0; j <= p; j++)
            mx = s[j] > mx ? s[j] : mx;
        for (int64_t b = 0; b < c0 / L; b++)
            mx = s[b * L + L - 1] > mx ? s[b * L + L - 1] : mx;
        double z = 0;
        for (int64_t j = c0; j <= p; j++)
            z += exp((double)s[j] - mx);
        for (int64_t b = 0; b < c0 / L; b++)
            z += exp((double)s[b * L + L - 1] - mx);
        for (int64_t b = 0; b < c0 / L; b++) {
            float *bs = s + b * L;
            double pb = exp((double)bs[L - 1] - mx) / z;
            float bm = -INFINITY;
            for (int i = 0; i < L - 1; i++)
                bm = bs[i] > bm ? bs[i] : bm;
            double bz = 0;
            for (int i = 0; i < L - 1; i++)
                bz += exp((double)bs[i] - bm);
            for (int i = 0; i < L - 1; i++)
                bs[i] = (float)(pb * exp((double)bs[i] - bm) / bz);
            bs[L - 1] = 0;
        }
        for (int64_t j = c0; j <= p; j++)
            s[j] = (float)(exp((double)s[j] - mx) / z);
        return;
    }
    /* Plain softmax; a landmark model's sealed landmark tokens are not read (union). */
    float mx = -INFINITY;
    for (int64_t j = 0; j <= p; j++) {
        if (c->lm && j < c0 && j % L == L - 1)
            continue;
        mx = s[j] > mx ? s[j] : mx;
    }
    double z = 0;
    for (int64_t j = 0; j <= p; j++) {
        if (c->lm && j < c0 && j % L == L - 1)
            continue;
        z += exp((double)s[j] - mx);
    }
    for (int64_t j = 0; j <= p; j++)
        s[j] = c->lm && j < c0 && j % L == L - 1 ? 0.0f : (float)(exp((double)s[j] - mx) / z);
}

static int dense_attend(lmk_ctx *c, int layer, int64_t n, float *q, float *out)
{
    const lmk_model_info *H = &c->m->info;
    int hd = H->head_dim, nh = H->n_heads, nkv = H->n_kv_heads, grp = nh / nkv;
    int64_t T = c->n_past + n;
    const float *K = c->kc[layer], *V = c->vc[layer];
    float scale = 1.0f / sqrtf((float)hd);
    int nt = c->m->n_threads < c->n_thr ? c->m->n_threads : c->n_thr;
    for (int i = 0; i < nt; i++) {
        int64_t need = (int64_t)DENSE_QB * T;
        if (c->sc_cap[i] < need) {
            int64_t cap = need * 2;
            float *p = realloc(c->sc[i], (size_t)cap * sizeof(float));
            if (!p)
                return ENOMEM;
            c->sc[i] = p;
            c->sc_cap[i] = cap;
        }
    }
    int64_t n_qb = (n + DENSE_QB - 1) / DENSE_QB;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) collapse(2)
    for (int h = 0; h < nh; h++)
        for (int64_t qb = 0; qb < n_qb; qb++) {
            float *S = c->sc[omp_get_thread_num()];
            int g = h / grp;
            int64_t i0 = qb * DENSE_QB, m = n - i0 < DENSE_QB ? n - i0 : DENSE_QB;
            int64_t Tq = c->n_past + i0 + m; /* keys up to the block's last query */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)Tq, hd, scale,
                        q + (i0 * nh + h) * hd, nh * hd, K + (size_t)g * hd, nkv * hd, 0.0f,
                        S, (int)Tq);
            for (int64_t r = 0; r < m; r++) {
                int64_t p = c->n_past + i0 + r;
                float *s = S + r * Tq;
                dense_weights(c, s, p);
                for (int64_t j = p + 1; j < Tq; j++)
                    s[j] = 0;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, hd, (int)Tq, 1.0f, S,
                        (int)Tq, V + (size_t)g * hd, nkv * hd, 0.0f, out + (i0 * nh + h) * hd,
                        nh * hd);
        }
    return LMK_OK;
}

static int attention(lmk_ctx *c, int layer, int64_t n, float *out)
{
    const lmk_model_info *H = &c->m->info;
    int nkvd = H->n_kv_heads * H->head_dim;
    if (c->o.backend == LMK_ATTN_DENSE) {
        rope_rows(c->m, c->q, n, H->n_heads, c->n_past);
        rope_rows(c->m, c->k, n, H->n_kv_heads, c->n_past);
        memcpy(c->kc[layer] + (size_t)c->n_past * nkvd, c->k, (size_t)n * nkvd * sizeof(float));
        memcpy(c->vc[layer] + (size_t)c->n_past * nkvd, c->v, (size_t)n * nkvd * sizeof(float));
        int rc = dense_attend(c, layer, n, c->q, out);
        if (rc)
            set_err(c->err, sizeof c->err, rc, "dense attention: out of memory");
        return rc;
    }
    if (c->o.pos == LMK_POS_AS_GIVEN) { /* "original": keys and queries at absolute positions */
        rope_rows(c->m, c->q, n, H->n_heads, c->n_past);
        rope_rows(c->m, c->k, n, H->n_kv_heads, c->n_past);
    }
    const float *qsel = NULL;
    if (c->want_q) {
        /* the ranking frame: under fixed positions a query meets every retrieved key at the
         * fixed distance; otherwise the frame keys are stored in */
        memcpy(c->qsel, c->q, (size_t)n * H->n_heads * H->head_dim * sizeof(float));
        if (c->o.pos == LMK_POS_FIXED) {
            for (int64_t i = 0; i < n * H->n_heads; i++)
                c->qpos[i] = c->o.fixed_distance;
            lmk_model_rotate(c->m, c->qsel, (int)(n * H->n_heads), H->head_dim, c->qpos);
        }
        qsel = c->qsel;
    }
    if (c->o.record)
        c->o.record(c->o.record_ud, layer, n, c->k, c->v, qsel);
    int rc = lmk_session_append_q(c->o.session, layer, n, c->k, c->v, qsel);
    if (rc)
        return set_err(c->err, sizeof c->err, rc, "session append (layer %d): %s", layer,
                       lmk_session_errmsg(c->o.session));
    lmk_attend_stats st;
    memset(&st, 0, sizeof st);
    rc = lmk_session_attend(c->o.session, layer, n, c->q, &c->att, out, &st);
    if (rc)
        return set_err(c->err, sizeof c->err, rc, "session attend (layer %d): %s", layer,
                       lmk_session_errmsg(c->o.session));
    c->st.attend.search_s += st.search_s;
    c->st.attend.fetch_s += st.fetch_s;
    c->st.attend.attn_s += st.attn_s;
    c->st.attend.blocks_fetched += st.blocks_fetched;
    c->st.attend.bytes_fetched += st.bytes_fetched;
    return LMK_OK;
}

static int dense_reserve(lmk_ctx *c, int64_t T)
{
    if (T <= c->cap)
        return LMK_OK;
    if (c->o.dense_max_tokens > 0 && T > c->o.dense_max_tokens)
        return set_err(c->err, sizeof c->err, LMK_EINVAL,
                       "dense attention is limited to %lld tokens here",
                       (long long)c->o.dense_max_tokens);
    const lmk_model_info *H = &c->m->info;
    int64_t cap = c->cap ? c->cap : 1024;
    while (cap < T)
        cap *= 2;
    size_t row = (size_t)H->n_kv_heads * H->head_dim * sizeof(float);
    for (int l = 0; l < H->n_layers; l++) {
        float *k = realloc(c->kc[l], (size_t)cap * row);
        if (k)
            c->kc[l] = k;
        float *v = realloc(c->vc[l], (size_t)cap * row);
        if (v)
            c->vc[l] = v;
        if (!k || !v)
            return set_err(c->err, sizeof c->err, ENOMEM,
                           "out of memory for a dense cache of %lld tokens", (long long)cap);
    }
    c->cap = cap;
    return LMK_OK;
}

/* Run positions ids[0..n) (n <= chunk) at c->n_past..; logits of chunk rows lrow[i] go to
 * logits + ldst[i] * n_vocab. */
static int forward(lmk_ctx *c, const int32_t *ids, int64_t n, int n_out, float *logits)
{
    const lmk_model *m = c->m;
    const lmk_model_info *H = &m->info;
    int E = H->n_embd;
    int rc;
    if (c->o.backend == LMK_ATTN_DENSE && (rc = dense_reserve(c, c->n_past + n)) != 0)
        return rc;
    if (n_out > c->lg_rows) {
        float *lg = realloc(c->lg, (size_t)n_out * H->n_vocab * sizeof(float));
        if (!lg)
            return set_err(c->err, sizeof c->err, ENOMEM, "out of memory for logits");
        c->lg = lg;
        c->lg_rows = n_out;
    }
    double t0 = now_s(), ta = 0;
    for (int64_t i = 0; i < n; i++)
        lmk_gguf_tensor_rows_f32(m->embd.t, ids[i], 1, c->x + i * E);
    for (int l = 0; l < H->n_layers; l++) {
        const layer_w *L = &m->layers[l];
        rmsnorm(c->x, L->attn_norm, n, E, H->rms_eps, c->xn);
        matmul(c, &L->wq, c->xn, n, c->q, 0);
        matmul(c, &L->wk, c->xn, n, c->k, 0);
        matmul(c, &L->wv, c->xn, n, c->v, 0);
        double t1 = now_s();
        rc = attention(c, l, n, c->att_out);
        ta += now_s() - t1;
        if (rc)
            return rc;
        matmul(c, &L->wo, c->att_out, n, c->x, 1);
        rmsnorm(c->x, L->ffn_norm, n, E, H->rms_eps, c->xn);
        matmul(c, &L->wg, c->xn, n, c->hg, 0);
        matmul(c, &L->wu, c->xn, n, c->hu, 0);
        int64_t nf = n * H->n_ff;
        for (int64_t i = 0; i < nf; i++) {
            float g = c->hg[i];
            c->hg[i] = g / (1.0f + expf(-g)) * c->hu[i];
        }
        matmul(c, &L->wd, c->hg, n, c->x, 1);
    }
    if (n_out > 0) {
        for (int i = 0; i < n_out; i++)
            rmsnorm(c->x + (size_t)c->lrow[i] * E, m->out_norm, 1, E, H->rms_eps,
                    c->xn + (size_t)i * E);
        matmul(c, &m->out, c->xn, n_out, c->lg, 0);
        for (int i = 0; i < n_out; i++)
            memcpy(logits + c->ldst[i] * H->n_vocab, c->lg + (size_t)i * H->n_vocab,
                   (size_t)H->n_vocab * sizeof(float));
    }
    c->st.attn_s += ta;
    c->st.matmul_s += now_s() - t0 - ta;
    c->st.positions += n;
    c->n_past += n;
    return LMK_OK;
}

/* Undo a failed call: the session (or dense cache) goes back to n_past positions. */
static int rollback(lmk_ctx *c, int64_t n_past, int rc)
{
    if (c->o.backend == LMK_ATTN_SESSION) {
        int64_t have = lmk_session_tokens(c->o.session, 0);
        int need = have != n_past;
        for (int l = 1; l < c->m->info.n_layers && !need; l++)
            need = lmk_session_tokens(c->o.session, l) != n_past;
        if (need) {
            int rc2 = lmk_session_truncate(c->o.session, n_past);
            if (rc2) {
                size_t len = strlen(c->err);
                snprintf(c->err + len, sizeof c->err - len, "; and undoing it failed: %s",
                         lmk_session_errmsg(c->o.session));
            }
        }
    }
    c->n_past = n_past;
    return rc;
}

static int check_ids(lmk_ctx *c, const int32_t *ids, int64_t n, int64_t n_logits)
{
    if (n < 0 || n_logits < 0 || n_logits > n)
        return set_err(c->err, sizeof c->err, LMK_EINVAL, "bad token or logits count");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->m->info.n_vocab)
            return set_err(c->err, sizeof c->err, LMK_EINVAL, "token id %d out of range",
                           ids[i]);
    return LMK_OK;
}

LMK_API int lmk_ctx_feed(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits,
                         int64_t n_logits)
{
    int rc = check_ids(c, ids, n, n_logits);
    if (rc)
        return rc;
    if (!logits)
        n_logits = 0;
    int64_t start = c->n_past, first = n - n_logits, i = 0;
    int64_t total = n + (c->lm ? (start % c->block_len + n) / (c->block_len - 1) + 1 : 0);
    while (i < n) {
        int64_t mpos = 0;
        int n_out = 0;
        /* Leave room for a landmark right after the chunk's last regular token. */
        while (mpos < c->o.chunk - 1 && i < n) {
            int64_t pos = c->n_past + mpos;
            if (c->lm && pos % c->block_len == c->block_len - 1) {
                c->ids[mpos++] = c->m->info.landmark_token;
                continue;
            }
            int64_t row = mpos;
            c->ids[mpos++] = ids[i];
            if (c->lm && c->o.next_from == LMK_NEXT_FROM_LANDMARK &&
                (pos + 1) % c->block_len == c->block_len - 1) {
                row = mpos;
                c->ids[mpos++] = c->m->info.landmark_token;
            }
            if (i >= first) {
                c->lrow[n_out] = (int)row;
                c->ldst[n_out] = i - first;
                n_out++;
            }
            i++;
        }
        if ((rc = forward(c, c->ids, mpos, n_out, logits)) != 0)
            return rollback(c, start, rc);
        if (c->o.progress)
            c->o.progress(c->o.progress_ud, c->n_past - start, total);
    }
    return LMK_OK;
}

LMK_API int lmk_ctx_feed_raw(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits,
                             int64_t n_logits)
{
    int rc = check_ids(c, ids, n, n_logits);
    if (rc)
        return rc;
    if (!logits)
        n_logits = 0;
    int64_t start = c->n_past;
    for (int64_t i = 0; i < n;) {
        int64_t m = n - i < c->o.chunk ? n - i : c->o.chunk;
        int n_out = 0;
        for (int64_t r = 0; r < m; r++)
            if (i + r >= n - n_logits) {
                c->lrow[n_out] = (int)r;
                c->ldst[n_out] = i + r - (n - n_logits);
                n_out++;
            }
        memcpy(c->ids, ids + i, (size_t)m * sizeof(int32_t));
        if ((rc = forward(c, c->ids, m, n_out, logits)) != 0)
            return rollback(c, start, rc);
        i += m;
        if (c->o.progress)
            c->o.progress(c->o.progress_ud, c->n_past - start, n);
    }
    return LMK_OK;
}
