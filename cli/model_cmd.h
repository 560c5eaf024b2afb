/* What `landmark run`, `passkey` and `perplexity` share: the model and retrieval options
 * (one set of table rows, copied into each command's table), the progress bar and log
 * lines on stderr, Ctrl-C, reading a file. The work itself is in model/lmk_tasks.h. */
#ifndef LMK_CLI_MODEL_CMD_H
#define LMK_CLI_MODEL_CMD_H

#include <signal.h>
#include <stddef.h>

#include "lmk_tasks.h"
#include "opt.h"

/* The parsed model and retrieval options of one command. */
typedef struct lmk_model_cli {
    const char *cmd;         /* "run": the prefix of messages */
    lmk_task_opts t;         /* AUTO where not given */
    const char *model;
    long long chunk, piece, fixed_distance;
    int dtype, durability, g_fixed;
    int quiet;               /* no progress bar (--json) */
    lmk_opt_repr repr;       /* --repr */
} lmk_model_cli;

/* Defaults (threads: all cores), callbacks wired to stderr and to Ctrl-C. */
void lmk_model_cli_init(lmk_model_cli *c, const char *cmd);
/* Copy the parsed values into c->t (after lmk_opt_parse); installs the Ctrl-C handler. */
void lmk_model_cli_finish(lmk_model_cli *c);
/* Set by Ctrl-C once lmk_model_cli_finish ran. */
extern volatile sig_atomic_t lmk_cli_interrupted;

/* The rows every model command accepts, for its table: lmk_opt table[] = {own rows...,
 * LMK_MODEL_CLI_OPTS(&c)}. */
extern const lmk_opt_word lmk_cli_top_k_words[], lmk_cli_pos_words[], lmk_cli_mode_words[],
    lmk_cli_next_words[], lmk_cli_retrieve_words[], lmk_cli_prefill_words[],
    lmk_cli_durability_words[], lmk_cli_dtype_words[];
