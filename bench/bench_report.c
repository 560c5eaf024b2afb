/* landmark bench — the report: aligned table, JSON record, gnuplot chart. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_priv.h"

extern char **environ;

static const char *params_str(const lmk_bench_result *r, char *buf, size_t cap)
{
    if (r->ef_search > 0)
        snprintf(buf, cap, "efSearch=%d", r->ef_search);
    else if (r->nprobe > 0)
        snprintf(buf, cap, "nprobe=%d", r->nprobe);
    else
        snprintf(buf, cap, "-");
    return buf;
}

/* A number, or "-" when it is not defined (NAN). */
static const char *num(char *buf, size_t cap, const char *fmt, double x)
{
    if (isnan(x))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, fmt, x);
    return buf;
}

/* The million-token targets (reported, not asserted): the fastest ANN setting (not Flat)
 * with recall@k >= 0.95 and needle hit rate >= 0.99 (or recall alone when the stream has
 * no needles); returns its index or -1. */
static int best_ann(const lmk_bench_result *res, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        const lmk_bench_result *x = &res[i];
        if (!strcmp(x->index, "Flat") || isnan(x->recall_at_k) || x->recall_at_k < 0.95)
            continue;
        if (!isnan(x->needle_hit_rate) && x->needle_hit_rate < 0.99)
            continue;
        if (best < 0 || x->step_ms_p50 < res[best].step_ms_p50)
            best = i;
    }
    return best;
}

static double max_anon(const lmk_bench_result *res, int n)
{
    double m = NAN;
    for (int i = 0; i < n; i++)
        if (!isnan(res[i].rss_anon_mb) && (isnan(m) || res[i].rss_anon_mb > m))
            m = res[i].rss_anon_mb;
    return m;
}

