/* GGUF reader: every read goes through a bounds-checked cursor; every count is checked
 * against the bytes left before anything is allocated for it. */
#include "lmk_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_export.h"
#include "lmk_le.h"

#define GGUF_MAX_STRING 65535u  /* key and tensor-name limit; values may be longer */

typedef struct {
    const uint8_t *name;
    uint64_t name_len;
    char *namez;          /* NUL-terminated copy */
    uint32_t type;
    uint32_t elem_type;   /* arrays */
    uint64_t n;           /* arrays: element count; strings: byte length */
    size_t off;           /* value (scalars), string bytes, or first array element */
    uint64_t *str_offs;   /* arrays of strings: offset of each element's length field */
} gguf_kv;

struct lmk_gguf {
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t n_tensors;
    lmk_gguf_tensor *tensors;
    size_t header_size;
    size_t alignment;
    size_t data_off;
    char err[256];
};

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t off;
} cursor;

static int cur_need(const cursor *c, uint64_t n) { return n <= (uint64_t)(c->size - c->off); }

static int cur_u32(cursor *c, uint32_t *v)
{
    if (!cur_need(c, 4))
        return -1;
    *v = lmk_get_u32le(c->p + c->off);
    c->off += 4;
    return 0;
}

static int cur_u64(cursor *c, uint64_t *v)
{
    if (!cur_need(c, 8))
        return -1;
    *v = lmk_get_u64le(c->p + c->off);
    c->off += 8;
    return 0;
}

/* A GGUF string: u64 length then bytes. Sets *s to the bytes' offset. */
static int cur_str(cursor *c, size_t *s, uint64_t *len)
{
    if (cur_u64(c, len) != 0 || !cur_need(c, *len))
        return -1;
    *s = c->off;
    c->off += (size_t)*len;
    return 0;
}

LMK_API size_t lmk_gguf_type_size(uint32_t t)
{
    switch (t) {
    case LMK_GGUF_U8: case LMK_GGUF_I8: case LMK_GGUF_BOOL: return 1;
    case LMK_GGUF_U16: case LMK_GGUF_I16: return 2;
    case LMK_GGUF_U32: case LMK_GGUF_I32: case LMK_GGUF_F32: return 4;
    case LMK_GGUF_U64: case LMK_GGUF_I64: case LMK_GGUF_F64: return 8;
    default: return 0;
    }
}

static const char *kv_type_name(uint32_t t)
{
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* ---- open ---- */

static int fail(lmk_gguf *g, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return rc;
}

static void free_contents(lmk_gguf *g)
{
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].namez);
            free(g->kv[i].str_offs);
        }
        free(g->kv);
    }
    if (g->tensors) {
        for (int64_t i = 0; i < g->n_tensors; i++)
            free((char *)g->tensors[i].name);
        free(g->tensors);
    }
    g->kv = NULL;
    g->tensors = NULL;
}

static char *dup_bytes(const uint8_t *p, uint64_t n)
{
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, p, (size_t)n);
    s[n] = 0;
    return s;
}

