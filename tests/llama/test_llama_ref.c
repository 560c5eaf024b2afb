/* landmark's logits against llama.cpp's, logit for logit, on the same GGUF files.
 *
 * For each architecture (llama with rope_freqs and tied embeddings, qwen2 with Q/K/V biases,
 * qwen3 with per-head Q/K norms and wide heads, phi3 with fused QKV and gate/up) the test
 * writes a random-weight F32 GGUF file (2 layers, grouped KV heads, widths of 256-value
 * super-blocks and one width that is not a multiple of 256, so llama.cpp's K-quant mixes
 * fall back to 32-blocks there), has llama.cpp's own quantizer (llama_model_quantize from the
 * fetched libllama) turn it into each tensor type and into the Q4_K_M, Q5_K_M and Q6_K mixes,
 * and for each file:
 *   - runs llama.cpp (libllama loaded with dlopen; F32 KV cache, no flash attention) over
 *     N_POS token ids in one batch, every position's logits kept;
 *   - runs landmark's dense reference over the same ids: the first PREFILL positions in
 *     chunks of 128 (the BLAS path), the rest one at a time (the quantized-activation path);
 *   - checks max |landmark - llama.cpp| <= the type's bound (and its rms), and the same
 *     argmax wherever llama.cpp's top-2 margin exceeds that bound (bounds and their reasons
 *     at Q_BOUND below);
 *   - checks that a landmark session at original positions retrieving every block gives the
 *     dense logits (<= 1e-4 while prefilling; decoding with quantized weights within the
 *     type's bound), and that the slots and fixed policies run (finite logits).
 * Default: every architecture at F32, Q8_0 and Q4_K_M, and every type on llama. --full: every
 * architecture x every type. --table: also print one markdown row per file. Without the
 * reference (fetch skipped, no llama.h at build time): exit 77 with the reason, or fail under
 * CI=true. */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lmk_gguf_write.h"
#include "lmk_model.h"
#include "lmk_quant.h"
#include "../lmk_test.h"

static int skip_or_fail(const char *why)
{
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "test_llama_ref: FAILED: %s (CI=true: the llama.cpp reference is "
                        "required)\n", why);
        return 1;
    }
    printf("test_llama_ref: SKIP: %s\n", why);
    return 77;
}

#if !__has_include("llama.h")
int main(void)
{
    return skip_or_fail("llama.h was not fetched when this test was built "
                        "(tests/llama/fetch.sh; rebuild after fetching)");
}
#else
#include "llama.h"

#define N_POS 300
#define PREFILL 250
#define N_LAYERS 2
static int g_layers = N_LAYERS; /* --make-big: more */

/* ---- the reference, through dlopen ---- */

static struct {
    void (*backend_init)(void);
    void (*load_all)(const char *);
    void (*log_set)(ggml_log_callback, void *);
    struct llama_model_params (*model_defaults)(void);
    struct llama_context_params (*ctx_defaults)(void);
    struct llama_model_quantize_params (*quant_defaults)(void);
    uint32_t (*quantize)(const char *, const char *, const llama_model_quantize_params *);
    struct llama_model *(*model_load)(const char *, struct llama_model_params);
    void (*model_free)(struct llama_model *);
    struct llama_context *(*init)(struct llama_model *, struct llama_context_params);
    void (*free_ctx)(struct llama_context *);
    struct llama_batch (*batch_init)(int32_t, int32_t, int32_t);
    void (*batch_free)(struct llama_batch);
    int32_t (*decode)(struct llama_context *, struct llama_batch);
    float *(*logits_ith)(struct llama_context *, int32_t);
} L;

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static int load_ref(void)
{
    const char *dir = getenv("LMK_LLAMA_REF");
    char path[4096], why[4400];
    if (!dir || !*dir)
        return skip_or_fail("LMK_LLAMA_REF is not set (run tests/llama/fetch.sh DIR)");
    /* libllama finds libggml*.so through its $ORIGIN runpath. */
    snprintf(path, sizeof path, "%s/lib/libllama.v0.4.0.so", dir);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "cannot load the reference %s: %s", path, dlerror());
        return skip_or_fail(why);
    }
    snprintf(path, sizeof path, "%s/lib/libggml.v0.4.0.so", dir);
    void *hg = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!hg) {
        snprintf(why, sizeof why, "cannot load %s: %s", path, dlerror());
        return skip_or_fail(why);
    }
