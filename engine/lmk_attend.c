/* One attend call, top to bottom: check the options, plan the geometry of the queries,
 * then search (lmk_search.c), fetch (lmk_fetch.c) and attention (lmk_attention.c); the
 * phases are described in lmk_attend_internal.h. The semantics are those stated in
 * lmk_session.h; tests/test_attend.c checks them against a naive implementation. */
#include <errno.h>
#include <string.h>

#include "lmk_attend_internal.h"
#include "lmk_clock.h"

static void geometry(const lmk_session *s, int64_t T, int64_t nq, const lmk_attend_opts *o,
                     qgeo *g)
{
    const int64_t L = s->L;
    for (int64_t i = 0; i < nq; i++) {
        qgeo *x = &g[i];
        x->p = T - nq + i;
        x->S = x->p / L;
        int64_t ls = x->S * L;
        if (o->n_local > 0) {
            int64_t lw = x->p - o->n_local + 1;
            if (lw < 0)
                lw = 0;
            lw = lw / L * L;
            if (lw < ls)
                ls = lw;
        }
        x->local_start = ls;
        x->C = ls / L;
        x->F = o->n_recent < x->C ? o->n_recent : x->C;
        int64_t pool = x->C - x->F;
        x->k = o->top_k == LMK_TOP_K_ALL || o->top_k > pool ? pool : o->top_k;
        x->n_sink = o->n_sink < ls ? o->n_sink : ls;
    }
}

static int check_call(lmk_session *s, int layer, int64_t nq, const float *q, float *out,
                      const lmk_attend_opts *o)
{
    if (layer < 0 || layer >= s->n_layers)
        return lmk_sess_fail(s, LMK_EINVAL, "layer %d out of range 0..%d", layer,
                             s->n_layers - 1);
    int64_t T = s->layers[layer].ntok;
    if (nq < 1 || nq > T)
        return lmk_sess_fail(s, LMK_EINVAL,
                             "n_queries %lld must be in 1..%lld (tokens appended at layer %d)",
                             (long long)nq, (long long)T, layer);
    if (!q || !out)
        return lmk_sess_fail(s, LMK_EINVAL, "NULL query or output");
    if (o->top_k < LMK_TOP_K_ALL || o->n_recent < 0 || o->n_sink < 0 || o->n_local < 0 ||
        (o->mode != LMK_MODE_GROUPED && o->mode != LMK_MODE_UNION) ||
        (o->retrieve != LMK_RETRIEVE_QHEAD && o->retrieve != LMK_RETRIEVE_KVHEAD &&
         o->retrieve != LMK_RETRIEVE_CHUNK))
        return lmk_sess_fail(s, LMK_EINVAL, "attend option out of range");
    if (o->pos && o->pos->kind != LMK_POS_AS_GIVEN) {
        if (!o->pos->rotate || (o->pos->kind != LMK_POS_SLOTS && o->pos->kind != LMK_POS_FIXED))
            return lmk_sess_fail(s, LMK_EINVAL, "position policy without a rotate callback");
        if (o->pos->kind == LMK_POS_SLOTS && o->n_sink > 0)
            return lmk_sess_fail(s, LMK_EINVAL, "sinks cannot be placed with the slots policy");
    }
    return LMK_OK;
}

/* Geometry of every query, the bounds the phases size their scratch by, and the search
 * scratch (grow-only). */
