/* landmark — a retrieval-attention session: blocks on disk, landmarks in FAISS.
 *
 * A session is one directory holding a token stream's keys and values for every layer and
 * KV head. Tokens are cut into blocks of block_len; a block is sealed (its K/V written to
 * LMDB, its landmark added to the index of its (layer, KV head)) once it is full and the
 * next token of that layer arrives. Decoding steps (lmk_session_attend) rank the landmarks
 * against the query, fetch only the top-k blocks and attend to them plus sinks and the
 * local window. The computation is stated exactly in the README ("Method"); in short:
 *
 *   For a query at position p (0-based) of layer l:
 *   - sealed blocks:  b with (b + 1) * block_len <= p
 *   - local window:   the tail [floor(p / L) * L, p] plus every sealed block holding any of
 *                     the n_local most recent tokens (p - n_local, p]; blocks are never split
 *   - candidates:     sealed blocks entirely before the local window
 *   - forced:         the n_recent most recent candidates (always retrieved)
 *   - retrieved R:    forced plus the top_k other candidates by s * dot(q, l_b)
 *   - sinks:          positions < n_sink that lie before the local window and in no
 *                     retrieved block (a token is attended once)
 *   - token landmarks: the last position of a sealed block is its landmark token; its key
 *                     is the landmark and its value is never read
 *   - grouped:        one softmax over local, sink and {g_b, b in R}; inside each b a softmax
 *                     over its regular tokens, weighted by p_b
 *   - union:          one softmax over local, sink and every regular token of R
 *
 * Shapes: keys/values/queries are row-major f32. Appends take (n_tokens, n_kv_heads,
 * head_dim); attends take (n_queries, n_heads, head_dim) and write the same shape.
 * Query head h reads KV head h / (n_heads / n_kv_heads).
 *
 * Threads: with n_threads > 1 the session runs its searches and attention on that many
 * OpenMP threads (a num_threads clause: OpenMP's global setting is not changed). FAISS calls
 * made inside run single-threaded (nested parallelism is off). OpenBLAS is called from those
 * threads on small per-head products; the library never changes OpenBLAS's thread count, so a
 * program using n_threads > 1 should call openblas_set_num_threads(1) (the landmark command
 * does). Results do not depend on n_threads.
 *
 * A handle is used by one thread at a time. Functions return LMK_OK or an error code
 * (lmk_error.h) with a message in lmk_session_errmsg().
 */
#ifndef LMK_SESSION_H
#define LMK_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_session lmk_session;

/* AUTO: f16 when creating a session, the stored dtype when reopening. */
typedef enum { LMK_DTYPE_AUTO = 0, LMK_DTYPE_F32 = 1, LMK_DTYPE_F16 = 2 } lmk_dtype;

typedef enum {
    LMK_LANDMARK_AUTO = 0,  /* MEAN when creating, the stored source when reopening */
    LMK_LANDMARK_MEAN = 1,  /* training-free: mean of the block's stored keys */
    LMK_LANDMARK_TOKEN = 2, /* the block's last position is a landmark token (block_len >= 2) */
    /* Training-free representatives with several index entries per block (n_repr of them;
     * a block scores the maximum over its entries, entry e of block b has index id
     * b * n_repr + e). See "Retrieval for ordinary models" in the README. */
    LMK_LANDMARK_KEYS = 3,    /* every key of the block (n_repr = block_len): the upper limit
                                 of representative-key schemes */
    LMK_LANDMARK_ATTN = 4,    /* InfLLM's representative tokens: the n_repr keys that received
                                 the most attention (summed softmax weights) from the queries
                                 of the block's own tokens (lmk_session_append_q) */
    LMK_LANDMARK_QUERY = 5,   /* query-aware (RetrievalAttention's idea): the n_repr keys with
                                 the highest single score from any of those queries */
    LMK_LANDMARK_OUTLIER = 6, /* ShadowKV's outliers: the mean key plus the n_repr - 1 keys
                                 farthest from it (L2) */
} lmk_landmark_src;

typedef enum { LMK_MODE_GROUPED = 0, LMK_MODE_UNION = 1 } lmk_mode;

typedef enum {
    LMK_RETRIEVE_QHEAD = 0,  /* each query head ranks for itself (the paper) */
    LMK_RETRIEVE_KVHEAD = 1, /* one block set per KV head: ranked by the sum of the group's
                                scores */
    LMK_RETRIEVE_CHUNK = 2,  /* prefill: one block set per query head for the whole chunk,
                                ranked by the maximum score over the chunk's queries (each
                                query still sees only its own candidates). Not equal to
                                single-token steps; much cheaper for long prefills. */
} lmk_retrieve;

