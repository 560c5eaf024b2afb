/* Chat formats as llama.cpp renders them (src/llama-chat.cpp there), and the prefix/suffix
 * split of a conversation over a session. */
#include "lmk_chat.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_error.h"
#include "lmk_export.h"

static const char *const names[LMK_CHAT_N_FORMATS] = {
    "llama3", "chatml", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "phi3"};

LMK_API const char *lmk_chat_format_name(int f)
{
    return f >= 0 && f < LMK_CHAT_N_FORMATS ? names[f] : NULL;
}

LMK_API int lmk_chat_format_from_name(const char *name)
{
    for (int f = 0; name && f < LMK_CHAT_N_FORMATS; f++)
        if (!strcmp(name, names[f]))
            return f;
    return -1;
}

LMK_API const char *lmk_chat_format_list(void)
{
    return "llama3, chatml, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, phi3";
}

LMK_API int lmk_chat_detect(const char *t)
{
    if (!t)
        return -1;
    int named = lmk_chat_format_from_name(t);
    if (named >= 0)
        return named;
#define HAS(s) (strstr(t, s) != NULL)
    /* llm_chat_detect_template's order: the first match decides, supported or not */
    if (HAS("<|im_start|>"))
        return HAS("<|im_sep|>") || HAS("<end_of_utterance>") ? -1 : LMK_CHAT_CHATML;
    if (!strncmp(t, "mistral", 7) || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]"))
            return LMK_CHAT_MISTRAL_V7;
        if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]")) {
            if (HAS(" [INST]"))
                return LMK_CHAT_MISTRAL_V1;
            if (HAS("\"[INST]\""))
                return LMK_CHAT_MISTRAL_V3_TEKKEN;
            return LMK_CHAT_MISTRAL_V3;
        }
        return -1; /* the llama2 family */
    }
    if (HAS("<|assistant|>") && HAS("<|end|>"))
        return LMK_CHAT_PHI3;
    if (HAS("[gMASK]<sop>") || (HAS("<|assistant|>") && HAS("<|user|>")) ||
        (HAS("<|{{ item['role'] }}|>") && HAS("<|begin_of_image|>")) ||
        (HAS("<|user|>") && HAS("<|endoftext|>")) || HAS("bos_token + message['role']") ||
        HAS("<start_of_turn>") || HAS("'\\n\\nAssistant: ' + eos_token") ||
        HAS("GPT4 Correct ") || (HAS("USER: ") && HAS("ASSISTANT: ")) ||
        (HAS("### Instruction:") && HAS("<|EOT|>")) ||
        (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")))
        return -1;
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>"))
        return LMK_CHAT_LLAMA3;
#undef HAS
    return -1;
}

/* ---- a growable string ---- */

typedef struct {
    size_t off, len;
} span;

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
    /* where each message's content went, when spans is set (one per message) */
    span *spans;
    size_t n_spans;
} sb;

static void sb_add(sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sb *b, const char *s) { sb_add(b, s, strlen(s)); }

/* s without leading and trailing isspace() bytes (llama-chat.cpp's trim). */
static void sb_trim(sb *b, const char *s)
{
    size_t a = 0, e = strlen(s);
    while (a < e && isspace((unsigned char)s[a]))
        a++;
    while (e > a && isspace((unsigned char)s[e - 1]))
        e--;
    sb_add(b, s + a, e - a);
}

/* A message's content (trimmed when trim), its place recorded. */
static void sb_content(sb *b, const char *s, int trim)
{
    size_t at = b->n;
    if (trim)
        sb_trim(b, s);
    else
        sb_str(b, s);
    if (b->spans && !b->oom)
        b->spans[b->n_spans++] = (span){at, b->n - at};
}

