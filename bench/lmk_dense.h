/* landmark — dense attention baseline: what a user has without landmark.
 *
 * Every key and value of one layer held in RAM, and one decoding step computed as plain
 * softmax attention over all of them with OpenBLAS (sgemm for the scores and for the
 * weighted sum), for every query head at once (grouped-query attention: query head h reads
 * KV head h / (n_heads / n_kv_heads)). Scale 1/sqrt(head_dim). Scratch is allocated once at
 * create, so a step never allocates.
 *
 * Storage dtype:
 * - LMK_DTYPE_F32: keys and values kept as given (4 bytes per number);
 * - LMK_DTYPE_F16: kept as IEEE half (round to nearest even, base/lmk_f16.h) and converted
 *   back to f32 chunk by chunk during a step: half the RAM, slower steps.
 * To compare against an f16 session on identical data, round the inputs to f16 first (or use
 * LMK_DTYPE_F16): the session attends over its stored, rounded keys and values.
 *
 * Threads: the step runs inside OpenBLAS, with OpenBLAS's own thread count
 * (openblas_set_num_threads); the conversions and the softmax are single-threaded.
 * A handle is used by one thread at a time.
 */
#ifndef LMK_DENSE_H
#define LMK_DENSE_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"
#include "lmk_session.h" /* lmk_dtype */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_dense lmk_dense;

/* Create an empty store for up to capacity_tokens tokens of one layer; every buffer (K/V
 * storage and the step's scratch) is allocated here.
 * Returns LMK_OK, LMK_EINVAL (shape: n_heads not a positive multiple of n_kv_heads,
 * head_dim < 1, capacity_tokens < 1, dtype unknown) or ENOMEM; *out is NULL on failure. */
int lmk_dense_create(int n_kv_heads, int head_dim, int n_heads, lmk_dtype dtype,
                     int64_t capacity_tokens, lmk_dense **out);

/* Free everything. Accepts NULL. */
void lmk_dense_free(lmk_dense *d);

/* Append n tokens: k, v (n, n_kv_heads, head_dim) f32, copied (converted when f16).
 * Returns LMK_OK or LMK_EINVAL (n < 0, NULL buffers, capacity exceeded: nothing appended). */
int lmk_dense_append(lmk_dense *d, int64_t n, const float *k, const float *v);

/* One decoding step over every token appended so far: q (n_heads, head_dim) in,
 * out (n_heads, head_dim) out; out = softmax(s * K q) V per query head.
 * Returns LMK_OK or LMK_EINVAL (no token yet, NULL buffers). */
int lmk_dense_attend(lmk_dense *d, const float *q, float *out);

/* Tokens appended so far. */
int64_t lmk_dense_tokens(const lmk_dense *d);

/* Bytes of RAM held for K/V storage (capacity) plus scratch. */
size_t lmk_dense_memory_bytes(const lmk_dense *d);

#ifdef __cplusplus
}
#endif
#endif
