/* landmark — durable key/value store over LMDB (see lmk_store.h for the contract).
 *
 * Layout of what we put in LMDB (one unnamed database, default memcmp key order):
 *   key   13 bytes (kind u8, layer u16, head u16, index u64), big-endian so LMDB's byte
 *         order is (kind, layer, head, index) order; meta records: 0x01 + name bytes.
 *   value payload bytes, then CRC-32C(key bytes || payload) as 4 little-endian bytes.
 *         The key is inside the checksum so a value that ends up under another key (a
 *         misdirected write, a bug in page handling) is caught too. Trailing rather than
 *         leading keeps the payload at LMDB's own offset in the page.
 *
 * Batches live in an arena of op records (reused across batches) until commit, which
 * replays them in one write transaction. Replaying is what makes map growth transparent:
 * on MDB_MAP_FULL the transaction is aborted, the map grown, and the batch replayed.
 *
 * Reads use one read transaction per handle, created once and reset/renewed afterwards
 * (MDB_NOTLS ties LMDB's reader slot to the txn object, not to the thread, so the handle
 * may move between threads across calls).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <lmdb.h>

#include "lmk_crc32c.h"
#include "lmk_store.h"
#include "lmk_store_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h> /* __rdtsc */
#endif

#include "lmk_export.h"

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
/* Pre-open check of data.mdb (LMDB 0.9, 64-bit layout)                                  */

/* Offsets inside a meta page: MDB_page header (16 bytes: pgno u64, pad u16, flags u16,
 * lower/upper u16) then MDB_meta: magic u32, version u32, address u64, mapsize u64,
 * dbs[2] (48 bytes each: pad u32 (= page size in dbs[0]), flags u16, depth u16, branch,
 * leaf, overflow, entries, root u64), last_pg u64, txnid u64. */
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

