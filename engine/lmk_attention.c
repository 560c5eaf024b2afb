/* Attention phase of an attend call: for one (query, head), a softmax over the tokens
 * attended directly (sinks, the local window) and the retrieved blocks, either grouped
 * (a block enters the shared softmax through its landmark's gate, with its own softmax
 * inside) or union (one softmax over every row). Parallel over (query, head); each output
 * row is computed by one thread in a fixed order, so results do not depend on the thread
 * count. tests/test_attend.c checks this against a naive implementation. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_attend_internal.h"
#include "lmk_vexp.h"

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
    size_t D = (size_t)s->head_dim, L = (size_t)s->L, ms = (size_t)max_sel, R = (size_t)s->R;
    size_t ent = lmk_szadd(max_tok, ms);
    int rotating = o->pos && o->pos->kind != LMK_POS_AS_GIVEN;
    size_t ms_rows = lmk_szmul(ms, L + 1); /* saturating: a saturated total fails to allocate */
    size_t rot_rows = lmk_szadd(rotating ? lmk_szadd(max_tok, lmk_szmul(ms, L + R)) : 0, 2);
    size_t b = lmk_szmul(ent, 2 * sizeof(void *) + sizeof(float) + sizeof(int64_t));
    b = lmk_szadd(b, lmk_szmul(ms, sizeof(int64_t) + 2 * sizeof(void *) + sizeof(float)));
    b = lmk_szadd(b, (L + R) * sizeof(int64_t));
    b = lmk_szadd(b, lmk_szmul(lmk_szmul(rot_rows, D), sizeof(float)));
    b = lmk_szadd(b, lmk_szmul(lmk_szadd(ms_rows, L + 1), sizeof(float)));
    b = lmk_szadd(b, lmk_szmul(ms + 1, sizeof(int64_t))); /* rblk */
    return lmk_szadd(b, 17 * 64);
}

/* Per-thread scratch of one (query, head), carved out of one buffer (work_bytes). */
typedef struct awork {
    const float **ek, **ev; /* (ent) K and V rows of directly attended tokens */
    int64_t *epos;          /* (ent) their positions */
    float *esc;             /* (ent) their scores */
    int64_t *blk;           /* (max_sel) retrieved blocks, ascending */
    const float **bk, **bv; /* (max_sel) K and V of each retrieved block, (L, head_dim) */
    float *gate;            /* (max_sel) scores of their landmarks */
    int64_t *bpos;          /* (L + R) positions of one block's rows and landmark entries */
    float *rot;             /* rotated copies of token and block keys under a policy */
    float *qr;              /* (head_dim) the query, rotated under a policy */
    float *bsc;             /* (nb, L) block row scores, then weights */
    int64_t *rblk;          /* (max_sel) under slots: the block whose keys slot j of rot
                               holds, rotated, from this thread's previous item (-1: none) */
} awork;

#define CARVE(type, name, count)                                                        \
    name = (type *)w;                                                                    \
    w += (((size_t)(count) * sizeof(type)) + 63) & ~(size_t)63

static void carve(const actx *a, void *work, awork *x)
{
    const int D = a->s->head_dim, L = a->s->L, R = a->s->R;
    const int rotating = a->o->pos && a->o->pos->kind != LMK_POS_AS_GIVEN;
    size_t ent = a->max_tok + (size_t)a->max_sel;
    char *w = work;
    CARVE(const float *, x->ek, ent);
    CARVE(const float *, x->ev, ent);
    CARVE(int64_t, x->epos, ent);
    CARVE(float, x->esc, ent);
    CARVE(int64_t, x->blk, a->max_sel);
    CARVE(const float *, x->bk, a->max_sel);
    CARVE(const float *, x->bv, a->max_sel);
    CARVE(float, x->gate, a->max_sel);
    CARVE(int64_t, x->bpos, L + R);
    CARVE(float, x->rot, rotating ? (a->max_tok + (size_t)a->max_sel * (L + R)) * D : 1);
    CARVE(float, x->qr, D);
    CARVE(float, x->bsc, ((size_t)a->max_sel + 1) * (L + 1));
    CARVE(int64_t, x->rblk, a->max_sel + 1);
}

