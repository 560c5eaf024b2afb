/* The benchmark library (bench/lmk_bench.h) from a program that is not the landmark command:
 * configuration checks, a small run whose records must be sane (Flat exact, needles found,
 * the reopening process's memory measured), the report writers, and a reopening helper that
 * hangs being killed at the timeout. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lmk_bench.h"
#include "lmk_clock.h"
#include "lmk_oracle.h"
#include "lmk_test.h"

static int n_warn;

static void count_warn(void *ud, lmk_bench_level level, const char *msg)
{
    (void)ud;
    if (level == LMK_BENCH_WARN) {
        n_warn++;
        printf("  warning: %s\n", msg);
    }
}

/* The tiny preset cut down: 4096 tokens, 20 steps, Flat + HNSW16 (2 values) + IVF8. */
static lmk_bench_cfg small_cfg(const char *dir)
{
    lmk_bench_cfg c = lmk_bench_cfg_default();
    lmk_bench_cfg_preset(&c, "tiny");
    c.tokens = 4096;
    c.steps = 20;
    c.n_specs = 2;
    snprintf(c.specs[0], LMK_BENCH_SPEC_LEN, "HNSW16");
    snprintf(c.specs[1], LMK_BENCH_SPEC_LEN, "IVF8,Flat");
    c.n_ef = 2;
    c.ef[0] = 16;
    c.ef[1] = 64;
    c.n_nprobe = 1;
    c.nprobe[0] = 8;
    c.dir = dir;
    c.log = count_warn;
    return c;
}

static int test_cfg(void)
{
    lmk_bench_cfg c = lmk_bench_cfg_default();
    CHECK(c.preset == NULL && c.seed == 42 && c.mode_union == 1 && c.probes == 1);
    CHECK(c.tokens == 262144 && c.n_specs == 5 && strcmp(c.specs[0], "Flat") == 0);
    CHECK_RC(lmk_bench_cfg_preset(&c, "2m"), LMK_EINVAL);
    CHECK(c.tokens == 262144);
    CHECK_RC(lmk_bench_cfg_preset(&c, "tiny"), LMK_OK);
    CHECK(strcmp(c.preset, "tiny") == 0 && c.tokens == 16384 && c.n_specs == 3);
    /* Flat once, HNSW16 per ef value, IVF8 per nprobe value */
    CHECK(lmk_bench_cfg_n_settings(&c) == 1 + 2 + 2);
    c.n_specs = 1;
    snprintf(c.specs[0], LMK_BENCH_SPEC_LEN, "HNSW16");
    CHECK(lmk_bench_cfg_n_settings(&c) == 1 + 2); /* Flat added */
    return 0;
}

static int test_invalid(const char *dir)
{
    char err[512];
    lmk_bench_report rep;
    lmk_bench_cfg c = small_cfg(dir);
    c.n_heads = 3;
    CHECK_RC(lmk_bench_run(&c, &rep, err, sizeof err), LMK_EINVAL);
    CHECK(strstr(err, "multiple") != NULL);
    CHECK(rep.results == NULL && rep.n_results == 0);
    lmk_bench_report_free(&rep);
    c = small_cfg(dir);
    snprintf(c.specs[0], LMK_BENCH_SPEC_LEN, "NotAnIndex");
    CHECK_RC(lmk_bench_run(&c, &rep, err, sizeof err), LMK_EINVAL);
    CHECK(strstr(err, "NotAnIndex") != NULL);
    c = small_cfg(dir);
    c.recorded = "/nonexistent/stream.rec";
    CHECK_RC(lmk_bench_run(&c, &rep, err, sizeof err), ENOENT);
    lmk_bench_report_free(NULL);
    return 0;
}

/* The representative table's loader: a file whose header names more bytes than it holds is
 * refused by its size before anything is allocated (it used to allocate what the header
 * claimed first: a 48-byte file asked for 192 GB and was reported as out of memory). */
