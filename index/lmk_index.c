/* landmark — landmark-key index over FAISS's C API (see lmk_index.h for the contract).
 *
 * State of a handle:
 *   vecs (ntotal, dim)   our own f32 copy of every vector, the source of truth;
 *   fi                   the FAISS index; `in_faiss` says whether it holds exactly the
 *                        vectors 0..ntotal-1 (transformed for "+l2") or nothing at all.
 * When !in_faiss the handle is in "exact mode": searches are brute force over vecs. That
 * is the state before train_min vectors exist, and the safe state to fall back to when a
 * FAISS rebuild fails, because it only needs vecs. Every FAISS rebuild builds a new index
 * and swaps it in on success, so a failure leaves the previous state intact.
 *
 * This file: create, add, truncate, search, train. The spec parser and RAM estimate are in
 * lmk_index_spec.c, the file format in lmk_index_file.c, the shared handle in
 * lmk_index_internal.h.
 *
 * Only the C API headers of FAISS are included; index/faiss_bridge.cpp implements the
 * functions used here when the system has no libfaiss_c.
 */

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "lmk_index_internal.h"

/* The "+l2" transform of n rows: y = [x, sqrt(M^2 - |x|^2)] (clamped at 0 against
 * rounding), shape (n, dim + 1). */
static void l2_transform(const float *x, int64_t n, int dim, float M, float *y)
{
    double m2 = (double)M * M;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * dim;
        float *yi = y + (size_t)i * (dim + 1);
        memcpy(yi, xi, (size_t)dim * sizeof(float));
        double r = m2 - sq_norm(xi, dim);
        yi[dim] = r > 0 ? (float)sqrt(r) : 0.0f;
    }
}

/* ---- FAISS index lifecycle ---- */

/* Apply the wanted search parameters to a freshly created or loaded FAISS index. */
static int apply_params(lmk_index *idx, int ef, int nprobe)
{
    int frc;
    if (ef > 0 && idx->ef_name && ef != idx->ef_cur) {
        frc = faiss_ParameterSpace_set_index_parameter(idx->ps, idx->fi, idx->ef_name, ef);
        if (frc)
            return faiss_fail(idx, frc, "setting efSearch");
        idx->ef_cur = ef;
    }
    if (nprobe > 0 && idx->has_nprobe && nprobe != idx->nprobe_cur) {
        frc = faiss_ParameterSpace_set_index_parameter(idx->ps, idx->fi, "nprobe", nprobe);
        if (frc)
            return faiss_fail(idx, frc, "setting nprobe");
        idx->nprobe_cur = nprobe;
    }
    return LMK_OK;
}

LMK_INTERNAL void lmk_index_swap_in(lmk_index *idx, FaissIndex *fi)
{
    faiss_Index_free(idx->fi);
    idx->fi = fi;
    idx->ef_cur = idx->nprobe_cur = 0;
}

/* Build a new FAISS index over vecs[0..n) (training it when the spec needs it, with a new
 * norm bound for "+l2") and swap it in. On failure the current index is untouched. */
static int build_faiss(lmk_index *idx, int64_t n)
{
    FaissIndex *fi = NULL;
    float *tx = NULL;
    float M = 0;
    int frc = faiss_index_factory(&fi, idx->fdim, idx->fspec, idx->metric);
    if (frc)
        return faiss_fail(idx, frc, "index_factory");
    const float *x = idx->vecs;
    if (idx->l2 && n > 0) {
        M = 1.25f * max_norm(idx->vecs, n, idx->dim);
        tx = malloc((size_t)n * idx->fdim * sizeof(float));
        if (!tx) {
            faiss_Index_free(fi);
            set_err(idx, "out of memory building the +l2 copy of %lld vectors", (long long)n);
            return ENOMEM;
        }
        l2_transform(idx->vecs, n, idx->dim, M, tx);
        x = tx;
    }
    int rc = LMK_OK;
    if (!faiss_Index_is_trained(fi)) {
        frc = faiss_Index_train(fi, n, x);
        if (frc)
            rc = faiss_fail(idx, frc, "train");
    }
    if (rc == LMK_OK && n > 0) {
        frc = faiss_Index_add(fi, n, x);
        if (frc)
            rc = faiss_fail(idx, frc, "add");
        else if (faiss_Index_ntotal(fi) != n) {
            set_err(idx, "FAISS add kept %lld of %lld vectors",
                    (long long)faiss_Index_ntotal(fi), (long long)n);
            rc = LMK_EINDEX;
        }
    }
    free(tx);
    if (rc != LMK_OK) {
        faiss_Index_free(fi);
        return rc;
    }
    lmk_index_swap_in(idx, fi);
    idx->in_faiss = 1;
    idx->M = M;
    /* the search parameters asked for before are index state: keep them. The index is
     * built and holds the vectors, so a failure here (a type that accepted them at
     * create) must not make the caller think the build failed; the next search that
     * passes them retries. */
    if (apply_params(idx, idx->ef_want, idx->nprobe_want) != LMK_OK)
        idx->ef_cur = idx->nprobe_cur = 0;
    return LMK_OK;
}

