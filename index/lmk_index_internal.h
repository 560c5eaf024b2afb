/* landmark — private to index/: the index handle and what its files share
 * (lmk_index.c: create, add, search, train; lmk_index_spec.c: the spec parser and the
 * RAM estimator; lmk_index_file.c: the index file format). Nothing outside index/ and
 * its tests includes this. */
#ifndef LMK_INDEX_INTERNAL_H
#define LMK_INDEX_INTERNAL_H

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>

#include "lmk_export.h"
#include "lmk_index.h"

#define SPEC_MAX 256          /* bytes of a spec, "+l2" included */
/* the spec as given to FAISS, see lmk_index_spec_pq_without_np() */
#define FSPEC_CAP (SPEC_MAX + 65)
#define DIM_MAX 65536         /* largest vector dimension accepted */
#define ERR_CAP 512
#define QB 64                 /* exact search: queries per block */
#define VB 1024               /* exact search: vectors per block */
#define FAISS_RESULTS_MAX (1 << 22) /* FAISS search: result slots per query chunk */

struct lmk_index {
    char spec[SPEC_MAX + 1];  /* as given at create */
    char fspec[FSPEC_CAP];    /* the spec handed to FAISS ("+l2" removed, PQ "np") */
    int dim;                  /* our vectors */
    int fdim;                 /* FAISS's vectors: dim, or dim + 1 for "+l2" */
    int l2;
    FaissMetricType metric;
    int exact_only;           /* "Flat": searched by our own brute force, FAISS unused */
    int needs_train;          /* a fresh FAISS index of this spec is untrained */
    int64_t train_min;        /* vectors before FAISS holds them; 0 = from the first */
    int64_t retry_at;         /* after a FAISS failure: vectors before FAISS is tried again */
    int can_remove;           /* remove_ids(range) works for this spec */
    const char *ef_name;      /* ParameterSpace name for ef_search, NULL if none */
    int has_nprobe;
    int ef_cur, nprobe_cur;   /* value set on fi by us; 0 = FAISS's default / unknown */
    int ef_want, nprobe_want; /* last value asked for, re-applied after rebuilds */

    FaissIndex *fi;
    FaissParameterSpace *ps;
    int in_faiss;
    float M; /* "+l2" norm bound, meaningful while in_faiss */

    float *vecs; /* (cap, dim), first ntotal rows valid */
    int64_t ntotal, cap;

    /* scratch, grown only when a call needs more */
    float *s_q;      /* (nq_chunk, fdim) "+l2" queries */
    size_t s_q_cap;
    float *s_d;      /* (nq_chunk, kk) FAISS distances */
    int64_t *s_l;    /* (nq_chunk, kk) FAISS labels */
    size_t s_r_cap;
    float *s_g;      /* (QB, VB) exact-search score block */
    float *h_s;      /* (QB, k) top-k heaps: scores */
    int64_t *h_i;    /* (QB, k) top-k heaps: ids */
    size_t h_cap;
    float *s_x;      /* (n, fdim) "+l2" vectors being added */
    size_t s_x_cap;
    int64_t *g_i;    /* (nq, kk) multi-entry search: entry ids (lmk_index_group.c) */
    size_t g_cap;
    float *g_s;      /* (kk) their scores */
    size_t g_scap;
    int64_t *w_i;    /* (kk) multi-entry search, one query widened */
    size_t w_cap;
    float *w_s;
    size_t w_scap;

    char err[ERR_CAP];
};

/* Checksums: CRC-32C of the storage module (lmk_crc32c: hardware when available). */

/* ---- small helpers ---- */

static inline void set_err(lmk_index *idx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void set_err(lmk_index *idx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(idx->err, sizeof idx->err, fmt, ap);
    va_end(ap);
}

static inline void copy_msg(char *dst, size_t cap, const char *msg)
{
    if (dst && cap) {
        size_t n = strlen(msg);
        if (n >= cap)
            n = cap - 1;
        memcpy(dst, msg, n);
        dst[n] = 0;
    }
}

/* FAISS's last message; "" when it has none (faiss_get_last_error() may return NULL). */
static inline const char *faiss_msg(void)
{
    const char *m = faiss_get_last_error();
    return m ? m : "";
}

/* Translate a FAISS C API failure; the message is copied at once (it is thread-local and
 * overwritten by the next FAISS call). std::bad_alloc becomes ENOMEM. */
static inline int faiss_fail(lmk_index *idx, int frc, const char *what)
{
    const char *m = faiss_msg();
    set_err(idx, "FAISS %s failed (%d): %s", what, frc, m);
    if (frc == -4 && strstr(m, "bad_alloc"))
        return ENOMEM;
    return LMK_EINDEX;
}

static inline int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    if (need > SIZE_MAX / elem)
        return ENOMEM;
    void *n = realloc(*p, need * elem);
    if (!n)
        return ENOMEM;
    *p = n;
    *cap = need;
    return 0;
}

static inline int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static inline double sq_norm(const float *x, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    return s;
}

static inline float max_norm(const float *x, int64_t n, int dim)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = sq_norm(x + (size_t)i * dim, dim);
        if (s > mx)
            mx = s;
    }
    return (float)sqrt(mx);
}

/* ---- lmk_index_spec.c ---- */

/* The argument checks of create that need no handle: spec present, printable, at most
 * SPEC_MAX bytes; dim in [1, DIM_MAX]; train_min >= 0. Message into msg. */
int lmk_index_spec_check(const char *spec, int dim, int64_t train_min, char *msg,
                         size_t cap);

/* Fills idx->spec, fspec, dim, fdim, l2 and metric from a checked spec: "+l2" removed
 * from fspec, LSH codes refused. The caller frees idx on failure. */
int lmk_index_spec_apply(lmk_index *idx, const char *spec, int dim, char *msg, size_t cap);

/* 1 when fspec (the spec without "+l2") is one of the supported forms listed in
 * lmk_index_spec.c for FAISS vectors of fdim; else 0 with the reason in why. */
int lmk_index_spec_supported(const char *fspec, int fdim, char *why, size_t cap);

/* PQ codes without polysemous training: see lmk_index_spec.c. */
int lmk_index_spec_pq_without_np(const char *spec, char *out, size_t cap);

/* Vectors a FAISS spec needs before training: FAISS's hard minimum and the count at
 * which we train by default. */
void lmk_index_spec_training(const char *fspec, int64_t *hard_min, int64_t *auto_min);

/* Estimated bytes of RAM of a FAISS index of spec fspec holding n vectors of fdim. */
size_t lmk_index_spec_faiss_bytes(const char *fspec, int fdim, int64_t n);

/* ---- lmk_index.c, used by the file format ---- */

/* Create with the message going to a char buffer (used by create and load). */
int lmk_index_new(const char *spec, int dim, int64_t train_min, lmk_index **out, char *msg,
                  size_t cap);

/* Room for `need` vectors in idx->vecs. Returns 0 or ENOMEM. */
int lmk_index_reserve(lmk_index *idx, int64_t need);

/* Replaces idx->fi by fi (the old one freed), search parameters re-applied. */
void lmk_index_swap_in(lmk_index *idx, FaissIndex *fi);

#endif
