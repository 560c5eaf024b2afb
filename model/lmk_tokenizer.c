/* Tokenizers from GGUF metadata: byte-level, SentencePiece BPE (llama.cpp's algorithm) and
 * GPT-2 byte-level BPE. */
#include "lmk_tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_model_err.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

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
    int n_vocab;
    char *arena;
    char *merge_arena;
    const char **text; /* (n_vocab) */
    uint32_t *len;
    float *score;
    uint8_t *type;
    hmap vocab;
    hmap merges;       /* GPT-2: "left right" -> rank */
    int32_t byte_id[256];
    int unk, bos, eos;
    int add_space_prefix;
    /* GPT-2 byte <-> code point mapping */
    uint32_t b2u[256];
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

/* First insert wins (GGUF vocabularies may repeat a text; the lowest id is kept). */
static void hmap_put(hmap *m, const char *s, uint32_t n, int32_t id)
{
    size_t i = (size_t)fnv(s, n) & (m->cap - 1);
    while (m->slots[i].s) {
        if (m->slots[i].n == n && !memcmp(m->slots[i].s, s, n))
            return;
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

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
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
    free(t->vocab.slots);
    free(t->merges.slots);
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
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t l;
        lmk_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &l);
        total += (size_t)l + 1;
    }
    t->arena = malloc(total ? total : 1);
    if (!t->text || !t->len || !t->score || !t->type || !t->arena ||
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
            t->type[i] = (uint8_t)(v >= 1 && v <= 6 ? v : TT_NORMAL);
        }
    }
    return LMK_OK;
}

/* A gpt2 tokenizer's merge table into t (on failure the caller frees t). */
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
        if (l < UINT32_MAX && i < INT32_MAX)
            hmap_put(&t->merges, t->merge_arena + mo, (uint32_t)l, (int32_t)i);
        mo += (size_t)l;
    }
    return LMK_OK;
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
    int asp = 1;
    if (lmk_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &asp) != 0)
        asp = 1;
    t->add_space_prefix = asp;

    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    int n_pieces = 0;
    for (uint64_t i = 0; i < n; i++) {
        int bv = byte_token_value(t->text[i], t->len[i]);
        if (!is_gpt2 && bv >= 0 && (t->type[i] == TT_BYTE || t->type[i] == TT_NORMAL)) {
            if (t->byte_id[bv] < 0)
                t->byte_id[bv] = (int32_t)i;
            t->type[i] = TT_BYTE;
            continue;
        }
        if (t->type[i] == TT_NORMAL || t->type[i] == TT_USER)
            n_pieces++;
        /* Only pieces text can produce take part in lookups and merges. */
        if (t->type[i] == TT_NORMAL || t->type[i] == TT_USER || t->type[i] == TT_UNKNOWN)
            hmap_put(&t->vocab, t->text[i], t->len[i], (int32_t)i);
    }
    if (is_gpt2) {
        t->kind = LMK_TOK_GPT2;
        gpt2_byte_map(t->b2u);
        if ((rc = load_merges(g, t, err, cap)) != 0) {
            lmk_tokenizer_free(t);
            return rc;
        }
    } else if (n_pieces == 0) {
        t->kind = LMK_TOK_BYTE;
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0) {
                lmk_tokenizer_free(t);
                return lmk_model__err(err, cap, LMK_EFORMAT,
                                      "byte-level vocabulary lacks the token <0x%02X>", b);
            }
    } else {
        t->kind = LMK_TOK_SPM;
    }
    *out = t;
    return LMK_OK;
}

LMK_API lmk_tok_kind lmk_tokenizer_kind(const lmk_tokenizer *t) { return t->kind; }
LMK_API int lmk_tokenizer_n_vocab(const lmk_tokenizer *t) { return t->n_vocab; }
LMK_API int lmk_tokenizer_bos(const lmk_tokenizer *t) { return t->bos; }
LMK_API int lmk_tokenizer_eos(const lmk_tokenizer *t) { return t->eos; }

LMK_API int lmk_tokenizer_find(const lmk_tokenizer *t, const char *s, size_t n)
{
    for (int i = 0; i < t->n_vocab; i++)
        if (t->len[i] == n && !memcmp(t->text[i], s, n))
            return i;
    return -1;
}

LMK_API size_t lmk_tokenizer_max_tokens(size_t len)
{
    /* Byte fallback gives at most one token per byte; the space prefix adds 3 bytes. */
    return len + 4;
}

/* ---- BPE merge machinery shared by SentencePiece and GPT-2 ---- */

