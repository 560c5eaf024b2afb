/* Perplexity with retrieval attention over a temporary session, and with full attention
 * (the dense reference backend) for comparison. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_task_impl.h"

#define NLL_PIECE 512 /* positions fed per call (logits of each are kept) */

/* Sum of the negative log-likelihoods of each next regular token of ids (n) fed through c,
 * their count and the time taken. */
static int nll_over(const lmk_task_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n, int nv,
                    double *nll, int64_t *count, double *secs, char *err, size_t cap)
{
    int64_t piece = NLL_PIECE;
    float *lg = malloc((size_t)(piece + 1) * nv * sizeof(float)); /* (piece + 1, nv) */
    if (!lg)
        return lmk_model__err(err, cap, ENOMEM, "out of memory");
    double t0 = lmk_clock_s();
    *nll = 0;
    *count = 0;
    for (int64_t i = 0; i < n; i += piece) {
        int64_t m = n - i < piece ? n - i : piece;
        /* row 0 holds the previous piece's last prediction */
        int rc = lmk_ctx_feed(c, ids + i, m, lg + nv, m);
        if (rc) {
            free(lg);
            return lmk_model__err(err, cap, rc, "%s", lmk_ctx_errmsg(c));
        }
        for (int64_t j = (i == 0 ? 1 : 0); j < m; j++) {
            const float *row = lg + (size_t)j * nv; /* prediction for token i + j */
            float mx = row[0];
            for (int v = 1; v < nv; v++)
                mx = row[v] > mx ? row[v] : mx;
            double z = 0;
            for (int v = 0; v < nv; v++)
                z += exp((double)row[v] - mx);
            *nll += log(z) + mx - row[ids[i + j]];
            (*count)++;
        }
        memcpy(lg, lg + (size_t)m * nv, (size_t)nv * sizeof(float));
        if (o->progress)
            o->progress(o->ud, "perplexity", i + m, n, lmk_clock_s() - t0, i + m == n);
    }
    *secs = lmk_clock_s() - t0;
    free(lg);
    return LMK_OK;
}

/* The retrieval pass, over a temporary session. */
static int retrieval_nll(lmk_model *m, const lmk_task_opts *o, const int32_t *ids, int64_t n,
                         double *nll, int64_t *count, double *secs, char *err, size_t cap)
{
    char dir[PATH_MAX];
    lmk_session *s = NULL;
    lmk_ctx *c = NULL;
    int rc = lmk_task__temp_open(o, m, "perplexity", dir, sizeof dir, &s, err, cap);
    if (rc)
        return rc;
    if ((rc = lmk_task__ctx_open(o, m, s, &c, err, cap)) == 0) {
        lmk_attend_opts a = lmk_task__attend(o, 0);
        lmk_ctx_set_attend(c, &a);
        rc = nll_over(o, c, ids, n, lmk_model_get_info(m)->n_vocab, nll, count, secs, err,
                      cap);
    }
    lmk_ctx_free(c);
    lmk_task__temp_close(s, dir);
    return rc;
}

/* The full-attention pass (dense backend, absolute positions). */
static int full_nll(lmk_model *m, const lmk_task_opts *o, const int32_t *ids, int64_t n,
                    double *nll, int64_t *count, double *secs, char *err, size_t cap)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    co.backend = LMK_ATTN_DENSE;
    co.pos = LMK_POS_AS_GIVEN;
    co.mode = (lmk_mode)o->mode;
    co.next_from = o->next_from;
    co.chunk = o->chunk;
    char msg[512];
    lmk_ctx *dc = NULL;
    int rc = lmk_ctx_open(m, &co, &dc, msg, sizeof msg);
    if (rc)
        return lmk_model__err(err, cap, rc, "full attention: %s", msg);
    rc = nll_over(o, dc, ids, n, lmk_model_get_info(m)->n_vocab, nll, count, secs, err, cap);
    lmk_ctx_free(dc);
    return rc;
}

LMK_API int lmk_perplexity_eval(lmk_model *m, const lmk_task_opts *opts, const int32_t *ids,
                                int64_t n, int64_t dense_max, lmk_perplexity_result *res,
                                char *err, size_t cap)
{
    memset(res, 0, sizeof *res);
    lmk_task_opts o = *opts;
    lmk_task_resolve(m, &o);
    res->settings = o;
    res->tokens = n;
    if (n < 2)
        return lmk_model__err(err, cap, LMK_EINVAL, "fewer than 2 tokens");
    double nll = 0, secs = 0;
    int64_t count = 0;
    int rc = retrieval_nll(m, &o, ids, n, &nll, &count, &secs, err, cap);
    if (rc)
        return rc;
    res->scored = count;
    res->perplexity = exp(nll / (double)count);
    res->tokens_per_s = (double)n / secs;
    if (dense_max > 0 && n <= dense_max) {
        if ((rc = full_nll(m, &o, ids, n, &nll, &count, &secs, err, cap)) != 0)
            return rc;
        res->has_full = 1;
        res->perplexity_full = exp(nll / (double)count);
        res->full_tokens_per_s = (double)n / secs;
    }
    return LMK_OK;
}
