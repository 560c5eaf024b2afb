/* Byte-level BPE vocabularies of llama.cpp's models/ that have no .out test vectors
 * (ggml-vocab-aquila.gguf and ggml-vocab-gpt-neox.gguf: no tokenizer.ggml.pre, so llama.cpp's
 * DEFAULT pre-tokenizer) against libllama's own llama_tokenize (dlopen, vocab_only;
 * add_special = false, parse_special = false), on every text of every .inp file there.
 * Every text must give the same ids. Without the reference: exit 77, or a failure under
 * CI=true. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf.h"
#include "lmk_tokenizer.h"

static int skip_or_fail(const char *why)
{
    if (getenv("CI") && !strcmp(getenv("CI"), "true")) {
        fprintf(stderr, "test_vocab_ref: %s (failing under CI=true)\n", why);
        return 1;
    }
    printf("test_vocab_ref: SKIP: %s\n", why);
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

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)n, f);
        buf[*len] = 0;
    }
    fclose(f);
    return buf;
}

static struct {
    struct llama_model_params (*model_defaults)(void);
    struct llama_model *(*model_load)(const char *, struct llama_model_params);
    void (*model_free)(struct llama_model *);
    const struct llama_vocab *(*get_vocab)(const struct llama_model *);
    int32_t (*tokenize)(const struct llama_vocab *, const char *, int32_t, llama_token *,
                        int32_t, bool, bool);
} L;

/* Mismatching texts of inp for the vocabulary (-1: cannot load); counts into *total. */
static int run(const char *gguf, const struct llama_vocab *v, const lmk_tokenizer *t,
               const char *inp, int *total)
{
    size_t il = 0;
    char *in = slurp(inp, &il);
    if (!in)
        return -1;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t seplen = sizeof sep - 1;
    int bad = 0;
    for (char *ip = in, *iend = in + il; ip < iend;) {
        char *next = memmem(ip, (size_t)(iend - ip), sep, seplen);
        size_t tl = next ? (size_t)(next - ip) : (size_t)(iend - ip);
        size_t cap = lmk_tokenizer_max_tokens(tl) + 16, n = 0;
        int32_t *want = malloc(cap * sizeof *want), *got = malloc(cap * sizeof *got);
        int nw = want ? L.tokenize(v, ip, (int32_t)tl, want, (int32_t)cap, false, false) : -1;
        int rc = got ? lmk_tokenizer_tokenize(t, ip, tl, 0, got, cap, &n) : 1;
        (*total)++;
        if (nw < 0 || rc || (size_t)nw != n || (n && memcmp(want, got, n * sizeof *got))) {
            fprintf(stderr, "%s: %s: text %d (%zu bytes) differs: llama.cpp %d ids, %zu here\n",
                    gguf, inp, *total, tl, nw, n);
            bad++;
        }
        free(want);
        free(got);
        ip = next ? next + seplen : iend;
    }
    free(in);
    return bad;
}

int main(void)
{
    const char *ref = getenv("LMK_LLAMA_REF");
    char path[4096], flag[4096];
    snprintf(flag, sizeof flag, "%s/.complete", ref ? ref : "");
    FILE *fl = ref ? fopen(flag, "rb") : NULL;
    if (!fl)
        return skip_or_fail("the llama.cpp reference is not there");
    fclose(fl);
    snprintf(path, sizeof path, "%s/lib/libllama.v0.4.0.so", ref);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return skip_or_fail(dlerror());
#define SYM(field, name)                                                                   \
    if (!(*(void **)&L.field = dlsym(h, name))) {                                          \
        fprintf(stderr, "test_vocab_ref: no %s in %s\n", name, path);                      \
        return 1;                                                                          \
    }
    SYM(model_defaults, "llama_model_default_params");
    SYM(model_load, "llama_model_load_from_file");
    SYM(model_free, "llama_model_free");
    SYM(get_vocab, "llama_model_get_vocab");
    SYM(tokenize, "llama_tokenize");
    static const char *const vocabs[] = {"aquila", "gpt-neox"};
    static const char *const inps[] = {"llama-bpe", "qwen35", "falcon", "command-r"};
    int fails = 0;
    for (size_t i = 0; i < sizeof vocabs / sizeof *vocabs; i++) {
        char gguf[4200], err[512];
        snprintf(gguf, sizeof gguf, "%s/src/models/ggml-vocab-%s.gguf", ref, vocabs[i]);
        struct llama_model_params mp = L.model_defaults();
        mp.vocab_only = true;
        struct llama_model *m = L.model_load(gguf, mp);
        lmk_gguf *g = NULL;
        lmk_tokenizer *t = NULL;
        if (!m || lmk_gguf_open(gguf, &g, err, sizeof err) ||
            lmk_tokenizer_from_gguf(g, &t, err, sizeof err)) {
            fprintf(stderr, "%s: cannot load (%s)\n", gguf, m ? err : "libllama");
            fails++;
        } else {
            int total = 0, bad = 0;
            for (size_t k = 0; k < sizeof inps / sizeof *inps; k++) {
                char inp[4300];
                snprintf(inp, sizeof inp, "%s/src/models/ggml-vocab-%s.gguf.inp", ref, inps[k]);
                int b = run(gguf, L.get_vocab(m), t, inp, &total);
                bad += b < 0 ? 1 : b;
            }
            int pre_ok = !strcmp(lmk_tokenizer_pre(t), "default");
            printf("%-10s pre %-8s %4d / %4d texts match llama_tokenize\n", vocabs[i],
                   lmk_tokenizer_pre(t), total - bad, total);
            fails += bad || !pre_ok;
        }
        lmk_tokenizer_free(t);
        lmk_gguf_close(g);
        if (m)
            L.model_free(m);
    }
    return fails ? 1 : 0;
}
#endif
