/* landmark bench: the command line over bench/lmk_bench.h — options into an lmk_bench_cfg,
 * one run, the table on stdout and the JSON record and chart where asked. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_bench.h"
#include "lmk_oracle.h"
#include "opt.h"

#define CMD "bench"

/* ---- what the run shows on a terminal ---- */

static void progress(void *ud, const char *what, int64_t done, int64_t total)
{
    (void)ud;
    if (!isatty(2) || total <= 0)
        return;
    int w = 40, n = (int)(w * done / total);
    fprintf(stderr, "\r%-22.22s [%.*s%*s] %5.1f%%", what, n,
            "########################################", w - n, "",
            100.0 * (double)done / (double)total);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

static void log_line(void *ud, lmk_bench_level level, const char *msg)
{
    (void)ud;
    if (level == LMK_BENCH_WARN)
        lmk_cli_error(CMD, "%s", msg);
    else if (isatty(2))
        fprintf(stderr, "landmark %s: %s\n", CMD, msg);
}

/* ---- options that are more than a value ---- */

typedef struct bench_args {
    lmk_bench_cfg c;
    int user_specs;        /* the first --index replaces the preset's list */
    long long tokens;
    unsigned long long seed;
    const char *save, *json, *plot;
    lmk_repr_cfg r;        /* --repr: the representative table of a recorded stream */
} bench_args;

static const char *preset_of(int argc, char **argv)
{
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            name = argv[i + 1];
        else if (!strncmp(argv[i], "--preset=", 9))
            name = argv[i] + 9;
    }
    return name;
}

/* --preset was applied before parsing (so that other flags override it whatever their
 * order); here it is only checked. */
static int opt_preset(void *ctx, const char *v, char *err, size_t cap)
{
    lmk_bench_cfg probe = *(const lmk_bench_cfg *)ctx;
    if (lmk_bench_cfg_preset(&probe, v) == LMK_OK)
        return 0;
    snprintf(err, cap, "1m, small or tiny");
    return -1;
}

static int opt_index(void *ctx, const char *v, char *err, size_t cap)
{
    bench_args *a = ctx;
    if (!a->user_specs) {
        a->c.n_specs = 0;
        a->user_specs = 1;
    }
    if (!*v || strlen(v) >= LMK_BENCH_SPEC_LEN) {
        snprintf(err, cap, "a factory string of 1..%d characters", LMK_BENCH_SPEC_LEN - 1);
        return -1;
    }
    if (a->c.n_specs >= LMK_BENCH_MAX_SPECS - 1) {
        snprintf(err, cap, "at most %d --index options", LMK_BENCH_MAX_SPECS - 1);
        return -1;
    }
    snprintf(a->c.specs[a->c.n_specs++], LMK_BENCH_SPEC_LEN, "%s", v);
    return 0;
}

/* NAME=V1,V2,...: replaces the list of that parameter. */
static int opt_sweep(void *ctx, const char *v, char *err, size_t cap)
{
    lmk_bench_cfg *c = &((bench_args *)ctx)->c;
    const char *eq = strchr(v, '=');
    if (!eq) {
        snprintf(err, cap, "NAME=V1,V2,... wanted");
        return -1;
    }
    size_t nl = (size_t)(eq - v);
    int *dst, *n;
    if ((nl == 8 && !strncmp(v, "efSearch", nl)) || (nl == 9 && !strncmp(v, "ef_search", nl)) ||
        (nl == 2 && !strncmp(v, "ef", nl))) {
        dst = c->ef;
        n = &c->n_ef;
    } else if (nl == 6 && !strncmp(v, "nprobe", nl)) {
        dst = c->nprobe;
        n = &c->n_nprobe;
    } else {
        snprintf(err, cap, "unknown parameter '%.*s' (efSearch or nprobe)", (int)nl, v);
        return -1;
    }
    long long vals[LMK_BENCH_MAX_VALUES];
    int k = lmk_opt_count_list(eq + 1, vals, LMK_BENCH_MAX_VALUES);
    if (k <= 0) {
        snprintf(err, cap, "bad value list '%s'", eq + 1);
        return -1;
    }
    for (int i = 0; i < k; i++)
        if (vals[i] < 1 || vals[i] > 1 << 20) {
            snprintf(err, cap, "%lld is not a positive count up to 1m", vals[i]);
            return -1;
        }
    for (int i = 0; i < k; i++)
        dst[i] = (int)vals[i];
    *n = k;
    return 0;
}