/* Put FAISS in the "holds nothing" state (exact mode) with a fresh, untrained index, so
 * that the add reaching train_min trains from scratch. */
static int drop_to_exact(lmk_index *idx)
{
    FaissIndex *fi = NULL;
    int frc = faiss_index_factory(&fi, idx->fdim, idx->fspec, idx->metric);
    if (frc) {
        /* keep the old object; emptying it is enough for exact mode */
        int rc = faiss_fail(idx, frc, "index_factory");
        if (faiss_Index_reset(idx->fi) == 0)
            idx->in_faiss = 0;
        return rc;
    }
    lmk_index_swap_in(idx, fi);
    idx->in_faiss = 0;
    (void)apply_params(idx, idx->ef_want, idx->nprobe_want);
    return LMK_OK;
}

/* Make FAISS hold exactly vecs[0..n) (n <= vectors it holds now), without retraining:
 * remove_ids of the range [n, ntotal) when the type supports it, else reset + re-add. */
static int faiss_shrink(lmk_index *idx, int64_t n)
{
    int64_t have = faiss_Index_ntotal(idx->fi);
    int frc;
    if (have == n)
        return LMK_OK;
    if (idx->can_remove) {
        FaissIDSelectorRange *sel = NULL;
        frc = faiss_IDSelectorRange_new(&sel, n, have > n ? have : n);
        if (frc)
            return faiss_fail(idx, frc, "IDSelectorRange");
        size_t removed = 0;
        frc = faiss_Index_remove_ids(idx->fi, (const FaissIDSelector *)sel, &removed);
        faiss_IDSelectorRange_free(sel);
        if (frc == 0 && faiss_Index_ntotal(idx->fi) == n)
            return LMK_OK;
        if (frc)
            (void)faiss_fail(idx, frc, "remove_ids");
        /* fall through to reset + re-add */
    }
    frc = faiss_Index_reset(idx->fi);
    if (frc)
        return faiss_fail(idx, frc, "reset");
    if (n == 0)
        return LMK_OK;
    const float *x = idx->vecs;
    if (idx->l2) {
        if (grow((void **)&idx->s_x, &idx->s_x_cap, (size_t)n * idx->fdim, sizeof(float))) {
            set_err(idx, "out of memory re-adding %lld vectors", (long long)n);
            return ENOMEM;
        }
        l2_transform(idx->vecs, n, idx->dim, idx->M, idx->s_x);
        x = idx->s_x;
    }
    frc = faiss_Index_add(idx->fi, n, x);
    if (frc)
        return faiss_fail(idx, frc, "add");
    if (faiss_Index_ntotal(idx->fi) != n) {
        set_err(idx, "FAISS holds %lld vectors after re-adding %lld",
                (long long)faiss_Index_ntotal(idx->fi), (long long)n);
        return LMK_EINDEX;
    }
    return LMK_OK;
}

/* ---- create / free ---- */

LMK_API lmk_index_opts lmk_index_opts_default(void)
{
    lmk_index_opts o;
    o.spec = "Flat";
    o.dim = 0; /* must be set by the caller */
    o.train_min = 0;
    return o;
}

/* The FAISS index of idx->fspec (PQ codes without polysemous training when FAISS accepts
 * that), checked to search by the metric and dimension we asked for. */
