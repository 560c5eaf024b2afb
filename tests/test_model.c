/* Model driver: random-weight GGUF models written here (retrieval of every block equals a
 * dense forward pass; reopened sessions continue identically; threads, weight types and
 * tile conversion do not change results; unsupported files give clear errors), and the
 * shared landmark model of ../shared/models when present (golden logits and greedy
 * continuations). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf_write.h"
#include "lmk_model.h"
#include "lmk_test.h"

extern void openblas_set_num_threads(int);

static uint64_t seed;
static char tmp_root[512];

/* ---- random models ---- */

typedef struct {
    const char *arch;
    int n_layers, n_embd, n_heads, n_kv, n_ff;
    int mem_freq;          /* 0: ordinary model */
    uint32_t wtype;        /* type of the 2-D weights */
    const char *omit_key;  /* leave out this metadata key */
    const char *omit_tensor;
    uint32_t bad_type;     /* nonzero: blk.0.ffn_up stored raw with this type */
    uint64_t seed;
    int kv_array;          /* head_count_kv as a per-layer array */
} mcfg;

static mcfg cfg_default(void)
{
    mcfg c = {"llama", 2, 64, 4, 2, 96, 0, LMK_GGML_F32, NULL, NULL, 0, 7, 0};
    return c;
}

static int add_w(lmk_gguf_writer *w, const mcfg *c, const char *name, int64_t cols,
                 int64_t rows, float scale, float bias, uint64_t *rs, uint32_t type)
{
    if (c->omit_tensor && !strcmp(c->omit_tensor, name))
        return 0;
    size_t n = (size_t)(cols * rows);
    float *d = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        d[i] = bias + scale * lmk_test_uniform(rs);
    int64_t dims[2] = {cols, rows};
    int rc;
    if (c->bad_type && !strcmp(name, "blk.0.ffn_up.weight")) {
        size_t nb = (size_t)(n / 256) * 66; /* IQ2_XXS-sized bytes */
        rc = lmk_gguf_writer_add_raw(w, name, 2, dims, c->bad_type, d, nb);
    } else {
        rc = lmk_gguf_writer_add_tensor(w, name, rows > 1 ? 2 : 1, dims, type, d);
    }
    free(d);
    return rc;
}

static int write_model(const char *path, const mcfg *c)
{
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    char key[128];
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", c->arch, k), key)
#define SKIP(k) (c->omit_key && !strcmp(c->omit_key, k))
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", c->arch));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.name", "random"));
    if (!SKIP("block_count"))
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)c->n_layers));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)c->n_embd));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)c->n_ff));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads));
    if (c->kv_array) {
        int32_t kv[64];
        for (int l = 0; l < c->n_layers && l < 64; l++)
            kv[l] = c->n_kv;
        REQUIRE_OK(lmk_gguf_writer_add_array(w, KEY("attention.head_count_kv"), LMK_GGUF_I32,
                                             (uint64_t)c->n_layers, kv));
    } else {
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv));
    }
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f));
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, KEY("rope.freq_base"), 10000.0f));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
    static char names[256][8];
    const char *toks[258];
    int32_t types[258];
    float scores[258];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = names[b];
        types[b] = 6;
        scores[b] = 0;
    }
    toks[256] = "<landmark>";
    toks[257] = "<s>";
    types[256] = types[257] = 3;
    scores[256] = scores[257] = 0;
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING, 258, toks));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32, 258, scores));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32, 258, types));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 257));
    if (c->mem_freq > 0) {
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, "landmark.mem_freq", (uint32_t)c->mem_freq));
        if (!SKIP("landmark.token_id"))
            REQUIRE_OK(lmk_gguf_writer_add_u32(w, "landmark.token_id", 256));
    }
    uint64_t rs = c->seed;
    int E = c->n_embd, hd = E / c->n_heads, nq = c->n_heads * hd, nkv = c->n_kv * hd;
    float se = 1.0f / sqrtf((float)E);
    REQUIRE_OK(add_w(w, c, "token_embd.weight", E, 258, 1.0f, 0, &rs, c->wtype));
    REQUIRE_OK(add_w(w, c, "output_norm.weight", E, 1, 0.2f, 1.0f, &rs, LMK_GGML_F32));
    REQUIRE_OK(add_w(w, c, "output.weight", E, 258, 2 * se, 0, &rs, c->wtype));
    for (int l = 0; l < c->n_layers; l++) {
        char nm[64];
#define T(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        REQUIRE_OK(add_w(w, c, T("attn_norm"), E, 1, 0.2f, 1.0f, &rs, LMK_GGML_F32));
        REQUIRE_OK(add_w(w, c, T("ffn_norm"), E, 1, 0.2f, 1.0f, &rs, LMK_GGML_F32));
        /* large Q/K weights: peaked attention, so retrieval choices matter */
        REQUIRE_OK(add_w(w, c, T("attn_q"), E, nq, 4 * se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("attn_k"), E, nkv, 4 * se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("attn_v"), E, nkv, 2 * se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("attn_output"), nq, E, se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("ffn_gate"), E, c->n_ff, 2 * se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("ffn_up"), E, c->n_ff, 2 * se, 0, &rs, c->wtype));
        REQUIRE_OK(add_w(w, c, T("ffn_down"), c->n_ff, E, se, 0, &rs, c->wtype));
#undef T
    }
