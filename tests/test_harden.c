/* Sessions that nothing bricks, storage and index cases: what an outside event (a temp
 * cleaner deleting lock files, a full disk, read-only media, a hostile or damaged file, an
 * index spec FAISS cannot handle) does to the store and the index must be a clean error,
 * never a signal, and never a second writer.
 *
 * Everything that could crash runs in a child (run_child), so a regression is a failed
 * check here, not a dead test program. Mount tests run in a private mount namespace of a
 * child and are skipped, with a message, where mounting is not permitted. */

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include "lmk_crc32c.h"
#include "lmk_index.h"
#include "lmk_internal.h" /* the config record codec, to record a spec by hand */
#include "lmk_session.h"
#include "lmk_store.h"
#include "lmk_test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs fn(arg) in a child; returns its exit status, or 128 + signal when it was killed
 * (printed), or 127 on timeout. */
static int run_child(int (*fn)(void *), void *arg, int timeout_s)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 126;
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        alarm((unsigned)timeout_s);
        _exit(fn(arg));
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(st)) {
        if (WTERMSIG(st) == SIGALRM)
            return 127;
        fprintf(stderr, "  child killed by signal %d (%s)\n", WTERMSIG(st),
                strsignal(WTERMSIG(st)));
        return 128 + WTERMSIG(st);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 125;
}

static lmk_key K(uint8_t kind, uint16_t layer, uint16_t head, uint64_t index)
{
    lmk_key k = {kind, layer, head, index};
    return k;
}

/* Writes count values of vlen bytes (byte i of value j = j + i) under layer 0. */
static int fill(lmk_store *s, uint64_t first, uint64_t count, size_t vlen)
{
    unsigned char *v = malloc(vlen);
    if (!v)
        return ENOMEM;
    int rc = lmk_store_batch_begin(s);
    for (uint64_t j = first; j < first + count && !rc; j++) {
        for (size_t i = 0; i < vlen; i++)
            v[i] = (unsigned char)(j + i);
        lmk_key k = K(LMK_KEY_BLOCK, 0, 0, j);
        rc = lmk_store_put(s, &k, v, vlen);
    }
    if (!rc)
        rc = lmk_store_batch_commit(s);
    else
        lmk_store_batch_abort(s);
    free(v);
    return rc;
}

/* 0 when every value first..first+count is there and right. */
static int check(lmk_store *s, uint64_t first, uint64_t count, size_t vlen)
{
    unsigned char *v = malloc(vlen);
    if (!v)
        return ENOMEM;
    int bad = 0;
    for (uint64_t j = first; j < first + count && !bad; j++) {
        lmk_key k = K(LMK_KEY_BLOCK, 0, 0, j);
        size_t len = 0;
        int rc = lmk_store_get(s, &k, v, vlen, &len);
        if (rc || len != vlen) {
            bad = rc ? rc : -1;
            break;
        }
        for (size_t i = 0; i < vlen; i++)
            if (v[i] != (unsigned char)(j + i))
                bad = -2;
    }
    free(v);
    return bad;
}

static int open_s(const char *dir, int create, int ro, lmk_store **s, char *msg, size_t cap)
{
    lmk_store_opts o = lmk_store_opts_default();
    o.create = create;
    o.read_only = ro;
    o.map_size = 8u << 20;
    return lmk_store_open(dir, &o, s, msg, cap);
}

