/* landmark — GGML tensor types: their block layout, and conversion of tensor data to f32
 * (every type lmk_quant.h supports: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K,
 * IQ4_NL, IQ4_XS) and from f32 (F32, F16, BF16, Q8_0, Q4_0).
 *
 * A GGML type stores elements in blocks: `blck` elements take `block_bytes` bytes (1 and 4
 * for F32; 32 and 34 for Q8_0). Data is little-endian whatever the host. The functions
 * here are pure and thread-safe.
 */
#ifndef LMK_GGML_H
#define LMK_GGML_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tensor types (GGML numbering) that can be converted to and from f32. The other types of
 * lmk_quant.h convert to f32 only; other known types have a layout (lmk_ggml_type_size) but
 * are refused with LMK_EUNSUPPORTED by the conversions. */
typedef enum {
    LMK_GGML_F32 = 0,
    LMK_GGML_F16 = 1,
    LMK_GGML_Q4_0 = 2,
    LMK_GGML_Q8_0 = 8,
    LMK_GGML_BF16 = 30,
} lmk_ggml_type;

/* Human-readable name of a tensor type ("F32", "Q8_0"; "type 13" style for unknown ones,
 * in a thread-local buffer valid until the thread's next call). */
const char *lmk_ggml_type_name(uint32_t type);

/* Block layout of any known GGML type (converted or not). Sets *blck (elements per block)
 * and *block_bytes; returns LMK_OK, or LMK_ENOTFOUND for an unknown type (outputs
 * untouched). */
int lmk_ggml_type_size(uint32_t type, uint32_t *blck, uint32_t *block_bytes);

/* 1 when `type` converts to f32 (one of lmk_quant.h's types), else 0. */
int lmk_ggml_convertible(uint32_t type);

/* Bytes taken by one row of row_len elements of `type` (0 when the type is not convertible
 * or row_len is not a multiple of the type's block size). */
uint64_t lmk_ggml_row_bytes(uint32_t type, int64_t row_len);

/* Convert n elements of raw data of `type` (src: lmk_ggml_row_bytes(type, n) bytes,
 * possibly unaligned) to f32 in dst (n). Returns LMK_OK, LMK_EINVAL (n not a multiple of
 * the block), LMK_EUNSUPPORTED (type). */
int lmk_ggml_to_f32(uint32_t type, const void *src, int64_t n, float *dst);

/* The reverse, for lmk_ggml_type only: quantize/round n f32 values into dst
 * (lmk_ggml_row_bytes(type, n) bytes). Q8_0 and Q4_0 use GGML's reference quantization.
 * Same return codes. */
int lmk_ggml_from_f32(uint32_t type, const float *src, int64_t n, void *dst);

#ifdef __cplusplus
}
#endif
#endif
