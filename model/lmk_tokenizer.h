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
 * - LMK_TOK_GPT2: byte-level BPE (`gpt2`): bytes mapped to printable code points, a
 *   GPT-2-style pre-split (letters, digits, other, spaces, English contractions), then merges
 *   by rank from tokenizer.ggml.merges. The pre-split is the original GPT-2 one for every
 *   tokenizer.ggml.pre; models whose pre-tokenizer differs (e.g. llama3's digit groups)
 *   tokenize slightly differently from their reference.
 *
 * Special (control) tokens are never produced from text. A handle is immutable after
 * creation and may be shared between threads.
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

/* Upper bound on the tokens lmk_tokenizer_encode produces for len bytes of text. */
size_t lmk_tokenizer_max_tokens(size_t len);

/* Tokenize len bytes (any bytes; invalid UTF-8 falls back to byte tokens where the
 * vocabulary has them). ids must hold lmk_tokenizer_max_tokens(len) entries; *n_out is
 * set. `first` says whether the text starts a document (SentencePiece adds its space
 * prefix only then).
 * Returns LMK_OK, LMK_EUNSUPPORTED (a byte the vocabulary cannot express), ENOMEM. */
int lmk_tokenizer_encode(const lmk_tokenizer *t, const char *text, size_t len, int first,
                         int32_t *ids, size_t *n_out);

/* The bytes token id stands for (U+2581 as a space, <0xNN> as the byte, control tokens as
 * nothing). Writes up to cap bytes and returns the full length, or -1 for an id out of
 * range. */
int lmk_tokenizer_piece(const lmk_tokenizer *t, int32_t id, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
