/* landmark-compare: landmark and llama.cpp on one GGUF model, side by side.
 *
 * For every context depth and engine (interleaved: depth 1 landmark, depth 1 llama.cpp,
 * depth 2 landmark, ...) one child process (this program re-executed with --child) feeds
 * the same token ids on the same threads: `depth` ids of prefill, then 64 fixed ids one at a
 * time (decode). The child reports one line; the parent prints the table, --json, --plot.
 *
 *   landmark   lmk_ctx over a fresh session: prefill with chunk retrieval under the default
 *              durability (nometa), 64 decode steps under nometa, the session truncated back
 *              to the depth and reopened under `none`, 64 decode steps and a sync.
 *   llama.cpp  libllama through dlopen (the prebuilt CPU libraries of the npm package that
 *              tests/llama/fetch.sh fetches): flash attention on, f16 K and V cache,
 *              n_ctx = depth + 64, default n_batch/n_ubatch, the same threads; skipped when its
 *              KV cache would not fit in half the available memory.
 *
 * Peak RSS is getrusage's ru_maxrss of the child (mapped session pages included); session
 * bytes are the landmark session directory's allocated blocks, "kv" the llama.cpp cache's
 * bytes. A child over --time-limit seconds is killed (SIGALRM) and its row says so.
 *
 * --model-1b: instead of --model, a random-weight model shaped like Llama-3.2-1B (16 layers,
 * width 2048, 32 query / 8 KV heads of 64, FFN 8192, tied embeddings, rope base 500000 with
 * llama3 frequency factors, the vocabulary of llama.cpp's ggml-vocab-llama-bpe.gguf) made in
 * --model-dir (default: beside this program, in the build tree) and reused while valid:
 * written as F16 by the streaming GGUF writer (normal(0, 0.02) weights from a fixed seed,
 * generated row piece by row piece), then quantized to Q4_K_M by llama.cpp's own
 * llama_model_quantize; both engines run the Q4_K_M file. Both children check that their
 * logits are finite.
 *
 * bound tok/s: what one decode token costs at the read bandwidth measured with the run's
 * thread count when it reads the weights once plus (landmark) the f32 landmarks it scans and
 * the f16 blocks it fetches, (llama.cpp) its whole f16 KV cache. A lower bound on time
 * (weights that stay in cache can beat it), printed beside each row. */
#include <llama_ref_path.h> /* generated in the build tree: LMK_LLAMA_REF and llama.h */

#include "lmk_bench.h"
#include "lmk_clock.h"
#include "lmk_error.h"
#include "lmk_fs.h"
#include "lmk_session.h"
#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_model.h"
#include "lmk_tasks.h"
#include "lmk_tokenizer.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
void openblas_set_num_threads(int num_threads);

#define N_DECODE 64
#define MAX_DEPTHS 32

typedef struct {
    const char *model, *text, *workdir, *json, *plot, *lib, *model_dir;
    const char *index_spec; /* landmark's FAISS index (NULL: the default, Flat) */
    int nprobe;             /* landmark's IVF nprobe (0: the index's default) */
    int64_t llama_max;      /* llama.cpp runs only at depths up to this (0: every depth) */
    int model_1b, make_only;
    int64_t depths[MAX_DEPTHS];
    int n_depths;
    int threads, time_limit, run_landmark, run_llama;
} opts;

typedef struct {
    char engine[16];
    int64_t depth;
    char status[32];
    double prefill_tps, decode_tps, decode_none_tps, rss_mb, disk_mb, seconds, bound_tps;
    double prefill_cpu, decode_cpu; /* tokens per CPU second */
} row;

/* ---- small helpers ---- */

static int64_t parse_count(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    return *end || v < 1 ? -1 : (int64_t)v;
}

/* CPU seconds of the process so far (every thread, user and system). On a loaded machine
 * wall time measures the scheduler's share as much as the work; CPU time does not. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int all_finite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static int64_t dir_bytes(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int64_t sum = 0;
    struct dirent *de;
    char p[4096];
    struct stat st;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (lstat(p, &st) == 0)
            sum += S_ISDIR(st.st_mode) ? dir_bytes(p) : (int64_t)st.st_blocks * 512;
    }
    closedir(d);
    return sum;
}

static int32_t *read_tokens(const char *workdir, int64_t n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/tokens.bin", workdir);
    FILE *f = fopen(p, "rb");
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!f || !ids || fread(ids, sizeof *ids, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "landmark-compare: cannot read %lld tokens from %s\n", (long long)n, p);
        exit(1);
    }
    fclose(f);
    return ids;
}

/* ---- the landmark child ---- */

