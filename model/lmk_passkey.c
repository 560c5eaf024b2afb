/* The pass-key retrieval test: a key hidden at a depth of a long haystack, asked for at the
 * end, answered greedily. Each trial on a fresh temporary session. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_task_impl.h"


static const char k_filler[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";
static const char k_question[] = " What is the pass key? The pass key is";

LMK_API lmk_passkey_opts lmk_passkey_opts_default(void)
{
    lmk_passkey_opts p;
    memset(&p, 0, sizeof p);
    p.trials = 10;
    p.seed = 42;
    return p;
}

/* The haystack's bytes [off, off + len) (len <= hay_len - off): a pointer into the caller's
 * text, or read into *buf (grown as needed). NULL after setting the error. */
static const char *hay_bytes(const lmk_passkey_opts *p, size_t off, size_t len, char **buf,
                             size_t *buf_cap, int *rc, char *err, size_t cap)
{
    if (p->haystack)
        return p->haystack + off;
    if (len > *buf_cap) {
        char *nb = realloc(*buf, len);
        if (!nb) {
            *rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
            return NULL;
        }
        *buf = nb;
        *buf_cap = len;
    }
    size_t got = 0;
    *rc = p->haystack_read(p->haystack_ud, (uint64_t)off, *buf, len, &got);
    if (!*rc && got != len)
        *rc = EIO;
    if (*rc) {
        *rc = lmk_model__err(err, cap, *rc, "reading the haystack at byte %zu: %s", off,
                             strerror(*rc));
        return NULL;
    }
    return *buf;
}

/* need haystack tokens into th: from a random line of the haystack on (wrapping), or the
 * filler repeated. */
static int haystack_tokens(lmk_model *m, const lmk_passkey_opts *p, uint64_t *rng, int32_t *th,
                           int64_t need, char *err, size_t cap)
{
    int has = p->haystack || p->haystack_read;
    size_t hay_len = p->haystack_len, off = 0, buf_cap = 0;
    char *buf = NULL;
    int rc = LMK_OK;
    if (has) {
        off = (size_t)(lmk_task_rng_next(rng) % hay_len);
        /* to the start of the next line (the start of the text when there is none) */
        while (off < hay_len) {
            size_t n = hay_len - off < 65536 ? hay_len - off : 65536;
            const char *b = hay_bytes(p, off, n, &buf, &buf_cap, &rc, err, cap);
            if (!b)
                goto out;
            const char *nl = memchr(b, '\n', n);
            if (nl) {
                off += (size_t)(nl - b);
                break;
            }
            off += n;
        }
        off = off < hay_len ? off + 1 : 0;
    }
    for (int64_t have = 0; have < need;) {
        size_t avail = has ? hay_len - off : sizeof k_filler - 1;
        size_t want = (size_t)(need - have) * 4 + 64, take = avail < want ? avail : want;
        const char *src = has ? hay_bytes(p, off, take, &buf, &buf_cap, &rc, err, cap)
                              : k_filler;
        if (!src)
            goto out;
        int64_t nt;
        int32_t *t;
        if ((rc = lmk_task_tokenize(m, src, take, have == 0, &t, &nt, err, cap)) != 0)
            goto out;
        int64_t k = nt < need - have ? nt : need - have;
        memcpy(th + have, t, (size_t)k * sizeof *t);
        have += k;
        free(t);
        off = has ? (off + take) % hay_len : 0;
    }
out:
    free(buf);
    return rc;
}

/* The prompt of one trial into ids (tokens + 1): BOS when wanted, the haystack th (need)
 * with the needle tn (n_needle) at the depth, moved forward to just after a space or a
 * newline. Returns its length. */
static int64_t assemble(const lmk_model *m, double depth, const int32_t *th, int64_t need,
                        const int32_t *tn, int64_t n_needle, int32_t *ids)
{
    const lmk_tokenizer *tk = lmk_model_tokenizer(m);
    int64_t at = (int64_t)(depth * (double)need);
    for (int64_t j = at; j < need && j < at + 64; j++) {
        char pc[64];
        int pl = lmk_tokenizer_piece(tk, th[j > 0 ? j - 1 : 0], pc, sizeof pc);
        if (j == 0 || (pl > 0 && pl <= (int)sizeof pc &&
                       (pc[pl - 1] == ' ' || pc[pl - 1] == '\n'))) {
            at = j;
            break;
        }
    }
    int64_t n = 0;
    if (lmk_task_want_bos(m))
        ids[n++] = lmk_model_get_info(m)->bos;
    memcpy(ids + n, th, (size_t)at * sizeof *ids);
    n += at;
    memcpy(ids + n, tn, (size_t)n_needle * sizeof *ids);
    n += n_needle;
    memcpy(ids + n, th + at, (size_t)(need - at) * sizeof *ids);
    return n + need - at;
}

