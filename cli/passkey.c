/* landmark passkey: the pass-key retrieval test (model/lmk_tasks.h does the work). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "model_cmd.h"

typedef struct {
    double list[LMK_PASSKEY_MAX_DEPTHS];
    int n;
} depth_list;

static int parse_depths(void *ctx, const char *v, char *err, size_t cap)
{
    depth_list *d = ctx;
    d->n = lmk_opt_double_list(v, 0, 1, d->list, LMK_PASSKEY_MAX_DEPTHS);
    if (d->n < 1)
        snprintf(err, cap, "comma-separated values in [0, 1]");
    return d->n < 1;
}

/* ---- --record: what the first trial gave its session ---- */

typedef struct recorder {
    int NL, NH, NKV, D, failed;
    int64_t *n, *cap;  /* per layer: tokens recorded, room */
    float **k, **v, **q;
} recorder;

static void rec_cb(void *ud, int layer, int64_t n, const float *k, const float *v,
                   const float *q)
{
    recorder *r = ud;
    if (r->failed || layer < 0 || layer >= r->NL)
        return;
    size_t kr = (size_t)r->NKV * r->D, qr = (size_t)r->NH * r->D;
    if (r->n[layer] + n > r->cap[layer]) {
        int64_t c = (r->n[layer] + n) * 2;
        float *a = realloc(r->k[layer], (size_t)c * kr * 4);
        if (a)
            r->k[layer] = a;
        float *b = a ? realloc(r->v[layer], (size_t)c * kr * 4) : NULL;
        if (b)
            r->v[layer] = b;
        float *e = b ? realloc(r->q[layer], (size_t)c * qr * 4) : NULL;
        if (e)
            r->q[layer] = e;
        if (!e) {
            r->failed = 1;
            return;
        }
        r->cap[layer] = c;
    }
    memcpy(r->k[layer] + (size_t)r->n[layer] * kr, k, (size_t)n * kr * 4);
    memcpy(r->v[layer] + (size_t)r->n[layer] * kr, v, (size_t)n * kr * 4);
    memcpy(r->q[layer] + (size_t)r->n[layer] * qr, q, (size_t)n * qr * 4);
    r->n[layer] += n;
}

static int rec_init(recorder *r, const lmk_model *m)
{
    const lmk_model_info *mi = lmk_model_get_info(m);
    r->NL = mi->n_layers, r->NH = mi->n_heads, r->NKV = mi->n_kv_heads, r->D = mi->head_dim;
    r->n = calloc((size_t)r->NL, sizeof *r->n);
    r->cap = calloc((size_t)r->NL, sizeof *r->cap);
    r->k = calloc((size_t)r->NL, sizeof *r->k);
    r->v = calloc((size_t)r->NL, sizeof *r->v);
    r->q = calloc((size_t)r->NL, sizeof *r->q);
    return r->n && r->cap && r->k && r->v && r->q ? 0 : ENOMEM;
}

/* The LMKREC1 file (README "Recorded streams") with one query per token, f32. */
static int rec_write(const recorder *r, const char *path)
{
    int64_t T = r->n[0];
    for (int l = 1; l < r->NL; l++)
        if (r->n[l] != T)
            T = -1;
    if (r->failed || T < 1) {
        lmk_cli_error("passkey", "--record: nothing recorded (out of memory or no session)");
        return 1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        lmk_cli_error("passkey", "%s: %s", path, strerror(errno));
        return 1;
    }
    unsigned char h[48] = "LMKREC1";
    uint32_t u[4] = {(uint32_t)r->NL, (uint32_t)r->NH, (uint32_t)r->NKV, (uint32_t)r->D};
    uint64_t nt = (uint64_t)T;
    memcpy(h + 8, u, 16);
    memcpy(h + 24, &nt, 8);
    memcpy(h + 32, &nt, 8);
    int ok = fwrite(h, 1, 48, f) == 48;
    size_t kr = (size_t)r->NKV * r->D, qr = (size_t)r->NH * r->D;
    for (int l = 0; ok && l < r->NL; l++)
        ok = fwrite(r->k[l], 4, (size_t)T * kr, f) == (size_t)T * kr &&
             fwrite(r->v[l], 4, (size_t)T * kr, f) == (size_t)T * kr &&
             fwrite(r->q[l], 4, (size_t)T * qr, f) == (size_t)T * qr;
    if (fclose(f) || !ok) {
        lmk_cli_error("passkey", "%s: write failed", path);
        return 1;
    }
    return 0;
}

static void rec_free(recorder *r)
{
    for (int l = 0; r->k && l < r->NL; l++) {
        free(r->k[l]);
        free(r->v[l]);
        free(r->q[l]);
    }
    free(r->n);
    free(r->cap);
    free(r->k);
    free(r->v);
    free(r->q);
}

