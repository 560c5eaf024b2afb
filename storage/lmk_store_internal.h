/* landmark — storage internals exposed to the module's own tests and fuzzers only.
 *
 * Not part of the public API: nothing outside storage/ and tests/ may include this. The
 * symbols are hidden (the build uses -fvisibility=hidden) but linkable from the static
 * library.
 */
#ifndef LMK_STORE_INTERNAL_H
#define LMK_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* What the pre-open check learned from data.mdb's meta pages (the newer one). */
typedef struct lmk_store_header_info {
    uint32_t psize;     /* page size in bytes */
    uint64_t last_pg;   /* last used page number */
    uint64_t mapsize;   /* map size recorded by the last writer */
    uint64_t txnid;     /* id of the last committed transaction */
    uint64_t free_root; /* root page of the free-page tree (~0: none) */
    uint32_t free_depth;
    uint64_t free_entries;
} lmk_store_header_info;

/* Bytes of the file start that lmk_store_check_header() wants to see: two meta pages of
 * the largest page size LMDB supports. */
#define LMK_STORE_HEADER_BYTES (2u * 65536u)

/* Sanity check of an LMDB data file before LMDB maps it (LMDB trusts its meta pages and
 * can crash on a damaged or truncated file). `head` holds the first `n` bytes of the file
 * (n = min(file_size, LMK_STORE_HEADER_BYTES)); `file_size` is the file's full size.
 * Returns LMK_OK, LMK_ECORRUPT (not LMDB, damaged or truncated) or LMK_EVERSION, with a
 * message in msg (capacity cap) on failure. `info` may be NULL. Pure: no I/O. */
int lmk_store_check_header(const unsigned char *head, size_t n, uint64_t file_size,
                           lmk_store_header_info *info, char *msg, size_t cap);

/* Reads `len` bytes at `off` of the data file into buf; 0 or an errno. */
typedef int (*lmk_store_pread_fn)(void *ud, void *buf, size_t len, uint64_t off);

/* Walks the free-page tree of a data file that passed lmk_store_check_header() (info from
 * it), through `rd` (never a map): every page header, node offset, child page number and
 * free-page list is checked against the page and the file before use. LMDB trusts this
 * tree when a write transaction allocates pages; a damaged one crashes it. Returns LMK_OK,
 * LMK_ECORRUPT with a message, or an errno from rd. */
int lmk_store_check_free_tree(const lmk_store_header_info *info, lmk_store_pread_fn rd,
                              void *ud, char *msg, size_t cap);

#endif
