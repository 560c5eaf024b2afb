/* landmark — deterministic synthetic workload (see lmk_synth.h).
 *
 * Every random number is a hash of (seed, stream tag, layer, head, index, coordinate):
 * no generator state is carried from one token to the next, which is what makes any token
 * range reproducible on its own and the stream independent of its length.
 *
 * Fixed parameters (the benchmark definition; changing one changes the benchmark):
 *   key noise      sigma_i^2 proportional to KEY_RHO^(i * 128 / d), scaled so the per-token
 *                  noise has norm sqrt(d) (unit variance per axis on average)
 *   key mean       |mu_k| = KEY_MEAN_RATIO * sqrt(d), random direction per (layer, KV head)
 *   topic          per segment, N(0, TOPIC_RATIO^2 * sigma_i^2) on the first TOPIC_AXES
 *                  axes of the key basis
 *   query noise    sigma_q,i^2 proportional to QUERY_RHO^(i * 128 / d) in an independent
 *                  basis per query head, norm QUERY_NOISE * sqrt(d)
 *   query mean     |mu_q| = QUERY_MEAN_RATIO * sqrt(d), cos(mu_q, mu_k) = QUERY_MEAN_COS
 *   values         N(0, 1) per coordinate; a needle block's values get + VALUE_MARKER * v_n
 * Needles: block span*S + 1 + h(span) % (S - 2) for every span of S = needle_span blocks,
 * so never block 0 and never the last block of a span (a stream cut at a span boundary
 * still has its last needle sealed). Every token of a needle block, the last one included,
 * gets the needle term, so a landmark token (LMK_LANDMARK_TOKEN) carries it too.
 * Needle directions lean towards the keys' principal axes (U diag(sqrt(sigma)) z,
 * normalized). needle_gain 24 and probe_gain 20 make exact top-8 search over mean landmarks
 * find every needle, and put nearly all of dense attention's weight on the needle block,
 * while ANN recall stays near or below the level measured on real landmarks (README).
 */
#include "lmk_synth.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_export.h"

#define SYNTH_MAX_DIM 1024

/* Hot loops compiled for several instruction sets; the loader picks one per machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SYNTH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SYNTH_CLONES
#endif

/* The benchmark definition (see the README). */
#define KEY_RHO 0.93
#define KEY_MEAN_RATIO 4.0
#define TOPIC_RATIO 1.0
#define TOPIC_AXES 16
#define QUERY_RHO 0.95
#define QUERY_NOISE 1.0
#define QUERY_MEAN_RATIO 2.0
#define QUERY_MEAN_COS (-0.5)
#define VALUE_MARKER 4.0
#define DEFAULT_NEEDLE_GAIN 24.0f
#define DEFAULT_PROBE_GAIN 20.0f

/* Stream tags: every kind of random draw hashes its own tag, so streams never overlap. */
enum {
    TAG_KEY_BASIS = 1,
    TAG_KEY_MEAN,
    TAG_QUERY_BASIS,
    TAG_QUERY_MEAN,
    TAG_QUERY_MEAN_ORTH,
    TAG_KEY_NOISE,
    TAG_VALUE_NOISE,
    TAG_TOPIC,
    TAG_NEEDLE_POS,
    TAG_NEEDLE_DIR,
    TAG_NEEDLE_VAL,
    TAG_QUERY,
    TAG_PROBE,
};

struct lmk_synth {
    lmk_synth_cfg cfg;
    int d, group;
    float *key_basis;   /* (n_layers, n_kv_heads, d, d): row j = basis vector j */
    float *key_sigma;   /* (d) */
    float *key_mean;    /* (n_layers, n_kv_heads, d) */
    float *query_basis; /* (n_layers, n_heads, d, d) */
    float *query_sigma; /* (d) */
    float *query_mean;  /* (n_layers, n_heads, d) */
    float topic_sigma[TOPIC_AXES];
    int topic_axes;
};

static inline uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Key of one vector's draws: every field mixed in turn (not xor-ed together, so fields
 * cannot cancel each other). */
static uint64_t key5(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t h = mix64(seed ^ 0x6c616e646d61726bull); /* "landmark" */
    h = mix64(h ^ tag);
    h = mix64(h ^ a);
    h = mix64(h ^ b);
    return mix64(h ^ c);
}

/* Approximately standard normal from one hash: the sum of four 16-bit uniforms (Irwin-Hall,
 * n = 4), centered and scaled to unit variance. Cheap, and bounded by +-3.46. */
