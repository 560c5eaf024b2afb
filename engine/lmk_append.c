/* Appending tokens to a layer and sealing full blocks. The unsealed tail lives in memory
 * and, encoded, under tail keys in the store; a block of L tokens is sealed when the next
 * token arrives: its K and V are written as one block value, its landmark (the last token's
 * key, or the mean key) as a landmark value and into the KV head's index. Store writes and
 * index additions of one call succeed or fail together.
 *
 * Every append runs in a session transaction: the caller's (lmk_session_begin .. commit or
 * abort) or an implicit one around the call. Appends buffer their writes in the store's
 * pending batch (one LMDB commit at the end) and add landmarks to the indices at once; the
 * transaction remembers what undoing needs: each layer's count and tail rows at begin
 * (saved before the first seal), and the index lengths (the sealed blocks at begin). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lmk_internal.h"

/* One append call: the layer's counts before and after, and the staged tokens. */
typedef struct append_job {
    int layer;
    int64_t n;       /* tokens appended */
    lmk_layer *ly;
    int64_t nb_old;  /* sealed blocks before */
    int64_t nb_new;  /* sealed blocks after */
    int64_t u;       /* tokens in the tail before */
    int64_t nseal;   /* blocks sealed by this call */
    float *sk, *sv;  /* (n, n_kv_heads, head_dim): new tokens rounded to the storage dtype */
    uint8_t *enc;    /* one encoded block or token value */
    float *lms;      /* (n_kv_heads, nseal, R, head_dim): landmarks of the sealed blocks */
    const float *q;  /* (n, n_heads, head_dim) queries of the new tokens, or NULL */
    float *rk, *rq, *rs; /* representative scratch: keys (L, D), queries (L, G, D), (2L) */
    unsigned char *rok;  /* (L) */
    size_t bb;       /* bytes of one encoded block value */
    int64_t nb_txn;  /* sealed blocks when the transaction began */
    uint8_t *keep;   /* explicit transaction: where its sealed blocks are kept, or NULL */
} append_job;

/* Row j (0-based from the first unsealed token) of the concatenation tail ++ staged tokens,
 * KV head h. */
static const float *cat_row(const lmk_session *s, const lmk_layer *ly, int64_t u,
                            const float *stage, int h, int64_t j)
{
    if (j < u)
        return ly->tail_k + ((size_t)h * s->L + (size_t)j) * s->head_dim;
    return stage + ((size_t)(j - u) * s->n_kv_heads + h) * s->head_dim;
}

/* Stage: new tokens rounded to the storage dtype (n, H, D) for K and V, then encoded
 * block/tail values, then landmarks. Refuses non-finite values. */
static int stage_tokens(lmk_session *s, append_job *a, const float *k, const float *v)
{
    const int L = s->L, D = s->head_dim;
    const size_t row = (size_t)s->n_kv_heads * D;
    const int64_t n = a->n;
    size_t stage_bytes = lmk_szmul(lmk_szmul((size_t)n, row), 2 * sizeof(float));
    size_t enc_bytes = 2 * (size_t)(L > 1 ? L : 1) * D * s->esz + 2 * row * s->esz;
    size_t lm_floats = lmk_szmul((size_t)(a->nseal > 0 ? a->nseal : 1), row * (size_t)s->R);
    size_t rs_floats = (size_t)L * D * (1 + (size_t)s->group) + 2 * (size_t)L;
    if (lmk_buf_reserve(&s->enc, lmk_szadd(stage_bytes, enc_bytes)) ||
        lmk_buf_reserve(&s->lmbuf, lmk_szadd(lmk_szmul(lmk_szadd(lm_floats, rs_floats),
                                                       sizeof(float)), (size_t)L)))
        return lmk_sess_fail(s, ENOMEM, "out of memory staging %lld tokens", (long long)n);
    a->sk = s->enc.p;
    a->sv = a->sk + (size_t)n * row;
    a->enc = (uint8_t *)(a->sv + (size_t)n * row);
    a->lms = s->lmbuf.p;
    a->rk = a->lms + lm_floats;
    a->rq = a->rk + (size_t)L * D;
    a->rs = a->rq + (size_t)L * s->group * D;
    a->rok = (unsigned char *)(a->rs + 2 * (size_t)L);
    lmk_values_round(s, k, (size_t)n * row, a->sk);
    lmk_values_round(s, v, (size_t)n * row, a->sv);
    for (size_t i = 0; i < (size_t)n * row; i++)
        if (!isfinite(a->sk[i]) || !isfinite(a->sv[i]))
            return lmk_sess_fail(s, LMK_EINVAL,
                                 "token %lld has a non-finite key or value%s",
                                 (long long)(a->ly->ntok + (int64_t)(i / row)),
                                 s->dtype == LMK_DTYPE_F16 ? " (after f16 rounding)" : "");
    return LMK_OK;
}