static int make_faiss(lmk_index *idx, const char *spec, char *msg, size_t cap)
{
    int frc = 1;
    char np_spec[FSPEC_CAP];
    if (lmk_index_spec_pq_without_np(idx->fspec, np_spec, sizeof np_spec)) {
        frc = faiss_index_factory(&idx->fi, idx->fdim, np_spec, idx->metric);
        if (frc == 0)
            snprintf(idx->fspec, sizeof idx->fspec, "%s", np_spec);
    }
    if (frc)
        frc = faiss_index_factory(&idx->fi, idx->fdim, idx->fspec, idx->metric);
    if (frc) {
        snprintf(msg, cap, "FAISS refuses index spec \"%s\": %s", spec,
                 faiss_msg());
        return (frc == -4 && strstr(faiss_msg(), "bad_alloc")) ? ENOMEM
                                                                          : LMK_EUNSUPPORTED;
    }
    if (faiss_Index_metric_type(idx->fi) != idx->metric) {
        snprintf(msg, cap,
                 "FAISS builds \"%s\" with metric %d instead of %s: it cannot search by "
                 "inner product%s",
                 spec, (int)faiss_Index_metric_type(idx->fi),
                 idx->l2 ? "L2" : "inner product",
                 idx->l2 ? " through the +l2 transform" : " (try \"+l2\" or another type)");
        return LMK_EUNSUPPORTED;
    }
    if (faiss_Index_d(idx->fi) != idx->fdim) {
        snprintf(msg, cap, "FAISS built \"%s\" with dimension %d, expected %d", spec,
                 faiss_Index_d(idx->fi), idx->fdim);
        return LMK_EUNSUPPORTED;
    }
    return LMK_OK;
}

/* Which search parameters apply: ask ParameterSpace on the empty index once, so that
 * searches never trigger exceptions for parameters the type does not have. Also whether
 * remove_ids(range) works for the type. */
static int probe_params(lmk_index *idx, char *msg, size_t cap)
{
    int frc = faiss_ParameterSpace_new(&idx->ps);
    if (frc) {
        snprintf(msg, cap, "FAISS ParameterSpace: %s", faiss_msg());
        return LMK_EINDEX;
    }
    if (faiss_ParameterSpace_set_index_parameter(idx->ps, idx->fi, "efSearch", 16) == 0)
        idx->ef_name = "efSearch";
    else if (faiss_ParameterSpace_set_index_parameter(idx->ps, idx->fi, "quantizer_efSearch",
                                                      16) == 0)
        idx->ef_name = "quantizer_efSearch";
    if (faiss_ParameterSpace_set_index_parameter(idx->ps, idx->fi, "nprobe", 1) == 0)
        idx->has_nprobe = 1;
    /* those probes set FAISS's defaults (efSearch 16, nprobe 1) explicitly */
    idx->ef_cur = idx->ef_name ? 16 : 0;
    idx->nprobe_cur = idx->has_nprobe ? 1 : 0;

    FaissIDSelectorRange *sel = NULL;
    if (faiss_IDSelectorRange_new(&sel, 0, 0) == 0) {
        size_t removed = 0;
        idx->can_remove =
            faiss_Index_remove_ids(idx->fi, (const FaissIDSelector *)sel, &removed) == 0;
        faiss_IDSelectorRange_free(sel);
    }
    return LMK_OK;
}

LMK_INTERNAL int lmk_index_new(const char *spec, int dim, int64_t train_min, lmk_index **out,
                               char *msg, size_t cap)
{
    *out = NULL;
    int rc = lmk_index_spec_check(spec, dim, train_min, msg, cap);
    if (rc)
        return rc;
    lmk_index *idx = calloc(1, sizeof *idx);
    if (!idx) {
        copy_msg(msg, cap, "out of memory");
        return ENOMEM;
    }
    rc = lmk_index_spec_apply(idx, spec, dim, msg, cap);
    if (rc) {
        free(idx);
        return rc;
    }
    rc = make_faiss(idx, spec, msg, cap);
    if (rc)
        goto fail;
    idx->needs_train = !faiss_Index_is_trained(idx->fi);
    /* A flat index is a brute-force scan of the vectors, which this module already keeps
     * and scans (with ties going to the lower id, which FAISS's heaps do not guarantee):
     * a FAISS copy would double the memory and change nothing else. */
    idx->exact_only = strcmp(idx->fspec, "Flat") == 0;
    rc = probe_params(idx, msg, cap);
    if (rc)
        goto fail;

    if (idx->needs_train) {
        int64_t hard, autom;
        lmk_index_spec_training(idx->fspec, &hard, &autom);
        if (train_min > 0 && train_min < hard) {
            snprintf(msg, cap,
                     "train_min %lld is below the %lld vectors FAISS needs to train \"%s\"",
                     (long long)train_min, (long long)hard, spec);
            rc = LMK_EINVAL;
            goto fail;
        }
        idx->train_min = train_min > 0 ? train_min : (autom > hard ? autom : hard);
    } else {
        idx->train_min = 0;
    }
    *out = idx;
    return LMK_OK;

fail:
    if (idx->fi)
        faiss_Index_free(idx->fi);
    if (idx->ps)
        faiss_ParameterSpace_free(idx->ps);
    free(idx);
    return rc;
}

