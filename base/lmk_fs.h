/* landmark base — filesystem helpers: what a command or test would otherwise shell out for. */
#ifndef LMK_FS_H
#define LMK_FS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Remove `path` and everything below it, like `rm -rf PATH`, in this process (no shell).
 * Symbolic links are never followed: a link (at `path` or anywhere below it) is removed
 * itself and what it points to is left alone. The walk goes depth first, so a directory is
 * removed after its contents.
 *
 * Returns 0 when nothing is left at `path` (including when nothing was there), EINVAL for a
 * NULL or empty path, otherwise the errno of the first entry that could not be removed or
 * walked (EACCES, EBUSY, ENOTEMPTY when a subdirectory could not be read...); the walk stops
 * there and what was already removed stays removed. Not safe against another process
 * changing the tree during the walk. Not thread-safe with chdir() elsewhere in the process. */
int lmk_fs_rmtree(const char *path);

#ifdef __cplusplus
}
#endif
#endif
