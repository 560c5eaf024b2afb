/* landmark bench — the workload: recorded stream files (read and written) and the step
 * queries of the synthetic or recorded stream. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_priv.h"
#include "lmk_f16.h"

/* ---- recorded streams ----
 * Little-endian file: a 48-byte header
 *   char magic[8] = "LMKREC1\0"; uint32 n_layers, n_heads, n_kv_heads, head_dim;
 *   uint64 n_tokens, n_queries; uint32 dtype (0 f32, 1 f16); uint32 reserved (0)
 * then for each layer: keys (n_tokens, n_kv_heads, head_dim), values (same shape),
 * queries (n_queries, n_heads, head_dim). Query i of a layer is a decoding query at the
 * last position (n_tokens - 1). The file size must match exactly. */
#define REC_MAGIC "LMKREC1"
#define REC_HEADER 48

int bench_rec_open(const char *path, bench_rec *r, char *err, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        snprintf(err, cap, "%s: %s", path, strerror(e));
        return e;
    }
    unsigned char h[REC_HEADER];
    struct stat st;
    if (fstat(r->fd, &st) || pread(r->fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
        memcmp(h, REC_MAGIC, 8) != 0) {
        snprintf(err, cap, "%s: not a recorded stream (bad magic or short header)", path);
        close(r->fd);
        r->fd = -1;
        return LMK_EFORMAT;
    }
    uint32_t u[4], dt, res;
    uint64_t nt, nq;
    memcpy(u, h + 8, 16);
    memcpy(&nt, h + 24, 8);
    memcpy(&nq, h + 32, 8);
    memcpy(&dt, h + 40, 4);
    memcpy(&res, h + 44, 4);
    if (u[0] < 1 || u[0] > 1024 || u[1] < 1 || u[1] > 4096 || u[2] < 1 || u[2] > u[1] ||
        u[1] % u[2] || u[3] < 1 || u[3] > 1024 || dt > 1 || res != 0 || nt < 1 ||
        nt > (1ull << 40) || nq < 1 || nq > (1ull << 24)) {
        snprintf(err, cap, "%s: header out of range (layers %u, heads %u/%u, head_dim %u, "
                 "tokens %llu, queries %llu, dtype %u)", path, u[0], u[1], u[2], u[3],
                 (unsigned long long)nt, (unsigned long long)nq, dt);
        close(r->fd);
        r->fd = -1;
        return LMK_EFORMAT;
    }
    r->n_layers = (int)u[0];
    r->n_heads = (int)u[1];
    r->n_kv_heads = (int)u[2];
    r->head_dim = (int)u[3];
    r->n_tokens = (int64_t)nt;
    r->n_queries = (int64_t)nq;
    r->f16 = (int)dt;
    /* the size the shape names, in 128 bits: a shape whose size wraps 64 bits is refused */
    unsigned __int128 esz = dt ? 2 : 4;
    unsigned __int128 per_layer =
        ((unsigned __int128)2 * nt * u[2] + (unsigned __int128)nq * u[1]) * u[3] * esz;
    unsigned __int128 want128 = REC_HEADER + per_layer * u[0];
    uint64_t want = want128 > UINT64_MAX ? UINT64_MAX : (uint64_t)want128;
    if ((unsigned __int128)(uint64_t)st.st_size != want128) {
        if (want128 > UINT64_MAX)
            snprintf(err, cap, "%s: header out of range (its shape needs over 2^64 bytes)", path);
        else
            snprintf(err, cap, "%s: %llu bytes, the header's shape needs %llu", path,
                     (unsigned long long)st.st_size, (unsigned long long)want);
        close(r->fd);
        r->fd = -1;
        return LMK_EFORMAT;
    }
    return 0;
}

void bench_rec_close(bench_rec *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->conv);
    r->fd = -1;
    r->conv = NULL;
}

/* Read n rows of `width` numbers starting at row `row0` of the array at byte offset `base`
 * into out (f32). Returns 0 or -1 (message in err). */
