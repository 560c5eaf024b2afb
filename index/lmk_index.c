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
 * Only the C API headers of FAISS are included; index/faiss_bridge.cpp implements the
 * functions used here when the system has no libfaiss_c.
 */
#include "lmk_index.h"
#include "lmk_crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "lmk_export.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the index file stores vectors in host order, which must be little-endian"
#endif

#define SPEC_MAX 256          /* bytes of a spec, "+l2" included */
#define FSPEC_CAP (SPEC_MAX + 65) /* the spec as given to FAISS, see pq_without_np() */
#define DIM_MAX 65536         /* largest vector dimension accepted */
#define ERR_CAP 512
#define QB 64                 /* exact search: queries per block */
#define VB 1024               /* exact search: vectors per block */
#define FAISS_RESULTS_MAX (1 << 22) /* FAISS search: result slots per query chunk */

/* ---- file layout (all integers little-endian) ----
 *  0  magic "LMKIDX\0\1"        8
 *  8  u32 format version (1)
 * 12  u32 header length (80)
 * 16  u32 dim
 * 20  u32 flags: bit0 "+l2", bit1 FAISS payload present
 * 24  i64 ntotal
 * 32  i64 train_min
 * 40  f32 M (norm bound of the "+l2" transform)
 * 44  u32 spec length (1..SPEC_MAX)
 * 48  u64 vector bytes (= ntotal * dim * 4)
 * 56  u64 FAISS payload bytes
 * 64  i64 vectors held by the FAISS payload (0 or ntotal)
 * 72  u32 CRC-32C of the whole file with these 4 bytes left out
 * 76  u32 reserved, 0
 * 80  spec bytes, then vectors (ntotal, dim) f32, then faiss::write_index output. */
#define HDR_LEN 80
#define FMT_VERSION 1
#define FLAG_L2 1u
#define FLAG_FAISS 2u
static const unsigned char lmk_magic[8] = {'L', 'M', 'K', 'I', 'D', 'X', 0, 1};

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

    char err[ERR_CAP];
};

/* Checksums: CRC-32C of the storage module (lmk_crc32c: hardware when available). */

/* ---- small helpers ---- */

static void set_err(lmk_index *idx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(lmk_index *idx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(idx->err, sizeof idx->err, fmt, ap);
    va_end(ap);
}

static void copy_msg(char *dst, size_t cap, const char *msg)
{
    if (dst && cap) {
        size_t n = strlen(msg);
        if (n >= cap)
            n = cap - 1;
        memcpy(dst, msg, n);
        dst[n] = 0;
    }
}

/* Translate a FAISS C API failure; the message is copied at once (it is thread-local and
 * overwritten by the next FAISS call). std::bad_alloc becomes ENOMEM. */
static int faiss_fail(lmk_index *idx, int frc, const char *what)
{
    const char *m = faiss_get_last_error();
    if (!m)
        m = "";
    set_err(idx, "FAISS %s failed (%d): %s", what, frc, m);
    if (frc == -4 && strstr(m, "bad_alloc"))
        return ENOMEM;
    return LMK_EINDEX;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
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

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static double sq_norm(const float *x, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    return s;
}

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

static float max_norm(const float *x, int64_t n, int dim)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = sq_norm(x + (size_t)i * dim, dim);
        if (s > mx)
            mx = s;
    }
    return (float)sqrt(mx);
}

/* ---- spec analysis ---- */

