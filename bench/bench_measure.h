/* landmark bench — private: the exact reference and one measured setting
 * (bench_measure.c). */
#ifndef LMK_BENCH_MEASURE_H
#define LMK_BENCH_MEASURE_H

#include "bench_priv.h"

/* For every (step, layer, query head): the exact k-th best score (double) among the
 * candidate blocks [0, C). The engine's retrieved blocks are then judged by their exact
 * score against it, so ties and rounding cannot make exact search look inexact. */
typedef struct bench_exact {
    double *kth;      /* (steps, n_layers, n_heads) */
    int64_t cand;     /* candidate blocks C */
    int k;            /* min(top_k, C) */
} bench_exact;

typedef struct bench_scratch {
    float *out;      /* (n_layers, n_heads, head_dim) */
    int64_t *blocks; /* (n_heads, top_k) */
    double *t;       /* (steps) */
    double *errs;    /* (steps, n_layers, n_heads) */
} bench_scratch;

int bench_cmp_double(const void *a, const void *b);

/* Fill x->kth from the landmarks stored in s's indices for the queries Q (steps, n_layers,
 * n_heads, head_dim); x->cand and x->k set by the caller. LMK_OK, ENOMEM or LMK_ECORRUPT
 * (an index holds fewer landmarks than expected). */
int bench_exact_topk(lmk_session *s, const lmk_bench_cfg *c, const float *Q, bench_exact *x,
                     char *err, size_t cap);

/* Run the steps on session s with the given search parameters; fill timing, recall, needle
 * and error figures of res. Q (steps, n_layers, n_heads, head_dim); Qwarm the warm-up
 * steps' queries, same row shape; targets (steps, n_layers); dense_out like Q (NULL: no
 * error figures). Returns LMK_OK or the session's status (message in err). */
int bench_run_steps(lmk_session *s, const lmk_bench_cfg *c, const lmk_attend_opts *ao,
                    const float *Q, const float *Qwarm, const int64_t *targets,
                    const float *dense_out, const bench_exact *x, bench_scratch *w,
                    lmk_bench_result *res, const char *label, char *err, size_t cap);

#endif