static int rec_read(bench_rec *r, uint64_t base, int64_t row0, int64_t n, int width, float *out,
                    char *err, size_t cap)
{
    size_t esz = r->f16 ? 2 : 4;
    size_t cnt = (size_t)n * width;
    uint64_t off = base + (uint64_t)row0 * width * esz;
    void *dst = out;
    if (r->f16) {
        if (r->conv_cap < cnt) {
            free(r->conv);
            r->conv = malloc(cnt * 2);
            r->conv_cap = r->conv ? cnt : 0;
            if (!r->conv) {
                snprintf(err, cap, "out of memory");
                return -1;
            }
        }
        dst = r->conv;
    }
    size_t len = cnt * esz, got = 0;
    while (got < len) {
        ssize_t k = pread(r->fd, (char *)dst + got, len - got, (off_t)(off + got));
        if (k <= 0) {
            snprintf(err, cap, "reading the recorded stream: %s", k < 0 ? strerror(errno) : "short file");
            return -1;
        }
        got += (size_t)k;
    }
    if (r->f16)
        lmk_f16_to_f32_n(r->conv, out, cnt);
    return 0;
}

static uint64_t rec_layer_base(const bench_rec *r, int layer)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t per_layer = (2 * (uint64_t)r->n_tokens * r->n_kv_heads +
                          (uint64_t)r->n_queries * r->n_heads) * r->head_dim * esz;
    return REC_HEADER + per_layer * layer;
}

int bench_rec_kv(bench_rec *r, int layer, int64_t t0, int64_t n, float *k, float *v, char *err,
                  size_t cap)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t kb = rec_layer_base(r, layer);
    uint64_t vb = kb + (uint64_t)r->n_tokens * r->n_kv_heads * r->head_dim * esz;
    int w = r->n_kv_heads * r->head_dim;
    if (rec_read(r, kb, t0, n, w, k, err, cap) || rec_read(r, vb, t0, n, w, v, err, cap))
        return -1;
    return 0;
}

int bench_rec_load(const char *path, bench_rec_mem *m, char *err, size_t cap)
{
    memset(m, 0, sizeof *m);
    bench_rec r;
    int rc = bench_rec_open(path, &r, err, cap);
    if (rc)
        return rc;
    if (r.n_tokens < 2 || r.n_tokens > (1 << 24) || r.n_queries != r.n_tokens) {
        snprintf(err, cap, "%s: the representative table needs one query per token (tokens "
                 "%lld, queries %lld, at most 2^24)", path, (long long)r.n_tokens,
                 (long long)r.n_queries);
        bench_rec_close(&r);
        return LMK_EFORMAT;
    }
    m->NL = r.n_layers, m->NH = r.n_heads, m->NKV = r.n_kv_heads, m->D = r.head_dim;
    m->T = r.n_tokens, m->NQ = r.n_queries;
    /* rows of head_dim numbers in one layer: keys, values, queries; the file holds them all,
     * so the allocation is at most twice its size */
    int64_t rows = 2 * m->T * m->NKV + m->NQ * m->NH;
    size_t per = (size_t)rows * (size_t)m->D;
    m->k = malloc(per * (size_t)m->NL * sizeof(float));
    if (!m->k) {
        snprintf(err, cap, "out of memory loading %s", path);
        bench_rec_close(&r);
        return ENOMEM;
    }
    for (int l = 0; l < m->NL; l++)
        if (rec_read(&r, rec_layer_base(&r, l), 0, rows, m->D, m->k + per * (size_t)l, err,
                     cap)) {
            rc = strstr(err, "out of memory") ? ENOMEM : LMK_EFORMAT;
            break;
        }
    bench_rec_close(&r);
    if (rc) {
        free(m->k);
        m->k = NULL;
    }
    return rc;
}

static int rec_query(bench_rec *r, int layer, int64_t i, float *q, char *err, size_t cap)
{
    uint64_t esz = r->f16 ? 2 : 4;
    uint64_t qb = rec_layer_base(r, layer) +
                  2 * (uint64_t)r->n_tokens * r->n_kv_heads * r->head_dim * esz;
    return rec_read(r, qb, i % r->n_queries, 1, r->n_heads * r->head_dim, q, err, cap);
}

