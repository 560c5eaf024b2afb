/* landmark bench — the reopening process: for every setting a separate process reopens the
 * session read-only, runs the same steps and reports its resident memory, which is the
 * memory a reader of the session needs.
 *
 * Why a helper program started with posix_spawn, and not fork() alone: a forked child
 * starts with a copy of the parent's page tables, so its RssAnon would count the parent's
 * whole heap (the query arrays, the FAISS indices just built, OpenBLAS's buffers) and the
 * figure would not be the reader's memory any more; and libgomp is not fork-safe once the
 * parent has used a parallel region. A fresh program has a fresh address space and its own
 * OpenMP runtime. The helper (`landmark-bench-child`, bench_child_main.c) is built with the
 * library; cfg.child_exe names another one. The parent kills it after cfg.child_timeout_s.
 *
 * Protocol: landmark-bench-child DIR STEPS TOPK MODE THREADS EF NPROBE SOURCE SEED SPAN
 * PROBES (SOURCE "-": synthetic); one JSON line of figures on stdout, exit status 0. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_measure.h"
#include "lmk_clock.h"

extern char **environ;

#ifndef LMK_BENCH_CHILD_BUILD
#define LMK_BENCH_CHILD_BUILD ""
#endif
#ifndef LMK_BENCH_CHILD_INSTALL
#define LMK_BENCH_CHILD_INSTALL "/usr/local/libexec/landmark-bench-child"
#endif

const char *lmk_bench_child_exe_default(void)
{
    if (LMK_BENCH_CHILD_BUILD[0] && access(LMK_BENCH_CHILD_BUILD, X_OK) == 0)
        return LMK_BENCH_CHILD_BUILD;
    return LMK_BENCH_CHILD_INSTALL;
}

/* ---- the parent's side ---- */

/* Read the child's stdout into buf until EOF or the deadline. Returns 0, or -1 on timeout. */
static int read_until(int fd, char *buf, size_t cap, double deadline)
{
    size_t got = 0;
    for (;;) {
        double left = deadline - lmk_clock_s();
        if (left <= 0)
            return -1;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int n = poll(&pf, 1, left > 60 ? 60000 : (int)(left * 1000) + 1);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        ssize_t k = read(fd, buf + got, cap - 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
        if (got == cap - 1)
            break;
    }
    buf[got] = 0;
    return 0;
}

/* Start the helper with its stdout on a pipe; returns its pid or -1 (errno-like in *e). */
static pid_t spawn_child(const char *exe, char **argv, int *rfd, int *e)
{
    int fd[2];
    if (pipe2(fd, O_CLOEXEC)) {
        *e = errno;
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1); /* dup2 clears FD_CLOEXEC on 1 */
    pid_t pid;
    fflush(NULL);
    *e = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (*e) {
        close(fd[0]);
        return -1;
    }
    *rfd = fd[0];
    return pid;
}

void bench_child_measure(const lmk_bench_cfg *c, const char *sdir, int ef, int np,
                         lmk_bench_result *res)
{
    res->rss_anon_mb = res->rss_file_mb = res->child_step_ms_p50 = NAN;
    const char *exe = c->child_exe ? c->child_exe : lmk_bench_child_exe_default();
    char a[9][32];
    snprintf(a[0], 32, "%d", c->steps);
    snprintf(a[1], 32, "%d", c->top_k);
    snprintf(a[2], 32, "%d", c->mode_union);
    snprintf(a[3], 32, "%d", c->threads);
    snprintf(a[4], 32, "%d", ef);
    snprintf(a[5], 32, "%d", np);
    snprintf(a[6], 32, "%llu", (unsigned long long)c->seed);
    snprintf(a[7], 32, "%d", c->needle_span);
    snprintf(a[8], 32, "%d", c->probes);
    char *argv[] = {(char *)exe, (char *)sdir, a[0], a[1], a[2], a[3], a[4], a[5],
                    c->recorded ? (char *)c->recorded : "-", a[6], a[7], a[8], NULL};
    int rfd = -1, e = 0;
    pid_t pid = spawn_child(exe, argv, &rfd, &e);
    if (pid < 0) {
        bench_log(c, LMK_BENCH_WARN, "cannot start the reopening process %s: %s; memory not "
                  "measured", exe, strerror(e));
        return;
    }
    char buf[1024];
    double limit = c->child_timeout_s > 0 ? c->child_timeout_s : 900;
    int timed_out = read_until(rfd, buf, sizeof buf, lmk_clock_s() + limit);
    close(rfd);
    if (timed_out)
        kill(pid, SIGKILL);
    int wst = 0;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    if (timed_out || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
        bench_log(c, LMK_BENCH_WARN, timed_out
                  ? "the reopening process took over %.0f s and was killed; memory not measured"
                  : "the reopening process failed (status %.0f); memory not measured",
                  timed_out ? limit : (double)wst);
        return;
    }
    const char *p;
    if ((p = strstr(buf, "\"rss_anon_mb\": ")))
        res->rss_anon_mb = strtod(p + 15, NULL);
    if ((p = strstr(buf, "\"rss_file_mb\": ")))
        res->rss_file_mb = strtod(p + 15, NULL);
    if ((p = strstr(buf, "\"step_ms_p50\": ")))
        res->child_step_ms_p50 = strtod(p + 15, NULL);
}

/* ---- the helper's side ---- */

int bench_child_parse(int argc, char **argv, bench_child_args *a)
{
    if (argc != 12)
        return -1;
    memset(a, 0, sizeof *a);
    a->dir = argv[1];
    lmk_bench_cfg *c = &a->cfg;
    c->steps = atoi(argv[2]);
    c->top_k = atoi(argv[3]);
    c->mode_union = atoi(argv[4]);
    c->threads = atoi(argv[5]);
    a->ef = atoi(argv[6]);
    a->nprobe = atoi(argv[7]);
    c->recorded = strcmp(argv[8], "-") ? argv[8] : NULL;
    c->seed = strtoull(argv[9], NULL, 10);
    c->needle_span = atoi(argv[10]);
    c->probes = atoi(argv[11]);
    return c->steps < 1 || c->threads < 1 || c->top_k < 1 ? -1 : 0;
}

/* Anonymous and file-backed resident memory of this process, from /proc/self/status. */
static void read_rss(double *anon_mb, double *file_mb)
{
    *anon_mb = *file_mb = NAN;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "RssAnon: %lld kB", &kb) == 1)
            *anon_mb = kb / 1024.0;
        else if (sscanf(line, "RssFile: %lld kB", &kb) == 1)
            *file_mb = kb / 1024.0;
    }
    fclose(f);
}