/* Landmark of block b of KV head h into lm (R, head_dim): the block's keys (and, for
 * representatives chosen by queries, its tokens' queries) gathered, then lmk_repr_make. */
static void make_landmark(const lmk_session *s, const append_job *a, int h, int64_t b,
                          float *lm)
{
    const int L = s->L, D = s->head_dim, G = s->group, NH = s->n_heads;
    int64_t j0 = (b - a->nb_old) * L; /* first concatenation row of block b */
    for (int i = 0; i < L; i++)
        memcpy(a->rk + (size_t)i * D, cat_row(s, a->ly, a->u, a->sk, h, j0 + i), (size_t)D * 4);
    int wq = lmk_repr_wants_queries(s->landmark);
    for (int i = 0; wq && i < L; i++) {
        int64_t j = j0 + i;
        const float *src = NULL;
        if (j < a->u)
            src = a->ly->tail_qok[j] ? a->ly->tail_q + ((size_t)j * NH + (size_t)h * G) * D : NULL;
        else if (a->q)
            src = a->q + ((size_t)(j - a->u) * NH + (size_t)h * G) * D;
        a->rok[i] = src != NULL;
        if (src)
            memcpy(a->rq + (size_t)i * G * D, src, (size_t)G * D * 4);
    }
    lmk_repr_make(s->landmark, L, D, G, s->R, a->rk, wq ? a->rq : NULL, wq ? a->rok : NULL,
                  a->rs, lm);
}

/* Into the batch: block and landmark values of every block this call seals. */
static int put_sealed_blocks(lmk_session *s, const append_job *a)
{
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    const lmk_layer *ly = a->ly;
    for (int64_t b = a->nb_old; b < a->nb_new; b++) {
        int64_t j0 = (b - a->nb_old) * L;
        for (int h = 0; h < H; h++) {
            float *lm = a->lms + ((size_t)h * a->nseal + (size_t)(b - a->nb_old)) * s->R * D;
            make_landmark(s, a, h, b, lm);
            for (int i = 0; i < L; i++) {
                lmk_values_encode(s, cat_row(s, ly, a->u, a->sk, h, j0 + i), (size_t)D,
                                  a->enc + (size_t)i * D * s->esz);
                const float *vr = j0 + i < a->u
                                      ? ly->tail_v + ((size_t)h * L + (size_t)(j0 + i)) * D
                                      : a->sv + ((size_t)(j0 + i - a->u) * H + h) * D;
                lmk_values_encode(s, vr, (size_t)D, a->enc + ((size_t)L + i) * D * s->esz);
            }
            if (a->keep) /* attend calls inside the transaction read it from here */
                memcpy(a->keep + ((size_t)(b - a->nb_txn) * H + h) * a->bb, a->enc, a->bb);
            lmk_key bk = mkkey(LMK_KEY_BLOCK, a->layer, h, b);
            lmk_key lk = mkkey(LMK_KEY_LANDMARK, a->layer, h, b);
            int rc;
            if ((rc = lmk_store_put(s->st, &bk, a->enc, 2 * (size_t)L * D * s->esz)) ||
                (rc = lmk_store_put(s->st, &lk, lm, (size_t)s->R * D * 4)))
                return rc;
        }
    }
    return LMK_OK;
}

/* Into the batch: the tail records that are now inside sealed blocks removed, the new
 * tokens that stay unsealed added, the layer's token count. */
