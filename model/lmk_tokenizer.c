/* Tokenizers from GGUF metadata: byte-level, SentencePiece BPE and byte-level BPE, each as
 * llama.cpp runs it (src/llama-vocab.cpp and src/unicode.cpp there), down to its quirks:
 * the lookups see every token (control ones included), the last of repeated texts wins,
 * BPE symbols with no token fall back to single-byte tokens or vanish. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "lmk_tokenizer.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_model_err.h"
#include "lmk_unicode.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };
enum { PRE_NONE, PRE_GPT2, PRE_LLAMA3, PRE_QWEN2, PRE_DEFAULT };
enum { ST_LSTRIP = 1, ST_RSTRIP = 2 };

typedef struct {
    const char *s; /* into the arena */
    uint32_t n;
    int32_t id;
} hslot;

typedef struct {
    hslot *slots;
    size_t cap; /* power of two */
} hmap;

struct lmk_tokenizer {
    lmk_tok_kind kind;
    int pre;
    int n_vocab;
    char *arena;
    char *merge_arena;
    const char **text; /* (n_vocab) */
    uint32_t *len;
    float *score;
    uint8_t *type;
    uint8_t *strip;    /* ST_* of special tokens (phi-3) */
    hmap vocab;        /* every token's text -> id (the last id of a repeated text) */
    hmap merges;       /* BPE: "left right" -> rank */
    int32_t *special;  /* CONTROL, USER and UNKNOWN tokens, longest text first */
    int n_special;
    int32_t *eog;      /* tokens that end generation */
    int n_eog;
    int32_t byte_id[256];
    int unk, bos, eos, eot;
    int add_space_prefix, add_bos, add_eos, ignore_merges;
    size_t max_len;    /* longest token text */
    uint32_t b2u[256]; /* GPT-2 byte -> code point */
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int hmap_init(hmap *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = cap;
    return m->slots ? 0 : ENOMEM;
}

/* Insert or overwrite (llama.cpp's token_to_id[text] = id: the last id of a text wins). */
static void hmap_put(hmap *m, const char *s, uint32_t n, int32_t id, int overwrite)
{
    size_t i = (size_t)fnv(s, n) & (m->cap - 1);
    while (m->slots[i].s) {
        if (m->slots[i].n == n && !memcmp(m->slots[i].s, s, n)) {
            if (overwrite)
                m->slots[i].id = id;
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->slots[i].s = s;
    m->slots[i].n = n;
    m->slots[i].id = id;
}

static int32_t hmap_get(const hmap *m, const char *s, size_t n)
{
    if (!m->slots)
        return -1;
    size_t i = (size_t)fnv(s, n) & (m->cap - 1);
    while (m->slots[i].s) {
        if (m->slots[i].n == n && !memcmp(m->slots[i].s, s, n))
            return m->slots[i].id;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "<0xNN>" -> NN, else -1 */
static int byte_token_value(const char *s, uint32_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int a = hexval(s[3]), b = hexval(s[4]);
    return a < 0 || b < 0 ? -1 : a * 16 + b;
}

static size_t utf8_len(uint8_t c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

LMK_API void lmk_tokenizer_free(lmk_tokenizer *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->merge_arena);
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->strip);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->special);
    free(t->eog);
    free(t);
}

static void gpt2_byte_map(uint32_t *b2u)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            b2u[b] = (uint32_t)b;
        else
            b2u[b] = 256 + (uint32_t)n++;
    }
}

/* The n tokens' text, scores and types into t (on failure the caller frees t). */
static int load_vocab(lmk_gguf *g, lmk_tokenizer *t, uint64_t n, char *err, size_t cap)
{
    lmk_gguf_type et;
    const void *data;
    t->text = calloc(n, sizeof *t->text);
    t->len = calloc(n, sizeof *t->len);
    t->score = calloc(n, sizeof *t->score);
    t->type = calloc(n, 1);
    t->strip = calloc(n, 1);
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t l;
        lmk_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &l);
        total += (size_t)l + 1;
    }
    t->arena = malloc(total ? total : 1);
    if (!t->text || !t->len || !t->score || !t->type || !t->strip || !t->arena ||
        hmap_init(&t->vocab, (size_t)n))
        return lmk_model__err(err, cap, ENOMEM, "out of memory for the vocabulary");
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t l;
        lmk_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &l);
        if (l > UINT32_MAX - 1) {
            return lmk_model__err(err, cap, LMK_EFORMAT, "token %llu is too long",
                                  (unsigned long long)i);
        }
        memcpy(t->arena + off, s, (size_t)l);
        t->arena[off + l] = 0;
        t->text[i] = t->arena + off;
        t->len[i] = (uint32_t)l;
        if ((size_t)l > t->max_len)
            t->max_len = (size_t)l;
        off += (size_t)l + 1;
        t->type[i] = TT_NORMAL;
    }
    /* Optional arrays: scores and types must match the vocabulary when present. */
    if (lmk_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        uint64_t m;
        if (lmk_gguf_get_array(g, "tokenizer.ggml.scores", &et, &m, &data) || m != n ||
            et != LMK_GGUF_F32) {
            return lmk_model__err(err, cap, LMK_EFORMAT,
                                  "tokenizer.ggml.scores must be %llu f32 values",
                                  (unsigned long long)n);
        }
        memcpy(t->score, data, (size_t)n * 4);
    }
    if (lmk_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        uint64_t m;
        if (lmk_gguf_get_array(g, "tokenizer.ggml.token_type", &et, &m, &data) || m != n ||
            (et != LMK_GGUF_I32 && et != LMK_GGUF_U32)) {
            return lmk_model__err(err, cap, LMK_EFORMAT,
                                  "tokenizer.ggml.token_type must be %llu i32 values",
                                  (unsigned long long)n);
        }
        for (uint64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const uint8_t *)data + 4 * i, 4);
            /* llama.cpp treats an undefined type (0, or out of range) like an unused token */
            t->type[i] = (uint8_t)(v >= 1 && v <= 6 ? v : TT_UNUSED);
        }
    }
    return LMK_OK;
}

/* A BPE tokenizer's merge table into t (on failure the caller frees t). */
static int load_merges(lmk_gguf *g, lmk_tokenizer *t, char *err, size_t cap)
{
    lmk_gguf_type et;
    const void *data;
    int rc;
    uint64_t m;
    if ((rc = lmk_gguf_get_array(g, "tokenizer.ggml.merges", &et, &m, &data)) != 0 ||
        et != LMK_GGUF_STRING) {
        return lmk_model__err(err, cap, rc ? rc : LMK_EFORMAT,
                              "gpt2 tokenizer needs tokenizer.ggml.merges (array of strings)");
    }
    size_t mtotal = 1;
    for (uint64_t i = 0; i < m; i++) {
        const char *s;
        uint64_t l;
        lmk_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &l);
        mtotal += (size_t)l;
    }
    t->merge_arena = malloc(mtotal);
    if (!t->merge_arena || hmap_init(&t->merges, (size_t)m))
        return lmk_model__err(err, cap, ENOMEM, "out of memory for the merges");
    size_t mo = 0;
    for (uint64_t i = 0; i < m; i++) {
        const char *s;
        uint64_t l;
        lmk_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &l);
        memcpy(t->merge_arena + mo, s, (size_t)l);
        /* the first rank of a repeated pair wins (llama.cpp's map emplace) */
        if (l < UINT32_MAX && i < INT32_MAX)
            hmap_put(&t->merges, t->merge_arena + mo, (uint32_t)l, (int32_t)i, 0);
        mo += (size_t)l;
    }
    return LMK_OK;
}

