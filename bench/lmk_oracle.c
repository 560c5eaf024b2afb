/* The retrieval oracle and the representative table (lmk_oracle.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_priv.h"
#include "lmk_clock.h"
#include "lmk_export.h"
#include "lmk_f16.h"
#include "lmk_fs.h"
#include "lmk_index.h"
#include "lmk_oracle.h"
#include "lmk_session.h"

LMK_API void lmk_oracle_block_mass(const float *keys, size_t stride, int64_t n_keys,
                                   const float *q, int head_dim, int block_len, int64_t n_cand,
                                   double *mass)
{
    const double scale = 1.0 / sqrt((double)head_dim);
    double mx = -INFINITY, z = 0;
    for (int64_t j = 0; j < n_keys; j++) {
        double s = 0;
        for (int d = 0; d < head_dim; d++)
            s += (double)q[d] * keys[(size_t)j * stride + d];
        s *= scale;
        mx = s > mx ? s : mx;
    }
    for (int64_t b = 0; b < n_cand; b++)
        mass[b] = 0;
    for (int64_t j = 0; j < n_keys; j++) {
        double s = 0;
        for (int d = 0; d < head_dim; d++)
            s += (double)q[d] * keys[(size_t)j * stride + d];
        double e = exp(s * scale - mx);
        z += e;
        if (j / block_len < n_cand)
            mass[j / block_len] += e;
    }
    for (int64_t b = 0; b < n_cand; b++)
        mass[b] /= z;
}

LMK_API void lmk_oracle_topk(const double *mass, int64_t n, int k, int64_t *out)
{
    for (int j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t b = 0; b < n; b++) {
            int used = 0;
            for (int i = 0; i < j && !used; i++)
                used = out[i] == b;
            if (!used && (best < 0 || mass[b] > mass[best]))
                best = b;
        }
        out[j] = best;
    }
}

LMK_API lmk_repr_cfg lmk_repr_cfg_default(void)
{
    lmk_repr_cfg c;
    memset(&c, 0, sizeof c);
    c.block_len = 64;
    c.top_k = 8;
    c.n_local = 128;
    c.n_sink = 4;
    c.n_eval = 32;
    c.threads = 1;
    return c;
}

static const float *rec_keys(const bench_rec_mem *r, int l)
{
    return r->k + (size_t)l * (2 * (size_t)r->T * r->NKV * r->D + (size_t)r->NQ * r->NH * r->D);
}
static const float *rec_vals(const bench_rec_mem *r, int l)
{
    return rec_keys(r, l) + (size_t)r->T * r->NKV * r->D;
}
static const float *rec_queries(const bench_rec_mem *r, int l)
{
    return rec_vals(r, l) + (size_t)r->T * r->NKV * r->D;
}

LMK_API void lmk_oracle_quest_bounds(const float *keys, size_t stride, const float *q,
                                     int head_dim, int block_len, int64_t n_cand, double *bound)
{
    for (int64_t b = 0; b < n_cand; b++) {
        double sum = 0;
        for (int d = 0; d < head_dim; d++) {
            const float *k = keys + (size_t)b * block_len * stride + d;
            float lo = k[0], hi = k[0];
            for (int t = 1; t < block_len; t++) {
                float x = k[(size_t)t * stride];
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
            }
            double a = (double)q[d] * lo, c = (double)q[d] * hi;
            sum += a > c ? a : c;
        }
        bound[b] = sum;
    }
}

/* Candidate blocks of a query at p (as the engine's geometry, no forced recent blocks). */
static int64_t candidates(int64_t p, int L, int n_local)
{
    int64_t ls = p / L * L;
    if (n_local > 0) {
        int64_t lw = p - n_local + 1;
        lw = lw < 0 ? 0 : lw / L * L;
        ls = lw < ls ? lw : ls;
    }
    return ls / L;
}

/* Recall and mass sums of a representative over (position, layer, head). */
typedef struct score_acc {
    double rsum, msum, osum, lrsum;
    int64_t nrs, nlast;
} score_acc;

/* One evaluation position: mass (NL, NH, cmax) of the oracle, its top (NL, NH, K), the
 * representative's choice got (NL, NH, K), C candidate blocks. */