#undef KEY
#undef SKIP
    REQUIRE_OK(lmk_gguf_writer_write(w, path));
    lmk_gguf_writer_free(w);
    return 0;
}

static lmk_model *open_model(const char *path, int threads)
{
    lmk_model_opts mo = lmk_model_opts_default();
    mo.n_threads = threads;
    lmk_model *m = NULL;
    char err[512];
    int rc = lmk_model_open(path, &mo, &m, err, sizeof err);
    if (rc)
        fprintf(stderr, "open %s: %s\n", path, err);
    return m;
}

/* Logits after every token of ids (n, n_vocab) through a dense context. Landmark models
 * get their landmarks inserted (lmk_ctx_feed). */
static int run_dense(lmk_model *m, lmk_mode mode, const int32_t *ids, int64_t n, int chunk,
                     float *logits)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_DENSE;
    co.pos = LMK_POS_AS_GIVEN;
    co.mode = mode;
    co.chunk = chunk;
    lmk_ctx *c;
    char err[512];
    REQUIRE_OK(lmk_ctx_open(m, &co, &c, err, sizeof err));
    int rc = lmk_ctx_feed(c, ids, n, logits, n);
    if (rc)
        fprintf(stderr, "dense feed: %s\n", lmk_ctx_errmsg(c));
    lmk_ctx_free(c);
    return rc;
}

typedef struct {
    lmk_pos_kind pos;
    lmk_mode mode;
    int top_k, n_recent, block_len, chunk;
    lmk_dtype dtype;
    lmk_retrieve retrieve;
} sess_cfg;

static lmk_session *open_session(lmk_model *m, const char *dir, const sess_cfg *sc, int create,
                                 int threads, char *fp)
{
    lmk_session_opts so;
    lmk_model_session_opts(m, sc->pos, sc->block_len, &so, fp);
    so.create = create;
    so.dtype = create ? sc->dtype : LMK_DTYPE_AUTO;
    so.n_threads = threads;
    so.durability = LMK_DURABLE_NONE; /* temporary sessions: no fsync */
    lmk_session *s = NULL;
    char err[512];
    int rc = lmk_session_open(dir, &so, &s, err, sizeof err);
    if (rc)
        fprintf(stderr, "session open %s: %s\n", dir, err);
    return s;
}

static lmk_ctx *session_ctx(lmk_model *m, lmk_session *s, const sess_cfg *sc)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_SESSION;
    co.session = s;
    co.pos = sc->pos;
    co.mode = sc->mode;
    co.chunk = sc->chunk;
    co.attend.top_k = sc->top_k;
    co.attend.n_recent = sc->n_recent;
    co.attend.retrieve = sc->retrieve;
    lmk_ctx *c = NULL;
    char err[512];
    if (lmk_ctx_open(m, &co, &c, err, sizeof err))
        fprintf(stderr, "ctx: %s\n", err);
    return c;
}