/* Durability of appended data (see lmk_store.h for what each mode can lose). */
typedef enum {
    LMK_DURABLE_FULL = 0,
    LMK_DURABLE_NOMETA = 1,
    LMK_DURABLE_NONE = 2,
} lmk_durability;

#define LMK_TOP_K_ALL (-1)

typedef struct lmk_session_opts {
    /* Shape: fixed at creation; on reopen 0 means "take from the session", any other value
     * must match (LMK_EMISMATCH). */
    int n_layers;
    int n_heads;      /* query heads, a multiple of n_kv_heads */
    int n_kv_heads;
    int head_dim;
    int block_len;    /* >= 1 (>= 2 with LMK_LANDMARK_TOKEN); 0 = 64 when creating */
    lmk_dtype dtype;  /* storage dtype */
    lmk_landmark_src landmark;
    /* Index entries per block for ATTN, QUERY and OUTLIER (0 = 4 when creating, the stored
     * count when reopening; another value: LMK_EMISMATCH). MEAN and TOKEN have 1, KEYS has
     * block_len. */
    int n_repr;
    const char *index_spec; /* lmk_index.h; NULL = "Flat" when creating, keep when reopening;
                               another spec than the stored one: LMK_EMISMATCH (reindex) */
    /* Model fingerprint (any string, <= 255 bytes); NULL on reopen = do not check,
     * non-NULL must equal the stored one (LMK_EMISMATCH). */
    const char *fingerprint;

    /* Per-open settings. */
    int create;          /* 1: create the session when the directory holds none */
    int read_only;       /* 1: no appends; may run beside a writer in another process */
    int n_threads;       /* >= 1, default 1 */
    lmk_durability durability; /* default LMK_DURABLE_NOMETA */
    /* Called with progress messages on open (index rebuilt, caught up, ...); may be NULL. */
    void (*log)(void *ud, const char *msg);
    void *log_ud;
} lmk_session_opts;

lmk_session_opts lmk_session_opts_default(void);

/* Open the session in `dir`, creating it when opts->create is set and none exists.
 * On open, a missing, stale or damaged index file is rebuilt or caught up from the stored
 * landmarks (reported through opts->log). On failure *out is NULL and, when errmsg is given,
 * a message is copied there.
 * Returns LMK_OK, LMK_EINVAL, LMK_ENOTFOUND, LMK_EBUSY, LMK_EMISMATCH, LMK_EVERSION,
 * LMK_ECORRUPT, LMK_EUNSUPPORTED (index spec), LMK_ESTORE, LMK_EINDEX, an errno. */
int lmk_session_open(const char *dir, const lmk_session_opts *opts, lmk_session **out,
                     char *errmsg, size_t errmsg_cap);

/* Save index files, sync, release. Accepts NULL. */
void lmk_session_close(lmk_session *s);

const char *lmk_session_errmsg(const lmk_session *s);

/* Append n tokens at `layer`: k, v (n, n_kv_heads, head_dim). Seals the blocks that become
 * sealed. Outside a transaction everything appended is committed to the store when this
 * returns LMK_OK (what survives a crash then depends on the durability); inside one it is
 * part of the transaction. On failure nothing of the call is appended (an open transaction
 * stays as it was).
 * Returns LMK_OK, LMK_EINVAL (layer, n, NULL k/v, a non-finite value, the transaction's size
 * limit), LMK_EREADONLY, LMK_ESTATE (session broken, see below), LMK_EINDEX, LMK_ESTORE,
 * LMK_EMAPFULL, ENOMEM, ENOSPC or another errno. */
int lmk_session_append(lmk_session *s, int layer, int64_t n, const float *k, const float *v);

/* As lmk_session_append(), with the queries of the same tokens, q (n, n_heads, head_dim)
 * (may be NULL), in the frame blocks are ranked in. Sessions whose representatives are
 * chosen by queries (LMK_LANDMARK_ATTN, LMK_LANDMARK_QUERY) keep the queries of the
 * unsealed tail in memory; when a block is sealed, query j of the block scores keys
 * i <= j of the same block (the block's own causal attention, summed over the query heads
 * reading the KV head). Queries missing (NULL, or a session reopened mid-block) count as
 * absent; a block with none takes the keys of largest norm. Other sources ignore q. */
int lmk_session_append_q(lmk_session *s, int layer, int64_t n, const float *k, const float *v,
                         const float *q);

