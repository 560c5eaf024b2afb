/* landmark info | verify | truncate | fork | reindex: thin layers over the session API.
 * verify walks the session in a child process: LMDB has no checksums of its own and can crash
 * on a damaged file, so a crash there becomes a report instead of taking the caller down. */
#include <errno.h>
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

/* Parse argv against the table; returns -1 to go on, else the exit status (0 after --help,
 * 2 on a usage error). */
static int parse(const lmk_opt_spec *spec, int argc, char **argv, const char **pos)
{
    int rc = lmk_opt_parse(spec, argc, argv, pos, NULL);
    return rc == 0 ? -1 : rc == 1 ? 0 : 2;
}

/* An option the command cannot run without: one line and the usage status when missing. */
static int require(const lmk_opt_spec *spec, int given, const char *what)
{
    if (given)
        return 0;
    lmk_cli_error(spec->cmd, "%s is required (usage: %s)", what, spec->usage);
    return 2;
}

/* Probe and open an existing session (see lmk_cli_session_open). */
static int open_existing(const char *cmd, const char *dir, int probe_flags, int read_only,
                         lmk_session **s)
{
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = read_only;
    return lmk_cli_session_open(cmd, dir, probe_flags, &o, s);
}

/* The end of a command that made one call on the session: its message, the exit status. */
static int finish(const char *cmd, lmk_session *s, int rc)
{
    if (rc)
        lmk_cli_error(cmd, "%s", lmk_session_errmsg(s));
    lmk_session_close(s);
    return rc ? 1 : 0;
}

/* The arguments of info and verify: DIR [--json]. Returns -1 to go on, else the exit
 * status. */
static int parse_dir_json(const char *cmd, const char *usage, const char *about, int argc,
                          char **argv, const char **dir, int *json)
{
    const lmk_opt opts[] = {
        {.name = "--json", .kind = LMK_OPT_FLAG, .dst = json,
         .help = "print one JSON object instead of text"},
    };
    const lmk_opt_spec spec = {.cmd = cmd, .usage = usage, .about = about, .opts = opts,
                               .n_opts = 1, .min_pos = 1, .max_pos = 1};
    return parse(&spec, argc, argv, dir);
}

int lmk_cmd_info(int argc, char **argv)
{
    int json = 0;
    const char *dir;
    int rc = parse_dir_json(
        "info", "landmark info DIR [--json]",
        "Show a session's shape, token and block counts, index spec, model fingerprint, disk\n"
        "use and a digest of its stored data (equal for sessions holding equal data).\n",
        argc, argv, &dir, &json);
    if (rc >= 0)
        return rc;
    lmk_session *s = NULL;
    if (open_existing("info", dir, LMK_PROBE_WALK, 1, &s))
        return 1;
    lmk_session_info in;
    uint64_t dig = 0;
    if ((rc = lmk_session_info_get(s, &in)) || (rc = lmk_session_data_digest(s, &dig)))
        return finish("info", s, rc);
    const char *dt = in.dtype == LMK_DTYPE_F16 ? "f16" : "f32";
    char lm[48];
    if (in.landmark >= LMK_LANDMARK_ATTN)
        snprintf(lm, sizeof lm, "%s:%d", lmk_opt_repr_name(in.landmark), in.n_repr);
    else
        snprintf(lm, sizeof lm, "%s", lmk_opt_repr_name(in.landmark));
    if (json) {
        printf("{\"format_version\": %d, \"tokens\": %lld, \"blocks\": %lld, \"layers\": %d, "
               "\"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, \"block_len\": %d, "
               "\"dtype\": \"%s\", \"landmark\": \"%s\", \"index\": ",
               in.format_version, (long long)in.tokens, (long long)in.blocks, in.n_layers,
               in.n_heads, in.n_kv_heads, in.head_dim, in.block_len, dt, lm);
        lmk_cli_json_str(stdout, in.index_spec);
        printf(", \"index_spec\": ");
        lmk_cli_json_str(stdout, in.index_spec);
        printf(", \"fingerprint\": ");
        lmk_cli_json_str(stdout, in.fingerprint);
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
    return finish("info", s, 0);
}

/* ---- verify ---- */

static void verify_report(void *ud, const char *msg)
{
    /* one line per problem on the pipe: "E <text>" */
    fprintf((FILE *)ud, "E %s\n", msg);
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
    rc = lmk_session_verify(s, verify_report, f, &checked, &errors);
    if (rc) {
        fprintf(f, "E %s\n", lmk_session_errmsg(s));
        errors++;
    }
    fprintf(f, "R %lld %lld\n", (long long)checked, (long long)errors);
    lmk_session_close(s);
    return errors ? 1 : 0;
}

/* The lines a verifying child sent: errors or notes. */
typedef struct lines {
    char **v;
    size_t n;
} lines;

static void lines_push(lines *l, const char *s)
{
    char **grown = realloc(l->v, (l->n + 1) * sizeof *l->v);
    if (grown) {
        l->v = grown;
        l->v[l->n++] = strdup(s);
    }
}

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* ", "-separated JSON strings of l, then extra when non-empty. */
static void lines_json(const lines *l, const char *extra)
{
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            printf(", ");
        lmk_cli_json_str(stdout, l->v[i] ? l->v[i] : "");
    }
    if (extra && extra[0]) {
        if (l->n)
            printf(", ");
        lmk_cli_json_str(stdout, extra);
    }
}

