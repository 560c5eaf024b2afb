/* Session lifecycle (open, close) and inspection. Appends and sealing live in
 * lmk_append.c, maintenance in lmk_maint.c, attention in lmk_attend.c.
 *
 * The store (LMDB) is the source of truth: config, per-layer token counts, sealed blocks,
 * landmarks and the unsealed tail tokens. Index files are derived and rebuilt when missing,
 * stale or damaged. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_f16.h"
#include "lmk_internal.h"

int lmk_sess_fail(lmk_session *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return code;
}

int lmk_buf_reserve(lmk_buf *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    if (n > SIZE_MAX / 2)
        return ENOMEM; /* also what a saturated lmk_szmul() asks for */
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n)
        cap *= 2;
    void *p = realloc(b->p, cap);
    if (!p)
        return ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_free(lmk_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

static void logf_(lmk_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(lmk_session *s, const char *fmt, ...)
{
    if (!s->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    lmk_report_v(s->log, s->log_ud, fmt, ap);
    va_end(ap);
}

LMK_API lmk_session_opts lmk_session_opts_default(void)
{
    lmk_session_opts o;
    memset(&o, 0, sizeof o);
    o.n_threads = 1;
    o.durability = LMK_DURABLE_NOMETA;
    return o;
}

LMK_API lmk_attend_opts lmk_attend_opts_default(void)
{
    lmk_attend_opts o;
    memset(&o, 0, sizeof o);
    o.top_k = 8;
    o.mode = LMK_MODE_GROUPED;
    o.retrieve = LMK_RETRIEVE_QHEAD;
    return o;
}

LMK_API const char *lmk_session_errmsg(const lmk_session *s)
{
    return s ? s->err : "no session";
}

static void index_path(const lmk_session *s, int l, int h, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/index-L%d-H%d.lmki", s->dir, l, h);
}

/* ---- open ---- */

static int alloc_state(lmk_session *s)
{
    size_t nidx = (size_t)s->n_layers * s->n_kv_heads;
    s->idx = calloc(nidx, sizeof *s->idx);
    s->idx_dirty = calloc(nidx, sizeof *s->idx_dirty);
    s->layers = calloc((size_t)s->n_layers, sizeof *s->layers);
    s->work = calloc((size_t)s->n_threads, sizeof *s->work);
    s->need_off = calloc((size_t)s->n_kv_heads + 1, sizeof *s->need_off);
    s->txl = calloc((size_t)s->n_layers, sizeof *s->txl);
    if (!s->idx || !s->idx_dirty || !s->layers || !s->work || !s->need_off || !s->txl)
        return ENOMEM;
    size_t tail = (size_t)s->n_kv_heads * s->L * s->head_dim;
    for (int l = 0; l < s->n_layers; l++) {
        s->layers[l].tail_k = calloc(tail, sizeof(float));
        s->layers[l].tail_v = calloc(tail, sizeof(float));
        if (!s->layers[l].tail_k || !s->layers[l].tail_v)
            return ENOMEM;
        if (lmk_repr_wants_queries(s->landmark)) {
            s->layers[l].tail_q = calloc((size_t)s->L * s->n_heads * s->head_dim, sizeof(float));
            s->layers[l].tail_qok = calloc((size_t)s->L, 1);
            if (!s->layers[l].tail_q || !s->layers[l].tail_qok)
                return ENOMEM;
        }
    }
    return 0;
}

typedef struct tail_scan {
    lmk_session *s;
    int layer;
    int64_t first, count, seen;
    int bad;
} tail_scan;

static int tail_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    tail_scan *t = ud;
    lmk_session *s = t->s;
    size_t row = (size_t)s->n_kv_heads * s->head_dim;
    int64_t pos = (int64_t)key->index;
    if (pos < t->first || pos >= t->first + t->count || len != 2 * row * s->esz ||
        pos != t->first + t->seen) {
        t->bad = 1;
        return 1;
    }
    int64_t j = pos - t->first;
    lmk_layer *ly = &s->layers[t->layer];
    /* Values from the scan may be unaligned: decode through memcpy-based helpers. */
    float tmp[1024];
    for (int h = 0; h < s->n_kv_heads; h++) {
        for (int part = 0; part < 2; part++) {
            const char *src = (const char *)val + ((size_t)part * row + (size_t)h * s->head_dim) * s->esz;
            float *dst = (part ? ly->tail_v : ly->tail_k) + ((size_t)h * s->L + j) * s->head_dim;
            for (int d0 = 0; d0 < s->head_dim; d0 += 1024) {
                int n = s->head_dim - d0 < 1024 ? s->head_dim - d0 : 1024;
                if (s->esz == 2) {
                    uint16_t hb[1024];
                    memcpy(hb, src + (size_t)d0 * 2, (size_t)n * 2);
                    lmk_f16_to_f32_n(hb, tmp, (size_t)n);
                } else {
                    memcpy(tmp, src + (size_t)d0 * 4, (size_t)n * 4);
                }
                memcpy(dst + d0, tmp, (size_t)n * 4);
            }
        }
    }
    t->seen++;
    return 0;
}

typedef struct lm_scan {
    lmk_session *s;
    int layer;
    int64_t *from;  /* per kv head: first block id wanted */
    int64_t upto;   /* blocks < upto */
    float **dst;    /* per kv head: (upto - from[h], head_dim) */
    int64_t *got;
    int bad;
    const float **have; /* per kv head: the loaded index's vectors, ids < from[h] */
    int *mismatch;      /* per kv head: a loaded vector differs from the stored landmark */
} lm_scan;

static int lm_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    lm_scan *t = ud;
    int h = key->head;
    int64_t b = (int64_t)key->index;
    const size_t RD = (size_t)t->s->R * t->s->head_dim;
    if (h >= t->s->n_kv_heads || len != RD * 4) {
        t->bad = 1;
        return 1;
    }
    if (b < t->from[h]) {
        /* the index file must hold exactly the stored landmarks: after a truncation and
         * another continuation, a file saved earlier can cover the right count with other
         * vectors */
        if (t->have && t->have[h] && memcmp(val, t->have[h] + (size_t)b * RD, len))
            t->mismatch[h] = 1;
        return 0;
    }
    if (!t->dst[h] || b >= t->upto)
        return 0;
    if (b != t->from[h] + t->got[h]) {
        t->bad = 1;
        return 1;
    }
    memcpy(t->dst[h] + (size_t)(b - t->from[h]) * RD, val, len);
    t->got[h]++;
    return 0;
}

/* Bring the index of every (layer, head) to exactly the sealed blocks: load the file, catch
 * up or truncate it, or rebuild it from the stored landmarks. */
static int sync_indices(lmk_session *s, int layer)
{
    int64_t sealed = lmk_sealed(s->layers[layer].ntok, s->L);
    int H = s->n_kv_heads;
    /* per KV head (up to 65535 of them, read from disk): on the heap */
    size_t hb = (size_t)H * (2 * sizeof(int64_t) + sizeof(float *) + sizeof(const float *) +
                             sizeof(int));
    char *harr = calloc(1, hb);
    if (!harr)
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    int64_t *from = (int64_t *)(void *)harr, *got = from + H;
    float **dst = (float **)(void *)(got + H);
    const float **have = (const float **)(dst + H);
    int *mismatch = (int *)(void *)(have + H);
    int rc = LMK_OK;
    for (int h = 0; h < H; h++) {
        char path[PATH_MAX + 64], msg[512] = "";
        index_path(s, layer, h, path, sizeof path);
        lmk_index *idx = NULL;
        int lrc = lmk_index_load(path, s->spec, s->head_dim, &idx, msg, sizeof msg);
        if (lrc == LMK_OK) {
            int64_t nt = lmk_index_ntotal(idx);
            if (nt > sealed * s->R || nt % s->R) {
                int64_t keep = nt / s->R < sealed ? nt / s->R : sealed;
                logf_(s, "index L%d H%d covers %lld entries, session has %lld blocks of %d: "
                      "truncated", layer, h, (long long)nt, (long long)sealed, s->R);
                if ((rc = lmk_index_truncate(idx, keep * s->R)) != LMK_OK) {
                    rc = lmk_sess_index_fail(s, rc, idx, "truncating an index");
                    lmk_index_free(idx);
                    goto out;
                }
                s->idx_dirty[layer * H + h] = 1;
            }
        } else {
            if (lrc != LMK_ENOTFOUND || sealed > 0)
                logf_(s, "index L%d H%d %s: rebuilding from %lld stored landmarks", layer, h,
                      lrc == LMK_ENOTFOUND ? "missing" : msg, (long long)sealed);
            lmk_index_opts io = lmk_index_opts_default();
            io.spec = s->spec;
            io.dim = s->head_dim;
            rc = lmk_index_create(&io, &idx, msg, sizeof msg);
            if (rc) {
                rc = lmk_sess_fail(s, rc, "index spec \"%s\": %s", s->spec, msg);
                goto out;
            }
            s->idx_dirty[layer * H + h] = 1;
        }
        s->idx[layer * H + h] = idx;
    }
    /* Check what the files hold against the store, then catch up or rebuild. */
    for (int pass = 0; pass < 2; pass++) {
        for (int h = 0; h < H; h++) {
            lmk_index *idx = s->idx[layer * H + h];
            from[h] = lmk_index_ntotal(idx) / s->R;
            got[h] = 0;
            mismatch[h] = 0;
            have[h] = pass == 0 ? lmk_index_vectors(idx) : NULL;
            free(dst[h]);
            dst[h] = NULL;
            if (from[h] < sealed) {
                dst[h] = malloc((size_t)(sealed - from[h]) * s->R * s->head_dim * sizeof(float));
                if (!dst[h]) {
                    rc = lmk_sess_fail(s, ENOMEM, "out of memory rebuilding indices");
                    goto out;
                }
            }
        }
        lm_scan t = {s, layer, from, sealed, dst, got, 0, have, mismatch};
        rc = lmk_store_scan(s->st, LMK_KEY_LANDMARK, layer, 0, lm_cb, &t);
        if (rc || t.bad) {
            rc = rc == 1 || rc == 0 ? LMK_ECORRUPT : rc;
            rc = lmk_sess_store_fail(s, rc, "reading landmarks");
            goto out;
        }
        int redo = 0;
        for (int h = 0; h < H; h++) {
            if (!mismatch[h])
                continue;
            logf_(s, "index L%d H%d does not match the stored landmarks: rebuilding from %lld",
                  layer, h, (long long)sealed);
            lmk_index *idx = s->idx[layer * H + h];
            if ((rc = lmk_index_truncate(idx, 0)) != LMK_OK) {
                rc = lmk_sess_index_fail(s, rc, idx, "resetting an index");
                goto out;
            }
            s->idx_dirty[layer * H + h] = 1;
            redo = 1;
        }
        if (!redo)
            break;
    }
    for (int h = 0; h < H; h++) {
        if (!dst[h])
            continue;
        if (got[h] != sealed - from[h]) {
            rc = lmk_sess_fail(s, LMK_ECORRUPT,
                               "layer %d head %d: %lld landmarks stored, %lld blocks sealed",
                               layer, h, (long long)(from[h] + got[h]), (long long)sealed);
            goto out;
        }
        if (from[h] > 0)
            logf_(s, "index L%d H%d caught up by %lld blocks", layer, h,
                  (long long)(sealed - from[h]));
        lmk_index *idx = s->idx[layer * H + h];
        int arc = lmk_index_add(idx, got[h] * s->R, dst[h]);
        if (arc) {
            rc = lmk_sess_index_fail(s, arc, idx, "rebuilding an index");
            goto out;
        }
        s->idx_dirty[layer * H + h] = 1;
    }
out:
    for (int h = 0; h < H; h++)
        free(dst[h]);
    free(harr);
    return rc;
}

int lmk_sess_read_layer_rec(lmk_session *s, int l, int64_t *ntok)
{
    char name[32];
    uint8_t rec[16];
    size_t len = 0;
    snprintf(name, sizeof name, "layer/%d", l);
    int rc = lmk_store_get_meta(s->st, name, rec, sizeof rec, &len);
    if (rc == LMK_ENOTFOUND) {
        *ntok = 0;
        return LMK_OK;
    }
    if (rc == LMK_EINVAL)
        return lmk_sess_fail(s, LMK_ECORRUPT, "layer %d record is oversized", l);
    if (rc)
        return lmk_sess_store_fail(s, rc, "reading the layer record");
    if (lmk_layer_rec_decode(rec, len, ntok))
        return lmk_sess_fail(s, LMK_ECORRUPT, "layer %d record is damaged", l);
    return LMK_OK;
}

/* Layer records, tails and indices, all from the caller's read snapshot. */
static int load_layers(lmk_session *s)
{
    for (int l = 0; l < s->n_layers; l++) {
        int rc = lmk_sess_read_layer_rec(s, l, &s->layers[l].ntok);
        if (rc)
            return rc;
        int64_t sealed = lmk_sealed(s->layers[l].ntok, s->L);
        tail_scan t = {s, l, sealed * s->L, s->layers[l].ntok - sealed * s->L, 0, 0};
        rc = lmk_store_scan(s->st, LMK_KEY_TAIL, l, 0, tail_cb, &t);
        if (rc && !(rc == 1 && t.bad))
            return lmk_sess_store_fail(s, rc, "reading the tail");
        if (t.bad || t.seen != t.count)
            return lmk_sess_fail(s, LMK_ECORRUPT,
                                 "layer %d: tail holds %lld of %lld unsealed tokens", l,
                                 (long long)t.seen, (long long)t.count);
        if ((rc = sync_indices(s, l)))
            return rc;
    }
    return LMK_OK;
}

static int check_shape(lmk_session *s, const lmk_session_opts *o, const lmk_config_rec *c)
{
#define SAME(field, name)                                                                   \
    if (o->field && (int)o->field != (int)c->field)                                                 \
        return lmk_sess_fail(s, LMK_EMISMATCH, "session has %s %d, %d requested", name,    \
                             (int)c->field, (int)o->field);
    SAME(n_layers, "n_layers");
    SAME(n_heads, "n_heads");
    SAME(n_kv_heads, "n_kv_heads");
    SAME(head_dim, "head_dim");
    SAME(block_len, "block_len");
    SAME(dtype, "dtype");
    SAME(landmark, "landmark source");
#undef SAME
    if (o->n_repr && c->landmark >= LMK_LANDMARK_ATTN && o->n_repr != c->n_repr)
        return lmk_sess_fail(s, LMK_EMISMATCH, "session has %d representatives per block, "
                             "%d requested", c->n_repr, o->n_repr);
    if (o->index_spec && strcmp(o->index_spec, c->spec) != 0)
        return lmk_sess_fail(s, LMK_EMISMATCH,
                             "session indexes with \"%s\", \"%s\" requested (use reindex)",
                             c->spec, o->index_spec);
    if (o->fingerprint && strcmp(o->fingerprint, c->fingerprint) != 0)
        return lmk_sess_fail(s, LMK_EMISMATCH,
                             "session was made by model \"%s\", not \"%s\"", c->fingerprint,
                             o->fingerprint);
    return LMK_OK;
}

static int validate_new(lmk_session *s, const lmk_session_opts *o, lmk_config_rec *c)
{
    memset(c, 0, sizeof *c);
    c->format_version = LMK_FORMAT_VERSION;
    c->n_layers = o->n_layers;
    c->n_heads = o->n_heads;
    c->n_kv_heads = o->n_kv_heads;
    c->head_dim = o->head_dim;
    c->block_len = o->block_len ? o->block_len : 64;
    c->dtype = o->dtype ? (int)o->dtype : LMK_DTYPE_F16;
    c->landmark = o->landmark ? (int)o->landmark : LMK_LANDMARK_MEAN;
    const char *spec = o->index_spec ? o->index_spec : "Flat";
    const char *fp = o->fingerprint ? o->fingerprint : "";
    if (c->n_layers < 1 || c->n_layers > 65535)
        return lmk_sess_fail(s, LMK_EINVAL, "n_layers must be in 1..65535 (got %d)", c->n_layers);
    if (c->n_kv_heads < 1 || c->n_kv_heads > 65535)
        return lmk_sess_fail(s, LMK_EINVAL, "n_kv_heads must be in 1..65535 (got %d)",
                             c->n_kv_heads);
    if (c->n_heads < c->n_kv_heads || c->n_heads % c->n_kv_heads)
        return lmk_sess_fail(s, LMK_EINVAL,
                             "n_heads (%d) must be a positive multiple of n_kv_heads (%d)",
                             c->n_heads, c->n_kv_heads);
    if (c->head_dim < 1 || c->head_dim > 65536)
        return lmk_sess_fail(s, LMK_EINVAL, "head_dim must be in 1..65536 (got %d)", c->head_dim);
    if (c->block_len < 1 || c->block_len > (1 << 20))
        return lmk_sess_fail(s, LMK_EINVAL, "block_len must be in 1..1048576 (got %d)",
                             c->block_len);
    if (c->dtype != LMK_DTYPE_F32 && c->dtype != LMK_DTYPE_F16)
        return lmk_sess_fail(s, LMK_EINVAL, "unknown dtype %d", c->dtype);
    if (c->landmark < LMK_LANDMARK_MEAN || c->landmark > LMK_LANDMARK_OUTLIER)
        return lmk_sess_fail(s, LMK_EINVAL, "unknown landmark source %d", c->landmark);
    if (c->landmark > LMK_LANDMARK_TOKEN)
        c->format_version = LMK_FORMAT_VERSION_REPR;
    if (o->n_repr < 0 || (o->n_repr > 0 && c->landmark >= LMK_LANDMARK_ATTN &&
                          o->n_repr > c->block_len))
        return lmk_sess_fail(s, LMK_EINVAL, "n_repr must be in 1..block_len (got %d)",
                             o->n_repr);
    c->n_repr = lmk_repr_count(c->landmark, c->block_len,
                               o->n_repr ? o->n_repr : (c->block_len < 4 ? c->block_len : 4));
    if (c->landmark == LMK_LANDMARK_TOKEN && c->block_len < 2)
        return lmk_sess_fail(s, LMK_EINVAL, "landmark tokens need block_len >= 2");
    if (strlen(spec) > LMK_MAX_SPEC || strlen(fp) > LMK_MAX_FINGERPRINT)
        return lmk_sess_fail(s, LMK_EINVAL, "index spec or fingerprint too long");
    strcpy(c->spec, spec);
    strcpy(c->fingerprint, fp);
    /* Refuse a bad spec before anything is written. */
    lmk_index_opts io = lmk_index_opts_default();
    io.spec = spec;
    io.dim = c->head_dim;
    lmk_index *probe = NULL;
    char msg[512] = "";
    int rc = lmk_index_create(&io, &probe, msg, sizeof msg);
    lmk_index_free(probe);
    if (rc)
        return lmk_sess_fail(s, rc, "index spec \"%s\": %s", spec, msg);
    return LMK_OK;
}

static void apply_config(lmk_session *s, const lmk_config_rec *c)
{
    s->n_layers = c->n_layers;
    s->n_heads = c->n_heads;
    s->n_kv_heads = c->n_kv_heads;
    s->head_dim = c->head_dim;
    s->L = c->block_len;
    s->group = c->n_heads / c->n_kv_heads;
    s->dtype = (lmk_dtype)c->dtype;
    s->esz = s->dtype == LMK_DTYPE_F16 ? 2 : 4;
    s->landmark = (lmk_landmark_src)c->landmark;
    s->R = c->n_repr > 0 ? c->n_repr : 1;
    snprintf(s->spec, sizeof s->spec, "%s", c->spec);
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", c->fingerprint);
}

LMK_API int lmk_session_open(const char *dir, const lmk_session_opts *opts, lmk_session **out,
                             char *errmsg, size_t errmsg_cap)
{
    if (out)
        *out = NULL;
    if (!dir || !opts || !out) {
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "lmk_session_open: NULL argument");
        return LMK_EINVAL;
    }
    lmk_session *s = calloc(1, sizeof *s);
    if (!s)
        return ENOMEM;
    int rc = LMK_OK;
    if (strlen(dir) >= sizeof s->dir - 64) {
        rc = lmk_sess_fail(s, LMK_EINVAL, "directory path too long");
        goto fail;
    }
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->read_only = opts->read_only;
    s->n_threads = opts->n_threads > 0 ? opts->n_threads : 1;
    if (opts->n_threads < 0 || opts->n_threads > 1024) {
        rc = lmk_sess_fail(s, LMK_EINVAL, "n_threads must be in 1..1024");
        goto fail;
    }
    s->log = opts->log;
    s->log_ud = opts->log_ud;

    lmk_store_opts so = lmk_store_opts_default();
    so.read_only = opts->read_only;
    so.create = opts->create && !opts->read_only;
    so.sync = opts->durability == LMK_DURABLE_FULL     ? LMK_SYNC_FULL
              : opts->durability == LMK_DURABLE_NONE ? LMK_SYNC_NONE
                                                     : LMK_SYNC_NOMETA;
    char msg[512] = "";
    rc = lmk_store_open(dir, &so, &s->st, msg, sizeof msg);
    if (rc) {
        /* name the directory once: most store messages start with it already */
        if (!strncmp(msg, dir, strlen(dir)))
            rc = lmk_sess_fail(s, rc, "%s", msg);
        else
            rc = lmk_sess_fail(s, rc, "%s: %s", dir, msg);
        goto fail;
    }
    /* Everything open reads (config, layer records, tails, landmarks) comes from one
     * snapshot: a writer in another process may commit in between. */
    if ((rc = lmk_store_read_begin(s->st))) {
        rc = lmk_sess_store_fail(s, rc, "starting a read");
        goto fail;
    }
    uint8_t rec[1024];
    size_t len = 0;
    lmk_config_rec c;
    rc = lmk_store_get_meta(s->st, "config", rec, sizeof rec, &len);
    if (rc == LMK_ENOTFOUND) {
        lmk_store_read_end(s->st);
        if (!opts->create || opts->read_only) {
            rc = lmk_sess_fail(s, LMK_ENOTFOUND, "%s holds no landmark session", dir);
            goto fail;
        }
        if ((rc = validate_new(s, opts, &c)))
            goto fail;
        uint8_t enc[1024];
        size_t n = lmk_config_encode(&c, enc, sizeof enc);
        if ((rc = lmk_store_batch_begin(s->st)) ||
            (rc = lmk_store_put_meta(s->st, "config", enc, n)) ||
            (rc = lmk_store_batch_commit(s->st))) {
            lmk_store_batch_abort(s->st);
            rc = lmk_sess_store_fail(s, rc, "writing the session configuration");
            goto fail;
        }
        if ((rc = lmk_store_read_begin(s->st))) {
            rc = lmk_sess_store_fail(s, rc, "starting a read");
            goto fail;
        }
    } else if (rc == LMK_EINVAL) {
        rc = lmk_sess_fail(s, LMK_ECORRUPT, "session configuration record is oversized");
        goto fail;
    } else if (rc) {
        rc = lmk_sess_store_fail(s, rc, "reading the session configuration");
        goto fail;
    } else {
        if ((rc = lmk_config_decode(rec, len, &c, s->err, sizeof s->err)))
            goto fail;
        if ((rc = check_shape(s, opts, &c)))
            goto fail;
    }
    apply_config(s, &c);
    {
        /* A recorded spec this build refuses (written by an older one, say) must not make
         * the session unopenable: search exactly until `reindex` records another. */
        lmk_index_opts io = lmk_index_opts_default();
        io.spec = s->spec;
        io.dim = s->head_dim;
        lmk_index *probe = NULL;
        int prc = lmk_index_create(&io, &probe, msg, sizeof msg);
        lmk_index_free(probe);
        if (prc == LMK_EUNSUPPORTED) {
            logf_(s, "recorded index spec \"%s\" is not usable (%s): searching exactly "
                     "(\"Flat\") until reindex", s->spec, msg);
            snprintf(s->spec, sizeof s->spec, "Flat");
        }
    }
    if ((rc = alloc_state(s))) {
        rc = lmk_sess_fail(s, rc, "out of memory");
        goto fail;
    }
    rc = load_layers(s);
    lmk_store_read_end(s->st);
    if (rc)
        goto fail;
    *out = s;
    return LMK_OK;
fail:
    if (errmsg && errmsg_cap)
        snprintf(errmsg, errmsg_cap, "%s", s->err[0] ? s->err : lmk_strerror(rc));
    s->read_only = 1; /* nothing to save */
    lmk_session_close(s);
    return rc;
}