static int str_in(const char *s, uint32_t n, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == n && !memcmp(*list, s, n))
            return 1;
    return 0;
}

/* End-of-turn markers by text (llama.cpp's list: such tokens are made control tokens). */
static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "<|eom_id|>", NULL};

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void lower_ascii(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Special-token tables, end-of-generation set, phi-3 strip rules. */
static int build_specials(lmk_gguf *g, lmk_tokenizer *t, char *err, size_t cap)
{
    int n = t->n_vocab;
    t->special = malloc((size_t)n * sizeof *t->special);
    t->eog = malloc(8 * sizeof *t->eog + (size_t)n * sizeof *t->eog);
    uint64_t *key = malloc((size_t)n * sizeof *key);
    if (!t->special || !t->eog || !key) {
        free(key);
        return lmk_model__err(err, cap, ENOMEM, "out of memory for the special tokens");
    }
    for (int i = 0; i < n; i++) {
        if (t->type[i] != TT_CONTROL && str_in(t->text[i], t->len[i], eot_texts))
            t->type[i] = TT_CONTROL;
    }
    for (int i = 0; i < n; i++) {
        uint8_t ty = t->type[i];
        if ((ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && t->len[i] > 0)
            key[t->n_special++] = (uint64_t)(UINT32_MAX - t->len[i]) << 32 | (uint32_t)i;
    }
    /* longest text first, then by id */
    qsort(key, (size_t)t->n_special, sizeof *key, u64_cmp);
    for (int k = 0; k < t->n_special; k++)
        t->special[k] = (int32_t)(key[k] & 0xffffffffu);
    free(key);

    int add[4] = {t->eos, t->eot, -1, -1};
    uint32_t u;
    if (lmk_gguf_get_u32(g, "tokenizer.ggml.eom_token_id", &u) == 0 && u < (uint32_t)n)
        add[2] = (int)u;
    for (int k = 0; k < 3; k++)
        if (add[k] >= 0)
            t->eog[t->n_eog++] = add[k];
    for (int i = 0; i < n; i++)
        if (str_in(t->text[i], t->len[i], eot_texts) && i != t->eos && i != t->eot &&
            i != add[2])
            t->eog[t->n_eog++] = i;

    /* phi-3 models strip spaces after their special tokens (llama.cpp keys on the name) */
    char name[256];
    if (lmk_gguf_get_strz(g, "general.name", name, sizeof name) == 0) {
        lower_ascii(name);
        if (strstr(name, "phi-3") || strstr(name, "phi3")) {
            static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>", NULL};
            for (int k = 0; k < t->n_special; k++)
                t->strip[t->special[k]] |= ST_RSTRIP;
            int32_t id = hmap_get(&t->vocab, "</s>", 4);
            if (id >= 0)
                t->strip[id] |= ST_RSTRIP;
            for (int k = 0; keep[k]; k++)
                if ((id = hmap_get(&t->vocab, keep[k], strlen(keep[k]))) >= 0)
                    t->strip[id] &= (uint8_t)~ST_RSTRIP;
        }
    }
    return LMK_OK;
}

/* tokenizer.ggml.pre to the split llama.cpp uses for it (llama_vocab::impl::load and
 * llm_tokenizer_bpe): the names below share one regex set each. "default" and a missing
 * key are llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT; names llama.cpp does not know (it
 * rejects them) get the GPT-2 split. */
static int pre_kind(const char *pre)
{
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3",
                                         "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                                         "jina-v5-nano", NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2",
                                        "megrez", "stablelm2", "hunyuan", "solar-open", NULL};
    static const char *const gpt2[] = {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
                                       "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
                                       "modern-bert", "exaone4", "mpt", "olmo", "jais",
                                       "trillion", "granite-docling", NULL};
    uint32_t n = (uint32_t)strlen(pre);
    if (n == 0 || !strcmp(pre, "default"))
        return PRE_DEFAULT;
    if (str_in(pre, n, llama3))
        return PRE_LLAMA3;
    if (str_in(pre, n, qwen2))
        return PRE_QWEN2;
    if (str_in(pre, n, gpt2))
        return PRE_GPT2;
    return PRE_GPT2; /* not a llama.cpp name */
}

LMK_API int lmk_tokenizer_from_gguf(lmk_gguf *g, lmk_tokenizer **out, char *err, size_t cap)
{
    *out = NULL;
    char model[64];
    int rc = lmk_gguf_get_strz(g, "tokenizer.ggml.model", model, sizeof model);
    if (rc)
        return lmk_model__err(err, cap, rc, "%s", lmk_gguf_errmsg(g));
    int is_gpt2 = !strcmp(model, "gpt2");
    if (strcmp(model, "llama") && !is_gpt2)
        return lmk_model__err(err, cap, LMK_EUNSUPPORTED,
                              "tokenizer '%s' is not supported (llama and gpt2 are)", model);
    lmk_gguf_type et;
    uint64_t n;
    const void *data;
    if ((rc = lmk_gguf_get_array(g, "tokenizer.ggml.tokens", &et, &n, &data)) != 0)
        return lmk_model__err(err, cap, rc, "%s", lmk_gguf_errmsg(g));
    if (et != LMK_GGUF_STRING || n == 0 || n > (1u << 24))
        return lmk_model__err(err, cap, LMK_EFORMAT,
                              "tokenizer.ggml.tokens: %llu entries of type %d",
                              (unsigned long long)n, (int)et);
    lmk_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    t->n_vocab = (int)n;
    if ((rc = load_vocab(g, t, n, err, cap)) != 0) {
        lmk_tokenizer_free(t);
        return rc;
    }
    uint32_t u;
    t->bos = lmk_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u) == 0 && u < n ? (int)u : -1;
    t->eos = lmk_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u) == 0 && u < n ? (int)u : -1;
    t->unk = lmk_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &u) == 0 && u < n ? (int)u : -1;
    t->eot = lmk_gguf_get_u32(g, "tokenizer.ggml.eot_token_id", &u) == 0 && u < n ? (int)u : -1;

    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    int n_pieces = 0;
    for (uint64_t i = 0; i < n; i++) {
        hmap_put(&t->vocab, t->text[i], t->len[i], (int32_t)i, 1);
        int bv = byte_token_value(t->text[i], t->len[i]);
        if (!is_gpt2 && bv >= 0 && (t->type[i] == TT_BYTE || t->type[i] == TT_NORMAL)) {
            t->type[i] = TT_BYTE;
            continue;
        }
        if (t->type[i] == TT_NORMAL || t->type[i] == TT_USER)
            n_pieces++;
    }
    /* llama.cpp's byte_to_token looks "<0xNN>" up by text */
    for (int b = 0; b < 256; b++) {
        char hx[7];
        snprintf(hx, sizeof hx, "<0x%02X>", b);
        t->byte_id[b] = hmap_get(&t->vocab, hx, 6);
    }
    int asp, v;
    char pre[64] = "";
    if (is_gpt2) {
        t->kind = LMK_TOK_GPT2;
        if (lmk_gguf_get_strz(g, "tokenizer.ggml.pre", pre, sizeof pre) != 0)
            pre[0] = 0;
        t->pre = pre_kind(pre);
        t->ignore_merges = t->pre == PRE_LLAMA3;
        t->add_bos = t->pre == PRE_LLAMA3;
        asp = 0;
        gpt2_byte_map(t->b2u);
        if ((rc = load_merges(g, t, err, cap)) != 0) {
            lmk_tokenizer_free(t);
            return rc;
        }
    } else if (n_pieces == 0) {
        t->kind = LMK_TOK_BYTE;
        asp = 0;
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0) {
                lmk_tokenizer_free(t);
                return lmk_model__err(err, cap, LMK_EFORMAT,
                                      "byte-level vocabulary lacks the token <0x%02X>", b);
            }
    } else {
        t->kind = LMK_TOK_SPM;
        asp = 1;
        t->add_bos = 1;
    }
    if (t->kind != LMK_TOK_BYTE &&
        lmk_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v) == 0)
        asp = v;
    t->add_space_prefix = asp;
    if (lmk_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v) == 0)
        t->add_bos = v;
    if (lmk_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &v) == 0)
        t->add_eos = v;
    if (t->add_bos && t->bos < 0)
        t->add_bos = 0;
    if (t->add_eos && t->eos < 0)
        t->add_eos = 0;
    if ((rc = build_specials(g, t, err, cap)) != 0) {
        lmk_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LMK_OK;
}

