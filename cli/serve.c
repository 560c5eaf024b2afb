/* landmark serve: an OpenAI-compatible HTTP server over persistent sessions.
 *
 * GNU libmicrohttpd runs one thread per connection; a request's handler blocks in it while
 * it waits for its session and runs. The model is loaded once and shared by every request
 * (lmk_run_open_model: its weights and tokenizer are only read; each request has its own
 * context, scratch and sampling state). Sessions are directories DIR/ID; the server opens a
 * session only while a request runs on it, so `landmark run` can use an idle one. At most
 * --parallel requests run at once, one per session; later ones wait (at most --queue of
 * them: more are answered 503), those waiting for one session in arrival order. Request
 * bodies are parsed in serve_req.c. */
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <microhttpd.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "commands.h"
#include "lmk_chat.h"
#include "lmk_clock.h"
#include "lmk_fs.h"
#include "model_cmd.h"
#include "serve_req.h"

/* ---- the server's state ---- */

typedef struct sess_rec {
    char id[LMK_SERVE_ID_MAX + 16];
    int busy;                         /* a request runs on it (holds its writer lock) */
    /* requests waiting for it are served in arrival order: each takes the next ticket and
     * runs when serving reaches it */
    unsigned long long next_ticket, serving;
    int64_t tokens;                   /* last known */
    volatile sig_atomic_t *flag;      /* the interrupt flag of the work running on it */
    int pf_state;                     /* document prefill: 0 none, 1 running, 2 done, 3 failed */
    int64_t pf_done, pf_total;
    char pf_err[512];
    struct sess_rec *next;
} sess_rec;