static int save_indices(lmk_session *s)
{
    if (s->read_only || !s->idx)
        return LMK_OK;
    int H = s->n_kv_heads;
    for (int i = 0; i < s->n_layers * H; i++) {
        if (!s->idx[i] || !s->idx_dirty[i])
            continue;
        char path[PATH_MAX + 64];
        index_path(s, i / H, i % H, path, sizeof path);
        int rc = lmk_index_save(s->idx[i], path);
        if (rc)
            return lmk_sess_index_fail(s, rc, s->idx[i], "saving an index");
        s->idx_dirty[i] = 0;
    }
    return LMK_OK;
}

LMK_API void lmk_session_close(lmk_session *s)
{
    if (!s)
        return;
    if (s->txn != LMK_TXN_NONE && lmk_sess_txn_abort(s) && s->log)
        s->log(s->log_ud, s->err);
    if (save_indices(s) && s->log)
        s->log(s->log_ud, s->err);
    if (s->idx)
        for (int i = 0; i < s->n_layers * s->n_kv_heads; i++)
            lmk_index_free(s->idx[i]);
    if (s->layers)
        for (int l = 0; l < s->n_layers; l++) {
            free(s->layers[l].tail_k);
            free(s->layers[l].tail_v);
            free(s->layers[l].tail_q);
            free(s->layers[l].tail_qok);
        }
    lmk_store_close(s->st);
    free(s->idx);
    free(s->idx_dirty);
    free(s->layers);
    buf_free(&s->enc);
    buf_free(&s->lmbuf);
    buf_free(&s->q_search);
    buf_free(&s->ids);
    buf_free(&s->sel);
    buf_free(&s->nsel);
    buf_free(&s->need);
    buf_free(&s->slots);
    buf_free(&s->slotmem);
    buf_free(&s->rawblk);
    lmk_bcache_free(&s->bcache);
    if (s->work)
        for (int t = 0; t < s->n_threads; t++)
            buf_free(&s->work[t]);
    free(s->work);
    free(s->need_off);
    if (s->txl)
        for (int l = 0; l < s->n_layers; l++) {
            buf_free(&s->txl[l].tail0);
            buf_free(&s->txl[l].blocks);
        }
    free(s->txl);
    free(s);
}

