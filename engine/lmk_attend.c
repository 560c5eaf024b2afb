/* One attend call: retrieval (index search per KV head), fetch (one read transaction, only
 * the blocks needed), attention (grouped or union softmax). The semantics are those stated
 * in lmk_session.h; tests/test_attend.c checks them against a naive implementation.
 *
 * Phases: A (parallel over KV heads) searches; B (serial: one LMDB read transaction is
 * single-threaded) fetches and decodes; C (parallel over (query, head)) computes. Every
 * output element is computed by exactly one thread in a fixed order, so results do not
 * depend on the thread count. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmk_internal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Geometry of query i (see lmk_session.h). */
typedef struct qgeo {
    int64_t p;           /* position */
    int64_t S;           /* blocks sealed at p */
    int64_t local_start; /* first position of the local window */
    int64_t C;           /* candidate blocks [0, C) */
    int64_t F;           /* forced recent blocks [C - F, C) */
    int64_t k;           /* searched blocks */
    int64_t n_sink;      /* sink positions [0, n_sink) (before dedupe) */
} qgeo;

static void geometry(const lmk_session *s, int64_t T, int64_t nq, const lmk_attend_opts *o,
                     qgeo *g)
{
    const int64_t L = s->L;
    for (int64_t i = 0; i < nq; i++) {
        qgeo *x = &g[i];
        x->p = T - nq + i;
        x->S = x->p / L;
        int64_t ls = x->S * L;
        if (o->n_local > 0) {
            int64_t lw = x->p - o->n_local + 1;
            if (lw < 0)
                lw = 0;
            lw = lw / L * L;
            if (lw < ls)
                ls = lw;
        }
        x->local_start = ls;
        x->C = ls / L;
        x->F = o->n_recent < x->C ? o->n_recent : x->C;
        int64_t pool = x->C - x->F;
        x->k = o->top_k == LMK_TOP_K_ALL || o->top_k > pool ? pool : o->top_k;
        x->n_sink = o->n_sink < ls ? o->n_sink : ls;
    }
}

/* Eight independent partial sums so the compiler can vectorize without reassociating. */
static float dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Window position of the query and of slot placement under a SLOTS policy, given how many
 * blocks are placed. */
static int64_t slots_query_pos(const lmk_session *s, const qgeo *x, int64_t n_slots)
{
    return n_slots * s->L + (x->p - x->local_start);
}

/* The vector the index is searched with for query i, head h (rotated into the ranking frame
 * under a position policy). */
static void ranking_query(const lmk_session *s, const lmk_attend_opts *o, const qgeo *x,
                          const float *q, float *dst)
{
    memcpy(dst, q, (size_t)s->head_dim * 4);
    if (!o->pos || o->pos->kind == LMK_POS_AS_GIVEN)
        return;
    int64_t pos;
    if (o->pos->kind == LMK_POS_SLOTS)
        pos = slots_query_pos(s, x, x->k + x->F) - o->pos->rank_pos;
    else
        pos = o->pos->fixed_distance;
    o->pos->rotate(o->pos->ud, dst, 1, s->head_dim, &pos);
}

/* ---- phase A: retrieval ---- */

typedef struct rctx {
    lmk_session *s;
    int layer;
    int64_t nq;
    const float *q;
    const lmk_attend_opts *o;
    const qgeo *g;
    int64_t max_sel;
    int64_t *sel; /* (nq, n_heads, max_sel) */
    int *nsel;    /* (nq, n_heads) */
    float *qs;    /* search queries scratch (nq * n_heads, D) */
    int64_t *ids; /* search results scratch (nq * n_heads, kmax) */
    int64_t kmax;
    int rc;
    char msg[512];
} rctx;