static struct {
    const char *model_path, *dir, *api_key;
    char model_name[256];
    lmk_model *model;                 /* loaded once, shared by every request (read-only) */
    int chat_format;                  /* lmk_chat_format of chat requests; -1: transcript */
    lmk_task_opts t;
    long long max_body, max_doc, max_prompt, max_tokens;
    int parallel, queue_max, max_sessions;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, waiting;
    sess_rec *recs;
    volatile sig_atomic_t stopping;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static sess_rec *rec_get(const char *id) /* under S.mu */
{
    for (sess_rec *r = S.recs; r; r = r->next)
        if (!strcmp(r->id, id))
            return r;
    sess_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->tokens = -1;
    r->next = S.recs;
    S.recs = r;
    return r;
}

static void rec_drop(sess_rec *rec) /* under S.mu */
{
    for (sess_rec **p = &S.recs; *p; p = &(*p)->next)
        if (*p == rec) {
            *p = rec->next;
            free(rec);
            return;
        }
}

enum { ACQ_OK = 0, ACQ_BUSY = 1, ACQ_FULL = 2, ACQ_STOPPING = 3, ACQ_NOMEM = 4 };

/* Take session id for one request: wait (when wait) for it to be idle and, when count,
 * for a free place among --parallel; at most --queue requests wait. The requests waiting
 * for one session get it in the order they arrived here (first come, first served), and a
 * request that would not wait finds the session busy while any wait. */
static int acquire(const char *id, int wait, int count, sess_rec **out)
{
    pthread_mutex_lock(&S.mu);
    sess_rec *rec = rec_get(id);
    int rc = ACQ_OK;
    if (!rec)
        rc = ACQ_NOMEM;
    else if (S.stopping)
        rc = ACQ_STOPPING;
    else if (rec->busy || rec->next_ticket != rec->serving ||
             (count && S.running >= S.parallel)) {
        if (!wait)
            rc = ACQ_BUSY;
        else if (S.waiting >= S.queue_max)
            rc = ACQ_FULL;
        else {
            unsigned long long ticket = rec->next_ticket++;
            S.waiting++;
            while ((rec->busy || rec->serving != ticket ||
                    (count && S.running >= S.parallel)) && !S.stopping)
                pthread_cond_wait(&S.cv, &S.mu);
            S.waiting--;
            rec->serving++; /* the next in line (all give up when stopping) */
            if (S.stopping)
                rc = ACQ_STOPPING;
        }
    }
    if (!rc) {
        rec->busy = 1;
        S.running += count;
    }
    pthread_mutex_unlock(&S.mu);
    *out = rec;
    return rc;
}

static void release(sess_rec *rec, int count)
{
    pthread_mutex_lock(&S.mu);
    rec->busy = 0;
    rec->flag = NULL;
    S.running -= count;
    if (rec->id[0] == '.') /* a temporary session */
        rec_drop(rec);
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

static const char *acq_message(int rc, int *status)
{
    *status = rc == ACQ_BUSY ? 409 : rc == ACQ_NOMEM ? 500 : 503;
    return rc == ACQ_BUSY    ? "the session is busy with another request"
           : rc == ACQ_FULL  ? "the server is busy: too many requests waiting (--queue)"
           : rc == ACQ_NOMEM ? "out of memory"
                             : "the server is shutting down";
}

static void session_path(char *buf, size_t cap, const char *id)
{
    snprintf(buf, cap, "%s/%s", S.dir, id);
}

static int session_exists(const char *id)
{
    char p[PATH_MAX];
    int exists = 0;
    session_path(p, sizeof p, id);
    lmk_run_probe(p, &exists, NULL, 0);
    return exists;
}

/* ---- responses ---- */

static enum MHD_Result send_text(struct MHD_Connection *c, int status, char *body,
                                 const char *type)
{
    if (!body)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Send j (a reference is taken over). */
static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return send_text(c, 500, strdup("{\"error\":{\"message\":\"out of memory\"}}"),
                         "application/json");
    return send_text(c, status, s, "application/json");
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_text(c, status, lmk_serve_error_json(status, msg, param), "application/json");
}

/* A JSON string of len bytes of possibly invalid UTF-8 (model output can split or mangle
 * characters). */
static json_t *json_text(const char *s, size_t len)
{
    char *clean = malloc(3 * len + 1);
    if (!clean)
        return NULL;
    size_t n = lmk_serve_utf8_clean(s, len, clean);
    json_t *j = json_stringn(clean, n);
    free(clean);
    return j;
}

/* ---- the work on a session ---- */

/* What the callbacks of one run see. */
typedef struct work {
    sess_rec *rec;
    volatile sig_atomic_t stop;    /* the run's interrupt flag */
    int fd;                        /* the client's socket, -1 when none */
} work;

/* Whether the client closed its connection (a read of 0 bytes without consuming any). */
static int client_gone(int fd)
{
    if (fd < 0)
        return 0;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void check_stop(work *w)
{
    if (S.stopping || client_gone(w->fd))
        w->stop = 1;
}

static void work_log(void *ud, const char *msg)
{
    work *w = ud;
    fprintf(stderr, "landmark serve: %s: %s\n", w->rec ? w->rec->id : "-", msg);
}

static void work_progress(void *ud, const char *what, int64_t done, int64_t total,
                          double elapsed, int final)
{
    (void)what, (void)elapsed, (void)final;
    work *w = ud;
    pthread_mutex_lock(&S.mu);
    if (w->rec && w->rec->pf_state == 1) {
        w->rec->pf_done = done;
        w->rec->pf_total = total;
    }
    pthread_mutex_unlock(&S.mu);
    check_stop(w);
}

static int status_of(int rc)
{
    return rc == LMK_EMISMATCH ? 409 : rc == LMK_EBUSY ? 409 : rc == LMK_ESTATE ? 409
           : rc == LMK_EINVAL ? 400 : rc == LMK_ENOTFOUND ? 404 : 500;
}

/* Open session dir for w's request. */
static int open_run(const char *dir, work *w, int temp, lmk_run **r, char *err, size_t cap)
{
    lmk_task_opts t = S.t;
    t.interrupt = &w->stop;
    t.log = work_log;
    t.progress = work_progress;
    t.ud = w;
    if (temp)
        t.durability = LMK_DURABLE_NONE;
    pthread_mutex_lock(&S.mu);
    w->rec->flag = &w->stop;
    pthread_mutex_unlock(&S.mu);
    return lmk_run_open_model(dir, S.model, S.model_path, &t, r, err, cap);
}

/* ---- generation: /v1/completions and /v1/chat/completions ---- */

typedef struct gen_job {
    lmk_serve_gen g;
    work w;
    lmk_run *r;
    char dir[PATH_MAX];
    int temp;                 /* a temporary session, removed afterwards */
    int chat_save;            /* write chat_st (model-chat.txt) once the answer is kept */
    lmk_chat_state chat_st;   /* the session's conversation after this request */
    char id[48];
    long long created;
    int64_t prompt_tokens, completion_tokens;
    /* the text generated so far; the stop sequence found cuts it */
    char *text;
    size_t len, cap, sent;    /* sent: bytes streamed */
    int stop_hit, failed, done;
    char err[512];
    /* streaming: server-sent events waiting for the connection */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *out;
    size_t out_len, out_off, out_cap;
    int refs;
} gen_job;

static void job_unref(gen_job *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    lmk_serve_gen_free(&j->g);
    free(j->text);
    free(j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static int buf_add(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 256);
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*b, nc);
        if (!nb)
            return ENOMEM;
        *b = nb;
        *cap = nc;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

/* One chunk of the stream (under j->mu): text, or the end (finish != NULL, with usage). */
static void sse_chunk(gen_job *j, const char *text, size_t n, const char *finish)
{
    json_t *choice;
    if (j->g.chat) {
        json_t *delta = json_object();
        if (!j->sent && !finish)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (n)
            json_object_set_new(delta, "content", json_text(text, n));
        choice = json_pack("{s:i, s:o, s:o}", "index", 0, "delta", delta, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "text", json_text(text, n),
                           "logprobs", "finish_reason",
                           finish ? json_string(finish) : json_null());
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", j->id, "object",
                          j->g.chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)j->created, "model", S.model_name, "choices", choice);
    if (o && finish) {
        json_object_set_new(o, "usage",
                            json_pack("{s:I, s:I, s:I}", "prompt_tokens",
                                      (json_int_t)j->prompt_tokens, "completion_tokens",
                                      (json_int_t)j->completion_tokens, "total_tokens",
                                      (json_int_t)(j->prompt_tokens + j->completion_tokens)));
        if (j->g.session[0])
            json_object_set_new(o, "session", json_string(j->g.session));
    }
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) {
        buf_add(&j->out, &j->out_len, &j->out_cap, "data: ", 6);
        buf_add(&j->out, &j->out_len, &j->out_cap, s, strlen(s));
        buf_add(&j->out, &j->out_len, &j->out_cap, "\n\n", 2);
        free(s);
    }
    pthread_cond_broadcast(&j->cv);
}

static size_t max_stop_len(const lmk_serve_gen *g)
{
    size_t m = 0;
    for (int i = 0; i < g->n_stop; i++)
        if (strlen(g->stop[i]) > m)
            m = strlen(g->stop[i]);
    return m;
}

static void on_token(void *ud, const char *piece, size_t n)
{
    gen_job *j = ud;
    pthread_mutex_lock(&j->mu);
    size_t before = j->len;
    if (!j->stop_hit && buf_add(&j->text, &j->len, &j->cap, piece, n) == 0) {
        size_t ms = max_stop_len(&j->g);
        size_t from = before >= ms ? before - ms + 1 : 0;
        for (int i = 0; i < j->g.n_stop; i++) {
            char *hit = memmem(j->text + from, j->len - from, j->g.stop[i], strlen(j->g.stop[i]));
            if (hit && (size_t)(hit - j->text) < j->len) {
                j->len = (size_t)(hit - j->text); /* the earliest match wins */
                j->stop_hit = 1;
            }
        }
        if (j->stop_hit)
            j->w.stop = 1;
        if (j->g.stream) {
            /* hold back what could still become a stop sequence, and a split character */
            size_t upto = j->stop_hit ? j->len : (j->len >= ms ? j->len - (ms ? ms - 1 : 0) : 0);
            upto = j->sent + lmk_serve_utf8_complete(j->text + j->sent,
                                                     upto > j->sent ? upto - j->sent : 0);
            if (upto > j->sent) {
                sse_chunk(j, j->text + j->sent, upto - j->sent, NULL);
                j->sent = upto;
            }
        }
    }
    pthread_mutex_unlock(&j->mu);
    check_stop(&j->w);
}

static void job_close_run(gen_job *j);

/* Generate, then keep the session or return it to where it was, close. */
static void job_finish_run(gen_job *j)
{
    int64_t gen = 0;
    double secs = 0;
    char err[512];
    int rc = lmk_run_generate(j->r, j->g.max_tokens, j->g.temperature, j->g.seed, on_token,
                              j, &gen, &secs, err, sizeof err);
    pthread_mutex_lock(&j->mu);
    j->completion_tokens = gen;
    if (rc) {
        j->failed = status_of(rc);
        snprintf(j->err, sizeof j->err, "%s", err);
    }
    pthread_mutex_unlock(&j->mu);
    job_close_run(j);
}

/* Keep the session (save) or return it to where it was (abort); close, release. */
static void job_close_run(gen_job *j)
{
    char err[512];
    int rc;
    if (!j->temp) {
        if (!j->g.persist)
            rc = lmk_run_abort(j->r, err, sizeof err);
        else
            rc = lmk_run_save(j->r, err, sizeof err);
        if (rc)
            fprintf(stderr, "landmark serve: %s: %s\n", j->g.session, err);
        if (!rc && j->g.persist && j->chat_save &&
            (rc = lmk_chat_state_write(j->dir, &j->chat_st)) != 0)
            fprintf(stderr, "landmark serve: %s: model-chat.txt: %s\n", j->g.session,
                    strerror(rc));
    }
    pthread_mutex_lock(&S.mu);
    j->w.rec->tokens = -1; /* read again when asked */
    pthread_mutex_unlock(&S.mu);
    lmk_run_close(j->r);
    j->r = NULL;
    if (j->temp)
        lmk_fs_rmtree(j->dir);
    release(j->w.rec, 1);
}

static const char *finish_reason(const gen_job *j)
{
    return j->stop_hit || j->completion_tokens < j->g.max_tokens ? "stop" : "length";
}

static void *job_thread(void *arg)
{
    gen_job *j = arg;
    job_finish_run(j);
    pthread_mutex_lock(&j->mu);
    if (j->failed) {
        char *e = lmk_serve_error_json(j->failed, j->err, NULL);
        if (e) {
            buf_add(&j->out, &j->out_len, &j->out_cap, "data: ", 6);
            buf_add(&j->out, &j->out_len, &j->out_cap, e, strlen(e));
            buf_add(&j->out, &j->out_len, &j->out_cap, "\n\n", 2);
            free(e);
        }
    } else {
        if (j->len > j->sent) { /* what was held back */
            sse_chunk(j, j->text + j->sent, j->len - j->sent, NULL);
            j->sent = j->len;
        }
        sse_chunk(j, "", 0, finish_reason(j));
    }
    buf_add(&j->out, &j->out_len, &j->out_cap, "data: [DONE]\n\n", 14);
    j->done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen_job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->out_off == j->out_len && !j->done)
        pthread_cond_wait(&j->cv, &j->mu);
    ssize_t n;
    if (j->out_off < j->out_len) {
        size_t k = j->out_len - j->out_off < max ? j->out_len - j->out_off : max;
        memcpy(buf, j->out + j->out_off, k);
        j->out_off += k;
        n = (ssize_t)k;
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void stream_free(void *cls)
{
    gen_job *j = cls;
    j->w.stop = 1; /* the client went away: stop generating */
    job_unref(j);
}

static int conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void new_id(char *buf, size_t cap, const char *prefix)
{
    static unsigned long long ctr;
    unsigned long long x = (unsigned long long)time(NULL) * 0x9e3779b97f4a7c15ull ^
                           (unsigned long long)getpid() << 32 ^
                           __atomic_add_fetch(&ctr, 1, __ATOMIC_RELAXED) * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    snprintf(buf, cap, "%s%016llx", prefix, x);
}

/* The prompt text fed for a request: the completion prompt, or, for a model without a
 * known chat template, chat messages as a plain transcript. */
static char *gen_prompt(const lmk_serve_gen *g, size_t *len)
{
    if (!g->chat) {
        *len = g->prompt_len;
        return strdup(g->prompt);
    }
    /* A plain transcript: one line per message and the assistant's turn open. */
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < g->n_msgs; i++) {
        const char *role = g->msgs[i].role;
        buf_add(&b, &n, &cap, "\n", 1);
        buf_add(&b, &n, &cap, role, strlen(role));
        buf_add(&b, &n, &cap, ": ", 2);
        buf_add(&b, &n, &cap, g->msgs[i].content, strlen(g->msgs[i].content));
    }
    buf_add(&b, &n, &cap, "\nassistant:", 11);
    *len = n;
    return b;
}

/* A chat request's messages in the model's chat format, carrying on the session's
 * conversation (model-chat.txt, as `landmark run --chat` keeps it): the segments to feed,
 * pointing into *text; *seg and *text malloc'ed. Returns 0, LMK_EMISMATCH (the session's
 * conversation is in another format), an errno. */
static int chat_segments(gen_job *j, char **text, lmk_tok_segment **seg, size_t *n_seg,
                         char *err, size_t cap)
{
    lmk_chat_state st = {-1, 0, 0};
    int rc = j->temp ? 0 : lmk_chat_state_read(j->dir, &st);
    if (rc) {
        snprintf(err, cap, "%s/model-chat.txt: %s", j->g.session, strerror(rc));
        return rc;
    }
    if (st.format >= 0 && st.format != S.chat_format) {
        snprintf(err, cap, "the session's conversation is in the %s chat format, the "
                 "server's is %s", lmk_chat_format_name(st.format),
                 lmk_chat_format_name(S.chat_format));
        return LMK_EMISMATCH;
    }
    if (st.format < 0) { /* no conversation yet: it starts here (after any plain text) */
        st.has_doc = 0;
        st.turns = 0;
    }
    lmk_chat_msg *m = malloc((size_t)j->g.n_msgs * sizeof *m);
    if (!m)
        return ENOMEM;
    for (int i = 0; i < j->g.n_msgs; i++)
        m[i] = (lmk_chat_msg){j->g.msgs[i].role, j->g.msgs[i].content};
    size_t len, np;
    lmk_chat_piece *pc = NULL;
    rc = lmk_chat_continue(S.chat_format, &st, m, (size_t)j->g.n_msgs, 1, text, &len, &pc,
                           &np);
    free(m);
    if (rc) {
        snprintf(err, cap, "rendering the messages: %s", lmk_strerror(rc));
        return rc;
    }
    if (!(*seg = malloc((np ? np : 1) * sizeof **seg))) {
        free(pc);
        free(*text);
        *text = NULL;
        return ENOMEM;
    }
    for (size_t i = 0; i < np; i++)
        (*seg)[i] = (lmk_tok_segment){*text + pc[i].off, pc[i].len, !pc[i].content};
    *n_seg = np;
    free(pc);
    j->chat_st = (lmk_chat_state){S.chat_format, st.has_doc, st.turns + 1};
    j->chat_save = 1;
    return 0;
}

/* Tokens of the segments (the prompt limit). */
static int count_segments(const lmk_tok_segment *seg, size_t n, int64_t *count)
{
    size_t total = 0, got = 0;
    for (size_t i = 0; i < n; i++)
        total += seg[i].len;
    size_t max = lmk_tokenizer_max_tokens(total);
    int32_t *ids = malloc((max ? max : 1) * sizeof *ids);
    if (!ids)
        return ENOMEM;
    int rc = lmk_tokenizer_tokenize_segments(lmk_model_tokenizer(S.model), seg, n,
                                             LMK_TOK_CONTINUE, ids, max, &got);
    free(ids);
    *count = (int64_t)got;
    return rc;
}

static enum MHD_Result handle_gen(struct MHD_Connection *c, const char *body, size_t len,
                                  int chat)
{
    char err[1024], param[64] = "";
    gen_job *j = calloc(1, sizeof *j);
    if (!j)
        return send_error(c, 500, NULL, "out of memory");
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->w.fd = conn_fd(c);
    int status = lmk_serve_parse_gen(body, len, chat, S.max_tokens, &j->g, err, sizeof err,
                                     param, sizeof param);
    if (status) {
        job_unref(j);
        return send_error(c, status, param, "%s", err);
    }
    char sid[LMK_SERVE_ID_MAX + 16];
    if (j->g.session[0]) {
        snprintf(sid, sizeof sid, "%s", j->g.session);
        if (!session_exists(sid)) {
            job_unref(j);
            return send_error(c, 404, "session", "no session '%s'", sid);
        }
    } else {
        new_id(sid, sizeof sid, ".tmp-");
        j->temp = 1;
    }
    session_path(j->dir, sizeof j->dir, sid);
    new_id(j->id, sizeof j->id, chat ? "chatcmpl-" : "cmpl-");
    j->created = (long long)time(NULL);
    int acq = acquire(sid, 1, 1, &j->w.rec);
    if (acq) {
        const char *m = acq_message(acq, &status);
        job_unref(j);
        return send_error(c, status, NULL, "%s", m);
    }
    if (!j->temp && !session_exists(sid)) { /* deleted while this request waited */
        release(j->w.rec, 1);
        job_unref(j);
        return send_error(c, 404, "session", "no session '%s'", sid);
    }
    /* the prompt: completion text, a chat rendering (segments), or a chat transcript */
    size_t plen = 0, n_seg = 0;
    int templated = chat && S.chat_format >= 0;
    char *prompt = templated ? NULL : gen_prompt(&j->g, &plen);
    lmk_tok_segment *seg = NULL;
    int rc = templated || prompt ? 0 : ENOMEM;
    if (!rc && templated)
        rc = chat_segments(j, &prompt, &seg, &n_seg, err, sizeof err);
    if (!rc)
        rc = open_run(j->dir, &j->w, j->temp, &j->r, err, sizeof err);
    if (!rc && !j->temp && !j->g.persist)
        rc = lmk_run_begin(j->r, err, sizeof err);
    if (!rc && (plen || n_seg)) { /* the prompt limit, counted in tokens */
        int32_t *ids = NULL;
        int64_t n = 0;
        if (templated)
            rc = count_segments(seg, n_seg, &n);
        else
            rc = lmk_task_tokenize(lmk_run_model(j->r), prompt, plen, 0, &ids, &n, err,
                                   sizeof err);
        free(ids);
        if (rc == ENOMEM)
            snprintf(err, sizeof err, "out of memory");
        if (!rc && n > S.max_prompt) {
            snprintf(err, sizeof err, "the prompt is %lld tokens, over the limit of %lld "
                     "(--max-prompt-tokens)", (long long)n, S.max_prompt);
            rc = LMK_EINVAL;
            snprintf(param, sizeof param, "%s", chat ? "messages" : "prompt");
        }
    }
    lmk_run_prefill_stats ps = {0};
    if (!rc && templated)
        rc = lmk_run_prefill_segments(j->r, seg, n_seg, &ps, err, sizeof err);
    else if (!rc && plen)
        rc = lmk_run_prefill(j->r, NULL, NULL, 0, prompt, plen, &ps, err, sizeof err);
    free(prompt);
    free(seg);
    if (!rc && j->w.stop && !S.stopping) { /* the client left during the prompt */
        rc = EINTR;
        snprintf(err, sizeof err, "client closed the connection");
    }
    j->prompt_tokens = ps.tokens;
    if (rc) {
        if (j->r && !j->temp && !j->g.persist)
            lmk_run_abort(j->r, err + strlen(err), 0);
        lmk_run_close(j->r);
        if (j->temp)
            lmk_fs_rmtree(j->dir);
        release(j->w.rec, 1);
        job_unref(j);
        if (rc == ENOMEM)
            snprintf(err, sizeof err, "out of memory");
        return send_error(c, rc == EINTR && S.stopping ? 503 : status_of(rc),
                          rc == LMK_EINVAL ? param : NULL, "%s", err);
    }
    if (j->g.stream) {
        j->refs = 2; /* the generating thread and the response */
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, j,
                                              stream_free);
        pthread_t th;
        if (!resp || pthread_create(&th, NULL, job_thread, j)) {
            if (resp)
                MHD_destroy_response(resp);
            else
                j->refs--;
            job_close_run(j);
            job_unref(j);
            return send_error(c, 500, NULL, "could not start the stream");
        }
        pthread_detach(th);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    job_finish_run(j);
    if (j->failed) {
        enum MHD_Result ret = send_error(c, j->failed, NULL, "%s", j->err);
        job_unref(j);
        return ret;
    }
    json_t *choice;
    if (chat)
        choice = json_pack("{s:i, s:{s:s, s:o}, s:s}", "index", 0, "message", "role",
                           "assistant", "content", json_text(j->text ? j->text : "", j->len),
                           "finish_reason", finish_reason(j));
    else
        choice = json_pack("{s:i, s:o, s:n, s:s}", "index", 0, "text",
                           json_text(j->text ? j->text : "", j->len), "logprobs",
                           "finish_reason", finish_reason(j));
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:I, s:I, s:I}}", "id", j->id,
                          "object", chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)j->created, "model", S.model_name, "choices", choice,
                          "usage", "prompt_tokens", (json_int_t)j->prompt_tokens,
                          "completion_tokens", (json_int_t)j->completion_tokens,
                          "total_tokens",
                          (json_int_t)(j->prompt_tokens + j->completion_tokens));
    if (o && j->g.session[0])
        json_object_set_new(o, "session", json_string(j->g.session));
    job_unref(j);
    return send_json(c, 200, o);
}

