/* landmark run | passkey | perplexity: GGUF models over landmark sessions.
 *
 * run: a persistent session per document. Beside the engine's files the session directory
 * holds model-run.txt (the model path and the settings the session is run with) and
 * model-run.logits (the prediction after its last token), so that a later run with only
 * --session and --prompt continues without the document. */
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "opt.h"
#include "lmk_model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

/* ---- options shared by the three commands ---- */

typedef struct {
    const char *cmd;
    const char *model, *session, *file, *prompt, *haystack, *index, *workdir, *depths, *record;
    long long generate, tokens, trials, chunk, dense_max, piece;
    int top_k, recent, sink, local, block_len, threads, json, mem_freq, lm_token;
    long long fixed_distance;
    double temp;
    unsigned long long seed;
    int pos, mode, next_from, prefill_chunkwise, dtype, retrieve, durability;
    /* which were given on the command line */
    int g_generate, g_top_k, g_recent, g_sink, g_local, g_pos, g_mode, g_next, g_fixed;
    lmk_opt_repr repr; /* block representative of new sessions of ordinary models */
} run_opts;

static void opts_init(run_opts *o, const char *cmd)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o->threads < 1)
        o->threads = 1;
    o->top_k = 4;
    o->block_len = 64;
    o->mem_freq = -1;
    o->lm_token = -1;
    o->seed = 42;
    o->chunk = 256;
    o->trials = 10;
    o->dense_max = 16384;
    o->pos = -1;
    o->mode = -1;
    o->next_from = LMK_NEXT_FROM_LANDMARK;
    o->prefill_chunkwise = 1;
    o->dtype = LMK_DTYPE_F16;
    o->retrieve = LMK_RETRIEVE_QHEAD;
    o->durability = LMK_DURABLE_NOMETA;
    o->index = "Flat";
}

static const char k_common_help[] =
    "model and retrieval options:\n"
    "  --model M.gguf        the model (llama/mistral; F32, F16, BF16, Q8_0, Q4_0 tensors)\n"
    "  --top-k K             blocks retrieved per query and head (default 4; 'all')\n"
    "  --recent R            most recent blocks always kept (default: 2 for landmark models)\n"
    "  --mode grouped|union  softmax (default: grouped for landmark models, else union)\n"
    "  --pos slots|original|fixed   positions of retrieved blocks (default: slots for\n"
    "                        landmark models, fixed for ordinary ones)\n"
    "  --fixed-distance D    distance of retrieved tokens under --pos fixed (default: --local)\n"
    "  --sink N              first N tokens always attended (ordinary models, default 4)\n"
    "  --local N             recent tokens attended directly (ordinary models, default\n"
    "                        min(4096, trained context / 2))\n"
    "  --block-len L         block length for ordinary models (default 64)\n"
    "  --repr NAME[:R]       block representative of new sessions of ordinary models: mean,\n"
    "                        keys (every key indexed), attn[:R] (InfLLM), query[:R]\n"
    "                        (query-aware), outlier[:R] (mean + outlying keys); R default 4\n"
    "  --mem-freq N          regular tokens per landmark block (overrides landmark.mem_freq;\n"
    "                        0 runs a landmark model as an ordinary one)\n"
    "  --landmark-token ID   overrides landmark.token_id\n"
    "  --next-from landmark|regular   what predicts the token after a full block (default:\n"
    "                        the landmark, as the reference generation does)\n"
    "  --retrieve qhead|kvhead   per-token retrieval (decoding, questions; default qhead)\n"
    "  --prefill-retrieve chunk|token   document prefill: one block set per chunk and head\n"
    "                        ranked by the chunk's best score (default), or per token\n"
    "  --chunk N             positions per prefill step (default 256)\n"
    "  --piece N             tokens between interrupt checks and progress updates (8192)\n"
    "  --index SPEC          FAISS index of new sessions (default Flat)\n"
    "  --dtype f16|f32       storage of new sessions (default f16)\n"
    "  --durability full|nometa|none   fsync policy of `run` sessions (default nometa: a\n"
    "                        power loss may undo the last append; none: no fsync until the\n"
    "                        end of the run, much faster decoding)\n"
    "  -t, --threads N       threads (default: all cores)\n";

/* Returns 0 ok, 1 help printed, 2 usage error. */
static int parse_opts(run_opts *o, int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s\n%s", usage, k_common_help);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (a[0] != '-') {
            lmk_cli_error(o->cmd, "unexpected argument '%s' (see --help)", a);
            return 2;
        }
        if (i + 1 >= argc) {
            lmk_cli_error(o->cmd, "option %s needs a value", a);
            return 2;
        }
        const char *v = argv[++i];
        long long n = lmk_opt_count(v);
        int bad = 0;
#define IS(s) (!strcmp(a, s))
        if (IS("--model"))
            o->model = v;
        else if (IS("--session"))
            o->session = v;
        else if (IS("--file"))
            o->file = v;
        else if (IS("--prompt"))
            o->prompt = v;
        else if (IS("--haystack"))
            o->haystack = v;
        else if (IS("--index"))
            o->index = v;
        else if (IS("--workdir"))
            o->workdir = v;
        else if (IS("--depth"))
            o->depths = v;
        else if (IS("--record"))
            o->record = v;
        else if (IS("--generate"))
            bad = (o->generate = n) < 0, o->g_generate = 1;
        else if (IS("--tokens"))
            bad = (o->tokens = n) < 1;
        else if (IS("--trials"))
            bad = (o->trials = n) < 1;
        else if (IS("--piece"))
            bad = (o->piece = n) < 1;
        else if (IS("--chunk"))
            bad = (o->chunk = n) < 2 || n > (1 << 20);
        else if (IS("--dense-max"))
            bad = (o->dense_max = n) < 0;
        else if (IS("--top-k")) {
            o->g_top_k = 1;
            if (!strcmp(v, "all"))
                o->top_k = LMK_TOP_K_ALL;
            else
                bad = n < 0 || n > 1000000, o->top_k = (int)n;
        } else if (IS("--recent"))
            bad = n < 0 || n > 1000000, o->recent = (int)n, o->g_recent = 1;
        else if (IS("--sink"))
            bad = n < 0 || n > (1 << 24), o->sink = (int)n, o->g_sink = 1;
        else if (IS("--local"))
            bad = n < 0 || n > (1 << 28), o->local = (int)n, o->g_local = 1;
        else if (IS("--fixed-distance"))
            bad = (o->fixed_distance = n) < 0, o->g_fixed = 1;
        else if (IS("--block-len"))
            bad = n < 2 || n > 65536, o->block_len = (int)n;
        else if (IS("--mem-freq"))
            bad = n < 0 || n > 65536, o->mem_freq = (int)n;
        else if (IS("--landmark-token"))
            bad = n < 0 || n > INT_MAX, o->lm_token = (int)n;
        else if (IS("-t") || IS("--threads"))
            bad = n < 1 || n > 1024, o->threads = (int)n;
        else if (IS("--temp")) {
            char *e;
            o->temp = strtod(v, &e);
            bad = *e || !(o->temp >= 0);
        } else if (IS("--seed")) {
            char *e;
            o->seed = strtoull(v, &e, 0);
            bad = *e != 0;
        } else if (IS("--pos")) {
            o->g_pos = 1;
            o->pos = !strcmp(v, "slots") ? LMK_POS_SLOTS
                     : !strcmp(v, "original") ? LMK_POS_AS_GIVEN
                     : !strcmp(v, "fixed") ? LMK_POS_FIXED : -2;
            bad = o->pos == -2;
        } else if (IS("--mode")) {
            o->g_mode = 1;
            o->mode = !strcmp(v, "grouped") ? LMK_MODE_GROUPED
                      : !strcmp(v, "union") ? LMK_MODE_UNION : -2;
            bad = o->mode == -2;
        } else if (IS("--next-from")) {
            o->g_next = 1;
            o->next_from = !strcmp(v, "landmark") ? LMK_NEXT_FROM_LANDMARK
                           : !strcmp(v, "regular") ? LMK_NEXT_FROM_REGULAR : -2;
            bad = o->next_from == -2;
        } else if (IS("--retrieve")) {
            o->retrieve = !strcmp(v, "qhead") ? LMK_RETRIEVE_QHEAD
                          : !strcmp(v, "kvhead") ? LMK_RETRIEVE_KVHEAD : -2;
            bad = o->retrieve == -2;
        } else if (IS("--prefill-retrieve")) {
            o->prefill_chunkwise = !strcmp(v, "chunk") ? 1 : !strcmp(v, "token") ? 0 : -1;
            bad = o->prefill_chunkwise < 0;
        } else if (IS("--durability")) {
            o->durability = !strcmp(v, "full") ? LMK_DURABLE_FULL
                            : !strcmp(v, "nometa") ? LMK_DURABLE_NOMETA
                            : !strcmp(v, "none") ? LMK_DURABLE_NONE : -1;
            bad = o->durability < 0;
        } else if (IS("--repr")) {
            char e[128] = "";
            if (lmk_opt_repr_fn(&o->repr, v, e, sizeof e)) {
                lmk_cli_error(o->cmd, "invalid value '%s' for --repr: %s", v, e);
                return 2;
            }
        } else if (IS("--dtype")) {
            o->dtype = !strcmp(v, "f16") ? LMK_DTYPE_F16 : !strcmp(v, "f32") ? LMK_DTYPE_F32 : -1;
            bad = o->dtype < 0;
        } else {
            lmk_cli_error(o->cmd, "unknown option '%s' (see --help)", a);
            return 2;
        }
