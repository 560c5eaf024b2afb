/* Shared by `landmark run`, `passkey` and `perplexity` (see model_cmd.h). */
#include "model_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_clock.h"

volatile sig_atomic_t lmk_cli_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    lmk_cli_interrupted = 1;
}

const lmk_opt_word lmk_cli_top_k_words[] = {{"all", LMK_TOP_K_ALL}, {NULL, 0}};
const lmk_opt_word lmk_cli_pos_words[] = {
    {"slots", LMK_POS_SLOTS}, {"original", LMK_POS_AS_GIVEN}, {"fixed", LMK_POS_FIXED},
    {NULL, 0}};
const lmk_opt_word lmk_cli_mode_words[] = {
    {"grouped", LMK_MODE_GROUPED}, {"union", LMK_MODE_UNION}, {NULL, 0}};
const lmk_opt_word lmk_cli_next_words[] = {
    {"landmark", LMK_NEXT_FROM_LANDMARK}, {"regular", LMK_NEXT_FROM_REGULAR}, {NULL, 0}};
const lmk_opt_word lmk_cli_retrieve_words[] = {
    {"qhead", LMK_RETRIEVE_QHEAD}, {"kvhead", LMK_RETRIEVE_KVHEAD}, {NULL, 0}};
const lmk_opt_word lmk_cli_prefill_words[] = {{"chunk", 1}, {"token", 0}, {NULL, 0}};
const lmk_opt_word lmk_cli_durability_words[] = {
    {"full", LMK_DURABLE_FULL}, {"nometa", LMK_DURABLE_NOMETA}, {"none", LMK_DURABLE_NONE},
    {NULL, 0}};
const lmk_opt_word lmk_cli_dtype_words[] = {
    {"f16", LMK_DTYPE_F16}, {"f32", LMK_DTYPE_F32}, {NULL, 0}};

const char *lmk_cli_pos_name(int p)
{
    return p == LMK_POS_SLOTS ? "slots" : p == LMK_POS_FIXED ? "fixed" : "original";
}

const char *lmk_cli_mode_name(int mode)
{
    return mode == LMK_MODE_GROUPED ? "grouped" : "union";
}

static void log_line(void *ud, const char *msg)
{
    const lmk_model_cli *c = ud;
    fprintf(stderr, "landmark %s: %s\n", c->cmd, msg);
}

/* A progress bar on a terminal, redrawn at most every 0.2 s. */
static void progress_bar(void *ud, const char *what, int64_t done, int64_t total,
                         double elapsed, int final)
{
    static double last;
    const lmk_model_cli *c = ud;
    if (c->quiet || !isatty(2))
        return;
    double t = lmk_clock_s();
    if (!final && t - last < 0.2)
        return;
    last = t;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    if (total <= 0) { /* a document read as it is fed: its length is not known yet */
        fprintf(stderr, "\r%s: %lld tokens, %.0f tokens/s   ", what, (long long)done, rate);
        fflush(stderr);
        return;
    }
    double frac = total > 0 ? (double)done / (double)total : 1;
    if (frac > 1)
        frac = 1;
    char bar[41];
    int fill = (int)(frac * 40);
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\r%s [%s] %3.0f%% %lld/%lld tokens, %.0f tokens/s   ", what, bar,
            100 * frac, (long long)done, (long long)total, rate);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

void lmk_model_cli_init(lmk_model_cli *c, const char *cmd)
{
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    c->t = lmk_task_opts_default();
    c->t.n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (c->t.n_threads < 1)
        c->t.n_threads = 1;
    c->chunk = c->t.chunk;
    c->piece = c->t.piece;
    c->dtype = c->t.dtype;
    c->durability = c->t.durability;
    c->t.log = log_line;
    c->t.progress = progress_bar;
    c->t.ud = c;
    c->t.interrupt = &lmk_cli_interrupted;
}

void lmk_model_cli_finish(lmk_model_cli *c)
{
    c->t.chunk = (int)c->chunk;
    c->t.piece = c->piece;
    c->t.dtype = (lmk_dtype)c->dtype;
    c->t.durability = (lmk_durability)c->durability;
    if (c->g_fixed)
        c->t.fixed_distance = c->fixed_distance;
    c->t.landmark = c->repr.landmark;
    c->t.n_repr = c->repr.n_repr;
    lmk_cli_set_blas_threads(1);
    signal(SIGINT, on_sigint);
}

int lmk_cli_check_input(const char *cmd, const char *path)
{
    struct stat sb;
    if (stat(path, &sb)) {
        lmk_cli_error(cmd, "%s: %s", path, strerror(errno));
        return 1;
    }
    if (!(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) {
        lmk_cli_error(cmd, "%s is not a regular file or a pipe", path);
        return 1;
    }
    return 0;
}