static int test_repr_short_stream(const char *dir)
{
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/header-only.rec", dir);
    unsigned char h[48] = "LMKREC1";
    uint32_t u[4] = {1, 1, 1, 1024}; /* layers, heads, kv heads, head_dim */
    uint64_t n = 1ull << 24;         /* tokens and queries: 192 GB of f32 */
    memcpy(h + 8, u, sizeof u);
    memcpy(h + 24, &n, 8);
    memcpy(h + 32, &n, 8);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(h, 1, sizeof h, f) == sizeof h && fclose(f) == 0);
    lmk_repr_cfg c = lmk_repr_cfg_default();
    c.recorded = path;
    c.n_cases = 1;
    c.cases[0].landmark = 0;
    c.dir = dir;
    lmk_repr_row row;
    CHECK_RC(lmk_repr_bench_run(&c, &row, err, sizeof err), LMK_EFORMAT);
    CHECK(strstr(err, "48 bytes, the header's shape needs") != NULL);
    /* a stream of the right size with a query count other than its token count */
    u[3] = 1;
    n = 2;
    uint64_t nq = 3;
    memcpy(h + 8, u, sizeof u);
    memcpy(h + 24, &n, 8);
    memcpy(h + 32, &nq, 8);
    float x[2 * 2 + 3] = {0};
    f = fopen(path, "wb");
    REQUIRE(f && fwrite(h, 1, sizeof h, f) == sizeof h && fwrite(x, 4, 7, f) == 7 &&
            fclose(f) == 0);
    CHECK_RC(lmk_repr_bench_run(&c, &row, err, sizeof err), LMK_EFORMAT);
    CHECK(strstr(err, "one query per token") != NULL);
    unlink(path);
    return 0;
}

static int test_run(const char *dir)
{
    char err[1024] = "", path[4200];
    lmk_bench_cfg c = small_cfg(dir);
    lmk_bench_report rep;
    n_warn = 0;
    REQUIRE_OK(lmk_bench_run(&c, &rep, err, sizeof err));
    CHECK(n_warn == 0);
    REQUIRE(rep.n_results == 4);
    CHECK(strcmp(rep.cfg.specs[0], "Flat") == 0); /* Flat first, though not asked for */
    const char *want[] = {"Flat", "HNSW16", "HNSW16", "IVF8,Flat"};
    for (int i = 0; i < rep.n_results; i++) {
        const lmk_bench_result *r = &rep.results[i];
        CHECK(strcmp(r->index, want[i]) == 0);
        CHECK(r->recall_at_k >= 0 && r->recall_at_k <= 1);
        CHECK(r->needle_hit_rate >= 0 && r->needle_hit_rate <= 1);
        CHECK(r->step_ms_p50 > 0 && r->step_ms_p50 <= r->step_ms_p99);
        CHECK(r->build_s > 0 && r->disk_mb > 0 && r->ingest_tokens_per_s > 0);
        /* the reopening process ran and measured itself */
        CHECK(isfinite(r->rss_anon_mb) && r->rss_anon_mb > 0);
        CHECK(isfinite(r->rss_file_mb) && r->rss_file_mb > 0);
        CHECK(isfinite(r->child_step_ms_p50) && r->child_step_ms_p50 > 0);
        printf("  %-10s ef %2d nprobe %d: recall %.4f needle %.4f anon %.1f MB file %.1f MB\n",
               r->index, r->ef_search, r->nprobe, r->recall_at_k, r->needle_hit_rate,
               r->rss_anon_mb, r->rss_file_mb);
    }
    CHECK(rep.results[1].ef_search == 16 && rep.results[2].ef_search == 64);
    CHECK(rep.results[3].nprobe == 8);
    CHECK(rep.results[0].recall_at_k == 1.0);
    CHECK(rep.results[0].needle_hit_rate == 1.0);
    CHECK(rep.results[0].attn_rel_err < 1e-3);
    CHECK(rep.results[3].recall_at_k == 1.0); /* every list probed: exact */
    CHECK(rep.dense.step_ms_p50 > 0 && rep.dense.memory_mb > 0);
    CHECK(rep.run.blocks == (4096 - 1) / 32 && rep.run.n_needles > 0 && rep.run.ingest_s > 0);
    /* the bandwidth bound: Flat (and an IVF index too small to train, searched exactly)
     * scans every f32 landmark and reads the K/V of the blocks fetched; HNSW's scan is not
     * modelled */
    CHECK(rep.run.read_gbs > 0);
    CHECK(lmk_bench_landmarks_scanned("Flat", 0, 1000) == 1000);
    CHECK(lmk_bench_landmarks_scanned("IVF8,Flat", 2, 1000) == 1000.0 * 2 / 8 + 8);
    CHECK(lmk_bench_landmarks_scanned("IVF8,Flat", 0, 1000) == 1000.0 / 8 + 8);
    CHECK(lmk_bench_landmarks_scanned("IVF8,Flat", 64, 1000) == 1000 + 8); /* nprobe capped */
    CHECK(lmk_bench_landmarks_scanned("IVF8,Flat", 2, 100) == 100); /* untrained: exact */
    CHECK(isnan(lmk_bench_landmarks_scanned("HNSW16", 0, 1000)));
    CHECK(isnan(lmk_bench_landmarks_scanned("IVF8,SQ8", 2, 1000)));
    for (int i = 0; i < rep.n_results; i++) {
        const lmk_bench_result *r = &rep.results[i];
        const lmk_bench_cfg *rc = &rep.cfg;
        double bytes = (double)rc->n_layers * rc->n_kv_heads * rep.run.blocks * rc->head_dim * 4 +
                       r->blocks_fetched * 2.0 * rc->block_len * rc->head_dim *
                           (rc->dtype_f16 ? 2 : 4);
        double want = 1e3 * bytes / (rep.run.read_gbs * 1e9);
        if (strncmp(r->index, "HNSW", 4) == 0)
            CHECK(isnan(r->bound_ms));
        else
            CHECK(r->blocks_fetched > 0 && fabs(r->bound_ms - want) <= 1e-9 * want);
    }
    /* the writers */
    FILE *f = tmpfile();
    REQUIRE(f != NULL);
    lmk_bench_write_table(f, &rep);
    CHECK(ftell(f) > 500);
    fclose(f);
    snprintf(path, sizeof path, "%s/r.json", dir);
    CHECK_RC(lmk_bench_write_json(path, &rep, err, sizeof err), LMK_OK);
    CHECK_RC(lmk_bench_write_json("/nonexistent/r.json", &rep, err, sizeof err), ENOENT);
    lmk_bench_report_free(&rep);
    CHECK(rep.results == NULL);
    /* a second run into the same directory is refused: never reuse a session */
    CHECK_RC(lmk_bench_run(&c, &rep, err, sizeof err), EEXIST);
    return 0;
}