static void rm_f(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

/* ---- 1. lock files deleted while a writer runs ------------------------------------ */

typedef struct {
    const char *dir;
    int ro;
    int want;
} open_arg;

/* Child: open as told; exit 0 when the result is `want`. */
static int child_open(void *p)
{
    open_arg *a = p;
    lmk_store *s = NULL;
    char msg[512] = "";
    int rc = open_s(a->dir, 0, a->ro, &s, msg, sizeof msg);
    if (rc != a->want) {
        fprintf(stderr, "  child open (%s): %d (%s): %s\n", a->ro ? "reader" : "writer", rc,
                lmk_strerror(rc), msg);
        lmk_store_close(s);
        return 1;
    }
    if (rc == LMK_OK && check(s, 0, 20, 1000))
        return 2;
    lmk_store_close(s);
    return 0;
}

static int test_lock_deleted(void)
{
    char dir[512], msg[512];
    lmk_test_dir(dir, sizeof dir, "harden-lock");
    lmk_store *s = NULL;
    REQUIRE_OK(open_s(dir, 1, 0, &s, msg, sizeof msg));
    REQUIRE_OK(fill(s, 0, 20, 1000));

    /* what temp cleaners delete: the empty lock file; then LMDB's lock.mdb too */
    rm_f(dir, "landmark.lock");
    open_arg w = {dir, 0, LMK_EBUSY};
    CHECK_RC(run_child(child_open, &w, 30), 0);
    rm_f(dir, "lock.mdb");
    CHECK_RC(run_child(child_open, &w, 30), 0);
    /* a reader would take a slot in a new reader table the writer never looks at: the
     * writer could then reuse pages under it */
    open_arg r = {dir, 1, LMK_EBUSY};
    CHECK_RC(run_child(child_open, &r, 30), 0);
    /* the writer itself goes on */
    CHECK_RC(fill(s, 20, 5, 1000), LMK_OK);
    lmk_store_close(s);

    /* once it is gone, writers and readers get in again */
    open_arg w2 = {dir, 0, LMK_OK}, r2 = {dir, 1, LMK_OK};
    CHECK_RC(run_child(child_open, &w2, 30), 0);
    CHECK_RC(run_child(child_open, &r2, 30), 0);
    /* and a reader beside a live writer still shares its reader table */
    REQUIRE_OK(open_s(dir, 0, 0, &s, msg, sizeof msg));
    CHECK_RC(run_child(child_open, &r2, 30), 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---- 3 and 8. full disk, read-only media, someone else's files ---------------------- */

typedef struct {
    int mounted, done;
    int create_full;  /* create on a full disk: status code (0 = signal-free clean error) */
    int read_full;    /* read a healthy store on a full disk without lock.mdb */
    int write_full;   /* open a writer there */
    int read_ro;      /* read on read-only media */
    int write_ro;
    int read_other;   /* read as another user (lock.mdb not writable) */
    int big_full;     /* a batch larger than the free space: ENOSPC (0), not EIO */
    char why[256];
} mnt_res;

static mnt_res *g_res;
static char g_mnt[480];

static int child_create_full(void *p)
{
    (void)p;
    char d[600], msg[512] = "";
    snprintf(d, sizeof d, "%s/new", g_mnt);
    lmk_store *s = NULL;
    int rc = open_s(d, 1, 0, &s, msg, sizeof msg);
    if (rc == LMK_OK)
        rc = fill(s, 0, 100, 4096); /* more than fits */
    fprintf(stderr, "  create on a full disk: %s (%s)\n", lmk_strerror(rc), msg);
    lmk_store_close(s);
    return rc == LMK_OK ? 1 : 0;
}

static int child_big_batch(void *p)
{
    (void)p;
    char d[600], msg[512] = "";
    snprintf(d, sizeof d, "%s/big", g_mnt);
    lmk_store *s = NULL;
    int rc = open_s(d, 1, 0, &s, msg, sizeof msg);
    if (rc == LMK_OK)
        rc = fill(s, 0, 40, 65536); /* 2.6 MB, on a 2 MiB disk */
    if (s)
        snprintf(msg, sizeof msg, "%s", lmk_store_errmsg(s));
    fprintf(stderr, "  a batch larger than the disk: %s (%s)\n", lmk_strerror(rc), msg);
    lmk_store_close(s);
    rm_f(d, "data.mdb");
    rm_f(d, "lock.mdb");
    rmdir(d);
    return rc == ENOSPC ? 0 : 1;
}

static int child_read(void *p)
{
    const char *d = p;
    lmk_store *s = NULL;
    char msg[512] = "";
    int rc = open_s(d, 0, 1, &s, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "  read-only open of %s: %s (%s)\n", d, lmk_strerror(rc), msg);
        return 1;
    }
    rc = check(s, 0, 20, 1000);
    lmk_store_close(s);
    return rc ? 2 : 0;
}

static int child_write(void *p)
{
    const char *d = p;
    lmk_store *s = NULL;
    char msg[512] = "";
    int rc = open_s(d, 0, 0, &s, msg, sizeof msg);
    if (rc == LMK_OK)
        rc = fill(s, 20, 1, 1000);
    lmk_store_close(s);
    return rc == LMK_OK ? 0 : 1; /* either way: no signal */
}

static int child_read_as_nobody(void *p)
{
    if (setgid(65534) != 0 || setuid(65534) != 0)
        return 3;
    return child_read(p);
}

static void fill_disk(const char *mnt)
{
    char p[600];
    snprintf(p, sizeof p, "%s/fill", mnt);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
    static char buf[4096];
    while (fd >= 0 && write(fd, buf, sizeof buf) > 0)
        ;
    while (fd >= 0 && write(fd, buf, 1) > 0)
        ;
    if (fd >= 0)
        close(fd);
}

static int ns_main(void *p)
{
    (void)p;
    mnt_res *r = g_res;
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("tmpfs", g_mnt, "tmpfs", 0, "size=2m,mode=0755")) {
        snprintf(r->why, sizeof r->why, "%s", strerror(errno));
        return 0;
    }
    r->mounted = 1;
    char d[600], msg[512];
    snprintf(d, sizeof d, "%s/s", g_mnt);
    lmk_store *s = NULL;
    if (open_s(d, 1, 0, &s, msg, sizeof msg) || fill(s, 0, 20, 1000))
        return 1;
    lmk_store_close(s);
    chmod(d, 0755);

    /* LMDB reports the short write of a full disk as EIO */
    r->big_full = run_child(child_big_batch, NULL, 30);

    /* another user: lock.mdb (root's, 0644) cannot be opened for writing */
    r->read_other = run_child(child_read_as_nobody, d, 30);

    /* full disk, a store whose lock.mdb a cleaner deleted */
    rm_f(d, "lock.mdb");
    fill_disk(g_mnt);
    r->create_full = run_child(child_create_full, NULL, 30);
    fill_disk(g_mnt);
    r->read_full = run_child(child_read, d, 30);
    r->write_full = run_child(child_write, d, 30);
    r->read_full |= run_child(child_read, d, 30) << 4; /* still readable after that */

    /* read-only media */
    snprintf(msg, sizeof msg, "%s/fill", g_mnt);
    unlink(msg);
    if (mount(NULL, g_mnt, NULL, MS_REMOUNT | MS_RDONLY, "size=2m") != 0) {
        r->read_ro = -1;
    } else {
        r->read_ro = run_child(child_read, d, 30);
        r->write_ro = run_child(child_write, d, 30);
    }
    r->done = 1;
    return 0;
}

static int test_full_and_readonly(void)
{
    char root[400];
    lmk_test_dir(root, sizeof root, "harden-mnt");
    REQUIRE(mkdir(root, 0755) == 0 || errno == EEXIST);
    snprintf(g_mnt, sizeof g_mnt, "%s/m", root);
    REQUIRE(mkdir(g_mnt, 0755) == 0 || errno == EEXIST);
    g_res = mmap(NULL, sizeof *g_res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(g_res != MAP_FAILED);
    memset(g_res, 0, sizeof *g_res);
    CHECK_RC(run_child(ns_main, NULL, 120), 0);
    if (!g_res->mounted) {
        printf("  full disk / read-only media: SKIPPED (cannot mount a tmpfs here: %s)\n",
               g_res->why);
    } else {
        CHECK(g_res->done);
        CHECK_RC(g_res->create_full, 0);
        CHECK_RC(g_res->read_full, 0);
        CHECK_RC(g_res->big_full, 0);
        CHECK(g_res->write_full < 128); /* an error or success, never a signal */
        if (g_res->read_ro < 0)
            printf("  read-only media: SKIPPED (cannot remount read-only)\n");
        else {
            CHECK_RC(g_res->read_ro, 0);
            CHECK_RC(g_res->write_ro, 1);
        }
        if (getuid() != 0)
            printf("  read as another user: SKIPPED (not root)\n");
        else
            CHECK_RC(g_res->read_other, 0);
        printf("  full disk: create %d, read %d, write %d; read-only media: read %d, write %d; "
               "other user: read %d\n",
               g_res->create_full, g_res->read_full, g_res->write_full, g_res->read_ro,
               g_res->write_ro, g_res->read_other);
    }
    munmap(g_res, sizeof *g_res);
    rmdir(g_mnt);
    if (!lmk_test_failures)
        lmk_test_rmdir(root);
    return 0;
}

/* ---- 2. index specs FAISS crashes on --------------------------------------------- */

static const char *g_spec;

/* Child: create g_spec at dim 8; exit 0 when it is refused with LMK_EUNSUPPORTED. */
static int child_refuse(void *p)
{
    (void)p;
#if !defined(__SANITIZE_ADDRESS__) /* its shadow memory counts against RLIMIT_AS */
    struct rlimit rl = {1ull << 31, 1ull << 31}; /* HNSW99999999 took 13 GB */
    setrlimit(RLIMIT_AS, &rl);
#endif
    lmk_index_opts o = lmk_index_opts_default();
    o.spec = g_spec;
    o.dim = 8;
    lmk_index *idx = NULL;
    char msg[512] = "";
    int rc = lmk_index_create(&o, &idx, msg, sizeof msg);
    if (rc != LMK_EUNSUPPORTED) {
        fprintf(stderr, "  spec \"%s\": %s (%s)\n", g_spec, lmk_strerror(rc), msg);
        return 1;
    }
    return 0;
}

/* Child: g_spec at dim 8 grown one vector at a time to 160 then 600 and cut back to
 * small sizes, searched after every step: nothing may crash or fail. */
static int child_any_size(void *p)
{
    (void)p;
    omp_set_num_threads(1); /* FAISS's threads only contend with parallel tests */
    lmk_index_opts o = lmk_index_opts_default();
    o.spec = g_spec;
    o.dim = 8;
    o.train_min = 300; /* trained types enter FAISS at 300 and leave it below */
    lmk_index *idx = NULL;
    char msg[512] = "";
    int rc = lmk_index_create(&o, &idx, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "  spec \"%s\" refused: %s\n", g_spec, msg);
        return 1;
    }
    uint64_t st = 7;
    float x[600 * 8], q[2 * 8];
    for (int i = 0; i < 600 * 8; i++)
        x[i] = lmk_test_uniform(&st);
    for (int i = 0; i < 16; i++)
        q[i] = lmk_test_uniform(&st);
    int64_t ids[2 * 5];
    const int64_t sizes[] = {0, 1, 2, 3, 5, 8, 13, 40, 160, 3, 600, 1, 0, 600};
    int64_t have = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int64_t n = sizes[s];
        if (n < have) {
            if ((rc = lmk_index_truncate(idx, n)))
                break;
            have = n;
        }
        while (have < n) {
            int64_t step = n > 200 ? n - have : 1;
            if ((rc = lmk_index_add(idx, step, x + have * 8)))
                break;
            have += step;
            if ((rc = lmk_index_search(idx, 2, q, 5, 0, NULL, ids, NULL)))
                break;
        }
        if (rc || (rc = lmk_index_search(idx, 2, q, 5, have > 2 ? have - 2 : 0, NULL, ids, NULL)))
            break;
    }
    if (rc)
        fprintf(stderr, "  spec \"%s\" at %lld vectors: %s (%s)\n", g_spec, (long long)have,
                lmk_strerror(rc), lmk_index_errmsg(idx));
    lmk_index_free(idx);
    return rc ? 2 : 0;
}

