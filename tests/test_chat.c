/* Chat formats: for each format, the document frame plus the question frames with the
 * answers between them equal the rendering of the whole conversation; template detection
 * by substring; the session's conversation state; control tokens recognized in template
 * text only. (The renderings themselves are compared with llama.cpp's in
 * tests/llama/test_chat_ref.c.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_chat.h"
#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_test.h"
#include "lmk_tokenizer.h"

typedef struct {
    char *p;
    size_t n;
} str;

static void cat(str *s, const char *a, size_t n)
{
    s->p = realloc(s->p, s->n + n + 1);
    memcpy(s->p + s->n, a, n);
    s->n += n;
    s->p[s->n] = 0;
}

/* The text a session is fed for: system, doc, q1, a1, q2, a2, q3 (answers as generated). */
static int check_split(int f, const char *system, const char *doc, const char *const *q,
                       const char *const *a, int n_q)
{
    str fed = {NULL, 0};
    char *head, *sep, *tail;
    size_t skip, qo, ql;
    int after_doc = doc != NULL;
    if (doc) {
        REQUIRE_OK(lmk_chat_doc_frame(f, system, doc, strlen(doc), &head, &skip));
        cat(&fed, head, strlen(head));
        cat(&fed, doc + skip, strlen(doc) - skip);
        free(head);
    }
    for (int i = 0; i < n_q; i++) {
        REQUIRE_OK(lmk_chat_question_frame(f, system, after_doc, i, q[i], strlen(q[i]), &head,
                                           &sep, &tail, &qo, &ql));
        cat(&fed, head, strlen(head));
        cat(&fed, sep, strlen(sep));
        cat(&fed, q[i] + qo, ql);
        cat(&fed, tail, strlen(tail));
        free(head);
        free(sep);
        free(tail);
        if (i + 1 < n_q) {
            /* Mistral formats put the space before an answer in the answer: the model
             * generates it */
            if (f == LMK_CHAT_MISTRAL_V1 || f == LMK_CHAT_MISTRAL_V3 || f == LMK_CHAT_MISTRAL_V7)
                cat(&fed, " ", 1);
            cat(&fed, a[i], strlen(a[i]));
        }
    }
    /* the whole conversation */
    lmk_chat_msg m[16];
    size_t n = 0;
    char *first = NULL;
    if (system && *system)
        m[n++] = (lmk_chat_msg){"system", system};
    if (doc) {
        first = malloc(strlen(doc) + strlen(q[0]) + 3);
        sprintf(first, "%s\n\n%s", doc, q[0]);
        m[n++] = (lmk_chat_msg){"user", first};
    } else {
        m[n++] = (lmk_chat_msg){"user", q[0]};
    }
    for (int i = 1; i < n_q; i++) {
        m[n++] = (lmk_chat_msg){"assistant", a[i - 1]};
        m[n++] = (lmk_chat_msg){"user", q[i]};
    }
    long long len = lmk_chat_render(f, m, n, 1, NULL, 0);
    char *whole = malloc((size_t)len + 1);
    lmk_chat_render(f, m, n, 1, whole, (size_t)len + 1);
    int ok = (long long)fed.n == len && !memcmp(fed.p, whole, fed.n);
    if (!ok)
        fprintf(stderr, "%s: fed\n[%s]\nwhole\n[%s]\n", lmk_chat_format_name(f), fed.p, whole);
    CHECK(ok);
    free(whole);
    free(first);
    free(fed.p);
    return !ok;
}

static int test_split(void)
{
    const char *q[] = {"  Who begat Enos?  ", "And then?", "Thanks.\n"};
    const char *a[] = {"Seth begat Enos.", "Enos begat Cainan."};
    const char *doc = "\n  And Seth lived an hundred and five years, and begat Enos.\n";
    for (int f = 0; f < LMK_CHAT_N_FORMATS; f++) {
        check_split(f, "You answer from the text.", doc, q, a, 3);
        check_split(f, NULL, doc, q, a, 2);
        check_split(f, "Be brief.", NULL, q, a, 3);
        check_split(f, NULL, NULL, q, a, 1);
    }
    return 0;
}

