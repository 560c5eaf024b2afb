/* LLaMA forward pass (RMSNorm -> attention -> residual -> RMSNorm -> SwiGLU -> residual)
 * over a context's attention backend. Shapes are spelled out as (rows, cols), row-major. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_model_impl.h"
#include "lmk_vexp.h"
#include "lmk_quant.h"

#define DENSE_QB 16 /* dense reference: queries per score block */

/* ---- forward pass pieces ---- */

/* y (n, w->rows) = x (n, w->cols) . w^T, or += when acc. Fixed 64-row tiles of w, so the
 * result is the same for any thread count:
 *   aligned F32 weights: one single-threaded BLAS call per tile, in place;
 *   other types, n >= GEMM_MIN_ROWS: the tile's rows expanded to f32 (ggml's values) into
 *     per-thread scratch, then one BLAS call;
 *   other types, n < GEMM_MIN_ROWS: x quantized once to lmk_quant activation blocks, then
 *     integer dot products of each weight row with each input row. */
static void matmul(lmk_ctx *c, const wmat *w, const float *x, int64_t n, float *y, int acc)
{
    int64_t n_tiles = (w->rows + TILE_ROWS - 1) / TILE_ROWS, cols = w->cols, rows = w->rows;
    int nt = c->m->n_threads < c->n_thr ? c->m->n_threads : c->n_thr;
    if (nt > n_tiles)
        nt = (int)n_tiles;
    if ((double)n * (double)rows * (double)cols < (double)(1 << 21))
        nt = 1; /* a parallel region costs more than it saves on small products */
    int use_act = !w->f && n < GEMM_MIN_ROWS;
    size_t ab = 0;
    if (use_act) {
        lmk_quant_act_size(w->type, cols, &ab); /* checked at open */
        for (int64_t i = 0; i < n; i++)
            if (lmk_quant_act_quantize(w->type, x + i * cols, cols, c->act + i * ab) != LMK_OK)
                use_act = 0; /* a non-finite input: the f32 path propagates it as BLAS would */
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t t = 0; t < n_tiles; t++) {
        int64_t r0 = t * TILE_ROWS, nr = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        if (use_act) {
            for (int64_t r = r0; r < r0 + nr; r++) {
                const uint8_t *wr = w->data + (size_t)r * w->row_bytes;
                for (int64_t i = 0; i < n; i++) {
                    float d = 0;
                    lmk_quant_dot_act(w->type, wr, c->act + i * ab, cols, LMK_QUANT_PATH_AUTO,
                                      &d);
                    y[i * rows + r] = acc ? y[i * rows + r] + d : d;
                }
            }
            continue;
        }
        const float *wt = w->f ? w->f + r0 * cols : NULL;
        if (!wt) {
            float *s = c->tile[omp_get_thread_num()];
            lmk_quant_dequantize_row(w->type, w->data + (size_t)r0 * w->row_bytes, nr * cols,
                                     LMK_QUANT_PATH_AUTO, s);
            wt = s;
        }
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nr, (int)cols, 1.0f, wt, (int)cols, x,
                        1, acc ? 1.0f : 0.0f, y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)cols,
                        1.0f, x, (int)cols, wt, (int)cols, acc ? 1.0f : 0.0f, y + r0,
                        (int)rows);
    }
}

/* y (n, d) += b (d) */
static void add_bias(float *y, const float *b, int64_t n, int d)
{
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            y[i * d + j] += b[j];
}

static void rmsnorm(const float *x, const float *w, int64_t n, int E, float eps, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * E;
        double ss = 0;
        for (int j = 0; j < E; j++)
            ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / E + eps));
        for (int j = 0; j < E; j++)
            y[i * E + j] = xi[j] * r * w[j];
    }
}

/* Dense reference attention weights for one query at position p over scores s[0..p]
 * (scaled dot products with keys at their absolute positions); written in place, zeros
 * for positions the query does not read. */
