/* libFuzzer target for the tokenizers on crafted vocabularies: the input describes a
 * vocabulary and a text, the vocabulary is written as a GGUF file (the writer), opened, and
 * the text tokenized into a buffer of exactly lmk_tokenizer_max_tokens(len) entries (ASan
 * catches any write past the bound), whole and as chat-like segments, then decoded.
 *
 * Input: byte 0 selects the kind (bit 0: gpt2, else llama), the pre-tokenizer (bits 1-2:
 * llama-bpe, qwen2, gpt-2, none), byte tokens for llama (bit 3), a phi-3 name (bit 4), the
 * tokenize flags (bits 5-6), token types from the tokens' first bytes (bit 7). Then the
 * tokens, separated by NUL bytes, up to a double NUL; the rest is the text. gpt2 merges
 * split every token of two or more bytes in its middle. The text is also streamed
 * (lmk_tokenizer_stream_*) with the smallest window in reads of 1 to 16 bytes: without an
 * inexact cut its ids must be the whole text's (abort otherwise).
 *
 * Build: meson setup build-fuzz -Dfuzzers=true with CC=clang (tests/meson.build); run
 *   ./build-fuzz/tests/fuzz_tokenizer -max_total_time=60 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_tokenizer.h"

#define MAX_TOK 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    static char *toks[MAX_TOK + 256];
    static char *merges[MAX_TOK];
    static int32_t types[MAX_TOK + 256];
    static float scores[MAX_TOK + 256];
    int n = 0, nm = 0;
    int gpt2 = mode & 1;
    /* tokens up to a double NUL */
    while (p < end && n < MAX_TOK) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        size_t l = z ? (size_t)(z - p) : (size_t)(end - p);
        if (l == 0) {
            p = z ? z + 1 : end;
            break;
        }
        toks[n] = strndup(p, l);
        types[n] = (mode & 0x80) ? 1 + (uint8_t)p[0] % 7 : 1;
        scores[n] = -(float)n;
        if (gpt2 && l >= 2 && nm < MAX_TOK) {
            size_t h = l / 2;
            merges[nm] = malloc(l + 2);
            memcpy(merges[nm], p, h);
            merges[nm][h] = ' ';
            memcpy(merges[nm] + h + 1, p + h, l - h);
            merges[nm][l + 1] = 0;
            nm++;
        }
        n++;
        p = z ? z + 1 : end;
    }
    if (!gpt2 && (mode & 8)) {
        for (int b = 0; b < 256; b++, n++) {
            toks[n] = malloc(8);
            snprintf(toks[n], 8, "<0x%02X>", b);
            types[n] = 6;
            scores[n] = 0;
        }
    }
    const char *text = p;
    size_t len = (size_t)(end - p);
    if (n == 0)
        goto out;

    lmk_gguf_writer *w = NULL;
    uint8_t *buf = NULL;
    size_t bsize;
    if (lmk_gguf_writer_new(&w))
        goto out;
    static const char *const pres[] = {"llama-bpe", "qwen2", "gpt-2", NULL};
    const char *pre = pres[(mode >> 1) & 3];
    int ok = !lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", gpt2 ? "gpt2" : "llama") &&
             !lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING,
                                        (uint64_t)n, (const char *const *)toks) &&
             !lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32,
                                        (uint64_t)n, scores) &&
             !lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32,
                                        (uint64_t)n, types) &&
             !lmk_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 0) &&
             !lmk_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n - 1)) &&
             (!gpt2 || !lmk_gguf_writer_add_array(w, "tokenizer.ggml.merges", LMK_GGUF_STRING,
                                                  (uint64_t)nm, (const char *const *)merges)) &&
             (!pre || !lmk_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre)) &&
             (!(mode & 16) || !lmk_gguf_writer_add_str(w, "general.name", "Phi-3 mini")) &&
             !lmk_gguf_writer_encode(w, &buf, &bsize);
    lmk_gguf_writer_free(w);
    lmk_gguf *g = NULL;
    lmk_tokenizer *t = NULL;
    char err[256];
    if (ok && lmk_gguf_open_buffer(buf, bsize, &g, err, sizeof err) == 0 &&
        lmk_tokenizer_from_gguf(g, &t, err, sizeof err) == 0) {
        size_t cap = lmk_tokenizer_max_tokens(len), got = 0;
        int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
        unsigned flags = (mode >> 5) & 3;
        if (ids && lmk_tokenizer_tokenize(t, text, len, flags, ids, cap, &got) == 0) {
            if (got > cap)
                abort();
            char piece[64];
            for (size_t i = 0; i < got; i++) {
                if (ids[i] < 0 || ids[i] >= lmk_tokenizer_n_vocab(t))
                    abort();
                lmk_tokenizer_piece(t, ids[i], piece, sizeof piece);
                lmk_tokenizer_piece_special(t, ids[i], piece, sizeof piece);
                lmk_tokenizer_is_eog(t, ids[i]);
            }
            char *dec = malloc(64);
            if (dec)
                lmk_tokenizer_decode(t, ids, got, (int)(mode & 1), dec, 64);
            free(dec);
        }
        /* the same text as three segments, control tokens recognized in the middle one */
        if (ids && len > 0) {
            size_t a = (uint8_t)text[0] % (len + 1), b = a + (len - a) / 2;
            lmk_tok_segment seg[3] = {{text, a, 0}, {text + a, b - a, 1}, {text + b, len - b, 0}};
            if (lmk_tokenizer_tokenize_segments(t, seg, 3, flags & 1, ids, cap, &got) == 0 &&
                got > cap)
                abort();
        }
        /* streamed in small reads: the whole text's ids unless a cut was inexact */
        lmk_tokenizer_stream *ts = NULL;
        int32_t *sid = ids ? malloc((cap ? cap : 1) * sizeof *sid) : NULL;
        unsigned sf = (mode & 2) ? LMK_TOK_CONTINUE : 0;
        if (sid && lmk_tokenizer_tokenize(t, text, len, sf, ids, cap, &got) == 0 &&
            lmk_tokenizer_stream_open(t, sf, NULL, 0, 1, &ts) == 0) {
            size_t k = 0, at = 0, n_ids, used;
            const int32_t *p_ids;
            int src = 0;
            while (!src && at < len) {
                size_t step = 1 + (size_t)(uint8_t)text[at] % 16;
                step = step < len - at ? step : len - at;
                for (size_t u = 0; !src && u < step; u += used) {
                    src = lmk_tokenizer_stream_write(ts, text + at + u, step - u, &used, &p_ids,
                                                     &n_ids);
                    if (!src) {
                        if (k + n_ids > cap)
                            abort();
                        memcpy(sid + k, p_ids, n_ids * sizeof *sid);
                        k += n_ids;
                    }
                }
                at += step;
            }
            if (!src && lmk_tokenizer_stream_finish(ts, &p_ids, &n_ids) == 0) {
                if (k + n_ids > cap)
                    abort();
                memcpy(sid + k, p_ids, n_ids * sizeof *sid);
                k += n_ids;
                if (lmk_tokenizer_stream_inexact(ts) == 0 &&
                    (k != got || (k && memcmp(sid, ids, k * sizeof *sid))))
                    abort(); /* a safe cut that was not */
            }
        }
        lmk_tokenizer_stream_free(ts);
        free(sid);
        /* the legacy entry point with its implicit bound */
        if (ids)
            lmk_tokenizer_encode(t, text, len, mode & 2, ids, &got);
        free(ids);
        lmk_utf8_complete_prefix(text, len);
    }
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(buf);
out:
    for (int i = 0; i < n; i++)
        free(toks[i]);
    for (int i = 0; i < nm; i++)
        free(merges[i]);
    return 0;
}
