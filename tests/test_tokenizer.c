/* Tokenizers on crafted vocabularies (self-contained; llama.cpp's own vocabularies are
 * checked in tests/llama/test_vocab.c): the output bound on the worst case, special tokens
 * and their partition, BOS/EOS and end-of-generation tokens, round trips of random UTF-8
 * and of the KJV text (../shared/data/kjv.txt, skipped when absent), the Unicode classes
 * and the streaming UTF-8 boundary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_test.h"
#include "lmk_tokenizer.h"
#include "../model/lmk_unicode.h"

typedef struct {
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

/* A vocabulary from arrays (scores/types/merges may be NULL), with bos/eos ids (-1: none)
 * and tokenizer.ggml.pre (NULL: none). */
static int make(vocab *v, const char *model, int n, const char **toks, const float *scores,
                const int32_t *types, const char **merges, int n_merges, int bos, int eos,
                const char *pre)
{
    lmk_gguf_writer *w;
    memset(v, 0, sizeof *v);
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", model));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING,
                                         (uint64_t)n, toks));
    if (scores)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32,
                                             (uint64_t)n, scores));
    if (types)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32,
                                             (uint64_t)n, types));
    if (merges)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.merges", LMK_GGUF_STRING,
                                             (uint64_t)n_merges, merges));
    if (bos >= 0)
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos));
    if (eos >= 0)
        REQUIRE_OK(lmk_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos));
    if (pre)
        REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre));
    size_t size;
    REQUIRE_OK(lmk_gguf_writer_encode(w, &v->buf, &size));
    lmk_gguf_writer_free(w);
    char err[256];
    REQUIRE_OK(lmk_gguf_open_buffer(v->buf, size, &v->g, err, sizeof err));
    int rc = lmk_tokenizer_from_gguf(v->g, &v->t, err, sizeof err);
    if (rc)
        fprintf(stderr, "tokenizer: %s\n", err);
    REQUIRE_OK(rc);
    return 0;
}

/* SentencePiece: 256 byte tokens, "a", "b", "ab", <s>, </s>, <|im_end|> typed NORMAL (an
 * end-of-turn marker: made a control token), and U+2581 only when with_space. */
static int spm_vocab(vocab *v, int with_space)
{
    static char names[256][8];
    static const char *toks[263];
    static float sc[263];
    static int32_t ty[263];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = names[b];
        ty[b] = 6;
    }
    const char *extra[] = {"a", "b", "ab", "<s>", "</s>", "<|im_end|>"};
    int32_t et[] = {1, 1, 1, 3, 3, 1};
    for (int i = 0; i < 6; i++) {
        toks[256 + i] = extra[i];
        ty[256 + i] = et[i];
        sc[256 + i] = -(float)i;
    }
    toks[262] = "\xe2\x96\x81"; /* the space piece, when with_space */
    ty[262] = 1;
    sc[262] = -10;
    return make(v, "llama", with_space ? 263 : 262, toks, sc, ty, NULL, 0, 259, 260, NULL);
}

static int test_spm_bound(void)
{
    vocab v;
    if (spm_vocab(&v, 0))
        return 1;
    /* every space becomes U+2581 with no piece: three byte tokens, plus the prefix */
    size_t len = 1000;
    char *text = malloc(len);
    memset(text, ' ', len);
    size_t cap = lmk_tokenizer_max_tokens(len), n;
    int32_t *ids = malloc(cap * sizeof *ids);
    REQUIRE_OK(lmk_tokenizer_encode(v.t, text, len, 1, ids, &n));
    CHECK(n == 3 * len + 3);
    CHECK(ids[0] == 0xe2 && ids[1] == 0x96 && ids[2] == 0x81);
    /* the old bound (len + 4) is too small: reported, nothing written past it */
    int32_t *small = malloc((len + 4) * sizeof *small);
    CHECK_RC(lmk_tokenizer_tokenize(v.t, text, len, 0, small, len + 4, &n), LMK_EINVAL);
    CHECK(n == 3 * len + 3);
    free(small);
    /* one space after each special token: the prefix again each time */
    size_t k = 0;
    for (int i = 0; i < 100; i++) {
        memcpy(text + k, "<s> ", 4);
        k += 4;
    }
    REQUIRE_OK(lmk_tokenizer_tokenize(v.t, text, k, LMK_TOK_PARSE_SPECIAL, ids, cap, &n));
    CHECK(n == 100 * 7 && n <= lmk_tokenizer_max_tokens(k));
    free(ids);
    free(text);
    vocab_free(&v);
    return 0;
}

