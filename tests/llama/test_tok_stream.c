/* Streamed tokenization (lmk_tokenizer_stream_*, lmk_tokenizer_safe_cut) against whole-text
 * tokenization, for every tokenizer kind: crafted byte-level, SentencePiece and byte-level
 * BPE vocabularies (gpt2, llama3, qwen2 and default pre-tokenizers), the shared models'
 * vocabularies (../shared/models, when present) and llama.cpp's vocabularies of those kinds
 * (LMK_LLAMA_REF, when fetched; skipped with a notice otherwise).
 *
 * For each vocabulary, a crafted text (words, contractions, CRLF lines, runs of spaces,
 * tabs and newlines, digits, Latin, CJK and emoji, invalid UTF-8, a user-defined token,
 * runs of 300 bytes without white space) and 64 KiB of the KJV text (when present) are
 * handed to a stream in reads of 1, 2, 3, 7, 64, 4093 bytes, all at once and of random
 * sizes (seed printed), with windows from the smallest to 4096 bytes: every read pattern
 * must give the same ids; with no inexact cut they must be the whole text's ids, and at a
 * 4096-byte window there must be no inexact cut. Each cut lmk_tokenizer_safe_cut proposes
 * must keep the ids. The inputs are checked to be discriminating: cutting at fixed offsets,
 * after spaces, inside runs of white space, or (SentencePiece) before every space with no
 * vocabulary check changes the crafted text's ids for every kind but the byte-level one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_test.h"
#include "lmk_tokenizer.h"

typedef struct {
    char name[64];
    lmk_gguf *g;
    uint8_t *buf;
    lmk_tokenizer *t;
} vocab;

static void vocab_free(vocab *v)
{
    lmk_tokenizer_free(v->t);
    lmk_gguf_close(v->g);
    free(v->buf);
    memset(v, 0, sizeof *v);
}

/* general.name of the next vocabulary made (phi-3's space stripping keys on it), or NULL */
static const char *g_general_name;

static int make(vocab *v, const char *name, const char *model, int n, const char **toks,
                const float *scores, const int32_t *types, const char **merges, int n_merges,
                const char *pre)
{
    lmk_gguf_writer *w;
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", name);
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", model));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING,
                                         (uint64_t)n, toks));
    if (scores)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32,
                                             (uint64_t)n, scores));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32,
                                         (uint64_t)n, types));
    if (merges)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.merges", LMK_GGUF_STRING,
                                             (uint64_t)n_merges, merges));
    if (pre)
        REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre));
    if (g_general_name)
        REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.name", g_general_name));
    size_t size;
    REQUIRE_OK(lmk_gguf_writer_encode(w, &v->buf, &size));
    lmk_gguf_writer_free(w);
    char err[256];
    REQUIRE_OK(lmk_gguf_open_buffer(v->buf, size, &v->g, err, sizeof err));
    int rc = lmk_tokenizer_from_gguf(v->g, &v->t, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s: %s\n", name, err);
    REQUIRE_OK(rc);
    return 0;
}

static char byte_names[256][8];

/* Byte-level: the 256 <0xNN> tokens and <s>. */
static int byte_vocab(vocab *v)
{
    static const char *toks[257];
    static int32_t ty[257];
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[b] = byte_names[b];
        ty[b] = 6;
    }
    toks[256] = "<s>";
    ty[256] = 3;
    return make(v, "crafted byte", "llama", 257, toks, NULL, ty, NULL, 0, NULL);
}

/* SentencePiece: byte tokens, pieces that merge across a space ("x\u2581y"), runs of
 * U+2581, a user-defined token. */
#define SP "\xe2\x96\x81"
static int spm_vocab(vocab *v)
{
    static const char *toks[300];
    static float sc[300];
    static int32_t ty[300];
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[b] = byte_names[b];
        ty[b] = 6;
    }
    const char *extra[] = {"<s>", "</s>", "<|u|>", SP, SP SP, SP SP SP SP, "a", "b", "x", "y",
                           "ab", SP "a", SP "ab", SP "b", "x" SP "y", "x" SP, SP "x",
                           "th", "the", SP "the", "e", "h", "t", "\xc3\xa9", "caf",
                           "caf\xc3\xa9", "\r\n", "\n\n", "'s", SP "it", "it"};
    int ne = (int)(sizeof extra / sizeof extra[0]);
    for (int i = 0; i < ne; i++) {
        toks[256 + i] = extra[i];
        ty[256 + i] = i < 2 ? 3 : i == 2 ? 4 : 1;
        sc[256 + i] = -(float)(strlen(extra[i]) > 3 ? 1 : 10) - (float)i * 0.01f;
    }
    return make(v, "crafted spm", "llama", 256 + ne, toks, sc, ty, NULL, 0, NULL);
}