LMK_API lmk_tok_kind lmk_tokenizer_kind(const lmk_tokenizer *t) { return t->kind; }
LMK_API int lmk_tokenizer_n_vocab(const lmk_tokenizer *t) { return t->n_vocab; }
LMK_API int lmk_tokenizer_bos(const lmk_tokenizer *t) { return t->bos; }
LMK_API int lmk_tokenizer_eos(const lmk_tokenizer *t) { return t->eos; }
LMK_API int lmk_tokenizer_add_bos(const lmk_tokenizer *t) { return t->add_bos; }
LMK_API int lmk_tokenizer_add_eos(const lmk_tokenizer *t) { return t->add_eos; }

LMK_API const char *lmk_tokenizer_pre(const lmk_tokenizer *t)
{
    static const char *const names[] = {"", "gpt2", "llama3", "qwen2", "default"};
    return names[t->pre];
}

LMK_API int lmk_tokenizer_is_eog(const lmk_tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return 1;
    return 0;
}

LMK_API int lmk_tokenizer_is_control(const lmk_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab &&
           (t->type[id] == TT_CONTROL || t->type[id] == TT_UNKNOWN);
}

LMK_API int lmk_tokenizer_find(const lmk_tokenizer *t, const char *s, size_t n)
{
    for (int i = 0; i < t->n_vocab; i++)
        if (t->len[i] == n && !memcmp(t->text[i], s, n))
            return i;
    return -1;
}

LMK_API size_t lmk_tokenizer_max_tokens(size_t len)
{
    /* SentencePiece: a text fragment of L bytes gives at most 3L + 3 <= 6L tokens (a space
     * becomes U+2581, three byte tokens; plus the space prefix); a special token takes at
     * least one byte. BPE: an invalid byte becomes U+FFFD, whose three bytes map to three
     * two-byte code points, each byte of which may fall back to a one-byte token. */
    return 6 * len + 2;
}

/* ---- output with a bound ---- */

typedef struct {
    int32_t *ids;
    size_t cap, n; /* n counts past cap: the size needed */
} sink;

static void put(sink *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* ---- BPE merge machinery shared by SentencePiece and byte-level BPE ---- */

typedef struct {
    int prev, next;
    size_t off, n; /* bytes of the working text */
} sym;

typedef struct {
    int left, right;
    double score;
    size_t size;
} bigram;

typedef struct {
    bigram *h;
    size_t n, cap;
} heap;

static int bg_less(const bigram *a, const bigram *b) /* a has lower priority than b */
{
    return a->score < b->score || (a->score == b->score && a->left > b->left);
}

static int heap_push(heap *q, bigram b)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 64;
        bigram *h = realloc(q->h, cap * sizeof *h);
        if (!h)
            return ENOMEM;
        q->h = h;
        q->cap = cap;
    }
    size_t i = q->n++;
    q->h[i] = b;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&q->h[p], &q->h[i]))
            break;
        bigram tmp = q->h[p];
        q->h[p] = q->h[i];
        q->h[i] = tmp;
        i = p;
    }
    return 0;
}

static bigram heap_pop(heap *q)
{
    bigram top = q->h[0];
    q->h[0] = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->n && bg_less(&q->h[m], &q->h[l]))
            m = l;
        if (r < q->n && bg_less(&q->h[m], &q->h[r]))
            m = r;
        if (m == i)
            break;
        bigram tmp = q->h[m];
        q->h[m] = q->h[i];
        q->h[i] = tmp;
        i = m;
    }
    return top;
}

typedef struct {
    const lmk_tokenizer *t;
    const char *text;
    sym *s;
    heap q;
    char *scratch; /* BPE "left right" key */
    size_t scratch_cap;
} bpe;

/* Priority of merging symbols l and r; 0 when they do not merge (or out of memory, which
 * bpe_key reports). */
static int pair_score(bpe *b, int l, int r, double *score, int *oom)
{
    const char *a = b->text + b->s[l].off;
    size_t n = b->s[l].n + b->s[r].n; /* symbols are adjacent in the working text */
    if (b->t->kind == LMK_TOK_SPM) {
        int32_t id = hmap_get(&b->t->vocab, a, n);
        if (id < 0)
            return 0;
        *score = b->t->score[id];
        return 1;
    }
    size_t need = n + 1;
    if (need > b->scratch_cap) {
        char *p = realloc(b->scratch, need * 2);
        if (!p) {
            *oom = 1;
            return 0;
        }
        b->scratch = p;
        b->scratch_cap = need * 2;
    }
    memcpy(b->scratch, a, b->s[l].n);
    b->scratch[b->s[l].n] = ' ';
    memcpy(b->scratch + b->s[l].n + 1, b->text + b->s[r].off, b->s[r].n);
    int32_t rank = hmap_get(&b->t->merges, b->scratch, need);
    if (rank < 0)
        return 0;
    *score = -(double)rank;
    return 1;
}