static int lmk_child(const opts *o, int64_t depth)
{
    char err[512], dir[4096];
    int32_t *ids = read_tokens(o->workdir, depth + N_DECODE);
    snprintf(dir, sizeof dir, "%s/session-%lld", o->workdir, (long long)depth);
    lmk_fs_rmtree(dir);

    lmk_task_opts to = lmk_task_opts_default();
    to.n_threads = o->threads;
    lmk_model *m = NULL;
    if (lmk_task_model_open(o->model, &to, &m, err, sizeof err)) {
        printf("R status=error:model\n");
        fprintf(stderr, "landmark-compare: %s\n", err);
        return 1;
    }
    lmk_task_resolve(m, &to);
    int n_vocab = lmk_model_get_info(m)->n_vocab;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);

    double t_prefill = 0, t_dec = 0, t_dec_none = 0, c_prefill = 0, c_dec = 0;
    for (int pass = 0; pass < 2; pass++) {
        lmk_session_opts so;
        char fp[256];
        lmk_model_session_opts(m, (lmk_pos_kind)to.pos, to.block_len, &so, fp);
        so.create = pass == 0;
        so.n_threads = o->threads;
        so.index_spec = o->index_spec ? o->index_spec : to.index_spec;
        so.dtype = to.dtype;
        so.durability = pass == 0 ? LMK_DURABLE_NOMETA : LMK_DURABLE_NONE;
        if (pass == 1) {
            so.block_len = 0;
            so.landmark = LMK_LANDMARK_AUTO;
        }
        lmk_session *s = NULL;
        if (lmk_session_open(dir, &so, &s, err, sizeof err)) {
            printf("R status=error:session\n");
            fprintf(stderr, "landmark-compare: %s\n", err);
            return 1;
        }
        lmk_ctx_opts co = lmk_ctx_opts_default();
        co.backend = LMK_ATTN_SESSION;
        co.session = s;
        co.pos = (lmk_pos_kind)to.pos;
        co.mode = (lmk_mode)to.mode;
        co.fixed_distance = to.fixed_distance;
        co.next_from = to.next_from;
        co.chunk = to.chunk;
        lmk_attend_opts a = lmk_attend_opts_default();
        a.top_k = to.top_k;
        a.n_recent = to.n_recent;
        a.n_sink = to.n_sink;
        a.n_local = to.n_local;
        a.retrieve = LMK_RETRIEVE_CHUNK;
        a.nprobe = o->nprobe;
        co.attend = a;
        lmk_ctx *c = NULL;
        if (lmk_ctx_open(m, &co, &c, err, sizeof err)) {
            printf("R status=error:ctx\n");
            fprintf(stderr, "landmark-compare: %s\n", err);
            return 1;
        }
        int rc = 0;
        if (pass == 0) {
            double t0 = lmk_clock_s(), c0 = cpu_s();
            for (int64_t i = 0; i < depth && !rc; i += to.piece) {
                int64_t n = depth - i < to.piece ? depth - i : to.piece;
                rc = lmk_ctx_feed(c, ids + i, n, i + n == depth ? logits : NULL, i + n == depth);
            }
            t_prefill = lmk_clock_s() - t0;
            c_prefill = cpu_s() - c0;
            if (!rc && !all_finite(logits, n_vocab)) {
                printf("R status=error:nonfinite\n");
                fprintf(stderr, "landmark-compare: landmark's prefill logits are not finite\n");
                return 1;
            }
        }
        int64_t positions = lmk_ctx_n_past(c);
        a.retrieve = to.retrieve;
        lmk_ctx_set_attend(c, &a);
        lmk_ctx_stats st0, st1;
        lmk_ctx_get_stats(c, &st0);
        double t0 = lmk_clock_s(), c0 = cpu_s();
        for (int i = 0; i < N_DECODE && !rc; i++)
            rc = lmk_ctx_feed(c, ids + depth + i, 1, logits, 1);
        if (!rc && pass == 1)
            rc = lmk_session_sync(s);
        double t = lmk_clock_s() - t0;
        lmk_ctx_get_stats(c, &st1);
        /* where a decode step's time goes (ms per token), on stderr */
        fprintf(stderr,
                "landmark-compare: depth %lld decode (%s): %.2f ms/token = weights %.2f + "
                "attention backend %.2f (search %.2f, fetch %.2f, attention %.2f, the rest "
                "appends and commits) + other\n",
                (long long)depth, pass ? "none" : "nometa", 1e3 * t / N_DECODE,
                1e3 * (st1.matmul_s - st0.matmul_s) / N_DECODE,
                1e3 * (st1.attn_s - st0.attn_s) / N_DECODE,
                1e3 * (st1.attend.search_s - st0.attend.search_s) / N_DECODE,
                1e3 * (st1.attend.fetch_s - st0.attend.fetch_s) / N_DECODE,
                1e3 * (st1.attend.attn_s - st0.attend.attn_s) / N_DECODE);
        if (rc) {
            printf("R status=error:feed\n");
            fprintf(stderr, "landmark-compare: %s (%s)\n", lmk_ctx_errmsg(c), lmk_strerror(rc));
            return 1;
        }
        if (!all_finite(logits, n_vocab)) {
            printf("R status=error:nonfinite\n");
            fprintf(stderr, "landmark-compare: landmark's decode logits are not finite\n");
            return 1;
        }
        if (pass == 0) {
            t_dec = t;
            c_dec = cpu_s() - c0;
            lmk_ctx_free(c);
            rc = lmk_session_truncate(s, positions);
            if (rc) {
                printf("R status=error:truncate\n");
                return 1;
            }
        } else {
            t_dec_none = t;
            lmk_ctx_free(c);
        }
        lmk_session_close(s);
    }
    double disk = (double)dir_bytes(dir);
    printf("R status=ok prefill_tps=%.3f decode_tps=%.3f decode_none_tps=%.3f rss_mb=%.1f "
           "disk_mb=%.2f prefill_cpu=%.3f decode_cpu=%.3f\n",
           depth / t_prefill, N_DECODE / t_dec, N_DECODE / t_dec_none, peak_rss_mb(),
           disk / 1048576.0, depth / c_prefill, N_DECODE / c_dec);
    lmk_fs_rmtree(dir);
    lmk_model_close(m);
    free(logits);
    free(ids);
    return 0;
}

/* ---- the llama.cpp child ---- */

