/* landmark — LLaMA-family GGUF models run with landmark retrieval attention.
 *
 * lmk_model holds the weights (read-only, shareable); lmk_ctx is one document being read:
 * its forward pass computes queries, keys and values per layer and hands the attention to a
 * backend:
 *   - LMK_ATTN_SESSION: a landmark session (lmk_session.h) on disk: keys and values are
 *     appended to it and every query retrieves top-k blocks through it;
 *   - LMK_ATTN_DENSE: a plain in-memory KV cache attending to every earlier token (the
 *     reference: the training-time computation for landmark models, full causal attention
 *     for ordinary ones).
 *
 * Supported: architectures `llama` (Llama 1-3.2, Mistral; `mistral` is accepted as an
 * alias), `qwen2` (Q/K/V biases), `qwen3` (per-head Q/K RMSNorm, key_length heads) and
 * `phi3` (fused QKV and gate/up tensors): RMSNorm, rotary attention with grouped KV heads,
 * SwiGLU FFN, untied or tied output; rotary encoding of adjacent pairs (llama) or of halves
 * (the others) with optional linear scaling and per-frequency factors (rope_freqs.weight).
 * Tensors F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_NL and IQ4_XS, in any mix. Anything else is refused at open with LMK_EUNSUPPORTED and
 * a message naming it (and the tensor).
 *
 * Landmark-trained models carry GGUF keys landmark.mem_freq (regular tokens per block) and
 * landmark.token_id; lmk_ctx_feed then inserts the landmark token after every mem_freq
 * regular tokens, so blocks are mem_freq + 1 positions with the landmark last.
 *
 * Weights: every matrix is used in place from the file mapping, in its GGUF type; nothing
 * is converted at open, so a run's memory is the mapped file plus working buffers.
 * Products over fewer than 8 input rows (decoding) quantize the inputs once (lmk_quant.h
 * activation blocks) and take integer dot products with the weight blocks; larger ones
 * (prefill chunks) expand one 64-row tile of the weights at a time to f32 in per-thread
 * scratch and multiply it with OpenBLAS; aligned F32 weights go to OpenBLAS directly.
 * lmk_quant picks its AVX2/FMA or portable kernels at run time (LMK_PORTABLE=1 forces the
 * portable ones).
 *
 * Threads: matrix products are split into fixed 64-row tiles run on n_threads OpenMP
 * threads; results do not depend on the thread count. Programs should call
 * openblas_set_num_threads(1) (the landmark command does) so that OpenBLAS does not start
 * threads of its own under ours.
 */
#ifndef LMK_MODEL_H
#define LMK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_error.h"
#include "lmk_gguf.h"
#include "lmk_session.h"
#include "lmk_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_model lmk_model;

typedef struct lmk_model_opts {
    int n_threads;          /* >= 1, default 1 */
    int mem_freq;           /* -1 (default): landmark.mem_freq from the file, or none;
                               0: run as an ordinary model; > 0: override */
    int landmark_token;     /* -1 (default): landmark.token_id from the file */
} lmk_model_opts;

lmk_model_opts lmk_model_opts_default(void);

typedef struct lmk_model_info {
    char arch[32];
    char name[128];
    int n_layers, n_embd, n_ff, n_heads, n_kv_heads, head_dim, n_vocab;
    int n_ctx_train;        /* <arch>.context_length, 0 when absent */
    int rope_dim;           /* dims rotated per head (<= head_dim) */
    float rope_base, rope_scale, rms_eps;
    int mem_freq;           /* regular tokens per block; 0 = ordinary model */
    int landmark_token;     /* -1 for ordinary models */
    int bos, eos;           /* -1 when none */
    uint32_t weight_type;   /* GGML type of attn_q of layer 0 */
    uint64_t n_params;
    char digest[17];        /* hex of a 64-bit hash of the whole GGUF header and of every
                               byte of every tensor's data: equal files give equal digests,
                               a change anywhere a different one (barring a 64-bit
                               collision; not proof against a forged file) */
} lmk_model_info;

/* Load the model in `path`. On failure *out is NULL and a one-line message is copied to
 * errmsg. Returns LMK_OK, LMK_EFORMAT (damaged file, bad shapes), LMK_EVERSION,
 * LMK_EUNSUPPORTED (architecture, tensor type, tokenizer, rope scaling), LMK_ENOTFOUND (a
 * required key or tensor is missing; the message names it), ENOMEM, an errno. */
int lmk_model_open(const char *path, const lmk_model_opts *opts, lmk_model **out,
                   char *errmsg, size_t errmsg_cap);
void lmk_model_close(lmk_model *m);

const lmk_model_info *lmk_model_get_info(const lmk_model *m);
/* Borrowed; valid until lmk_model_close. */
const lmk_tokenizer *lmk_model_tokenizer(const lmk_model *m);
lmk_gguf *lmk_model_gguf(const lmk_model *m);
void lmk_model_set_threads(lmk_model *m, int n_threads);

/* The model's rotary encoding, in the form of lmk_pos_policy.rotate (ud is the model):
 * rotates n vectors x (n, head_dim) in place, vector i to position pos[i]. Thread-safe. */
void lmk_model_rotate(void *model, float *x, int n, int head_dim, const int64_t *pos);