static int test_specials(void)
{
    vocab v;
    if (spm_vocab(&v, 0))
        return 1;
    int32_t ids[64];
    size_t n;
    const char *s = "ab<|im_end|>b";
    /* parsed: the marker is one token; each text fragment gets the space prefix */
    REQUIRE_OK(lmk_tokenizer_tokenize(v.t, s, strlen(s), LMK_TOK_PARSE_SPECIAL, ids, 64, &n));
    int32_t want[] = {0xe2, 0x96, 0x81, 258, 261, 0xe2, 0x96, 0x81, 257};
    CHECK(n == 9 && !memcmp(ids, want, sizeof want));
    /* not parsed: the marker's characters are text */
    REQUIRE_OK(lmk_tokenizer_tokenize(v.t, s, strlen(s), 0, ids, 64, &n));
    int has = 0;
    for (size_t i = 0; i < n; i++)
        has |= ids[i] == 261;
    CHECK(!has && n > 9);
    /* BOS by add_special (SentencePiece adds BOS by default), no EOS */
    REQUIRE_OK(lmk_tokenizer_tokenize(v.t, "a", 1, LMK_TOK_ADD_SPECIAL, ids, 64, &n));
    CHECK(n == 5 && ids[0] == 259 && ids[4] == 256);
    CHECK(lmk_tokenizer_add_bos(v.t) == 1 && lmk_tokenizer_add_eos(v.t) == 0);
    /* end of generation: EOS and the marker */
    CHECK(lmk_tokenizer_is_eog(v.t, 260) && lmk_tokenizer_is_eog(v.t, 261));
    CHECK(!lmk_tokenizer_is_eog(v.t, 259) && !lmk_tokenizer_is_eog(v.t, 256));
    CHECK(lmk_tokenizer_is_control(v.t, 261));
    char piece[32];
    CHECK(lmk_tokenizer_piece(v.t, 261, piece, sizeof piece) == 0);
    CHECK(lmk_tokenizer_piece_special(v.t, 261, piece, sizeof piece) == 10 &&
          !memcmp(piece, "<|im_end|>", 10));
    /* byte tokens decode to their bytes: with no space piece U+2581 stays as it is */
    int32_t d[] = {0xe2, 0x96, 0x81, 258, 0xe2, 0x96, 0x81, 257};
    char out[32];
    long long dl = lmk_tokenizer_decode(v.t, d, 8, 0, out, sizeof out);
    CHECK(dl == 9 && !memcmp(out, "\xe2\x96\x81" "ab" "\xe2\x96\x81" "b", 9));
    vocab_free(&v);
    /* with the space piece: decode removes the prefix space of the first piece only */
    if (spm_vocab(&v, 1))
        return 1;
    REQUIRE_OK(lmk_tokenizer_tokenize(v.t, " ab b", 5, 0, ids, 64, &n));
    CHECK(n == 5 && ids[0] == 262 && ids[1] == 262 && ids[2] == 258);
    dl = lmk_tokenizer_decode(v.t, ids, n, 0, out, sizeof out);
    CHECK(dl == 5 && !memcmp(out, " ab b", 5));
    vocab_free(&v);
    return 0;
}

/* Byte-level BPE: the 256 mapped bytes, a few merges, <|endoftext|> (EOS). */
static int bpe_vocab(vocab *v, const char *pre)
{
    static char names[256][4];
    static const char *toks[270];
    uint32_t b2u[256];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            b2u[b] = (uint32_t)b;
        else
            b2u[b] = 256 + (uint32_t)n++;
        lmk_utf8_encode(b2u[b], names[b]);
        toks[b] = names[b];
    }
    const char *extra[] = {"th", "the", "\xc4\xa0t", "\xc4\xa0" "the", "an", "and",
                           "\xc4\xa0" "and", "<|endoftext|>"};
    for (int i = 0; i < 8; i++)
        toks[256 + i] = extra[i];
    static int32_t ty[264];
    for (int i = 0; i < 264; i++)
        ty[i] = i == 263 ? 3 : 1;
    const char *merges[] = {"t h", "th e", "\xc4\xa0 t", "\xc4\xa0 the", "a n", "an d",
                            "\xc4\xa0 and"};
    return make(v, "gpt2", 264, toks, NULL, ty, merges, 7, -1, 263, pre);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random valid UTF-8 of about n bytes, mixing ASCII, spaces, digits, Latin, CJK, emoji. */