/* Build the prompt of a trial with key `key` at `depth` (ids: tokens + 1 slots); *tq, *n_q:
 * the question's tokens (malloc'ed). */
static int trial_prompt(lmk_model *m, const lmk_passkey_opts *p, uint64_t *rng, int key,
                        double depth, int32_t *ids, int64_t *n, int32_t **tq, int64_t *n_q,
                        char *err, size_t cap)
{
    char needle[128];
    snprintf(needle, sizeof needle, "The pass key is %d. Remember it. %d is the pass key. ",
             key, key);
    int32_t *tn = NULL, *th = NULL;
    int64_t n_needle;
    int rc = lmk_task_tokenize(m, needle, strlen(needle), 0, &tn, &n_needle, err, cap);
    if (!rc)
        rc = lmk_task_tokenize(m, k_question, strlen(k_question), 0, tq, n_q, err, cap);
    int64_t need = rc ? 0 : p->tokens - n_needle - *n_q;
    if (!rc && need < 1)
        rc = lmk_model__err(err, cap, LMK_EINVAL,
                            "--tokens %lld is too small for the needle and the "
                            "question (%lld tokens)",
                            (long long)p->tokens, (long long)(n_needle + *n_q));
    if (!rc && !(th = malloc((size_t)need * sizeof *th)))
        rc = lmk_model__err(err, cap, ENOMEM, "out of memory");
    if (!rc)
        rc = haystack_tokens(m, p, rng, th, need, err, cap);
    if (!rc)
        *n = assemble(m, depth, th, need, tn, n_needle, ids);
    free(th);
    free(tn);
    return rc;
}

/* The first five non-space characters of the greedy answer into ans (6 bytes), starting
 * from the logits after the question; *feeds counts the tokens fed while answering. */
static int answer(lmk_ctx *c, const lmk_model *m, float *logits, char *ans, int *feeds,
                  char *err, size_t cap)
{
    const lmk_model_info *mi = lmk_model_get_info(m);
    const lmk_tokenizer *tk = lmk_model_tokenizer(m);
    int na = 0, steps = 0;
    uint64_t rng = 0; /* unused: greedy */
    *feeds = 0;
    while (na < 5 && steps < 12) {
        int tok = lmk_task_sample(logits, mi->n_vocab, 0, mi->landmark_token, &rng);
        char pc[64];
        int pl = lmk_tokenizer_piece(tk, tok, pc, sizeof pc);
        for (int j = 0; j < pl && j < (int)sizeof pc && na < 5; j++)
            if (pc[j] != ' ')
                ans[na++] = pc[j];
        steps++;
        if (na >= 5)
            break;
        int32_t t = tok;
        int rc = lmk_ctx_feed(c, &t, 1, logits, 1);
        if (rc) {
            ans[na] = 0;
            return lmk_model__err(err, cap, rc, "%s", lmk_ctx_errmsg(c));
        }
        (*feeds)++;
    }
    ans[na] = 0;
    return LMK_OK;
}

typedef struct {
    double prefill_s, decode_s;
    int64_t prefill_tok, decode_tok;
} speed;

/* The caller's record callback, open while the first trial feeds its prompt and question. */
typedef struct rec_gate {
    const lmk_task_opts *o;
    int on;
} rec_gate;

static void rec_gated(void *ud, int layer, int64_t n, const float *k, const float *v,
                      const float *q)
{
    rec_gate *g = ud;
    if (g->on)
        g->o->record(g->o->record_ud, layer, n, k, v, q);
}

/* One trial on a fresh temporary session: prefill ids (n) and the question (tq, n_q),
 * answer into ans (8 bytes). Fills tr's outcome and adds to the timings. */
