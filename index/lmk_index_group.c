/* Multi-entry search: items (blocks) of `group` consecutive entries each, item = id / group,
 * an item scored by the maximum over its entries. Built on lmk_index_search: fetch the top
 * kk entries, keep the first k distinct items, and widen kk until k items are found or every
 * allowed entry has been seen. */
#include "lmk_index_internal.h"

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
    for (int64_t i = 0; i < nq; i++) {
        int64_t *out = ids + (size_t)i * k;
        float *osc = scores ? scores + (size_t)i * k : NULL;
        for (int j = 0; j < k; j++) {
            out[j] = -1;
            if (osc)
                osc[j] = -INFINITY;
        }
        if (lim == 0)
            continue;
        int64_t kk = (int64_t)k * 2 < lim ? (int64_t)k * 2 : lim;
        for (;;) {
            if (kk > INT32_MAX)
                kk = INT32_MAX;
            if (grow((void **)&idx->g_i, &idx->g_cap, (size_t)kk, sizeof(int64_t)) ||
                grow((void **)&idx->g_s, &idx->g_scap, (size_t)kk, sizeof(float))) {
                set_err(idx, "out of memory for a search of %lld entries", (long long)kk);
                return ENOMEM;
            }
            int rc = lmk_index_search(idx, 1, q + (size_t)i * idx->dim, (int)kk, lim, params,
                                      idx->g_i, idx->g_s);
            if (rc)
                return rc;
            int n = 0;
            for (int64_t e = 0; e < kk && n < k; e++) {
                if (idx->g_i[e] < 0)
                    break;
                int64_t it = idx->g_i[e] / group;
                int dup = 0;
                for (int j = 0; j < n && !dup; j++)
                    dup = out[j] == it;
                if (dup)
                    continue;
                out[n] = it;
                if (osc)
                    osc[n] = idx->g_s[e];
                n++;
            }
            if (n == k || kk >= lim || kk >= INT32_MAX)
                break;
            kk = kk * 4 < lim ? kk * 4 : lim;
        }
    }
    return LMK_OK;
}