#define SYM(lib, name)                                                                   \
    __typeof__(&name) p_##name = (__typeof__(&name))dlsym(lib, #name);                   \
    if (!p_##name) {                                                                     \
        printf("R status=error:dlsym\n");                                               \
        fprintf(stderr, "landmark-compare: %s not found\n", #name);                      \
        return 1;                                                                        \
    }

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static int llama_child(const opts *o, int64_t depth)
{
    char p[4096];
    const char *libdir = o->lib ? o->lib : LMK_LLAMA_REF "/lib";
    snprintf(p, sizeof p, "%s/libggml.v0.4.0.so", libdir);
    void *gl = dlopen(p, RTLD_NOW | RTLD_GLOBAL);
    snprintf(p, sizeof p, "%s/libllama.v0.4.0.so", libdir);
    void *ll = gl ? dlopen(p, RTLD_NOW | RTLD_GLOBAL) : NULL;
    if (!ll) {
        printf("R status=error:dlopen\n");
        fprintf(stderr, "landmark-compare: %s\n", dlerror());
        return 1;
    }
    SYM(gl, ggml_backend_load_all_from_path)
    SYM(ll, llama_log_set)
    SYM(ll, llama_backend_init)
    SYM(ll, llama_model_default_params)
    SYM(ll, llama_model_load_from_file)
    SYM(ll, llama_context_default_params)
    SYM(ll, llama_init_from_model)
    SYM(ll, llama_batch_get_one)
    SYM(ll, llama_decode)
    SYM(ll, llama_free)
    SYM(ll, llama_model_free)
    SYM(ll, llama_get_logits_ith)
    SYM(ll, llama_model_get_vocab)
    SYM(ll, llama_vocab_n_tokens)
    p_llama_log_set(quiet_log, NULL);
    p_ggml_backend_load_all_from_path(libdir);
    p_llama_backend_init();

    int32_t *ids = read_tokens(o->workdir, depth + N_DECODE);
    struct llama_model_params mp = p_llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = p_llama_model_load_from_file(o->model, mp);
    if (!model) {
        printf("R status=error:model\n");
        return 1;
    }
    struct llama_context_params cp = p_llama_context_default_params();
    cp.n_ctx = (uint32_t)(depth + N_DECODE);
    cp.n_threads = cp.n_threads_batch = o->threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.type_k = cp.type_v = GGML_TYPE_F16;
    cp.no_perf = true;
    struct llama_context *ctx = p_llama_init_from_model(model, cp);
    if (!ctx) {
        printf("R status=error:context\n");
        return 1;
    }
    double t0 = lmk_clock_s(), c0 = cpu_s();
    for (int64_t i = 0; i < depth; i += cp.n_batch) {
        int32_t n = (int32_t)(depth - i < cp.n_batch ? depth - i : cp.n_batch);
        if (p_llama_decode(ctx, p_llama_batch_get_one(ids + i, n))) {
            printf("R status=error:decode\n");
            return 1;
        }
    }
    double t_prefill = lmk_clock_s() - t0, c_prefill = cpu_s() - c0;
    int n_vocab = p_llama_vocab_n_tokens(p_llama_model_get_vocab(model));
    const float *lg = p_llama_get_logits_ith(ctx, -1);
    if (!lg || !all_finite(lg, n_vocab)) {
        printf("R status=error:nonfinite\n");
        fprintf(stderr, "landmark-compare: llama.cpp's prefill logits are not finite\n");
        return 1;
    }
    t0 = lmk_clock_s();
    c0 = cpu_s();
    for (int i = 0; i < N_DECODE; i++)
        if (p_llama_decode(ctx, p_llama_batch_get_one(ids + depth + i, 1))) {
            printf("R status=error:decode\n");
            return 1;
        }
    double t_dec = lmk_clock_s() - t0, c_dec = cpu_s() - c0;
    lg = p_llama_get_logits_ith(ctx, -1);
    if (!lg || !all_finite(lg, n_vocab)) {
        printf("R status=error:nonfinite\n");
        fprintf(stderr, "landmark-compare: llama.cpp's decode logits are not finite\n");
        return 1;
    }
    printf("R status=ok prefill_tps=%.3f decode_tps=%.3f decode_none_tps=%.3f rss_mb=%.1f "
           "disk_mb=0 prefill_cpu=%.3f decode_cpu=%.3f\n",
           depth / t_prefill, N_DECODE / t_dec, N_DECODE / t_dec, peak_rss_mb(),
           depth / c_prefill, N_DECODE / c_dec);
    p_llama_free(ctx);
    p_llama_model_free(model);
    free(ids);
    return 0;
}

/* ---- the 1B-shaped random model (--model-1b) ---- */

#define M1B_NAME "landmark-random-llama-3.2-1b-shape"
#define M1B_SEED 20261130u
#define M1B_VERSION 1u /* bump when the generator changes: cached files are then remade */
#define M1B_LAYERS 16
#define M1B_EMBD 2048
#define M1B_HEADS 32
#define M1B_KV_HEADS 8
#define M1B_HEAD_DIM 64
#define M1B_FF 8192
#define M1B_STD 0.02f
#define M1B_TENSORS (3 + 9 * M1B_LAYERS)

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n (even) normal(0, sd) values for row `row` of tensor `ti` (Box-Muller over splitmix64
 * seeded by seed, tensor and row: the same values for any thread count). */
static void gauss_row(uint32_t ti, int64_t row, float sd, float *dst, int64_t n)
{
    uint64_t s = mix64(((uint64_t)M1B_SEED << 32) ^ ((uint64_t)ti << 24) ^ (uint64_t)row);
    for (int64_t i = 0; i < n; i += 2) {
        uint64_t a = mix64(s += 0x9e3779b97f4a7c15ull), b = mix64(s += 0x9e3779b97f4a7c15ull);
        float u1 = ((float)(a >> 40) + 0.5f) * (1.0f / 16777216.0f); /* (0, 1) */
        float u2 = (float)(b >> 40) * (1.0f / 16777216.0f);
        float r = sd * sqrtf(-2.0f * logf(u1)), th = 6.28318530718f * u2;
        dst[i] = r * cosf(th);
        dst[i + 1] = r * sinf(th);
    }
}

/* llama3 rope frequency factors as llama.cpp's converter writes them (rope_freqs.weight):
 * factor 32, low/high frequency factors 1 and 4, original context 8192. */
static void llama3_freq_factors(float *ff, int head_dim, double base)
{
    const double factor = 32, lo = 1, hi = 4, old_ctx = 8192;
    double lo_wl = old_ctx / lo, hi_wl = old_ctx / hi;
    for (int i = 0; i < head_dim / 2; i++) {
        double freq = 1.0 / pow(base, 2.0 * i / head_dim), wl = 2 * M_PI / freq;
        if (wl < hi_wl)
            ff[i] = 1.0f;
        else if (wl > lo_wl)
            ff[i] = (float)factor;
        else {
            double sm = (old_ctx / wl - lo) / (hi - lo);
            ff[i] = (float)(1.0 / ((1 - sm) / factor + sm));
        }
    }
}

/* Copy every tokenizer.* key of the GGUF file `vocab` into w. */
static int copy_tokenizer(lmk_gguf_writer *w, const char *vocab)
{
    char err[256];
    lmk_gguf *g = NULL;
    if (lmk_gguf_open(vocab, &g, err, sizeof err)) {
        fprintf(stderr, "landmark-compare: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (int64_t k = 0; k < lmk_gguf_n_kv(g) && !rc; k++) {
        const char *key = lmk_gguf_key_name(g, k);
        if (strncmp(key, "tokenizer.", 10))
            continue;
        lmk_gguf_type et;
        uint64_t n = 0, len;
        const char *str;
        int type = lmk_gguf_key_type(g, k, &et, &n);
        if (type == LMK_GGUF_STRING) {
            rc = lmk_gguf_get_str(g, key, &str, &len);
            char *z = rc ? NULL : strndup(str, len);
            rc = z ? lmk_gguf_writer_add_str(w, key, z) : ENOMEM;
            free(z);
        } else if (type == LMK_GGUF_U32) {
            uint32_t v = 0;
            rc = lmk_gguf_get_u32(g, key, &v);
            rc = rc ? rc : lmk_gguf_writer_add_u32(w, key, v);
        } else if (type == LMK_GGUF_BOOL) {
            int v = 0;
            rc = lmk_gguf_get_bool(g, key, &v);
            rc = rc ? rc : lmk_gguf_writer_add_bool(w, key, v);
        } else if (type == LMK_GGUF_F32) {
            float v = 0;
            rc = lmk_gguf_get_f32(g, key, &v);
            rc = rc ? rc : lmk_gguf_writer_add_f32(w, key, v);
        } else if (type == LMK_GGUF_ARRAY && et == LMK_GGUF_STRING) {
            char **v = calloc(n ? n : 1, sizeof *v);
            rc = v ? 0 : ENOMEM;
            for (uint64_t i = 0; i < n && !rc; i++) {
                rc = lmk_gguf_get_arr_str(g, key, i, &str, &len);
                if (!rc && !(v[i] = strndup(str, len)))
                    rc = ENOMEM;
            }
            if (!rc)
                rc = lmk_gguf_writer_add_array(w, key, LMK_GGUF_STRING, n, v);
            for (uint64_t i = 0; v && i < n; i++)
                free(v[i]);
            free(v);
        } else if (type == LMK_GGUF_ARRAY) {
            const void *data;
            rc = lmk_gguf_get_array(g, key, &et, &n, &data);
            rc = rc ? rc : lmk_gguf_writer_add_array(w, key, et, n, data);
        } else {
            fprintf(stderr, "landmark-compare: %s: key %s has a type this copy does not handle\n",
                    vocab, key);
            rc = LMK_EFORMAT;
        }
    }
    if (rc)
        fprintf(stderr, "landmark-compare: copying the vocabulary of %s: %s\n", vocab,
                lmk_strerror(rc));
    lmk_gguf_close(g);
    return rc ? 1 : 0;
}

/* The F16 model, streamed: only one piece of rows is ever in memory. */
static int write_1b_f16(const char *path, const char *vocab, int threads)
{
    lmk_gguf_writer *w = NULL;
    if (lmk_gguf_writer_new(&w))
        return 1;
    int rc = 0;
#define W(call)                                                                           \
    if (!rc && (rc = (call)) != 0)                                                        \
        fprintf(stderr, "landmark-compare: %s: %s\n", #call, lmk_strerror(rc));
    W(lmk_gguf_writer_add_str(w, "general.architecture", "llama"))
    W(lmk_gguf_writer_add_str(w, "general.name", M1B_NAME))
    W(lmk_gguf_writer_add_u32(w, "general.file_type", LLAMA_FTYPE_MOSTLY_F16))
    W(lmk_gguf_writer_add_u32(w, "landmark.random_seed", M1B_SEED))
    W(lmk_gguf_writer_add_u32(w, "landmark.random_version", M1B_VERSION))
    W(lmk_gguf_writer_add_u32(w, "llama.block_count", M1B_LAYERS))
    W(lmk_gguf_writer_add_u32(w, "llama.context_length", 131072))
    W(lmk_gguf_writer_add_u32(w, "llama.embedding_length", M1B_EMBD))
    W(lmk_gguf_writer_add_u32(w, "llama.feed_forward_length", M1B_FF))
    W(lmk_gguf_writer_add_u32(w, "llama.attention.head_count", M1B_HEADS))
    W(lmk_gguf_writer_add_u32(w, "llama.attention.head_count_kv", M1B_KV_HEADS))
    W(lmk_gguf_writer_add_f32(w, "llama.rope.freq_base", 500000.0f))
    W(lmk_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f))
    W(lmk_gguf_writer_add_u32(w, "llama.attention.key_length", M1B_HEAD_DIM))
    W(lmk_gguf_writer_add_u32(w, "llama.attention.value_length", M1B_HEAD_DIM))
    W(lmk_gguf_writer_add_u32(w, "llama.rope.dimension_count", M1B_HEAD_DIM))
    if (!rc && copy_tokenizer(w, vocab))
        rc = LMK_EFORMAT;
    uint32_t n_vocab = 0;
    {
        char err[256];
        lmk_gguf *g = NULL;
        uint64_t n = 0;
        if (!rc && !lmk_gguf_open(vocab, &g, err, sizeof err)) {
            lmk_gguf_key_type(g, lmk_gguf_find_key(g, "tokenizer.ggml.tokens"), NULL, &n);
            lmk_gguf_close(g);
        }
        n_vocab = (uint32_t)n;
    }
    if (!rc && n_vocab == 0)
        rc = LMK_EFORMAT;
    W(lmk_gguf_writer_add_u32(w, "llama.vocab_size", n_vocab))

    /* tensors: (name, cols, rows); rows > 1 streamed as F16, vectors F32 with their data */
    typedef struct {
        char name[48];
        int64_t cols, rows;
    } tdesc;
    tdesc td[M1B_TENSORS];
    int nt = 0;
    td[nt++] = (tdesc){"token_embd.weight", M1B_EMBD, n_vocab};
    td[nt++] = (tdesc){"rope_freqs.weight", M1B_HEAD_DIM / 2, 1};
    for (int l = 0; l < M1B_LAYERS; l++) {
        const struct {
            const char *n;
            int64_t c, r;
        } per[9] = {{"attn_norm", M1B_EMBD, 1},
                    {"attn_q", M1B_EMBD, M1B_HEADS * M1B_HEAD_DIM},
                    {"attn_k", M1B_EMBD, M1B_KV_HEADS * M1B_HEAD_DIM},
                    {"attn_v", M1B_EMBD, M1B_KV_HEADS * M1B_HEAD_DIM},
                    {"attn_output", M1B_HEADS * M1B_HEAD_DIM, M1B_EMBD},
                    {"ffn_norm", M1B_EMBD, 1},
                    {"ffn_gate", M1B_EMBD, M1B_FF},
                    {"ffn_up", M1B_EMBD, M1B_FF},
                    {"ffn_down", M1B_FF, M1B_EMBD}};
        for (int j = 0; j < 9; j++) {
            snprintf(td[nt].name, sizeof td[nt].name, "blk.%d.%s.weight", l, per[j].n);
            td[nt].cols = per[j].c;
            td[nt].rows = per[j].r;
            nt++;
        }
    }
    td[nt++] = (tdesc){"output_norm.weight", M1B_EMBD, 1};
    float ff[M1B_HEAD_DIM / 2], ones[M1B_FF];
    llama3_freq_factors(ff, M1B_HEAD_DIM, 500000.0);
    for (int i = 0; i < M1B_FF; i++)
        ones[i] = 1.0f;
    for (int i = 0; i < nt && !rc; i++) {
        int64_t dims[2] = {td[i].cols, td[i].rows};
        if (td[i].rows > 1)
            rc = lmk_gguf_writer_declare(w, td[i].name, 2, dims, LMK_GGML_F16);
        else
            rc = lmk_gguf_writer_add_tensor(w, td[i].name, 1, dims, LMK_GGML_F32,
                                            !strcmp(td[i].name, "rope_freqs.weight") ? ff : ones);
    }
    W(lmk_gguf_writer_stream_open(w, path))
    enum { PIECE = 64 };
    float *buf = malloc((size_t)PIECE * M1B_FF * sizeof *buf);
    if (!buf && !rc)
        rc = ENOMEM;
    for (int i = 0; i < nt && !rc; i++) {
        if (td[i].rows == 1)
            continue;
        for (int64_t r0 = 0; r0 < td[i].rows && !rc; r0 += PIECE) {
            int64_t nr = td[i].rows - r0 < PIECE ? td[i].rows - r0 : PIECE;
#pragma omp parallel for num_threads(threads) schedule(static)
            for (int64_t r = 0; r < nr; r++)
                gauss_row((uint32_t)i, r0 + r, M1B_STD, buf + r * td[i].cols, td[i].cols);
            rc = lmk_gguf_writer_stream_rows(w, buf, nr);
        }
    }
    free(buf);
    if (w && !rc)
        rc = lmk_gguf_writer_stream_close(w);
    if (rc)
        fprintf(stderr, "landmark-compare: writing %s: %s\n", path, lmk_strerror(rc));
    lmk_gguf_writer_free(w);
#undef W
    return rc ? 1 : 0;
}

/* A cached model is valid when it opens (the reader checks every tensor's extent against
 * the file), is this generator's version and seed, has the tensors and the file type. */
static int model_1b_valid(const char *path, uint32_t file_type)
{
    char err[256];
    lmk_gguf *g = NULL;
    if (access(path, R_OK) || lmk_gguf_open(path, &g, err, sizeof err))
        return 0;
    char name[128] = "";
    uint32_t seed = 0, ver = 0, ft = 0;
    int ok = lmk_gguf_get_strz(g, "general.name", name, sizeof name) == 0 &&
             !strcmp(name, M1B_NAME) && lmk_gguf_get_u32(g, "landmark.random_seed", &seed) == 0 &&
             seed == M1B_SEED && lmk_gguf_get_u32(g, "landmark.random_version", &ver) == 0 &&
             ver == M1B_VERSION && lmk_gguf_get_u32(g, "general.file_type", &ft) == 0 &&
             ft == file_type && lmk_gguf_n_tensors(g) == M1B_TENSORS &&
             lmk_gguf_find_tensor(g, "token_embd.weight") &&
             !lmk_gguf_find_tensor(g, "output.weight");
    lmk_gguf_close(g);
    return ok;
}

/* llama.cpp's quantizer, from the fetched libllama. */
static int quantize_q4_k_m(const char *in, const char *out, const char *libdir, int threads)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/libggml.v0.4.0.so", libdir);
    void *gl = dlopen(p, RTLD_NOW | RTLD_GLOBAL);
    snprintf(p, sizeof p, "%s/libllama.v0.4.0.so", libdir);
    void *ll = gl ? dlopen(p, RTLD_NOW | RTLD_GLOBAL) : NULL;
    if (!ll) {
        fprintf(stderr, "landmark-compare: %s\n", dlerror());
        return 1;
    }
    SYM(gl, ggml_backend_load_all_from_path)
    SYM(ll, llama_log_set)
    SYM(ll, llama_backend_init)
    SYM(ll, llama_model_quantize_default_params)
    SYM(ll, llama_model_quantize)
    p_llama_log_set(quiet_log, NULL);
    p_ggml_backend_load_all_from_path(libdir);
    p_llama_backend_init();
    struct llama_model_quantize_params qp = p_llama_model_quantize_default_params();
    qp.nthread = threads;
    qp.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M;
    if (p_llama_model_quantize(in, out, &qp)) {
        fprintf(stderr, "landmark-compare: llama_model_quantize %s -> %s failed\n", in, out);
        return 1;
    }
    return 0;
}

/* Make (or reuse) DIR/random-1b-f16.gguf and DIR/random-1b-q4_k_m.gguf; the Q4_K_M path in
 * q4 (cap bytes). Each is written under a temporary name and renamed when complete. The work
 * runs in a forked process so that the parent's peak RSS stays its own. */
static int ensure_model_1b(const opts *o, const char *dir, char *q4, size_t cap)
{
    char f16[4300], tmp[4400];
    snprintf(f16, sizeof f16, "%s/random-1b-f16.gguf", dir);
    snprintf(q4, cap, "%s/random-1b-q4_k_m.gguf", dir);
    if (model_1b_valid(q4, LLAMA_FTYPE_MOSTLY_Q4_K_M))
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        const char *libdir = o->lib ? o->lib : LMK_LLAMA_REF "/lib";
        int rc = 0;
        if (!model_1b_valid(f16, LLAMA_FTYPE_MOSTLY_F16)) {
            double t0 = lmk_clock_s();
            snprintf(tmp, sizeof tmp, "%s.partial", f16);
            fprintf(stderr, "landmark-compare: writing %s (random weights, seed %u)\n", f16,
                    M1B_SEED);
            rc = write_1b_f16(tmp, LMK_LLAMA_REF "/src/models/ggml-vocab-llama-bpe.gguf",
                              o->threads);
            if (!rc && rename(tmp, f16))
                rc = 1;
            if (rc)
                unlink(tmp);
            else
                fprintf(stderr, "landmark-compare: %s written in %.0f s\n", f16, lmk_clock_s() - t0);
        }
        if (!rc) {
            double t0 = lmk_clock_s();
            snprintf(tmp, sizeof tmp, "%s.partial", q4);
            fprintf(stderr, "landmark-compare: quantizing to %s with llama.cpp\n", q4);
            rc = quantize_q4_k_m(f16, tmp, libdir, o->threads);
            if (!rc && rename(tmp, q4))
                rc = 1;
            if (rc)
                unlink(tmp);
            else
                fprintf(stderr, "landmark-compare: %s written in %.0f s\n", q4, lmk_clock_s() - t0);
        }
        _exit(rc ? 1 : 0);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) || !model_1b_valid(q4, LLAMA_FTYPE_MOSTLY_Q4_K_M)) {
        fprintf(stderr, "landmark-compare: could not make the 1B-shaped model in %s\n", dir);
        return 1;
    }
    return 0;
}

