/* Sessions: reopen mid-stream, mismatch and version refusals, truncate, fork, reindex,
 * verify, damaged or missing index files, an IVF index crossing its training threshold,
 * read-only and busy handling. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/lmk_internal.h"
#include "lmk_f16.h"
#include "lmk_index.h"
#include "lmk_session.h"
#include "lmk_store.h"
#include "lmk_test.h"

enum { NL = 2, NH = 4, KV = 2, D = 8, BL = 16 };
#define ROW ((size_t)KV * D)
#define QROW ((size_t)NH * D)

static int logged;
static void count_log(void *ud, const char *msg)
{
    (void)ud;
    logged++;
    printf("  session log: %s\n", msg);
}

static int open_s(const char *dir, const char *spec, const char *fp, int create,
                  lmk_session **s)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.n_layers = NL;
    o.n_heads = NH;
    o.n_kv_heads = KV;
    o.head_dim = D;
    o.block_len = BL;
    o.dtype = LMK_DTYPE_F16;
    o.index_spec = spec;
    o.fingerprint = fp;
    o.create = create;
    o.log = count_log;
    char msg[512] = "";
    int rc = lmk_session_open(dir, &o, s, msg, sizeof msg);
    if (rc && create)
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

static int ingest(lmk_session *s, int64_t from, int64_t to, int64_t chunk)
{
    float *k = malloc((size_t)chunk * ROW * 4), *v = malloc((size_t)chunk * ROW * 4);
    int rc = LMK_OK;
    for (int64_t t = from; t < to && rc == LMK_OK; t += chunk) {
        int64_t n = t + chunk < to ? chunk : to - t;
        for (int l = 0; l < NL && rc == LMK_OK; l++) {
            gen(l, t, n, k, v);
            rc = lmk_session_append(s, l, n, k, v);
        }
    }
    free(k);
    free(v);
    return rc;
}

/* Outputs of a fixed set of queries at every layer (top_k 3, grouped), into out. */
static int probe(lmk_session *s, float *out)
{
    uint64_t seed = 99;
    float q[QROW];
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = 3;
    o.n_sink = 2;
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < NL; l++) {
            for (size_t i = 0; i < QROW; i++)
                q[i] = 3.0f * lmk_test_uniform(&seed);
            int rc = lmk_session_attend(s, l, 1, q, &o, out + ((size_t)p * NL + l) * QROW, NULL);
            if (rc) {
                fprintf(stderr, "attend: %s\n", lmk_session_errmsg(s));
                return rc;
            }
        }
    return LMK_OK;
}

static uint64_t digest(lmk_session *s)
{
    uint64_t d = 0;
    if (lmk_session_data_digest(s, &d))
        fprintf(stderr, "digest: %s\n", lmk_session_errmsg(s));
    return d;
}

