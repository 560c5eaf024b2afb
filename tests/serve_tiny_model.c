/* Writes a tiny random-weight landmark model (llama, byte-level vocabulary, blocks of 16
 * tokens) for test_serve.sh when the shared model is absent. Usage: serve_tiny_model PATH SEED
 * [chat] (another seed gives another model, for the "another model" case; `chat` adds the
 * control tokens <|im_start|> and <|im_end|>, a ChatML tokenizer.chat_template and the
 * SentencePiece space piece, which makes the vocabulary a SentencePiece one: BOS first,
 * control tokens recognized in template text; for the chat rendering tests). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_gguf_write.h"
#include "lmk_test.h"

static int add_w(lmk_gguf_writer *w, const char *name, int64_t cols, int64_t rows, float scale,
                 float bias, uint64_t *rs)
{
    size_t n = (size_t)(cols * rows);
    float *d = malloc(n * sizeof(float));
    if (!d)
        return 12;
    for (size_t i = 0; i < n; i++)
        d[i] = bias + scale * lmk_test_uniform(rs);
    int64_t dims[2] = {cols, rows};
    int rc = lmk_gguf_writer_add_tensor(w, name, rows > 1 ? 2 : 1, dims, LMK_GGML_F32, d);
    free(d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "chat"))) {
        fprintf(stderr, "usage: serve_tiny_model PATH SEED [chat]\n");
        return 2;
    }
    const int chat = argc == 4;
    const int L = 2, E = 64, H = 4, KV = 2, FF = 96, V = chat ? 261 : 258;
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", "llama"));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.name", "tiny-random"));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "llama.block_count", L));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "llama.embedding_length", E));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "llama.feed_forward_length", FF));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "llama.attention.head_count", H));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "llama.attention.head_count_kv", KV));
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
    static char names[256][8];
    const char *toks[261];
    int32_t types[261];
    float scores[261];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = names[b];
        types[b] = 6;
        scores[b] = 0;
    }
    toks[256] = "<landmark>";
    toks[257] = "<s>";
    types[256] = types[257] = 3;
    scores[256] = scores[257] = 0;
    if (chat) {
        toks[258] = "<|im_start|>";
        toks[259] = "<|im_end|>";
        toks[260] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */
        types[258] = types[259] = 3;
        types[260] = 1;
        scores[258] = scores[259] = 0;
        scores[260] = -1;
        REQUIRE_OK(lmk_gguf_writer_add_str(
            w, "tokenizer.chat_template",
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
            "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
            "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"));
    }
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING, V, toks));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32, V, scores));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32, V, types));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 257));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "landmark.mem_freq", 16));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "landmark.token_id", 256));
    uint64_t rs = strtoull(argv[2], NULL, 10);
    int hd = E / H, nq = H * hd, nkv = KV * hd;
    float se = 1.0f / sqrtf((float)E);
    REQUIRE_OK(add_w(w, "token_embd.weight", E, V, 1.0f, 0, &rs));
    REQUIRE_OK(add_w(w, "output_norm.weight", E, 1, 0.2f, 1.0f, &rs));
    REQUIRE_OK(add_w(w, "output.weight", E, V, 2 * se, 0, &rs));
    for (int l = 0; l < L; l++) {
        char nm[64];
#define T(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        REQUIRE_OK(add_w(w, T("attn_norm"), E, 1, 0.2f, 1.0f, &rs));
        REQUIRE_OK(add_w(w, T("ffn_norm"), E, 1, 0.2f, 1.0f, &rs));
        REQUIRE_OK(add_w(w, T("attn_q"), E, nq, 4 * se, 0, &rs));
        REQUIRE_OK(add_w(w, T("attn_k"), E, nkv, 4 * se, 0, &rs));
        REQUIRE_OK(add_w(w, T("attn_v"), E, nkv, 2 * se, 0, &rs));
        REQUIRE_OK(add_w(w, T("attn_output"), nq, E, se, 0, &rs));
        REQUIRE_OK(add_w(w, T("ffn_gate"), E, FF, 2 * se, 0, &rs));
        REQUIRE_OK(add_w(w, T("ffn_up"), E, FF, 2 * se, 0, &rs));
        REQUIRE_OK(add_w(w, T("ffn_down"), FF, E, se, 0, &rs));
#undef T
    }
    REQUIRE_OK(lmk_gguf_writer_write(w, argv[1]));
    lmk_gguf_writer_free(w);
    return 0;
}