/* ---- the parent ---- */

typedef struct {
    int n_layers, n_kv_heads, head_dim, block_len, top_k, n_recent, n_heads;
    double weight_bytes;
} shape;

static int read_shape(const char *path, shape *sh)
{
    char err[256], arch[64], key[128];
    lmk_gguf *g = NULL;
    if (lmk_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "landmark-compare: %s\n", err);
        return 1;
    }
    uint32_t nl = 0, nkv = 0, nh = 0, emb = 0, mf = 0;
    lmk_gguf_get_strz(g, "general.architecture", arch, sizeof arch);
    snprintf(key, sizeof key, "%s.block_count", arch);
    lmk_gguf_get_u32(g, key, &nl);
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    lmk_gguf_get_u32(g, key, &nh);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (lmk_gguf_get_u32(g, key, &nkv))
        nkv = nh;
    snprintf(key, sizeof key, "%s.embedding_length", arch);
    lmk_gguf_get_u32(g, key, &emb);
    int is_lmk = lmk_gguf_get_u32(g, "landmark.mem_freq", &mf) == 0 && mf > 0;
    lmk_gguf_close(g);
    struct stat st;
    stat(path, &st);
    sh->n_layers = (int)nl;
    sh->n_heads = (int)nh;
    sh->n_kv_heads = (int)nkv;
    sh->head_dim = nh ? (int)(emb / nh) : 0;
    sh->block_len = is_lmk ? (int)mf + 1 : 64;
    sh->top_k = 4;
    sh->n_recent = is_lmk ? 2 : 0;
    sh->weight_bytes = (double)st.st_size;
    return 0;
}