static int plan_call(lmk_attend_plan *p)
{
    lmk_session *s = p->s;
    const int64_t nq = p->nq;
    const int D = s->head_dim, NH = s->n_heads;
    if (lmk_buf_reserve(&s->nsel, lmk_szmul((size_t)nq, sizeof(qgeo) + (size_t)NH * sizeof(int))))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    qgeo *g = s->nsel.p;
    p->g = g;
    p->nsel = (int *)(g + nq);
    geometry(s, p->T, nq, p->o, g);
    int64_t max_sel = 1, kmax = 1;
    size_t max_tok = 1;
    for (int64_t i = 0; i < nq; i++) {
        if (g[i].k + g[i].F > max_sel)
            max_sel = g[i].k + g[i].F;
        size_t nt = (size_t)(g[i].p - g[i].local_start + 1 + g[i].n_sink);
        if (nt > max_tok)
            max_tok = nt;
    }
    int64_t pmin = INT64_MAX, pmax = 0;
    for (int64_t i = 0; i < nq; i++) {
        if (g[i].k > kmax)
            kmax = g[i].k;
        if (g[i].k > 0) {
            pmin = g[i].C - g[i].F < pmin ? g[i].C - g[i].F : pmin;
            pmax = g[i].C - g[i].F > pmax ? g[i].C - g[i].F : pmax;
        }
    }
    /* chunk retrieval searches every query of the call at once over the largest pool, with
     * as many more results per row as the pools differ (lmk_search.c) */
    if (p->o->retrieve == LMK_RETRIEVE_CHUNK && nq > 1 && pmax > pmin)
        kmax += pmax - pmin;
    p->max_sel = max_sel;
    p->kmax = kmax;
    p->max_tok = max_tok;
    size_t qh = lmk_szmul((size_t)nq, (size_t)NH);
    if (lmk_buf_reserve(&s->sel, lmk_szmul(lmk_szmul(qh, (size_t)max_sel), sizeof(int64_t))) ||
        lmk_buf_reserve(&s->q_search, lmk_szmul(lmk_szadd(qh, (size_t)s->n_kv_heads),
                                                (size_t)D * sizeof(float))) ||
        lmk_buf_reserve(&s->ids, lmk_szmul(lmk_szmul(qh, (size_t)kmax), sizeof(int64_t))))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    p->sel = s->sel.p;
    return LMK_OK;
}

/* The blocks each (query, head) attended, for the caller's stats->blocks. */
static void report_blocks(const lmk_attend_plan *p, lmk_attend_stats *stats)
{
    int64_t items = p->nq * p->s->n_heads;
    for (int64_t it = 0; it < items; it++) {
        int64_t *dst = stats->blocks + (size_t)it * stats->blocks_cap;
        int n = p->nsel[it] < stats->blocks_cap ? p->nsel[it] : stats->blocks_cap;
        for (int j = 0; j < stats->blocks_cap; j++)
            dst[j] = j < n ? p->sel[(size_t)it * p->max_sel + j] : -1;
    }
}

LMK_API int lmk_session_attend(lmk_session *s, int layer, int64_t nq, const float *q,
                               const lmk_attend_opts *opts, float *out, lmk_attend_stats *stats)
{
    if (!s)
        return LMK_EINVAL;
    lmk_attend_opts o = opts ? *opts : lmk_attend_opts_default();
    int rc = lmk_sess_check_usable(s);
    if (rc)
        return rc;
    rc = check_call(s, layer, nq, q, out, &o);
    if (rc)
        return rc;
    double t0 = lmk_clock_s();
    lmk_attend_plan p;
    memset(&p, 0, sizeof p);
    p.s = s;
    p.layer = layer;
    p.T = s->layers[layer].ntok;
    p.nq = nq;
    p.q = q;
    p.o = &o;
    if ((rc = plan_call(&p)) || (rc = lmk_attend_search(&p)))
        return rc;
    double t1 = lmk_clock_s();
    if ((rc = lmk_attend_fetch(&p)))
        return rc;
    double t2 = lmk_clock_s();
    if ((rc = lmk_attend_compute(&p, out)))
        return rc;
    double t3 = lmk_clock_s();

    if (stats) {
        size_t blk_floats = (size_t)s->L * s->head_dim;
        stats->search_s = t1 - t0;
        stats->fetch_s = t2 - t1;
        stats->attn_s = t3 - t2;
        stats->blocks_fetched = p.n_need;
        stats->bytes_fetched = p.n_need * (int64_t)(2 * blk_floats * s->esz);
        if (stats->blocks && stats->blocks_cap > 0)
            report_blocks(&p, stats);
    }
    return LMK_OK;
}