static int reopen_and_branch(void)
{
    char a[4096], b[4096], c[4096], f[4096];
    lmk_test_dir(a, sizeof a, "sess-a");
    lmk_test_dir(b, sizeof b, "sess-b");
    lmk_test_dir(c, sizeof c, "sess-c");
    lmk_test_dir(f, sizeof f, "sess-fork");
    float pa[4 * NL * QROW], pb[4 * NL * QROW];
    lmk_session *sa = NULL, *sb = NULL, *sc = NULL;

    /* uninterrupted */
    REQUIRE_OK(open_s(a, "Flat", "model-x", 1, &sa));
    REQUIRE_OK(ingest(sa, 0, 1000, 97));
    REQUIRE_OK(probe(sa, pa));
    uint64_t da = digest(sa);

    /* interrupted mid-block (600 = 37 blocks + 8), reopened, continued */
    REQUIRE_OK(open_s(b, "Flat", "model-x", 1, &sb));
    REQUIRE_OK(ingest(sb, 0, 600, 50));
    lmk_session_close(sb);
    sb = NULL;
    REQUIRE_OK(open_s(b, NULL, NULL, 0, &sb));
    CHECK(lmk_session_tokens(sb, 0) == 600 && lmk_session_tokens(sb, 1) == 600);
    REQUIRE_OK(ingest(sb, 600, 1000, 33));
    CHECK(digest(sb) == da);
    REQUIRE_OK(probe(sb, pb));
    CHECK(memcmp(pa, pb, sizeof pa) == 0);
    lmk_session_close(sb);
    sb = NULL;

    /* refusals on reopen */
    CHECK_RC(open_s(b, NULL, "model-y", 0, &sb), LMK_EMISMATCH);
    CHECK(sb == NULL);
    CHECK_RC(open_s(b, "HNSW32", NULL, 0, &sb), LMK_EMISMATCH);
    {
        lmk_session_opts o = lmk_session_opts_default();
        o.head_dim = D * 2;
        char msg[256] = "";
        CHECK_RC(lmk_session_open(b, &o, &sb, msg, sizeof msg), LMK_EMISMATCH);
        CHECK(strstr(msg, "head_dim") != NULL);
    }
    /* a directory without a session, and creation refused */
    CHECK_RC(open_s(c, NULL, NULL, 0, &sb), LMK_ENOTFOUND);

    /* busy: the same directory twice */
    lmk_session *again = NULL;
    CHECK_RC(open_s(a, NULL, NULL, 0, &again), LMK_EBUSY);

    /* truncate to 700 equals a session ingested to 700; continuing equals the original */
    REQUIRE_OK(open_s(c, "Flat", "model-x", 1, &sc));
    REQUIRE_OK(ingest(sc, 0, 700, 128));
    uint64_t d700 = digest(sc);
    lmk_session_close(sc);
    sc = NULL;
    REQUIRE_OK(open_s(b, NULL, NULL, 0, &sb));
    REQUIRE_OK(lmk_session_truncate(sb, 700));
    CHECK(digest(sb) == d700);
    CHECK_RC(lmk_session_truncate(sb, 701), LMK_EINVAL);
    lmk_session_close(sb);
    sb = NULL;
    REQUIRE_OK(open_s(b, NULL, NULL, 0, &sb));
    CHECK(digest(sb) == d700);
    int64_t chk = 0, errs = -1;
    REQUIRE_OK(lmk_session_verify(sb, NULL, NULL, &chk, &errs));
    CHECK(errs == 0);
    REQUIRE_OK(ingest(sb, 700, 1000, 64));
    CHECK(digest(sb) == da);
    REQUIRE_OK(probe(sb, pb));
    CHECK(memcmp(pa, pb, sizeof pa) == 0);

    /* fork answers exactly as the original at the fork point */
    REQUIRE_OK(lmk_session_fork(sa, f));
    lmk_session *sf = NULL;
    REQUIRE_OK(open_s(f, NULL, "model-x", 0, &sf));
    CHECK(digest(sf) == da);
    REQUIRE_OK(probe(sf, pb));
    CHECK(memcmp(pa, pb, sizeof pa) == 0);
    /* diverge: the fork grows, the original does not change */
    REQUIRE_OK(ingest(sf, 1000, 1100, 100));
    CHECK(digest(sa) == da);
    CHECK(digest(sf) != da);
    lmk_session_close(sf);

    /* verify: clean session, every block checked */
    chk = 0;
    errs = -1;
    REQUIRE_OK(lmk_session_verify(sa, NULL, NULL, &chk, &errs));
    CHECK(errs == 0);
    CHECK(chk == (int64_t)NL * KV * ((1000 - 1) / BL));

    /* reindex to HNSW: data unchanged, spec recorded, retrieval still finds exact sets at
     * top_k = all */
    REQUIRE_OK(lmk_session_reindex(sa, "HNSW32"));
    CHECK(digest(sa) == da);
    lmk_session_info info;
    REQUIRE_OK(lmk_session_info_get(sa, &info));
    CHECK(strcmp(info.index_spec, "HNSW32") == 0);
    CHECK(info.blocks == (1000 - 1) / BL && info.tokens == 1000);
    lmk_session_close(sa);
    sa = NULL;
    REQUIRE_OK(open_s(a, NULL, NULL, 0, &sa));
    REQUIRE_OK(lmk_session_info_get(sa, &info));
    CHECK(strcmp(info.index_spec, "HNSW32") == 0);
    CHECK(lmk_index_ntotal(lmk_session_index(sa, 1, 1)) == (1000 - 1) / BL);
    lmk_session_close(sa);
    lmk_session_close(sb);
    lmk_test_rmdir(a);
    lmk_test_rmdir(b);
    lmk_test_rmdir(c);
    lmk_test_rmdir(f);
    return 0;
}