static double bound_tps(const shape *sh, const opts *o, const char *engine, int64_t depth,
                        double bw)
{
    double bytes = sh->weight_bytes;
    double kvdim = (double)sh->n_kv_heads * sh->head_dim;
    if (!strcmp(engine, "landmark")) {
        double blocks = (double)depth / (sh->block_len - (sh->n_recent ? 1 : 0));
        /* an IVF index's share of landmarks scanned; specs the bench does not model are
         * counted as a full scan */
        double scanned = lmk_bench_landmarks_scanned(o->index_spec ? o->index_spec : "Flat",
                                                     o->nprobe, blocks);
        if (isnan(scanned))
            scanned = blocks;
        double fetched = (double)sh->n_heads * sh->top_k + sh->n_kv_heads * (sh->n_recent + 1);
        if (fetched * sh->block_len > depth * (double)sh->n_kv_heads)
            fetched = blocks * sh->n_kv_heads;
        bytes += sh->n_layers * (scanned * kvdim * 4 + fetched * sh->block_len * sh->head_dim * 4);
    } else {
        bytes += sh->n_layers * (double)depth * kvdim * 4; /* K and V, f16 */
    }
    return bw / bytes;
}

static int run_child(const char *self, const opts *o, const char *engine, int64_t depth, row *r)
{
    char dstr[32], tstr[16];
    snprintf(dstr, sizeof dstr, "%lld", (long long)depth);
    snprintf(tstr, sizeof tstr, "%d", o->threads);
    const char *argv[20];
    int k = 0;
    argv[k++] = self;
    argv[k++] = "--child";
    argv[k++] = engine;
    argv[k++] = dstr;
    argv[k++] = "--model";
    argv[k++] = o->model;
    argv[k++] = "--workdir";
    argv[k++] = o->workdir;
    argv[k++] = "-t";
    argv[k++] = tstr;
    char npstr[16];
    if (o->lib) {
        argv[k++] = "--lib";
        argv[k++] = o->lib;
    }
    if (o->index_spec) {
        argv[k++] = "--index";
        argv[k++] = o->index_spec;
    }
    if (o->nprobe > 0) {
        snprintf(npstr, sizeof npstr, "%d", o->nprobe);
        argv[k++] = "--nprobe";
        argv[k++] = npstr;
    }
    argv[k] = NULL;
    int fd[2];
    if (pipe(fd))
        return errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    double t0 = lmk_clock_s();
    int rc = posix_spawn(&pid, self, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc) {
        close(fd[0]);
        return rc;
    }
    FILE *f = fdopen(fd[0], "r");
    char line[1024];
    snprintf(r->status, sizeof r->status, "no result");
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "R ", 2)) {
            char st[32] = "";
            sscanf(line, "R status=%31s prefill_tps=%lf decode_tps=%lf decode_none_tps=%lf "
                         "rss_mb=%lf disk_mb=%lf prefill_cpu=%lf decode_cpu=%lf",
                   st, &r->prefill_tps, &r->decode_tps, &r->decode_none_tps, &r->rss_mb,
                   &r->disk_mb, &r->prefill_cpu, &r->decode_cpu);
            snprintf(r->status, sizeof r->status, "%s", st);
        }
    fclose(f);
    int ws = 0;
    waitpid(pid, &ws, 0);
    r->seconds = lmk_clock_s() - t0;
    if (WIFSIGNALED(ws))
        snprintf(r->status, sizeof r->status, WTERMSIG(ws) == SIGALRM ? "timeout %ds" : "signal %d",
                 WTERMSIG(ws) == SIGALRM ? o->time_limit : WTERMSIG(ws));
    return 0;
}

