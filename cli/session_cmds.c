/* landmark info | verify | truncate | fork | reindex: thin layers over the session API.
 * verify walks the session in a child process: LMDB has no checksums of its own and can crash
 * on a damaged file, so a crash there becomes a report instead of taking the caller down. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "opt.h"
#include "lmk_session.h"
#include "probe.h"

static void json_str(FILE *f, const char *s)
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

static void log_stderr(void *ud, const char *msg)
{
    fprintf(stderr, "landmark %s: %s\n", (const char *)ud, msg);
}

static int open_existing(const char *cmd, const char *dir, int read_only, lmk_session **s)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = read_only;
    o.log = log_stderr;
    o.log_ud = (void *)cmd;
    char msg[1024] = "";
    int rc = lmk_session_open(dir, &o, s, msg, sizeof msg);
    if (rc)
        lmk_cli_error(cmd, "%s", msg);
    return rc;
}

/* Parse "--json" and "--help" plus positional arguments; returns the count or -1 (usage),
 * -2 (help printed). */
static int simple_args(int argc, char **argv, const char *usage, int *json, char **pos, int max)
{
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && json)
            *json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s", usage);
            return -2;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "landmark %s: unknown option '%s'\n%s", argv[0], argv[i], usage);
            return -1;
        } else if (n < max) {
            pos[n++] = argv[i];
        } else {
            fprintf(stderr, "landmark %s: unexpected argument '%s'\n%s", argv[0], argv[i], usage);
            return -1;
        }
    }
    return n;
}

int lmk_cmd_info(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark info DIR [--json]\n\n"
        "Show a session's shape, token and block counts, index spec, model fingerprint, disk\n"
        "use and a digest of its stored data (equal for sessions holding equal data).\n";
    int json = 0;
    char *pos[1];
    int n = simple_args(argc, argv, usage, &json, pos, 1);
    if (n == -2)
        return 0;
    if (n != 1) {
        if (n == 0)
            fprintf(stderr, "%s", usage);
        return 2;
    }
    lmk_session *s = NULL;
    if (lmk_cli_probe_session("info", pos[0], LMK_PROBE_WALK) ||
        open_existing("info", pos[0], 1, &s))
        return 1;
    lmk_session_info in;
    uint64_t dig = 0;
    if (lmk_session_info_get(s, &in) || lmk_session_data_digest(s, &dig)) {
        lmk_cli_error("info", "%s", lmk_session_errmsg(s));
        lmk_session_close(s);
        return 1;
    }
    const char *dt = in.dtype == LMK_DTYPE_F16 ? "f16" : "f32";
    const char *lm = in.landmark == LMK_LANDMARK_TOKEN ? "token" : "mean";
    if (json) {
        printf("{\"format_version\": %d, \"tokens\": %lld, \"blocks\": %lld, \"layers\": %d, "
               "\"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, \"block_len\": %d, "
               "\"dtype\": \"%s\", \"landmark\": \"%s\", \"index\": ",
               in.format_version, (long long)in.tokens, (long long)in.blocks, in.n_layers,
               in.n_heads, in.n_kv_heads, in.head_dim, in.block_len, dt, lm);
        json_str(stdout, in.index_spec);
        printf(", \"index_spec\": ");
        json_str(stdout, in.index_spec);
        printf(", \"fingerprint\": ");
        json_str(stdout, in.fingerprint);
        printf(", \"disk_bytes\": %llu, \"data_digest\": \"%016llx\"}\n",
               (unsigned long long)in.disk_bytes, (unsigned long long)dig);
    } else {
        printf("format_version %d\ntokens         %lld\nblocks         %lld\nlayers         %d\n"
               "heads          %d query, %d KV\nhead_dim       %d\nblock_len      %d\n"
               "dtype          %s\nlandmark       %s\nindex          %s\nfingerprint    %s\n"
               "disk_bytes     %llu\ndata_digest    %016llx\n",
               in.format_version, (long long)in.tokens, (long long)in.blocks, in.n_layers,
               in.n_heads, in.n_kv_heads, in.head_dim, in.block_len, dt, lm, in.index_spec,
               in.fingerprint, (unsigned long long)in.disk_bytes, (unsigned long long)dig);
    }
    lmk_session_close(s);
    return 0;
}