static int put_tail(lmk_session *s, const append_job *a)
{
    const int L = s->L;
    const size_t row = (size_t)s->n_kv_heads * s->head_dim;
    const lmk_layer *ly = a->ly;
    int rc;
    if (a->nseal > 0 && a->u > 0) {
        lmk_key from = mkkey(LMK_KEY_TAIL, a->layer, 0, a->nb_old * L);
        lmk_key to = mkkey(LMK_KEY_TAIL, a->layer, 0, a->nb_new * L - 1);
        if ((rc = lmk_store_del_range(s->st, &from, &to)))
            return rc;
    }
    int64_t keep_from = a->nb_new * L > ly->ntok ? a->nb_new * L : ly->ntok;
    for (int64_t p = keep_from; p < ly->ntok + a->n; p++) {
        int64_t i = p - ly->ntok;
        lmk_values_encode(s, a->sk + (size_t)i * row, row, a->enc);
        lmk_values_encode(s, a->sv + (size_t)i * row, row, a->enc + row * s->esz);
        lmk_key tk = mkkey(LMK_KEY_TAIL, a->layer, 0, p);
        if ((rc = lmk_store_put(s->st, &tk, a->enc, 2 * row * s->esz)))
            return rc;
    }
    char name[32];
    uint8_t rec[16];
    snprintf(name, sizeof name, "layer/%d", a->layer);
    size_t rl = lmk_layer_rec_encode(ly->ntok + a->n, rec, sizeof rec);
    return lmk_store_put_meta(s->st, name, rec, rl);
}

/* Shift the tail: it becomes concatenation rows [nseal * L, u + n). */
static void shift_tail(const lmk_session *s, const append_job *a)
{
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    lmk_layer *ly = a->ly;
    const int64_t u = a->u;
    int64_t first = a->nseal * L, total = u + a->n;
    for (int h = 0; h < H; h++) {
        for (int64_t j = first; j < total; j++) {
            float *dk = ly->tail_k + ((size_t)h * L + (size_t)(j - first)) * D;
            float *dv = ly->tail_v + ((size_t)h * L + (size_t)(j - first)) * D;
            if (j < u) {
                memmove(dk, ly->tail_k + ((size_t)h * L + (size_t)j) * D, (size_t)D * 4);
                memmove(dv, ly->tail_v + ((size_t)h * L + (size_t)j) * D, (size_t)D * 4);
            } else {
                memcpy(dk, a->sk + ((size_t)(j - u) * H + h) * D, (size_t)D * 4);
                memcpy(dv, a->sv + ((size_t)(j - u) * H + h) * D, (size_t)D * 4);
            }
        }
    }
    if (!ly->tail_q)
        return;
    const size_t qrow = (size_t)s->n_heads * D;
    for (int64_t j = first; j < total; j++) {
        float *dq = ly->tail_q + (size_t)(j - first) * qrow;
        unsigned char *ok = &ly->tail_qok[j - first];
        if (j < u) {
            memmove(dq, ly->tail_q + (size_t)j * qrow, qrow * 4);
            *ok = ly->tail_qok[j];
        } else {
            *ok = a->q != NULL;
            if (a->q)
                memcpy(dq, a->q + (size_t)(j - u) * qrow, qrow * 4);
        }
    }
}

int lmk_fault_index_add, lmk_fault_index_truncate, lmk_fault_index_rebuild;

static int fault(int *counter)
{
    return *counter > 0 && --*counter == 0;
}

int lmk_sess_check_usable(lmk_session *s)
{
    if (s->broken)
        return lmk_sess_fail(s, LMK_ESTATE, "%s", s->broken_msg);
    return LMK_OK;
}

int lmk_sess_no_txn(lmk_session *s, const char *what)
{
    int rc = lmk_sess_check_usable(s);
    if (rc)
        return rc;
    if (s->txn == LMK_TXN_EXPLICIT)
        return lmk_sess_fail(s, LMK_ESTATE, "%s: a transaction is open (commit or abort it)",
                             what);
    return LMK_OK;
}