/* Search for KV head kvh and fill sel/nsel of its query heads. */
static int retrieve_kvh(rctx *r, int kvh)
{
    lmk_session *s = r->s;
    const int D = s->head_dim, G = s->group, NH = s->n_heads;
    const lmk_attend_opts *o = r->o;
    lmk_index *idx = s->idx[r->layer * s->n_kv_heads + kvh];
    lmk_search_params sp = {o->ef_search, o->nprobe};
    float *qs = r->qs + (size_t)kvh * r->nq * G * D;
    int64_t *ids = r->ids + (size_t)kvh * r->nq * G * r->kmax;
    int per_head = o->retrieve != LMK_RETRIEVE_KVHEAD;

    for (int64_t i0 = 0; i0 < r->nq;) {
        const qgeo *x0 = &r->g[i0];
        int64_t pool = x0->C - x0->F;
        int64_t i1 = i0 + 1;
        while (i1 < r->nq && r->g[i1].C - r->g[i1].F == pool && r->g[i1].k == x0->k)
            i1++;
        int64_t k = x0->k;
        for (int64_t i = i0; i < i1; i++)
            for (int g = 0; g < G; g++)
                r->nsel[i * NH + kvh * G + g] = 0;
        if (k > 0 && k == pool) {
            /* top_k covers every candidate: the index is bypassed. */
            for (int64_t i = i0; i < i1; i++)
                for (int g = 0; g < G; g++) {
                    int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                    for (int64_t b = 0; b < pool; b++)
                        dst[b] = b;
                    r->nsel[i * NH + kvh * G + g] = (int)pool;
                }
        } else if (k > 0) {
            int64_t nrow = 0;
            for (int64_t i = i0; i < i1; i++) {
                if (per_head) {
                    for (int g = 0; g < G; g++)
                        ranking_query(s, o, &r->g[i],
                                      r->q + ((size_t)i * NH + kvh * G + g) * D,
                                      qs + (size_t)nrow++ * D);
                } else {
                    float *dst = qs + (size_t)nrow++ * D;
                    float tmp[D];
                    memset(dst, 0, (size_t)D * 4);
                    for (int g = 0; g < G; g++) {
                        ranking_query(s, o, &r->g[i],
                                      r->q + ((size_t)i * NH + kvh * G + g) * D, tmp);
                        for (int d = 0; d < D; d++)
                            dst[d] += tmp[d];
                    }
                }
            }
            int rc = lmk_index_search(idx, nrow, qs, (int)k, pool, &sp, ids, NULL);
            if (rc) {
                snprintf(r->msg, sizeof r->msg, "searching layer %d head %d: %s", r->layer, kvh,
                         lmk_index_errmsg(idx));
                return rc;
            }
            int64_t row = 0;
            for (int64_t i = i0; i < i1; i++) {
                for (int g = 0; g < G; g++) {
                    const int64_t *res = ids + (size_t)(per_head ? row + g : row) * k;
                    int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                    int n = 0;
                    for (int64_t j = 0; j < k; j++)
                        if (res[j] >= 0 && res[j] < pool)
                            dst[n++] = res[j];
                    r->nsel[i * NH + kvh * G + g] = n;
                }
                row += per_head ? G : 1;
            }
        }
        for (int64_t i = i0; i < i1; i++) {
            const qgeo *x = &r->g[i];
            for (int g = 0; g < G; g++) {
                int64_t *dst = r->sel + ((size_t)i * NH + kvh * G + g) * r->max_sel;
                int *n = &r->nsel[i * NH + kvh * G + g];
                for (int64_t b = x->C - x->F; b < x->C; b++)
                    dst[(*n)++] = b;
            }
        }
        i0 = i1;
    }
    return LMK_OK;
}

/* LMK_RETRIEVE_CHUNK: re-rank each head's candidates (the union of what its queries found)
 * by the maximum exact score over the chunk's queries that can see them, then give every
 * query the best k of those it can see. */