void lmk_bench_write_table(FILE *f, const lmk_bench_report *rep)
{
    const lmk_bench_cfg *c = &rep->cfg;
    const lmk_bench_facts *r = &rep->run;
    const lmk_bench_dense *d = &rep->dense;
    const lmk_bench_result *res = rep->results;
    int n = rep->n_results;
    fprintf(f, "landmark bench: %lld tokens, %d layers, %d/%d heads, head_dim %d, block_len %d, "
               "top-k %d, %s, %s softmax, %d thread%s, %d steps\n",
            (long long)c->tokens, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
            c->block_len, c->top_k, c->dtype_f16 ? "f16" : "f32",
            c->mode_union ? "union" : "grouped", c->threads, c->threads > 1 ? "s" : "",
            c->steps);
    if (c->recorded)
        fprintf(f, "workload: recorded stream %s\n", c->recorded);
    else
        fprintf(f, "workload: synthetic (seed %llu, needle span %d, %d needles), %s queries\n",
                (unsigned long long)c->seed, c->needle_span, r->n_needles,
                c->probes ? "probe" : "ordinary");
    fprintf(f, "session: %lld landmarks per (layer, KV head), K/V %.1f MiB, ingest %.1f s "
               "(%.0f tokens/s, storage + Flat index)\n",
            (long long)r->blocks, r->kv_bytes / 1048576.0, r->ingest_s,
            r->ingest_s > 0 ? c->tokens / r->ingest_s : 0.0);
    fprintf(f, "dense baseline: all K/V as f32 in RAM (%.1f MiB), OpenBLAS, %d thread%s: "
               "step p50 %.3f ms, p99 %.3f ms\n",
            d->memory_mb, d->threads, d->threads > 1 ? "s" : "", d->step_ms_p50,
            d->step_ms_p99);
    fprintf(f, "read bandwidth %.2f GB/s (%d thread%s); bound_ms: a step's landmark bytes "
               "scanned plus block bytes fetched at that bandwidth\n\n",
            r->read_gbs, c->threads, c->threads > 1 ? "s" : "");
    const char *hdr[] = {"index", "params", "recall@k", "needle", "attn_err", "p50_ms",
                         "bound_ms", "p99_ms", "speedup", "search_ms", "fetch_ms", "attn_ms",
                         "ingest_tok/s", "build_s", "anon_MB", "file_MB", "disk_MB"};
    enum { NC = 17 };
    int wdt[NC];
    for (int j = 0; j < NC; j++)
        wdt[j] = (int)strlen(hdr[j]);
    typedef char row_cells[NC][48];
    row_cells *cell = malloc((size_t)(n > 0 ? n : 1) * sizeof *cell);
    if (!cell)
        return;
    int rows = n;
    for (int i = 0; i < rows; i++) {
        const lmk_bench_result *x = &res[i];
        snprintf(cell[i][0], 48, "%.47s", x->index);
        params_str(x, cell[i][1], 48);
        num(cell[i][2], 48, "%.4f", x->recall_at_k);
        num(cell[i][3], 48, "%.4f", x->needle_hit_rate);
        num(cell[i][4], 48, "%.2e", x->attn_rel_err);
        num(cell[i][5], 48, "%.3f", x->step_ms_p50);
        num(cell[i][6], 48, "%.3f", x->bound_ms);
        num(cell[i][7], 48, "%.3f", x->step_ms_p99);
        num(cell[i][8], 48, "%.1fx", x->speedup);
        num(cell[i][9], 48, "%.3f", x->search_ms);
        num(cell[i][10], 48, "%.3f", x->fetch_ms);
        num(cell[i][11], 48, "%.3f", x->attn_ms);
        num(cell[i][12], 48, "%.0f", x->ingest_tokens_per_s);
        num(cell[i][13], 48, "%.2f", x->build_s);
        num(cell[i][14], 48, "%.1f", x->rss_anon_mb);
        num(cell[i][15], 48, "%.1f", x->rss_file_mb);
        num(cell[i][16], 48, "%.1f", x->disk_mb);
        for (int j = 0; j < NC; j++) {
            int l = (int)strlen(cell[i][j]);
            if (l > wdt[j])
                wdt[j] = l;
        }
    }
    for (int j = 0; j < NC; j++)
        fprintf(f, j < 2 ? "%-*s  " : "%*s  ", wdt[j], hdr[j]);
    fputc('\n', f);
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < NC; j++)
            fprintf(f, j < 2 ? "%-*s  " : "%*s  ", wdt[j], cell[i][j]);
        fputc('\n', f);
    }
    free(cell);
    int b = best_ann(res, n);
    char pb[48];
    if (b >= 0)
        fprintf(f, "\nbest ANN setting with recall@k >= 0.95 and needle hit rate >= 0.99: %s %s, "
                   "%.1fx faster than dense (target >= 50x); its step: search %.3f ms, fetch "
                   "%.3f ms, attention %.3f ms\n",
                res[b].index, params_str(&res[b], pb, sizeof pb), res[b].speedup,
                res[b].search_ms, res[b].fetch_ms, res[b].attn_ms);
    else
        fprintf(f, "\nbest ANN setting with recall@k >= 0.95 and needle hit rate >= 0.99: none\n");
    double ma = max_anon(res, n);
    if (!isnan(ma))
        fprintf(f, "reopening process: at most %.1f MiB anonymous memory = %.2f%% of the session's "
                   "K/V bytes (target <= 5%%)\n", ma, 100.0 * ma * 1048576.0 / r->kv_bytes);
    fprintf(f, "\nrecall@k: retrieved blocks among the exact top-%d of the stored landmarks; "
               "attn_err: max relative L2 error against dense attention;\nstep times: one "
               "decoding token over all layers and heads; *_ms: mean per step; anon/file MB: "
               "resident memory of a separate process that reopens the session and runs the "
               "steps.\nwall time of the run: %.1f s\n", c->top_k, r->wall_s);
}

static void jnum(FILE *f, const char *key, double x, const char *fmt, int comma)
{
    fprintf(f, "\"%s\": ", key);
    if (isnan(x) || isinf(x))
        fputs("null", f);
    else
        fprintf(f, fmt, x);
    if (comma)
        fputs(", ", f);
}

