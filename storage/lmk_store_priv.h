/* landmark — private to storage/: the store handle and the helpers its files share
 * (lmk_store.c: open/close and whole-store operations; lmk_store_write.c: batches and
 * commit; lmk_store_read.c: read snapshots, get and scan). See lmk_store.c for the layout
 * of what is kept in LMDB. Nothing outside storage/ includes this. */
#ifndef LMK_STORE_PRIV_H
#define LMK_STORE_PRIV_H

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include <lmdb.h>

#include "lmk_crc32c.h"
#include "lmk_export.h"
#include "lmk_store.h"

enum {
    KEY_LEN = 13,
    KIND_META = 1,
    META_NAME_MAX = 64,
    CRC_LEN = 4,
    MSG_CAP = 512,
};

#define DEFAULT_MAP_SIZE (64ull << 30)
#define MIN_MAP_SIZE (64ull << 10)
/* Growth stops here: half of x86-64's 47-bit user address space. */
#define MAX_MAP_SIZE (1ull << 46)
/* A single value: LMDB's limit is far above, ours keeps size arithmetic simple. */
#define MAX_VALUE_LEN ((size_t)1 << 31)
/* Arena bytes kept between batches; a bigger one (a huge batch) is given back. */
#define ARENA_KEEP (64u << 20)

/* MDB_NOTLS: see the file comment. MDB_NORDAHEAD (MADV_RANDOM on the map): block reads are
 * random, and the kernel's read-around otherwise pulls up to read_ahead_kb per fault
 * (8 MiB on the test VM). Measured on a 2.3 GB store of 32 KiB values, cold cache, random
 * gets: default 4.5 ms and ~5 MiB read per get; MDB_NORDAHEAD 2.4 ms and 40 KiB (one
 * synchronous 4 KiB read per page); MDB_NORDAHEAD plus the MADV_WILLNEED hint of
 * get_common() 0.6-0.8 ms and 40 KiB. Warm-cache gets are ~10 us in all three. */
#define ENV_FLAGS (MDB_NOTLS | MDB_NORDAHEAD)

/* ------------------------------------------------------------------------------------ */
/* Handle                                                                                */

enum { OP_PUT = 1, OP_DEL_RANGE = 2 };

/* One buffered operation in the arena, 8-byte aligned: header, then klen key bytes, then
 * vlen bytes (put: payload + CRC; del_range: the `to` key). */
typedef struct op_hdr {
    uint32_t type;
    uint32_t klen;
    uint64_t vlen;
} op_hdr;

struct lmk_store {
    MDB_env *env;       /* NULL only after a failed re-open (store unusable) */
    MDB_dbi dbi;
    unsigned psize;
    uint64_t map_size;  /* current map size */
    int read_only;
    int verify;
    lmk_sync_mode sync;
    int lock_fd;        /* writer: flock'ed landmark.lock (for older builds); -1 for readers */
    int dir_fd;         /* the session directory: writers hold LOCK_EX on it, lock-less
                           readers LOCK_SH (a directory cannot be deleted under us the way
                           an empty lock file can); -1 when not held */
    int lmdb_lock_fd;   /* writer: lock.mdb, LOCK_EX (flock, beside LMDB's fcntl locks), so
                           readers can tell whether the writer shares their reader table */
    int nolock;         /* reader opened with MDB_NOLOCK (lock.mdb unusable; no writer) */
    dev_t dev;
    ino_t ino;

    MDB_txn *rtxn;      /* the handle's read txn: NULL until first use, then reset/renewed */
    MDB_cursor *rcur;   /* scan cursor, renewed per scan */
    int rd_live;        /* rtxn holds a snapshot */
    int rd_explicit;    /* inside read_begin/read_end */
    int rd_scan;        /* inside lmk_store_scan */

    int batch_open;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    size_t n_ops;

    char dir[PATH_MAX];
    char msg[MSG_CAP];
};

static inline void set_msg(lmk_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void set_msg(lmk_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
}

/* LMDB (or errno) code -> lmk code. */
static inline int xlate(int mrc)
{
    switch (mrc) {
    case MDB_SUCCESS: return LMK_OK;
    case MDB_NOTFOUND: return LMK_ENOTFOUND;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID: return LMK_ECORRUPT;
    case MDB_VERSION_MISMATCH: return LMK_EVERSION;
    case MDB_MAP_FULL: return LMK_EMAPFULL;
    default: return mrc > 0 ? mrc : LMK_ESTORE;
    }
}

static inline void key_encode(unsigned char out[KEY_LEN], const lmk_key *k)
{
    out[0] = k->kind;
    out[1] = (unsigned char)(k->layer >> 8);
    out[2] = (unsigned char)k->layer;
    out[3] = (unsigned char)(k->head >> 8);
    out[4] = (unsigned char)k->head;
    for (int i = 0; i < 8; i++)
        out[5 + i] = (unsigned char)(k->index >> (56 - 8 * i));
}

static inline void key_decode(const unsigned char *in, lmk_key *k)
{
    k->kind = in[0];
    k->layer = (uint16_t)(in[1] << 8 | in[2]);
    k->head = (uint16_t)(in[3] << 8 | in[4]);
    uint64_t ix = 0;
    for (int i = 0; i < 8; i++)
        ix = ix << 8 | in[5 + i];
    k->index = ix;
}

static inline int kind_ok(unsigned kind) { return kind >= LMK_KEY_BLOCK && kind <= LMK_KEY_USER; }

/* Human-readable key for messages: "block L3 H1 #17", "meta 'fingerprint'". */
static inline const char *key_str(char *buf, size_t cap, const unsigned char *kb, size_t klen)
{
    static const char *const names[] = {"?", "meta", "block", "landmark", "tail", "user"};
    if (klen >= 1 && kb[0] == KIND_META) {
        snprintf(buf, cap, "meta '%.*s'", (int)(klen - 1), (const char *)kb + 1);
    } else if (klen == KEY_LEN) {
        lmk_key k;
        key_decode(kb, &k);
        snprintf(buf, cap, "%s L%u H%u #%llu", k.kind <= 5 ? names[k.kind] : "kind?",
                 (unsigned)k.layer, (unsigned)k.head, (unsigned long long)k.index);
    } else {
        snprintf(buf, cap, "key of %zu bytes", klen);
    }
    return buf;
}

/* LMDB's default order: memcmp over the common length, then the shorter first. */
static inline int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static inline uint32_t value_crc(const void *key, size_t klen, const void *payload, size_t len)
{
    return lmk_crc32c(lmk_crc32c(0, key, klen), payload, len);
}

/* Aborts the handle's read transaction and scan cursor (lmk_store.c). */
void lmk_store_read_txn_drop(lmk_store *s);

/* Closes and re-opens the environment after a failed remap or a fatal LMDB error; an
 * explicit read snapshot is re-established on the new environment (lmk_store.c). */
int lmk_store_env_reopen(lmk_store *s);

/* LMK_ESTATE once a failed re-open left the store without an environment. */
static inline int check_usable(lmk_store *s)
{
    if (!s->env)
        return LMK_ESTATE; /* message kept from the failure that got us here */
    return LMK_OK;
}

/* Key bytes of meta record `name` into kb; its length in *klen (lmk_store_write.c). */
int lmk_store_meta_key(lmk_store *s, const char *name, unsigned char kb[1 + META_NAME_MAX],
                       size_t *klen);

/* Takes a fresh snapshot in s->rtxn, creating the txn on first use (lmk_store_read.c). */
int lmk_store_read_renew(lmk_store *s);

#endif
