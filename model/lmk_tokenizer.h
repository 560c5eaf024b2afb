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

/* Streaming output: the length of the longest prefix of s[0..n) that does not end inside
 * a UTF-8 character (an incomplete trailing sequence of at most 3 bytes is held back;
 * invalid bytes are not). */
size_t lmk_utf8_complete_prefix(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