static size_t random_utf8(uint64_t *rng, char *out, size_t n)
{
    size_t k = 0;
    while (k + 4 <= n) {
        uint64_t r = rng_next(rng);
        uint32_t cp;
        switch (r % 6) {
        case 0: cp = (uint32_t)(' ' + (r >> 8) % 95); break;
        case 1: cp = " \n\t'"[(r >> 8) % 4]; break;
        case 2: cp = (uint32_t)('0' + (r >> 8) % 10); break;
        case 3: cp = (uint32_t)(0xa0 + (r >> 8) % 0x500); break;
        case 4: cp = (uint32_t)(0x3000 + (r >> 8) % 0x7000); break;
        default: cp = (uint32_t)(0x1f300 + (r >> 8) % 0x300); break;
        }
        if (cp >= 0xd800 && cp < 0xe000)
            cp = 'x';
        k += lmk_utf8_encode(cp, out + k);
    }
    return k;
}

/* decode(tokenize(text)) == text; returns 0 when it holds. */
static int round_trip(const lmk_tokenizer *t, const char *text, size_t len, const char *what)
{
    size_t cap = lmk_tokenizer_max_tokens(len), n;
    int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
    char *back = malloc(len + 16);
    REQUIRE(ids && back);
    int rc = lmk_tokenizer_tokenize(t, text, len, 0, ids, cap, &n);
    long long dl = rc ? -1 : lmk_tokenizer_decode(t, ids, n, 0, back, len + 16);
    int ok = dl == (long long)len && !memcmp(back, text, len);
    if (!ok)
        fprintf(stderr, "round trip of %s (%zu bytes): rc %d, decoded %lld bytes\n", what, len,
                rc, dl);
    CHECK(ok);
    free(ids);
    free(back);
    return !ok;
}

static int test_round_trips(void)
{
    uint64_t seed = 20260401;
    printf("random UTF-8 seed %llu\n", (unsigned long long)seed);
    vocab s, b3, bq, bg;
    if (spm_vocab(&s, 1) || bpe_vocab(&b3, "llama-bpe") || bpe_vocab(&bq, "qwen2") ||
        bpe_vocab(&bg, "gpt-2"))
        return 1;
    CHECK(!strcmp(lmk_tokenizer_pre(b3.t), "llama3") && !strcmp(lmk_tokenizer_pre(bq.t), "qwen2") &&
          !strcmp(lmk_tokenizer_pre(bg.t), "gpt2"));
    CHECK(lmk_tokenizer_add_bos(b3.t) == 0); /* llama3 wants BOS, but this vocab has none */
    /* merges apply: " the" is one token, "and" too */
    int32_t ids[16];
    size_t n;
    REQUIRE_OK(lmk_tokenizer_tokenize(b3.t, "and the", 7, 0, ids, 16, &n));
    CHECK(n == 2 && ids[0] == 261 && ids[1] == 259);
    /* digits: llama3 groups of three, qwen2 single digits, gpt-2 one run (no merges here:
     * one token per byte either way, so compare the counts of a text with a merge) */
    REQUIRE_OK(lmk_tokenizer_tokenize(bg.t, "the", 3, 0, ids, 16, &n));
    CHECK(n == 1 && ids[0] == 257);
    char *buf = malloc(1 << 16);
    REQUIRE(buf);
    for (int i = 0; i < 200; i++) {
        size_t len = random_utf8(&seed, buf, 1 + rng_next(&seed) % 2000);
        const lmk_tokenizer *ts[] = {s.t, b3.t, bq.t, bg.t};
        for (int k = 0; k < 4; k++)
            if (round_trip(ts[k], buf, len, "random UTF-8"))
                i = 1000; /* report once */
    }
    /* Random bytes: any output fits the bound. (No round trip: as in llama.cpp, a lead byte
     * can swallow part of an escaped space, which then decodes as U+2581.) */
    for (int i = 0; i < 50; i++) {
        size_t len = rng_next(&seed) % 500, n2;
        for (size_t k = 0; k < len; k++)
            buf[k] = (char)rng_next(&seed);
        const lmk_tokenizer *ts[] = {s.t, b3.t, bq.t, bg.t};
        for (int k = 0; k < 4; k++) {
            size_t cap = lmk_tokenizer_max_tokens(len);
            int32_t *out = malloc(cap * sizeof *out);
            REQUIRE(out);
            CHECK_RC(lmk_tokenizer_tokenize(ts[k], buf, len, LMK_TOK_PARSE_SPECIAL, out, cap,
                                            &n2), LMK_OK);
            free(out);
        }
    }
    free(buf);
    const char *shared = getenv("LMK_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/data/kjv.txt", shared ? shared : "../shared");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("KJV round trip skipped: %s not found\n", path);
    } else {
        size_t cap = 1 << 20; /* the first MiB keeps the sanitizer run short */
        char *kjv = malloc(cap);
        size_t len = kjv ? fread(kjv, 1, cap, f) : 0;
        fclose(f);
        while (len > 0 && ((unsigned char)kjv[len - 1] & 0xc0) == 0x80)
            len--; /* do not cut a character */
        if (len > 0 && (unsigned char)kjv[len - 1] >= 0xc0)
            len--;
        const lmk_tokenizer *ts[] = {s.t, b3.t, bq.t, bg.t};
        for (int k = 0; k < 4; k++)
            round_trip(ts[k], kjv, len, "KJV");
        printf("KJV round trip: %zu bytes through 4 vocabularies\n", len);
        free(kjv);
    }
    vocab_free(&s);
    vocab_free(&b3);
    vocab_free(&bq);
    vocab_free(&bg);
    return 0;
}