static void chunk_rerank(rctx *r, int kvh, int64_t *cand, float *best)
{
    lmk_session *s = r->s;
    const int D = s->head_dim, G = s->group, NH = s->n_heads;
    const float *lms = lmk_index_vectors(s->idx[r->layer * s->n_kv_heads + kvh]);
    for (int g = 0; g < G; g++) {
        int h = kvh * G + g;
        int64_t nc = 0;
        for (int64_t i = 0; i < r->nq; i++) {
            const int64_t *sel = r->sel + ((size_t)i * NH + h) * r->max_sel;
            int searched = r->nsel[i * NH + h] - (int)r->g[i].F;
            for (int j = 0; j < searched; j++)
                cand[nc++] = sel[j];
        }
        qsort(cand, (size_t)nc, sizeof *cand, cmp_i64);
        int64_t u = 0;
        for (int64_t j = 0; j < nc; j++)
            if (u == 0 || cand[u - 1] != cand[j])
                cand[u++] = cand[j];
        for (int64_t j = 0; j < u; j++) {
            float m = -INFINITY;
            for (int64_t i = 0; i < r->nq; i++) {
                if (cand[j] >= r->g[i].C - r->g[i].F)
                    continue;
                float sc = dot(r->q + ((size_t)i * NH + h) * D, lms + (size_t)cand[j] * D, D);
                if (sc > m)
                    m = sc;
            }
            best[j] = m;
        }
        /* insertion sort by (best desc, id asc): candidate lists are short */
        for (int64_t a = 1; a < u; a++) {
            int64_t id = cand[a];
            float v = best[a];
            int64_t b = a - 1;
            while (b >= 0 && (best[b] < v || (best[b] == v && cand[b] > id))) {
                best[b + 1] = best[b];
                cand[b + 1] = cand[b];
                b--;
            }
            best[b + 1] = v;
            cand[b + 1] = id;
        }
        for (int64_t i = 0; i < r->nq; i++) {
            const qgeo *x = &r->g[i];
            int64_t *dst = r->sel + ((size_t)i * NH + h) * r->max_sel;
            int n = 0;
            for (int64_t j = 0; j < u && n < x->k; j++)
                if (cand[j] < x->C - x->F)
                    dst[n++] = cand[j];
            for (int64_t b = x->C - x->F; b < x->C; b++)
                dst[n++] = b;
            r->nsel[i * NH + h] = n;
        }
    }
}

/* ---- phase C: attention for one (query, head) ---- */

typedef struct actx {
    lmk_session *s;
    int layer;
    const lmk_attend_opts *o;
    const qgeo *g;
    int64_t max_sel;
    const int64_t *sel;
    const int *nsel;
    const int64_t *need;   /* sorted needed blocks, per kv head at need_off */
    const lmk_slot *slots; /* parallel to need */
    int64_t sealed_T;      /* blocks sealed at the layer's current length */
    size_t max_tok;        /* bound on local + sink tokens of any query */
} actx;

