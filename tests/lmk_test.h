/* Minimal test helpers shared by every test program: failures print file:line, the
 * expression, and for status codes lmk_strerror(); temporary directories live under the
 * build tree (LMK_TEST_TMP, set by meson) and are removed on success. */
#ifndef LMK_TEST_H
#define LMK_TEST_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_error.h"
#include "lmk_fs.h"

static int lmk_test_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            lmk_test_failures++;                                                       \
        }                                                                              \
    } while (0)

/* Aborts the current test function (return 1) on failure. */
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            lmk_test_failures++;                                                       \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

#define CHECK_RC(expr, want)                                                           \
    do {                                                                               \
        int rc_ = (expr);                                                              \
        if (rc_ != (want)) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s)\n", __FILE__,     \
                    __LINE__, #expr, rc_, lmk_strerror(rc_), (int)(want),              \
                    lmk_strerror(want));                                               \
            lmk_test_failures++;                                                       \
        }                                                                              \
    } while (0)

#define REQUIRE_OK(expr)                                                               \
    do {                                                                               \
        int rc_ = (expr);                                                              \
        if (rc_ != LMK_OK) {                                                           \
            fprintf(stderr, "%s:%d: %s failed: %d (%s)\n", __FILE__, __LINE__, #expr,   \
                    rc_, lmk_strerror(rc_));                                           \
            lmk_test_failures++;                                                       \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                               \
        double a_ = (a), b_ = (b);                                                     \
        if (!(fabs(a_ - b_) <= (tol))) {                                               \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, |diff| > %g\n", __FILE__,    \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                          \
            lmk_test_failures++;                                                       \
        }                                                                              \
    } while (0)

/* Fresh empty directory <LMK_TEST_TMP or /tmp>/<name>-<pid>; path written to buf. */
static inline const char *lmk_test_dir(char *buf, size_t cap, const char *name)
{
    const char *root = getenv("LMK_TEST_TMP");
    if (!root || !*root)
        root = "/tmp";
    mkdir(root, 0755);
    snprintf(buf, cap, "%s/%s-%d", root, name, (int)getpid());
    if (lmk_fs_rmtree(buf) != 0)
        fprintf(stderr, "warning: could not clear %s\n", buf);
    return buf;
}

static inline void lmk_test_rmdir(const char *path)
{
    if (lmk_fs_rmtree(path) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}

/* splitmix64: deterministic, seedable, the same on every platform. */
static inline uint64_t lmk_test_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float lmk_test_uniform(uint64_t *s) /* [-1, 1) */
{
    return (float)((lmk_test_rand(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Seed from LMK_SEED when set, else `def`; printed so a failure can be replayed. */
static inline uint64_t lmk_test_seed(const char *test, uint64_t def)
{
    const char *e = getenv("LMK_SEED");
    uint64_t s = e ? strtoull(e, NULL, 0) : def;
    printf("%s: seed %llu (LMK_SEED=%llu to replay)\n", test, (unsigned long long)s,
           (unsigned long long)s);
    return s;
}

/* Closing line read by CI: "N passed, N failed". */
static inline int lmk_test_finish(const char *name, int n_checks_groups)
{
    (void)n_checks_groups;
    if (lmk_test_failures) {
        printf("%s: FAILED (%d failures)\n", name, lmk_test_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