#define SYM(h_, field, name)                                                       \
    if (!(*(void **)&L.field = dlsym(h_, name))) {                                 \
        fprintf(stderr, "test_llama_ref: the reference lacks %s\n", name);         \
        return 1;                                                                  \
    }
    SYM(h, backend_init, "llama_backend_init");
    SYM(hg, load_all, "ggml_backend_load_all_from_path");
    SYM(h, log_set, "llama_log_set");
    SYM(h, model_defaults, "llama_model_default_params");
    SYM(h, ctx_defaults, "llama_context_default_params");
    SYM(h, quant_defaults, "llama_model_quantize_default_params");
    SYM(h, quantize, "llama_model_quantize");
    SYM(h, model_load, "llama_model_load_from_file");
    SYM(h, model_free, "llama_model_free");
    SYM(h, init, "llama_init_from_model");
    SYM(h, free_ctx, "llama_free");
    SYM(h, batch_init, "llama_batch_init");
    SYM(h, batch_free, "llama_batch_free");
    SYM(h, decode, "llama_decode");
    SYM(h, logits_ith, "llama_get_logits_ith");
#undef SYM
    L.log_set(quiet_log, NULL);
    snprintf(path, sizeof path, "%s/lib", dir);
    L.load_all(path); /* the CPU backend variants (libggml-cpu-*.so) */
    L.backend_init();
    printf("test_llama_ref: reference %s/lib/libllama.v0.4.0.so\n", dir);
    return 0;
}

