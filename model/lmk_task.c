/* What the tasks share: options and their model-dependent defaults, tokenizing, feeding in
 * interruptible pieces, sampling, temporary sessions. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_task_impl.h"

LMK_API lmk_task_opts lmk_task_opts_default(void)
{
    lmk_task_opts o;
    memset(&o, 0, sizeof o);
    o.n_threads = 1;
    o.mem_freq = -1;
    o.landmark_token = -1;
    o.top_k = LMK_TASK_AUTO;
    o.n_recent = o.n_sink = o.n_local = LMK_TASK_AUTO;
    o.pos = o.mode = o.next_from = LMK_TASK_AUTO;
    o.fixed_distance = LMK_TASK_AUTO;
    o.retrieve = LMK_RETRIEVE_QHEAD;
    o.prefill_chunkwise = 1;
    o.block_len = 64;
    o.chunk = 256;
    o.piece = 8192;
    o.index_spec = "Flat";
    o.dtype = LMK_DTYPE_F16;
    o.durability = LMK_DURABLE_NOMETA;
    return o;
}

void lmk_task__log(const lmk_task_opts *o, const char *fmt, ...)
{
    if (!o->log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(o->ud, msg);
}

int lmk_task__interrupted(const lmk_task_opts *o) { return o->interrupt && *o->interrupt; }

LMK_API int lmk_task_model_open(const char *path, const lmk_task_opts *o, lmk_model **out,
                                char *err, size_t cap)
{
    lmk_model_opts mo = lmk_model_opts_default();
    mo.n_threads = o->n_threads;
    mo.mem_freq = o->mem_freq;
    mo.landmark_token = o->landmark_token;
    return lmk_model_open(path, &mo, out, err, cap);
}

LMK_API void lmk_task_resolve(const lmk_model *m, lmk_task_opts *o)
{
    const lmk_model_info *mi = lmk_model_get_info(m);
    int lm = mi->mem_freq > 0;
    /* Ordinary models: every key indexed and 8 blocks, chosen by the pass-key and oracle
     * measurements of README "Retrieval for ordinary models"; the mean key (the previous
     * default) finds a pass key beyond the window in a quarter of the trials at best. */
    if (o->top_k == LMK_TASK_AUTO)
        o->top_k = lm ? 4 : 8;
    if (o->next_from == LMK_TASK_AUTO)
        o->next_from = LMK_NEXT_FROM_LANDMARK;
    if (o->pos == LMK_TASK_AUTO)
        o->pos = lm ? LMK_POS_SLOTS : LMK_POS_FIXED;
    if (o->mode == LMK_TASK_AUTO)
        o->mode = lm ? LMK_MODE_GROUPED : LMK_MODE_UNION;
    if (o->n_recent == LMK_TASK_AUTO)
        o->n_recent = lm ? 2 : 0;
    if (o->n_sink == LMK_TASK_AUTO)
        o->n_sink = lm || o->pos == LMK_POS_SLOTS ? 0 : 4;
    if (o->n_local == LMK_TASK_AUTO) {
        int half = mi->n_ctx_train > 0 ? mi->n_ctx_train / 2 : 4096;
        o->n_local = lm ? 0 : (half < 4096 ? half : 4096);
    }
    if (o->fixed_distance == LMK_TASK_AUTO)
        o->fixed_distance = o->n_local > 0 ? o->n_local : o->block_len;
    if (lm || o->landmark <= 0)
        o->landmark = lm ? LMK_LANDMARK_TOKEN : LMK_LANDMARK_KEYS;
    if (o->landmark == LMK_LANDMARK_KEYS)
        o->n_repr = o->block_len;
    else if (o->landmark >= LMK_LANDMARK_ATTN)
        o->n_repr = o->n_repr > 0 ? o->n_repr : 4;
    else
        o->n_repr = 1;
}

LMK_API int lmk_task_tokenize(const lmk_model *m, const char *text, size_t len, int first,
                              int32_t **ids, int64_t *n, char *err, size_t cap)
{
    size_t max = lmk_tokenizer_max_tokens(len), got = 0;
    *ids = malloc((max ? max : 1) * sizeof **ids);
    if (!*ids)
        return lmk_model__err(err, cap, ENOMEM, "out of memory tokenizing %zu bytes", len);
    int rc = lmk_tokenizer_encode(lmk_model_tokenizer(m), text, len, first, *ids, &got);
    if (rc) {
        free(*ids);
        *ids = NULL;
        return lmk_model__err(err, cap, rc, "tokenizing: %s", lmk_strerror(rc));
    }
    *n = (int64_t)got;
    return LMK_OK;
}

LMK_API int lmk_task_want_bos(const lmk_model *m)
{
    /* the tokenizer applies tokenizer.ggml.add_bos_token and llama.cpp's defaults (BOS for
     * SentencePiece and llama3-style vocabularies) */
    return lmk_tokenizer_add_bos(lmk_model_tokenizer(m)) && lmk_model_get_info(m)->bos >= 0;
}

