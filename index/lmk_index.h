/* landmark — landmark-key index of one (layer, KV head), over FAISS.
 *
 * The only module that includes FAISS headers (the C API, faiss/c_api/). Vectors get ids
 * 0, 1, 2, ... in the order they are added (the block ids). Search is maximum inner
 * product.
 *
 * Spec: any FAISS index_factory string that builds with METRIC_INNER_PRODUCT ("Flat",
 * "HNSW32", "IVF256,Flat", "IVF1024,PQ32", "IVF256,SQ8", "PCA64,IVF256,Flat", ...).
 * Anything else (a string FAISS refuses, a binary index, an index that cannot search by
 * inner product) is refused at create with LMK_EUNSUPPORTED and FAISS's message.
 * Optional suffix "+l2": store x' = [x, sqrt(M^2 - |x|^2)] in an L2 index and search with
 * q' = [q, 0] (the inner-product-to-L2 transform; recommended for HNSW). M is 1.25 x the
 * largest norm seen when the index is built; a later vector above M triggers a rebuild.
 *
 * Training: specs that need it (IVF, PQ, ...) are searched exactly (brute force over the
 * vectors kept by this module) until `train_min` vectors exist; the add that reaches it
 * trains on every vector so far and adds them all, so no vector is ever lost.
 *
 * The module keeps its own f32 copy of every vector (row-major, (ntotal, dim)), exposed by
 * lmk_index_vectors(): the engine rescoring exactly and rebuilds need it.
 *
 * Threads: one handle is used by one thread at a time. FAISS's OpenMP loops run inside the
 * caller's thread; nothing here changes OpenMP's global thread count. Searching different
 * handles from different threads at once is safe.
 */
#ifndef LMK_INDEX_H
#define LMK_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_index lmk_index;

typedef struct lmk_index_opts {
    const char *spec;  /* factory string, optionally with "+l2"; default "Flat" */
    int dim;           /* vector dimension, >= 1 */
    int64_t train_min; /* vectors needed before training; 0 = automatic (e.g. 39 x nlist
                          for IVF, at least 256 x 39 for PQ codes) */
} lmk_index_opts;

lmk_index_opts lmk_index_opts_default(void);

/* Search-time parameters; a value <= 0 leaves the index's current setting. Parameters that
 * do not apply to the spec are ignored. */
typedef struct lmk_search_params {
    int ef_search; /* HNSW */
    int nprobe;    /* IVF */
} lmk_search_params;

/* Validate the spec (building a throw-away FAISS index) and create an empty index.
 * On failure *out is NULL and a message is copied to errmsg (when given).
 * Returns LMK_OK, LMK_EINVAL (dim, spec NULL), LMK_EUNSUPPORTED (spec refused), ENOMEM. */
int lmk_index_create(const lmk_index_opts *opts, lmk_index **out, char *errmsg,
                     size_t errmsg_cap);

/* Free everything. Accepts NULL. */
void lmk_index_free(lmk_index *idx);

/* Message of the last failure on this handle; never NULL. */
const char *lmk_index_errmsg(const lmk_index *idx);

/* Append n vectors x (n, dim); they get ids ntotal .. ntotal+n-1. May train (see above).
 * When FAISS fails (training, add, a rebuild) the vectors are still added: the index drops
 * to exact search (which only needs this module's copy), keeps FAISS's message in
 * lmk_index_errmsg() and tries FAISS again once it holds twice as many vectors.
 * On failure nothing is added. Returns LMK_OK, LMK_EINVAL, LMK_EINDEX, ENOMEM. */
int lmk_index_add(lmk_index *idx, int64_t n, const float *x);

/* Drop every vector with id >= n (truncation). Rebuilds the FAISS index when the type
 * cannot remove ids. */
int lmk_index_truncate(lmk_index *idx, int64_t n);

