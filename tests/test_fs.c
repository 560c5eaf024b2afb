/* base/lmk_fs: lmk_fs_rmtree removes a tree without following symbolic links. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_fs.h"
#include "lmk_test.h"

static void touch(const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "x", 1) == 1);
        close(fd);
    }
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

int main(void)
{
    char root[1024], keep[2048], tree[2048], p[4096];
    lmk_test_dir(root, sizeof root, "test_fs");
    CHECK(mkdir(root, 0755) == 0);
    /* a directory outside the tree that links inside it point to */
    snprintf(keep, sizeof keep, "%s/keep", root);
    CHECK(mkdir(keep, 0755) == 0);
    touch(keep, "precious");
    snprintf(tree, sizeof tree, "%s/tree", root);
    CHECK(mkdir(tree, 0755) == 0);
    snprintf(p, sizeof p, "%s/a", tree);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/a/b", tree);
    CHECK(mkdir(p, 0700) == 0);
    touch(p, "deep");
    touch(tree, "top");
    snprintf(p, sizeof p, "%s/a/link-to-keep", tree);
    CHECK(symlink(keep, p) == 0);
    snprintf(p, sizeof p, "%s/dangling", tree);
    CHECK(symlink("/nonexistent/target", p) == 0);

    CHECK(lmk_fs_rmtree(tree) == 0);
    CHECK(!exists(tree));
    snprintf(p, sizeof p, "%s/precious", keep);
    CHECK(exists(p)); /* the link was removed, not followed */

    /* a symbolic link as the path itself: the link goes, the target stays */
    snprintf(p, sizeof p, "%s/top-link", root);
    CHECK(symlink(keep, p) == 0);
    CHECK(lmk_fs_rmtree(p) == 0);
    CHECK(!exists(p));
    CHECK(exists(keep));

    /* a plain file, a missing path, bad arguments */
    touch(root, "file");
    snprintf(p, sizeof p, "%s/file", root);
    CHECK(lmk_fs_rmtree(p) == 0);
    CHECK(!exists(p));
    CHECK(lmk_fs_rmtree(p) == 0);
    CHECK(lmk_fs_rmtree("") == EINVAL);
    CHECK(lmk_fs_rmtree(NULL) == EINVAL);

    CHECK(lmk_fs_rmtree(root) == 0);
    CHECK(!exists(root));
    return lmk_test_finish("test_fs", 0);
}