/* Logits (N_POS, n_vocab) of every position, from llama.cpp. */
static int ref_logits(const char *path, const int32_t *ids, int n_vocab, float *out)
{
    struct llama_model_params mp = L.model_defaults();
    mp.n_gpu_layers = 0;
    struct llama_model *model = L.model_load(path, mp);
    if (!model) {
        fprintf(stderr, "llama.cpp could not load %s\n", path);
        return 1;
    }
    struct llama_context_params cp = L.ctx_defaults();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = L.init(model, cp);
    if (!ctx) {
        L.model_free(model);
        fprintf(stderr, "llama.cpp could not create a context for %s\n", path);
        return 1;
    }
    struct llama_batch b = L.batch_init(N_POS, 0, 1);
    for (int i = 0; i < N_POS; i++) {
        b.token[i] = ids[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = N_POS;
    int rc = L.decode(ctx, b);
    for (int i = 0; i < N_POS && !rc; i++) {
        const float *lg = L.logits_ith(ctx, i);
        if (!lg)
            rc = 1;
        else
            memcpy(out + (size_t)i * n_vocab, lg, (size_t)n_vocab * sizeof(float));
    }
    if (rc)
        fprintf(stderr, "llama_decode on %s failed (%d)\n", path, rc);
    L.batch_free(b);
    L.free_ctx(ctx);
    L.model_free(model);
    return rc;
}

/* ---- random-weight models ---- */

typedef struct {
    const char *arch;
    int n_embd, n_ff, n_heads, n_kv, head_dim; /* head_dim != n_embd / n_heads: key_length */
    float rope_base;
    int tied, rope_freqs, biases, qk_norm, fused;
} arch_cfg;

static const arch_cfg k_archs[] = {
    /* n_ff 704 = 2.75 x 256: ffn_down rows are not a multiple of 256 */
    {"llama", 256, 704, 4, 2, 64, 10000.0f, 1, 1, 0, 0, 0},
    {"qwen2", 256, 512, 4, 2, 64, 1000000.0f, 0, 0, 1, 0, 0},
    /* 8 heads of 64 over a width of 256: attn_output rows of 512 */
    {"qwen3", 256, 768, 8, 2, 64, 1000000.0f, 1, 0, 0, 1, 0},
    /* n_ff 320: ffn_down rows are not a multiple of 256; 4 heads and 4 KV heads, as phi3 */
    {"phi3", 256, 320, 4, 4, 64, 10000.0f, 0, 0, 0, 0, 1},
};
#define N_ARCHS (sizeof k_archs / sizeof k_archs[0])
#define N_VOCAB 258

static int add_rand(lmk_gguf_writer *w, const char *name, int64_t cols, int64_t rows,
                    float scale, float bias, uint64_t *rs)
{
    size_t n = (size_t)(cols * rows);
    float *d = malloc(n * sizeof(float));
    if (!d)
        return ENOMEM;
    for (size_t i = 0; i < n; i++)
        d[i] = bias + scale * lmk_test_uniform(rs);
    int64_t dims[2] = {cols, rows};
    int rc = lmk_gguf_writer_add_tensor(w, name, rows > 1 ? 2 : 1, dims, LMK_GGML_F32, d);
    free(d);
    return rc;
}

static int write_f32_model(const char *path, const arch_cfg *a, uint64_t seed)
{
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    char key[128];
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", a->arch, k), key)
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", a->arch));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.name", "random"));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)g_layers));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("context_length"), 2048));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)a->n_embd));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)a->n_ff));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)a->n_heads));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)a->n_kv));
    if (a->head_dim * a->n_heads != a->n_embd) {
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)a->head_dim));
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.value_length"),
                                           (uint32_t)a->head_dim));
    }
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f));
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, KEY("rope.freq_base"), a->rope_base));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)a->head_dim));
#undef KEY
    /* A byte-level vocabulary: 256 byte tokens, a control token, <s>. */
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
    static char names[256][8];
    const char *toks[N_VOCAB];
    int32_t types[N_VOCAB];
    float scores[N_VOCAB];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = names[b];
        types[b] = 6;
        scores[b] = 0;
    }
    toks[256] = "<unused>";
    toks[257] = "<s>";
    types[256] = types[257] = 3;
    scores[256] = scores[257] = 0;
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING, N_VOCAB,
                                         toks));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32, N_VOCAB,
                                         scores));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32, N_VOCAB,
                                         types));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 257));
    uint64_t rs = seed;
    int E = a->n_embd, hd = a->head_dim, nq = a->n_heads * hd, nkv = a->n_kv * hd;
    float se = 1.0f / sqrtf((float)E);
    /* scale 0.3: tied logits of rms ~3, as in trained models */
    REQUIRE_OK(add_rand(w, "token_embd.weight", E, N_VOCAB, 0.3f, 0, &rs));
    REQUIRE_OK(add_rand(w, "output_norm.weight", E, 1, 0.2f, 1.0f, &rs));
    if (!a->tied)
        REQUIRE_OK(add_rand(w, "output.weight", E, N_VOCAB, 0.3f, 0, &rs));
    if (a->rope_freqs) /* llama 3.1's low-frequency stretch: factors 1 .. 8 */
        REQUIRE_OK(add_rand(w, "rope_freqs.weight", hd / 2, 1, 3.5f, 4.5f, &rs));
    for (int l = 0; l < g_layers; l++) {
        char nm[64];
#define T(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), nm)
        REQUIRE_OK(add_rand(w, T("attn_norm.weight"), E, 1, 0.2f, 1.0f, &rs));
        REQUIRE_OK(add_rand(w, T("ffn_norm.weight"), E, 1, 0.2f, 1.0f, &rs));
        if (a->fused) {
            REQUIRE_OK(add_rand(w, T("attn_qkv.weight"), E, nq + 2 * nkv, se, 0, &rs));
        } else {
            REQUIRE_OK(add_rand(w, T("attn_q.weight"), E, nq, se, 0, &rs));
            REQUIRE_OK(add_rand(w, T("attn_k.weight"), E, nkv, se, 0, &rs));
            REQUIRE_OK(add_rand(w, T("attn_v.weight"), E, nkv, 2 * se, 0, &rs));
        }
        if (a->biases) {
            REQUIRE_OK(add_rand(w, T("attn_q.bias"), nq, 1, 0.5f, 0, &rs));
            REQUIRE_OK(add_rand(w, T("attn_k.bias"), nkv, 1, 0.5f, 0, &rs));
            REQUIRE_OK(add_rand(w, T("attn_v.bias"), nkv, 1, 0.5f, 0, &rs));
        }
        if (a->qk_norm) {
            REQUIRE_OK(add_rand(w, T("attn_q_norm.weight"), hd, 1, 0.2f, 1.0f, &rs));
            REQUIRE_OK(add_rand(w, T("attn_k_norm.weight"), hd, 1, 0.2f, 1.0f, &rs));
        }
        REQUIRE_OK(add_rand(w, T("attn_output.weight"), nq, E, 1.0f / sqrtf((float)nq), 0, &rs));
        if (a->fused) {
            REQUIRE_OK(add_rand(w, T("ffn_up.weight"), E, 2 * a->n_ff, 2 * se, 0, &rs));
        } else {
            REQUIRE_OK(add_rand(w, T("ffn_gate.weight"), E, a->n_ff, 2 * se, 0, &rs));
            REQUIRE_OK(add_rand(w, T("ffn_up.weight"), E, a->n_ff, 2 * se, 0, &rs));
        }
        REQUIRE_OK(add_rand(w, T("ffn_down.weight"), a->n_ff, E, 1.0f / sqrtf((float)a->n_ff),
                            0, &rs));
#undef T
    }
    REQUIRE_OK(lmk_gguf_writer_write(w, path));
    lmk_gguf_writer_free(w);
    return 0;
}