static int parse_kv(lmk_gguf *g, cursor *c, gguf_kv *kv, int64_t idx)
{
    size_t name_off;
    if (cur_str(c, &name_off, &kv->name_len) != 0)
        return fail(g, LMK_EFORMAT, "truncated: metadata key %lld runs past the end",
                    (long long)idx);
    if (kv->name_len == 0 || kv->name_len > GGUF_MAX_STRING)
        return fail(g, LMK_EFORMAT, "metadata key %lld has invalid length %llu", (long long)idx,
                    (unsigned long long)kv->name_len);
    kv->name = c->p + name_off;
    if (memchr(kv->name, 0, (size_t)kv->name_len))
        return fail(g, LMK_EFORMAT, "metadata key %lld contains a NUL byte", (long long)idx);
    kv->namez = dup_bytes(kv->name, kv->name_len);
    if (!kv->namez)
        return fail(g, ENOMEM, "out of memory");
    if (cur_u32(c, &kv->type) != 0)
        return fail(g, LMK_EFORMAT, "truncated: type of key '%s'", kv->namez);
    if (kv->type == LMK_GGUF_STRING) {
        if (cur_str(c, &kv->off, &kv->n) != 0)
            return fail(g, LMK_EFORMAT, "truncated: string value of key '%s'", kv->namez);
        return LMK_OK;
    }
    if (kv->type == LMK_GGUF_ARRAY) {
        if (cur_u32(c, &kv->elem_type) != 0 || cur_u64(c, &kv->n) != 0)
            return fail(g, LMK_EFORMAT, "truncated: array header of key '%s'", kv->namez);
        kv->off = c->off;
        if (kv->elem_type == LMK_GGUF_STRING) {
            /* Every element takes >= 8 bytes: bound n by the bytes left before allocating. */
            if (kv->n > (uint64_t)(c->size - c->off) / 8)
                return fail(g, LMK_EFORMAT,
                            "array '%s' claims %llu strings, more than the file can hold",
                            kv->namez, (unsigned long long)kv->n);
            kv->str_offs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof(uint64_t));
            if (!kv->str_offs)
                return fail(g, ENOMEM, "out of memory for array '%s'", kv->namez);
            for (uint64_t i = 0; i < kv->n; i++) {
                size_t s;
                uint64_t len;
                kv->str_offs[i] = c->off;
                if (cur_str(c, &s, &len) != 0)
                    return fail(g, LMK_EFORMAT, "truncated: element %llu of array '%s'",
                                (unsigned long long)i, kv->namez);
            }
            return LMK_OK;
        }
        size_t es = lmk_gguf_type_size(kv->elem_type);
        if (es == 0)
            return fail(g, LMK_EFORMAT, "array '%s' has unsupported element type %u (%s)",
                        kv->namez, kv->elem_type, kv_type_name(kv->elem_type));
        if (kv->n > (uint64_t)(c->size - c->off) / es)
            return fail(g, LMK_EFORMAT, "truncated: array '%s' of %llu elements", kv->namez,
                        (unsigned long long)kv->n);
        c->off += (size_t)kv->n * es;
        return LMK_OK;
    }
    size_t es = lmk_gguf_type_size(kv->type);
    if (es == 0)
        return fail(g, LMK_EFORMAT, "key '%s' has unknown value type %u", kv->namez, kv->type);
    if (!cur_need(c, es))
        return fail(g, LMK_EFORMAT, "truncated: value of key '%s'", kv->namez);
    kv->off = c->off;
    c->off += es;
    return LMK_OK;
}

