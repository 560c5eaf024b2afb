/* The chat formats against llama.cpp's built-in ones: lmk_chat_render of fixed
 * conversations must equal llama_chat_apply_template of the fetched libllama (loaded with
 * dlopen; it matches formats by name or by template substrings, it does not run Jinja)
 * for every format: llama3, chatml, mistral-v1, mistral-v3, mistral-v3-tekken,
 * mistral-v7, phi3. Then every template of llama.cpp's models/templates/: where
 * lmk_chat_detect picks a format, rendering by the template text must equal libllama's
 * rendering by the same text (so the detection agrees); the others are counted.
 * Without the reference: exit 77 with the reason, or a failure under CI=true. */
#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_chat.h"
#include "lmk_test.h"

typedef struct {
    const char *role;
    const char *content;
} llama_chat_message;
typedef int32_t (*apply_fn)(const char *tmpl, const llama_chat_message *chat, size_t n_msg,
                            bool add_ass, char *buf, int32_t length);

static apply_fn apply;

/* libllama's rendering (malloc'ed) or NULL when it refuses the template. */
static char *theirs(const char *tmpl, const lmk_chat_msg *m, size_t n, int add_ass)
{
    llama_chat_message lm[16];
    for (size_t i = 0; i < n; i++)
        lm[i] = (llama_chat_message){m[i].role, m[i].content};
    int32_t len = apply(tmpl, lm, n, add_ass, NULL, 0);
    if (len < 0)
        return NULL;
    char *buf = malloc((size_t)len + 1);
    apply(tmpl, lm, n, add_ass, buf, len + 1);
    buf[len] = 0;
    return buf;
}

static char *ours(int f, const lmk_chat_msg *m, size_t n, int add_ass)
{
    long long len = lmk_chat_render(f, m, n, add_ass, NULL, 0);
    if (len < 0)
        return NULL;
    char *buf = malloc((size_t)len + 1);
    lmk_chat_render(f, m, n, add_ass, buf, (size_t)len + 1);
    return buf;
}

static const lmk_chat_msg conv[] = {
    {"system", "You answer from the document."},
    {"user", "\n In the beginning God created the heaven and the earth.\n\nWho created them? "},
    {"assistant", " God created them. "},
    {"user", "And on which day was light made?"},
    {"assistant", "The first day."},
    {"user", "Thanks"},
};

static int same(const char *what, const char *a, const char *b)
{
    int ok = a && b && !strcmp(a, b);
    if (!ok)
        fprintf(stderr, "%s differs:\nours   [%s]\ntheirs [%s]\n", what, a ? a : "(null)",
                b ? b : "(null)");
    return ok;
}

int main(void)
{
    const char *ref = getenv("LMK_LLAMA_REF");
    int ci = getenv("CI") && !strcmp(getenv("CI"), "true");
    char path[4096];
    snprintf(path, sizeof path, "%s/.complete", ref ? ref : "");
    if (!ref || access(path, F_OK) != 0) {
        fprintf(stderr, "test_chat_ref: the llama.cpp reference is not there (%s): %s\n",
                ref ? ref : "LMK_LLAMA_REF unset",
                ci ? "failing under CI=true" : "skipped (the fetch did not run or failed)");
        return ci ? 1 : 77;
    }
    snprintf(path, sizeof path, "%s/lib/libllama.v0.4.0.so", ref);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "test_chat_ref: %s\n", dlerror());
        return ci ? 1 : 77;
    }
    apply = (apply_fn)(uintptr_t)dlsym(h, "llama_chat_apply_template");
    if (!apply) {
        fprintf(stderr, "test_chat_ref: no llama_chat_apply_template in %s\n", path);
        return 1;
    }
    /* each format by name, conversations with and without a system prompt, both
     * add_assistant values, ending with a user turn or with an assistant turn */
    int n_formats = 0;
    for (int f = 0; f < LMK_CHAT_N_FORMATS; f++) {
        int ok = 1;
        for (int sys = 0; sys < 2; sys++)
            for (size_t end = 2; end <= 6; end++)
                for (int aa = 0; aa < 2; aa++) {
                    const lmk_chat_msg *m = conv + (sys ? 0 : 1);
                    size_t n = end - (sys ? 0 : 1);
                    char *a = ours(f, m, n, aa), *b = theirs(lmk_chat_format_name(f), m, n, aa);
                    char what[128];
                    snprintf(what, sizeof what, "%s (system %d, %zu messages, add_ass %d)",
                             lmk_chat_format_name(f), sys, n, aa);
                    ok &= same(what, a, b);
                    free(a);
                    free(b);
                }
        CHECK(ok);
        n_formats += ok;
        printf("%-18s %s\n", lmk_chat_format_name(f), ok ? "equal to llama.cpp" : "DIFFERS");
    }
    printf("%d / %d formats equal to llama.cpp's\n", n_formats, (int)LMK_CHAT_N_FORMATS);

    /* the templates llama.cpp ships: detection + rendering through the template text */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/src/models/templates", ref);
    DIR *d = opendir(dir);
    int n_tmpl = 0, n_ours = 0, n_theirs_only = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 6, ".jinja"))
            continue;
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        FILE *fp = fopen(p, "rb");
        if (!fp)
            continue;
        char *txt = malloc(1 << 20);
        size_t tl = fread(txt, 1, (1 << 20) - 1, fp);
        fclose(fp);
        txt[tl] = 0;
        n_tmpl++;
        int f = lmk_chat_detect(txt);
        char *b = theirs(txt, conv, 4, 1);
        if (f >= 0) {
            char *a = ours(f, conv, 4, 1);
            n_ours++;
            if (!same(e->d_name, a, b))
                CHECK(0);
            else
                printf("  %-55s %s\n", e->d_name, lmk_chat_format_name(f));
            free(a);
        } else if (b) {
            n_theirs_only++; /* a format llama.cpp has and this does not */
        }
        free(b);
        free(txt);
    }
    if (d)
        closedir(d);
    printf("templates: %d, matched to a format here: %d (renderings equal), other llama.cpp "
           "formats: %d\n", n_tmpl, n_ours, n_theirs_only);
    dlclose(h);
    return lmk_test_failures ? 1 : 0;
}
