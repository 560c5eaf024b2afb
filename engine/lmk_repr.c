/* Block representatives: the index entries of one sealed block. Every representative is a
 * set of vectors a block is scored by through the maximum inner product with the query, so
 * each lives in a FAISS inner-product index (entry e of block b has id b * R + e). */
#include <math.h>
#include <string.h>

#include "lmk_internal.h"

int lmk_repr_count(int landmark, int block_len, int n_repr)
{
    switch (landmark) {
    case LMK_LANDMARK_KEYS:
        return block_len;
    case LMK_LANDMARK_ATTN:
    case LMK_LANDMARK_QUERY:
    case LMK_LANDMARK_OUTLIER:
        return n_repr;
    default:
        return 1;
    }
}

static double dotd(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void mean_key(int L, int D, const float *keys, float *out)
{
    for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int i = 0; i < L; i++)
            acc += keys[(size_t)i * D + d];
        out[d] = (float)(acc / L);
    }
}

/* Copy the keys of the n best scores (ties: the earlier position) into out, in position
 * order. taken (L) is scratch. */
static void take_best(int L, int D, int n, const float *keys, const float *score, float *taken,
                      float *out)
{
    for (int i = 0; i < L; i++)
        taken[i] = 0;
    for (int r = 0; r < n && r < L; r++) {
        int best = -1;
        for (int i = 0; i < L; i++)
            if (!taken[i] && (best < 0 || score[i] > score[best]))
                best = i;
        taken[best] = 1;
    }
    int e = 0;
    for (int i = 0; i < L; i++)
        if (taken[i])
            memcpy(out + (size_t)e++ * D, keys + (size_t)i * D, (size_t)D * 4);
}

void lmk_repr_make(int landmark, int L, int D, int G, int R, const float *keys, const float *q,
                   const unsigned char *qok, float *scratch, float *out)
{
    float *score = scratch;    /* (L) */
    float *w = scratch + L;    /* (L) softmax of one query */
    switch (landmark) {
    case LMK_LANDMARK_TOKEN:
        memcpy(out, keys + (size_t)(L - 1) * D, (size_t)D * 4);
        return;
    case LMK_LANDMARK_KEYS:
        memcpy(out, keys, (size_t)L * D * 4);
        return;
    case LMK_LANDMARK_OUTLIER:
        mean_key(L, D, keys, out);
        for (int i = 0; i < L; i++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                double x = (double)keys[(size_t)i * D + d] - out[d];
                s += x * x;
            }
            score[i] = (float)s;
        }
        take_best(L, D, R - 1, keys, score, w, out + D);
        return;
    case LMK_LANDMARK_ATTN:
    case LMK_LANDMARK_QUERY: {
        int any = 0;
        const int attn = landmark == LMK_LANDMARK_ATTN;
        const double scale = 1.0 / sqrt((double)D);
        for (int i = 0; i < L; i++)
            score[i] = attn ? 0.0f : -INFINITY;
        for (int j = 0; q && qok && j < L; j++) {
            if (!qok[j])
                continue;
            any = 1;
            for (int g = 0; g < G; g++) {
                const float *qj = q + ((size_t)j * G + g) * D;
                if (!attn) {
                    for (int i = 0; i <= j; i++) {
                        float s = (float)dotd(qj, keys + (size_t)i * D, D);
                        if (s > score[i])
                            score[i] = s;
                    }
                    continue;
                }
                double mx = -INFINITY, z = 0;
                for (int i = 0; i <= j; i++) {
                    w[i] = (float)(scale * dotd(qj, keys + (size_t)i * D, D));
                    if (w[i] > mx)
                        mx = w[i];
                }
                for (int i = 0; i <= j; i++)
                    z += exp((double)w[i] - mx);
                for (int i = 0; i <= j; i++)
                    score[i] += (float)(exp((double)w[i] - mx) / z);
            }
        }
        if (!any)
            for (int i = 0; i < L; i++)
                score[i] = (float)dotd(keys + (size_t)i * D, keys + (size_t)i * D, D);
        take_best(L, D, R, keys, score, w, out);
        return;
    }
    default:
        mean_key(L, D, keys, out);
        return;
    }
}