#undef IS
        if (bad) {
            lmk_cli_error(o->cmd, "invalid value '%s' for %s", v, a);
            return 2;
        }
    }
    return 0;
}

static lmk_model *load_model(const run_opts *o, const char *path)
{
    lmk_model_opts mo = lmk_model_opts_default();
    mo.n_threads = o->threads;
    mo.mem_freq = o->mem_freq;
    mo.landmark_token = o->lm_token;
    lmk_model *m = NULL;
    char err[1024];
    if (lmk_model_open(path, &mo, &m, err, sizeof err)) {
        lmk_cli_error(o->cmd, "%s", err);
        return NULL;
    }
    return m;
}

/* Fill defaults that depend on the model. */
static void model_defaults(run_opts *o, const lmk_model *m)
{
    const lmk_model_info *mi = lmk_model_get_info(m);
    int lm = mi->mem_freq > 0;
    if (o->pos < 0)
        o->pos = lm ? LMK_POS_SLOTS : LMK_POS_FIXED;
    if (o->mode < 0)
        o->mode = lm ? LMK_MODE_GROUPED : LMK_MODE_UNION;
    if (!o->g_recent)
        o->recent = lm ? 2 : 0;
    if (!o->g_sink)
        o->sink = lm || o->pos == LMK_POS_SLOTS ? 0 : 4;
    if (!o->g_local) {
        int half = mi->n_ctx_train > 0 ? mi->n_ctx_train / 2 : 4096;
        o->local = lm ? 0 : (half < 4096 ? half : 4096);
    }
    if (!o->g_fixed)
        o->fixed_distance = o->local > 0 ? o->local : o->block_len;
}

static lmk_attend_opts attend_opts(const run_opts *o, int chunkwise)
{
    lmk_attend_opts a = lmk_attend_opts_default();
    a.top_k = o->top_k;
    a.n_recent = o->recent;
    a.n_sink = o->sink;
    a.n_local = o->local;
    a.retrieve = chunkwise ? LMK_RETRIEVE_CHUNK : o->retrieve;
    return a;
}

/* The representative of a new session of an ordinary model (landmark models keep their
 * landmark tokens). */
static void apply_repr(const run_opts *o, const lmk_model *m, lmk_session_opts *so)
{
    if (lmk_model_get_info(m)->mem_freq > 0 || !o->repr.landmark)
        return;
    so->landmark = (lmk_landmark_src)o->repr.landmark;
    so->n_repr = o->repr.n_repr;
}

static void session_log(void *ud, const char *msg)
{
    fprintf(stderr, "landmark %s: %s\n", (const char *)ud, msg);
}

/* ---- progress ---- */

typedef struct {
    int tty;
    double t0, last;
    int64_t base, total; /* regular tokens */
    const char *what;
} progress;