/* Reads a decimal at *p (advancing it); -1 when there is none or it is absurdly large. */
static long read_num(const char **p)
{
    const char *s = *p;
    long v = 0;
    int any = 0;
    while (*s >= '0' && *s <= '9') {
        if (v > 100000000L)
            return -1;
        v = v * 10 + (*s - '0');
        s++;
        any = 1;
    }
    *p = s;
    return any ? v : -1;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Bits per sub-quantizer code after "PQ<m>" / "RQ<m>" etc.: "x<b>", "fs" (4-bit fast
 * scan) or FAISS's default 8. Capped at 16 (FAISS refuses more anyway). */
static int code_bits(const char *p)
{
    int b = 8;
    if (*p == 'x') {
        p++;
        long v = read_num(&p);
        if (v > 0)
            b = (int)v;
    }
    if (strstr(p, "fs"))
        b = 4;
    return b > 16 ? 16 : b;
}

/* Training needs of a factory string, from its components (split at ',' and '_'):
 *   IVF<n>                 k-means with n centroids
 *   IMI2x<b>               k-means with 2^b centroids per sub-quantizer
 *   PQ/OPQ/RQ/LSQ<m>[x<b>] k-means with 2^b centroids per sub-quantizer (b = 8 default)
 *   SQ4/SQ6/SQ8, PCA, ITQ  statistics without clusters (value ranges, a covariance)
 * FAISS's k-means refuses fewer points than centroids (the hard minimum) and warns under
 * 39 points per centroid, so the automatic threshold is 39 x the largest cluster count.
 * Components that train statistics get at least 1024 points (stable SQ ranges, a PCA of
 * ordinary head dimensions). Anything else FAISS reports untrained also gets 1024. */
static void spec_training(const char *fspec, int64_t *hard_min, int64_t *auto_min)
{
    int64_t clusters = 0;
    int stats = 0;
    char buf[FSPEC_CAP];
    snprintf(buf, sizeof buf, "%s", fspec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",_", &save); t; t = strtok_r(NULL, ",_", &save)) {
        const char *p = t;
        int64_t c = 0;
        if (starts(p, "IVF")) {
            p += 3;
            long n = read_num(&p);
            if (n > 0)
                c = n;
        } else if (starts(p, "IMI")) {
            p += 3;
            (void)read_num(&p);
            if (*p == 'x') {
                p++;
                long b = read_num(&p);
                if (b > 0 && b <= 24)
                    c = (int64_t)1 << b;
            }
        } else if ((starts(p, "SQ") && !starts(p, "SQfp16") && !starts(p, "SQbf16")) ||
                   starts(p, "PCA") || starts(p, "ITQ")) {
            stats = 1;
        } else {
            static const char *const pq_like[] = {"OPQ", "PQ", "RQ", "LSQ", "PRQ", "PLSQ"};
            for (size_t i = 0; i < sizeof pq_like / sizeof *pq_like; i++) {
                size_t l = strlen(pq_like[i]);
                if (strncmp(p, pq_like[i], l) == 0 && p[l] >= '0' && p[l] <= '9') {
                    p += l;
                    (void)read_num(&p);
                    c = (int64_t)1 << code_bits(p);
                    break;
                }
            }
        }
        if (c > clusters)
            clusters = c;
    }
    *hard_min = clusters > 0 ? clusters : 1;
    int64_t a = 39 * clusters;
    if ((stats || clusters == 0) && a < 1024)
        a = 1024;
    *auto_min = a;
}

/* RAM estimate of the FAISS structure holding n vectors of dimension d, from the spec:
 * per-vector code bytes (Flat 4d, SQ8 d, SQ4 d/2, SQ6 3d/4, SQfp16 2d, PQ<m>x<b> m*b/8),
 * plus 8 bytes of id per vector for IVF, HNSW<M> links 4*(2M + M/(M-1)) + 12 bytes per
 * vector (2M neighbours on level 0, an expected M/(M-1) above it, offsets and levels),
 * plus trained tables (centroids, codebooks, transform matrices). Unknown components
 * count as Flat. Allocator slack and FAISS's growth reserve are not included. */
static size_t faiss_estimate(const char *fspec, int fdim, int64_t n)
{
    double d = fdim, per = 0, fixed = 0, nlist = 0;
    int have_code = 0, seen_ivf = 0;
    char buf[FSPEC_CAP];
    snprintf(buf, sizeof buf, "%s", fspec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",_", &save); t; t = strtok_r(NULL, ",_", &save)) {
        const char *p = t;
        long v;
        if (starts(p, "IVF")) {
            p += 3;
            v = read_num(&p);
            if (v > 0) {
                nlist = (double)v;
                fixed += nlist * d * 4;
            }
            per += 8;
            seen_ivf = 1;
        } else if (starts(p, "IMI")) {
            per += 8;
            seen_ivf = 1;
        } else if (starts(p, "HNSW")) {
            p += 4;
            v = read_num(&p);
            double M = v > 1 ? (double)v : 32;
            double links = 4 * (2 * M + M / (M - 1)) + 12;
            if (seen_ivf) /* the coarse quantizer's graph over the centroids */
                fixed += links * nlist;
            else
                per += links;
        } else if (starts(p, "PCA") || starts(p, "RR") || starts(p, "ITQ")) {
            while (*p && (*p < '0' || *p > '9'))
                p++;
            v = read_num(&p);
            if (v > 0) {
                fixed += d * (double)v * 4;
                d = (double)v;
            }
        } else if (starts(p, "OPQ")) {
            fixed += d * d * 4;
        } else if (starts(p, "Flat")) {
            per += 4 * d;
            have_code = 1;
        } else if (starts(p, "SQfp16") || starts(p, "SQbf16")) {
            per += 2 * d;
            have_code = 1;
        } else if (starts(p, "SQ")) {
            p += 2;
            v = read_num(&p);
            per += v > 0 ? ceil(d * (double)v / 8) : d;
            fixed += 2 * d * 4;
            have_code = 1;
        } else if (starts(p, "PQ") || starts(p, "RQ") || starts(p, "LSQ")) {
            while (*p && (*p < '0' || *p > '9'))
                p++;
            v = read_num(&p);
            int b = code_bits(p);
            if (v > 0) {
                per += ceil((double)v * b / 8);
                fixed += (double)((int64_t)1 << b) * d * 4;
            }
            have_code = 1;
        } else if (starts(p, "RFlat") || starts(p, "Refine")) {
            per += 4 * d;
        }
    }
    if (!have_code)
        per += 4 * d;
    double total = fixed + per * (double)n;
    return total >= (double)SIZE_MAX ? SIZE_MAX : (size_t)total;
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