static const lmk_slot *find_slot(const actx *a, int kvh, int64_t b)
{
    const int64_t *base = a->need + a->s->need_off[kvh];
    int64_t lo = 0, hi = a->s->need_off[kvh + 1] - a->s->need_off[kvh];
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (base[mid] < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return &a->slots[a->s->need_off[kvh] + lo];
}

/* Row pointers of token `pos` (K and V) for KV head kvh. */
static void token_rows(const actx *a, int kvh, int64_t pos, const float **k, const float **v)
{
    const lmk_session *s = a->s;
    int64_t b = pos / s->L;
    size_t off = (size_t)(pos - b * s->L) * s->head_dim;
    if (b < a->sealed_T) {
        const lmk_slot *sl = find_slot(a, kvh, b);
        *k = sl->k + off;
        *v = sl->v + off;
    } else {
        const lmk_layer *ly = &s->layers[a->layer];
        *k = ly->tail_k + (size_t)kvh * s->L * s->head_dim + off;
        *v = ly->tail_v + (size_t)kvh * s->L * s->head_dim + off;
    }
}

static size_t work_bytes(const lmk_session *s, const lmk_attend_opts *o, int64_t max_sel,
                         size_t max_tok)
{
    size_t D = (size_t)s->head_dim, L = (size_t)s->L, ms = (size_t)max_sel;
    size_t ent = max_tok + ms;
    int rotating = o->pos && o->pos->kind != LMK_POS_AS_GIVEN;
    return ent * (2 * sizeof(void *) + sizeof(float) + sizeof(int64_t)) +
           ms * (sizeof(int64_t) + 2 * sizeof(void *) + sizeof(float)) +
           (L + 1) * sizeof(int64_t) +
           ((rotating ? max_tok + ms * (L + 1) : 0) + 2) * D * sizeof(float) +
           (ms + 1) * (L + 1) * sizeof(float) + 16 * 64;
}

#define CARVE(type, name, count)                                                        \
    type *name = (type *)w;                                                              \
    w += (((size_t)(count) * sizeof(type)) + 63) & ~(size_t)63

static void attend_one(const actx *a, int64_t i, int h, const float *q, float *out, void *work)
{
    const lmk_session *s = a->s;
    const lmk_attend_opts *o = a->o;
    const qgeo *x = &a->g[i];
    const int D = s->head_dim, L = s->L, kvh = h / s->group;
    const float scale = 1.0f / sqrtf((float)D);
    const int token_lm = s->landmark == LMK_LANDMARK_TOKEN;
    const int rows_per_block = token_lm ? L - 1 : L;
    const lmk_pos_kind pk = o->pos ? o->pos->kind : LMK_POS_AS_GIVEN;
    const float *lms = lmk_index_vectors(s->idx[a->layer * s->n_kv_heads + kvh]);

    /* carve the per-thread scratch (sizes: work_bytes) */
    const int rotating = pk != LMK_POS_AS_GIVEN;
    size_t ent = a->max_tok + (size_t)a->max_sel;
    char *w = work;
    CARVE(const float *, ek, ent);
    CARVE(const float *, ev, ent);
    CARVE(int64_t, epos, ent);
    CARVE(float, esc, ent);
    CARVE(int64_t, blk, a->max_sel);
    CARVE(const float *, bk, a->max_sel);
    CARVE(const float *, bv, a->max_sel);
    CARVE(float, gate, a->max_sel);
    CARVE(int64_t, bpos, L + 1);
    CARVE(float, rot, rotating ? (a->max_tok + (size_t)a->max_sel * (L + 1)) * D : 1);
    CARVE(float, qr, D);
    CARVE(float, bsc, ((size_t)a->max_sel + 1) * (L + 1)); /* block scores, (nb, L) */

    /* retrieved blocks, in original order (slot order) */
    int nb = a->nsel[i * s->n_heads + h];
    memcpy(blk, a->sel + ((size_t)i * s->n_heads + h) * a->max_sel, (size_t)nb * sizeof *blk);
    qsort(blk, (size_t)nb, sizeof *blk, cmp_i64);

    /* tokens attended directly: sinks (not in a retrieved block), then the local window */
    int64_t nt = 0;
    int bi = 0;
    for (int64_t pos = 0; pos < x->n_sink; pos++) {
        int64_t b = pos / L;
        while (bi < nb && blk[bi] < b)
            bi++;
        if (bi < nb && blk[bi] == b)
            continue;
        if (token_lm && pos % L == L - 1)
            continue;
        token_rows(a, kvh, pos, &ek[nt], &ev[nt]);
        epos[nt++] = pos;
    }
    int64_t nsinks = nt;
    for (int64_t pos = x->local_start; pos <= x->p; pos++) {
        if (token_lm && pos % L == L - 1 && pos / L < x->S)
            continue;
        token_rows(a, kvh, pos, &ek[nt], &ev[nt]);
        epos[nt++] = pos;
    }

    /* positions */
    memcpy(qr, q, (size_t)D * 4);
    if (pk != LMK_POS_AS_GIVEN) {
        int64_t qpos, far = x->p - o->pos->fixed_distance;
        qpos = pk == LMK_POS_SLOTS ? slots_query_pos(s, x, nb) : x->p;
        o->pos->rotate(o->pos->ud, qr, 1, D, &qpos);
        for (int64_t t = 0; t < nt; t++) {
            memcpy(rot + (size_t)t * D, ek[t], (size_t)D * 4);
            if (pk == LMK_POS_SLOTS)
                epos[t] = nb * (int64_t)L + (epos[t] - x->local_start);
            else if (t < nsinks)
                epos[t] = far;
            ek[t] = rot + (size_t)t * D;
        }
        if (nt)
            o->pos->rotate(o->pos->ud, rot, (int)nt, D, epos);
    }

    /* scores of directly attended tokens */
    float m = -INFINITY;
    for (int64_t t = 0; t < nt; t++) {
        esc[t] = scale * dot(qr, ek[t], D);
        if (esc[t] > m)
            m = esc[t];
    }
    /* block keys (rotated copies under a policy) and gates */
    float *brot = rot + a->max_tok * D;
    for (int j = 0; j < nb; j++) {
        const lmk_slot *sl = find_slot(a, kvh, blk[j]);
        bk[j] = sl->k;
        bv[j] = sl->v;
        const float *lm = lms + (size_t)blk[j] * D;
        if (pk != LMK_POS_AS_GIVEN) {
            int64_t *pos = bpos;
            float *dst = brot + (size_t)j * (L + 1) * D;
            memcpy(dst, sl->k, (size_t)L * D * 4);
            memcpy(dst + (size_t)L * D, lm, (size_t)D * 4);
            int64_t base = pk == LMK_POS_SLOTS ? (int64_t)j * L : x->p - o->pos->fixed_distance;
            for (int r = 0; r < L; r++)
                pos[r] = pk == LMK_POS_SLOTS ? base + r : base;
            pos[L] = pk == LMK_POS_SLOTS ? base + L - 1 : base;
            o->pos->rotate(o->pos->ud, dst, L + 1, D, pos);
            bk[j] = dst;
            lm = dst + (size_t)L * D;
        }
        gate[j] = scale * dot(qr, lm, D);
    }

    /* scores of every regular row of the retrieved blocks: one product per block */
    for (int j = 0; j < nb && rows_per_block > 0; j++)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows_per_block, D, scale, bk[j], D, qr, 1,
                    0.0f, bsc + (size_t)j * L, 1);

    memset(out, 0, (size_t)D * 4);
    double z = 0;
    if (o->mode == LMK_MODE_UNION) {
        /* one softmax over tokens and every regular row of the retrieved blocks */
        for (int j = 0; j < nb; j++)
            for (int r = 0; r < rows_per_block; r++)
                if (bsc[(size_t)j * L + r] > m)
                    m = bsc[(size_t)j * L + r];
        for (int64_t t = 0; t < nt; t++) {
            float e = expf(esc[t] - m);
            z += e;
            for (int d = 0; d < D; d++)
                out[d] += e * ev[t][d];
        }
        for (int j = 0; j < nb; j++) {
            float *sc = bsc + (size_t)j * L;
            for (int r = 0; r < rows_per_block; r++) {
                sc[r] = expf(sc[r] - m);
                z += sc[r];
            }
            if (rows_per_block > 0)
                cblas_sgemv(CblasRowMajor, CblasTrans, rows_per_block, D, 1.0f, bv[j], D, sc, 1,
                            1.0f, out, 1);
        }
    } else {
        /* grouped: shared softmax over tokens and gates; each block's own softmax inside */
        for (int j = 0; j < nb; j++)
            if (gate[j] > m)
                m = gate[j];
        for (int64_t t = 0; t < nt; t++) {
            float e = expf(esc[t] - m);
            z += e;
            for (int d = 0; d < D; d++)
                out[d] += e * ev[t][d];
        }
        for (int j = 0; j < nb; j++) {
            float pg = expf(gate[j] - m);
            z += pg;
            if (rows_per_block == 0)
                continue;
            float *sc = bsc + (size_t)j * L;
            float mb = -INFINITY;
            for (int r = 0; r < rows_per_block; r++)
                if (sc[r] > mb)
                    mb = sc[r];
            double zb = 0;
            for (int r = 0; r < rows_per_block; r++) {
                sc[r] = expf(sc[r] - mb);
                zb += sc[r];
            }
            cblas_sgemv(CblasRowMajor, CblasTrans, rows_per_block, D, (float)(pg / zb), bv[j], D,
                        sc, 1, 1.0f, out, 1);
        }
    }
    float inv = (float)(1.0 / z);
    for (int d = 0; d < D; d++)
        out[d] *= inv;
}

