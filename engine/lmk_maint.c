/* Maintenance: truncate, fork, reindex, verify. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_f16.h"
#include "lmk_internal.h"

LMK_API int lmk_session_truncate(lmk_session *s, int64_t n)
{
    if (!s)
        return LMK_EINVAL;
    if (s->read_only)
        return lmk_sess_fail(s, LMK_EREADONLY, "session is open read-only");
    int rc = lmk_sess_no_txn(s, "truncate");
    if (rc)
        return rc;
    lmk_bcache_clear(&s->bcache); /* block numbers past n will hold other tokens */
    for (int l = 0; l < s->n_layers; l++)
        if (n < 0 || n > s->layers[l].ntok)
            return lmk_sess_fail(s, LMK_EINVAL,
                                 "cannot truncate to %lld tokens: layer %d holds %lld",
                                 (long long)n, l, (long long)s->layers[l].ntok);
    const int L = s->L, H = s->n_kv_heads, D = s->head_dim;
    const size_t row = (size_t)H * D;
    int64_t nb = lmk_sealed(n, L);
    int64_t keep0 = nb * L; /* first token of the new tail */
    int64_t ntail = n - keep0;
    /* the new tail of every layer, (n_layers, ntail, n_kv_heads, head_dim) for K and V */
    size_t per_layer = lmk_szmul((size_t)(ntail > 0 ? ntail : 1), row);
    float *k = malloc(lmk_szmul(lmk_szmul(per_layer, (size_t)s->n_layers), 2 * sizeof(float)));
    uint8_t *enc = malloc(2 * row * s->esz);
    if (!k || !enc) {
        free(k);
        free(enc);
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    }
    float *v = k + per_layer * (size_t)s->n_layers;
    /* One store commit for every layer: an interruption leaves all layers at the old length
     * or all at the new one. */
    for (int l = 0; l < s->n_layers && rc == LMK_OK; l++)
        if (ntail > 0 && s->layers[l].ntok != n)
            rc = lmk_session_read_kv(s, l, keep0, ntail, k + per_layer * l, v + per_layer * l);
    if (rc == LMK_OK && (rc = lmk_store_batch_begin(s->st)) != LMK_OK)
        lmk_sess_store_fail(s, rc, "starting a write");
    int batch = rc == LMK_OK;
    for (int l = 0; l < s->n_layers && rc == LMK_OK; l++) {
        if (s->layers[l].ntok == n)
            continue;
        const float *kl = k + per_layer * l, *vl = v + per_layer * l;
        for (int h = 0; h < H && rc == LMK_OK; h++) {
            lmk_key a = mkkey(LMK_KEY_BLOCK, l, h, nb), b = mkkey(LMK_KEY_BLOCK, l, h, INT64_MAX);
            lmk_key c = mkkey(LMK_KEY_LANDMARK, l, h, nb),
                    d = mkkey(LMK_KEY_LANDMARK, l, h, INT64_MAX);
            if ((rc = lmk_store_del_range(s->st, &a, &b)) == LMK_OK)
                rc = lmk_store_del_range(s->st, &c, &d);
        }
        lmk_key ta = mkkey(LMK_KEY_TAIL, l, 0, 0), tb = mkkey(LMK_KEY_TAIL, l, 0, INT64_MAX);
        if (rc == LMK_OK)
            rc = lmk_store_del_range(s->st, &ta, &tb);
        for (int64_t i = 0; i < ntail && rc == LMK_OK; i++) {
            if (s->dtype == LMK_DTYPE_F16) {
                lmk_f32_to_f16_n(kl + (size_t)i * row, (uint16_t *)enc, row);
                lmk_f32_to_f16_n(vl + (size_t)i * row, (uint16_t *)enc + row, row);
            } else {
                memcpy(enc, kl + (size_t)i * row, row * 4);
                memcpy(enc + row * 4, vl + (size_t)i * row, row * 4);
            }
            lmk_key tk = mkkey(LMK_KEY_TAIL, l, 0, keep0 + i);
            rc = lmk_store_put(s->st, &tk, enc, 2 * row * s->esz);
        }
        if (rc == LMK_OK) {
            char name[32];
            uint8_t rec[16];
            snprintf(name, sizeof name, "layer/%d", l);
            size_t rl = lmk_layer_rec_encode(n, rec, sizeof rec);
            rc = lmk_store_put_meta(s->st, name, rec, rl);
        }
        if (rc)
            lmk_sess_store_fail(s, rc, "truncating");
    }
    if (rc == LMK_OK && (rc = lmk_store_batch_commit(s->st)) != LMK_OK)
        lmk_sess_store_fail(s, rc, "committing a truncation");
    if (rc) {
        if (batch)
            lmk_store_batch_abort(s->st);
        free(k);
        free(enc);
        return rc;
    }
    /* committed: bring memory and indices along (a failed index cut rebuilds the index or
     * marks the session broken; it is never ignored) */
    for (int l = 0; l < s->n_layers; l++) {
        lmk_layer *ly = &s->layers[l];
        if (ly->ntok == n)
            continue;
        const float *kl = k + per_layer * l, *vl = v + per_layer * l;
        for (int64_t i = 0; i < ntail; i++)
            for (int h = 0; h < H; h++) {
                memcpy(ly->tail_k + ((size_t)h * L + (size_t)i) * D,
                       kl + (size_t)i * row + (size_t)h * D, (size_t)D * 4);
                memcpy(ly->tail_v + ((size_t)h * L + (size_t)i) * D,
                       vl + (size_t)i * row + (size_t)h * D, (size_t)D * 4);
            }
        ly->ntok = n;
        if (ly->tail_qok)
            memset(ly->tail_qok, 0, (size_t)L); /* the queries of the kept tail are gone */
        for (int h = 0; h < H; h++) {
            int irc = lmk_sess_index_cut(s, l, h, nb);
            if (irc && !rc)
                rc = irc;
            if (!irc)
                s->idx_dirty[l * H + h] = 1;
        }
    }
    free(k);
    free(enc);
    if (rc == LMK_OK)
        rc = lmk_session_sync(s);
    return rc;
}

