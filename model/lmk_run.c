/* A persistent session run with a model: the run state kept beside the session
 * (model-run.txt, model-run.logits), prefill that resumes a pending document, generation. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_task_impl.h"


/* ---- the run state beside the session ---- */

typedef struct {
    char model[PATH_MAX];
    char pending[PATH_MAX]; /* a document whose prefill has not completed */
    long long pending_base; /* regular tokens in the session before it */
    long long rewind;       /* -1, or the positions the session held when a run began
                             * its prompt or generation: more is an unfinished run's */
    int pos, mode, top_k, recent, sink, local, next_from, mem_freq, lm_token, block_len;
    long long fixed_distance;
    int have;
} run_state;

struct lmk_run {
    char dir[PATH_MAX - 64]; /* room for the names of the files beside the session */
    char model_path[PATH_MAX];
    lmk_task_opts o;    /* resolved */
    lmk_model *m;
    lmk_session *s;
    lmk_ctx *c;
    run_state st;
    int existed;        /* the session was there before this run */
    float *logits;      /* (n_vocab): the prediction after the last token */
    int have_logits;
    lmk_run_frame frame; /* chat framing of the next prefill (lmk_run_set_frame) */
    /* lmk_run_prefill_segments: the prompt as segments (borrowed for that call) */
    const lmk_tok_segment *pseg;
    size_t n_pseg;
    int own_model;      /* m was opened by this run (else borrowed: lmk_run_open_model) */
    int rewind_marked;  /* this run recorded where to cut back to (mark_rewind) */
    /* lmk_run_begin: a session transaction, and the prediction lmk_run_abort restores */
    int in_txn, mark_have_logits;
    float *mark_logits; /* (n_vocab) */
};

static int state_read(const char *dir, run_state *st)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model-run.txt", dir);
    memset(st, 0, sizeof *st);
    st->rewind = -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = 0;
        char *v = eq + 1;
        v[strcspn(v, "\n")] = 0;
        long long n = strtoll(v, NULL, 10);
        if (!strcmp(line, "model"))
            snprintf(st->model, sizeof st->model, "%s", v);
        else if (!strcmp(line, "pending_file"))
            snprintf(st->pending, sizeof st->pending, "%s", v);
        else if (!strcmp(line, "pending_base"))
            st->pending_base = n;
        else if (!strcmp(line, "rewind"))
            st->rewind = n;
#define F(k, field) else if (!strcmp(line, k)) st->field = (int)n;
        F("pos", pos) F("mode", mode) F("top_k", top_k) F("recent", recent) F("sink", sink)
        F("local", local) F("next_from", next_from) F("mem_freq", mem_freq)
        F("landmark_token", lm_token) F("block_len", block_len)
#undef F
        else if (!strcmp(line, "fixed_distance")) st->fixed_distance = n;
    }
    fclose(f);
    st->have = 1;
    return 0;
}

/* pending: a document being prefilled (NULL when none) and the session's regular token
 * count before it, so an interrupted prefill can resume where the session stops; rewind
 * (-1: none): the positions to cut the session back to should this run not finish (its
 * prompt and generation are then redone by a rerun). */
