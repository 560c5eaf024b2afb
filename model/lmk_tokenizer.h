/* landmark — tokenizers read from GGUF metadata (tokenizer.ggml.*).
 *
 * Kinds:
 * - LMK_TOK_BYTE: a `llama` vocabulary with no ordinary pieces, only <0xNN> byte tokens
 *   (type BYTE) and control tokens: text is tokenized as its bytes, with no space escaping
 *   or prefix (the vocabulary cannot express them otherwise; the model in ../shared/models
 *   is such a model).
 * - LMK_TOK_SPM: SentencePiece BPE as llama.cpp runs it for `llama` vocabularies: spaces
 *   become U+2581, a leading U+2581 is added (tokenizer.ggml.add_space_prefix, default
 *   true), adjacent pieces are merged highest score first, and characters with no piece fall
 *   back to their <0xNN> byte tokens.
 * - LMK_TOK_GPT2: byte-level BPE (`gpt2`) as llama.cpp runs it: the text is pre-split by
 *   the regex of its tokenizer.ggml.pre (llama-bpe/llama3 and their aliases, qwen2 and
 *   deepseek-r1-qwen, gpt-2 and its aliases; any other value, or none, gets the gpt-2
 *   split — llama.cpp's "default" applies further splits, so such models may differ),
 *   bytes are mapped to printable code points, then merged by rank from
 *   tokenizer.ggml.merges; llama3-style vocabularies take a whole pre-token that is a
 *   token as is (ignore_merges). Invalid UTF-8 becomes U+FFFD first, as in llama.cpp.
 *
 * Special tokens (types CONTROL, USER_DEFINED, UNKNOWN): user-defined tokens are always
 * matched in the text first (longest first), control and unknown ones only when the caller
 * asks (LMK_TOK_PARSE_SPECIAL: for chat templates, never for a document). Tokens whose text
 * is an end-of-turn marker (<|eot_id|>, <|im_end|>, <|end|>, ...) count as control tokens
 * and, with EOS and tokenizer.ggml.eot_token_id, end generation (lmk_tokenizer_is_eog).
 *
 * For every vocabulary llama.cpp ships test vectors for among these (llama-spm, phi-3,
 * llama-bpe, qwen2, gpt-2) the ids equal llama.cpp's (tests/llama/test_vocab.c).
 *
 * A handle is immutable after creation and may be shared between threads.
 */
#ifndef LMK_TOKENIZER_H
#define LMK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "lmk_gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LMK_TOK_BYTE = 0, LMK_TOK_SPM = 1, LMK_TOK_GPT2 = 2 } lmk_tok_kind;

typedef struct lmk_tokenizer lmk_tokenizer;

/* Build the tokenizer described by g's metadata. On failure *out is NULL and a message
 * naming the missing or bad key is copied to errmsg.
 * Returns LMK_OK, LMK_ENOTFOUND (a required key is missing), LMK_EUNSUPPORTED (another
 * tokenizer.ggml.model), LMK_EFORMAT (inconsistent arrays), ENOMEM. */
int lmk_tokenizer_from_gguf(lmk_gguf *g, lmk_tokenizer **out, char *errmsg, size_t cap);
void lmk_tokenizer_free(lmk_tokenizer *t);

lmk_tok_kind lmk_tokenizer_kind(const lmk_tokenizer *t);
int lmk_tokenizer_n_vocab(const lmk_tokenizer *t);
int lmk_tokenizer_bos(const lmk_tokenizer *t); /* -1 when none */
int lmk_tokenizer_eos(const lmk_tokenizer *t); /* -1 when none */
/* Id of the token whose text is exactly s (n bytes), or -1. */
int lmk_tokenizer_find(const lmk_tokenizer *t, const char *s, size_t n);

/* Upper bound on the tokens lmk_tokenizer_encode and lmk_tokenizer_tokenize produce for
 * len bytes of text, BOS and EOS included, for any vocabulary: 6 * len + 2 (a space may
 * take three byte tokens, an invalid byte in BPE the up to six bytes of a mapped U+FFFD). */
size_t lmk_tokenizer_max_tokens(size_t len);

/* Tokenize len bytes (any bytes; invalid UTF-8 falls back to byte tokens where the
 * vocabulary has them). ids must hold lmk_tokenizer_max_tokens(len) entries; *n_out is
 * set. `first` says whether the text starts a document (SentencePiece adds its space
 * prefix only then).
 * Returns LMK_OK, LMK_EUNSUPPORTED (a byte the vocabulary cannot express), ENOMEM. */
int lmk_tokenizer_encode(const lmk_tokenizer *t, const char *text, size_t len, int first,
                         int32_t *ids, size_t *n_out);