static int run_session(lmk_model *m, const char *dir, const sess_cfg *sc, const int32_t *ids,
                       int64_t n, float *logits, int threads)
{
    char fp[256];
    lmk_test_rmdir(dir);
    lmk_session *s = open_session(m, dir, sc, 1, threads, fp);
    REQUIRE(s);
    lmk_ctx *c = session_ctx(m, s, sc);
    REQUIRE(c);
    int rc = lmk_ctx_feed(c, ids, n, logits, n);
    if (rc)
        fprintf(stderr, "session feed: %s\n", lmk_ctx_errmsg(c));
    lmk_ctx_free(c);
    lmk_session_close(s);
    return rc;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m))
            m = d;
    }
    return m;
}

static void random_ids(int32_t *ids, int64_t n, uint64_t *rs)
{
    /* Text-like: a few frequent bytes, so the random model's attention has structure. */
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(lmk_test_rand(rs) % 7 == 0 ? 32 : 97 + lmk_test_rand(rs) % 26);
}

/* With every block retrieved, retrieval attention equals the dense forward pass. */
static int test_exact_vs_dense(void)
{
    char path[700], dir[700];
    const int V = 258;
    struct {
        const char *name;
        int mem_freq;
        lmk_pos_kind pos;
        lmk_mode mode;
        int n_recent, block_len;
    } cases[] = {
        {"ordinary, original positions, union", 0, LMK_POS_AS_GIVEN, LMK_MODE_UNION, 0, 16},
        {"landmark, slots, grouped", 15, LMK_POS_SLOTS, LMK_MODE_GROUPED, 0, 0},
        {"landmark, slots, grouped, 2 recent", 15, LMK_POS_SLOTS, LMK_MODE_GROUPED, 2, 0},
        {"landmark, slots, union", 15, LMK_POS_SLOTS, LMK_MODE_UNION, 0, 0},
        {"landmark, original positions, union", 15, LMK_POS_AS_GIVEN, LMK_MODE_UNION, 0, 0},
    };
    const int64_t n = 600; /* regular tokens: ~40 blocks, several chunks */
    int32_t *ids = malloc(n * sizeof *ids);
    float *ld = malloc((size_t)n * V * sizeof(float)), *ls = malloc((size_t)n * V * sizeof(float));
    uint64_t rs = seed;
    random_ids(ids, n, &rs);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mcfg mc = cfg_default();
        mc.mem_freq = cases[k].mem_freq;
        snprintf(path, sizeof path, "%s/exact-%zu.gguf", tmp_root, k);
        REQUIRE(write_model(path, &mc) == 0);
        lmk_model *m = open_model(path, 1);
        REQUIRE(m);
        REQUIRE_OK(run_dense(m, cases[k].mode, ids, n, 96, ld));
        sess_cfg sc = {cases[k].pos, cases[k].mode, LMK_TOP_K_ALL, cases[k].n_recent,
                       cases[k].block_len, 128, LMK_DTYPE_F32, LMK_RETRIEVE_QHEAD};
        snprintf(dir, sizeof dir, "%s/exact-sess-%zu", tmp_root, k);
        REQUIRE_OK(run_session(m, dir, &sc, ids, n, ls, 1));
        double d = max_diff(ld, ls, (size_t)n * V);
        printf("%-40s max |session - dense| = %.3g\n", cases[k].name, d);
        CHECK(d <= 1e-4);
        /* and the logits are not trivially flat: different positions differ */
        CHECK(max_diff(ld, ld + (size_t)(n - 1) * V, V) > 0.1);
        lmk_model_close(m);
        lmk_test_rmdir(dir);
    }
    /* Retrieval that keeps only a few blocks does differ (the test above can fail). */
    {
        mcfg mc = cfg_default();
        mc.mem_freq = 15;
        snprintf(path, sizeof path, "%s/exact-1.gguf", tmp_root);
        REQUIRE(write_model(path, &mc) == 0);
        lmk_model *m = open_model(path, 1);
        REQUIRE(m);
        REQUIRE_OK(run_dense(m, LMK_MODE_GROUPED, ids, n, 96, ld));
        sess_cfg sc = {LMK_POS_SLOTS, LMK_MODE_GROUPED, 2, 1, 0, 128, LMK_DTYPE_F32,
                       LMK_RETRIEVE_QHEAD};
        snprintf(dir, sizeof dir, "%s/topk", tmp_root);
        REQUIRE_OK(run_session(m, dir, &sc, ids, n, ls, 1));
        double d = max_diff(ld, ls, (size_t)n * V);
        printf("top_k 2 + 1 recent vs dense: max diff %.3g (expected > 1e-3)\n", d);
        CHECK(d > 1e-3);
        /* the first 3 blocks' worth of tokens see at most 3 blocks: still exact there */
        CHECK(max_diff(ld, ls, (size_t)45 * V) <= 1e-4);
        lmk_model_close(m);
        lmk_test_rmdir(dir);
    }
    free(ids);
    free(ld);
    free(ls);
    return 0;
}