static void swap_in(lmk_index *idx, FaissIndex *fi)
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
    swap_in(idx, fi);
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
    swap_in(idx, fi);
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

/* After a failed operation, get back to a consistent state holding vecs[0..n): shrink,
 * else rebuild, else exact mode (which only needs vecs). */
static void recover(lmk_index *idx, int64_t n)
{
    char keep[ERR_CAP];
    memcpy(keep, idx->err, sizeof keep); /* report the original failure */
    if (idx->in_faiss && faiss_shrink(idx, n) == LMK_OK) {
        memcpy(idx->err, keep, sizeof keep);
        return;
    }
    if (n >= idx->train_min && build_faiss(idx, n) == LMK_OK) {
        memcpy(idx->err, keep, sizeof keep);
        return;
    }
    (void)drop_to_exact(idx);
    memcpy(idx->err, keep, sizeof keep);
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

static int spec_chars_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

/* FAISS's factory turns on polysemous training for "PQ<m>[x<b>]" codes, a code
 * permutation that only polysemous (Hamming-filtered) search uses; it never changes the
 * results of the default search and costs minutes of training. Appends "np" to such
 * components (written to out; none when it would not fit cap); returns whether any
 * changed.
 * The caller falls back to the original when FAISS refuses the rewrite. */
static int pq_without_np(const char *spec, char *out, size_t cap)
{
    size_t o = 0;
    int changed = 0;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        int is_pq = 0;
        if (l > 2 && p[0] == 'P' && p[1] == 'Q') {
            size_t i = 2;
            while (i < l && p[i] >= '0' && p[i] <= '9')
                i++;
            is_pq = i > 2;
            if (is_pq && i < l && p[i] == 'x') {
                size_t j = ++i;
                while (i < l && p[i] >= '0' && p[i] <= '9')
                    i++;
                is_pq = i > j;
            }
            is_pq = is_pq && i == l;
        }
        if (o + l + 3 >= cap)
            return 0;
        memcpy(out + o, p, l);
        o += l;
        if (is_pq) {
            memcpy(out + o, "np", 2);
            o += 2;
            changed = 1;
        }
        if (!e)
            break;
        out[o++] = ',';
        p = e + 1;
    }
    out[o] = 0;
    return changed;
}

/* Whether a component (split at ',' and '_') is an LSH code: FAISS builds IndexLSH with
 * an L2 metric, so "+l2" would pass the metric check while its search returns Hamming
 * distances. */
static int has_lsh(const char *fspec)
{
    for (const char *p = fspec; *p; p++)
        if ((p == fspec || p[-1] == ',' || p[-1] == '_') && starts(p, "LSH"))
            return 1;
    return 0;
}