/* --repr NAME[:R], repeatable: the representative table instead of the index table. */
static int opt_repr(void *ctx, const char *v, char *err, size_t cap)
{
    lmk_repr_cfg *r = &((bench_args *)ctx)->r;
    if (r->n_cases >= LMK_REPR_MAX_CASES) {
        snprintf(err, cap, "at most %d --repr options", LMK_REPR_MAX_CASES);
        return -1;
    }
    lmk_opt_repr x = {0, 0};
    if (!strcmp(v, "quest")) { /* the table only: an exact scan, not a session source */
        x.landmark = LMK_REPR_QUEST;
        x.n_repr = 2;
    } else if (lmk_opt_repr_fn(&x, v, err, cap)) {
        snprintf(err + strlen(err), cap - strlen(err), ", or quest");
        return -1;
    }
    r->cases[r->n_cases].landmark = x.landmark;
    r->cases[r->n_cases].n_repr = x.n_repr ? x.n_repr : 4;
    r->n_cases++;
    return 0;
}

/* ---- the option table ---- */

static const lmk_opt_word dtype_words[] = {{"f16", 1}, {"f32", 0}, {NULL, 0}};
static const lmk_opt_word query_words[] = {{"probe", 1}, {"ordinary", 0}, {NULL, 0}};
static const lmk_opt_word mode_words[] = {{"union", 1}, {"grouped", 0}, {NULL, 0}};

#define OPT(name, alias, kind, dst, lo, hi, words, fn, metavar, help) \
    {name, alias, kind, dst, lo, hi, words, fn, NULL, metavar, help}