typedef struct {
    int prev, next;
    size_t off, n; /* bytes of the working text */
} sym;

typedef struct {
    int left, right;
    float score;
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
    char *scratch; /* GPT-2 "left right" key */
    size_t scratch_cap;
} bpe;

/* Score of merging symbols l and r, or 0 (no merge) with *ok = 0. */
static int pair_score(bpe *b, int l, int r, float *score)
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
        if (!p)
            return 0;
        b->scratch = p;
        b->scratch_cap = need * 2;
    }
    memcpy(b->scratch, a, b->s[l].n);
    b->scratch[b->s[l].n] = ' ';
    memcpy(b->scratch + b->s[l].n + 1, b->text + b->s[r].off, b->s[r].n);
    int32_t rank = hmap_get(&b->t->merges, b->scratch, need);
    if (rank < 0)
        return 0;
    *score = -(float)rank;
    return 1;
}

static int try_add(bpe *b, int l, int r)
{
    if (l < 0 || r < 0)
        return 0;
    float sc;
    if (!pair_score(b, l, r, &sc))
        return 0;
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

static int emit_bytes(const lmk_tokenizer *t, const char *p, size_t n, int32_t *ids,
                      size_t *k)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(uint8_t)p[i]];
        if (id < 0)
            id = t->unk;
        if (id < 0)
            return LMK_EUNSUPPORTED;
        ids[(*k)++] = id;
    }
    return LMK_OK;
}