static void dense_weights(const lmk_ctx *c, float *s, int64_t p)
{
    int L = c->block_len;
    int64_t c0 = L > 0 ? p / L * L : 0;
    if (c->lm && c->o.mode == LMK_MODE_GROUPED) {
        /* One softmax over the current block's tokens and the landmark gates of every
         * earlier block; inside each block a softmax over its L - 1 regular tokens. */
        float mx = -INFINITY;
        for (int64_t j = c0; j <= p; j++)
            mx = s[j] > mx ? s[j] : mx;
        for (int64_t b = 0; b < c0 / L; b++)
            mx = s[b * L + L - 1] > mx ? s[b * L + L - 1] : mx;
        double z = 0;
        for (int64_t j = c0; j <= p; j++)
            z += exp((double)s[j] - mx);
        for (int64_t b = 0; b < c0 / L; b++)
            z += exp((double)s[b * L + L - 1] - mx);
        for (int64_t b = 0; b < c0 / L; b++) {
            float *bs = s + b * L;
            double pb = exp((double)bs[L - 1] - mx) / z;
            float bm = -INFINITY;
            for (int i = 0; i < L - 1; i++)
                bm = bs[i] > bm ? bs[i] : bm;
            double bz = 0;
            for (int i = 0; i < L - 1; i++)
                bz += exp((double)bs[i] - bm);
            for (int i = 0; i < L - 1; i++)
                bs[i] = (float)(pb * exp((double)bs[i] - bm) / bz);
            bs[L - 1] = 0;
        }
        for (int64_t j = c0; j <= p; j++)
            s[j] = (float)(exp((double)s[j] - mx) / z);
        return;
    }
    /* Plain softmax; a landmark model's sealed landmark tokens are not read (union). */
    float mx = -INFINITY;
    for (int64_t j = 0; j <= p; j++) {
        if (c->lm && j < c0 && j % L == L - 1)
            continue;
        mx = s[j] > mx ? s[j] : mx;
    }
    double z = 0;
    for (int64_t j = 0; j <= p; j++) {
        if (c->lm && j < c0 && j % L == L - 1)
            continue;
        z += exp((double)s[j] - mx);
    }
    for (int64_t j = 0; j <= p; j++)
        s[j] = c->lm && j < c0 && j % L == L - 1 ? 0.0f : (float)(exp((double)s[j] - mx) / z);
}

static int dense_attend(lmk_ctx *c, int layer, int64_t n, float *q, float *out)
{
    const lmk_model_info *H = &c->m->info;
    int hd = H->head_dim, nh = H->n_heads, nkv = H->n_kv_heads, grp = nh / nkv;
    int64_t T = c->n_past + n;
    const float *K = c->kc[layer], *V = c->vc[layer];
    float scale = 1.0f / sqrtf((float)hd);
    int nt = c->m->n_threads < c->n_thr ? c->m->n_threads : c->n_thr;
    for (int i = 0; i < nt; i++) {
        int64_t need = (int64_t)DENSE_QB * T;
        if (c->sc_cap[i] < need) {
            int64_t cap = need * 2;
            float *p = realloc(c->sc[i], (size_t)cap * sizeof(float));
            if (!p)
                return ENOMEM;
            c->sc[i] = p;
            c->sc_cap[i] = cap;
        }
    }
    int64_t n_qb = (n + DENSE_QB - 1) / DENSE_QB;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) collapse(2)
    for (int h = 0; h < nh; h++)
        for (int64_t qb = 0; qb < n_qb; qb++) {
            float *S = c->sc[omp_get_thread_num()];
            int g = h / grp;
            int64_t i0 = qb * DENSE_QB, m = n - i0 < DENSE_QB ? n - i0 : DENSE_QB;
            int64_t Tq = c->n_past + i0 + m; /* keys up to the block's last query */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)Tq, hd, scale,
                        q + (i0 * nh + h) * hd, nh * hd, K + (size_t)g * hd, nkv * hd, 0.0f,
                        S, (int)Tq);
            for (int64_t r = 0; r < m; r++) {
                int64_t p = c->n_past + i0 + r;
                float *s = S + r * Tq;
                dense_weights(c, s, p);
                for (int64_t j = p + 1; j < Tq; j++)
                    s[j] = 0;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, hd, (int)Tq, 1.0f, S,
                        (int)Tq, V + (size_t)g * hd, nkv * hd, 0.0f, out + (i0 * nh + h) * hd,
                        nh * hd);
        }
    return LMK_OK;
}