/* ---- types ---- */

typedef struct {
    const char *name;
    int ftype;   /* llama_ftype; -1: the F32 file itself */
    bool pure;   /* every matrix in the type (llama.cpp's --pure), else llama.cpp's mix */
    double bound; /* max |landmark - llama.cpp| allowed */
    bool ci;     /* in the default set for every architecture */
} qtype;

/* Bounds on max |landmark - llama.cpp| (logits of rms ~2.8 here):
 *   F32: the same operations in another summation order; measured <= 1.5e-5.
 *   F16, BF16: llama.cpp rounds each activation vector to f16 / bf16 before the product,
 *     landmark keeps f32: relative 2^-11 / 2^-8 per input; measured <= 0.0094 / 0.074.
 *   Quantized types: llama.cpp quantizes each activation vector to 8 bits per block (Q8_0,
 *     Q8_1, Q8_K), landmark keeps f32 while prefilling and uses its own 8-bit blocks while
 *     decoding. Either way one rounding step of one activation (amax / 127 of its block)
 *     moves the next product by that step times a weight, and a step taken differently by
 *     the two engines propagates through the layers: the logits differ by llama.cpp's own
 *     activation noise, measured <= 0.42 (rms <= 0.077) over the 4 architectures x 15 files,
 *     independent of the weight type (the weights themselves dequantize bit for bit alike,
 *     test_quant). Q_BOUND = 0.6 with an rms bound of 0.12: a wrong block layout, scale or
 *     rotation moves logits by whole units. */