static int render(int f, const lmk_chat_msg *m, size_t n, int add_ass, sb *b)
{
    switch (f) {
    case LMK_CHAT_CHATML:
        for (size_t i = 0; i < n; i++) {
            sb_str(b, "<|im_start|>");
            sb_str(b, m[i].role);
            sb_str(b, "\n");
            sb_content(b, m[i].content, 0);
            sb_str(b, "<|im_end|>\n");
        }
        if (add_ass)
            sb_str(b, "<|im_start|>assistant\n");
        return 0;
    case LMK_CHAT_MISTRAL_V7: {
        const char *sp = " ";
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(m[i].role, "system")) {
                sb_str(b, "[SYSTEM_PROMPT]");
                sb_str(b, sp);
                sb_content(b, m[i].content, 0);
                sb_str(b, "[/SYSTEM_PROMPT]");
            } else if (!strcmp(m[i].role, "user")) {
                sb_str(b, "[INST]");
                sb_str(b, sp);
                sb_content(b, m[i].content, 0);
                sb_str(b, "[/INST]");
            } else {
                sb_str(b, sp);
                sb_content(b, m[i].content, 0);
                sb_str(b, "</s>");
            }
        }
        return 0;
    }
    case LMK_CHAT_MISTRAL_V1:
    case LMK_CHAT_MISTRAL_V3:
    case LMK_CHAT_MISTRAL_V3_TEKKEN: {
        const char *lead = f == LMK_CHAT_MISTRAL_V1 ? " " : "";
        const char *trail = f == LMK_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
        int inside = 0;
        for (size_t i = 0; i < n; i++) {
            if (!inside) {
                sb_str(b, lead);
                sb_str(b, "[INST]");
                sb_str(b, trail);
                inside = 1;
            }
            if (!strcmp(m[i].role, "system")) {
                sb_content(b, m[i].content, 0);
                sb_str(b, "\n\n");
            } else if (!strcmp(m[i].role, "user")) {
                sb_content(b, m[i].content, 0);
                sb_str(b, lead);
                sb_str(b, "[/INST]");
            } else {
                sb_str(b, trail);
                if (f == LMK_CHAT_MISTRAL_V3)
                    sb_content(b, m[i].content, 1);
                else
                    sb_content(b, m[i].content, 0);
                sb_str(b, "</s>");
                inside = 0;
            }
        }
        return 0;
    }
    case LMK_CHAT_PHI3:
        for (size_t i = 0; i < n; i++) {
            sb_str(b, "<|");
            sb_str(b, m[i].role);
            sb_str(b, "|>\n");
            sb_content(b, m[i].content, 0);
            sb_str(b, "<|end|>\n");
        }
        if (add_ass)
            sb_str(b, "<|assistant|>\n");
        return 0;
    case LMK_CHAT_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            sb_str(b, "<|start_header_id|>");
            sb_str(b, m[i].role);
            sb_str(b, "<|end_header_id|>\n\n");
            sb_content(b, m[i].content, 1);
            sb_str(b, "<|eot_id|>");
        }
        if (add_ass)
            sb_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        return 0;
    }
    return -1;
}

LMK_API long long lmk_chat_render(int f, const lmk_chat_msg *msgs, size_t n, int add_assistant,
                                  char *buf, size_t cap)
{
    sb b = {0};
    if (render(f, msgs, n, add_assistant, &b)) {
        free(b.p);
        return -1;
    }
    if (b.oom) {
        free(b.p);
        return -1;
    }
    if (cap) {
        size_t c = b.n < cap ? b.n : cap - 1;
        memcpy(buf, b.p ? b.p : "", c);
        buf[c] = 0;
    }
    long long n_out = (long long)b.n;
    free(b.p);
    return n_out;
}

/* Placeholders of the document, question and answer: control bytes no format trims or
 * alters, and no real content is needed to find the frames. */
#define DOC "\x01" "D" "\x01"
#define QUE "\x01" "Q" "\x01"
#define ANS "\x01" "A" "\x01"

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static int trims_user(int f) { return f == LMK_CHAT_LLAMA3; }

LMK_API int lmk_chat_doc_trims(int f) { return trims_user(f); }