/* Warm-up and measured steps on the reopened session; t (steps) gets each step's time, and
 * the resident memory is read after the last step, with every buffer still held. */
static int child_steps(lmk_session *s, bench_workload *w, const lmk_bench_cfg *c,
                       const lmk_attend_opts *ao, double *t, double *rss, char *err,
                       size_t cap)
{
    size_t qrow = (size_t)c->n_heads * c->head_dim, ql = (size_t)c->n_layers * qrow;
    float *q = malloc(ql * sizeof(float)), *out = malloc(ql * sizeof(float));
    int64_t *tg = malloc((size_t)c->n_layers * sizeof(int64_t));
    int rc = q && out && tg ? LMK_OK : ENOMEM;
    if (rc)
        snprintf(err, cap, "out of memory");
    for (int p = -BENCH_WARMUP_STEPS; !rc && p < c->steps; p++) {
        rc = bench_step_queries(w, c, p < 0 ? c->steps - p : p, q, tg, err, cap);
        double ts = lmk_clock_s();
        for (int l = 0; !rc && l < c->n_layers; l++)
            if ((rc = lmk_session_attend(s, l, 1, q + l * qrow, ao, out + l * qrow, NULL)))
                snprintf(err, cap, "attend: %s", lmk_session_errmsg(s));
        if (p >= 0)
            t[p] = lmk_clock_s() - ts;
    }
    if (!rc)
        read_rss(&rss[0], &rss[1]);
    free(q);
    free(out);
    free(tg);
    return rc;
}

int bench_child_work(const bench_child_args *a, FILE *outf, char *err, size_t cap)
{
    lmk_bench_cfg c = a->cfg;
    double t0 = lmk_clock_s();
    lmk_session_opts so = lmk_session_opts_default();
    so.read_only = 1;
    so.n_threads = c.threads;
    so.index_spec = NULL;
    lmk_session *s = NULL;
    if (lmk_session_open(a->dir, &so, &s, err, cap))
        return -1;
    double open_s = lmk_clock_s() - t0;
    bench_blas_threads(1);
    bench_omp_threads(1);
    lmk_session_info info;
    lmk_session_info_get(s, &info);
    c.n_layers = info.n_layers;
    c.n_heads = info.n_heads;
    c.n_kv_heads = info.n_kv_heads;
    c.head_dim = info.head_dim;
    c.block_len = info.block_len;
    c.tokens = info.tokens;
    bench_workload w;
    double *t = malloc((size_t)c.steps * sizeof(double));
    double rss[2];
    int rc = t ? bench_workload_open(&w, &c, err, cap) : ENOMEM;
    if (!rc) {
        lmk_attend_opts ao = bench_attend_opts(&c, a->ef, a->nprobe);
        rc = child_steps(s, &w, &c, &ao, t, rss, err, cap);
        bench_workload_close(&w);
    }
    if (!rc) {
        fprintf(outf, "{\"rss_anon_mb\": %.3f, \"rss_file_mb\": %.3f, \"step_ms_p50\": %.4f, "
                "\"open_s\": %.3f}\n", rss[0], rss[1], 1e3 * bench_percentile(t, c.steps, 0.5),
                open_s);
        fflush(outf);
    }
    free(t);
    lmk_session_close(s);
    return rc ? -1 : 0;
}