/* A session closed and reopened mid-document continues with identical logits; a session
 * written by another model is refused. */
static int test_reopen(void)
{
    char path[700], path2[700], dir[700], fp[256];
    const int V = 258;
    mcfg mc = cfg_default();
    mc.mem_freq = 15;
    snprintf(path, sizeof path, "%s/reopen.gguf", tmp_root);
    REQUIRE(write_model(path, &mc) == 0);
    lmk_model *m = open_model(path, 1);
    REQUIRE(m);
    const int64_t n = 500, cut = 237; /* the cut falls inside a block */
    int32_t *ids = malloc(n * sizeof *ids);
    uint64_t rs = seed + 1;
    random_ids(ids, n, &rs);
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    sess_cfg sc = {LMK_POS_SLOTS, LMK_MODE_GROUPED, 3, 2, 0, 64, LMK_DTYPE_F16,
                   LMK_RETRIEVE_QHEAD};
    for (int variant = 0; variant < 2; variant++) {
        snprintf(dir, sizeof dir, "%s/reopen-%d", tmp_root, variant);
        lmk_test_rmdir(dir);
        lmk_session *s = open_session(m, dir, &sc, 1, 1, fp);
        REQUIRE(s);
        lmk_ctx *c = session_ctx(m, s, &sc);
        REQUIRE(c);
        float *out = variant ? b : a;
        REQUIRE_OK(lmk_ctx_feed(c, ids, cut, out, cut));
        if (variant) { /* close everything and reopen from disk */
            lmk_ctx_free(c);
            lmk_session_close(s);
            s = open_session(m, dir, &sc, 0, 1, fp);
            REQUIRE(s);
            c = session_ctx(m, s, &sc);
            REQUIRE(c);
            CHECK(lmk_ctx_n_regular(c) == cut);
        }
        REQUIRE_OK(lmk_ctx_feed(c, ids + cut, n - cut, out + (size_t)cut * V, n - cut));
        lmk_ctx_free(c);
        lmk_session_close(s);
    }
    double d = max_diff(a, b, (size_t)n * V);
    printf("reopened mid-document: max logit difference %.3g\n", d);
    CHECK(d == 0);

    /* another model's fingerprint: LMK_EMISMATCH, and the session is untouched */
    mc.seed = 8;
    snprintf(path2, sizeof path2, "%s/reopen-other.gguf", tmp_root);
    REQUIRE(write_model(path2, &mc) == 0);
    lmk_model *m2 = open_model(path2, 1);
    REQUIRE(m2);
    CHECK(strcmp(lmk_model_get_info(m)->digest, lmk_model_get_info(m2)->digest) != 0);
    lmk_session_opts so;
    lmk_model_session_opts(m2, LMK_POS_SLOTS, 0, &so, fp);
    lmk_session *s2 = NULL;
    char err[512];
    CHECK_RC(lmk_session_open(dir, &so, &s2, err, sizeof err), LMK_EMISMATCH);
    CHECK(s2 == NULL);
    /* a different key frame with the same model is refused too */
    lmk_model_session_opts(m, LMK_POS_AS_GIVEN, 0, &so, fp);
    CHECK_RC(lmk_session_open(dir, &so, &s2, err, sizeof err), LMK_EMISMATCH);
    lmk_model_close(m2);
    lmk_model_close(m);
    for (int variant = 0; variant < 2; variant++) {
        snprintf(dir, sizeof dir, "%s/reopen-%d", tmp_root, variant);
        lmk_test_rmdir(dir);
    }
    free(ids);
    free(a);
    free(b);
    return 0;
}

