/* Search phase of an attend call: for every (query, head), the blocks it attends. Each
 * query's searched blocks come from the KV head's index over landmarks (or all candidates
 * when top_k covers them), then the forced recent blocks are appended. Parallel over KV
 * heads; every head's results are written by one thread. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_attend_internal.h"

/* The vector the index is searched with for query i, head h (rotated into the ranking frame
 * under a position policy). */
static void ranking_query(const lmk_session *s, const lmk_attend_opts *o, const qgeo *x,
                          const float *q, float *dst)
{
    memcpy(dst, q, (size_t)s->head_dim * 4);
    if (!o->pos || o->pos->kind == LMK_POS_AS_GIVEN)
        return;
    int64_t pos;
    if (o->pos->kind == LMK_POS_SLOTS)
        pos = slots_query_pos(s, x, x->k + x->F) - o->pos->rank_pos;
    else
        pos = o->pos->fixed_distance;
    o->pos->rotate(o->pos->ud, dst, 1, s->head_dim, &pos);
}

LMK_INTERNAL uint64_t lmk_fault_search_kvh; /* test hook (lmk_internal.h) */

typedef struct rctx_geo {
    int64_t i0, i1; /* a run of queries sharing one candidate pool and k */
    int sparse;     /* chunk retrieval over more than one query */
} rctx_geo;

/* LMK_RETRIEVE_CHUNK: of a chunk's queries with one candidate pool, only every
 * CHUNK_SEARCH_STRIDE-th and the last search the index; the union of what they find is then
 * re-ranked by the maximum exact score over every query of the chunk (chunk_rerank). Searching
 * every query made a long prefill quadratic in the index scan (every query against every
 * landmark); this divides that scan by the stride. */
#define CHUNK_SEARCH_STRIDE 16

static int chunk_searched(const rctx_geo *rg, int64_t i)
{
    return !rg->sparse || i == rg->i1 - 1 ||
           (i - rg->i0) % CHUNK_SEARCH_STRIDE == CHUNK_SEARCH_STRIDE - 1;
}

typedef struct rctx {
    lmk_session *s;
    int layer;
    int64_t nq;
    const float *q;
    const lmk_attend_opts *o;
    const qgeo *g;
    int64_t max_sel;
    int64_t *sel; /* (nq, n_heads, max_sel) */
    int *nsel;    /* (nq, n_heads) */
    float *qs;    /* search queries scratch (nq * n_heads, D) */
    float *qsum;  /* one row per KV head (n_kv_heads, D): a query summed over the group */
    int64_t *ids; /* search results scratch (nq * n_heads, kmax) */
    int64_t kmax;
} rctx;

/* The end of the run of queries from i0 that share one candidate pool and k. */
static int64_t run_end(const rctx *r, int64_t i0)
{
    int64_t pool = r->g[i0].C - r->g[i0].F, i1 = i0 + 1;
    while (i1 < r->nq && r->g[i1].C - r->g[i1].F == pool && r->g[i1].k == r->g[i0].k)
        i1++;
    return i1;
}

/* Search for KV head kvh and fill sel/nsel of its query heads. Runs on a worker thread:
 * a failure is described in msg (the caller's, one per thread), never in shared state.
 *
 * Queries are searched a batch at a time: one run otherwise, but under chunk retrieval every
 * run of the call in one pass over the index. A chunk's runs differ only in the few blocks
 * sealed inside it, so one search over the largest pool, asking each row for as many more
 * results as the pools differ and keeping those inside the row's own pool, gives each row
 * the exact top k of its own pool (at most that many results can fall outside it); searching
 * each run apart scanned every landmark once per block sealed in the chunk. */
