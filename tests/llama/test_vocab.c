/* The tokenizers against llama.cpp's own test vectors: for each ggml-vocab-NAME.gguf of the
 * fetched llama.cpp source (models/), every text of NAME.gguf.inp (separated by
 * "\n__ggml_vocab_test__\n") must give the ids of the same line of NAME.gguf.out, as
 * llama.cpp's tests/test-tokenizer-0.cpp checks them (add_special = false,
 * parse_special = false); the ids must also decode back to the text (SentencePiece: less
 * the space prefix; byte-level BPE: where the text is valid UTF-8).
 *
 * Vocabularies of the supported tokenizer types must match on every line; others found
 * there are reported as information. Without the reference (offline fetch): exit 77 with
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
    for (int i = 0; must[i]; i++) {
        int total, bad = run_vocab(dir, must[i], &total, 1);
        printf("%-14s %4d / %4d lines match\n", must[i], bad < 0 ? 0 : total - bad, total);
        CHECK(bad == 0 && total > 0);
    }
    for (int i = 0; info[i]; i++) {
        int total, bad = run_vocab(dir, info[i], &total, 0);
        if (bad >= 0)
            printf("%-14s %4d / %4d lines match (not a supported type: information)\n",
                   info[i], total - bad, total);
    }
    return lmk_test_failures ? 1 : 0;
}
