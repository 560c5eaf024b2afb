/* landmark bench — measuring: the exact top-k reference from the stored landmarks, and
 * the decoding steps of one setting scored against it and against dense attention. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench_measure.h"
#include "lmk_clock.h"
#include "lmk_index.h"

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *x, int n, double p)
{
    if (n <= 0)
        return NAN;
    qsort(x, (size_t)n, sizeof *x, bench_cmp_double);
    int i = (int)ceil(p * n) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return x[i];
}

static double dot_d(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

int bench_exact_topk(lmk_session *s, const lmk_bench_cfg *c, const float *Q, bench_exact *x,
                     char *err, size_t cap)
{
    const int NL = c->n_layers, NH = c->n_heads, H = c->n_kv_heads, D = c->head_dim;
    const int G = NH / H, S = c->steps;
    const int64_t C = x->cand;
    const int K = x->k, M = K + 32; /* float preselection, then double rescoring */
    size_t qrow = (size_t)NH * D;
    float *qs = malloc((size_t)S * G * D * sizeof(float));
    float *sc = malloc((size_t)S * G * (C > 0 ? C : 1) * sizeof(float));
    int64_t *best = malloc((size_t)M * sizeof(int64_t));
    float *bests = malloc((size_t)M * sizeof(float));
    double *dd = malloc((size_t)M * sizeof(double));
    if (!qs || !sc || !best || !bests || !dd) {
        free(qs), free(sc), free(best), free(bests), free(dd);
        snprintf(err, cap, "out of memory for the exact reference");
        return ENOMEM;
    }
    for (int l = 0; l < NL; l++) {
        for (int h = 0; h < H; h++) {
            lmk_index *ix = lmk_session_index(s, l, h);
            const float *lm = ix ? lmk_index_vectors(ix) : NULL;
            if (!ix || lmk_index_ntotal(ix) < C || (C > 0 && !lm)) {
                snprintf(err, cap, "layer %d KV head %d: index holds %lld landmarks, %lld expected",
                         l, h, ix ? (long long)lmk_index_ntotal(ix) : -1LL, (long long)C);
                free(qs), free(sc), free(best), free(bests), free(dd);
                return LMK_ECORRUPT;
            }
            for (int p = 0; p < S; p++)
                memcpy(qs + (size_t)p * G * D, Q + ((size_t)p * NL + l) * qrow + (size_t)h * G * D,
                       (size_t)G * D * sizeof(float));
            if (C > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S * G, (int)C, D, 1.0f, qs,
                            D, lm, D, 0.0f, sc, (int)C);
            for (int r = 0; r < S * G; r++) {
                int p = r / G, qh = h * G + r % G;
                double *dst = &x->kth[((size_t)p * NL + l) * NH + qh];
                if (K == 0) {
                    *dst = INFINITY;
                    continue;
                }
                /* the M best by float score (sorted insertion) */
                int nb = 0;
                const float *row = sc + (size_t)r * C;
                for (int64_t b = 0; b < C; b++) {
                    float v = row[b];
                    if (nb == M && v <= bests[M - 1])
                        continue;
                    int j = nb < M ? nb++ : M - 1;
                    while (j > 0 && bests[j - 1] < v) {
                        bests[j] = bests[j - 1];
                        best[j] = best[j - 1];
                        j--;
                    }
                    bests[j] = v;
                    best[j] = b;
                }
                const float *qv = qs + (size_t)r * D;
                for (int j = 0; j < nb; j++)
                    dd[j] = dot_d(qv, lm + (size_t)best[j] * D, D);
                qsort(dd, (size_t)nb, sizeof *dd, bench_cmp_double); /* ascending */
                *dst = dd[nb - K];
            }
        }
    }
    free(qs), free(sc), free(best), free(bests), free(dd);
    return LMK_OK;
}

