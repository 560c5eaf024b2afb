/* libFuzzer target for the GGUF reader and the tokenizers built from its metadata.
 *
 * Build (from the source root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iengine -Imodel \
 *     tests/fuzz/fuzz_gguf.c model/lmk_gguf.c model/lmk_tokenizer.c engine/lmk_error.c \
 *     -o fuzz_gguf
 *   ./fuzz_gguf -max_len=65536 corpus/
 * A seed corpus is any set of small .gguf files (the tests write some). Every accessor is
 * exercised on whatever opens, so out-of-bounds reads show up under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf.h"
#include "lmk_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so a read one past the end is caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    lmk_gguf *g = NULL;
    char err[256];
    if (lmk_gguf_open_buffer(buf, size, &g, err, sizeof err) == 0) {
        for (int64_t i = 0; i < lmk_gguf_n_kv(g); i++) {
            const char *key = lmk_gguf_key_name(g, i);
            uint32_t u;
            int64_t v;
            float f;
            int b;
            const char *s;
            uint64_t n;
            char z[64];
            lmk_gguf_type et;
            const void *arr;
            lmk_gguf_get_u32(g, key, &u);
            lmk_gguf_get_i64(g, key, &v);
            lmk_gguf_get_f32(g, key, &f);
            lmk_gguf_get_bool(g, key, &b);
            lmk_gguf_get_str(g, key, &s, &n);
            lmk_gguf_get_strz(g, key, z, sizeof z);
            if (lmk_gguf_get_array(g, key, &et, &n, &arr) == 0 && n > 0 &&
                et == LMK_GGUF_STRING) {
                lmk_gguf_get_arr_str(g, key, 0, &s, &n);
                lmk_gguf_get_arr_str(g, key, n - 1, &s, &n);
            }
        }
        float row[1024];
        for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
            const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
            if (t->row_len <= 1024) {
                lmk_gguf_tensor_rows_f32(t, 0, 1, row);
                lmk_gguf_tensor_rows_f32(t, t->n_rows - 1, 1, row);
            }
        }
        lmk_tokenizer *tk = NULL;
        if (lmk_tokenizer_from_gguf(g, &tk, err, sizeof err) == 0) {
            static const char text[] = "Hello world, \xe2\x96\x81 it's 2024!\n\xff";
            int32_t ids[6 * 64 + 2]; /* lmk_tokenizer_max_tokens of the text */
            size_t nt;
            if (lmk_tokenizer_encode(tk, text, sizeof text - 1, 1, ids, &nt) == 0) {
                char piece[64];
                for (size_t i = 0; i < nt; i++)
                    lmk_tokenizer_piece(tk, ids[i], piece, sizeof piece);
            }
            lmk_tokenizer_free(tk);
        }
        lmk_gguf_close(g);
    }
    free(buf);
    return 0;
}
