/* landmark — the index spec: argument checks, the "+l2" suffix, FAISS's training
 * minimum of a spec and the RAM estimate of an index built from it. Parsing only: no
 * FAISS call. */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lmk_index_internal.h"

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
LMK_INTERNAL void lmk_index_spec_training(const char *fspec, int64_t *hard_min, int64_t *auto_min)
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
LMK_INTERNAL size_t lmk_index_spec_faiss_bytes(const char *fspec, int fdim, int64_t n)
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
LMK_INTERNAL int lmk_index_spec_pq_without_np(const char *spec, char *out, size_t cap)
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

/* ---- the supported specs ----
 * FAISS's factory builds many types that crash on small or odd parameters rather than
 * throw (HNSW0: SIGSEGV; IVF0: an assertion; NSG: SIGFPE at small sizes and no incremental
 * add; HNSW99999999: gigabytes per vector). Only what can add one vector at a time, search
 * by inner product and be rebuilt at any size is accepted, with bounded parameters:
 *   [PCA<d>,] core          d in 1..dim
 *   core := Flat | SQ4 | SQ6 | SQ8 | SQfp16 | PQ<m>[x<b>]
 *         | HNSW<M>[,Flat | ,SQ4 | ,SQ6 | ,SQ8 | ,SQfp16]
 *         | IVF<n>[_HNSW<M>],(Flat | SQ4 | SQ6 | SQ8 | SQfp16 | PQ<m>[x<b>])
 *   M in 2..256, n in 1..65536, m in 1..dim, b in 1..16; "+l2" may follow any of them. */
enum { HNSW_M_MAX = 256, IVF_NLIST_MAX = 65536, PQ_BITS_MAX = 16 };

/* Whole-token number in [lo, hi] at *p (advanced); -1 otherwise. */
static long num_in(const char **p, long lo, long hi)
{
    if (**p < '0' || **p > '9' || (**p == '0' && (*p)[1] >= '0' && (*p)[1] <= '9'))
        return -1;
    long v = read_num(p);
    return v >= lo && v <= hi ? v : -1;
}

static int is_sq(const char *c)
{
    return !strcmp(c, "SQ4") || !strcmp(c, "SQ6") || !strcmp(c, "SQ8") || !strcmp(c, "SQfp16");
}

static int is_pq(const char *c, int fdim)
{
    if (strncmp(c, "PQ", 2) != 0)
        return 0;
    const char *p = c + 2;
    if (num_in(&p, 1, fdim) < 0)
        return 0;
    if (*p == 'x') {
        p++;
        if (num_in(&p, 1, PQ_BITS_MAX) < 0)
            return 0;
    }
    return *p == 0;
}

static int is_hnsw(const char *c, const char **end)
{
    if (strncmp(c, "HNSW", 4) != 0)
        return 0;
    const char *p = c + 4;
    if (num_in(&p, 2, HNSW_M_MAX) < 0)
        return 0;
    *end = p;
    return 1;
}

LMK_INTERNAL int lmk_index_spec_supported(const char *fspec, int fdim, char *why, size_t cap)
{
    char buf[FSPEC_CAP];
    snprintf(buf, sizeof buf, "%s", fspec);
    char *comp[4];
    int nc = 0;
    char *save = NULL;
    if (strstr(buf, ",,") || buf[0] == ',' || buf[strlen(buf) - 1] == ',')
        goto bad;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (nc == 4)
            goto bad;
        comp[nc++] = t;
    }
    int i = 0;
    if (nc > 0 && strncmp(comp[0], "PCA", 3) == 0) {
        const char *p = comp[0] + 3;
        if (num_in(&p, 1, fdim) < 0 || *p) {
            snprintf(why, cap, "\"%s\": PCA needs an output dimension in 1..%d", comp[0], fdim);
            return 0;
        }
        i = 1;
    }
    if (i >= nc)
        goto bad;
    const char *c = comp[i], *e = NULL;
    int rest = nc - i - 1;
    if (!strcmp(c, "Flat") || is_sq(c) || is_pq(c, fdim))
        return rest == 0 ? 1 : (snprintf(why, cap, "nothing may follow \"%s\"", c), 0);
    if (is_hnsw(c, &e)) {
        if (*e) {
            snprintf(why, cap, "\"%s\": HNSW takes only M (2..%d) here", c, HNSW_M_MAX);
            return 0;
        }
        if (rest == 0 || (rest == 1 && (!strcmp(comp[i + 1], "Flat") || is_sq(comp[i + 1]))))
            return 1;
        snprintf(why, cap, "HNSW stores Flat or SQ4/SQ6/SQ8/SQfp16 codes");
        return 0;
    }
    if (strncmp(c, "IVF", 3) == 0) {
        const char *p = c + 3;
        if (num_in(&p, 1, IVF_NLIST_MAX) < 0) {
            snprintf(why, cap, "\"%s\": IVF needs 1..%d lists", c, IVF_NLIST_MAX);
            return 0;
        }
        if (*p == '_' && (!is_hnsw(p + 1, &e) || *e)) {
            snprintf(why, cap, "\"%s\": the coarse quantizer may only be _HNSW<M> (M 2..%d)", c,
                     HNSW_M_MAX);
            return 0;
        }
        if (*p && *p != '_')
            goto bad;
        if (rest == 1 && (!strcmp(comp[i + 1], "Flat") || is_sq(comp[i + 1]) ||
                          is_pq(comp[i + 1], fdim)))
            return 1;
        snprintf(why, cap, "IVF needs one code after it: Flat, SQ4/SQ6/SQ8/SQfp16 or PQ<m>[x<b>] "
                           "(m 1..%d, b 1..%d)", fdim, PQ_BITS_MAX);
        return 0;
    }
bad:
    snprintf(why, cap,
             "supported: [PCA<d>,] Flat | SQ4/SQ6/SQ8/SQfp16 | PQ<m>[x<b>] | HNSW<M>[,Flat|,SQ<x>] "
             "| IVF<n>[_HNSW<M>],<Flat|SQ<x>|PQ<m>[x<b>]>, optionally +l2 "
             "(M 2..%d, n 1..%d)", HNSW_M_MAX, IVF_NLIST_MAX);
    return 0;
}

LMK_INTERNAL int lmk_index_spec_check(const char *spec, int dim, int64_t train_min, char *msg,
                                      size_t cap)
{
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
    return LMK_OK;
}

LMK_INTERNAL int lmk_index_spec_apply(lmk_index *idx, const char *spec, int dim, char *msg,
                                      size_t cap)
{
    size_t sl = strlen(spec);
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
            return LMK_EUNSUPPORTED;
        }
    }
    char why[300];
    if (!lmk_index_spec_supported(idx->fspec, idx->fdim, why, sizeof why)) {
        snprintf(msg, cap, "not a supported index spec (%s)", why);
        (void)spec;
        return LMK_EUNSUPPORTED;
    }
    if (has_lsh(idx->fspec)) {
        snprintf(msg, cap,
                 "index spec \"%s\": LSH codes rank by Hamming distance, not by inner product",
                 spec);
        return LMK_EUNSUPPORTED;
    }
    return LMK_OK;
}
