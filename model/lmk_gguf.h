/* landmark — a strict reader (and a small writer) for GGUF model files.
 *
 * GGUF (versions 2 and 3) is a header of typed key/value metadata and a tensor table,
 * followed by an aligned data section. The reader maps the file read-only and checks every
 * length, count, offset and size against the file before it reads or allocates anything,
 * so a damaged or hostile file gives LMK_EFORMAT with a message naming what is wrong, never
 * a crash. Multi-byte values are read little-endian whatever the host.
 *
 * Tensor dimensions follow GGUF: dims[0] is the fastest-varying one, so a 2-D weight with
 * dims {n_in, n_out} is row-major (n_out, n_in): one row per output.
 *
 * A reader handle is immutable after open; its accessors may be called from any number of
 * threads at once.
 */
#ifndef LMK_GGUF_H
#define LMK_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"
#include "lmk_ggml.h" /* tensor types and their conversion to f32 */

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types (GGUF numbering). */
typedef enum {
    LMK_GGUF_U8 = 0,
    LMK_GGUF_I8 = 1,
    LMK_GGUF_U16 = 2,
    LMK_GGUF_I16 = 3,
    LMK_GGUF_U32 = 4,
    LMK_GGUF_I32 = 5,
    LMK_GGUF_F32 = 6,
    LMK_GGUF_BOOL = 7,
    LMK_GGUF_STRING = 8,
    LMK_GGUF_ARRAY = 9,
    LMK_GGUF_U64 = 10,
    LMK_GGUF_I64 = 11,
    LMK_GGUF_F64 = 12,
} lmk_gguf_type;

#define LMK_GGUF_MAGIC 0x46554747u /* "GGUF", read little-endian */
#define LMK_GGUF_DEFAULT_ALIGNMENT 32 /* of the data section, unless general.alignment */

#define LMK_GGUF_MAX_DIMS 4

typedef struct lmk_gguf lmk_gguf;

typedef struct lmk_gguf_tensor {
    const char *name;        /* NUL-terminated copy owned by the reader */
    int n_dims;              /* 1..LMK_GGUF_MAX_DIMS */
    int64_t dims[LMK_GGUF_MAX_DIMS]; /* unused dims are 1 */
    int64_t n_elements;
    int64_t row_len;         /* dims[0] */
    int64_t n_rows;          /* n_elements / dims[0] */
    uint32_t type;           /* lmk_ggml_type when supported */
    int supported;           /* 1 when type is one of lmk_ggml_type */
    const uint8_t *data;     /* into the mapping; valid until lmk_gguf_close */
    uint64_t n_bytes;
} lmk_gguf_tensor;

/* Open and validate `path` (mapped read-only). On failure *out is NULL and a message is
 * copied to errmsg (when given).
 * Returns LMK_OK, LMK_EFORMAT (not GGUF, damaged, truncated), LMK_EVERSION (GGUF v1 or an
 * unknown version), ENOMEM, or an errno from open/mmap. */
int lmk_gguf_open(const char *path, lmk_gguf **out, char *errmsg, size_t errmsg_cap);

/* The same over a caller's buffer, which must stay valid and unchanged until the handle is
 * closed (used by the fuzzer and by tests). */
int lmk_gguf_open_buffer(const void *data, size_t size, lmk_gguf **out, char *errmsg,
                         size_t errmsg_cap);

/* Unmap and free. Accepts NULL. */
void lmk_gguf_close(lmk_gguf *g);

/* Message of the last failed accessor call on g (may be empty). Not thread-safe: only the
 * thread that made the failing call should read it. */
const char *lmk_gguf_errmsg(const lmk_gguf *g);

uint32_t lmk_gguf_version(const lmk_gguf *g);
/* Size in bytes of the header (metadata and tensor table), and a borrowed pointer to it. */
const uint8_t *lmk_gguf_header(const lmk_gguf *g, size_t *size);

/* ---- metadata ---- */

int64_t lmk_gguf_n_kv(const lmk_gguf *g);
/* Index of `key`, or -1. */
int64_t lmk_gguf_find_key(const lmk_gguf *g, const char *key);
const char *lmk_gguf_key_name(const lmk_gguf *g, int64_t i); /* NULL when out of range */
/* Type of the value of key i (-1 when out of range); for arrays, *elem_type and *n are set
 * when non-NULL. */
int lmk_gguf_key_type(const lmk_gguf *g, int64_t i, lmk_gguf_type *elem_type, uint64_t *n);
/* Size in bytes of a fixed-size value type (0 for STRING, ARRAY and unknown types). */
size_t lmk_gguf_type_size(uint32_t type);

/* Typed getters. Each returns LMK_OK, LMK_ENOTFOUND (no such key; the message names it) or
 * LMK_EFORMAT (wrong type, or a value out of the target's range). Integer getters accept
 * any integer type whose value fits; lmk_gguf_get_f32 accepts F32 and F64. */
int lmk_gguf_get_u32(lmk_gguf *g, const char *key, uint32_t *v);
int lmk_gguf_get_i64(lmk_gguf *g, const char *key, int64_t *v);
int lmk_gguf_get_f32(lmk_gguf *g, const char *key, float *v);
int lmk_gguf_get_bool(lmk_gguf *g, const char *key, int *v);
/* String value: *s is borrowed from the mapping, NOT NUL-terminated, *len bytes. */
int lmk_gguf_get_str(lmk_gguf *g, const char *key, const char **s, uint64_t *len);
/* Copy a string value NUL-terminated into buf (LMK_EFORMAT when it does not fit or
 * contains a NUL byte). */
int lmk_gguf_get_strz(lmk_gguf *g, const char *key, char *buf, size_t cap);

/* Array of fixed-size elements: *data points at n packed little-endian elements of
 * elem_type inside the mapping (possibly unaligned: copy with memcpy). */
int lmk_gguf_get_array(lmk_gguf *g, const char *key, lmk_gguf_type *elem_type, uint64_t *n,
                       const void **data);
/* Element i of an array of strings (borrowed, not NUL-terminated). LMK_EINVAL when i is
 * out of range. */
int lmk_gguf_get_arr_str(lmk_gguf *g, const char *key, uint64_t i, const char **s,
                         uint64_t *len);

/* ---- tensors ---- */

int64_t lmk_gguf_n_tensors(const lmk_gguf *g);
const lmk_gguf_tensor *lmk_gguf_tensor_at(const lmk_gguf *g, int64_t i);
/* NULL when there is no tensor of that name. */
const lmk_gguf_tensor *lmk_gguf_find_tensor(const lmk_gguf *g, const char *name);

/* Convert rows [row0, row0 + n_rows) of t to f32 into dst (n_rows, row_len).
 * Returns LMK_OK, LMK_EINVAL (range), LMK_EUNSUPPORTED (tensor type). Thread-safe. */
int lmk_gguf_tensor_rows_f32(const lmk_gguf_tensor *t, int64_t row0, int64_t n_rows,
                             float *dst);

#ifdef __cplusplus
}
#endif
#endif
