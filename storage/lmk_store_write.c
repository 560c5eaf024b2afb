/* landmark — store writes: batches buffered in the handle's arena, replayed in one write
 * transaction at commit, with the map grown and the batch replayed on MDB_MAP_FULL. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lmk_store_priv.h"

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

LMK_INTERNAL int lmk_store_meta_key(lmk_store *s, const char *name,
                                    unsigned char kb[1 + META_NAME_MAX], size_t *klen)
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
    if ((rc = lmk_store_meta_key(s, name, kb, &klen)))
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

/* 1 when the data file's filesystem has less room than the pending batch: LMDB turns the
 * short write of a full disk into EIO, which this tells apart from a failing device. */
static int disk_full(lmk_store *s)
{
    int fd = -1;
    struct statvfs sv;
    if (mdb_env_get_fd(s->env, &fd) || fd < 0 || fstatvfs(fd, &sv) != 0)
        return 0;
    return (uint64_t)sv.f_bavail * sv.f_frsize < (uint64_t)s->arena_len + 16u * s->psize;
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
    if (mrc == EIO && disk_full(s))
        mrc = ENOSPC; /* LMDB reports a short write as EIO ("filesystem full?") */
    if (mrc)
        set_msg(s, "mdb_txn_commit (%zu ops, %zu bytes): %s", s->n_ops, s->arena_len,
                mdb_strerror(mrc));
    return mrc;
abort:
    mdb_txn_abort(txn);
    return mrc;
}


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
        if (lmk_store_env_reopen(s) == LMK_OK && had_snapshot && lmk_store_read_renew(s) != LMK_OK)
            s->rd_explicit = 0;
        return LMK_EMAPFULL;
    }
    s->map_size = want;
    if (had_snapshot) {
        int rc = lmk_store_read_renew(s);
        if (rc) {
            s->rd_explicit = 0;
            return rc;
        }
    }
    return LMK_OK;
}

/* LMDB counts pages allocated and freed again inside one commit ("loose" pages: a leaf
 * emptied by the commit's own deletes, a record put and deleted in the same batch) in the
 * meta page's last page number but never writes them, so the file can end before that page.
 * The open-time check (lmk_store_check.c) would read such a file as truncated: extend it
 * over them (sparse; fsynced under LMK_SYNC_FULL). */
static void cover_last_page(lmk_store *s)
{
    MDB_envinfo ei;
    int fd = -1;
    struct stat st;
    if (mdb_env_info(s->env, &ei) || mdb_env_get_fd(s->env, &fd) || fstat(fd, &st))
        return;
    off_t need = (off_t)(ei.me_last_pgno + 1) * (off_t)s->psize;
    if (st.st_size < need && ftruncate(fd, need) == 0 && s->sync == LMK_SYNC_FULL)
        (void)fdatasync(fd);
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
            if ((rc = lmk_store_env_reopen(s)))
                return rc;
            continue;
        }
        return xlate(mrc);
    }
    cover_last_page(s);
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


LMK_API size_t lmk_store_batch_mark(const lmk_store *s)
{
    return s && s->batch_open ? s->arena_len : 0;
}

LMK_API int lmk_store_batch_rollback(lmk_store *s, size_t mark)
{
    if (!s)
        return LMK_EINVAL;
    int rc = writable(s, "batch_rollback");
    if (rc)
        return rc;
    /* mark must fall on an operation boundary at or before the end */
    size_t off = 0, n = 0;
    while (off < mark && off < s->arena_len) {
        const op_hdr *h = (const op_hdr *)(const void *)(s->arena + off);
        off += (sizeof(op_hdr) + h->klen + h->vlen + 7) & ~(size_t)7;
        n++;
    }
    if (off != mark) {
        set_msg(s, "batch_rollback: %zu is not a mark of the pending batch", mark);
        return LMK_EINVAL;
    }
    s->arena_len = mark;
    s->n_ops = n;
    return LMK_OK;
}