static uint16_t rd16le(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64le(const unsigned char *p)
{
    return (uint64_t)rd32le(p) | (uint64_t)rd32le(p + 4) << 32;
}

/* Checks one meta page at `m` (MM_END bytes readable); `which` is 0 or 1. */
static int check_meta(const unsigned char *m, unsigned which, char *msg, size_t cap)
{
    uint32_t magic = rd32le(m + MM_MAGIC);
    if (magic != LMDB_MAGIC) {
        if (magic == 0xDEC0EFBEu)
            snprintf(msg, cap, "data.mdb: LMDB file of the other byte order");
        else
            snprintf(msg, cap, "data.mdb: not an LMDB environment (meta page %u has no "
                               "LMDB magic; found 0x%08x)", which, magic);
        return LMK_ECORRUPT;
    }
    if (!(rd16le(m + MP_FLAGS) & P_META_FLAG) || rd64le(m + MP_PGNO) != which) {
        snprintf(msg, cap, "data.mdb: page %u is not a valid meta page", which);
        return LMK_ECORRUPT;
    }
    uint32_t version = rd32le(m + MM_VERSION);
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
    uint32_t psize = rd32le(head + MM_PSIZE);
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
    if (rd32le(m1 + MM_PSIZE) != psize) {
        snprintf(msg, cap, "data.mdb: meta pages disagree on the page size (%u, %u)", psize,
                 rd32le(m1 + MM_PSIZE));
        return LMK_ECORRUPT;
    }
    /* LMDB writes the meta page of transaction t to page t % 2, so the two pages hold
     * consecutive ids (or both 0 in a new file). Anything else is a damaged id, which would
     * otherwise silently roll the store back to an older commit. */
    uint64_t t0 = rd64le(head + MM_TXNID), t1 = rd64le(m1 + MM_TXNID);
    if (!(t0 == 0 && t1 == 0) && !(t0 + 1 == t1 && (t1 & 1) == 1) &&
        !(t1 + 1 == t0 && (t0 & 1) == 0)) {
        snprintf(msg, cap, "data.mdb is damaged: meta pages hold transaction ids %llu and %llu",
                 (unsigned long long)t0, (unsigned long long)t1);
        return LMK_ECORRUPT;
    }
    /* LMDB uses the meta page with the larger transaction id. */
    const unsigned char *m = t1 > t0 ? m1 : head;
    uint64_t last_pg = rd64le(m + MM_LAST_PG);
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
        uint64_t root = rd64le(m + roots[i]);
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
        info->mapsize = rd64le(m + MM_MAPSIZE);
        info->txnid = rd64le(m + MM_TXNID);
    }
    return LMK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Process-wide registry of open directories: LMDB forbids opening one environment twice
 * in a process (its POSIX locks are per process; closing one handle drops the other's).
 * Entries carry the pid so a forked child, which inherits the parent's copy of the list,
 * does not mistake the parent's stores for its own. */

typedef struct reg_entry {
    dev_t dev;
    ino_t ino;
    pid_t pid;
} reg_entry;

static pthread_mutex_t reg_mutex = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *reg_list;
static size_t reg_n, reg_cap;

/* 0 on success, LMK_EBUSY if present, ENOMEM. */
static int reg_add(dev_t dev, ino_t ino)
{
    int rc = 0;
    pid_t me = getpid();
    pthread_mutex_lock(&reg_mutex);
    for (size_t i = 0; i < reg_n;) {
        if (reg_list[i].pid != me) { /* inherited through fork: not ours */
            reg_list[i] = reg_list[--reg_n];
            continue;
        }
        if (reg_list[i].dev == dev && reg_list[i].ino == ino) {
            rc = LMK_EBUSY;
            goto out;
        }
        i++;
    }
    if (reg_n == reg_cap) {
        size_t ncap = reg_cap ? reg_cap * 2 : 8;
        reg_entry *nl = realloc(reg_list, ncap * sizeof *nl);
        if (!nl) {
            rc = ENOMEM;
            goto out;
        }
        reg_list = nl;
        reg_cap = ncap;
    }
    reg_list[reg_n++] = (reg_entry){dev, ino, me};
out:
    pthread_mutex_unlock(&reg_mutex);
    return rc;
}

static void reg_remove(dev_t dev, ino_t ino)
{
    pid_t me = getpid();
    pthread_mutex_lock(&reg_mutex);
    for (size_t i = 0; i < reg_n; i++) {
        if (reg_list[i].dev == dev && reg_list[i].ino == ino && reg_list[i].pid == me) {
            reg_list[i] = reg_list[--reg_n];
            break;
        }
    }
    pthread_mutex_unlock(&reg_mutex);
}

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
    int lock_fd;        /* writer: flock'ed landmark.lock; -1 for readers */
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

static void set_msg(lmk_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_msg(lmk_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
}

/* LMDB (or errno) code -> lmk code. */
static int xlate(int mrc)
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

static void key_encode(unsigned char out[KEY_LEN], const lmk_key *k)
{
    out[0] = k->kind;
    out[1] = (unsigned char)(k->layer >> 8);
    out[2] = (unsigned char)k->layer;
    out[3] = (unsigned char)(k->head >> 8);
    out[4] = (unsigned char)k->head;
    for (int i = 0; i < 8; i++)
        out[5 + i] = (unsigned char)(k->index >> (56 - 8 * i));
}

static void key_decode(const unsigned char *in, lmk_key *k)
{
    k->kind = in[0];
    k->layer = (uint16_t)(in[1] << 8 | in[2]);
    k->head = (uint16_t)(in[3] << 8 | in[4]);
    uint64_t ix = 0;
    for (int i = 0; i < 8; i++)
        ix = ix << 8 | in[5 + i];
    k->index = ix;
}

static int kind_ok(unsigned kind) { return kind >= LMK_KEY_BLOCK && kind <= LMK_KEY_USER; }

/* Human-readable key for messages: "block L3 H1 #17", "meta 'fingerprint'". */
static const char *key_str(char *buf, size_t cap, const unsigned char *kb, size_t klen)
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
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static uint32_t value_crc(const void *key, size_t klen, const void *payload, size_t len)
{
    return lmk_crc32c(lmk_crc32c(0, key, klen), payload, len);
}

/* ------------------------------------------------------------------------------------ */
/* Environment open/close                                                                */

static void read_txn_drop(lmk_store *s)
{
    if (s->rcur) {
        mdb_cursor_close(s->rcur);
        s->rcur = NULL;
    }
    if (s->rtxn) {
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    s->rd_live = 0;
}

/* Creates and opens s->env at s->map_size; on failure s->env is NULL, the message set. */
static int env_open(lmk_store *s)
{
    MDB_env *env = NULL;
    int mrc = mdb_env_create(&env);
    if (mrc) {
        set_msg(s, "mdb_env_create: %s", mdb_strerror(mrc));
        return xlate(mrc);
    }
    unsigned flags = ENV_FLAGS;
    if (s->read_only)
        flags |= MDB_RDONLY;
    else if (s->sync == LMK_SYNC_NOMETA)
        flags |= MDB_NOMETASYNC;
    else if (s->sync == LMK_SYNC_NONE)
        flags |= MDB_NOSYNC;
    const char *what = "mdb_env_set_mapsize";
    mrc = mdb_env_set_mapsize(env, (size_t)s->map_size);
    if (!mrc) {
        what = "mdb_env_open";
        mrc = mdb_env_open(env, s->dir, flags, 0644);
    }
    if (mrc) {
        set_msg(s, "%s %s: %s", what, s->dir, mdb_strerror(mrc));
        mdb_env_close(env);
        if (mrc == ENOENT)
            return LMK_ENOTFOUND;
        return xlate(mrc);
    }
    int dead = 0;
    mdb_reader_check(env, &dead); /* best effort: clears slots of dead processes */

    MDB_txn *txn = NULL;
    mrc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!mrc) {
        what = "mdb_dbi_open";
        mrc = mdb_dbi_open(txn, NULL, 0, &s->dbi);
        if (!mrc) {
            what = "mdb_txn_commit (dbi)";
            mrc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
    } else {
        what = "mdb_txn_begin (open)";
    }
    if (mrc) {
        set_msg(s, "%s %s: %s", what, s->dir, mdb_strerror(mrc));
        mdb_env_close(env);
        return xlate(mrc);
    }
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &st);
    s->map_size = info.me_mapsize;
    s->psize = st.ms_psize;
    s->env = env;
    return LMK_OK;
}

/* Closes and re-opens the environment (after a failed remap left LMDB without a map, or a
 * fatal LMDB error). An explicit read snapshot is re-established on the new environment. */
static int env_reopen(lmk_store *s)
{
    char saved[MSG_CAP];
    memcpy(saved, s->msg, sizeof saved);
    read_txn_drop(s);
    if (s->env) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
    int rc = env_open(s);
    if (rc) {
        char why[MSG_CAP];
        memcpy(why, s->msg, sizeof why);
        set_msg(s, "%s; re-opening the environment failed, store unusable: %s", saved, why);
        return rc;
    }
    memcpy(s->msg, saved, sizeof saved);
    return LMK_OK;
}

static int check_usable(lmk_store *s)
{
    if (!s->env)
        return LMK_ESTATE; /* message kept from the failure that got us here */
    return LMK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Open / close                                                                          */

LMK_API lmk_store_opts lmk_store_opts_default(void)
{
    lmk_store_opts o;
    memset(&o, 0, sizeof o);
    o.read_only = 0;
    o.create = 0;
    o.sync = LMK_SYNC_NOMETA;
    o.map_size = 0;
    o.verify_reads = 1;
    return o;
}

/* Reads the head of <dir>/data.mdb and checks it. LMK_ENOTFOUND when the file is absent. */
static int precheck_data_file(lmk_store *s, lmk_store_header_info *info)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            set_msg(s, "%s: no store here (data.mdb missing)", s->dir);
            return LMK_ENOTFOUND;
        }
        set_msg(s, "open %s: %s", path, strerror(e));
        return e;
    }
    unsigned char *head = malloc(LMK_STORE_HEADER_BYTES);
    if (!head) {
        close(fd);
        set_msg(s, "out of memory");
        return ENOMEM;
    }
    /* Meta pages first, size second: a concurrent writer extends the file before it
     * writes the meta page that refers to the new pages. */
    size_t got = 0;
    int rc = LMK_OK;
    while (got < LMK_STORE_HEADER_BYTES) {
        ssize_t r = pread(fd, head + got, LMK_STORE_HEADER_BYTES - got, (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = errno;
            set_msg(s, "read %s: %s", path, strerror(rc));
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    struct stat st;
    if (!rc && fstat(fd, &st) != 0) {
        rc = errno;
        set_msg(s, "stat %s: %s", path, strerror(rc));
    }
    if (!rc) {
        char why[MSG_CAP - 64];
        rc = lmk_store_check_header(head, got, (uint64_t)st.st_size, info, why, sizeof why);
        if (rc)
            set_msg(s, "%s: %s", s->dir, why);
    }
    free(head);
    close(fd);
    return rc;
}

static void copy_out_msg(const char *msg, char *errmsg, size_t cap)
{
    if (errmsg && cap)
        snprintf(errmsg, cap, "%s", msg);
}

LMK_API int lmk_store_open(const char *dir, const lmk_store_opts *opts, lmk_store **out,
                           char *errmsg, size_t errmsg_cap)
{
    if (out)
        *out = NULL;
    lmk_store_opts o = opts ? *opts : lmk_store_opts_default();
    if (!dir || !*dir || !out) {
        copy_out_msg("lmk_store_open: dir and out are required", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if (strlen(dir) >= PATH_MAX - 32) {
        copy_out_msg("lmk_store_open: directory path too long", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if ((unsigned)o.sync > LMK_SYNC_NONE) {
        copy_out_msg("lmk_store_open: unknown sync mode", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if (o.read_only && o.create) {
        copy_out_msg("lmk_store_open: read_only and create exclude each other", errmsg,
                     errmsg_cap);
        return LMK_EINVAL;
    }
    if (o.map_size > MAX_MAP_SIZE || o.map_size > SIZE_MAX / 2) {
        copy_out_msg("lmk_store_open: map_size too large", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }

    lmk_store *s = calloc(1, sizeof *s);
    if (!s) {
        copy_out_msg("out of memory", errmsg, errmsg_cap);
        return ENOMEM;
    }
    s->lock_fd = -1;
    s->read_only = o.read_only ? 1 : 0;
    s->verify = o.verify_reads ? 1 : 0;
    s->sync = o.sync;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    int rc = LMK_OK;
    int registered = 0;

    struct stat st;
    if (stat(dir, &st) != 0) {
        int e = errno;
        if (e != ENOENT) {
            set_msg(s, "stat %s: %s", dir, strerror(e));
            rc = e;
            goto fail;
        }
        if (!o.create) {
            set_msg(s, "%s: no such store directory", dir);
            rc = LMK_ENOTFOUND;
            goto fail;
        }
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            rc = errno;
            set_msg(s, "cannot create directory %s: %s", dir, strerror(rc));
            goto fail;
        }
        if (stat(dir, &st) != 0) {
            rc = errno;
            set_msg(s, "stat %s: %s", dir, strerror(rc));
            goto fail;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        set_msg(s, "%s is not a directory", dir);
        rc = ENOTDIR;
        goto fail;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    rc = reg_add(s->dev, s->ino);
    if (rc == LMK_EBUSY) {
        set_msg(s, "%s: session is already open in this process", dir);
        goto fail;
    } else if (rc) {
        set_msg(s, "out of memory");
        goto fail;
    }
    registered = 1;

    if (!o.create) {
        /* Before taking (and so creating) the lock file: a directory that holds no store
         * is left as it was. */
        char dpath[PATH_MAX + 16];
        struct stat dst;
        snprintf(dpath, sizeof dpath, "%s/data.mdb", dir);
        if (stat(dpath, &dst) != 0 && errno == ENOENT) {
            set_msg(s, "%s: no store here (data.mdb missing)", dir);
            rc = LMK_ENOTFOUND;
            goto fail;
        }
    }
    if (!s->read_only) {
        char lpath[PATH_MAX + 16];
        snprintf(lpath, sizeof lpath, "%s/landmark.lock", dir);
        s->lock_fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (s->lock_fd < 0) {
            rc = errno;
            set_msg(s, "open %s: %s", lpath, strerror(rc));
            goto fail;
        }
        while (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno == EINTR)
                continue;
            if (errno == EWOULDBLOCK) {
                set_msg(s, "%s: session is in use by another process", dir);
                rc = LMK_EBUSY;
            } else {
                rc = errno;
                set_msg(s, "flock %s: %s", lpath, strerror(rc));
            }
            goto fail;
        }
    }

    /* Sanity-check an existing data file before LMDB maps it. */
    lmk_store_header_info hinfo;
    memset(&hinfo, 0, sizeof hinfo);
    rc = precheck_data_file(s, &hinfo);
    if (rc == LMK_ECORRUPT && o.create && !o.read_only) {
        /* A writer killed between LMDB creating data.mdb and writing its meta pages leaves
         * an empty file; with create that is a store that was never made: start over. We
         * hold the writer lock, so nobody else is using it. */
        char path[PATH_MAX + 16];
        struct stat st;
        snprintf(path, sizeof path, "%s/data.mdb", dir);
        if (stat(path, &st) == 0 && st.st_size == 0 && unlink(path) == 0)
            rc = precheck_data_file(s, &hinfo);
    }
    int exists = rc != LMK_ENOTFOUND;
    if (rc == LMK_ENOTFOUND) {
        if (!o.create)
            goto fail;
        rc = LMK_OK;
    }
    if (rc)
        goto fail;

    uint64_t want = o.map_size ? o.map_size : DEFAULT_MAP_SIZE;
    if (want < MIN_MAP_SIZE)
        want = MIN_MAP_SIZE;
    /* A map the last writer grew beyond our default stays that large. */
    if (exists && !o.map_size && hinfo.mapsize > want && hinfo.mapsize <= MAX_MAP_SIZE)
        want = hinfo.mapsize;
    s->map_size = want;

    rc = env_open(s);
    if (rc)
        goto fail;
    *out = s;
    return LMK_OK;

fail:
    copy_out_msg(s->msg, errmsg, errmsg_cap);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (registered)
        reg_remove(s->dev, s->ino);
    free(s);
    return rc;
}

LMK_API void lmk_store_close(lmk_store *s)
{
    if (!s)
        return;
    lmk_store_batch_abort(s);
    read_txn_drop(s);
    if (s->env) {
        /* LMK_SYNC_NONE: flush on close too, so a clean close is durable in every mode
         * (FULL and NOMETA are already durable up to the meta page of the last commit;
         * the forced sync covers that too). */
        if (!s->read_only)
            mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    reg_remove(s->dev, s->ino);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock only after LMDB is closed */
    free(s->arena);
    free(s);
}

LMK_API const char *lmk_store_errmsg(const lmk_store *s)
{
    if (!s)
        return "no store handle";
    return s->msg;
}

/* ------------------------------------------------------------------------------------ */
/* Batches                                                                               */

static int writable(lmk_store *s, const char *what)
{
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (s->read_only) {
        set_msg(s, "%s: store is open read-only", what);
        return LMK_EREADONLY;
    }
    if (!s->batch_open) {
        set_msg(s, "%s: no batch pending (call lmk_store_batch_begin first)", what);
        return LMK_ESTATE;
    }
    return LMK_OK;
}

LMK_API int lmk_store_batch_begin(lmk_store *s)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (s->read_only) {
        set_msg(s, "batch_begin: store is open read-only");
        return LMK_EREADONLY;
    }
    if (s->batch_open) {
        set_msg(s, "batch_begin: a batch is already pending");
        return LMK_ESTATE;
    }
    s->batch_open = 1;
    s->arena_len = 0;
    s->n_ops = 0;
    return LMK_OK;
}

/* Room for one op of klen + vlen bytes; returns its header or NULL (ENOMEM). */
static op_hdr *arena_push(lmk_store *s, uint32_t type, size_t klen, size_t vlen)
{
    size_t need = sizeof(op_hdr) + klen + vlen;
    need = (need + 7) & ~(size_t)7;
    if (s->arena_cap - s->arena_len < need) {
        size_t ncap = s->arena_cap ? s->arena_cap : 4096;
        while (ncap - s->arena_len < need) {
            if (ncap > SIZE_MAX / 2)
                return NULL;
            ncap *= 2;
        }
        unsigned char *na = realloc(s->arena, ncap);
        if (!na)
            return NULL;
        s->arena = na;
        s->arena_cap = ncap;
    }
    op_hdr *h = (op_hdr *)(void *)(s->arena + s->arena_len);
    h->type = type;
    h->klen = (uint32_t)klen;
    h->vlen = vlen;
    s->arena_len += need;
    s->n_ops++;
    return h;
}

static int buffer_put(lmk_store *s, const unsigned char *kb, size_t klen, const void *val,
                      size_t len)
{
    op_hdr *h = arena_push(s, OP_PUT, klen, len + CRC_LEN);
    if (!h) {
        char ks[96];
        set_msg(s, "put %s: out of memory buffering %zu bytes",
                key_str(ks, sizeof ks, kb, klen), len);
        return ENOMEM;
    }
    unsigned char *p = (unsigned char *)(h + 1);
    memcpy(p, kb, klen);
    if (len)
        memcpy(p + klen, val, len);
    uint32_t crc = value_crc(kb, klen, p + klen, len);
    unsigned char *c = p + klen + len;
    c[0] = (unsigned char)crc;
    c[1] = (unsigned char)(crc >> 8);
    c[2] = (unsigned char)(crc >> 16);
    c[3] = (unsigned char)(crc >> 24);
    return LMK_OK;
}

LMK_API int lmk_store_put(lmk_store *s, const lmk_key *key, const void *val, size_t len)
{
    if (!s)
        return LMK_EINVAL;
    int rc = writable(s, "put");
    if (rc)
        return rc;
    if (!key || !kind_ok(key->kind) || (!val && len)) {
        set_msg(s, "put: invalid key kind or NULL value");
        return LMK_EINVAL;
    }
    if (len > MAX_VALUE_LEN) {
        set_msg(s, "put: value of %zu bytes exceeds the %zu-byte limit", len, MAX_VALUE_LEN);
        return LMK_EINVAL;
    }
    unsigned char kb[KEY_LEN];
    key_encode(kb, key);
    return buffer_put(s, kb, KEY_LEN, val, len);
}

static int meta_key(lmk_store *s, const char *name, unsigned char kb[1 + META_NAME_MAX],
                    size_t *klen)
{
    size_t n = name ? strnlen(name, META_NAME_MAX + 1) : 0;
    if (n < 1 || n > META_NAME_MAX) {
        set_msg(s, "meta record name must be 1..%d bytes", META_NAME_MAX);
        return LMK_EINVAL;
    }
    kb[0] = KIND_META;
    memcpy(kb + 1, name, n);
    *klen = 1 + n;
    return LMK_OK;
}

LMK_API int lmk_store_put_meta(lmk_store *s, const char *name, const void *val, size_t len)
{
    if (!s)
        return LMK_EINVAL;
    int rc = writable(s, "put_meta");
    if (rc)
        return rc;
    unsigned char kb[1 + META_NAME_MAX];
    size_t klen;
    if ((rc = meta_key(s, name, kb, &klen)))
        return rc;
    if ((!val && len) || len > MAX_VALUE_LEN) {
        set_msg(s, "put_meta: NULL value or value too large");
        return LMK_EINVAL;
    }
    return buffer_put(s, kb, klen, val, len);
}

LMK_API int lmk_store_del_range(lmk_store *s, const lmk_key *from, const lmk_key *to)
{
    if (!s)
        return LMK_EINVAL;
    int rc = writable(s, "del_range");
    if (rc)
        return rc;
    if (!from || !to || !kind_ok(from->kind) || !kind_ok(to->kind)) {
        set_msg(s, "del_range: invalid key kind");
        return LMK_EINVAL;
    }
    unsigned char a[KEY_LEN], b[KEY_LEN];
    key_encode(a, from);
    key_encode(b, to);
    if (memcmp(a, b, KEY_LEN) > 0) {
        char s1[96], s2[96];
        set_msg(s, "del_range: from (%s) is after to (%s)", key_str(s1, sizeof s1, a, KEY_LEN),
                key_str(s2, sizeof s2, b, KEY_LEN));
        return LMK_EINVAL;
    }
    op_hdr *h = arena_push(s, OP_DEL_RANGE, KEY_LEN, KEY_LEN);
    if (!h) {
        set_msg(s, "del_range: out of memory");
        return ENOMEM;
    }
    unsigned char *p = (unsigned char *)(h + 1);
    memcpy(p, a, KEY_LEN);
    memcpy(p + KEY_LEN, b, KEY_LEN);
    return LMK_OK;
}

/* Deletes every key in [from, to] through a cursor of txn. Returns an LMDB code. */
static int apply_del_range(lmk_store *s, MDB_txn *txn, const unsigned char *from,
                           const unsigned char *to)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, s->dbi, &cur);
    if (mrc)
        return mrc;
    MDB_val k = {KEY_LEN, (void *)from}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == MDB_SUCCESS && key_cmp(k.mv_data, k.mv_size, to, KEY_LEN) <= 0) {
        mrc = mdb_cursor_del(cur, 0);
        if (mrc)
            break;
        /* After a delete the cursor already stands on the successor; MDB_NEXT reports it
         * without moving (LMDB's C_DEL flag). */
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? MDB_SUCCESS : mrc;
}

/* One attempt: a write txn applying every buffered op, committed. Returns an LMDB code;
 * on failure nothing is applied and s->msg says what failed. */
static int apply_batch(lmk_store *s)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (mrc) {
        set_msg(s, "mdb_txn_begin (write): %s", mdb_strerror(mrc));
        return mrc;
    }
    size_t off = 0, i = 0;
    while (off < s->arena_len) {
        const op_hdr *h = (const op_hdr *)(const void *)(s->arena + off);
        const unsigned char *p = (const unsigned char *)(h + 1);
        char ks[96];
        if (h->type == OP_PUT) {
            MDB_val k = {h->klen, (void *)p};
            MDB_val v = {(size_t)h->vlen, (void *)(p + h->klen)};
            mrc = mdb_put(txn, s->dbi, &k, &v, 0);
            if (mrc) {
                set_msg(s, "mdb_put %s #%zu/%zu (%llu bytes): %s",
                        key_str(ks, sizeof ks, p, h->klen), i + 1, s->n_ops,
                        (unsigned long long)h->vlen - CRC_LEN, mdb_strerror(mrc));
                goto abort;
            }
        } else {
            mrc = apply_del_range(s, txn, p, p + KEY_LEN);
            if (mrc) {
                set_msg(s, "delete range from %s, op #%zu/%zu: %s",
                        key_str(ks, sizeof ks, p, KEY_LEN), i + 1, s->n_ops,
                        mdb_strerror(mrc));
                goto abort;
            }
        }
        off += (sizeof(op_hdr) + h->klen + h->vlen + 7) & ~(size_t)7;
        i++;
    }
    mrc = mdb_txn_commit(txn); /* frees txn, success or not */
    if (mrc)
        set_msg(s, "mdb_txn_commit (%zu ops, %zu bytes): %s", s->n_ops, s->arena_len,
                mdb_strerror(mrc));
    return mrc;
abort:
    mdb_txn_abort(txn);
    return mrc;
}

static int read_renew(lmk_store *s);

/* Grows the map for a replay. LMDB requires no live transaction of this process while it
 * remaps: the write txn is already aborted; our read snapshot is released and, for an
 * explicit read_begin, re-taken afterwards (it then shows the latest commit). */
static int grow_map(lmk_store *s)
{
    char why[MSG_CAP];
    memcpy(why, s->msg, sizeof why);
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    uint64_t cur = info.me_mapsize;
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * s->psize;
    if (cur >= MAX_MAP_SIZE) {
        set_msg(s, "%s; the map is at its %llu-byte limit", why, (unsigned long long)cur);
        return LMK_EMAPFULL;
    }
    if (s->rd_scan) {
        set_msg(s, "%s; the map cannot grow while a scan is running", why);
        return LMK_EMAPFULL;
    }
    uint64_t want = cur * 2;
    uint64_t need = used + 2 * (uint64_t)s->arena_len + (1u << 20);
    if (want < need)
        want = need;
    want = (want + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    if (want > MAX_MAP_SIZE)
        want = MAX_MAP_SIZE;
    int had_snapshot = s->rd_live;
    if (had_snapshot) {
        mdb_txn_reset(s->rtxn);
        s->rd_live = 0;
    }
    int mrc = mdb_env_set_mapsize(s->env, (size_t)want);
    if (mrc) {
        /* LMDB has unmapped the old map and has none now: re-open at the old size. */
        set_msg(s, "%s; growing the map from %llu to %llu bytes failed: %s", why,
                (unsigned long long)cur, (unsigned long long)want, mdb_strerror(mrc));
        s->map_size = cur;
        if (env_reopen(s) == LMK_OK && had_snapshot && read_renew(s) != LMK_OK)
            s->rd_explicit = 0;
        return LMK_EMAPFULL;
    }
    s->map_size = want;
    if (had_snapshot) {
        int rc = read_renew(s);
        if (rc) {
            s->rd_explicit = 0;
            return rc;
        }
    }
    return LMK_OK;
}

LMK_API int lmk_store_batch_commit(lmk_store *s)
{
    if (!s)
        return LMK_EINVAL;
    int rc = writable(s, "batch_commit");
    if (rc)
        return rc;
    int reopened = 0;
    while (s->n_ops) {
        int mrc = apply_batch(s);
        if (mrc == MDB_SUCCESS)
            break;
        if (mrc == MDB_MAP_FULL) {
            rc = grow_map(s);
            if (rc)
                return rc;
            continue;
        }
        if (mrc == MDB_PANIC && !reopened && !s->rd_scan) {
            /* A failed meta-page write marks the environment unusable; the committed
             * state on disk is intact, so a fresh environment can carry on. */
            reopened = 1;
            if ((rc = env_reopen(s)))
                return rc;
            continue;
        }
        return xlate(mrc);
    }
    s->batch_open = 0;
    s->arena_len = 0;
    s->n_ops = 0;
    if (s->arena_cap > ARENA_KEEP) {
        free(s->arena);
        s->arena = NULL;
        s->arena_cap = 0;
    }
    return LMK_OK;
}

LMK_API void lmk_store_batch_abort(lmk_store *s)
{
    if (!s)
        return;
    s->batch_open = 0;
    s->arena_len = 0;
    s->n_ops = 0;
}

LMK_API int lmk_store_sync(lmk_store *s)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (s->read_only)
        return LMK_OK; /* nothing of ours to flush (LMDB refuses the call with EACCES) */
    int mrc = mdb_env_sync(s->env, 1);
    if (mrc) {
        set_msg(s, "mdb_env_sync %s: %s", s->dir, mdb_strerror(mrc));
        return xlate(mrc);
    }
    return LMK_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Reads                                                                                 */

/* Takes a fresh snapshot in s->rtxn (creating the txn on first use). */
static int read_renew(lmk_store *s)
{
    for (int attempt = 0;; attempt++) {
        int mrc = s->rtxn ? mdb_txn_renew(s->rtxn)
                          : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
        if (mrc == MDB_SUCCESS) {
            s->rd_live = 1;
            return LMK_OK;
        }
        if (mrc == MDB_MAP_RESIZED && attempt < 3) {
            /* Another process (the writer) grew the map past ours: adopt its size. A
             * failed renew leaves our txn reset and a failed begin leaves none, so
             * nothing of this process is live, as LMDB requires for a remap. */
            int m2 = mdb_env_set_mapsize(s->env, 0);
            if (m2 == MDB_SUCCESS)
                continue;
            set_msg(s, "adopting the writer's map size failed: %s", mdb_strerror(m2));
            s->map_size = 0; /* re-open at the size recorded in the meta page */
            int r2 = env_reopen(s);
            if (r2)
                return r2;
            continue;
        }
        if (mrc == MDB_PANIC && attempt < 3) {
            /* An earlier failed commit (meta page write error) left the environment
             * unusable; nothing of ours is live, so start over on a fresh one. */
            set_msg(s, "starting a read transaction: %s", mdb_strerror(mrc));
            int r2 = env_reopen(s);
            if (r2)
                return r2;
            continue;
        }
        set_msg(s, "starting a read transaction: %s", mdb_strerror(mrc));
        return xlate(mrc);
    }
}

static int read_acquire(lmk_store *s)
{
    if (s->rd_live)
        return LMK_OK;
    return read_renew(s);
}

static void read_release(lmk_store *s)
{
    if (s->rd_live && !s->rd_explicit && !s->rd_scan) {
        mdb_txn_reset(s->rtxn);
        s->rd_live = 0;
    }
}

LMK_API int lmk_store_read_begin(lmk_store *s)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (s->rd_explicit) {
        set_msg(s, "read_begin: a read is already open");
        return LMK_ESTATE;
    }
    rc = read_acquire(s);
    if (rc)
        return rc;
    s->rd_explicit = 1;
    return LMK_OK;
}

LMK_API void lmk_store_read_end(lmk_store *s)
{
    if (!s || !s->rd_explicit)
        return;
    s->rd_explicit = 0;
    read_release(s);
}

/* A cheap clock for telling a page-cache hit from a disk read (a few microseconds versus
 * a hundred or more): the TSC on x86 (~2-4 GHz), nanoseconds elsewhere. */
#if defined(__x86_64__) || defined(__i386__)
static inline uint64_t ticks_now(void) { return __rdtsc(); }
#define COLD_TICKS 60000u
#else
static inline uint64_t ticks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#define COLD_TICKS 25000u
#endif

/* Looks up kb in the current snapshot and copies the verified payload to dst. */
static int get_common(lmk_store *s, const unsigned char *kb, size_t klen, void *dst, size_t cap,
                      size_t *len)
{
    int rc = read_acquire(s);
    if (rc)
        return rc;
    MDB_val k = {klen, (void *)kb}, v;
    char ks[96];
    uint64_t t0 = ticks_now();
    int mrc = mdb_get(s->rtxn, s->dbi, &k, &v);
    if (mrc) {
        if (mrc == MDB_NOTFOUND)
            set_msg(s, "%s: not found", key_str(ks, sizeof ks, kb, klen));
        else
            set_msg(s, "mdb_get %s: %s", key_str(ks, sizeof ks, kb, klen), mdb_strerror(mrc));
        rc = xlate(mrc);
        goto out;
    }
    if (v.mv_size < CRC_LEN) {
        set_msg(s, "%s: stored value of %zu bytes is shorter than its checksum",
                key_str(ks, sizeof ks, kb, klen), v.mv_size);
        rc = LMK_ECORRUPT;
        goto out;
    }
    size_t n = v.mv_size - CRC_LEN;
    if (len)
        *len = n;
    if (n > cap) {
        set_msg(s, "%s: value is %zu bytes, buffer holds %zu", key_str(ks, sizeof ks, kb, klen),
                n, cap);
        rc = LMK_EINVAL;
        goto out;
    }
    const unsigned char *src = v.mv_data;
    if (v.mv_size > s->psize && ticks_now() - t0 > COLD_TICKS) {
        /* mdb_get was slow: it waited for the disk, so the rest of this multi-page value
         * is probably not in memory either. With readahead off (MDB_NORDAHEAD) every
         * page would be its own synchronous read; ask for all of them at once. */
        uintptr_t a = (uintptr_t)src & ~(uintptr_t)(s->psize - 1);
        madvise((void *)a, (uintptr_t)src + v.mv_size - a, MADV_WILLNEED);
    }
    if (s->verify) {
        uint32_t want = rd32le(src + n);
        uint32_t got = value_crc(kb, klen, src, n);
        if (got != want) {
            set_msg(s, "%s: checksum mismatch (stored 0x%08x, computed 0x%08x over %zu bytes)",
                    key_str(ks, sizeof ks, kb, klen), want, got, n);
            rc = LMK_ECORRUPT;
            goto out;
        }
    }
    if (n)
        memcpy(dst, src, n);
out:
    read_release(s);
    return rc;
}

LMK_API int lmk_store_get(lmk_store *s, const lmk_key *key, void *dst, size_t cap, size_t *len)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (!key || !kind_ok(key->kind) || (!dst && cap)) {
        set_msg(s, "get: invalid key kind or NULL buffer");
        return LMK_EINVAL;
    }
    unsigned char kb[KEY_LEN];
    key_encode(kb, key);
    return get_common(s, kb, KEY_LEN, dst, cap, len);
}

LMK_API int lmk_store_get_meta(lmk_store *s, const char *name, void *dst, size_t cap,
                               size_t *len)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    unsigned char kb[1 + META_NAME_MAX];
    size_t klen;
    if ((rc = meta_key(s, name, kb, &klen)))
        return rc;
    if (!dst && cap) {
        set_msg(s, "get_meta: NULL buffer");
        return LMK_EINVAL;
    }
    return get_common(s, kb, klen, dst, cap, len);
}

LMK_API int lmk_store_scan(lmk_store *s, uint8_t kind, int layer, int tolerant,
                           lmk_store_scan_fn fn, void *ud)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (!fn || !kind_ok(kind) || layer > 0xffff) {
        set_msg(s, "scan: invalid kind, layer or callback");
        return LMK_EINVAL;
    }
    if (s->rd_scan) {
        set_msg(s, "scan: a scan is already running on this handle");
        return LMK_ESTATE;
    }
    rc = read_acquire(s);
    if (rc)
        return rc;
    s->rd_scan = 1;
    int mrc = s->rcur ? mdb_cursor_renew(s->rtxn, s->rcur)
                      : mdb_cursor_open(s->rtxn, s->dbi, &s->rcur);
    if (mrc) {
        set_msg(s, "scan: opening a cursor: %s", mdb_strerror(mrc));
        rc = xlate(mrc);
        goto out;
    }
    unsigned char prefix[3] = {kind, 0, 0};
    size_t plen = 1;
    if (layer >= 0) {
        prefix[1] = (unsigned char)(layer >> 8);
        prefix[2] = (unsigned char)layer;
        plen = 3;
    }
    MDB_val k = {plen, prefix}, v;
    mrc = mdb_cursor_get(s->rcur, &k, &v, MDB_SET_RANGE);
    while (mrc == MDB_SUCCESS) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        char ks[96];
        if (k.mv_size != KEY_LEN) {
            set_msg(s, "scan: %s under kind %u (keys are %d bytes): damaged",
                    key_str(ks, sizeof ks, k.mv_data, k.mv_size), (unsigned)kind, KEY_LEN);
            rc = LMK_ECORRUPT;
            goto out;
        }
        lmk_key key;
        key_decode(k.mv_data, &key);
        const unsigned char *val = v.mv_data;
        size_t n = v.mv_size >= CRC_LEN ? v.mv_size - CRC_LEN : 0;
        int bad = v.mv_size < CRC_LEN;
        if (!bad && s->verify)
            bad = value_crc(k.mv_data, KEY_LEN, val, n) != rd32le(val + n);
        if (bad) {
            set_msg(s, "scan: %s: checksum mismatch or short value (%zu bytes)",
                    key_str(ks, sizeof ks, k.mv_data, KEY_LEN), v.mv_size);
            if (!tolerant) {
                rc = LMK_ECORRUPT;
                goto out;
            }
            val = NULL;
            n = 0;
        }
        rc = fn(ud, &key, val, n);
        if (rc)
            goto out;
        mrc = mdb_cursor_get(s->rcur, &k, &v, MDB_NEXT);
    }
    if (mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND) {
        set_msg(s, "scan kind %u layer %d: %s", (unsigned)kind, layer, mdb_strerror(mrc));
        rc = xlate(mrc);
    }
out:
    s->rd_scan = 0;
    read_release(s);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Whole-store operations                                                                */

/* 0 when `path` is an empty directory; LMK_EINVAL (non-empty / not a directory) or errno. */
static int dir_is_empty(lmk_store *s, const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        int e = errno;
        if (e == ENOTDIR) {
            set_msg(s, "copy: %s exists and is not a directory", path);
            return LMK_EINVAL;
        }
        set_msg(s, "copy: opendir %s: %s", path, strerror(e));
        return e;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            set_msg(s, "copy: destination %s is not empty", path);
            rc = LMK_EINVAL;
            break;
        }
    }
    closedir(d);
    return rc;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = fsync(fd) ? errno : 0;
    close(fd);
    return rc;
}

LMK_API int lmk_store_copy(lmk_store *s, const char *dst_dir)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (!dst_dir || !*dst_dir || strlen(dst_dir) >= PATH_MAX - 32) {
        set_msg(s, "copy: invalid destination");
        return LMK_EINVAL;
    }
    int created = 0;
    if (mkdir(dst_dir, 0755) == 0) {
        created = 1;
    } else if (errno == EEXIST) {
        if ((rc = dir_is_empty(s, dst_dir)))
            return rc;
    } else {
        rc = errno;
        set_msg(s, "copy: cannot create %s: %s", dst_dir, strerror(rc));
        return rc;
    }
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/data.mdb", dst_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = errno;
        set_msg(s, "copy: create %s: %s", path, strerror(rc));
        goto fail;
    }
    /* Our own descriptor (rather than mdb_env_copy2) so the copy can be fsynced before
     * it is closed. */
    int mrc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    if (mrc) {
        set_msg(s, "mdb_env_copyfd2 to %s: %s", path, mdb_strerror(mrc));
        rc = xlate(mrc);
        close(fd);
        goto fail_file;
    }
    if (fsync(fd) != 0) {
        rc = errno;
        set_msg(s, "copy: fsync %s: %s", path, strerror(rc));
        close(fd);
        goto fail_file;
    }
    if (close(fd) != 0) {
        rc = errno;
        set_msg(s, "copy: close %s: %s", path, strerror(rc));
        goto fail_file;
    }
    if ((rc = fsync_path(dst_dir, O_RDONLY | O_DIRECTORY))) {
        set_msg(s, "copy: fsync directory %s: %s", dst_dir, strerror(rc));
        goto fail_file;
    }
    if (created) {
        /* The new directory's entry lives in its parent. */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", dst_dir);
        char *slash = strrchr(parent, '/');
        while (slash && slash > parent && slash[1] == '\0') { /* trailing slashes */
            *slash = '\0';
            slash = strrchr(parent, '/');
        }
        const char *pdir = ".";
        if (slash == parent)
            pdir = "/";
        else if (slash) {
            *slash = '\0';
            pdir = parent;
        }
        if ((rc = fsync_path(pdir, O_RDONLY | O_DIRECTORY))) {
            set_msg(s, "copy: fsync directory %s: %s", pdir, strerror(rc));
            goto fail_file;
        }
    }
    return LMK_OK;
fail_file:
    unlink(path);
fail:
    if (created)
        rmdir(dst_dir);
    return rc;
}

LMK_API int lmk_store_disk_bytes(lmk_store *s, uint64_t *bytes)
{
    if (!s || !bytes)
        return LMK_EINVAL;
    static const char *const files[] = {"data.mdb", "lock.mdb", "landmark.lock"};
    uint64_t total = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
        struct stat st;
        if (stat(path, &st) != 0) {
            if (errno == ENOENT)
                continue;
            int e = errno;
            set_msg(s, "stat %s: %s", path, strerror(e));
            return e;
        }
        total += (uint64_t)st.st_blocks * 512u;
    }
    *bytes = total;
    return LMK_OK;
}
