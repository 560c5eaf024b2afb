/* landmark — GGML tensor block formats: sizes, row dequantization, and the dot product of one
 * quantized row with a vector (the building block of a matrix-vector product).
 *
 * Supported types (numbered as GGML's enum ggml_type, which is what a GGUF file stores):
 *   F32, F16, BF16                       one value per "block";
 *   Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL blocks of 32 values;
 *   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS super-blocks of 256 values.
 * The byte layout of every block is GGML's (ggml/src/ggml-common.h), little-endian, and
 * lmk_quant_dequantize_row() gives the same floats, bit for bit, as GGML's own to_float.
 * Any other type id gives LMK_EUNSUPPORTED, with the type's name in lmk_quant_errmsg().
 *
 * Two ways to take a dot product with a vector x of floats:
 *   lmk_quant_dot_f32()  weights expanded on the fly, multiplied with x in f32;
 *   lmk_quant_dot_act()  x first quantized once by lmk_quant_act_quantize() to 8-bit blocks
 *                        (the "activation" buffer; blocks of 32 for the 32-blocked types,
 *                        of 256 for the K-types and IQ4_XS), then integer dot products per
 *                        block, scaled at the end. Faster; the error added by quantizing x
 *                        is at most, per block of x, amax|x|/254 times the sum of |w| there
 *                        (plus f32 rounding of the per-block scaling).
 * Each, and the dequantization, has a portable C path and an AVX2 + FMA + F16C path (x86-64
 * only). LMK_QUANT_PATH_AUTO picks AVX2 when the CPU has all three and the environment
 * variable LMK_PORTABLE is not "1"; that choice is made once, on the first call, and never
 * changes in the process.
 *
 * Threads: every function is reentrant and touches only its arguments (and, on failure, a
 * thread-local message). No function allocates memory; the hot paths keep their scratch
 * on the stack (under 2 KiB).
 *
 * Lengths: n is the number of values of a row and must be a positive multiple of the type's
 * block size (LMK_EINVAL otherwise). Pointers are borrowed for the duration of the call; the
 * caller owns every buffer, inputs and outputs alike. Rows need no particular alignment.
 */
#ifndef LMK_QUANT_H
#define LMK_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GGML type ids handled here (values of enum ggml_type in ggml.h). */
enum {
    LMK_QUANT_F32 = 0,
    LMK_QUANT_F16 = 1,
    LMK_QUANT_Q4_0 = 2,
    LMK_QUANT_Q4_1 = 3,
    LMK_QUANT_Q5_0 = 6,
    LMK_QUANT_Q5_1 = 7,
    LMK_QUANT_Q8_0 = 8,
    LMK_QUANT_Q2_K = 10,
    LMK_QUANT_Q3_K = 11,
    LMK_QUANT_Q4_K = 12,
    LMK_QUANT_Q5_K = 13,
    LMK_QUANT_Q6_K = 14,
    LMK_QUANT_IQ4_NL = 20,
    LMK_QUANT_IQ4_XS = 23,
    LMK_QUANT_BF16 = 30,
};

/* Which implementation a dot product uses. */
typedef enum {
    LMK_QUANT_PATH_AUTO = 0,     /* the process-wide choice, see lmk_quant_path_auto() */
    LMK_QUANT_PATH_PORTABLE = 1, /* plain C, any CPU */
    LMK_QUANT_PATH_AVX2 = 2,     /* AVX2 + FMA + F16C; LMK_EUNSUPPORTED where the CPU lacks
                                    them */
} lmk_quant_path;

/* Fixed facts about one type. */
typedef struct {
    const char *name;      /* GGML's name, e.g. "q4_K"; static storage */
    int64_t block_size;    /* values per block: 1, 32 or 256 */
    size_t type_size;      /* bytes per block */
    int64_t act_block;     /* values per block of the activation buffer: 32 or 256, or 1 for
                              F32/F16/BF16 (whose activation buffer is x itself, as f32) */
} lmk_quant_info;

