/* The tokenizers against llama.cpp's own test vectors: for each ggml-vocab-NAME.gguf of the
 * fetched llama.cpp source (models/), every text of NAME.gguf.inp (separated by
 * "\n__ggml_vocab_test__\n") must give the ids of the same line of NAME.gguf.out, as
 * llama.cpp's tests/test-tokenizer-0.cpp checks them (add_special = false,
 * parse_special = false); the ids must also decode back to the text (SentencePiece: less
 * the space prefix; byte-level BPE: where the text is valid UTF-8).
 *
 * Vocabularies of the supported tokenizer types must match on every line, and round-trip
 * random UTF-8 (fixed seed) and the first 256 KiB of the KJV text (../shared/data/kjv.txt;
 * skipped when absent); other vocabularies found there are reported as information. Without the reference (offline fetch): exit 77 with
 * the reason, or a failure under CI=true. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf.h"
#include "lmk_test.h"
#include "lmk_tokenizer.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!l || i + l > n)
            return 0;
        for (size_t k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                return 0;
        i += l;
    }
    return 1;
}

/* Returns the number of mismatching lines (-1: files missing), counts into *total. */
static int run_vocab(const char *dir, const char *name, int *total, int verbose)
{
    char path[4096], inp[4200], outp[4200], err[512];
    snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf", dir, name);
    snprintf(inp, sizeof inp, "%s.inp", path);
    snprintf(outp, sizeof outp, "%s.out", path);
    size_t il, ol;
    char *in = slurp(inp, &il), *out = slurp(outp, &ol);
    lmk_gguf *g = NULL;
    lmk_tokenizer *t = NULL;
    int bad = 0;
    *total = 0;
    if (!in || !out) {
        fprintf(stderr, "%s: missing test vectors\n", name);
        bad = -1;
        goto done;
    }
    if (lmk_gguf_open(path, &g, err, sizeof err) ||
        lmk_tokenizer_from_gguf(g, &t, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", name, err);
        bad = -1;
        goto done;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t seplen = sizeof sep - 1;
    char *ip = in, *op = out, *iend = in + il;
    while (ip < iend) {
        char *next = memmem(ip, (size_t)(iend - ip), sep, seplen);
        size_t tl = next ? (size_t)(next - ip) : (size_t)(iend - ip);
        char *eol = strchr(op, '\n');
        if (!eol && !*op) {
            fprintf(stderr, "%s: more texts than lines of ids\n", name);
            bad++;
            break;
        }
        if (eol)
            *eol = 0;
        int32_t want[4096];
        int nw = 0;
        for (char *q = op; *q && nw < 4096;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q) {
                q++;
                continue;
            }
            want[nw++] = (int32_t)v;
            q = e;
        }
        size_t cap = lmk_tokenizer_max_tokens(tl), n = 0;
        int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
        int rc = ids ? lmk_tokenizer_tokenize(t, ip, tl, 0, ids, cap, &n) : ENOMEM;
        int same = rc == 0 && (int)n == nw && (nw == 0 || !memcmp(ids, want, n * 4));
        if (same && (lmk_tokenizer_kind(t) == LMK_TOK_SPM || valid_utf8(ip, tl))) {
            /* decoding gives the text back (SentencePiece's prefix space removed) */
            char *dec = malloc(4 * tl + 16);
            long long dl = dec ? lmk_tokenizer_decode(t, ids, n, 0, dec, 4 * tl + 16) : -1;
            if (dl != (long long)tl || memcmp(dec, ip, tl)) {
                if (verbose)
                    fprintf(stderr, "%s: line %d: decodes to %lld bytes, not the text\n",
                            name, *total + 1, dl);
                same = 0;
            }
            free(dec);
        }
        if (!same) {
            bad++;
            if (verbose && bad <= 5) {
                fprintf(stderr, "%s: line %d: text '%.*s': rc %d, got", name, *total + 1,
                        (int)(tl > 60 ? 60 : tl), ip, rc);
                for (size_t k = 0; k < n && k < 24 && ids; k++)
                    fprintf(stderr, " %d", ids[k]);
                fprintf(stderr, "\n  want");
                for (int k = 0; k < nw && k < 24; k++)
                    fprintf(stderr, " %d", want[k]);
                fprintf(stderr, "\n");
            }
        }
        free(ids);
        (*total)++;
        op = eol ? eol + 1 : op + strlen(op);
        if (!next)
            break;
        ip = next + seplen;
    }
done:
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(in);
    free(out);
    return bad;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t put_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* decode(tokenize(text)) == text for one vocabulary; returns the failures. */
static int round_trips(const char *dir, const char *name, const char *kjv, size_t kjv_len)
{
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/models/ggml-vocab-%s.gguf", dir, name);
    lmk_gguf *g = NULL;
    lmk_tokenizer *t = NULL;
    if (lmk_gguf_open(path, &g, err, sizeof err) ||
        lmk_tokenizer_from_gguf(g, &t, err, sizeof err)) {
        lmk_gguf_close(g);
        return 1;
    }
    int bad = 0;
    uint64_t seed = 77;
    char *buf = malloc(1 << 14);
    for (int i = 0; i <= 100 && buf; i++) {
        const char *text = buf;
        size_t len = 0;
        if (i == 100) {
            if (!kjv)
                break;
            text = kjv;
            len = kjv_len;
        } else {
            size_t want = 1 + rng_next(&seed) % 1000;
            while (len + 4 <= want) {
                uint64_t r = rng_next(&seed);
                static const uint32_t base[] = {0x20, 0x20, 0x30, 0xa0, 0x400, 0x3040, 0x4e00,
                                                0x1f300};
                static const uint32_t span[] = {95, 95, 10, 0x180, 0x100, 0x60, 0x500, 0x200};
                int k = (int)(r % 8);
                uint32_t cp = base[k] + (uint32_t)((r >> 8) % span[k]);
                if ((r >> 40) % 7 == 0)
                    cp = " \n\t'"[(r >> 44) % 4];
                len += put_utf8(cp, buf + len);
            }
        }
        size_t cap = lmk_tokenizer_max_tokens(len), n = 0;
        int32_t *ids = malloc(cap * sizeof *ids);
        char *back = malloc(len + 16);
        int rc = ids && back ? lmk_tokenizer_tokenize(t, text, len, 0, ids, cap, &n) : ENOMEM;
        long long dl = rc ? -1 : lmk_tokenizer_decode(t, ids, n, 0, back, len + 16);
        if (dl != (long long)len || memcmp(back, text, len)) {
            if (!bad)
                fprintf(stderr, "%s: round trip of %s (%zu bytes) gives %lld bytes\n", name,
                        i == 100 ? "KJV" : "random UTF-8", len, dl);
            bad++;
        }
        free(ids);
        free(back);
    }
    free(buf);
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    return bad;
}

int main(int argc, char **argv)
{
    const char *ref = getenv("LMK_LLAMA_REF");
    int ci = getenv("CI") && !strcmp(getenv("CI"), "true");
    char dir[4096], flag[4200];
    snprintf(dir, sizeof dir, "%s/src", ref ? ref : "");
    snprintf(flag, sizeof flag, "%s/.complete", ref ? ref : "");
    if (!ref || access(flag, F_OK) != 0) {
        fprintf(stderr, "test_vocab: the llama.cpp reference is not there (%s): %s\n",
                ref ? ref : "LMK_LLAMA_REF unset",
                ci ? "failing under CI=true" : "skipped (the fetch did not run or failed)");
        return ci ? 1 : 77;
    }
    /* the tokenizer types claimed (must match on every line), then others for information */
    static const char *const must[] = {"llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2",
                                       NULL};
    static const char *const info[] = {"starcoder", "deepseek-llm", "deepseek-coder",
                                       "falcon", "mpt", "refact", "command-r", "qwen35",
                                       NULL};
    if (argc > 1) { /* one vocabulary, verbose */
        int total, bad = run_vocab(dir, argv[1], &total, 1);
        printf("%s: %d / %d lines match\n", argv[1], total - bad, total);
        return bad != 0;
    }
    const char *shared = getenv("LMK_SHARED");
    char kp[4096];
    snprintf(kp, sizeof kp, "%s/data/kjv.txt", shared ? shared : "../shared");
    size_t kl = 0;
    char *kjv = slurp(kp, &kl);
    if (!kjv)
        printf("KJV round trips skipped: %s not found\n", kp);
    if (kl > (256u << 10)) {
        kl = 256u << 10;
        while (kl > 0 && ((unsigned char)kjv[kl] & 0xc0) == 0x80)
            kl--; /* end on a character boundary */
    }
    for (int i = 0; must[i]; i++) {
        int total, bad = run_vocab(dir, must[i], &total, 1);
        int rt = round_trips(dir, must[i], kjv, kl);
        printf("%-14s %4d / %4d lines match; round trips: %s\n", must[i],
               bad < 0 ? 0 : total - bad, total, rt ? "FAIL" : kjv ? "random UTF-8 and KJV ok"
                                                             : "random UTF-8 ok");
        CHECK(bad == 0 && total > 0 && rt == 0);
    }
    free(kjv);
    for (int i = 0; info[i]; i++) {
        int total, bad = run_vocab(dir, info[i], &total, 0);
        if (bad >= 0)
            printf("%-14s %4d / %4d lines match (not a supported type: information)\n",
                   info[i], total - bad, total);
    }
    return lmk_test_failures ? 1 : 0;
}