static void progress_show(progress *p, int64_t done, int final)
{
    if (!p->tty)
        return;
    double t = now_s();
    if (!final && t - p->last < 0.2)
        return;
    p->last = t;
    double frac = p->total > 0 ? (double)done / (double)p->total : 1;
    if (frac > 1)
        frac = 1;
    char bar[41];
    int fill = (int)(frac * 40);
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    double rate = t > p->t0 ? (double)done / (t - p->t0) : 0;
    fprintf(stderr, "\r%s [%s] %3.0f%% %lld/%lld tokens, %.0f tokens/s   ", p->what, bar,
            100 * frac, (long long)done, (long long)p->total, rate);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* Feed ids in pieces (so an interrupt stops between pieces); logits after the last. */
static int feed_all(const run_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n,
                    float *logits, progress *pg)
{
    int64_t piece = o->piece > 0 ? o->piece : 8192;
    for (int64_t i = 0; i < n; i += piece) {
        if (g_interrupted) {
            lmk_cli_error(o->cmd, "interrupted after %lld of %lld tokens", (long long)i,
                          (long long)n);
            return LMK_ESTATE;
        }
        int64_t m = n - i < piece ? n - i : piece;
        int rc = lmk_ctx_feed(c, ids + i, m, i + m == n ? logits : NULL, i + m == n && logits);
        if (rc) {
            lmk_cli_error(o->cmd, "%s", lmk_ctx_errmsg(c));
            return rc;
        }
        if (pg)
            progress_show(pg, i + m, i + m == n);
    }
    return LMK_OK;
}

/* ---- sampling ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Greedy when temp == 0; never the landmark token. */
static int sample(const float *lg, int nv, double temp, int skip, uint64_t *rng)
{
    int best = -1;
    for (int i = 0; i < nv; i++)
        if (i != skip && (best < 0 || lg[i] > lg[best]))
            best = i;
    if (temp <= 0 || best < 0)
        return best;
    double z = 0;
    for (int i = 0; i < nv; i++)
        if (i != skip)
            z += exp((lg[i] - lg[best]) / temp);
    double u = (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0) * z, acc = 0;
    for (int i = 0; i < nv; i++) {
        if (i == skip)
            continue;
        acc += exp((lg[i] - lg[best]) / temp);
        if (acc >= u)
            return i;
    }
    return best;
}

/* ---- files ---- */

static char *read_file(const char *cmd, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lmk_cli_error(cmd, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) {
            lmk_cli_error(cmd, "%s: out of memory", path);
            fclose(f);
            return NULL;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(b, cap);
            if (!nb)
                free(b);
            b = nb;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        lmk_cli_error(cmd, "%s: read error", path);
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

static int32_t *tokenize(const run_opts *o, const lmk_model *m, const char *text, size_t len,
                         int first, int64_t *n)
{
    size_t cap = lmk_tokenizer_max_tokens(len);
    int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
    size_t got = 0;
    if (!ids) {
        lmk_cli_error(o->cmd, "out of memory tokenizing %zu bytes", len);
        return NULL;
    }
    int rc = lmk_tokenizer_encode(lmk_model_tokenizer(m), text, len, first, ids, &got);
    if (rc) {
        lmk_cli_error(o->cmd, "tokenizing: %s", lmk_strerror(rc));
        free(ids);
        return NULL;
    }
    *n = (int64_t)got;
    return ids;
}

/* Whether a document should start with the BOS token. */
static int want_bos(const lmk_model *m)
{
    int v;
    if (lmk_gguf_get_bool(lmk_model_gguf(m), "tokenizer.ggml.add_bos_token", &v) == 0)
        return v && lmk_model_get_info(m)->bos >= 0;
    return lmk_tokenizer_kind(lmk_model_tokenizer(m)) == LMK_TOK_SPM &&
           lmk_model_get_info(m)->bos >= 0;
}

/* Remove a flat directory made by this program (temporary sessions). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char path[PATH_MAX];
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

static const char *pos_name(int p)
{
    return p == LMK_POS_SLOTS ? "slots" : p == LMK_POS_FIXED ? "fixed" : "original";
}

/* ---- run: state beside the session ---- */

typedef struct {
    char model[PATH_MAX];
    char pending[PATH_MAX]; /* a document whose prefill has not completed */
    long long pending_base; /* regular tokens in the session before it */
    int pos, mode, top_k, recent, sink, local, next_from, mem_freq, lm_token, block_len;
    long long fixed_distance;
    int have;
} run_state;

static int state_read(const char *dir, run_state *st)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model-run.txt", dir);
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = 0;
        char *v = eq + 1;
        v[strcspn(v, "\n")] = 0;
        long long n = strtoll(v, NULL, 10);
        if (!strcmp(line, "model"))
            snprintf(st->model, sizeof st->model, "%s", v);
        else if (!strcmp(line, "pending_file"))
            snprintf(st->pending, sizeof st->pending, "%s", v);
        else if (!strcmp(line, "pending_base"))
            st->pending_base = n;
#define F(k, field) else if (!strcmp(line, k)) st->field = (int)n;
        F("pos", pos) F("mode", mode) F("top_k", top_k) F("recent", recent) F("sink", sink)
        F("local", local) F("next_from", next_from) F("mem_freq", mem_freq)
        F("landmark_token", lm_token) F("block_len", block_len)
#undef F
        else if (!strcmp(line, "fixed_distance")) st->fixed_distance = n;
    }
    fclose(f);
    st->have = 1;
    return 0;
}

/* pending: a document being prefilled (NULL when none) and the session's regular token
 * count before it, so an interrupted prefill can resume where the session stops. */
static int state_write(const run_opts *o, const char *dir, const char *model_path,
                       const lmk_model *m, const float *logits, int64_t tokens,
                       const char *pending, int64_t pending_base)
{
    char path[PATH_MAX], tmp[PATH_MAX], abs[PATH_MAX];
    if (!realpath(model_path, abs))
        snprintf(abs, sizeof abs, "%s", model_path);
    const lmk_model_info *mi = lmk_model_get_info(m);
    snprintf(tmp, sizeof tmp, "%s/model-run.txt.tmp", dir);
    snprintf(path, sizeof path, "%s/model-run.txt", dir);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return errno;
    fprintf(f, "# landmark run: the model and settings this session is run with\n"
               "model=%s\ndigest=%s\npos=%d\nmode=%d\ntop_k=%d\nrecent=%d\nsink=%d\nlocal=%d\n"
               "fixed_distance=%lld\nnext_from=%d\nmem_freq=%d\nlandmark_token=%d\n"
               "block_len=%d\n",
            abs, mi->digest, o->pos, o->mode, o->top_k, o->recent, o->sink, o->local,
            o->fixed_distance, o->next_from, mi->mem_freq, mi->landmark_token, o->block_len);
    if (pending)
        fprintf(f, "pending_file=%s\npending_base=%lld\n", pending, (long long)pending_base);
    int rc = fclose(f) ? errno : 0;
    if (!rc && rename(tmp, path))
        rc = errno;
    if (rc || !logits)
        return rc;
    /* the prediction after the last token: (u64 tokens, u32 n_vocab, f32 logits) */
    snprintf(tmp, sizeof tmp, "%s/model-run.logits.tmp", dir);
    snprintf(path, sizeof path, "%s/model-run.logits", dir);
    f = fopen(tmp, "wb");
    if (!f)
        return errno;
    uint64_t t = (uint64_t)tokens;
    uint32_t nv = (uint32_t)mi->n_vocab;
    int ok = fwrite(&t, 8, 1, f) == 1 && fwrite(&nv, 4, 1, f) == 1 &&
             fwrite(logits, 4, nv, f) == nv;
    rc = fclose(f) || !ok ? (errno ? errno : EIO) : 0;
    if (!rc && rename(tmp, path))
        rc = errno;
    return rc;
}

static int logits_read(const char *dir, int64_t tokens, int nv, float *logits)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model-run.logits", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint64_t t;
    uint32_t n;
    int ok = fread(&t, 8, 1, f) == 1 && fread(&n, 4, 1, f) == 1 && n == (uint32_t)nv &&
             t == (uint64_t)tokens && fread(logits, 4, n, f) == n;
    fclose(f);
    return ok ? 0 : -1;
}

static int session_exists(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    return access(path, F_OK) == 0;
}

/* Open (or create) the session of `dir` for model m; a clear error when the session was
 * written by another model or with another key frame. */
