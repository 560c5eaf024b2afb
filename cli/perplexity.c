/* landmark perplexity: retrieval attention against full attention (model/lmk_tasks.h does
 * the work). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "model_cmd.h"

/* Longest text scored without --tokens: its ids are held in memory (4 bytes each). */
#define PPL_MAX_TOKENS ((int64_t)1 << 24)

/* The first `max` tokens of the file at path (a regular file or a pipe), read and tokenized
 * a piece at a time (lmk_tokenizer_stream_*: the ids of tokenizing it whole, up to the last
 * piece needed); max 0: all of them, refused over PPL_MAX_TOKENS. *ids malloc'ed. Returns 0,
 * or 1 after printing the error. */
static int read_tokens(const lmk_model *m, const char *path, int64_t max, int32_t **ids,
                       int64_t *n)
{
    *ids = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0) {
        lmk_cli_error("perplexity", "%s: %s", path, strerror(errno));
        return 1;
    }
    if (fstat(fd, &sb) || !(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) {
        lmk_cli_error("perplexity", "%s is not a regular file or a pipe", path);
        close(fd);
        return 1;
    }
    lmk_tokenizer_stream *ts = NULL;
    size_t rcap = 1 << 16, have = 0, cap = 0, got;
    char *buf = malloc(rcap);
    const int32_t *p;
    int rc = buf ? lmk_tokenizer_stream_open(lmk_model_tokenizer(m), 0, NULL, 0, 0, &ts)
                 : ENOMEM;
    int done = 0, bad = 0;
    int64_t limit = max > 0 ? max : PPL_MAX_TOKENS + 1;
    while (!rc && !done && !bad) {
        ssize_t r = read(fd, buf, rcap);
        if (r < 0 && errno == EINTR && !lmk_cli_interrupted)
            continue;
        if (r < 0) {
            lmk_cli_error("perplexity", "%s: %s", path, strerror(errno));
            bad = 1;
            break;
        }
        for (size_t at = 0; !rc && !bad && (r == 0 ? !done : at < (size_t)r);) {
            size_t used = 0;
            if (r == 0) {
                rc = lmk_tokenizer_stream_finish(ts, &p, &got);
                done = 1;
            } else {
                rc = lmk_tokenizer_stream_write(ts, buf + at, (size_t)r - at, &used, &p, &got);
            }
            at += used;
            if (rc || got == 0)
                continue;
            if (have + got > cap) {
                size_t nc = cap ? cap : 1 << 16;
                while (nc < have + got)
                    nc *= 2;
                int32_t *ni = realloc(*ids, nc * sizeof *ni);
                if (!ni) {
                    rc = ENOMEM;
                    break;
                }
                *ids = ni;
                cap = nc;
            }
            memcpy(*ids + have, p, got * sizeof *p);
            have += got;
            if ((int64_t)have >= limit) {
                if (max <= 0) {
                    lmk_cli_error("perplexity", "%s: over %lld tokens: give --tokens N", path,
                                  (long long)PPL_MAX_TOKENS);
                    bad = 1;
                }
                done = 1;
                break;
            }
        }
    }
    if (rc)
        lmk_cli_error("perplexity", "tokenizing %s: %s", path, lmk_strerror(rc));
    lmk_tokenizer_stream_free(ts);
    free(buf);
    close(fd);
    if (rc || bad) {
        free(*ids);
        *ids = NULL;
        return 1;
    }
    *n = (int64_t)have;
    return 0;
}

static void report(const lmk_perplexity_result *r, long long dense_max, int json)
{
    const lmk_task_opts *t = &r->settings;
    if (json) {
        printf("{\"tokens\": %lld, \"scored\": %lld, \"perplexity\": %.6g, "
               "\"tokens_per_s\": %.1f, \"top_k\": %d, \"n_recent\": %d, ",
               (long long)r->tokens, (long long)r->scored, r->perplexity, r->tokens_per_s,
               t->top_k, t->n_recent);
        if (r->has_full)
            printf("\"perplexity_full\": %.6g, \"full_tokens_per_s\": %.1f}\n",
                   r->perplexity_full, r->full_tokens_per_s);
        else
            printf("\"perplexity_full\": null}\n");
        return;
    }
    printf("perplexity over %lld tokens (%lld scored):\n", (long long)r->tokens,
           (long long)r->scored);
    printf("  retrieval (top_k %d, %d recent, %s, %s positions): %.4f  (%.0f tokens/s)\n",
           t->top_k, t->n_recent, lmk_cli_mode_name(t->mode), lmk_cli_pos_name(t->pos),
           r->perplexity, r->tokens_per_s);
    if (r->has_full)
        printf("  full attention:                                %.4f  (%.0f tokens/s)\n",
               r->perplexity_full, r->full_tokens_per_s);
    else
        printf("  full attention: skipped (%lld tokens > --dense-max %lld)\n",
               (long long)r->tokens, dense_max);
}

int lmk_cmd_perplexity(int argc, char **argv)
{
    lmk_model_cli c;
    lmk_model_cli_init(&c, "perplexity");
    const char *file = NULL;
    long long tokens = 0, dense_max = 16384;
    int json = 0;
    const lmk_opt opts[] = {
        {"--file", 0, LMK_OPT_STR, &file, 0, 0, NULL, NULL, NULL, "F", "the text to score"},
        {"--tokens", 0, LMK_OPT_COUNT, &tokens, 1, 9e18, NULL, NULL, NULL, "N",
         "score at most the first N tokens"},
        {"--dense-max", 0, LMK_OPT_COUNT, &dense_max, 0, 0, NULL, NULL, NULL, "N",
         "longest input also run with full attention (0: never)"},
        {"--workdir", 0, LMK_OPT_STR, &c.t.workdir, 0, 0, NULL, NULL, NULL, "DIR",
         "where the temporary session goes"},
        {"--json", 0, LMK_OPT_FLAG, &json, 0, 0, NULL, NULL, NULL, NULL, "one JSON object"},
        LMK_MODEL_CLI_OPTS(&c),
    };
    const lmk_opt_spec spec = {
        "perplexity", "landmark perplexity --model M.gguf --file F [--tokens N] [--json]",
        "Perplexity of the file's regular tokens (landmarks are not scored) with retrieval\n"
        "attention, and with full attention for comparison when the file fits\n"
        "--dense-max tokens (default 16384).\n",
        opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0};
    int prc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!c.model || !file) {
        lmk_cli_error("perplexity", "--model and --file are required (see --help)");
        return 2;
    }
    if (lmk_cli_check_input("perplexity", file))
        return 1; /* before the model is read */
    c.quiet = json;
    lmk_model_cli_finish(&c);
    char err[1024];
    lmk_model *m = NULL;
    if (lmk_task_model_open(c.model, &c.t, &m, err, sizeof err)) {
        lmk_cli_error("perplexity", "%s", err);
        return 1;
    }
    int rc = 1;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (read_tokens(m, file, tokens, &ids, &n))
        goto out;
    if (tokens > 0 && n > tokens)
        n = tokens;
    if (n < 2) {
        lmk_cli_error("perplexity", "%s: fewer than 2 tokens", file);
        goto out;
    }
    lmk_perplexity_result res;
    if (lmk_perplexity_eval(m, &c.t, ids, n, dense_max, &res, err, sizeof err)) {
        lmk_cli_error("perplexity", "%s", err);
        goto out;
    }
    report(&res, dense_max, json);
    rc = 0;
out:
    free(ids);
    lmk_model_close(m);
    return rc;
}
