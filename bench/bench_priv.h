/* landmark bench — private pieces shared by the run (bench_run.c), the recorded streams
 * (bench_stream.c), the reopening process (bench_child.c) and the report (bench_report.c). */
#ifndef LMK_BENCH_PRIV_H
#define LMK_BENCH_PRIV_H

#include <stdint.h>
#include <stdio.h>

#include "lmk_bench.h"
#include "lmk_session.h"
#include "lmk_synth.h"

#define BENCH_WARMUP_STEPS 3

/* ---- recorded streams (bench_stream.c) ---- */
typedef struct bench_rec {
    int fd;
    int n_layers, n_heads, n_kv_heads, head_dim, f16;
    int64_t n_tokens, n_queries;
    uint16_t *conv; /* f16 read buffer */
    size_t conv_cap;
} bench_rec;

/* Returns LMK_OK, an errno value (open) or LMK_EFORMAT; message in err. */
int bench_rec_open(const char *path, bench_rec *r, char *err, size_t cap);
void bench_rec_close(bench_rec *r);
/* Keys and values (n, n_kv_heads, head_dim) of tokens [t0, t0 + n) at a layer. */
int bench_rec_kv(bench_rec *r, int layer, int64_t t0, int64_t n, float *k, float *v, char *err,
                 size_t cap);

/* A recorded stream with one query per token held in memory as f32 (the representative
 * table, lmk_oracle.c). */
typedef struct bench_rec_mem {
    int NL, NH, NKV, D;
    int64_t T, NQ;
    float *k; /* per layer: keys (T, NKV, D), values (T, NKV, D), queries (NQ, NH, D) */
} bench_rec_mem;
/* Loads the stream at path: bench_rec_open's checks (header, exact size) before anything is
 * allocated, then n_queries == n_tokens in [2, 2^24] (the reader's query limit). Returns
 * LMK_OK, an errno value or LMK_EFORMAT (message in err); on success free(r->k) releases
 * it, on failure r->k is NULL. */
int bench_rec_load(const char *path, bench_rec_mem *r, char *err, size_t cap);

/* The workload: where the keys, values and step queries come from. */
typedef struct bench_workload {
    lmk_synth *gen;  /* synthetic stream, or NULL */
    bench_rec rec;   /* recorded stream when gen is NULL (fd -1 when unused) */
    int64_t T;
} bench_workload;

/* Open the generator (c's shape) or the recorded stream named by c->recorded. */
int bench_workload_open(bench_workload *w, const lmk_bench_cfg *c, char *err, size_t cap);
void bench_workload_close(bench_workload *w);
/* Queries of step p at every layer: q (n_layers, n_heads, head_dim); targets (n_layers)
 * gets the needle block of each layer (-1: none). Steps p >= 0 are measured; warm-up steps
 * use p = steps + i, which are other queries of the same kind. */
int bench_step_queries(bench_workload *w, const lmk_bench_cfg *c, int p, float *q,
                       int64_t *targets, char *err, size_t cap);

/* ---- shared helpers (bench_run.c) ---- */
/* Percentile (0..1) of n values, sorting them in place (nearest rank); NAN when n <= 0. */
double bench_percentile(double *x, int n, double p);
/* OpenBLAS's pool: 1 while the engine runs its own threads (one level of parallelism),
 * cfg.threads for the dense baseline so both use the same number of threads. */
void bench_blas_threads(int n);
/* OpenMP threads of FAISS's own parallel loops. Decoding steps run with 1: the engine
 * parallelises over heads itself (num_threads clause), and a FAISS search that opens its
 * own team for a single query costs more than it saves (on a loaded 2-core machine, tens of
 * milliseconds per step). Index builds get the run's thread count. */
void bench_omp_threads(int n);
/* The checks every run and every saved stream pass first: LMK_OK or LMK_EINVAL. */
int bench_cfg_check(const lmk_bench_cfg *c, char *err, size_t cap);
lmk_attend_opts bench_attend_opts(const lmk_bench_cfg *c, int ef, int nprobe);
void bench_log(const lmk_bench_cfg *c, lmk_bench_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the reopening process (bench_child.c) ---- */
typedef struct bench_child_args {
    const char *dir;   /* session directory */
    lmk_bench_cfg cfg; /* steps, top_k, mode_union, threads, recorded, seed, needle_span,
                        * probes; the shape comes from the session */
    int ef, nprobe;
} bench_child_args;

/* Start the helper for one setting and fill res's rss_* and child_step_ms_p50 (NAN and a
 * warning on failure). */
void bench_child_measure(const lmk_bench_cfg *c, const char *sdir, int ef, int nprobe,
                         lmk_bench_result *res);
/* The helper's work: reopen, run the steps, print one JSON line of figures to out.
 * Returns 0, or -1 with a message in err. */
int bench_child_work(const bench_child_args *a, FILE *out, char *err, size_t cap);
/* The helper's argument vector <-> args (the protocol between the two). */
int bench_child_parse(int argc, char **argv, bench_child_args *a);

#endif
