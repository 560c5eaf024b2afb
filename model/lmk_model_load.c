/* Loading a GGUF LLaMA-family model: hyperparameters, weights (kept in their GGUF type and
 * converted tile by tile, or converted to f32 up front within convert_limit), rotary tables
 * and the digest that fingerprints sessions. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_model_impl.h"

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

/* ---- loading ---- */

static int get_tensor(lmk_model *m, const char *name, int64_t cols, int64_t rows,
                      const lmk_gguf_tensor **out, char *err, size_t cap)
{
    const lmk_gguf_tensor *t = lmk_gguf_find_tensor(m->g, name);
    *out = t;
    if (!t)
        return lmk_model__err(err, cap, LMK_ENOTFOUND, "missing tensor '%s'", name);
    int64_t want_dims = rows > 1 ? 2 : 1;
    int ok = t->dims[0] == cols && t->n_rows == rows && t->n_dims <= 2 &&
             (t->n_dims == want_dims || (rows == 1 && t->n_dims == 2));
    if (!ok)
        return lmk_model__err(err, cap, LMK_EFORMAT,
                              "tensor '%s' has shape [%lld, %lld], expected "
                              "[%lld, %lld]",
                              name, (long long)t->dims[0], (long long)t->dims[1], (long long)cols,
                              (long long)rows);
    if (!t->supported)
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "tensor '%s' has type %s, which is not "
                              "supported (F32, F16, BF16, Q8_0 and Q4_0 are)",
                              name, lmk_ggml_type_name(t->type));
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
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
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

/* A 64-bit hash of every byte of p[0..n) folded into h: four independent lanes of 8-byte
 * words (multiply and rotate, as in xxHash64), so that hashing runs at memory speed. Not
 * cryptographic: it tells files apart, it does not resist a file forged to collide. */
static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, uint64_t n)
{
    const uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full,
                   P3 = 0x165667B19E3779F9ull;
    uint64_t v[4] = {h + P1 + P2, h + P2, h, h - P1};
    uint64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            v[k] = rotl64(v[k] + w * P2, 31) * P1;
        }
    uint64_t d = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) + rotl64(v[3], 18) + n;
    for (; i < n; i++)
        d = rotl64(d ^ (p[i] * P3), 11) * P1;
    d ^= d >> 33;
    d *= P2;
    d ^= d >> 29;
    d *= P3;
    return d ^ (d >> 32);
}

/* Hash of the whole GGUF header (metadata and tensor table) and of every byte of every
 * tensor's data: any change to what the model computes with changes the digest (barring a
 * 64-bit collision). The bytes not covered are alignment padding, which nothing reads. The
 * cost is one pass over the mapped file (measured in model/README.md). */