/* Create with the message going to a char buffer (used by create and load). */
static int index_create(const char *spec, int dim, int64_t train_min, lmk_index **out,
                        char *msg, size_t cap)
{
    *out = NULL;
    if (!spec) {
        copy_msg(msg, cap, "index spec is NULL");
        return LMK_EINVAL;
    }
    if (dim < 1 || dim > DIM_MAX) {
        snprintf(msg, cap, "index dim %d out of range [1, %d]", dim, DIM_MAX);
        return LMK_EINVAL;
    }
    if (train_min < 0) {
        snprintf(msg, cap, "train_min %lld is negative", (long long)train_min);
        return LMK_EINVAL;
    }
    size_t sl = strlen(spec);
    if (sl > SPEC_MAX) {
        snprintf(msg, cap, "index spec longer than %d bytes", SPEC_MAX);
        return LMK_EINVAL;
    }
    if (sl == 0) {
        copy_msg(msg, cap, "index spec is empty");
        return LMK_EUNSUPPORTED;
    }
    if (!spec_chars_ok(spec)) {
        copy_msg(msg, cap, "index spec contains spaces or non-printable characters");
        return LMK_EUNSUPPORTED;
    }
    lmk_index *idx = calloc(1, sizeof *idx);
    if (!idx) {
        copy_msg(msg, cap, "out of memory");
        return ENOMEM;
    }
    memcpy(idx->spec, spec, sl + 1);
    memcpy(idx->fspec, spec, sl + 1);
    idx->dim = idx->fdim = dim;
    idx->metric = METRIC_INNER_PRODUCT;
    if (sl >= 3 && strcmp(spec + sl - 3, "+l2") == 0) {
        idx->l2 = 1;
        idx->fspec[sl - 3] = 0;
        idx->fdim = dim + 1;
        idx->metric = METRIC_L2;
        if (sl == 3) {
            copy_msg(msg, cap, "index spec \"+l2\" names no index");
            free(idx);
            return LMK_EUNSUPPORTED;
        }
    }

    if (has_lsh(idx->fspec)) {
        snprintf(msg, cap,
                 "index spec \"%s\": LSH codes rank by Hamming distance, not by inner product",
                 spec);
        free(idx);
        return LMK_EUNSUPPORTED;
    }
    int rc = LMK_OK;
    int frc = 1;
    char np_spec[FSPEC_CAP];
    if (pq_without_np(idx->fspec, np_spec, sizeof np_spec)) {
        frc = faiss_index_factory(&idx->fi, idx->fdim, np_spec, idx->metric);
        if (frc == 0)
            snprintf(idx->fspec, sizeof idx->fspec, "%s", np_spec);
    }
    if (frc)
        frc = faiss_index_factory(&idx->fi, idx->fdim, idx->fspec, idx->metric);
    if (frc) {
        snprintf(msg, cap, "FAISS refuses index spec \"%s\": %s", spec,
                 faiss_get_last_error());
        rc = (frc == -4 && strstr(faiss_get_last_error(), "bad_alloc")) ? ENOMEM
                                                                         : LMK_EUNSUPPORTED;
        goto fail;
    }
    if (faiss_Index_metric_type(idx->fi) != idx->metric) {
        snprintf(msg, cap,
                 "FAISS builds \"%s\" with metric %d instead of %s: it cannot search by "
                 "inner product%s",
                 spec, (int)faiss_Index_metric_type(idx->fi),
                 idx->l2 ? "L2" : "inner product",
                 idx->l2 ? " through the +l2 transform" : " (try \"+l2\" or another type)");
        rc = LMK_EUNSUPPORTED;
        goto fail;
    }
    if (faiss_Index_d(idx->fi) != idx->fdim) {
        snprintf(msg, cap, "FAISS built \"%s\" with dimension %d, expected %d", spec,
                 faiss_Index_d(idx->fi), idx->fdim);
        rc = LMK_EUNSUPPORTED;
        goto fail;
    }
    idx->needs_train = !faiss_Index_is_trained(idx->fi);
    /* A flat index is a brute-force scan of the vectors, which this module already keeps
     * and scans (with ties going to the lower id, which FAISS's heaps do not guarantee):
     * a FAISS copy would double the memory and change nothing else. */
    idx->exact_only = strcmp(idx->fspec, "Flat") == 0;

    /* Which search parameters apply: ask ParameterSpace on the empty index once, so that
     * searches never trigger exceptions for parameters the type does not have. */
    frc = faiss_ParameterSpace_new(&idx->ps);
    if (frc) {
        snprintf(msg, cap, "FAISS ParameterSpace: %s", faiss_get_last_error());
        rc = LMK_EINDEX;
        goto fail;
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

    {
        FaissIDSelectorRange *sel = NULL;
        if (faiss_IDSelectorRange_new(&sel, 0, 0) == 0) {
            size_t removed = 0;
            idx->can_remove =
                faiss_Index_remove_ids(idx->fi, (const FaissIDSelector *)sel, &removed) == 0;
            faiss_IDSelectorRange_free(sel);
        }
    }

    if (idx->needs_train) {
        int64_t hard, autom;
        spec_training(idx->fspec, &hard, &autom);
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
    int rc = index_create(opts->spec, opts->dim, opts->train_min, out, msg, sizeof msg);
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
    free(idx);
}

LMK_API const char *lmk_index_errmsg(const lmk_index *idx)
{
    return idx ? idx->err : "no index handle";
}

/* ---- add / truncate ---- */

static int reserve_vecs(lmk_index *idx, int64_t need)
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
    if (reserve_vecs(idx, total)) {
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
                if (faiss_Index_ntotal(idx->fi) != old)
                    recover(idx, old);
            } else if (faiss_Index_ntotal(idx->fi) != total) {
                set_err(idx, "FAISS holds %lld vectors after adding to %lld",
                        (long long)faiss_Index_ntotal(idx->fi), (long long)total);
                rc = LMK_EINDEX;
                recover(idx, old);
            }
        }
    } else if (!idx->exact_only && total >= idx->train_min) {
        /* reaching train_min (or the first add of a spec without training): train on
         * every vector so far and add them all */
        rc = build_faiss(idx, total);
    }
    if (rc == LMK_OK)
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
    if (hneed > idx->h_cap) {
        float *hs = realloc(idx->h_s, hneed * sizeof(float));
        if (!hs)
            goto oom;
        idx->h_s = hs;
        int64_t *hi = realloc(idx->h_i, hneed * sizeof(int64_t));
        if (!hi)
            goto oom;
        idx->h_i = hi;
        idx->h_cap = hneed;
    }
    int cnt[QB];
    for (int64_t q0 = 0; q0 < nq; q0 += QB) {
        int nqb = (int)(nq - q0 < QB ? nq - q0 : QB);
        for (int i = 0; i < nqb; i++)
            cnt[i] = 0;
        for (int64_t v0 = 0; v0 < lim; v0 += VB) {
            int nvb = (int)(lim - v0 < VB ? lim - v0 : VB);
            const float *V = idx->vecs + (size_t)v0 * d;
            const float *Q = q + (size_t)q0 * d;
            if (nqb == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nvb, d, 1.0f, V, d, Q, 1, 0.0f,
                            idx->s_g, 1);
            else /* G (nqb, nvb) = Q (nqb, d) . V^T (d, nvb) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nqb, nvb, d, 1.0f, Q,
                            d, V, d, 0.0f, idx->s_g, nvb);
            for (int i = 0; i < nqb; i++) {
                const float *g = idx->s_g + (size_t)i * nvb;
                float *hs = idx->h_s + (size_t)i * kh;
                int64_t *hi = idx->h_i + (size_t)i * kh;
                for (int j = 0; j < nvb; j++)
                    heap_push(hs, hi, &cnt[i], kh, g[j], v0 + j);
            }
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
    if (rneed > idx->s_r_cap) {
        float *sd = realloc(idx->s_d, rneed * sizeof(float));
        if (!sd)
            goto oom;
        idx->s_d = sd;
        int64_t *sl = realloc(idx->s_l, rneed * sizeof(int64_t));
        if (!sl)
            goto oom;
        idx->s_l = sl;
        idx->s_r_cap = rneed;
    }
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
     * estimate of faiss_estimate() for the vectors it holds */
    size_t b = sizeof *idx + (size_t)idx->cap * idx->dim * sizeof(float);
    b += idx->s_q_cap * sizeof(float) + idx->s_r_cap * (sizeof(float) + sizeof(int64_t));
    b += (idx->s_g ? (size_t)QB * VB * sizeof(float) : 0);
    b += idx->h_cap * (sizeof(float) + sizeof(int64_t)) + idx->s_x_cap * sizeof(float);
    int64_t n = idx->in_faiss ? idx->ntotal : 0;
    size_t f = faiss_estimate(idx->fspec, idx->fdim, n);
    return b > SIZE_MAX - f ? SIZE_MAX : b + f;
}

/* ---- files ---- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

struct hdr {
    int dim;
    uint32_t flags;
    int64_t ntotal, train_min, faiss_n;
    float M;
    size_t spec_len, vec_len, faiss_len;
    const char *spec;          /* not terminated, spec_len bytes */
    const unsigned char *vecs; /* vec_len bytes */
    const unsigned char *faiss;
};