/* ---- inspection ---- */

LMK_API int64_t lmk_session_tokens(const lmk_session *s, int layer)
{
    if (!s || layer < 0 || layer >= s->n_layers)
        return -1;
    return s->layers[layer].ntok;
}

LMK_API int lmk_session_info_get(lmk_session *s, lmk_session_info *info)
{
    if (!s || !info)
        return LMK_EINVAL;
    memset(info, 0, sizeof *info);
    info->format_version = s->landmark > LMK_LANDMARK_TOKEN ? LMK_FORMAT_VERSION_REPR
                                                            : LMK_FORMAT_VERSION;
    info->n_repr = s->R;
    info->n_layers = s->n_layers;
    info->n_heads = s->n_heads;
    info->n_kv_heads = s->n_kv_heads;
    info->head_dim = s->head_dim;
    info->block_len = s->L;
    info->dtype = s->dtype;
    info->landmark = s->landmark;
    snprintf(info->index_spec, sizeof info->index_spec, "%s", s->spec);
    snprintf(info->fingerprint, sizeof info->fingerprint, "%s", s->fingerprint);
    int64_t mn = s->layers[0].ntok;
    for (int l = 1; l < s->n_layers; l++)
        if (s->layers[l].ntok < mn)
            mn = s->layers[l].ntok;
    info->tokens = mn;
    info->blocks = lmk_sealed(s->layers[0].ntok, s->L);
    uint64_t bytes = 0;
    int rc = lmk_store_disk_bytes(s->st, &bytes);
    if (rc)
        return lmk_sess_store_fail(s, rc, "measuring disk use");
    for (int i = 0; i < s->n_layers * s->n_kv_heads; i++) {
        char path[PATH_MAX + 64];
        struct stat st;
        index_path(s, i / s->n_kv_heads, i % s->n_kv_heads, path, sizeof path);
        if (stat(path, &st) == 0)
            bytes += (uint64_t)st.st_blocks * 512;
    }
    info->disk_bytes = bytes;
    return LMK_OK;
}

