/* Private to engine/: what the phases of one attend call share. The call (lmk_attend.c)
 * plans the geometry of its queries, then runs
 *   search    (lmk_search.c)    the blocks each (query, head) attends, ranked via the index;
 *   fetch     (lmk_fetch.c)     those blocks read from the store and decoded, once each;
 *   attention (lmk_attention.c) the softmax over tokens and blocks for every (query, head).
 * The search and attention phases are parallel; fetch is serial (one LMDB read transaction
 * is single-threaded). */
#ifndef LMK_ATTEND_INTERNAL_H
#define LMK_ATTEND_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_internal.h"

/* Geometry of query i (see lmk_session.h). */
typedef struct qgeo {
    int64_t p;           /* position */
    int64_t S;           /* blocks sealed at p */
    int64_t local_start; /* first position of the local window */
    int64_t C;           /* candidate blocks [0, C) */
    int64_t F;           /* forced recent blocks [C - F, C) */
    int64_t k;           /* searched blocks */
    int64_t n_sink;      /* sink positions [0, n_sink) (before dedupe) */
} qgeo;

/* One attend call as the phases see it. The arrays are the session's grow-only scratch. */
typedef struct lmk_attend_plan {
    lmk_session *s;
    int layer;
    int64_t T;               /* tokens at the layer */
    int64_t nq;              /* queries: positions T - nq .. T - 1 */
    const float *q;          /* (nq, n_heads, head_dim) */
    const lmk_attend_opts *o;
    const qgeo *g;           /* (nq) */
    int64_t max_sel;         /* bound on blocks selected per (query, head) */
    int64_t kmax;            /* bound on searched blocks per query */
    size_t max_tok;          /* bound on local + sink tokens of any query */
    int64_t *sel;            /* (nq, n_heads, max_sel): selected blocks (search) */
    int *nsel;               /* (nq, n_heads): how many (search) */
    int64_t sealed_T;        /* blocks sealed at the layer's current length */
    int64_t n_need;          /* blocks fetched, over all KV heads (fetch) */
} lmk_attend_plan;

/* Search phase: fills p->sel and p->nsel. On failure the session's message is set. */
int lmk_attend_search(lmk_attend_plan *p);

/* Fetch phase: the blocks the selections, sinks and local windows need, per KV head
 * (sorted, unique: s->need at s->need_off), decoded into s->slots. Sets p->sealed_T and
 * p->n_need. */
int lmk_attend_fetch(lmk_attend_plan *p);

/* Attention phase: out (nq, n_heads, head_dim). */
int lmk_attend_compute(const lmk_attend_plan *p, float *out);

/* Eight independent partial sums so the compiler can vectorize without reassociating. */
static inline float lmk_dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* qsort order of int64_t. */
static inline int lmk_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Window position of the query and of slot placement under a SLOTS policy, given how many
 * blocks are placed. */
static inline int64_t slots_query_pos(const lmk_session *s, const qgeo *x, int64_t n_slots)
{
    return n_slots * s->L + (x->p - x->local_start);
}

#endif