/* SentencePiece with no U+2581 piece: a space takes three byte tokens, so a piece may give
 * more ids than bytes (the stream's id buffer grows). */
static int spm_nospace_vocab(vocab *v)
{
    static const char *toks[300];
    static float sc[300];
    static int32_t ty[300];
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[b] = byte_names[b];
        ty[b] = 6;
    }
    const char *extra[] = {"<s>", "</s>", "w", "o", "r", "d", "wo", "wor", "word"};
    int ne = (int)(sizeof extra / sizeof extra[0]);
    for (int i = 0; i < ne; i++) {
        toks[256 + i] = extra[i];
        ty[256 + i] = i < 2 ? 3 : 1;
        sc[256 + i] = -(float)i;
    }
    return make(v, "crafted spm, no space", "llama", 256 + ne, toks, sc, ty, NULL, 0, NULL);
}

/* Byte-level BPE with merges over words, spaces, newlines and digits, a user token. */
static int bpe_vocab(vocab *v, const char *pre)
{
    static char names[256][4];
    static const char *toks[300];
    static int32_t ty[300];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
                          ? (uint32_t)b
                          : 256 + (uint32_t)n++;
        memset(names[b], 0, sizeof names[b]);
        if (cp < 0x80)
            names[b][0] = (char)cp;
        else {
            names[b][0] = (char)(0xc0 | (cp >> 6));
            names[b][1] = (char)(0x80 | (cp & 0x3f));
        }
        toks[b] = names[b];
        ty[b] = 1;
    }
    /* U+0120 is the space, U+010A the newline, U+010D the carriage return */
    const char *extra[] = {"th", "the", "\xc4\xa0t", "\xc4\xa0the", "an", "and", "\xc4\xa0" "and",
                           "\xc4\xa0\xc4\xa0", "\xc4\xa0\xc4\xa0\xc4\xa0\xc4\xa0", "\xc4\x8a\xc4\x8a",
                           "\xc4\x8d\xc4\x8a", "12", "123", "'s", "\xc4\xa0" "a", "<|endoftext|>",
                           "<|u|>"};
    const char *merges[] = {"t h", "th e", "\xc4\xa0 t", "\xc4\xa0 the", "a n", "an d",
                            "\xc4\xa0 and", "\xc4\xa0 \xc4\xa0", "\xc4\xa0\xc4\xa0 \xc4\xa0\xc4\xa0",
                            "\xc4\x8a \xc4\x8a", "\xc4\x8d \xc4\x8a", "1 2", "12 3", "' s",
                            "\xc4\xa0 a"};
    int ne = (int)(sizeof extra / sizeof extra[0]);
    for (int i = 0; i < ne; i++) {
        toks[256 + i] = extra[i];
        ty[256 + i] = i == ne - 2 ? 3 : i == ne - 1 ? 4 : 1;
    }
    char name[64];
    snprintf(name, sizeof name, "crafted bpe %s", pre ? pre : "(none)");
    return make(v, name, "gpt2", 256 + ne, toks, NULL, ty, merges,
                (int)(sizeof merges / sizeof merges[0]), pre);
}