/* ---- the call ---- */

LMK_API int lmk_session_attend(lmk_session *s, int layer, int64_t nq, const float *q,
                               const lmk_attend_opts *opts, float *out, lmk_attend_stats *stats)
{
    if (!s)
        return LMK_EINVAL;
    lmk_attend_opts o = opts ? *opts : lmk_attend_opts_default();
    if (layer < 0 || layer >= s->n_layers)
        return lmk_sess_fail(s, LMK_EINVAL, "layer %d out of range 0..%d", layer,
                             s->n_layers - 1);
    int64_t T = s->layers[layer].ntok;
    if (nq < 1 || nq > T)
        return lmk_sess_fail(s, LMK_EINVAL,
                             "n_queries %lld must be in 1..%lld (tokens appended at layer %d)",
                             (long long)nq, (long long)T, layer);
    if (!q || !out)
        return lmk_sess_fail(s, LMK_EINVAL, "NULL query or output");
    if (o.top_k < LMK_TOP_K_ALL || o.n_recent < 0 || o.n_sink < 0 || o.n_local < 0 ||
        (o.mode != LMK_MODE_GROUPED && o.mode != LMK_MODE_UNION) ||
        (o.retrieve != LMK_RETRIEVE_QHEAD && o.retrieve != LMK_RETRIEVE_KVHEAD &&
         o.retrieve != LMK_RETRIEVE_CHUNK))
        return lmk_sess_fail(s, LMK_EINVAL, "attend option out of range");
    if (o.pos && o.pos->kind != LMK_POS_AS_GIVEN) {
        if (!o.pos->rotate || (o.pos->kind != LMK_POS_SLOTS && o.pos->kind != LMK_POS_FIXED))
            return lmk_sess_fail(s, LMK_EINVAL, "position policy without a rotate callback");
        if (o.pos->kind == LMK_POS_SLOTS && o.n_sink > 0)
            return lmk_sess_fail(s, LMK_EINVAL, "sinks cannot be placed with the slots policy");
    }
    const int D = s->head_dim, H = s->n_kv_heads, NH = s->n_heads, G = s->group, L = s->L;
    double t0 = now_s();

    /* geometry and scratch (grow-only) */
    if (lmk_buf_reserve(&s->nsel, (size_t)nq * sizeof(qgeo) + (size_t)nq * NH * sizeof(int)))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    qgeo *g = s->nsel.p;
    int *nsel = (int *)(g + nq);
    geometry(s, T, nq, &o, g);
    int64_t max_sel = 1, kmax = 1;
    size_t max_tok = 1;
    for (int64_t i = 0; i < nq; i++) {
        if (g[i].k + g[i].F > max_sel)
            max_sel = g[i].k + g[i].F;
        size_t nt = (size_t)(g[i].p - g[i].local_start + 1 + g[i].n_sink);
        if (nt > max_tok)
            max_tok = nt;
    }
    for (int64_t i = 0; i < nq; i++)
        if (g[i].k > kmax)
            kmax = g[i].k;
    if (lmk_buf_reserve(&s->sel, (size_t)nq * NH * max_sel * sizeof(int64_t)) ||
        lmk_buf_reserve(&s->q_search, (size_t)nq * NH * D * sizeof(float)) ||
        lmk_buf_reserve(&s->ids, (size_t)nq * NH * kmax * sizeof(int64_t)))
        return lmk_sess_fail(s, ENOMEM, "out of memory");

    /* A: retrieval */
    rctx r = {s, layer, nq, q, &o, g, max_sel, s->sel.p, nsel, s->q_search.p, s->ids.p, kmax,
              0, ""};
    int nth = s->n_threads < H ? s->n_threads : H;
    int rc_any = 0;
    /* FAISS opens its own OpenMP regions inside a search. Ours is the one level of
     * parallelism: setting the thread count inside our region changes only that region's
     * data environment (not the caller's), so FAISS runs single-threaded here instead of
     * waking a new team for every small search. */
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        omp_set_num_threads(1);
#pragma omp for schedule(static)
    for (int kvh = 0; kvh < H; kvh++) {
        int rc = retrieve_kvh(&r, kvh);
        if (rc) {
#pragma omp critical(lmk_attend_err)
            {
                if (!rc_any) {
                    rc_any = rc;
                    snprintf(s->err, sizeof s->err, "%s", r.msg);
                }
            }
        }
    }
    }
    if (rc_any)
        return rc_any;
    if (o.retrieve == LMK_RETRIEVE_CHUNK && nq > 1) {
        size_t cap = (size_t)nq * max_sel;
        int64_t *cand = malloc(cap * (sizeof(int64_t) + sizeof(float)));
        if (!cand)
            return lmk_sess_fail(s, ENOMEM, "out of memory");
        for (int kvh = 0; kvh < H; kvh++)
            chunk_rerank(&r, kvh, cand, (float *)(cand + cap));
        free(cand);
    }
    double t1 = now_s();

    /* B: the blocks needed, per KV head: retrieved, sinks, sealed parts of local windows */
    int64_t sealed_T = lmk_sealed(T, L);
    size_t need_cap = 0;
    for (int64_t i = 0; i < nq; i++) {
        int64_t lo = g[i].local_start / L;
        int64_t hi = g[i].S < sealed_T ? g[i].S : sealed_T;
        need_cap += (size_t)G * max_sel + (size_t)((g[i].n_sink + L - 1) / L) +
                    (size_t)(hi > lo ? hi - lo : 0) + (size_t)(g[i].p / L < sealed_T ? 1 : 0);
    }
    need_cap *= (size_t)H;
    if (lmk_buf_reserve(&s->need, need_cap * sizeof(int64_t) + 8))
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    int64_t *need = s->need.p;
    int64_t nn = 0;
    for (int kvh = 0; kvh < H; kvh++) {
        int64_t start = nn;
        s->need_off[kvh] = start;
        for (int64_t i = 0; i < nq; i++) {
            for (int gg = 0; gg < G; gg++) {
                int h = kvh * G + gg;
                const int64_t *sl = s->sel.p;
                sl += ((size_t)i * NH + h) * max_sel;
                for (int j = 0; j < nsel[i * NH + h]; j++)
                    need[nn++] = sl[j];
            }
            for (int64_t b = 0; b * L < g[i].n_sink; b++)
                need[nn++] = b;
            int64_t top = g[i].p / L; /* block of the query itself */
            for (int64_t b = g[i].local_start / L; b <= top && b < sealed_T; b++)
                need[nn++] = b;
        }
        qsort(need + start, (size_t)(nn - start), sizeof *need, cmp_i64);
        int64_t u = start;
        for (int64_t j = start; j < nn; j++)
            if (u == start || need[u - 1] != need[j])
                need[u++] = need[j];
        nn = u;
    }
    s->need_off[H] = nn;
    size_t blk_floats = (size_t)L * D;
    if (lmk_buf_reserve(&s->slots, (size_t)(nn ? nn : 1) * sizeof(lmk_slot)) ||
        lmk_buf_reserve(&s->slotmem, (size_t)(nn ? nn : 1) * 2 * blk_floats * sizeof(float)))
        return lmk_sess_fail(s, ENOMEM, "out of memory fetching %lld blocks", (long long)nn);
    lmk_slot *slots = s->slots.p;
    float *mem = s->slotmem.p;
    int rc = lmk_store_read_begin(s->st);
    if (rc)
        return lmk_sess_fail(s, rc, "starting a read: %s", lmk_store_errmsg(s->st));
    for (int kvh = 0; kvh < H && !rc; kvh++)
        for (int64_t j = s->need_off[kvh]; j < s->need_off[kvh + 1]; j++) {
            slots[j].block = need[j];
            slots[j].k = mem + (size_t)j * 2 * blk_floats;
            slots[j].v = slots[j].k + blk_floats;
            if ((rc = lmk_sess_load_block(s, layer, kvh, need[j], slots[j].k, slots[j].v)))
                break;
        }
    lmk_store_read_end(s->st);
    if (rc)
        return rc;
    double t2 = now_s();

    /* C: attention */
    actx a = {s, layer, &o, g, max_sel, s->sel.p, nsel, need, slots, sealed_T, max_tok};
    size_t wb = work_bytes(s, &o, max_sel, max_tok);
    int nthc = s->n_threads;
    for (int t = 0; t < nthc; t++)
        if (lmk_buf_reserve(&s->work[t], wb))
            return lmk_sess_fail(s, ENOMEM, "out of memory");
    int64_t items = nq * NH;
#pragma omp parallel for num_threads(nthc) schedule(static) if (nthc > 1 && items > 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t i = it / NH;
        int h = (int)(it % NH);
        attend_one(&a, i, h, q + (size_t)it * D, out + (size_t)it * D,
                   s->work[omp_get_thread_num()].p);
    }
    double t3 = now_s();

    if (stats) {
        stats->search_s = t1 - t0;
        stats->fetch_s = t2 - t1;
        stats->attn_s = t3 - t2;
        stats->blocks_fetched = nn;
        stats->bytes_fetched = nn * (int64_t)(2 * blk_floats * s->esz);
        if (stats->blocks && stats->blocks_cap > 0) {
            const int64_t *sl = s->sel.p;
            for (int64_t it = 0; it < items; it++) {
                int64_t *dst = stats->blocks + (size_t)it * stats->blocks_cap;
                int n = nsel[it] < stats->blocks_cap ? nsel[it] : stats->blocks_cap;
                for (int j = 0; j < stats->blocks_cap; j++)
                    dst[j] = j < n ? sl[(size_t)it * max_sel + j] : -1;
            }
        }
    }
    return LMK_OK;
}
