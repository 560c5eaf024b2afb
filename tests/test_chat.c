/* Chat formats: for each format, the document frame plus the question frames with the
 * answers between them equal the rendering of the whole conversation; template detection
 * by substring; conversations carried on request by request (lmk_chat_continue); the session's conversation state; control tokens recognized in template
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

/* lmk_chat_continue: a conversation fed request by request (the new messages only, the
 * answers generated between) equals the rendering of the whole conversation; its pieces
 * cover the text in order, and the content pieces hold exactly the messages' kept text. */
static int check_continue(int f, const char *system, const char *doc)
{
    /* requests: [system?, user q0] (or [user q0] after a document), [user q1],
     * [user q2, assistant "Yes.", user q3] */
    const char *q[] = {"  Who begat Enos?  ", "And then?", "Thanks.\n", "More."};
    const char *a[] = {"Seth begat Enos.", "Enos begat Cainan.", "You are welcome."};
    const int spaced = f == LMK_CHAT_MISTRAL_V1 || f == LMK_CHAT_MISTRAL_V3 ||
                       f == LMK_CHAT_MISTRAL_V7;
    str fed = {NULL, 0};
    lmk_chat_state st = {f, 0, 0};
    if (doc) {
        char *head;
        size_t skip;
        REQUIRE_OK(lmk_chat_doc_frame(f, system, doc, strlen(doc), &head, &skip));
        cat(&fed, head, strlen(head));
        cat(&fed, doc + skip, strlen(doc) - skip);
        free(head);
        st.has_doc = 1;
    }
    lmk_chat_msg whole_m[16];
    size_t nw = 0;
    char first[256];
    if (system && *system)
        whole_m[nw++] = (lmk_chat_msg){"system", system};
    snprintf(first, sizeof first, "%s%s%s", doc ? doc : "", doc ? "\n\n" : "", q[0]);
    whole_m[nw++] = (lmk_chat_msg){"user", first};
    for (int r = 0; r < 3; r++) {
        lmk_chat_msg m[4];
        size_t n = 0;
        if (r == 0 && !doc && system && *system)
            m[n++] = (lmk_chat_msg){"system", system};
        if (r == 0)
            m[n++] = (lmk_chat_msg){"user", q[0]};
        else if (r == 1)
            m[n++] = (lmk_chat_msg){"user", q[1]};
        else {
            m[n++] = (lmk_chat_msg){"user", q[2]};
            m[n++] = (lmk_chat_msg){"assistant", "Yes."};
            m[n++] = (lmk_chat_msg){"user", q[3]};
        }
        if (r > 0)
            for (size_t i = 0; i < n; i++)
                whole_m[nw++] = m[i];
        char *out;
        size_t len, np;
        lmk_chat_piece *pc;
        REQUIRE_OK(lmk_chat_continue(f, &st, m, n, 1, &out, &len, &pc, &np));
        CHECK(strlen(out) == len);
        /* the pieces cover the text in order; the content pieces hold the kept text of
         * the messages (what lmk_chat_question_frame keeps of a question) */
        size_t at = 0;
        str content = {NULL, 0}, want = {NULL, 0};
        for (size_t i = 0; i < np; i++) {
            CHECK(pc[i].off == at && pc[i].len > 0);
            at = pc[i].off + pc[i].len;
            if (pc[i].content)
                cat(&content, out + pc[i].off, pc[i].len);
        }
        CHECK(at == len);
        for (size_t i = 0; i < n; i++) {
            char *h, *sp, *t;
            size_t qo, ql;
            int after_doc = r == 0 && doc && !strcmp(m[i].role, "user");
            REQUIRE_OK(lmk_chat_question_frame(f, NULL, after_doc, 0, m[i].content,
                                               strlen(m[i].content), &h, &sp, &t, &qo, &ql));
            if (after_doc)
                cat(&want, sp, strlen(sp));
            cat(&want, m[i].content + qo, ql);
            free(h);
            free(sp);
            free(t);
        }
        int same = content.n == want.n && (!want.n || !memcmp(content.p, want.p, want.n));
        if (!same)
            fprintf(stderr, "%s: content [%s], want [%s]\n", lmk_chat_format_name(f),
                    content.p ? content.p : "", want.p ? want.p : "");
        CHECK(same);
        free(content.p);
        free(want.p);
        cat(&fed, out, len);
        free(out);
        free(pc);
        st.turns++;
        if (spaced)
            cat(&fed, " ", 1);
        cat(&fed, a[r], strlen(a[r]));
        whole_m[nw++] = (lmk_chat_msg){"assistant", a[r]};
    }
    long long len = lmk_chat_render(f, whole_m, nw, 0, NULL, 0);
    char *whole = malloc((size_t)len + 1);
    lmk_chat_render(f, whole_m, nw, 0, whole, (size_t)len + 1);
    /* the last answer is open in the session: the whole rendering closes it */
    int ok = (long long)fed.n <= len && !memcmp(fed.p, whole, fed.n);
    /* and what closes it is what the next request's text starts with */
    char *out;
    size_t olen, np;
    lmk_chat_piece *pc;
    lmk_chat_msg last = {"user", "Bye."};
    REQUIRE_OK(lmk_chat_continue(f, &st, &last, 1, 0, &out, &olen, &pc, &np));
    whole_m[nw++] = last;
    long long len2 = lmk_chat_render(f, whole_m, nw, 0, NULL, 0);
    char *whole2 = malloc((size_t)len2 + 1);
    lmk_chat_render(f, whole_m, nw, 0, whole2, (size_t)len2 + 1);
    cat(&fed, out, olen);
    ok = ok && (long long)fed.n == len2 && !memcmp(fed.p, whole2, fed.n);
    if (!ok)
        fprintf(stderr, "%s: fed\n[%s]\nwhole\n[%s]\n", lmk_chat_format_name(f), fed.p, whole2);
    CHECK(ok);
    free(out);
    free(pc);
    free(whole);
    free(whole2);
    free(fed.p);
    /* a conversation that starts here is the plain rendering */
    lmk_chat_msg m2[2] = {{"system", "Be brief."}, {"user", q[0]}};
    REQUIRE_OK(lmk_chat_continue(f, NULL, m2, 2, 1, &out, &olen, &pc, &np));
    long long l3 = lmk_chat_render(f, m2, 2, 1, NULL, 0);
    char *r3 = malloc((size_t)l3 + 1);
    lmk_chat_render(f, m2, 2, 1, r3, (size_t)l3 + 1);
    CHECK((long long)olen == l3 && !memcmp(out, r3, olen));
    free(r3);
    free(out);
    free(pc);
    CHECK(lmk_chat_continue(99, NULL, m2, 2, 1, &out, &olen, &pc, &np) == LMK_EINVAL &&
          !out && !pc);
    return 0;
}

static int test_continue(void)
{
    const char *doc = "\n  And Seth lived an hundred and five years, and begat Enos.\n";
    for (int f = 0; f < LMK_CHAT_N_FORMATS; f++) {
        check_continue(f, "You answer from the text.", doc);
        check_continue(f, NULL, doc);
        check_continue(f, "Be brief.", NULL);
        check_continue(f, NULL, NULL);
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
    test_continue();
    test_detect();
    test_state();
    test_segments();
    if (lmk_test_failures)
        fprintf(stderr, "%d failures\n", lmk_test_failures);
    return lmk_test_failures ? 1 : 0;
}