#define Q_BOUND 0.6
#define Q_RMS_BOUND 0.12
static const qtype k_types[] = {
    {"F32", -1, true, 1e-4, true},
    {"F16", LLAMA_FTYPE_MOSTLY_F16, true, 0.02, false},
    {"BF16", LLAMA_FTYPE_MOSTLY_BF16, true, 0.15, false},
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0, true, Q_BOUND, true},
    {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K, true, Q_BOUND, false},
    {"Q5_K", LLAMA_FTYPE_MOSTLY_Q5_K_S, true, Q_BOUND, false},
    {"Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1, true, Q_BOUND, false},
    {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0, true, Q_BOUND, false},
    {"Q4_K", LLAMA_FTYPE_MOSTLY_Q4_K_S, true, Q_BOUND, false},
    {"Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1, true, Q_BOUND, false},
    {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0, true, Q_BOUND, false},
    {"IQ4_NL", LLAMA_FTYPE_MOSTLY_IQ4_NL, true, Q_BOUND, false},
    {"IQ4_XS", LLAMA_FTYPE_MOSTLY_IQ4_XS, true, Q_BOUND, false},
    {"Q3_K", LLAMA_FTYPE_MOSTLY_Q3_K_S, true, Q_BOUND, false},
    {"Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K, true, Q_BOUND, false},
    {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M, false, Q_BOUND, true},
    {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M, false, Q_BOUND, false},
    {"Q6_K mix", LLAMA_FTYPE_MOSTLY_Q6_K, false, Q_BOUND, false},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* The GGML types of a file's matrices, e.g. "q4_K 10, q6_K 2, q5_0 2". */
static void type_census(const char *path, char *buf, size_t cap)
{
    lmk_gguf *g;
    char err[256];
    buf[0] = 0;
    if (lmk_gguf_open(path, &g, err, sizeof err))
        return;
    int count[64] = {0};
    for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
        if (t->n_dims == 2 && t->type < 64)
            count[t->type]++;
    }
    size_t len = 0;
    for (int t = 0; t < 64; t++)
        if (count[t] && len < cap)
            len += (size_t)snprintf(buf + len, cap - len, "%s%s %d", len ? ", " : "",
                                    lmk_quant_type_name((uint32_t)t), count[t]);
    lmk_gguf_close(g);
}

/* ---- landmark ---- */

static int lmk_dense_logits(lmk_model *m, const int32_t *ids, float *out)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_DENSE;
    co.pos = LMK_POS_AS_GIVEN;
    co.chunk = 128;
    lmk_ctx *c;
    char err[512];
    REQUIRE_OK(lmk_ctx_open(m, &co, &c, err, sizeof err));
    int V = lmk_model_get_info(m)->n_vocab;
    int rc = lmk_ctx_feed_raw(c, ids, PREFILL, out, PREFILL);
    for (int i = PREFILL; i < N_POS && !rc; i++)
        rc = lmk_ctx_feed_raw(c, ids + i, 1, out + (size_t)i * V, 1);
    if (rc)
        fprintf(stderr, "landmark dense feed: %s\n", lmk_ctx_errmsg(c));
    lmk_ctx_free(c);
    return rc;
}

/* A session over dir with position policy pos; top_k LMK_TOP_K_ALL retrieves every block. */
static int lmk_session_logits(lmk_model *m, const char *dir, lmk_pos_kind pos, int top_k,
                              const int32_t *ids, float *out)
{
    char fp[256], err[512];
    lmk_session_opts so;
    lmk_model_session_opts(m, pos, 32, &so, fp);
    so.create = 1;
    so.dtype = LMK_DTYPE_F32;
    so.durability = LMK_DURABLE_NONE;
    lmk_test_rmdir(dir);
    lmk_session *s = NULL;
    if (lmk_session_open(dir, &so, &s, err, sizeof err)) {
        fprintf(stderr, "session open %s: %s\n", dir, err);
        return 1;
    }
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_SESSION;
    co.session = s;
    co.pos = pos;
    co.fixed_distance = 64;
    co.chunk = 128;
    co.attend.top_k = top_k;
    co.attend.n_recent = 1;
    lmk_ctx *c = NULL;
    int rc = lmk_ctx_open(m, &co, &c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ctx: %s\n", err);
    } else {
        int V = lmk_model_get_info(m)->n_vocab;
        rc = lmk_ctx_feed_raw(c, ids, PREFILL, out, PREFILL);
        for (int i = PREFILL; i < N_POS && !rc; i++)
            rc = lmk_ctx_feed_raw(c, ids + i, 1, out + (size_t)i * V, 1);
        if (rc)
            fprintf(stderr, "session feed: %s\n", lmk_ctx_errmsg(c));
    }
    lmk_ctx_free(c);
    lmk_session_close(s);
    lmk_test_rmdir(dir);
    return rc;
}

/* ---- comparison ---- */

typedef struct {
    double max_diff, rms_diff, rms_ref;
    int argmax_same, argmax_checked;
} cmp_result;

static cmp_result compare(const float *a, const float *ref, int V, double bound)
{
    cmp_result r = {0, 0, 0, 0, 0};
    double ss = 0, sr = 0;
    for (int i = 0; i < N_POS; i++) {
        const float *x = a + (size_t)i * V, *y = ref + (size_t)i * V;
        int ax = 0, ay = 0;
        for (int j = 0; j < V; j++) {
            double d = fabs((double)x[j] - y[j]);
            if (!(d <= r.max_diff))
                r.max_diff = d;
            ss += d * d;
            sr += (double)y[j] * y[j];
            if (x[j] > x[ax])
                ax = j;
            if (y[j] > y[ay])
                ay = j;
        }
        float second = -INFINITY;
        for (int j = 0; j < V; j++)
            if (j != ay && y[j] > second)
                second = y[j];
        if (y[ay] - second > bound) {
            r.argmax_checked++;
            r.argmax_same += ax == ay;
        }
    }
    r.rms_diff = sqrt(ss / ((double)N_POS * V));
    r.rms_ref = sqrt(sr / ((double)N_POS * V));
    return r;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m))
            m = d;
    }
    return m;
}

