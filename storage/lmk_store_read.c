/* landmark — store reads: the handle's read snapshot (one read transaction, reset and
 * renewed), get with CRC verification, and ordered scans. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h> /* __rdtsc */
#endif

#include "lmk_le.h"
#include "lmk_store_priv.h"

/* ------------------------------------------------------------------------------------ */
/* Reads                                                                                 */

/* Takes a fresh snapshot in s->rtxn (creating the txn on first use). */
LMK_INTERNAL int lmk_store_read_renew(lmk_store *s)
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
            int r2 = lmk_store_env_reopen(s);
            if (r2)
                return r2;
            continue;
        }
        if (mrc == MDB_PANIC && attempt < 3) {
            /* An earlier failed commit (meta page write error) left the environment
             * unusable; nothing of ours is live, so start over on a fresh one. */
            set_msg(s, "starting a read transaction: %s", mdb_strerror(mrc));
            int r2 = lmk_store_env_reopen(s);
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
    return lmk_store_read_renew(s);
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

/* Looks up kb in the snapshot the caller acquired; *src and *n get the verified payload, a
 * borrowed pointer into the map valid while that snapshot is held. */
static int lookup_verified(lmk_store *s, const unsigned char *kb, size_t klen,
                           const unsigned char **src_out, size_t *n_out)
{
    MDB_val k = {klen, (void *)kb}, v;
    char ks[96];
    uint64_t t0 = ticks_now();
    int mrc = mdb_get(s->rtxn, s->dbi, &k, &v);
    if (mrc) {
        if (mrc == MDB_NOTFOUND)
            set_msg(s, "%s: not found", key_str(ks, sizeof ks, kb, klen));
        else
            set_msg(s, "mdb_get %s: %s", key_str(ks, sizeof ks, kb, klen), mdb_strerror(mrc));
        return xlate(mrc);
    }
    if (v.mv_size < CRC_LEN) {
        set_msg(s, "%s: stored value of %zu bytes is shorter than its checksum",
                key_str(ks, sizeof ks, kb, klen), v.mv_size);
        return LMK_ECORRUPT;
    }
    size_t n = v.mv_size - CRC_LEN;
    const unsigned char *src = v.mv_data;
    if (v.mv_size > s->psize && ticks_now() - t0 > COLD_TICKS) {
        /* mdb_get was slow: it waited for the disk, so the rest of this multi-page value
         * is probably not in memory either. With readahead off (MDB_NORDAHEAD) every
         * page would be its own synchronous read; ask for all of them at once. */
        uintptr_t a = (uintptr_t)src & ~(uintptr_t)(s->psize - 1);
        madvise((void *)a, (uintptr_t)src + v.mv_size - a, MADV_WILLNEED);
    }
    if (s->verify) {
        uint32_t want = lmk_get_u32le(src + n);
        uint32_t got = value_crc(kb, klen, src, n);
        if (got != want) {
            set_msg(s, "%s: checksum mismatch (stored 0x%08x, computed 0x%08x over %zu bytes)",
                    key_str(ks, sizeof ks, kb, klen), want, got, n);
            return LMK_ECORRUPT;
        }
    }
    *src_out = src;
    *n_out = n;
    return LMK_OK;
}

/* Looks up kb in the current snapshot and copies the verified payload to dst. */
static int get_common(lmk_store *s, const unsigned char *kb, size_t klen, void *dst, size_t cap,
                      size_t *len)
{
    int rc = read_acquire(s);
    if (rc)
        return rc;
    const unsigned char *src = NULL;
    size_t n = 0;
    if ((rc = lookup_verified(s, kb, klen, &src, &n)))
        goto out;
    if (len)
        *len = n;
    if (n > cap) {
        char ks[96];
        set_msg(s, "%s: value is %zu bytes, buffer holds %zu", key_str(ks, sizeof ks, kb, klen),
                n, cap);
        rc = LMK_EINVAL;
        goto out;
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

LMK_API int lmk_store_get_view(lmk_store *s, const lmk_key *key, const void **val, size_t *len)
{
    if (!s)
        return LMK_EINVAL;
    int rc = check_usable(s);
    if (rc)
        return rc;
    if (!key || !kind_ok(key->kind) || !val || !len) {
        set_msg(s, "get_view: invalid key kind or NULL output");
        return LMK_EINVAL;
    }
    if (!s->rd_explicit || !s->rd_live) {
        set_msg(s, "get_view: no read open (lmk_store_read_begin)");
        return LMK_ESTATE;
    }
    unsigned char kb[KEY_LEN];
    key_encode(kb, key);
    const unsigned char *src = NULL;
    size_t n = 0;
    if ((rc = lookup_verified(s, kb, KEY_LEN, &src, &n)))
        return rc;
    *val = src;
    *len = n;
    return LMK_OK;
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
    if ((rc = lmk_store_meta_key(s, name, kb, &klen)))
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
            bad = value_crc(k.mv_data, KEY_LEN, val, n) != lmk_get_u32le(val + n);
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