static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int lmk_bench_write_json(const char *path, const lmk_bench_report *rep, char *err,
                         size_t err_cap)
{
    const lmk_bench_cfg *c = &rep->cfg;
    const lmk_bench_facts *r = &rep->run;
    const lmk_bench_dense *d = &rep->dense;
    const lmk_bench_result *res = rep->results;
    int n = rep->n_results;
    FILE *f = fopen(path, "w");
    if (!f) {
        int e = errno;
        snprintf(err, err_cap, "cannot write %s: %s", path, strerror(e));
        return e;
    }
    fprintf(f, "{\"config\": {\"tokens\": %lld, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, "
               "\"head_dim\": %d, \"block_len\": %d, \"top_k\": %d, \"dtype\": \"%s\", "
               "\"mode\": \"%s\", \"threads\": %d, \"steps\": %d, \"preset\": ",
            (long long)c->tokens, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
            c->block_len, c->top_k, c->dtype_f16 ? "f16" : "f32",
            c->mode_union ? "union" : "grouped", c->threads, c->steps);
    if (c->preset)
        jstr(f, c->preset);
    else
        fputs("null", f);
    fputs(", \"workload\": ", f);
    if (c->recorded) {
        fputs("{\"kind\": \"recorded\", \"file\": ", f);
        jstr(f, c->recorded);
        fputs("}", f);
    } else {
        fprintf(f, "{\"kind\": \"synthetic\", \"seed\": %llu, \"needle_span\": %d, "
                   "\"needles\": %d, \"queries\": \"%s\"}",
                (unsigned long long)c->seed, c->needle_span, r->n_needles,
                c->probes ? "probe" : "ordinary");
    }
    fprintf(f, ", \"landmarks_per_head\": %lld, \"kv_bytes\": %.0f, \"ingest_s\": %.3f, "
               "\"wall_s\": %.1f, \"ncpu\": %ld, \"read_gbs\": %.3f},\n",
            (long long)r->blocks, r->kv_bytes, r->ingest_s, r->wall_s,
            sysconf(_SC_NPROCESSORS_ONLN), r->read_gbs);
    fputs(" \"dense\": {", f);
    jnum(f, "step_ms_p50", d->step_ms_p50, "%.4f", 1);
    jnum(f, "step_ms_p99", d->step_ms_p99, "%.4f", 1);
    jnum(f, "memory_mb", d->memory_mb, "%.1f", 1);
    fprintf(f, "\"threads\": %d, \"dtype\": \"f32\"},\n \"targets\": {\"best_ann\": ", d->threads);
    int b = best_ann(res, n);
    if (b >= 0) {
        fputs("{\"index\": ", f);
        jstr(f, res[b].index);
        fprintf(f, ", \"ef_search\": %d, \"nprobe\": %d, ", res[b].ef_search, res[b].nprobe);
        jnum(f, "speedup", res[b].speedup, "%.2f", 0);
        fputs("}, ", f);
    } else {
        fputs("null, ", f);
    }
    double ma = max_anon(res, n);
    jnum(f, "max_rss_anon_mb", ma, "%.2f", 1);
    jnum(f, "max_rss_anon_share_of_kv", isnan(ma) ? NAN : ma * 1048576.0 / r->kv_bytes, "%.5f", 0);
    fputs("},\n \"results\": [", f);
    for (int i = 0; i < n; i++) {
        const lmk_bench_result *x = &res[i];
        fputs(i ? ",\n  {\"index\": " : "\n  {\"index\": ", f);
        jstr(f, x->index);
        fputs(", \"params\": {", f);
        if (x->ef_search > 0)
            fprintf(f, "\"efSearch\": %d", x->ef_search);
        else if (x->nprobe > 0)
            fprintf(f, "\"nprobe\": %d", x->nprobe);
        fputs("}, ", f);
        jnum(f, "recall_at_k", x->recall_at_k, "%.6f", 1);
        jnum(f, "needle_hit_rate", x->needle_hit_rate, "%.6f", 1);
        jnum(f, "attn_rel_err", x->attn_rel_err, "%.4e", 1);
        jnum(f, "attn_rel_err_p50", x->attn_rel_err_p50, "%.4e", 1);
        jnum(f, "step_ms_p50", x->step_ms_p50, "%.4f", 1);
        jnum(f, "bound_ms", x->bound_ms, "%.4f", 1);
        jnum(f, "step_ms_p99", x->step_ms_p99, "%.4f", 1);
        jnum(f, "search_ms", x->search_ms, "%.4f", 1);
        jnum(f, "fetch_ms", x->fetch_ms, "%.4f", 1);
        jnum(f, "attn_ms", x->attn_ms, "%.4f", 1);
        jnum(f, "blocks_fetched", x->blocks_fetched, "%.1f", 1);
        jnum(f, "speedup", x->speedup, "%.2f", 1);
        jnum(f, "ingest_tokens_per_s", x->ingest_tokens_per_s, "%.0f", 1);
        jnum(f, "build_s", x->build_s, "%.4f", 1);
        jnum(f, "rss_anon_mb", x->rss_anon_mb, "%.2f", 1);
        jnum(f, "rss_file_mb", x->rss_file_mb, "%.2f", 1);
        jnum(f, "child_step_ms_p50", x->child_step_ms_p50, "%.4f", 1);
        jnum(f, "disk_mb", x->disk_mb, "%.2f", 0);
        fputs("}", f);
    }
    fputs("\n ]\n}\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        int e = errno ? errno : EIO;
        snprintf(err, err_cap, "cannot write %s: %s", path, strerror(e));
        return e;
    }
    return LMK_OK;
}


int lmk_bench_have_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        char exe[4096];
        snprintf(exe, sizeof exe, "%.*s/gnuplot", len ? (int)len : 1, len ? path : ".");
        if (access(exe, X_OK) == 0)
            return 1;
        path += len + (path[len] == ':');
    }
    return 0;
}

