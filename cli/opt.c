/* The subcommands' option parser (see opt.h). getopt_long covers the syntax but not
 * ranges, suffixes, named words or help generated from the same table, which is what keeps
 * a flag to one line in one place; so the table is interpreted here. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "opt.h"

long long lmk_opt_count(const char *s)
{
    /* strtod alone would also take blanks, signs, hex, "inf" and "nan" */
    if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '.') ||
        (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')))
        return -1;
    char *end = NULL;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || errno || !(x >= 0))
        return -1;
    if (*end == 'k' || *end == 'K')
        x *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        x *= 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        x *= 1024.0 * 1024 * 1024, end++;
    if (*end || x > 9e18 || x != (double)(long long)x)
        return -1;
    return (long long)x;
}

int lmk_opt_count_list(const char *s, long long *out, int cap)
{
    int n = 0;
    const char *p = s;
    if (!s || !*s)
        return -1;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        char tmp[64];
        if (len == 0 || len >= sizeof tmp || n >= cap)
            return -1;
        memcpy(tmp, p, len);
        tmp[len] = 0;
        long long v = lmk_opt_count(tmp);
        if (v < 0)
            return -1;
        out[n++] = v;
        if (!c)
            return n;
        p = c + 1;
    }
}

int lmk_opt_double_list(const char *s, double min, double max, double *out, int cap)
{
    int n = 0;
    const char *p = s;
    if (!s || !*s)
        return -1;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || v < min || v > max || n >= cap)
            return -1;
        out[n++] = v;
        if (*end == 0)
            return n;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
}

static const lmk_opt_word *find_word(const lmk_opt_word *w, const char *v)
{
    for (; w && w->word; w++)
        if (!strcmp(w->word, v))
            return w;
    return NULL;
}

static int in_range(const lmk_opt *o, double x)
{
    if (o->min == 0 && o->max == 0)
        return 1;
    return x >= o->min && x <= o->max;
}

/* Write a number to o's destination, in the type its kind stores. */
static void put_number(const lmk_opt *o, long long n, double x)
{
    switch (o->kind) {
    case LMK_OPT_COUNT: *(long long *)o->dst = n; break;
    case LMK_OPT_INT:
    case LMK_OPT_CHOICE: *(int *)o->dst = (int)n; break;
    case LMK_OPT_U64: *(unsigned long long *)o->dst = (unsigned long long)n; break;
    case LMK_OPT_DOUBLE: *(double *)o->dst = x; break;
    default: break;
    }
}

/* A signed count ("-5", "4k"), or -1 with *ok = 0. */
static long long signed_count(const char *v, int *ok)
{
    long long n = lmk_opt_count(v[0] == '-' ? v + 1 : v);
    *ok = n >= 0;
    return v[0] == '-' ? -n : n;
}

/* Store v into o's destination. Returns 0, or -1 with err possibly filled. */
static int store(const lmk_opt *o, const char *v, char *err, size_t cap)
{
    const lmk_opt_word *w = find_word(o->words, v);
    char *end;
    int ok;
    switch (o->kind) {
    case LMK_OPT_FLAG:
        *(int *)o->dst = 1;
        return 0;
    case LMK_OPT_STR:
        if (!*v) {
            snprintf(err, cap, "empty");
            return -1;
        }
        *(const char **)o->dst = v;
        return 0;
    case LMK_OPT_FN:
        return o->fn(o->dst, v, err, cap) ? -1 : 0;
    case LMK_OPT_CHOICE:
        if (!w) {
            size_t off = (size_t)snprintf(err, cap, "expected");
            for (const lmk_opt_word *x = o->words; x && x->word && off < cap; x++)
                off += (size_t)snprintf(err + off, cap - off, "%s%s", x == o->words ? " " : "|",
                                        x->word);
            return -1;
        }
        break;
    default:
        break;
    }
    if (w) { /* a named value of a numeric option: taken as it is, no range check */
        put_number(o, w->value, (double)w->value);
        return 0;
    }
    switch (o->kind) {
    case LMK_OPT_COUNT: {
        long long n = lmk_opt_count(v);
        if (n < 0 || !in_range(o, (double)n))
            return -1;
        put_number(o, n, (double)n);
        return 0;
    }
    case LMK_OPT_INT: {
        long long n = signed_count(v, &ok);
        if (!ok || n < INT_MIN || n > INT_MAX || !in_range(o, (double)n))
            return -1;
        put_number(o, n, (double)n);
        return 0;
    }
    case LMK_OPT_U64: {
        /* decimal, or hex with 0x: never octal, never signed or blank-led */
        int hex = v[0] == '0' && (v[1] == 'x' || v[1] == 'X');
        if (hex ? !isxdigit((unsigned char)v[2]) : !isdigit((unsigned char)v[0]))
            return -1;
        errno = 0;
        unsigned long long n = strtoull(v, &end, hex ? 16 : 10);
        if (*end || errno)
            return -1;
        *(unsigned long long *)o->dst = n;
        return 0;
    }
    case LMK_OPT_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x) || !in_range(o, x))
            return -1;
        put_number(o, 0, x);
        return 0;
    }
    default:
        return -1;
    }
}

/* What a numeric option accepts, for its error message: "expected a count in 1..256 or
 * 'all'". */