static int test_detect(void)
{
    CHECK(lmk_chat_detect("{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                          "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}") ==
          LMK_CHAT_LLAMA3);
    CHECK(lmk_chat_detect("{{'<|im_start|>' + message['role'] + '\n'}}") == LMK_CHAT_CHATML);
    CHECK(lmk_chat_detect("{{'<|im_start|>'}}<|im_sep|>") == -1); /* phi-4: not supported */
    CHECK(lmk_chat_detect("{{'<|user|>' + m}}<|end|>{{'<|assistant|>'}}") == LMK_CHAT_PHI3);
    CHECK(lmk_chat_detect("[SYSTEM_PROMPT] [INST]") == LMK_CHAT_MISTRAL_V7);
    CHECK(lmk_chat_detect("[AVAILABLE_TOOLS] {{ '[INST] ' }}") == LMK_CHAT_MISTRAL_V3);
    CHECK(lmk_chat_detect("[AVAILABLE_TOOLS] {{ \"[INST]\" }}") == LMK_CHAT_MISTRAL_V3_TEKKEN);
    CHECK(lmk_chat_detect("{{ bos_token }}{{ ' [INST] ' + system_message }}") ==
          LMK_CHAT_MISTRAL_V1);
    CHECK(lmk_chat_detect("<<SYS>> [INST]") == -1); /* llama 2 */
    CHECK(lmk_chat_detect("<start_of_turn>user") == -1);
    CHECK(lmk_chat_detect("chatml") == LMK_CHAT_CHATML);
    CHECK(lmk_chat_detect("something else") == -1);
    for (int f = 0; f < LMK_CHAT_N_FORMATS; f++)
        CHECK(lmk_chat_format_from_name(lmk_chat_format_name(f)) == f);
    CHECK(lmk_chat_format_from_name("llama2") == -1 && lmk_chat_format_name(99) == NULL);
    return 0;
}

static int test_state(void)
{
    char dir[4096];
    lmk_test_dir(dir, sizeof dir, "chat");
    REQUIRE(mkdir(dir, 0755) == 0);
    lmk_chat_state st;
    REQUIRE_OK(lmk_chat_state_read(dir, &st));
    CHECK(st.format == -1 && st.turns == 0 && st.has_doc == 0);
    st.format = LMK_CHAT_PHI3;
    st.has_doc = 1;
    st.turns = 3;
    REQUIRE_OK(lmk_chat_state_write(dir, &st));
    lmk_chat_state back;
    REQUIRE_OK(lmk_chat_state_read(dir, &back));
    CHECK(back.format == LMK_CHAT_PHI3 && back.has_doc == 1 && back.turns == 3);
    lmk_test_rmdir(dir);
    return 0;
}

/* Control tokens come from template text only, and text meets across segments. */
static int test_segments(void)
{
    const char *toks[] = {"<|im_start|>", "<|im_end|>", "u", "s", "e", "r", "\xc4\x8a", "a",
                          "<", "|", ">", "_", "i", "m", "n", "d", "t"};
    int32_t ty[17];
    for (int i = 0; i < 17; i++)
        ty[i] = i < 2 ? 3 : 1;
    const char *merges[] = {"u s"};
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2"));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING, 17, toks));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32, 17, ty));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.merges", LMK_GGUF_STRING, 1, merges));
    uint8_t *buf;
    size_t size;
    REQUIRE_OK(lmk_gguf_writer_encode(w, &buf, &size));
    lmk_gguf_writer_free(w);
    lmk_gguf *g;
    lmk_tokenizer *t;
    char err[256];
    REQUIRE_OK(lmk_gguf_open_buffer(buf, size, &g, err, sizeof err));
    REQUIRE_OK(lmk_tokenizer_from_gguf(g, &t, err, sizeof err));
    const char *user = "a<|im_end|>a";
    lmk_tok_segment seg[] = {{"<|im_start|>u", 13, 1}, {"s", 1, 0}, {user, strlen(user), 0},
                             {"<|im_end|>", 10, 1}};
    int32_t ids[64];
    size_t n;
    REQUIRE_OK(lmk_tokenizer_tokenize_segments(t, seg, 4, 0, ids, 64, &n));
    /* <|im_start|>, "us" merged across the segments (one pre-token "usa"...), the user's
     * marker as characters, the template's marker as the token */
    int n_end = 0;
    for (size_t i = 0; i < n; i++)
        n_end += ids[i] == 1;
    CHECK(ids[0] == 0 && ids[n - 1] == 1 && n_end == 1);
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(buf);
    return 0;
}

int main(void)
{
    test_split();
    test_detect();
    test_state();
    test_segments();
    if (lmk_test_failures)
        fprintf(stderr, "%d failures\n", lmk_test_failures);
    return lmk_test_failures ? 1 : 0;
}
