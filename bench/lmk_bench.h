/* landmark bench — dense attention, exact landmark search and ANN index specs measured side
 * by side on one ingested stream (README, "Benchmark").
 *
 * One call runs one configuration and returns its records:
 *
 *     lmk_bench_cfg c = lmk_bench_cfg_default();        // the "small" shape, seed 42
 *     lmk_bench_cfg_preset(&c, "tiny");                  // optional
 *     lmk_bench_report rep;
 *     char err[1024];
 *     int rc = lmk_bench_run(&c, &rep, err, sizeof err);
 *     if (rc == LMK_OK) lmk_bench_write_table(stdout, &rep);
 *     lmk_bench_report_free(&rep);
 *
 * Flow of a run: ingest the stream once (a session with a Flat index, and the dense
 * baseline in RAM); compute the exact top-k of every step's queries from the stored
 * landmarks; time the dense steps; then for every index spec rebuild the session's indices
 * from the same landmarks, and for every search parameter run the same steps, scoring
 * recall, needle hits and the error against dense attention. For every setting a separate
 * process (the helper program `landmark-bench-child`) reopens the session read-only, runs
 * the steps and reports its resident memory.
 *
 * The library never parses options, never prints to stdout on its own and never exits:
 * notes and warnings go to the log callback, errors come back as a status and a one-line
 * message. OpenBLAS's and OpenMP's thread counts are set during a run (to 1 or cfg.threads)
 * and left at 1 afterwards.
 */
#ifndef LMK_BENCH_H
#define LMK_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lmk_error.h"
#include "lmk_export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LMK_BENCH_MAX_SPECS 32  /* index specs per run, Flat included */
#define LMK_BENCH_MAX_VALUES 32 /* values per sweep */
#define LMK_BENCH_SPEC_LEN 128  /* bytes of one spec, NUL included */

typedef enum lmk_bench_level {
    LMK_BENCH_NOTE, /* what the run is doing (the command shows these on a terminal only) */
    LMK_BENCH_WARN, /* something was not measured (e.g. the reopening process failed) */
} lmk_bench_level;

/* Log callback: msg is one line without '\n', valid during the call only. */
typedef void (*lmk_bench_log_fn)(void *ud, lmk_bench_level level, const char *msg);
/* Progress callback: `done` of `total` units of the phase `what` (borrowed, call only). */
typedef void (*lmk_bench_progress_fn)(void *ud, const char *what, int64_t done, int64_t total);

typedef struct lmk_bench_cfg {
    /* shape and workload (ignored with `recorded`: the file gives the shape) */
    int64_t tokens;
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    int top_k;         /* blocks retrieved per query head */
    int dtype_f16;     /* 1: the session stores f16, 0: f32 */
    int mode_union;    /* 1: union softmax (equals dense when all is retrieved), 0: grouped */
    int threads;       /* threads of the engine and of the dense baseline */
    int steps;         /* decode steps per setting (>= 1; the command asks >= 100) */
    int probes;        /* 1: probe queries aimed at planted needles, 0: ordinary queries */
    uint64_t seed;     /* generator seed */
    int needle_span;   /* blocks per planted needle */
    const char *recorded; /* recorded stream file (README "Recorded streams"), or NULL for the
                           * synthetic stream; borrowed for the duration of the run */
    const char *preset;   /* name reported in the JSON record, or NULL; borrowed */
    /* index specs (FAISS factory strings, optionally +l2) and sweeps: Flat is always
     * measured, first; HNSW specs once per ef value, IVF specs once per nprobe value */
    int n_specs;
    char specs[LMK_BENCH_MAX_SPECS][LMK_BENCH_SPEC_LEN];
    int n_ef, n_nprobe;
    int ef[LMK_BENCH_MAX_VALUES], nprobe[LMK_BENCH_MAX_VALUES];
    /* where and how */
    const char *dir;       /* directory for the session (DIR/session must not exist; DIR is
                            * created if missing), or NULL: a temporary one, removed after */
    const char *child_exe; /* the reopening helper, or NULL: lmk_bench_child_exe_default() */
    double child_timeout_s; /* the helper is killed after this long (its figures: NAN) */
    lmk_bench_log_fn log;   /* may be NULL */
    lmk_bench_progress_fn progress; /* may be NULL */
    void *ud;               /* passed to log and progress */
} lmk_bench_cfg;

/* One measured setting: an index spec with one search parameter. */
typedef struct lmk_bench_result {
    char index[LMK_BENCH_SPEC_LEN];
    int ef_search, nprobe;        /* 0: index default */
    double recall_at_k;           /* retrieved blocks among the exact top-k, mean */
    double needle_hit_rate;       /* NAN when there are no needles */
    double attn_rel_err;          /* relative L2 error against dense: max over steps, heads */
    double attn_rel_err_p50;
    double step_ms_p50, step_ms_p99; /* one decoding token over all layers and heads */
    double search_ms, fetch_ms, attn_ms; /* mean per step */
    double speedup;               /* dense step p50 / this step p50 */
    double ingest_tokens_per_s;   /* tokens / (ingest + this spec's build) */
    double build_s;
    double rss_anon_mb, rss_file_mb; /* of the reopening process; NAN when it failed */
    double child_step_ms_p50;
    double disk_mb;
    double blocks_fetched;        /* mean per step */
    double bound_ms;              /* a step's bytes (landmarks scanned plus blocks fetched)
                                   * at the run's read bandwidth: the memory-bandwidth bound
                                   * of step_ms_p50; NAN for index types whose scan is not
                                   * modelled (all but Flat and IVFn,Flat) */
} lmk_bench_result;