static int write_tokens(const opts *o, int64_t n)
{
    char err[256], p[4096];
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids)
        return ENOMEM;
    lmk_gguf *g = NULL;
    lmk_tokenizer *t = NULL;
    int rc = lmk_gguf_open(o->model, &g, err, sizeof err);
    if (!rc)
        rc = lmk_tokenizer_from_gguf(g, &t, err, sizeof err);
    if (rc) {
        fprintf(stderr, "landmark-compare: %s\n", err);
        return rc;
    }
    int64_t have = 0;
    if (o->text) {
        FILE *f = fopen(o->text, "rb");
        if (!f) {
            fprintf(stderr, "landmark-compare: cannot open %s\n", o->text);
            return errno;
        }
        size_t cap = 1 << 20;
        char *buf = malloc(cap);
        int32_t *tmp = malloc(lmk_tokenizer_max_tokens(cap) * sizeof *tmp);
        while (have < n) {
            size_t got = fread(buf, 1, cap, f);
            if (got == 0) {
                rewind(f);
                continue;
            }
            size_t nt = 0;
            if ((rc = lmk_tokenizer_encode(t, buf, got, have == 0, tmp, &nt)))
                return rc;
            for (size_t i = 0; i < nt && have < n; i++)
                ids[have++] = tmp[i];
        }
        free(tmp);
        free(buf);
        fclose(f);
    } else {
        /* random ids below the first special token: a fixed seed */
        uint64_t s = 42;
        int nv = lmk_tokenizer_n_vocab(t);
        int lim = nv > 128000 ? 128000 : nv;
        for (; have < n; have++) {
            s += 0x9e3779b97f4a7c15ull;
            uint64_t z = s;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            ids[have] = (int32_t)((z ^ (z >> 31)) % (uint64_t)lim);
        }
    }
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    snprintf(p, sizeof p, "%s/tokens.bin", o->workdir);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(ids, sizeof *ids, (size_t)n, f) != (size_t)n || fclose(f)) {
        fprintf(stderr, "landmark-compare: cannot write %s\n", p);
        return EIO;
    }
    free(ids);
    return 0;
}

