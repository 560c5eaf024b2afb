/* Persistence and robustness of sessions: process kills at random moments, damaged data and
 * index files, another fingerprint, a file-size limit and a full filesystem in the middle of
 * an ingest. Anything that might crash runs in a forked child under a timeout and a memory
 * bound; the parent judges the outcome and is never affected.
 *
 * Environment:
 *   LMK_CRASH_ITERS      kill iterations (default 4; the stress run uses more)
 *   LMK_SEED             replay a seed
 *   LMK_PERSIST_BENCH=N  instead of the tests, time N appended tokens (k suffix allowed) in
 *                        the demo's shape under each durability and print one line per case
 *
 * Threads: children are forked from a process that has used OpenMP and OpenBLAS. libgomp
 * cannot run a parallel region in a forked child once its thread pool exists, so main()
 * re-executes itself with OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1 first. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmk_index.h"
#include "lmk_session.h"
#include "lmk_crc32c.h"
#include "lmk_store.h"
#include "lmk_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

enum { NL = 2, NH = 4, KV = 2, D = 8, BL = 16 };
#define ROW ((size_t)KV * D)
#define QROW ((size_t)NH * D)
#define N_BASE 1000  /* tokens of the sessions that get damaged */
#define N_FINAL 1500 /* what resumed sessions are continued to */
#define N_KILL 3000  /* tokens of the kill runs */
#define N_PROBE 4
#define RESUME_SAMPLE 24 /* intact damaged copies resumed, per kind of damage */
/* Heap bound of children opening a damaged session (RLIMIT_DATA; LMDB's map is a shared
 * file mapping and does not count). Not applied under AddressSanitizer, whose shadow memory
 * counts as data; the peak resident size is reported instead. */
#define CHILD_DATA_LIMIT (512ull << 20)

static uint64_t g_seed;
/* Where damaged copies are made and resumed: a tmpfs when there is one (each resume syncs;
 * fsync on a disk would dominate the run time), else the test directory. */
static char g_scratch[2048];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the stream, sessions, references ---- */

/* Deterministic stream: token t of layer l (the same as test_session's). */
static void gen(int l, int64_t t0, int64_t n, float *k, float *v)
{
    for (int64_t t = t0; t < t0 + n; t++) {
        uint64_t seed = (uint64_t)t * 1315423911u + (uint64_t)l * 2654435761u + 7;
        for (size_t i = 0; i < ROW; i++) {
            k[(t - t0) * ROW + i] = lmk_test_uniform(&seed) * 2.0f;
            v[(t - t0) * ROW + i] = lmk_test_uniform(&seed);
        }
    }
}

/* Another stream (a different conversation): used where two histories must differ. */
static void gen_other(int l, int64_t t0, int64_t n, float *k, float *v)
{
    gen(l, t0 + 1000003, n, k, v);
}

static int n_logs;
static void log_cb(void *ud, const char *msg)
{
    (void)ud;
    n_logs++;
    if (getenv("LMK_VERBOSE"))
        printf("    session log: %s\n", msg);
}

static lmk_session_opts shape_opts(const char *spec, int create)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = NL;
    o.n_heads = NH;
    o.n_kv_heads = KV;
    o.head_dim = D;
    o.block_len = BL;
    o.dtype = LMK_DTYPE_F16;
    o.index_spec = spec;
    o.fingerprint = "persist-model";
    o.create = create;
    o.log = log_cb;
    return o;
}

static int open_rw(const char *dir, int create, lmk_durability dur, lmk_session **s, char *msg,
                   size_t cap)
{
    lmk_session_opts o = shape_opts(create ? "Flat" : NULL, create);
    o.durability = dur;
    return lmk_session_open(dir, &o, s, msg, cap);
}

static int open_ro(const char *dir, lmk_session **s, char *msg, size_t cap)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = 1;
    o.log = log_cb;
    return lmk_session_open(dir, &o, s, msg, cap);
}

/* Called after every successful append (layer, tokens now at that layer). */
typedef void (*ack_fn)(void *ud, int layer, int64_t ntok);

/* Continue every layer to `to` tokens from where it stands, in chunks of `chunk` tokens
 * (chunk <= 0: pseudo-random sizes 1..48 drawn from *rs). Layers are filled in turn, as a
 * model does. `g` picks the stream. */
static int ingest_to(lmk_session *s, int64_t to, int64_t chunk, uint64_t *rs,
                     void (*g)(int, int64_t, int64_t, float *, float *), ack_fn ack, void *ud,
                     int sync_every)
{
    float *k = malloc(4096 * ROW * 4), *v = malloc(4096 * ROW * 4);
    if (!k || !v) {
        free(k);
        free(v);
        return ENOMEM;
    }
    int rc = LMK_OK, round = 0;
    for (;;) {
        int any = 0;
        int64_t n = chunk > 0 ? chunk : 1 + (int64_t)(lmk_test_rand(rs) % 48);
        if (n > 4096)
            n = 4096;
        for (int l = 0; l < NL && rc == LMK_OK; l++) {
            int64_t have = lmk_session_tokens(s, l);
            int64_t m = have + n <= to ? n : to - have;
            if (m <= 0)
                continue;
            any = 1;
            g(l, have, m, k, v);
            rc = lmk_session_append(s, l, m, k, v);
            if (rc == LMK_OK && ack)
                ack(ud, l, have + m);
        }
        if (rc || !any)
            break;
        if (sync_every > 0 && ++round % sync_every == 0 && (rc = lmk_session_sync(s)))
            break;
    }
    free(k);
    free(v);
    return rc;
}

/* Attention outputs of fixed queries at every layer (top_k 3, grouped, 2 sinks). */
static int probe(lmk_session *s, float *out)
{
    uint64_t seed = 99;
    float q[QROW];
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = 3;
    o.n_sink = 2;
    for (int p = 0; p < N_PROBE; p++)
        for (int l = 0; l < NL; l++) {
            for (size_t i = 0; i < QROW; i++)
                q[i] = 3.0f * lmk_test_uniform(&seed);
            int rc = lmk_session_attend(s, l, 1, q, &o, out + ((size_t)p * NL + l) * QROW, NULL);
            if (rc)
                return rc;
        }
    return LMK_OK;
}

static uint64_t digest_of(lmk_session *s)
{
    uint64_t d = 0;
    if (lmk_session_data_digest(s, &d))
        fprintf(stderr, "digest: %s\n", lmk_session_errmsg(s));
    return d;
}

static int64_t verify_errors(lmk_session *s)
{
    int64_t checked = 0, errs = -1;
    int rc = lmk_session_verify(s, NULL, NULL, &checked, &errs);
    return rc ? -1 : errs;
}

/* The uninterrupted reference of the stream: digests and probe outputs at N_BASE and
 * N_FINAL, the digest after every commit of the N_BASE ingest (chunks of 100), and the
 * dtype-rounded K/V of every token (read back from the session). */
typedef struct ref_t {
    uint64_t d_base, d_final, d_kill;
    float probe_final[N_PROBE * NL * QROW];
    float probe_kill[N_PROBE * NL * QROW];
    uint64_t hist[64];
    int n_hist;
    float *k[NL], *v[NL]; /* (N_KILL, KV, D) each */
} ref_t;
static ref_t R;

static void hist_ack(void *ud, int layer, int64_t ntok)
{
    (void)layer;
    (void)ntok;
    lmk_session *s = ud;
    if (R.n_hist < 64)
        R.hist[R.n_hist++] = digest_of(s);
}