/* Weight types, tile conversion and thread counts. */
static int test_types_threads(void)
{
    char path[700], dir[700];
    const int V = 258;
    const int64_t n = 300;
    int32_t *ids = malloc(n * sizeof *ids);
    uint64_t rs = seed + 2;
    random_ids(ids, n, &rs);
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    float *f32 = malloc((size_t)n * V * sizeof(float));
    uint32_t types[] = {LMK_GGML_F32, LMK_GGML_F16, LMK_GGML_BF16, LMK_GGML_Q8_0, LMK_GGML_Q4_0};
    double tol[] = {0, 0.05, 0.3, 0.3, 4.0}; /* vs F32: coarse, the types lose precision */
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        mcfg mc = cfg_default();
        mc.mem_freq = 15;
        mc.wtype = types[t];
        snprintf(path, sizeof path, "%s/type-%zu.gguf", tmp_root, t);
        REQUIRE(write_model(path, &mc) == 0);
        lmk_model *m = open_model(path, 1);
        REQUIRE(m);
        CHECK(lmk_model_get_info(m)->weight_type == types[t]);
        REQUIRE_OK(run_dense(m, LMK_MODE_GROUPED, ids, n, 64, a));
        if (t == 0)
            memcpy(f32, a, (size_t)n * V * sizeof(float));
        double dt = max_diff(a, f32, (size_t)n * V);
        printf("%-5s vs F32: max logit difference %.3g\n", lmk_ggml_type_name(types[t]), dt);
        CHECK(dt <= tol[t]);
        lmk_model_close(m);
        /* the same numbers with any number of threads */
        m = open_model(path, 2);
        REQUIRE(m);
        REQUIRE_OK(run_dense(m, LMK_MODE_GROUPED, ids, n, 64, b));
        CHECK(max_diff(a, b, (size_t)n * V) == 0);
        lmk_model_close(m);
    }
    /* threads through the session: identical */
    snprintf(path, sizeof path, "%s/type-3.gguf", tmp_root);
    lmk_model *m1 = open_model(path, 1), *m2 = open_model(path, 2);
    REQUIRE(m1 && m2);
    sess_cfg sc = {LMK_POS_SLOTS, LMK_MODE_GROUPED, 2, 1, 0, 100, LMK_DTYPE_F16,
                   LMK_RETRIEVE_QHEAD};
    snprintf(dir, sizeof dir, "%s/thr1", tmp_root);
    REQUIRE_OK(run_session(m1, dir, &sc, ids, n, a, 1));
    lmk_test_rmdir(dir);
    snprintf(dir, sizeof dir, "%s/thr2", tmp_root);
    REQUIRE_OK(run_session(m2, dir, &sc, ids, n, b, 2));
    lmk_test_rmdir(dir);
    double d = max_diff(a, b, (size_t)n * V);
    printf("1 vs 2 threads (session): max difference %.3g\n", d);
    CHECK(d == 0);
    lmk_model_close(m1);
    lmk_model_close(m2);
    free(ids);
    free(a);
    free(b);
    free(f32);
    return 0;
}

/* Feeding token by token equals feeding at once (landmark insertion is by position), for
 * both prediction sources. */
