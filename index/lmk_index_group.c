/* Multi-entry search: items (blocks) of `group` consecutive entries each, item = id / group,
 * an item scored by the maximum over its entries. Built on lmk_index_search: fetch the top
 * kk entries, keep the first k distinct items, and widen kk until k items are found or every
 * allowed entry has been seen. */
#include "lmk_index_internal.h"

/* The first k distinct items of n entries (best first) into out (scores into osc when
 * given); returns how many. */
static int distinct(const int64_t *ent, const float *sc, int64_t n, int group, int k,
                    int64_t *out, float *osc)
{
    int got = 0;
    for (int64_t e = 0; e < n && got < k; e++) {
        if (ent[e] < 0)
            break;
        int64_t it = ent[e] / group;
        int dup = 0;
        for (int j = 0; j < got && !dup; j++)
            dup = out[j] == it;
        if (dup)
            continue;
        out[got] = it;
        if (osc)
            osc[got] = sc[e];
        got++;
    }
    return got;
}

LMK_API int lmk_index_search_groups(lmk_index *idx, int64_t nq, const float *q, int k,
                                    int group, int64_t limit_items,
                                    const lmk_search_params *params, int64_t *ids,
                                    float *scores)
{
    if (!idx)
        return LMK_EINVAL;
    if (group < 1 || k < 1 || nq < 0) {
        set_err(idx, "lmk_index_search_groups: k = %d, group = %d", k, group);
        return LMK_EINVAL;
    }
    if (group == 1)
        return lmk_index_search(idx, nq, q, k, limit_items, params, ids, scores);
    int64_t items = idx->ntotal / group;
    if (limit_items <= 0 || limit_items > items)
        limit_items = items;
    int64_t lim = limit_items * group;
    if (nq == 0)
        return LMK_OK;
    /* First pass, every query at once: k * min(group, 8) entries (best entries cluster in
     * few items: a block's keys resemble each other). */
    int64_t kk0 = (int64_t)k * (group < 8 ? group : 8);
    kk0 = kk0 < lim ? kk0 : lim;
    if (kk0 > INT32_MAX)
        kk0 = INT32_MAX;
    if (lim > 0) {
        size_t need = (size_t)nq * (size_t)kk0;
        if (grow((void **)&idx->g_i, &idx->g_cap, need, sizeof(int64_t)) ||
            grow((void **)&idx->g_s, &idx->g_scap, need, sizeof(float))) {
            set_err(idx, "out of memory for a search of %lld entries", (long long)need);
            return ENOMEM;
        }
        int rc = lmk_index_search(idx, nq, q, (int)kk0, lim, params, idx->g_i, idx->g_s);
        if (rc)
            return rc;
    }
    for (int64_t i = 0; i < nq; i++) {
        int64_t *out = ids + (size_t)i * k;
        float *osc = scores ? scores + (size_t)i * k : NULL;
        int n = lim > 0 ? distinct(idx->g_i + (size_t)i * kk0, idx->g_s + (size_t)i * kk0, kk0,
                                   group, k, out, osc)
                        : 0;
        for (int j = n; j < k; j++) {
            out[j] = -1;
            if (osc)
                osc[j] = -INFINITY;
        }
        /* Rows short of k items: widen (x4) one query at a time. The scratch of the first
         * pass is no longer needed by this row but by later rows: use a second area. */
        for (int64_t kk = kk0; n < k && kk < lim && kk < INT32_MAX;) {
            kk = kk * 4 < lim ? kk * 4 : lim;
            if (kk > INT32_MAX)
                kk = INT32_MAX;
            if (grow((void **)&idx->w_i, &idx->w_cap, (size_t)kk, sizeof(int64_t)) ||
                grow((void **)&idx->w_s, &idx->w_scap, (size_t)kk, sizeof(float))) {
                set_err(idx, "out of memory for a search of %lld entries", (long long)kk);
                return ENOMEM;
            }
            int rc = lmk_index_search(idx, 1, q + (size_t)i * idx->dim, (int)kk, lim, params,
                                      idx->w_i, idx->w_s);
            if (rc)
                return rc;
            n = distinct(idx->w_i, idx->w_s, kk, group, k, out, osc);
        }
    }
    return LMK_OK;
}
