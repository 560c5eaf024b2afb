/* landmark — durable key/value store of a session (LMDB underneath).
 *
 * The only module that includes lmdb.h. One lmk_store is one LMDB environment in a session
 * directory (files data.mdb, lock.mdb) plus our own lock file (landmark.lock).
 *
 * Every stored value carries a checksum written by the store; lmk_store_get() and
 * lmk_store_scan() verify it when opts.verify_reads is set and report LMK_ECORRUPT on a
 * mismatch. Values are copied out to caller memory (LMDB's own pointers may be 2-byte
 * aligned and die with the transaction), except in lmk_store_scan() callbacks, which get a
 * borrowed, possibly unaligned view valid only during the callback.
 *
 * Writes are batched: lmk_store_batch_begin(), any number of put/del calls (buffered in
 * memory), lmk_store_batch_commit() applies the batch in one LMDB write transaction. If the
 * map is full the store grows the map and replays the batch, so a commit either applies the
 * whole batch or none of it (and the batch stays pending for a retry or abort).
 *
 * Threads: a handle is used by one thread at a time.
 */
#ifndef LMK_STORE_H
#define LMK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_store lmk_store;

/* What a committed batch survives. Every mode survives a process kill (LMDB's pages are in
 * the OS page cache once the commit returns). */
typedef enum {
    LMK_SYNC_FULL = 0,   /* fsync data and meta on every commit: survives power loss */
    LMK_SYNC_NOMETA = 1, /* fsync data, not meta: power loss may undo the last commit only */
    LMK_SYNC_NONE = 2,   /* no fsync until lmk_store_sync()/close: power loss may lose or
                            damage everything since the last sync */
} lmk_sync_mode;

typedef struct lmk_store_opts {
    int read_only;        /* 1: open read-only (no lock taken, may run beside a writer) */
    int create;           /* 1: create the directory and environment if missing (default 0;
                             LMK_EINVAL together with read_only) */
    lmk_sync_mode sync;   /* default LMK_SYNC_NOMETA */
    uint64_t map_size;    /* initial map size in bytes; 0 = default (64 GiB, sparse) */
    int verify_reads;     /* 1 (default): check checksums on get/scan */
} lmk_store_opts;

lmk_store_opts lmk_store_opts_default(void);

/* Key kinds. Keys sort by (kind, layer, head, index), so a scan of one kind and layer walks
 * blocks in order. */
typedef enum {
    LMK_KEY_BLOCK = 2,    /* (layer, kv head, block id): K then V of one block, storage dtype */
    LMK_KEY_LANDMARK = 3, /* (layer, kv head, block id): landmark vector, f32 */
    LMK_KEY_TAIL = 4,     /* (layer, 0, token position): K then V of one unsealed token,
                             all KV heads, storage dtype */
    LMK_KEY_USER = 5,     /* (layer, head, index): free for the engine's own records */
} lmk_key_kind;

typedef struct lmk_key {
    uint8_t kind;   /* lmk_key_kind */
    uint16_t layer;
    uint16_t head;
    uint64_t index;
} lmk_key;

/* Open (or with opts->create, create) the store in directory `dir`.
 * A writer takes a non-blocking lock: a second writer, in this or another process, gets
 * LMK_EBUSY at once. The same directory cannot be opened twice in one process (LMK_EBUSY).
 * Stale LMDB reader slots are cleared. A file that is not an LMDB environment, or of
 * another LMDB version, gives LMK_ECORRUPT / LMK_EVERSION.
 * On failure *out is NULL; when errmsg/cap are given a message is copied there.
 * Returns LMK_OK, LMK_EINVAL, LMK_ENOTFOUND (no store and !create), LMK_EBUSY,
 * LMK_ECORRUPT, LMK_EVERSION, LMK_ESTORE or an errno. */
int lmk_store_open(const char *dir, const lmk_store_opts *opts, lmk_store **out,
                   char *errmsg, size_t errmsg_cap);

/* Aborts any pending batch, ends any read, closes the environment, releases the lock.
 * Accepts NULL. In LMK_SYNC_NONE mode it syncs first (mdb_env_sync forced). */
void lmk_store_close(lmk_store *s);

/* Message of the last failure on this handle; never NULL; valid until the next call. */
const char *lmk_store_errmsg(const lmk_store *s);

