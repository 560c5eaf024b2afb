/* landmark — pre-open check of an LMDB data file (see lmk_store_internal.h): LMDB trusts
 * its meta pages and can crash on a damaged or truncated data.mdb, so the store reads the
 * two meta pages itself before handing the file to LMDB. Pure: no I/O. */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lmk_error.h"
#include "lmk_export.h"
#include "lmk_le.h"
#include "lmk_store_internal.h"

/* LMDB 0.9, 64-bit layout. Offsets inside a meta page: MDB_page header (16 bytes: pgno
 * u64, pad u16, flags u16, lower/upper u16) then MDB_meta: magic u32, version u32,
 * address u64, mapsize u64, dbs[2] (48 bytes each: pad u32 (= page size in dbs[0]), flags
 * u16, depth u16, branch, leaf, overflow, entries, root u64), last_pg u64, txnid u64. */
enum {
    MP_PGNO = 0,
    MP_FLAGS = 10,
    MM_MAGIC = 16,
    MM_VERSION = 20,
    MM_MAPSIZE = 32,
    MM_PSIZE = 40,
    MM_FREE_ROOT = 40 + 40,
    MM_MAIN_ROOT = 40 + 48 + 40,
    MM_LAST_PG = 136,
    MM_TXNID = 144,
    MM_END = 152,
    P_META_FLAG = 0x08,
};
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_P_INVALID (~(uint64_t)0)

/* Checks one meta page at `m` (MM_END bytes readable); `which` is 0 or 1. */
static int check_meta(const unsigned char *m, unsigned which, char *msg, size_t cap)
{
    uint32_t magic = lmk_get_u32le(m + MM_MAGIC);
    if (magic != LMDB_MAGIC) {
        if (magic == 0xDEC0EFBEu)
            snprintf(msg, cap, "data.mdb: LMDB file of the other byte order");
        else
            snprintf(msg, cap, "data.mdb: not an LMDB environment (meta page %u has no "
                               "LMDB magic; found 0x%08x)", which, magic);
        return LMK_ECORRUPT;
    }
    if (!(lmk_get_u16le(m + MP_FLAGS) & P_META_FLAG) || lmk_get_u64le(m + MP_PGNO) != which) {
        snprintf(msg, cap, "data.mdb: page %u is not a valid meta page", which);
        return LMK_ECORRUPT;
    }
    uint32_t version = lmk_get_u32le(m + MM_VERSION);
    if (version != LMDB_DATA_VERSION) {
        snprintf(msg, cap, "data.mdb: LMDB data format version %u, this build reads %u",
                 version, LMDB_DATA_VERSION);
        return LMK_EVERSION;
    }
    return LMK_OK;
}

LMK_INTERNAL int lmk_store_check_header(const unsigned char *head, size_t n, uint64_t file_size,
                                        lmk_store_header_info *info, char *msg, size_t cap)
{
    char dummy[1];
    if (!msg || !cap) {
        msg = dummy;
        cap = sizeof dummy;
    }
    if (file_size == 0) {
        snprintf(msg, cap, "data.mdb is empty (0 bytes): not an LMDB environment "
                           "(creation was interrupted?)");
        return LMK_ECORRUPT;
    }
    if (n > file_size)
        n = (size_t)file_size;
    if (n < MM_END) {
        snprintf(msg, cap, "data.mdb: %llu bytes, too short for an LMDB meta page",
                 (unsigned long long)file_size);
        return LMK_ECORRUPT;
    }
    int rc = check_meta(head, 0, msg, cap);
    if (rc)
        return rc;
    uint32_t psize = lmk_get_u32le(head + MM_PSIZE);
    if (psize < 512 || psize > 65536 || (psize & (psize - 1))) {
        snprintf(msg, cap, "data.mdb: implausible page size %u in meta page 0", psize);
        return LMK_ECORRUPT;
    }
    if (file_size < 2ull * psize) {
        snprintf(msg, cap, "data.mdb is truncated: %llu bytes, less than the two %u-byte "
                           "meta pages", (unsigned long long)file_size, psize);
        return LMK_ECORRUPT;
    }
    if (n < (size_t)psize + MM_END) {
        snprintf(msg, cap, "data.mdb: meta page 1 not readable");
        return LMK_ECORRUPT;
    }
    const unsigned char *m1 = head + psize;
    rc = check_meta(m1, 1, msg, cap);
    if (rc)
        return rc;
    if (lmk_get_u32le(m1 + MM_PSIZE) != psize) {
        snprintf(msg, cap, "data.mdb: meta pages disagree on the page size (%u, %u)", psize,
                 lmk_get_u32le(m1 + MM_PSIZE));
        return LMK_ECORRUPT;
    }
    /* LMDB writes the meta page of transaction t to page t % 2, so the two pages hold
     * consecutive ids (or both 0 in a new file). Anything else is a damaged id, which would
     * otherwise silently roll the store back to an older commit. */
    uint64_t t0 = lmk_get_u64le(head + MM_TXNID), t1 = lmk_get_u64le(m1 + MM_TXNID);
    if (!(t0 == 0 && t1 == 0) && !(t0 + 1 == t1 && (t1 & 1) == 1) &&
        !(t1 + 1 == t0 && (t0 & 1) == 0)) {
        snprintf(msg, cap, "data.mdb is damaged: meta pages hold transaction ids %llu and %llu",
                 (unsigned long long)t0, (unsigned long long)t1);
        return LMK_ECORRUPT;
    }
    /* LMDB uses the meta page with the larger transaction id. */
    const unsigned char *m = t1 > t0 ? m1 : head;
    uint64_t last_pg = lmk_get_u64le(m + MM_LAST_PG);
    /* Only the pages up to last_pg matter: a tail beyond them (a partial page left by a
     * failed write, say) is harmless and gets overwritten by later commits. */
    uint64_t npages = file_size / psize;
    if (last_pg < 1 || last_pg >= npages) {
        snprintf(msg, cap, "data.mdb is truncated: the last commit uses %llu pages, the file "
                           "holds %llu", (unsigned long long)last_pg + 1,
                 (unsigned long long)npages);
        return LMK_ECORRUPT;
    }
    const unsigned roots[2] = {MM_FREE_ROOT, MM_MAIN_ROOT};
    for (int i = 0; i < 2; i++) {
        uint64_t root = lmk_get_u64le(m + roots[i]);
        if (root != LMDB_P_INVALID && (root < 2 || root > last_pg)) {
            snprintf(msg, cap, "data.mdb is damaged: %s tree root page %llu outside 2..%llu",
                     i ? "main" : "free", (unsigned long long)root,
                     (unsigned long long)last_pg);
            return LMK_ECORRUPT;
        }
    }
    if (info) {
        info->psize = psize;
        info->last_pg = last_pg;
        info->mapsize = lmk_get_u64le(m + MM_MAPSIZE);
        info->txnid = lmk_get_u64le(m + MM_TXNID);
    }
    return LMK_OK;
}