/* ---- sessions ---- */

/* Bytes on disk and the latest modification time of a session's files. */
static void dir_usage(const char *dir, unsigned long long *bytes, long long *mtime)
{
    *bytes = 0;
    *mtime = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.' || snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
            continue;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            *bytes += (unsigned long long)st.st_blocks * 512;
            if (st.st_mtime > *mtime)
                *mtime = st.st_mtime;
        }
    }
    closedir(d);
}

/* The tokens (positions) session dir holds, read from it; -1 when it cannot be read. */
static int64_t session_tokens(const char *dir)
{
    lmk_session_opts so = lmk_session_opts_default();
    so.read_only = 1;
    lmk_session *s = NULL;
    lmk_session_info in;
    int64_t tokens = -1;
    if (lmk_session_open(dir, &so, &s, NULL, 0) == 0 && lmk_session_info_get(s, &in) == 0)
        tokens = in.tokens;
    lmk_session_close(s);
    return tokens;
}

/* The session object of id; when idle its token count is read from the session. */
static json_t *session_json(const char *id)
{
    char dir[PATH_MAX], model[PATH_MAX];
    int exists = 0;
    session_path(dir, sizeof dir, id);
    lmk_run_probe(dir, &exists, model, sizeof model);
    sess_rec *rec = NULL;
    int idle = acquire(id, 0, 0, &rec) == ACQ_OK;
    int64_t tokens = -1;
    if (idle && exists)
        tokens = session_tokens(dir);
    pthread_mutex_lock(&S.mu);
    if (!rec)
        rec = rec_get(id);
    if (rec && idle)
        rec->tokens = tokens;
    else if (rec)
        tokens = rec->tokens;
    json_int_t queued = rec ? (json_int_t)(rec->next_ticket - rec->serving) : 0;
    json_t *pf = NULL;
    if (rec && rec->pf_state)
        pf = json_pack("{s:s, s:I, s:I, s:s?}", "state",
                       rec->pf_state == 1 ? "running" : rec->pf_state == 2 ? "done" : "failed",
                       "done", (json_int_t)rec->pf_done, "total", (json_int_t)rec->pf_total,
                       "error", rec->pf_state == 3 ? rec->pf_err : NULL);
    pthread_mutex_unlock(&S.mu);
    if (idle)
        release(rec, 0);
    unsigned long long bytes;
    long long mtime;
    dir_usage(dir, &bytes, &mtime);
    const char *base = strrchr(model, '/');
    json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:s, s:I, s:b, s:I}", "id", id, "object",
                          "session", "tokens", tokens >= 0 ? json_integer(tokens) : json_null(),
                          "bytes", (json_int_t)bytes, "model", base ? base + 1 : model,
                          "last_used", (json_int_t)mtime, "busy", !idle, "queued", queued);
    if (o && pf)
        json_object_set_new(o, "prefill", pf);
    else
        json_decref(pf);
    return o;
}

