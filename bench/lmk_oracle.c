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
    int64_t *got = malloc(per_pos * K * sizeof(int64_t));
    float *ks = malloc((size_t)r.T * NKV * D * sizeof(float));
    float *out = malloc((size_t)NH * D * sizeof(float));
    if (!pos || !mass || !otop || !got || !ks || !out) {
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
        }
    }
    char base[4096];
    const char *root = c->dir ? c->dir : getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/lmk-repr-%d", root && *root ? root : "/tmp", (int)getpid());
    for (int ci = 0; ci < c->n_cases && rc == LMK_OK; ci++) {
        lmk_repr_row *row = &rows[ci];
        memset(row, 0, sizeof *row);
        row->c = c->cases[ci];
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
        double rsum = 0, msum = 0, osum = 0, tsum = 0, ssum = 0, lrsum = 0;
        int64_t nrs = 0, nsteps = 0, nlast = 0;
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
            if (rc || C == 0)
                continue;
            int kk = C < K ? (int)C : K;
            for (int l = 0; l < NL; l++)
                for (int h = 0; h < NH; h++) {
                    size_t it = (size_t)i * per_pos + (size_t)l * NH + h;
                    const double *m = mass + it * (size_t)(cmax > 0 ? cmax : 1);
                    const int64_t *o = otop + it * K, *g = got + ((size_t)l * NH + h) * K;
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
                    rsum += rcl;
                    msum += tot > 0 ? mg / tot : 1;
                    osum += tot > 0 ? mo / tot : 1;
                    nrs++;
                    if (i == ne - 1) {
                        lrsum += rcl;
                        nlast++;
                    }
                }
        }
        lmk_index *ix = lmk_session_index(s, 0, 0);
        row->entries = ix ? lmk_index_ntotal(ix) : 0;
        lmk_session_close(s);
        rm_rf(base);
        row->recall = nrs ? rsum / nrs : NAN;
        row->mass = nrs ? msum / nrs : NAN;
        row->oracle_mass = nrs ? osum / nrs : NAN;
        row->last_recall = nlast ? lrsum / nlast : NAN;
        row->step_ms = nsteps ? 1e3 * tsum / nsteps : NAN;
        row->search_ms = nsteps ? 1e3 * ssum / nsteps : NAN;
    }
done:
    free(pos);
    free(mass);
    free(otop);
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
        if (lm >= LMK_LANDMARK_ATTN)
            snprintf(name, sizeof name, "%s:%d", names[lm], w->c.n_repr);
        else
            snprintf(name, sizeof name, "%s", names[lm]);
        int per = lm == LMK_LANDMARK_KEYS ? c->block_len : lm >= LMK_LANDMARK_ATTN ? w->c.n_repr : 1;
        fprintf(f, "| %s | %d | %.4f | %.4f | %.4f | %.4f | %.3f | %.3f |\n", name, per,
                w->recall, w->mass, w->oracle_mass, w->last_recall, w->step_ms, w->search_ms);
    }
}
