/* The landmark command: a thin dispatcher over the subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_error.h"

void openblas_set_num_threads(int num_threads);

static int error_printed;

int lmk_cli_error_printed(void)
{
    return error_printed;
}

void lmk_cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    error_printed = 1;
    fprintf(stderr, "landmark %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void lmk_cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void lmk_cli_set_blas_threads(int n)
{
    openblas_set_num_threads(n > 0 ? n : 1);
}

typedef struct cmd {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmd;

static const cmd cmds[] = {
    {"demo", lmk_cmd_demo, "ingest a synthetic stream with planted needles and decode probes"},
    {"info", lmk_cmd_info, "show a session's shape, size and data digest"},
    {"verify", lmk_cmd_verify, "check every stored value, the metadata and the indices"},
    {"truncate", lmk_cmd_truncate, "cut a session back to N tokens"},
    {"fork", lmk_cmd_fork, "copy a session into a new directory"},
    {"reindex", lmk_cmd_reindex, "rebuild a session's landmark indices with another spec"},
    {"bench", lmk_cmd_bench, "benchmark index types side by side"},
    {"run", lmk_cmd_run, "run a GGUF model over a document with retrieval attention"},
    {"passkey", lmk_cmd_passkey, "pass-key retrieval accuracy of a GGUF model"},
    {"perplexity", lmk_cmd_perplexity, "perplexity of a GGUF model over a file"},
    {"serve", lmk_cmd_serve, "serve sessions over HTTP (OpenAI-compatible API)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: landmark <command> [options]   (landmark <command> --help)\n\n"
               "Retrieval attention over FAISS landmark indices and an LMDB block store.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].help);
}

/* libgomp reads OMP_WAIT_POLICY once, when it loads; its default (threads spin while
 * waiting) starves OpenBLAS and FAISS on small machines: FAISS training measured 10-20x
 * slower here. Unless the user chose a policy, run this same binary again with the passive
 * one. Every failure is harmless: the command then carries on with the default policy. */
static void reexec_with_passive_wait(char **argv)
{
    /* setenv must have worked, or the new process would re-execute again, forever */
    if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return;
    execv("/proc/self/exe", argv); /* returns only on failure (no /proc, say) */
    /* libgomp already chose its policy: do not let the environment claim another one */
    unsetenv("OMP_WAIT_POLICY");
}

int main(int argc, char **argv)
{
    reexec_with_passive_wait(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("landmark 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "landmark: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