static void flip_byte(const char *path, long off)
{
    FILE *fp = fopen(path, "r+b");
    if (!fp)
        return;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    if (off < 0)
        off += size;
    fseek(fp, off, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, off, SEEK_SET);
    fputc(ch ^ 0x5a, fp);
    fclose(fp);
}

static int damaged_index_files(void)
{
    char a[4096], path[4200];
    lmk_test_dir(a, sizeof a, "sess-idx");
    lmk_session *s = NULL;
    float p1[4 * NL * QROW], p2[4 * NL * QROW];
    REQUIRE_OK(open_s(a, "Flat", "m", 1, &s));
    REQUIRE_OK(ingest(s, 0, 500, 100));
    REQUIRE_OK(probe(s, p1));
    lmk_session_close(s);
    /* damaged payload, damaged header, missing file, stale (fewer blocks) */
    snprintf(path, sizeof path, "%s/index-L0-H0.lmki", a);
    flip_byte(path, -3);
    snprintf(path, sizeof path, "%s/index-L0-H1.lmki", a);
    flip_byte(path, 2);
    snprintf(path, sizeof path, "%s/index-L1-H0.lmki", a);
    CHECK(remove(path) == 0);
    logged = 0;
    REQUIRE_OK(open_s(a, NULL, NULL, 0, &s));
    CHECK(logged >= 3); /* each repair is reported */
    REQUIRE_OK(probe(s, p2));
    CHECK(memcmp(p1, p2, sizeof p1) == 0);
    int64_t errs = -1;
    REQUIRE_OK(lmk_session_verify(s, NULL, NULL, NULL, &errs));
    CHECK(errs == 0);
    /* an index file that covers fewer blocks than stored is caught up */
    lmk_session_close(s);
    char old[4200];
    snprintf(old, sizeof old, "%s/old.lmki", a);
    snprintf(path, sizeof path, "%s/index-L1-H1.lmki", a);
    CHECK(rename(path, old) == 0);
    REQUIRE_OK(open_s(a, NULL, NULL, 0, &s));
    REQUIRE_OK(ingest(s, 500, 600, 100));
    lmk_session_close(s);
    CHECK(rename(old, path) == 0); /* now stale: 31 blocks in the file, 37 stored */
    logged = 0;
    REQUIRE_OK(open_s(a, NULL, NULL, 0, &s));
    CHECK(logged >= 1);
    CHECK(lmk_index_ntotal(lmk_session_index(s, 1, 1)) == (600 - 1) / BL);
    REQUIRE_OK(lmk_session_verify(s, NULL, NULL, NULL, &errs));
    CHECK(errs == 0);
    lmk_session_close(s);
    lmk_test_rmdir(a);
    return 0;
}