static int try_add(bpe *b, int l, int r)
{
    if (l < 0 || r < 0)
        return 0;
    double sc;
    int oom = 0;
    if (!pair_score(b, l, r, &sc, &oom))
        return oom ? ENOMEM : 0;
    bigram g = {l, r, sc, b->s[l].n + b->s[r].n};
    return heap_push(&b->q, g);
}

/* Run the merges over symbols [0, n) (already linked). */
static int bpe_run(bpe *b, int n)
{
    for (int i = 1; i < n; i++)
        if (try_add(b, i - 1, i))
            return ENOMEM;
    while (b->q.n) {
        bigram g = heap_pop(&b->q);
        sym *L = &b->s[g.left], *R = &b->s[g.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != g.size)
            continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0)
            b->s[R->next].prev = g.left;
        if (try_add(b, L->prev, g.left) || try_add(b, g.left, L->next))
            return ENOMEM;
    }
    return 0;
}

/* ---- SentencePiece ---- */

/* One text fragment (prefix: add the space prefix). */
static int encode_spm(const lmk_tokenizer *t, const char *text, size_t len, int prefix,
                      sink *o)
{
    size_t nsp = 0;
    for (size_t i = 0; i < len; i++)
        nsp += text[i] == ' ';
    size_t wlen = len + 2 * nsp + (prefix ? 3 : 0);
    if (wlen == 0)
        return LMK_OK;
    char *w = malloc(wlen + 1);
    sym *s = malloc((wlen + 1) * sizeof *s);
    bpe b = {t, w, s, {0}, NULL, 0};
    int rc = LMK_OK;
    if (!w || !s) {
        rc = ENOMEM;
        goto out;
    }
    size_t k = 0;
    if (prefix) {
        memcpy(w, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(w + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            w[k++] = text[i];
        }
    }
    int ns = 0;
    for (size_t off = 0; off < wlen; ns++) {
        size_t n = utf8_len((uint8_t)w[off]);
        if (n > wlen - off)
            n = wlen - off;
        s[ns].off = off;
        s[ns].n = n;
        s[ns].prev = ns - 1;
        off += n;
        s[ns].next = off == wlen ? -1 : ns + 1;
    }
    if ((rc = bpe_run(&b, ns)) != 0)
        goto out;
    for (int i = 0; i != -1; i = s[i].next) {
        int32_t id = hmap_get(&t->vocab, w + s[i].off, s[i].n);
        if (id >= 0) {
            put(o, id);
            continue;
        }
        /* A symbol with no token is a single character (merges only form tokens): its
         * bytes as byte tokens, else the unknown token. */
        for (size_t q = 0; q < s[i].n; q++) {
            int32_t bid = t->byte_id[(uint8_t)w[s[i].off + q]];
            if (bid < 0)
                bid = t->unk;
            if (bid < 0) {
                rc = LMK_EUNSUPPORTED;
                goto out;
            }
            put(o, bid);
        }
    }
out:
    free(w);
    free(s);
    free(b.q.h);
    return rc;
}

/* ---- byte-level BPE: pre-split (llama.cpp's unicode_regex_split_custom_*) ---- */

typedef struct {
    const uint32_t *cp;
    size_t n;
} cps;

#define OUT_OF_RANGE 0xffffffffu

static uint32_t cp_at(const cps *c, size_t i) { return i < c->n ? c->cp[i] : OUT_OF_RANGE; }
static unsigned fl_at(const cps *c, size_t i)
{
    return i < c->n ? lmk_unicode_flags(c->cp[i]) : 0;
}

#define IS_L(f) ((f) & LMK_UCAT_LETTER)
#define IS_N(f) ((f) & LMK_UCAT_NUMBER)
#define IS_S(f) ((f) & LMK_UCAT_SPACE)

static uint32_t lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Contractions 's 't 'm 'd 're 've 'll (case-insensitive unless gpt2): length or 0. */
static size_t contraction(const cps *c, size_t pos, int ci)
{
    if (cp_at(c, pos) != '\'' || pos + 1 >= c->n)
        return 0;
    uint32_t a = cp_at(c, pos + 1);
    if (ci)
        a = lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 < c->n) {
        uint32_t b = cp_at(c, pos + 2);
        if (ci)
            b = lower(b);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return 3;
    }
    return 0;
}

/* End of the pre-token starting at pos (code point indices). */
static size_t split_gpt2(const cps *c, size_t pos)
{
    size_t k = contraction(c, pos, 0);
    if (k)
        return pos + k;
    uint32_t cp = cp_at(c, pos);
    unsigned f = fl_at(c, pos);
    unsigned f2 = cp == ' ' ? fl_at(c, pos + 1) : f;
    if (IS_L(f2) || IS_N(f2)) {
        unsigned want = IS_L(f2) ? LMK_UCAT_LETTER : LMK_UCAT_NUMBER;
        pos += cp == ' ';
        while (f2 & want)
            f2 = fl_at(c, ++pos);
        return pos;
    }
    if (!(IS_S(f2) || IS_L(f2) || IS_N(f2)) && f2) {
        pos += cp == ' ';
        while (!(IS_S(f2) || IS_L(f2) || IS_N(f2)) && f2)
            f2 = fl_at(c, ++pos);
        return pos;
    }
    size_t nw = 0;
    while (IS_S(fl_at(c, pos + nw)))
        nw++;
    if (nw > 1 && cp_at(c, pos + nw) != OUT_OF_RANGE) /* \s+(?!\S) */
        return pos + nw - 1;
    if (nw > 0)
        return pos + nw;
    return pos + 1;
}

/* llama3 (max_digits 3) and qwen2 (max_digits 1). Digit groups are returned one at a
 * time: a run of digits splits every max_digits. */
static size_t split_llama3(const cps *c, size_t pos, int max_digits)
{
    size_t k = contraction(c, pos, 1);
    if (k)
        return pos + k;
    uint32_t cp = cp_at(c, pos);
    unsigned f = fl_at(c, pos);
    if (!(cp == '\r' || cp == '\n' || IS_N(f))) { /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (IS_L(f) || IS_L(fl_at(c, pos + 1))) {
            pos++;
            while (IS_L(fl_at(c, pos)))
                pos++;
            return pos;
        }
    }
    if (IS_N(f)) { /* \p{N}{1,max} */
        size_t ini = pos;
        while (IS_N(fl_at(c, pos)) && pos - ini < (size_t)max_digits)
            pos++;
        return pos;
    }
    unsigned f2 = cp == ' ' ? fl_at(c, pos + 1) : f;
    if (!(IS_S(f2) || IS_L(f2) || IS_N(f2)) && f) { /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        pos += cp == ' ';
        while (!(IS_S(f2) || IS_L(f2) || IS_N(f2)) && f2)
            f2 = fl_at(c, ++pos);
        uint32_t c2 = cp_at(c, pos);
        while (c2 == '\r' || c2 == '\n')
            c2 = cp_at(c, ++pos);
        return pos;
    }
    size_t nw = 0, last_rn = 0;
    while (IS_S(fl_at(c, pos + nw))) {
        uint32_t c2 = cp_at(c, pos + nw);
        if (c2 == '\r' || c2 == '\n')
            last_rn = pos + nw + 1;
        nw++;
    }
    if (last_rn > 0) /* \s*[\r\n]+ */
        return last_rn;
    if (nw > 1 && cp_at(c, pos + nw) != OUT_OF_RANGE) /* \s+(?!\S) */
        return pos + nw - 1;
    if (nw > 0)
        return pos + nw;
    return pos + 1;
}