static int all_finite(const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return 0;
    return 1;
}

static void check_one(const char *tmp, const arch_cfg *a, const qtype *q, const char *f32_path,
                      const int32_t *ids, int table)
{
    char path[1200], census[256], dir[1200];
    if (q->ftype < 0) {
        snprintf(path, sizeof path, "%s", f32_path);
    } else {
        snprintf(path, sizeof path, "%s/%s-%d%s.gguf", tmp, a->arch, q->ftype,
                 q->pure ? "-pure" : "");
        llama_model_quantize_params qp = L.quant_defaults();
        qp.ftype = (enum llama_ftype)q->ftype;
        qp.pure = q->pure;
        qp.nthread = 2;
        if (L.quantize(f32_path, path, &qp) != 0) {
            fprintf(stderr, "%s %s: llama_model_quantize failed\n", a->arch, q->name);
            lmk_test_failures++;
            return;
        }
    }
    type_census(path, census, sizeof census);
    const int V = N_VOCAB;
    float *ref = malloc((size_t)N_POS * V * sizeof(float));
    float *got = malloc((size_t)N_POS * V * sizeof(float));
    float *ses = malloc((size_t)N_POS * V * sizeof(float));
    if (!ref || !got || !ses) {
        lmk_test_failures++;
        goto out;
    }
    if (ref_logits(path, ids, V, ref)) {
        lmk_test_failures++;
        goto out;
    }
    lmk_model_opts mo = lmk_model_opts_default();
    mo.n_threads = 2;
    lmk_model *m = NULL;
    char err[512];
    if (lmk_model_open(path, &mo, &m, err, sizeof err)) {
        fprintf(stderr, "%s %s: landmark cannot open %s: %s\n", a->arch, q->name, path, err);
        lmk_test_failures++;
        goto out;
    }
    if (lmk_dense_logits(m, ids, got)) {
        lmk_test_failures++;
        lmk_model_close(m);
        goto out;
    }
    cmp_result r = compare(got, ref, V, q->bound);
    /* LMK_REF_DEBUG=1: how far each engine is from llama.cpp's F32 logits, and where */
    if (getenv("LMK_REF_DEBUG")) {
        static float *ref32;
        if (q->ftype < 0) {
            free(ref32);
            ref32 = malloc((size_t)N_POS * V * sizeof(float));
            memcpy(ref32, ref, (size_t)N_POS * V * sizeof(float));
        }
        double ss = 0;
        for (size_t i = 0; i < (size_t)N_POS * V; i++)
            ss += (double)ref[i] * ref[i];
        printf("  rms logit %.3g; llama.cpp vs its F32 %.3g, landmark vs llama.cpp F32 %.3g\n",
               sqrt(ss / ((double)N_POS * V)), max_abs_diff(ref, ref32, (size_t)N_POS * V),
               max_abs_diff(got, ref32, (size_t)N_POS * V));
        printf("  prefill positions: max diff %.3g; decoded positions: %.3g\n",
               max_abs_diff(got, ref, (size_t)PREFILL * V),
               max_abs_diff(got + (size_t)PREFILL * V, ref + (size_t)PREFILL * V,
                            (size_t)(N_POS - PREFILL) * V));
    }
    /* Retrieval of every block at original positions is the dense computation. */
    snprintf(dir, sizeof dir, "%s/session-%s", tmp, a->arch);
    double ds = -1, ds_dec = -1;
    if (lmk_session_logits(m, dir, LMK_POS_AS_GIVEN, LMK_TOP_K_ALL, ids, ses) == 0) {
        /* prefill: identical products, attention in another order; decoding of quantized
         * weights: 8-bit activations, where an input that differs in its last bit may
         * round to the neighbouring step (see Q_BOUND) */
        ds = max_abs_diff(ses, got, (size_t)PREFILL * V);
        ds_dec = max_abs_diff(ses + (size_t)PREFILL * V, got + (size_t)PREFILL * V,
                              (size_t)(N_POS - PREFILL) * V);
    } else {
        lmk_test_failures++;
    }
    if (getenv("LMK_REF_DEBUG"))
        for (int i = 0; i < 12; i++)
            printf("  session vs dense, pos %d: %.3g\n", i,
                   max_abs_diff(ses + (size_t)i * V, got + (size_t)i * V, (size_t)V));
    int policies_ok = 1;
    if (q->ftype < 0 || q->ftype == LLAMA_FTYPE_MOSTLY_Q4_K_M) {
        lmk_pos_kind pk[] = {LMK_POS_SLOTS, LMK_POS_FIXED};
        for (int p = 0; p < 2; p++) {
            if (lmk_session_logits(m, dir, pk[p], 2, ids, ses) ||
                !all_finite(ses, (size_t)N_POS * V))
                policies_ok = 0;
        }
    }
    lmk_model_close(m);
    double rms_bound = q->bound < Q_BOUND ? q->bound : Q_RMS_BOUND;
    double dec_bound = q->bound < Q_BOUND ? 1e-4 : q->bound;
    int ok = r.max_diff <= q->bound && r.rms_diff <= rms_bound &&
             r.argmax_same == r.argmax_checked && ds >= 0 && ds <= 1e-4 && ds_dec >= 0 &&
             ds_dec <= dec_bound && policies_ok;
    printf("%-6s %-8s max|landmark - llama.cpp| %.3g (bound %g), rms %.2g (logits %.3g), "
           "argmax %d/%d, all-blocks session vs dense %.2g / %.2g%s  [%s]%s\n",
           a->arch, q->name, r.max_diff, q->bound, r.rms_diff, r.rms_ref, r.argmax_same,
           r.argmax_checked, ds, ds_dec,
           policies_ok ? "" : ", a position policy FAILED", census, ok ? "" : "  FAILED");
    if (table)
        printf("| %s | %s | %s | %.2g | %.2g | %d/%d |\n", a->arch, q->name, census,
               r.max_diff, r.rms_diff, r.argmax_same, r.argmax_checked);
    if (!ok)
        lmk_test_failures++;
out:
    if (q->ftype >= 0)
        remove(path);
    free(ref);
    free(got);
    free(ses);
}