static int file_vocab(vocab *v, const char *path, const char *name)
{
    char err[512];
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", name);
    if (lmk_gguf_open(path, &v->g, err, sizeof err))
        return 1;
    if (lmk_tokenizer_from_gguf(v->g, &v->t, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", name, err);
        lmk_gguf_close(v->g);
        v->g = NULL;
        return 1;
    }
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The crafted text (about n bytes) into out. */
static size_t crafted_text(char *out, size_t n, uint64_t seed)
{
    static const char *const parts[] = {
        "the cat and the hat ", "it's what we'll see, isn't it? ", "line one\r\nline two\r\n",
        "a      b   c  ", "\t\ttabbed\tand\n\n\nnewlines\n", "x y x  y xy ", "1234567 89 0.5 ",
        "caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 ", "\xe6\xbc\xa2\xe5\xad\x97\xe3\x81\x8b "
        "\xe3\x81\xaa ", "\xf0\x9f\x8e\x89 party \xf0\x9f\x8e\x89", "bad \xff\xfe bytes \xe2\x96 ",
        "<|u|> user token <|u|>", " <|u|>  spaced ", "...!?;: (parens) [x] ", "  \n  \r\n ",
        "And God said, Let there be light: and there was light. ", "'s 'S 'll 'VE ",
        "ab ab  ab\n", "UPPER lower MiXeD ", "\xc3\xa9 \xc3\xa9\xc3\xa9 e\xcc\x81 "};
    size_t np = sizeof parts / sizeof parts[0], k = 0;
    uint64_t r = seed;
    while (k + 400 < n) {
        uint64_t x = rng_next(&r);
        if (x % 23 == 0) { /* a run with no white space */
            const char *unit = (x >> 8) % 3 == 0 ? "x" : (x >> 8) % 3 == 1 ? "\xe6\xbc\xa2" : "ab";
            size_t ul = strlen(unit);
            for (size_t j = 0; j + ul <= 300; j += ul)
                memcpy(out + k, unit, ul), k += ul;
            continue;
        }
        const char *p = parts[(x >> 8) % np];
        size_t l = strlen(p);
        memcpy(out + k, p, l);
        k += l;
    }
    return k;
}

static int32_t *tokenize_whole(const lmk_tokenizer *t, const char *text, size_t len,
                               unsigned flags, size_t *n)
{
    size_t cap = lmk_tokenizer_max_tokens(len);
    int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
    if (!ids || lmk_tokenizer_tokenize(t, text, len, flags, ids, cap, n)) {
        free(ids);
        return NULL;
    }
    return ids;
}

/* The text cut at cuts[0..nc) (ascending), each piece tokenized alone (the later ones with
 * LMK_TOK_CONTINUE). */
static int32_t *tokenize_cut(const lmk_tokenizer *t, const char *text, size_t len,
                             const size_t *cuts, size_t nc, size_t *n)
{
    int32_t *all = malloc((lmk_tokenizer_max_tokens(len) + 16) * sizeof *all);
    size_t k = 0, at = 0;
    for (size_t i = 0; i <= nc && all; i++) {
        size_t end = i < nc ? cuts[i] : len, m = 0;
        int32_t *p = tokenize_whole(t, text + at, end - at, at ? LMK_TOK_CONTINUE : 0, &m);
        if (!p) {
            free(all);
            return NULL;
        }
        memcpy(all + k, p, m * sizeof *p);
        k += m;
        free(p);
        at = end;
    }
    *n = k;
    return all;
}

static int same(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

/* Phi-3's stripping removes every space after a user-defined token, and a user-defined
 * token may itself be white space ("\n"): a cut anywhere in the white space around one
 * is not safe, even when neither end of that white space touches it (found by
 * fuzz_tokenizer). Every cut lmk_tokenizer_safe_cut proposes in such text keeps the ids. */
static int check_whitespace_user_token(void)
{
    static const char *toks[260];
    static float sc[260];
    static int32_t ty[260];
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[b] = byte_names[b];
        ty[b] = 6;
        sc[b] = 0;
    }
    toks[256] = "\n";
    ty[256] = 4;
    toks[257] = "\x02";
    ty[257] = 3;
    vocab v;
    g_general_name = "Phi-3 mini";
    int rc = make(&v, "phi-3 spm, white-space user token", "llama", 258, toks, sc, ty, NULL, 0,
                  NULL);
    g_general_name = NULL;
    if (rc)
        return rc;
    char text[4096];
    size_t len = 0;
    for (int i = 0; i < 40; i++) {
        const char *u = i % 2 ? "\xc8\xc8&    \n      \xd7      " : "ab  \n  \n   cd ";
        memcpy(text + len, u, strlen(u));
        len += strlen(u);
    }
    size_t nw = 0, cuts = 0;
    int32_t *whole = tokenize_whole(v.t, text, len, 0, &nw);
    REQUIRE(whole);
    for (size_t lim = 1; lim < len; lim++) {
        size_t p = lmk_tokenizer_safe_cut(v.t, text, len, lim), nn = 0;
        if (p != lim)
            continue;
        cuts++;
        int32_t *cut = tokenize_cut(v.t, text, len, &p, 1, &nn);
        int ok = cut && same(cut, nn, whole, nw);
        if (!ok)
            fprintf(stderr, "%s: the safe cut at %zu changed the ids\n", v.name, p);
        CHECK(ok);
        free(cut);
        if (!ok)
            break;
    }
    printf("%s: %zu safe cuts checked\n", v.name, cuts);
    CHECK(cuts > 0);
    free(whole);
    vocab_free(&v);
    return 0;
}

/* The text through a stream with reads of `step` bytes (0: random sizes from *rng). */
static int32_t *tokenize_stream(const lmk_tokenizer *t, const char *text, size_t len,
                                size_t window, size_t step, uint64_t *rng, size_t *n,
                                size_t *inexact)
{
    lmk_tokenizer_stream *s;
    if (lmk_tokenizer_stream_open(t, 0, NULL, 0, window, &s))
        return NULL;
    int32_t *all = malloc((lmk_tokenizer_max_tokens(len) + 16) * sizeof *all);
    size_t k = 0, at = 0, got;
    const int32_t *ids;
    int rc = all ? 0 : ENOMEM;
    while (!rc && at < len) {
        size_t want = step ? step : 1 + rng_next(rng) % 3000;
        size_t avail = len - at < want ? len - at : want, used = 0;
        while (!rc && used < avail) {
            size_t u;
            rc = lmk_tokenizer_stream_write(s, text + at + used, avail - used, &u, &ids, &got);
            if (!rc) {
                memcpy(all + k, ids, got * sizeof *ids);
                k += got;
                used += u;
            }
        }
        at += avail;
    }
    if (!rc && !(rc = lmk_tokenizer_stream_finish(s, &ids, &got))) {
        memcpy(all + k, ids, got * sizeof *ids);
        k += got;
    }
    *inexact = lmk_tokenizer_stream_inexact(s);
    lmk_tokenizer_stream_free(s);
    if (rc) {
        fprintf(stderr, "stream: %s\n", lmk_strerror(rc));
        free(all);
        return NULL;
    }
    *n = k;
    return all;
}

typedef struct {
    int vocabs, exact_runs, inexact_runs, naive_differs;
} tally;

/* Cut positions of a wrong rule (at least 40 bytes apart): 0 fixed offsets of 997 bytes,
 * 1 after a space before a non-space, 2 inside a run of white space, 3 before a space after
 * a non-space (no vocabulary check). */
static size_t wrong_cuts(int rule, const char *s, size_t len, size_t *cuts, size_t max)
{
    size_t nc = 0, last = 0;
    for (size_t p = 1; p + 1 < len && nc < max; p++) {
        int ws0 = s[p - 1] == ' ' || s[p - 1] == '\n' || s[p - 1] == '\t' || s[p - 1] == '\r';
        int ws1 = s[p] == ' ' || s[p] == '\n' || s[p] == '\t' || s[p] == '\r';
        int ok = rule == 0 ? p % 997 == 0
                 : rule == 1 ? s[p - 1] == ' ' && !ws1
                 : rule == 2 ? ws0 && ws1
                             : s[p] == ' ' && !ws0;
        if (ok && p - last >= 40)
            cuts[nc++] = last = p;
    }
    return nc;
}

static void check_vocab(const vocab *v, const char *text, size_t len, const char *what,
                        uint64_t seed, tally *ta)
{
    const lmk_tokenizer *t = v->t;
    size_t nw;
    int32_t *whole = tokenize_whole(t, text, len, 0, &nw);
    if (!whole) {
        fprintf(stderr, "%s: tokenizing %s failed\n", v->name, what);
        CHECK(whole != NULL);
        return;
    }
    /* the inputs discriminate: wrong cuts change the ids (byte-level: nothing can) */
    size_t *cuts = malloc((len / 40 + 2) * sizeof *cuts);
    int differs = 0;
    for (int rule = 0; rule < 4 && cuts; rule++) {
        size_t nc = wrong_cuts(rule, text, len, cuts, len / 40 + 1), nn;
        int32_t *naive = tokenize_cut(t, text, len, cuts, nc, &nn);
        int d = naive && !same(naive, nn, whole, nw);
        differs |= d << rule;
        free(naive);
    }
    if (lmk_tokenizer_kind(t) != LMK_TOK_BYTE && !strcmp(what, "crafted text")) {
        int want = (1 << 0) | (1 << 1) | (1 << 2);
        if (strstr(v->name, "crafted spm"))
            want |= 1 << 3; /* "x y" is one token there */
        if ((differs & want) != want)
            fprintf(stderr, "%s, %s: wrong cuts that kept the ids: rules %#x of %#x\n",
                    v->name, what, (unsigned)(~differs & want), (unsigned)want);
        CHECK((differs & want) == want);
        ta->naive_differs += (differs & want) == want;
    } else if (lmk_tokenizer_kind(t) == LMK_TOK_BYTE) {
        CHECK(differs == 0);
    }
    /* every safe cut keeps the ids: cut at each one proposed along the text */
    size_t nc = 0, at = 0;
    for (;;) {
        size_t lim = 64 + (size_t)(rng_next(&seed) % 1500);
        size_t p = lmk_tokenizer_safe_cut(t, text + at, len - at, lim);
        if (p == 0) {
            /* none here: go on from the next byte the rules could use as a start, i.e.
             * stop (a cut sequence must start at a safe cut) */
            break;
        }
        cuts[nc++] = at += p;
    }
    size_t ns;
    int32_t *cut = tokenize_cut(t, text, len, cuts, nc, &ns);
    if (!cut || !same(cut, ns, whole, nw))
        fprintf(stderr, "%s, %s: the %zu safe cuts changed the ids\n", v->name, what, nc);
    CHECK(cut && same(cut, ns, whole, nw));
    free(cut);
    free(cuts);
    /* streams: every read pattern the same ids; the whole text's when no cut was inexact */
    static const size_t windows[] = {1, 300, 1000, 4096};
    static const size_t steps[] = {1, 2, 3, 7, 64, 4093, (size_t)-1, 0};
    for (size_t wi = 0; wi < sizeof windows / sizeof windows[0]; wi++) {
        int32_t *first = NULL;
        size_t nf = 0, inex0 = 0;
        for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
            size_t n, inex;
            uint64_t r = seed + si;
            int32_t *ids = tokenize_stream(t, text, len, windows[wi], steps[si], &r, &n, &inex);
            CHECK(ids != NULL);
            if (!ids)
                continue;
            if (!first) {
                first = ids;
                nf = n;
                inex0 = inex;
                if (inex == 0) {
                    if (!same(ids, n, whole, nw))
                        fprintf(stderr, "%s, %s: window %zu: stream differs from the whole "
                                "text (%zu vs %zu ids)\n", v->name, what, windows[wi], n, nw);
                    CHECK(same(ids, n, whole, nw));
                    ta->exact_runs++;
                } else {
                    ta->inexact_runs++;
                }
                if (windows[wi] >= 4096 && inex)
                    fprintf(stderr, "%s, %s: %zu inexact cuts at window %zu\n", v->name, what,
                            inex, windows[wi]);
                CHECK(windows[wi] < 4096 || inex == 0);
                continue;
            }
            if (!same(ids, n, first, nf) || inex != inex0)
                fprintf(stderr, "%s, %s: window %zu: reads of %zu bytes give other ids\n",
                        v->name, what, windows[wi], steps[si]);
            CHECK(same(ids, n, first, nf) && inex == inex0);
            free(ids);
        }
        free(first);
    }
    free(whole);
}

/* A stream with a head (a chat template's header): the same as the segments at once. */
static void check_head(const vocab *v, const char *text, size_t len)
{
    const char *head = "<s>header\n\n";
    lmk_tok_segment seg[2] = {{head, strlen(head), 1}, {text, len, 0}};
    size_t cap = lmk_tokenizer_max_tokens(len + strlen(head)), nw, got, k = 0;
    int32_t *whole = malloc(cap * sizeof *whole), *all = malloc(cap * sizeof *all);
    lmk_tokenizer_stream *s = NULL;
    const int32_t *ids;
    if (!whole || !all ||
        lmk_tokenizer_tokenize_segments(v->t, seg, 2, 0, whole, cap, &nw) ||
        lmk_tokenizer_stream_open(v->t, 0, head, strlen(head), 1000, &s)) {
        CHECK(0);
        goto out;
    }
    for (size_t at = 0; at < len;) {
        size_t u;
        CHECK_RC(lmk_tokenizer_stream_write(s, text + at, len - at < 777 ? len - at : 777, &u,
                                            &ids, &got), LMK_OK);
        memcpy(all + k, ids, got * sizeof *ids);
        k += got;
        at += u;
    }
    CHECK_RC(lmk_tokenizer_stream_finish(s, &ids, &got), LMK_OK);
    memcpy(all + k, ids, got * sizeof *ids);
    k += got;
    if (lmk_tokenizer_stream_inexact(s) == 0)
        CHECK(same(all, k, whole, nw));
    size_t u;
    CHECK_RC(lmk_tokenizer_stream_write(s, "x", 1, &u, &ids, &got), LMK_ESTATE);
out:
    lmk_tokenizer_stream_free(s);
    free(whole);
    free(all);
}

static void run(vocab *v, const char *crafted, size_t cl, const char *kjv, size_t kl,
                uint64_t seed, tally *ta)
{
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    check_vocab(v, crafted, cl, kjv || cl != 20 * 2005 ? "crafted text" : "runs of spaces",
                seed, ta);
    if (kjv)
        check_vocab(v, kjv, kl, "KJV", seed, ta);
    check_head(v, crafted, cl);
    ta->vocabs++;
    printf("%-24s %-5s pre '%s': ok so far (%d failures, %.1f s)\n", v->name,
           lmk_tokenizer_kind(v->t) == LMK_TOK_BYTE ? "byte"
           : lmk_tokenizer_kind(v->t) == LMK_TOK_SPM ? "spm" : "bpe",
           lmk_tokenizer_pre(v->t), lmk_test_failures,
           (double)clock() / CLOCKS_PER_SEC - t0);
    vocab_free(v);
}

static char *slurp(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = malloc(max);
    *len = b ? fread(b, 1, max, f) : 0;
    fclose(f);
    return b;
}

int main(void)
{
    uint64_t seed = 20261130;
    printf("seed %llu\n", (unsigned long long)seed);
    size_t cl = 24000, kl = 0;
    char *crafted = malloc(cl + 512);
    REQUIRE(crafted);
    cl = crafted_text(crafted, cl, seed);
    const char *shared = getenv("LMK_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/data/kjv.txt", shared ? shared : "../shared");
    char *kjv = slurp(path, 64 << 10, &kl);
    if (!kjv)
        printf("NOTICE: %s not found: KJV text skipped\n", path);
    tally ta = {0, 0, 0, 0};
    check_whitespace_user_token();
    vocab v;
    if (!byte_vocab(&v))
        run(&v, crafted, cl, kjv, kl, seed, &ta);
    if (!spm_vocab(&v))
        run(&v, crafted, cl, kjv, kl, seed, &ta);
    /* runs of 2000 spaces: three ids a byte */
    char *spaces = malloc(20 * 2010);
    size_t sl = 0;
    for (int i = 0; spaces && i < 20; i++) {
        memcpy(spaces + sl, "word", 4);
        memset(spaces + sl + 4, ' ', 2000);
        memcpy(spaces + sl + 2004, "x", 1);
        sl += 2005;
    }
    if (spaces && !spm_nospace_vocab(&v))
        run(&v, spaces, sl, NULL, 0, seed, &ta);
    free(spaces);
    static const char *const pres[] = {"llama-bpe", "qwen2", "gpt-2", "default"};
    for (int i = 0; i < 4; i++)
        if (!bpe_vocab(&v, pres[i]))
            run(&v, crafted, cl, kjv, kl, seed, &ta);
    static const char *const models[] = {"landmark-tiny-kjv-f32.gguf", "plain-tiny-kjv-f32.gguf"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/models/%s", shared ? shared : "../shared", models[i]);
        if (access(path, R_OK) != 0)
            printf("NOTICE: %s not found: skipped\n", path);
        else if (!file_vocab(&v, path, models[i]))
            run(&v, crafted, cl, kjv, kl, seed, &ta);
    }
    const char *ref = getenv("LMK_LLAMA_REF");
    static const char *const llama[] = {"llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2",
                                        "starcoder", "deepseek-llm", "command-r", NULL};
    int found = 0;
    for (int i = 0; ref && llama[i]; i++) {
        snprintf(path, sizeof path, "%s/src/models/ggml-vocab-%s.gguf", ref, llama[i]);
        if (access(path, R_OK) == 0 && !file_vocab(&v, path, llama[i])) {
            found++;
            run(&v, crafted, cl, kjv, kl, seed, &ta);
        }
    }
    if (!found)
        printf("NOTICE: llama.cpp's vocabularies not found (LMK_LLAMA_REF %s): skipped\n",
               ref ? ref : "unset");
    printf("%d vocabularies: %d stream runs equal to the whole text, %d with inexact cuts "
           "(deterministic), wrong cut rules detected on %d texts\n", ta.vocabs, ta.exact_runs,
           ta.inexact_runs, ta.naive_differs);
    free(crafted);
    free(kjv);
    return lmk_test_failures ? 1 : 0;
}