static void plot(const opts *o, const row *rows, int n)
{
    char data[4096], script[4096];
    snprintf(data, sizeof data, "%s/compare.dat", o->workdir);
    snprintf(script, sizeof script, "%s/compare.gp", o->workdir);
    FILE *f = fopen(data, "w");
    if (!f)
        return;
    const char *eng[2] = {"landmark", "llama.cpp"};
    for (int e = 0; e < 2; e++) {
        fprintf(f, "# %s\n", eng[e]);
        for (int i = 0; i < n; i++)
            if (!strcmp(rows[i].engine, eng[e]) && !strcmp(rows[i].status, "ok"))
                fprintf(f, "%lld %g %g\n", (long long)rows[i].depth, rows[i].prefill_tps,
                        rows[i].decode_tps);
        fprintf(f, "\n\n");
    }
    fclose(f);
    f = fopen(script, "w");
    if (!f)
        return;
    fprintf(f,
            "set terminal pngcairo size 900,600\nset output '%s'\nset logscale xy\n"
            "set xlabel 'context depth (tokens)'\nset ylabel 'tokens/s'\nset key outside\n"
            "set title 'landmark vs llama.cpp, %d threads'\n"
            "plot '%s' index 0 using 1:2 with linespoints title 'landmark prefill', "
            "'' index 0 using 1:3 with linespoints title 'landmark decode', "
            "'' index 1 using 1:2 with linespoints title 'llama.cpp prefill', "
            "'' index 1 using 1:3 with linespoints title 'llama.cpp decode'\n",
            o->plot, o->threads, data);
    fclose(f);
    char *argv[] = {"gnuplot", script, NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ)) {
        fprintf(stderr, "landmark-compare: gnuplot not found; data in %s\n", data);
        return;
    }
    int ws;
    waitpid(pid, &ws, 0);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: landmark-compare (--model GGUF | --model-1b [--model-dir DIR] [--make-only])\n"
            "         [--depths 1k,4k,16k,64k] [-t N] [--text FILE] [--engines landmark,llama]\n"
            "         [--time-limit S] [--workdir DIR] [--json FILE] [--plot FILE.png] [--lib DIR]\n"
            "         [--index SPEC] [--nprobe N] [--llama-max DEPTH]\n"
            "Without --text the tokens are random ids (fixed seed).\n"
            "--index, --nprobe: landmark's FAISS index spec (default Flat) and IVF nprobe, for\n"
            "  the prefill and the decode; the bound column counts an IVF index's share scanned.\n"
            "--llama-max: run llama.cpp only up to this depth (its prefill grows with the square\n"
            "  of the depth; a skipped row says so).\n"
            "--model-1b: a random-weight model shaped like Llama-3.2-1B (16 layers, width 2048,\n"
            "  32/8 heads of 64, FFN 8192, tied embeddings, rope base 500000 with llama3 factors,\n"
            "  llama.cpp's llama-bpe vocabulary), written as F16 by a streaming writer and\n"
            "  quantized to Q4_K_M by llama.cpp's llama_model_quantize, both cached in --model-dir\n"
            "  (default: this program's directory) and reused while valid (about 3.3 GB).\n"
            "  --make-only stops once the model is there.\n");
}