LMK_API int lmk_chat_doc_frame(int f, const char *system, const char *doc, size_t doc_len,
                               char **head, size_t *skip)
{
    *head = NULL;
    *skip = 0;
    if (f < 0 || f >= LMK_CHAT_N_FORMATS)
        return LMK_EINVAL;
    lmk_chat_msg m[2];
    size_t n = 0;
    if (system && *system)
        m[n++] = (lmk_chat_msg){"system", system};
    m[n++] = (lmk_chat_msg){"user", DOC "\n\n" QUE};
    sb b = {0};
    render(f, m, n, 1, &b);
    if (b.oom || !b.p) {
        free(b.p);
        return ENOMEM;
    }
    const char *d = strstr(b.p, DOC);
    *head = d ? dup_n(b.p, (size_t)(d - b.p)) : NULL;
    free(b.p);
    if (!*head)
        return ENOMEM;
    if (trims_user(f))
        while (*skip < doc_len && isspace((unsigned char)doc[*skip]))
            (*skip)++;
    return 0;
}

LMK_API int lmk_chat_question_frame(int f, const char *system, int after_doc, int turn,
                                    const char *q, size_t q_len, char **head, char **sep,
                                    char **tail, size_t *q_off, size_t *q_len_out)
{
    *head = *sep = *tail = NULL;
    *q_off = 0;
    *q_len_out = q_len;
    if (f < 0 || f >= LMK_CHAT_N_FORMATS)
        return LMK_EINVAL;
    /* the conversation so far with placeholders, ending with this question */
    lmk_chat_msg m[5];
    size_t n = 0;
    if (system && *system)
        m[n++] = (lmk_chat_msg){"system", system};
    m[n++] = (lmk_chat_msg){"user", after_doc ? DOC "\n\n" QUE : QUE};
    if (turn > 0) {
        /* later questions: only the text after the last answer matters */
        m[n - 1].content = after_doc ? DOC "\n\n" "\x01" "q" "\x01" : "\x01" "q" "\x01";
        m[n++] = (lmk_chat_msg){"assistant", ANS};
        m[n++] = (lmk_chat_msg){"user", QUE};
    }
    sb b = {0};
    render(f, m, n, 1, &b);
    if (b.oom || !b.p) {
        free(b.p);
        return ENOMEM;
    }
    const char *qp = strstr(b.p, QUE);
    const char *from;
    int rc = 0;
    if (!qp) {
        rc = LMK_EINVAL;
        goto out;
    }
    if (turn > 0) {
        const char *a = strstr(b.p, ANS);
        from = a ? a + strlen(ANS) : qp;
        *sep = dup_n("", 0);
    } else if (after_doc) {
        from = qp; /* the question continues the user's message after the document */
        *sep = dup_n("\n\n", 2);
    } else {
        from = b.p;
        *sep = dup_n("", 0);
    }
    if (turn == 0 && after_doc)
        *head = dup_n("", 0);
    else
        *head = dup_n(from, (size_t)(qp - from));
    *tail = dup_n(qp + strlen(QUE), strlen(qp + strlen(QUE)));
    if (!*head || !*sep || !*tail)
        rc = ENOMEM;
    if (trims_user(f)) {
        /* the message is trimmed as a whole: its end always, its start when the question
         * opens it */
        size_t a = 0, e = q_len;
        if (!after_doc || turn > 0)
            while (a < e && isspace((unsigned char)q[a]))
                a++;
        while (e > a && isspace((unsigned char)q[e - 1]))
            e--;
        *q_off = a;
        *q_len_out = e - a;
    }
out:
    free(b.p);
    if (rc) {
        free(*head);
        free(*sep);
        free(*tail);
        *head = *sep = *tail = NULL;
    }
    return rc;
}