static int state_write(const lmk_run *r, const float *logits, const char *pending,
                       int64_t pending_base, int64_t rewind)
{
    char path[PATH_MAX], tmp[PATH_MAX], abs[PATH_MAX];
    const lmk_task_opts *o = &r->o;
    if (!realpath(r->model_path, abs))
        snprintf(abs, sizeof abs, "%s", r->model_path);
    const lmk_model_info *mi = lmk_model_get_info(r->m);
    snprintf(tmp, sizeof tmp, "%s/model-run.txt.tmp", r->dir);
    snprintf(path, sizeof path, "%s/model-run.txt", r->dir);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return errno;
    fprintf(f, "# landmark run: the model and settings this session is run with\n"
               "model=%s\ndigest=%s\npos=%d\nmode=%d\ntop_k=%d\nrecent=%d\nsink=%d\nlocal=%d\n"
               "fixed_distance=%lld\nnext_from=%d\nmem_freq=%d\nlandmark_token=%d\n"
               "block_len=%d\n",
            abs, mi->digest, o->pos, o->mode, o->top_k, o->n_recent, o->n_sink, o->n_local,
            (long long)o->fixed_distance, o->next_from, mi->mem_freq, mi->landmark_token,
            o->block_len);
    if (pending)
        fprintf(f, "pending_file=%s\npending_base=%lld\n", pending, (long long)pending_base);
    if (rewind >= 0)
        fprintf(f, "rewind=%lld\n", (long long)rewind);
    int rc = fclose(f) ? errno : 0;
    if (!rc && rename(tmp, path))
        rc = errno;
    if (rc || !logits)
        return rc;
    /* the prediction after the last token: (u64 tokens, u32 n_vocab, f32 logits) */
    snprintf(tmp, sizeof tmp, "%s/model-run.logits.tmp", r->dir);
    snprintf(path, sizeof path, "%s/model-run.logits", r->dir);
    f = fopen(tmp, "wb");
    if (!f)
        return errno;
    uint64_t t = (uint64_t)lmk_ctx_n_past(r->c);
    uint32_t nv = (uint32_t)mi->n_vocab;
    int ok = fwrite(&t, 8, 1, f) == 1 && fwrite(&nv, 4, 1, f) == 1 &&
             fwrite(logits, 4, nv, f) == nv;
    rc = fclose(f) || !ok ? (errno ? errno : EIO) : 0;
    if (!rc && rename(tmp, path))
        rc = errno;
    return rc;
}

static int logits_read(const char *dir, int64_t tokens, int nv, float *logits)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model-run.logits", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint64_t t;
    uint32_t n;
    int ok = fread(&t, 8, 1, f) == 1 && fread(&n, 4, 1, f) == 1 && n == (uint32_t)nv &&
             t == (uint64_t)tokens && fread(logits, 4, n, f) == n;
    fclose(f);
    return ok ? 0 : -1;
}

static int session_exists(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    return access(path, F_OK) == 0;
}

LMK_API int lmk_run_probe(const char *dir, int *exists, char *model, size_t cap)
{
    run_state st;
    *exists = session_exists(dir);
    state_read(dir, &st);
    if (model && cap)
        snprintf(model, cap, "%s", *exists && st.have ? st.model : "");
    return LMK_OK;
}

/* ---- open ---- */

/* Settings remembered with the session fill what the caller left AUTO. */
static void settings_from_state(lmk_task_opts *o, const run_state *st)
{
    if (o->mem_freq < 0 && st->mem_freq >= 0)
        o->mem_freq = st->mem_freq;
#define KEEP(field, value)              \
    if (o->field == LMK_TASK_AUTO)     \
        o->field = (value);
    KEEP(pos, st->pos)
    KEEP(mode, st->mode)
    KEEP(top_k, st->top_k)
    KEEP(n_recent, st->recent)
    KEEP(n_sink, st->sink)
    KEEP(n_local, st->local)
    KEEP(fixed_distance, st->fixed_distance)
    KEEP(next_from, st->next_from)
#undef KEEP
    if (st->block_len > 0)
        o->block_len = st->block_len;
}

static void session_log(void *ud, const char *msg)
{
    lmk_task__log(ud, "%s", msg);
}

/* The digest sessions were fingerprinted with before lmk-model/2: FNV-1a over the GGUF
 * header and three 4 KiB samples (start, middle, end) of each tensor's data. */
static void legacy_digest(const lmk_model *m, char out[17])
{
    lmk_gguf *g = lmk_model_gguf((lmk_model *)m);
    size_t hs;
    const uint8_t *h = lmk_gguf_header(g, &hs);
    uint64_t d = 1469598103934665603ull;
#define MIX(p, n)                                       \
    for (size_t k = 0; k < (size_t)(n); k++)            \
        d = (d ^ (p)[k]) * 1099511628211ull;
    MIX(h, hs)
    for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
        uint64_t n = t->n_bytes, s = n < 4096 ? n : 4096;
        MIX(t->data, s)
        MIX(t->data + (n - s) / 2, s)
        MIX(t->data + (n - s), s)
    }
#undef MIX
    snprintf(out, 17, "%016llx", (unsigned long long)d);
}

/* fp ("lmk-model/2 gguf=DIGEST rest") in the lmk-model/1 form, with the sampled digest. */
static void legacy_fingerprint(const lmk_model *m, const char *fp, char *out, size_t cap)
{
    const char *rest = strchr(fp, ' ');
    rest = rest ? strchr(rest + 1, ' ') : NULL;
    char d[17];
    legacy_digest(m, d);
    snprintf(out, cap, "lmk-model/1 gguf=%s%s", d, rest ? rest : "");
}