static void score_pos(score_acc *a, const lmk_repr_cfg *c, int NL, int NH, const double *mass,
                      const int64_t *otop, const int64_t *got, int64_t C, int64_t cmax, int last)
{
    const int K = c->top_k;
    if (C == 0)
        return;
    int kk = C < K ? (int)C : K;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NH; h++) {
            size_t it = (size_t)l * NH + h;
            const double *m = mass + it * (size_t)(cmax > 0 ? cmax : 1);
            const int64_t *o = otop + it * K, *g = got + it * K;
            double tot = 0, mg = 0, mo = 0;
            int hit = 0;
            for (int64_t b = 0; b < C; b++)
                tot += m[b];
            for (int j = 0; j < kk; j++) {
                mo += o[j] >= 0 ? m[o[j]] : 0;
                if (g[j] < 0 || g[j] >= C)
                    continue;
                mg += m[g[j]];
                for (int t = 0; t < kk; t++)
                    hit += o[t] == g[j];
            }
            double rcl = (double)hit / kk;
            a->rsum += rcl;
            a->msum += tot > 0 ? mg / tot : 1;
            a->osum += tot > 0 ? mo / tot : 1;
            a->nrs++;
            if (last) {
                a->lrsum += rcl;
                a->nlast++;
            }
        }
}

static void score_finish(const score_acc *a, lmk_repr_row *row)
{
    row->recall = a->nrs ? a->rsum / a->nrs : NAN;
    row->mass = a->nrs ? a->msum / a->nrs : NAN;
    row->oracle_mass = a->nrs ? a->osum / a->nrs : NAN;
    row->last_recall = a->nlast ? a->lrsum / a->nlast : NAN;
}

static void rm_rf(const char *dir)
{
    (void)lmk_fs_rmtree(dir); /* best effort: a leftover directory is only disk space */
}