LMK_API int lmk_chat_continue(int f, const lmk_chat_state *prior, const lmk_chat_msg *msgs,
                              size_t n, int add_assistant, char **out, size_t *out_len,
                              lmk_chat_piece **pieces, size_t *n_pieces)
{
    *out = NULL;
    *out_len = 0;
    *pieces = NULL;
    *n_pieces = 0;
    if (f < 0 || f >= LMK_CHAT_N_FORMATS)
        return LMK_EINVAL;
    /* The whole conversation with placeholders for what the session holds; the text fed
     * is what follows the placeholder of its last part (cut). */
    lmk_chat_msg *v = malloc((n + 2) * sizeof *v);
    char *merged = NULL;
    size_t nv = 0, cut_msg = 0, cut_in = 0; /* the cut: after cut_in bytes of message cut_msg */
    int at_start = 1;
    if (!v)
        return ENOMEM;
    if (prior && prior->turns > 0) {
        v[nv++] = (lmk_chat_msg){"user", "\x01" "q" "\x01"};
        v[nv++] = (lmk_chat_msg){"assistant", ANS};
        cut_msg = 1;
        cut_in = strlen(ANS);
        at_start = 0;
    } else if (prior && prior->has_doc) {
        /* the first user message is open after its document: a user message continues it */
        size_t dl = strlen(DOC);
        if (n > 0 && !strcmp(msgs[0].role, "user")) {
            size_t cl = strlen(msgs[0].content);
            if (!(merged = malloc(dl + 2 + cl + 1))) {
                free(v);
                return ENOMEM;
            }
            memcpy(merged, DOC "\n\n", dl + 2);
            memcpy(merged + dl + 2, msgs[0].content, cl + 1);
            v[nv++] = (lmk_chat_msg){"user", merged};
            msgs++;
            n--;
        } else {
            v[nv++] = (lmk_chat_msg){"user", DOC};
        }
        cut_msg = 0;
        cut_in = dl;
        at_start = 0;
    }
    for (size_t i = 0; i < n; i++)
        v[nv++] = msgs[i];
    sb b = {0};
    b.spans = malloc((nv ? nv : 1) * sizeof *b.spans);
    if (!b.spans)
        b.oom = 1;
    else
        render(f, v, nv, add_assistant, &b);
    int rc = b.oom ? ENOMEM : 0;
    size_t cut = 0;
    if (!rc && !at_start) {
        /* the placeholders hold no byte a format trims, so the cut is inside the span */
        if (cut_msg >= b.n_spans || cut_in > b.spans[cut_msg].len)
            rc = LMK_EINVAL;
        else
            cut = b.spans[cut_msg].off + cut_in;
    }
    lmk_chat_piece *pc = NULL;
    size_t np = 0;
    if (!rc && !(pc = malloc((2 * b.n_spans + 1) * sizeof *pc)))
        rc = ENOMEM;
    if (!rc) {
        /* template text between the contents (and their parts after the cut) */
        size_t at = cut;
        for (size_t i = 0; i < b.n_spans; i++) {
            size_t s = b.spans[i].off, e = s + b.spans[i].len;
            if (e <= cut)
                continue;
            if (s < cut)
                s = cut;
            if (s > at)
                pc[np++] = (lmk_chat_piece){at - cut, s - at, 0};
            if (e > s)
                pc[np++] = (lmk_chat_piece){s - cut, e - s, 1};
            at = e;
        }
        if (b.n > at)
            pc[np++] = (lmk_chat_piece){at - cut, b.n - at, 0};
        *out_len = b.n - cut;
        *out = dup_n(b.p ? b.p + cut : "", *out_len);
        if (!*out)
            rc = ENOMEM;
    }
    free(b.p);
    free(b.spans);
    free(merged);
    free(v);
    if (rc) {
        free(pc);
        free(*out);
        *out = NULL;
        *out_len = 0;
        return rc;
    }
    *pieces = pc;
    *n_pieces = np;
    return 0;
}

/* ---- state ---- */

LMK_API int lmk_chat_state_read(const char *dir, lmk_chat_state *st)
{
    st->format = -1;
    st->has_doc = 0;
    st->turns = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/model-chat.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : errno;
    char line[256], name[64];
    int v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "format %63s", name) == 1)
            st->format = lmk_chat_format_from_name(name);
        else if (sscanf(line, "doc %d", &v) == 1)
            st->has_doc = v != 0;
        else if (sscanf(line, "turns %d", &v) == 1 && v >= 0)
            st->turns = v;
    }
    fclose(f);
    return 0;
}

LMK_API int lmk_chat_state_write(const char *dir, const lmk_chat_state *st)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/model-chat.txt", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return errno;
    const char *name = lmk_chat_format_name(st->format);
    fprintf(f, "format %s\ndoc %d\nturns %d\n", name ? name : "none", st->has_doc, st->turns);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return e;
    }
    return 0;
}