static int test_specs(void)
{
    static const char *const bad[] = {
        "HNSW0", "HNSW1", "IVF0,Flat", "NSG32", "NSG32,Flat", "HNSW99999999", "IVF99999999,Flat",
        "IVF16_HNSW0,Flat", "IVF16,PQ0", "IVF16,PQ4x0", "IVF16,PQ4x99", "PCA0,Flat",
        "PCA99,Flat", "IVF16_NSG32,Flat", "HNSW32_PQ4", "IVF16,Flat,Flat", "IDMap,Flat",
        "HNSW0+l2", "IVF0,Flat+l2", "RFlat", "Flat,RFlat", "IMI2x99,Flat", "IVF16,PQ4x4fs",
        "OPQ4,IVF16,PQ4", "IVF16(IVF4,Flat),Flat"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        g_spec = bad[i];
        int rc = run_child(child_refuse, NULL, 60);
        if (rc)
            fprintf(stderr, "  spec \"%s\" was not refused cleanly (%d)\n", bad[i], rc);
        CHECK_RC(rc, 0);
    }
    static const char *const good[] = {
        "Flat", "HNSW2", "HNSW256", "HNSW4,SQ8", "HNSW3,Flat+l2", "SQ4", "SQ6", "SQfp16",
        "PQ2x2", "PQ8x1", "IVF1,Flat", "IVF3_HNSW2,SQ8", "IVF2,PQ4x2", "PCA1,Flat",
        "PCA4,IVF2,Flat+l2", "IVF5,SQfp16+l2", "HNSW8+l2"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        g_spec = good[i];
        double t0 = now_s();
        int rc = run_child(child_any_size, NULL, 120);
        if (getenv("LMK_VERBOSE"))
            printf("  %s: %.2f s\n", good[i], now_s() - t0);
        if (rc)
            fprintf(stderr, "  spec \"%s\" failed at some size (%d)\n", good[i], rc);
        CHECK_RC(rc, 0);
    }
    return 0;
}