/* llama.cpp's DEFAULT pre-tokenizer applies four regexes in turn, each splitting every
 * piece the previous ones left (unicode_regex_split: a match and the text between matches
 * are pieces):
 *   [\p{P}\$\+<=>\^~\|]+                   std::regex over the "collapsed" text
 *   the GPT-2 regex                       unicode_regex_split_custom_gpt2
 *   \p{N}+                                std::regex over the collapsed text
 *   [0-9][0-9][0-9]                       std::wregex
 * In the collapsed text an ASCII code point stands for itself and any other for its
 * category (whitespace first), so \p{P} and \p{N} keep their ASCII meaning (P: the ASCII
 * punctuation !"#%&'()*,-./:;?@[\]_{}; N: 0-9) and their category beyond. */
static int is_default_punct(uint32_t cp)
{
    if (cp < 128)
        return cp && strchr("!\"#%&'()*,-./:;?@[\\]_{}$+<=>^~|", (int)cp) != NULL;
    unsigned f = lmk_unicode_flags(cp);
    return !(f & LMK_UCAT_SPACE) && (f & LMK_UCAT_PUNCT);
}

static int is_default_number(uint32_t cp)
{
    if (cp < 128)
        return cp >= '0' && cp <= '9';
    unsigned f = lmk_unicode_flags(cp);
    return !(f & LMK_UCAT_SPACE) && (f & LMK_UCAT_NUMBER);
}

static int is_ascii_digit(uint32_t cp) { return cp >= '0' && cp <= '9'; }

typedef struct {
    uint32_t *cp;
    char *w;   /* byte-encoded pre-token */
    sym *s;
    size_t cap_cp, cap_w;
    bpe b;
} bpe_work;

/* The pre-token W->cp[pos..end) through the byte encoding and the merges. */
static int encode_piece(const lmk_tokenizer *t, bpe_work *W, size_t pos, size_t end, sink *o)
{
    /* byte-encode: every UTF-8 byte of the code points as a (<= 2-byte) code point */
    size_t need = (end - pos) * 8 + 1;
    if (need > W->cap_w) {
        char *nw = realloc(W->w, need);
        if (!nw)
            return ENOMEM;
        W->w = nw;
        sym *ns = realloc(W->s, need * sizeof *ns);
        if (!ns)
            return ENOMEM;
        W->s = ns;
        W->cap_w = need;
    }
    size_t wl = 0;
    int nsym = 0;
    for (size_t i = pos; i < end; i++) {
        char u8[4];
        size_t l = lmk_utf8_encode(W->cp[i], u8);
        for (size_t j = 0; j < l; j++) {
            size_t bl = lmk_utf8_encode(t->b2u[(uint8_t)u8[j]], W->w + wl);
            W->s[nsym].off = wl;
            W->s[nsym].n = bl;
            W->s[nsym].prev = nsym - 1;
            W->s[nsym].next = nsym + 1;
            nsym++;
            wl += bl;
        }
    }
    W->s[nsym - 1].next = -1;
    int32_t whole = t->ignore_merges ? hmap_get(&t->vocab, W->w, wl) : -1;
    if (whole >= 0) {
        put(o, whole);
        return LMK_OK;
    }
    W->b.text = W->w;
    W->b.s = W->s;
    W->b.q.n = 0;
    if (bpe_run(&W->b, nsym))
        return ENOMEM;
    for (int j = 0; j != -1; j = W->s[j].next) {
        const char *p = W->w + W->s[j].off;
        int32_t id = hmap_get(&t->vocab, p, W->s[j].n);
        if (id >= 0) {
            put(o, id);
            continue;
        }
        /* llama.cpp: each byte of the symbol as a one-byte token, when there is one */
        for (size_t q = 0; q < W->s[j].n; q++) {
            int32_t bid = hmap_get(&t->vocab, p + q, 1);
            if (bid >= 0)
                put(o, bid);
        }
    }
    return LMK_OK;
}

/* The DEFAULT pre-tokenizer over W->cp[0..ncp) (see is_default_punct). */
static int encode_default(const lmk_tokenizer *t, bpe_work *W, size_t ncp, sink *o)
{
    const uint32_t *cp = W->cp;
    int rc;
    /* 1: maximal runs of punctuation, and the runs between them */
    for (size_t a = 0, b; a < ncp; a = b) {
        int p = is_default_punct(cp[a]);
        for (b = a + 1; b < ncp && is_default_punct(cp[b]) == p; b++)
            ;
        /* 2: the GPT-2 split, bounded by the piece */
        cps c = {cp + a, b - a};
        for (size_t pos = 0, end; pos < c.n; pos = end) {
            end = split_gpt2(&c, pos);
            if (end <= pos || end > c.n) /* cannot happen; keeps the loop finite */
                end = pos + 1;
            /* 3: maximal runs of \p{N}, and the runs between them */
            for (size_t q = a + pos, r; q < a + end; q = r) {
                int nu = is_default_number(cp[q]);
                for (r = q + 1; r < a + end && is_default_number(cp[r]) == nu; r++)
                    ;
                /* 4: [0-9][0-9][0-9] from the left; the text between as pieces */
                size_t g = q;
                for (size_t i = q; i + 3 <= r;) {
                    if (is_ascii_digit(cp[i]) && is_ascii_digit(cp[i + 1]) &&
                        is_ascii_digit(cp[i + 2])) {
                        if (g < i && (rc = encode_piece(t, W, g, i, o)))
                            return rc;
                        if ((rc = encode_piece(t, W, i, i + 3, o)))
                            return rc;
                        i += 3;
                        g = i;
                    } else {
                        i++;
                    }
                }
                if (g < r && (rc = encode_piece(t, W, g, r, o)))
                    return rc;
            }
        }
    }
    return LMK_OK;
}

/* One text fragment through the pre-split and the merges. */
static int encode_gpt2(const lmk_tokenizer *t, const char *text, size_t len, bpe_work *W,
                       sink *o)
{
    if (len + 1 > W->cap_cp) {
        uint32_t *p = realloc(W->cp, (len + 1) * sizeof *p);
        if (!p)
            return ENOMEM;
        W->cp = p;
        W->cap_cp = len + 1;
    }
    size_t ncp = 0;
    for (size_t off = 0; off < len;)
        W->cp[ncp++] = lmk_utf8_decode(text, len, &off);
    if (t->pre == PRE_DEFAULT)
        return encode_default(t, W, ncp, o);
    cps c = {W->cp, ncp};
    for (size_t pos = 0; pos < ncp;) {
        size_t end = t->pre == PRE_LLAMA3  ? split_llama3(&c, pos, 3)
                     : t->pre == PRE_QWEN2 ? split_llama3(&c, pos, 1)
                                           : split_gpt2(&c, pos);
        if (end <= pos || end > ncp) /* cannot happen; keeps the loop finite */
            end = pos + 1;
        int rc = encode_piece(t, W, pos, end, o);
        if (rc)
            return rc;
        pos = end;
    }
    return LMK_OK;
}