LMK_API lmk_index *lmk_session_index(lmk_session *s, int layer, int kv_head)
{
    if (!s || layer < 0 || layer >= s->n_layers || kv_head < 0 || kv_head >= s->n_kv_heads)
        return NULL;
    return s->idx[layer * s->n_kv_heads + kv_head];
}

LMK_API int lmk_session_landmark(lmk_session *s, int layer, int kv_head, int64_t b, float *l)
{
    lmk_index *idx = lmk_session_index(s, layer, kv_head);
    if (!idx || !l || b < 0 || b >= lmk_index_ntotal(idx))
        return s ? lmk_sess_fail(s, LMK_EINVAL, "no landmark (%d, %d, %lld)", layer, kv_head,
                                 (long long)b)
                 : LMK_EINVAL;
    if (b >= lmk_index_ntotal(idx) / s->R)
        return lmk_sess_fail(s, LMK_EINVAL, "no landmark (%d, %d, %lld)", layer, kv_head,
                             (long long)b);
    memcpy(l, lmk_index_vectors(idx) + (size_t)b * s->R * s->head_dim,
           (size_t)s->R * s->head_dim * 4);
    return LMK_OK;
}

LMK_API int lmk_session_read_kv(lmk_session *s, int layer, int64_t t0, int64_t n, float *k,
                                float *v)
{
    if (!s || layer < 0 || layer >= s->n_layers || t0 < 0 || n < 0 || !k || !v ||
        t0 + n > s->layers[layer].ntok)
        return s ? lmk_sess_fail(s, LMK_EINVAL, "read_kv: range out of bounds") : LMK_EINVAL;
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    lmk_layer *ly = &s->layers[layer];
    int64_t sealed = lmk_sealed(ly->ntok, L);
    size_t bl = (size_t)L * D;
    float *bk = malloc(2 * bl * sizeof(float));
    if (!bk)
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    float *bv = bk + bl;
    int rc = lmk_store_read_begin(s->st);
    if (rc) {
        free(bk);
        return lmk_sess_store_fail(s, rc, "starting a read");
    }
    for (int64_t t = t0; t < t0 + n;) {
        int64_t b = t / L;
        int64_t end = (b + 1) * L < t0 + n ? (b + 1) * L : t0 + n;
        for (int h = 0; h < H; h++) {
            const float *ks, *vs;
            if (b < sealed) {
                if ((rc = lmk_sess_load_block(s, layer, h, b, bk, bv)))
                    goto out;
                ks = bk;
                vs = bv;
            } else {
                ks = ly->tail_k + (size_t)h * L * D;
                vs = ly->tail_v + (size_t)h * L * D;
            }
            for (int64_t p = t; p < end; p++) {
                memcpy(k + ((size_t)(p - t0) * H + h) * D, ks + (size_t)(p - b * L) * D,
                       (size_t)D * 4);
                memcpy(v + ((size_t)(p - t0) * H + h) * D, vs + (size_t)(p - b * L) * D,
                       (size_t)D * 4);
            }
        }
        t = end;
    }
out:
    lmk_store_read_end(s->st);
    free(bk);
    return rc;
}