static int count_sessions(void)
{
    DIR *d = opendir(S.dir);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (lmk_serve_id_valid(e->d_name) && session_exists(e->d_name))
            n++;
    closedir(d);
    return n;
}

static enum MHD_Result handle_list(struct MHD_Connection *c)
{
    json_t *arr = json_array();
    DIR *d = opendir(S.dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (lmk_serve_id_valid(e->d_name) && session_exists(e->d_name))
                json_array_append_new(arr, session_json(e->d_name));
        closedir(d);
    }
    return send_json(c, 200, json_pack("{s:s, s:o}", "object", "list", "data", arr));
}

typedef struct doc_job {
    work w;
    lmk_run *r;
    lmk_serve_sess_req q;
    char dir[PATH_MAX];
} doc_job;

/* Prefill a document (and a prompt) into a new session; the session is held until done. */
static int doc_prefill(doc_job *d, char *err, size_t cap)
{
    char doc_id[128];
    snprintf(doc_id, sizeof doc_id, "upload:%s", d->w.rec->id);
    lmk_run_prefill_stats ps;
    int rc = lmk_run_prefill(d->r, doc_id, d->q.document, d->q.document_len, d->q.text,
                             d->q.text_len, &ps, err, cap);
    if (!rc)
        rc = lmk_run_save(d->r, err, cap);
    return rc;
}