int lmk_sess_index_cut(lmk_session *s, int layer, int kvh, int64_t nblocks)
{
    const int H = s->n_kv_heads;
    const int64_t n = nblocks * s->R; /* index entries */
    lmk_index **slot = &s->idx[layer * H + kvh];
    if (n >= lmk_index_ntotal(*slot))
        return LMK_OK;
    int rc = fault(&lmk_fault_index_truncate) ? LMK_EINDEX : lmk_index_truncate(*slot, n);
    if (rc == LMK_OK)
        return LMK_OK;
    /* Rebuild from the index's own first n vectors (they are the stored landmarks). */
    char msg[512] = "";
    lmk_index_opts io = lmk_index_opts_default();
    io.spec = s->spec;
    io.dim = s->head_dim;
    lmk_index *fresh = NULL;
    int rc2 = LMK_EINDEX;
    if (fault(&lmk_fault_index_rebuild))
        snprintf(msg, sizeof msg, "injected failure");
    else
        rc2 = lmk_index_create(&io, &fresh, msg, sizeof msg);
    if (rc2 == LMK_OK && n > 0 &&
        (rc2 = lmk_index_add(fresh, n, lmk_index_vectors(*slot))) != LMK_OK)
        snprintf(msg, sizeof msg, "%s", lmk_index_errmsg(fresh));
    if (rc2 == LMK_OK) {
        lmk_index_free(*slot);
        *slot = fresh;
        s->idx_dirty[layer * H + kvh] = 1;
        return LMK_OK;
    }
    lmk_index_free(fresh);
    /* The index no longer matches the store and cannot be fixed here: refuse everything
     * until a reopen rebuilds it (its file goes, so the reopen cannot trust a stale one). */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/index-L%d-H%d.lmki", s->dir, layer, kvh);
    unlink(path);
    s->idx_dirty[layer * H + kvh] = 0;
    s->broken = 1;
    snprintf(s->broken_msg, sizeof s->broken_msg,
             "index L%d H%d could not be cut back to %lld blocks (%s); reopen the session",
             layer, kvh, (long long)nblocks, msg);
    return lmk_sess_fail(s, LMK_ESTATE, "%s", s->broken_msg);
}

/* Open a transaction of the given kind (nothing is written until commit). */
static int txn_begin(lmk_session *s, int kind)
{
    int rc = lmk_store_batch_begin(s->st);
    if (rc)
        return lmk_sess_store_fail(s, rc, "starting a write");
    s->txn = kind;
    s->txn_bytes = 0;
    return LMK_OK;
}

/* Forget the transaction's undo state once it is committed or undone. */
static void txn_clear(lmk_session *s)
{
    for (int l = 0; l < s->n_layers; l++) {
        lmk_txn_layer *t = &s->txl[l];
        t->touched = 0;
        t->tail_saved = 0;
    }
    s->txn = LMK_TXN_NONE;
    s->txn_bytes = 0;
}

/* Undo every layer the transaction touched: indices, tails, counts; then drop the batch.
 * Returns LMK_OK or LMK_ESTATE when an index could not be cut back (session broken). */
int lmk_sess_txn_abort(lmk_session *s)
{
    if (s->txn == LMK_TXN_NONE)
        return LMK_OK;
    lmk_bcache_clear(&s->bcache);
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    int rc = LMK_OK;
    for (int l = 0; l < s->n_layers; l++) {
        lmk_txn_layer *t = &s->txl[l];
        if (!t->touched)
            continue;
        lmk_layer *ly = &s->layers[l];
        int64_t nb0 = lmk_sealed(t->ntok0, L);
        for (int h = 0; h < H; h++) {
            int crc = lmk_sess_index_cut(s, l, h, nb0);
            if (crc && !rc)
                rc = crc;
        }
        if (t->tail_saved) {
            size_t u0 = (size_t)(t->ntok0 - nb0 * L);
            const float *k0 = t->tail0.p, *v0 = k0 + (size_t)H * L * D;
            for (int h = 0; h < H; h++) {
                memcpy(ly->tail_k + (size_t)h * L * D, k0 + (size_t)h * L * D, u0 * D * 4);
                memcpy(ly->tail_v + (size_t)h * L * D, v0 + (size_t)h * L * D, u0 * D * 4);
            }
        }
        ly->ntok = t->ntok0;
        if (ly->tail_qok) /* the tail's queries are not kept for undo: they count as absent */
            memset(ly->tail_qok, 0, (size_t)L);
    }
    lmk_store_batch_abort(s->st);
    txn_clear(s);
    return rc;
}

/* Commit the batch. On failure the transaction stays open (the batch stays pending). */
static int txn_commit(lmk_session *s)
{
    int rc = lmk_store_batch_commit(s->st);
    if (rc)
        return lmk_sess_store_fail(s, rc, "committing appended tokens");
    for (int l = 0; l < s->n_layers; l++) {
        lmk_txn_layer *t = &s->txl[l];
        if (t->touched && lmk_sealed(s->layers[l].ntok, s->L) > lmk_sealed(t->ntok0, s->L))
            for (int h = 0; h < s->n_kv_heads; h++)
                s->idx_dirty[l * s->n_kv_heads + h] = 1;
    }
    txn_clear(s);
    return LMK_OK;
}

