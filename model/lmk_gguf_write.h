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
/* The encoded file in memory: *buf malloc'ed, freed by the caller. */
int lmk_gguf_writer_encode(lmk_gguf_writer *w, uint8_t **buf, size_t *size);

#ifdef __cplusplus
}
#endif
#endif