static int encode_spm(const lmk_tokenizer *t, const char *text, size_t len, int first,
                      int32_t *ids, size_t *n_out)
{
    /* Working text: spaces escaped to U+2581, optional leading U+2581. */
    size_t nsp = 0;
    for (size_t i = 0; i < len; i++)
        nsp += text[i] == ' ';
    int prefix = first && t->add_space_prefix && len > 0;
    size_t wlen = len + 2 * nsp + (prefix ? 3 : 0);
    char *w = malloc(wlen + 1);
    sym *s = malloc((wlen + 1) * sizeof *s);
    bpe b = {t, w, s, {0}, NULL, 0};
    int rc = LMK_OK;
    if (!w || !s) {
        rc = ENOMEM;
        goto out;
    }
    size_t o = 0;
    if (prefix) {
        memcpy(w, "\xe2\x96\x81", 3);
        o = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(w + o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            w[o++] = text[i];
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
    size_t k = 0;
    for (int i = ns ? 0 : -1; i != -1; i = s[i].next) {
        int32_t id = hmap_get(&t->vocab, w + s[i].off, s[i].n);
        if (id >= 0)
            ids[k++] = id;
        else if ((rc = emit_bytes(t, w + s[i].off, s[i].n, ids, &k)) != 0)
            goto out;
    }
    /* Each output token covers >= 1 byte of the working text, and a U+2581 (3 bytes)
     * becomes at most 3 byte tokens, so k <= len + 3. */
    *n_out = k;
out:
    free(w);
    free(s);
    free(b.q.h);
    return rc;
}

/* GPT-2 pre-split classes over code points (non-ASCII counts as a letter). */
static int cls(const char *p, size_t n, size_t i, uint32_t *cp_len)
{
    uint8_t c = (uint8_t)p[i];
    size_t l = utf8_len(c);
    if (l > n - i)
        l = n - i;
    *cp_len = (uint32_t)l;
    if (c >= 0x80)
        return 'L';
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 'L';
    if (c >= '0' && c <= '9')
        return 'N';
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
        return 'S';
    return 'O';
}

static size_t run_of(const char *p, size_t n, size_t i, int want)
{
    size_t j = i;
    while (j < n) {
        uint32_t l;
        if (cls(p, n, j, &l) != want)
            break;
        j += l;
    }
    return j;
}

/* Length of the pre-token starting at i. */
static size_t gpt2_next(const char *p, size_t n, size_t i)
{
    uint32_t l;
    if (p[i] == '\'' && i + 1 < n) {
        char a = p[i + 1], b = i + 2 < n ? p[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
            return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return 3;
    }
    int c = cls(p, n, i, &l);
    size_t j = i;
    if (p[i] == ' ' && i + 1 < n) {
        uint32_t l2;
        int c2 = cls(p, n, i + 1, &l2);
        if (c2 != 'S') {
            c = c2;
            j = i + 1;
        }
    }
    if (c != 'S')
        return run_of(p, n, j, c) - i;
    size_t e = run_of(p, n, i, 'S');
    if (e < n && e - i > 1) /* \s+(?!\S): leave the last space to the next word */
        e--;
    return e - i;
}

static int encode_gpt2(const lmk_tokenizer *t, const char *text, size_t len, int32_t *ids,
                       size_t *n_out)
{
    size_t k = 0;
    int rc = LMK_OK;
    char *w = NULL;
    sym *s = NULL;
    size_t wcap = 0;
    bpe b = {t, NULL, NULL, {0}, NULL, 0};
    for (size_t i = 0; i < len;) {
        size_t m = gpt2_next(text, len, i);
        if (3 * m + 1 > wcap) {
            wcap = 3 * m + 64;
            char *nw = realloc(w, wcap);
            sym *ns = realloc(s, wcap * sizeof *s);
            if (nw)
                w = nw;
            if (ns)
                s = ns;
            if (!nw || !ns) {
                rc = ENOMEM;
                break;
            }
        }
        size_t o = 0;
        for (size_t j = 0; j < m; j++) {
            s[j].off = o;
            s[j].n = utf8_put(t->b2u[(uint8_t)text[i + j]], w + o);
            o += s[j].n;
            s[j].prev = (int)j - 1;
            s[j].next = j + 1 == m ? -1 : (int)j + 1;
        }
        b.text = w;
        b.s = s;
        b.q.n = 0;
        if ((rc = bpe_run(&b, (int)m)) != 0)
            break;
        for (int j = 0; j != -1; j = s[j].next) {
            int32_t id = hmap_get(&t->vocab, w + s[j].off, s[j].n);
            if (id >= 0) {
                ids[k++] = id;
                continue;
            }
            /* No piece for this symbol: one token per mapped byte, when the vocab has it. */
            for (size_t q = 0; q < s[j].n;) {
                size_t cl = utf8_len((uint8_t)w[s[j].off + q]);
                int32_t bid = hmap_get(&t->vocab, w + s[j].off + q, cl);
                if (bid < 0)
                    bid = t->unk;
                if (bid < 0) {
                    rc = LMK_EUNSUPPORTED;
                    goto out;
                }
                ids[k++] = bid;
                q += cl;
            }
        }
        i += m;
    }
out:
    *n_out = k;
    free(w);
    free(s);
    free(b.q.h);
    free(b.scratch);
    return rc;
}

LMK_API int lmk_tokenizer_encode(const lmk_tokenizer *t, const char *text, size_t len,
                                 int first, int32_t *ids, size_t *n_out)
{
    *n_out = 0;
    switch (t->kind) {
    case LMK_TOK_BYTE:
        for (size_t i = 0; i < len; i++)
            ids[i] = t->byte_id[(uint8_t)text[i]];
        *n_out = len;
        return LMK_OK;
    case LMK_TOK_SPM:
        return encode_spm(t, text, len, first, ids, n_out);
    case LMK_TOK_GPT2:
        return encode_gpt2(t, text, len, ids, n_out);
    }
    return LMK_EINVAL;
}

LMK_API int lmk_tokenizer_piece(const lmk_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || id >= t->n_vocab)
        return -1;
    char tmp[8];
    const char *src;
    size_t n;
    uint8_t ty = t->type[id];
    if (ty == TT_CONTROL || ty == TT_UNUSED)
        return 0;
    if (ty == TT_BYTE) {
        tmp[0] = (char)byte_token_value(t->text[id], t->len[id]);
        src = tmp;
        n = 1;
        if (cap)
            buf[0] = tmp[0];
        return 1;
    }
    src = t->text[id];
    n = t->len[id];
    size_t o = 0;
    if (t->kind == LMK_TOK_GPT2) {
        /* Map code points back to bytes. */
        for (size_t i = 0; i < n;) {
            size_t l = utf8_len((uint8_t)src[i]);
            if (l > n - i)
                l = n - i;
            uint32_t cp = (uint8_t)src[i];
            if (l == 2)
                cp = ((cp & 0x1f) << 6) | ((uint8_t)src[i + 1] & 0x3f);
            else if (l == 3)
                cp = ((cp & 0x0f) << 12) | (((uint8_t)src[i + 1] & 0x3f) << 6) |
                     ((uint8_t)src[i + 2] & 0x3f);
            int byte = -1;
            for (int b = 0; b < 256 && byte < 0; b++)
                if (t->b2u[b] == cp)
                    byte = b;
            if (byte < 0) { /* not a mapped byte: copy the code point as is */
                for (size_t q = 0; q < l; q++, o++)
                    if (o < cap)
                        buf[o] = src[i + q];
            } else {
                if (o < cap)
                    buf[o] = (char)byte;
                o++;
            }
            i += l;
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