/* Every check of an index file image, in an order that never reads past `len` nor trusts
 * a length before it has been bounded by `len`; the checksum is verified last, over
 * bytes that are now known to be in range. */
static int parse(const void *data, size_t len, struct hdr *h, char *msg, size_t cap)
{
    const unsigned char *p = data;
    if (!p || len < 12) {
        snprintf(msg, cap, "index file of %zu bytes is too short", len);
        return LMK_ECORRUPT;
    }
    if (memcmp(p, lmk_magic, 8) != 0) {
        copy_msg(msg, cap, "not a landmark index file (bad magic)");
        return LMK_ECORRUPT;
    }
    uint32_t ver = get32(p + 8);
    if (ver != FMT_VERSION) {
        snprintf(msg, cap, "index file format version %u, this build reads %d", ver,
                 FMT_VERSION);
        return LMK_EVERSION;
    }
    if (len < HDR_LEN) {
        snprintf(msg, cap, "index file of %zu bytes is shorter than its header", len);
        return LMK_ECORRUPT;
    }
    uint32_t hl = get32(p + 12), dim = get32(p + 16);
    h->flags = get32(p + 20);
    h->ntotal = (int64_t)get64(p + 24);
    h->train_min = (int64_t)get64(p + 32);
    uint32_t mbits = get32(p + 40);
    memcpy(&h->M, &mbits, sizeof h->M);
    uint32_t spec_len = get32(p + 44);
    uint64_t vec_len = get64(p + 48), faiss_len = get64(p + 56);
    h->faiss_n = (int64_t)get64(p + 64);
    uint32_t crc = get32(p + 72), reserved = get32(p + 76);
    if (hl != HDR_LEN || reserved != 0 || (h->flags & ~(FLAG_L2 | FLAG_FAISS))) {
        copy_msg(msg, cap, "index file header is damaged (length, flags or reserved)");
        return LMK_ECORRUPT;
    }
    if (dim < 1 || dim > DIM_MAX || spec_len < 1 || spec_len > SPEC_MAX) {
        snprintf(msg, cap, "index file header is damaged (dim %u, spec length %u)", dim,
                 spec_len);
        return LMK_ECORRUPT;
    }
    size_t rem = len - HDR_LEN;
    if (spec_len > rem) {
        copy_msg(msg, cap, "index file is truncated (spec)");
        return LMK_ECORRUPT;
    }
    rem -= spec_len;
    /* ntotal bounded by what the file can hold before multiplying */
    if (h->ntotal < 0 || (uint64_t)h->ntotal > rem / ((size_t)dim * sizeof(float)) ||
        vec_len != (uint64_t)h->ntotal * dim * sizeof(float)) {
        snprintf(msg, cap,
                 "index file is truncated or damaged (%lld vectors of dim %u, %llu vector "
                 "bytes, %zu bytes left)",
                 (long long)h->ntotal, dim, (unsigned long long)vec_len, rem);
        return LMK_ECORRUPT;
    }
    rem -= (size_t)vec_len;
    if (faiss_len != rem) {
        snprintf(msg, cap,
                 "index file length does not match its header (FAISS part %llu bytes, %zu "
                 "left)",
                 (unsigned long long)faiss_len, rem);
        return LMK_ECORRUPT;
    }
    int has_faiss = (h->flags & FLAG_FAISS) != 0;
    if (has_faiss != (faiss_len > 0) || (has_faiss ? h->faiss_n != h->ntotal : h->faiss_n != 0) ||
        h->train_min < 0 || !isfinite(h->M) || h->M < 0) {
        copy_msg(msg, cap, "index file header is inconsistent");
        return LMK_ECORRUPT;
    }
    uint32_t c = lmk_crc32c(0, p, 72);
    c = lmk_crc32c(c, p + 76, len - 76);
    if (c != crc) {
        snprintf(msg, cap, "index file checksum mismatch (stored %08x, computed %08x)", crc,
                 c);
        return LMK_ECORRUPT;
    }
    h->dim = (int)dim;
    h->spec_len = spec_len;
    h->vec_len = (size_t)vec_len;
    h->faiss_len = (size_t)faiss_len;
    h->spec = (const char *)p + HDR_LEN;
    h->vecs = p + HDR_LEN + spec_len;
    h->faiss = h->vecs + vec_len;
    for (size_t i = 0; i < spec_len; i++) {
        unsigned char ch = (unsigned char)h->spec[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            copy_msg(msg, cap, "index file spec has invalid characters");
            return LMK_ECORRUPT;
        }
    }
    return LMK_OK;
}