static int save_stream(const char *path, const lmk_bench_cfg *c, lmk_synth *gen, char *err,
                       size_t cap)
{
    const int NL = c->n_layers, NH = c->n_heads, H = c->n_kv_heads, D = c->head_dim;
    const int64_t T = c->tokens, NQ = c->steps;
    FILE *f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        snprintf(err, cap, "%s: %s", path, strerror(e));
        return e;
    }
    unsigned char h[REC_HEADER] = {0};
    memcpy(h, REC_MAGIC, 8);
    uint32_t u[4] = {(uint32_t)NL, (uint32_t)NH, (uint32_t)H, (uint32_t)D}, dt = 0;
    uint64_t nt = (uint64_t)T, nq = (uint64_t)NQ;
    memcpy(h + 8, u, 16);
    memcpy(h + 24, &nt, 8);
    memcpy(h + 32, &nq, 8);
    memcpy(h + 40, &dt, 4);
    const int64_t CH = 4096;
    size_t row = (size_t)H * D;
    float *k = malloc((size_t)CH * row * 4), *v = malloc((size_t)CH * row * 4);
    float *q = malloc((size_t)NH * D * 4);
    int ok = k && v && q && fwrite(h, 1, sizeof h, f) == sizeof h;
    for (int l = 0; ok && l < NL; l++) {
        for (int pass = 0; ok && pass < 2; pass++)
            for (int64_t t = 0; ok && t < T; t += CH) {
                int64_t n = T - t < CH ? T - t : CH;
                lmk_synth_kv(gen, l, t, n, k, v);
                ok = fwrite(pass ? v : k, sizeof(float) * row, (size_t)n, f) == (size_t)n;
            }
        for (int64_t i = 0; ok && i < NQ; i++) {
            if (c->probes)
                lmk_synth_probe(gen, l, (int)i, T, q);
            else
                lmk_synth_query(gen, l, i, q);
            ok = fwrite(q, sizeof(float) * NH * D, 1, f) == 1;
        }
    }
    free(k);
    free(v);
    free(q);
    int e = ok ? 0 : errno ? errno : ENOMEM;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        snprintf(err, cap, "writing %s failed: %s", path, strerror(e));
        unlink(path);
        return e;
    }
    return LMK_OK;
}


/* ---- the workload ---- */

static lmk_synth_cfg synth_cfg(const lmk_bench_cfg *c)
{
    lmk_synth_cfg gc = lmk_synth_cfg_default();
    gc.n_layers = c->n_layers;
    gc.n_heads = c->n_heads;
    gc.n_kv_heads = c->n_kv_heads;
    gc.head_dim = c->head_dim;
    gc.block_len = c->block_len;
    gc.seed = c->seed;
    gc.needle_span = c->needle_span;
    return gc;
}

int bench_workload_open(bench_workload *w, const lmk_bench_cfg *c, char *err, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->rec.fd = -1;
    w->T = c->tokens;
    if (c->recorded)
        return bench_rec_open(c->recorded, &w->rec, err, cap);
    lmk_synth_cfg gc = synth_cfg(c);
    if (lmk_synth_create(&gc, &w->gen)) {
        snprintf(err, cap, "cannot create the synthetic workload generator (shape out of range)");
        return LMK_EINVAL;
    }
    return LMK_OK;
}

void bench_workload_close(bench_workload *w)
{
    lmk_synth_free(w->gen);
    w->gen = NULL;
    bench_rec_close(&w->rec);
}

int bench_step_queries(bench_workload *w, const lmk_bench_cfg *c, int p, float *q,
                       int64_t *targets, char *err, size_t cap)
{
    size_t qrow = (size_t)c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        targets[l] = -1;
        if (w->gen) {
            if (c->probes)
                targets[l] = lmk_synth_probe(w->gen, l, p, w->T, q + l * qrow);
            else
                lmk_synth_query(w->gen, l, p, q + l * qrow);
        } else if (rec_query(&w->rec, l, p, q + l * qrow, err, cap)) {
            return LMK_ECORRUPT;
        }
    }
    return LMK_OK;
}

/* ---- writing a recorded stream ---- */

int lmk_bench_save_stream(const lmk_bench_cfg *c, const char *path, char *err, size_t cap)
{
    if (c->recorded) {
        snprintf(err, cap, "saving writes the synthetic stream; a recorded stream is given");
        return LMK_EINVAL;
    }
    bench_workload w;
    int rc = bench_cfg_check(c, err, cap);
    if (!rc)
        rc = bench_workload_open(&w, c, err, cap);
    if (rc)
        return rc;
    rc = save_stream(path, c, w.gen, err, cap);
    bench_workload_close(&w);
    return rc;
}
