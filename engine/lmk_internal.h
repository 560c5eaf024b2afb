/* Private to engine/: the session's state and the helpers its files share. */
#ifndef LMK_INTERNAL_H
#define LMK_INTERNAL_H

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lmk_crc32c.h"
#include "lmk_index.h"
#include "lmk_session.h"
#include "lmk_store.h"

#include "lmk_export.h"
/* Version 1: landmark sources MEAN and TOKEN, one landmark vector per block.
 * Version 2: any source; the config record's last field is n_repr and a landmark record
 * holds n_repr vectors. New sessions with MEAN or TOKEN are still written as version 1,
 * so older builds keep opening them; both versions are read. */
#define LMK_FORMAT_VERSION 1
#define LMK_FORMAT_VERSION_REPR 2
#define LMK_MAX_SPEC 127
#define LMK_MAX_FINGERPRINT 255

/* Per-layer in-memory state. The tail holds tokens [sealed * L, ntok): at most L of them
 * (a full block waits for the next token before it is sealed). */
typedef struct lmk_layer {
    int64_t ntok;
    float *tail_k; /* (n_kv_heads, L, head_dim): dtype-rounded values as f32 */
    float *tail_v; /* (n_kv_heads, L, head_dim) */
    float *tail_q; /* (L, n_heads, head_dim): queries of the tail (ATTN, QUERY), else NULL */
    unsigned char *tail_qok; /* (L): 1 where tail_q holds a query */
} lmk_layer;

/* Decoded blocks kept across attend calls (lmk_bcache.c). */
typedef struct lmk_bcache {
    uint64_t *key;     /* (n) packed (layer, kvh, block) + 1; 0: empty */
    uint64_t *used;    /* (n) the fetch call that last used the entry */
    float *mem;        /* (n, 2, L, head_dim): K then V */
    size_t n;          /* entries: sets x 4 ways */
    size_t blk_floats; /* 2 * L * head_dim */
    uint64_t call;     /* the current fetch call */
    int off;           /* not used by this session (read-only, too big, no memory) */
} lmk_bcache;

/* Grow-only scratch: the hot path reallocates only when a call needs more than any before. */
typedef struct lmk_buf {
    void *p;
    size_t cap;
} lmk_buf;

/* What a session transaction (lmk_session_begin() or the implicit one of a plain append)
 * needs to undo or serve one layer. */
typedef struct lmk_txn_layer {
    int64_t ntok0;   /* tokens at begin */
    int touched;     /* appended to since begin */
    int tail_saved;  /* tail0 holds the tail's first ntok0 - sealed(ntok0) rows per KV head */
    lmk_buf tail0;   /* (2, n_kv_heads, L, head_dim) f32: K then V as at begin */
    lmk_buf blocks;  /* explicit transactions: the encoded blocks sealed since begin,
                        ((b - sealed(ntok0)) * n_kv_heads + h) * block_bytes */
} lmk_txn_layer;

enum { LMK_TXN_NONE = 0, LMK_TXN_EXPLICIT = 1, LMK_TXN_IMPLICIT = 2 };

/* A block decoded for one attend call: K and V of one (KV head, block), f32. */
typedef struct lmk_slot {
    int64_t block;
    float *k; /* (L, head_dim) */
    float *v; /* (L, head_dim) */
} lmk_slot;


struct lmk_session {
    char dir[PATH_MAX];
    int n_layers, n_heads, n_kv_heads, head_dim, L, group;
    lmk_dtype dtype;
    size_t esz; /* bytes per stored element */
    lmk_landmark_src landmark;
    int R; /* index entries per block (n_repr) */
    char spec[LMK_MAX_SPEC + 1];
    char fingerprint[LMK_MAX_FINGERPRINT + 1];
    int read_only;
    int n_threads;
    void (*log)(void *ud, const char *msg);
    void *log_ud;

    lmk_store *st;
    lmk_index **idx; /* (n_layers, n_kv_heads) */
    int *idx_dirty;  /* index changed since last save */
    lmk_layer *layers;