LMK_API int lmk_index_parse_header(const void *data, size_t len, int *dim, int64_t *ntotal,
                                   char *spec, size_t spec_cap)
{
    struct hdr h;
    char msg[ERR_CAP];
    int rc = parse(data, len, &h, msg, sizeof msg);
    if (rc != LMK_OK)
        return rc;
    if (dim)
        *dim = h.dim;
    if (ntotal)
        *ntotal = h.ntotal;
    if (spec && spec_cap) { /* truncated to spec_cap - 1 bytes when the buffer is short */
        size_t n = h.spec_len < spec_cap - 1 ? h.spec_len : spec_cap - 1;
        memcpy(spec, h.spec, n);
        spec[n] = 0;
    }
    return LMK_OK;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    size_t l = strlen(path);
    char *dir = malloc(l + 2);
    if (!dir)
        return ENOMEM;
    memcpy(dir, path, l + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        rc = errno;
    else {
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = errno;
        close(fd);
    }
    free(dir);
    return rc;
}

LMK_API int lmk_index_save(lmk_index *idx, const char *path)
{
    if (!idx)
        return LMK_EINVAL;
    if (!path || !*path) {
        set_err(idx, "lmk_index_save: no path");
        return LMK_EINVAL;
    }
    char *fbuf = NULL;
    size_t flen = 0;
    if (idx->in_faiss) {
        FILE *mf = open_memstream(&fbuf, &flen);
        if (!mf) {
            set_err(idx, "open_memstream: %s", strerror(errno));
            return errno ? errno : ENOMEM;
        }
        int frc = faiss_write_index(idx->fi, mf);
        int cerr = fclose(mf);
        if (frc) {
            free(fbuf);
            return faiss_fail(idx, frc, "write_index");
        }
        if (cerr != 0 || flen == 0) {
            free(fbuf);
            set_err(idx, "serializing the FAISS index failed");
            return ENOMEM;
        }
    }
    unsigned char h[HDR_LEN];
    size_t spec_len = strlen(idx->spec);
    size_t vec_len = (size_t)idx->ntotal * idx->dim * sizeof(float);
    uint32_t mbits;
    float M = idx->in_faiss ? idx->M : 0.0f;
    memcpy(&mbits, &M, sizeof mbits);
    memcpy(h, lmk_magic, 8);
    put32(h + 8, FMT_VERSION);
    put32(h + 12, HDR_LEN);
    put32(h + 16, (uint32_t)idx->dim);
    put32(h + 20, (idx->l2 ? FLAG_L2 : 0) | (idx->in_faiss ? FLAG_FAISS : 0));
    put64(h + 24, (uint64_t)idx->ntotal);
    put64(h + 32, (uint64_t)idx->train_min);
    put32(h + 40, mbits);
    put32(h + 44, (uint32_t)spec_len);
    put64(h + 48, vec_len);
    put64(h + 56, flen);
    put64(h + 64, (uint64_t)(idx->in_faiss ? idx->ntotal : 0));
    put32(h + 72, 0);
    put32(h + 76, 0);
    uint32_t c = lmk_crc32c(0, h, 72);
    c = lmk_crc32c(c, h + 76, 4);
    c = lmk_crc32c(c, idx->spec, spec_len);
    c = lmk_crc32c(c, idx->vecs, vec_len);
    c = lmk_crc32c(c, fbuf, flen);
    put32(h + 72, c);

    size_t pl = strlen(path);
    char *tmp = malloc(pl + 5);
    if (!tmp) {
        free(fbuf);
        set_err(idx, "out of memory");
        return ENOMEM;
    }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    /* write <path>.tmp, make it durable, rename it over path, make the rename durable */
    int rc = 0;
    const char *step = "open";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = errno;
    } else {
        step = "write";
        rc = write_all(fd, h, HDR_LEN);
        if (!rc)
            rc = write_all(fd, idx->spec, spec_len);
        if (!rc && vec_len)
            rc = write_all(fd, idx->vecs, vec_len);
        if (!rc && flen)
            rc = write_all(fd, fbuf, flen);
        if (!rc) {
            step = "fsync";
            if (fsync(fd) != 0)
                rc = errno;
        }
        if (close(fd) != 0 && !rc) {
            step = "close";
            rc = errno;
        }
        if (!rc) {
            step = "rename";
            if (rename(tmp, path) != 0)
                rc = errno;
        }
        if (rc)
            unlink(tmp);
        else {
            /* the new file is in place; an error here only means durability of the
             * rename is not confirmed */
            step = "fsync of the directory";
            rc = fsync_dir_of(path);
        }
    }
    if (rc)
        set_err(idx, "saving index to %s: %s failed: %s", path, step, strerror(rc));
    free(tmp);
    free(fbuf);
    return rc;
}

