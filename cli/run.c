/* landmark run: a document and/or a prompt into a persistent session, then generation
 * (model/lmk_tasks.h does the work). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_chat.h"
#include "model_cmd.h"

/* Streamed output never splits a UTF-8 character: up to 3 trailing bytes of an unfinished
 * one wait for the next piece. */
typedef struct {
    char held[4];
    size_t n;
} out_state;

static void emit(void *ud, const char *piece, size_t len)
{
    out_state *o = ud;
    char *tmp = malloc(o->n + len);
    if (!tmp)
        return;
    memcpy(tmp, o->held, o->n);
    memcpy(tmp + o->n, piece, len);
    size_t all = o->n + len, ok = lmk_utf8_complete_prefix(tmp, all);
    fwrite(tmp, 1, ok, stdout);
    fflush(stdout);
    o->n = all - ok;
    memcpy(o->held, tmp + ok, o->n);
    free(tmp);
}

/* The document, read as the prefill takes it (never whole): from an open regular file or
 * pipe; leading white space dropped when the chat format trims it. */
typedef struct {
    int fd;
    int trim;
} doc_reader;

static int doc_read(void *ud, char *buf, size_t cap, size_t *got)
{
    doc_reader *d = ud;
    *got = 0;
    for (;;) {
        if (lmk_cli_interrupted)
            return EINTR;
        ssize_t n = read(d->fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        size_t k = 0;
        while (d->trim && k < (size_t)n && isspace((unsigned char)buf[k]))
            k++;
        if (n == 0 || k < (size_t)n) {
            d->trim = 0;
            memmove(buf, buf + k, (size_t)n - k);
            *got = (size_t)n - k;
            return 0;
        }
    }
}

/* The document opened for doc_read: a regular file or a pipe (a device such as /dev/zero
 * never ends, a directory or a socket is no document). -1 after printing the error. */
static int doc_open(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0) {
        lmk_cli_error("run", "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) || !(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) {
        lmk_cli_error("run", "%s is not a regular file or a pipe", path);
        close(fd);
        return -1;
    }
    return fd;
}

/* --chat: the format and system prompt. */
typedef struct {
    int on;
    const char *template_name; /* --template */
    const char *system;        /* --system */
} chat_opts;

/* The chat frame of this run into *f (strings malloc'ed into own[]), the document's
 * skipped bytes and the question's kept part; *cs updated for after the run. Returns 0,
 * or 1 after printing the error. */
static int chat_prepare(lmk_run *r, const char *session, const chat_opts *co, const char *text,
                        size_t len, const char *prompt, lmk_chat_state *cs, lmk_run_frame *f,
                        char **own, size_t *doc_skip, size_t *q_off, size_t *q_len)
{
    int rc = lmk_chat_state_read(session, cs);
    if (rc) {
        lmk_cli_error("run", "%s/model-chat.txt: %s", session, strerror(rc));
        return 1;
    }
    int fmt = co->template_name ? lmk_chat_format_from_name(co->template_name) : cs->format;
    if (fmt < 0) {
        const char *tmpl;
        uint64_t n;
        lmk_gguf *g = lmk_model_gguf(lmk_run_model(r));
        if (lmk_gguf_get_str(g, "tokenizer.chat_template", &tmpl, &n) != 0) {
            lmk_cli_error("run", "the model has no chat template (tokenizer.chat_template): "
                          "give --template NAME (%s)", lmk_chat_format_list());
            return 1;
        }
        char *z = malloc(n + 1);
        if (!z)
            return 1;
        memcpy(z, tmpl, n);
        z[n] = 0;
        fmt = lmk_chat_detect(z);
        if (fmt < 0)
            lmk_cli_error("run", "the model's chat template is not a known format "
                          "(\"%.40s...\"): give --template NAME (%s)", z,
                          lmk_chat_format_list());
        free(z);
        if (fmt < 0)
            return 1;
    }
    if (cs->format >= 0 && fmt != cs->format) {
        lmk_cli_error("run", "the session's conversation is in the %s format, not %s",
                      lmk_chat_format_name(cs->format), lmk_chat_format_name(fmt));
        return 1;
    }
    if (cs->format < 0 && lmk_run_n_tokens(r) > 0) {
        lmk_cli_error("run", "--chat needs a session started with --chat (this one holds "
                      "%lld tokens of plain text)", (long long)lmk_run_n_tokens(r));
        return 1;
    }
    if (text && cs->turns > 0) {
        lmk_cli_error("run", "the conversation has begun: a document can only open it");
        return 1;
    }
    cs->format = fmt;
    if (text) {
        if ((rc = lmk_chat_doc_frame(fmt, co->system, text, len, &own[0], doc_skip)) != 0)
            goto oom;
        f->doc_head = own[0];
        cs->has_doc = 1;
    }
    if (prompt) {
        if ((rc = lmk_chat_question_frame(fmt, co->system, cs->has_doc, cs->turns, prompt,
                                          strlen(prompt), &own[1], &own[2], &own[3], q_off,
                                          q_len)) != 0)
            goto oom;
        if (*q_len == 0) {
            lmk_cli_error("run", "the question is empty");
            return 1;
        }
        f->prompt_head = own[1];
        f->prompt_sep = own[2];
        f->prompt_tail = own[3];
    }
    return 0;
oom:
    lmk_cli_error("run", "chat format: %s", lmk_strerror(rc));
    return 1;
}

/* Prefill, generate, save; the report on stderr. Returns the exit status. */
static int run_session(lmk_run *r, const char *session, const char *file, const char *prompt,
                       long long generate, double temp, unsigned long long seed,
                       const chat_opts *co)
{
    char err[1024], doc_id[PATH_MAX] = "";
    const char *text = NULL; /* "" when there is a document (chat_prepare) */
    size_t len = 0;
    doc_reader dr = {-1, 0};
    if (file) {
        if (!realpath(file, doc_id))
            snprintf(doc_id, sizeof doc_id, "%s", file);
        if ((dr.fd = doc_open(file)) < 0)
            return 1;
        text = "";
    }
    size_t prompt_len = prompt ? strlen(prompt) : 0, doc_skip = 0, q_off = 0;
    lmk_chat_state cs;
    char *own[4] = {NULL, NULL, NULL, NULL};
    if (co->on) {
        lmk_run_frame f = {NULL, NULL, NULL, NULL};
        int bad = chat_prepare(r, session, co, text, len, prompt, &cs, &f, own, &doc_skip,
                               &q_off, &prompt_len);
        /* the state first: an interrupted document prefill resumes as a chat */
        int wrc = bad ? 0 : lmk_chat_state_write(session, &cs);
        if (wrc)
            lmk_cli_error("run", "%s/model-chat.txt: %s", session, strerror(wrc));
        if (bad || wrc) {
            if (dr.fd >= 0)
                close(dr.fd);
            for (int i = 0; i < 4; i++)
                free(own[i]);
            return 1;
        }
        lmk_run_set_frame(r, &f);
        dr.trim = text && lmk_chat_doc_trims(cs.format);
    }
    (void)doc_skip; /* the reader trims the document */
    lmk_run_prefill_stats ps;
    int rc = lmk_run_prefill_read(r, doc_id, file ? doc_read : NULL, &dr,
                                  prompt ? prompt + q_off : NULL, prompt_len, &ps, err,
                                  sizeof err);
    if (dr.fd >= 0)
        close(dr.fd);
    for (int i = 0; i < 4; i++)
        free(own[i]);
    if (!rc && co->on && prompt) {
        cs.turns++;
        int wrc = lmk_chat_state_write(session, &cs);
        if (wrc)
            lmk_cli_error("run", "%s/model-chat.txt: %s", session, strerror(wrc));
    }
    int64_t gen = 0;
    double gen_s = 0;
    out_state os = {{0}, 0};
    if (!rc)
        rc = lmk_run_generate(r, generate, temp, seed, emit, &os, &gen, &gen_s, err,
                              sizeof err);
    if (os.n) /* an unfinished character at the end: as it is */
        fwrite(os.held, 1, os.n, stdout);
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
    chat_opts co = {0, NULL, NULL};
    long long text_window = 0;
    const lmk_opt opts[] = {
        {"--session", 0, LMK_OPT_STR, &session, 0, 0, NULL, NULL, NULL, "DIR",
         "the session directory (created when empty)"},
        {"--file", 0, LMK_OPT_STR, &file, 0, 0, NULL, NULL, NULL, "DOC",
         "document to append to the session"},
        {"--text-window", 0, LMK_OPT_COUNT, &text_window, 64, 1 << 30, NULL, NULL, NULL, "B",
         "bytes of the document read and tokenized at a time (default 1m;\n"
         "the tokens do not depend on it where the text has a safe cut in\n"
         "every B bytes: see model/lmk_tokenizer.h)"},
        {"--prompt", 0, LMK_OPT_STR, &prompt, 0, 0, NULL, NULL, NULL, "TEXT",
         "text to append after it (a question)"},
        {"--generate", 0, LMK_OPT_COUNT, &generate, 0, 0, NULL, NULL, &g_generate, "N",
         "tokens to generate"},
        {"--temp", 0, LMK_OPT_DOUBLE, &temp, 0, 1e308, NULL, NULL, NULL, "T",
         "sampling temperature (default 0: greedy)"},
        {"--seed", 0, LMK_OPT_U64, &seed, 0, 0, NULL, NULL, NULL, "S",
         "sampling seed (default 42)"},
        {"--chat", 0, LMK_OPT_FLAG, &co.on, 0, 0, NULL, NULL, NULL, NULL,
         "a conversation in the model's chat format: the document opens\n"
         "the user's first message, each --prompt is a question, answers\n"
         "stop at the model's end of turn (a session begun so stays one)"},
        {"--template", 0, LMK_OPT_STR, &co.template_name, 0, 0, NULL, NULL, NULL, "NAME",
         "chat format instead of the one matched from the model's template:\n"
         "llama3, chatml, mistral-v1, mistral-v3, mistral-v3-tekken,\n"
         "mistral-v7, phi3 (implies --chat)"},
        {"--system", 0, LMK_OPT_STR, &co.system, 0, 0, NULL, NULL, NULL, "TEXT",
         "system prompt of a new conversation (implies --chat)"},
        LMK_MODEL_CLI_OPTS(&c),
    };
    const lmk_opt_spec spec = {
        "run",
        "landmark run --model M.gguf --session DIR (--file DOC | --prompt TEXT)\n"
        "                    [--generate N] [--top-k K] [--temp T] [--seed S] [-t THREADS]\n"
        "                    [--chat [--template NAME] [--system TEXT]]\n"
        "       landmark run --session DIR --prompt QUESTION [--generate N] [--chat]",
        "Prefill a document (and/or a prompt) into a persistent session through the model,\n"
        "then generate N tokens (default 64 after a prompt, 0 after a document alone),\n"
        "streamed to stdout. A later run on the same session continues it: the model and\n"
        "settings are remembered in DIR/model-run.txt and the model's fingerprint is checked.\n",
        opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0};
    int prc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (co.template_name || co.system)
        co.on = 1;
    if (co.template_name && lmk_chat_format_from_name(co.template_name) < 0) {
        lmk_cli_error("run", "unknown --template '%s' (known: %s)", co.template_name,
                      lmk_chat_format_list());
        return 2;
    }
    if (!session) {
        lmk_cli_error("run", "--session DIR is required (see --help)");
        return 2;
    }
    lmk_model_cli_finish(&c);
    c.t.text_window = (size_t)text_window;
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
    lmk_chat_state prior;
    if (exists && !co.on && lmk_chat_state_read(session, &prior) == 0 && prior.format >= 0)
        co.on = 1; /* a conversation goes on as one */
    if (file && lmk_cli_check_input("run", file))
        return 1; /* before a session is created */
    char err[1024];
    lmk_run *r = NULL;
    if (lmk_run_open(session, c.model, &c.t, &r, err, sizeof err)) {
        lmk_cli_error("run", "%s", err);
        return 1;
    }
    int rc = run_session(r, session, file, prompt, generate, temp, seed, &co);
    lmk_run_close(r);
    return rc;
}
