/* landmark — pre-open check of an LMDB data file (see lmk_store_internal.h): LMDB trusts
 * its meta pages and can crash on a damaged or truncated data.mdb, so the store reads the
 * two meta pages itself before handing the file to LMDB. Pure: no I/O. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    MM_FREE_DEPTH = 40 + 6,
    MM_FREE_ENTRIES = 40 + 32,
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
        info->free_root = lmk_get_u64le(m + MM_FREE_ROOT);
        info->free_depth = lmk_get_u16le(m + MM_FREE_DEPTH);
        info->free_entries = lmk_get_u64le(m + MM_FREE_ENTRIES);
    }
    return LMK_OK;
}


/* ---- the free-page tree ----
 * Page: pgno u64, pad u16, flags u16, lower u16, upper u16 (overflow pages: a u32 page
 * count instead), then `lower` bytes of u16 node offsets. Node: lo u16, hi u16, flags u16,
 * key size u16, key, data. Branch nodes hold a child page number in lo | hi << 16 |
 * flags << 32; leaf nodes their data size in lo | hi << 16, the data inline or, with
 * F_BIGDATA, on overflow pages whose number is the data. Free-tree records: key a u64
 * transaction id, data a page list (u64 count, then that many u64 page numbers). */
enum {
    PAGEHDR = 16,
    NODEHDR = 8,
    P_BRANCH = 0x01,
    P_LEAF = 0x02,
    P_OVERFLOW = 0x04,
    F_BIGDATA = 0x01,
    FREE_DEPTH_MAX = 32,
};

typedef struct walk {
    const lmk_store_header_info *info;
    lmk_store_pread_fn rd;
    void *ud;
    unsigned char *page; /* one page per level */
    uint64_t pages_seen, entries;
    char *msg;
    size_t cap;
} walk;

static int bad(walk *w, uint64_t pg, const char *what)
{
    snprintf(w->msg, w->cap, "data.mdb is damaged: free-page tree page %llu: %s",
             (unsigned long long)pg, what);
    return LMK_ECORRUPT;
}

/* w->rd with a message on failure. */
static int rdp(walk *w, void *buf, size_t len, uint64_t off)
{
    int rc = w->rd(w->ud, buf, len, off);
    if (rc)
        snprintf(w->msg, w->cap, "data.mdb: reading %zu bytes at %llu for the free-page "
                                 "tree: %s", len, (unsigned long long)off,
                 rc > 0 ? strerror(rc) : "the file is shorter");
    return rc;
}

static int check_list(walk *w, uint64_t pg, const unsigned char *d, size_t n)
{
    if (n < 8 || n % 8)
        return bad(w, pg, "free-page list of an impossible length");
    uint64_t cnt = lmk_get_u64le(d);
    if (cnt != n / 8 - 1)
        return bad(w, pg, "free-page list count disagrees with its length");
    for (uint64_t i = 1; i <= cnt; i++) {
        uint64_t p = lmk_get_u64le(d + 8 * i);
        if (p < 2 || p > w->info->last_pg)
            return bad(w, pg, "free-page list names a page outside the file");
    }
    return LMK_OK;
}