LMK_API int lmk_index_load(const char *path, const char *expect_spec, int expect_dim,
                           lmk_index **out, char *errmsg, size_t errmsg_cap)
{
    char msg[ERR_CAP] = "";
    int rc;
    unsigned char *buf = NULL;
    lmk_index *idx = NULL;
    if (!out) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_load: out is NULL");
        return LMK_EINVAL;
    }
    *out = NULL;
    if (!path) {
        copy_msg(errmsg, errmsg_cap, "lmk_index_load: path is NULL");
        return LMK_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? LMK_ENOTFOUND : errno;
        snprintf(msg, sizeof msg, "cannot open index file %s: %s", path, strerror(errno));
        goto done;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = errno;
        snprintf(msg, sizeof msg, "stat %s: %s", path, strerror(errno));
        close(fd);
        goto done;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > (uint64_t)SIZE_MAX / 2) {
        close(fd);
        rc = LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "%s is not an index file", path);
        goto done;
    }
    /* the only allocation sized from the file is the file's real size */
    size_t len = (size_t)st.st_size;
    buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        rc = ENOMEM;
        snprintf(msg, sizeof msg, "out of memory reading %s (%zu bytes)", path, len);
        goto done;
    }
    size_t got = 0;
    int rerr = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rerr = errno;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        /* a read error is passed through; a file that shrank under us is damaged */
        rc = rerr ? rerr : LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "short read of %s (%zu of %zu bytes)", path, got, len);
        goto done;
    }
    struct hdr h;
    rc = parse(buf, len, &h, msg, sizeof msg);
    if (rc != LMK_OK)
        goto done;
    char spec[SPEC_MAX + 1];
    memcpy(spec, h.spec, h.spec_len);
    spec[h.spec_len] = 0;
    /* NULL / <= 0 expectations mean "any" (verify tools) */
    if ((expect_spec && strcmp(expect_spec, spec) != 0) ||
        (expect_dim > 0 && expect_dim != h.dim)) {
        rc = LMK_EMISMATCH;
        snprintf(msg, sizeof msg,
                 "index file %.200s holds spec \"%.100s\" dim %d, expected \"%.100s\" dim %d",
                 path, spec, h.dim, expect_spec ? expect_spec : spec,
                 expect_dim > 0 ? expect_dim : h.dim);
        goto done;
    }
    rc = index_create(spec, h.dim, h.train_min, &idx, msg, sizeof msg);
    if (rc != LMK_OK)
        goto done;
    if (idx->l2 != ((h.flags & FLAG_L2) != 0) ||
        (h.faiss_n > 0 && (h.faiss_n < idx->train_min || idx->exact_only))) {
        rc = LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "index file %s: header flags disagree with spec \"%s\"",
                 path, spec);
        goto done;
    }
    if (reserve_vecs(idx, h.ntotal)) {
        rc = ENOMEM;
        snprintf(msg, sizeof msg, "out of memory loading %lld vectors", (long long)h.ntotal);
        goto done;
    }
    if (h.vec_len)
        memcpy(idx->vecs, h.vecs, h.vec_len);
    if (!all_finite(idx->vecs, (size_t)h.ntotal * h.dim)) {
        rc = LMK_ECORRUPT;
        snprintf(msg, sizeof msg, "index file %s holds non-finite vectors", path);
        goto done;
    }
    idx->ntotal = h.ntotal;
    if (h.faiss_len) {
        /* the bytes passed the checksum: hand them to FAISS */
        FILE *mf = fmemopen((void *)h.faiss, h.faiss_len, "rb");
        if (!mf) {
            rc = errno ? errno : ENOMEM;
            snprintf(msg, sizeof msg, "fmemopen: %s", strerror(errno));
            goto done;
        }
        FaissIndex *fi = NULL;
        int frc = faiss_read_index(mf, 0, &fi);
        fclose(mf);
        if (frc) {
            rc = LMK_EINDEX;
            snprintf(msg, sizeof msg, "FAISS cannot read the index in %s: %s", path,
                     faiss_get_last_error());
            goto done;
        }
        if (faiss_Index_d(fi) != idx->fdim || faiss_Index_ntotal(fi) != h.ntotal ||
            faiss_Index_metric_type(fi) != idx->metric || !faiss_Index_is_trained(fi)) {
            snprintf(msg, sizeof msg,
                     "index file %s: FAISS index (d %d, ntotal %lld, metric %d, trained %d) "
                     "disagrees with the header (d %d, ntotal %lld, metric %d)",
                     path, faiss_Index_d(fi), (long long)faiss_Index_ntotal(fi),
                     (int)faiss_Index_metric_type(fi), faiss_Index_is_trained(fi), idx->fdim,
                     (long long)h.ntotal, (int)idx->metric);
            faiss_Index_free(fi);
            rc = LMK_ECORRUPT;
            goto done;
        }
        if (idx->l2 && h.ntotal > 0 && max_norm(idx->vecs, h.ntotal, h.dim) > h.M) {
            faiss_Index_free(fi);
            rc = LMK_ECORRUPT;
            snprintf(msg, sizeof msg, "index file %s: a vector exceeds the +l2 bound", path);
            goto done;
        }
        swap_in(idx, fi); /* efSearch / nprobe are whatever FAISS saved */
        idx->in_faiss = 1;
        idx->M = h.M;
    }
    rc = LMK_OK;
done:
    free(buf);
    if (rc != LMK_OK) {
        lmk_index_free(idx);
        copy_msg(errmsg, errmsg_cap, msg);
        return rc;
    }
    *out = idx;
    return LMK_OK;
}
