/* landmark — a small GGUF v3 writer, for tests, fuzz corpora and benchmarks (the `landmark`
 * command does not link it).
 *
 * Build a file in memory: add metadata and tensors (f32 source data converted to the
 * requested type with lmk_ggml_from_f32, or raw bytes of any GGML type), then encode or
 * write it. Keys and tensors are written in the order added, the data section aligned to
 * LMK_GGUF_DEFAULT_ALIGNMENT. Values and tensor data are copied; the caller's buffers may be
 * reused as soon as a call returns. A writer is not thread-safe.
 *
 * Functions return LMK_OK, LMK_EINVAL (bad arguments, noted per function), ENOMEM, or (when
 * writing) an errno. After ENOMEM from an add_* call the writer refuses to encode.
 *
 * Streaming (models too large to hold in memory): declare tensors by name, shape and type
 * only (lmk_gguf_writer_declare; tensors added with data may be mixed in), open the file
 * (lmk_gguf_writer_stream_open writes the header, metadata and tensor table), then give each
 * declared tensor's data in declaration order, in pieces of whole rows
 * (lmk_gguf_writer_stream_rows from f32, lmk_gguf_writer_stream_raw as bytes), and close
 * (lmk_gguf_writer_stream_close). Only tensors added with data are held in memory, and
 * they are written when their turn comes. The layout is the one lmk_gguf_writer_write
 * would produce.
 */
#ifndef LMK_GGUF_WRITE_H
#define LMK_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_gguf_writer lmk_gguf_writer;

/* A new, empty writer in *out (NULL on failure). */
int lmk_gguf_writer_new(lmk_gguf_writer **out);
/* Accepts NULL. */
void lmk_gguf_writer_free(lmk_gguf_writer *w);
int lmk_gguf_writer_add_u32(lmk_gguf_writer *w, const char *key, uint32_t v);
int lmk_gguf_writer_add_f32(lmk_gguf_writer *w, const char *key, float v);
int lmk_gguf_writer_add_bool(lmk_gguf_writer *w, const char *key, int v);
int lmk_gguf_writer_add_str(lmk_gguf_writer *w, const char *key, const char *v);
/* Arrays: elem_type a fixed-size type (data n packed host-order elements) or
 * LMK_GGUF_STRING (data is const char *const[n], NUL-terminated). */
int lmk_gguf_writer_add_array(lmk_gguf_writer *w, const char *key, lmk_gguf_type elem_type,
                              uint64_t n, const void *data);
/* Tensor of n_dims dims (GGUF order) from f32 data, stored as `type` (F32, F16, BF16,
 * Q8_0, Q4_0). Returns LMK_EINVAL when dims[0] is not a multiple of the type's block. */
int lmk_gguf_writer_add_tensor(lmk_gguf_writer *w, const char *name, int n_dims,
                               const int64_t *dims, uint32_t type, const float *data);
/* Tensor from raw bytes of any GGML type (n_bytes must be the type's size for dims). */
int lmk_gguf_writer_add_raw(lmk_gguf_writer *w, const char *name, int n_dims,
                            const int64_t *dims, uint32_t type, const void *bytes,
                            size_t n_bytes);
/* Write the file (truncating). Returns LMK_OK or an errno. */
int lmk_gguf_writer_write(lmk_gguf_writer *w, const char *path);
/* The encoded file in memory: *buf malloc'ed, freed by the caller. LMK_EINVAL when a
 * tensor was declared without data. */
int lmk_gguf_writer_encode(lmk_gguf_writer *w, uint8_t **buf, size_t *size);

/* ---- streaming ---- */

/* A tensor whose data will be streamed: n_dims dims (GGUF order) of any GGML type with a
 * known layout. LMK_EINVAL when the shape does not fit the type's block, or once the stream
 * is open. */
int lmk_gguf_writer_declare(lmk_gguf_writer *w, const char *name, int n_dims,
                            const int64_t *dims, uint32_t type);
/* Create `path` (truncating) and write everything up to the first declared tensor's data.
 * Returns LMK_OK, LMK_EINVAL (already open), ENOMEM, or an errno. */
int lmk_gguf_writer_stream_open(lmk_gguf_writer *w, const char *path);
/* The next n_rows rows (n_rows * dims[0] f32 values) of the current declared tensor,
 * converted to its type (F32, F16, BF16, Q8_0, Q4_0). When a tensor is complete the stream
 * moves to the next declared one. LMK_EINVAL: no stream open, no tensor left, more rows
 * than the tensor has left, or a type that cannot be converted from f32. */
int lmk_gguf_writer_stream_rows(lmk_gguf_writer *w, const float *data, int64_t n_rows);
/* The same with raw bytes of the tensor's type: n_bytes must be a whole number of rows. */
int lmk_gguf_writer_stream_raw(lmk_gguf_writer *w, const void *bytes, size_t n_bytes);
/* Flush and close the file. LMK_EINVAL when a declared tensor is not complete (the file is
 * closed but incomplete: the caller removes it), otherwise LMK_OK or an errno. After a
 * failed stream call the stream refuses further data and close reports the first error.
 * lmk_gguf_writer_free closes an open stream without checking. */
int lmk_gguf_writer_stream_close(lmk_gguf_writer *w);

#ifdef __cplusplus
}
#endif
#endif