#undef CARVE

/* Tokens attended directly: sinks (not in a retrieved block), then the local window.
 * Returns how many; *nsinks of them are sinks. */
static int64_t direct_tokens(const actx *a, const qgeo *x, int kvh, int nb, awork *w,
                             int64_t *nsinks)
{
    const int L = a->s->L;
    const int token_lm = a->s->landmark == LMK_LANDMARK_TOKEN;
    int64_t nt = 0;
    int bi = 0;
    for (int64_t pos = 0; pos < x->n_sink; pos++) {
        int64_t b = pos / L;
        while (bi < nb && w->blk[bi] < b)
            bi++;
        if (bi < nb && w->blk[bi] == b)
            continue;
        if (token_lm && pos % L == L - 1)
            continue;
        token_rows(a, kvh, pos, &w->ek[nt], &w->ev[nt]);
        w->epos[nt++] = pos;
    }
    *nsinks = nt;
    for (int64_t pos = x->local_start; pos <= x->p; pos++) {
        if (token_lm && pos % L == L - 1 && pos / L < x->S)
            continue;
        token_rows(a, kvh, pos, &w->ek[nt], &w->ev[nt]);
        w->epos[nt++] = pos;
    }
    return nt;
}

/* Under a position policy: the query and the direct tokens' keys rotated to their
 * positions in the attention frame (copies in w->rot). */
static void rotate_direct(const actx *a, const qgeo *x, int nb, int64_t nt, int64_t nsinks,
                          awork *w)
{
    const lmk_attend_opts *o = a->o;
    const lmk_pos_kind pk = o->pos->kind;
    const int D = a->s->head_dim, L = a->s->L;
    int64_t qpos, far = x->p - o->pos->fixed_distance;
    qpos = pk == LMK_POS_SLOTS ? slots_query_pos(a->s, x, nb) : x->p;
    o->pos->rotate(o->pos->ud, w->qr, 1, D, &qpos);
    for (int64_t t = 0; t < nt; t++) {
        memcpy(w->rot + (size_t)t * D, w->ek[t], (size_t)D * 4);
        if (pk == LMK_POS_SLOTS)
            w->epos[t] = nb * (int64_t)L + (w->epos[t] - x->local_start);
        else if (t < nsinks)
            w->epos[t] = far;
        w->ek[t] = w->rot + (size_t)t * D;
    }
    if (nt)
        o->pos->rotate(o->pos->ud, w->rot, (int)nt, D, w->epos);
}

/* Block keys (rotated copies under a policy) and the gates: scaled scores of the
 * blocks' landmarks (the maximum over a block's entries when it has several). Under slots
 * the rotated copy of block j depends only on (KV head, block, j), so a thread keeps the
 * copies of its previous item and reuses those that match (chunk retrieval gives a head's
 * queries one block set: rotated once per chunk, not per query); the values are the same
 * bits either way. */
static void block_gates(const actx *a, const qgeo *x, int kvh, int nb, float scale, awork *w)
{
    const lmk_session *s = a->s;
    const lmk_attend_opts *o = a->o;
    const int D = s->head_dim, L = s->L, R = s->R;
    const lmk_pos_kind pk = o->pos ? o->pos->kind : LMK_POS_AS_GIVEN;
    const float *lms = lmk_index_vectors(s->idx[a->layer * s->n_kv_heads + kvh]);
    float *brot = w->rot + a->max_tok * D;
    for (int j = 0; j < nb; j++) {
        const lmk_slot *sl = find_slot(a, kvh, w->blk[j]);
        w->bk[j] = sl->k;
        w->bv[j] = sl->v;
        const float *lm = lms + (size_t)w->blk[j] * R * D;
        if (pk == LMK_POS_SLOTS && w->rblk[j] == w->blk[j]) {
            float *dst = brot + (size_t)j * (L + R) * D;
            w->bk[j] = dst;
            lm = dst + (size_t)L * D;
        } else if (pk != LMK_POS_AS_GIVEN) {
            int64_t *pos = w->bpos;
            float *dst = brot + (size_t)j * (L + R) * D;
            memcpy(dst, sl->k, (size_t)L * D * 4);
            memcpy(dst + (size_t)L * D, lm, (size_t)R * D * 4);
            int64_t base = pk == LMK_POS_SLOTS ? (int64_t)j * L : x->p - o->pos->fixed_distance;
            for (int r = 0; r < L; r++)
                pos[r] = pk == LMK_POS_SLOTS ? base + r : base;
            for (int e = 0; e < R; e++)
                pos[L + e] = pk == LMK_POS_SLOTS ? base + L - 1 : base;
            o->pos->rotate(o->pos->ud, dst, L + R, D, pos);
            w->rblk[j] = pk == LMK_POS_SLOTS ? w->blk[j] : -1;
            w->bk[j] = dst;
            lm = dst + (size_t)L * D;
        }
        float g = lmk_dot(w->qr, lm, D);
        for (int e = 1; e < R; e++) {
            float ge = lmk_dot(w->qr, lm + (size_t)e * D, D);
            g = ge > g ? ge : g;
        }
        w->gate[j] = scale * g;
    }
}

