/* landmark — chat formats: a system prompt, a document and questions rendered the way the
 * model was trained to see a conversation, for `landmark run --chat`.
 *
 * The formats are llama.cpp's built-in ones (llm_chat_apply_template in its
 * src/llama-chat.cpp; no Jinja is run): a model's tokenizer.chat_template is matched to one
 * by the same substrings llama.cpp looks for, or the caller names it. The renderings equal
 * llama.cpp's byte for byte (tests/llama/test_chat_ref.c).
 *
 * A session holds one conversation: system prompt and the user's first message, which is
 * the document, "\n\n", and the first question; then answers and later questions. The
 * document part is prefilled once (lmk_chat_doc_frame), each question is a suffix
 * (lmk_chat_question_frame) that closes the previous answer when there is one, so the
 * text fed equals the rendering of the whole conversation (lmk_chat_render with
 * add_assistant) with the answers as generated. Template text is tokenized with control
 * tokens recognized, the document and the questions never (lmk_tok_segment).
 */
#ifndef LMK_CHAT_H
#define LMK_CHAT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LMK_CHAT_LLAMA3 = 0,       /* "llama3": <|start_header_id|>role<|end_header_id|> */
    LMK_CHAT_CHATML,           /* "chatml": <|im_start|>role ... <|im_end|> (Qwen) */
    LMK_CHAT_MISTRAL_V1,       /* "mistral-v1": " [INST] ... [/INST]" */
    LMK_CHAT_MISTRAL_V3,       /* "mistral-v3": "[INST] ...[/INST]" */
    LMK_CHAT_MISTRAL_V3_TEKKEN, /* "mistral-v3-tekken": "[INST]...[/INST]" */
    LMK_CHAT_MISTRAL_V7,       /* "mistral-v7": [SYSTEM_PROMPT] ... [INST] ... */
    LMK_CHAT_PHI3,             /* "phi3": <|role|> ... <|end|> */
    LMK_CHAT_N_FORMATS
} lmk_chat_format;

/* llama.cpp's name of f ("llama3", "chatml", ...), or NULL when out of range. */
const char *lmk_chat_format_name(int f);
/* The format named name, or -1. */
int lmk_chat_format_from_name(const char *name);
/* The names of all formats, comma-separated, for messages ("llama3, chatml, ..."). */
const char *lmk_chat_format_list(void);

/* The format a chat template (tokenizer.chat_template, a Jinja text) stands for, by the
 * substrings llama.cpp's llm_chat_detect_template tests, or -1 (unknown, or a format not
 * supported here). A format name is accepted as well. */
int lmk_chat_detect(const char *tmpl);

typedef struct lmk_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} lmk_chat_msg;

/* Render msgs[0..n) in format f, then the assistant's header when add_assistant, as
 * llama.cpp's llama_chat_apply_template. Writes up to cap bytes (NUL-terminated when there
 * is room) and returns the full length, or -1 for an unknown format. */
long long lmk_chat_render(int f, const lmk_chat_msg *msgs, size_t n, int add_assistant,
                          char *buf, size_t cap);

/* The template text before the document: system (NULL or "" for none) and the user's
 * header. *head is malloc'ed. *skip is the number of leading bytes of the document the
 * format drops (Llama 3 trims its messages: the document's leading white space).
 * Returns 0, LMK_EINVAL (unknown format), ENOMEM. */
int lmk_chat_doc_frame(int f, const char *system, const char *doc, size_t doc_len,
                       char **head, size_t *skip);
/* Whether format f drops a document's leading white space (the *skip above), for a
 * document read as a stream. */
int lmk_chat_doc_trims(int f);

/* The frame of a question: *head (template text before it; "" after a document, where
 * the question continues the user's message), *sep (content between the document and
 * the question: "\n\n" after a document, else ""), *tail (the end of the user's message
 * and the assistant's header), each malloc'ed; *q_off, *q_len: the part of q the format
 * keeps (Llama 3 trims). turn: 0 for the first question, else the number of answers so
 * far (the head then closes the last answer); after_doc: the first message began with a
 * document; system: used when the question opens the conversation.
 * Returns 0, LMK_EINVAL, ENOMEM. */
int lmk_chat_question_frame(int f, const char *system, int after_doc, int turn,
                            const char *q, size_t q_len, char **head, char **sep,
                            char **tail, size_t *q_off, size_t *q_len_out);

/* ---- the conversation state of a session: DIR/model-chat.txt ---- */
typedef struct lmk_chat_state {
    int format;  /* -1: none recorded */
    int has_doc; /* the first message began with a document */
    int turns;   /* questions asked */
} lmk_chat_state;

/* A rendering's parts in order: template text (tokenized with control tokens recognized)
 * or message content (never searched for them). off and len are bytes of the text. */
typedef struct lmk_chat_piece {
    size_t off, len;
    int content;
} lmk_chat_piece;

/* The text that carries a session's conversation on with msgs[0..n) (the new messages
 * only), so that what the session holds and this text together equal the rendering of the
 * whole conversation (lmk_chat_render, the answers as generated) from the point prior
 * describes:
 *   - prior NULL, or no turns and no document: the conversation starts here, the text is
 *     the whole rendering of msgs (system prompt included);
 *   - prior->turns > 0: the session ends inside the last answer: the text closes it, then
 *     renders msgs (no second system prefix);
 *   - no turns and has_doc: the session ends inside the first user message, after its
 *     document: a user message msgs[0] continues it after "\n\n", as
 *     lmk_chat_question_frame does.
 * add_assistant ends the text with the assistant's header (not in every format: see
 * lmk_chat_render). No BOS is written (the caller adds it to a new session).
 * *out (NUL-terminated, *out_len bytes) and *pieces (*n_pieces, covering *out) are
 * malloc'ed. Returns 0, LMK_EINVAL (unknown format), ENOMEM; on failure nothing is
 * allocated. */
int lmk_chat_continue(int f, const lmk_chat_state *prior, const lmk_chat_msg *msgs, size_t n,
                      int add_assistant, char **out, size_t *out_len, lmk_chat_piece **pieces,
                      size_t *n_pieces);

/* Read dir's state (format -1 and zeros when there is none). Returns 0 or an errno. */
int lmk_chat_state_read(const char *dir, lmk_chat_state *st);
/* Write it (atomically: a temporary file renamed). Returns 0 or an errno. */
int lmk_chat_state_write(const char *dir, const lmk_chat_state *st);

#ifdef __cplusplus
}
#endif
#endif