int bench_run_steps(lmk_session *s, const lmk_bench_cfg *c, const lmk_attend_opts *ao,
                    const float *Q, const float *Qwarm, const int64_t *targets,
                    const float *dense_out, const bench_exact *x, bench_scratch *w,
                    lmk_bench_result *res, const char *label, char *err, size_t cap)
{
    const int NL = c->n_layers, NH = c->n_heads, D = c->head_dim, S = c->steps;
    const int K = c->top_k > 0 ? c->top_k : 1;
    size_t qrow = (size_t)NH * D;
    lmk_attend_stats st;
    int64_t hits = 0, tgt = 0;
    double rec_sum = 0, rec_n = 0, search = 0, fetch = 0, attn = 0, fetched = 0;
    int n_err = 0;
    for (int p = -BENCH_WARMUP_STEPS; p < S; p++) {
        const float *qp = p < 0 ? Qwarm + (size_t)(p + BENCH_WARMUP_STEPS) * NL * qrow
                                : Q + (size_t)p * NL * qrow;
        double t = 0;
        for (int l = 0; l < NL; l++) {
            memset(&st, 0, sizeof st);
            st.blocks = w->blocks;
            st.blocks_cap = K;
            double t0 = lmk_clock_s();
            int rc = lmk_session_attend(s, l, 1, qp + l * qrow, ao, w->out + l * qrow, &st);
            t += lmk_clock_s() - t0;
            if (rc) {
                snprintf(err, cap, "%s: attend: %s", label, lmk_session_errmsg(s));
                return rc;
            }
            if (p < 0)
                continue;
            search += st.search_s;
            fetch += st.fetch_s;
            attn += st.attn_s;
            fetched += (double)st.blocks_fetched;
            int64_t target = targets[(size_t)p * NL + l];
            for (int h = 0; h < NH; h++) {
                const int64_t *bl = w->blocks + (size_t)h * K;
                if (target >= 0) {
                    int hit = 0;
                    for (int j = 0; j < K; j++)
                        hit |= bl[j] == target;
                    hits += hit;
                    tgt++;
                }
                if (x->k > 0) {
                    double kth = x->kth[((size_t)p * NL + l) * NH + h];
                    const float *qv = qp + l * qrow + (size_t)h * D;
                    lmk_index *ix = lmk_session_index(s, l, h / (NH / c->n_kv_heads));
                    const float *lm = lmk_index_vectors(ix);
                    int good = 0;
                    for (int j = 0; j < K; j++) {
                        if (bl[j] < 0 || bl[j] >= x->cand)
                            continue;
                        double sc = dot_d(qv, lm + (size_t)bl[j] * D, D);
                        good += sc >= kth - 1e-9 * fabs(kth);
                    }
                    rec_sum += (double)(good < x->k ? good : x->k) / x->k;
                    rec_n++;
                }
                if (dense_out) {
                    const float *o = w->out + l * qrow + (size_t)h * D;
                    const float *r = dense_out + ((size_t)p * NL + l) * qrow + (size_t)h * D;
                    double num = 0, den = 0;
                    for (int d = 0; d < D; d++) {
                        double e = (double)o[d] - r[d];
                        num += e * e;
                        den += (double)r[d] * r[d];
                    }
                    w->errs[n_err++] = den > 0 ? sqrt(num / den) : sqrt(num);
                }
            }
        }
        if (p >= 0)
            w->t[p] = t;
    }
    res->recall_at_k = rec_n > 0 ? rec_sum / rec_n : NAN;
    res->needle_hit_rate = tgt > 0 ? (double)hits / (double)tgt : NAN;
    if (n_err > 0) {
        res->attn_rel_err = bench_percentile(w->errs, n_err, 1.0);
        res->attn_rel_err_p50 = bench_percentile(w->errs, n_err, 0.5);
    } else {
        res->attn_rel_err = res->attn_rel_err_p50 = NAN;
    }
    res->search_ms = 1e3 * search / S;
    res->fetch_ms = 1e3 * fetch / S;
    res->attn_ms = 1e3 * attn / S;
    res->blocks_fetched = fetched / S;
    res->step_ms_p50 = 1e3 * bench_percentile(w->t, S, 0.5);
    res->step_ms_p99 = 1e3 * bench_percentile(w->t, S, 0.99);
    return LMK_OK;
}