LMK_API int lmk_index_create(const lmk_index_opts *opts, lmk_index **out, char *errmsg,
                             size_t errmsg_cap)
{
    char msg[ERR_CAP] = "";
    if (!out) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_create: out is NULL");
        return LMK_EINVAL;
    }
    *out = NULL;
    if (!opts) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_create: opts is NULL");
        return LMK_EINVAL;
    }
    int rc = lmk_index_new(opts->spec, opts->dim, opts->train_min, out, msg, sizeof msg);
    if (rc != LMK_OK)
        copy_msg(errmsg, errmsg_cap, msg);
    return rc;
}

LMK_API void lmk_index_free(lmk_index *idx)
{
    if (!idx)
        return;
    if (idx->fi)
        faiss_Index_free(idx->fi);
    if (idx->ps)
        faiss_ParameterSpace_free(idx->ps);
    free(idx->vecs);
    free(idx->s_q);
    free(idx->s_d);
    free(idx->s_l);
    free(idx->s_g);
    free(idx->h_s);
    free(idx->h_i);
    free(idx->s_x);
    free(idx->g_i);
    free(idx->g_s);
    free(idx->w_i);
    free(idx->w_s);
    free(idx);
}

LMK_API const char *lmk_index_errmsg(const lmk_index *idx)
{
    return idx ? idx->err : "no index handle";
}

/* ---- add / truncate ---- */

LMK_INTERNAL int lmk_index_reserve(lmk_index *idx, int64_t need)
{
    if (need <= idx->cap)
        return 0;
    int64_t nc = idx->cap ? idx->cap : 64;
    while (nc < need)
        nc = nc > INT64_MAX / 2 ? need : nc * 2;
    if ((uint64_t)nc > SIZE_MAX / sizeof(float) / (uint64_t)idx->dim)
        return ENOMEM;
    float *v = realloc(idx->vecs, (size_t)nc * idx->dim * sizeof(float));
    if (!v)
        return ENOMEM;
    idx->vecs = v;
    idx->cap = nc;
    return 0;
}

LMK_API int lmk_index_add(lmk_index *idx, int64_t n, const float *x)
{
    if (!idx)
        return LMK_EINVAL;
    if (n < 0 || (n > 0 && !x)) {
        set_err(idx, "lmk_index_add: n = %lld, x = %p", (long long)n, (const void *)x);
        return LMK_EINVAL;
    }
    if (n == 0)
        return LMK_OK;
    if (n > INT64_MAX / 2 - idx->ntotal || (uint64_t)n > SIZE_MAX / (uint64_t)idx->dim) {
        set_err(idx, "lmk_index_add: %lld vectors is too many", (long long)n);
        return LMK_EINVAL;
    }
    size_t nx = (size_t)n * idx->dim;
    if (!all_finite(x, nx)) {
        set_err(idx, "lmk_index_add: the vectors contain NaN or infinity");
        return LMK_EINVAL;
    }
    int64_t old = idx->ntotal, total = old + n;
    if (lmk_index_reserve(idx, total)) {
        set_err(idx, "out of memory keeping %lld vectors of dim %d", (long long)total,
                idx->dim);
        return ENOMEM;
    }
    float *dst = idx->vecs + (size_t)old * idx->dim;
    memcpy(dst, x, nx * sizeof(float));

    int rc = LMK_OK;
    if (idx->in_faiss) {
        if (idx->l2 && max_norm(dst, n, idx->dim) > idx->M) {
            /* the norm bound no longer holds: rebuild with a new M over everything */
            rc = build_faiss(idx, total);
        } else {
            const float *fx = dst;
            if (idx->l2) {
                if (grow((void **)&idx->s_x, &idx->s_x_cap, (size_t)n * idx->fdim,
                         sizeof(float))) {
                    set_err(idx, "out of memory adding %lld vectors", (long long)n);
                    return ENOMEM;
                }
                l2_transform(dst, n, idx->dim, idx->M, idx->s_x);
                fx = idx->s_x;
            }
            int frc = faiss_Index_add(idx->fi, n, fx);
            if (frc) {
                rc = faiss_fail(idx, frc, "add");
            } else if (faiss_Index_ntotal(idx->fi) != total) {
                set_err(idx, "FAISS holds %lld vectors after adding to %lld",
                        (long long)faiss_Index_ntotal(idx->fi), (long long)total);
                rc = LMK_EINDEX;
            }
        }
    } else if (!idx->exact_only && total >= idx->train_min && total >= idx->retry_at) {
        /* reaching train_min (or the first add of a spec without training): train on
         * every vector so far and add them all */
        rc = build_faiss(idx, total);
    }
    if (rc != LMK_OK) {
        /* Our copy holds every vector, so exact search can always serve them: a FAISS
         * failure (training, add, a rebuild) must not lose an add nor make a session that
         * rebuilds its indices on open unopenable. FAISS is tried again once the count has
         * doubled; the failure stays in lmk_index_errmsg(). */
        char keep[ERR_CAP];
        memcpy(keep, idx->err, sizeof keep);
        (void)drop_to_exact(idx);
        if (idx->in_faiss)
            return rc; /* FAISS could not even be emptied: report, nothing added */
        memcpy(idx->err, keep, sizeof keep);
        idx->retry_at = total > INT64_MAX / 2 ? INT64_MAX : 2 * total;
        rc = LMK_OK;
    }
    idx->ntotal = total;
    return rc;
}

