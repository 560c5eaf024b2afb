/* landmark bench — the report: aligned table, JSON record, gnuplot chart. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_priv.h"

static const char *params_str(const bench_result *r, char *buf, size_t cap)
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

void bench_print_table(FILE *f, const bench_cfg *c, const bench_run *r, const bench_dense *d,
                       const bench_result *res, int n)
{
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
               "step p50 %.3f ms, p99 %.3f ms\n\n",
            d->memory_mb, d->threads, d->threads > 1 ? "s" : "", d->step_ms_p50,
            d->step_ms_p99);
    const char *hdr[] = {"index", "params", "recall@k", "needle", "attn_err", "p50_ms",
                         "p99_ms", "speedup", "search_ms", "fetch_ms", "attn_ms",
                         "ingest_tok/s", "build_s", "anon_MB", "file_MB", "disk_MB"};
    enum { NC = 16 };
    int wdt[NC];
    for (int j = 0; j < NC; j++)
        wdt[j] = (int)strlen(hdr[j]);
    typedef char row_cells[NC][48];
    row_cells *cell = malloc((size_t)(n > 0 ? n : 1) * sizeof *cell);
    if (!cell)
        return;
    int rows = n;
    for (int i = 0; i < rows; i++) {
        const bench_result *x = &res[i];
        snprintf(cell[i][0], 48, "%.47s", x->index);
        params_str(x, cell[i][1], 48);
        num(cell[i][2], 48, "%.4f", x->recall_at_k);
        num(cell[i][3], 48, "%.4f", x->needle_hit_rate);
        num(cell[i][4], 48, "%.2e", x->attn_rel_err);
        num(cell[i][5], 48, "%.3f", x->step_ms_p50);
        num(cell[i][6], 48, "%.3f", x->step_ms_p99);
        num(cell[i][7], 48, "%.1fx", x->speedup);
        num(cell[i][8], 48, "%.3f", x->search_ms);
        num(cell[i][9], 48, "%.3f", x->fetch_ms);
        num(cell[i][10], 48, "%.3f", x->attn_ms);
        num(cell[i][11], 48, "%.0f", x->ingest_tokens_per_s);
        num(cell[i][12], 48, "%.2f", x->build_s);
        num(cell[i][13], 48, "%.1f", x->rss_anon_mb);
        num(cell[i][14], 48, "%.1f", x->rss_file_mb);
        num(cell[i][15], 48, "%.1f", x->disk_mb);
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

int bench_write_json(const char *path, const bench_cfg *c, const bench_run *r,
                     const bench_dense *d, const bench_result *res, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
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
               "\"wall_s\": %.1f, \"ncpu\": %ld},\n",
            (long long)r->blocks, r->kv_bytes, r->ingest_s, r->wall_s,
            sysconf(_SC_NPROCESSORS_ONLN));
    fputs(" \"dense\": {", f);
    jnum(f, "step_ms_p50", d->step_ms_p50, "%.4f", 1);
    jnum(f, "step_ms_p99", d->step_ms_p99, "%.4f", 1);
    jnum(f, "memory_mb", d->memory_mb, "%.1f", 1);
    fprintf(f, "\"threads\": %d, \"dtype\": \"f32\"},\n \"results\": [", d->threads);
    for (int i = 0; i < n; i++) {
        const bench_result *x = &res[i];
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
    if (fclose(f) != 0 || bad)
        return -1;
    return 0;
}

int bench_have_gnuplot(void)
{
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

int bench_write_plot(const char *path, const bench_cfg *c, const bench_dense *d,
                     const bench_result *res, int n, char *err, size_t err_cap)
{
    /* One data block per index spec (the "family"), points in sweep order, plotted as
     * recall against step time, as ANN benchmark sites do; dense as a vertical line. */
    char dat[] = "/tmp/landmark-plot-XXXXXX";
    int fd = mkstemp(dat);
    if (fd < 0) {
        snprintf(err, err_cap, "--plot: cannot create a temporary file: %s", strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(dat);
        snprintf(err, err_cap, "--plot: %s", strerror(errno));
        return -1;
    }
    int fam[BENCH_MAX_SPECS], nf = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || strcmp(res[i].index, res[i - 1].index)) {
            if (i)
                fputs("\n\n", f);
            if (nf < BENCH_MAX_SPECS)
                fam[nf++] = i;
        }
        fprintf(f, "%.6f %.6f\n", res[i].step_ms_p50, isnan(res[i].recall_at_k) ? 0.0 : res[i].recall_at_k);
    }
    fclose(f);
    char gp[] = "/tmp/landmark-plot-XXXXXX";
    fd = mkstemp(gp);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        unlink(dat);
        snprintf(err, err_cap, "--plot: cannot create a temporary file");
        return -1;
    }
    double xmax = d->step_ms_p50 * 2;
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
            d->step_ms_p50, c->top_k, xmax, d->step_ms_p50, d->step_ms_p50, d->step_ms_p50);
    fputs("plot ", f);
    for (int j = 0; j < nf; j++) {
        fprintf(f, "%s'%s' index %d with linespoints pt 7 title '", j ? ", " : "", dat, j);
        for (const char *s = res[fam[j]].index; *s; s++)
            if (*s != '\'')
                fputc(*s, f);
        fputs("'", f);
    }
    fputc('\n', f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 1>&2", gp);
    int rc = system(cmd);
    unlink(dat);
    unlink(gp);
    if (rc != 0) {
        snprintf(err, err_cap, "--plot: gnuplot failed (status %d) writing %s", rc, path);
        return -1;
    }
    return 0;
}