static inline float normal_at(uint64_t key, uint64_t i)
{
    uint64_t h = mix64(key + i * 0xd1b54a32d192ed03ull);
    uint32_t s = (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) +
                 (uint32_t)((h >> 32) & 0xffff) + (uint32_t)(h >> 48);
    /* s in [0, 4*65535]; mean 2*65535.5; variance 4 * (65536^2 - 1) / 12 */
    return ((float)s - 131071.0f) * (1.7320508f / 65536.0f);
}

/* out[i] = scale[i] * N_i (scale NULL: 1) for i < n: the hot loop of the generator. */
SYNTH_CLONES
static void scaled_normals(uint64_t key, const float *scale, int n, float *out)
{
    if (scale)
        for (int i = 0; i < n; i++)
            out[i] = scale[i] * normal_at(key, (uint64_t)i);
    else
        for (int i = 0; i < n; i++)
            out[i] = normal_at(key, (uint64_t)i);
}

static void normals(uint64_t key, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = normal_at(key, (uint64_t)i);
}

static void normalize(float *x, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < d; i++)
        x[i] *= inv;
}

/* r -= (r . o) o, the dot product in double (o of unit length). */
static void remove_component(float *r, const float *o, int d)
{
    double dot = 0;
    for (int c = 0; c < d; c++)
        dot += (double)r[c] * o[c];
    for (int c = 0; c < d; c++)
        r[c] -= (float)dot * o[c];
}

/* Random orthonormal basis: modified Gram-Schmidt (twice, for orthogonality in f32) over
 * hashed normal vectors. Rows of b (d, d). */
static void make_basis(uint64_t key, int d, float *b)
{
    for (int j = 0; j < d; j++) {
        float *r = b + (size_t)j * d;
        normals(mix64(key ^ (uint64_t)j), d, r);
        for (int pass = 0; pass < 2; pass++) {
            for (int i = 0; i < j; i++)
                remove_component(r, b + (size_t)i * d, d);
            normalize(r, d);
        }
    }
}

/* Geometric per-axis scales with sum of squares = d * scale^2. The decay is defined per
 * 128 axes so the spectrum's shape does not depend on head_dim. */
static void make_sigma(double rho, double scale, int d, float *sig)
{
    double s = 0;
    for (int i = 0; i < d; i++) {
        double v = pow(rho, (double)i * 128.0 / d);
        sig[i] = (float)v;
        s += v;
    }
    double norm = sqrt((double)d / s) * scale;
    for (int i = 0; i < d; i++)
        sig[i] = (float)(sqrt((double)sig[i]) * norm);
}

LMK_API lmk_synth_cfg lmk_synth_cfg_default(void)
{
    lmk_synth_cfg c;
    memset(&c, 0, sizeof c);
    c.seed = 42;
    c.segment_len = 512;
    c.needle_span = 256;
    c.needle_gain = DEFAULT_NEEDLE_GAIN;
    c.probe_gain = DEFAULT_PROBE_GAIN;
    return c;
}

LMK_API void lmk_synth_free(lmk_synth *g)
{
    if (!g)
        return;
    free(g->key_basis);
    free(g->key_sigma);
    free(g->key_mean);
    free(g->query_basis);
    free(g->query_sigma);
    free(g->query_mean);
    free(g);
}