static int trial_run(lmk_model *m, const lmk_task_opts *o, const int32_t *ids, int64_t n,
                     const int32_t *tq, int64_t n_q, float *logits, char *ans,
                     lmk_passkey_trial *tr, speed *sp, char *err, size_t cap)
{
    char dir[PATH_MAX];
    lmk_session *s = NULL;
    lmk_ctx *c = NULL;
    int rc = lmk_task__temp_open(o, m, "passkey", dir, sizeof dir, &s, err, cap);
    if (rc)
        return rc;
    if ((rc = lmk_task__ctx_open(o, m, s, &c, err, cap)) != 0)
        goto out;
    double t0 = lmk_clock_s();
    lmk_attend_opts a = lmk_task__attend(o, o->prefill_chunkwise);
    lmk_ctx_set_attend(c, &a);
    rc = lmk_task__feed(o, c, ids, n, NULL, n > 65536 ? "prefill" : NULL, err, cap);
    if (!rc) {
        a = lmk_task__attend(o, 0);
        lmk_ctx_set_attend(c, &a);
        rc = lmk_task__feed(o, c, tq, n_q, logits, NULL, err, cap);
    }
    if (o->record_ud && o->record == rec_gated)
        ((rec_gate *)o->record_ud)->on = 0; /* the stream ends with the question */
    double t1 = lmk_clock_s();
    int feeds = 0;
    if (!rc)
        rc = answer(c, m, logits, ans, &feeds, err, cap);
    double t2 = lmk_clock_s();
    if (rc)
        goto out;
    char want[16];
    snprintf(want, sizeof want, "%d", tr->key);
    tr->ok = !strcmp(ans, want);
    sp->prefill_s += t1 - t0;
    sp->prefill_tok += n + n_q;
    sp->decode_s += t2 - t1;
    sp->decode_tok += feeds; /* the first answer token comes with the prefill */
    tr->answer = ans;
    tr->prefill_s = t1 - t0;
    tr->prefill_tokens = n + n_q;
out:
    lmk_ctx_free(c);
    lmk_task__temp_close(s, dir);
    return rc;
}

LMK_API int lmk_passkey_eval(lmk_model *m, const lmk_task_opts *opts, const lmk_passkey_opts *p,
                             lmk_passkey_result *res, char *err, size_t cap)
{
    memset(res, 0, sizeof *res);
    lmk_task_opts o = *opts;
    lmk_task_resolve(m, &o);
    res->settings = o;
    if (p->tokens < 1 || p->trials < 1 || p->n_depths < 0 ||
        p->n_depths > LMK_PASSKEY_MAX_DEPTHS || (p->n_depths && !p->depths))
        return lmk_model__err(err, cap, LMK_EINVAL, "invalid pass-key test options");
    if ((p->haystack || p->haystack_read) && p->haystack_len < 1024)
        return lmk_model__err(err, cap, LMK_EINVAL, "haystack too short");
    int nd = p->n_depths;
    res->n_bins = nd ? nd : 5;
    for (int i = 0; i < res->n_bins; i++)
        res->bins[i].depth = nd ? p->depths[i] : (i + 0.5) / 5;
    float *logits = malloc((size_t)lmk_model_get_info(m)->n_vocab * sizeof(float));
    int32_t *ids = malloc((size_t)(p->tokens + 1) * sizeof *ids), *tq = NULL;
    if (!logits || !ids) {
        free(logits);
        free(ids);
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
    }
    uint64_t rng = p->seed;
    speed sp = {0, 0, 0, 0};
    int rc = LMK_OK;
    for (int64_t trial = 0; trial < p->trials && !lmk_task__interrupted(&o); trial++) {
        lmk_passkey_trial tr = {.index = trial};
        tr.key = 10000 + (int)(lmk_task_rng_next(&rng) % 90000);
        tr.depth = nd ? p->depths[trial % nd]
                      : (double)(lmk_task_rng_next(&rng) >> 11) / 9007199254740992.0;
        int64_t n = 0, n_q = 0;
        char ans[8];
        rc = trial_prompt(m, p, &rng, tr.key, tr.depth, ids, &n, &tq, &n_q, err, cap);
        lmk_task_opts ot = o;
        rec_gate gate = {&o, trial == 0};
        ot.record = o.record && trial == 0 ? rec_gated : NULL;
        ot.record_ud = ot.record ? &gate : NULL;
        if (!rc)
            rc = trial_run(m, &ot, ids, n, tq, n_q, logits, ans, &tr, &sp, err, cap);
        free(tq);
        tq = NULL;
        if (rc)
            break;
        res->correct += tr.ok;
        int bin = nd ? (int)(trial % nd) : (int)(tr.depth * 5 >= 5 ? 4 : tr.depth * 5);
        res->bins[bin].trials++;
        res->bins[bin].correct += tr.ok;
        if (p->on_trial)
            p->on_trial(p->ud, &tr);
    }
    if (!rc && lmk_task__interrupted(&o))
        rc = lmk_model__err(err, cap, EINTR, "interrupted");
    res->prefill_tokens_per_s = sp.prefill_s > 0 ? (double)sp.prefill_tok / sp.prefill_s : 0;
    res->decode_tokens_per_s = sp.decode_s > 0 ? (double)sp.decode_tok / sp.decode_s : 0;
    res->accuracy = (double)res->correct / (double)p->trials;
    free(ids);
    free(logits);
    return rc;
}
