/* landmark base — the exponential over arrays, for softmax and SiLU.
 *
 * libm's expf is called once per element and, through the dependency of a running sum on
 * each call, cannot overlap; a softmax over a long prefill chunk spent about a tenth of its
 * time there. These compute e^x eight elements at a time where the CPU has AVX2 and FMA (four
 * with SSE2 otherwise) with a range reduction by ln 2 and a degree-6 polynomial: at most 2 ulp
 * from the correctly rounded value over the normal range, far inside the attention tests'
 * tolerance (1e-5). The path is chosen once per process (the CPU's), so results never depend
 * on the thread count; they may differ in the last bit between CPUs with and without AVX2.
 *
 * Special values: e^x is +inf above 88.72 (as expf), 0 below -87.33 (expf would give a
 * subnormal under 1.2e-38 there), e^-inf = 0, and NaN stays NaN. */
#ifndef LMK_VEXP_H
#define LMK_VEXP_H

#include <stdint.h>

#include "lmk_export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[i] = e^(x[i] - shift) for 0 <= i < n; y may equal x (in place), otherwise the arrays
 * must not overlap. Returns the sum of the y[i], accumulated in double in a fixed order.
 * n <= 0 does nothing and returns 0. */
LMK_API double lmk_exp_shift(float *y, const float *x, int64_t n, float shift);

/* y[i] = x[i] / (1 + e^-x[i]) * u[i] (SiLU of x gating u), 0 <= i < n; y may equal x or u. */
LMK_API void lmk_silu_mul(float *y, const float *x, const float *u, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