static int test_incremental(void)
{
    char path[700];
    const int V = 258;
    mcfg mc = cfg_default();
    mc.mem_freq = 7;
    snprintf(path, sizeof path, "%s/incr.gguf", tmp_root);
    REQUIRE(write_model(path, &mc) == 0);
    lmk_model *m = open_model(path, 1);
    REQUIRE(m);
    const int64_t n = 70;
    int32_t ids[70];
    uint64_t rs = seed + 3;
    random_ids(ids, n, &rs);
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    for (int nf = 0; nf < 2; nf++) {
        lmk_ctx_opts co = lmk_ctx_opts_default();
        co.backend = LMK_ATTN_DENSE;
        co.pos = LMK_POS_AS_GIVEN;
        co.next_from = nf ? LMK_NEXT_FROM_REGULAR : LMK_NEXT_FROM_LANDMARK;
        co.chunk = 16;
        lmk_ctx *c1, *c2;
        char err[256];
        REQUIRE_OK(lmk_ctx_open(m, &co, &c1, err, sizeof err));
        REQUIRE_OK(lmk_ctx_open(m, &co, &c2, err, sizeof err));
        REQUIRE_OK(lmk_ctx_feed(c1, ids, n, a, n));
        for (int64_t i = 0; i < n; i++)
            REQUIRE_OK(lmk_ctx_feed(c2, ids + i, 1, b + (size_t)i * V, 1));
        double d = max_diff(a, b, (size_t)n * V);
        CHECK(d <= 1e-4);
        CHECK(lmk_ctx_n_regular(c1) == n && lmk_ctx_n_regular(c2) == n);
        /* 70 regular tokens, 7 per block: landmarks after each full block */
        int64_t want = nf ? n + (n - 1) / 7 : n + n / 7;
        CHECK(lmk_ctx_n_past(c1) == want && lmk_ctx_n_past(c2) == want);
        lmk_ctx_free(c1);
        lmk_ctx_free(c2);
    }
    /* bad ids are refused without changing the context */
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_DENSE;
    co.pos = LMK_POS_AS_GIVEN;
    lmk_ctx *c;
    char err[256];
    REQUIRE_OK(lmk_ctx_open(m, &co, &c, err, sizeof err));
    int32_t bad[2] = {5, 9999};
    CHECK_RC(lmk_ctx_feed(c, bad, 2, NULL, 0), LMK_EINVAL);
    CHECK(lmk_ctx_n_past(c) == 0);
    /* grouped softmax needs a landmark model */
    lmk_ctx_free(c);
    lmk_model_close(m);
    mc.mem_freq = 0;
    REQUIRE(write_model(path, &mc) == 0);
    m = open_model(path, 1);
    REQUIRE(m);
    co.mode = LMK_MODE_GROUPED;
    CHECK_RC(lmk_ctx_open(m, &co, &c, err, sizeof err), LMK_EINVAL);
    CHECK(strstr(err, "grouped") != NULL);
    lmk_model_close(m);
    free(a);
    free(b);
    return 0;
}

static int expect_open_error(const mcfg *mc, int want, const char *needle)
{
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.gguf", tmp_root);
    REQUIRE(write_model(path, mc) == 0);
    lmk_model *m = (lmk_model *)1;
    int rc = lmk_model_open(path, NULL, &m, err, sizeof err);
    printf("  expected error: %s\n", err);
    CHECK(m == NULL);
    if (rc != want || !strstr(err, needle)) {
        fprintf(stderr, "want %d '%s', got %d '%s'\n", want, needle, rc, err);
        lmk_test_failures++;
    }
    return 0;
}

