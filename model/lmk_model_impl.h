/* Private to model/: the model's weights and a context's state, shared by the loader
 * (lmk_model_load.c), the rotary encoding (lmk_rope.c), contexts (lmk_model_ctx.c) and the
 * forward pass (lmk_forward.c). Not installed; nothing outside model/ includes it. */
#ifndef LMK_MODEL_IMPL_H
#define LMK_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_model.h"
#include "lmk_model_err.h"

#define TILE_ROWS 64      /* output rows per matrix-product tile (fixed: thread-independent) */
#define GEMM_MIN_ROWS 8   /* products over at least this many input rows expand a tile of the
                             weights to f32 and use BLAS; fewer use lmk_quant's integer dots */
#define ROPE_TABLE 8192   /* positions with precomputed cos/sin */

/* A weight matrix (rows, cols) = GGUF dims {cols, rows}, or a range of rows of one (the
 * fused QKV and gate/up tensors of phi3): row r is row_bytes bytes of `type` at
 * data + r * row_bytes, in place in the file mapping. f: the same rows as f32 when the
 * type is F32 and the data is aligned (BLAS reads them directly), else NULL. */
typedef struct {
    const lmk_gguf_tensor *t;
    const uint8_t *data;
    const float *f;
    uint32_t type;
    size_t row_bytes;
    int64_t rows, cols;
} wmat;

typedef enum { ROPE_NORM = 0, ROPE_NEOX = 1 } rope_kind; /* adjacent pairs / halves */

typedef struct {
    float *attn_norm, *ffn_norm;  /* (n_embd) */
    float *bq, *bk, *bv;          /* qwen2: (n_heads * head_dim), (n_kv_heads * head_dim) x 2;
                                     else NULL */
    float *q_norm, *k_norm;       /* qwen3: per-head RMSNorm weights (head_dim); else NULL */
    wmat wq, wk, wv, wo, wg, wu, wd;
} layer_w;

struct lmk_model {
    lmk_gguf *g;
    lmk_tokenizer *tok;
    lmk_model_info info;
    layer_w *layers;
    wmat embd, out;
    float *out_norm;
    rope_kind rope;
    size_t act_row_bytes; /* lmk_quant activation buffer of one input row, the most any
                             weight needs */
    float *freq_factors; /* rope_freqs.weight (rope_dim / 2), or NULL */
    double *inv_freq;  /* (rope_dim / 2) */
    float *rope_cs;    /* (ROPE_TABLE, 2, rope_dim): rope_coef layout */
    int n_threads;
};

struct lmk_ctx {
    lmk_model *m;
    lmk_ctx_opts o;
    lmk_attend_opts att;
    lmk_pos_policy pol;
    int block_len;         /* landmark models: mem_freq + 1; else the session's, or 0 */
    int lm;                /* landmark token inserted (landmark model) */
    int64_t n_past;
    int n_thr;             /* threads scratch was sized for */
    /* scratch (chunk rows) */
    float *x, *xn, *q, *k, *v, *att_out, *hg, *hu;
    /* representatives chosen by queries, or a recording: the chunk's queries in the
     * ranking frame */
    int want_q;
    float *qsel;           /* (chunk, n_heads, head_dim) */
    int64_t *qpos;         /* (chunk * n_heads) */
    float *lg;             /* (lg_rows, n_vocab), grown to the most logit rows asked for */
    int lg_rows;
    int32_t *ids;
    int *lrow;             /* chunk rows whose logits are wanted */
    int64_t *ldst;         /* and where they go */
    float **tile;          /* per thread: TILE_ROWS x max cols */
    uint8_t *act;          /* (GEMM_MIN_ROWS, act_row_bytes): quantized input rows */
    /* dense backend */
    float **kc, **vc;      /* per layer (cap, n_kv_heads, head_dim), keys rotated */
    int64_t cap;
    float **sc;            /* per thread score scratch */
    int64_t *sc_cap;
    lmk_ctx_stats st;
    char err[512];
};

/* Rotary encoding (lmk_rope.c). rope_init fills m->inv_freq and m->rope_cs from the
 * model's hyperparameters; m->freq_factors (rope_dim / 2, or NULL) divide the frequencies.
 * Angles and their cos/sin are computed in f32 exactly as ggml's CPU rope computes them.
 * Returns LMK_OK or ENOMEM. */
int lmk_model__rope_init(lmk_model *m);
/* Rotate x (n, n_heads, head_dim): row i to position pos0 + i. */
void lmk_model__rope_rows(const lmk_model *m, float *x, int64_t n, int n_heads, int64_t pos0);

#endif