LMK_API int lmk_index_truncate(lmk_index *idx, int64_t n)
{
    if (!idx)
        return LMK_EINVAL;
    if (n < 0) {
        set_err(idx, "lmk_index_truncate: n = %lld is negative", (long long)n);
        return LMK_EINVAL;
    }
    if (n >= idx->ntotal)
        return LMK_OK;
    int rc = LMK_OK;
    if (idx->retry_at > 2 * n)
        idx->retry_at = 2 * n;
    if (!idx->in_faiss) {
        /* exact mode: only our copy to shorten */
    } else if (n < idx->train_min) {
        /* too few left for a trained index: back to exact search, retrain later */
        rc = drop_to_exact(idx);
        if (rc != LMK_OK && idx->in_faiss)
            return rc; /* nothing changed */
        rc = LMK_OK;
    } else {
        rc = faiss_shrink(idx, n);
        if (rc != LMK_OK) {
            /* vecs still hold everything: rebuild, or fall back to exact mode; the
             * truncation itself always takes effect */
            if (build_faiss(idx, n) != LMK_OK)
                (void)drop_to_exact(idx);
            rc = LMK_OK;
        }
    }
    idx->ntotal = n;
    return rc;
}

/* ---- search ---- */

/* Grows a pair of result arrays (scores, ids) that share one capacity to `need` entries.
 * Returns 0 or ENOMEM (what was grown stays valid). */
static int grow_results(float **scores, int64_t **ids, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    float *s = realloc(*scores, need * sizeof(float));
    if (!s)
        return ENOMEM;
    *scores = s;
    int64_t *i = realloc(*ids, need * sizeof(int64_t));
    if (!i)
        return ENOMEM;
    *ids = i;
    *cap = need;
    return 0;
}

/* Top-k selection: a heap whose root is the worst kept result. "Worse" means a lower
 * score, or the same score and a higher id, so ties go to the lower id. */
static inline int worse(float sa, int64_t ia, float sb, int64_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

static void heap_sift_down(float *hs, int64_t *hi, int cnt, int i)
{
    float s = hs[i];
    int64_t id = hi[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= cnt)
            break;
        if (c + 1 < cnt && worse(hs[c + 1], hi[c + 1], hs[c], hi[c]))
            c++;
        if (!worse(hs[c], hi[c], s, id))
            break;
        hs[i] = hs[c];
        hi[i] = hi[c];
        i = c;
    }
    hs[i] = s;
    hi[i] = id;
}

static void heap_push(float *hs, int64_t *hi, int *cnt, int k, float s, int64_t id)
{
    if (*cnt < k) {
        int i = (*cnt)++;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!worse(s, id, hs[p], hi[p]))
                break;
            hs[i] = hs[p];
            hi[i] = hi[p];
            i = p;
        }
        hs[i] = s;
        hi[i] = id;
    } else if (worse(hs[0], hi[0], s, id)) {
        hs[0] = s;
        hi[0] = id;
        heap_sift_down(hs, hi, k, 0);
    }
}