/* ---- --haystack: a regular file read at the offsets the trials take; a pipe's first
 * HAY_PIPE_MAX bytes in memory ---- */

#define HAY_PIPE_MAX ((size_t)64 << 20)

static int hay_pread(void *ud, uint64_t off, char *buf, size_t len, size_t *got)
{
    int fd = *(const int *)ud;
    *got = 0;
    while (*got < len) {
        ssize_t n = pread(fd, buf + *got, len - *got, (off_t)(off + *got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    return 0;
}

/* Open the haystack into p: *fd for a regular file, *mem (malloc'ed) for a pipe. Returns 0,
 * or 1 after printing the error. */
static int hay_open(const char *path, lmk_passkey_opts *p, int *fd, char **mem)
{
    struct stat sb;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        lmk_cli_error("passkey", "%s: %s", path, strerror(errno));
        return 1;
    }
    if (fstat(*fd, &sb) || !(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) {
        lmk_cli_error("passkey", "%s is not a regular file or a pipe", path);
        return 1;
    }
    if (S_ISREG(sb.st_mode)) {
        p->haystack_len = (size_t)sb.st_size;
        p->haystack_read = hay_pread;
        p->haystack_ud = fd;
        return 0;
    }
    if (!(*mem = malloc(HAY_PIPE_MAX))) {
        lmk_cli_error("passkey", "out of memory");
        return 1;
    }
    size_t n = 0;
    int more = 0;
    for (;;) {
        ssize_t r = read(*fd, *mem + n, HAY_PIPE_MAX - n);
        if (r < 0 && errno == EINTR && !lmk_cli_interrupted)
            continue;
        if (r < 0) {
            lmk_cli_error("passkey", "%s: %s", path, strerror(errno));
            return 1;
        }
        n += (size_t)r;
        if (r == 0 || n == HAY_PIPE_MAX) {
            char c;
            more = n == HAY_PIPE_MAX && read(*fd, &c, 1) == 1;
            break;
        }
    }
    if (more)
        fprintf(stderr, "landmark passkey: %s: a pipe's first %zu MiB are the haystack\n", path,
                HAY_PIPE_MAX >> 20);
    p->haystack = *mem;
    p->haystack_len = n;
    return 0;
}

static void trial_line(void *ud, const lmk_passkey_trial *t)
{
    (void)ud;
    fprintf(stderr, "trial %lld: depth %.2f key %d answer '%s' %s (prefill %.1f s, "
            "%.0f tokens/s)\n", (long long)t->index + 1, t->depth, t->key, t->answer,
            t->ok ? "ok" : "WRONG", t->prefill_s, (double)t->prefill_tokens / t->prefill_s);
}

static void report(const lmk_passkey_result *r, const lmk_passkey_opts *p, int json)
{
    const lmk_task_opts *t = &r->settings;
    if (json) {
        printf("{\"tokens\": %lld, \"trials\": %lld, \"accuracy\": %.4f, "
               "\"prefill_tokens_per_s\": %.1f, \"decode_tokens_per_s\": %.2f, "
               "\"correct\": %d, \"top_k\": %d, \"n_recent\": %d, \"mode\": \"%s\", "
               "\"pos\": \"%s\", \"prefill_retrieve\": \"%s\", \"repr\": \"%s\", "
               "\"n_repr\": %d, \"n_sink\": %d, \"n_local\": %d, \"block_len\": %d, "
               "\"depths\": [",
               (long long)p->tokens, (long long)p->trials, r->accuracy,
               r->prefill_tokens_per_s, r->decode_tokens_per_s, r->correct, t->top_k,
               t->n_recent, lmk_cli_mode_name(t->mode), lmk_cli_pos_name(t->pos),
               t->prefill_chunkwise ? "chunk" : "token", lmk_opt_repr_name(t->landmark),
               t->n_repr, t->n_sink, t->n_local, t->block_len);
        for (int i = 0; i < r->n_bins; i++)
            printf("%s{\"depth\": %.3f, \"trials\": %d, \"correct\": %d}", i ? ", " : "",
                   r->bins[i].depth, r->bins[i].trials, r->bins[i].correct);
        printf("]}\n");
        return;
    }
    printf("pass key at %lld tokens, %lld trials: accuracy %.3f (%d correct)\n",
           (long long)p->tokens, (long long)p->trials, r->accuracy, r->correct);
    for (int i = 0; i < r->n_bins; i++)
        if (r->bins[i].trials)
            printf("  depth %s%.2f: %d/%d\n", p->n_depths ? "" : "~", r->bins[i].depth,
                   r->bins[i].correct, r->bins[i].trials);
    printf("prefill %.1f tokens/s, decode %.2f tokens/s (top_k %d, %d recent, %s, %s "
           "positions, %s prefill retrieval, %d threads)\n", r->prefill_tokens_per_s,
           r->decode_tokens_per_s, t->top_k, t->n_recent, lmk_cli_mode_name(t->mode),
           lmk_cli_pos_name(t->pos), t->prefill_chunkwise ? "chunk" : "token", t->n_threads);
}

int lmk_cmd_passkey(int argc, char **argv)
{
    lmk_model_cli c;
    lmk_model_cli_init(&c, "passkey");
    lmk_passkey_opts p = lmk_passkey_opts_default();
    long long tokens = 0, trials = p.trials;
    const char *haystack = NULL;
    depth_list depths = {{0}, 0};
    int json = 0;
    const char *record = NULL;
    recorder rec;
    memset(&rec, 0, sizeof rec);
    const lmk_opt opts[] = {
        {"--tokens", 0, LMK_OPT_COUNT, &tokens, 1, 9e18, NULL, NULL, NULL, "N",
         "prompt length in regular tokens (k/m suffixes: 1m = 1048576)"},
        {"--trials", 0, LMK_OPT_COUNT, &trials, 1, 9e18, NULL, NULL, NULL, "T",
         "trials (default 10); depths cycle through --depth, else uniform"},
        {"--depth", 0, LMK_OPT_FN, &depths, 0, 0, NULL, parse_depths, NULL, "D,...",
         "needle depths in [0, 1]"},
        {"--haystack", 0, LMK_OPT_STR, &haystack, 0, 0, NULL, NULL, NULL, "FILE",
         "text to hide the key in (e.g. ../shared/data/kjv.txt)"},
        {"--seed", 0, LMK_OPT_U64, &p.seed, 0, 0, NULL, NULL, NULL, "S",
         "seed for keys, offsets and depths (default 42)"},
        {"--workdir", 0, LMK_OPT_STR, &c.t.workdir, 0, 0, NULL, NULL, NULL, "DIR",
         "where temporary sessions go (default $TMPDIR or /tmp)"},
        {"--record", 0, LMK_OPT_STR, &record, 0, 0, NULL, NULL, NULL, "FILE",
         "write the first trial's stream (keys, values and one query per\n"
         "token in the ranking frame) for `landmark bench --recorded FILE\n"
         "--repr ...`"},
        {"--json", 0, LMK_OPT_FLAG, &json, 0, 0, NULL, NULL, NULL, NULL,
         "one JSON object: tokens, trials, accuracy, prefill_tokens_per_s,\n"
         "decode_tokens_per_s, and per-depth details"},
        LMK_MODEL_CLI_OPTS(&c),
    };
    const lmk_opt_spec spec = {
        "passkey",
        "landmark passkey --model M.gguf --tokens N [--trials T] [--depth D[,D...]]\n"
        "                        [--haystack FILE] [--json]",
        "Hide 'The pass key is NNNNN. Remember it. NNNNN is the pass key. ' at a depth of an\n"
        "N-token haystack (FILE from a random offset, or a repeated filler sentence), ask\n"
        "' What is the pass key? The pass key is' and check the greedy answer's first five\n"
        "non-space characters. Reports accuracy per depth and prefill and decode speed.\n",
        opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0};
    int prc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!c.model || tokens < 1) {
        lmk_cli_error("passkey", "--model and --tokens N are required (see --help)");
        return 2;
    }
    if (haystack && lmk_cli_check_input("passkey", haystack))
        return 1; /* before the model is read */
    c.quiet = json;
    lmk_model_cli_finish(&c);
    p.tokens = tokens;
    p.trials = trials;
    p.depths = depths.n ? depths.list : NULL;
    p.n_depths = depths.n;
    p.on_trial = json ? NULL : trial_line;
    char err[1024];
    lmk_model *m = NULL;
    if (lmk_task_model_open(c.model, &c.t, &m, err, sizeof err)) {
        lmk_cli_error("passkey", "%s", err);
        return 1;
    }
    char *hay = NULL;
    int rc = 1, hay_fd = -1;
    if (record) {
        if (rec_init(&rec, m)) {
            lmk_cli_error("passkey", "out of memory");
            goto out;
        }
        c.t.record = rec_cb;
        c.t.record_ud = &rec;
    }
    if (haystack) {
        if (hay_open(haystack, &p, &hay_fd, &hay))
            goto out;
        if (p.haystack_len < 1024) {
            lmk_cli_error("passkey", "%s: haystack too short", haystack);
            goto out;
        }
    }
    lmk_passkey_result res;
    if (lmk_passkey_eval(m, &c.t, &p, &res, err, sizeof err)) {
        lmk_cli_error("passkey", "%s", err);
        goto out;
    }
    if (record && rec_write(&rec, record))
        goto out;
    report(&res, &p, json);
    rc = 0;
out:
    rec_free(&rec);
    free(hay);
    if (hay_fd >= 0)
        close(hay_fd);
    lmk_model_close(m);
    return rc;
}
