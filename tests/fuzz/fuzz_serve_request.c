/* libFuzzer target: what `landmark serve` does with a request body before anything runs:
 * the JSON of completions, chat completions and the session calls, parsed and validated
 * (cli/serve_req.c), the error body built from the message, and the UTF-8 repair of text.
 * Build: meson setup build-fuzz -Dfuzzers=true with CC=clang.
 *
 * The first byte picks the request kind; the rest is the body, copied to a heap block of
 * its exact size (not NUL-terminated) so AddressSanitizer sees any read past it. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../cli/serve_req.h"

static void check_gen(const lmk_serve_gen *g)
{
    /* what the server relies on after a successful parse */
    if (g->max_tokens < 0 || g->max_tokens > 4096 || g->temperature < 0 || g->temperature > 2 ||
        g->n_stop < 0 || g->n_stop > LMK_SERVE_MAX_STOP)
        abort();
    if (g->session[0] && !lmk_serve_id_valid(g->session))
        abort();
    if (!g->chat && (!g->prompt || strlen(g->prompt) != g->prompt_len))
        abort();
    if (g->chat && (g->n_msgs < 1 || !g->msgs))
        abort();
    for (int i = 0; i < g->n_msgs; i++)
        if (!g->msgs[i].role || !g->msgs[i].content)
            abort();
    for (int i = 0; i < g->n_stop; i++)
        if (!g->stop[i][0] || strlen(g->stop[i]) > LMK_SERVE_STOP_LEN)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int kind = data[0] % 6;
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, n);
    char err[1024], param[64];
    /* the parameter name a caller passes may be anything: never trusted to be UTF-8 */
    memcpy(param, body, n < sizeof param ? n : sizeof param);
    param[sizeof param - 1] = 0;
    int status;
    if (kind < 2) {
        lmk_serve_gen g;
        status = lmk_serve_parse_gen(body, n, kind, 4096, &g, err, sizeof err, param,
                                     sizeof param);
        if (!status) {
            check_gen(&g);
            lmk_serve_gen_free(&g);
        }
    } else if (kind < 5) {
        lmk_serve_sess_req r;
        status = lmk_serve_parse_sess(body, n, kind - 2, &r, err, sizeof err, param,
                                      sizeof param);
        if (!status) {
            if (r.id[0] && !lmk_serve_id_valid(r.id))
                abort();
            lmk_serve_sess_free(&r);
        }
    } else {
        /* raw model output: repaired to UTF-8, then held back to a whole character */
        char *out = malloc(3 * n + 1);
        if (out) {
            size_t m = lmk_serve_utf8_clean(body, n, out);
            if (m > 3 * n || lmk_serve_utf8_complete(out, m) != m)
                abort();
            free(out);
        }
        if (lmk_serve_utf8_complete(body, n) > n)
            abort();
        status = 400;
        snprintf(err, sizeof err, "%.*s", (int)(n < 200 ? n : 200), body);
    }
    if (status) {
        char *e = lmk_serve_error_json(status, err, param);
        if (!e)
            abort();
        free(e);
    }
    /* an id taken from a URL */
    char id[80];
    size_t k = n < sizeof id - 1 ? n : sizeof id - 1;
    memcpy(id, body, k);
    id[k] = 0;
    if (lmk_serve_id_valid(id) && (strchr(id, '/') || strchr(id, '.') || id[0] == '-'))
        abort();
    free(body);
    return 0;
}