/* Weighted sum of the direct tokens' values into out with weights exp(score - m);
 * returns the sum of the weights. */
static double direct_values(const awork *w, int64_t nt, float m, int D, float *out)
{
    double z = lmk_exp_shift(w->esc, w->esc, nt, m); /* the scores become the weights */
    for (int64_t t = 0; t < nt; t++) {
        float e = w->esc[t];
        for (int d = 0; d < D; d++)
            out[d] += e * w->ev[t][d];
    }
    return z;
}

/* Union mode: one softmax over tokens and every regular row of the retrieved blocks.
 * Returns the normalizer; out holds the unnormalized sum. */
static double softmax_union(const awork *w, int64_t nt, int nb, int L, int rows_per_block,
                            int D, float m, float *out)
{
    for (int j = 0; j < nb; j++)
        for (int r = 0; r < rows_per_block; r++)
            if (w->bsc[(size_t)j * L + r] > m)
                m = w->bsc[(size_t)j * L + r];
    double z = direct_values(w, nt, m, D, out);
    for (int j = 0; j < nb; j++) {
        float *sc = w->bsc + (size_t)j * L;
        z += lmk_exp_shift(sc, sc, rows_per_block, m);
        if (rows_per_block > 0)
            cblas_sgemv(CblasRowMajor, CblasTrans, rows_per_block, D, 1.0f, w->bv[j], D, sc, 1,
                        1.0f, out, 1);
    }
    return z;
}

/* Grouped mode: shared softmax over tokens and gates; each block's own softmax inside.
 * Returns the normalizer; out holds the unnormalized sum. */
static double softmax_grouped(const awork *w, int64_t nt, int nb, int L, int rows_per_block,
                              int D, float m, float *out)
{
    for (int j = 0; j < nb; j++)
        if (w->gate[j] > m)
            m = w->gate[j];
    double z = direct_values(w, nt, m, D, out);
    z += lmk_exp_shift(w->gate, w->gate, nb, m); /* the gates become their weights */
    for (int j = 0; j < nb; j++) {
        float pg = w->gate[j];
        if (rows_per_block == 0)
            continue;
        float *sc = w->bsc + (size_t)j * L;
        float mb = -INFINITY;
        for (int r = 0; r < rows_per_block; r++)
            if (sc[r] > mb)
                mb = sc[r];
        double zb = lmk_exp_shift(sc, sc, rows_per_block, mb);
        cblas_sgemv(CblasRowMajor, CblasTrans, rows_per_block, D, (float)(pg / zb), w->bv[j], D,
                    sc, 1, 1.0f, out, 1);
    }
    return z;
}