static lmk_session *open_run_session(const run_opts *o, const lmk_model *m, const char *dir,
                                     int create)
{
    lmk_session_opts so;
    char fp[256], err[1024];
    lmk_model_session_opts(m, (lmk_pos_kind)o->pos, o->block_len, &so, fp);
    so.create = create;
    so.n_threads = o->threads;
    so.durability = (lmk_durability)o->durability;
    so.log = session_log;
    so.log_ud = (void *)o->cmd;
    if (create) {
        so.index_spec = o->index;
        so.dtype = (lmk_dtype)o->dtype;
        apply_repr(o, m, &so);
    } else {
        so.block_len = 0;
        so.landmark = LMK_LANDMARK_AUTO;
    }
    lmk_session *s = NULL;
    int rc = lmk_session_open(dir, &so, &s, err, sizeof err);
    if (rc == LMK_EMISMATCH) {
        lmk_session_opts ro = lmk_session_opts_default();
        ro.read_only = 1;
        lmk_session *r = NULL;
        lmk_session_info in;
        if (lmk_session_open(dir, &ro, &r, NULL, 0) == 0 && lmk_session_info_get(r, &in) == 0)
            lmk_cli_error(o->cmd, "session %s was not written by this model with these "
                          "settings (session: '%s'; now: '%s')", dir, in.fingerprint, fp);
        else
            lmk_cli_error(o->cmd, "%s", err);
        lmk_session_close(r);
        return NULL;
    }
    if (rc) {
        lmk_cli_error(o->cmd, "%s", err);
        return NULL;
    }
    return s;
}

/* ---- recording a stream (passkey --record): what one trial gave the session ---- */

typedef struct recorder {
    int on, NL, NH, NKV, D, failed;
    int64_t *n, *cap;  /* per layer: tokens recorded, room */
    float **k, **v, **q;
} recorder;

static void rec_cb(void *ud, int layer, int64_t n, const float *k, const float *v,
                   const float *q)
{
    recorder *r = ud;
    if (!r->on || r->failed)
        return;
    size_t kr = (size_t)r->NKV * r->D, qr = (size_t)r->NH * r->D;
    if (r->n[layer] + n > r->cap[layer]) {
        int64_t c = (r->n[layer] + n) * 2;
        float *a = realloc(r->k[layer], (size_t)c * kr * 4);
        if (a)
            r->k[layer] = a;
        float *b = a ? realloc(r->v[layer], (size_t)c * kr * 4) : NULL;
        if (b)
            r->v[layer] = b;
        float *e = b ? realloc(r->q[layer], (size_t)c * qr * 4) : NULL;
        if (e)
            r->q[layer] = e;
        if (!e) {
            r->failed = 1;
            return;
        }
        r->cap[layer] = c;
    }
    memcpy(r->k[layer] + (size_t)r->n[layer] * kr, k, (size_t)n * kr * 4);
    memcpy(r->v[layer] + (size_t)r->n[layer] * kr, v, (size_t)n * kr * 4);
    memcpy(r->q[layer] + (size_t)r->n[layer] * qr, q, (size_t)n * qr * 4);
    r->n[layer] += n;
}

/* The LMKREC1 file (README "Recorded streams"): one query per token, f32. */
static int rec_write(const recorder *r, const char *path)
{
    int64_t T = r->n[0];
    for (int l = 1; l < r->NL; l++)
        if (r->n[l] != T)
            return lmk_cli_error("passkey", "--record: layers recorded unequal lengths"), 1;
    if (r->failed)
        return lmk_cli_error("passkey", "--record: out of memory"), 1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return lmk_cli_error("passkey", "%s: %s", path, strerror(errno)), 1;
    unsigned char h[48] = "LMKREC1";
    uint32_t u[4] = {(uint32_t)r->NL, (uint32_t)r->NH, (uint32_t)r->NKV, (uint32_t)r->D};
    uint64_t nt = (uint64_t)T;
    memcpy(h + 8, u, 16);
    memcpy(h + 24, &nt, 8);
    memcpy(h + 32, &nt, 8);
    int ok = fwrite(h, 1, 48, f) == 48;
    size_t kr = (size_t)r->NKV * r->D, qr = (size_t)r->NH * r->D;
    for (int l = 0; ok && l < r->NL; l++)
        ok = fwrite(r->k[l], 4, (size_t)T * kr, f) == (size_t)T * kr &&
             fwrite(r->v[l], 4, (size_t)T * kr, f) == (size_t)T * kr &&
             fwrite(r->q[l], 4, (size_t)T * qr, f) == (size_t)T * qr;
    if (fclose(f) || !ok)
        return lmk_cli_error("passkey", "%s: write failed", path), 1;
    return 0;
}

static void rec_free(recorder *r)
{
    for (int l = 0; r->n && l < r->NL; l++) {
        free(r->k[l]);
        free(r->v[l]);
        free(r->q[l]);
    }
    free(r->n);
    free(r->cap);
    free(r->k);
    free(r->v);
    free(r->q);
}

static lmk_ctx *open_ctx_rec(const run_opts *o, lmk_model *m, lmk_session *s, recorder *rec);

static lmk_ctx *open_ctx(const run_opts *o, lmk_model *m, lmk_session *s)
{
    return open_ctx_rec(o, m, s, NULL);
}

static lmk_ctx *open_ctx_rec(const run_opts *o, lmk_model *m, lmk_session *s, recorder *rec)
{
    lmk_ctx_opts co = lmk_ctx_opts_default();
    if (rec) {
        co.record = rec_cb;
        co.record_ud = rec;
    }
    co.backend = LMK_ATTN_SESSION;
    co.session = s;
    co.pos = (lmk_pos_kind)o->pos;
    co.mode = (lmk_mode)o->mode;
    co.fixed_distance = o->fixed_distance;
    co.attend = attend_opts(o, 0);
    co.next_from = o->next_from;
    co.chunk = (int)o->chunk;
    lmk_ctx *c = NULL;
    char err[1024];
    if (lmk_ctx_open(m, &co, &c, err, sizeof err))
        lmk_cli_error(o->cmd, "%s", err);
    return c;
}