    /* session transaction */
    int txn;             /* LMK_TXN_* */
    size_t txn_bytes;    /* bytes buffered in the store batch by the transaction's appends */
    lmk_txn_layer *txl;  /* (n_layers) */
    /* Set when an undo could not bring an index back in step with the store: every call
     * but close then fails with LMK_ESTATE and this message (reopening rebuilds it). */
    int broken;
    char broken_msg[512];

    /* append scratch */
    lmk_buf enc;    /* encoded block / token values */
    lmk_buf lmbuf;  /* landmarks of sealed blocks, (n_kv_heads, nblocks, head_dim) */

    /* attend scratch */
    lmk_buf q_search; /* search queries */
    lmk_buf ids;      /* search results */
    lmk_buf sel;      /* selected blocks per (query, head): (nq, n_heads, max_sel) int64 */
    lmk_buf nsel;     /* (nq, n_heads) int */
    lmk_buf need;     /* needed block ids per kv head */
    lmk_buf slots;    /* lmk_slot per needed block */
    lmk_buf slotmem;  /* decoded K/V of needed blocks */
    lmk_buf rawblk;   /* one stored block value */
    lmk_buf *work;    /* per-thread compute scratch, n_threads entries */
    int64_t *need_off; /* per kv head offset into need/slots, n_kv_heads + 1 */
    lmk_bcache bcache;

    char err[1024];
};