static int build_reference(const char *root)
{
    char dir[3000], msg[512] = "";
    snprintf(dir, sizeof dir, "%s/reference", root);
    lmk_session *s = NULL;
    REQUIRE_OK(open_rw(dir, 1, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    R.hist[R.n_hist++] = digest_of(s); /* configuration only */
    REQUIRE_OK(ingest_to(s, N_BASE, 100, NULL, gen, hist_ack, s, 0));
    R.d_base = digest_of(s);
    REQUIRE(R.d_base == R.hist[R.n_hist - 1]);
    REQUIRE_OK(ingest_to(s, N_FINAL, 100, NULL, gen, NULL, NULL, 0));
    R.d_final = digest_of(s);
    REQUIRE_OK(probe(s, R.probe_final));
    REQUIRE_OK(ingest_to(s, N_KILL, 100, NULL, gen, NULL, NULL, 0));
    R.d_kill = digest_of(s);
    REQUIRE_OK(probe(s, R.probe_kill));
    for (int l = 0; l < NL; l++) {
        R.k[l] = malloc((size_t)N_KILL * ROW * 4);
        R.v[l] = malloc((size_t)N_KILL * ROW * 4);
        REQUIRE(R.k[l] && R.v[l]);
        REQUIRE_OK(lmk_session_read_kv(s, l, 0, N_KILL, R.k[l], R.v[l]));
    }
    lmk_session_close(s);
    /* the digest does not depend on how the stream was cut into appends */
    uint64_t rs = g_seed;
    char d2[3000];
    snprintf(d2, sizeof d2, "%s/reference-ragged", root);
    REQUIRE_OK(open_rw(d2, 1, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    REQUIRE_OK(ingest_to(s, N_BASE, 0, &rs, gen, NULL, NULL, 0));
    CHECK(digest_of(s) == R.d_base);
    lmk_session_close(s);
    lmk_test_rmdir(d2);
    printf("reference: %d commits to %d tokens, digest %016llx\n", R.n_hist - 1, N_BASE,
           (unsigned long long)R.d_base);
    return 0;
}

/* Stored K/V of every layer equal the reference's over the stored range. */
static int content_matches(lmk_session *s)
{
    float *k = malloc((size_t)N_KILL * ROW * 4), *v = malloc((size_t)N_KILL * ROW * 4);
    int ok = k && v;
    for (int l = 0; l < NL && ok; l++) {
        int64_t n = lmk_session_tokens(s, l);
        if (n > N_KILL || lmk_session_read_kv(s, l, 0, n, k, v) ||
            memcmp(k, R.k[l], (size_t)n * ROW * 4) || memcmp(v, R.v[l], (size_t)n * ROW * 4))
            ok = 0;
    }
    free(k);
    free(v);
    return ok;
}

/* ---- files ---- */

static int copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY), out = -1, rc = -1;
    if (in < 0)
        return -1;
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) {
        char buf[65536];
        ssize_t r;
        rc = 0;
        while ((r = read(in, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)r) != r) {
                rc = -1;
                break;
            }
        if (r < 0)
            rc = -1;
        close(out);
    }
    close(in);
    return rc;
}

/* Remove the regular files of a flat directory (cheaper than a shell per case). */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[3400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(p);
    }
    if (d)
        closedir(d);
}

/* Fresh copy of a session directory: data.mdb and index files (not the lock files). */
static int copy_session(const char *src, const char *dst)
{
    empty_dir(dst);
    if (mkdir(dst, 0755) && errno != EEXIST)
        return -1;
    DIR *d = opendir(src);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, "data.mdb") && !strstr(e->d_name, ".lmki"))
            continue;
        char a[3200], b[3200];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        rc |= copy_file(a, b);
    }
    closedir(d);
    return rc;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

static int read_file(const char *path, unsigned char **buf, size_t *len)
{
    long n = file_size(path);
    FILE *f = fopen(path, "rb");
    if (n < 0 || !f) {
        if (f)
            fclose(f);
        return -1;
    }
    *buf = malloc((size_t)n + 1);
    *len = *buf ? fread(*buf, 1, (size_t)n, f) : 0;
    fclose(f);
    return *buf && *len == (size_t)n ? 0 : -1;
}

static int write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".tmp") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* ---- children ---- */

/* Written by a child into shared memory as it goes, read by the parent after the child
 * ended (however it ended). */
typedef struct child_res {
    volatile int phase;
    int open_rc, digest_rc, verify_rc, rw_rc;
    int64_t verify_errors, blocks_checked;
    uint64_t digest;
    volatile int64_t tokens[NL];
    volatile int64_t acked[NL];
    volatile int inflight_layer;
    volatile int64_t inflight_n;
    int flags;
    char msg[512];
} child_res;

enum { PH_START = 1, PH_OPEN, PH_DIGEST, PH_VERIFY, PH_RW, PH_DONE = 100 };

static child_res *shm;

typedef struct outcome {
    int done;      /* the child reached PH_DONE and exited 0 */
    int hang;      /* killed by the timeout */
    int sig;       /* signal that ended it, or 0 */
    int code;      /* exit status when it exited */
    long maxrss_kb;
} outcome;

/* Run fn(arg) in a forked child with a timeout (seconds) and, outside AddressSanitizer, a
 * heap bound (bytes, 0 = none). The child's stdout/stderr stay the test's. */
static outcome run_child(int (*fn)(void *), void *arg, unsigned timeout, uint64_t data_limit)
{
    outcome o = {0, 0, 0, -1, 0};
    memset(shm, 0, sizeof *shm);
    shm->inflight_layer = -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        o.code = -2;
        return o;
    }
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        if (data_limit && !UNDER_ASAN) {
            rl.rlim_cur = rl.rlim_max = data_limit;
            setrlimit(RLIMIT_DATA, &rl);
        }
        signal(SIGALRM, SIG_DFL);
        alarm(timeout);
        shm->phase = PH_START;
        int r = fn(arg);
        if (r == 0)
            shm->phase = PH_DONE;
        fflush(NULL);
        _exit(r);
    }
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR)
        ;
    o.maxrss_kb = ru.ru_maxrss;
    if (WIFSIGNALED(st)) {
        o.sig = WTERMSIG(st);
        o.hang = o.sig == SIGALRM;
    } else if (WIFEXITED(st)) {
        o.code = WEXITSTATUS(st);
        o.done = o.code == 0 && shm->phase == PH_DONE;
    }
    return o;
}

/* ---- damaged data files ---- */

typedef struct damage_arg {
    const char *dir;
} damage_arg;