int lmk_cmd_run(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark run --model M.gguf --session DIR (--file DOC | --prompt TEXT)\n"
        "                    [--generate N] [--top-k K] [--temp T] [--seed S] [-t THREADS]\n"
        "       landmark run --session DIR --prompt QUESTION [--generate N]\n\n"
        "Prefill a document (and/or a prompt) into a persistent session through the model,\n"
        "then generate N tokens (default 64 after a prompt, 0 after a document alone),\n"
        "streamed to stdout. A later run on the same session continues it: the model and\n"
        "settings are remembered in DIR/model-run.txt and the model's fingerprint is checked.\n\n"
        "  --session DIR   the session directory (created when empty)\n"
        "  --file DOC      document to append to the session\n"
        "  --prompt TEXT   text to append after it (a question)\n"
        "  --generate N    tokens to generate\n"
        "  --temp T        sampling temperature (default 0: greedy)\n"
        "  --seed S        sampling seed (default 42)\n";
    run_opts o;
    opts_init(&o, "run");
    int prc = parse_opts(&o, argc, argv, usage);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!o.session) {
        lmk_cli_error("run", "--session DIR is required (see --help)");
        return 2;
    }
    lmk_cli_set_blas_threads(1);
    int exists = session_exists(o.session);
    run_state st;
    state_read(o.session, &st);
    if (!o.model && !(exists && st.have && st.model[0])) {
        lmk_cli_error("run", exists ? "the session does not record its model: give --model"
                                    : "--model M.gguf is required for a new session");
        return 2;
    }
    if (!exists && !o.file && !o.prompt) {
        lmk_cli_error("run", "a new session needs --file or --prompt");
        return 2;
    }
    /* settings remembered with the session, unless given again */
    if (exists && st.have) {
        if (o.mem_freq < 0 && st.mem_freq >= 0)
            o.mem_freq = st.mem_freq;
        if (!o.g_pos)
            o.pos = st.pos;
        if (!o.g_mode)
            o.mode = st.mode;
        if (!o.g_top_k)
            o.top_k = st.top_k;
        if (!o.g_recent)
            o.recent = st.recent, o.g_recent = 1;
        if (!o.g_sink)
            o.sink = st.sink, o.g_sink = 1;
        if (!o.g_local)
            o.local = st.local, o.g_local = 1;
        if (!o.g_fixed)
            o.fixed_distance = st.fixed_distance, o.g_fixed = 1;
        if (!o.g_next)
            o.next_from = st.next_from;
        if (st.block_len > 0)
            o.block_len = st.block_len;
    }
    const char *model_path = o.model ? o.model : st.model;
    lmk_model *m = load_model(&o, model_path);
    if (!m)
        return 1;
    model_defaults(&o, m);
    const lmk_model_info *mi = lmk_model_get_info(m);
    if (!o.g_generate)
        o.generate = o.prompt ? 64 : 0;

    int rc = 1;
    lmk_session *s = NULL;
    lmk_ctx *c = NULL;
    int32_t *doc = NULL, *q = NULL;
    char *text = NULL;
    float *logits = malloc((size_t)mi->n_vocab * sizeof(float));
    if (!logits)
        goto out;
    if (!(s = open_run_session(&o, m, o.session, !exists)))
        goto out;
    if (!(c = open_ctx(&o, m, s)))
        goto out;
    signal(SIGINT, on_sigint);
    int64_t start = lmk_ctx_n_past(c);
    int have_logits = start > 0 && logits_read(o.session, start, mi->n_vocab, logits) == 0;

    int64_t nd = 0, nq = 0, skip = 0, doc_base = lmk_ctx_n_regular(c);
    char doc_path[PATH_MAX] = "";
    if (o.file) {
        if (!realpath(o.file, doc_path))
            snprintf(doc_path, sizeof doc_path, "%s", o.file);
        /* the same document after an interrupted prefill: continue where the session stops */
        if (exists && st.pending[0] && !strcmp(st.pending, doc_path) &&
            st.pending_base <= doc_base)
            doc_base = st.pending_base;
        size_t len;
        if (!(text = read_file("run", o.file, &len)))
            goto out;
        if (!(doc = tokenize(&o, m, text, len, doc_base == 0, &nd)))
            goto out;
        free(text);
        text = NULL;
    }
    int fresh = o.file ? doc_base == 0 : start == 0;
    if (o.prompt && !(q = tokenize(&o, m, o.prompt, strlen(o.prompt), fresh && !nd, &nq)))
        goto out;
    if (fresh && want_bos(m) && (nd || nq)) { /* the document starts with BOS */
        int32_t **first = nd ? &doc : &q;
        int64_t *fn = nd ? &nd : &nq;
        int32_t *b = malloc((size_t)(*fn + 1) * sizeof *b);
        if (!b)
            goto out;
        b[0] = mi->bos;
        memcpy(b + 1, *first, (size_t)*fn * sizeof *b);
        free(*first);
        *first = b;
        (*fn)++;
    }
    if (o.file) {
        skip = lmk_ctx_n_regular(c) - doc_base;
        if (skip > nd) {
            lmk_cli_error("run", "the session holds more of %s than the file has (%lld > %lld "
                          "tokens): was the file changed?", o.file, (long long)skip,
                          (long long)nd);
            goto out;
        }
        if (skip > 0)
            fprintf(stderr, "landmark run: resuming %s after the %lld tokens already in the "
                    "session\n", o.file, (long long)skip);
        int wrc = state_write(&o, o.session, model_path, m, NULL, 0, doc_path, doc_base);
        if (wrc) {
            lmk_cli_error("run", "cannot write %s/model-run.txt: %s", o.session, strerror(wrc));
            goto out;
        }
    }
    double t0 = now_s();
    int64_t p0 = lmk_ctx_n_past(c);
    if (nd - skip > 0) {
        progress pg = {isatty(2), t0, 0, 0, nd - skip, "prefill"};
        lmk_attend_opts a = attend_opts(&o, o.prefill_chunkwise);
        lmk_ctx_set_attend(c, &a);
        if (feed_all(&o, c, doc + skip, nd - skip, logits, &pg))
            goto out; /* the pending record lets a rerun resume */
        have_logits = 1;
    }
    if (nq) {
        /* the question decides the answer: per-token retrieval unless it is long */
        lmk_attend_opts a = attend_opts(&o, o.prefill_chunkwise && nq > 512);
        lmk_ctx_set_attend(c, &a);
        progress pg = {isatty(2) && nq > 4096, now_s(), 0, 0, nq, "prompt"};
        if (feed_all(&o, c, q, nq, logits, &pg)) {
            state_write(&o, o.session, model_path, m, NULL, 0, NULL, 0);
            goto out;
        }
        have_logits = 1;
    }
    double t1 = now_s();
    int64_t prefilled = nd - skip + nq, positions = lmk_ctx_n_past(c) - p0;
    if (o.generate > 0 && !have_logits) {
        lmk_cli_error("run", "nothing to continue from: give --prompt (the session has no "
                      "saved prediction)");
        goto out;
    }
    lmk_attend_opts a = attend_opts(&o, 0);
    lmk_ctx_set_attend(c, &a);
    uint64_t rng = o.seed;
    int64_t gen = 0;
    for (; gen < o.generate && !g_interrupted; gen++) {
        int tok = sample(logits, mi->n_vocab, o.temp, mi->landmark_token, &rng);
        if (tok < 0 || tok == mi->eos)
            break;
        char piece[256];
        int pl = lmk_tokenizer_piece(lmk_model_tokenizer(m), tok, piece, sizeof piece);
        if (pl > 0)
            fwrite(piece, 1, (size_t)(pl < (int)sizeof piece ? pl : (int)sizeof piece), stdout);
        fflush(stdout);
        int32_t t = tok;
        if (lmk_ctx_feed(c, &t, 1, logits, 1)) {
            lmk_cli_error("run", "%s", lmk_ctx_errmsg(c));
            goto out;
        }
    }
    if (gen > 0)
        fputc('\n', stdout);
    double t2 = now_s();
    int wrc = state_write(&o, o.session, model_path, m, logits, lmk_ctx_n_past(c), NULL, 0);
    if (wrc)
        lmk_cli_error("run", "could not save the session's run state: %s", strerror(wrc));
    if (prefilled)
        fprintf(stderr, "prefill: %lld tokens (%lld positions with landmarks) in %.2f s, "
                "%.1f tokens/s\n", (long long)prefilled, (long long)positions, t1 - t0,
                (double)prefilled / (t1 - t0 > 0 ? t1 - t0 : 1e-9));
    if (gen)
        fprintf(stderr, "decode: %lld tokens in %.2f s, %.2f tokens/s\n", (long long)gen,
                t2 - t1, (double)gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    fprintf(stderr, "session %s: %lld tokens (top_k %d, %d recent, %s, %s positions)\n",
            o.session, (long long)lmk_ctx_n_regular(c), o.top_k, o.recent,
            o.mode == LMK_MODE_GROUPED ? "grouped" : "union", pos_name(o.pos));
    rc = g_interrupted ? 1 : 0;
out:
    lmk_ctx_free(c);
    if (s && o.durability == LMK_DURABLE_NONE && lmk_session_sync(s)) /* none: sync once here */
        lmk_cli_error("run", "syncing the session: %s", lmk_session_errmsg(s));
    lmk_session_close(s);
    lmk_model_close(m);
    free(logits);
    free(doc);
    free(q);
    free(text);
    return rc;
}

