/* Loading a GGUF LLaMA-family model (llama, mistral, qwen2, qwen3, phi3): hyperparameters,
 * weights (used in place from the file mapping, in their GGUF type), rotary tables and the
 * digest that fingerprints sessions. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_model_impl.h"
#include "lmk_quant.h"

LMK_API lmk_model_opts lmk_model_opts_default(void)
{
    lmk_model_opts o;
    memset(&o, 0, sizeof o);
    o.n_threads = 1;
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
                              "tensor '%s' has type %s, which is not supported (F32, F16, "
                              "BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, "
                              "Q6_K, IQ4_NL and IQ4_XS are)",
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

/* Rows [row0, row0 + rows) of the tensor `name` of total_rows rows of cols values, in
 * place: nothing is copied or converted. */
static int load_mat_rows(lmk_model *m, const char *name, int64_t total_rows, int64_t row0,
                         int64_t rows, int64_t cols, wmat *w, char *err, size_t cap)
{
    memset(w, 0, sizeof *w);
    int rc = get_tensor(m, name, cols, total_rows, &w->t, err, cap);
    if (rc)
        return rc;
    size_t rb;
    if (lmk_quant_row_size(w->t->type, cols, &rb) != LMK_OK)
        return lmk_model__err(err, cap, LMK_EFORMAT, "tensor '%s': rows of %lld values do not "
                              "fit type %s", name, (long long)cols, lmk_ggml_type_name(w->t->type));
    size_t ab;
    if (lmk_quant_act_size(w->t->type, cols, &ab) == LMK_OK && ab > m->act_row_bytes)
        m->act_row_bytes = ab;
    w->type = w->t->type;
    w->row_bytes = rb;
    w->data = w->t->data + (size_t)row0 * rb;
    w->rows = rows;
    w->cols = cols;
    if (w->type == LMK_GGML_F32 && ((uintptr_t)w->data % sizeof(float)) == 0)
        w->f = (const float *)(const void *)w->data;
    return LMK_OK;
}

static int load_mat(lmk_model *m, const char *name, int64_t rows, int64_t cols, wmat *w,
                    char *err, size_t cap)
{
    return load_mat_rows(m, name, rows, 0, rows, cols, w, err, cap);
}