/* Child: open read-only, digest, verify (everything a `landmark verify` does). */
static int child_inspect(void *p)
{
    damage_arg *a = p;
    lmk_session *s = NULL;
    shm->phase = PH_OPEN;
    shm->open_rc = open_ro(a->dir, &s, shm->msg, sizeof shm->msg);
    if (shm->open_rc)
        return 0;
    for (int l = 0; l < NL; l++)
        shm->tokens[l] = lmk_session_tokens(s, l);
    shm->phase = PH_DIGEST;
    shm->digest_rc = lmk_session_data_digest(s, &shm->digest);
    shm->phase = PH_VERIFY;
    int64_t checked = 0, errs = 0;
    shm->verify_rc = lmk_session_verify(s, NULL, NULL, &checked, &errs);
    shm->verify_errors = errs;
    shm->blocks_checked = checked;
    if (shm->digest_rc || shm->verify_rc)
        snprintf(shm->msg, sizeof shm->msg, "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    return 0;
}

/* Child: open for writing, continue the stream to N_FINAL, close, reopen read-only, verify
 * and digest. */
static int child_resume(void *p)
{
    damage_arg *a = p;
    lmk_session *s = NULL;
    shm->phase = PH_RW;
    shm->open_rc = open_rw(a->dir, 0, LMK_DURABLE_NOMETA, &s, shm->msg, sizeof shm->msg);
    if (shm->open_rc)
        return 0;
    shm->rw_rc = ingest_to(s, N_FINAL, 100, NULL, gen, NULL, NULL, 0);
    if (shm->rw_rc)
        snprintf(shm->msg, sizeof shm->msg, "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    if (shm->rw_rc)
        return 0;
    shm->phase = PH_OPEN;
    shm->open_rc = open_ro(a->dir, &s, shm->msg, sizeof shm->msg);
    if (shm->open_rc)
        return 0;
    shm->digest_rc = lmk_session_data_digest(s, &shm->digest);
    shm->phase = PH_VERIFY;
    int64_t errs = 0;
    shm->verify_rc = lmk_session_verify(s, NULL, NULL, NULL, &errs);
    shm->verify_errors = errs;
    lmk_session_close(s);
    return 0;
}

/* Child: open as `landmark demo` does (create = 1), append one chunk, close. */
static int child_create(void *p)
{
    damage_arg *a = p;
    lmk_session *s = NULL;
    shm->phase = PH_OPEN;
    shm->open_rc = open_rw(a->dir, 1, LMK_DURABLE_NOMETA, &s, shm->msg, sizeof shm->msg);
    if (shm->open_rc)
        return 0;
    shm->rw_rc = ingest_to(s, 100, 100, NULL, gen, NULL, NULL, 0);
    lmk_session_close(s);
    return 0;
}

enum { OUT_ERROR, OUT_DETECTED, OUT_INTACT, OUT_ROLLBACK, OUT_CRASH, OUT_HANG, OUT_SILENT,
       OUT_N };
static const char *out_name[OUT_N] = {"clean error at open", "opened, damage reported",
                                      "intact (unused bytes)", "earlier commit",
                                      "crash in child", "HANG", "SILENT CORRUPTION"};

typedef struct tally {
    int n[OUT_N];
    int crash_phase[PH_RW + 1];
    int resumed_ok, resumed_err, resumed_crash, resumed_bad;
    int resume_all; /* resume every intact case, not a sample */
    long maxrss_kb;
    double t_inspect, t_resume;
} tally;

static int in_history(uint64_t d)
{
    for (int i = 0; i < R.n_hist; i++)
        if (R.hist[i] == d)
            return 1;
    return 0;
}

/* Judge one damaged copy in `dir`; `what` names the damage. */
static int judge_damage(const char *dir, const char *what, tally *t)
{
    damage_arg a = {dir};
    double t0 = now_s();
    outcome o = run_child(child_inspect, &a, 30, CHILD_DATA_LIMIT);
    t->t_inspect += now_s() - t0;
    if (o.maxrss_kb > t->maxrss_kb)
        t->maxrss_kb = o.maxrss_kb;
    int out;
    if (o.hang)
        out = OUT_HANG;
    else if (!o.done) {
        out = OUT_CRASH;
        int ph = shm->phase;
        t->crash_phase[ph >= 0 && ph <= PH_RW ? ph : 0]++;
    } else if (shm->open_rc)
        out = OUT_ERROR;
    else if (shm->digest_rc || shm->verify_rc || shm->verify_errors)
        out = OUT_DETECTED;
    else if (shm->digest == R.d_base)
        out = OUT_INTACT;
    else if (in_history(shm->digest))
        out = OUT_ROLLBACK;
    else
        out = OUT_SILENT;
    t->n[out]++;
    int verbose = getenv("LMK_VERBOSE") != NULL;
    if (out == OUT_HANG || out == OUT_SILENT || verbose || out == OUT_CRASH ||
        out == OUT_ROLLBACK)
        printf("  %-40s %s%s%s (phase %d, signal %d, exit %d) %s\n", what, out_name[out],
               out == OUT_ERROR ? ": " : "", out == OUT_ERROR ? lmk_strerror(shm->open_rc) : "",
               shm->phase, o.sig, o.code, shm->msg);
    CHECK(out != OUT_HANG);
    CHECK(out != OUT_SILENT);
    if (out == OUT_ERROR)
        CHECK(shm->open_rc == LMK_ECORRUPT || shm->open_rc == LMK_EVERSION ||
              shm->open_rc == LMK_ENOTFOUND || shm->open_rc == LMK_ESTORE ||
              shm->open_rc == LMK_EMISMATCH);
    /* A session that still reads as intact (or as an earlier commit) must be writable and
     * continue to the same data as an uninterrupted run, or refuse cleanly. Checked for
     * every earlier-commit case and a sample of the intact ones (each resume syncs). */
    if (out == OUT_ROLLBACK ||
        (out == OUT_INTACT && (t->resume_all || t->n[OUT_INTACT] <= RESUME_SAMPLE))) {
        t0 = now_s();
        outcome r = run_child(child_resume, &a, 60, CHILD_DATA_LIMIT);
        t->t_resume += now_s() - t0;
        if (r.hang || !r.done) {
            t->resumed_crash++;
            printf("  %-40s resume: crash/hang (phase %d, signal %d, exit %d) %s\n", what,
                   shm->phase, r.sig, r.code, shm->msg);
            CHECK(!r.hang);
        } else if (shm->open_rc || shm->rw_rc || shm->digest_rc || shm->verify_rc ||
                   shm->verify_errors) {
            t->resumed_err++;
            if (verbose)
                printf("  %-40s resume refused: %s\n", what, shm->msg);
        } else if (shm->digest == R.d_final) {
            t->resumed_ok++;
        } else {
            t->resumed_bad++;
            printf("  %-40s resume: verify clean but digest %016llx != %016llx\n", what,
                   (unsigned long long)shm->digest, (unsigned long long)R.d_final);
            CHECK(0);
        }
    }
    return out;
}

static void print_tally(const char *name, const tally *t)
{
    printf("%s:", name);
    for (int i = 0; i < OUT_N; i++)
        if (t->n[i])
            printf(" %s %d;", out_name[i], t->n[i]);
    int crashes = 0;
    for (int p = 0; p <= PH_RW; p++)
        crashes += t->crash_phase[p];
    if (crashes)
        printf(" crashes in open %d, digest %d, verify %d;", t->crash_phase[PH_OPEN],
               t->crash_phase[PH_DIGEST], t->crash_phase[PH_VERIFY]);
    printf(" resumed to the reference %d, refused %d, crashed %d; peak RSS %ld MiB "
           "(%.1f s inspecting, %.1f s resuming)\n",
           t->resumed_ok, t->resumed_err, t->resumed_crash, t->maxrss_kb / 1024, t->t_inspect,
           t->t_resume);
}

/* A session of the stream to N_BASE tokens with index `spec`. */
static int make_base_spec(const char *dir, const char *spec)
{
    char msg[512] = "";
    lmk_session *s = NULL;
    lmk_session_opts o = shape_opts(spec, 1);
    REQUIRE_OK(lmk_session_open(dir, &o, &s, msg, sizeof msg));
    REQUIRE_OK(ingest_to(s, N_BASE, 100, NULL, gen, NULL, NULL, 0));
    CHECK(digest_of(s) == R.d_base);
    lmk_session_close(s);
    return 0;
}

static int make_base(const char *dir)
{
    return make_base_spec(dir, "Flat");
}

static int damaged_data_files(const char *root)
{
    char base[3000], c[3000], data[3200], what[128];
    snprintf(base, sizeof base, "%s/dmg-base", root);
    snprintf(c, sizeof c, "%s/dmg-case", g_scratch);
    snprintf(data, sizeof data, "%s/data.mdb", c);
    if (make_base(base))
        return 1;
    char bdata[3200];
    snprintf(bdata, sizeof bdata, "%s/data.mdb", base);
    unsigned char *img = NULL;
    size_t size = 0;
    REQUIRE(read_file(bdata, &img, &size) == 0);
    const size_t psz = 4096;
    printf("damaged data files: data.mdb of %zu bytes (%zu pages)\n", size, size / psz);

    /* the undamaged copy itself */
    tally t0;
    memset(&t0, 0, sizeof t0);
    REQUIRE(copy_session(base, c) == 0);
    CHECK(judge_damage(c, "undamaged copy", &t0) == OUT_INTACT);

    /* truncated */
    tally tt;
    memset(&tt, 0, sizeof tt);
    const long cuts[] = {0, 1, 15, 100, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 4096,
                         (long)size / 3, (long)size / 2, (long)size - 4096 - 1,
                         (long)size - 4096, (long)size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        REQUIRE(copy_session(base, c) == 0);
        REQUIRE(truncate(data, cuts[i]) == 0);
        snprintf(what, sizeof what, "truncated to %ld bytes", cuts[i]);
        int out = judge_damage(c, what, &tt);
        /* a file cut inside the pages the last commit uses is refused at open */
        if (cuts[i] < (long)(2 * psz))
            CHECK(out == OUT_ERROR);
    }
    print_tally("  truncated data.mdb", &tt);

    /* bits flipped: every byte of both meta pages' used part, then random offsets */
    tally tm, tr;
    memset(&tm, 0, sizeof tm);
    memset(&tr, 0, sizeof tr);
    tm.resume_all = 1; /* a damaged free-list root, say, shows only when writing */
    /* under the sanitizers (LMK_ITERS set) every third byte, to keep the run short */
    size_t step = getenv("LMK_ITERS") ? 3 : 1;
    for (int page = 0; page < 2; page++)
        for (size_t off = 0; off < 160; off += step) {
            REQUIRE(copy_session(base, c) == 0);
            unsigned char *cp = malloc(size);
            REQUIRE(cp);
            memcpy(cp, img, size);
            cp[page * psz + off] ^= (unsigned char)(1u << (off % 8));
            REQUIRE(write_file(data, cp, size) == 0);
            free(cp);
            snprintf(what, sizeof what, "meta page %d byte %zu bit %zu", page, off, off % 8);
            judge_damage(c, what, &tm);
        }
    print_tally("  meta pages, one bit flipped", &tm);
    uint64_t rs = g_seed ^ 0x5eed;
    int n_random = getenv("LMK_ITERS") ? 60 : 150;
    for (int i = 0; i < n_random; i++) {
        REQUIRE(copy_session(base, c) == 0);
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        memcpy(cp, img, size);
        size_t off = 2 * psz + (size_t)(lmk_test_rand(&rs) % (size - 2 * psz));
        int nbits = 1 + (int)(lmk_test_rand(&rs) % 3); /* 1..3 bits, same byte region */
        for (int b = 0; b < nbits; b++) {
            size_t o2 = off + (size_t)(lmk_test_rand(&rs) % 16);
            if (o2 < size)
                cp[o2] ^= (unsigned char)(1u << (lmk_test_rand(&rs) % 8));
        }
        REQUIRE(write_file(data, cp, size) == 0);
        free(cp);
        snprintf(what, sizeof what, "%d bit(s) near offset %zu (page %zu)", nbits, off,
                 off / psz);
        judge_damage(c, what, &tr);
    }
    print_tally("  data pages, bits flipped", &tr);

    /* a page zeroed (a torn write), random bytes, empty file, no data file at all */
    tally to;
    memset(&to, 0, sizeof to);
    for (size_t pg = 2; pg < size / psz; pg += (size / psz) / 6 + 1) {
        REQUIRE(copy_session(base, c) == 0);
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        memcpy(cp, img, size);
        memset(cp + pg * psz, 0, psz);
        REQUIRE(write_file(data, cp, size) == 0);
        free(cp);
        snprintf(what, sizeof what, "page %zu zeroed", pg);
        judge_damage(c, what, &to);
    }
    {
        REQUIRE(copy_session(base, c) == 0);
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        for (size_t i = 0; i < size; i++)
            cp[i] = (unsigned char)lmk_test_rand(&rs);
        REQUIRE(write_file(data, cp, size) == 0);
        free(cp);
        CHECK(judge_damage(c, "random bytes in place of data.mdb", &to) == OUT_ERROR);
        CHECK(shm->open_rc == LMK_ECORRUPT);
    }
    {
        REQUIRE(copy_session(base, c) == 0);
        const char txt[] = "this is not an LMDB file\n";
        REQUIRE(write_file(data, txt, sizeof txt) == 0);
        CHECK(judge_damage(c, "a text file in place of data.mdb", &to) == OUT_ERROR);
        CHECK(shm->open_rc == LMK_ECORRUPT);
    }
    {
        REQUIRE(copy_session(base, c) == 0);
        REQUIRE(truncate(data, 0) == 0);
        CHECK(judge_damage(c, "empty data.mdb", &to) == OUT_ERROR);
        CHECK(shm->open_rc == LMK_ECORRUPT);
        CHECK(strstr(shm->msg, "empty") != NULL);
    }
    {
        /* an empty data.mdb is what a kill between LMDB creating the file and writing its
         * meta pages leaves: can a writer (create = 1, as `landmark demo` opens) start the
         * session over? Either that or a clean refusal; the outcome is printed. */
        REQUIRE(copy_session(base, c) == 0);
        empty_dir(c);
        REQUIRE(write_file(data, "", 0) == 0);
        damage_arg a = {c};
        outcome o = run_child(child_create, &a, 30, CHILD_DATA_LIMIT);
        printf("  interrupted creation (empty data.mdb), opened with create: %s %s\n",
               o.done ? lmk_strerror(shm->open_rc) : "crash", shm->msg);
        CHECK(o.done);
        CHECK(shm->open_rc == LMK_OK || shm->open_rc == LMK_ECORRUPT);
    }
    {
        /* a directory holding only lock files: no session, said so */
        lmk_test_rmdir(c);
        REQUIRE(mkdir(c, 0755) == 0);
        char p[3200];
        snprintf(p, sizeof p, "%s/landmark.lock", c);
        REQUIRE(write_file(p, "", 0) == 0);
        snprintf(p, sizeof p, "%s/lock.mdb", c);
        REQUIRE(write_file(p, "", 0) == 0);
        CHECK(judge_damage(c, "lock files only", &to) == OUT_ERROR);
        CHECK(shm->open_rc == LMK_ENOTFOUND);
    }
    print_tally("  zeroed pages, foreign and empty files", &to);

    /* the damaged copies never touched the original */
    lmk_session *s = NULL;
    char msg[512];
    REQUIRE_OK(open_ro(base, &s, msg, sizeof msg));
    CHECK(digest_of(s) == R.d_base);
    lmk_session_close(s);
    free(img);
    lmk_test_rmdir(c);
    lmk_test_rmdir(base);
    return 0;
}

/* ---- damaged index files ---- */

static void put64(unsigned char *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)p[i] << (8 * i);
    return x;
}

/* The index file's checksum: CRC-32C of the file without bytes 72..75 (lmk_index.h). */
static void fix_crc(unsigned char *p, size_t len)
{
    uint32_t c = lmk_crc32c(0, p, 72);
    c = lmk_crc32c(c, p + 76, len - 76);
    for (int i = 0; i < 4; i++)
        p[72 + i] = (unsigned char)(c >> (8 * i));
}

typedef struct idx_arg {
    const char *dir;
    float out[N_PROBE * NL * QROW];
} idx_arg;

/* Child: open for writing (the index is rebuilt when refused), probe, verify. */
static int child_open_probe(void *p)
{
    idx_arg *a = p;
    lmk_session *s = NULL;
    n_logs = 0;
    shm->phase = PH_OPEN;
    shm->open_rc = open_rw(a->dir, 0, LMK_DURABLE_NOMETA, &s, shm->msg, sizeof shm->msg);
    if (shm->open_rc)
        return 0;
    shm->flags = n_logs;
    shm->phase = PH_VERIFY;
    int64_t errs = 0;
    shm->verify_rc = lmk_session_verify(s, NULL, NULL, NULL, &errs);
    shm->verify_errors = errs;
    shm->digest_rc = lmk_session_data_digest(s, &shm->digest);
    shm->rw_rc = probe(s, a->out);
    lmk_session_close(s);
    return 0;
}

static int damaged_index_files(const char *root)
{
    char base[3000], c[3000], path[3200], what[160], msg[512];
    snprintf(base, sizeof base, "%s/idx-base", root);
    snprintf(c, sizeof c, "%s/idx-case", g_scratch);
    /* HNSW32: its file carries a FAISS payload (a Flat index is searched by the module's
     * own brute force and saves none) */
    if (make_base_spec(base, "HNSW32"))
        return 1;
    lmk_session *s = NULL;
    float want[N_PROBE * NL * QROW];
    REQUIRE_OK(open_ro(base, &s, msg, sizeof msg));
    REQUIRE_OK(probe(s, want));
    lmk_session_close(s);
    snprintf(path, sizeof path, "%s/index-L1-H0.lmki", base);
    unsigned char *img = NULL;
    size_t size = 0;
    REQUIRE(read_file(path, &img, &size) == 0);
    REQUIRE(size > 80);
    /* our reading of the layout is right: the checksum recomputes */
    {
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        memcpy(cp, img, size);
        fix_crc(cp, size);
        CHECK(memcmp(cp, img, size) == 0);
        free(cp);
        int dim = 0;
        int64_t nt = 0;
        CHECK_RC(lmk_index_parse_header(img, size, &dim, &nt, NULL, 0), LMK_OK);
        CHECK(dim == D && nt == (N_BASE - 1) / BL);
    }
    typedef struct mod {
        const char *name;
        size_t off;   /* field offset; SIZE_MAX: truncate to `val` bytes */
        int width;    /* 4 or 8 */
        uint64_t val;
        int fix;      /* recompute the checksum (a consistent-looking file) */
        int benign;   /* a consistent file that may be used as it is */
    } mod;
    /* offset of the FAISS payload's own length of the flat codes: the storage of an HNSW
     * index is an IndexFlat ("IxFI": d i32, ntotal i64, two i64, is_trained u8, metric i32)
     * followed by the float count ntotal * dim as a size_t; FAISS accepts counts below 2^40
     * and resizes its vector to count * 4 bytes before reading them */
    size_t codes_len_off = SIZE_MAX;
    uint64_t n_floats = (uint64_t)((N_BASE - 1) / BL) * D;
    size_t faiss_off = 80 + (size_t)img[44] + n_floats * 4;
    for (size_t o = faiss_off; o + 37 + 8 <= size; o++)
        if (memcmp(img + o, "IxFI", 4) == 0 && get64(img + o + 37) == n_floats) {
            codes_len_off = o + 37;
            break;
        }
    /* with the heap bound, FAISS's allocation fails; without it (AddressSanitizer), ask
     * for less so the test cannot exhaust the machine */
    uint64_t big_floats = UNDER_ASAN ? (16ull << 20) : (768ull << 20);
    const mod mods[] = {
        {"truncated to 0 bytes", SIZE_MAX, 0, 0, 0, 0},
        {"truncated to 7 bytes", SIZE_MAX, 0, 7, 0, 0},
        {"truncated to 79 bytes", SIZE_MAX, 0, 79, 0, 0},
        {"truncated to 80 bytes", SIZE_MAX, 0, 80, 0, 0},
        {"truncated to half", SIZE_MAX, 0, size / 2, 0, 0},
        {"truncated by 1 byte", SIZE_MAX, 0, size - 1, 0, 0},
        {"header length huge", 12, 4, 0xffffffffu, 0, 0},
        {"dim huge", 16, 4, 0xffffffffu, 0, 0},
        {"ntotal huge", 24, 8, 1ull << 62, 0, 0},
        {"ntotal huge, checksum fixed", 24, 8, 1ull << 62, 1, 0},
        {"ntotal -1, checksum fixed", 24, 8, ~0ull, 1, 0},
        {"train_min huge, checksum fixed", 32, 8, 1ull << 62, 1, 1},
        {"spec length huge", 44, 4, 0xffffffffu, 0, 0},
        {"spec length huge, checksum fixed", 44, 4, 0xffffffffu, 1, 0},
        {"vector bytes huge", 48, 8, 1ull << 62, 0, 0},
        {"vector bytes huge, checksum fixed", 48, 8, 1ull << 62, 1, 0},
        {"FAISS bytes huge", 56, 8, 1ull << 62, 0, 0},
        {"FAISS bytes huge, checksum fixed", 56, 8, 1ull << 62, 1, 0},
        {"FAISS vector count huge, checksum fixed", 64, 8, 1ull << 40, 1, 0},
        {"FAISS codes count 2^39, checksum fixed", codes_len_off, 8, 1ull << 39, 1, 0},
        {"FAISS codes count large, checksum fixed", codes_len_off, 8, big_floats, 1, 0},
        {"FAISS codes count short, checksum fixed", codes_len_off, 8, n_floats - 1, 1, 0},
    };
    tally t;
    memset(&t, 0, sizeof t);
    int n_ok = 0, n_skipped = 0;
    for (size_t i = 0; i < sizeof mods / sizeof *mods; i++) {
        const mod *m = &mods[i];
        if (m->off == SIZE_MAX && m->width) {
            printf("  %s: skipped (FAISS codes length not found)\n", m->name);
            n_skipped++;
            continue;
        }
        if (UNDER_ASAN && m->width == 8 && m->val == 1ull << 39 && m->off == codes_len_off) {
            /* AddressSanitizer aborts on a 2 TiB operator new where the real allocator
             * throws std::bad_alloc (which the index module catches) */
            printf("  %s: skipped under AddressSanitizer\n", m->name);
            n_skipped++;
            continue;
        }
        REQUIRE(copy_session(base, c) == 0);
        snprintf(path, sizeof path, "%s/index-L1-H0.lmki", c);
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        memcpy(cp, img, size);
        size_t len = size;
        if (m->off == SIZE_MAX && !m->width) {
            len = (size_t)m->val;
        } else if (m->width == 4) {
            for (int b = 0; b < 4; b++)
                cp[m->off + b] = (unsigned char)(m->val >> (8 * b));
        } else {
            put64(cp + m->off, m->val);
        }
        if (m->fix)
            fix_crc(cp, len);
        REQUIRE(write_file(path, cp, len) == 0);
        free(cp);
        /* the probe outputs come back through a second shared mapping */
        idx_arg *sa = mmap(NULL, sizeof *sa, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                           -1, 0);
        REQUIRE(sa != MAP_FAILED);
        sa->dir = c;
        outcome o = run_child(child_open_probe, sa, 60, CHILD_DATA_LIMIT);
        if (o.maxrss_kb > t.maxrss_kb)
            t.maxrss_kb = o.maxrss_kb;
        snprintf(what, sizeof what, "index file %s", m->name);
        int good = o.done && shm->open_rc == 0 && shm->verify_rc == 0 &&
                   shm->verify_errors == 0 && shm->digest == R.d_base && shm->rw_rc == 0 &&
                   memcmp(sa->out, want, sizeof want) == 0;
        if (!good || getenv("LMK_VERBOSE"))
            printf("  %-52s %s (signal %d, exit %d, open %s, %d repairs logged, peak RSS %ld "
                   "MiB) %s\n",
                   what, good ? "rebuilt" : "FAILED", o.sig, o.code, lmk_strerror(shm->open_rc),
                   shm->flags, o.maxrss_kb / 1024, shm->msg);
        CHECK(good);
        /* the damage is noticed and repaired (reported through the log) */
        CHECK(!o.done || m->benign || shm->flags >= 1);
        /* the repaired file is written back on close and loads cleanly next time */
        if (good) {
            int dim = 0;
            int64_t nt = -1;
            unsigned char *nb = NULL;
            size_t nl = 0;
            CHECK(read_file(path, &nb, &nl) == 0);
            CHECK(nb && lmk_index_parse_header(nb, nl, &dim, &nt, NULL, 0) == LMK_OK &&
                  nt == (N_BASE - 1) / BL);
            free(nb);
        }
        n_ok += good;
        munmap(sa, sizeof *sa);
    }
    printf("damaged index files: %d of %zu cases rebuilt with equal results (%d skipped); peak "
           "RSS %ld MiB%s\n",
           n_ok, sizeof mods / sizeof *mods - (size_t)n_skipped, n_skipped, t.maxrss_kb / 1024,
           UNDER_ASAN ? " (AddressSanitizer: no heap bound)" : " (heap bound 512 MiB)");

    /* a consistent file holding other vectors (checksum fixed, the right count): the open
     * compares it with the stored landmarks, reports it and rebuilds */
    {
        REQUIRE(copy_session(base, c) == 0);
        snprintf(path, sizeof path, "%s/index-L1-H0.lmki", c);
        unsigned char *cp = malloc(size);
        REQUIRE(cp);
        memcpy(cp, img, size);
        size_t vec0 = 80 + (size_t)img[44];
        float x;
        memcpy(&x, cp + vec0 + 4 * 5, 4);
        x += 1.0f;
        memcpy(cp + vec0 + 4 * 5, &x, 4);
        fix_crc(cp, size);
        REQUIRE(write_file(path, cp, size) == 0);
        free(cp);
        n_logs = 0;
        REQUIRE_OK(open_ro(c, &s, msg, sizeof msg));
        CHECK(n_logs >= 1);
        CHECK(verify_errors(s) == 0);
        float got[N_PROBE * NL * QROW];
        REQUIRE_OK(probe(s, got));
        CHECK(memcmp(got, want, sizeof got) == 0);
        lmk_session_close(s);
    }
    free(img);
    lmk_test_rmdir(c);
    lmk_test_rmdir(base);
    return 0;
}

/* ---- another fingerprint, shape, format ---- */

static int refusals(const char *root)
{
    char dir[3000], msg[512] = "";
    snprintf(dir, sizeof dir, "%s/refuse", root);
    if (make_base(dir))
        return 1;
    lmk_session *s = NULL;
    lmk_session_opts o = shape_opts(NULL, 0);
    o.fingerprint = "another-model";
    CHECK_RC(lmk_session_open(dir, &o, &s, msg, sizeof msg), LMK_EMISMATCH);
    CHECK(s == NULL);
    CHECK(strstr(msg, "another-model") != NULL); /* the message names both models */
    CHECK(strstr(msg, "persist-model") != NULL);
    o = shape_opts(NULL, 1); /* create=1 on an existing session of another shape */
    o.n_kv_heads = 1;
    o.n_heads = 2;
    CHECK_RC(lmk_session_open(dir, &o, &s, msg, sizeof msg), LMK_EMISMATCH);
    o = shape_opts("HNSW32", 0);
    CHECK_RC(lmk_session_open(dir, &o, &s, msg, sizeof msg), LMK_EMISMATCH);
    /* refused opens changed nothing */
    REQUIRE_OK(open_ro(dir, &s, msg, sizeof msg));
    CHECK(digest_of(s) == R.d_base);
    CHECK(verify_errors(s) == 0);
    lmk_session_close(s);
    lmk_test_rmdir(dir);
    return 0;
}

/* ---- process kills at random moments ---- */

typedef struct kill_arg {
    const char *dir;
    lmk_durability dur;
    uint64_t seed;
} kill_arg;

static void kill_ack(void *ud, int layer, int64_t ntok)
{
    (void)ud;
    shm->acked[layer] = ntok;
}

/* Child: open (creating), continue the stream with ragged appends, syncing now and then so
 * kills also land in index saves. Before each append the in-flight size is published. */
static int child_writer(void *p)
{
    kill_arg *a = p;
    lmk_session *s = NULL;
    char msg[512];
    shm->phase = PH_OPEN;
    if (open_rw(a->dir, 1, a->dur, &s, msg, sizeof msg)) {
        snprintf(shm->msg, sizeof shm->msg, "%s", msg);
        return 3;
    }
    for (int l = 0; l < NL; l++)
        shm->acked[l] = lmk_session_tokens(s, l);
    shm->phase = PH_RW;
    uint64_t rs = a->seed;
    float *k = malloc(48 * ROW * 4), *v = malloc(48 * ROW * 4);
    int rc = LMK_OK, round = 0;
    while (rc == LMK_OK) {
        int any = 0;
        int64_t n = 1 + (int64_t)(lmk_test_rand(&rs) % 48);
        for (int l = 0; l < NL && rc == LMK_OK; l++) {
            int64_t have = lmk_session_tokens(s, l);
            int64_t m = have + n <= N_KILL ? n : N_KILL - have;
            if (m <= 0)
                continue;
            any = 1;
            gen(l, have, m, k, v);
            shm->inflight_n = m;
            shm->inflight_layer = l;
            rc = lmk_session_append(s, l, m, k, v);
            if (rc == LMK_OK)
                shm->acked[l] = have + m;
            shm->inflight_layer = -1;
        }
        if (!any)
            break;
        if (++round % 16 == 0 && rc == LMK_OK)
            rc = lmk_session_sync(s);
    }
    if (rc)
        snprintf(shm->msg, sizeof shm->msg, "%s", lmk_session_errmsg(s));
    free(k);
    free(v);
    lmk_session_close(s);
    return rc ? 4 : 0;
}

static int run_kills(const char *root, int iters)
{
    static const lmk_durability durs[] = {LMK_DURABLE_NOMETA, LMK_DURABLE_FULL,
                                          LMK_DURABLE_NOMETA, LMK_DURABLE_NONE};
    static const char *dur_name[] = {"FULL", "NOMETA", "NONE"};
    char dir[3000], msg[512] = "";
    uint64_t rs = g_seed ^ 0xc0ffee;
    /* how long an uninterrupted writer takes, per durability: the kill delays span it */
    double span[3] = {0, 0, 0};
    for (int d = 0; d < 3; d++) {
        snprintf(dir, sizeof dir, "%s/kill-time", root);
        lmk_test_rmdir(dir);
        kill_arg a = {dir, (lmk_durability)d, 1};
        double t0 = now_s();
        outcome o = run_child(child_writer, &a, 120, 0);
        span[d] = now_s() - t0;
        REQUIRE(o.done);
        lmk_session *s = NULL;
        REQUIRE_OK(open_ro(dir, &s, msg, sizeof msg));
        CHECK(digest_of(s) == R.d_kill);
        lmk_session_close(s);
        printf("kills: an uninterrupted writer (%s) takes %.3f s\n", dur_name[d], span[d]);
    }
    int kills = 0, killed_mid = 0, inflight_committed = 0, inflight_dropped = 0;
    const int per_iter = 3;
    for (int it = 0; it < iters; it++) {
        lmk_durability dur = durs[it % 4];
        snprintf(dir, sizeof dir, "%s/kill-%d", root, it);
        lmk_test_rmdir(dir);
        int64_t stored[NL] = {0}; /* what the session held before this writer started */
        for (int kx = 0; kx < per_iter; kx++) {
            kill_arg a = {dir, dur, lmk_test_rand(&rs)};
            memset(shm, 0, sizeof *shm);
            shm->inflight_layer = -1;
            /* a kill during the writer's open leaves what was stored before it */
            for (int l = 0; l < NL; l++)
                shm->acked[l] = stored[l];
            fflush(NULL);
            pid_t pid = fork();
            REQUIRE(pid >= 0);
            if (pid == 0) {
                struct rlimit rl = {0, 0};
                setrlimit(RLIMIT_CORE, &rl);
                alarm(120);
                _exit(child_writer(&a));
            }
            /* a random moment of the run, startup included */
            double delay = span[dur] * (double)(lmk_test_rand(&rs) % 1000) / 1000.0;
            struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            int st = 0;
            waitpid(pid, &st, 0);
            kills++;
            int was_killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            killed_mid += was_killed && shm->phase >= PH_OPEN;
            int il = shm->inflight_layer;
            int64_t acked[NL], inflight_n = shm->inflight_n;
            for (int l = 0; l < NL; l++)
                acked[l] = shm->acked[l];
            if (!was_killed)
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            /* reopen: every acknowledged append is there, the in-flight one entirely or
             * not at all, the data is the stream's, verify finds nothing */
            lmk_session *s = NULL;
            int orc = open_ro(dir, &s, msg, sizeof msg);
            if (orc == LMK_ENOTFOUND && shm->phase <= PH_OPEN) {
                /* killed before the session's configuration was committed: nothing to lose */
                continue;
            }
            if (orc) {
                printf("  kill %d.%d (%s, phase %d): reopen failed: %s\n", it, kx,
                       dur_name[dur], shm->phase, msg);
                CHECK(0);
                continue;
            }
            for (int l = 0; l < NL; l++) {
                int64_t got = lmk_session_tokens(s, l);
                int ok = got == acked[l] || (l == il && got == acked[l] + inflight_n);
                if (l == il && ok) {
                    if (got == acked[l])
                        inflight_dropped++;
                    else
                        inflight_committed++;
                }
                if (!ok)
                    printf("  kill %d.%d (%s): layer %d holds %lld tokens, %lld acknowledged, "
                           "in flight %lld at layer %d\n",
                           it, kx, dur_name[dur], l, (long long)got, (long long)acked[l],
                           (long long)inflight_n, il);
                CHECK(ok);
            }
            int64_t errs = verify_errors(s);
            if (errs)
                printf("  kill %d.%d (%s): verify reports %lld errors\n", it, kx, dur_name[dur],
                       (long long)errs);
            CHECK(errs == 0);
            CHECK(content_matches(s));
            for (int l = 0; l < NL; l++)
                stored[l] = lmk_session_tokens(s, l);
            lmk_session_close(s);
        }
        /* resume to the end in this process: the same data and answers as without kills */
        lmk_session *s = NULL;
        REQUIRE_OK(open_rw(dir, 1, dur, &s, msg, sizeof msg));
        REQUIRE_OK(ingest_to(s, N_KILL, 0, &rs, gen, NULL, NULL, 0));
        float out[N_PROBE * NL * QROW];
        REQUIRE_OK(probe(s, out));
        CHECK(digest_of(s) == R.d_kill);
        CHECK(memcmp(out, R.probe_kill, sizeof out) == 0);
        lmk_session_close(s);
        REQUIRE_OK(open_ro(dir, &s, msg, sizeof msg));
        CHECK(verify_errors(s) == 0);
        CHECK(digest_of(s) == R.d_kill);
        lmk_session_close(s);
        lmk_test_rmdir(dir);
    }
    printf("kills: %d (%d while the session was open); in-flight append found committed %d, "
           "absent %d; every acknowledged append present\n",
           kills, killed_mid, inflight_committed, inflight_dropped);
    lmk_test_rmdir(dir);
    return 0;
}

/* ---- an index file left ahead of the store, then a crash before the next save ----
 *
 * On-disk state after `landmark truncate` is killed between its store commit and its index
 * save (test_crash.sh produces it), or after a power loss undid the last commit under
 * NOMETA/NONE while the fsynced index file kept it: the index file covers more blocks than
 * the store. If the reopened session then appends different tokens and dies before its next
 * save, the file again has as many vectors as the store has blocks, but its tail belongs to
 * the discarded history. The open must not trust it: same answers as without crashes. */
static int stale_index_after_two_crashes(const char *root)
{
    char dir[3000], msg[512] = "", p[3200], keep[3200];
    snprintf(dir, sizeof dir, "%s/stale", root);
    lmk_session *s = NULL;
    REQUIRE_OK(open_rw(dir, 1, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    REQUIRE_OK(ingest_to(s, 800, 100, NULL, gen, NULL, NULL, 0));
    lmk_session_close(s); /* index files: 49 blocks */
    for (int i = 0; i < NL * KV; i++) {
        snprintf(p, sizeof p, "%s/index-L%d-H%d.lmki", dir, i / KV, i % KV);
        snprintf(keep, sizeof keep, "%s/keep-%d", dir, i);
        REQUIRE(copy_file(p, keep) == 0);
    }
    REQUIRE_OK(open_rw(dir, 0, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    REQUIRE_OK(lmk_session_truncate(s, 400));
    lmk_session_close(s);
    /* the truncation's index save "did not happen" */
    for (int i = 0; i < NL * KV; i++) {
        snprintf(p, sizeof p, "%s/index-L%d-H%d.lmki", dir, i / KV, i % KV);
        snprintf(keep, sizeof keep, "%s/keep-%d", dir, i);
        REQUIRE(rename(keep, p) == 0);
    }
    /* a writer appends a different continuation and is killed before any save */
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        lmk_session *w = NULL;
        char m2[400];
        if (open_rw(dir, 0, LMK_DURABLE_NOMETA, &w, m2, sizeof m2) ||
            ingest_to(w, 800, 100, NULL, gen_other, NULL, NULL, 0))
            _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    {
        unsigned char *img = NULL;
        size_t len = 0;
        int64_t nt = -1;
        snprintf(p, sizeof p, "%s/index-L0-H0.lmki", dir);
        if (read_file(p, &img, &len) == 0)
            lmk_index_parse_header(img, len, NULL, &nt, NULL, 0);
        free(img);
        printf("index file ahead of the store: after the second crash the file of L0 H0 "
               "covers %lld blocks, the store holds %d\n", (long long)nt, (800 - 1) / BL);
    }
    /* reference: the same history without crashes */
    char ref[3000];
    snprintf(ref, sizeof ref, "%s/stale-ref", root);
    lmk_session *r = NULL;
    REQUIRE_OK(open_rw(ref, 1, LMK_DURABLE_NOMETA, &r, msg, sizeof msg));
    REQUIRE_OK(ingest_to(r, 400, 100, NULL, gen, NULL, NULL, 0));
    REQUIRE_OK(ingest_to(r, 800, 100, NULL, gen_other, NULL, NULL, 0));
    float a[N_PROBE * NL * QROW], b[N_PROBE * NL * QROW];
    REQUIRE_OK(probe(r, a));
    REQUIRE_OK(open_rw(dir, 0, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    CHECK(digest_of(s) == digest_of(r));
    int64_t errs = verify_errors(s);
    REQUIRE_OK(probe(s, b));
    int same = memcmp(a, b, sizeof a) == 0;
    printf("index file ahead of the store, then a crash: verify errors %lld, answers %s the "
           "uninterrupted history's\n",
           (long long)errs, same ? "equal" : "DIFFER FROM");
    CHECK(errs == 0);
    CHECK(same);
    lmk_session_close(s);
    lmk_session_close(r);
    lmk_test_rmdir(dir);
    lmk_test_rmdir(ref);
    return 0;
}

/* ---- writes failing mid-ingest: file size limit, full filesystem ---- */

typedef struct full_arg {
    const char *dir;
    int fsize_limit; /* 1: set RLIMIT_FSIZE after the first tokens */
    int64_t first;   /* tokens written before the limit */
} full_arg;

/* Child: ingest until an append fails, then check the session is still readable in this
 * process, that further appends fail cleanly, and close. acked[] gets the committed counts,
 * rw_rc the first failure's code. */
static int child_fill(void *p)
{
    full_arg *a = p;
    lmk_session *s = NULL;
    char msg[512];
    shm->phase = PH_OPEN;
    if ((shm->open_rc = open_rw(a->dir, 1, LMK_DURABLE_NOMETA, &s, msg, sizeof msg))) {
        snprintf(shm->msg, sizeof shm->msg, "%s", msg);
        return 0;
    }
    if (ingest_to(s, a->first, 100, NULL, gen, kill_ack, NULL, 0) ||
        lmk_session_sync(s)) {
        snprintf(shm->msg, sizeof shm->msg, "before the limit: %s", lmk_session_errmsg(s));
        return 3;
    }
    if (a->fsize_limit) {
        char path[3200];
        snprintf(path, sizeof path, "%s/data.mdb", a->dir);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = (rlim_t)file_size(path) + 64 * 1024;
        if (setrlimit(RLIMIT_FSIZE, &rl)) {
            snprintf(shm->msg, sizeof shm->msg, "setrlimit: %s", strerror(errno));
            return 3;
        }
    }
    shm->phase = PH_RW;
    /* appends of 37 tokens: some commits seal blocks, some only grow the tail */
    int rc = ingest_to(s, 1 << 22, 37, NULL, gen, kill_ack, NULL, 0);
    shm->rw_rc = rc;
    snprintf(shm->msg, sizeof shm->msg, "%s", lmk_session_errmsg(s));
    if (rc == LMK_OK)
        return 5; /* never filled */
    /* still usable for reads: counts are the acknowledged ones, data is the stream's */
    int usable = 1;
    for (int l = 0; l < NL; l++)
        usable &= lmk_session_tokens(s, l) == shm->acked[l];
    float out[N_PROBE * NL * QROW];
    usable &= probe(s, out) == LMK_OK;
    int64_t errs = -1;
    usable &= lmk_session_verify(s, NULL, NULL, NULL, &errs) == LMK_OK && errs == 0;
    int64_t n0 = lmk_session_tokens(s, 0);
    float *k = malloc((size_t)n0 * ROW * 4), *v = malloc((size_t)n0 * ROW * 4);
    float *gk = malloc((size_t)n0 * ROW * 4), *gv = malloc((size_t)n0 * ROW * 4);
    usable &= k && v && gk && gv && lmk_session_read_kv(s, 0, 0, n0, k, v) == LMK_OK;
    if (usable && n0 <= N_KILL)
        usable &= memcmp(k, R.k[0], (size_t)n0 * ROW * 4) == 0;
    free(k);
    free(v);
    free(gk);
    free(gv);
    /* a retry fails the same way, without side effects */
    float kk[37 * ROW], vv[37 * ROW];
    int64_t have = lmk_session_tokens(s, 0);
    gen(0, have, 37, kk, vv);
    int rc2 = lmk_session_append(s, 0, 37, kk, vv);
    usable &= rc2 != LMK_OK ? lmk_session_tokens(s, 0) == have
                            : lmk_session_tokens(s, 0) == have + 37;
    if (rc2 == LMK_OK)
        shm->acked[0] = have + 37;
    shm->flags = usable;
    shm->digest_rc = rc2;
    lmk_session_close(s); /* saving index files may fail too: reported through the log */
    return 0;
}

/* Parent side: reopen without limits; the committed counts are there, verify is clean,
 * resuming reaches the reference. */
static int check_after_full(const char *dir, const char *what)
{
    char msg[512] = "";
    lmk_session *s = NULL;
    REQUIRE_OK(open_rw(dir, 0, LMK_DURABLE_NOMETA, &s, msg, sizeof msg));
    for (int l = 0; l < NL; l++) {
        if (lmk_session_tokens(s, l) != shm->acked[l])
            printf("  %s: layer %d holds %lld tokens, %lld were committed\n", what, l,
                   (long long)lmk_session_tokens(s, l), (long long)shm->acked[l]);
        CHECK(lmk_session_tokens(s, l) == shm->acked[l]);
    }
    CHECK(verify_errors(s) == 0);
    /* resume the exact stream, then compare with the uninterrupted reference at the same
     * length (truncate back if the run went further than N_KILL) */
    int64_t mx = 0;
    for (int l = 0; l < NL; l++)
        if (lmk_session_tokens(s, l) > mx)
            mx = lmk_session_tokens(s, l);
    if (mx <= N_KILL) {
        REQUIRE_OK(ingest_to(s, N_KILL, 100, NULL, gen, NULL, NULL, 0));
        CHECK(digest_of(s) == R.d_kill);
    } else {
        REQUIRE_OK(ingest_to(s, mx, 100, NULL, gen, NULL, NULL, 0));
        REQUIRE_OK(lmk_session_truncate(s, N_KILL));
        CHECK(digest_of(s) == R.d_kill);
    }
    float out[N_PROBE * NL * QROW];
    REQUIRE_OK(probe(s, out));
    CHECK(memcmp(out, R.probe_kill, sizeof out) == 0);
    lmk_session_close(s);
    return 0;
}

static int write_failures(const char *root)
{
    char dir[3000];
    /* 1. file size limit (EFBIG, the kernel's answer for a full quota) */
    snprintf(dir, sizeof dir, "%s/fsize", root);
    lmk_test_rmdir(dir);
    full_arg a = {dir, 1, 500};
    outcome o = run_child(child_fill, &a, 120, 0);
    printf("file size limit: append failed with %d (%s) after %lld/%lld tokens; still "
           "readable: %s; retry: %s; %s\n",
           shm->rw_rc, lmk_strerror(shm->rw_rc), (long long)shm->acked[0],
           (long long)shm->acked[1], shm->flags ? "yes" : "NO", lmk_strerror(shm->digest_rc),
           shm->msg);
    CHECK(o.done);
    CHECK(shm->rw_rc == EFBIG || shm->rw_rc == ENOSPC || shm->rw_rc == LMK_ESTORE);
    CHECK(shm->flags == 1);
    CHECK(shm->acked[0] >= 500);
    if (o.done)
        check_after_full(dir, "file size limit");
    CHECK(count_tmp_files(dir) == 0);
    lmk_test_rmdir(dir);

    /* 2. a full filesystem: a 2 MiB tmpfs in a private mount namespace of a child, so the
     * mount disappears with it whatever happens */
    char mnt[3000];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", root);
    lmk_test_rmdir(mnt);
    mkdir(mnt, 0755);
    typedef struct tmpfs_res {
        int mounted, filled, usable, reopen_ok, resumed_ok, tmp_left, errno_;
        int fill_rc, close_logs;
        int64_t acked[NL];
        char msg[512];
    } tmpfs_res;
    tmpfs_res *tr = mmap(NULL, sizeof *tr, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                         -1, 0);
    REQUIRE(tr != MAP_FAILED);
    memset(tr, 0, sizeof *tr);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm(120);
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount("tmpfs", mnt, "tmpfs", 0, "size=2m")) {
            tr->errno_ = errno;
            _exit(0);
        }
        tr->mounted = 1;
        char sd[3200];
        snprintf(sd, sizeof sd, "%s/s", mnt);
        full_arg fa = {sd, 0, 100};
        memset(shm, 0, sizeof *shm);
        int r = child_fill(&fa);
        tr->filled = r == 0 && shm->rw_rc != 0;
        tr->fill_rc = shm->rw_rc;
        tr->usable = shm->flags;
        for (int l = 0; l < NL; l++)
            tr->acked[l] = shm->acked[l];
        snprintf(tr->msg, sizeof tr->msg, "%s", shm->msg);
        /* reopen on the still-full filesystem: the committed tokens are there */
        lmk_session *s = NULL;
        char m2[400];
        n_logs = 0;
        if (open_rw(sd, 0, LMK_DURABLE_NOMETA, &s, m2, sizeof m2) == LMK_OK) {
            int ok = verify_errors(s) == 0;
            for (int l = 0; l < NL; l++)
                ok &= lmk_session_tokens(s, l) == tr->acked[l];
            tr->reopen_ok = ok;
            lmk_session_close(s);
        } else {
            snprintf(tr->msg, sizeof tr->msg, "reopen on the full filesystem: %s", m2);
        }
        /* space comes back: the session continues to the reference */
        if (mount(NULL, mnt, NULL, MS_REMOUNT, "size=32m") == 0 &&
            open_rw(sd, 0, LMK_DURABLE_NOMETA, &s, m2, sizeof m2) == LMK_OK) {
            int ok = 1;
            int64_t mx = 0;
            for (int l = 0; l < NL; l++)
                mx = lmk_session_tokens(s, l) > mx ? lmk_session_tokens(s, l) : mx;
            ok &= ingest_to(s, mx > N_KILL ? mx : N_KILL, 100, NULL, gen, NULL, NULL, 0) == 0;
            if (mx > N_KILL)
                ok &= lmk_session_truncate(s, N_KILL) == 0;
            ok &= digest_of(s) == R.d_kill && verify_errors(s) == 0;
            lmk_session_close(s);
            tr->resumed_ok = ok;
        }
        tr->tmp_left = count_tmp_files(sd);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!tr->mounted) {
        printf("full filesystem: skipped (cannot mount a tmpfs here: %s)\n",
               strerror(tr->errno_));
    } else {
        printf("full filesystem (2 MiB tmpfs): append failed with %d (%s) after %lld/%lld "
               "tokens; readable: %s; reopened full: %s; resumed after space came back: %s; "
               "%s\n",
               tr->fill_rc, lmk_strerror(tr->fill_rc), (long long)tr->acked[0],
               (long long)tr->acked[1], tr->usable ? "yes" : "NO", tr->reopen_ok ? "ok" : "NO",
               tr->resumed_ok ? "ok" : "NO", tr->msg);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(tr->filled);
        CHECK(tr->fill_rc == ENOSPC || tr->fill_rc == LMK_ESTORE || tr->fill_rc == LMK_EMAPFULL);
        CHECK(tr->usable);
        CHECK(tr->reopen_ok);
        CHECK(tr->resumed_ok);
        CHECK(tr->tmp_left == 0);
    }
    munmap(tr, sizeof *tr);
    lmk_test_rmdir(mnt);

    /* 3. not enough address space for the map: a clean error at open (the store maps its
     * whole map at once; AddressSanitizer needs the address space, so release only) */
    if (!UNDER_ASAN) {
        char d3[3000];
        snprintf(d3, sizeof d3, "%s/as-limit", root);
        if (make_base(d3))
            return 1;
        damage_arg da = {d3};
        memset(shm, 0, sizeof *shm);
        fflush(NULL);
        pid_t p3 = fork();
        REQUIRE(p3 >= 0);
        if (p3 == 0) {
            struct rlimit rl = {(rlim_t)4 << 30, (rlim_t)4 << 30};
            setrlimit(RLIMIT_AS, &rl);
            alarm(60);
            child_inspect(&da);
            _exit(0);
        }
        waitpid(p3, &st, 0);
        printf("address space below the map size: open gives %d (%s): %s\n", shm->open_rc,
               lmk_strerror(shm->open_rc), shm->msg);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(shm->open_rc != LMK_OK);
        lmk_test_rmdir(d3);
    }
    return 0;
}

/* ---- durability: append throughput (LMK_PERSIST_BENCH) ---- */

static int bench_durability(const char *root, int64_t tokens)
{
    enum { BNL = 2, BNH = 8, BKV = 2, BD = 64, BBL = 64 };
    const size_t row = (size_t)BKV * BD;
    static const char *names[] = {"FULL", "NOMETA", "NONE"};
    const int64_t chunks[] = {4096, 64, 1};
    float *k = malloc(4096 * row * 4), *v = malloc(4096 * row * 4);
    REQUIRE(k && v);
    uint64_t seed = 1;
    for (size_t i = 0; i < 4096 * row; i++) {
        k[i] = lmk_test_uniform(&seed);
        v[i] = lmk_test_uniform(&seed);
    }
    for (int c = 0; c < 3; c++) {
        int64_t n_tok = chunks[c] == 4096 ? tokens : chunks[c] == 64 ? tokens / 8 : 4096;
        for (int d = 0; d < 3; d++) {
            char dir[3000], msg[512];
            snprintf(dir, sizeof dir, "%s/bench-%s", root, names[d]);
            lmk_test_rmdir(dir);
            lmk_session_opts o = lmk_session_opts_default();
            o.n_layers = BNL;
            o.n_heads = BNH;
            o.n_kv_heads = BKV;
            o.head_dim = BD;
            o.block_len = BBL;
            o.create = 1;
            o.durability = (lmk_durability)d;
            lmk_session *s = NULL;
            REQUIRE_OK(lmk_session_open(dir, &o, &s, msg, sizeof msg));
            int64_t commits = 0;
            double t0 = now_s();
            for (int64_t t = 0; t < n_tok; t += chunks[c])
                for (int l = 0; l < BNL; l++) {
                    int64_t off = (t % 4096) + chunks[c] <= 4096 ? t % 4096 : 0;
                    REQUIRE_OK(lmk_session_append(s, l, chunks[c], k + off * row,
                                                  v + off * row));
                    commits++;
                }
            double t_app = now_s() - t0;
            REQUIRE_OK(lmk_session_sync(s));
            double t_all = now_s() - t0;
            lmk_session_close(s);
            printf("{\"durability\": \"%s\", \"tokens_per_append\": %lld, \"tokens\": %lld, "
                   "\"commits\": %lld, \"append_s\": %.3f, \"with_final_sync_s\": %.3f, "
                   "\"tokens_per_s\": %.0f, \"commits_per_s\": %.0f}\n",
                   names[d], (long long)chunks[c], (long long)n_tok, (long long)commits, t_app,
                   t_all, (double)n_tok / t_all, (double)commits / t_app);
            fflush(stdout);
            lmk_test_rmdir(dir);
        }
    }
    free(k);
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    /* single-threaded OpenMP/OpenBLAS before any library runs (see the file comment) */
    if (!getenv("LMK_PERSIST_CHILD")) {
        setenv("LMK_PERSIST_CHILD", "1", 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        execv("/proc/self/exe", argv);
        perror("re-exec");
        /* go on: the children might then hang, which the timeouts catch */
    }
    g_seed = lmk_test_seed("test_persist", 20240601);
    shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char root[2048];
    lmk_test_dir(root, sizeof root, "persist");
    if (mkdir(root, 0755)) {
        perror(root);
        return 1;
    }
    const char *bench = getenv("LMK_PERSIST_BENCH");
    if (bench) {
        char *end;
        long long n = strtoll(bench, &end, 10);
        if (*end == 'k' || *end == 'K')
            n *= 1024;
        int r = bench_durability(root, n > 0 ? n : 262144);
        lmk_test_rmdir(root);
        return r || lmk_test_failures;
    }
    snprintf(g_scratch, sizeof g_scratch, "/dev/shm/lmk-persist-%d", (int)getpid());
    if (mkdir(g_scratch, 0755) != 0)
        snprintf(g_scratch, sizeof g_scratch, "%s", root);
    printf("damaged copies in %s\n", g_scratch);
    const char *it = getenv("LMK_CRASH_ITERS");
    int iters = it ? atoi(it) : 4;
    double t0 = now_s();
    if (build_reference(root) == 0) {
        double t = now_s();
        refusals(root);
        run_kills(root, iters);
        printf("  (kills: %.1f s)\n", now_s() - t);
        t = now_s();
        damaged_data_files(root);
        printf("  (damaged data files: %.1f s)\n", now_s() - t);
        t = now_s();
        damaged_index_files(root);
        printf("  (damaged index files: %.1f s)\n", now_s() - t);
        t = now_s();
        stale_index_after_two_crashes(root);
        write_failures(root);
        printf("  (write failures: %.1f s)\n", now_s() - t);
    }
    printf("test_persist: %.1f s\n", now_s() - t0);
    int rc = lmk_test_finish("test_persist", 0);
    if (rc == 0)
        lmk_test_rmdir(root);
    if (strcmp(g_scratch, root) != 0)
        lmk_test_rmdir(g_scratch);
    return rc;
}
