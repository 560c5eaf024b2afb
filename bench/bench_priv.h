/* landmark bench — private types shared by the driver (bench_cmd.c) and the report writers
 * (bench_report.c). */
#ifndef LMK_BENCH_PRIV_H
#define LMK_BENCH_PRIV_H

#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_SPECS 32
#define BENCH_MAX_VALUES 32
#define BENCH_SPEC_LEN 128

typedef struct bench_cfg {
    /* shape and workload */
    int64_t tokens;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len, top_k;
    int dtype_f16;     /* storage dtype of the session */
    int mode_union;    /* 1: union softmax (compared with dense exactly), 0: grouped */
    int threads;
    int steps;
    int probes;        /* 1: probe queries (needles), 0: ordinary queries */
    uint64_t seed;
    int needle_span;
    const char *recorded; /* recorded stream file, or NULL for the synthetic stream */
    const char *preset;
    /* index specs and sweeps */
    int n_specs;
    char specs[BENCH_MAX_SPECS][BENCH_SPEC_LEN];
    int n_ef, n_nprobe;
    int ef[BENCH_MAX_VALUES], nprobe[BENCH_MAX_VALUES];
} bench_cfg;

typedef struct bench_result {
    char index[BENCH_SPEC_LEN];
    int ef_search, nprobe;        /* 0: index default */
    double recall_at_k;
    double needle_hit_rate;       /* NAN when there are no needles */
    double attn_rel_err;          /* max over steps, layers, heads */
    double attn_rel_err_p50;
    double step_ms_p50, step_ms_p99;
    double search_ms, fetch_ms, attn_ms; /* mean per step */
    double speedup;
    double ingest_tokens_per_s;
    double build_s;
    double rss_anon_mb, rss_file_mb; /* NAN when the child failed */
    double child_step_ms_p50;
    double disk_mb;
    double blocks_fetched;        /* mean per step */
} bench_result;

typedef struct bench_dense {
    double step_ms_p50, step_ms_p99;
    double memory_mb;
    int threads;
} bench_dense;

typedef struct bench_run {
    double ingest_s;     /* storage + Flat index, appends only */
    double kv_bytes;     /* K/V bytes of the session in its dtype */
    int64_t blocks;      /* sealed blocks per (layer, KV head) */
    int n_needles;
    double wall_s;       /* the whole run, up to the report */
} bench_run;

void bench_print_table(FILE *f, const bench_cfg *c, const bench_run *r, const bench_dense *d,
                       const bench_result *res, int n);
int bench_write_json(const char *path, const bench_cfg *c, const bench_run *r,
                     const bench_dense *d, const bench_result *res, int n);
/* Returns 0, or -1 with a one-line message in err. */
int bench_write_plot(const char *path, const bench_cfg *c, const bench_dense *d,
                     const bench_result *res, int n, char *err, size_t err_cap);
int bench_have_gnuplot(void);

#endif