static int attention(lmk_ctx *c, int layer, int64_t n, float *out)
{
    const lmk_model_info *H = &c->m->info;
    int nkvd = H->n_kv_heads * H->head_dim;
    if (c->o.backend == LMK_ATTN_DENSE) {
        lmk_model__rope_rows(c->m, c->q, n, H->n_heads, c->n_past);
        lmk_model__rope_rows(c->m, c->k, n, H->n_kv_heads, c->n_past);
        memcpy(c->kc[layer] + (size_t)c->n_past * nkvd, c->k, (size_t)n * nkvd * sizeof(float));
        memcpy(c->vc[layer] + (size_t)c->n_past * nkvd, c->v, (size_t)n * nkvd * sizeof(float));
        int rc = dense_attend(c, layer, n, c->q, out);
        if (rc)
            lmk_model__err(c->err, sizeof c->err, rc, "dense attention: out of memory");
        return rc;
    }
    if (c->o.pos == LMK_POS_AS_GIVEN) { /* "original": keys and queries at absolute positions */
        lmk_model__rope_rows(c->m, c->q, n, H->n_heads, c->n_past);
        lmk_model__rope_rows(c->m, c->k, n, H->n_kv_heads, c->n_past);
    }
    const float *qsel = NULL;
    if (c->want_q) {
        /* the ranking frame: under fixed positions a query meets every retrieved key at the
         * fixed distance; otherwise the frame keys are stored in */
        memcpy(c->qsel, c->q, (size_t)n * H->n_heads * H->head_dim * sizeof(float));
        if (c->o.pos == LMK_POS_FIXED) {
            for (int64_t i = 0; i < n * H->n_heads; i++)
                c->qpos[i] = c->o.fixed_distance;
            lmk_model_rotate(c->m, c->qsel, (int)(n * H->n_heads), H->head_dim, c->qpos);
        }
        qsel = c->qsel;
    }
    if (c->o.record)
        c->o.record(c->o.record_ud, layer, n, c->k, c->v, qsel);
    int rc = lmk_session_append_q(c->o.session, layer, n, c->k, c->v, qsel);
    if (rc)
        return lmk_model__err(c->err, sizeof c->err, rc, "session append (layer %d): %s", layer,
                              lmk_session_errmsg(c->o.session));
    lmk_attend_stats st;
    memset(&st, 0, sizeof st);
    rc = lmk_session_attend(c->o.session, layer, n, c->q, &c->att, out, &st);
    if (rc)
        return lmk_model__err(c->err, sizeof c->err, rc, "session attend (layer %d): %s", layer,
                              lmk_session_errmsg(c->o.session));
    c->st.attend.search_s += st.search_s;
    c->st.attend.fetch_s += st.fetch_s;
    c->st.attend.attn_s += st.attn_s;
    c->st.attend.blocks_fetched += st.blocks_fetched;
    c->st.attend.bytes_fetched += st.bytes_fetched;
    return LMK_OK;
}

static int dense_reserve(lmk_ctx *c, int64_t T)
{
    if (T <= c->cap)
        return LMK_OK;
    if (c->o.dense_max_tokens > 0 && T > c->o.dense_max_tokens)
        return lmk_model__err(c->err, sizeof c->err, LMK_EINVAL,
                              "dense attention is limited to %lld tokens here",
                              (long long)c->o.dense_max_tokens);
    const lmk_model_info *H = &c->m->info;
    int64_t cap = c->cap ? c->cap : 1024;
    while (cap < T)
        cap *= 2;
    size_t row = (size_t)H->n_kv_heads * H->head_dim * sizeof(float);
    for (int l = 0; l < H->n_layers; l++) {
        float *k = realloc(c->kc[l], (size_t)cap * row);
        if (k)
            c->kc[l] = k;
        float *v = realloc(c->vc[l], (size_t)cap * row);
        if (v)
            c->vc[l] = v;
        if (!k || !v)
            return lmk_model__err(c->err, sizeof c->err, ENOMEM,
                                  "out of memory for a dense cache of %lld tokens", (long long)cap);
    }
    c->cap = cap;
    return LMK_OK;
}

/* Run positions ids[0..n) (n <= chunk) at c->n_past..; logits of chunk rows lrow[i] go to
 * logits + ldst[i] * n_vocab. */