/* Open (or create) the session of r->dir; a clear error when the session was written by
 * another model or with another key frame. A session fingerprinted in the lmk-model/1
 * form (samples of the model file) is accepted when that form matches this model file:
 * it keeps working, with the weaker check it was written with. */
static int session_open(lmk_run *r, char *err, size_t cap)
{
    lmk_session_opts so;
    char fp[256], old[256];
    int create = !r->existed;
    lmk_model_session_opts(r->m, (lmk_pos_kind)r->o.pos, r->o.block_len, &so, fp);
    so.create = create;
    so.n_threads = r->o.n_threads;
    so.durability = r->o.durability;
    so.log = session_log;
    so.log_ud = &r->o;
    if (create) {
        so.index_spec = r->o.index_spec;
        so.dtype = r->o.dtype;
        lmk_task__repr(&r->o, r->m, &so);
    } else {
        so.block_len = 0;
        so.landmark = LMK_LANDMARK_AUTO;
    }
    int rc = lmk_session_open(r->dir, &so, &r->s, err, cap);
    if (rc != LMK_EMISMATCH)
        return rc;
    lmk_session_opts ro = lmk_session_opts_default();
    ro.read_only = 1;
    lmk_session *ses = NULL;
    lmk_session_info in;
    if (lmk_session_open(r->dir, &ro, &ses, NULL, 0) == 0 &&
        lmk_session_info_get(ses, &in) == 0) {
        legacy_fingerprint(r->m, fp, old, sizeof old);
        if (!strncmp(in.fingerprint, "lmk-model/1 ", 12) && !strcmp(in.fingerprint, old)) {
            lmk_session_close(ses);
            so.fingerprint = old;
            rc = lmk_session_open(r->dir, &so, &r->s, err, cap);
            if (!rc)
                lmk_task__log(&r->o, "session %s has an lmk-model/1 fingerprint (samples of "
                              "the model file): accepted for this file; re-create the "
                              "session for the whole-file check", r->dir);
            return rc;
        }
        lmk_model__err(err, cap, rc,
                       "session %s was not written by this model with these settings "
                       "(session: '%s'; now: '%s')",
                       r->dir, in.fingerprint, fp);
    }
    lmk_session_close(ses);
    return rc;
}

/* A run killed during its prompt or generation left more than the rewind mark: cut the
 * session back to it (the prediction saved there is valid again), so that the rerun redoes
 * that part as an uninterrupted run would. */
static int rewind_unfinished(lmk_run *r, char *err, size_t cap)
{
    lmk_session_info in;
    if (!r->existed || !r->st.have || r->st.rewind < 0)
        return LMK_OK;
    int rc = lmk_session_info_get(r->s, &in);
    if (!rc && in.tokens > r->st.rewind) {
        lmk_task__log(&r->o, "discarding the %lld positions of an unfinished run",
                      (long long)(in.tokens - r->st.rewind));
        rc = lmk_session_truncate(r->s, r->st.rewind);
    }
    return rc ? lmk_model__err(err, cap, rc, "%s", lmk_session_errmsg(r->s)) : LMK_OK;
}