static void *doc_thread(void *arg)
{
    doc_job *d = arg;
    char err[512];
    int rc = doc_prefill(d, err, sizeof err);
    lmk_run_close(d->r);
    pthread_mutex_lock(&S.mu);
    d->w.rec->pf_state = rc ? 3 : 2;
    if (rc)
        snprintf(d->w.rec->pf_err, sizeof d->w.rec->pf_err, "%s", err);
    else
        d->w.rec->pf_done = d->w.rec->pf_total;
    pthread_mutex_unlock(&S.mu);
    if (rc)
        fprintf(stderr, "landmark serve: %s: prefill: %s\n", d->w.rec->id, err);
    release(d->w.rec, 1);
    lmk_serve_sess_free(&d->q);
    free(d);
    return NULL;
}

static enum MHD_Result handle_create(struct MHD_Connection *c, const char *body, size_t len)
{
    char err[1024], param[64] = "";
    doc_job *d = calloc(1, sizeof *d);
    if (!d)
        return send_error(c, 500, NULL, "out of memory");
    d->w.fd = -1;
    int status = lmk_serve_parse_sess(body, len, LMK_SERVE_SESS_CREATE, &d->q, err, sizeof err,
                                      param, sizeof param);
    if (status) {
        free(d);
        return send_error(c, status, param, "%s", err);
    }
    if (!d->q.id[0])
        new_id(d->q.id, sizeof d->q.id, "s");
    if (session_exists(d->q.id)) {
        enum MHD_Result r409 = send_error(c, 409, "id", "session '%s' exists", d->q.id);
        lmk_serve_sess_free(&d->q);
        free(d);
        return r409;
    }
    if (S.max_sessions > 0 && count_sessions() >= S.max_sessions) {
        lmk_serve_sess_free(&d->q);
        free(d);
        return send_error(c, 409, NULL, "the server holds its maximum of %d sessions "
                          "(--max-sessions)", S.max_sessions);
    }
    int acq = acquire(d->q.id, 1, 1, &d->w.rec);
    if (acq) {
        lmk_serve_sess_free(&d->q);
        free(d);
        const char *m = acq_message(acq, &status);
        return send_error(c, status, NULL, "%s", m);
    }
    if (session_exists(d->q.id)) { /* made while this request waited */
        release(d->w.rec, 1);
        enum MHD_Result r409 = send_error(c, 409, "id", "session '%s' exists", d->q.id);
        lmk_serve_sess_free(&d->q);
        free(d);
        return r409;
    }
    session_path(d->dir, sizeof d->dir, d->q.id);
    int rc = open_run(d->dir, &d->w, 0, &d->r, err, sizeof err);
    if (!rc && !d->q.document) { /* no document: the prompt now, answered 201 */
        rc = doc_prefill(d, err, sizeof err);
        lmk_run_close(d->r);
        release(d->w.rec, 1);
        if (rc) {
            lmk_fs_rmtree(d->dir);
            lmk_serve_sess_free(&d->q);
            free(d);
            return send_error(c, status_of(rc), NULL, "%s", err);
        }
        json_t *o = session_json(d->q.id);
        lmk_serve_sess_free(&d->q);
        free(d);
        return send_json(c, 201, o);
    }
    if (rc) {
        lmk_run_close(d->r);
        lmk_fs_rmtree(d->dir);
        release(d->w.rec, 1);
        lmk_serve_sess_free(&d->q);
        free(d);
        return send_error(c, status_of(rc), NULL, "%s", err);
    }
    /* a document: prefilled in the background, progress in GET /v1/sessions/ID */
    pthread_mutex_lock(&S.mu);
    d->w.rec->pf_state = 1;
    d->w.rec->pf_done = 0;
    d->w.rec->pf_total = 0;
    d->w.rec->pf_err[0] = 0;
    pthread_mutex_unlock(&S.mu);
    char id[LMK_SERVE_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", d->q.id);
    pthread_t th;
    if (pthread_create(&th, NULL, doc_thread, d)) {
        lmk_run_close(d->r);
        release(d->w.rec, 1);
        lmk_serve_sess_free(&d->q);
        free(d);
        return send_error(c, 500, NULL, "could not start the prefill");
    }
    pthread_detach(th);
    /* the session is busy: its object from what is known */
    json_t *o = json_pack("{s:s, s:s, s:n, s:b, s:{s:s, s:i, s:i}}", "id", id, "object",
                          "session", "tokens", "busy", 1, "prefill", "state", "running",
                          "done", 0, "total", 0);
    return send_json(c, 202, o);
}

static enum MHD_Result handle_append(struct MHD_Connection *c, const char *id,
                                     const char *body, size_t len)
{
    char err[1024], param[64] = "";
    lmk_serve_sess_req q;
    int status = lmk_serve_parse_sess(body, len, LMK_SERVE_SESS_APPEND, &q, err, sizeof err,
                                      param, sizeof param);
    if (status)
        return send_error(c, status, param, "%s", err);
    work w = {.fd = conn_fd(c)};
    int acq = acquire(id, 1, 1, &w.rec);
    if (acq) {
        lmk_serve_sess_free(&q);
        const char *m = acq_message(acq, &status);
        return send_error(c, status, NULL, "%s", m);
    }
    if (!session_exists(id)) { /* deleted while this request waited */
        release(w.rec, 1);
        lmk_serve_sess_free(&q);
        return send_error(c, 404, "session", "no session '%s'", id);
    }
    char dir[PATH_MAX];
    session_path(dir, sizeof dir, id);
    lmk_run *r = NULL;
    lmk_run_prefill_stats ps = {0};
    int rc = open_run(dir, &w, 0, &r, err, sizeof err);
    if (!rc)
        rc = lmk_run_prefill(r, NULL, NULL, 0, q.text, q.text_len, &ps, err, sizeof err);
    if (!rc)
        rc = lmk_run_save(r, err, sizeof err);
    lmk_run_close(r);
    int64_t after = rc ? -1 : session_tokens(dir); /* where this append left the session */
    release(w.rec, 1);
    lmk_serve_sess_free(&q);
    if (rc)
        return send_error(c, rc == EINTR ? 503 : status_of(rc), NULL, "%s", err);
    json_t *o = session_json(id);
    if (o) {
        json_object_set_new(o, "appended_tokens", json_integer(ps.tokens));
        json_object_set_new(o, "tokens", after >= 0 ? json_integer(after) : json_null());
    }
    return send_json(c, 200, o);
}

static int copy_file(const char *src, const char *dst)
{
    FILE *a = fopen(src, "rb");
    if (!a)
        return errno == ENOENT ? 0 : errno;
    FILE *b = fopen(dst, "wb");
    if (!b) {
        int e = errno;
        fclose(a);
        return e;
    }
    char buf[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n)
            rc = EIO;
    if (ferror(a))
        rc = EIO;
    fclose(a);
    if (fclose(b) && !rc)
        rc = errno;
    return rc;
}

static enum MHD_Result handle_fork(struct MHD_Connection *c, const char *id, const char *body,
                                   size_t len)
{
    char err[1024], param[64] = "";
    lmk_serve_sess_req q;
    int status = lmk_serve_parse_sess(body, len, LMK_SERVE_SESS_FORK, &q, err, sizeof err,
                                      param, sizeof param);
    if (status)
        return send_error(c, status, param, "%s", err);
    if (!q.id[0])
        new_id(q.id, sizeof q.id, "s");
    if (session_exists(q.id))
        return send_error(c, 409, "id", "session '%s' exists", q.id);
    if (S.max_sessions > 0 && count_sessions() >= S.max_sessions)
        return send_error(c, 409, NULL, "the server holds its maximum of %d sessions "
                          "(--max-sessions)", S.max_sessions);
    sess_rec *src = NULL, *dst = NULL;
    int acq = acquire(id, 1, 1, &src);
    if (acq) {
        const char *m = acq_message(acq, &status);
        return send_error(c, status, NULL, "%s", m);
    }
    /* the new id must be idle too; it does not count towards --parallel */
    pthread_mutex_lock(&S.mu);
    dst = rec_get(q.id);
    int dst_busy = !dst || dst->busy;
    if (!dst_busy)
        dst->busy = 1;
    pthread_mutex_unlock(&S.mu);
    if (dst_busy) {
        release(src, 1);
        return send_error(c, 409, "id", "session '%s' is being created", q.id);
    }
    char sdir[PATH_MAX], ddir[PATH_MAX], a[PATH_MAX + 32], b[PATH_MAX + 32];
    session_path(sdir, sizeof sdir, id);
    session_path(ddir, sizeof ddir, q.id);
    lmk_session_opts so = lmk_session_opts_default();
    lmk_session *s = NULL;
    int rc = lmk_session_open(sdir, &so, &s, err, sizeof err);
    if (!rc && (rc = lmk_session_fork(s, ddir)) != 0)
        snprintf(err, sizeof err, "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    /* the run state and the conversation state (the files that exist) */
    static const char *const files[] = {"model-run.txt", "model-run.logits", "model-chat.txt"};
    for (int i = 0; !rc && i < 3; i++) {
        const char *f = files[i];
        snprintf(a, sizeof a, "%s/%s", sdir, f);
        snprintf(b, sizeof b, "%s/%s", ddir, f);
        if ((rc = copy_file(a, b)) != 0)
            snprintf(err, sizeof err, "%.900s: %s", b, strerror(rc));
    }
    if (rc)
        lmk_fs_rmtree(ddir);
    pthread_mutex_lock(&S.mu);
    dst->busy = 0;
    pthread_mutex_unlock(&S.mu);
    release(src, 1);
    if (rc)
        return send_error(c, status_of(rc), NULL, "%s", err);
    return send_json(c, 201, session_json(q.id));
}

static enum MHD_Result handle_delete(struct MHD_Connection *c, const char *id)
{
    sess_rec *rec;
    int status, acq = acquire(id, 0, 0, &rec);
    if (acq) {
        const char *m = acq_message(acq, &status);
        return send_error(c, status, NULL, "%s", m);
    }
    char dir[PATH_MAX];
    session_path(dir, sizeof dir, id);
    int rc = lmk_fs_rmtree(dir);
    pthread_mutex_lock(&S.mu);
    rec->pf_state = 0;
    pthread_mutex_unlock(&S.mu);
    release(rec, 0);
    if (rc)
        return send_error(c, 500, NULL, "removing session '%s': %s", id, strerror(rc));
    return send_json(c, 200, json_pack("{s:s, s:s, s:b}", "id", id, "object", "session.deleted",
                                       "deleted", 1));
}

/* ---- routing ---- */

typedef struct req {
    char *body;
    size_t len, cap, limit;
    int too_large;
} req;

static int is_doc_route(const char *method, const char *url)
{
    if (strcmp(method, "POST"))
        return 0;
    size_t n = strlen(url);
    return !strcmp(url, "/v1/sessions") ||
           (!strncmp(url, "/v1/sessions/", 13) && n > 7 && !strcmp(url + n - 7, "/append"));
}

static enum MHD_Result route(struct MHD_Connection *c, const char *method, const char *url,
                             const char *body, size_t len)
{
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"),
        del = !strcmp(method, "DELETE");
    if (!strcmp(url, "/v1/models")) {
        if (!get)
            return send_error(c, 405, NULL, "use GET on %s", url);
        return send_json(c, 200, json_pack("{s:s, s:[{s:s, s:s, s:i, s:s}]}", "object", "list",
                                           "data", "id", S.model_name, "object", "model",
                                           "created", 0, "owned_by", "landmark"));
    }
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (!post)
            return send_error(c, 405, NULL, "use POST on %s", url);
        return handle_gen(c, body, len, url[4] == 'c' && url[5] == 'h');
    }
    if (!strcmp(url, "/v1/sessions")) {
        if (get)
            return handle_list(c);
        if (post)
            return handle_create(c, body, len);
        return send_error(c, 405, NULL, "use GET or POST on %s", url);
    }
    if (!strncmp(url, "/v1/sessions/", 13)) {
        char id[LMK_SERVE_ID_MAX + 2];
        const char *p = url + 13, *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        const char *action = slash ? slash + 1 : "";
        if (n == 0 || n > LMK_SERVE_ID_MAX)
            return send_error(c, 400, "id", "invalid session id");
        memcpy(id, p, n);
        id[n] = 0;
        if (!lmk_serve_id_valid(id))
            return send_error(c, 400, "id", "invalid session id (1 to %d characters of A-Z a-z "
                              "0-9 _ -, not starting with '-')", LMK_SERVE_ID_MAX);
        if (strcmp(action, "") && strcmp(action, "append") && strcmp(action, "fork"))
            return send_error(c, 404, NULL, "no such endpoint: %s", url);
        int known;
        pthread_mutex_lock(&S.mu);
        sess_rec *rec = NULL;
        for (sess_rec *r = S.recs; r; r = r->next)
            if (!strcmp(r->id, id))
                rec = r;
        known = rec && rec->pf_state != 0; /* being created from a document */
        pthread_mutex_unlock(&S.mu);
        if (!known && !session_exists(id))
            return send_error(c, 404, "session", "no session '%s'", id);
        if (!*action) {
            if (get)
                return send_json(c, 200, session_json(id));
            if (del)
                return handle_delete(c, id);
            return send_error(c, 405, NULL, "use GET or DELETE on %s", url);
        }
        if (!post)
            return send_error(c, 405, NULL, "use POST on %s", url);
        return action[0] == 'a' ? handle_append(c, id, body, len)
                                : handle_fork(c, id, body, len);
    }
    return send_error(c, 404, NULL, "no such endpoint: %s %s", method, url);
}

static int authorized(struct MHD_Connection *c)
{
    if (!S.api_key)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7))
        return 0;
    /* compared in constant time */
    const char *k = h + 7;
    size_t a = strlen(k), b = strlen(S.api_key);
    unsigned diff = (unsigned)(a != b);
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)S.api_key[i] ^ (unsigned char)(i < a ? k[i] : 0);
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls, (void)version;
    req *q = *con_cls;
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        q->limit = (size_t)(is_doc_route(method, url) ? S.max_doc : S.max_body);
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!q->too_large && q->len + *upload_size > q->limit)
            q->too_large = 1;
        if (!q->too_large && buf_add(&q->body, &q->len, &q->cap, upload, *upload_size))
            q->too_large = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!authorized(c))
        return send_error(c, 401, NULL, S.api_key && MHD_lookup_connection_value(
                                                  c, MHD_HEADER_KIND, "Authorization")
                                            ? "invalid API key"
                                            : "missing API key (Authorization: Bearer KEY)");
    if (q->too_large)
        return send_error(c, 413, NULL, "the request body is over the limit of %zu bytes",
                          q->limit);
    return route(c, method, url, q->body, q->len);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    req *q = *con_cls;
    if (q) {
        free(q->body);
        free(q);
    }
    *con_cls = NULL;
}