int main(int argc, char **argv)
{
    int full = 0, table = 0;
    const char *only_arch = NULL, *big_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full"))
            full = 1;
        else if (!strcmp(argv[i], "--table"))
            table = 1;
        else if (!strcmp(argv[i], "--arch") && i + 1 < argc)
            only_arch = argv[++i];
        else if (!strcmp(argv[i], "--make-big") && i + 1 < argc)
            big_dir = argv[++i];
        else {
            fprintf(stderr, "usage: test_llama_ref [--full] [--table] [--arch NAME] "
                            "[--make-big DIR]\n");
            return 2;
        }
    }
    int rc = load_ref();
    if (rc)
        return rc;
    uint64_t seed = lmk_test_seed("test_llama_ref", 20261130);
    if (big_dir) { /* files for measuring memory and speed (model/README.md) */
        arch_cfg big = {"llama", 2048, 5632, 16, 4, 128, 10000.0f, 0, 0, 0, 0, 0};
        g_layers = 6;
        char f32[1200], out[1200];
        snprintf(f32, sizeof f32, "%s/big-f32.gguf", big_dir);
        if (write_f32_model(f32, &big, seed))
            return 1;
        int ft[] = {LLAMA_FTYPE_MOSTLY_Q8_0, LLAMA_FTYPE_MOSTLY_Q4_K_M};
        const char *nm[] = {"q8_0", "q4_k_m"};
        for (int i = 0; i < 2; i++) {
            llama_model_quantize_params qp = L.quant_defaults();
            qp.ftype = (enum llama_ftype)ft[i];
            qp.nthread = 2;
            snprintf(out, sizeof out, "%s/big-%s.gguf", big_dir, nm[i]);
            if (L.quantize(f32, out, &qp) != 0)
                return 1;
        }
        printf("wrote %s/big-{f32,q8_0,q4_k_m}.gguf\n", big_dir);
        return 0;
    }
    char tmp[1024];
    lmk_test_dir(tmp, sizeof tmp, "llama-ref");
    if (mkdir(tmp, 0755) && errno != EEXIST) {
        fprintf(stderr, "cannot create %s\n", tmp);
        return 1;
    }
    printf("quantized paths: %s\n",
           lmk_quant_path_auto() == LMK_QUANT_PATH_AVX2 ? "AVX2/FMA" : "portable");
    int32_t ids[N_POS];
    uint64_t rs = seed;
    for (int i = 0; i < N_POS; i++) /* text-like: a few frequent bytes */
        ids[i] = (int32_t)(lmk_test_rand(&rs) % 7 == 0 ? 32 : 97 + lmk_test_rand(&rs) % 26);
    for (size_t ai = 0; ai < N_ARCHS; ai++) {
        const arch_cfg *a = &k_archs[ai];
        if (only_arch && strcmp(only_arch, a->arch))
            continue;
        char f32[1200];
        snprintf(f32, sizeof f32, "%s/%s-f32.gguf", tmp, a->arch);
        if (write_f32_model(f32, a, seed + ai)) {
            lmk_test_failures++;
            continue;
        }
        for (size_t t = 0; t < N_TYPES; t++)
            if (full || k_types[t].ci || ai == 0)
                check_one(tmp, a, &k_types[t], f32, ids, table);
        remove(f32);
    }
    lmk_test_rmdir(tmp);
    return lmk_test_finish("test_llama_ref", 0);
}
#endif
