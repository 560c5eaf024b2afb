/* landmark — what the commands do with a model, as library calls: prefill a document into a
 * persistent session and generate after it (resumable after an interrupted prefill), the
 * pass-key retrieval test, and perplexity.
 *
 * Nothing here prints, exits or parses options: messages go to the caller's callbacks,
 * errors come back as an int status (LMK_OK, the project's codes, an errno such as EINTR
 * when the caller's interrupt flag stopped the work) with a message in the caller's err
 * buffer (when given).
 *
 * Settings start from lmk_task_opts_default(); the fields documented as LMK_TASK_AUTO take
 * the model's default (landmark-trained models and ordinary ones differ), or, for a
 * persistent session, the setting the session was run with before.
 */
#ifndef LMK_TASKS_H
#define LMK_TASKS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "lmk_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LMK_TASK_AUTO (-2) /* a setting chosen from the model or the session */

/* A line of information or a warning (no trailing newline). */
typedef void (*lmk_task_log_fn)(void *ud, const char *msg);
/* Progress of a long feed: `what` ("prefill", "prompt", "perplexity"), done of total
 * tokens after elapsed_s seconds; final is 1 on the last call of that feed. */
typedef void (*lmk_task_progress_fn)(void *ud, const char *what, int64_t done, int64_t total,
                                     double elapsed_s, int final);

typedef struct lmk_task_opts {
    /* the model (lmk_task_model_open) */
    int n_threads;        /* default 1 */
    int mem_freq;         /* regular tokens per landmark block; -1: the file's (0: ordinary) */
    int landmark_token;   /* -1: the file's landmark.token_id */
    /* retrieval */
    int top_k;            /* blocks per query and head, or LMK_TOP_K_ALL; AUTO: 4 for
                           * landmark models, 8 for ordinary ones */
    int n_recent;         /* most recent blocks always kept; AUTO: 2 landmark models, else 0 */
    int n_sink;           /* first tokens always attended; AUTO: 4 for ordinary models with
                           * fixed positions, else 0 */
    int n_local;          /* recent tokens attended directly; AUTO: ordinary models
                           * min(4096, trained context / 2), else 0 */
    int pos;              /* lmk_pos_kind; AUTO: slots (landmark models), fixed (others) */
    int mode;             /* lmk_mode; AUTO: grouped (landmark models), union (others) */
    int64_t fixed_distance; /* under LMK_POS_FIXED; AUTO: n_local, or block_len when 0 */
    int next_from;        /* LMK_NEXT_FROM_*; AUTO: LMK_NEXT_FROM_LANDMARK */
    int retrieve;         /* per-token retrieval: LMK_RETRIEVE_QHEAD (default) or KVHEAD */
    int prefill_chunkwise; /* 1 (default): document prefill retrieves one block set per chunk
                            * and head; 0: per token */
    int block_len;        /* block length of ordinary models (default 64) */
    /* block representative of new sessions of ordinary models (landmark models keep their
     * landmark tokens): an lmk_landmark_src (0: the default, LMK_LANDMARK_KEYS), n_repr the
     * entries per block of ATTN, QUERY, OUTLIER (0: 4) */
    int landmark;
    int n_repr;
    int chunk;            /* positions per prefill step (default 256) */
    int64_t piece;        /* tokens between interrupt checks and progress calls (8192) */
    size_t text_window;   /* bytes of a document tokenized at a time (0: 1 MiB,
                           * LMK_TOK_STREAM_WINDOW; see lmk_tokenizer_stream_open) */
    /* new sessions */
    const char *index_spec; /* FAISS index (default "Flat") */
    lmk_dtype dtype;      /* default LMK_DTYPE_F16 */
    lmk_durability durability; /* persistent sessions (default LMK_DURABLE_NOMETA;
                                * NONE: synced once at lmk_run_close) */
    const char *workdir;  /* temporary sessions go here; NULL: $TMPDIR, else /tmp */
    /* the caller */
    lmk_task_log_fn log;  /* may be NULL */
    lmk_task_progress_fn progress; /* may be NULL */
    void *ud;             /* passed to log and progress */
    const volatile sig_atomic_t *interrupt; /* nonzero stops the work (may be NULL) */
    /* What every context gives its session, per layer and chunk (lmk_ctx_opts.record); the
     * pass-key test calls it for its first trial's prompt and question only. May be NULL. */
    void (*record)(void *ud, int layer, int64_t n, const float *k, const float *v,
                   const float *q);
    void *record_ud;
} lmk_task_opts;

