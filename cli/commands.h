/* The landmark command's subcommands: each takes (argc, argv) with argv[0] the subcommand
 * name and returns the process exit status (0 ok, 1 failure, 2 usage error). */
#ifndef LMK_COMMANDS_H
#define LMK_COMMANDS_H

#include <stdio.h>

int lmk_cmd_demo(int argc, char **argv);
int lmk_cmd_info(int argc, char **argv);
int lmk_cmd_verify(int argc, char **argv);
int lmk_cmd_truncate(int argc, char **argv);
int lmk_cmd_fork(int argc, char **argv);
int lmk_cmd_reindex(int argc, char **argv);
int lmk_cmd_bench(int argc, char **argv);
int lmk_cmd_run(int argc, char **argv);
int lmk_cmd_passkey(int argc, char **argv);
int lmk_cmd_perplexity(int argc, char **argv);
int lmk_cmd_serve(int argc, char **argv);

/* Shared helpers of the command line (cli/landmark.c). */
/* Print "landmark <cmd>: <message>" to stderr (one line). */
void lmk_cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 once lmk_cli_error() has printed: what a session logs afterwards (closing after a
 * failed write, say) is a consequence of that error and stays unprinted. */
int lmk_cli_error_printed(void);
/* Print s to f as a JSON string: quoted, with '"', '\\' and control characters escaped. */
void lmk_cli_json_str(FILE *f, const char *s);
/* Set OpenBLAS's pool deliberately: 1 while the engine runs its own threads (one level of
 * parallelism), n for the dense baseline so both use the same number of threads. */
void lmk_cli_set_blas_threads(int n);

#endif