/* A spec recorded by an older build that this one refuses (or that crashes FAISS) must
 * leave the session openable: exact search, then truncate and reindex work. */
static const char *g_dir;

static int child_recorded_spec(void *p)
{
    (void)p;
    lmk_session_opts o = lmk_session_opts_default();
    lmk_session *s = NULL;
    char msg[512] = "";
    int rc = lmk_session_open(g_dir, &o, &s, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "  open with a refused recorded spec: %s\n", msg);
        return 1;
    }
    if ((rc = lmk_session_truncate(s, 40)) || (rc = lmk_session_reindex(s, "HNSW8"))) {
        fprintf(stderr, "  truncate/reindex: %s\n", lmk_session_errmsg(s));
        lmk_session_close(s);
        return 2;
    }
    lmk_session_close(s);
    s = NULL;
    if ((rc = lmk_session_open(g_dir, &o, &s, msg, sizeof msg))) {
        fprintf(stderr, "  reopen after reindex: %s\n", msg);
        return 3;
    }
    lmk_session_info info;
    rc = lmk_session_info_get(s, &info);
    int ok = rc == LMK_OK && strcmp(info.index_spec, "HNSW8") == 0;
    lmk_session_close(s);
    return ok ? 0 : 4;
}

static int test_recorded_spec(void)
{
    char dir[512], msg[512];
    lmk_test_dir(dir, sizeof dir, "harden-spec");
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = 1;
    o.n_heads = 2;
    o.n_kv_heads = 1;
    o.head_dim = 8;
    o.block_len = 4;
    o.dtype = LMK_DTYPE_F32;
    o.create = 1;
    lmk_session *s = NULL;
    REQUIRE_OK(lmk_session_open(dir, &o, &s, msg, sizeof msg));
    float kv[2 * 64 * 8];
    uint64_t st = 11;
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++)
        kv[i] = lmk_test_uniform(&st);
    REQUIRE_OK(lmk_session_append(s, 0, 64, kv, kv + 64 * 8));
    lmk_session_close(s);

    static const char *const recorded[] = {"HNSW0", "NSG32", "IVF0,Flat"};
    for (size_t r = 0; r < sizeof recorded / sizeof *recorded; r++) {
        lmk_store *st_ = NULL;
        REQUIRE_OK(open_s(dir, 0, 0, &st_, msg, sizeof msg));
        uint8_t rec[1024];
        size_t len = 0;
        lmk_config_rec c;
        REQUIRE_OK(lmk_store_get_meta(st_, "config", rec, sizeof rec, &len));
        REQUIRE_OK(lmk_config_decode(rec, len, &c, msg, sizeof msg));
        snprintf(c.spec, sizeof c.spec, "%s", recorded[r]);
        len = lmk_config_encode(&c, rec, sizeof rec);
        REQUIRE_OK(lmk_store_batch_begin(st_));
        REQUIRE_OK(lmk_store_put_meta(st_, "config", rec, len));
        REQUIRE_OK(lmk_store_batch_commit(st_));
        lmk_store_close(st_);
        rm_f(dir, "index-L0-H0.lmki");
        g_dir = dir;
        int rc = run_child(child_recorded_spec, NULL, 60);
        if (rc)
            fprintf(stderr, "  recorded spec \"%s\": %d\n", recorded[r], rc);
        CHECK_RC(rc, 0);
    }
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---- 7. a fork killed midway ----------------------------------------------------- */