/* ---- passkey ---- */

static const char k_filler[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";

typedef struct {
    double depth;
    int trials, correct;
} depth_acc;

/* Make a temporary session directory under workdir. */
static int temp_session(const run_opts *o, char *dir, size_t cap)
{
    const char *base = o->workdir ? o->workdir : getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(dir, cap, "%s/landmark-%s-XXXXXX", base, o->cmd);
    if (!mkdtemp(dir)) {
        lmk_cli_error(o->cmd, "cannot create a temporary session under %s: %s", base,
                      strerror(errno));
        return -1;
    }
    return 0;
}

static lmk_session *temp_open(const run_opts *o, const lmk_model *m, const char *dir)
{
    lmk_session_opts so;
    char fp[256], err[1024];
    lmk_model_session_opts(m, (lmk_pos_kind)o->pos, o->block_len, &so, fp);
    so.create = 1;
    so.n_threads = o->threads;
    so.index_spec = o->index;
    so.dtype = (lmk_dtype)o->dtype;
    so.durability = LMK_DURABLE_NONE; /* scratch data: nothing to keep after a crash */
    apply_repr(o, m, &so);
    lmk_session *s = NULL;
    if (lmk_session_open(dir, &so, &s, err, sizeof err))
        lmk_cli_error(o->cmd, "%s", err);
    return s;
}

int lmk_cmd_passkey(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark passkey --model M.gguf --tokens N [--trials T] [--depth D[,D...]]\n"
        "                        [--haystack FILE] [--json]\n\n"
        "Hide 'The pass key is NNNNN. Remember it. NNNNN is the pass key. ' at a depth of an\n"
        "N-token haystack (FILE from a random offset, or a repeated filler sentence), ask\n"
        "' What is the pass key? The pass key is' and check the greedy answer's first five\n"
        "non-space characters. Reports accuracy per depth and prefill and decode speed.\n\n"
        "  --tokens N      prompt length in regular tokens (k/m suffixes: 1m = 1048576)\n"
        "  --trials T      trials (default 10); depths cycle through --depth, else uniform\n"
        "  --depth D,...   needle depths in [0, 1]\n"
        "  --haystack FILE text to hide the key in (e.g. ../shared/data/kjv.txt)\n"
        "  --seed S        seed for keys, offsets and depths (default 42)\n"
        "  --workdir DIR   where temporary sessions go (default $TMPDIR or /tmp)\n"
        "  --record FILE   write the first trial's stream (keys, values, and one query per\n"
        "                  token in the ranking frame) for `landmark bench --recorded FILE\n"
        "                  --repr ...`\n"
        "  --json          one JSON object: tokens, trials, accuracy, prefill_tokens_per_s,\n"
        "                  decode_tokens_per_s, and per-depth details\n";
    recorder rec;
    memset(&rec, 0, sizeof rec);
    run_opts o;
    opts_init(&o, "passkey");
    int prc = parse_opts(&o, argc, argv, usage);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!o.model || o.tokens < 1) {
        lmk_cli_error("passkey", "--model and --tokens N are required (see --help)");
        return 2;
    }
    double depths[64];
    int n_depths = 0;
    if (o.depths) {
        const char *p = o.depths;
        while (*p && n_depths < 64) {
            char *e;
            double d = strtod(p, &e);
            if (e == p || d < 0 || d > 1) {
                lmk_cli_error("passkey", "invalid --depth '%s' (comma-separated values in "
                              "[0, 1])", o.depths);
                return 2;
            }
            depths[n_depths++] = d;
            p = *e == ',' ? e + 1 : e;
            if (*e && *e != ',') {
                lmk_cli_error("passkey", "invalid --depth '%s'", o.depths);
                return 2;
            }
        }
    }
    lmk_cli_set_blas_threads(1);
    lmk_model *m = load_model(&o, o.model);
    if (!m)
        return 1;
    model_defaults(&o, m);
    const lmk_model_info *mi = lmk_model_get_info(m);
    char *hay = NULL;
    size_t hay_len = 0;
    if (o.haystack) {
        if (!(hay = read_file("passkey", o.haystack, &hay_len))) {
            lmk_model_close(m);
            return 1;
        }
        if (hay_len < 1024) {
            lmk_cli_error("passkey", "%s: haystack too short", o.haystack);
            free(hay);
            lmk_model_close(m);
            return 1;
        }
    }
    int rc = 1;
    float *logits = malloc((size_t)mi->n_vocab * sizeof(float));
    depth_acc acc[64];
    int n_acc = n_depths ? n_depths : 5;
    for (int i = 0; i < n_acc; i++) {
        acc[i].depth = n_depths ? depths[i] : (i + 0.5) / 5;
        acc[i].trials = acc[i].correct = 0;
    }
    uint64_t rng = o.seed;
    double prefill_s = 0, decode_s = 0;
    int64_t prefill_tok = 0, decode_tok = 0;
    int correct = 0;
    int32_t *ids = NULL;
    signal(SIGINT, on_sigint);
    const char *question = " What is the pass key? The pass key is";
    if (o.record) {
        rec.NL = mi->n_layers, rec.NH = mi->n_heads, rec.NKV = mi->n_kv_heads;
        rec.D = mi->head_dim;
        rec.n = calloc((size_t)rec.NL, sizeof *rec.n);
        rec.cap = calloc((size_t)rec.NL, sizeof *rec.cap);
        rec.k = calloc((size_t)rec.NL, sizeof *rec.k);
        rec.v = calloc((size_t)rec.NL, sizeof *rec.v);
        rec.q = calloc((size_t)rec.NL, sizeof *rec.q);
        rec.failed = !rec.n || !rec.cap || !rec.k || !rec.v || !rec.q;
    }
    for (long long trial = 0; trial < o.trials && !g_interrupted; trial++) {
        int key = 10000 + (int)(rng_next(&rng) % 90000);
        double depth = n_depths ? depths[trial % n_depths]
                                : (double)(rng_next(&rng) >> 11) / 9007199254740992.0;
        char needle[128];
        snprintf(needle, sizeof needle, "The pass key is %d. Remember it. %d is the pass key. ",
                 key, key);
        int64_t n_needle, n_q;
        int32_t *tn = tokenize(&o, m, needle, strlen(needle), 0, &n_needle);
        int32_t *tq = tokenize(&o, m, question, strlen(question), 0, &n_q);
        if (!tn || !tq) {
            free(tn);
            free(tq);
            goto out;
        }
        int64_t need = o.tokens - n_needle - n_q;
        if (need < 1) {
            lmk_cli_error("passkey", "--tokens %lld is too small for the needle and the "
                          "question (%lld tokens)", o.tokens, (long long)(n_needle + n_q));
            free(tn);
            free(tq);
            goto out;
        }
        /* haystack tokens: from a random line of the file (wrapping), or the filler */
        int32_t *th = malloc((size_t)need * sizeof *th);
        free(ids);
        ids = malloc((size_t)(o.tokens + 1) * sizeof *ids);
        if (!th || !ids) {
            lmk_cli_error("passkey", "out of memory");
            free(th);
            free(tn);
            free(tq);
            goto out;
        }
        int64_t have = 0;
        size_t off = 0;
        if (hay) {
            off = (size_t)(rng_next(&rng) % hay_len);
            while (off < hay_len && hay[off] != '\n')
                off++;
            off = off < hay_len ? off + 1 : 0;
        }
        while (have < need) {
            const char *src = hay ? hay + off : k_filler;
            size_t avail = hay ? hay_len - off : sizeof k_filler - 1;
            size_t take = avail < (size_t)(need - have) * 4 + 64 ? avail
                                                                 : (size_t)(need - have) * 4 + 64;
            int64_t nt;
            int32_t *t = tokenize(&o, m, src, take, have == 0, &nt);
            if (!t) {
                free(th);
                free(tn);
                free(tq);
                goto out;
            }
            int64_t k = nt < need - have ? nt : need - have;
            memcpy(th + have, t, (size_t)k * sizeof *t);
            have += k;
            free(t);
            off = hay ? (off + take) % hay_len : 0;
        }
        /* needle position: at the depth, moved forward to just after a space or newline */
        int64_t at = (int64_t)(depth * (double)need);
        const lmk_tokenizer *tk = lmk_model_tokenizer(m);
        for (int64_t j = at; j < need && j < at + 64; j++) {
            char pc[64];
            int pl = lmk_tokenizer_piece(tk, th[j > 0 ? j - 1 : 0], pc, sizeof pc);
            if (j == 0 || (pl > 0 && pl <= (int)sizeof pc &&
                           (pc[pl - 1] == ' ' || pc[pl - 1] == '\n'))) {
                at = j;
                break;
            }
        }
        int64_t n = 0;
        if (want_bos(m))
            ids[n++] = mi->bos;
        memcpy(ids + n, th, (size_t)at * sizeof *ids);
        n += at;
        memcpy(ids + n, tn, (size_t)n_needle * sizeof *ids);
        n += n_needle;
        memcpy(ids + n, th + at, (size_t)(need - at) * sizeof *ids);
        n += need - at;
        free(th);
        free(tn);

        char dir[PATH_MAX];
        if (temp_session(&o, dir, sizeof dir)) {
            free(tq);
            goto out;
        }
        lmk_session *s = temp_open(&o, m, dir);
        rec.on = o.record && trial == 0;
        lmk_ctx *c = s ? open_ctx_rec(&o, m, s, o.record ? &rec : NULL) : NULL;
        if (!c) {
            lmk_session_close(s);
            remove_dir(dir);
            free(tq);
            goto out;
        }
        double t0 = now_s();
        progress pg = {isatty(2) && !o.json, t0, 0, 0, n, "prefill"};
        lmk_attend_opts a = attend_opts(&o, o.prefill_chunkwise);
        lmk_ctx_set_attend(c, &a);
        int frc = feed_all(&o, c, ids, n, NULL, n > 65536 ? &pg : NULL);
        if (!frc) {
            a = attend_opts(&o, 0);
            lmk_ctx_set_attend(c, &a);
            frc = feed_all(&o, c, tq, n_q, logits, NULL);
        }
        free(tq);
        if (rec.on) {
            rec.on = 0; /* the stream ends with the question */
            if (!frc && rec_write(&rec, o.record))
                frc = 1;
        }
        double t1 = now_s();
        char ans[64];
        int na = 0, steps = 0, feeds = 0;
        while (!frc && na < 5 && steps < 12) {
            int tok = sample(logits, mi->n_vocab, 0, mi->landmark_token, &rng);
            char pc[64];
            int pl = lmk_tokenizer_piece(tk, tok, pc, sizeof pc);
            for (int j = 0; j < pl && j < (int)sizeof pc && na < 5; j++)
                if (pc[j] != ' ')
                    ans[na++] = pc[j];
            steps++;
            if (na >= 5)
                break;
            int32_t t = tok;
            if ((frc = lmk_ctx_feed(c, &t, 1, logits, 1)) != 0)
                lmk_cli_error("passkey", "%s", lmk_ctx_errmsg(c));
            feeds++;
        }
        double t2 = now_s();
        lmk_ctx_free(c);
        lmk_session_close(s);
        remove_dir(dir);
        if (frc)
            goto out;
        ans[na] = 0;
        char want[16];
        snprintf(want, sizeof want, "%d", key);
        int ok = !strcmp(ans, want);
        correct += ok;
        prefill_s += t1 - t0;
        prefill_tok += n + n_q;
        decode_s += t2 - t1;
        decode_tok += feeds; /* the first answer token comes with the prefill */
        int bin = n_depths ? (int)(trial % n_depths) : (int)(depth * 5 >= 5 ? 4 : depth * 5);
        acc[bin].trials++;
        acc[bin].correct += ok;
        if (!o.json)
            fprintf(stderr, "trial %lld: depth %.2f key %d answer '%s' %s (prefill %.1f s, "
                    "%.0f tokens/s)\n", trial + 1, depth, key, ans, ok ? "ok" : "WRONG", t1 - t0,
                    (double)(n + n_q) / (t1 - t0));
    }
    if (g_interrupted) {
        lmk_cli_error("passkey", "interrupted");
        goto out;
    }
    double pf = prefill_s > 0 ? (double)prefill_tok / prefill_s : 0;
    double dc = decode_s > 0 ? (double)decode_tok / decode_s : 0;
    double accuracy = (double)correct / (double)o.trials;
    if (o.json) {
        printf("{\"tokens\": %lld, \"trials\": %lld, \"accuracy\": %.4f, "
               "\"prefill_tokens_per_s\": %.1f, \"decode_tokens_per_s\": %.2f, "
               "\"correct\": %d, \"top_k\": %d, \"n_recent\": %d, \"mode\": \"%s\", "
               "\"pos\": \"%s\", \"prefill_retrieve\": \"%s\", \"depths\": [",
               o.tokens, o.trials, accuracy, pf, dc, correct, o.top_k, o.recent,
               o.mode == LMK_MODE_GROUPED ? "grouped" : "union", pos_name(o.pos),
               o.prefill_chunkwise ? "chunk" : "token");
        for (int i = 0; i < n_acc; i++)
            printf("%s{\"depth\": %.3f, \"trials\": %d, \"correct\": %d}", i ? ", " : "",
                   acc[i].depth, acc[i].trials, acc[i].correct);
        printf("]}\n");
    } else {
        printf("pass key at %lld tokens, %lld trials: accuracy %.3f (%d correct)\n", o.tokens,
               o.trials, accuracy, correct);
        for (int i = 0; i < n_acc; i++)
            if (acc[i].trials)
                printf("  depth %s%.2f: %d/%d\n", n_depths ? "" : "~", acc[i].depth,
                       acc[i].correct, acc[i].trials);
        printf("prefill %.1f tokens/s, decode %.2f tokens/s (top_k %d, %d recent, %s, %s "
               "positions, %s prefill retrieval, %d threads)\n", pf, dc, o.top_k, o.recent,
               o.mode == LMK_MODE_GROUPED ? "grouped" : "union", pos_name(o.pos),
               o.prefill_chunkwise ? "chunk" : "token", o.threads);
    }
    rc = 0;
out:
    rec_free(&rec);
    free(ids);
    free(hay);
    free(logits);
    lmk_model_close(m);
    return rc;
}

