/* Fetch phase of an attend call: the blocks the (query, head) pairs need, per KV head:
 * retrieved, sinks, sealed parts of local windows. Each needed block is read once, in
 * one read transaction (serial: an LMDB read transaction is single-threaded), and
 * decoded to f32 K and V. Blocks sealed inside the writer's open transaction are not in the
 * store yet: they come from the transaction's memory. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_attend_internal.h"

int lmk_sess_load_block(lmk_session *s, int layer, int kvh, int64_t b, float *k, float *v)
{
    size_t rows = (size_t)s->L * s->head_dim;
    size_t want = 2 * rows * s->esz, len = 0;
    if (lmk_buf_reserve(&s->rawblk, want))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    const lmk_txn_layer *t = &s->txl[layer];
    if (s->txn == LMK_TXN_EXPLICIT && t->touched && b >= lmk_sealed(t->ntok0, s->L)) {
        /* sealed inside the open transaction: kept encoded until commit */
        const uint8_t *src =
            (const uint8_t *)t->blocks.p +
            ((size_t)(b - lmk_sealed(t->ntok0, s->L)) * s->n_kv_heads + kvh) * want;
        lmk_values_decode(s, src, rows, k);
        lmk_values_decode(s, src + rows * s->esz, rows, v);
        return LMK_OK;
    }
    lmk_key key = mkkey(LMK_KEY_BLOCK, layer, kvh, b);
    const void *val = NULL;
    /* decoded straight from the store's map (checksummed there), without a copy; the
     * callers hold a read, so the view stays valid until they end it */
    int rc = lmk_store_get_view(s->st, &key, &val, &len);
    if (rc == LMK_ENOTFOUND)
        return lmk_sess_fail(s, LMK_ECORRUPT, "block %lld of layer %d head %d is missing",
                             (long long)b, layer, kvh);
    if (rc)
        return lmk_sess_store_fail(s, rc, "reading a block");
    if (len != want)
        return lmk_sess_fail(s, LMK_ECORRUPT, "block %lld of layer %d head %d has %zu bytes, "
                             "expected %zu", (long long)b, layer, kvh, len, want);
    if ((uintptr_t)val % 4) {
        /* a small value stored inside its B-tree page sits at any byte offset: the f16 and
         * f32 rows are read aligned, so copy it first (large blocks live page-aligned) */
        memcpy(s->rawblk.p, val, len);
        val = s->rawblk.p;
    }
    lmk_values_decode(s, val, rows, k);
    lmk_values_decode(s, (const char *)val + rows * s->esz, rows, v);
    return LMK_OK;
}

/* Upper bound on the entries of the need list over all KV heads (before dedupe). */
static size_t need_bound(const lmk_attend_plan *p)
{
    const int G = p->s->group, L = p->s->L;
    const qgeo *g = p->g;
    size_t need_cap = 0;
    for (int64_t i = 0; i < p->nq; i++) {
        int64_t lo = g[i].local_start / L;
        int64_t hi = g[i].S < p->sealed_T ? g[i].S : p->sealed_T;
        need_cap += (size_t)G * p->max_sel + (size_t)((g[i].n_sink + L - 1) / L) +
                    (size_t)(hi > lo ? hi - lo : 0) + (size_t)(g[i].p / L < p->sealed_T ? 1 : 0);
    }
    return need_cap * (size_t)p->s->n_kv_heads;
}

/* The sorted, unique needed blocks of every KV head into s->need at s->need_off; returns
 * their total count. */