/* heap_push of scores g[0..n) with ids id0.., ascending. Once the heap is full, an entry
 * with a higher id than every one in it gets in only with a strictly higher score than the
 * worst kept, so the rest is a comparison with one threshold, eight scores at a time (the
 * compiler vectorizes that test); same heap operations in the same order as pushing each. */
static void heap_scan(float *hs, int64_t *hi, int *cnt, int k, const float *g, int n,
                      int64_t id0)
{
    int j = 0;
    for (; j < n && *cnt < k; j++)
        heap_push(hs, hi, cnt, k, g[j], id0 + j);
    if (j == n)
        return;
    float thr = hs[0];
    for (; j < n; j += 8) {
        int m = n - j < 8 ? n - j : 8, any = 0;
        if (m == 8)
            for (int t = 0; t < 8; t++)
                any |= g[j + t] > thr;
        else
            any = 1;
        if (!any)
            continue;
        for (int t = 0; t < m; t++)
            if (g[j + t] > thr) {
                hs[0] = g[j + t];
                hi[0] = id0 + j + t;
                heap_sift_down(hs, hi, k, 0);
                thr = hs[0];
            }
    }
}

/* heap_scan over scores laid out (n vectors, nq queries): g[j * nq + i] is vector id0 + j
 * for query i's heap (hs + i * k, ...). thr[i] is the score query i's next entry must beat
 * (-inf until its heap is full); a row whose every score is at most its query's threshold
 * is passed over with one vectorizable test. Same heap operations in the same order per
 * query as pushing each score. */
static void heap_scan_rows(float *hs, int64_t *hi, int *cnt, int k, const float *g, int n,
                           int nq, int64_t id0, float *thr)
{
    int notfull = 0;
    for (int i = 0; i < nq; i++) {
        notfull += cnt[i] < k;
        thr[i] = cnt[i] < k ? -INFINITY : hs[(size_t)i * k];
    }
    for (int j = 0; j < n; j++) {
        const float *row = g + (size_t)j * nq;
        int any = notfull;
        for (int i = 0; i < nq; i++)
            any |= row[i] > thr[i];
        if (!any)
            continue;
        for (int i = 0; i < nq; i++) {
            float *h = hs + (size_t)i * k;
            int64_t *hid = hi + (size_t)i * k;
            if (cnt[i] < k) {
                heap_push(h, hid, &cnt[i], k, row[i], id0 + j);
                if (cnt[i] == k) {
                    notfull--;
                    thr[i] = h[0];
                }
            } else if (row[i] > thr[i]) {
                h[0] = row[i];
                hid[0] = id0 + j;
                heap_sift_down(h, hid, k, 0);
                thr[i] = h[0];
            }
        }
    }
}

/* Exact top-k over vecs[0..lim): scores in blocks of (QB queries, VB vectors) by
 * OpenBLAS, selection by per-query heaps. Output best first, padded with -1 / -inf. */