static int visit(walk *w, uint64_t pg, unsigned level)
{
    const uint32_t ps = w->info->psize;
    if (pg < 2 || pg > w->info->last_pg)
        return bad(w, pg, "page number outside the file");
    if (++w->pages_seen > w->info->last_pg)
        return bad(w, pg, "the tree has more pages than the file (a cycle)");
    unsigned char *p = w->page + (size_t)(level - 1) * ps;
    int rc = rdp(w, p, ps, pg * ps);
    if (rc)
        return rc;
    unsigned flags = lmk_get_u16le(p + 10);
    unsigned lower = lmk_get_u16le(p + 12), upper = lmk_get_u16le(p + 14);
    int leaf = (flags & (P_BRANCH | P_LEAF | P_OVERFLOW)) == P_LEAF;
    int branch = (flags & (P_BRANCH | P_LEAF | P_OVERFLOW)) == P_BRANCH;
    if (lmk_get_u64le(p) != pg || !(leaf || branch))
        return bad(w, pg, "not a tree page");
    if (leaf != (level == w->info->free_depth))
        return bad(w, pg, "leaf at the wrong depth");
    if (lower < PAGEHDR || lower > upper || upper > ps || (lower - PAGEHDR) % 2 ||
        lower == PAGEHDR)
        return bad(w, pg, "page bounds");
    unsigned nkeys = (lower - PAGEHDR) / 2;
    for (unsigned i = 0; i < nkeys; i++) {
        unsigned off = lmk_get_u16le(p + PAGEHDR + 2 * i);
        if (off < upper || off + NODEHDR > ps)
            return bad(w, pg, "node offset");
        const unsigned char *nd = p + off;
        unsigned lo = lmk_get_u16le(nd), hi = lmk_get_u16le(nd + 2);
        unsigned nflags = lmk_get_u16le(nd + 4), ksize = lmk_get_u16le(nd + 6);
        if (off + NODEHDR + ksize > ps)
            return bad(w, pg, "key beyond the page");
        if (branch) {
            uint64_t child = lo | (uint64_t)hi << 16 | (uint64_t)nflags << 32;
            if ((rc = visit(w, child, level + 1)))
                return rc;
            continue;
        }
        if (ksize != 8)
            return bad(w, pg, "key is not a transaction id");
        size_t dsize = lo | (size_t)hi << 16;
        const unsigned char *data = nd + NODEHDR + ksize;
        w->entries++;
        if (!(nflags & F_BIGDATA)) {
            if (nflags || off + NODEHDR + ksize + dsize > ps)
                return bad(w, pg, "record beyond the page");
            if ((rc = check_list(w, pg, data, dsize)))
                return rc;
            continue;
        }
        if (off + NODEHDR + ksize + 8 > ps)
            return bad(w, pg, "overflow reference beyond the page");
        uint64_t ov = lmk_get_u64le(data);
        if (ov < 2 || ov > w->info->last_pg)
            return bad(w, pg, "overflow page outside the file");
        unsigned char oh[PAGEHDR];
        if ((rc = rdp(w, oh, sizeof oh, ov * ps)))
            return rc;
        uint32_t npages = lmk_get_u32le(oh + 12);
        if (lmk_get_u64le(oh) != ov || !(lmk_get_u16le(oh + 10) & P_OVERFLOW) || npages < 1 ||
            npages > w->info->last_pg - ov + 1 || dsize > (uint64_t)npages * ps - PAGEHDR)
            return bad(w, pg, "overflow pages of a free-page list");
        unsigned char *buf = malloc(dsize ? dsize : 1);
        if (!buf) {
            snprintf(w->msg, w->cap, "out of memory checking the free-page tree");
            return ENOMEM;
        }
        rc = rdp(w, buf, dsize, ov * ps + PAGEHDR);
        if (!rc)
            rc = check_list(w, pg, buf, dsize);
        free(buf);
        if (rc)
            return rc;
    }
    return LMK_OK;
}

LMK_INTERNAL int lmk_store_check_free_tree(const lmk_store_header_info *info,
                                           lmk_store_pread_fn rd, void *ud, char *msg,
                                           size_t cap)
{
    char dummy[1];
    if (!msg || !cap) {
        msg = dummy;
        cap = sizeof dummy;
    }
    if (info->free_root == LMDB_P_INVALID)
        return info->free_depth == 0 && info->free_entries == 0
                   ? LMK_OK
                   : (snprintf(msg, cap, "data.mdb is damaged: free-page tree without a root "
                                         "but with %llu entries",
                               (unsigned long long)info->free_entries),
                      LMK_ECORRUPT);
    if (info->free_depth < 1 || info->free_depth > FREE_DEPTH_MAX) {
        snprintf(msg, cap, "data.mdb is damaged: free-page tree depth %u", info->free_depth);
        return LMK_ECORRUPT;
    }
    walk w = {info, rd, ud, malloc((size_t)info->free_depth * info->psize), 0, 0, msg, cap};
    if (!w.page) {
        snprintf(msg, cap, "out of memory checking the free-page tree");
        return ENOMEM;
    }
    int rc = visit(&w, info->free_root, 1);
    free(w.page);
    if (rc == LMK_OK && w.entries != info->free_entries) {
        snprintf(msg, cap, "data.mdb is damaged: free-page tree holds %llu records, its meta "
                           "page says %llu", (unsigned long long)w.entries,
                 (unsigned long long)info->free_entries);
        rc = LMK_ECORRUPT;
    }
    return rc;
}