static int cmp_tensor_off(const void *a, const void *b)
{
    const lmk_gguf_tensor *x = *(const lmk_gguf_tensor *const *)a;
    const lmk_gguf_tensor *y = *(const lmk_gguf_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Tensor table entry i: name, dims, type and (into *raw_off) the data offset. */
static int parse_tensor(lmk_gguf *g, cursor *c, uint64_t i, uint64_t *raw_off)
{
    lmk_gguf_tensor *t = &g->tensors[i];
    int rc = LMK_OK;
    size_t name_off;
    uint64_t name_len;
    uint32_t nd;
    if (cur_str(c, &name_off, &name_len) != 0)
        return fail(g, LMK_EFORMAT, "truncated: name of tensor %llu", (unsigned long long)i);
    if (name_len == 0 || name_len > GGUF_MAX_STRING ||
        memchr(g->base + name_off, 0, (size_t)name_len))
        return fail(g, LMK_EFORMAT, "tensor %llu has an invalid name", (unsigned long long)i);
    t->name = dup_bytes(g->base + name_off, name_len);
    if (!t->name)
        return fail(g, ENOMEM, "out of memory");
    if (cur_u32(c, &nd) != 0)
        return fail(g, LMK_EFORMAT, "truncated: tensor '%s'", t->name);
    if (nd < 1 || nd > LMK_GGUF_MAX_DIMS) {
        return fail(g, LMK_EFORMAT, "tensor '%s' has %u dimensions (1..%d allowed)", t->name, nd,
                    LMK_GGUF_MAX_DIMS);
    }
    t->n_dims = (int)nd;
    uint64_t ne = 1;
    for (int d = 0; d < LMK_GGUF_MAX_DIMS; d++)
        t->dims[d] = 1;
    for (uint32_t d = 0; d < nd && rc == LMK_OK; d++) {
        uint64_t v;
        if (cur_u64(c, &v) != 0)
            rc = fail(g, LMK_EFORMAT, "truncated: dims of tensor '%s'", t->name);
        else if (v == 0 || v > (1ull << 40) || ne > (1ull << 56) / v)
            rc = fail(g, LMK_EFORMAT, "tensor '%s' has an invalid dimension %llu", t->name,
                      (unsigned long long)v);
        else {
            t->dims[d] = (int64_t)v;
            ne *= v;
        }
    }
    if (rc)
        return rc;
    if (cur_u32(c, &t->type) != 0 || cur_u64(c, raw_off) != 0)
        return fail(g, LMK_EFORMAT, "truncated: tensor '%s'", t->name);
    uint32_t blck, block_bytes;
    if (lmk_ggml_type_size(t->type, &blck, &block_bytes) != LMK_OK)
        return fail(g, LMK_EFORMAT, "tensor '%s' has unknown type %u", t->name, t->type);
    if (t->dims[0] % blck) {
        return fail(g, LMK_EFORMAT,
                    "tensor '%s': row length %lld is not a multiple of %s's "
                    "block of %u",
                    t->name, (long long)t->dims[0], lmk_ggml_type_name(t->type), blck);
    }
    t->n_elements = (int64_t)ne;
    t->row_len = t->dims[0];
    t->n_rows = (int64_t)ne / t->dims[0];
    t->n_bytes = ne / blck * block_bytes;
    t->supported = lmk_ggml_convertible(t->type);
    for (uint64_t j = 0; j < i; j++)
        if (!strcmp(g->tensors[j].name, t->name))
            return fail(g, LMK_EFORMAT, "duplicate tensor name '%s'", t->name);
    return LMK_OK;
}

/* The data section after the header: each tensor's data pointer, checked against the file
 * and the alignment. */
static int place_tensors(lmk_gguf *g, const cursor *c, uint64_t nt, const uint64_t *raw_off)
{
    int rc = LMK_OK;
    g->n_tensors = (int64_t)nt;
    g->header_size = c->off;
    size_t data_off = (c->off + g->alignment - 1) / g->alignment * g->alignment;
    g->data_off = data_off;
    if (nt > 0 && data_off > g->size)
        return fail(g, LMK_EFORMAT, "truncated: the file ends before its tensor data");
    uint64_t data_size = nt > 0 ? g->size - data_off : 0;
    for (uint64_t i = 0; i < nt; i++) {
        lmk_gguf_tensor *t = &g->tensors[i];
        if (raw_off[i] % g->alignment) {
            rc = fail(g, LMK_EFORMAT, "tensor '%s' data offset %llu is not aligned to %zu", t->name,
                      (unsigned long long)raw_off[i], g->alignment);
            break;
        }
        if (raw_off[i] > data_size || t->n_bytes > data_size - raw_off[i]) {
            rc = fail(g, LMK_EFORMAT,
                      "truncated: tensor '%s' (%llu bytes at offset %llu) runs past the end "
                      "of the file (%llu data bytes)",
                      t->name, (unsigned long long)t->n_bytes, (unsigned long long)raw_off[i],
                      (unsigned long long)data_size);
            break;
        }
        t->data = g->base + data_off + raw_off[i];
    }
    return rc;
}

/* Overlapping tensors are a sign of damage (a writer never produces them). */
static int check_overlap(lmk_gguf *g, uint64_t nt)
{
    int rc = LMK_OK;
    if (nt > 1) {
        const lmk_gguf_tensor **by = malloc((size_t)nt * sizeof *by);
        if (!by)
            return fail(g, ENOMEM, "out of memory");
        for (uint64_t i = 0; i < nt; i++)
            by[i] = &g->tensors[i];
        qsort(by, (size_t)nt, sizeof *by, cmp_tensor_off);
        for (uint64_t i = 1; i < nt && !rc; i++)
            if (by[i - 1]->data + by[i - 1]->n_bytes > by[i]->data)
                rc = fail(g, LMK_EFORMAT, "tensors '%s' and '%s' overlap", by[i - 1]->name,
                          by[i]->name);
        free(by);
    }
    return rc;
}

static int parse(lmk_gguf *g)
{
    cursor c = {g->base, g->size, 0};
    uint32_t magic;
    if (g->size < 4 || cur_u32(&c, &magic) != 0 || magic != LMK_GGUF_MAGIC)
        return fail(g, LMK_EFORMAT, "not a GGUF file (bad magic)");
    if (cur_u32(&c, &g->version) != 0)
        return fail(g, LMK_EFORMAT, "truncated: no version");
    if (g->version == 1)
        return fail(g, LMK_EVERSION, "GGUF version 1 is not supported (2 and 3 are)");
    if (g->version != 2 && g->version != 3)
        return fail(g, LMK_EVERSION, "unknown GGUF version %u (2 and 3 are supported)",
                    g->version);
    uint64_t nt, nkv;
    if (cur_u64(&c, &nt) != 0 || cur_u64(&c, &nkv) != 0)
        return fail(g, LMK_EFORMAT, "truncated: header counts");
    /* A key takes >= 8 + 1 + 4 + 1 bytes, a tensor entry >= 8 + 1 + 4 + 8 + 4 + 8. */
    if (nkv > (g->size - c.off) / 14)
        return fail(g, LMK_EFORMAT, "header claims %llu metadata keys, more than the file holds",
                    (unsigned long long)nkv);
    if (nt > (g->size - c.off) / 33)
        return fail(g, LMK_EFORMAT, "header claims %llu tensors, more than the file holds",
                    (unsigned long long)nt);
    g->kv = calloc((size_t)(nkv ? nkv : 1), sizeof *g->kv);
    g->tensors = calloc((size_t)(nt ? nt : 1), sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return fail(g, ENOMEM, "out of memory");
    g->alignment = LMK_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1;
        int rc = parse_kv(g, &c, &g->kv[i], (int64_t)i);
        if (rc)
            return rc;
        for (uint64_t j = 0; j < i; j++)
            if (g->kv[j].name_len == g->kv[i].name_len &&
                !memcmp(g->kv[j].name, g->kv[i].name, (size_t)g->kv[i].name_len))
                return fail(g, LMK_EFORMAT, "duplicate metadata key '%s'", g->kv[i].namez);
        if (!strcmp(g->kv[i].namez, "general.alignment")) {
            if (g->kv[i].type != LMK_GGUF_U32)
                return fail(g, LMK_EFORMAT, "general.alignment is not a u32");
            uint32_t a = lmk_get_u32le(g->base + g->kv[i].off);
            if (a == 0 || (a & (a - 1)) || a > (1u << 20))
                return fail(g, LMK_EFORMAT, "general.alignment %u is not a power of two", a);
            g->alignment = a;
        }
    }
    g->n_kv = (int64_t)nkv;

    uint64_t *raw_off = calloc((size_t)(nt ? nt : 1), sizeof *raw_off);
    if (!raw_off)
        return fail(g, ENOMEM, "out of memory");
    int rc = LMK_OK;
    for (uint64_t i = 0; i < nt && rc == LMK_OK; i++) {
        g->n_tensors = (int64_t)i + 1;
        rc = parse_tensor(g, &c, i, &raw_off[i]);
    }
    if (rc) {
        free(raw_off);
        return rc;
    }
    rc = place_tensors(g, &c, nt, raw_off);
    free(raw_off);
    if (rc)
        return rc;
    return check_overlap(g, nt);
}

static int finish_open(lmk_gguf *g, lmk_gguf **out, char *errmsg, size_t cap)
{
    int rc = parse(g);
    if (rc) {
        if (errmsg && cap)
            snprintf(errmsg, cap, "%s", g->err);
        lmk_gguf_close(g);
        return rc;
    }
    g->err[0] = 0;
    *out = g;
    return LMK_OK;
}

LMK_API int lmk_gguf_open_buffer(const void *data, size_t size, lmk_gguf **out, char *errmsg,
                                 size_t errmsg_cap)
{
    if (!out)
        return LMK_EINVAL;
    *out = NULL;
    if (!data && size)
        return LMK_EINVAL;
    lmk_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "out of memory");
        return ENOMEM;
    }
    g->base = data;
    g->size = size;
    return finish_open(g, out, errmsg, errmsg_cap);
}