static int exact_search(lmk_index *idx, int64_t nq, const float *q, int k, int64_t lim,
                        int64_t *ids, float *scores)
{
    const int d = idx->dim;
    if (!idx->s_g) {
        idx->s_g = malloc((size_t)QB * VB * sizeof(float));
        if (!idx->s_g)
            goto oom;
    }
    /* a heap never needs more slots than there are candidates */
    const int kh = lim < k ? (int)lim : k;
    size_t hneed = (size_t)QB * kh;
    if (grow_results(&idx->h_s, &idx->h_i, &idx->h_cap, hneed))
        goto oom;
    int cnt[QB];
    float thr[QB];
    for (int64_t q0 = 0; q0 < nq; q0 += QB) {
        int nqb = (int)(nq - q0 < QB ? nq - q0 : QB);
        for (int i = 0; i < nqb; i++)
            cnt[i] = 0;
        for (int64_t v0 = 0; v0 < lim; v0 += VB) {
            int nvb = (int)(lim - v0 < VB ? lim - v0 : VB);
            const float *V = idx->vecs + (size_t)v0 * d;
            const float *Q = q + (size_t)q0 * d;
            if (nqb == 1) {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nvb, d, 1.0f, V, d, Q, 1, 0.0f,
                            idx->s_g, 1);
                heap_scan(idx->h_s, idx->h_i, &cnt[0], kh, idx->s_g, nvb, v0);
                continue;
            }
            /* G^T (nvb, nqb) = V (nvb, d) . Q^T (d, nqb): with the vectors as the long
             * operand OpenBLAS runs this shape (a few queries, d of 32-128) about twice as
             * fast as Q . V^T; each vector's row of scores then meets every query's
             * threshold at once */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nvb, nqb, d, 1.0f, V, d, Q, d,
                        0.0f, idx->s_g, nqb);
            heap_scan_rows(idx->h_s, idx->h_i, cnt, kh, idx->s_g, nvb, nqb, v0, thr);
        }
        for (int i = 0; i < nqb; i++) {
            float *hs = idx->h_s + (size_t)i * kh;
            int64_t *hi = idx->h_i + (size_t)i * kh;
            int64_t *oi = ids + (size_t)(q0 + i) * k;
            float *os = scores ? scores + (size_t)(q0 + i) * k : NULL;
            for (int j = cnt[i]; j < k; j++) {
                oi[j] = -1;
                if (os)
                    os[j] = -INFINITY;
            }
            /* pop the worst into the last free slot: best ends first */
            for (int c = cnt[i]; c > 0; c--) {
                oi[c - 1] = hi[0];
                if (os)
                    os[c - 1] = hs[0];
                hs[0] = hs[c - 1];
                hi[0] = hi[c - 1];
                heap_sift_down(hs, hi, c - 1, 0);
            }
        }
    }
    return LMK_OK;
oom:
    set_err(idx, "out of memory for exact-search scratch (k = %d)", k);
    return ENOMEM;
}

/* FAISS top-kk for queries, then keep the first k ids < lim of each row. */
static int faiss_search(lmk_index *idx, int64_t nq, const float *q, int k, int64_t lim,
                        int64_t *ids, float *scores)
{
    const int64_t kk = (int64_t)k + (idx->ntotal - lim);
    int64_t qc = FAISS_RESULTS_MAX / kk;
    if (qc < 1)
        qc = 1;
    if (qc > nq)
        qc = nq;
    size_t rneed = (size_t)qc * (size_t)kk;
    if (grow_results(&idx->s_d, &idx->s_l, &idx->s_r_cap, rneed))
        goto oom;
    if (idx->l2 && grow((void **)&idx->s_q, &idx->s_q_cap, (size_t)qc * idx->fdim,
                        sizeof(float)))
        goto oom;
    const double m2 = (double)idx->M * idx->M;
    for (int64_t q0 = 0; q0 < nq; q0 += qc) {
        int64_t n = nq - q0 < qc ? nq - q0 : qc;
        const float *fq = q + (size_t)q0 * idx->dim;
        if (idx->l2) { /* q' = [q, 0] */
            for (int64_t i = 0; i < n; i++) {
                memcpy(idx->s_q + (size_t)i * idx->fdim, fq + (size_t)i * idx->dim,
                       (size_t)idx->dim * sizeof(float));
                idx->s_q[(size_t)i * idx->fdim + idx->dim] = 0.0f;
            }
            fq = idx->s_q;
        }
        int frc = faiss_Index_search(idx->fi, n, fq, kk, idx->s_d, idx->s_l);
        if (frc)
            return faiss_fail(idx, frc, "search");
        for (int64_t i = 0; i < n; i++) {
            const int64_t *l = idx->s_l + (size_t)i * kk;
            const float *dd = idx->s_d + (size_t)i * kk;
            int64_t *oi = ids + (size_t)(q0 + i) * k;
            float *os = scores ? scores + (size_t)(q0 + i) * k : NULL;
            /* |q' - x'|^2 = |q|^2 + M^2 - 2 q.x  =>  q.x = (|q|^2 + M^2 - dist) / 2 */
            double qn2 = idx->l2 ? sq_norm(q + (size_t)(q0 + i) * idx->dim, idx->dim) : 0;
            int c = 0;
            for (int64_t j = 0; j < kk && c < k; j++) {
                if (l[j] < 0 || l[j] >= lim)
                    continue;
                oi[c] = l[j];
                if (os)
                    os[c] = idx->l2 ? (float)(0.5 * (qn2 + m2 - dd[j])) : dd[j];
                c++;
            }
            for (; c < k; c++) {
                oi[c] = -1;
                if (os)
                    os[c] = -INFINITY;
            }
        }
    }
    return LMK_OK;
oom:
    set_err(idx, "out of memory for search scratch (nq %lld, k %lld)", (long long)nq,
            (long long)kk);
    return ENOMEM;
}