int main(int argc, char **argv)
{
    opts o = {.workdir = "compare-work", .threads = 2, .time_limit = 900, .run_landmark = 1,
              .run_llama = 1};
    const char *child = NULL;
    int64_t child_depth = 0;
    const char *depths = "1k,4k,16k,64k";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--child") && v && i + 2 < argc)
            child = v, child_depth = parse_count(argv[i + 2]), i += 2;
        else if (!strcmp(a, "--model") && v)
            o.model = v, i++;
        else if (!strcmp(a, "--text") && v)
            o.text = v, i++;
        else if (!strcmp(a, "--depths") && v)
            depths = v, i++;
        else if (!strcmp(a, "-t") && v)
            o.threads = atoi(v), i++;
        else if (!strcmp(a, "--time-limit") && v)
            o.time_limit = atoi(v), i++;
        else if (!strcmp(a, "--workdir") && v)
            o.workdir = v, i++;
        else if (!strcmp(a, "--json") && v)
            o.json = v, i++;
        else if (!strcmp(a, "--plot") && v)
            o.plot = v, i++;
        else if (!strcmp(a, "--lib") && v)
            o.lib = v, i++;
        else if (!strcmp(a, "--index") && v)
            o.index_spec = v, i++;
        else if (!strcmp(a, "--nprobe") && v && atoi(v) > 0)
            o.nprobe = atoi(v), i++;
        else if (!strcmp(a, "--llama-max") && v && parse_count(v) > 0)
            o.llama_max = parse_count(v), i++;
        else if (!strcmp(a, "--model-1b"))
            o.model_1b = 1;
        else if (!strcmp(a, "--model-dir") && v)
            o.model_dir = v, i++;
        else if (!strcmp(a, "--make-only"))
            o.make_only = 1;
        else if (!strcmp(a, "--engines") && v) {
            o.run_landmark = strstr(v, "landmark") != NULL;
            o.run_llama = strstr(v, "llama") != NULL;
            i++;
        } else {
            usage();
            return 2;
        }
    }
    if ((!o.model == !o.model_1b && !child) || o.threads < 1) {
        usage();
        return 2;
    }
    if (child) {
        openblas_set_num_threads(1);
        if (o.time_limit > 0)
            alarm((unsigned)o.time_limit);
        if (!strcmp(child, "landmark"))
            return lmk_child(&o, child_depth);
        return llama_child(&o, child_depth);
    }
    if (!getenv("OMP_WAIT_POLICY"))
        setenv("OMP_WAIT_POLICY", "passive", 1);
    char self[4096], q4[4300];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        return 1;
    self[sl] = 0;
    if (o.model_1b) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", o.model_dir ? o.model_dir : self);
        if (!o.model_dir && strrchr(dir, '/'))
            *strrchr(dir, '/') = 0;
        if (ensure_model_1b(&o, dir, q4, sizeof q4))
            return 1;
        o.model = q4;
        fprintf(stderr, "landmark-compare: model %s\n", q4);
        if (o.make_only)
            return 0;
    }
    char *dl = strdup(depths);
    for (char *tok = strtok(dl, ","); tok; tok = strtok(NULL, ",")) {
        int64_t d = parse_count(tok);
        if (d < 1 || o.n_depths == MAX_DEPTHS) {
            fprintf(stderr, "landmark-compare: bad depth '%s'\n", tok);
            return 2;
        }
        o.depths[o.n_depths++] = d;
    }
    free(dl);
    mkdir(o.workdir, 0777);
    int64_t max_depth = 0;
    for (int i = 0; i < o.n_depths; i++)
        if (o.depths[i] > max_depth)
            max_depth = o.depths[i];
    shape sh;
    if (read_shape(o.model, &sh) || write_tokens(&o, max_depth + N_DECODE))
        return 1;
    double avail = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);

    fprintf(stderr, "landmark-compare: %s, %d threads, time limit %d s, landmark index %s",
            o.model, o.threads, o.time_limit, o.index_spec ? o.index_spec : "Flat");
    if (o.nprobe > 0)
        fprintf(stderr, " nprobe %d", o.nprobe);
    fprintf(stderr, "\n");
    row rows[2 * MAX_DEPTHS];
    int n = 0;
    for (int i = 0; i < o.n_depths; i++)
        for (int e = 0; e < 2; e++) {
            if ((e == 0 && !o.run_landmark) || (e == 1 && !o.run_llama))
                continue;
            row *r = &rows[n++];
            memset(r, 0, sizeof *r);
            snprintf(r->engine, sizeof r->engine, "%s", e ? "llama.cpp" : "landmark");
            r->depth = o.depths[i];
            double kv = 2.0 * sh.n_layers * sh.n_kv_heads * sh.head_dim * 2.0 *
                        (double)(r->depth + N_DECODE);
            if (e == 1 && o.llama_max > 0 && r->depth > o.llama_max) {
                snprintf(r->status, sizeof r->status, "skip: over --llama-max");
            } else if (e == 1 && kv > avail / 2) {
                snprintf(r->status, sizeof r->status, "skip: KV %.1f GB", kv / 1e9);
            } else if (run_child(self, &o, e ? "llama" : "landmark", r->depth, r)) {
                snprintf(r->status, sizeof r->status, "spawn failed");
            }
            if (e == 1)
                r->disk_mb = kv / 1048576.0;
            fprintf(stderr, "  %-9s %8lld  %s  prefill %.1f tok/s  decode %.1f tok/s (%.0f s)\n",
                    r->engine, (long long)r->depth, r->status, r->prefill_tps, r->decode_tps,
                    r->seconds);
        }

    /* measured after the children: ru_maxrss survives exec, so the parent stays small */
    double bw = lmk_bench_read_bandwidth(o.threads);
    printf("read bandwidth %.2f GB/s (%d thread%s, 256 MiB, best of 3)\n", bw / 1e9, o.threads,
           o.threads == 1 ? "" : "s");
    for (int i = 0; i < n; i++)
        rows[i].bound_tps = bound_tps(&sh, &o, strcmp(rows[i].engine, "landmark") ? "llama" : "landmark",
                                      rows[i].depth, bw);
    printf("| engine | depth | prefill tok/s | decode tok/s | decode none+sync tok/s | bound tok/s "
           "| prefill tok/cpu-s | decode tok/cpu-s | peak RSS MB | session / KV MB | status |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        char none[32] = "-";
        if (!strcmp(r->engine, "landmark"))
            snprintf(none, sizeof none, "%.1f", r->decode_none_tps);
        if (strcmp(r->status, "ok")) { /* skipped, killed or failed: nothing measured */
            printf("| %s | %lld | | | %s | %.*f | | | | %.1f | %s |\n", r->engine,
                   (long long)r->depth, strcmp(r->engine, "landmark") ? "-" : "",
                   r->bound_tps < 100 ? 1 : 0, r->bound_tps, r->disk_mb, r->status);
            continue;
        }
        /* one decimal under 100 (a 1B model prefills tens of tokens a second here) */
        printf("| %s | %lld | %.*f | %.1f | %s | %.*f | %.*f | %.1f | %.0f | %.1f | %s |\n",
               r->engine, (long long)r->depth, r->prefill_tps < 100 ? 1 : 0, r->prefill_tps,
               r->decode_tps, none, r->bound_tps < 100 ? 1 : 0, r->bound_tps,
               r->prefill_cpu < 100 ? 1 : 0, r->prefill_cpu, r->decode_cpu, r->rss_mb, r->disk_mb,
               r->status);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (rows[i].depth == rows[j].depth && !strcmp(rows[i].engine, "landmark") &&
                !strcmp(rows[j].engine, "llama.cpp") && !strcmp(rows[i].status, "ok") &&
                !strcmp(rows[j].status, "ok"))
                printf("depth %lld: landmark/llama.cpp prefill %.2fx, decode %.2fx (per CPU second: "
                       "prefill %.2fx, decode %.2fx)\n",
                       (long long)rows[i].depth, rows[i].prefill_tps / rows[j].prefill_tps,
                       rows[i].decode_tps / rows[j].decode_tps,
                       rows[i].prefill_cpu / rows[j].prefill_cpu,
                       rows[i].decode_cpu / rows[j].decode_cpu);
    if (o.json) {
        FILE *f = fopen(o.json, "w");
        if (!f) {
            fprintf(stderr, "landmark-compare: cannot write %s\n", o.json);
            return 1;
        }
        fprintf(f, "{\"model\":\"%s\",\"threads\":%d,\"read_bandwidth_gbs\":%.2f,\"time_limit_s\":%d,"
                   "\"n_decode\":%d,\"landmark_index\":\"%s\",\"nprobe\":%d,\"rows\":[",
                o.model, o.threads, bw / 1e9, o.time_limit, N_DECODE,
                o.index_spec ? o.index_spec : "Flat", o.nprobe);
        for (int i = 0; i < n; i++) {
            const row *r = &rows[i];
            fprintf(f, "%s\n{\"engine\":\"%s\",\"depth\":%lld,\"status\":\"%s\",\"prefill_tps\":%.3f,"
                       "\"decode_tps\":%.3f,\"decode_none_tps\":%.3f,\"bound_tps\":%.1f,"
                       "\"prefill_tok_per_cpu_s\":%.3f,\"decode_tok_per_cpu_s\":%.3f,"
                       "\"peak_rss_mb\":%.1f,\"bytes_mb\":%.2f,\"seconds\":%.2f}",
                    i ? "," : "", r->engine, (long long)r->depth, r->status, r->prefill_tps,
                    r->decode_tps, r->decode_none_tps, r->bound_tps, r->prefill_cpu, r->decode_cpu,
                    r->rss_mb, r->disk_mb, r->seconds);
        }
        fprintf(f, "]}\n");
        fclose(f);
    }
    if (o.plot)
        plot(&o, rows, n);
    return 0;
}