/* ---- transactions ----
 * lmk_session_begin() opens a transaction on a writable handle; the appends that follow,
 * at any layers, become one store commit at lmk_session_commit(), or are undone by
 * lmk_session_abort() (the tokens, the blocks they sealed, their landmarks and the index
 * entries added for them), leaving the handle exactly as before begin.
 *
 * Inside a transaction:
 * - lmk_session_attend(), lmk_session_tokens(), lmk_session_read_kv(),
 *   lmk_session_landmark() and lmk_session_info_get() see the uncommitted tokens, on the
 *   writer's handle only (sealed blocks are kept in memory until commit);
 * - lmk_session_truncate(), _fork(), _reindex(), _sync(), _verify() and _data_digest()
 *   fail with LMK_ESTATE;
 * - the appends' store writes may total at most LMK_SESSION_TXN_MAX_BYTES (block and tail
 *   values and landmarks); an append that would pass it fails with LMK_EINVAL and the
 *   transaction stays as it was (commit, then go on in a new one). Memory held: the
 *   pending writes plus the encoded blocks sealed, each about the size of its stored value.
 *
 * Other processes (readers, and this process's other handles) see nothing of a transaction
 * until its commit, then all of it at once. A process killed inside one leaves the session
 * at its previous commit at every layer. Closing a handle with a transaction open aborts it.
 * Plain appends outside a transaction run in their own (no size limit beyond the store's).
 *
 * A failed undo (abort, or a failed append's) that cannot bring an index back in step with
 * the store marks the handle broken: every call but close then fails with LMK_ESTATE and a
 * message saying so; reopening the session rebuilds the index from the store. */
#define LMK_SESSION_TXN_MAX_BYTES ((size_t)128 << 20)

/* Open a transaction. Returns LMK_OK, LMK_EREADONLY, LMK_ESTATE (one is open already, or
 * the handle is broken), LMK_ESTORE. */
int lmk_session_begin(lmk_session *s);

/* Commit the open transaction in one store commit (durability as for appends). On failure
 * nothing is committed and the transaction stays open: retry the commit or abort.
 * Returns LMK_OK, LMK_ESTATE (none open, broken), LMK_EMAPFULL, LMK_ESTORE, ENOSPC or another
 * errno. */
int lmk_session_commit(lmk_session *s);

/* Undo the open transaction. Returns LMK_OK, or LMK_ESTATE when none is open or an index
 * could not be cut back (the handle is then broken; the store is untouched either way). */
int lmk_session_abort(lmk_session *s);

/* 1 while a transaction begun with lmk_session_begin() is open, else 0. */
int lmk_session_in_txn(const lmk_session *s);

/* ---- positions ----
 * Keys and queries are used as given unless a policy is set. A policy receives a rotation
 * callback from the caller (the model knows its rotary encoding); the engine decides the
 * positions. With LMK_POS_SLOTS keys and queries are given unrotated; the retrieved blocks
 * are placed, in their original order, in consecutive slots [s*L, s*L + L) before the local
 * window, which follows at n_slots*L; the query is rotated at its own window position and
 * ranked against landmarks rotated at rank_pos. With LMK_POS_FIXED every retrieved token is
 * placed at window position (query position - fixed_distance). */
typedef enum { LMK_POS_AS_GIVEN = 0, LMK_POS_SLOTS = 1, LMK_POS_FIXED = 2 } lmk_pos_kind;

typedef struct lmk_pos_policy {
    lmk_pos_kind kind;
    /* Rotate n vectors x (n, head_dim) in place, vector i to position pos[i]. Called from
     * worker threads concurrently: must be thread-safe. */
    void (*rotate)(void *ud, float *x, int n, int head_dim, const int64_t *pos);
    void *ud;
    int64_t rank_pos;        /* SLOTS: position landmarks are ranked at (e.g. L - 1) */
    int64_t fixed_distance;  /* FIXED */
} lmk_pos_policy;

typedef struct lmk_attend_opts {
    int top_k;          /* blocks retrieved by search, >= 0 or LMK_TOP_K_ALL; default 8 */
    int n_recent;       /* most recent candidate blocks always retrieved; default 0 */
    lmk_mode mode;      /* default LMK_MODE_GROUPED */
    lmk_retrieve retrieve; /* default LMK_RETRIEVE_QHEAD */
    int n_sink;         /* default 0 */
    int n_local;        /* default 0 (the tail only) */
    /* (with a SLOTS policy n_sink must be 0) */
    int ef_search;      /* <= 0: index default */
    int nprobe;         /* <= 0: index default */
    const lmk_pos_policy *pos; /* NULL: as given */
} lmk_attend_opts;

