/* landmark bench — the retrieval oracle and the representative table (README, "Retrieval
 * for ordinary models").
 *
 * The oracle of a query at position p: dense softmax attention of the query over every
 * key [0, p] (s = 1/sqrt(head_dim)); the mass of a block is the sum of the weights of its
 * tokens; the oracle's k blocks are the k candidate blocks holding the most mass. Every
 * representative is scored against it: recall of the oracle's blocks, and the share of the
 * candidates' mass its own k blocks hold.
 *
 * The representative table replays a recorded stream of a model (README "Recorded
 * streams") whose queries are one per token (n_queries == n_tokens, query i at position i,
 * in the frame blocks are ranked in): for each representative a session is built by the
 * engine (lmk_session_append_q), and at evaluation positions spread over the second half
 * of the stream (the last position always among them) every layer attends with that
 * position's query; the blocks it retrieves are compared with the oracle's.
 */
#ifndef LMK_ORACLE_H
#define LMK_ORACLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Mass of each of the first n_cand blocks of block_len tokens under dense softmax attention
 * of q (head_dim) over keys [0, n_keys), key j at keys + j * stride (floats).
 * mass (n_cand) out; blocks must lie inside [0, n_keys). */
void lmk_oracle_block_mass(const float *keys, size_t stride, int64_t n_keys, const float *q,
                           int head_dim, int block_len, int64_t n_cand, double *mass);

/* The k blocks of most mass (ties: the lower id), best first; -1 padded when n < k. */
void lmk_oracle_topk(const double *mass, int64_t n, int k, int64_t *out);

/* Quest's per-channel bound of each of the first n_cand blocks: for block b,
 * bound[b] = sum_d max(q_d * min_t k_td, q_d * max_t k_td) over its keys t, an upper bound
 * of the block's best key score q . k_t. It equals the inner product of (q+, q-) with
 * (max, min) (q+ = max(q, 0), q- = min(q, 0), 2 x head_dim), so an index of twice the
 * head dimension could search it; the table scans it exactly. Keys as in
 * lmk_oracle_block_mass. */
void lmk_oracle_quest_bounds(const float *keys, size_t stride, const float *q, int head_dim,
                             int block_len, int64_t n_cand, double *bound);

#define LMK_REPR_MAX_CASES 16
/* A case's landmark value for Quest's bounds, scanned exactly over every candidate block
 * (not a session source: see lmk_oracle_quest_bounds). */
#define LMK_REPR_QUEST 100

typedef struct lmk_repr_case {
    int landmark; /* lmk_landmark_src: MEAN, KEYS, ATTN, QUERY, OUTLIER; or LMK_REPR_QUEST */
    int n_repr;   /* entries per block for ATTN, QUERY, OUTLIER */
} lmk_repr_case;

typedef struct lmk_repr_cfg {
    const char *recorded; /* the stream; borrowed */
    int block_len, top_k, n_local, n_sink;
    int n_eval;           /* evaluation positions (>= 1) */
    int threads;
    int n_cases;
    lmk_repr_case cases[LMK_REPR_MAX_CASES];
    const char *dir;      /* where the sessions go (created, removed after), NULL: $TMPDIR */
} lmk_repr_cfg;

lmk_repr_cfg lmk_repr_cfg_default(void);

typedef struct lmk_repr_row {
    lmk_repr_case c;
    double recall;      /* mean over (position, layer, query head) */
    double mass;        /* share of the candidates' mass in the retrieved blocks */
    double oracle_mass; /* the same for the oracle's blocks (equal in every row) */
    double last_recall; /* recall at the last position alone */
    double step_ms;     /* one attend call: one layer, one query, every head */
    double search_ms;   /* of which the search */
    int64_t entries;    /* index entries per (layer, KV head) at the end */
} lmk_repr_row;

/* Runs every case; rows (n_cases) out. Returns LMK_OK, LMK_EFORMAT, LMK_EINVAL, an
 * engine error or an errno, with a message in err. */
int lmk_repr_bench_run(const lmk_repr_cfg *c, lmk_repr_row *rows, char *err, size_t cap);

/* The table (markdown) of a run. */
void lmk_repr_bench_write_table(FILE *f, const lmk_repr_cfg *c, const lmk_repr_row *rows);

#ifdef __cplusplus
}
#endif
#endif