/* Store bytes one append buffers (values, not counting keys and checksums). */
static size_t append_bytes(const lmk_session *s, const append_job *a)
{
    size_t row = (size_t)s->n_kv_heads * s->head_dim;
    int64_t keep_from = a->nb_new * s->L > a->ly->ntok ? a->nb_new * s->L : a->ly->ntok;
    size_t per_block = lmk_szadd(lmk_szmul(a->bb, (size_t)s->n_kv_heads),
                                 lmk_szmul(row * sizeof(float), (size_t)s->R));
    size_t b = lmk_szmul((size_t)a->nseal, per_block);
    b = lmk_szadd(b, lmk_szmul((size_t)(a->ly->ntok + a->n - keep_from), 2 * row * s->esz));
    return lmk_szadd(b, 16);
}

/* One append inside the open transaction. On failure nothing of it remains (the batch is
 * rolled back to where it was, the indices cut back) and the transaction stays usable,
 * unless the session broke (LMK_ESTATE). */
static int append_in_txn(lmk_session *s, int layer, int64_t n, const float *k, const float *v,
                         const float *q)
{
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    lmk_txn_layer *t = &s->txl[layer];
    append_job a;
    memset(&a, 0, sizeof a);
    a.layer = layer;
    a.n = n;
    a.ly = &s->layers[layer];
    a.nb_old = lmk_sealed(a.ly->ntok, L);
    a.nb_new = lmk_sealed(a.ly->ntok + n, L);
    a.u = a.ly->ntok - a.nb_old * L;
    a.nseal = a.nb_new - a.nb_old;
    a.bb = 2 * (size_t)L * D * s->esz;
    a.q = q;
    int64_t ntok0 = t->touched ? t->ntok0 : a.ly->ntok;
    a.nb_txn = lmk_sealed(ntok0, L);
    size_t bytes = append_bytes(s, &a);
    if (s->txn == LMK_TXN_EXPLICIT && lmk_szadd(s->txn_bytes, bytes) > LMK_SESSION_TXN_MAX_BYTES)
        return lmk_sess_fail(s, LMK_EINVAL,
                             "appending %lld tokens at layer %d would take the transaction "
                             "to %zu bytes, above its limit of %zu (commit first)",
                             (long long)n, layer, lmk_szadd(s->txn_bytes, bytes),
                             (size_t)LMK_SESSION_TXN_MAX_BYTES);
    int rc = stage_tokens(s, &a, k, v);
    if (rc)
        return rc;
    /* undo state, taken before anything changes */
    if (s->txn == LMK_TXN_EXPLICIT && a.nseal > 0) {
        size_t need = lmk_szmul((size_t)(a.nb_new - a.nb_txn), lmk_szmul((size_t)H, a.bb));
        if (lmk_buf_reserve(&t->blocks, need))
            return lmk_sess_fail(s, ENOMEM, "out of memory keeping sealed blocks");
        a.keep = t->blocks.p;
    }
    if (a.nseal > 0 && !(t->touched && t->tail_saved)) {
        size_t per = (size_t)H * L * D;
        if (lmk_buf_reserve(&t->tail0, lmk_szmul(per, 2 * sizeof(float))))
            return lmk_sess_fail(s, ENOMEM, "out of memory");
        float *k0 = t->tail0.p, *v0 = k0 + per;
        for (int h = 0; h < H; h++) {
            memcpy(k0 + (size_t)h * L * D, a.ly->tail_k + (size_t)h * L * D, (size_t)a.u * D * 4);
            memcpy(v0 + (size_t)h * L * D, a.ly->tail_v + (size_t)h * L * D, (size_t)a.u * D * 4);
        }
    }
    size_t mark = lmk_store_batch_mark(s->st);
    if ((rc = put_sealed_blocks(s, &a)) || (rc = put_tail(s, &a))) {
        lmk_sess_store_fail(s, rc, "staging appended tokens");
        lmk_store_batch_rollback(s->st, mark);
        return rc;
    }
    int h_done = 0;
    for (; a.nseal > 0 && h_done < H; h_done++) {
        lmk_index *idx = s->idx[layer * H + h_done];
        int injected = fault(&lmk_fault_index_add);
        int arc = injected ? LMK_EINDEX
                           : lmk_index_add(idx, a.nseal * s->R,
                                           a.lms + (size_t)h_done * a.nseal * s->R * D);
        if (arc) {
            if (injected)
                lmk_sess_fail(s, arc, "adding landmarks: injected failure");
            else
                lmk_sess_index_fail(s, arc, idx, "adding landmarks");
            char why[sizeof s->err];
            memcpy(why, s->err, sizeof why);
            for (int h = 0; h < h_done; h++)
                if (lmk_sess_index_cut(s, layer, h, a.nb_old))
                    return LMK_ESTATE; /* broken: its message is the handle's */
            memcpy(s->err, why, sizeof why);
            lmk_store_batch_rollback(s->st, mark);
            return arc;
        }
    }
    if (!t->touched) {
        t->touched = 1;
        t->ntok0 = a.ly->ntok;
        t->tail_saved = 0;
    }
    if (a.nseal > 0)
        t->tail_saved = 1;
    shift_tail(s, &a);
    a.ly->ntok += n;
    s->txn_bytes = lmk_szadd(s->txn_bytes, bytes);
    return LMK_OK;
}