LMK_API int lmk_index_search(lmk_index *idx, int64_t nq, const float *q, int k, int64_t limit,
                             const lmk_search_params *params, int64_t *ids, float *scores)
{
    if (!idx)
        return LMK_EINVAL;
    if (nq < 0 || k < 1 || (nq > 0 && (!q || !ids))) {
        set_err(idx, "lmk_index_search: nq = %lld, k = %d, q = %p, ids = %p", (long long)nq,
                k, (const void *)q, (void *)ids);
        return LMK_EINVAL;
    }
    if (nq == 0)
        return LMK_OK;
    if ((uint64_t)nq > SIZE_MAX / sizeof(float) / (uint64_t)idx->dim ||
        (uint64_t)nq > SIZE_MAX / sizeof(int64_t) / (uint64_t)k) {
        set_err(idx, "lmk_index_search: nq = %lld is too large", (long long)nq);
        return LMK_EINVAL;
    }
    if (!all_finite(q, (size_t)nq * idx->dim)) {
        set_err(idx, "lmk_index_search: the queries contain NaN or infinity");
        return LMK_EINVAL;
    }
    if (params) {
        /* search parameters are index state: set only when they change */
        int rc = apply_params(idx, params->ef_search, params->nprobe);
        if (rc != LMK_OK)
            return rc;
        if (params->ef_search > 0 && idx->ef_name)
            idx->ef_want = params->ef_search;
        if (params->nprobe > 0 && idx->has_nprobe)
            idx->nprobe_want = params->nprobe;
    }
    int64_t lim = (limit <= 0 || limit > idx->ntotal) ? idx->ntotal : limit;
    if (lim == 0) {
        for (size_t i = 0; i < (size_t)nq * k; i++) {
            ids[i] = -1;
            if (scores)
                scores[i] = -INFINITY;
        }
        return LMK_OK;
    }
    /* Exact when FAISS does not hold the vectors, when the allowed set is at most k, and
     * when the over-fetch would reach `lim` results: FAISS would then touch at least lim
     * vectors per query anyway, so the brute force is no slower and exact. */
    int64_t kk = (int64_t)k + (idx->ntotal - lim);
    if (!idx->in_faiss || lim <= k || kk >= lim)
        return exact_search(idx, nq, q, k, lim, ids, scores);
    return faiss_search(idx, nq, q, k, lim, ids, scores);
}

/* ---- accessors ---- */

LMK_API int64_t lmk_index_ntotal(const lmk_index *idx)
{
    return idx ? idx->ntotal : 0;
}

LMK_API int lmk_index_dim(const lmk_index *idx)
{
    return idx ? idx->dim : 0;
}

LMK_API int lmk_index_is_trained(const lmk_index *idx)
{
    if (!idx)
        return 0;
    if (!idx->needs_train)
        return 1;
    return idx->in_faiss && faiss_Index_is_trained(idx->fi);
}

LMK_API const char *lmk_index_spec(const lmk_index *idx)
{
    return idx ? idx->spec : "";
}

LMK_API const float *lmk_index_vectors(const lmk_index *idx)
{
    return idx ? idx->vecs : NULL;
}

LMK_API size_t lmk_index_memory_bytes(const lmk_index *idx)
{
    if (!idx)
        return 0;
    /* our copy (its capacity is what is held), the scratch buffers, and the FAISS
     * estimate of lmk_index_spec_faiss_bytes() for the vectors it holds */
    size_t b = sizeof *idx + (size_t)idx->cap * idx->dim * sizeof(float);
    b += idx->s_q_cap * sizeof(float) + idx->s_r_cap * (sizeof(float) + sizeof(int64_t));
    b += (idx->s_g ? (size_t)QB * VB * sizeof(float) : 0);
    b += idx->h_cap * (sizeof(float) + sizeof(int64_t)) + idx->s_x_cap * sizeof(float);
    int64_t n = idx->in_faiss ? idx->ntotal : 0;
    size_t f = lmk_index_spec_faiss_bytes(idx->fspec, idx->fdim, n);
    return b > SIZE_MAX - f ? SIZE_MAX : b + f;
}