/* ---- special tokens: llama.cpp's tokenizer_st_partition ---- */

typedef struct {
    size_t off, len;
    int32_t tok;   /* -1: text */
    int special;   /* text where control tokens are recognized */
} frag;

typedef struct {
    frag *f;
    size_t n, cap;
} frags;

static int frag_push(frags *v, size_t off, size_t len, int32_t tok, int special)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        frag *p = realloc(v->f, cap * sizeof *p);
        if (!p)
            return ENOMEM;
        v->f = p;
        v->cap = cap;
    }
    v->f[v->n++] = (frag){off, len, tok, special};
    return 0;
}

static int is_space(char c) { return isspace((unsigned char)c) != 0; }

/* Split the text fragments of *v at every occurrence of each special token in turn,
 * longest token first (user-defined tokens everywhere, control and unknown ones in the
 * fragments marked special). */
static int partition(const lmk_tokenizer *t, const char *text, frags *v)
{
    frags nv = {0};
    int any_special = 0;
    for (size_t i = 0; i < v->n; i++)
        any_special |= v->f[i].special;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        int user = t->type[id] == TT_USER;
        if (!any_special && !user)
            continue;
        const char *tt = t->text[id];
        size_t tl = t->len[id];
        int any = 0;
        for (size_t i = 0; i < v->n && !any; i++)
            any = v->f[i].tok < 0 && (user || v->f[i].special) && v->f[i].len >= tl &&
                  memmem(text + v->f[i].off, v->f[i].len, tt, tl) != NULL;
        if (!any)
            continue;
        nv.n = 0;
        for (size_t i = 0; i < v->n; i++) {
            frag f = v->f[i];
            if (f.tok >= 0 || !(user || f.special)) {
                if (frag_push(&nv, f.off, f.len, f.tok, f.special))
                    goto oom;
                continue;
            }
            size_t off = f.off, len = f.len;
            for (;;) {
                const char *m = len >= tl ? memmem(text + off, len, tt, tl) : NULL;
                if (!m) {
                    if (len > 0 && frag_push(&nv, off, len, -1, f.special))
                        goto oom;
                    break;
                }
                size_t mo = (size_t)(m - text);
                size_t ll = mo - off;
                if (t->strip[id] & ST_LSTRIP)
                    while (ll > 0 && is_space(text[off + ll - 1]))
                        ll--;
                if (ll > 0 && frag_push(&nv, off, ll, -1, f.special))
                    goto oom;
                if (frag_push(&nv, mo, tl, id, 0))
                    goto oom;
                size_t ro = mo + tl, rl = off + len - ro;
                if (t->strip[id] & ST_RSTRIP)
                    while (rl > 0 && is_space(text[ro])) {
                        ro++;
                        rl--;
                    }
                off = ro;
                len = rl;
                if (len == 0)
                    break;
            }
        }
        frags tmp = *v;
        *v = nv;
        nv = tmp;
    }
    free(nv.f);
    return 0;
oom:
    free(nv.f);
    return ENOMEM;
}

/* Tokenize text[0..len) split into the fragments v (partitioned here; freed). */
static int tokenize_frags(const lmk_tokenizer *t, const char *text, frags *v,
                          unsigned flags, sink *o)
{
    int add = (flags & LMK_TOK_ADD_SPECIAL) != 0;
    int rc = LMK_OK;
    if (v->n && partition(t, text, v)) {
        free(v->f);
        return ENOMEM;
    }
    /* text fragments that touch (segments of one text) are one text again */
    size_t m = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (m > 0 && v->f[i].tok < 0 && v->f[m - 1].tok < 0 &&
            v->f[m - 1].off + v->f[m - 1].len == v->f[i].off)
            v->f[m - 1].len += v->f[i].len;
        else
            v->f[m++] = v->f[i];
    }
    v->n = m;
    if (add && t->add_bos)
        put(o, t->bos);
    int prev_special = !(flags & LMK_TOK_CONTINUE);
    bpe_work W;
    memset(&W, 0, sizeof W);
    W.b.t = t;
    for (size_t i = 0; i < v->n && rc == LMK_OK; i++) {
        frag f = v->f[i];
        if (f.tok >= 0) {
            put(o, f.tok);
            prev_special = 1;
            continue;
        }
        if (t->kind == LMK_TOK_BYTE)
            for (size_t k = 0; k < f.len; k++)
                put(o, t->byte_id[(uint8_t)text[f.off + k]]);
        else if (t->kind == LMK_TOK_SPM)
            rc = encode_spm(t, text + f.off, f.len, t->add_space_prefix && prev_special, o);
        else
            rc = encode_gpt2(t, text + f.off, f.len, &W, o);
        prev_special = 0;
    }
    if (add && t->add_eos)
        put(o, t->eos);
    free(v->f);
    free(W.cp);
    free(W.w);
    free(W.s);
    free(W.b.q.h);
    free(W.b.scratch);
    return rc;
}

LMK_API int lmk_tokenizer_tokenize(const lmk_tokenizer *t, const char *text, size_t len,
                                   unsigned flags, int32_t *ids, size_t cap, size_t *n_out)
{
    sink o = {ids, cap, 0};
    *n_out = 0;
    frags v = {0};
    /* the shared byte-level model takes raw bytes: no special token is parsed */
    int special = (flags & LMK_TOK_PARSE_SPECIAL) && t->kind != LMK_TOK_BYTE;
    if (len > 0 && frag_push(&v, 0, len, -1, special))
        return ENOMEM;
    int rc = tokenize_frags(t, text, &v, flags, &o);
    if (rc)
        return rc;
    *n_out = o.n;
    return o.n > cap ? LMK_EINVAL : LMK_OK;
}

LMK_API int lmk_tokenizer_tokenize_segments(const lmk_tokenizer *t, const lmk_tok_segment *seg,
                                            size_t n_seg, unsigned flags, int32_t *ids,
                                            size_t cap, size_t *n_out)
{
    sink o = {ids, cap, 0};
    *n_out = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_seg; i++)
        total += seg[i].len;
    char *text = malloc(total ? total : 1);
    frags v = {0};
    if (!text)
        return ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < n_seg; i++) {
        if (seg[i].len == 0)
            continue;
        memcpy(text + off, seg[i].text, seg[i].len);
        if (frag_push(&v, off, seg[i].len, -1, seg[i].special && t->kind != LMK_TOK_BYTE)) {
            free(v.f);
            free(text);
            return ENOMEM;
        }
        off += seg[i].len;
    }
    int rc = tokenize_frags(t, text, &v, flags, &o);
    free(text);
    if (rc)
        return rc;
    *n_out = o.n;
    return o.n > cap ? LMK_EINVAL : LMK_OK;
}