/* Removes what a fork writes into `dir` (the store and index files), then `dir`. */
static void fork_cleanup(const lmk_session *s, const char *dir)
{
    char path[PATH_MAX + 64];
    static const char *const names[] = {"data.mdb", "lock.mdb", "landmark.lock"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    for (int i = 0; i < s->n_layers * s->n_kv_heads; i++) {
        snprintf(path, sizeof path, "%s/index-L%d-H%d.lmki", dir, i / s->n_kv_heads,
                 i % s->n_kv_heads);
        unlink(path);
        strcat(path, ".tmp");
        unlink(path);
    }
    rmdir(dir);
}

/* The copy is made in a fresh "<dst>.fork-XXXXXX" beside dst and renamed to dst only when
 * complete, so a fork killed midway leaves dst as it was (absent or empty) and a retry
 * works; the leftover temporary directory blocks nothing. */
LMK_API int lmk_session_fork(lmk_session *s, const char *dst)
{
    if (!s || !dst)
        return s ? lmk_sess_fail(s, LMK_EINVAL, "fork: NULL destination") : LMK_EINVAL;
    int rc = lmk_sess_no_txn(s, "fork");
    if (rc)
        return rc;
    size_t dl = strlen(dst);
    while (dl > 1 && dst[dl - 1] == '/')
        dl--;
    if (dl == 0 || dl > PATH_MAX - 128)
        return lmk_sess_fail(s, LMK_EINVAL, "fork: invalid destination");
    struct stat st;
    int was_empty = 0; /* an empty dst is removed now, re-created by the rename (or on failure) */
    if (stat(dst, &st) == 0) {
        if (S_ISDIR(st.st_mode) && rmdir(dst) == 0)
            was_empty = 1;
        if (!was_empty)
            return lmk_sess_fail(s, LMK_EINVAL, "fork: destination %s exists and is not an "
                                                "empty directory", dst);
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%.*s.fork-XXXXXX", (int)dl, dst);
    if (!mkdtemp(tmp)) {
        rc = errno;
        lmk_sess_fail(s, rc, "fork: creating a directory beside %s: %s", dst, strerror(rc));
        if (was_empty)
            mkdir(dst, 0755);
        return rc;
    }
    rc = lmk_store_copy(s->st, tmp);
    if (rc) {
        lmk_sess_fail(s, rc, "copying the store to %s: %s", dst, lmk_store_errmsg(s->st));
        goto fail;
    }
    const int H = s->n_kv_heads;
    for (int i = 0; i < s->n_layers * H; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/index-L%d-H%d.lmki", tmp, i / H, i % H);
        if ((rc = lmk_index_save(s->idx[i], path))) {
            lmk_sess_fail(s, rc, "writing an index of %s: %s", dst, lmk_index_errmsg(s->idx[i]));
            goto fail;
        }
    }
    chmod(tmp, 0755); /* mkdtemp's 0700 */
    if (rename(tmp, dst) != 0) {
        rc = errno;
        lmk_sess_fail(s, rc, "fork: renaming %s to %s: %s", tmp, dst, strerror(rc));
        goto fail;
    }
    /* the rename is durable once the parent directory is */
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%.*s", (int)dl, dst);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd >= 0) {
        if (fsync(pfd) != 0 && errno != EINVAL)
            rc = errno;
        close(pfd);
    }
    if (rc)
        return lmk_sess_fail(s, rc, "fork: fsync of %s: %s", parent, strerror(rc));
    return LMK_OK;
fail:
    fork_cleanup(s, tmp);
    if (was_empty)
        mkdir(dst, 0755);
    return rc;
}

LMK_API int lmk_session_reindex(lmk_session *s, const char *spec)
{
    if (!s || !spec)
        return s ? lmk_sess_fail(s, LMK_EINVAL, "reindex: NULL spec") : LMK_EINVAL;
    if (s->read_only)
        return lmk_sess_fail(s, LMK_EREADONLY, "session is open read-only");
    int nrc = lmk_sess_no_txn(s, "reindex");
    if (nrc)
        return nrc;
    if (strlen(spec) > LMK_MAX_SPEC)
        return lmk_sess_fail(s, LMK_EINVAL, "index spec too long");
    const int H = s->n_kv_heads, n = s->n_layers * H;
    lmk_index **fresh = calloc((size_t)n, sizeof *fresh);
    if (!fresh)
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    int rc = LMK_OK;
    char msg[512] = "";
    for (int i = 0; i < n && rc == LMK_OK; i++) {
        lmk_index_opts io = lmk_index_opts_default();
        io.spec = spec;
        io.dim = s->head_dim;
        if ((rc = lmk_index_create(&io, &fresh[i], msg, sizeof msg))) {
            lmk_sess_fail(s, rc, "index spec \"%s\": %s", spec, msg);
            break;
        }
        int64_t nt = lmk_index_ntotal(s->idx[i]);
        if (nt > 0 && (rc = lmk_index_add(fresh[i], nt, lmk_index_vectors(s->idx[i]))))
            lmk_sess_fail(s, rc, "building \"%s\": %s", spec, lmk_index_errmsg(fresh[i]));
    }
    if (rc == LMK_OK) {
        /* the new spec is recorded first: should the process die before the files are
         * saved, open() rebuilds them from the landmarks with the recorded spec */
        uint8_t rec[1024];
        size_t len = 0;
        lmk_config_rec c;
        if ((rc = lmk_store_get_meta(s->st, "config", rec, sizeof rec, &len)) == LMK_OK &&
            (rc = lmk_config_decode(rec, len, &c, msg, sizeof msg)) == LMK_OK) {
            snprintf(c.spec, sizeof c.spec, "%s", spec);
            size_t el = lmk_config_encode(&c, rec, sizeof rec);
            if ((rc = lmk_store_batch_begin(s->st)) == LMK_OK &&
                (rc = lmk_store_put_meta(s->st, "config", rec, el)) == LMK_OK)
                rc = lmk_store_batch_commit(s->st);
            if (rc)
                lmk_store_batch_abort(s->st);
        }
        if (rc)
            lmk_sess_fail(s, rc, "recording the new index spec: %s", lmk_store_errmsg(s->st));
    }
    if (rc) {
        for (int i = 0; i < n; i++)
            lmk_index_free(fresh[i]);
        free(fresh);
        return rc;
    }
    for (int i = 0; i < n; i++) {
        lmk_index_free(s->idx[i]);
        s->idx[i] = fresh[i];
        s->idx_dirty[i] = 1;
    }
    free(fresh);
    snprintf(s->spec, sizeof s->spec, "%s", spec);
    return lmk_session_sync(s);
}

/* ---- verify ---- */

typedef struct vctx {
    lmk_session *s;
    void (*report)(void *ud, const char *msg);
    void *ud;
    int64_t errors, checked;
    int kind;
    int64_t *expect; /* per (layer, head): next expected index */
    size_t value_len;
} vctx;

static void vreport(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vreport(vctx *v, const char *fmt, ...)
{
    v->errors++;
    if (!v->report)
        return;
    va_list ap;
    va_start(ap, fmt);
    lmk_report_v(v->report, v->ud, fmt, ap);
    va_end(ap);
}

static const char *kind_name(int kind)
{
    return kind == LMK_KEY_BLOCK ? "block" : kind == LMK_KEY_LANDMARK ? "landmark" : "tail token";
}

static int verify_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    vctx *v = ud;
    lmk_session *s = v->s;
    int l = key->layer, h = key->head;
    int64_t i = (int64_t)key->index;
    if (v->kind == LMK_KEY_BLOCK)
        v->checked++;
    if (l >= s->n_layers || h >= s->n_kv_heads) {
        vreport(v, "%s key (layer %d, head %d, %lld) outside the session's shape",
                kind_name(v->kind), l, h, (long long)i);
        return 0;
    }
    if (!val) {
        vreport(v, "%s L%d H%d #%lld fails its checksum", kind_name(v->kind), l, h, (long long)i);
    } else if (len != v->value_len) {
        vreport(v, "%s L%d H%d #%lld has %zu bytes, expected %zu", kind_name(v->kind), l, h,
                (long long)i, len, v->value_len);
    }
    int64_t *e = &v->expect[l * s->n_kv_heads + h];
    if (i != *e)
        vreport(v, "%s L%d H%d: found #%lld where #%lld was expected", kind_name(v->kind), l, h,
                (long long)i, (long long)*e);
    *e = i + 1;
    return 0;
}

LMK_API int lmk_session_verify(lmk_session *s, void (*report)(void *ud, const char *msg),
                               void *ud, int64_t *blocks_checked, int64_t *n_errors)
{
    if (!s)
        return LMK_EINVAL;
    int nrc = lmk_sess_no_txn(s, "verify");
    if (nrc)
        return nrc;
    const int H = s->n_kv_heads, D = s->head_dim, L = s->L;
    int64_t *expect = calloc((size_t)s->n_layers * H, sizeof *expect);
    /* token counts of the snapshot the walk reads (a writer in another process may have
     * appended since this handle was opened) */
    int64_t *snap = calloc((size_t)s->n_layers, sizeof *snap);
    const size_t RD = (size_t)s->R * D;
    float *lm = malloc(RD * sizeof(float));
    if (!expect || !snap || !lm) {
        free(expect);
        free(snap);
        free(lm);
        return lmk_sess_fail(s, ENOMEM, "out of memory");
    }
    vctx v = {s, report, ud, 0, 0, 0, expect, 0};
    const int kinds[3] = {LMK_KEY_BLOCK, LMK_KEY_LANDMARK, LMK_KEY_TAIL};
    int rc = lmk_store_read_begin(s->st);
    if (rc) {
        lmk_sess_store_fail(s, rc, "starting a read");
        goto out;
    }
    for (int l = 0; l < s->n_layers && rc == LMK_OK; l++)
        rc = lmk_sess_read_layer_rec(s, l, &snap[l]);
    for (int k = 0; k < 3 && rc == LMK_OK; k++) {
        v.kind = kinds[k];
        v.value_len = kinds[k] == LMK_KEY_BLOCK      ? 2 * (size_t)L * D * s->esz
                      : kinds[k] == LMK_KEY_LANDMARK ? (size_t)s->R * D * 4
                                                     : 2 * (size_t)H * D * s->esz;
        for (int l = 0; l < s->n_layers; l++)
            for (int h = 0; h < H; h++) {
                int64_t sealed = lmk_sealed(snap[l], L);
                expect[l * H + h] = kinds[k] == LMK_KEY_TAIL ? (h == 0 ? sealed * L : 0) : 0;
            }
        rc = lmk_store_scan(s->st, (uint8_t)kinds[k], -1, 1, verify_cb, &v);
        if (rc) {
            rc = lmk_sess_fail(s, rc, "walking stored %ss: %s", kind_name(kinds[k]),
                               lmk_store_errmsg(s->st));
            break;
        }
        for (int l = 0; l < s->n_layers; l++)
            for (int h = 0; h < (kinds[k] == LMK_KEY_TAIL ? 1 : H); h++) {
                int64_t sealed = lmk_sealed(snap[l], L);
                int64_t want = kinds[k] == LMK_KEY_TAIL ? snap[l] : sealed;
                if (expect[l * H + h] != want)
                    vreport(&v, "layer %d head %d: %ss end at #%lld, expected #%lld", l, h,
                            kind_name(kinds[k]), (long long)expect[l * H + h], (long long)want);
            }
    }
    if (rc)
        goto out;
    /* indices: cover exactly the blocks sealed when the handle last changed or opened,
     * holding the stored landmarks */
    for (int l = 0; l < s->n_layers; l++)
        for (int h = 0; h < H; h++) {
            lmk_index *idx = s->idx[l * H + h];
            int64_t sealed = lmk_sealed(s->layers[l].ntok, L);
            if (sealed > lmk_sealed(snap[l], L)) {
                /* a writer truncated the layer after this handle loaded its index: the walk
                 * above checked the stored data of the new snapshot; the index is derived and
                 * caught up at the next open. Not damage: a note, once per layer. */
                if (h == 0 && s->log) {
                    char note[200];
                    snprintf(note, sizeof note, "layer %d was cut to %lld tokens by a writer "
                             "after this handle opened at %lld: its index is checked at the "
                             "next open", l, (long long)snap[l], (long long)s->layers[l].ntok);
                    s->log(s->log_ud, note);
                }
                continue;
            }
            if (lmk_index_ntotal(idx) != sealed * s->R) {
                vreport(&v, "index L%d H%d covers %lld entries, %lld blocks of %d are stored", l,
                        h, (long long)lmk_index_ntotal(idx), (long long)sealed, s->R);
                continue;
            }
            const float *vec = lmk_index_vectors(idx);
            for (int64_t b = 0; b < sealed; b++) {
                lmk_key key = mkkey(LMK_KEY_LANDMARK, l, h, b);
                size_t len = 0;
                int grc = lmk_store_get(s->st, &key, lm, RD * 4, &len);
                if (grc == LMK_OK && memcmp(lm, vec + (size_t)b * RD, RD * 4) != 0) {
                    vreport(&v, "index L%d H%d block %lld differs from the stored landmark", l,
                            h, (long long)b);
                    break;
                }
            }
        }
    if (blocks_checked)
        *blocks_checked = v.checked;
    if (n_errors)
        *n_errors = v.errors;
out:
    lmk_store_read_end(s->st);
    free(expect);
    free(snap);
    free(lm);
    return rc;
}