static void compute_digest(lmk_model *m)
{
    size_t hs;
    const uint8_t *h = lmk_gguf_header(m->g, &hs);
    uint64_t d = hash_bytes(0x6c6d6b2d67677566ull, h, hs);
    for (int64_t i = 0; i < lmk_gguf_n_tensors(m->g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(m->g, i);
        d = hash_bytes(d, t->data, t->n_bytes);
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
        return lmk_model__err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    return LMK_OK;
}

static int arch_key_f32(lmk_model *m, const char *suffix, float *v, char *err, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->info.arch, suffix);
    int rc = lmk_gguf_get_f32(m->g, key, v);
    if (rc && rc != LMK_ENOTFOUND)
        return lmk_model__err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    return rc;
}

static int load_hparams(lmk_model *m, const lmk_model_opts *o, char *err, size_t cap)
{
    lmk_model_info *H = &m->info;
    int rc = lmk_gguf_get_strz(m->g, "general.architecture", H->arch, sizeof H->arch);
    if (rc)
        return lmk_model__err(err, cap, rc, "%s", lmk_gguf_errmsg(m->g));
    if (strcmp(H->arch, "llama") && strcmp(H->arch, "mistral"))
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "architecture '%s' is not supported (llama and mistral are)",
                              H->arch);
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
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "%s.attention.head_count_kv is not one "
                              "integer (per-layer KV head counts are not supported)",
                              H->arch);
    H->n_kv_heads = (int)v;
    if (H->n_layers < 1 || H->n_layers > 4096 || H->n_embd < 2 || H->n_embd > (1 << 17) ||
        H->n_ff < 1 || H->n_ff > (1 << 20) || H->n_heads < 1 || H->n_heads > 4096 ||
        H->n_kv_heads < 1 || H->n_heads % H->n_kv_heads || H->n_embd % H->n_heads)
        return lmk_model__err(
            err, cap, LMK_EFORMAT,
            "inconsistent hyperparameters: %d layers, width %d, ffn %d, %d heads, "
            "%d KV heads",
            H->n_layers, H->n_embd, H->n_ff, H->n_heads, H->n_kv_heads);
    H->head_dim = H->n_embd / H->n_heads;
    if (arch_key_u32(m, "attention.key_length", &v, 0, err, cap) == 0 &&
        (int)v != H->head_dim)
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "key_length %u differs from width/heads %d", v, H->head_dim);
    H->rope_dim = H->head_dim;
    if (arch_key_u32(m, "rope.dimension_count", &v, 0, err, cap) == 0)
        H->rope_dim = (int)v;
    if (H->rope_dim < 0 || H->rope_dim > H->head_dim || H->rope_dim % 2 || H->head_dim % 2)
        return lmk_model__err(err, cap, LMK_EFORMAT, "rope dimension %d does not fit head size %d",
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
            return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                                  "rope scaling '%s' is not supported (linear is)", stype);
        if ((rc = arch_key_f32(m, "rope.scaling.factor", &H->rope_scale, err, cap)) != 0)
            return lmk_model__err(err, cap, rc ? rc : LMK_EFORMAT,
                                  "linear rope scaling without "
                                  "%s.rope.scaling.factor",
                                  H->arch);
    }
    if (!(H->rope_base > 0) || !(H->rope_scale > 0) || !(H->rms_eps >= 0))
        return lmk_model__err(err, cap, LMK_EFORMAT, "invalid rope base, scale or norm epsilon");

    H->mem_freq = 0;
    H->landmark_token = -1;
    if (o->mem_freq < 0) {
        if (lmk_gguf_get_u32(m->g, "landmark.mem_freq", &v) == 0)
            H->mem_freq = (int)(v > (1u << 20) ? (1u << 20) : v);
        else if (lmk_gguf_find_key(m->g, "landmark.mem_freq") >= 0)
            return lmk_model__err(err, cap, LMK_EFORMAT, "%s", lmk_gguf_errmsg(m->g));
    } else {
        H->mem_freq = o->mem_freq;
    }
    if (H->mem_freq > 0) {
        if (o->landmark_token >= 0)
            H->landmark_token = o->landmark_token;
        else if (lmk_gguf_get_u32(m->g, "landmark.token_id", &v) == 0)
            H->landmark_token = v > INT32_MAX ? INT32_MAX : (int)v;
        else
            return lmk_model__err(err, cap, LMK_ENOTFOUND,
                                  "landmark.mem_freq is set but "
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
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
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
        rc = lmk_model__err(err, cap, LMK_ENOTFOUND, "missing tensor 'token_embd.weight'");
        goto fail;
    }
    H->n_vocab = (int)(te->n_rows > INT32_MAX ? INT32_MAX : te->n_rows);
    if (lmk_tokenizer_n_vocab(m->tok) > H->n_vocab) {
        rc = lmk_model__err(err, cap, LMK_EFORMAT,
                            "the vocabulary has %d tokens but token_embd only "
                            "%d rows",
                            lmk_tokenizer_n_vocab(m->tok), H->n_vocab);
        goto fail;
    }
    if (H->mem_freq > 0 && (H->landmark_token < 0 || H->landmark_token >= H->n_vocab)) {
        rc = lmk_model__err(err, cap, LMK_EFORMAT, "landmark token id %d is outside the vocabulary",
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
        rc = lmk_model__err(err, cap, LMK_EUNSUPPORTED, "attention biases are not supported");
        goto fail;
    }
    m->layers = calloc((size_t)H->n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
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
            rc = lmk_model__err(err, cap, rc, "converting weights to f32: %s", lmk_strerror(rc));
            goto fail;
        }
    }
    H->weight_type = m->layers[0].wq.t->type;
    H->n_params = 0;
    for (int64_t i = 0; i < lmk_gguf_n_tensors(m->g); i++)
        H->n_params += (uint64_t)lmk_gguf_tensor_at(m->g, i)->n_elements;

    float *ff = NULL; /* rope_freqs.weight (llama 3.1) divides each frequency */
    if (lmk_gguf_find_tensor(m->g, "rope_freqs.weight") &&
        (rc = load_vec(m, "rope_freqs.weight", H->rope_dim / 2, &ff, err, cap)) != 0)
        goto fail;
    rc = lmk_model__rope_init(m, ff);
    free(ff);
    if (rc) {
        rc = lmk_model__err(err, cap, rc, "out of memory");
        goto fail;
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
    snprintf(fp, 256, "lmk-model/2 gguf=%s keys=%s block=%d landmark=%d", H->digest,
             pos == LMK_POS_AS_GIVEN ? "rotated" : "raw", o->block_len, H->landmark_token);
    o->fingerprint = fp;
}
