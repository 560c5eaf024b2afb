/* landmark run: a document and/or a prompt into a persistent session, then generation
 * (model/lmk_tasks.h does the work). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "model_cmd.h"

static void emit(void *ud, const char *piece, size_t len)
{
    (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
}

/* Prefill, generate, save; the report on stderr. Returns the exit status. */
static int run_session(lmk_run *r, const char *session, const char *file, const char *prompt,
                       long long generate, double temp, unsigned long long seed)
{
    char err[1024], doc_id[PATH_MAX] = "";
    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (!realpath(file, doc_id))
            snprintf(doc_id, sizeof doc_id, "%s", file);
        if (!(text = lmk_cli_read_file("run", file, &len)))
            return 1;
    }
    lmk_run_prefill_stats ps;
    int rc = lmk_run_prefill(r, doc_id, text, len, prompt, prompt ? strlen(prompt) : 0, &ps,
                             err, sizeof err);
    free(text);
    int64_t gen = 0;
    double gen_s = 0;
    if (!rc)
        rc = lmk_run_generate(r, generate, temp, seed, emit, NULL, &gen, &gen_s, err,
                              sizeof err);
    if (rc) {
        lmk_cli_error("run", "%s", err);
        return 1;
    }
    if (gen > 0)
        fputc('\n', stdout);
    if (lmk_run_save(r, err, sizeof err))
        lmk_cli_error("run", "%s", err);
    if (ps.tokens)
        fprintf(stderr, "prefill: %lld tokens (%lld positions with landmarks) in %.2f s, "
                "%.1f tokens/s\n", (long long)ps.tokens, (long long)ps.positions, ps.seconds,
                (double)ps.tokens / (ps.seconds > 0 ? ps.seconds : 1e-9));
    if (gen)
        fprintf(stderr, "decode: %lld tokens in %.2f s, %.2f tokens/s\n", (long long)gen,
                gen_s, (double)gen / (gen_s > 0 ? gen_s : 1e-9));
    const lmk_task_opts *t = lmk_run_settings(r);
    fprintf(stderr, "session %s: %lld tokens (top_k %d, %d recent, %s, %s positions)\n",
            session, (long long)lmk_run_n_tokens(r), t->top_k, t->n_recent,
            lmk_cli_mode_name(t->mode), lmk_cli_pos_name(t->pos));
    return lmk_cli_interrupted ? 1 : 0;
}

int lmk_cmd_run(int argc, char **argv)
{
    lmk_model_cli c;
    lmk_model_cli_init(&c, "run");
    const char *session = NULL, *file = NULL, *prompt = NULL;
    long long generate = 0;
    double temp = 0;
    unsigned long long seed = 42;
    int g_generate = 0;
    const lmk_opt opts[] = {
        {"--session", 0, LMK_OPT_STR, &session, 0, 0, NULL, NULL, NULL, "DIR",
         "the session directory (created when empty)"},
        {"--file", 0, LMK_OPT_STR, &file, 0, 0, NULL, NULL, NULL, "DOC",
         "document to append to the session"},
        {"--prompt", 0, LMK_OPT_STR, &prompt, 0, 0, NULL, NULL, NULL, "TEXT",
         "text to append after it (a question)"},
        {"--generate", 0, LMK_OPT_COUNT, &generate, 0, 0, NULL, NULL, &g_generate, "N",
         "tokens to generate"},
        {"--temp", 0, LMK_OPT_DOUBLE, &temp, 0, 1e308, NULL, NULL, NULL, "T",
         "sampling temperature (default 0: greedy)"},
        {"--seed", 0, LMK_OPT_U64, &seed, 0, 0, NULL, NULL, NULL, "S",
         "sampling seed (default 42)"},
        LMK_MODEL_CLI_OPTS(&c),
    };
    const lmk_opt_spec spec = {
        "run",
        "landmark run --model M.gguf --session DIR (--file DOC | --prompt TEXT)\n"
        "                    [--generate N] [--top-k K] [--temp T] [--seed S] [-t THREADS]\n"
        "       landmark run --session DIR --prompt QUESTION [--generate N]",
        "Prefill a document (and/or a prompt) into a persistent session through the model,\n"
        "then generate N tokens (default 64 after a prompt, 0 after a document alone),\n"
        "streamed to stdout. A later run on the same session continues it: the model and\n"
        "settings are remembered in DIR/model-run.txt and the model's fingerprint is checked.\n",
        opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0};
    int prc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!session) {
        lmk_cli_error("run", "--session DIR is required (see --help)");
        return 2;
    }
    lmk_model_cli_finish(&c);
    int exists;
    char recorded[PATH_MAX];
    lmk_run_probe(session, &exists, recorded, sizeof recorded);
    if (!c.model && !recorded[0]) {
        lmk_cli_error("run", exists ? "the session does not record its model: give --model"
                                    : "--model M.gguf is required for a new session");
        return 2;
    }
    if (!exists && !file && !prompt) {
        lmk_cli_error("run", "a new session needs --file or --prompt");
        return 2;
    }
    if (!g_generate)
        generate = prompt ? 64 : 0;
    char err[1024];
    lmk_run *r = NULL;
    if (lmk_run_open(session, c.model, &c.t, &r, err, sizeof err)) {
        lmk_cli_error("run", "%s", err);
        return 1;
    }
    int rc = run_session(r, session, file, prompt, generate, temp, seed);
    lmk_run_close(r);
    return rc;
}