/* Flags of lmk_tokenizer_tokenize. */
#define LMK_TOK_ADD_SPECIAL 1u   /* BOS and/or EOS as the vocabulary asks (add_bos/add_eos) */
#define LMK_TOK_PARSE_SPECIAL 2u /* control tokens written in the text become those tokens */
#define LMK_TOK_CONTINUE 4u      /* the text continues a document: no SentencePiece space
                                  * prefix before its first piece */

/* Tokenize len bytes as llama.cpp's llama_tokenize(text, add_special, parse_special) does.
 * ids has room for cap entries (lmk_tokenizer_max_tokens(len) always suffices); *n_out is
 * set. Returns LMK_OK, LMK_EINVAL (cap too small: *n_out is then the count needed),
 * LMK_EUNSUPPORTED (a byte the vocabulary cannot express), ENOMEM. */
int lmk_tokenizer_tokenize(const lmk_tokenizer *t, const char *text, size_t len,
                           unsigned flags, int32_t *ids, size_t cap, size_t *n_out);

/* A piece of text, and whether control tokens written in it are recognized. */
typedef struct lmk_tok_segment {
    const char *text;
    size_t len;
    int special;
} lmk_tok_segment;

/* Tokenize the concatenation of seg[0..n_seg) as one text, with control tokens recognized
 * only inside the segments marked special (a chat template's own text, never the user's):
 * text fragments that meet across segments are tokenized together, as llama.cpp does with
 * the whole rendered chat. flags: LMK_TOK_ADD_SPECIAL, LMK_TOK_CONTINUE (PARSE_SPECIAL is
 * per segment). Bound and returns as lmk_tokenizer_tokenize, len being the total length. */
int lmk_tokenizer_tokenize_segments(const lmk_tokenizer *t, const lmk_tok_segment *seg,
                                    size_t n_seg, unsigned flags, int32_t *ids, size_t cap,
                                    size_t *n_out);

/* Whether tokenize adds BOS / EOS under LMK_TOK_ADD_SPECIAL (tokenizer.ggml.add_bos_token,
 * add_eos_token; defaults as llama.cpp's: BOS for `llama` and llama3-style vocabularies). */
int lmk_tokenizer_add_bos(const lmk_tokenizer *t);
int lmk_tokenizer_add_eos(const lmk_tokenizer *t);
/* The pre-tokenizer in use: "llama3", "qwen2", "gpt2" (also for names llama.cpp does not
 * know), "default" (llama.cpp's DEFAULT: "default" or no tokenizer.ggml.pre), or "" for
 * SentencePiece and byte vocabularies. */
const char *lmk_tokenizer_pre(const lmk_tokenizer *t);
/* Whether id ends a turn or the text (EOS, EOT, end-of-turn markers). */
int lmk_tokenizer_is_eog(const lmk_tokenizer *t, int32_t id);
/* Whether id is a control (or unknown) token, which text never produces by default. */
int lmk_tokenizer_is_control(const lmk_tokenizer *t, int32_t id);

/* The bytes token id stands for (U+2581 as a space, <0xNN> as the byte, control tokens as
 * nothing). Writes up to cap bytes and returns the full length, or -1 for an id out of
 * range. */
int lmk_tokenizer_piece(const lmk_tokenizer *t, int32_t id, char *buf, size_t cap);
/* The same, with control and unknown tokens as their text (llama.cpp's special = true). */
int lmk_tokenizer_piece_special(const lmk_tokenizer *t, int32_t id, char *buf, size_t cap);

/* The text of ids[0..n) as llama.cpp's llama_detokenize(remove_special = false,
 * unparse_special = special) gives it without its clean-up pass: the pieces concatenated,
 * the SentencePiece space prefix of the first piece removed. Writes up to cap bytes and
 * returns the full length (-1: an id out of range). */
long long lmk_tokenizer_decode(const lmk_tokenizer *t, const int32_t *ids, size_t n,
                               int special, char *buf, size_t cap);