static void expected(const lmk_opt *o, char *err, size_t cap)
{
    static const char *const what[] = {
        [LMK_OPT_COUNT] = "a count (k/m/g suffixes)", [LMK_OPT_INT] = "an integer",
        [LMK_OPT_U64] = "a decimal or 0x-hex integer", [LMK_OPT_DOUBLE] = "a number"};
    if (o->kind >= sizeof what / sizeof what[0] || !what[o->kind])
        return;
    size_t off = (size_t)snprintf(err, cap, "expected %s", what[o->kind]);
    if (off < cap && !(o->min == 0 && o->max == 0))
        off += (size_t)snprintf(err + off, cap - off, " in %.15g..%.15g", o->min, o->max);
    for (const lmk_opt_word *w = o->words; w && w->word && off < cap; w++)
        off += (size_t)snprintf(err + off, cap - off, " or '%s'", w->word);
}

static const lmk_opt *find_opt(const lmk_opt_spec *s, const char *name, size_t len, char alias)
{
    for (int i = 0; i < s->n_opts; i++) {
        const lmk_opt *o = &s->opts[i];
        if (alias ? o->alias == alias
                  : (strlen(o->name) == len && !strncmp(o->name, name, len)))
            return o;
    }
    return NULL;
}

void lmk_opt_help(const lmk_opt_spec *s, FILE *f)
{
    fprintf(f, "usage: %s\n", s->usage);
    if (s->about && *s->about) {
        fprintf(f, "\n%s", s->about);
        if (s->about[strlen(s->about) - 1] != '\n')
            fputc('\n', f);
    }
    fprintf(f, "\n");
    for (int i = 0; i < s->n_opts; i++) {
        const lmk_opt *o = &s->opts[i];
        char head[96];
        int n = snprintf(head, sizeof head, "  %s%s%s%s%s", o->alias ? "-" : "",
                         o->alias ? (char[2]){o->alias, 0} : "", o->alias ? ", " : "", o->name,
                         "");
        if (o->metavar && n > 0 && (size_t)n < sizeof head)
            snprintf(head + n, sizeof head - (size_t)n, " %s", o->metavar);
        fprintf(f, "%-24s", head);
        if (strlen(head) >= 24)
            fprintf(f, "\n%24s", "");
        for (const char *p = o->help ? o->help : ""; *p; p++) {
            fputc(*p, f);
            if (*p == '\n' && p[1])
                fprintf(f, "%24s", "");
        }
        fputc('\n', f);
    }
    fprintf(f, "  %-22s%s\n", "-h, --help", "this help");
    if (s->epilog)
        fprintf(f, "\n%s", s->epilog);
}

int lmk_opt_parse(const lmk_opt_spec *s, int argc, char **argv, const char **pos, int *n_pos)
{
    int npos = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || !a[1]) {
            if (npos >= s->max_pos) {
                lmk_cli_error(s->cmd, "unexpected argument '%s' (see --help)", a);
                return 2;
            }
            pos[npos++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            lmk_opt_help(s, stdout);
            return 1;
        }
        const lmk_opt *o;
        const char *v = NULL;
        if (a[1] == '-') {
            const char *eq = strchr(a, '=');
            o = find_opt(s, a, eq ? (size_t)(eq - a) : strlen(a), 0);
            if (eq)
                v = eq + 1;
        } else {
            o = a[2] ? NULL : find_opt(s, NULL, 0, a[1]);
        }
        if (!o) {
            lmk_cli_error(s->cmd, "unknown option '%s' (see --help)", a);
            return 2;
        }
        if (o->kind == LMK_OPT_FLAG) {
            if (v) {
                lmk_cli_error(s->cmd, "option %s takes no value", o->name);
                return 2;
            }
        } else if (!v) {
            if (i + 1 >= argc) {
                lmk_cli_error(s->cmd, "option %s needs a value", o->name);
                return 2;
            }
            v = argv[++i];
        }
        char err[256] = "";
        if (store(o, v ? v : "", err, sizeof err)) {
            if (!err[0])
                expected(o, err, sizeof err);
            if (err[0])
                lmk_cli_error(s->cmd, "invalid value '%s' for %s: %s", v, o->name, err);
            else
                lmk_cli_error(s->cmd, "invalid value '%s' for %s", v, o->name);
            return 2;
        }
        if (o->given)
            *o->given = 1;
    }
    if (npos < s->min_pos) {
        lmk_cli_error(s->cmd, "missing argument (usage: %s)", s->usage);
        return 2;
    }
    if (n_pos)
        *n_pos = npos;
    return 0;
}

static const char *const k_repr_names[] = {"auto", "mean", "token", "keys", "attn", "query",
                                           "outlier"};

const char *lmk_opt_repr_name(int landmark)
{
    return landmark >= 0 && landmark < 7 ? k_repr_names[landmark] : "?";
}

int lmk_opt_repr_fn(void *ctx, const char *value, char *err, size_t cap)
{
    lmk_opt_repr *r = ctx;
    const char *colon = strchr(value, ':');
    size_t nl = colon ? (size_t)(colon - value) : strlen(value);
    int src = 0;
    for (int i = 1; i < 7; i++)
        if (i != 2 && strlen(k_repr_names[i]) == nl && !strncmp(value, k_repr_names[i], nl))
            src = i;
    if (!src) {
        snprintf(err, cap, "one of mean, keys, attn[:R], query[:R], outlier[:R]");
        return 1;
    }
    int n = 0;
    if (colon) {
        long long v = lmk_opt_count(colon + 1);
        if (src < 4 || v < 1 || v > 65536) {
            snprintf(err, cap, "R (entries per block) only for attn, query and outlier, 1..65536");
            return 1;
        }
        n = (int)v;
    }
    r->landmark = src;
    r->n_repr = n;
    return 0;
}