/* ---- the command ---- */

int lmk_cmd_serve(int argc, char **argv)
{
    lmk_model_cli c;
    lmk_model_cli_init(&c, "serve");
    const char *host = "127.0.0.1", *sessions = NULL, *api_key = NULL, *chat_template = NULL;
    int port = 8080, parallel = 2, queue = 16, max_sessions = 1000;
    long long max_body = 1 << 20, max_doc = 64 << 20, max_prompt = 32768, max_tokens = 4096;
    const lmk_opt opts[] = {
        {"--sessions", 0, LMK_OPT_STR, &sessions, 0, 0, NULL, NULL, NULL, "DIR",
         "the directory of the sessions (DIR/ID; created when missing)"},
        {"--host", 0, LMK_OPT_STR, &host, 0, 0, NULL, NULL, NULL, "ADDR",
         "address to listen on (default 127.0.0.1: this machine only)"},
        {"--port", 0, LMK_OPT_INT, &port, 0, 65535, NULL, NULL, NULL, "PORT",
         "TCP port (default 8080; 0: any free one, printed)"},
        {"--api-key", 0, LMK_OPT_STR, &api_key, 0, 0, NULL, NULL, NULL, "KEY",
         "require 'Authorization: Bearer KEY' on every request"},
        {"--parallel", 0, LMK_OPT_INT, &parallel, 1, 1024, NULL, NULL, NULL, "N",
         "requests run at once, each on its own session (default 2)"},
        {"--queue", 0, LMK_OPT_INT, &queue, 0, 100000, NULL, NULL, NULL, "N",
         "requests waiting for a session or a place; more get 503 (default 16)"},
        {"--max-sessions", 0, LMK_OPT_INT, &max_sessions, 0, 1000000, NULL, NULL, NULL, "N",
         "sessions the directory may hold (default 1000; 0: no limit)"},
        {"--max-prompt-tokens", 0, LMK_OPT_COUNT, &max_prompt, 1, 1LL << 40, NULL, NULL, NULL,
         "N", "longest prompt of a completion request (default 32k)"},
        {"--max-tokens", 0, LMK_OPT_COUNT, &max_tokens, 1, 1LL << 30, NULL, NULL, NULL, "N",
         "largest max_tokens a request may ask for (default 4k)"},
        {"--max-body", 0, LMK_OPT_COUNT, &max_body, 1024, 1LL << 34, NULL, NULL, NULL, "BYTES",
         "largest request body (default 1m)"},
        {"--max-document", 0, LMK_OPT_COUNT, &max_doc, 1024, 1LL << 36, NULL, NULL, NULL,
         "BYTES", "largest body of a session upload or append (default 64m)"},
        {"--template", 0, LMK_OPT_STR, &chat_template, 0, 0, NULL, NULL, NULL, "NAME",
         "chat format of /v1/chat/completions instead of the one matched\n"
         "from the model's template: llama3, chatml, mistral-v1,\n"
         "mistral-v3, mistral-v3-tekken, mistral-v7, phi3, or plain (a\n"
         "transcript: the default for a model without a known template)"},
        LMK_MODEL_CLI_OPTS(&c),
    };
    const lmk_opt_spec spec = {
        "serve",
        "landmark serve --model M.gguf --sessions DIR [--host 127.0.0.1] [--port 8080]\n"
        "                    [-t N] [--api-key KEY] [--max-sessions N] [--parallel N]\n"
        "                    [--queue N] [--template NAME]",
        "Serve the model over HTTP with an OpenAI-compatible API (GET /v1/models,\n"
        "POST /v1/completions, POST /v1/chat/completions) whose requests may continue a\n"
        "persistent session (\"session\": ID; \"persist\": false answers without changing\n"
        "it), and the sessions themselves (/v1/sessions: create from a document, list,\n"
        "get, append, fork, delete). Chat messages are rendered in the model's chat\n"
        "format. The model is loaded once; requests waiting for one session run in the\n"
        "order they arrived. SIGTERM or Ctrl-C stops the running generations, syncs the\n"
        "sessions and exits.\n",
        opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0};
    int prc = lmk_opt_parse(&spec, argc, argv, NULL, NULL);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!c.model || !sessions) {
        lmk_cli_error("serve", "--model M.gguf and --sessions DIR are required (see --help)");
        return 2;
    }
    if (chat_template && strcmp(chat_template, "plain") &&
        lmk_chat_format_from_name(chat_template) < 0) {
        lmk_cli_error("serve", "--template %s: not a chat format (%s, or plain)", chat_template,
                      lmk_chat_format_list());
        return 2;
    }
    lmk_model_cli_finish(&c);
    if (c.t.piece > 1024)
        c.t.piece = 1024; /* progress and interrupt checks of uploads */
    if (mkdir(sessions, 0755) && errno != EEXIST) {
        lmk_cli_error("serve", "%s: %s", sessions, strerror(errno));
        return 1;
    }
    /* the model, loaded once: every request runs with it */
    char err[1024];
    lmk_model *m = NULL;
    if (lmk_task_model_open(c.model, &c.t, &m, err, sizeof err)) {
        lmk_cli_error("serve", "%s", err);
        return 1;
    }
    /* the chat format: --template, else the model's tokenizer.chat_template, else (none, or
     * one not known here) a plain transcript */
    S.chat_format = -1;
    const char *why = "--template plain";
    if (chat_template && strcmp(chat_template, "plain")) {
        S.chat_format = lmk_chat_format_from_name(chat_template);
        why = "--template";
    } else if (!chat_template) {
        const char *tmpl;
        uint64_t tn;
        char *z = NULL;
        why = "the model has no chat template";
        if (lmk_gguf_get_str(lmk_model_gguf(m), "tokenizer.chat_template", &tmpl, &tn) == 0 &&
            (z = malloc(tn + 1))) {
            memcpy(z, tmpl, tn);
            z[tn] = 0;
            S.chat_format = lmk_chat_detect(z);
            why = S.chat_format >= 0 ? "the model's chat template"
                                     : "the model's chat template is not a known format";
            free(z);
        }
    }
    if (S.chat_format >= 0)
        fprintf(stderr, "landmark serve: chat format %s (%s)\n",
                lmk_chat_format_name(S.chat_format), why);
    else
        fprintf(stderr, "landmark serve: chat messages as a plain transcript (%s)\n", why);
    S.model = m;
    /* temporary sessions of requests a kill interrupted */
    DIR *dd = opendir(sessions);
    for (struct dirent *e; dd && (e = readdir(dd));) {
        char p[PATH_MAX];
        if (!strncmp(e->d_name, ".tmp-", 5) &&
            snprintf(p, sizeof p, "%s/%s", sessions, e->d_name) < (int)sizeof p)
            lmk_fs_rmtree(p);
    }
    if (dd)
        closedir(dd);
    const char *base = strrchr(c.model, '/');
    snprintf(S.model_name, sizeof S.model_name, "%s", base ? base + 1 : c.model);
    size_t nl = strlen(S.model_name);
    if (nl > 5 && !strcmp(S.model_name + nl - 5, ".gguf"))
        S.model_name[nl - 5] = 0;
    S.model_path = c.model;
    S.dir = sessions;
    S.api_key = api_key && *api_key ? api_key : NULL;
    S.t = c.t;
    S.t.progress = NULL;
    S.max_body = max_body;
    S.max_doc = max_doc;
    S.max_prompt = max_prompt;
    S.max_tokens = max_tokens;
    S.parallel = parallel;
    S.queue_max = queue;
    S.max_sessions = max_sessions;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        lmk_cli_error("serve", "--host %s: not an IPv4 address", host);
        lmk_model_close(S.model);
        return 2;
    }
    /* signals go to this thread only (sigwait below); every other thread blocks them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)(parallel + queue + 64),
        MHD_OPTION_END);
    if (!d) {
        lmk_cli_error("serve", "cannot listen on %s:%d: %s", host, port, strerror(errno));
        lmk_model_close(S.model);
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "landmark serve: listening on http://%s:%u/ (model %s, sessions in %s)\n",
            host, di ? di->port : (unsigned)port, S.model_name, sessions);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "landmark serve: %s: stopping the running requests\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    pthread_mutex_lock(&S.mu);
    S.stopping = 1;
    for (sess_rec *r = S.recs; r; r = r->next)
        if (r->flag)
            *r->flag = 1;
    pthread_cond_broadcast(&S.cv);
    /* each request closes (and so syncs) its session when it ends */
    while (S.running > 0)
        pthread_cond_wait(&S.cv, &S.mu);
    pthread_mutex_unlock(&S.mu);
    MHD_stop_daemon(d);
    lmk_model_close(S.model); /* every run on it has ended */
    S.model = NULL;
    while (S.recs) {
        sess_rec *r = S.recs;
        S.recs = r->next;
        free(r);
    }
    fprintf(stderr, "landmark serve: stopped\n");
    return 0;
}
