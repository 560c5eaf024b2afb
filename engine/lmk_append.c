/* Appending tokens to a layer and sealing full blocks. The unsealed tail lives in memory
 * and, encoded, under tail keys in the store; a block of L tokens is sealed when the next
 * token arrives: its K and V are written as one block value, its landmark (the last token's
 * key, or the mean key) as a landmark value and into the KV head's index. Store writes and
 * index additions of one call succeed or fail together. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

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
    float *lms;      /* (n_kv_heads, nseal, head_dim): landmarks of the sealed blocks */
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
    if (lmk_buf_reserve(&s->enc, lmk_szadd(stage_bytes, enc_bytes)) ||
        lmk_buf_reserve(&s->lmbuf, lmk_szmul((size_t)(a->nseal > 0 ? a->nseal : 1),
                                             row * sizeof(float))))
        return lmk_sess_fail(s, ENOMEM, "out of memory staging %lld tokens", (long long)n);
    a->sk = s->enc.p;
    a->sv = a->sk + (size_t)n * row;
    a->enc = (uint8_t *)(a->sv + (size_t)n * row);
    a->lms = s->lmbuf.p;
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

/* Landmark of block b of KV head h into lm (head_dim). */
static void make_landmark(const lmk_session *s, const append_job *a, int h, int64_t b,
                          float *lm)
{
    const int L = s->L, D = s->head_dim;
    int64_t j0 = (b - a->nb_old) * L; /* first concatenation row of block b */
    if (s->landmark == LMK_LANDMARK_TOKEN) {
        memcpy(lm, cat_row(s, a->ly, a->u, a->sk, h, j0 + L - 1), (size_t)D * 4);
    } else {
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int i = 0; i < L; i++)
                acc += cat_row(s, a->ly, a->u, a->sk, h, j0 + i)[d];
            lm[d] = (float)(acc / L);
        }
    }
}

/* Into the batch: block and landmark values of every block this call seals. */
static int put_sealed_blocks(lmk_session *s, const append_job *a)
{
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    const lmk_layer *ly = a->ly;
    for (int64_t b = a->nb_old; b < a->nb_new; b++) {
        int64_t j0 = (b - a->nb_old) * L;
        for (int h = 0; h < H; h++) {
            float *lm = a->lms + ((size_t)h * a->nseal + (size_t)(b - a->nb_old)) * D;
            make_landmark(s, a, h, b, lm);
            for (int i = 0; i < L; i++) {
                lmk_values_encode(s, cat_row(s, ly, a->u, a->sk, h, j0 + i), (size_t)D,
                                  a->enc + (size_t)i * D * s->esz);
                const float *vr = j0 + i < a->u
                                      ? ly->tail_v + ((size_t)h * L + (size_t)(j0 + i)) * D
                                      : a->sv + ((size_t)(j0 + i - a->u) * H + h) * D;
                lmk_values_encode(s, vr, (size_t)D, a->enc + ((size_t)L + i) * D * s->esz);
            }
            lmk_key bk = mkkey(LMK_KEY_BLOCK, a->layer, h, b);
            lmk_key lk = mkkey(LMK_KEY_LANDMARK, a->layer, h, b);
            int rc;
            if ((rc = lmk_store_put(s->st, &bk, a->enc, 2 * (size_t)L * D * s->esz)) ||
                (rc = lmk_store_put(s->st, &lk, lm, (size_t)D * 4)))
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
}

LMK_API int lmk_session_append(lmk_session *s, int layer, int64_t n, const float *k,
                               const float *v)
{
    if (!s)
        return LMK_EINVAL;
    if (s->read_only)
        return lmk_sess_fail(s, LMK_EREADONLY, "session is open read-only");
    if (layer < 0 || layer >= s->n_layers)
        return lmk_sess_fail(s, LMK_EINVAL, "layer %d out of range 0..%d", layer,
                             s->n_layers - 1);
    if (n < 0 || (n > 0 && (!k || !v)) || n > ((int64_t)1 << 32))
        return lmk_sess_fail(s, LMK_EINVAL, "bad token count or NULL k/v");
    if (n == 0)
        return LMK_OK;
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    append_job a;
    memset(&a, 0, sizeof a);
    a.layer = layer;
    a.n = n;
    a.ly = &s->layers[layer];
    a.nb_old = lmk_sealed(a.ly->ntok, L);
    a.nb_new = lmk_sealed(a.ly->ntok + n, L);
    a.u = a.ly->ntok - a.nb_old * L;
    a.nseal = a.nb_new - a.nb_old;
    int rc = stage_tokens(s, &a, k, v);
    if (rc)
        return rc;

    if ((rc = lmk_store_batch_begin(s->st)))
        return lmk_sess_store_fail(s, rc, "starting a write");
    if ((rc = put_sealed_blocks(s, &a)) || (rc = put_tail(s, &a))) {
        lmk_store_batch_abort(s->st);
        return lmk_sess_store_fail(s, rc, "staging appended tokens");
    }
    /* Index before commit so a failure can undo both; after a failed commit the indices
     * are cut back to what the store holds. */
    int h_done = 0;
    for (; a.nseal > 0 && h_done < H; h_done++) {
        lmk_index *idx = s->idx[layer * H + h_done];
        int arc = lmk_index_add(idx, a.nseal, a.lms + (size_t)h_done * a.nseal * D);
        if (arc) {
            lmk_sess_index_fail(s, arc, idx, "adding landmarks");
            rc = arc;
            goto undo_index;
        }
    }
    if ((rc = lmk_store_batch_commit(s->st))) {
        lmk_sess_store_fail(s, rc, "committing appended tokens");
        goto undo_index;
    }
    for (int h = 0; h < H && a.nseal > 0; h++)
        s->idx_dirty[layer * H + h] = 1;
    shift_tail(s, &a);
    a.ly->ntok += n;
    return LMK_OK;

undo_index:
    for (int h = 0; h < h_done; h++)
        lmk_index_truncate(s->idx[layer * H + h], a.nb_old);
    lmk_store_batch_abort(s->st);
    return rc;
}