/* Facts about `type` into *out. LMK_EUNSUPPORTED (message names the type) for a type not in
 * the list above; *out is then left unchanged. */
int lmk_quant_type_info(uint32_t type, lmk_quant_info *out);

/* GGML's name of any type id it has ever defined ("q4_K", "iq2_xxs", ...), supported here or
 * not; "unknown" for others. Static storage, never NULL. */
const char *lmk_quant_type_name(uint32_t type);

/* Bytes of one row of n values into *out. LMK_EINVAL if n <= 0 or not a multiple of the
 * block size; LMK_EUNSUPPORTED for an unsupported type. */
int lmk_quant_row_size(uint32_t type, int64_t n, size_t *out);

/* The message of the last failure of an lmk_quant_* call on this thread ("" if none).
 * Valid until the next failing call on the same thread. */
const char *lmk_quant_errmsg(void);

/* The path LMK_QUANT_PATH_AUTO resolves to in this process: AVX2 or PORTABLE. */
lmk_quant_path lmk_quant_path_auto(void);

/* 1 if `path` can run on this CPU (PORTABLE and AUTO always), 0 otherwise. */
int lmk_quant_path_available(lmk_quant_path path);

/* Expand one row of n values: `row` (row_size bytes of `type`) -> dst[n] f32. Both paths
 * give GGML's floats exactly. Returns LMK_OK, LMK_EINVAL (NULL pointer, bad n or path),
 * LMK_EUNSUPPORTED (type, or path not available). */
int lmk_quant_dequantize_row(uint32_t type, const void *row, int64_t n, lmk_quant_path path,
                             float *dst);

/* *out = sum_i w[i] * x[i], w the dequantized row of n values, x[n] f32. The f32 path
 * accumulates in f32 within a block of up to 256 values and in double across blocks.
 * Returns LMK_OK, LMK_EINVAL, LMK_EUNSUPPORTED (type, or path not available). */
int lmk_quant_dot_f32(uint32_t type, const void *row, const float *x, int64_t n,
                      lmk_quant_path path, float *out);

/* Bytes of the activation buffer for a row length n of weight type `type` into *out.
 * Errors as lmk_quant_row_size(). */
int lmk_quant_act_size(uint32_t type, int64_t n, size_t *out);

/* Quantize x[n] into act (caller-allocated, lmk_quant_act_size() bytes, any alignment) in
 * the form lmk_quant_dot_act() needs for weights of `type`: per activation block, scale
 * d = max|x| / 127 and values round(x / d) in [-127, 127]. For F32/F16/BF16 it is a copy of
 * x. The buffer's layout is private to this module and may change between versions.
 * Returns LMK_OK, LMK_EINVAL (NULL, bad n, or a non-finite x), LMK_EUNSUPPORTED. */
int lmk_quant_act_quantize(uint32_t type, const float *x, int64_t n, void *act);

/* *out = dot of the weight row with the vector that `act` encodes (made by
 * lmk_quant_act_quantize() for the same type and n). Integer products within a block; for
 * the quantized types the portable and the AVX2 paths give the same float, bit for bit
 * (for F32/F16/BF16 this is lmk_quant_dot_f32() on the copy of x, which may differ in
 * the last bits between paths).
 * Returns LMK_OK, LMK_EINVAL, LMK_EUNSUPPORTED. */
int lmk_quant_dot_act(uint32_t type, const void *row, const void *act, int64_t n,
                      lmk_quant_path path, float *out);

/* y[r] = dot(row r of w, x) for r < n_rows, each row n_cols values and row_size bytes
 * apart, with lmk_quant_dot_f32() (act == NULL) or, given an activation buffer made from x
 * for this type and n_cols, with lmk_quant_dot_act(). x may be NULL when act is given.
 * Single-threaded: callers split rows across threads themselves.
 * Returns the first failure's code, LMK_OK otherwise. */
int lmk_quant_matvec(uint32_t type, const void *w, int64_t n_rows, int64_t n_cols,
                     const float *x, const void *act, lmk_quant_path path, float *y);

#ifdef __cplusplus
}
#endif
#endif