LMK_API int lmk_repr_bench_run(const lmk_repr_cfg *c, lmk_repr_row *rows, char *err, size_t cap)
{
    if (!c || !rows || !c->recorded || c->n_cases < 1 || c->n_cases > LMK_REPR_MAX_CASES ||
        c->top_k < 1 || c->block_len < 1 || c->n_eval < 1) {
        snprintf(err, cap, "representative table: bad configuration");
        return LMK_EINVAL;
    }
    bench_rec_mem r;
    int rc = bench_rec_load(c->recorded, &r, err, cap);
    if (rc)
        return rc;
    const int L = c->block_len, K = c->top_k, NL = r.NL, NH = r.NH, NKV = r.NKV, D = r.D;
    const int G = NH / NKV;
    /* evaluation positions: spread over the second half, the last one included */
    int ne = c->n_eval;
    int64_t *pos = malloc((size_t)ne * sizeof *pos);
    size_t per_pos = (size_t)NL * NH;
    int64_t cmax = candidates(r.T - 1, L, c->n_local);
    double *mass = malloc((size_t)ne * per_pos * (size_t)(cmax > 0 ? cmax : 1) * sizeof(double));
    int64_t *otop = malloc((size_t)ne * per_pos * K * sizeof(int64_t));
    int quest = 0;
    for (int ci = 0; ci < c->n_cases; ci++)
        quest |= c->cases[ci].landmark == LMK_REPR_QUEST;
    /* Quest's choice per (position, layer, head), and the time of its scans */
    int64_t *qtop = quest ? malloc((size_t)ne * per_pos * K * sizeof(int64_t)) : NULL;
    double *qb = quest ? malloc((size_t)(cmax > 0 ? cmax : 1) * sizeof(double)) : NULL;
    int64_t nblk = r.T / L; /* sealed blocks of the whole stream */
    float *qmm = quest ? malloc((size_t)NKV * (size_t)(nblk > 0 ? nblk : 1) * 2 * D * sizeof(float))
                       : NULL;
    double quest_s = 0;
    int64_t *got = malloc(per_pos * K * sizeof(int64_t));
    float *ks = malloc((size_t)r.T * NKV * D * sizeof(float));
    float *out = malloc((size_t)NH * D * sizeof(float));
    if (!pos || !mass || !otop || !got || !ks || !out || (quest && (!qtop || !qb || !qmm))) {
        snprintf(err, cap, "out of memory");
        rc = ENOMEM;
        goto done;
    }
    for (int i = 0; i < ne; i++)
        pos[i] = ne == 1 ? r.T - 1 : r.T / 2 + (r.T - 1 - r.T / 2) * i / (ne - 1);
    /* the oracle, from the keys as an f16 session stores them */
    for (int l = 0; l < NL; l++) {
        const float *kl = rec_keys(&r, l);
        for (size_t j = 0; j < (size_t)r.T * NKV * D; j++)
            ks[j] = lmk_f16_to_f32(lmk_f32_to_f16(kl[j]));
        for (int kvh = 0; quest && kvh < NKV; kvh++)
            for (int64_t b = 0; b < nblk; b++) {
                float *mm = qmm + ((size_t)kvh * nblk + b) * 2 * D;
                for (int d = 0; d < D; d++) {
                    const float *k = ks + (size_t)b * L * NKV * D + (size_t)kvh * D + d;
                    float lo = k[0], hi = k[0];
                    for (int t = 1; t < L; t++) {
                        float x = k[(size_t)t * NKV * D];
                        lo = x < lo ? x : lo;
                        hi = x > hi ? x : hi;
                    }
                    mm[d] = hi;
                    mm[D + d] = lo;
                }
            }
        for (int i = 0; i < ne; i++) {
            int64_t C = candidates(pos[i], L, c->n_local);
            for (int h = 0; h < NH; h++) {
                size_t it = (size_t)i * per_pos + (size_t)l * NH + h;
                double *m = mass + it * (size_t)(cmax > 0 ? cmax : 1);
                lmk_oracle_block_mass(ks + (size_t)(h / G) * D, (size_t)NKV * D, pos[i] + 1,
                                      rec_queries(&r, l) + ((size_t)pos[i] * NH + h) * D, D, L,
                                      C, m);
                lmk_oracle_topk(m, C, K, otop + it * K);
            }
            if (!quest)
                continue;
            /* the scan as an engine would run it: each block's (max, min) per channel kept
             * (computed here, once per layer, outside the timing), the bound an inner
             * product of (q+, q-) with them */
            double t0 = lmk_clock_s();
            for (int h = 0; h < NH; h++) {
                size_t it = (size_t)i * per_pos + (size_t)l * NH + h;
                const float *q = rec_queries(&r, l) + ((size_t)pos[i] * NH + h) * D;
                for (int64_t b = 0; b < C; b++) {
                    const float *mm = qmm + ((size_t)(h / G) * nblk + b) * 2 * D;
                    double sum = 0;
                    for (int d = 0; d < D; d++)
                        sum += (double)(q[d] > 0 ? q[d] : 0) * mm[d] +
                               (double)(q[d] < 0 ? q[d] : 0) * mm[D + d];
                    qb[b] = sum;
                }
                lmk_oracle_topk(qb, C, K, qtop + it * K);
            }
            quest_s += lmk_clock_s() - t0;
        }
    }
    char base[4096];
    const char *root = c->dir ? c->dir : getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/lmk-repr-%d", root && *root ? root : "/tmp", (int)getpid());
    for (int ci = 0; ci < c->n_cases && rc == LMK_OK; ci++) {
        lmk_repr_row *row = &rows[ci];
        memset(row, 0, sizeof *row);
        row->c = c->cases[ci];
        if (row->c.landmark == LMK_REPR_QUEST) {
            score_acc acc;
            memset(&acc, 0, sizeof acc);
            for (int i = 0; i < ne; i++)
                score_pos(&acc, c, NL, NH,
                          mass + (size_t)i * per_pos * (size_t)(cmax > 0 ? cmax : 1),
                          otop + (size_t)i * per_pos * K, qtop + (size_t)i * per_pos * K,
                          candidates(pos[i], L, c->n_local), cmax, i == ne - 1);
            score_finish(&acc, row);
            /* the scan alone, per (position, layer): no session, so no attention time */
            row->step_ms = row->search_ms = 1e3 * quest_s / ((double)ne * NL);
            row->entries = 2 * (r.T / L);
            continue;
        }
        rm_rf(base);
        lmk_session_opts so = lmk_session_opts_default();
        so.n_layers = NL, so.n_heads = NH, so.n_kv_heads = NKV, so.head_dim = D;
        so.block_len = L;
        so.dtype = LMK_DTYPE_F16;
        so.landmark = (lmk_landmark_src)row->c.landmark;
        so.n_repr = row->c.landmark >= LMK_LANDMARK_ATTN ? row->c.n_repr : 0;
        so.create = 1;
        so.n_threads = c->threads;
        so.durability = LMK_DURABLE_NONE;
        lmk_session *s = NULL;
        if ((rc = lmk_session_open(base, &so, &s, err, cap)))
            break;
        lmk_attend_opts a = lmk_attend_opts_default();
        a.top_k = K;
        a.mode = LMK_MODE_UNION;
        a.n_local = c->n_local;
        a.n_sink = c->n_sink;
        int64_t done = 0;
        score_acc acc;
        memset(&acc, 0, sizeof acc);
        double tsum = 0, ssum = 0;
        int64_t nsteps = 0;
        for (int i = 0; i < ne && rc == LMK_OK; i++) {
            int64_t p = pos[i];
            for (int l = 0; l < NL && rc == LMK_OK && p + 1 > done; l++)
                rc = lmk_session_append_q(s, l, p + 1 - done,
                                          rec_keys(&r, l) + (size_t)done * NKV * D,
                                          rec_vals(&r, l) + (size_t)done * NKV * D,
                                          rec_queries(&r, l) + (size_t)done * NH * D);
            if (rc) {
                snprintf(err, cap, "%s", lmk_session_errmsg(s));
                break;
            }
            done = p + 1;
            int64_t C = candidates(p, L, c->n_local);
            for (int l = 0; l < NL && rc == LMK_OK; l++) {
                lmk_attend_stats st;
                memset(&st, 0, sizeof st);
                st.blocks = got + (size_t)l * NH * K;
                st.blocks_cap = K;
                double t0 = lmk_clock_s();
                rc = lmk_session_attend(s, l, 1, rec_queries(&r, l) + (size_t)p * NH * D, &a,
                                        out, &st);
                tsum += lmk_clock_s() - t0;
                ssum += st.search_s;
                nsteps++;
                if (rc)
                    snprintf(err, cap, "%s", lmk_session_errmsg(s));
            }
            if (rc)
                continue;
            score_pos(&acc, c, NL, NH, mass + (size_t)i * per_pos * (size_t)(cmax > 0 ? cmax : 1),
                      otop + (size_t)i * per_pos * K, got, C, cmax, i == ne - 1);
        }
        lmk_index *ix = lmk_session_index(s, 0, 0);
        row->entries = ix ? lmk_index_ntotal(ix) : 0;
        lmk_session_close(s);
        rm_rf(base);
        score_finish(&acc, row);
        row->step_ms = nsteps ? 1e3 * tsum / nsteps : NAN;
        row->search_ms = nsteps ? 1e3 * ssum / nsteps : NAN;
    }
done:
    free(pos);
    free(mass);
    free(otop);
    free(qtop);
    free(qb);
    free(qmm);
    free(got);
    free(ks);
    free(out);
    free(r.k);
    return rc;
}