LMK_API void lmk_model_close(lmk_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int l = 0; l < m->info.n_layers; l++) {
            layer_w *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
            free(L->q_norm);
            free(L->k_norm);
        }
        free(m->layers);
    }
    free(m->out_norm);
    free(m->freq_factors);
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
    if (strcmp(H->arch, "llama") && strcmp(H->arch, "mistral") && strcmp(H->arch, "qwen2") &&
        strcmp(H->arch, "qwen3") && strcmp(H->arch, "phi3"))
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "architecture '%s' is not supported (llama, mistral, qwen2, "
                              "qwen3 and phi3 are)",
                              H->arch);
    /* ggml's rope type per architecture: llama's adjacent pairs, the others' halves. */
    m->rope = strcmp(H->arch, "llama") && strcmp(H->arch, "mistral") ? ROPE_NEOX : ROPE_NORM;
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
    uint32_t key_len = 0, val_len = 0;
    int have_kl = arch_key_u32(m, "attention.key_length", &key_len, 0, err, cap) == 0;
    if (arch_key_u32(m, "attention.value_length", &val_len, 0, err, cap) == 0 && have_kl &&
        val_len != key_len)
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "value_length %u differs from key_length %u", val_len, key_len);
    if (H->n_layers < 1 || H->n_layers > 4096 || H->n_embd < 2 || H->n_embd > (1 << 17) ||
        H->n_ff < 1 || H->n_ff > (1 << 20) || H->n_heads < 1 || H->n_heads > 4096 ||
        H->n_kv_heads < 1 || H->n_heads % H->n_kv_heads ||
        (!have_kl && H->n_embd % H->n_heads) || (have_kl && (key_len < 2 || key_len > 4096)))
        return lmk_model__err(
            err, cap, LMK_EFORMAT,
            "inconsistent hyperparameters: %d layers, width %d, ffn %d, %d heads, "
            "%d KV heads",
            H->n_layers, H->n_embd, H->n_ff, H->n_heads, H->n_kv_heads);
    /* qwen3 has heads wider than width / heads (key_length). */
    H->head_dim = have_kl ? (int)key_len : H->n_embd / H->n_heads;
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
    int is_qwen2 = !strcmp(H->arch, "qwen2"), is_qwen3 = !strcmp(H->arch, "qwen3");
    int is_phi3 = !strcmp(H->arch, "phi3");
    if (!is_qwen2 && lmk_gguf_find_tensor(m->g, "blk.0.attn_q.bias")) {
        rc = lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                            "attention biases are not supported for architecture '%s'", H->arch);
        goto fail;
    }
    if (is_phi3 && (lmk_gguf_find_tensor(m->g, "rope_factors_long.weight") ||
                    lmk_gguf_find_tensor(m->g, "rope_factors_short.weight"))) {
        rc = lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                            "phi3 long-context rope factors (rope_factors_long/short) are not "
                            "supported");
        goto fail;
    }
    m->layers = calloc((size_t)H->n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
        goto fail;
    }
    for (int l = 0; l < H->n_layers; l++) {
        layer_w *L = &m->layers[l];
        char nm[96];
#define NAME(suffix) snprintf(nm, sizeof nm, "blk.%d." suffix, l)
#define TRY(call)                                                                  \
    if ((rc = (call)) != 0)                                                        \
        goto fail;
        NAME("attn_norm.weight");
        TRY(load_vec(m, nm, E, &L->attn_norm, err, cap));
        NAME("ffn_norm.weight");
        TRY(load_vec(m, nm, E, &L->ffn_norm, err, cap));
        NAME("attn_qkv.weight");
        if (is_phi3 && lmk_gguf_find_tensor(m->g, nm)) { /* fused: rows q | k | v */
            int64_t tot = (int64_t)nq + 2 * nkv;
            TRY(load_mat_rows(m, nm, tot, 0, nq, E, &L->wq, err, cap));
            TRY(load_mat_rows(m, nm, tot, nq, nkv, E, &L->wk, err, cap));
            TRY(load_mat_rows(m, nm, tot, nq + nkv, nkv, E, &L->wv, err, cap));
        } else {
            NAME("attn_q.weight");
            TRY(load_mat(m, nm, nq, E, &L->wq, err, cap));
            NAME("attn_k.weight");
            TRY(load_mat(m, nm, nkv, E, &L->wk, err, cap));
            NAME("attn_v.weight");
            TRY(load_mat(m, nm, nkv, E, &L->wv, err, cap));
        }
        NAME("attn_output.weight");
        TRY(load_mat(m, nm, E, nq, &L->wo, err, cap));
        if (is_phi3) { /* fused: rows gate | up */
            NAME("ffn_up.weight");
            TRY(load_mat_rows(m, nm, 2 * (int64_t)H->n_ff, 0, H->n_ff, E, &L->wg, err, cap));
            TRY(load_mat_rows(m, nm, 2 * (int64_t)H->n_ff, H->n_ff, H->n_ff, E, &L->wu, err,
                              cap));
        } else {
            NAME("ffn_gate.weight");
            TRY(load_mat(m, nm, H->n_ff, E, &L->wg, err, cap));
            NAME("ffn_up.weight");
            TRY(load_mat(m, nm, H->n_ff, E, &L->wu, err, cap));
        }
        NAME("ffn_down.weight");
        TRY(load_mat(m, nm, E, H->n_ff, &L->wd, err, cap));
        if (is_qwen2) {
            NAME("attn_q.bias");
            TRY(load_vec(m, nm, nq, &L->bq, err, cap));
            NAME("attn_k.bias");
            TRY(load_vec(m, nm, nkv, &L->bk, err, cap));
            NAME("attn_v.bias");
            TRY(load_vec(m, nm, nkv, &L->bv, err, cap));
        }
        if (is_qwen3) {
            NAME("attn_q_norm.weight");
            TRY(load_vec(m, nm, hd, &L->q_norm, err, cap));
            NAME("attn_k_norm.weight");
            TRY(load_vec(m, nm, hd, &L->k_norm, err, cap));
        }
#undef NAME
#undef TRY
    }
    H->weight_type = m->layers[0].wq.t->type;
    H->n_params = 0;
    for (int64_t i = 0; i < lmk_gguf_n_tensors(m->g); i++)
        H->n_params += (uint64_t)lmk_gguf_tensor_at(m->g, i)->n_elements;

    /* rope_freqs.weight (llama 3.1, 3.2) divides each frequency */
    if (lmk_gguf_find_tensor(m->g, "rope_freqs.weight") &&
        (rc = load_vec(m, "rope_freqs.weight", H->rope_dim / 2, &m->freq_factors, err, cap)) != 0)
        goto fail;
    rc = lmk_model__rope_init(m);
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