static int test_unicode(void)
{
    CHECK(lmk_unicode_flags('A') & LMK_UCAT_LETTER);
    CHECK(lmk_unicode_flags('7') & LMK_UCAT_NUMBER);
    CHECK(lmk_unicode_flags(0xe9) & LMK_UCAT_LETTER);      /* é */
    CHECK(lmk_unicode_flags(0x0663) & LMK_UCAT_NUMBER);    /* Arabic-Indic three */
    CHECK(lmk_unicode_flags(0x4e2d) & LMK_UCAT_LETTER);    /* 中 */
    CHECK(lmk_unicode_flags(0x3000) & LMK_UCAT_SPACE);
    CHECK(lmk_unicode_flags(0x1f600) & LMK_UCAT_SYMBOL);   /* emoji */
    CHECK(lmk_unicode_flags(0x0301) & LMK_UCAT_MARK);
    CHECK(lmk_unicode_flags(0x0378) == LMK_UCAT_UNDEFINED); /* unassigned */
    CHECK(lmk_unicode_flags(0x110000) == LMK_UCAT_UNDEFINED);
    size_t off = 0;
    CHECK(lmk_utf8_decode("\xc3", 1, &off) == 0xfffd && off == 1);
    off = 0;
    CHECK(lmk_utf8_decode("\xe2\x82\xac", 3, &off) == 0x20ac && off == 3);
    /* streaming boundary */
    CHECK(lmk_utf8_complete_prefix("ab", 2) == 2);
    CHECK(lmk_utf8_complete_prefix("a\xe2\x82", 3) == 1);
    CHECK(lmk_utf8_complete_prefix("a\xe2\x82\xac", 4) == 4);
    CHECK(lmk_utf8_complete_prefix("\xf0\x9f\x98", 3) == 0);
    CHECK(lmk_utf8_complete_prefix("a\x80", 2) == 2);
    return 0;
}

/* tokenizer.ggml.pre to the split: "default" and no key give llama.cpp's DEFAULT, which
 * isolates punctuation before the GPT-2 split ("'the": "'" "the", not "'t" "he"). */
static int test_default_pre(void)
{
    static const struct {
        const char *pre, *kind;
    } cases[] = {{"default", "default"}, {NULL, "default"},    {"gpt-2", "gpt2"},
                 {"exaone4", "gpt2"},     {"megrez", "qwen2"}, {"jina-v5-nano", "llama3"},
                 {"no-such-pre", "gpt2"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        vocab v;
        if (bpe_vocab(&v, cases[i].pre))
            return 1;
        CHECK(!strcmp(lmk_tokenizer_pre(v.t), cases[i].kind));
        int32_t ids[16];
        size_t n;
        REQUIRE_OK(lmk_tokenizer_tokenize(v.t, "'the x the", 10, 0, ids, 16, &n));
        if (!strcmp(cases[i].kind, "default"))
            CHECK(n == 5 && ids[0] == '\'' && ids[1] == 257 && ids[3] == 'x' && ids[4] == 259);
        else if (!strcmp(cases[i].kind, "gpt2"))
            CHECK(n == 7 && ids[0] == '\'' && ids[1] == 't' && ids[2] == 'h' && ids[3] == 'e' &&
                  ids[6] == 259);
        vocab_free(&v);
    }
    return 0;
}

int main(void)
{
    test_spm_bound();
    test_specials();
    test_round_trips();
    test_default_pre();
    test_unicode();
    if (lmk_test_failures)
        fprintf(stderr, "%d failures\n", lmk_test_failures);
    return lmk_test_failures ? 1 : 0;
}