/* Unsupported or incomplete models: clear errors naming what is wrong. */
static int test_model_errors(void)
{
    mcfg mc = cfg_default();
    mc.arch = "gpt2";
    expect_open_error(&mc, LMK_EUNSUPPORTED, "architecture 'gpt2'");
    mc = cfg_default();
    mc.omit_key = "block_count";
    expect_open_error(&mc, LMK_ENOTFOUND, "llama.block_count");
    mc = cfg_default();
    mc.omit_tensor = "blk.1.ffn_up.weight";
    expect_open_error(&mc, LMK_ENOTFOUND, "blk.1.ffn_up.weight");
    mc = cfg_default();
    mc.bad_type = 16; /* IQ2_XXS: a GGML type landmark does not run */
    mc.n_ff = 256;
    mc.n_embd = 256;
    expect_open_error(&mc, LMK_EUNSUPPORTED, "blk.0.ffn_up.weight' has type IQ2_XXS");
    mc = cfg_default();
    mc.kv_array = 1;
    expect_open_error(&mc, LMK_EUNSUPPORTED, "head_count_kv");
    mc = cfg_default();
    mc.n_kv = 3; /* 4 heads are not a multiple of 3 KV heads */
    expect_open_error(&mc, LMK_EFORMAT, "hyperparameters");
    mc = cfg_default();
    mc.mem_freq = 15;
    mc.omit_key = "landmark.token_id";
    expect_open_error(&mc, LMK_ENOTFOUND, "landmark.token_id");
    /* a truncated model file */
    char path[700], err[512];
    mc = cfg_default();
    snprintf(path, sizeof path, "%s/trunc.gguf", tmp_root);
    REQUIRE(write_model(path, &mc) == 0);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    REQUIRE(truncate(path, st.st_size / 2) == 0);
    lmk_model *m;
    CHECK_RC(lmk_model_open(path, NULL, &m, err, sizeof err), LMK_EFORMAT);
    printf("  expected error: %s\n", err);
    CHECK(strstr(err, "truncated") != NULL);
    return 0;
}

/* ---- the shared landmark model ---- */

/* Minimal reader for golden.json: the i-th case's int array "ids", float array
 * "last_logits" and string "greedy_continuation". */
static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        fclose(f);
        return NULL;
    }
    b[sz] = 0;
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static const char *nth_key(const char *js, const char *key, int nth)
{
    const char *p = js;
    for (int i = 0; i <= nth; i++) {
        p = strstr(p, key);
        if (!p)
            return NULL;
        p += strlen(key);
    }
    return p;
}

static int read_array(const char *p, double *out, int cap)
{
    p = strchr(p, '[');
    if (!p)
        return -1;
    p++;
    int n = 0;
    while (*p && *p != ']') {
        char *e;
        double v = strtod(p, &e);
        if (e == p) {
            p++;
            continue;
        }
        if (n < cap)
            out[n] = v;
        n++;
        p = e;
    }
    return n;
}

static int read_string(const char *p, char *out, int cap)
{
    p = strchr(p, ':');
    if (!p || !(p = strchr(p, '"')))
        return -1;
    p++;
    int n = 0;
    while (*p && *p != '"' && n < cap - 1) {
        if (*p == '\\' && p[1])
            p++;
        out[n++] = *p++;
    }
    out[n] = 0;
    return n;
}