/* shared: a model already loaded (NULL: open model_path's) */
static int run_open(const char *dir, const char *model_path, lmk_model *shared,
                    const lmk_task_opts *o, lmk_run **out, char *err, size_t cap)
{
    *out = NULL;
    lmk_run *r = calloc(1, sizeof *r);
    if (!r)
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
    r->o = *o;
    if (strlen(dir) >= sizeof r->dir) {
        free(r);
        return lmk_model__err(err, cap, ENAMETOOLONG, "%s: %s", dir, strerror(ENAMETOOLONG));
    }
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    r->existed = session_exists(dir);
    state_read(dir, &r->st);
    if (r->existed && r->st.have)
        settings_from_state(&r->o, &r->st);
    snprintf(r->model_path, sizeof r->model_path, "%s", model_path ? model_path : r->st.model);
    int rc = LMK_OK;
    if (shared) {
        /* the session's landmark settings must be the loaded model's; else a model of
         * its own, as lmk_run_open */
        const lmk_model_info *si = lmk_model_get_info(shared);
        int mf = r->o.mem_freq >= 0 ? r->o.mem_freq : si->mem_freq;
        if (mf == si->mem_freq &&
            (mf == 0 || r->o.landmark_token < 0 || r->o.landmark_token == si->landmark_token))
            r->m = shared;
    }
    if (!r->m) {
        if ((rc = lmk_task_model_open(r->model_path, &r->o, &r->m, err, cap)) != 0)
            goto fail;
        r->own_model = 1;
    }
    lmk_task_resolve(r->m, &r->o);
    const lmk_model_info *mi = lmk_model_get_info(r->m);
    if (!(r->logits = malloc((size_t)mi->n_vocab * sizeof(float)))) {
        rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = session_open(r, err, cap)) != 0)
        goto fail;
    if ((rc = rewind_unfinished(r, err, cap)) != 0)
        goto fail;
    if ((rc = lmk_task__ctx_open(&r->o, r->m, r->s, &r->c, err, cap)) != 0)
        goto fail;
    int64_t start = lmk_ctx_n_past(r->c);
    r->have_logits = start > 0 && logits_read(dir, start, mi->n_vocab, r->logits) == 0;
    *out = r;
    return LMK_OK;
fail:
    lmk_run_close(r);
    return rc;
}

LMK_API int lmk_run_open(const char *dir, const char *model_path, const lmk_task_opts *o,
                         lmk_run **out, char *err, size_t cap)
{
    return run_open(dir, model_path, NULL, o, out, err, cap);
}

LMK_API int lmk_run_open_model(const char *dir, lmk_model *m, const char *model_path,
                               const lmk_task_opts *o, lmk_run **out, char *err, size_t cap)
{
    if (!m || !model_path) {
        *out = NULL;
        return lmk_model__err(err, cap, LMK_EINVAL, "lmk_run_open_model: no model");
    }
    return run_open(dir, model_path, m, o, out, err, cap);
}

LMK_API void lmk_run_close(lmk_run *r)
{
    if (!r)
        return;
    lmk_ctx_free(r->c);
    if (r->s && r->in_txn) /* an answer not kept */
        lmk_session_abort(r->s);
    /* durability none: sync once here */
    if (r->s && r->o.durability == LMK_DURABLE_NONE && lmk_session_sync(r->s))
        lmk_task__log(&r->o, "syncing the session: %s", lmk_session_errmsg(r->s));
    lmk_session_close(r->s);
    if (r->own_model)
        lmk_model_close(r->m);
    free(r->logits);
    free(r->mark_logits);
    free(r);
}

LMK_API const lmk_task_opts *lmk_run_settings(const lmk_run *r) { return &r->o; }
LMK_API lmk_model *lmk_run_model(const lmk_run *r) { return r->m; }
LMK_API int64_t lmk_run_n_tokens(const lmk_run *r) { return lmk_ctx_n_regular(r->c); }

/* ---- prefill ---- */

/* Prepend the BOS token to *ids (n). */
static int prepend_bos(int32_t **ids, int64_t *n, int bos)
{
    int32_t *b = malloc((size_t)(*n + 1) * sizeof *b);
    if (!b)
        return ENOMEM;
    b[0] = bos;
    memcpy(b + 1, *ids, (size_t)*n * sizeof *b);
    free(*ids);
    *ids = b;
    (*n)++;
    return LMK_OK;
}

LMK_API void lmk_run_set_frame(lmk_run *r, const lmk_run_frame *f)
{
    if (f)
        r->frame = *f;
    else
        memset(&r->frame, 0, sizeof r->frame);
}

static int tokenize_segments(lmk_run *r, const lmk_tok_segment *seg, size_t n_seg, int first,
                             int32_t **ids, int64_t *n, char *err, size_t cap)
{
    size_t total = 0, got = 0;
    for (size_t i = 0; i < n_seg; i++)
        total += seg[i].len;
    size_t max = lmk_tokenizer_max_tokens(total);
    *ids = malloc((max ? max : 1) * sizeof **ids);
    if (!*ids)
        return lmk_model__err(err, cap, ENOMEM, "out of memory tokenizing %zu bytes", total);
    int rc = lmk_tokenizer_tokenize_segments(lmk_model_tokenizer(r->m), seg, n_seg,
                                             first ? 0 : LMK_TOK_CONTINUE, *ids, max, &got);
    if (rc) {
        free(*ids);
        *ids = NULL;
        return lmk_model__err(err, cap, rc, "tokenizing: %s", lmk_strerror(rc));
    }
    *n = (int64_t)got;
    return LMK_OK;
}