/* Search nq queries q (nq, dim) for the k largest inner products among ids < limit
 * (limit <= 0 means all). ids (nq, k) gets the results, best first; slots without a
 * result get -1. Exact (brute force) when the index is untrained or limit covers fewer
 * than ~k vectors; otherwise FAISS over-fetching by (ntotal - limit) and filtering.
 * scores may be NULL; when given (nq, k) it gets the inner products as the index computed
 * them (approximate for lossy codes). Allocation-free after the first call with the same
 * or smaller nq*k. Returns LMK_OK, LMK_EINVAL, LMK_EINDEX, ENOMEM. */
int lmk_index_search(lmk_index *idx, int64_t nq, const float *q, int k, int64_t limit,
                     const lmk_search_params *params, int64_t *ids, float *scores);

/* Multi-entry items: entries [i * group, (i + 1) * group) form item i (ids are items), and
 * an item scores the maximum over its entries. Finds, for each query, the k items with the
 * best entries among items < limit_items (<= 0: all), best first, -1 padded; scores (may be
 * NULL) as the index computed them. Searches the top k * min(group, 8) entries, widening
 * (x4) until k distinct items are found or every allowed entry was seen, so with an exact index the
 * result is the exact top-k by maximum. group 1 is lmk_index_search(). Returns as that. */
int lmk_index_search_groups(lmk_index *idx, int64_t nq, const float *q, int k, int group,
                            int64_t limit_items, const lmk_search_params *params,
                            int64_t *ids, float *scores);

int64_t lmk_index_ntotal(const lmk_index *idx);
int lmk_index_dim(const lmk_index *idx);
/* 1 once FAISS is trained (always 1 for specs without training). */
int lmk_index_is_trained(const lmk_index *idx);
/* The spec given at create. Borrowed, valid until lmk_index_free(). */
const char *lmk_index_spec(const lmk_index *idx);

/* Borrowed view of the stored vectors, (ntotal, dim) row-major, valid until the next add,
 * truncate, load or free. */
const float *lmk_index_vectors(const lmk_index *idx);

/* Bytes of RAM held by the FAISS structure plus the vector copy (an estimate). */
size_t lmk_index_memory_bytes(const lmk_index *idx);

/* ---- files (derived data: the engine can always rebuild from LMDB) ----
 * Layout: our header (magic "LMKIDX\0\1", format version, dim, ntotal covered, spec,
 * payload length, CRC-32C of header and payload), the vectors, then FAISS's own
 * serialization. Saving writes "<path>.tmp", fsyncs it, renames it over `path` and fsyncs
 * the directory. Loading verifies header, lengths against the file size and the checksum
 * before FAISS reads a byte, so a damaged file gives LMK_ECORRUPT and never reaches
 * FAISS's length fields. A checksum is no defence against a crafted file, so the FAISS
 * part is then read and searched once in a child process (fork; bounded address space,
 * 20 s at most) before this process reads it: what crashes, allocates without bound or
 * hangs there is LMK_ECORRUPT here. */
int lmk_index_save(lmk_index *idx, const char *path);

/* Load an index saved by lmk_index_save(). `expect_spec` and `expect_dim` must match the
 * file (LMK_EMISMATCH otherwise); the number of vectors it covers is in lmk_index_ntotal().
 * Returns LMK_OK, LMK_ENOTFOUND (no file), LMK_ECORRUPT, LMK_EVERSION, LMK_EMISMATCH,
 * LMK_EINDEX, ENOMEM, an errno. On failure *out is NULL and a message is in errmsg. */
int lmk_index_load(const char *path, const char *expect_spec, int expect_dim,
                   lmk_index **out, char *errmsg, size_t errmsg_cap);

/* Parse the header of an index file image (for fuzzing and verify): checks magic, version,
 * lengths against `len` and the checksum. Returns LMK_OK and fills the outputs (any may be
 * NULL), or LMK_ECORRUPT / LMK_EVERSION. */
int lmk_index_parse_header(const void *data, size_t len, int *dim, int64_t *ntotal,
                           char *spec, size_t spec_cap);

#ifdef __cplusplus
}
#endif
#endif