static int retrieve_kvh(rctx *r, int kvh, char *msg, size_t msg_cap)
{
    lmk_session *s = r->s;
    const int D = s->head_dim, G = s->group, NH = s->n_heads;
    const lmk_attend_opts *o = r->o;
    lmk_index *idx = s->idx[r->layer * s->n_kv_heads + kvh];
    lmk_search_params sp = {o->ef_search, o->nprobe};
    float *qs = r->qs + (size_t)kvh * r->nq * G * D;
    int64_t *ids = r->ids + (size_t)kvh * r->nq * G * r->kmax;
    int per_head = o->retrieve != LMK_RETRIEVE_KVHEAD;
    int chunk = o->retrieve == LMK_RETRIEVE_CHUNK && r->nq > 1;

    for (int64_t b0 = 0; b0 < r->nq;) {
        int64_t b1 = chunk ? r->nq : run_end(r, b0);
        /* pass 1: every run's bypass, and the rows to search */
        int64_t nrow = 0, kmax = 0, pmin = INT64_MAX, pmax = 0;
        for (int64_t i0 = b0; i0 < b1;) {
            int64_t i1 = run_end(r, i0), k = r->g[i0].k, pool = r->g[i0].C - r->g[i0].F;
            for (int64_t i = i0; i < i1; i++)
                for (int g = 0; g < G; g++)
                    r->nsel[i * NH + kvh * G + g] = 0;
            if (k > 0 && k == pool) {
                /* top_k covers every candidate: the index is bypassed. */
                for (int64_t i = i0; i < i1; i++)
                    for (int g = 0; g < G; g++) {
                        int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                        for (int64_t b = 0; b < pool; b++)
                            dst[b] = b;
                        r->nsel[i * NH + kvh * G + g] = (int)pool;
                    }
            } else if (k > 0) {
                kmax = k > kmax ? k : kmax;
                pmin = pool < pmin ? pool : pmin;
                pmax = pool > pmax ? pool : pmax;
                rctx_geo rg = {i0, i1, chunk};
                for (int64_t i = i0; i < i1; i++) {
                    if (!chunk_searched(&rg, i))
                        continue;
                    if (per_head) {
                        for (int g = 0; g < G; g++)
                            ranking_query(s, o, &r->g[i],
                                          r->q + ((size_t)i * NH + kvh * G + g) * D,
                                          qs + (size_t)nrow++ * D);
                    } else {
                        float *dst = qs + (size_t)nrow++ * D;
                        float *tmp = r->qsum + (size_t)kvh * D; /* this head's thread only */
                        memset(dst, 0, (size_t)D * 4);
                        for (int g = 0; g < G; g++) {
                            ranking_query(s, o, &r->g[i],
                                          r->q + ((size_t)i * NH + kvh * G + g) * D, tmp);
                            for (int d = 0; d < D; d++)
                                dst[d] += tmp[d];
                        }
                    }
                }
            }
            i0 = i1;
        }
        int64_t kk = kmax + (nrow ? pmax - pmin : 0); /* <= r->kmax (plan_call) */
        if (nrow) {
            int fault = kvh < 64 && (lmk_fault_search_kvh >> kvh & 1);
            int rc = fault ? LMK_EINDEX
                           : lmk_index_search_groups(idx, nrow, qs, (int)kk, s->R, pmax, &sp,
                                                     ids, NULL);
            if (rc) {
                snprintf(msg, msg_cap, "searching layer %d head %d: %s", r->layer, kvh,
                         fault ? "injected fault" : lmk_index_errmsg(idx));
                return rc;
            }
        }
        /* pass 2: each searched row's results inside its own pool, then the forced blocks */
        int64_t row = 0;
        for (int64_t i0 = b0; i0 < b1;) {
            int64_t i1 = run_end(r, i0), k = r->g[i0].k, pool = r->g[i0].C - r->g[i0].F;
            rctx_geo rg = {i0, i1, chunk};
            for (int64_t i = i0; i < i1 && k > 0 && k < pool; i++) {
                if (!chunk_searched(&rg, i))
                    continue;
                for (int g = 0; g < G; g++) {
                    const int64_t *res = ids + (size_t)(per_head ? row + g : row) * kk;
                    int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                    int n = 0;
                    for (int64_t j = 0; j < kk && n < k; j++)
                        if (res[j] >= 0 && res[j] < pool)
                            dst[n++] = res[j];
                    r->nsel[i * NH + kvh * G + g] = n;
                }
                row += per_head ? G : 1;
            }
            for (int64_t i = i0; i < i1; i++) {
                const qgeo *x = &r->g[i];
                for (int g = 0; g < G; g++) {
                    int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                    int *n = &r->nsel[i * NH + kvh * G + g];
                    for (int64_t b = x->C - x->F; b < x->C; b++)
                        dst[(*n)++] = b;
                }
            }
            i0 = i1;
        }
        b0 = b1;
    }
    return LMK_OK;
}

/* LMK_RETRIEVE_CHUNK: re-rank each head's candidates (the union of what its queries found)
 * by the maximum exact score over the chunk's queries that can see them, then give every
 * query the best k of those it can see. */