static int parse(bench_args *a, int argc, char **argv, const char **dir)
{
    lmk_bench_cfg *c = &a->c;
    const lmk_opt opts[] = {
        OPT("--preset", 0, LMK_OPT_FN, c, 0, 0, NULL, opt_preset, "NAME",
            "1m (1,048,576 tokens, 2 layers, 16/4 heads, head_dim 128,\n"
            "block 64, top-k 8, f16), small, tiny; the shape defaults are small's"),
        OPT("--tokens", 0, LMK_OPT_COUNT, &a->tokens, 2, 2147483648.0, NULL, NULL, "N",
            "tokens (k/m suffixes)"),
        OPT("--layers", 0, LMK_OPT_INT, &c->n_layers, 1, 256, NULL, NULL, "N", "layers"),
        OPT("--heads", 0, LMK_OPT_INT, &c->n_heads, 1, 1024, NULL, NULL, "N", "query heads"),
        OPT("--kv-heads", 0, LMK_OPT_INT, &c->n_kv_heads, 1, 1024, NULL, NULL, "N", "KV heads"),
        OPT("--head-dim", 0, LMK_OPT_INT, &c->head_dim, 2, 1024, NULL, NULL, "N", "head dimension"),
        OPT("--block-len", 0, LMK_OPT_INT, &c->block_len, 1, 65536, NULL, NULL, "N",
            "tokens per block"),
        OPT("--top-k", 0, LMK_OPT_INT, &c->top_k, 1, 65536, NULL, NULL, "K",
            "blocks retrieved per query head"),
        OPT("--dtype", 0, LMK_OPT_CHOICE, &c->dtype_f16, 0, 0, dtype_words, NULL, "f16|f32",
            "session storage dtype (the dense baseline holds the same\nvalues as f32)"),
        OPT("--queries", 0, LMK_OPT_CHOICE, &c->probes, 0, 0, query_words, NULL,
            "probe|ordinary", "probe queries targeting needles (default) or ordinary\n"
            "decoding queries (no needle)"),
        OPT("--seed", 0, LMK_OPT_U64, &a->seed, 0, 0, NULL, NULL, "N",
            "generator seed (default 42)"),
        OPT("--needle-span", 0, LMK_OPT_INT, &c->needle_span, 4, 1 << 24, NULL, NULL, "N",
            "blocks per planted needle (default 256 with --preset 1m, 64\n"
            "with small, 16 with tiny: short streams get more needles)"),
        OPT("--recorded", 0, LMK_OPT_STR, &c->recorded, 0, 0, NULL, NULL, "FILE",
            "read keys, values and queries from a recorded stream (README:\n"
            "\"Recorded streams\") instead of the generator"),
        OPT("--save-stream", 0, LMK_OPT_STR, &a->save, 0, 0, NULL, NULL, "FILE",
            "write the synthetic stream with its step queries in that\nformat, then exit"),
        OPT("--index", 0, LMK_OPT_FN, a, 0, 0, NULL, opt_index, "SPEC",
            "FAISS factory string, optionally with +l2 (repeatable; Flat is\n"
            "always measured first)"),
        OPT("--sweep", 0, LMK_OPT_FN, a, 0, 0, NULL, opt_sweep, "NAME=V1,V2",
            "efSearch (HNSW specs) or nprobe (IVF specs)"),
        OPT("--steps", 0, LMK_OPT_INT, &c->steps, 100, 1000000, NULL, NULL, "N",
            "decode steps per setting (default 100, at least 100)"),
        OPT("--mode", 0, LMK_OPT_CHOICE, &c->mode_union, 0, 0, mode_words, NULL,
            "union|grouped", "softmax (default union: equals dense when all is retrieved)"),
        OPT("--threads", 't', LMK_OPT_INT, &c->threads, 1, 256, NULL, NULL, "N",
            "threads of the engine and of the dense baseline (default 1,\n2 with --preset 1m)"),
        OPT("--repr", 0, LMK_OPT_FN, a, 0, 0, NULL, opt_repr, "NAME[:R]",
            "with --recorded: the representative table instead (repeatable):\n"
            "mean, keys, attn[:R], query[:R], outlier[:R], quest (Quest's\n"
            "per-channel bounds, scanned exactly) against the oracle\n"
            "(the blocks of most dense attention mass); the stream needs one\n"
            "query per token (`landmark passkey --record FILE`)"),
        OPT("--local", 0, LMK_OPT_INT, &a->r.n_local, 0, 1 << 24, NULL, NULL, "N",
            "--repr: local window (default 128)"),
        OPT("--sink", 0, LMK_OPT_INT, &a->r.n_sink, 0, 1 << 24, NULL, NULL, "N",
            "--repr: sink tokens (default 4)"),
        OPT("--eval", 0, LMK_OPT_INT, &a->r.n_eval, 1, 1 << 20, NULL, NULL, "N",
            "--repr: evaluation positions (default 32)"),
        OPT("--dir", 0, LMK_OPT_STR, dir, 0, 0, NULL, NULL, "DIR",
            "session directory (default: temporary, removed after)"),
        OPT("--json", 0, LMK_OPT_STR, &a->json, 0, 0, NULL, NULL, "FILE",
            "one object: config, dense, results"),
        OPT("--plot", 0, LMK_OPT_STR, &a->plot, 0, 0, NULL, NULL, "FILE.png",
            "recall against step time per index (needs gnuplot)"),
    };
    const lmk_opt_spec spec = {
        .cmd = CMD,
        .usage = "landmark bench [options]",
        .about = "Dense attention, exact landmark search (Flat) and ANN index specs measured side\n"
                 "by side on one ingested stream: recall@k against exact top-k, needle hit rate,\n"
                 "error against dense attention, decode step time, ingest, build, memory and\n"
                 "disk. The workload is the synthetic stream of `landmark demo` (README \"The\n"
                 "synthetic workload\") unless --recorded is given.\n",
        .opts = opts,
        .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    return lmk_opt_parse(&spec, argc, argv, NULL, NULL);
}

/* ---- the command ---- */

/* The table on stdout, then the JSON record and the chart when asked. */
static int report(const bench_args *a, const lmk_bench_report *rep)
{
    char err[1024];
    lmk_bench_write_table(stdout, rep);
    fflush(stdout);
    if (a->json && lmk_bench_write_json(a->json, rep, err, sizeof err)) {
        lmk_cli_error(CMD, "%s", err);
        return 1;
    }
    if (a->plot && lmk_bench_write_plot(a->plot, rep, err, sizeof err)) {
        lmk_cli_error(CMD, "%s", err);
        return 1;
    }
    return 0;
}

int lmk_cmd_bench(int argc, char **argv)
{
    bench_args a;
    memset(&a, 0, sizeof a);
    a.c = lmk_bench_cfg_default();
    const char *pre = preset_of(argc, argv);
    if (pre)
        lmk_bench_cfg_preset(&a.c, pre); /* an unknown name is refused by parse() */
    a.tokens = a.c.tokens;
    a.seed = a.c.seed;
    a.r = lmk_repr_cfg_default();
    int given_top_k = a.c.top_k;
    int rc = parse(&a, argc, argv, &a.c.dir);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (a.r.n_cases > 0) {
        if (!a.c.recorded) {
            lmk_cli_error(CMD, "--repr needs --recorded FILE (landmark passkey --record FILE)");
            return 2;
        }
        a.r.recorded = a.c.recorded;
        a.r.block_len = a.c.block_len;
        a.r.top_k = a.c.top_k != given_top_k ? a.c.top_k : 8;
        a.r.threads = a.c.threads;
        a.r.dir = a.c.dir;
        lmk_repr_row rows[LMK_REPR_MAX_CASES];
        char rerr[1024] = "";
        lmk_cli_set_blas_threads(1); /* the engine's threads are the one level */
        if ((rc = lmk_repr_bench_run(&a.r, rows, rerr, sizeof rerr))) {
            lmk_cli_error(CMD, "%s", rerr);
            return rc == LMK_EINVAL ? 2 : 1;
        }
        printf("recorded stream %s: blocks of %d, top-k %d, local %d, sinks %d, %d positions\n",
               a.r.recorded, a.r.block_len, a.r.top_k, a.r.n_local, a.r.n_sink, a.r.n_eval);
        lmk_repr_bench_write_table(stdout, &a.r, rows);
        return 0;
    }
    a.c.tokens = a.tokens;
    a.c.seed = a.seed;
    a.c.log = log_line;
    a.c.progress = progress;
    if (a.plot && !lmk_bench_have_gnuplot()) {
        lmk_cli_error(CMD, "--plot needs gnuplot, which is not installed (apt-get install gnuplot-nox)");
        return 2;
    }
    char err[2048] = "";
    if (a.save) {
        if (a.c.recorded) {
            lmk_cli_error(CMD, "--save-stream writes the synthetic stream; drop --recorded");
            return 2;
        }
        rc = lmk_bench_save_stream(&a.c, a.save, err, sizeof err);
    } else {
        lmk_bench_report rep;
        rc = lmk_bench_run(&a.c, &rep, err, sizeof err);
        if (!rc)
            rc = report(&a, &rep) ? -1 : 0;
        lmk_bench_report_free(&rep);
        if (rc == -1)
            return 1;
    }
    if (rc)
        lmk_cli_error(CMD, "%s", err);
    return rc == LMK_EINVAL ? 2 : rc ? 1 : 0;
}