static int forward(lmk_ctx *c, const int32_t *ids, int64_t n, int n_out, float *logits)
{
    const lmk_model *m = c->m;
    const lmk_model_info *H = &m->info;
    int E = H->n_embd;
    int rc;
    if (c->o.backend == LMK_ATTN_DENSE && (rc = dense_reserve(c, c->n_past + n)) != 0)
        return rc;
    if (n_out > c->lg_rows) {
        float *lg = realloc(c->lg, (size_t)n_out * H->n_vocab * sizeof(float));
        if (!lg)
            return lmk_model__err(c->err, sizeof c->err, ENOMEM, "out of memory for logits");
        c->lg = lg;
        c->lg_rows = n_out;
    }
    /* One session transaction per call (a decoded token, a prefill chunk): every layer's
     * tokens land in one commit, so an interruption never leaves layers at different
     * lengths. A caller's own open transaction is joined instead; a chunk whose writes could
     * pass the transaction limit (f32 upper bound) is appended layer by layer as before. */
    lmk_session *ses = c->o.backend == LMK_ATTN_SESSION ? c->o.session : NULL;
    size_t nkvd = (size_t)H->n_kv_heads * H->head_dim;
    int own_txn = ses && !lmk_session_in_txn(ses) &&
                  (size_t)n * H->n_layers * nkvd * 2 * 4 / 4 * 5 <= LMK_SESSION_TXN_MAX_BYTES;
    if (own_txn && (rc = lmk_session_begin(ses)) != 0)
        return lmk_model__err(c->err, sizeof c->err, rc, "session begin: %s",
                              lmk_session_errmsg(ses));
    double t0 = lmk_clock_s(), ta = 0;
    for (int64_t i = 0; i < n; i++)
        lmk_quant_dequantize_row(m->embd.type, m->embd.data + (size_t)ids[i] * m->embd.row_bytes,
                                 E, LMK_QUANT_PATH_AUTO, c->x + i * E);
    for (int l = 0; l < H->n_layers; l++) {
        const layer_w *L = &m->layers[l];
        rmsnorm(c->x, L->attn_norm, n, E, H->rms_eps, c->xn);
        matmul(c, &L->wq, c->xn, n, c->q, 0);
        matmul(c, &L->wk, c->xn, n, c->k, 0);
        matmul(c, &L->wv, c->xn, n, c->v, 0);
        int nq = H->n_heads * H->head_dim, nkv = H->n_kv_heads * H->head_dim;
        if (L->bq) { /* qwen2 */
            add_bias(c->q, L->bq, n, nq);
            add_bias(c->k, L->bk, n, nkv);
            add_bias(c->v, L->bv, n, nkv);
        }
        if (L->q_norm) { /* qwen3: RMSNorm of every head's query and key, before rotation */
            rmsnorm(c->q, L->q_norm, n * H->n_heads, H->head_dim, H->rms_eps, c->q);
            rmsnorm(c->k, L->k_norm, n * H->n_kv_heads, H->head_dim, H->rms_eps, c->k);
        }
        double t1 = lmk_clock_s();
        rc = attention(c, l, n, c->att_out);
        ta += lmk_clock_s() - t1;
        if (rc) {
            if (own_txn)
                lmk_session_abort(ses);
            return rc;
        }
        matmul(c, &L->wo, c->att_out, n, c->x, 1);
        rmsnorm(c->x, L->ffn_norm, n, E, H->rms_eps, c->xn);
        matmul(c, &L->wg, c->xn, n, c->hg, 0);
        matmul(c, &L->wu, c->xn, n, c->hu, 0);
        int64_t nf = n * H->n_ff;
        lmk_silu_mul(c->hg, c->hg, c->hu, nf);
        matmul(c, &L->wd, c->hg, n, c->x, 1);
    }
    if (n_out > 0) {
        for (int i = 0; i < n_out; i++)
            rmsnorm(c->x + (size_t)c->lrow[i] * E, m->out_norm, 1, E, H->rms_eps,
                    c->xn + (size_t)i * E);
        matmul(c, &m->out, c->xn, n_out, c->lg, 0);
        for (int i = 0; i < n_out; i++)
            memcpy(logits + c->ldst[i] * H->n_vocab, c->lg + (size_t)i * H->n_vocab,
                   (size_t)H->n_vocab * sizeof(float));
    }
    if (own_txn && (rc = lmk_session_commit(ses)) != 0) {
        lmk_model__err(c->err, sizeof c->err, rc, "session commit: %s", lmk_session_errmsg(ses));
        lmk_session_abort(ses);
        return rc;
    }
    c->st.attn_s += ta;
    c->st.matmul_s += lmk_clock_s() - t0 - ta;
    c->st.positions += n;
    c->n_past += n;
    return LMK_OK;
}