static const char *g_dst;

static int child_fork(void *p)
{
    int limit = *(int *)p;
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = 1;
    lmk_session *s = NULL;
    char msg[512] = "";
    if (lmk_session_open(g_dir, &o, &s, msg, sizeof msg)) {
        fprintf(stderr, "  fork source: %s\n", msg);
        return 1;
    }
    if (limit) { /* the write that crosses it kills the process (SIGXFSZ) */
        struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    int rc = lmk_session_fork(s, g_dst);
    if (rc)
        fprintf(stderr, "  fork: %s\n", lmk_session_errmsg(s));
    lmk_session_close(s);
    return rc ? 2 : 0;
}

static int test_fork_killed(void)
{
    char dir[512], dst[600], msg[512];
    lmk_test_dir(dir, sizeof dir, "harden-fork");
    snprintf(dst, sizeof dst, "%s-dst", dir);
    lmk_test_rmdir(dst);
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = 1;
    o.n_heads = 2;
    o.n_kv_heads = 1;
    o.head_dim = 64;
    o.block_len = 16;
    o.dtype = LMK_DTYPE_F32;
    o.create = 1;
    lmk_session *s = NULL;
    REQUIRE_OK(lmk_session_open(dir, &o, &s, msg, sizeof msg));
    enum { N = 2048 };
    float *kv = malloc(2 * N * 64 * sizeof(float));
    REQUIRE(kv);
    uint64_t st = 13;
    for (size_t i = 0; i < 2 * N * 64; i++)
        kv[i] = lmk_test_uniform(&st);
    REQUIRE_OK(lmk_session_append(s, 0, N, kv, kv + N * 64));
    free(kv);
    lmk_session_close(s); /* about 1 MiB of data */
    g_dir = dir;
    g_dst = dst;
    int limit = 256 << 10;
    int rc = run_child(child_fork, &limit, 60);
    CHECK(rc == 128 + SIGXFSZ); /* killed midway */
    limit = 0;
    rc = run_child(child_fork, &limit, 60); /* the retry */
    CHECK_RC(rc, 0);
    o = lmk_session_opts_default();
    o.read_only = 1;
    REQUIRE_OK(lmk_session_open(dst, &o, &s, msg, sizeof msg));
    lmk_session_info info;
    CHECK_RC(lmk_session_info_get(s, &info), LMK_OK);
    CHECK(info.tokens == N);
    lmk_session_close(s);
    if (!lmk_test_failures) {
        lmk_test_rmdir(dir);
        lmk_test_rmdir(dst);
        /* the killed fork's temporary directory */
        glob_t g;
        char pat[700];
        snprintf(pat, sizeof pat, "%s.fork-*", dst);
        if (glob(pat, 0, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++)
                lmk_test_rmdir(g.gl_pathv[i]);
            globfree(&g);
        }
    }
    return 0;
}

/* ---- 14. a damaged free-page tree ------------------------------------------------ */

static int child_write_damaged(void *p)
{
    const char *d = p;
    lmk_store *s = NULL;
    char msg[512] = "";
    int rc = open_s(d, 0, 0, &s, msg, sizeof msg);
    if (rc == LMK_ECORRUPT && strstr(msg, "free-page"))
        return 0; /* refused before LMDB allocates from the tree */
    if (rc) {
        fprintf(stderr, "  writer open: %s (%s)\n", lmk_strerror(rc), msg);
        return 1;
    }
    for (int i = 0; i < 10 && !rc; i++)
        rc = fill(s, 1000 + 40 * i, 40, 3000);
    fprintf(stderr, "  the damage went unnoticed; writes: %s\n", lmk_strerror(rc));
    lmk_store_close(s);
    return 2;
}

static int test_free_tree(void)
{
    char dir[512], msg[512], path[700];
    lmk_test_dir(dir, sizeof dir, "harden-free");
    lmk_store *s = NULL;
    REQUIRE_OK(open_s(dir, 1, 0, &s, msg, sizeof msg));
    for (int r = 0; r < 6; r++) {
        REQUIRE_OK(fill(s, 0, 60, 3000)); /* rewriting frees the old pages */
        REQUIRE_OK(fill(s, 100 + r, 1, 100));
    }
    lmk_store_close(s);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *img = malloc((size_t)n);
    REQUIRE(img && fread(img, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    const uint32_t ps = 4096;
    uint64_t t0, t1, root;
    memcpy(&t0, img + 144, 8);
    memcpy(&t1, img + ps + 144, 8);
    const unsigned char *m = t1 > t0 ? img + ps : img;
    memcpy(&root, m + 80, 8);
    REQUIRE(root != ~(uint64_t)0 && (root + 1) * ps <= (uint64_t)n);
    unsigned char *rp = img + root * ps;
    REQUIRE((rp[10] & 0x02) != 0); /* a leaf root: one page of records */
    uint16_t off;
    memcpy(&off, rp + 16, 2);
    unsigned char *node = rp + off;
    uint16_t nflags;
    memcpy(&nflags, node + 4, 2);
    unsigned char *list = node + 16; /* after the 8-byte node header and 8-byte key */
    if (nflags & 1) {
        uint64_t ov;
        memcpy(&ov, list, 8);
        REQUIRE((ov + 1) * ps <= (uint64_t)n);
        list = img + ov * ps + 16;
    }
    uint64_t cnt;
    memcpy(&cnt, list, 8);
    REQUIRE(cnt >= 1);
    struct {
        const char *what;
        size_t at;
        uint64_t val;
        int bytes;
    } cases[] = {
        {"list count", (size_t)(list - img), 1u << 28, 8},
        {"page number in a list", (size_t)(list - img) + 8, 0x7fffffffffull, 8},
        {"node offset", (size_t)(rp - img) + 16, 0xfff0, 2},
        {"page flags", (size_t)(rp - img) + 10, 0x01, 2},
    };
    char cdir[600];
    snprintf(cdir, sizeof cdir, "%s-c", dir);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lmk_test_rmdir(cdir);
        REQUIRE(mkdir(cdir, 0755) == 0);
        unsigned char save[8];
        memcpy(save, img + cases[c].at, 8);
        memcpy(img + cases[c].at, &cases[c].val, (size_t)cases[c].bytes);
        snprintf(path, sizeof path, "%s/data.mdb", cdir);
        f = fopen(path, "wb");
        REQUIRE(f && fwrite(img, 1, (size_t)n, f) == (size_t)n);
        fclose(f);
        memcpy(img + cases[c].at, save, 8);
        int rc = run_child(child_write_damaged, cdir, 60);
        if (rc)
            fprintf(stderr, "  damaged %s: %d\n", cases[c].what, rc);
        CHECK_RC(rc, 0);
        /* readers do not use the tree: the data stays readable (fork can rescue it) */
        lmk_store *r = NULL;
        CHECK_RC(open_s(cdir, 0, 1, &r, msg, sizeof msg), LMK_OK);
        if (r)
            CHECK(check(r, 0, 60, 3000) == 0);
        lmk_store_close(r);
    }
    free(img);
    if (!lmk_test_failures) {
        lmk_test_rmdir(dir);
        lmk_test_rmdir(cdir);
    }
    return 0;
}

/* ---- 13. an index file crafted with a valid checksum ------------------------------ */

static const char *g_path;

/* Child: load g_path; exit 0 when the load is refused, 2 when it loads (then searches
 * every stored vector, which a hostile graph turns into wild reads). */
static int child_load_crafted(void *p)
{
    (void)p;
    lmk_index *idx = NULL;
    char msg[512] = "";
    int rc = lmk_index_load(g_path, "HNSW8", 16, &idx, msg, sizeof msg);
    if (rc != LMK_OK) {
        if (getenv("LMK_VERBOSE"))
            printf("  crafted index refused: %s\n", msg);
        return rc == LMK_ECORRUPT ? 0 : 1;
    }
    int64_t ids[4];
    const float *v = lmk_index_vectors(idx);
    for (int64_t i = 0; i < lmk_index_ntotal(idx); i++)
        lmk_index_search(idx, 1, v + i * 16, 4, 0, NULL, ids, NULL);
    lmk_index_free(idx);
    return 2;
}

static int test_crafted_index(void)
{
    char dir[512], path[700];
    lmk_test_dir(dir, sizeof dir, "harden-idx");
    REQUIRE(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/x.lmki", dir);
    lmk_index_opts o = lmk_index_opts_default();
    o.spec = "HNSW8";
    o.dim = 16;
    lmk_index *idx = NULL;
    char msg[512];
    REQUIRE_OK(lmk_index_create(&o, &idx, msg, sizeof msg));
    float x[200 * 16];
    uint64_t st = 5;
    for (int i = 0; i < 200 * 16; i++)
        x[i] = lmk_test_uniform(&st);
    REQUIRE_OK(lmk_index_add(idx, 200, x));
    REQUIRE_OK(lmk_index_save(idx, path));
    lmk_index_free(idx);
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    REQUIRE(n > 80 && n < sizeof buf);
    /* FAISS payload: after our header, the spec and the vectors */
    size_t off = 80 + strlen("HNSW8") + 200 * 16 * 4;
    REQUIRE(memcmp(buf + off, "IHNf", 4) == 0);
    off += 4 + 4 + 8 + 8 + 8 + 1 + 4; /* d, ntotal, 2 dummies, is_trained, metric (IP) */
    const size_t esz[5] = {8, 4, 4, 8, 4}; /* assign_probas, cum_nneighbor_per_level,
                                               levels, offsets, neighbors */
    for (int vct = 0; vct < 5; vct++) {
        uint64_t cnt;
        memcpy(&cnt, buf + off, 8);
        off += 8;
        REQUIRE(off + cnt * esz[vct] <= n);
        if (vct == 4) /* every neighbour link points far outside the graph */
            for (uint64_t i = 0; i < cnt; i++) {
                int32_t nb;
                memcpy(&nb, buf + off + 4 * i, 4);
                if (nb >= 0) {
                    nb = 0x7ffffff0;
                    memcpy(buf + off + 4 * i, &nb, 4);
                }
            }
        off += cnt * esz[vct];
    }
    int32_t ep = 0x7ffffff0; /* and so does the entry point */
    memcpy(buf + off, &ep, 4);
    uint32_t c = lmk_crc32c(0, buf, 72);
    c = lmk_crc32c(c, buf + 76, n - 76);
    memcpy(buf + 72, &c, 4);
    f = fopen(path, "wb");
    REQUIRE(f && fwrite(buf, 1, n, f) == n);
    fclose(f);
    g_path = path;
    int rc = run_child(child_load_crafted, NULL, 60);
    if (rc)
        fprintf(stderr, "  crafted HNSW graph with a valid checksum: %d\n", rc);
    CHECK_RC(rc, 0);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

int main(void)
{
    struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {
        {"lock_deleted", test_lock_deleted},
        {"full_and_readonly", test_full_and_readonly},
        {"specs", test_specs},
        {"recorded_spec", test_recorded_spec},
        {"fork_killed", test_fork_killed},
        {"free_tree", test_free_tree},
        {"crafted_index", test_crafted_index},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = lmk_test_failures;
        double t0 = now_s();
        tests[i].fn();
        printf("%s: %s (%.2f s)\n", tests[i].name,
               lmk_test_failures == before ? "ok" : "FAILED", now_s() - t0);
        fflush(stdout);
    }
    return lmk_test_finish("test_harden", 0);
}