#define LMK_MODEL_CLI_OPTS(c)                                                                 \
    {"--model", 0, LMK_OPT_STR, &(c)->model, 0, 0, NULL, NULL, NULL, "M.gguf",                \
     "the model (llama, qwen2, qwen3, phi3; F32, F16, BF16, Q4-Q8, K-quants, IQ4)"},          \
    {"--top-k", 0, LMK_OPT_INT, &(c)->t.top_k, 0, 1000000, lmk_cli_top_k_words, NULL, NULL,   \
     "K", "blocks retrieved per query and head (default 4 for landmark\n"                        \
     "models, 8 for ordinary ones; 'all')"},                          \
    {"--recent", 0, LMK_OPT_INT, &(c)->t.n_recent, 0, 1000000, NULL, NULL, NULL, "R",         \
     "most recent blocks always kept (default: 2 for landmark models)"},                      \
    {"--mode", 0, LMK_OPT_CHOICE, &(c)->t.mode, 0, 0, lmk_cli_mode_words, NULL, NULL,         \
     "grouped|union", "softmax (default: grouped for landmark models, else union)"},          \
    {"--pos", 0, LMK_OPT_CHOICE, &(c)->t.pos, 0, 0, lmk_cli_pos_words, NULL, NULL,            \
     "slots|original|fixed", "positions of retrieved blocks (default: slots for\n"            \
     "landmark models, fixed for ordinary ones)"},                                            \
    {"--fixed-distance", 0, LMK_OPT_COUNT, &(c)->fixed_distance, 0, 0, NULL, NULL,            \
     &(c)->g_fixed, "D", "distance of retrieved tokens under --pos fixed (default: --local)"},\
    {"--sink", 0, LMK_OPT_INT, &(c)->t.n_sink, 0, 1 << 24, NULL, NULL, NULL, "N",             \
     "first N tokens always attended (ordinary models, default 4)"},                          \
    {"--local", 0, LMK_OPT_INT, &(c)->t.n_local, 0, 1 << 28, NULL, NULL, NULL, "N",           \
     "recent tokens attended directly (ordinary models, default\n"                            \
     "min(4096, trained context / 2))"},                                                      \
    {"--block-len", 0, LMK_OPT_INT, &(c)->t.block_len, 2, 65536, NULL, NULL, NULL, "L",       \
     "block length for ordinary models (default 64)"},                                        \
    {"--repr", 0, LMK_OPT_FN, &(c)->repr, 0, 0, NULL, lmk_opt_repr_fn, NULL, "NAME[:R]",      \
     "block representative of new sessions of ordinary models: mean,\n"                      \
     "keys (every key indexed), attn[:R] (InfLLM), query[:R]\n"                               \
     "(query-aware), outlier[:R] (mean + outlying keys); R default 4;\n"                       \
     "default keys"},                       \
    {"--mem-freq", 0, LMK_OPT_INT, &(c)->t.mem_freq, 0, 65536, NULL, NULL, NULL, "N",         \
     "regular tokens per landmark block (overrides landmark.mem_freq;\n"                      \
     "0 runs a landmark model as an ordinary one)"},                                          \
    {"--landmark-token", 0, LMK_OPT_INT, &(c)->t.landmark_token, 0, 2147483647, NULL, NULL,   \
     NULL, "ID", "overrides landmark.token_id"},                                              \
    {"--next-from", 0, LMK_OPT_CHOICE, &(c)->t.next_from, 0, 0, lmk_cli_next_words, NULL,     \
     NULL, "landmark|regular", "what predicts the token after a full block (default:\n"       \
     "the landmark, as the reference generation does)"},                                      \
    {"--retrieve", 0, LMK_OPT_CHOICE, &(c)->t.retrieve, 0, 0, lmk_cli_retrieve_words, NULL,   \
     NULL, "qhead|kvhead", "per-token retrieval (decoding, questions; default qhead)"},       \
    {"--prefill-retrieve", 0, LMK_OPT_CHOICE, &(c)->t.prefill_chunkwise, 0, 0,                \
     lmk_cli_prefill_words, NULL, NULL, "chunk|token", "document prefill: one block set per " \
     "chunk and head\nranked by the chunk's best score (default), or per token"},             \
    {"--chunk", 0, LMK_OPT_COUNT, &(c)->chunk, 2, 1 << 20, NULL, NULL, NULL, "N",             \
     "positions per prefill step (default 256)"},                                             \
    {"--piece", 0, LMK_OPT_COUNT, &(c)->piece, 1, 9e18, NULL, NULL, NULL, "N",                \
     "tokens between interrupt checks and progress updates (8192)"},                          \
    {"--index", 0, LMK_OPT_STR, &(c)->t.index_spec, 0, 0, NULL, NULL, NULL, "SPEC",           \
     "FAISS index of new sessions (default Flat)"},                                           \
    {"--dtype", 0, LMK_OPT_CHOICE, &(c)->dtype, 0, 0, lmk_cli_dtype_words, NULL, NULL,        \
     "f16|f32", "storage of new sessions (default f16)"},                                     \
    {"--durability", 0, LMK_OPT_CHOICE, &(c)->durability, 0, 0, lmk_cli_durability_words,     \
     NULL, NULL, "full|nometa|none", "fsync policy of `run` sessions (default nometa: a\n"    \
     "power loss may undo the last append; none: no fsync until the\n"                        \
     "end of the run, much faster decoding)"},                                                \
    {"--threads", 't', LMK_OPT_INT, &(c)->t.n_threads, 1, 1024, NULL, NULL, NULL, "N",        \
     "threads (default: all cores)"}

/* Whether path is an input the commands read: a regular file or a pipe (a device such as
 * /dev/zero never ends; a directory or a socket is no text). Documents and haystacks are
 * read a piece at a time, never whole. Returns 0, or 1 after printing the error. */
int lmk_cli_check_input(const char *cmd, const char *path);
/* "slots", "fixed", "original" and "grouped", "union". */
const char *lmk_cli_pos_name(int pos);
const char *lmk_cli_mode_name(int mode);

#endif