lmk_attend_opts lmk_attend_opts_default(void);

/* Where the time of one attend call went, and what it touched. */
typedef struct lmk_attend_stats {
    double search_s, fetch_s, attn_s;
    int64_t blocks_fetched;  /* distinct (KV head, block) pairs read from the store */
    int64_t bytes_fetched;
    /* Optional output, caller-allocated: when non-NULL, retrieved block ids of each
     * (query, head), (n_queries, n_heads, blocks_cap), in decreasing score order for the
     * searched ones (forced recent blocks last), -1 padded. */
    int64_t *blocks;
    int blocks_cap;
} lmk_attend_stats;

/* Attend at `layer` with the n_queries most recent tokens of that layer as the query
 * positions (query i sits at position tokens(layer) - n_queries + i and sees what a
 * single-token step at that position would see). q (n_queries, n_heads, head_dim) in,
 * out (n_queries, n_heads, head_dim). stats may be NULL.
 * Returns LMK_OK, LMK_EINVAL (n_queries > tokens, bad option), LMK_ECORRUPT (a stored value
 * failed its check), LMK_EINDEX, LMK_ESTORE, ENOMEM. */
int lmk_session_attend(lmk_session *s, int layer, int64_t n_queries, const float *q,
                       const lmk_attend_opts *opts, float *out, lmk_attend_stats *stats);

/* ---- inspection and maintenance ---- */

typedef struct lmk_session_info {
    int format_version;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    lmk_dtype dtype;
    lmk_landmark_src landmark;
    int n_repr;            /* index entries per block */
    char index_spec[128];
    char fingerprint[256];
    int64_t tokens;        /* tokens appended at every layer (the minimum over layers) */
    int64_t blocks;        /* sealed blocks at layer 0 */
    uint64_t disk_bytes;
} lmk_session_info;

int lmk_session_info_get(lmk_session *s, lmk_session_info *info);

/* Tokens appended so far at `layer` (-1 for layer out of range). */
int64_t lmk_session_tokens(const lmk_session *s, int layer);

/* 64-bit digest of the stored data (block K/V, landmarks, tail, shape, dtype): equal for
 * sessions holding equal data, independent of the index spec and of the file layout. */
int lmk_session_data_digest(lmk_session *s, uint64_t *digest);

/* Flush all committed data and the index files to stable storage. */
int lmk_session_sync(lmk_session *s);

/* Cut every layer back to n_tokens (<= tokens at every layer) in one store commit (an
 * interruption leaves every layer at the old length or every layer at the new one). Indices
 * are truncated accordingly; should FAISS fail, the index is rebuilt, and if that fails the
 * handle is broken (LMK_ESTATE, see transactions). */
int lmk_session_truncate(lmk_session *s, int64_t n_tokens);

/* Write a compact copy of the session to the new directory dst. */
int lmk_session_fork(lmk_session *s, const char *dst);

/* Rebuild every landmark index with another factory spec from the stored landmarks. */
int lmk_session_reindex(lmk_session *s, const char *spec);

/* Check every stored value's checksum, the metadata, and that each index covers exactly
 * the stored blocks. Problems are reported through report(ud, msg) (may be NULL); *n_errors
 * and *blocks_checked are set. Returns LMK_OK when the walk completed (even with errors). */
int lmk_session_verify(lmk_session *s, void (*report)(void *ud, const char *msg), void *ud,
                       int64_t *blocks_checked, int64_t *n_errors);

/* Borrowed access to the index of (layer, kv_head) for benchmarks and tests; valid until
 * the session is closed or reindexed. NULL when out of range. */
struct lmk_index *lmk_session_index(lmk_session *s, int layer, int kv_head);

/* Copy the stored (dtype-rounded) keys and values of tokens [t0, t0+n) at `layer` into
 * k, v (n, n_kv_heads, head_dim) f32, reading blocks from the store as needed. For
 * references and tests. */
int lmk_session_read_kv(lmk_session *s, int layer, int64_t t0, int64_t n, float *k, float *v);

/* Copy the landmark of block b of (layer, kv_head) into l (n_repr, head_dim): its index
 * entries (one vector except for multi-entry representatives). */
int lmk_session_landmark(lmk_session *s, int layer, int kv_head, int64_t b, float *l);

#ifdef __cplusplus
}
#endif
#endif