/* Set the handle's message (printf-style) and return `code`. */
int lmk_sess_fail(lmk_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats a message (at most 511 bytes) and hands it to a caller's callback: logs and
 * verify reports. */
static inline void lmk_report_v(void (*cb)(void *ud, const char *msg), void *ud,
                                const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    cb(ud, msg);
}

/* a * b, saturating at SIZE_MAX: sizes computed from shapes and counts (which come from
 * callers and from disk) go through it, and a saturated size fails its allocation. */
static inline size_t lmk_szmul(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

static inline size_t lmk_szadd(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

/* Ensure b holds at least n bytes (contents kept). Returns 0 or ENOMEM (also for any n
 * above SIZE_MAX / 2). */
int lmk_buf_reserve(lmk_buf *b, size_t n);

/* The decoded-block cache (lmk_bcache.c). begin_call starts a fetch: entries found or
 * claimed from then on stay valid until the next begin_call. find returns a cached block's
 * K (V follows after L * head_dim floats) or NULL; claim returns memory to decode a block
 * into (NULL: none free, decode elsewhere) and the slot to pass to fill once it decoded.
 * clear forgets every block (truncation, aborted transactions); free releases it all. */
void lmk_bcache_begin_call(lmk_session *s);
float *lmk_bcache_find(lmk_session *s, int layer, int kvh, int64_t b);
float *lmk_bcache_claim(lmk_session *s, int layer, int kvh, int64_t b, size_t *slot);
void lmk_bcache_fill(lmk_session *s, int layer, int kvh, int64_t b, size_t slot);
void lmk_bcache_clear(lmk_bcache *c);
void lmk_bcache_free(lmk_bcache *c);

/* LMK_ESTATE with the reason when the session is broken, LMK_OK otherwise. */
int lmk_sess_check_usable(lmk_session *s);

/* Cut index (layer, kvh) back to n vectors (an undo or a truncation). When FAISS fails the
 * index is rebuilt from its own first n vectors; when that fails too the session is marked
 * broken (and the index file removed, so a reopen rebuilds it from the store). */
int lmk_sess_index_cut(lmk_session *s, int layer, int kvh, int64_t n);

/* Test hooks (fault injection): when > 0, decremented on every index addition (appends),
 * truncation (undo and truncate) and rebuild after a failed truncation; the call that brings
 * one to 0 fails with LMK_EINDEX. */
extern int lmk_fault_index_add, lmk_fault_index_truncate, lmk_fault_index_rebuild;
/* Test hook (fault injection): bit h set makes the index search of KV head h (h < 64) fail
 * with LMK_EINDEX in the search phase of attend, "searching layer L head h: injected fault";
 * 0 in normal use. */
extern uint64_t lmk_fault_search_kvh;

/* Refuse a call inside an explicit transaction (what: the call's name). */
int lmk_sess_no_txn(lmk_session *s, const char *what);

/* Abort whatever transaction is open (lmk_append.c); used by close. */
int lmk_sess_txn_abort(lmk_session *s);

/* Copy the store's message into the session's and return its code. */
static inline int lmk_sess_store_fail(lmk_session *s, int rc, const char *what)
{
    return lmk_sess_fail(s, rc, "%s: %s", what, lmk_store_errmsg(s->st));
}

/* Copy the index's message into the session's and return its code. */
static inline int lmk_sess_index_fail(lmk_session *s, int rc, const lmk_index *idx,
                                      const char *what)
{
    return lmk_sess_fail(s, rc, "%s: %s", what, idx ? lmk_index_errmsg(idx) : "");
}

/* n f32 values to the session's dtype (dst: n * esz bytes), back to f32, and rounded
 * through the dtype (f32 -> dtype -> f32) (lmk_values.c). */
void lmk_values_encode(const lmk_session *s, const float *src, size_t n, void *dst);
void lmk_values_decode(const lmk_session *s, const void *src, size_t n, float *dst);
void lmk_values_round(const lmk_session *s, const float *src, size_t n, float *dst);

/* Store key of a session record. */
static inline lmk_key mkkey(uint8_t kind, int layer, int head, int64_t index)
{
    lmk_key k = {kind, (uint16_t)layer, (uint16_t)head, (uint64_t)index};
    return k;
}

/* Sealed blocks at a layer holding ntok tokens. */
static inline int64_t lmk_sealed(int64_t ntok, int L)
{
    return ntok > 0 ? (ntok - 1) / L : 0;
}

/* Token count of layer l from its record in the store (0 when absent), in the caller's read
 * snapshot if one is open. LMK_ECORRUPT on a damaged record. */
int lmk_sess_read_layer_rec(lmk_session *s, int l, int64_t *ntok);

/* Read block b of (layer, kvh) from the store (inside the caller's read transaction if one
 * is open) and decode to f32 K, V (L, head_dim). */
int lmk_sess_load_block(lmk_session *s, int layer, int kvh, int64_t b, float *k, float *v);

/* Encoded configuration record ("config" meta) — parser exposed for the fuzzer. */
typedef struct lmk_config_rec {
    uint32_t format_version;
    int32_t n_layers, n_heads, n_kv_heads, head_dim, block_len, dtype, landmark;
    int32_t n_repr; /* version 2; 1 for version 1 */
    char spec[LMK_MAX_SPEC + 1];
    char fingerprint[LMK_MAX_FINGERPRINT + 1];
} lmk_config_rec;

size_t lmk_config_encode(const lmk_config_rec *c, uint8_t *buf, size_t cap);
/* Returns LMK_OK, LMK_ECORRUPT (malformed, checksum), LMK_EVERSION; msg gets detail. */
int lmk_config_decode(const void *data, size_t len, lmk_config_rec *c, char *msg,
                      size_t msg_cap);

/* Per-layer record ("layer/<l>"): token count. */
size_t lmk_layer_rec_encode(int64_t ntok, uint8_t *buf, size_t cap);
int lmk_layer_rec_decode(const void *data, size_t len, int64_t *ntok);

/* Representatives (lmk_repr.c). */

/* Index entries per block of a source (n_repr given for ATTN, QUERY, OUTLIER). */
int lmk_repr_count(int landmark, int block_len, int n_repr);

/* 1 when the source chooses its entries by queries. */
static inline int lmk_repr_wants_queries(int landmark)
{
    return landmark == LMK_LANDMARK_ATTN || landmark == LMK_LANDMARK_QUERY;
}

/* The R entries of one block of one KV head into out (R, D): keys (L, D) of the block;
 * q (L, G, D) the queries of the block's tokens for the G query heads reading this KV head,
 * qok (L) which of them are present (q and qok may be NULL: none); scratch >= 2 * L floats.
 * The naive reference in tests/test_repr.c states the same. */
void lmk_repr_make(int landmark, int L, int D, int G, int R, const float *keys, const float *q,
                   const unsigned char *qok, float *scratch, float *out);

#endif
