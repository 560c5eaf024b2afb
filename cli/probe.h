/* Health probe of a session of unknown health, run before a command touches it.
 *
 * LMDB trusts its file: a damaged data.mdb can crash it (SIGSEGV, SIGBUS, or abort() on an
 * internal assertion) at open or at any later read. The probe opens the session and reads
 * what the command is about to read in a forked child, so a crash there becomes one clear
 * line and exit status 1 instead of killing the command.
 *
 * Not covered: a damaged free-page list, which LMDB reads only in a write transaction (it
 * can then abort, or hand out pages still in use). The probe never writes: a health check
 * must not risk the damage it looks for.
 */
#ifndef LMK_CLI_PROBE_H
#define LMK_CLI_PROBE_H

#include "lmk_session.h"

/* 1 in an AddressSanitizer build: its shadow memory counts against RLIMIT_DATA, so children
 * that bound their heap must not set that limit there. */
#if defined(__SANITIZE_ADDRESS__)
#define LMK_CLI_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LMK_CLI_UNDER_ASAN 1
#endif
#endif
#ifndef LMK_CLI_UNDER_ASAN
#define LMK_CLI_UNDER_ASAN 0
#endif

enum {
    /* Read every stored value (lmk_session_verify's walk: blocks, landmarks, tail tokens,
     * landmark lookups). Costs one read of the whole session. */
    LMK_PROBE_WALK = 1,
    /* lmk_cli_session_open() only: no probe (a directory this process has just created). */
    LMK_PROBE_SKIP = 2,
};

/* Open the session in `dir` read-only in a child process and do what `flags` ask (with no
 * flag: open only, which reads the configuration and layer records and loads or rebuilds
 * the landmark indices). Returns 0 when the command may go on: the child finished, or it
 * reported an ordinary error (no session, busy, refused...), which the command's own open
 * will report again. Returns 1 when the child crashed or did not finish within its time
 * limit; one line "landmark <cmd>: ..." has then been printed to stderr. */
int lmk_cli_probe_session(const char *cmd, const char *dir, int flags);

/* How every command opens a session: probe it (lmk_cli_probe_session with probe_flags,
 * unless LMK_PROBE_SKIP), then lmk_session_open(dir, o, s). When o->log is NULL the
 * session's messages are printed as "landmark <cmd>: ..." lines on stderr. Returns 0 with
 * *s open (the caller closes it), or 1 with *s NULL and one line printed on stderr (the open's
 * message; prefixed with dir when the session exists with other settings). */
int lmk_cli_session_open(const char *cmd, const char *dir, int probe_flags,
                         const lmk_session_opts *o, lmk_session **s);

#endif