LMK_API int lmk_session_append(lmk_session *s, int layer, int64_t n, const float *k,
                               const float *v)
{
    return lmk_session_append_q(s, layer, n, k, v, NULL);
}

LMK_API int lmk_session_append_q(lmk_session *s, int layer, int64_t n, const float *k,
                                 const float *v, const float *q)
{
    if (!s)
        return LMK_EINVAL;
    if (s->read_only)
        return lmk_sess_fail(s, LMK_EREADONLY, "session is open read-only");
    int rc = lmk_sess_check_usable(s);
    if (rc)
        return rc;
    if (layer < 0 || layer >= s->n_layers)
        return lmk_sess_fail(s, LMK_EINVAL, "layer %d out of range 0..%d", layer,
                             s->n_layers - 1);
    if (n < 0 || (n > 0 && (!k || !v)) || n > ((int64_t)1 << 32))
        return lmk_sess_fail(s, LMK_EINVAL, "bad token count or NULL k/v");
    if (n == 0)
        return LMK_OK;
    if (s->txn == LMK_TXN_EXPLICIT)
        return append_in_txn(s, layer, n, k, v, q);
    if ((rc = txn_begin(s, LMK_TXN_IMPLICIT)))
        return rc;
    if ((rc = append_in_txn(s, layer, n, k, v, q)) || (rc = txn_commit(s))) {
        char why[sizeof s->err];
        memcpy(why, s->err, sizeof why);
        if (lmk_sess_txn_abort(s) == LMK_OK)
            memcpy(s->err, why, sizeof why);
        else
            rc = LMK_ESTATE;
    }
    return rc;
}

LMK_API int lmk_session_begin(lmk_session *s)
{
    if (!s)
        return LMK_EINVAL;
    if (s->read_only)
        return lmk_sess_fail(s, LMK_EREADONLY, "session is open read-only");
    int rc = lmk_sess_check_usable(s);
    if (rc)
        return rc;
    if (s->txn != LMK_TXN_NONE)
        return lmk_sess_fail(s, LMK_ESTATE, "a transaction is already open");
    return txn_begin(s, LMK_TXN_EXPLICIT);
}

LMK_API int lmk_session_commit(lmk_session *s)
{
    if (!s)
        return LMK_EINVAL;
    int rc = lmk_sess_check_usable(s);
    if (rc)
        return rc;
    if (s->txn != LMK_TXN_EXPLICIT)
        return lmk_sess_fail(s, LMK_ESTATE, "no transaction is open");
    return txn_commit(s);
}

LMK_API int lmk_session_abort(lmk_session *s)
{
    if (!s)
        return LMK_EINVAL;
    if (s->txn != LMK_TXN_EXPLICIT)
        return s->broken ? lmk_sess_check_usable(s)
                         : lmk_sess_fail(s, LMK_ESTATE, "no transaction is open");
    return lmk_sess_txn_abort(s);
}

LMK_API int lmk_session_in_txn(const lmk_session *s)
{
    return s && s->txn == LMK_TXN_EXPLICIT;
}