static void chunk_rerank(rctx *r, int kvh, int64_t *cand, float *best)
{
    lmk_session *s = r->s;
    const int D = s->head_dim, G = s->group, NH = s->n_heads;
    const float *lms = lmk_index_vectors(s->idx[r->layer * s->n_kv_heads + kvh]);
    for (int g = 0; g < G; g++) {
        int h = kvh * G + g;
        int64_t nc = 0;
        for (int64_t i = 0; i < r->nq; i++) {
            const int64_t *sel = r->sel + ((size_t)i * NH + h) * r->max_sel;
            int searched = r->nsel[i * NH + h] - (int)r->g[i].F;
            for (int j = 0; j < searched; j++)
                cand[nc++] = sel[j];
        }
        qsort(cand, (size_t)nc, sizeof *cand, lmk_cmp_i64);
        int64_t u = 0;
        for (int64_t j = 0; j < nc; j++)
            if (u == 0 || cand[u - 1] != cand[j])
                cand[u++] = cand[j];
        for (int64_t j = 0; j < u; j++) {
            float m = -INFINITY;
            for (int64_t i = 0; i < r->nq; i++) {
                if (cand[j] >= r->g[i].C - r->g[i].F)
                    continue;
                const float *qi = r->q + ((size_t)i * NH + h) * D;
                const float *lb = lms + (size_t)cand[j] * s->R * D;
                float sc = lmk_dot(qi, lb, D);
                for (int e = 1; e < s->R; e++) {
                    float se = lmk_dot(qi, lb + (size_t)e * D, D);
                    sc = se > sc ? se : sc;
                }
                if (sc > m)
                    m = sc;
            }
            best[j] = m;
        }
        /* insertion sort by (best desc, id asc): candidate lists are short */
        for (int64_t a = 1; a < u; a++) {
            int64_t id = cand[a];
            float v = best[a];
            int64_t b = a - 1;
            while (b >= 0 && (best[b] < v || (best[b] == v && cand[b] > id))) {
                best[b + 1] = best[b];
                cand[b + 1] = cand[b];
                b--;
            }
            best[b + 1] = v;
            cand[b + 1] = id;
        }
        for (int64_t i = 0; i < r->nq; i++) {
            const qgeo *x = &r->g[i];
            int64_t *dst = r->sel + ((size_t)i * NH + h) * r->max_sel;
            int n = 0;
            for (int64_t j = 0; j < u && n < x->k; j++)
                if (cand[j] < x->C - x->F)
                    dst[n++] = cand[j];
            for (int64_t b = x->C - x->F; b < x->C; b++)
                dst[n++] = b;
            r->nsel[i * NH + h] = n;
        }
    }
}

int lmk_attend_search(lmk_attend_plan *p)
{
    lmk_session *s = p->s;
    const int H = s->n_kv_heads;
    rctx r = {s, p->layer, p->nq, p->q, p->o, p->g, p->max_sel, p->sel, p->nsel,
              s->q_search.p, (float *)s->q_search.p + (size_t)p->nq * s->n_heads * s->head_dim,
              s->ids.p, p->kmax};
    int nth = s->n_threads < H ? s->n_threads : H;
    /* a parallel region costs more than it saves on a small search (a decoding step of a
     * small model): under about 1M multiply-adds one thread searches every head */
    int64_t n_cand = p->T / s->L;
    if ((double)p->nq * s->n_heads * (double)n_cand * s->head_dim < (double)(1 << 20))
        nth = 1;
    int rc_any = 0, kvh_err = H;
    /* chunk retrieval re-ranks each head's union on the thread that searched it, in that
     * thread's work buffer (the attention phase, which runs after, carves it anew) */
    int chunk = p->o->retrieve == LMK_RETRIEVE_CHUNK && p->nq > 1;
    size_t cap = chunk ? lmk_szmul((size_t)p->nq, (size_t)p->max_sel) : 0;
    for (int t = 0; chunk && t < nth; t++)
        if (lmk_buf_reserve(&s->work[t], lmk_szmul(cap, sizeof(int64_t) + sizeof(float))))
            return lmk_sess_fail(s, ENOMEM, "out of memory");
    /* FAISS opens its own OpenMP regions inside a search. Ours is the one level of
     * parallelism: setting the thread count inside our region changes only that region's
     * data environment (not the caller's), so FAISS runs single-threaded here instead of
     * waking a new team for every small search. */
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        omp_set_num_threads(1);
        int64_t *mine = chunk ? (int64_t *)s->work[omp_get_thread_num()].p : NULL;
#pragma omp for schedule(static)
        for (int kvh = 0; kvh < H; kvh++) {
            char msg[512];
            int rc = retrieve_kvh(&r, kvh, msg, sizeof msg);
            if (rc) {
                /* the first failing head (in head order) reports, whatever the timing */
#pragma omp critical(lmk_attend_err)
                {
                    if (!rc_any || kvh < kvh_err) {
                        rc_any = rc;
                        kvh_err = kvh;
                        snprintf(s->err, sizeof s->err, "%s", msg);
                    }
                }
            } else if (chunk) {
                chunk_rerank(&r, kvh, mine, (float *)(mine + cap));
            }
        }
    }
    if (rc_any)
        return rc_any;
    return LMK_OK;
}