/* What verify found: the child's lines and its end. */
typedef struct vresult {
    lines errs, notes;
    long long checked, reported; /* reported: errors the child counted, -1 when it did not say */
    char crash[256];             /* why the child ended without its report, or "" */
} vresult;

/* Run verify_child(dir) in a child process and collect what it says into r. */
static int verify_in_child(const char *dir, vresult *r)
{
    int fds[2];
    if (pipe(fds)) {
        lmk_cli_error("verify", "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        lmk_cli_error("verify", "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        FILE *f = fdopen(fds[1], "w");
        int st = f ? verify_child(dir, f) : 1;
        if (f)
            fclose(f);
        _exit(st);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[2048];
    r->reported = -1;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        long long e = 0;
        if (line[0] == 'E' || line[0] == 'N')
            lines_push(line[0] == 'E' ? &r->errs : &r->notes, line[1] ? line + 2 : "");
        else if (line[0] == 'R' && sscanf(line + 2, "%lld %lld", &r->checked, &e) == 2)
            r->reported = e;
    }
    if (f)
        fclose(f);
    else
        close(fds[0]);
    int wst = 0;
    waitpid(pid, &wst, 0);
    if (WIFSIGNALED(wst))
        snprintf(r->crash, sizeof r->crash,
                 "reading the session crashed the storage library (signal %d, %s): the data "
                 "file is damaged",
                 WTERMSIG(wst), strsignal(WTERMSIG(wst)));
    else if (r->reported < 0)
        snprintf(r->crash, sizeof r->crash, "the verifying process ended early (exit status %d)",
                 WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
    return 0;
}

static void verify_print(const vresult *r, int ok, int json)
{
    size_t nerr = r->errs.n + (r->crash[0] ? 1 : 0);
    if (json) {
        printf("{\"ok\": %s, \"blocks_checked\": %lld, \"errors\": [", ok ? "true" : "false",
               r->checked);
        lines_json(&r->errs, r->crash);
        printf("], \"notes\": [");
        lines_json(&r->notes, NULL);
        printf("]}\n");
        return;
    }
    for (size_t i = 0; i < r->notes.n; i++)
        printf("note: %s\n", r->notes.v[i] ? r->notes.v[i] : "");
    for (size_t i = 0; i < r->errs.n; i++)
        printf("error: %s\n", r->errs.v[i] ? r->errs.v[i] : "");
    if (r->crash[0])
        printf("error: %s\n", r->crash);
    printf("%s: %lld blocks checked, %zu error%s\n", ok ? "ok" : "DAMAGED", r->checked, nerr,
           nerr == 1 ? "" : "s");
}

int lmk_cmd_verify(int argc, char **argv)
{
    int json = 0;
    const char *dir;
    int rc = parse_dir_json(
        "verify", "landmark verify DIR [--json]",
        "Walk every stored value and check its checksum, check that each landmark index covers\n"
        "exactly the stored blocks, and check the metadata. The walk runs in a child process,\n"
        "so a file that crashes the storage library is reported, not fatal. Exit status 0 only\n"
        "when everything is intact.\n",
        argc, argv, &dir, &json);
    if (rc >= 0)
        return rc;
    vresult r = {0};
    if (verify_in_child(dir, &r))
        return 1;
    int ok = r.errs.n == 0 && !r.crash[0];
    verify_print(&r, ok, json);
    lines_free(&r.errs);
    lines_free(&r.notes);
    return ok ? 0 : 1;
}

int lmk_cmd_truncate(int argc, char **argv)
{
    long long n = -1;
    int given = 0;
    const char *dir;
    const lmk_opt opts[] = {
        {.name = "--tokens", .kind = LMK_OPT_COUNT, .dst = &n, .given = &given, .metavar = "N",
         .help = "tokens to keep (k/m suffixes)"},
    };
    const lmk_opt_spec spec = {
        .cmd = "truncate",
        .usage = "landmark truncate DIR --tokens N",
        .about = "Cut every layer of the session back to its first N tokens.\n",
        .opts = opts, .n_opts = 1, .min_pos = 1, .max_pos = 1};
    int rc = parse(&spec, argc, argv, &dir);
    if (rc >= 0 || (rc = require(&spec, given, "--tokens N")))
        return rc;
    lmk_session *s = NULL;
    if (open_existing("truncate", dir, LMK_PROBE_WALK, 0, &s))
        return 1;
    return finish("truncate", s, lmk_session_truncate(s, n));
}

int lmk_cmd_fork(int argc, char **argv)
{
    const char *pos[2];
    const lmk_opt_spec spec = {
        .cmd = "fork",
        .usage = "landmark fork SRC DST",
        .about = "Write a compact copy of session SRC into the new directory DST (its indices "
                 "included),\nso one ingested document can serve several conversations.\n",
        .min_pos = 2, .max_pos = 2};
    int rc = parse(&spec, argc, argv, pos);
    if (rc >= 0)
        return rc;
    lmk_session *s = NULL;
    if (open_existing("fork", pos[0], LMK_PROBE_WALK, 1, &s))
        return 1;
    return finish("fork", s, lmk_session_fork(s, pos[1]));
}

int lmk_cmd_reindex(int argc, char **argv)
{
    const char *dir, *index = NULL;
    int given = 0;
    const lmk_opt opts[] = {
        {.name = "--index", .kind = LMK_OPT_STR, .dst = &index, .given = &given,
         .metavar = "SPEC", .help = "FAISS factory string of the new indices"},
    };
    const lmk_opt_spec spec = {
        .cmd = "reindex",
        .usage = "landmark reindex DIR --index SPEC",
        .about = "Rebuild every landmark index of the session with another FAISS factory string, "
                 "from\nthe landmarks stored in the session.\n",
        .opts = opts, .n_opts = 1, .min_pos = 1, .max_pos = 1};
    int rc = parse(&spec, argc, argv, &dir);
    if (rc >= 0 || (rc = require(&spec, given, "--index SPEC")))
        return rc;
    lmk_session *s = NULL;
    if (open_existing("reindex", dir, 0, 0, &s))
        return 1;
    return finish("reindex", s, lmk_session_reindex(s, index));
}