/* ---- contexts ---- */

typedef enum { LMK_ATTN_SESSION = 0, LMK_ATTN_DENSE = 1 } lmk_attn_backend;

enum { LMK_NEXT_FROM_LANDMARK = 0, LMK_NEXT_FROM_REGULAR = 1 };

typedef struct lmk_ctx_opts {
    lmk_attn_backend backend;
    /* LMK_MODE_GROUPED (landmark models only) or LMK_MODE_UNION. Default: grouped for
     * landmark models, union otherwise. */
    lmk_mode mode;
    /* SESSION: borrowed, open for writing, with the shape lmk_model_session_opts gives;
     * the context starts at its current length. */
    lmk_session *session;
    /* SESSION: key frame and position policy.
     *   LMK_POS_SLOTS    keys stored unrotated, retrieved blocks placed in window slots
     *   LMK_POS_AS_GIVEN keys stored rotated at their absolute position ("original")
     *   LMK_POS_FIXED    keys stored unrotated, retrieved tokens at fixed_distance */
    lmk_pos_kind pos;
    int64_t fixed_distance;
    /* SESSION: retrieval settings (top_k, n_recent, n_sink, n_local, retrieve, ...); the
     * context sets .mode and .pos itself. */
    lmk_attend_opts attend;
    /* Landmark models: where the prediction of the regular token that follows a block
     * comes from.
     *   LMK_NEXT_FROM_LANDMARK (default): the landmark is fed right after the block's last
     *     regular token and its logits predict the next regular token (what the reference
     *     generation of ../shared/models/golden.json does);
     *   LMK_NEXT_FROM_REGULAR: the block's last regular token predicts it; the landmark is
     *     fed just before the next regular token. */
    int next_from;
    int chunk;              /* positions per forward step (scratch size, >= 2), default 256 */
    int64_t dense_max_tokens; /* DENSE: refuse to grow the cache past this (0: no limit) */
    /* Called after each chunk with (positions done, positions in this call); may be NULL. */
    void (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
    /* SESSION: called for every layer of every chunk with what the session is given: keys
     * and values (n, n_kv_heads, head_dim) as appended, and the queries (n, n_heads,
     * head_dim) in the frame blocks are ranked in (under LMK_POS_FIXED rotated at
     * fixed_distance); for recording streams (landmark bench --recorded). May be NULL. */
    void (*record)(void *ud, int layer, int64_t n, const float *k, const float *v,
                   const float *q);
    void *record_ud;
} lmk_ctx_opts;

lmk_ctx_opts lmk_ctx_opts_default(void);

typedef struct lmk_ctx lmk_ctx;

/* Session options (shape, block_len, landmark source, fingerprint) for running model m
 * with position policy pos; block_len is used for ordinary models only (landmark models
 * have mem_freq + 1). The fingerprint string is written into fp (>= 256 bytes), which
 * o->fingerprint then points to. */
void lmk_model_session_opts(const lmk_model *m, lmk_pos_kind pos, int block_len,
                            lmk_session_opts *o, char *fp);

int lmk_ctx_open(lmk_model *m, const lmk_ctx_opts *opts, lmk_ctx **out, char *errmsg,
                 size_t errmsg_cap);
void lmk_ctx_free(lmk_ctx *c);
const char *lmk_ctx_errmsg(const lmk_ctx *c);

/* Positions fed so far (landmark tokens included). */
int64_t lmk_ctx_n_past(const lmk_ctx *c);
/* Regular (non-landmark) tokens fed so far. */
int64_t lmk_ctx_n_regular(const lmk_ctx *c);

/* Feed n regular tokens, inserting the landmark token on every block's last position
 * (see next_from for when). logits: NULL, or (n_logits, n_vocab) receiving the
 * predictions that follow each of the last n_logits regular tokens (n_logits <= n): the
 * token's own logits, or with LMK_NEXT_FROM_LANDMARK the inserted landmark's when the token
 * completes a block.
 * On failure the context and its session are back at their length before the call.
 * Returns LMK_OK, LMK_EINVAL (bad id, n_logits > n), session errors, ENOMEM. */
int lmk_ctx_feed(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits, int64_t n_logits);

/* Feed n positions exactly as given (landmark ids included by the caller, none inserted);
 * logits (n_logits, n_vocab) for the last n_logits positions. */
int lmk_ctx_feed_raw(lmk_ctx *c, const int32_t *ids, int64_t n, float *logits,
                     int64_t n_logits);

/* Replace the retrieval settings of a session context (top_k, n_recent, retrieve, ...);
 * its mode and position policy stay. E.g. chunk retrieval for a long prefill, then
 * per-token retrieval for the question and the answer. */
void lmk_ctx_set_attend(lmk_ctx *c, const lmk_attend_opts *a);

typedef struct lmk_ctx_stats {
    double matmul_s;   /* weights: projections, FFN, output */
    double attn_s;     /* attention backend (session append + attend, or dense) */
    int64_t positions; /* fed through this context */
    lmk_attend_stats attend; /* SESSION: summed over calls (blocks not filled) */
} lmk_ctx_stats;

void lmk_ctx_get_stats(const lmk_ctx *c, lmk_ctx_stats *st);

#ifdef __cplusplus
}
#endif
#endif