static int test_shared_model(void)
{
    const char *sh = getenv("LMK_SHARED");
    char f32[700], q8[700], gj[700];
    snprintf(f32, sizeof f32, "%s/models/landmark-tiny-kjv-f32.gguf", sh ? sh : "../shared");
    snprintf(q8, sizeof q8, "%s/models/landmark-tiny-kjv-q8_0.gguf", sh ? sh : "../shared");
    snprintf(gj, sizeof gj, "%s/models/golden.json", sh ? sh : "../shared");
    size_t jn;
    char *js = slurp(gj, &jn);
    if (!js || access(f32, R_OK) != 0) {
        printf("NOTICE: shared model not found (%s): golden-logit tests skipped\n", f32);
        free(js);
        return 0;
    }
    lmk_model *m = open_model(f32, 2), *mq = open_model(q8, 2);
    REQUIRE(m && mq);
    const lmk_model_info *mi = lmk_model_get_info(m);
    CHECK(mi->mem_freq == 31 && mi->landmark_token == 256 && mi->n_layers == 4 && mi->n_vocab == 258);
    CHECK(mi->n_params == 2755840);
    for (int cs = 0; cs < 3; cs++) {
        double idsd[512], ref[300];
        const char *p = nth_key(js, "\"ids\"", cs);
        REQUIRE(p);
        int n = read_array(p, idsd, 512);
        p = nth_key(js, "\"last_logits\"", cs);
        REQUIRE(p && read_array(p, ref, 300) == 258);
        char greedy[64];
        p = nth_key(js, "\"greedy_continuation\"", cs);
        REQUIRE(p && read_string(p, greedy, sizeof greedy) > 0);
        REQUIRE(n > 0 && n < 512);
        int32_t ids[512];
        for (int i = 0; i < n; i++)
            ids[i] = (int32_t)idsd[i];
        float lg[258];
        /* golden ids carry their landmarks: feed them as given */
        for (int backend = 0; backend < 3; backend++) {
            lmk_model *mm = backend == 2 ? mq : m;
            lmk_ctx_opts co = lmk_ctx_opts_default();
            lmk_session *s = NULL;
            char dir[700], fp[256], err[512];
            sess_cfg sc = {LMK_POS_SLOTS, LMK_MODE_GROUPED, 4, 2, 0, 256, LMK_DTYPE_F32,
                           LMK_RETRIEVE_QHEAD};
            if (backend == 0) {
                co.backend = LMK_ATTN_DENSE;
                co.pos = LMK_POS_AS_GIVEN;
            } else {
                snprintf(dir, sizeof dir, "%s/golden-%d-%d", tmp_root, cs, backend);
                lmk_test_rmdir(dir);
                s = open_session(mm, dir, &sc, 1, 2, fp);
                REQUIRE(s);
                co.session = s;
                co.attend.top_k = 4; /* the reference's settings; all blocks fit */
                co.attend.n_recent = 2;
            }
            lmk_ctx *c;
            REQUIRE_OK(lmk_ctx_open(mm, &co, &c, err, sizeof err));
            REQUIRE_OK(lmk_ctx_feed_raw(c, ids, n, lg, 1));
            double d = 0;
            int am = 0, ar = 0;
            for (int i = 0; i < 258; i++) {
                double e = fabs(lg[i] - ref[i]);
                d = e > d ? e : d;
                am = lg[i] > lg[am] ? i : am;
                ar = ref[i] > ref[ar] ? i : ar;
            }
            const char *bn[] = {"F32 dense", "F32 session", "Q8_0 session"};
            printf("golden case %d, %s: max |logit - golden| = %.3g\n", cs, bn[backend], d);
            CHECK(d <= (backend == 2 ? 0.1 : 1e-3));
            CHECK(am == ar);
            if (backend < 2) {
                /* greedy continuation, landmarks inserted as the reference does */
                char out[64];
                int no = 0, want = (int)strlen(greedy);
                for (int k = 0; k < want; k++) {
                    int best = 0;
                    for (int i = 1; i < 258; i++)
                        best = lg[i] > lg[best] ? i : best;
                    out[no++] = (char)best;
                    int32_t t = best;
                    REQUIRE_OK(lmk_ctx_feed(c, &t, 1, lg, 1));
                }
                out[no] = 0;
                CHECK(!strcmp(out, greedy));
                if (strcmp(out, greedy))
                    fprintf(stderr, "greedy: got '%s' want '%s'\n", out, greedy);
            }
            lmk_ctx_free(c);
            if (s) {
                lmk_session_close(s);
                lmk_test_rmdir(dir);
            }
        }
    }
    lmk_model_close(m);
    lmk_model_close(mq);
    free(js);
    return 0;
}

int main(void)
{
    seed = lmk_test_seed("test_model", 42);
    openblas_set_num_threads(1);
    lmk_test_dir(tmp_root, sizeof tmp_root, "model");
    mkdir(tmp_root, 0755);
    test_exact_vs_dense();
    test_reopen();
    test_types_threads();
    test_incremental();
    test_model_errors();
    test_shared_model();
    if (!lmk_test_failures)
        lmk_test_rmdir(tmp_root);
    return lmk_test_finish("test_model", 0);
}