lmk_task_opts lmk_task_opts_default(void);

/* Open the model at path with o's n_threads, mem_freq and landmark_token (see
 * lmk_model_open for the codes). */
int lmk_task_model_open(const char *path, const lmk_task_opts *o, lmk_model **out, char *err,
                        size_t cap);

/* Replace o's AUTO fields by the model's defaults. */
void lmk_task_resolve(const lmk_model *m, lmk_task_opts *o);

/* Tokenize len bytes of text (first: the text starts a document, for tokenizers that treat
 * that specially; no BOS is added). *ids is malloc'ed (freed by the caller), *n its length.
 * Returns LMK_OK or the tokenizer's code (ENOMEM). */
int lmk_task_tokenize(const lmk_model *m, const char *text, size_t len, int first,
                      int32_t **ids, int64_t *n, char *err, size_t cap);

/* Whether a document should start with the model's BOS token. */
int lmk_task_want_bos(const lmk_model *m);

/* Sampling: the most likely token when temp <= 0, else a draw from softmax(logits / temp)
 * with *rng (splitmix64 state) advanced; never token `skip` (-1: none). Returns -1 when
 * n_vocab is 0. */
int lmk_task_sample(const float *logits, int n_vocab, double temp, int skip, uint64_t *rng);
/* The next value of the splitmix64 generator state *s. */
uint64_t lmk_task_rng_next(uint64_t *s);

/* ---- a persistent session run with a model ----
 * Beside the engine's files the session directory holds model-run.txt (the model path and
 * the settings the session is run with, and a document whose prefill is pending) and
 * model-run.logits (the prediction after the last token), so a later run with no model and
 * no document continues the session. */

typedef struct lmk_run lmk_run;

/* Whether dir holds a session (*exists), and the model it records (copied into model, ""
 * when none; model may be NULL). Returns LMK_OK. */
int lmk_run_probe(const char *dir, int *exists, char *model, size_t cap);

/* Open (or create) the session in dir for the model at model_path (NULL: the one the
 * session records). o's AUTO fields, and mem_freq when -1, take the session's recorded
 * settings, then the model's defaults; block_len is always the session's when it records
 * one. The settings (with every AUTO resolved) are in lmk_run_settings. On failure *out is
 * NULL; a session written by another model or another key frame gives LMK_EMISMATCH with a
 * message naming both fingerprints. */
int lmk_run_open(const char *dir, const char *model_path, const lmk_task_opts *o,
                 lmk_run **out, char *err, size_t cap);

/* lmk_run_open with a model already loaded, shared by any number of runs on any threads
 * (the weights, tokenizer and tables of a model are only read once it is open; each run
 * has its own context, scratch buffers and sampling state). m is borrowed: it must outlive
 * the run, and lmk_run_close leaves it open. model_path is the file m was opened from
 * (recorded with the session). m must have been opened with o's n_threads, mem_freq and
 * landmark_token (lmk_task_model_open); a session recorded with other landmark settings
 * (e.g. run with mem_freq 0) gets a model of its own for this run, opened from
 * model_path. Returns as lmk_run_open; LMK_EINVAL when m or model_path is NULL. */
int lmk_run_open_model(const char *dir, lmk_model *m, const char *model_path,
                       const lmk_task_opts *o, lmk_run **out, char *err, size_t cap);

/* Sync (under LMK_DURABLE_NONE; a failure is reported through the log callback), close.
 * Accepts NULL. */
void lmk_run_close(lmk_run *r);

/* The resolved settings and the model (borrowed: valid until lmk_run_close). */
const lmk_task_opts *lmk_run_settings(const lmk_run *r);
lmk_model *lmk_run_model(const lmk_run *r);
/* Regular tokens in the session now. */
int64_t lmk_run_n_tokens(const lmk_run *r);

typedef struct lmk_run_prefill_stats {
    int64_t resumed;    /* document tokens already in the session (an interrupted prefill) */
    int64_t tokens;     /* tokens fed (document and prompt) */
    int64_t positions;  /* positions they took, landmarks included */
    double seconds;
} lmk_run_prefill_stats;

/* Reads up to cap bytes of a document into buf; *got = 0 at its end. Returns 0 or an errno
 * (EINTR included). */
typedef int (*lmk_task_read_fn)(void *ud, char *buf, size_t cap, size_t *got);

