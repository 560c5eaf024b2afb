/* GGUF v3 writer: metadata is encoded as it is added; tensors are kept until encode, which
 * lays out the tensor table and the aligned data section. A stream writes the same layout
 * to a file, declared tensors' data arriving row pieces at a time. */
#include "lmk_gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"
#include "lmk_le.h"

/* ---- a growing byte buffer; an allocation failure sticks (oom) ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf_t;

static void buf_put(buf_t *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u32(buf_t *b, uint32_t v)
{
    uint8_t x[4];
    lmk_put_u32le(x, v);
    buf_put(b, x, 4);
}

static void put_u64(buf_t *b, uint64_t v)
{
    uint8_t x[8];
    lmk_put_u64le(x, v);
    buf_put(b, x, 8);
}

static void put_str(buf_t *b, const char *s)
{
    size_t n = strlen(s);
    put_u64(b, n);
    buf_put(b, s, n);
}

/* Zero bytes up to the next multiple of the data alignment. */
static void put_pad(buf_t *b)
{
    static const uint8_t zeros[LMK_GGUF_DEFAULT_ALIGNMENT];
    buf_put(b, zeros, (LMK_GGUF_DEFAULT_ALIGNMENT - b->n % LMK_GGUF_DEFAULT_ALIGNMENT) %
                          LMK_GGUF_DEFAULT_ALIGNMENT);
}

typedef struct {
    char *name;
    int n_dims;
    int64_t dims[LMK_GGUF_MAX_DIMS];
    uint32_t type;
    uint8_t *data; /* NULL for a declared tensor (data streamed) */
    size_t n_bytes, row_bytes;
} wtensor;

struct lmk_gguf_writer {
    buf_t kv; /* the encoded key/value section */
    uint64_t n_kv;
    wtensor *t;
    size_t n_t, cap_t;
    /* the stream: tensor `cur` has `done` bytes written; serr the first failure */
    FILE *f;
    size_t cur, done;
    int serr, opened;
    uint8_t *scratch;
    size_t scratch_cap;
};

LMK_API int lmk_gguf_writer_new(lmk_gguf_writer **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? LMK_OK : ENOMEM;
}

LMK_API void lmk_gguf_writer_free(lmk_gguf_writer *w)
{
    if (!w)
        return;
    free(w->kv.p);
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    if (w->f)
        fclose(w->f);
    free(w->scratch);
    free(w->t);
    free(w);
}

/* ---- metadata ---- */

static void kv_head(lmk_gguf_writer *w, const char *key, uint32_t type)
{
    put_str(&w->kv, key);
    put_u32(&w->kv, type);
    w->n_kv++;
}

LMK_API int lmk_gguf_writer_add_u32(lmk_gguf_writer *w, const char *key, uint32_t v)
{
    kv_head(w, key, LMK_GGUF_U32);
    put_u32(&w->kv, v);
    return w->kv.oom ? ENOMEM : LMK_OK;
}

LMK_API int lmk_gguf_writer_add_f32(lmk_gguf_writer *w, const char *key, float v)
{
    uint8_t x[4];
    lmk_put_f32le(x, v);
    kv_head(w, key, LMK_GGUF_F32);
    buf_put(&w->kv, x, 4);
    return w->kv.oom ? ENOMEM : LMK_OK;
}

LMK_API int lmk_gguf_writer_add_bool(lmk_gguf_writer *w, const char *key, int v)
{
    uint8_t x = v ? 1 : 0;
    kv_head(w, key, LMK_GGUF_BOOL);
    buf_put(&w->kv, &x, 1);
    return w->kv.oom ? ENOMEM : LMK_OK;
}

LMK_API int lmk_gguf_writer_add_str(lmk_gguf_writer *w, const char *key, const char *v)
{
    kv_head(w, key, LMK_GGUF_STRING);
    put_str(&w->kv, v);
    return w->kv.oom ? ENOMEM : LMK_OK;
}

LMK_API int lmk_gguf_writer_add_array(lmk_gguf_writer *w, const char *key,
                                      lmk_gguf_type elem_type, uint64_t n, const void *data)
{
    size_t es = lmk_gguf_type_size(elem_type);
    if (elem_type != LMK_GGUF_STRING && es == 0)
        return LMK_EINVAL;
    kv_head(w, key, LMK_GGUF_ARRAY);
    put_u32(&w->kv, elem_type);
    put_u64(&w->kv, n);
    if (elem_type == LMK_GGUF_STRING) {
        const char *const *s = data;
        for (uint64_t i = 0; i < n; i++)
            put_str(&w->kv, s[i]);
    } else {
        const uint8_t *p = data;
        for (uint64_t i = 0; i < n; i++) { /* host order to little-endian */
            uint8_t tmp[8];
            uint64_t v = 0;
            memcpy(&v, p + i * es, es); /* little-endian host assumed (x86-64, arm64) */
            lmk_put_u64le(tmp, v);
            buf_put(&w->kv, tmp, es);
        }
    }
    return w->kv.oom ? ENOMEM : LMK_OK;
}