static int64_t list_needed(const lmk_attend_plan *p)
{
    lmk_session *s = p->s;
    const int H = s->n_kv_heads, NH = s->n_heads, G = s->group, L = s->L;
    const qgeo *g = p->g;
    int64_t *need = s->need.p;
    int64_t nn = 0;
    for (int kvh = 0; kvh < H; kvh++) {
        int64_t start = nn;
        s->need_off[kvh] = start;
        /* A query whose selection, sinks or local window repeat the previous query's adds
         * nothing new (under chunk retrieval a chunk's queries share one selection): those
         * are skipped before the sort, which then sees a few entries per block, not one per
         * query. */
        for (int64_t i = 0; i < p->nq; i++) {
            for (int gg = 0; gg < G; gg++) {
                int h = kvh * G + gg;
                const int64_t *sl = p->sel + ((size_t)i * NH + h) * p->max_sel;
                int n = p->nsel[i * NH + h];
                if (i > 0 && p->nsel[(i - 1) * NH + h] == n &&
                    !memcmp(sl, sl - (size_t)NH * p->max_sel, (size_t)n * sizeof *sl))
                    continue;
                for (int j = 0; j < n; j++)
                    need[nn++] = sl[j];
            }
            if (i == 0 || g[i].n_sink != g[i - 1].n_sink)
                for (int64_t b = 0; b * L < g[i].n_sink; b++)
                    need[nn++] = b;
            int64_t lo = g[i].local_start / L, top = g[i].p / L; /* block of the query itself */
            if (i > 0 && lo == g[i - 1].local_start / L && top == g[i - 1].p / L)
                continue;
            for (int64_t b = lo; b <= top && b < p->sealed_T; b++)
                need[nn++] = b;
        }
        qsort(need + start, (size_t)(nn - start), sizeof *need, lmk_cmp_i64);
        int64_t u = start;
        for (int64_t j = start; j < nn; j++)
            if (u == start || need[u - 1] != need[j])
                need[u++] = need[j];
        nn = u;
    }
    s->need_off[H] = nn;
    return nn;
}

int lmk_attend_fetch(lmk_attend_plan *p)
{
    lmk_session *s = p->s;
    const int H = s->n_kv_heads;
    p->sealed_T = lmk_sealed(p->T, s->L);
    if (lmk_buf_reserve(&s->need, lmk_szadd(lmk_szmul(need_bound(p), sizeof(int64_t)), 8)))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    int64_t nn = list_needed(p);
    const int64_t *need = s->need.p;
    p->n_need = nn;

    size_t blk_floats = (size_t)s->L * s->head_dim;
    size_t nslot = (size_t)(nn ? nn : 1);
    if (lmk_buf_reserve(&s->slots, lmk_szmul(nslot, sizeof(lmk_slot))) ||
        lmk_buf_reserve(&s->slotmem, lmk_szmul(nslot, 2 * blk_floats * sizeof(float))))
        return lmk_sess_fail(s, ENOMEM, "out of memory fetching %lld blocks", (long long)nn);
    lmk_slot *slots = s->slots.p;
    float *mem = s->slotmem.p;
    int rc = lmk_store_read_begin(s->st);
    if (rc)
        return lmk_sess_fail(s, rc, "starting a read: %s", lmk_store_errmsg(s->st));
    lmk_bcache_begin_call(s);
    const lmk_txn_layer *t = &s->txl[p->layer];
    /* blocks sealed inside an open transaction come from its memory and may be undone:
     * they are not cached */
    int64_t txn_from = s->txn == LMK_TXN_EXPLICIT && t->touched ? lmk_sealed(t->ntok0, s->L)
                                                                  : INT64_MAX;
    for (int kvh = 0; kvh < H && !rc; kvh++)
        for (int64_t j = s->need_off[kvh]; j < s->need_off[kvh + 1]; j++) {
            int64_t b = need[j];
            slots[j].block = b;
            float *k = b < txn_from ? lmk_bcache_find(s, p->layer, kvh, b) : NULL;
            size_t cslot = 0;
            if (!k) {
                float *dst = b < txn_from ? lmk_bcache_claim(s, p->layer, kvh, b, &cslot) : NULL;
                float *into = dst ? dst : mem + (size_t)j * 2 * blk_floats;
                if ((rc = lmk_sess_load_block(s, p->layer, kvh, b, into, into + blk_floats)))
                    break;
                if (dst)
                    lmk_bcache_fill(s, p->layer, kvh, b, cslot);
                k = into;
            }
            slots[j].k = k;
            slots[j].v = k + blk_floats;
        }
    lmk_store_read_end(s->st);
    return rc;
}