LMK_API int lmk_tokenizer_encode(const lmk_tokenizer *t, const char *text, size_t len,
                                 int first, int32_t *ids, size_t *n_out)
{
    return lmk_tokenizer_tokenize(t, text, len, first ? 0 : LMK_TOK_CONTINUE, ids,
                                  lmk_tokenizer_max_tokens(len), n_out);
}

/* ---- pieces ---- */

static int piece(const lmk_tokenizer *t, int32_t id, int special, char *buf, size_t cap)
{
    if (id < 0 || id >= t->n_vocab)
        return -1;
    uint8_t ty = t->type[id];
    const char *src = t->text[id];
    size_t n = t->len[id], o = 0;
    if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_USER) {
        if (!special && ty != TT_USER)
            return 0;
        for (size_t i = 0; i < n; i++, o++)
            if (o < cap)
                buf[o] = src[i];
        return (int)o;
    }
    if (ty == TT_BYTE) {
        int bv = byte_token_value(src, (uint32_t)n);
        if (bv < 0)
            return 0;
        if (cap)
            buf[0] = (char)bv;
        return 1;
    }
    if (ty != TT_NORMAL)
        return 0;
    if (t->kind == LMK_TOK_GPT2) {
        /* code points back to bytes; one that is no mapped byte is copied as is */
        for (size_t i = 0; i < n;) {
            size_t i0 = i;
            uint32_t cp = lmk_utf8_decode(src, n, &i);
            int byte = -1;
            if (cp < 0x144)
                for (int b = 0; b < 256 && byte < 0; b++)
                    if (t->b2u[b] == cp)
                        byte = b;
            if (byte < 0) {
                for (size_t q = i0; q < i; q++, o++)
                    if (o < cap)
                        buf[o] = src[q];
            } else {
                if (o < cap)
                    buf[o] = (char)byte;
                o++;
            }
        }
        return (int)o;
    }
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && !memcmp(src + i, "\xe2\x96\x81", 3)) {
            if (o < cap)
                buf[o] = ' ';
            o++;
            i += 3;
        } else {
            if (o < cap)
                buf[o] = src[i];
            o++;
            i++;
        }
    }
    return (int)o;
}

LMK_API int lmk_tokenizer_piece(const lmk_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    return piece(t, id, 0, buf, cap);
}

LMK_API int lmk_tokenizer_piece_special(const lmk_tokenizer *t, int32_t id, char *buf,
                                        size_t cap)
{
    return piece(t, id, 1, buf, cap);
}

LMK_API long long lmk_tokenizer_decode(const lmk_tokenizer *t, const int32_t *ids, size_t n,
                                       int special, char *buf, size_t cap)
{
    char *tmp = malloc(t->max_len + 1);
    if (!tmp)
        return -1;
    long long total = 0;
    int remove_space = t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        int l = piece(t, ids[i], special, tmp, t->max_len + 1);
        if (l < 0) {
            free(tmp);
            return -1;
        }
        const char *p = tmp;
        if (remove_space && l > 0 && p[0] == ' ') {
            p++;
            l--;
        }
        remove_space = 0;
        for (int k = 0; k < l; k++, total++)
            if ((size_t)total < cap)
                buf[total] = p[k];
    }
    free(tmp);
    return total;
}

LMK_API size_t lmk_utf8_complete_prefix(const char *s, size_t n)
{
    /* look back at most 3 bytes for the lead byte of an unfinished character */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = (uint8_t)s[n - k];
        if ((c & 0xc0) == 0x80)
            continue; /* continuation byte: keep looking */
        if (c < 0x80)
            return n;
        size_t need = utf8_len(c);
        if ((c & 0xc0) == 0xc0 && need > k)
            return n - k;
        return n;
    }
    return n;
}

/* ---- streaming input: safe cuts (the rules are in the header) ---- */

#define CUT_TRIES 64 /* candidates checked in full before giving up on a window */

/* Context needed on both sides of a cut. */
static size_t cut_margin(const lmk_tokenizer *t) { return t->max_len + 4; }

static int ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Whether an occurrence of a user-defined token in text[0..len) overlaps or touches p. */
static int user_token_at(const lmk_tokenizer *t, const char *text, size_t len, size_t p)
{
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (t->type[id] != TT_USER)
            continue;
        size_t L = t->len[id];
        size_t a = p >= L ? p - L : 0, b = p + L <= len ? p + L : len;
        while (b - a >= L) {
            const char *m = memmem(text + a, b - a, t->text[id], L);
            if (!m)
                break;
            size_t s = (size_t)(m - text);
            if (s <= p && p <= s + L)
                return 1;
            a = s + 1;
        }
    }
    return 0;
}

/* Whether a user-defined token occurs in text[a..b) or touches either end of it. */
static int user_token_in(const lmk_tokenizer *t, const char *text, size_t len, size_t a,
                         size_t b)
{
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (t->type[id] != TT_USER)
            continue;
        size_t L = t->len[id];
        size_t lo = a >= L ? a - L : 0, hi = b + L <= len ? b + L : len;
        if (hi > lo && hi - lo >= L && memmem(text + lo, hi - lo, t->text[id], L))
            return 1;
    }
    return 0;
}

/* User-defined tokens at p, and with phi-3's stripping anywhere in the white space around
 * p or at either end of it (a user-defined token may itself be white space, e.g. "\n",
 * and strips the spaces after it). */
static int special_near(const lmk_tokenizer *t, const char *text, size_t len, size_t p,
                        int strip)
{
    if (user_token_at(t, text, len, p))
        return 1;
    if (!strip)
        return 0;
    size_t a = p, b = p;
    while (a > 0 && is_space(text[a - 1]))
        a--;
    while (b < len && is_space(text[b]))
        b++;
    if (a == p && b == p)
        return 0;
    if (a == 0 || b == len) /* white space up to the buffer's edge: unknown */
        return 1;
    return user_token_in(t, text, len, a, b);
}

/* SentencePiece: whether a symbol or a token can span p (see the header). w: scratch of
 * 6 * max_len + 16 bytes. */
static int spm_spans(const lmk_tokenizer *t, const char *text, size_t len, size_t p, char *w)
{
    for (size_t j = 1; j <= 3 && j <= p; j++) {
        uint8_t c = (uint8_t)text[p - j];
        if (c >= 0xc0 && utf8_len(c) > j)
            return 1; /* a lead byte whose symbol would reach past p */
    }
    if (((uint8_t)text[p] & 0xc0) == 0x80)
        return 1;
    size_t M = t->max_len;
    size_t a = p >= M ? p - M : 0, b = p + M <= len ? p + M : len, wl = 0, wp = 0;
    for (size_t i = a; i < b; i++) {
        if (i == p)
            wp = wl;
        if (text[i] == ' ') {
            memcpy(w + wl, "\xe2\x96\x81", 3);
            wl += 3;
        } else {
            w[wl++] = text[i];
        }
    }
    for (size_t s = wp > M ? wp - M + 1 : 0; s < wp; s++)
        for (size_t e = wp + 1; e <= wl && e - s <= M; e++)
            if (hmap_get(&t->vocab, w + s, e - s) >= 0)
                return 1;
    return 0;
}