/* ---- tensors ---- */

/* Element count of dims (0 when n_dims or a dim is out of range). */
static uint64_t dims_elements(int n_dims, const int64_t *dims)
{
    if (n_dims < 1 || n_dims > LMK_GGUF_MAX_DIMS)
        return 0;
    uint64_t ne = 1;
    for (int d = 0; d < n_dims; d++) {
        if (dims[d] < 1)
            return 0;
        ne *= (uint64_t)dims[d];
    }
    return ne;
}

/* Append a tensor with an uninitialized data buffer of n_bytes (none when declared);
 * NULL on ENOMEM. */
static wtensor *tensor_add(lmk_gguf_writer *w, const char *name, int n_dims,
                           const int64_t *dims, uint32_t type, size_t n_bytes, int declared)
{
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t)
            return NULL;
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->data = declared ? NULL : malloc(n_bytes ? n_bytes : 1);
    t->name = strdup(name);
    if ((!declared && !t->data) || !t->name) {
        free(t->data);
        free(t->name);
        return NULL;
    }
    t->n_bytes = n_bytes;
    t->row_bytes = n_bytes / (size_t)(dims_elements(n_dims, dims) / (uint64_t)dims[0]);
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++)
        t->dims[d] = dims[d];
    t->type = type;
    w->n_t++;
    return t;
}

LMK_API int lmk_gguf_writer_add_tensor(lmk_gguf_writer *w, const char *name, int n_dims,
                                       const int64_t *dims, uint32_t type, const float *data)
{
    uint64_t ne = dims_elements(n_dims, dims);
    if (ne == 0)
        return LMK_EINVAL;
    uint64_t rb = lmk_ggml_row_bytes(type, dims[0]);
    if (rb == 0)
        return LMK_EINVAL;
    wtensor *t =
        tensor_add(w, name, n_dims, dims, type, rb * (size_t)(ne / (uint64_t)dims[0]), 0);
    if (!t)
        return ENOMEM;
    return lmk_ggml_from_f32(type, data, (int64_t)ne, t->data);
}

LMK_API int lmk_gguf_writer_add_raw(lmk_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *dims, uint32_t type, const void *bytes,
                                    size_t n_bytes)
{
    uint32_t blck, bb;
    uint64_t ne = dims_elements(n_dims, dims);
    if (lmk_ggml_type_size(type, &blck, &bb) != LMK_OK || ne == 0 || dims[0] % blck)
        return LMK_EINVAL;
    if (ne / blck * bb != n_bytes)
        return LMK_EINVAL;
    wtensor *t = tensor_add(w, name, n_dims, dims, type, n_bytes, 0);
    if (!t)
        return ENOMEM;
    memcpy(t->data, bytes, n_bytes);
    return LMK_OK;
}

LMK_API int lmk_gguf_writer_declare(lmk_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *dims, uint32_t type)
{
    uint32_t blck, bb;
    uint64_t ne = dims_elements(n_dims, dims);
    if (w->opened || lmk_ggml_type_size(type, &blck, &bb) != LMK_OK || ne == 0 ||
        dims[0] % blck)
        return LMK_EINVAL;
    return tensor_add(w, name, n_dims, dims, type, ne / blck * bb, 1) ? LMK_OK : ENOMEM;
}

/* ---- output ---- */

/* Everything before the first tensor's data: header, metadata, tensor table, padding. */
static void encode_header(const lmk_gguf_writer *w, buf_t *b)
{
    put_u32(b, LMK_GGUF_MAGIC);
    put_u32(b, 3);
    put_u64(b, w->n_t);
    put_u64(b, w->n_kv);
    buf_put(b, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        put_str(b, w->t[i].name);
        put_u32(b, (uint32_t)w->t[i].n_dims);
        for (int d = 0; d < w->t[i].n_dims; d++)
            put_u64(b, (uint64_t)w->t[i].dims[d]);
        put_u32(b, w->t[i].type);
        put_u64(b, off);
        off += (w->t[i].n_bytes + LMK_GGUF_DEFAULT_ALIGNMENT - 1) / LMK_GGUF_DEFAULT_ALIGNMENT *
               LMK_GGUF_DEFAULT_ALIGNMENT;
    }
    put_pad(b);
}

LMK_API int lmk_gguf_writer_encode(lmk_gguf_writer *w, uint8_t **out, size_t *size)
{
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data)
            return LMK_EINVAL;
    buf_t b = {0};
    encode_header(w, &b);
    for (size_t i = 0; i < w->n_t; i++) {
        buf_put(&b, w->t[i].data, w->t[i].n_bytes);
        put_pad(&b);
    }
    if (b.oom || w->kv.oom) {
        free(b.p);
        return ENOMEM;
    }
    *out = b.p;
    *size = b.n;
    return LMK_OK;
}

