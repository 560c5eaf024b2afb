/* landmark serve: request parsing and validation (see serve_req.h). */
#include "serve_req.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(int status, char *err, size_t cap, char *param, size_t pcap, const char *p,
                const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int fail(int status, char *err, size_t cap, char *param, size_t pcap, const char *p,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    snprintf(param, pcap, "%s", p ? p : "");
    return status;
}

#define FAIL(p, ...) fail(400, err, cap, param, pcap, p, __VA_ARGS__)

int lmk_serve_id_valid(const char *s)
{
    size_t n = 0;
    if (!s || !*s || *s == '-')
        return 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
        if (n >= LMK_SERVE_ID_MAX)
            return 0;
    }
    return 1;
}

/* The whole body as one JSON object (an empty body is {} when empty_ok). */
static json_t *parse_object(const char *body, size_t len, int empty_ok, char *err, size_t cap,
                            char *param, size_t pcap, int *status)
{
    if (len == 0 && empty_ok)
        return json_object();
    json_error_t je;
    /* JSON_REJECT_DUPLICATES: one value per field; JSON_ALLOW_NUL off: strings are C strings */
    json_t *j = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        *status = FAIL(NULL, "malformed JSON in the request body: %s (line %d, column %d)",
                       je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *status = FAIL(NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* An optional string field: 0 when absent or a string (copied into *out, *n), else 400. */
static int get_str(json_t *o, const char *key, char **out, size_t *n, char *err, size_t cap,
                   char *param, size_t pcap)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (n)
        *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return FAIL(key, "'%s' must be a string", key);
    size_t l = json_string_length(v);
    if (memchr(json_string_value(v), 0, l))
        return FAIL(key, "'%s' must not contain NUL characters", key);
    if (!(*out = dup_n(json_string_value(v), l)))
        return fail(500, err, cap, param, pcap, key, "out of memory");
    if (n)
        *n = l;
    return 0;
}

static int get_id(json_t *o, const char *key, char *id, char *err, size_t cap, char *param,
                  size_t pcap)
{
    json_t *v = json_object_get(o, key);
    id[0] = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return FAIL(key, "'%s' must be a string", key);
    if (!lmk_serve_id_valid(json_string_value(v)) ||
        strlen(json_string_value(v)) != json_string_length(v))
        return FAIL(key, "'%s' is not a valid session id (1 to %d characters of A-Z a-z 0-9 "
                    "_ -, not starting with '-')", key, LMK_SERVE_ID_MAX);
    snprintf(id, LMK_SERVE_ID_MAX + 1, "%s", json_string_value(v));
    return 0;
}

static int get_bool(json_t *o, const char *key, int *out, char *err, size_t cap, char *param,
                    size_t pcap)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return FAIL(key, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

void lmk_serve_gen_free(lmk_serve_gen *g)
{
    if (!g)
        return;
    free(g->prompt);
    for (int i = 0; i < g->n_msgs; i++) {
        free(g->msgs[i].role);
        free(g->msgs[i].content);
    }
    free(g->msgs);
    memset(g, 0, sizeof *g);
}

static int parse_messages(json_t *j, lmk_serve_gen *g, char *err, size_t cap, char *param,
                          size_t pcap)
{
    json_t *m = json_object_get(j, "messages");
    if (!m)
        return FAIL("messages", "'messages' is required");
    if (!json_is_array(m))
        return FAIL("messages", "'messages' must be an array");
    size_t n = json_array_size(m);
    if (n == 0)
        return FAIL("messages", "'messages' must hold at least one message");
    if (n > LMK_SERVE_MAX_MSGS)
        return FAIL("messages", "too many messages (at most %d)", LMK_SERVE_MAX_MSGS);
    if (!(g->msgs = calloc(n, sizeof *g->msgs)))
        return fail(500, err, cap, param, pcap, "messages", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(m, i);
        if (!json_is_object(e))
            return FAIL("messages", "messages[%zu] must be an object", i);
        char *role = NULL, *content = NULL;
        int rc = get_str(e, "role", &role, NULL, err, cap, param, pcap);
        if (!rc)
            rc = get_str(e, "content", &content, NULL, err, cap, param, pcap);
        g->msgs[g->n_msgs].role = role;
        g->msgs[g->n_msgs].content = content;
        g->n_msgs++;
        if (rc)
            return rc;
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
            return FAIL("messages", "messages[%zu].role must be \"system\", \"user\" or "
                        "\"assistant\"", i);
        if (!content)
            return FAIL("messages", "messages[%zu].content must be a string", i);
    }
    return 0;
}

static int parse_stop(json_t *j, lmk_serve_gen *g, char *err, size_t cap, char *param,
                      size_t pcap)
{
    json_t *s = json_object_get(j, "stop");
    if (!s || json_is_null(s))
        return 0;
    json_t *one[1] = {s};
    size_t n = 1;
    if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > LMK_SERVE_MAX_STOP)
            return FAIL("stop", "'stop' holds at most %d sequences", LMK_SERVE_MAX_STOP);
    } else if (!json_is_string(s)) {
        return FAIL("stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(s) ? json_array_get(s, i) : one[0];
        if (!json_is_string(e))
            return FAIL("stop", "'stop' must be a string or an array of strings");
        size_t l = json_string_length(e);
        if (l == 0 || l > LMK_SERVE_STOP_LEN || memchr(json_string_value(e), 0, l))
            return FAIL("stop", "each stop sequence must be 1 to %d bytes, without NUL",
                        LMK_SERVE_STOP_LEN);
        memcpy(g->stop[g->n_stop], json_string_value(e), l);
        g->stop[g->n_stop][l] = 0;
        g->n_stop++;
    }
    return 0;
}

static int parse_gen(json_t *j, int chat, long long limit, lmk_serve_gen *g, char *err,
                     size_t cap, char *param, size_t pcap)
{
    int rc;
    json_t *v;
    if ((v = json_object_get(j, "model")) && !json_is_string(v) && !json_is_null(v))
        return FAIL("model", "'model' must be a string");
    if (chat) {
        if ((rc = parse_messages(j, g, err, cap, param, pcap)))
            return rc;
    } else {
        v = json_object_get(j, "prompt");
        if (v && json_is_array(v)) { /* OpenAI accepts a list: one prompt here */
            if (json_array_size(v) != 1 || !json_is_string(json_array_get(v, 0)))
                return FAIL("prompt", "'prompt' must be a string (or an array of one string)");
            v = json_array_get(v, 0);
        }
        if (v && !json_is_null(v)) {
            if (!json_is_string(v))
                return FAIL("prompt", "'prompt' must be a string");
            size_t l = json_string_length(v);
            if (memchr(json_string_value(v), 0, l))
                return FAIL("prompt", "'prompt' must not contain NUL characters");
            g->prompt = dup_n(json_string_value(v), l);
            g->prompt_len = l;
        } else {
            g->prompt = dup_n("", 0);
        }
        if (!g->prompt)
            return fail(500, err, cap, param, pcap, "prompt", "out of memory");
    }
    if ((rc = get_id(j, "session", g->session, err, cap, param, pcap)))
        return rc;
    if ((rc = get_bool(j, "persist", &g->persist, err, cap, param, pcap)) ||
        (rc = get_bool(j, "stream", &g->stream, err, cap, param, pcap)))
        return rc;
    if (!chat && !g->session[0] && g->prompt_len == 0)
        return FAIL("prompt", "'prompt' is required (a non-empty string) without a session");
    const char *mt = json_object_get(j, "max_completion_tokens") ? "max_completion_tokens"
                                                                  : "max_tokens";
    if ((v = json_object_get(j, mt)) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > limit)
            return FAIL(mt, "'%s' must be an integer from 0 to %lld", mt, limit);
        g->max_tokens = json_integer_value(v);
    }
    if ((v = json_object_get(j, "temperature")) && !json_is_null(v)) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
            json_number_value(v) < 0 || json_number_value(v) > 2)
            return FAIL("temperature", "'temperature' must be a number from 0 to 2");
        g->temperature = json_number_value(v);
    }
    if ((v = json_object_get(j, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v))
            return FAIL("seed", "'seed' must be an integer");
        g->seed = (unsigned long long)json_integer_value(v);
    }
    if ((v = json_object_get(j, "n")) && !json_is_null(v) &&
        (!json_is_integer(v) || json_integer_value(v) != 1))
        return FAIL("n", "only 'n': 1 is supported");
    if ((rc = parse_stop(j, g, err, cap, param, pcap)))
        return rc;
    if ((v = json_object_get(j, "stream_options")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return FAIL("stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(v, "include_usage", &g->include_usage, err, cap, param, pcap)))
            return rc;
    }
    return 0;
}

int lmk_serve_parse_gen(const char *body, size_t len, int chat, long long max_tokens_limit,
                        lmk_serve_gen *out, char *err, size_t cap, char *param, size_t pcap)
{
    memset(out, 0, sizeof *out);
    out->chat = chat;
    out->persist = 1;
    out->max_tokens = chat ? 256 : 16;
    if (out->max_tokens > max_tokens_limit)
        out->max_tokens = max_tokens_limit;
    out->temperature = 1;
    out->seed = 42;
    int status = 0;
    json_t *j = parse_object(body, len, 0, err, cap, param, pcap, &status);
    if (!j)
        return status;
    status = parse_gen(j, chat, max_tokens_limit, out, err, cap, param, pcap);
    json_decref(j);
    if (status)
        lmk_serve_gen_free(out);
    return status;
}

void lmk_serve_sess_free(lmk_serve_sess_req *r)
{
    if (!r)
        return;
    free(r->document);
    free(r->text);
    memset(r, 0, sizeof *r);
}

int lmk_serve_parse_sess(const char *body, size_t len, int kind, lmk_serve_sess_req *out,
                         char *err, size_t cap, char *param, size_t pcap)
{
    memset(out, 0, sizeof *out);
    int status = 0;
    json_t *j = parse_object(body, len, 1, err, cap, param, pcap, &status);
    if (!j)
        return status;
    if (kind == LMK_SERVE_SESS_CREATE || kind == LMK_SERVE_SESS_FORK)
        status = get_id(j, "id", out->id, err, cap, param, pcap);
    if (!status && kind == LMK_SERVE_SESS_CREATE)
        status = get_str(j, "document", &out->document, &out->document_len, err, cap, param,
                         pcap);
    if (!status && kind == LMK_SERVE_SESS_CREATE)
        status = get_str(j, "prompt", &out->text, &out->text_len, err, cap, param, pcap);
    if (!status && kind == LMK_SERVE_SESS_APPEND) {
        status = get_str(j, "text", &out->text, &out->text_len, err, cap, param, pcap);
        if (!status && !out->text_len)
            status = FAIL("text", "'text' is required (a non-empty string)");
    }
    json_decref(j);
    if (status)
        lmk_serve_sess_free(out);
    return status;
}

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 409: return "conflict_error";
    case 413: return "request_too_large";
    case 429: case 503: return "server_busy";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* A JSON string of s, invalid UTF-8 replaced (NULL when out of memory). */
static json_t *json_text(const char *s)
{
    size_t n = strlen(s);
    char *clean = malloc(3 * n + 1);
    if (!clean)
        return NULL;
    json_t *j = json_stringn(clean, lmk_serve_utf8_clean(s, n, clean));
    free(clean);
    return j;
}

char *lmk_serve_error_json(int status, const char *message, const char *param)
{
    size_t ml = strlen(message);
    char *clean = malloc(3 * ml + 1);
    if (!clean)
        return NULL;
    clean[lmk_serve_utf8_clean(message, ml, clean)] = 0;
    json_t *p = param && *param ? json_text(param) : json_null();
    json_t *e = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", clean, "type",
                          error_type(status), "param", p ? p : json_null(), "code",
                          json_null());
    free(clean);
    if (!e)
        return NULL;
    char *s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    return s;
}

/* Length of the valid UTF-8 sequence at s (n bytes available): 1..4, 0 when invalid, -1
 * when s holds a valid but incomplete start. */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int need;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4, min = 0x10000;
    else
        return 0;
    unsigned cp = c & (0x7f >> need);
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return -1;
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
        /* reject overlong and surrogate forms as soon as they are decided */
        if (i == 1 && need == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f)))
            return 0;
        if (i == 1 && need == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f)))
            return 0;
    }
    return cp >= min ? need : 0;
}

size_t lmk_serve_utf8_clean(const char *text, size_t len, char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int k = utf8_seq(s + i, len - i);
        if (k > 0 && !(k == 1 && s[i] == 0)) {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

size_t lmk_serve_utf8_complete(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    /* an incomplete sequence can only start in the last 3 bytes */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        size_t i = len - back;
        if ((s[i] & 0xc0) != 0x80) {
            return utf8_seq(s + i, back) == -1 ? i : len;
        }
    }
    return len;
}