/* ---- streaming input: a text of any length in bounded memory ----
 *
 * A document is tokenized in pieces cut where tokenizing the two sides apart gives the ids
 * of tokenizing them together: a "safe cut". The cut rules, for the text since the last
 * cut (the buffer), with M = the longest token's length + 4 bytes of context needed on
 * both sides of a cut:
 * - LMK_TOK_BYTE: every position (one token per byte).
 * - LMK_TOK_SPM: just before a space that follows a non-space, else (for text without
 *   spaces) before any character, when no vocabulary token's text spans the position in
 *   the U+2581-escaped text (so no merge can cross it), no lead byte in the 3 bytes before
 *   it reaches past it (the symbols stay aligned), and no user-defined token touches it
 *   (the space prefix after a special token). The continuing piece gets no space prefix
 *   (LMK_TOK_CONTINUE), as in the whole text.
 * - LMK_TOK_GPT2: before a space between two ASCII letters ("a b" cut as "a" | " b"): for
 *   every supported pre-tokenizer (gpt2, llama3, qwen2, default) a pre-token ends at that
 *   position both in the whole text and at the end of the left piece (the space belongs to
 *   the following word's pre-token; a cut after a space, a newline or inside a run of
 *   spaces is not safe: "\s+(?!\S)" and "\s*[\r\n]+" look past it), UTF-8 decoding is in
 *   step at ASCII bytes, and no user-defined token touches it.
 * - Every kind, with phi-3's space stripping around special tokens: no user-defined token
 *   at either end of the white space around the position.
 * Positions with fewer than M bytes on either side in the buffer are not considered.
 *
 * The stream keeps at most window + M bytes (window: LMK_TOK_STREAM_WINDOW by default) and
 * cuts only when that buffer is full and more text comes, at the last safe cut at or
 * before `window` bytes into it. When the buffer holds none (a run of window bytes with no
 * space between letters, e.g. code or CJK text through a byte-level BPE, or random bytes),
 * it cuts at the last character boundary at or before `window` (an "inexact" cut, counted
 * by lmk_tokenizer_stream_inexact): the ids there may differ from the whole text's (a merge
 * or a pre-token across the cut is lost). Either way the cut positions depend only on the
 * text and the window, never on how the text is split between calls, so the same text
 * always gives the same ids. */

#define LMK_TOK_STREAM_WINDOW ((size_t)1 << 20) /* default window: 1 MiB */

/* The largest safe cut p <= limit of text[0..len), or 0 when there is none (see above):
 * text[0] must start the text or follow a safe cut; what follows text[len) does not
 * matter. Tokenizing text[0..p) and then text[p..) with LMK_TOK_CONTINUE gives the ids of
 * tokenizing text[0..) at once (neither part with LMK_TOK_PARSE_SPECIAL). */
size_t lmk_tokenizer_safe_cut(const lmk_tokenizer *t, const char *text, size_t len,
                              size_t limit);

typedef struct lmk_tokenizer_stream lmk_tokenizer_stream;

/* A stream over tokenizer t (borrowed: must outlive the stream). flags: LMK_TOK_CONTINUE
 * when the text continues a document (no SentencePiece space prefix); others are ignored
 * (no BOS or EOS is added, control tokens are never parsed in the text). head (may be
 * NULL; copied) is text before the stream's first byte with control tokens recognized,
 * e.g. a chat template's header: it is tokenized together with the first piece, as
 * lmk_tokenizer_tokenize_segments would. window 0: LMK_TOK_STREAM_WINDOW; it is raised to
 * 2 M when smaller. On failure *out is NULL. Returns LMK_OK, ENOMEM. */
int lmk_tokenizer_stream_open(const lmk_tokenizer *t, unsigned flags, const char *head,
                              size_t head_len, size_t window, lmk_tokenizer_stream **out);
void lmk_tokenizer_stream_free(lmk_tokenizer_stream *s);

/* Hand the stream up to len more bytes: *used of them are taken (fewer than len when its
 * buffer is full: call again with the rest). When the buffer was full and text follows,
 * one piece is cut and tokenized first: *ids, *n are its ids (borrowed: valid until the
 * next call on s); otherwise *n is 0. A loop that calls it until every byte is used and then
 * lmk_tokenizer_stream_finish gets the text's ids in order. Returns LMK_OK, LMK_ESTATE
 * (after finish), LMK_EUNSUPPORTED (a byte the vocabulary cannot express), ENOMEM. */
int lmk_tokenizer_stream_write(lmk_tokenizer_stream *s, const char *text, size_t len,
                               size_t *used, const int32_t **ids, size_t *n);
/* The ids of the rest of the text (*ids borrowed as above); later writes fail. Returns as
 * lmk_tokenizer_stream_write. */
int lmk_tokenizer_stream_finish(lmk_tokenizer_stream *s, const int32_t **ids, size_t *n);
/* Cuts made with no safe cut in the window so far (0: the ids equal the whole text's). */
size_t lmk_tokenizer_stream_inexact(const lmk_tokenizer_stream *s);

/* Streaming output: the length of the longest prefix of s[0..n) that does not end inside
 * a UTF-8 character (an incomplete trailing sequence of at most 3 bytes is held back;
 * invalid bytes are not). */
size_t lmk_utf8_complete_prefix(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