LMK_API int lmk_synth_create(const lmk_synth_cfg *cfg, lmk_synth **out)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    if (!cfg || cfg->n_layers < 1 || cfg->n_heads < 1 || cfg->n_kv_heads < 1 ||
        cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim < 2 ||
        cfg->head_dim > SYNTH_MAX_DIM || cfg->block_len < 1 || cfg->segment_len < 1 ||
        cfg->needle_span < 4 || !isfinite(cfg->needle_gain) || !isfinite(cfg->probe_gain))
        return EINVAL;
    lmk_synth *g = calloc(1, sizeof *g);
    if (!g)
        return ENOMEM;
    g->cfg = *cfg;
    int d = g->d = cfg->head_dim;
    g->group = cfg->n_heads / cfg->n_kv_heads;
    size_t nk = (size_t)cfg->n_layers * cfg->n_kv_heads;
    size_t nq = (size_t)cfg->n_layers * cfg->n_heads;
    g->key_basis = malloc(nk * d * d * sizeof(float));
    g->key_mean = malloc(nk * d * sizeof(float));
    g->query_basis = malloc(nq * d * d * sizeof(float));
    g->query_mean = malloc(nq * d * sizeof(float));
    g->key_sigma = malloc(d * sizeof(float));
    g->query_sigma = malloc(d * sizeof(float));
    if (!g->key_basis || !g->key_mean || !g->query_basis || !g->query_mean ||
        !g->key_sigma || !g->query_sigma) {
        lmk_synth_free(g);
        return ENOMEM;
    }
    uint64_t seed = cfg->seed;
    make_sigma(KEY_RHO, 1.0, d, g->key_sigma);
    make_sigma(QUERY_RHO, QUERY_NOISE, d, g->query_sigma);
    g->topic_axes = d < TOPIC_AXES ? d : TOPIC_AXES;
    for (int i = 0; i < g->topic_axes; i++)
        g->topic_sigma[i] = (float)TOPIC_RATIO * g->key_sigma[i];

    for (int l = 0; l < cfg->n_layers; l++) {
        for (int h = 0; h < cfg->n_kv_heads; h++) {
            size_t i = (size_t)l * cfg->n_kv_heads + h;
            make_basis(key5(seed, TAG_KEY_BASIS, l, h, 0), d, g->key_basis + i * d * d);
            float *mk = g->key_mean + i * d;
            normals(key5(seed, TAG_KEY_MEAN, l, h, 0), d, mk);
            normalize(mk, d);
        }
        for (int h = 0; h < cfg->n_heads; h++) {
            size_t i = (size_t)l * cfg->n_heads + h;
            make_basis(key5(seed, TAG_QUERY_BASIS, l, h, 0), d, g->query_basis + i * d * d);
            /* mu_q = |mu_q| (c * mu_k_hat + sqrt(1 - c^2) * r_hat), r orthogonal to mu_k */
            const float *mk = g->key_mean + ((size_t)l * cfg->n_kv_heads + h / g->group) * d;
            float *mq = g->query_mean + i * d;
            normals(key5(seed, TAG_QUERY_MEAN_ORTH, l, h, 0), d, mq);
            remove_component(mq, mk, d);
            normalize(mq, d);
            double cs = QUERY_MEAN_COS, sn = sqrt(1.0 - cs * cs);
            double norm = QUERY_MEAN_RATIO * sqrt((double)d);
            for (int c = 0; c < d; c++)
                mq[c] = (float)(norm * (cs * mk[c] + sn * mq[c]));
        }
    }
    /* Key means scaled last: the query means above used the unit direction. */
    double kn = KEY_MEAN_RATIO * sqrt((double)d);
    for (size_t i = 0; i < nk * d; i++)
        g->key_mean[i] = (float)(kn * g->key_mean[i]);
    *out = g;
    return 0;
}

/* ---- needles ---- */

static int64_t needle_block_of_span(const lmk_synth *g, int64_t span)
{
    int64_t S = g->cfg.needle_span;
    uint64_t h = key5(g->cfg.seed, TAG_NEEDLE_POS, (uint64_t)span, 0, 0);
    return span * S + 1 + (int64_t)(h % (uint64_t)(S - 2));
}

LMK_API int64_t lmk_synth_needle_block(const lmk_synth *g, int i)
{
    if (!g || i < 0)
        return -1;
    return needle_block_of_span(g, i);
}

