/* The option parser every `landmark` subcommand uses: one table per command, so adding a
 * flag is one line in one place, and `--help` is generated from the same table.
 *
 * Accepted forms: `--name VALUE`, `--name=VALUE`, `-x VALUE` (one-letter alias), `--flag`;
 * `--` ends the options; anything not starting with '-' (or a lone "-") is positional.
 * Numbers may carry a k/m/g suffix (x1024, x1024^2, x1024^3) where the option is a COUNT,
 * and every numeric option may also accept named words (`--top-k all`).
 *
 * Errors are one line on stderr, "landmark CMD: ...", and make lmk_opt_parse() return 2
 * (the command's usage-error exit status).
 */
#ifndef LMK_CLI_OPT_H
#define LMK_CLI_OPT_H

#include <stddef.h>
#include <stdio.h>

typedef enum lmk_opt_kind {
    LMK_OPT_FLAG,   /* no value; *(int *)dst = 1 */
    LMK_OPT_STR,    /* *(const char **)dst = the argument (borrowed from argv) */
    LMK_OPT_COUNT,  /* *(long long *)dst: integer >= 0 with optional k/m/g suffix */
    LMK_OPT_INT,    /* *(int *)dst: integer with optional k/m/g suffix, within [min, max] */
    LMK_OPT_U64,    /* *(unsigned long long *)dst: decimal or 0x hex, no suffix */
    LMK_OPT_DOUBLE, /* *(double *)dst: finite number within [min, max] */
    LMK_OPT_CHOICE, /* *(int *)dst = the value of the matching word of `words` */
    LMK_OPT_FN,     /* fn(ctx, value): anything else (lists, repeated options) */
} lmk_opt_kind;

/* A named value: the words of a CHOICE, or extra words a numeric option accepts. */
typedef struct lmk_opt_word {
    const char *word;
    long long value;
} lmk_opt_word;

/* Callback of an LMK_OPT_FN option: return 0, or nonzero with a message in err (the
 * parser prints "invalid value 'V' for --name: <err>", or just the first part when err is
 * left empty). */
typedef int (*lmk_opt_fn)(void *ctx, const char *value, char *err, size_t cap);

typedef struct lmk_opt {
    const char *name;      /* long name with its dashes, "--top-k" */
    char alias;            /* one-letter alias ('t' for -t), or 0 */
    lmk_opt_kind kind;
    void *dst;             /* see lmk_opt_kind; for FN, the ctx passed to fn */
    double min, max;       /* inclusive range of INT, COUNT and DOUBLE; min == max == 0: any
                            * (COUNT: >= 0, INT: any int, DOUBLE: any finite) */
    const lmk_opt_word *words; /* CHOICE: the words (required); numeric kinds: extra words
                                * accepted besides numbers; NULL-word terminated */
    lmk_opt_fn fn;         /* FN only */
    int *given;            /* set to 1 when the option appears (may be NULL) */
    const char *metavar;   /* value name in the help ("N", "SPEC"); NULL for flags */
    const char *help;      /* one line or more ('\n' continues, indented) */
} lmk_opt;

/* A command's options and positional arguments. */
typedef struct lmk_opt_spec {
    const char *cmd;          /* "demo": used in error messages */
    const char *usage;        /* "landmark demo [options]" */
    const char *about;        /* paragraph printed after the usage line (may be NULL) */
    const lmk_opt *opts;
    int n_opts;
    const char *epilog;       /* text printed after the option list (may be NULL) */
    int min_pos, max_pos;     /* number of positional arguments accepted */
} lmk_opt_spec;

/* Parse argv[1..argc) (argv[0] is the subcommand's name) against spec. Positional
 * arguments are stored in pos[0..max_pos) (borrowed from argv) and counted in *n_pos
 * (n_pos may be NULL when max_pos is 0). `-h`/`--help` prints the help to stdout.
 * Returns 0 when parsed, 1 when help was printed (the command should exit 0), 2 on a
 * usage error (one line printed on stderr). */
int lmk_opt_parse(const lmk_opt_spec *spec, int argc, char **argv, const char **pos,
                  int *n_pos);

/* Print the help generated from spec (usage, about, options, epilog) to f. */
void lmk_opt_help(const lmk_opt_spec *spec, FILE *f);

/* A non-negative integer with an optional k/m/g suffix (x1024 powers), e.g. "64k";
 * fractions are accepted when the result is whole ("1.5k"). Returns -1 on error. */
long long lmk_opt_count(const char *s);

/* A comma-separated list of counts ("1k,4k,16k") into out[0..cap); returns how many, or -1
 * when an element is invalid or there are more than cap. */
int lmk_opt_count_list(const char *s, long long *out, int cap);

/* A comma-separated list of finite doubles within [min, max] into out[0..cap); returns how
 * many, or -1. */
int lmk_opt_double_list(const char *s, double min, double max, double *out, int cap);

/* A block representative, "--repr NAME[:R]": mean, keys, attn[:R], query[:R], outlier[:R]
 * (lmk_landmark_src values of lmk_session.h; R index entries per block, default 4).
 * An LMK_OPT_FN callback; ctx is an lmk_opt_repr. */
typedef struct lmk_opt_repr {
    int landmark; /* lmk_landmark_src; 0 = the model's default */
    int n_repr;   /* 0 = the default */
} lmk_opt_repr;

int lmk_opt_repr_fn(void *ctx, const char *value, char *err, size_t cap);

/* The name of a landmark source as --repr spells it ("mean", "token", "keys", ...). */
const char *lmk_opt_repr_name(int landmark);

#endif