LMK_API size_t lmk_tokenizer_safe_cut(const lmk_tokenizer *t, const char *text, size_t len,
                                      size_t limit)
{
    size_t M = cut_margin(t);
    if (limit > len)
        limit = len;
    if (t->kind == LMK_TOK_BYTE)
        return limit;
    if (len < 2 * M || limit < M)
        return 0;
    size_t hi = limit < len - M ? limit : len - M;
    int strip = 0;
    for (int k = 0; k < t->n_special; k++)
        strip |= t->strip[t->special[k]] != 0;
    int tries = 0;
    if (t->kind == LMK_TOK_GPT2) {
        for (size_t p = hi; p >= M && tries < CUT_TRIES; p--) {
            if (text[p] != ' ' || !ascii_alpha(text[p - 1]) || !ascii_alpha(text[p + 1]))
                continue;
            tries++;
            if (!special_near(t, text, len, p, strip))
                return p;
        }
        return 0;
    }
    char *w = malloc(6 * t->max_len + 16);
    if (!w)
        return 0;
    size_t cut = 0;
    /* before a space that follows a non-space, then before any character */
    for (size_t p = hi; p >= M && tries < CUT_TRIES && !cut; p--) {
        if (text[p] != ' ' || text[p - 1] == ' ')
            continue;
        tries++;
        if (!spm_spans(t, text, len, p, w) && !special_near(t, text, len, p, strip))
            cut = p;
    }
    tries = 0;
    for (size_t p = hi; p >= M && tries < CUT_TRIES && !cut; p--) {
        if (((uint8_t)text[p] & 0xc0) == 0x80)
            continue;
        tries++;
        if (!spm_spans(t, text, len, p, w) && !special_near(t, text, len, p, strip))
            cut = p;
    }
    free(w);
    return cut;
}

struct lmk_tokenizer_stream {
    const lmk_tokenizer *t;
    int cont;           /* the next piece continues the document */
    int done;           /* finished */
    char *head;         /* (head_len) tokenized with the first piece */
    size_t head_len;
    char *buf;          /* (cap) the text since the last cut: n bytes */
    size_t n, cap, window;
    int32_t *ids;       /* (ids_cap) the last piece's ids */
    size_t ids_cap;
    size_t inexact;
};

LMK_API int lmk_tokenizer_stream_open(const lmk_tokenizer *t, unsigned flags, const char *head,
                                      size_t head_len, size_t window,
                                      lmk_tokenizer_stream **out)
{
    *out = NULL;
    lmk_tokenizer_stream *s = calloc(1, sizeof *s);
    if (!s)
        return ENOMEM;
    size_t M = cut_margin(t);
    s->t = t;
    s->cont = (flags & LMK_TOK_CONTINUE) != 0;
    s->window = window ? window : LMK_TOK_STREAM_WINDOW;
    if (s->window < 2 * M)
        s->window = 2 * M;
    s->cap = s->window + M;
    s->ids_cap = s->cap + 16;
    s->buf = malloc(s->cap);
    s->ids = malloc(s->ids_cap * sizeof *s->ids);
    if (head && head_len && (s->head = malloc(head_len)))
        memcpy(s->head, head, head_len), s->head_len = head_len;
    if (!s->buf || !s->ids || (head && head_len && !s->head)) {
        lmk_tokenizer_stream_free(s);
        return ENOMEM;
    }
    *out = s;
    return LMK_OK;
}

LMK_API void lmk_tokenizer_stream_free(lmk_tokenizer_stream *s)
{
    if (!s)
        return;
    free(s->head);
    free(s->buf);
    free(s->ids);
    free(s);
}

LMK_API size_t lmk_tokenizer_stream_inexact(const lmk_tokenizer_stream *s)
{
    return s->inexact;
}

/* Tokenize text[0..len) as the next piece into s->ids. */
static int stream_piece(lmk_tokenizer_stream *s, const char *text, size_t len, size_t *n)
{
    unsigned fl = s->cont ? LMK_TOK_CONTINUE : 0;
    for (;;) {
        size_t got = 0;
        int rc;
        if (s->head_len) {
            lmk_tok_segment seg[2] = {{s->head, s->head_len, 1}, {text, len, 0}};
            rc = lmk_tokenizer_tokenize_segments(s->t, seg, 2, fl, s->ids, s->ids_cap, &got);
        } else {
            rc = lmk_tokenizer_tokenize(s->t, text, len, fl, s->ids, s->ids_cap, &got);
        }
        if (rc == LMK_EINVAL && got > s->ids_cap) { /* more ids than bytes: room, again */
            int32_t *p = realloc(s->ids, got * sizeof *p);
            if (!p)
                return ENOMEM;
            s->ids = p;
            s->ids_cap = got;
            continue;
        }
        if (rc)
            return rc;
        *n = got;
        s->cont = 1;
        free(s->head);
        s->head = NULL;
        s->head_len = 0;
        return LMK_OK;
    }
}

LMK_API int lmk_tokenizer_stream_write(lmk_tokenizer_stream *s, const char *text, size_t len,
                                       size_t *used, const int32_t **ids, size_t *n)
{
    *used = 0;
    *n = 0;
    *ids = s->ids;
    if (s->done)
        return LMK_ESTATE;
    if (len == 0)
        return LMK_OK;
    if (s->n == s->cap) { /* full, and text follows: cut */
        size_t p = lmk_tokenizer_safe_cut(s->t, s->buf, s->n, s->window);
        if (p == 0) {
            p = s->window;
            for (int k = 0; k < 3 && p > 1 && ((uint8_t)s->buf[p] & 0xc0) == 0x80; k++)
                p--;
            s->inexact++;
        }
        int rc = stream_piece(s, s->buf, p, n);
        if (rc)
            return rc;
        *ids = s->ids; /* stream_piece may have moved them */
        memmove(s->buf, s->buf + p, s->n - p);
        s->n -= p;
    }
    size_t k = len < s->cap - s->n ? len : s->cap - s->n;
    memcpy(s->buf + s->n, text, k);
    s->n += k;
    *used = k;
    return LMK_OK;
}

LMK_API int lmk_tokenizer_stream_finish(lmk_tokenizer_stream *s, const int32_t **ids,
                                        size_t *n)
{
    *n = 0;
    *ids = s->ids;
    if (s->done)
        return LMK_ESTATE;
    s->done = 1;
    int rc = stream_piece(s, s->buf, s->n, n);
    *ids = s->ids; /* stream_piece may have moved them */
    s->n = 0;
    return rc;
}