/* Append a document (doc_id names it, e.g. its real path) read through read (NULL: no
 * document) and then a prompt (may be NULL) to the session, BOS first on a new session when
 * the model wants it. The document is read, tokenized and fed a piece at a time
 * (lmk_tokenizer_stream_* with o->text_window), so memory does not grow with its length:
 * about text_window bytes of text, its tokens, and o->piece tokens waiting. Its tokens are
 * those of tokenizing it whole wherever the text has a safe cut in every text_window bytes
 * (lmk_tokenizer.h; a log line counts the stretches where it had none), and never depend
 * on how read() splits it. The document is recorded as pending until its prefill
 * completes: the same doc_id after an interruption is read again from its start and
 * continues where the session stops (a log line says so), with the same forward steps as an
 * uninterrupted prefill (pieces end at multiples of o->piece of the document's tokens), so
 * the stored data is the same wherever it was cut. Once the document is in, the session's
 * length is recorded as a rewind mark (with the prediction there) until lmk_run_save: a run
 * killed during its prompt or generation is cut back to the mark by the next lmk_run_open
 * (a log line says so), and rerunning it redoes them. Document prefill uses chunk retrieval
 * when prefill_chunkwise; the prompt per-token retrieval unless it is over 512 tokens.
 * Progress calls under "prefill" give 0 as the total until the last one. Returns LMK_OK,
 * EINTR (interrupted; rerun to resume), LMK_EINVAL (the session holds more of doc_id than
 * the document has), read()'s errno, or an error. */
int lmk_run_prefill_read(lmk_run *r, const char *doc_id, lmk_task_read_fn read, void *read_ud,
                         const char *prompt, size_t prompt_len, lmk_run_prefill_stats *st,
                         char *err, size_t cap);

/* lmk_run_prefill_read with the document in memory: doc_len bytes at doc (NULL: none). */
int lmk_run_prefill(lmk_run *r, const char *doc_id, const char *doc, size_t doc_len,
                    const char *prompt, size_t prompt_len, lmk_run_prefill_stats *st,
                    char *err, size_t cap);

/* Chat framing of the next lmk_run_prefill (model/lmk_chat.h makes the strings): template
 * text before the document (doc_head) and around the prompt (prompt_head before it,
 * prompt_tail after), tokenized with the model's control tokens recognized, and
 * prompt_sep, plain text between the document and the prompt. The document and the prompt
 * themselves are never searched for control tokens. Any field may be NULL. The strings are
 * borrowed until lmk_run_prefill returns; the framing applies to that call only. */
typedef struct lmk_run_frame {
    const char *doc_head, *prompt_head, *prompt_sep, *prompt_tail;
} lmk_run_frame;
void lmk_run_set_frame(lmk_run *r, const lmk_run_frame *f);

/* lmk_run_prefill of a prompt given as segments (no document, no frame): template text
 * (special = 1) tokenized with the model's control tokens recognized, content (0) never,
 * e.g. a chat rendering's pieces (lmk_chat_continue). BOS first on a new session when the
 * model wants it, the rewind mark, and retrieval as for a prompt. The segments are
 * borrowed for the call. Returns as lmk_run_prefill. */
int lmk_run_prefill_segments(lmk_run *r, const lmk_tok_segment *seg, size_t n_seg,
                             lmk_run_prefill_stats *st, char *err, size_t cap);

/* Called with each generated token's text (bytes, not NUL-terminated). */
typedef void (*lmk_task_token_fn)(void *ud, const char *piece, size_t len);

/* Generate up to n tokens after the session's last prediction (stops at an end-of-turn or
 * end-of-text token, lmk_tokenizer_is_eog, which is not fed; or when the
 * interrupt flag is set: not an error), sampled with temp and seed (lmk_task_sample),
 * handing each to on_token. *generated counts them, *seconds the time taken. Returns
 * LMK_OK, LMK_ESTATE (nothing to continue from: an empty session, or one without a saved
 * prediction), or a feed error. */
int lmk_run_generate(lmk_run *r, int64_t n, double temp, uint64_t seed,
                     lmk_task_token_fn on_token, void *ud, int64_t *generated, double *seconds,
                     char *err, size_t cap);

/* Save the prediction after the session's last token (model-run.logits) and the settings,
 * for a later run. Returns LMK_OK or an errno. */
int lmk_run_save(lmk_run *r, char *err, size_t cap);