/* One data block per index spec (the "family"), points in sweep order; fam gets each
 * family's first record. Returns the number of families, or -1. */
static int plot_data(FILE *f, const lmk_bench_report *rep, int *fam)
{
    int nf = 0;
    const lmk_bench_result *res = rep->results;
    for (int i = 0; i < rep->n_results; i++) {
        if (i == 0 || strcmp(res[i].index, res[i - 1].index)) {
            if (i)
                fputs("\n\n", f);
            if (nf < LMK_BENCH_MAX_SPECS)
                fam[nf++] = i;
        }
        fprintf(f, "%.6f %.6f\n", res[i].step_ms_p50,
                isnan(res[i].recall_at_k) ? 0.0 : res[i].recall_at_k);
    }
    return ferror(f) ? -1 : nf;
}

/* Recall against step time, as ANN benchmark sites plot it; dense as a vertical line. */
static void plot_script(FILE *f, const char *path, const char *dat, const lmk_bench_report *rep,
                        const int *fam, int nf)
{
    const lmk_bench_cfg *c = &rep->cfg;
    double dms = rep->dense.step_ms_p50;
    fprintf(f, "set terminal pngcairo size 1000,650 noenhanced\n"
               "set output '%s'\n"
               "set title 'landmark bench: %lld tokens, top-%d, %d thread%s (dense %.1f ms/step)'\n"
               "set xlabel 'decode step time p50 (ms, log scale)'\n"
               "set ylabel 'recall@%d'\n"
               "set logscale x\nset yrange [0:1.05]\nset xrange [*:%g]\nset grid\n"
               "set key bottom right\n"
               "set arrow from %g, graph 0 to %g, graph 1 nohead dashtype 2 lc rgb 'gray40'\n"
               "set label 'dense attention' at %g, graph 0.5 center rotate by 90 offset -1,0\n",
            path, (long long)c->tokens, c->top_k, c->threads, c->threads > 1 ? "s" : "",
            dms, c->top_k, dms * 2, dms, dms, dms);
    fputs("plot ", f);
    for (int j = 0; j < nf; j++) {
        fprintf(f, "%s'%s' index %d with linespoints pt 7 title '", j ? ", " : "", dat, j);
        for (const char *s = rep->results[fam[j]].index; *s; s++)
            if (*s != '\'')
                fputc(*s, f);
        fputs("'", f);
    }
    fputc('\n', f);
}

/* Run `gnuplot SCRIPT` (found on PATH, no shell) with its stdout on our stderr; returns
 * LMK_OK, the spawn error, or EIO when gnuplot fails. */
static int run_gnuplot(const char *script, const char *path, char *err, size_t cap)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    char *argv[] = {"gnuplot", (char *)script, NULL};
    pid_t pid;
    fflush(NULL);
    int e = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) {
        snprintf(err, cap, "--plot: cannot start gnuplot: %s", strerror(e));
        return e;
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(err, cap, "--plot: gnuplot failed (status %d) writing %s", st, path);
        return EIO;
    }
    return LMK_OK;
}

/* A temporary file /tmp/landmark-plot-XXXXXX opened for writing; name in tmpl. */
static FILE *temp_file(char *tmpl)
{
    int fd = mkstemp(tmpl);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f && fd >= 0) {
        close(fd);
        unlink(tmpl);
    }
    return f;
}

int lmk_bench_write_plot(const char *path, const lmk_bench_report *rep, char *err,
                         size_t err_cap)
{
    if (!lmk_bench_have_gnuplot()) {
        snprintf(err, err_cap, "--plot needs gnuplot, which is not installed");
        return ENOENT;
    }
    char dat[] = "/tmp/landmark-plot-XXXXXX", gp[] = "/tmp/landmark-plot-XXXXXX";
    int fam[LMK_BENCH_MAX_SPECS], nf = -1, rc = EIO;
    FILE *f = temp_file(dat), *g = f ? temp_file(gp) : NULL;
    if (f && g) {
        nf = plot_data(f, rep, fam);
        plot_script(g, path, dat, rep, fam, nf);
    }
    int bad = (f && fclose(f) != 0) | (g && (ferror(g) | (fclose(g) != 0)));
    if (f && g && nf >= 0 && !bad)
        rc = run_gnuplot(gp, path, err, err_cap);
    else
        snprintf(err, err_cap, "--plot: cannot write a temporary file: %s", strerror(errno));
    if (f)
        unlink(dat);
    if (g)
        unlink(gp);
    return rc;
}