/* ---- perplexity ---- */

/* Mean negative log-likelihood of each next regular token, feeding pieces through c. */
static int nll_over(const run_opts *o, lmk_ctx *c, const int32_t *ids, int64_t n, int nv,
                    double *nll, int64_t *count, double *secs)
{
    int64_t piece = 512;
    float *lg = malloc((size_t)(piece + 1) * nv * sizeof(float));
    if (!lg)
        return ENOMEM;
    double t0 = now_s();
    *nll = 0;
    *count = 0;
    progress pg = {isatty(2) && !o->json, t0, 0, 0, n, "perplexity"};
    for (int64_t i = 0; i < n; i += piece) {
        int64_t m = n - i < piece ? n - i : piece;
        /* row 0 holds the previous piece's last prediction */
        int rc = lmk_ctx_feed(c, ids + i, m, lg + nv, m);
        if (rc) {
            lmk_cli_error(o->cmd, "%s", lmk_ctx_errmsg(c));
            free(lg);
            return rc;
        }
        for (int64_t j = (i == 0 ? 1 : 0); j < m; j++) {
            const float *row = lg + (size_t)j * nv; /* prediction for token i + j */
            float mx = row[0];
            for (int v = 1; v < nv; v++)
                mx = row[v] > mx ? row[v] : mx;
            double z = 0;
            for (int v = 0; v < nv; v++)
                z += exp((double)row[v] - mx);
            *nll += log(z) + mx - row[ids[i + j]];
            (*count)++;
        }
        memcpy(lg, lg + (size_t)m * nv, (size_t)nv * sizeof(float));
        progress_show(&pg, i + m, i + m == n);
    }
    *secs = now_s() - t0;
    free(lg);
    return 0;
}

