/* lmk_tasks.h, runs over one loaded model (lmk_run_open_model): four threads, each running
 * its own sessions over the same model at once, generate exactly what runs that open the
 * model themselves (lmk_run_open) generate alone; closing a run leaves the model open; a
 * session recorded with other landmark settings gets a model of its own. Needs the shared
 * model (LMK_SHARED); skipped with a notice when it is absent. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_tasks.h"
#include "lmk_test.h"

#define N_THREADS 4
#define ROUNDS 2
#define GEN 24

static const char *const prompts[N_THREADS] = {
    "In the beginning God created", "And the LORD said unto Moses,",
    "The pass key is 51234. Remember it.", "And Seth lived an hundred and five years,"};

typedef struct {
    const char *path, *root;
    lmk_model *m;             /* NULL: lmk_run_open */
    int idx, round;
    lmk_task_opts o;
    char text[4096];
    size_t len;
    int64_t tokens;
    int rc;
    char err[512];
} job;

static void on_token(void *ud, const char *piece, size_t n)
{
    job *j = ud;
    if (j->len + n < sizeof j->text) {
        memcpy(j->text + j->len, piece, n);
        j->len += n;
    }
}

/* Open (or create) the session, feed the prompt, generate GEN greedy tokens. */
static void run_one(job *j)
{
    char dir[800];
    snprintf(dir, sizeof dir, "%s/%s%d-%d", j->root, j->m ? "shared" : "own", j->idx, j->round);
    lmk_run *r = NULL;
    j->len = 0;
    j->rc = j->m ? lmk_run_open_model(dir, j->m, j->path, &j->o, &r, j->err, sizeof j->err)
                 : lmk_run_open(dir, j->path, &j->o, &r, j->err, sizeof j->err);
    lmk_run_prefill_stats ps;
    if (!j->rc)
        j->rc = lmk_run_prefill(r, NULL, NULL, 0, prompts[j->idx], strlen(prompts[j->idx]),
                                &ps, j->err, sizeof j->err);
    int64_t gen;
    double secs;
    if (!j->rc)
        j->rc = lmk_run_generate(r, GEN, 0, 42, on_token, j, &gen, &secs, j->err,
                                 sizeof j->err);
    if (!j->rc)
        j->rc = lmk_run_save(r, j->err, sizeof j->err);
    j->tokens = r ? lmk_run_n_tokens(r) : -1;
    lmk_run_close(r);
    j->text[j->len] = 0;
}

static void *thread_main(void *arg)
{
    job *j = arg;
    char first[4096];
    size_t first_len = 0;
    for (int round = 0; round < ROUNDS; round++) {
        j->round = round;
        run_one(j);
        if (j->rc)
            return NULL;
        if (round == 0) {
            memcpy(first, j->text, j->len);
            first_len = j->len;
        } else if (j->len != first_len || memcmp(first, j->text, j->len)) {
            j->rc = -1;
            snprintf(j->err, sizeof j->err, "round %d differs from round 0", round);
        }
    }
    return NULL;
}

int main(void)
{
    const char *sh = getenv("LMK_SHARED");
    char path[700], root[600];
    snprintf(path, sizeof path, "%s/models/landmark-tiny-kjv-f32.gguf", sh ? sh : "../shared");
    if (access(path, R_OK) != 0) {
        printf("NOTICE: shared model not found (%s): test_tasks skipped\n", path);
        return 0;
    }
    lmk_test_dir(root, sizeof root, "tasks");
    REQUIRE(mkdir(root, 0755) == 0);
    lmk_task_opts o = lmk_task_opts_default();
    o.durability = LMK_DURABLE_NONE;
    char err[512];

    /* alone, each run opening the model itself */
    static job own[N_THREADS], shared[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        own[i] = (job){.path = path, .root = root, .idx = i, .o = o};
        run_one(&own[i]);
        if (own[i].rc)
            fprintf(stderr, "own %d: %s\n", i, own[i].err);
        REQUIRE_OK(own[i].rc);
        CHECK(own[i].len > 0);
    }

    /* at once, over one model (two threads per core on the test machine) */
    lmk_model *m = NULL;
    REQUIRE_OK(lmk_task_model_open(path, &o, &m, err, sizeof err));
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        shared[i] = (job){.path = path, .root = root, .m = m, .idx = i, .o = o};
        REQUIRE(pthread_create(&th[i], NULL, thread_main, &shared[i]) == 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N_THREADS; i++) {
        if (shared[i].rc)
            fprintf(stderr, "shared %d: %s\n", i, shared[i].err);
        CHECK_RC(shared[i].rc, LMK_OK);
        int same = shared[i].len == own[i].len && !memcmp(shared[i].text, own[i].text, own[i].len);
        if (!same)
            fprintf(stderr, "thread %d: shared model '%s', own model '%s'\n", i, shared[i].text,
                    own[i].text);
        CHECK(same);
        CHECK(shared[i].tokens == own[i].tokens);
    }

    /* the model outlived every run: a session continued with it equals one continued with
     * a model of its own */
    job a = {.path = path, .root = root, .m = m, .idx = 0, .round = 0, .o = o};
    job b = {.path = path, .root = root, .m = NULL, .idx = 0, .round = 0, .o = o};
    run_one(&a);
    run_one(&b);
    CHECK_RC(a.rc, LMK_OK);
    CHECK_RC(b.rc, LMK_OK);
    CHECK(a.len == b.len && !memcmp(a.text, b.text, a.len) && a.tokens == b.tokens);

    /* a session run as an ordinary model (mem_freq 0): the loaded landmark model does not
     * fit it, so the run opens its own, with the session's settings */
    lmk_task_opts o0 = o;
    o0.mem_freq = 0;
    job p = {.path = path, .root = root, .m = NULL, .idx = 1, .round = 9, .o = o0};
    run_one(&p); /* creates own1-9 as an ordinary model */
    CHECK_RC(p.rc, LMK_OK);
    char src[800], dst[800];
    snprintf(src, sizeof src, "%s/own1-9", root);
    snprintf(dst, sizeof dst, "%s/shared1-9", root);
    REQUIRE(rename(src, dst) == 0);
    job q = {.path = path, .root = root, .m = m, .idx = 1, .round = 9, .o = o};
    run_one(&q); /* continues it (the session says mem_freq 0: the loaded model would be
                  * refused by the session's fingerprint) */
    CHECK_RC(q.rc, LMK_OK);
    if (q.rc)
        fprintf(stderr, "%s\n", q.err);
    CHECK(q.tokens > p.tokens);

    lmk_run *r = NULL;
    CHECK_RC(lmk_run_open_model(root, NULL, path, &o, &r, err, sizeof err), LMK_EINVAL);
    CHECK(r == NULL);
    lmk_model_close(m);
    if (!lmk_test_failures)
        lmk_test_rmdir(root);
    if (lmk_test_failures) {
        printf("test_tasks: FAILED (%d)\n", lmk_test_failures);
        return 1;
    }
    printf("test_tasks: ok (%d threads x %d rounds over one model)\n", N_THREADS, ROUNDS);
    return 0;
}
