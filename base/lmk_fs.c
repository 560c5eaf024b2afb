/* Filesystem helpers (see lmk_fs.h). */
#include <errno.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_export.h"
#include "lmk_fs.h"

/* nftw callback, called children first (FTW_DEPTH). A nonzero return stops the walk and
 * becomes nftw's result, so the errno itself is returned. An entry already gone (removed
 * concurrently) is not an error. */
static int remove_entry(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    /* FTW_DNR: a directory that could not be read; rmdir succeeds only if it is empty */
    int r = (type == FTW_DP || type == FTW_DNR) ? rmdir(p) : unlink(p);
    if (r != 0 && errno != ENOENT)
        return errno ? errno : EIO;
    return 0;
}

LMK_API int lmk_fs_rmtree(const char *path)
{
    if (!path || !*path)
        return EINVAL;
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) != 0 && errno != ENOENT ? errno : 0;
    errno = 0;
    int r = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (r == -1)
        return errno ? errno : EIO;
    return r;
}