/* ---- writes ---- */

/* Start a batch. LMK_ESTATE if one is pending, LMK_EREADONLY on a read-only store. */
int lmk_store_batch_begin(lmk_store *s);
/* Buffer a put of `len` bytes (copied now). Replaces any value under the key. */
int lmk_store_put(lmk_store *s, const lmk_key *key, const void *val, size_t len);
/* Buffer a put of a named metadata record (name: 1..64 bytes, NUL-terminated). */
int lmk_store_put_meta(lmk_store *s, const char *name, const void *val, size_t len);
/* Buffer the deletion of every key k with from <= k <= to in key order (a missing key is
 * not an error). Used by truncation. */
int lmk_store_del_range(lmk_store *s, const lmk_key *from, const lmk_key *to);
/* Apply the batch atomically. On LMK_OK the batch is gone. On failure nothing of the batch
 * is applied and it stays pending (retry commit, or abort). ENOSPC and LMK_EMAPFULL are
 * reported as such; the store stays usable. */
int lmk_store_batch_commit(lmk_store *s);
/* Drop the pending batch (no-op when none). */
void lmk_store_batch_abort(lmk_store *s);
/* Savepoints inside a pending batch: lmk_store_batch_mark() returns the batch's current
 * length (0 when none is pending); lmk_store_batch_rollback() drops every operation buffered
 * after that mark, keeping the batch pending. Returns LMK_OK, LMK_ESTATE (no batch),
 * LMK_EINVAL (not a mark of this batch). */
size_t lmk_store_batch_mark(const lmk_store *s);
int lmk_store_batch_rollback(lmk_store *s, size_t mark);

/* Flush everything committed to stable storage (mdb_env_sync forced). */
int lmk_store_sync(lmk_store *s);

/* ---- reads (see committed data only; a pending batch is invisible) ---- */

/* Open one read transaction used by the following gets until lmk_store_read_end(), so a
 * group of gets sees one snapshot. Without it every get opens its own. Allocation-free
 * after the first call (the transaction is reset/renewed). */
int lmk_store_read_begin(lmk_store *s);
void lmk_store_read_end(lmk_store *s);

/* Copy the value under `key` into dst (capacity cap bytes); *len gets its length.
 * LMK_ENOTFOUND when absent, LMK_EINVAL when cap is too small (*len still set),
 * LMK_ECORRUPT on a checksum mismatch. */
int lmk_store_get(lmk_store *s, const lmk_key *key, void *dst, size_t cap, size_t *len);
int lmk_store_get_meta(lmk_store *s, const char *name, void *dst, size_t cap, size_t *len);
/* The value under `key` without a copy: *val points into the store's map (possibly
 * unaligned, read-only) and stays valid until lmk_store_read_end(); *len gets its length.
 * The checksum is verified over the mapped bytes as lmk_store_get() does. Only inside
 * lmk_store_read_begin()/lmk_store_read_end(): LMK_ESTATE otherwise. LMK_ENOTFOUND when
 * absent, LMK_ECORRUPT on a checksum mismatch. */
int lmk_store_get_view(lmk_store *s, const lmk_key *key, const void **val, size_t *len);

/* Called by lmk_store_scan() for each value. `val` is borrowed: possibly unaligned, valid
 * only during the call. Return 0 to go on, anything else to stop the scan (returned). */
typedef int (*lmk_store_scan_fn)(void *ud, const lmk_key *key, const void *val, size_t len);

/* Visit, in key order, every value of `kind` (and of `layer` when layer >= 0) in one read
 * transaction. A checksum failure stops the scan with LMK_ECORRUPT unless `tolerant` is 1,
 * in which case the callback is invoked with val == NULL and len == 0 for that key and
 * the scan goes on (used by verify). */
int lmk_store_scan(lmk_store *s, uint8_t kind, int layer, int tolerant,
                   lmk_store_scan_fn fn, void *ud);

/* ---- whole-store operations ---- */

/* Write a compacted copy of the committed data to a new directory `dst_dir` (created; must
 * not exist or be empty). The copy is fsynced. */
int lmk_store_copy(lmk_store *s, const char *dst_dir);

/* Bytes the store's files take on disk (allocated blocks, not the sparse map size). */
int lmk_store_disk_bytes(lmk_store *s, uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