LMK_API int lmk_gguf_open(const char *path, lmk_gguf **out, char *errmsg, size_t errmsg_cap)
{
    if (!out)
        return LMK_EINVAL;
    *out = NULL;
    if (!path)
        return LMK_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "%s: %s", path, strerror(e));
        return e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno ? errno : EINVAL;
        if (!S_ISREG(st.st_mode))
            e = EINVAL;
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "%s: not a regular file", path);
        close(fd);
        return e;
    }
    if (st.st_size < 24) {
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "%s: not a GGUF file (only %lld bytes)", path,
                     (long long)st.st_size);
        close(fd);
        return LMK_EFORMAT;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        if (errmsg && errmsg_cap)
            snprintf(errmsg, errmsg_cap, "%s: mmap: %s", path, strerror(e));
        return e;
    }
    lmk_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(p, (size_t)st.st_size);
        return ENOMEM;
    }
    g->base = p;
    g->size = (size_t)st.st_size;
    g->mapped = 1;
    int rc = finish_open(g, out, errmsg, errmsg_cap);
    if (rc && errmsg && errmsg_cap) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", errmsg);
        snprintf(errmsg, errmsg_cap, "%s: %s", path, tmp);
    }
    return rc;
}

LMK_API void lmk_gguf_close(lmk_gguf *g)
{
    if (!g)
        return;
    free_contents(g);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}

