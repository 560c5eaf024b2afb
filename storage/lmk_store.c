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
 *
 * Files: this one opens and closes the environment and holds the whole-store operations;
 * lmk_store_write.c the batches and commit, lmk_store_read.c the reads, lmk_store_check.c
 * the pre-open check of data.mdb; lmk_store_priv.h the handle they share.
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

#include "lmk_store_internal.h"
#include "lmk_store_priv.h"

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
/* Environment open/close                                                                */

LMK_INTERNAL void lmk_store_read_txn_drop(lmk_store *s)
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
    if (s->nolock)
        flags |= MDB_NOLOCK;
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
LMK_INTERNAL int lmk_store_env_reopen(lmk_store *s)
{
    char saved[MSG_CAP];
    memcpy(saved, s->msg, sizeof saved);
    lmk_store_read_txn_drop(s);
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

/* lmk_store_pread_fn over a file descriptor (ud: the int fd); a short file is damage. */
static int pread_full(void *ud, void *buf, size_t len, uint64_t off)
{
    int fd = *(int *)ud;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return LMK_ECORRUPT;
        got += (size_t)r;
    }
    return 0;
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
        /* Writers allocate pages from the free-page tree, which LMDB trusts. */
        if (!rc && !s->read_only)
            rc = lmk_store_check_free_tree(info, pread_full, &fd, why, sizeof why);
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

/* The options lmk_store_open() refuses before touching the file system. */
static int check_opts(const char *dir, const lmk_store_opts *o, char *errmsg, size_t errmsg_cap)
{
    if (!*dir) {
        copy_out_msg("lmk_store_open: dir and out are required", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if (strlen(dir) >= PATH_MAX - 32) {
        copy_out_msg("lmk_store_open: directory path too long", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if ((unsigned)o->sync > LMK_SYNC_NONE) {
        copy_out_msg("lmk_store_open: unknown sync mode", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    if (o->read_only && o->create) {
        copy_out_msg("lmk_store_open: read_only and create exclude each other", errmsg,
                     errmsg_cap);
        return LMK_EINVAL;
    }
    if (o->map_size > MAX_MAP_SIZE || o->map_size > SIZE_MAX / 2) {
        copy_out_msg("lmk_store_open: map_size too large", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    return LMK_OK;
}

/* Stats the store directory into *st, creating it when `create` allows. */
static int open_dir(lmk_store *s, const char *dir, int create, struct stat *st)
{
    if (stat(dir, st) != 0) {
        int e = errno;
        if (e != ENOENT) {
            set_msg(s, "stat %s: %s", dir, strerror(e));
            return e;
        }
        if (!create) {
            set_msg(s, "%s: no such store directory", dir);
            return LMK_ENOTFOUND;
        }
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            set_msg(s, "cannot create directory %s: %s", dir, strerror(e));
            return e;
        }
        if (stat(dir, st) != 0) {
            int e = errno;
            set_msg(s, "stat %s: %s", dir, strerror(e));
            return e;
        }
    }
    if (!S_ISDIR(st->st_mode)) {
        set_msg(s, "%s is not a directory", dir);
        return ENOTDIR;
    }
    return LMK_OK;
}

/* flock(fd, op | LOCK_NB), retried on EINTR: 0, EWOULDBLOCK or another errno. */
static int flock_nb(int fd, int op)
{
    while (flock(fd, op | LOCK_NB) != 0) {
        if (errno != EINTR)
            return errno == EAGAIN ? EWOULDBLOCK : errno;
    }
    return 0;
}

/* Writers: the exclusive flock on the directory itself, then on landmark.lock (what older
 * builds take). The directory is the lock that counts: an empty, never-changing lock file
 * is exactly what temp cleaners delete, after which a second writer would create a new
 * one and lock that. A directory cannot be removed while it holds the session. */
static int take_writer_lock(lmk_store *s, const char *dir)
{
    s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) {
        int e = errno;
        set_msg(s, "open %s: %s", dir, strerror(e));
        return e;
    }
    int e = flock_nb(s->dir_fd, LOCK_EX);
    if (e == EWOULDBLOCK) {
        set_msg(s, "%s: session is in use by another process", dir);
        return LMK_EBUSY;
    } else if (e) {
        set_msg(s, "flock %s: %s", dir, strerror(e));
        return e;
    }
    char lpath[PATH_MAX + 16];
    snprintf(lpath, sizeof lpath, "%s/landmark.lock", dir);
    s->lock_fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        e = errno;
        set_msg(s, "open %s: %s", lpath, strerror(e));
        return e;
    }
    e = flock_nb(s->lock_fd, LOCK_EX);
    if (e == EWOULDBLOCK) {
        set_msg(s, "%s: session is in use by another process", dir);
        return LMK_EBUSY;
    } else if (e) {
        set_msg(s, "flock %s: %s", lpath, strerror(e));
        return e;
    }
    return LMK_OK;
}

/* Bytes of a fresh lock.mdb: LMDB's own size for its default 126 reader slots (it keeps a
 * larger file as it is, with more slots, and extends a smaller one). */
#define LOCK_FILE_BYTES 8192

/* Gets lock.mdb ready before LMDB maps it. LMDB extends the file with ftruncate (a sparse
 * file) and writes its header and reader slots through a shared map: on a full
 * filesystem the first store to a page without blocks is a SIGBUS, for a writer creating
 * a session and for a reader taking a slot alike. Allocating the file's blocks here turns
 * that into ENOSPC. Only holes are filled and only an empty file is extended, so the
 * layout other processes use is never changed.
 * Writers keep the descriptor with LOCK_EX on it (s->lmdb_lock_fd): a reader that finds a
 * writer in the directory but no lock on the lock.mdb at the path knows lock.mdb was
 * deleted under the writer and that its reader slots would be invisible to it.
 * Readers fall back to MDB_NOLOCK (s->nolock) when lock.mdb cannot be written (read-only
 * media, another user's file, a full disk), holding LOCK_SH on the directory so that no
 * writer of this build starts meanwhile; with a writer already there they are refused. */
static int prepare_lock_file(lmk_store *s, const char *dir)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int e = fd < 0 ? errno : 0;
    if (!e) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            e = errno;
        else {
            off_t want = st.st_size > 0 ? st.st_size : LOCK_FILE_BYTES;
            e = posix_fallocate(fd, 0, want);
            if (e == EOPNOTSUPP || e == EINVAL)
                e = 0; /* no way to allocate ahead here; LMDB's own behaviour */
        }
    }
    if (!s->read_only) {
        if (e) {
            if (fd >= 0)
                close(fd);
            set_msg(s, "%s: preparing %s: %s", dir, path, strerror(e));
            return e;
        }
        /* readers hold LOCK_SH for a moment while they look (below); no writer can */
        int le;
        for (int attempt = 0; (le = flock_nb(fd, LOCK_EX)) == EWOULDBLOCK && attempt < 200;
             attempt++) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (le) {
            close(fd);
            set_msg(s, "flock %s: %s", path, le == EWOULDBLOCK ? "held elsewhere" : strerror(le));
            return le == EWOULDBLOCK ? LMK_EBUSY : le;
        }
        s->lmdb_lock_fd = fd;
        return LMK_OK;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int de = errno;
        if (fd >= 0)
            close(fd);
        set_msg(s, "open %s: %s", dir, strerror(de));
        return de;
    }
    if (!e) {
        /* lock.mdb is usable: fine unless a writer runs on another (deleted) lock.mdb. A
         * writer takes the directory before lock.mdb, so retry across that short gap. */
        int rc = LMK_OK;
        for (int attempt = 0;; attempt++) {
            int le = flock_nb(fd, LOCK_SH);
            if (le == EWOULDBLOCK)
                break; /* a writer holds this lock.mdb: we share its reader table */
            if (le)
                break; /* cannot tell: LMDB's behaviour */
            flock(fd, LOCK_UN);
            int de = flock_nb(dfd, LOCK_SH);
            if (de == 0) {
                flock(dfd, LOCK_UN); /* no writer now; one that comes uses this lock.mdb */
                break;
            }
            if (de != EWOULDBLOCK)
                break;
            if (attempt == 50) {
                set_msg(s, "%s: lock.mdb was deleted while a writer has the session open; "
                           "reading beside it is unsafe until it closes", dir);
                rc = LMK_EBUSY;
                break;
            }
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        close(fd);
        close(dfd);
        return rc;
    }
    if (fd >= 0)
        close(fd);
    int de = flock_nb(dfd, LOCK_SH);
    if (de) {
        close(dfd);
        if (de == EWOULDBLOCK) {
            set_msg(s, "%s: lock.mdb is not usable (%s) and a writer has the session open: "
                       "cannot read beside it", dir, strerror(e));
            return LMK_EBUSY;
        }
        set_msg(s, "flock %s: %s", dir, strerror(de));
        return de;
    }
    s->dir_fd = dfd;
    s->nolock = 1;
    return LMK_OK;
}

LMK_API int lmk_store_open(const char *dir, const lmk_store_opts *opts, lmk_store **out,
                           char *errmsg, size_t errmsg_cap)
{
    if (out)
        *out = NULL;
    lmk_store_opts o = opts ? *opts : lmk_store_opts_default();
    if (!dir || !out) {
        copy_out_msg("lmk_store_open: dir and out are required", errmsg, errmsg_cap);
        return LMK_EINVAL;
    }
    int rc = check_opts(dir, &o, errmsg, errmsg_cap);
    if (rc)
        return rc;

    lmk_store *s = calloc(1, sizeof *s);
    if (!s) {
        copy_out_msg("out of memory", errmsg, errmsg_cap);
        return ENOMEM;
    }
    s->lock_fd = -1;
    s->dir_fd = -1;
    s->lmdb_lock_fd = -1;
    s->read_only = o.read_only ? 1 : 0;
    s->verify = o.verify_reads ? 1 : 0;
    s->sync = o.sync;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    int registered = 0;

    struct stat st;
    rc = open_dir(s, dir, o.create, &st);
    if (rc)
        goto fail;
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
    if (!s->read_only && (rc = take_writer_lock(s, dir)))
        goto fail;

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

    if ((rc = prepare_lock_file(s, dir)))
        goto fail;
    rc = env_open(s);
    if (rc)
        goto fail;
    *out = s;
    return LMK_OK;

fail:
    copy_out_msg(s->msg, errmsg, errmsg_cap);
    if (s->lmdb_lock_fd >= 0)
        close(s->lmdb_lock_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
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
    lmk_store_read_txn_drop(s);
    if (s->env) {
        /* LMK_SYNC_NONE: flush on close too, so a clean close is durable in every mode
         * (FULL and NOMETA are already durable up to the meta page of the last commit;
         * the forced sync covers that too). */
        if (!s->read_only)
            mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    reg_remove(s->dev, s->ino);
    /* the flocks are released only after LMDB is closed */
    if (s->lmdb_lock_fd >= 0)
        close(s->lmdb_lock_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
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