/* text between its frame: head and tail with control tokens recognized, sep and the text
 * as plain text (lmk_task_tokenize when there is no frame). */
static int tokenize_framed(lmk_run *r, const char *head, const char *sep, const char *text,
                           size_t len, const char *tail, int first, int32_t **ids,
                           int64_t *n, char *err, size_t cap)
{
    if (!head && !sep && !tail)
        return lmk_task_tokenize(r->m, text, len, first, ids, n, err, cap);
    lmk_tok_segment seg[4] = {
        {head ? head : "", head ? strlen(head) : 0, 1},
        {sep ? sep : "", sep ? strlen(sep) : 0, 0},
        {text ? text : "", text ? len : 0, 0},
        {tail ? tail : "", tail ? strlen(tail) : 0, 1}};
    return tokenize_segments(r, seg, 4, first, ids, n, err, cap);
}

/* Record the session's length now as the rewind mark, with the prediction there. */
static int mark_rewind(lmk_run *r, const char *pending, int64_t pending_base)
{
    if (r->in_txn) /* lmk_run_begin: a kill leaves the session as it was anyway */
        return LMK_OK;
    if (!pending && r->st.pending[0]) { /* keep a pending document of an earlier run */
        pending = r->st.pending;
        pending_base = r->st.pending_base;
    }
    int rc = state_write(r, r->have_logits ? r->logits : NULL, pending, pending_base,
                         lmk_ctx_n_past(r->c));
    if (!rc)
        r->rewind_marked = 1;
    return rc;
}

/* A document's tokens on their way to the session: dropped while they are already in it
 * (a resumed prefill), else fed in pieces that end at multiples of o->piece of the
 * document's own token index, the last one (at the end) with the prediction: the forward
 * steps of lmk_task__feed_at over the whole document, whatever the text pieces were. */
typedef struct {
    lmk_run *r;
    int32_t *buf;        /* (buf_cap <= piece) tokens waiting: document indices
                          * [start, idx) */
    int64_t piece, idx, start, skip, buf_cap;
    int bos;             /* BOS still to go before the first token */
    int fed;             /* a piece was fed */
    double t0;
} doc_feed;

static int doc_flush(doc_feed *f, int last, char *err, size_t cap)
{
    lmk_run *r = f->r;
    int64_t m = f->idx - f->start;
    if (m <= 0)
        return LMK_OK;
    if (lmk_task__interrupted(&r->o))
        return lmk_model__err(err, cap, EINTR, "interrupted after %lld document tokens",
                              (long long)(f->start - f->skip));
    if (!f->fed) {
        lmk_attend_opts a = lmk_task__attend(&r->o, r->o.prefill_chunkwise);
        lmk_ctx_set_attend(r->c, &a);
    }
    int rc = lmk_ctx_feed(r->c, f->buf, m, last ? r->logits : NULL, last);
    if (rc)
        return lmk_model__err(err, cap, rc, "%s", lmk_ctx_errmsg(r->c));
    f->fed = 1;
    f->start = f->idx;
    if (r->o.progress) /* the total is not known before the end */
        r->o.progress(r->o.ud, "prefill", f->idx - f->skip, last ? f->idx - f->skip : 0,
                      lmk_clock_s() - f->t0, last);
    return LMK_OK;
}

static int doc_push(doc_feed *f, const int32_t *ids, size_t n, char *err, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        if (f->bos) {
            f->bos = 0;
            int32_t b = lmk_model_get_info(f->r->m)->bos;
            int rc = doc_push(f, &b, 1, err, cap);
            if (rc)
                return rc;
        }
        if (f->idx < f->skip) { /* in the session already */
            f->idx++;
            f->start = f->idx;
            continue;
        }
        /* a full piece is fed once a token follows it (the last one takes the logits) */
        if (f->idx > f->start && f->idx % f->piece == 0) {
            int rc = doc_flush(f, 0, err, cap);
            if (rc)
                return rc;
        }
        if (f->idx - f->start == f->buf_cap) { /* grown as needed: --piece may be huge */
            int64_t nc = f->buf_cap * 2 < f->piece ? f->buf_cap * 2 : f->piece;
            int32_t *nb = realloc(f->buf, (size_t)nc * sizeof *nb);
            if (!nb)
                return lmk_model__err(err, cap, ENOMEM, "out of memory");
            f->buf = nb;
            f->buf_cap = nc;
        }
        f->buf[f->idx - f->start] = ids[i];
        f->idx++;
    }
    return LMK_OK;
}