LMK_API const char *lmk_gguf_errmsg(const lmk_gguf *g) { return g ? g->err : "no handle"; }
LMK_API uint32_t lmk_gguf_version(const lmk_gguf *g) { return g->version; }

LMK_API const uint8_t *lmk_gguf_header(const lmk_gguf *g, size_t *size)
{
    *size = g->header_size;
    return g->base;
}

/* ---- metadata access ---- */

LMK_API int64_t lmk_gguf_n_kv(const lmk_gguf *g) { return g->n_kv; }

LMK_API int64_t lmk_gguf_find_key(const lmk_gguf *g, const char *key)
{
    if (!key)
        return -1;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].namez, key))
            return i;
    return -1;
}

LMK_API const char *lmk_gguf_key_name(const lmk_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].namez : NULL;
}

LMK_API int lmk_gguf_key_type(const lmk_gguf *g, int64_t i, lmk_gguf_type *elem_type,
                              uint64_t *n)
{
    if (i < 0 || i >= g->n_kv)
        return -1;
    if (g->kv[i].type == LMK_GGUF_ARRAY) {
        if (elem_type)
            *elem_type = (lmk_gguf_type)g->kv[i].elem_type;
        if (n)
            *n = g->kv[i].n;
    }
    return (int)g->kv[i].type;
}

static const gguf_kv *get_kv(lmk_gguf *g, const char *key, int *rc)
{
    int64_t i = lmk_gguf_find_key(g, key);
    if (i < 0) {
        *rc = fail(g, LMK_ENOTFOUND, "missing metadata key '%s'", key);
        return NULL;
    }
    *rc = LMK_OK;
    return &g->kv[i];
}

/* Any integer value as a signed 128-bit-free pair: *neg for negative signed values. */
static int kv_int(lmk_gguf *g, const gguf_kv *kv, uint64_t *mag, int *neg)
{
    const uint8_t *p = g->base + kv->off;
    *neg = 0;
    int64_t s;
    switch (kv->type) {
    case LMK_GGUF_U8: *mag = p[0]; return 0;
    case LMK_GGUF_U16: *mag = lmk_get_u16le(p); return 0;
    case LMK_GGUF_U32: *mag = lmk_get_u32le(p); return 0;
    case LMK_GGUF_U64: *mag = lmk_get_u64le(p); return 0;
    case LMK_GGUF_I8: s = (int8_t)p[0]; break;
    case LMK_GGUF_I16: s = (int16_t)lmk_get_u16le(p); break;
    case LMK_GGUF_I32: s = (int32_t)lmk_get_u32le(p); break;
    case LMK_GGUF_I64: s = (int64_t)lmk_get_u64le(p); break;
    default:
        return fail(g, LMK_EFORMAT, "key '%s' is a %s, not an integer", kv->namez,
                    kv_type_name(kv->type));
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 0;
}

/* The integer value of key (magnitude and sign). */
static int key_int(lmk_gguf *g, const char *key, uint64_t *mag, int *neg)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    return kv ? kv_int(g, kv, mag, neg) : rc;
}