/* Output row of query i, head h: q and out (head_dim). */
static void attend_one(const actx *a, int64_t i, int h, const float *q, float *out, void *work)
{
    const lmk_session *s = a->s;
    const lmk_attend_opts *o = a->o;
    const qgeo *x = &a->g[i];
    const int D = s->head_dim, L = s->L, kvh = h / s->group;
    const float scale = 1.0f / sqrtf((float)D);
    const int rows_per_block = s->landmark == LMK_LANDMARK_TOKEN ? L - 1 : L;
    awork w;
    carve(a, work, &w);
    if (w.rblk[a->max_sel] != kvh) { /* copies of another KV head's blocks */
        for (int64_t j = 0; j < a->max_sel; j++)
            w.rblk[j] = -1;
        w.rblk[a->max_sel] = kvh;
    }

    /* retrieved blocks, in original order (slot order) */
    int nb = a->nsel[i * s->n_heads + h];
    memcpy(w.blk, a->sel + ((size_t)i * s->n_heads + h) * a->max_sel,
           (size_t)nb * sizeof *w.blk);
    for (int a = 1; a < nb; a++) { /* insertion sort: a handful of blocks */
        int64_t v = w.blk[a];
        int b = a - 1;
        for (; b >= 0 && w.blk[b] > v; b--)
            w.blk[b + 1] = w.blk[b];
        w.blk[b + 1] = v;
    }

    int64_t nsinks;
    int64_t nt = direct_tokens(a, x, kvh, nb, &w, &nsinks);
    memcpy(w.qr, q, (size_t)D * 4);
    if (o->pos && o->pos->kind != LMK_POS_AS_GIVEN)
        rotate_direct(a, x, nb, nt, nsinks, &w);

    /* scores of directly attended tokens */
    float m = -INFINITY;
    for (int64_t t = 0; t < nt; t++) {
        w.esc[t] = scale * lmk_dot(w.qr, w.ek[t], D);
        if (w.esc[t] > m)
            m = w.esc[t];
    }
    block_gates(a, x, kvh, nb, scale, &w);

    /* scores of every regular row of the retrieved blocks: one product per block */
    for (int j = 0; j < nb && rows_per_block > 0; j++)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows_per_block, D, scale, w.bk[j], D, w.qr, 1,
                    0.0f, w.bsc + (size_t)j * L, 1);

    memset(out, 0, (size_t)D * 4);
    double z = o->mode == LMK_MODE_UNION
                   ? softmax_union(&w, nt, nb, L, rows_per_block, D, m, out)
                   : softmax_grouped(&w, nt, nb, L, rows_per_block, D, m, out);
    float inv = (float)(1.0 / z);
    for (int d = 0; d < D; d++)
        out[d] *= inv;
}

int lmk_attend_compute(const lmk_attend_plan *p, float *out)
{
    lmk_session *s = p->s;
    const int D = s->head_dim, NH = s->n_heads;
    actx a = {s, p->layer, p->o, p->g, p->max_sel, p->sel, p->nsel, s->need.p, s->slots.p,
              p->sealed_T, p->max_tok};
    size_t wb = work_bytes(s, p->o, p->max_sel, p->max_tok);
    int nthc = s->n_threads;
    for (int t = 0; t < nthc; t++)
        if (lmk_buf_reserve(&s->work[t], wb))
            return lmk_sess_fail(s, ENOMEM, "out of memory");
    int64_t items = p->nq * NH;
    const float *q = p->q;
    /* items head-major, so a thread's consecutive items share a head's blocks; each
     * thread starts with no rotated copies (rblk all -1 under an impossible KV head) */
    awork w0;
    for (int t = 0; t < nthc; t++) {
        carve(&a, s->work[t].p, &w0);
        w0.rblk[p->max_sel] = -1;
    }
    /* a parallel region costs more than it saves on a small step (a decoding step of a small
     * model): under about 1M multiply-adds one thread does it all (same results) */
    double madds = (double)items * (double)(p->max_sel * s->L + (int64_t)p->max_tok) * D;
    if (madds < (double)(1 << 20))
        nthc = 1;
#pragma omp parallel for num_threads(nthc) schedule(static) if (nthc > 1 && items > 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t i = it % p->nq;
        int h = (int)(it / p->nq);
        size_t row = (size_t)i * NH + (size_t)h;
        attend_one(&a, i, h, q + row * D, out + row * D, s->work[omp_get_thread_num()].p);
    }
    return LMK_OK;
}