LMK_API void lmk_repr_bench_write_table(FILE *f, const lmk_repr_cfg *c, const lmk_repr_row *rows)
{
    fprintf(f, "| representative | entries/block | recall of oracle's blocks | attention mass "
               "captured | (oracle's) | recall at last position | step ms | search ms |\n"
               "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < c->n_cases; i++) {
        const lmk_repr_row *w = &rows[i];
        static const char *names[] = {"?", "mean", "token", "keys", "attn", "query", "outlier"};
        int lm = w->c.landmark >= 0 && w->c.landmark < 7 ? w->c.landmark : 0;
        char name[32];
        if (w->c.landmark == LMK_REPR_QUEST) {
            fprintf(f, "| quest (exact scan) | 2 | %.4f | %.4f | %.4f | %.4f | %.3f | %.3f |\n",
                    w->recall, w->mass, w->oracle_mass, w->last_recall, w->step_ms,
                    w->search_ms);
            continue;
        }
        if (lm >= LMK_LANDMARK_ATTN)
            snprintf(name, sizeof name, "%s:%d", names[lm], w->c.n_repr);
        else
            snprintf(name, sizeof name, "%s", names[lm]);
        int per = lm == LMK_LANDMARK_KEYS ? c->block_len : lm >= LMK_LANDMARK_ATTN ? w->c.n_repr : 1;
        fprintf(f, "| %s | %d | %.4f | %.4f | %.4f | %.4f | %.3f | %.3f |\n", name, per,
                w->recall, w->mass, w->oracle_mass, w->last_recall, w->step_ms, w->search_ms);
    }
}
