/* Health probe of a session before a command uses it (see probe.h for why). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "lmk_clock.h"
#include "lmk_error.h"
#include "lmk_session.h"
#include "probe.h"

/* The child writes one letter per stage it enters, so the parent can say what crashed. */
static void stage(int fd, char c)
{
    ssize_t r = write(fd, &c, 1);
    (void)r;
}

static int probe_child(const char *dir, int flags, int fd)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl); /* a core of a 64 GiB map helps nobody */
    /* LMDB prints its failed assertions: the parent's one line says it better */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
        dup2(devnull, 2);
        close(devnull);
    }
    /* Bound the heap (the map is a shared file mapping and does not count). */
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0 && !LMK_CLI_UNDER_ASAN) {
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)psz / 2;
        setrlimit(RLIMIT_DATA, &rl);
    }
    stage(fd, 'o');
    lmk_session_opts o = lmk_session_opts_default();
    o.read_only = 1;
    lmk_session *s = NULL;
    if (lmk_session_open(dir, &o, &s, NULL, 0) != LMK_OK)
        return 0; /* an ordinary error: the command reports it */
    if (flags & LMK_PROBE_WALK) {
        stage(fd, 'w');
        int64_t checked = 0, errs = 0;
        lmk_session_verify(s, NULL, NULL, &checked, &errs);
    }
    lmk_session_close(s);
    stage(fd, 'd');
    return 0;
}

int lmk_cli_probe_session(const char *cmd, const char *dir, int flags)
{
    /* Time limit: generous, proportional to what a walk reads (20 MB/s would be a very slow
     * disk); a damaged file can make LMDB loop, the walk itself never takes this long. */
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    double limit = 60.0;
    if (stat(path, &st) == 0 && (flags & LMK_PROBE_WALK))
        limit += (double)st.st_size / 20e6;
    int fds[2];
    if (pipe(fds) != 0)
        return 0; /* cannot probe: let the command run as it would without */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (pid == 0) {
        close(fds[0]);
        _exit(probe_child(dir, flags, fds[1]));
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    char last = 0, c;
    int wst = 0, done = 0;
    struct timespec nap = {0, 10 * 1000 * 1000};
    double t0 = lmk_clock_s();
    for (;;) {
        while (read(fds[0], &c, 1) == 1)
            last = c;
        pid_t w = waitpid(pid, &wst, WNOHANG);
        if (w == pid) {
            done = 1;
            break;
        }
        if (w < 0 && errno != EINTR)
            break;
        if (lmk_clock_s() - t0 > limit)
            break;
        nanosleep(&nap, NULL);
    }
    while (read(fds[0], &c, 1) == 1)
        last = c;
    close(fds[0]);
    const char *what = last == 'w' ? "reading every stored value" : "opening the session";
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &wst, 0);
        lmk_cli_error(cmd, "%s: %s did not finish within %.0f s: the data file is probably "
                      "damaged ('landmark verify %s' lists what is wrong)",
                      dir, what, limit, dir);
        return 1;
    }
    if (WIFSIGNALED(wst)) {
        lmk_cli_error(cmd, "%s: the data file is damaged: %s crashed the storage library "
                      "(signal %d, %s); nothing was changed ('landmark verify %s' lists what "
                      "is wrong)",
                      dir, what, WTERMSIG(wst), strsignal(WTERMSIG(wst)), dir);
        return 1;
    }
    if (WIFEXITED(wst) && WEXITSTATUS(wst) == 0)
        return 0; /* done, or an ordinary error the command reports itself */
    /* ended with another status (a sanitizer report, say): as good as a crash */
    lmk_cli_error(cmd, "%s: checking the session failed during %s (exit status %d); "
                  "'landmark verify %s' lists what is wrong",
                  dir, what, WIFEXITED(wst) ? WEXITSTATUS(wst) : -1, dir);
    return 1;
}

static void log_line(void *ud, const char *msg)
{
    if (lmk_cli_error_printed())
        return; /* one line per failure: the error said it */
    fprintf(stderr, "landmark %s: %s\n", (const char *)ud, msg);
}

int lmk_cli_session_open(const char *cmd, const char *dir, int probe_flags,
                         const lmk_session_opts *o, lmk_session **s)
{
    *s = NULL;
    if (!(probe_flags & LMK_PROBE_SKIP) && lmk_cli_probe_session(cmd, dir, probe_flags))
        return 1;
    lmk_session_opts so = *o;
    if (!so.log) {
        so.log = log_line;
        so.log_ud = (void *)cmd;
    }
    char msg[1024] = "";
    int rc = lmk_session_open(dir, &so, s, msg, sizeof msg);
    if (rc && !msg[0])
        snprintf(msg, sizeof msg, "%s: %s", dir, lmk_strerror(rc));
    if (rc == LMK_EMISMATCH) /* an existing session with other settings: say which one */
        lmk_cli_error(cmd, "%s: %s", dir, msg);
    else if (rc)
        lmk_cli_error(cmd, "%s", msg);
    return rc ? 1 : 0;
}