/* The dense baseline: all K/V as f32 in RAM, OpenBLAS with `threads` threads. */
typedef struct lmk_bench_dense {
    double step_ms_p50, step_ms_p99;
    double memory_mb;
    int threads;
} lmk_bench_dense;

/* Facts of the run as a whole. */
typedef struct lmk_bench_facts {
    double ingest_s;     /* storage + Flat index, appends and the final sync */
    double kv_bytes;     /* K/V bytes of the session in its dtype */
    int64_t blocks;      /* sealed blocks (landmarks) per (layer, KV head) */
    int n_needles;       /* planted needles (0 for a recorded stream) */
    double wall_s;       /* the whole run */
    double read_gbs;     /* read bandwidth with cfg.threads threads (lmk_bench_read_bandwidth) */
} lmk_bench_facts;

typedef struct lmk_bench_report {
    lmk_bench_cfg cfg;   /* the configuration as run: Flat first, a recorded stream's shape;
                          * its pointers are the caller's (borrowed) */
    lmk_bench_facts run;
    lmk_bench_dense dense;
    lmk_bench_result *results; /* n_results records, owned by the report */
    int n_results;
} lmk_bench_report;

/* The "small" preset's shape and lists with preset = NULL, seed 42, union softmax, probe
 * queries, a temporary directory, the default helper and a 900 s helper timeout. */
LMK_API lmk_bench_cfg lmk_bench_cfg_default(void);

/* Apply a preset to c: "1m" (1,048,576 tokens, 2 layers, 16/4 heads, head_dim 128, 2
 * threads), "small" or "tiny": shape, dtype f16, top-k 8, 100 steps, threads, needle span,
 * specs and sweep lists; c->preset = name (borrowed). Other fields are left alone.
 * Returns LMK_OK or LMK_EINVAL (unknown name; c unchanged). */
LMK_API int lmk_bench_cfg_preset(lmk_bench_cfg *c, const char *name);

/* Number of settings c measures (Flat counted once even when absent from c->specs). */
LMK_API int lmk_bench_cfg_n_settings(const lmk_bench_cfg *c);

/* Run the benchmark. On LMK_OK *out holds the records (free with lmk_bench_report_free);
 * on failure *out is empty (safe to free) and err holds one line.
 * Returns LMK_OK;
 *   LMK_EINVAL  the configuration is inconsistent or out of range, or an index spec is
 *               refused (checked before the long ingest);
 *   LMK_EFORMAT the recorded stream is not one (bad magic, header, or size);
 *   EEXIST      DIR/session already exists (a run never reuses a session);
 *   another errno value (ENOMEM, I/O) or another LMK_E* code from the session.
 * A failing reopening process is not an error: its figures are NAN and a warning is
 * logged. */
LMK_API int lmk_bench_run(const lmk_bench_cfg *c, lmk_bench_report *out, char *err,
                          size_t err_cap);

/* Release the records of r (r itself is the caller's); accepts NULL and empty reports. */
LMK_API void lmk_bench_report_free(lmk_bench_report *r);

/* Write the synthetic stream of c with its step queries (c->steps of them per layer) as a
 * recorded stream file at path. Returns LMK_OK, LMK_EINVAL (c->recorded set, or a shape the
 * generator refuses), or an errno value (the partial file is removed). */
LMK_API int lmk_bench_save_stream(const lmk_bench_cfg *c, const char *path, char *err,
                                  size_t err_cap);

/* The aligned table with its header lines and notes, to f. */
LMK_API void lmk_bench_write_table(FILE *f, const lmk_bench_report *r);

/* The JSON record {config, dense, targets, results} to path. Returns LMK_OK or an errno
 * value with a message in err. */
LMK_API int lmk_bench_write_json(const char *path, const lmk_bench_report *r, char *err,
                                 size_t err_cap);

/* Recall against step time per index as a PNG at path, drawn by gnuplot (started directly,
 * no shell; its own messages go to this process's stderr). Returns LMK_OK, ENOENT when
 * gnuplot is not on PATH, EIO when gnuplot fails, or another errno value; err set. */
LMK_API int lmk_bench_write_plot(const char *path, const lmk_bench_report *r, char *err,
                                 size_t err_cap);

/* Read bandwidth of this machine in bytes/s: `threads` threads (>= 1) each summing its share
 * of a 256 MiB buffer, best of three passes (about a second). 0 when the buffer cannot be
 * allocated. */
LMK_API double lmk_bench_read_bandwidth(int threads);

/* Landmarks one search of `spec` scans among n_landmarks: all of them for "Flat"; for
 * "IVF<n>,Flat" once trained (FAISS trains at 39 vectors per list; exact search before) the
 * share of nprobe (<= 0: 1) of its n lists plus the n centroids. NAN for other specs, whose
 * bytes per vector and share scanned are not modelled. */
LMK_API double lmk_bench_landmarks_scanned(const char *spec, int nprobe, double n_landmarks);

/* 1 when an executable `gnuplot` is on PATH, else 0. */
LMK_API int lmk_bench_have_gnuplot(void);

/* The helper used when cfg.child_exe is NULL: the one in the build tree when it exists
 * there, else the installed one (libexecdir). Static string. */
LMK_API const char *lmk_bench_child_exe_default(void);

#ifdef __cplusplus
}
#endif
#endif