/* ---- sampling ---- */

LMK_API uint64_t lmk_task_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

LMK_API int lmk_task_sample(const float *lg, int nv, double temp, int skip, uint64_t *rng)
{
    int best = -1;
    for (int i = 0; i < nv; i++)
        if (i != skip && (best < 0 || lg[i] > lg[best]))
            best = i;
    if (temp <= 0 || best < 0)
        return best;
    double z = 0;
    for (int i = 0; i < nv; i++)
        if (i != skip)
            z += exp((lg[i] - lg[best]) / temp);
    double u = (double)(lmk_task_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0) * z;
    double acc = 0;
    for (int i = 0; i < nv; i++) {
        if (i == skip)
            continue;
        acc += exp((lg[i] - lg[best]) / temp);
        if (acc >= u)
            return i;
    }
    return best;
}

/* ---- contexts and feeding ---- */

lmk_attend_opts lmk_task__attend(const lmk_task_opts *o, int chunkwise)
{
    lmk_attend_opts a = lmk_attend_opts_default();
    a.top_k = o->top_k;
    a.n_recent = o->n_recent;
    a.n_sink = o->n_sink;
    a.n_local = o->n_local;
    a.retrieve = chunkwise ? LMK_RETRIEVE_CHUNK : o->retrieve;
    return a;
}

int lmk_task__ctx_open(const lmk_task_opts *o, lmk_model *m, lmk_session *s, lmk_ctx **out,
                       char *err, size_t cap)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_SESSION;
    co.session = s;
    co.pos = (lmk_pos_kind)o->pos;
    co.mode = (lmk_mode)o->mode;
    co.fixed_distance = o->fixed_distance;
    co.attend = lmk_task__attend(o, 0);
    co.next_from = o->next_from;
    co.chunk = o->chunk;
    co.record = o->record;
    co.record_ud = o->record_ud;
    return lmk_ctx_open(m, &co, out, err, cap);
}

int lmk_task__feed_at(const lmk_task_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n,
                      int64_t at, float *logits, const char *what, char *err, size_t cap)
{
    int64_t piece = o->piece > 0 ? o->piece : 8192;
    double t0 = lmk_clock_s();
    for (int64_t i = 0; i < n;) {
        if (lmk_task__interrupted(o))
            return lmk_model__err(err, cap, EINTR, "interrupted after %lld of %lld tokens",
                                  (long long)i, (long long)n);
        int64_t end = ((at + i) / piece + 1) * piece - at; /* the next multiple of piece */
        int64_t m = (end < n ? end : n) - i;
        int last = i + m == n;
        int rc = lmk_ctx_feed(c, ids + i, m, last ? logits : NULL, last && logits);
        if (rc)
            return lmk_model__err(err, cap, rc, "%s", lmk_ctx_errmsg(c));
        i += m;
        if (what && o->progress)
            o->progress(o->ud, what, i, n, lmk_clock_s() - t0, last);
    }
    return LMK_OK;
}

int lmk_task__feed(const lmk_task_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n,
                   float *logits, const char *what, char *err, size_t cap)
{
    return lmk_task__feed_at(o, c, ids, n, 0, logits, what, err, cap);
}

void lmk_task__repr(const lmk_task_opts *o, const lmk_model *m, lmk_session_opts *so)
{
    if (lmk_model_get_info(m)->mem_freq > 0 || o->landmark <= 0)
        return;
    so->landmark = (lmk_landmark_src)o->landmark;
    so->n_repr = o->n_repr;
}

/* ---- temporary sessions ---- */

int lmk_task__temp_open(const lmk_task_opts *o, const lmk_model *m, const char *name,
                        char *dir, size_t dir_cap, lmk_session **out, char *err, size_t cap)
{
    *out = NULL;
    const char *base = o->workdir ? o->workdir : getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(dir, dir_cap, "%s/landmark-%s-XXXXXX", base, name);
    if (!mkdtemp(dir))
        return lmk_model__err(err, cap, errno, "cannot create a temporary session under %s: %s",
                              base, strerror(errno));
    lmk_session_opts so;
    char fp[256];
    lmk_model_session_opts(m, (lmk_pos_kind)o->pos, o->block_len, &so, fp);
    so.create = 1;
    so.n_threads = o->n_threads;
    so.index_spec = o->index_spec;
    so.dtype = o->dtype;
    so.durability = LMK_DURABLE_NONE; /* scratch data: nothing to keep after a crash */
    lmk_task__repr(o, m, &so);
    int rc = lmk_session_open(dir, &so, out, err, cap);
    if (rc)
        lmk_task__temp_close(NULL, dir);
    return rc;
}

void lmk_task__temp_close(lmk_session *s, const char *dir)
{
    lmk_session_close(s);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char path[PATH_MAX];
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}