/* ---- verify ---- */

typedef struct vout {
    FILE *f;
} vout;

static void verify_report(void *ud, const char *msg)
{
    /* one line per problem on the pipe: "E <text>" */
    fprintf(((vout *)ud)->f, "E %s\n", msg);
}

static void verify_note(void *ud, const char *msg)
{
    fprintf((FILE *)ud, "N %s\n", msg);
}

static int verify_child(const char *dir, FILE *f)
{
    /* Bound the heap of a session of unknown health (mapped files do not count here). */
    struct rlimit rl;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0 && !LMK_CLI_UNDER_ASAN) { /* ASan's shadow counts as data */
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)psz / 2;
        setrlimit(RLIMIT_DATA, &rl);
    }
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = 1;
    o.log = verify_note;
    o.log_ud = f;
    lmk_session *s = NULL;
    char msg[1024] = "";
    int rc = lmk_session_open(dir, &o, &s, msg, sizeof msg);
    if (rc) {
        fprintf(f, "E cannot open the session: %s\n", msg);
        fprintf(f, "R 0 1\n");
        return 1;
    }
    int64_t checked = 0, errors = 0;
    vout vo = {f};
    rc = lmk_session_verify(s, verify_report, &vo, &checked, &errors);
    if (rc) {
        fprintf(f, "E %s\n", lmk_session_errmsg(s));
        errors++;
    }
    fprintf(f, "R %lld %lld\n", (long long)checked, (long long)errors);
    lmk_session_close(s);
    return errors ? 1 : 0;
}