/* The document from read(): tokenized in bounded pieces (lmk_tokenizer_stream_*), fed
 * through f. *nd: its tokens, BOS included. */
static int doc_stream(lmk_run *r, doc_feed *f, int first, lmk_task_read_fn read, void *ud,
                      int64_t *nd, char *err, size_t cap)
{
    const char *head = r->frame.doc_head;
    lmk_tokenizer_stream *ts = NULL;
    size_t rcap = 1 << 16;
    char *rbuf = malloc(rcap);
    int rc = rbuf ? lmk_tokenizer_stream_open(lmk_model_tokenizer(r->m),
                                              first ? 0 : LMK_TOK_CONTINUE, head,
                                              head ? strlen(head) : 0, r->o.text_window, &ts)
                  : ENOMEM;
    if (rc) {
        free(rbuf);
        return lmk_model__err(err, cap, rc, "out of memory");
    }
    const int32_t *ids;
    size_t n;
    for (;;) {
        size_t got = 0;
        if ((rc = read(ud, rbuf, rcap, &got)) != 0) {
            if (rc == EINTR)
                rc = lmk_model__err(err, cap, rc, "interrupted after %lld document tokens",
                                    (long long)(f->idx > f->skip ? f->idx - f->skip : 0));
            else
                rc = lmk_model__err(err, cap, rc, "reading the document: %s", strerror(rc));
            break;
        }
        if (got == 0)
            break;
        for (size_t at = 0; at < got && !rc;) {
            size_t used;
            rc = lmk_tokenizer_stream_write(ts, rbuf + at, got - at, &used, &ids, &n);
            if (rc)
                rc = lmk_model__err(err, cap, rc, "tokenizing: %s", lmk_strerror(rc));
            else
                rc = doc_push(f, ids, n, err, cap);
            at += used;
        }
        if (rc)
            break;
    }
    if (!rc && (rc = lmk_tokenizer_stream_finish(ts, &ids, &n)) != 0)
        rc = lmk_model__err(err, cap, rc, "tokenizing: %s", lmk_strerror(rc));
    if (!rc)
        rc = doc_push(f, ids, n, err, cap);
    if (!rc && lmk_tokenizer_stream_inexact(ts))
        lmk_task__log(&r->o, "the document has %zu stretches of %zu bytes with no safe place "
                      "to cut the text: tokenized in pieces there (see lmk_tokenizer.h)",
                      lmk_tokenizer_stream_inexact(ts),
                      r->o.text_window ? r->o.text_window : LMK_TOK_STREAM_WINDOW);
    lmk_tokenizer_stream_free(ts);
    free(rbuf);
    *nd = f->idx;
    return rc;
}

/* lmk_run_prefill's reader over a document in memory. */
typedef struct {
    const char *p;
    size_t left;
} mem_reader;

static int mem_read(void *ud, char *buf, size_t cap, size_t *got)
{
    mem_reader *m = ud;
    *got = m->left < cap ? m->left : cap;
    memcpy(buf, m->p, *got);
    m->p += *got;
    m->left -= *got;
    return 0;
}

LMK_API int lmk_run_prefill(lmk_run *r, const char *doc_id, const char *doc, size_t doc_len,
                            const char *prompt, size_t prompt_len, lmk_run_prefill_stats *st,
                            char *err, size_t cap)
{
    mem_reader m = {doc, doc_len};
    return lmk_run_prefill_read(r, doc_id, doc ? mem_read : NULL, &m, prompt, prompt_len, st,
                                err, cap);
}