LMK_API int lmk_gguf_get_u32(lmk_gguf *g, const char *key, uint32_t *v)
{
    uint64_t m = 0;
    int neg = 0;
    int rc = key_int(g, key, &m, &neg);
    if (rc)
        return rc;
    if (neg || m > UINT32_MAX)
        return fail(g, LMK_EFORMAT, "key '%s' is out of range for a u32", key);
    *v = (uint32_t)m;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_i64(lmk_gguf *g, const char *key, int64_t *v)
{
    uint64_t m = 0;
    int neg = 0;
    int rc = key_int(g, key, &m, &neg);
    if (rc)
        return rc;
    if ((!neg && m > (uint64_t)INT64_MAX) || (neg && m > (uint64_t)INT64_MAX + 1))
        return fail(g, LMK_EFORMAT, "key '%s' is out of range for an i64", key);
    *v = neg ? (int64_t)(0 - m) : (int64_t)m;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_f32(lmk_gguf *g, const char *key, float *v)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    if (!kv)
        return rc;
    const uint8_t *p = g->base + kv->off;
    if (kv->type == LMK_GGUF_F32) {
        uint32_t b = lmk_get_u32le(p);
        memcpy(v, &b, 4);
    } else if (kv->type == LMK_GGUF_F64) {
        uint64_t b = lmk_get_u64le(p);
        double d;
        memcpy(&d, &b, 8);
        *v = (float)d;
    } else {
        return fail(g, LMK_EFORMAT, "key '%s' is a %s, not a float", key,
                    kv_type_name(kv->type));
    }
    return LMK_OK;
}

LMK_API int lmk_gguf_get_bool(lmk_gguf *g, const char *key, int *v)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    if (!kv)
        return rc;
    if (kv->type != LMK_GGUF_BOOL)
        return fail(g, LMK_EFORMAT, "key '%s' is a %s, not a bool", key, kv_type_name(kv->type));
    *v = g->base[kv->off] != 0;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_str(lmk_gguf *g, const char *key, const char **s, uint64_t *len)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    if (!kv)
        return rc;
    if (kv->type != LMK_GGUF_STRING)
        return fail(g, LMK_EFORMAT, "key '%s' is a %s, not a string", key,
                    kv_type_name(kv->type));
    *s = (const char *)g->base + kv->off;
    *len = kv->n;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_strz(lmk_gguf *g, const char *key, char *buf, size_t cap)
{
    const char *s;
    uint64_t n;
    int rc = lmk_gguf_get_str(g, key, &s, &n);
    if (rc)
        return rc;
    if (n >= cap || memchr(s, 0, (size_t)n))
        return fail(g, LMK_EFORMAT, "string value of key '%s' is too long or holds a NUL", key);
    memcpy(buf, s, (size_t)n);
    buf[n] = 0;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_array(lmk_gguf *g, const char *key, lmk_gguf_type *elem_type,
                               uint64_t *n, const void **data)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    if (!kv)
        return rc;
    if (kv->type != LMK_GGUF_ARRAY)
        return fail(g, LMK_EFORMAT, "key '%s' is a %s, not an array", key,
                    kv_type_name(kv->type));
    *elem_type = (lmk_gguf_type)kv->elem_type;
    *n = kv->n;
    *data = g->base + kv->off;
    return LMK_OK;
}

LMK_API int lmk_gguf_get_arr_str(lmk_gguf *g, const char *key, uint64_t i, const char **s,
                                 uint64_t *len)
{
    int rc;
    const gguf_kv *kv = get_kv(g, key, &rc);
    if (!kv)
        return rc;
    if (kv->type != LMK_GGUF_ARRAY || kv->elem_type != LMK_GGUF_STRING)
        return fail(g, LMK_EFORMAT, "key '%s' is not an array of strings", key);
    if (i >= kv->n)
        return fail(g, LMK_EINVAL, "index %llu out of range for '%s' (%llu elements)",
                    (unsigned long long)i, key, (unsigned long long)kv->n);
    const uint8_t *p = g->base + kv->str_offs[i];
    *len = lmk_get_u64le(p);
    *s = (const char *)p + 8;
    return LMK_OK;
}

/* ---- tensors ---- */

LMK_API int64_t lmk_gguf_n_tensors(const lmk_gguf *g) { return g->n_tensors; }

LMK_API const lmk_gguf_tensor *lmk_gguf_tensor_at(const lmk_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

LMK_API const lmk_gguf_tensor *lmk_gguf_find_tensor(const lmk_gguf *g, const char *name)
{
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

LMK_API int lmk_gguf_tensor_rows_f32(const lmk_gguf_tensor *t, int64_t row0, int64_t n_rows,
                                     float *dst)
{
    if (!t || row0 < 0 || n_rows < 0 || row0 > t->n_rows || n_rows > t->n_rows - row0)
        return LMK_EINVAL;
    if (!t->supported)
        return LMK_EUNSUPPORTED;
    uint64_t rb = lmk_ggml_row_bytes(t->type, t->row_len);
    return lmk_ggml_to_f32(t->type, t->data + (uint64_t)row0 * rb, n_rows * t->row_len, dst);
}