LMK_API int lmk_synth_n_needles(const lmk_synth *g, int64_t n_tokens)
{
    if (!g || n_tokens <= 0)
        return 0;
    int64_t L = g->cfg.block_len;
    int64_t full_blocks = n_tokens / L;
    int64_t spans = full_blocks / g->cfg.needle_span;
    int64_t n = spans;
    /* the partial span's needle counts when its block is complete */
    if (needle_block_of_span(g, spans) < full_blocks)
        n++;
    return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

/* Unit direction of needle `span` at (layer, kv head) in key space: U diag(sqrt(sigma)) z,
 * normalized. Leaning towards the axes the keys vary along makes a needle an extreme block
 * of the keys' own distribution (drawn isotropically it is an outlier that an index built
 * on that distribution finds only by chance: IVF at a rate of nprobe/nlist). The square
 * root keeps directions spread over ~55 of 128 axes, so two needles' directions are nearly
 * orthogonal and a probe does not pull the attention onto another needle. */
static void needle_dir(const lmk_synth *g, int layer, int kvh, int64_t span, float *u)
{
    int d = g->d;
    float z[SYNTH_MAX_DIM];
    normals(key5(g->cfg.seed, TAG_NEEDLE_DIR, (uint64_t)layer, (uint64_t)kvh, (uint64_t)span),
            d, z);
    const float *B = g->key_basis + ((size_t)layer * g->cfg.n_kv_heads + kvh) * d * d;
    memset(u, 0, d * sizeof(float));
    for (int j = 0; j < d; j++) {
        float c = z[j] * sqrtf(g->key_sigma[j]);
        const float *b = B + (size_t)j * d;
        for (int i = 0; i < d; i++)
            u[i] += c * b[i];
    }
    normalize(u, d);
}

static void needle_value_dir(const lmk_synth *g, int layer, int kvh, int64_t span, float *u)
{
    normals(key5(g->cfg.seed, TAG_NEEDLE_VAL, (uint64_t)layer, (uint64_t)kvh, (uint64_t)span),
            g->d, u);
    normalize(u, g->d);
}

/* ---- the basis change ----
 * y = z B for every row (z already scaled by sigma): the bulk of the generator's work.
 * Not BLAS: OpenBLAS picks kernels by matrix size and thread count, so a row's result could
 * depend on how a range was split into calls. Here every output element is the sum over j
 * in increasing order, whatever the row count or vector width, so results are bit-identical
 * across call splits. Compiled for several instruction sets; the loader picks one. */
typedef float synth_v16 __attribute__((vector_size(64)));
#define ROT_ROWS 8

SYNTH_CLONES
static void rotate_rows(const float *z, float *y, size_t ld, int64_t n, int d, const float *B)
{
    int c0 = 0;
    /* 16 output columns of 8 rows at a time: the accumulators stay in registers */
    for (; c0 + 16 <= d; c0 += 16) {
        int64_t t = 0;
        for (; t + ROT_ROWS <= n; t += ROT_ROWS) {
            synth_v16 acc[ROT_ROWS];
            memset(acc, 0, sizeof acc);
            for (int j = 0; j < d; j++) {
                synth_v16 b;
                memcpy(&b, B + (size_t)j * d + c0, sizeof b);
                for (int r = 0; r < ROT_ROWS; r++) {
                    synth_v16 p = z[(size_t)(t + r) * ld + j] * b;
                    acc[r] = acc[r] + p;
                }
            }
            for (int r = 0; r < ROT_ROWS; r++)
                memcpy(y + (size_t)(t + r) * ld + c0, &acc[r], sizeof acc[r]);
        }
        for (; t < n; t++) { /* the same sums, one row at a time */
            synth_v16 acc;
            memset(&acc, 0, sizeof acc);
            for (int j = 0; j < d; j++) {
                synth_v16 b;
                memcpy(&b, B + (size_t)j * d + c0, sizeof b);
                synth_v16 p = z[(size_t)t * ld + j] * b;
                acc = acc + p;
            }
            memcpy(y + (size_t)t * ld + c0, &acc, sizeof acc);
        }
    }
    for (; c0 < d; c0++) /* head_dim not a multiple of 16: remaining columns */
        for (int64_t t = 0; t < n; t++) {
            float acc = 0.0f;
            for (int j = 0; j < d; j++) {
                float p = z[(size_t)t * ld + j] * B[(size_t)j * d + c0];
                acc = acc + p;
            }
            y[(size_t)t * ld + c0] = acc;
        }
}

/* ---- keys and values ---- */

/* The token-independent part of the keys of `block` at (layer, kvh): mu_k + topic(segment)
 * + the needle term when `block` is a needle block. Recomputed only when the segment or
 * the block changes. */
static void key_offset(const lmk_synth *g, int layer, int kvh, int64_t seg, int64_t block,
                       float *off)
{
    int d = g->d;
    const float *mk = g->key_mean + ((size_t)layer * g->cfg.n_kv_heads + kvh) * d;
    const float *B = g->key_basis + ((size_t)layer * g->cfg.n_kv_heads + kvh) * d * d;
    memcpy(off, mk, d * sizeof(float));
    uint64_t tk = key5(g->cfg.seed, TAG_TOPIC, (uint64_t)layer, (uint64_t)kvh, (uint64_t)seg);
    for (int j = 0; j < g->topic_axes; j++) {
        float c = g->topic_sigma[j] * normal_at(tk, (uint64_t)j);
        const float *b = B + (size_t)j * d;
        for (int i = 0; i < d; i++)
            off[i] += c * b[i];
    }
    int64_t span = block / g->cfg.needle_span;
    if (needle_block_of_span(g, span) == block) {
        float u[SYNTH_MAX_DIM];
        needle_dir(g, layer, kvh, span, u);
        for (int i = 0; i < d; i++)
            off[i] += g->cfg.needle_gain * u[i];
    }
}

LMK_API void lmk_synth_kv(const lmk_synth *g, int layer, int64_t t0, int64_t n, float *k,
                          float *v)
{
    if (!g || !k || !v || n <= 0 || t0 < 0 || layer < 0 || layer >= g->cfg.n_layers)
        return;
    int d = g->d, H = g->cfg.n_kv_heads;
    size_t row = (size_t)H * d;
    uint64_t seed = g->cfg.seed;
    /* Scaled key noise sigma_i z_i goes into v first (v is scratch until the values are
     * written), then k = noise @ basis per head (rotate_rows): no allocation. */
    for (int64_t t = 0; t < n; t++) {
        uint64_t tok = (uint64_t)(t0 + t);
        for (int h = 0; h < H; h++) {
            uint64_t key = key5(seed, TAG_KEY_NOISE, (uint64_t)layer, (uint64_t)h, tok);
            float *z = v + (size_t)t * row + (size_t)h * d;
            scaled_normals(key, g->key_sigma, d, z);
        }
    }
    for (int h = 0; h < H; h++)
        rotate_rows(v + (size_t)h * d, k + (size_t)h * d, row, n, d,
                    g->key_basis + ((size_t)layer * H + h) * d * d);
    float off[SYNTH_MAX_DIM], vdir[SYNTH_MAX_DIM];
    int64_t L = g->cfg.block_len, SEG = g->cfg.segment_len;
    for (int h = 0; h < H; h++) {
        int64_t cur_block = -1, cur_seg = -1;
        int needle = 0;
        for (int64_t t = 0; t < n; t++) {
            int64_t tok = t0 + t, b = tok / L, seg = tok / SEG;
            if (b != cur_block || seg != cur_seg) {
                key_offset(g, layer, h, seg, b, off);
                int64_t span = b / g->cfg.needle_span;
                needle = needle_block_of_span(g, span) == b;
                if (needle)
                    needle_value_dir(g, layer, h, span, vdir);
                cur_block = b;
                cur_seg = seg;
            }
            float *kr = k + (size_t)t * row + (size_t)h * d;
            for (int i = 0; i < d; i++)
                kr[i] += off[i];
            float *vr = v + (size_t)t * row + (size_t)h * d;
            uint64_t key = key5(seed, TAG_VALUE_NOISE, (uint64_t)layer, (uint64_t)h,
                                (uint64_t)tok);
            scaled_normals(key, NULL, d, vr);
            if (needle)
                for (int i = 0; i < d; i++)
                    vr[i] += (float)VALUE_MARKER * vdir[i];
        }
    }
}

/* ---- queries ---- */

/* q (n_heads, d): mu_q + W diag(sigma_q) z for every head, z hashed from (tag, i). */
static void ordinary_query(const lmk_synth *g, int layer, uint64_t tag, int64_t i, float *q)
{
    int d = g->d;
    float z[SYNTH_MAX_DIM];
    for (int h = 0; h < g->cfg.n_heads; h++) {
        size_t hi = (size_t)layer * g->cfg.n_heads + h;
        const float *W = g->query_basis + hi * d * d;
        const float *mq = g->query_mean + hi * d;
        uint64_t key = key5(g->cfg.seed, tag, (uint64_t)layer, (uint64_t)h, (uint64_t)i);
        scaled_normals(key, g->query_sigma, d, z);
        float *qh = q + (size_t)h * d;
        memcpy(qh, mq, d * sizeof(float));
        /* plain loops, not BLAS: d^2 per head, and the order of sums stays fixed */
        for (int j = 0; j < d; j++) {
            const float *w = W + (size_t)j * d;
            float c = z[j];
            for (int c2 = 0; c2 < d; c2++)
                qh[c2] += c * w[c2];
        }
    }
}

LMK_API void lmk_synth_query(const lmk_synth *g, int layer, int64_t i, float *q)
{
    if (!g || !q || layer < 0 || layer >= g->cfg.n_layers || i < 0)
        return;
    ordinary_query(g, layer, TAG_QUERY, i, q);
}

LMK_API int64_t lmk_synth_probe(const lmk_synth *g, int layer, int probe, int64_t n_tokens,
                                float *q)
{
    if (!g || !q || layer < 0 || layer >= g->cfg.n_layers || probe < 0)
        return -1;
    ordinary_query(g, layer, TAG_PROBE, probe, q);
    int nn = lmk_synth_n_needles(g, n_tokens);
    if (nn <= 0)
        return -1;
    int64_t span = probe % nn;
    int d = g->d;
    float u[SYNTH_MAX_DIM];
    for (int kvh = 0; kvh < g->cfg.n_kv_heads; kvh++) {
        needle_dir(g, layer, kvh, span, u);
        for (int j = 0; j < g->group; j++) {
            float *qh = q + (size_t)(kvh * g->group + j) * d;
            for (int i = 0; i < d; i++)
                qh[i] += g->cfg.probe_gain * u[i];
        }
    }
    return needle_block_of_span(g, span);
}