LMK_API int lmk_run_prefill_read(lmk_run *r, const char *doc_id, lmk_task_read_fn read,
                                 void *read_ud, const char *prompt, size_t prompt_len,
                                 lmk_run_prefill_stats *st, char *err, size_t cap)
{
    int32_t *q = NULL;
    int64_t nd = 0, nq = 0, skip = 0, doc_base = lmk_ctx_n_regular(r->c);
    int want_bos = lmk_task_want_bos(r->m);
    doc_feed f;
    memset(&f, 0, sizeof f);
    memset(st, 0, sizeof st[0]);
    int rc = LMK_OK;
    double t0 = lmk_clock_s();
    int64_t p0 = lmk_ctx_n_past(r->c);
    if (read) {
        /* the same document after an interrupted prefill: continue where the session stops */
        if (r->existed && r->st.pending[0] && !strcmp(r->st.pending, doc_id) &&
            r->st.pending_base <= doc_base)
            doc_base = r->st.pending_base;
        skip = lmk_ctx_n_regular(r->c) - doc_base;
        if ((rc = state_write(r, NULL, doc_id, doc_base, -1)) != 0) {
            rc = lmk_model__err(err, cap, rc, "cannot write %s/model-run.txt: %s", r->dir,
                                strerror(rc));
            goto out;
        }
        if (skip > 0)
            lmk_task__log(&r->o, "resuming %s after the %lld tokens already in the session",
                          doc_id, (long long)skip);
        f.r = r;
        f.piece = r->o.piece > 0 ? r->o.piece : 8192;
        f.skip = skip;
        f.bos = doc_base == 0 && want_bos; /* the document starts with BOS */
        f.t0 = t0;
        f.buf_cap = f.piece < 4096 ? f.piece : 4096;
        if (!(f.buf = malloc((size_t)f.buf_cap * sizeof *f.buf))) {
            rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
            goto out;
        }
        rc = doc_stream(r, &f, doc_base == 0, read, read_ud, &nd, err, cap);
        if (!rc && skip > nd)
            rc = lmk_model__err(err, cap, LMK_EINVAL,
                                "the session holds more of %s than the file has "
                                "(%lld > %lld tokens): was the file changed?",
                                doc_id, (long long)skip, (long long)nd);
        if (!rc)
            rc = doc_flush(&f, 1, err, cap);
        if (rc)
            goto out; /* the pending record lets a rerun resume */
        if (f.fed)
            r->have_logits = 1;
        st->resumed = skip < nd ? skip : nd;
    }
    /* the document is in: what follows is redone by a rerun should this run not finish */
    if ((rc = mark_rewind(r, read ? doc_id : NULL, doc_base)) != 0) {
        rc = lmk_model__err(err, cap, rc, "cannot write %s/model-run.txt: %s", r->dir,
                            strerror(rc));
        goto out;
    }
    int fresh = read ? doc_base == 0 : lmk_ctx_n_past(r->c) == 0;
    if (r->pseg) {
        if ((rc = tokenize_segments(r, r->pseg, r->n_pseg, fresh && !nd, &q, &nq, err, cap)))
            goto out;
    } else if (prompt && (rc = tokenize_framed(r, r->frame.prompt_head, r->frame.prompt_sep,
                                               prompt, prompt_len, r->frame.prompt_tail,
                                               fresh && !nd, &q, &nq, err, cap))) {
        goto out;
    }
    if (fresh && want_bos && !nd && nq) /* no document: the prompt starts with BOS */
        if ((rc = prepend_bos(&q, &nq, lmk_model_get_info(r->m)->bos))) {
            rc = lmk_model__err(err, cap, rc, "out of memory");
            goto out;
        }
    if (nq) {
        /* the question decides the answer: per-token retrieval unless it is long */
        lmk_attend_opts a = lmk_task__attend(&r->o, r->o.prefill_chunkwise && nq > 512);
        lmk_ctx_set_attend(r->c, &a);
        rc = lmk_task__feed(&r->o, r->c, q, nq, r->logits, nq > 4096 ? "prompt" : NULL, err,
                            cap);
        if (rc)
            goto out; /* the rewind mark lets a rerun redo the prompt */
        r->have_logits = 1;
    }
    st->seconds = lmk_clock_s() - t0;
    st->tokens = (nd > skip ? nd - skip : 0) + nq;
    st->positions = lmk_ctx_n_past(r->c) - p0;
out:
    free(f.buf);
    free(q);
    memset(&r->frame, 0, sizeof r->frame);
    r->pseg = NULL;
    r->n_pseg = 0;
    return rc;
}

LMK_API int lmk_run_prefill_segments(lmk_run *r, const lmk_tok_segment *seg, size_t n_seg,
                                     lmk_run_prefill_stats *st, char *err, size_t cap)
{
    static const lmk_tok_segment none = {"", 0, 0};
    r->pseg = n_seg ? seg : &none;
    r->n_pseg = n_seg ? n_seg : 1;
    return lmk_run_prefill(r, NULL, NULL, 0, "", 0, st, err, cap);
}