LMK_API int lmk_gguf_writer_write(lmk_gguf_writer *w, const char *path)
{
    uint8_t *p;
    size_t n;
    int rc = lmk_gguf_writer_encode(w, &p, &n);
    if (rc)
        return rc;
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = errno;
        free(p);
        return rc;
    }
    if (fwrite(p, 1, n, f) != n)
        rc = errno ? errno : EIO;
    if (fclose(f) != 0 && !rc)
        rc = errno ? errno : EIO;
    free(p);
    return rc;
}

/* ---- streaming ---- */

/* Append n bytes to the stream; the first failure sticks in w->serr. */
static int stream_put(lmk_gguf_writer *w, const void *p, size_t n)
{
    if (!w->serr && n && fwrite(p, 1, n, w->f) != n)
        w->serr = errno ? errno : EIO;
    return w->serr;
}

/* Close tensor `cur` once complete (padding) and write every following tensor that
 * carries its own data, up to the next declared one. */
static int stream_advance(lmk_gguf_writer *w)
{
    static const uint8_t zeros[LMK_GGUF_DEFAULT_ALIGNMENT];
    while (!w->serr && w->cur < w->n_t) {
        wtensor *t = &w->t[w->cur];
        if (t->data && w->done == 0) {
            stream_put(w, t->data, t->n_bytes);
            w->done = t->n_bytes;
        }
        if (w->done < t->n_bytes)
            break;
        stream_put(w, zeros, (LMK_GGUF_DEFAULT_ALIGNMENT - t->n_bytes % LMK_GGUF_DEFAULT_ALIGNMENT) %
                                 LMK_GGUF_DEFAULT_ALIGNMENT);
        w->cur++;
        w->done = 0;
    }
    return w->serr;
}

LMK_API int lmk_gguf_writer_stream_open(lmk_gguf_writer *w, const char *path)
{
    if (w->opened)
        return LMK_EINVAL;
    if (w->kv.oom)
        return ENOMEM;
    buf_t b = {0};
    encode_header(w, &b);
    if (b.oom) {
        free(b.p);
        return ENOMEM;
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        int rc = errno;
        free(b.p);
        return rc;
    }
    w->opened = 1;
    w->cur = w->done = 0;
    w->serr = 0;
    stream_put(w, b.p, b.n);
    free(b.p);
    return stream_advance(w);
}

/* Check that n_bytes (a whole number of rows) fits what is left of the current tensor. */
static int stream_check(lmk_gguf_writer *w, size_t n_bytes)
{
    if (!w->f)
        return LMK_EINVAL;
    if (w->serr)
        return w->serr;
    if (w->cur >= w->n_t)
        return LMK_EINVAL;
    const wtensor *t = &w->t[w->cur];
    if (n_bytes % t->row_bytes || n_bytes > t->n_bytes - w->done)
        return LMK_EINVAL;
    return LMK_OK;
}

LMK_API int lmk_gguf_writer_stream_raw(lmk_gguf_writer *w, const void *bytes, size_t n_bytes)
{
    int rc = stream_check(w, n_bytes);
    if (rc)
        return rc;
    if (stream_put(w, bytes, n_bytes))
        return w->serr;
    w->done += n_bytes;
    return stream_advance(w);
}

LMK_API int lmk_gguf_writer_stream_rows(lmk_gguf_writer *w, const float *data, int64_t n_rows)
{
    if (!w->f || w->cur >= w->n_t || n_rows < 0)
        return w->f && w->serr ? w->serr : LMK_EINVAL;
    const wtensor *t = &w->t[w->cur];
    size_t n = (size_t)n_rows * t->row_bytes;
    int rc = stream_check(w, n);
    if (rc)
        return rc;
    if (n > w->scratch_cap) {
        uint8_t *p = realloc(w->scratch, n);
        if (!p)
            return ENOMEM;
        w->scratch = p;
        w->scratch_cap = n;
    }
    if (lmk_ggml_from_f32(t->type, data, n_rows * t->dims[0], w->scratch) != LMK_OK)
        return LMK_EINVAL;
    return lmk_gguf_writer_stream_raw(w, w->scratch, n);
}

LMK_API int lmk_gguf_writer_stream_close(lmk_gguf_writer *w)
{
    if (!w->f)
        return LMK_EINVAL;
    int rc = w->serr;
    if (!rc && w->cur < w->n_t)
        rc = LMK_EINVAL;
    if (fclose(w->f) != 0 && !rc)
        rc = errno ? errno : EIO;
    w->f = NULL;
    return rc;
}