/* A session written by another format version is refused with LMK_EVERSION. */
static int other_version(void)
{
    char a[4096];
    lmk_test_dir(a, sizeof a, "sess-ver");
    lmk_session *s = NULL;
    REQUIRE_OK(open_s(a, "Flat", "m", 1, &s));
    lmk_session_close(s);
    lmk_store *st = NULL;
    lmk_store_opts so = lmk_store_opts_default();
    char msg[256];
    REQUIRE_OK(lmk_store_open(a, &so, &st, msg, sizeof msg));
    lmk_config_rec c;
    uint8_t rec[1024];
    size_t len = 0;
    REQUIRE_OK(lmk_store_get_meta(st, "config", rec, sizeof rec, &len));
    REQUIRE_OK(lmk_config_decode(rec, len, &c, msg, sizeof msg));
    c.format_version = 99;
    len = lmk_config_encode(&c, rec, sizeof rec);
    REQUIRE_OK(lmk_store_batch_begin(st));
    REQUIRE_OK(lmk_store_put_meta(st, "config", rec, len));
    REQUIRE_OK(lmk_store_batch_commit(st));
    lmk_store_close(st);
    CHECK_RC(open_s(a, NULL, NULL, 0, &s), LMK_EVERSION);
    lmk_test_rmdir(a);
    return 0;
}

/* IVF: exact search until enough landmarks exist to train, then trained; nothing lost. */
static int ivf_threshold(void)
{
    char a[4096];
    lmk_test_dir(a, sizeof a, "sess-ivf");
    lmk_session *s = NULL;
    REQUIRE_OK(open_s(a, "IVF4,Flat", "m", 1, &s));
    int was_trained = lmk_index_is_trained(lmk_session_index(s, 0, 0));
    int64_t crossed_at = -1;
    float q[QROW], out[QROW];
    uint64_t seed = 5;
    lmk_attend_opts o = lmk_attend_opts_default();
    o.top_k = 4;
    o.nprobe = 4; /* every list: the trained index must then be exact */
    int64_t blocks[NH * 4];
    for (int64_t t = 0; t < 400 * BL; t += 4 * BL) {
        REQUIRE_OK(ingest(s, t, t + 4 * BL, 4 * BL));
        lmk_index *idx = lmk_session_index(s, 0, 0);
        CHECK(lmk_index_ntotal(idx) == lmk_sealed(t + 4 * BL, BL));
        if (crossed_at < 0 && lmk_index_is_trained(idx))
            crossed_at = lmk_index_ntotal(idx);
        for (size_t i = 0; i < QROW; i++)
            q[i] = lmk_test_uniform(&seed);
        lmk_attend_stats st = {0};
        st.blocks = blocks;
        st.blocks_cap = 4;
        REQUIRE_OK(lmk_session_attend(s, 0, 1, q, &o, out, &st));
        /* the retrieved ids must be the exact top 4 of the stored landmarks */
        const float *lm = lmk_index_vectors(idx);
        int64_t nb = lmk_index_ntotal(idx);
        for (int h = 0; h < NH; h++) {
            const float *qh = q + h * D;
            int kv = h / (NH / KV);
            const float *l = lmk_index_vectors(lmk_session_index(s, 0, kv));
            (void)lm;
            for (int j = 0; j < 4 && j < nb; j++) {
                int64_t b = blocks[h * 4 + j];
                REQUIRE(b >= 0 && b < nb);
                float sb = 0;
                for (int d = 0; d < D; d++)
                    sb += qh[d] * l[b * D + d];
                int better = 0;
                for (int64_t c = 0; c < nb; c++) {
                    float sc = 0;
                    for (int d = 0; d < D; d++)
                        sc += qh[d] * l[c * D + d];
                    better += sc > sb + 1e-5f;
                }
                CHECK(better < 4);
            }
        }
    }
    printf("IVF4,Flat: untrained at start (%s), trained once %lld landmarks existed\n",
           was_trained ? "no" : "yes", (long long)crossed_at);
    CHECK(!was_trained);
    CHECK(crossed_at > 0);
    lmk_session_close(s);
    REQUIRE_OK(open_s(a, NULL, NULL, 0, &s));
    CHECK(lmk_index_is_trained(lmk_session_index(s, 1, 1)));
    CHECK(lmk_index_ntotal(lmk_session_index(s, 1, 1)) == lmk_sealed(400 * BL, BL));
    lmk_session_close(s);
    lmk_test_rmdir(a);
    return 0;
}

