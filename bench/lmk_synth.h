/* landmark — the deterministic synthetic workload of `landmark demo` and `landmark bench`.
 *
 * A token stream of keys and values for every (layer, KV head), and probe queries that
 * target planted "needle" blocks. Everything is a pure function of (seed, shape, layer, head,
 * token index): any range of tokens can be generated on its own, in any order, and the
 * stream does not depend on how many tokens will be generated, so an interrupted ingest can
 * resume and a session of N tokens is a prefix of one of M > N tokens.
 *
 * The distribution (README, "The synthetic workload", states the fixed parameters):
 * - keys: k = mu_k + topic(segment) + U diag(sigma) z, with a shared mean mu_k, a per-segment
 *   topic vector that drifts every `segment_len` tokens, and anisotropic noise (sigma decays
 *   geometrically along the axes of a random orthonormal basis U);
 * - queries: q = mu_q + W diag(sigma_q) z', with a different mean and basis (the query/key
 *   distribution shift real models show);
 * - needles: one needle block in every span of `needle_span` blocks, at a hashed offset; its
 *   regular tokens' keys get + needle_gain * u_n (a random unit direction per needle, layer
 *   and KV head) and their values a marker; the probe query of needle n gets
 *   + probe_gain * u_n on top of an ordinary query.
 */
#ifndef LMK_SYNTH_H
#define LMK_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_synth_cfg {
    int n_layers, n_heads, n_kv_heads, head_dim, block_len;
    uint64_t seed;       /* default 42 */
    int segment_len;     /* topic drift period in tokens, default 512 */
    int needle_span;     /* blocks per needle, default 256 */
    float needle_gain;   /* default: the README's value */
    float probe_gain;
} lmk_synth_cfg;

/* Defaults for everything but the shape (which the caller sets). */
lmk_synth_cfg lmk_synth_cfg_default(void);

typedef struct lmk_synth lmk_synth;

/* Create a generator (precomputes bases and means). Returns 0, EINVAL or ENOMEM;
 * *out NULL on failure. */
int lmk_synth_create(const lmk_synth_cfg *cfg, lmk_synth **out);
void lmk_synth_free(lmk_synth *g);

/* Keys and values of tokens [t0, t0 + n) at `layer`: k, v (n, n_kv_heads, head_dim).
 * Thread-safe (const). */
void lmk_synth_kv(const lmk_synth *g, int layer, int64_t t0, int64_t n, float *k, float *v);

/* Number of needles whose block lies entirely within the first n_tokens tokens. */
int lmk_synth_n_needles(const lmk_synth *g, int64_t n_tokens);
/* Block id of needle i. */
int64_t lmk_synth_needle_block(const lmk_synth *g, int i);

/* Probe query number `probe` (any index >= 0; probe p targets needle p % n_needles) for a
 * stream of n_tokens: q (n_heads, head_dim) at `layer`. Returns the targeted block id, or
 * -1 when the stream has no needle yet (q is then an ordinary query). */
int64_t lmk_synth_probe(const lmk_synth *g, int layer, int probe, int64_t n_tokens, float *q);

/* An ordinary (non-probe) decoding query number i at `layer`: q (n_heads, head_dim). */
void lmk_synth_query(const lmk_synth *g, int layer, int64_t i, float *q);

#ifdef __cplusplus
}
#endif
#endif