/* A helper that never answers is killed at the timeout; the run goes on without its
 * figures and says so. */
static int test_child_timeout(const char *dir)
{
    char script[4200], err[1024] = "";
    snprintf(script, sizeof script, "%s/hang.sh", dir);
    FILE *f = fopen(script, "w");
    REQUIRE(f != NULL);
    fputs("#!/bin/sh\nexec sleep 60\n", f);
    fclose(f);
    REQUIRE(chmod(script, 0755) == 0);
    char sub[4300];
    snprintf(sub, sizeof sub, "%s/timeout", dir);
    lmk_bench_cfg c = small_cfg(sub);
    c.n_specs = 0; /* Flat alone */
    c.child_exe = script;
    c.child_timeout_s = 1;
    lmk_bench_report rep;
    n_warn = 0;
    double t0 = lmk_clock_s();
    REQUIRE_OK(lmk_bench_run(&c, &rep, err, sizeof err));
    double took = lmk_clock_s() - t0;
    REQUIRE(rep.n_results == 1);
    CHECK(isnan(rep.results[0].rss_anon_mb) && isnan(rep.results[0].rss_file_mb));
    CHECK(rep.results[0].recall_at_k == 1.0);
    CHECK(n_warn == 1);
    CHECK(took < 30);
    lmk_bench_report_free(&rep);
    /* a helper that cannot be started: the same */
    snprintf(sub, sizeof sub, "%s/missing", dir);
    c = small_cfg(sub);
    c.n_specs = 0;
    c.child_exe = "/nonexistent/landmark-bench-child";
    n_warn = 0;
    REQUIRE_OK(lmk_bench_run(&c, &rep, err, sizeof err));
    CHECK(rep.n_results == 1 && isnan(rep.results[0].rss_anon_mb) && n_warn == 1);
    lmk_bench_report_free(&rep);
    return 0;
}

int main(void)
{
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "test_bench");
    REQUIRE(mkdir(dir, 0755) == 0);
    test_cfg();
    test_invalid(dir);
    test_repr_short_stream(dir);
    test_run(dir);
    test_child_timeout(dir);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return lmk_test_finish("test_bench_run", 0);
}