/* FNV-1a 64 over (key, value) pairs in key order: depends on the data only. */
typedef struct digest_ctx {
    uint64_t h;
} digest_ctx;

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 0x100000001b3ull;
    }
}

static int digest_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    digest_ctx *d = ud;
    uint8_t kb[13] = {key->kind};
    kb[1] = (uint8_t)(key->layer >> 8);
    kb[2] = (uint8_t)key->layer;
    kb[3] = (uint8_t)(key->head >> 8);
    kb[4] = (uint8_t)key->head;
    for (int i = 0; i < 8; i++)
        kb[5 + i] = (uint8_t)(key->index >> (56 - 8 * i));
    fnv(&d->h, kb, sizeof kb);
    uint64_t l64 = len;
    fnv(&d->h, &l64, sizeof l64);
    fnv(&d->h, val, len);
    return 0;
}

LMK_API int lmk_session_data_digest(lmk_session *s, uint64_t *digest)
{
    if (!s || !digest)
        return LMK_EINVAL;
    int rc = lmk_sess_no_txn(s, "data digest");
    if (rc)
        return rc;
    digest_ctx d = {0xcbf29ce484222325ull};
    int32_t shape[7] = {s->n_layers, s->n_heads, s->n_kv_heads, s->head_dim, s->L,
                        (int32_t)s->dtype, (int32_t)s->landmark};
    fnv(&d.h, shape, sizeof shape);
    /* counts and records from one snapshot */
    rc = lmk_store_read_begin(s->st);
    if (rc)
        return lmk_sess_store_fail(s, rc, "starting a read");
    for (int l = 0; l < s->n_layers && rc == LMK_OK; l++) {
        int64_t ntok = 0;
        if ((rc = lmk_sess_read_layer_rec(s, l, &ntok)) == LMK_OK)
            fnv(&d.h, &ntok, sizeof(int64_t));
    }
    const uint8_t kinds[3] = {LMK_KEY_BLOCK, LMK_KEY_LANDMARK, LMK_KEY_TAIL};
    for (int i = 0; i < 3 && rc == LMK_OK; i++) {
        rc = lmk_store_scan(s->st, kinds[i], -1, 0, digest_cb, &d);
        if (rc)
            lmk_sess_store_fail(s, rc, "digesting stored data");
    }
    lmk_store_read_end(s->st);
    if (rc == LMK_OK)
        *digest = d.h;
    return rc;
}

LMK_API int lmk_session_sync(lmk_session *s)
{
    if (!s)
        return LMK_EINVAL;
    if (s->read_only)
        return LMK_OK;
    int rc = lmk_sess_no_txn(s, "sync");
    if (rc)
        return rc;
    rc = lmk_store_sync(s->st);
    if (rc)
        return lmk_sess_store_fail(s, rc, "syncing the store");
    return save_indices(s);
}