static int read_only(void)
{
    char a[4096];
    lmk_test_dir(a, sizeof a, "sess-ro");
    lmk_session *s = NULL;
    REQUIRE_OK(open_s(a, "Flat", "m", 1, &s));
    REQUIRE_OK(ingest(s, 0, 100, 100));
    lmk_session_close(s);
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = 1;
    char msg[256];
    REQUIRE_OK(lmk_session_open(a, &o, &s, msg, sizeof msg));
    float k[ROW] = {0}, v[ROW] = {0};
    CHECK_RC(lmk_session_append(s, 0, 1, k, v), LMK_EREADONLY);
    CHECK_RC(lmk_session_truncate(s, 10), LMK_EREADONLY);
    CHECK(lmk_session_tokens(s, 0) == 100);
    lmk_session_close(s);
    lmk_test_rmdir(a);
    return 0;
}

/* f16 storage: what a session stores and reads back is the portable round to nearest even
 * (lmk_f32_to_f16), whichever conversion the CPU offers (appends round with F16C when it can):
 * a dense sample of every float within the half range, subnormal halves and ties included,
 * through sealed blocks and the unsealed tail. */
static int f16_storage(void)
{
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "f16store");
    lmk_session *s = NULL;
    REQUIRE_OK(open_s(dir, "Flat", NULL, 1, &s));
    static const float extra[] = {65504.0f, 65519.99f, 5.9604645e-8f, 2.9802322e-8f,
                                  4.4703484e-8f, 1e-8f, -0.0f, 0.0f, 6.1035156e-5f, 6.1e-5f};
    size_t cap = 400000, n = 0;
    float *vals = malloc(cap * 4);
    for (uint32_t b = 0; b <= 0x477FEFFFu && n + 2 < cap; b += 8191)
        for (int sg = 0; sg < 2; sg++) {
            uint32_t bits = b | (sg ? 0x80000000u : 0);
            memcpy(&vals[n++], &bits, 4);
        }
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        vals[n++] = extra[i];
    int64_t T = (int64_t)((n + 2 * ROW - 1) / (2 * ROW)) + BL / 2; /* a partial tail too */
    float *k = malloc((size_t)T * ROW * 4), *v = malloc((size_t)T * ROW * 4);
    float *K = malloc((size_t)T * ROW * 4), *V = malloc((size_t)T * ROW * 4);
    for (size_t i = 0; i < (size_t)T * ROW; i++) {
        k[i] = vals[(2 * i) % n];
        v[i] = vals[(2 * i + 1) % n];
    }
    for (int l = 0; l < NL; l++)
        REQUIRE_OK(lmk_session_append(s, l, T, k, v));
    REQUIRE_OK(lmk_session_read_kv(s, 1, 0, T, K, V));
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)T * ROW; i++) {
        float wk = lmk_f16_to_f32(lmk_f32_to_f16(k[i])), wv = lmk_f16_to_f32(lmk_f32_to_f16(v[i]));
        bad += memcmp(&wk, &K[i], 4) != 0;
        bad += memcmp(&wv, &V[i], 4) != 0;
    }
    printf("f16 storage: %zu values (%lld tokens), %zu differ from the portable rounding\n",
           (size_t)T * ROW * 2, (long long)T, bad);
    CHECK(bad == 0);
    free(vals), free(k), free(v), free(K), free(V);
    lmk_session_close(s);
    lmk_test_rmdir(dir);
    return 0;
}

int main(void)
{
    lmk_test_seed("test_session", 0);
    f16_storage();
    reopen_and_branch();
    damaged_index_files();
    other_version();
    ivf_threshold();
    read_only();
    return lmk_test_finish("test_session", 0);
}