/* ---- generation ---- */

LMK_API int lmk_run_generate(lmk_run *r, int64_t n, double temp, uint64_t seed,
                             lmk_task_token_fn on_token, void *ud, int64_t *generated,
                             double *seconds, char *err, size_t cap)
{
    const lmk_model_info *mi = lmk_model_get_info(r->m);
    *generated = 0;
    *seconds = 0;
    if (n > 0 && !r->have_logits)
        return lmk_model__err(err, cap, LMK_ESTATE,
                              "nothing to continue from: give --prompt (the "
                              "session has no saved prediction)");
    if (n > 0 && !r->rewind_marked) {
        int wrc = mark_rewind(r, NULL, 0);
        if (wrc)
            return lmk_model__err(err, cap, wrc, "cannot write %s/model-run.txt: %s", r->dir,
                                  strerror(wrc));
    }
    lmk_attend_opts a = lmk_task__attend(&r->o, 0);
    lmk_ctx_set_attend(r->c, &a);
    uint64_t rng = seed;
    double t0 = lmk_clock_s();
    int rc = LMK_OK;
    for (; *generated < n && !lmk_task__interrupted(&r->o); (*generated)++) {
        int tok = lmk_task_sample(r->logits, mi->n_vocab, temp, mi->landmark_token, &rng);
        if (tok < 0 || tok == mi->eos || lmk_tokenizer_is_eog(lmk_model_tokenizer(r->m), tok))
            break;
        char piece[256];
        int pl = lmk_tokenizer_piece(lmk_model_tokenizer(r->m), tok, piece, sizeof piece);
        if (pl > 0 && on_token)
            on_token(ud, piece, (size_t)(pl < (int)sizeof piece ? pl : (int)sizeof piece));
        int32_t t = tok;
        if ((rc = lmk_ctx_feed(r->c, &t, 1, r->logits, 1)) != 0) {
            lmk_model__err(err, cap, rc, "%s", lmk_ctx_errmsg(r->c));
            break;
        }
    }
    *seconds = lmk_clock_s() - t0;
    return rc;
}

LMK_API int lmk_run_save(lmk_run *r, char *err, size_t cap)
{
    int rc = state_write(r, r->logits, NULL, 0, -1);
    return rc ? lmk_model__err(err, cap, rc, "could not save the session's run state: %s",
                               strerror(rc))
              : LMK_OK;
}

/* ---- answering without changing the session ---- */

LMK_API int lmk_run_begin(lmk_run *r, char *err, size_t cap)
{
    const lmk_model_info *mi = lmk_model_get_info(r->m);
    if (r->in_txn)
        return lmk_model__err(err, cap, LMK_ESTATE, "a transaction is open already");
    if (!r->mark_logits && !(r->mark_logits = malloc((size_t)mi->n_vocab * sizeof(float))))
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
    int rc = lmk_session_begin(r->s);
    if (rc)
        return lmk_model__err(err, cap, rc, "%s", lmk_session_errmsg(r->s));
    memcpy(r->mark_logits, r->logits, (size_t)mi->n_vocab * sizeof(float));
    r->mark_have_logits = r->have_logits;
    r->in_txn = 1;
    return LMK_OK;
}

LMK_API int lmk_run_abort(lmk_run *r, char *err, size_t cap)
{
    const lmk_model_info *mi = lmk_model_get_info(r->m);
    if (!r->in_txn)
        return lmk_model__err(err, cap, LMK_ESTATE, "no transaction is open");
    r->in_txn = 0;
    /* the context caches the session's length: a new one over the restored session */
    lmk_ctx_free(r->c);
    r->c = NULL;
    int rc = lmk_session_abort(r->s);
    if (rc)
        return lmk_model__err(err, cap, rc, "undoing the answer: %s", lmk_session_errmsg(r->s));
    if ((rc = lmk_task__ctx_open(&r->o, r->m, r->s, &r->c, err, cap)) != 0)
        return rc;
    memcpy(r->logits, r->mark_logits, (size_t)mi->n_vocab * sizeof(float));
    r->have_logits = r->mark_have_logits;
    return LMK_OK;
}