int lmk_cmd_verify(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark verify DIR [--json]\n\n"
        "Walk every stored value and check its checksum, check that each landmark index covers\n"
        "exactly the stored blocks, and check the metadata. The walk runs in a child process,\n"
        "so a file that crashes the storage library is reported, not fatal. Exit status 0 only\n"
        "when everything is intact.\n";
    int json = 0;
    char *pos[1];
    int n = simple_args(argc, argv, usage, &json, pos, 1);
    if (n == -2)
        return 0;
    if (n != 1) {
        if (n == 0)
            fprintf(stderr, "%s", usage);
        return 2;
    }
    int fds[2];
    if (pipe(fds)) {
        lmk_cli_error("verify", "pipe: %s", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        lmk_cli_error("verify", "fork: %s", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        close(fds[0]);
        FILE *f = fdopen(fds[1], "w");
        int st = f ? verify_child(pos[0], f) : 1;
        if (f)
            fclose(f);
        _exit(st);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[2048];
    char **errs = NULL, **notes = NULL;
    size_t ne = 0, nn = 0;
    long long checked = 0, reported = -1;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == 'E' || line[0] == 'N') {
            char ***arr = line[0] == 'E' ? &errs : &notes;
            size_t *cnt = line[0] == 'E' ? &ne : &nn;
            char **grown = realloc(*arr, (*cnt + 1) * sizeof **arr);
            if (grown) {
                *arr = grown;
                (*arr)[(*cnt)++] = strdup(line + 2);
            }
        } else if (line[0] == 'R') {
            long long e = 0;
            if (sscanf(line + 2, "%lld %lld", &checked, &e) == 2)
                reported = e;
        }
    }
    if (f)
        fclose(f);
    int wst = 0;
    waitpid(pid, &wst, 0);
    char crash[256] = "";
    if (WIFSIGNALED(wst)) {
        snprintf(crash, sizeof crash,
                 "reading the session crashed the storage library (signal %d, %s): the data "
                 "file is damaged",
                 WTERMSIG(wst), strsignal(WTERMSIG(wst)));
    } else if (reported < 0) {
        snprintf(crash, sizeof crash, "the verifying process ended early (exit status %d)",
                 WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
    }
    int ok = ne == 0 && !crash[0];
    if (json) {
        printf("{\"ok\": %s, \"blocks_checked\": %lld, \"errors\": [", ok ? "true" : "false",
               checked);
        for (size_t i = 0; i < ne; i++) {
            if (i)
                printf(", ");
            json_str(stdout, errs[i] ? errs[i] : "");
        }
        if (crash[0]) {
            if (ne)
                printf(", ");
            json_str(stdout, crash);
        }
        printf("], \"notes\": [");
        for (size_t i = 0; i < nn; i++) {
            if (i)
                printf(", ");
            json_str(stdout, notes[i] ? notes[i] : "");
        }
        printf("]}\n");
    } else {
        for (size_t i = 0; i < nn; i++)
            printf("note: %s\n", notes[i] ? notes[i] : "");
        for (size_t i = 0; i < ne; i++)
            printf("error: %s\n", errs[i] ? errs[i] : "");
        if (crash[0])
            printf("error: %s\n", crash);
        printf("%s: %lld blocks checked, %zu error%s\n", ok ? "ok" : "DAMAGED", checked,
               ne + (crash[0] ? 1 : 0), ne + (crash[0] ? 1 : 0) == 1 ? "" : "s");
    }
    for (size_t i = 0; i < ne; i++)
        free(errs[i]);
    for (size_t i = 0; i < nn; i++)
        free(notes[i]);
    free(errs);
    free(notes);
    return ok ? 0 : 1;
}

int lmk_cmd_truncate(int argc, char **argv)
{
    static const char usage[] = "usage: landmark truncate DIR --tokens N\n\n"
                                "Cut every layer of the session back to its first N tokens.\n";
    const char *dir = NULL;
    long long n = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s", usage);
            return 0;
        } else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
            n = lmk_opt_count(argv[++i]);
            if (n < 0) {
                lmk_cli_error("truncate", "--tokens wants a count, got '%s'", argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "landmark truncate: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!dir || n < 0) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    lmk_session *s = NULL;
    if (lmk_cli_probe_session("truncate", dir, LMK_PROBE_WALK) ||
        open_existing("truncate", dir, 0, &s))
        return 1;
    int rc = lmk_session_truncate(s, n);
    if (rc)
        lmk_cli_error("truncate", "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    return rc ? 1 : 0;
}

int lmk_cmd_fork(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark fork SRC DST\n\n"
        "Write a compact copy of session SRC into the new directory DST (its indices included),\n"
        "so one ingested document can serve several conversations.\n";
    char *pos[2];
    int n = simple_args(argc, argv, usage, NULL, pos, 2);
    if (n == -2)
        return 0;
    if (n != 2) {
        if (n >= 0)
            fprintf(stderr, "%s", usage);
        return 2;
    }
    lmk_session *s = NULL;
    if (lmk_cli_probe_session("fork", pos[0], LMK_PROBE_WALK) ||
        open_existing("fork", pos[0], 1, &s))
        return 1;
    int rc = lmk_session_fork(s, pos[1]);
    if (rc)
        lmk_cli_error("fork", "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    return rc ? 1 : 0;
}

int lmk_cmd_reindex(int argc, char **argv)
{
    static const char usage[] =
        "usage: landmark reindex DIR --index SPEC\n\n"
        "Rebuild every landmark index of the session with another FAISS factory string, from\n"
        "the landmarks stored in the session.\n";
    const char *dir = NULL, *spec = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s", usage);
            return 0;
        } else if (!strcmp(argv[i], "--index") && i + 1 < argc) {
            spec = argv[++i];
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "landmark reindex: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!dir || !spec) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    lmk_session *s = NULL;
    if (lmk_cli_probe_session("reindex", dir, 0) ||
        open_existing("reindex", dir, 0, &s))
        return 1;
    int rc = lmk_session_reindex(s, spec);
    if (rc)
        lmk_cli_error("reindex", "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    return rc ? 1 : 0;
}