/* Open a session transaction (lmk_session_begin): what lmk_run_prefill and lmk_run_generate
 * add after it is undone by lmk_run_abort (the tokens, and the prediction goes back to the
 * one before), so a question can be answered without changing the session; a process
 * killed meanwhile leaves the session as it was. The writes must fit the transaction limit
 * (LMK_SESSION_TXN_MAX_BYTES: a feed over it fails with LMK_EINVAL). Do not call
 * lmk_run_save in between; lmk_run_close aborts an open transaction.
 * Returns LMK_OK, LMK_ESTATE (one is open), the session's error, ENOMEM. */
int lmk_run_begin(lmk_run *r, char *err, size_t cap);
/* Undo the transaction of lmk_run_begin. Returns LMK_OK, LMK_ESTATE (none open), or the
 * session's error (the handle should then be closed). */
int lmk_run_abort(lmk_run *r, char *err, size_t cap);

/* ---- pass-key retrieval ----
 * Hide "The pass key is NNNNN. Remember it. NNNNN is the pass key. " at a depth of a
 * tokens-long haystack, ask " What is the pass key? The pass key is" and compare the first
 * five non-space characters of the greedy answer with the key. Each trial runs on a fresh
 * temporary session (under workdir), removed afterwards. */

#define LMK_PASSKEY_MAX_DEPTHS 64

typedef struct lmk_passkey_trial {
    int64_t index;        /* 0-based */
    double depth;
    int key;
    const char *answer;   /* borrowed for the duration of the callback */
    int ok;
    double prefill_s;
    int64_t prefill_tokens;
} lmk_passkey_trial;

typedef struct lmk_passkey_opts {
    int64_t tokens;       /* prompt length in regular tokens */
    int64_t trials;       /* default 10 */
    const double *depths; /* n_depths depths in [0, 1] cycled through, or NULL: uniform */
    int n_depths;         /* <= LMK_PASSKEY_MAX_DEPTHS */
    const char *haystack; /* text read from a random line on (wrapping), or NULL: a filler */
    size_t haystack_len;  /* >= 1024 when haystack or haystack_read is given */
    /* Or (haystack NULL) a haystack of haystack_len bytes read through haystack_read: up to
     * len bytes at offset off into buf, *got of them (fewer only at the end); 0 or an
     * errno. Each trial reads about 4 bytes per token from its offset, never the whole. */
    int (*haystack_read)(void *ud, uint64_t off, char *buf, size_t len, size_t *got);
    void *haystack_ud;
    uint64_t seed;        /* keys, offsets and depths (default 42) */
    void (*on_trial)(void *ud, const lmk_passkey_trial *t); /* may be NULL */
    void *ud;
} lmk_passkey_opts;

lmk_passkey_opts lmk_passkey_opts_default(void);

typedef struct lmk_passkey_result {
    int correct;
    double accuracy;                /* correct / trials */
    double prefill_tokens_per_s, decode_tokens_per_s;
    int n_bins;                     /* the depths given, or 5 uniform bins */
    struct {
        double depth;               /* the depth, or a uniform bin's centre */
        int trials, correct;
    } bins[LMK_PASSKEY_MAX_DEPTHS];
    lmk_task_opts settings;         /* as run, AUTO resolved */
} lmk_passkey_result;

/* Run the test with model m. Returns LMK_OK, LMK_EINVAL (tokens too small for the needle
 * and the question, bad depths or haystack), EINTR, or an error. */
int lmk_passkey_eval(lmk_model *m, const lmk_task_opts *o, const lmk_passkey_opts *p,
                     lmk_passkey_result *res, char *err, size_t cap);

/* ---- perplexity ---- */

typedef struct lmk_perplexity_result {
    int64_t tokens;           /* tokens fed */
    int64_t scored;           /* regular tokens scored (each after the first) */
    double perplexity, tokens_per_s;
    int has_full;             /* full attention was run (n <= dense_max) */
    double perplexity_full, full_tokens_per_s;
    lmk_task_opts settings;   /* as run, AUTO resolved */
} lmk_perplexity_result;

/* Perplexity of ids[0..n) (n >= 2) with retrieval attention over a temporary session, and
 * with full attention for comparison when 0 < n <= dense_max. Progress calls under
 * "perplexity"; the interrupt flag is not consulted. Returns LMK_OK, LMK_EINVAL (n < 2), or
 * an error. */
int lmk_perplexity_eval(lmk_model *m, const lmk_task_opts *o, const int32_t *ids, int64_t n,
                        int64_t dense_max, lmk_perplexity_result *res, char *err, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