int lmk_cmd_perplexity(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark perplexity --model M.gguf --file F [--tokens N] [--json]\n\n"
        "Perplexity of the file's regular tokens (landmarks are not scored) with retrieval\n"
        "attention, and with full attention for comparison when the file fits\n"
        "--dense-max tokens (default 16384).\n\n"
        "  --tokens N      score at most the first N tokens\n"
        "  --dense-max N   longest input also run with full attention (0: never)\n"
        "  --workdir DIR   where the temporary session goes\n";
    run_opts o;
    opts_init(&o, "perplexity");
    int prc = parse_opts(&o, argc, argv, usage);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (!o.model || !o.file) {
        lmk_cli_error("perplexity", "--model and --file are required (see --help)");
        return 2;
    }
    lmk_cli_set_blas_threads(1);
    lmk_model *m = load_model(&o, o.model);
    if (!m)
        return 1;
    model_defaults(&o, m);
    const lmk_model_info *mi = lmk_model_get_info(m);
    int rc = 1;
    size_t len;
    char *text = read_file("perplexity", o.file, &len);
    int64_t n = 0;
    int32_t *ids = text ? tokenize(&o, m, text, len, 1, &n) : NULL;
    free(text);
    if (!ids) {
        lmk_model_close(m);
        return 1;
    }
    if (o.tokens > 0 && n > o.tokens)
        n = o.tokens;
    if (n < 2) {
        lmk_cli_error("perplexity", "%s: fewer than 2 tokens", o.file);
        free(ids);
        lmk_model_close(m);
        return 1;
    }
    signal(SIGINT, on_sigint);
    char dir[PATH_MAX];
    double nll_r = 0, nll_d = 0, sec_r = 0, sec_d = 0;
    int64_t cnt_r = 0, cnt_d = 0;
    int dense = o.dense_max > 0 && n <= o.dense_max;
    if (temp_session(&o, dir, sizeof dir))
        goto out;
    lmk_session *s = temp_open(&o, m, dir);
    lmk_ctx *c = s ? open_ctx(&o, m, s) : NULL;
    if (c) {
        lmk_attend_opts a = attend_opts(&o, 0);
        lmk_ctx_set_attend(c, &a);
    }
    int frc = c ? nll_over(&o, c, ids, n, mi->n_vocab, &nll_r, &cnt_r, &sec_r) : 1;
    lmk_ctx_free(c);
    lmk_session_close(s);
    remove_dir(dir);
    if (frc)
        goto out;
    if (dense) {
        lmk_ctx_opts co = lmk_ctx_opts_default();
        co.backend = LMK_ATTN_DENSE;
        co.pos = LMK_POS_AS_GIVEN;
        co.mode = (lmk_mode)o.mode;
        co.next_from = o.next_from;
        co.chunk = (int)o.chunk;
        char err[512];
        lmk_ctx *dc = NULL;
        if (lmk_ctx_open(m, &co, &dc, err, sizeof err)) {
            lmk_cli_error("perplexity", "full attention: %s", err);
            goto out;
        }
        frc = nll_over(&o, dc, ids, n, mi->n_vocab, &nll_d, &cnt_d, &sec_d);
        lmk_ctx_free(dc);
        if (frc)
            goto out;
    }
    double ppl_r = exp(nll_r / (double)cnt_r), ppl_d = dense ? exp(nll_d / (double)cnt_d) : 0;
    if (o.json) {
        printf("{\"tokens\": %lld, \"scored\": %lld, \"perplexity\": %.6g, "
               "\"tokens_per_s\": %.1f, \"top_k\": %d, \"n_recent\": %d, ",
               (long long)n, (long long)cnt_r, ppl_r, (double)n / sec_r, o.top_k, o.recent);
        if (dense)
            printf("\"perplexity_full\": %.6g, \"full_tokens_per_s\": %.1f}\n", ppl_d,
                   (double)n / sec_d);
        else
            printf("\"perplexity_full\": null}\n");
    } else {
        printf("perplexity over %lld tokens (%lld scored):\n", (long long)n, (long long)cnt_r);
        printf("  retrieval (top_k %d, %d recent, %s, %s positions): %.4f  (%.0f tokens/s)\n",
               o.top_k, o.recent, o.mode == LMK_MODE_GROUPED ? "grouped" : "union",
               pos_name(o.pos), ppl_r, (double)n / sec_r);
        if (dense)
            printf("  full attention:                                %.4f  (%.0f tokens/s)\n",
                   ppl_d, (double)n / sec_d);
        else
            printf("  full attention: skipped (%lld tokens > --dense-max %lld)\n", (long long)n,
                   o.dense_max);
    }
    rc = 0;
out:
    free(ids);
    lmk_model_close(m);
    return rc;
}
