/* landmark serve: the requests a client sends, parsed and validated before anything runs.
 * Pure functions over bytes (jansson parses the JSON), shared by the server and its fuzz
 * target: nothing here touches a session or the model.
 *
 * Every parse function returns 0, or an HTTP status (400, 413, ...) with an OpenAI-style
 * message in err and the offending field in param (may be "" when none). */
#ifndef LMK_CLI_SERVE_REQ_H
#define LMK_CLI_SERVE_REQ_H

#include <stddef.h>

#define LMK_SERVE_ID_MAX 64    /* session id: 1..64 of [A-Za-z0-9_-], not starting with '-' */
#define LMK_SERVE_MAX_STOP 4   /* stop sequences per request (as OpenAI) */
#define LMK_SERVE_STOP_LEN 64  /* bytes per stop sequence */
#define LMK_SERVE_MAX_MSGS 256 /* chat messages per request */

/* Whether s is a valid session id (nothing that can name a path outside DIR). */
int lmk_serve_id_valid(const char *s);

typedef struct lmk_serve_msg {
    char *role;    /* "system", "user" or "assistant" (malloc'ed) */
    char *content; /* malloc'ed */
} lmk_serve_msg;

/* POST /v1/completions and /v1/chat/completions. */
typedef struct lmk_serve_gen {
    int chat;
    char *prompt;          /* completions: the prompt (malloc'ed; "" when absent) */
    size_t prompt_len;
    lmk_serve_msg *msgs;   /* chat: the messages (n_msgs >= 1) */
    int n_msgs;
    char session[LMK_SERVE_ID_MAX + 1]; /* "" when none */
    int persist;           /* default 1 */
    int stream;            /* default 0 */
    long long max_tokens;  /* default 16 (completions) or 256 (chat) */
    double temperature;    /* default 1 */
    unsigned long long seed; /* default 42 */
    char stop[LMK_SERVE_MAX_STOP][LMK_SERVE_STOP_LEN + 1];
    int n_stop;
    int include_usage;     /* stream_options.include_usage (the usage block is always sent) */
} lmk_serve_gen;

/* Parse a generation request body (len bytes, not NUL-terminated) with max_tokens at most
 * max_tokens_limit. On failure out holds nothing to free. */
int lmk_serve_parse_gen(const char *body, size_t len, int chat, long long max_tokens_limit,
                        lmk_serve_gen *out, char *err, size_t cap, char *param, size_t pcap);
void lmk_serve_gen_free(lmk_serve_gen *g);

/* POST /v1/sessions: {"id"?: ID, "document"?: text, "prompt"?: text};
 * POST /v1/sessions/ID/append: {"text": text};
 * POST /v1/sessions/ID/fork: {"id"?: ID}.
 * The strings are malloc'ed (NULL when absent). An empty body is an empty object. */
typedef struct lmk_serve_sess_req {
    char id[LMK_SERVE_ID_MAX + 1]; /* "" when none */
    char *document;
    size_t document_len;
    char *text;            /* append's text, or create's prompt */
    size_t text_len;
} lmk_serve_sess_req;

enum { LMK_SERVE_SESS_CREATE, LMK_SERVE_SESS_APPEND, LMK_SERVE_SESS_FORK };

int lmk_serve_parse_sess(const char *body, size_t len, int kind, lmk_serve_sess_req *out,
                         char *err, size_t cap, char *param, size_t pcap);
void lmk_serve_sess_free(lmk_serve_sess_req *r);

/* The OpenAI-style error body {"error": {"message", "type", "param", "code"}} for status,
 * malloc'ed (NULL when out of memory). */
char *lmk_serve_error_json(int status, const char *message, const char *param);

/* Copy len bytes of text into out (cap >= 3 * len + 1) with every invalid UTF-8 sequence
 * replaced by U+FFFD; returns the length written. */
size_t lmk_serve_utf8_clean(const char *text, size_t len, char *out);
/* The length of the longest prefix of text[0..len) that ends on a whole UTF-8 character
 * (an incomplete sequence at the end is held back for the next piece). */
size_t lmk_serve_utf8_complete(const char *text, size_t len);

#endif