/* Undo a failed call: the session (or dense cache) goes back to n_past positions. */
static int rollback(lmk_ctx *c, int64_t n_past, int rc)
{
    if (c->o.backend == LMK_ATTN_SESSION) {
        int64_t have = lmk_session_tokens(c->o.session, 0);
        int need = have != n_past;
        for (int l = 1; l < c->m->info.n_layers && !need; l++)
            need = lmk_session_tokens(c->o.session, l) != n_past;
        if (need) {
            int rc2 = lmk_session_truncate(c->o.session, n_past);
            if (rc2) {
                size_t len = strlen(c->err);
                snprintf(c->err + len, sizeof c->err - len, "; and undoing it failed: %s",
                         lmk_session_errmsg(c->o.session));
            }
        }
    }
    c->n_past = n_past;
    return rc;
}

static int check_ids(lmk_ctx *c, const int32_t *ids, int64_t n, int64_t n_logits)
{
    if (n < 0 || n_logits < 0 || n_logits > n)
        return lmk_model__err(c->err, sizeof c->err, LMK_EINVAL, "bad token or logits count");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->m->info.n_vocab)
            return lmk_model__err(c->err, sizeof c->err, LMK_EINVAL, "token id %d out of range",
                                  ids[i]);
    return LMK_OK;
}

LMK_API int lmk_ctx_feed(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits,
                         int64_t n_logits)
{
    int rc = check_ids(c, ids, n, n_logits);
    if (rc)
        return rc;
    if (!logits)
        n_logits = 0;
    int64_t start = c->n_past, first = n - n_logits, i = 0;
    int64_t total = n + (c->lm ? (start % c->block_len + n) / (c->block_len - 1) + 1 : 0);
    while (i < n) {
        int64_t mpos = 0;
        int n_out = 0;
        /* Leave room for a landmark right after the chunk's last regular token. */
        while (mpos < c->o.chunk - 1 && i < n) {
            int64_t pos = c->n_past + mpos;
            if (c->lm && pos % c->block_len == c->block_len - 1) {
                c->ids[mpos++] = c->m->info.landmark_token;
                continue;
            }
            int64_t row = mpos;
            c->ids[mpos++] = ids[i];
            if (c->lm && c->o.next_from == LMK_NEXT_FROM_LANDMARK &&
                (pos + 1) % c->block_len == c->block_len - 1) {
                row = mpos;
                c->ids[mpos++] = c->m->info.landmark_token;
            }
            if (i >= first) {
                c->lrow[n_out] = (int)row;
                c->ldst[n_out] = i - first;
                n_out++;
            }
            i++;
        }
        if ((rc = forward(c, c->ids, mpos, n_out, logits)) != 0)
            return rollback(c, start, rc);
        if (c->o.progress)
            c->o.progress(c->o.progress_ud, c->n_past - start, total);
    }
    return LMK_OK;
}

LMK_API int lmk_ctx_feed_raw(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits,
                             int64_t n_logits)
{
    int rc = check_ids(c, ids, n, n_logits);
    if (rc)
        return rc;
    if (!logits)
        n_logits = 0;
    int64_t start = c->n_past;
    for (int64_t i = 0; i < n;) {
        int64_t m = n - i < c->o.chunk ? n - i : c->o.chunk;
        int n_out = 0;
        for (int64_t r = 0; r < m; r++)
            if (i + r >= n - n_logits) {
                c->lrow[n_out] = (int)r;
                c->ldst[n_out] = i + r - (n - n_logits);
                n_out++;
            }
        memcpy(c->ids, ids + i, (size_t)m * sizeof(int32_t));
        if ((rc = forward(c, c->ids, m, n_out, logits)) != 0)
            return rollback(c, start, rc);
        i += m;
        if (c->o.progress)
            c->o.progress(c->o.progress_ud, c->n_past - start, n);
    }
    return LMK_OK;
}
