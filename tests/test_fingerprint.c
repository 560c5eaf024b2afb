/* The model fingerprint: a change anywhere in a tensor's data gives another digest (the
 * lmk-model/1 digest sampled 3 x 4 KiB per tensor and missed it), and a session written with
 * an lmk-model/1 fingerprint is still accepted for the same file by lmk_run_open. Needs the
 * shared model (LMK_SHARED); skipped with a notice when it is absent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmk_clock.h"
#include "lmk_gguf.h"
#include "lmk_session.h"
#include "lmk_tasks.h"
#include "lmk_test.h"

/* The lmk-model/1 digest (as model/lmk_run.c recomputes it for old sessions). */
static void v1_digest(const char *path, char out[17])
{
    lmk_gguf *g = NULL;
    out[0] = 0;
    if (lmk_gguf_open(path, &g, NULL, 0))
        return;
    size_t hs;
    const uint8_t *h = lmk_gguf_header(g, &hs);
    uint64_t d = 1469598103934665603ull;
#define MIX(p, n)                                       \
    for (size_t k = 0; k < (size_t)(n); k++)            \
        d = (d ^ (p)[k]) * 1099511628211ull;
    MIX(h, hs)
    for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
        uint64_t n = t->n_bytes, s = n < 4096 ? n : 4096;
        MIX(t->data, s)
        MIX(t->data + (n - s) / 2, s)
        MIX(t->data + (n - s), s)
    }
#undef MIX
    snprintf(out, 17, "%016llx", (unsigned long long)d);
    lmk_gguf_close(g);
}

/* Copy src to dst with the lowest byte of one f32 a quarter into the largest tensor
 * flipped: outside the three samples the old digest read. */
static int write_changed(const char *src, const char *dst)
{
    lmk_gguf *g = NULL;
    if (lmk_gguf_open(src, &g, NULL, 0))
        return -1;
    size_t hs;
    const uint8_t *base = lmk_gguf_header(g, &hs);
    const lmk_gguf_tensor *big = NULL;
    for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
        if (!big || t->n_bytes > big->n_bytes)
            big = t;
    }
    long off = (long)(big->data - base) + (long)(big->n_bytes / 4 & ~(uint64_t)3);
    lmk_gguf_close(g);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int rc = in && out ? 0 : -1;
    char buf[1 << 16];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && fclose(out))
        rc = -1;
    if (rc)
        return rc;
    FILE *f = fopen(dst, "r+b");
    if (!f || fseek(f, off, SEEK_SET))
        return -1;
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 1, f);
    return fclose(f) ? -1 : 0;
}

static lmk_model *open_model(const char *path)
{
    lmk_task_opts o = lmk_task_opts_default();
    lmk_model *m = NULL;
    char err[512];
    if (lmk_task_model_open(path, &o, &m, err, sizeof err))
        fprintf(stderr, "%s: %s\n", path, err);
    return m;
}

/* A session at dir with the shape of model m and the given fingerprint. */
static int make_session(const char *dir, lmk_model *m, const char *fp)
{
    lmk_task_opts o = lmk_task_opts_default();
    lmk_task_resolve(m, &o);
    lmk_session_opts so;
    char now[256];
    lmk_model_session_opts(m, (lmk_pos_kind)o.pos, o.block_len, &so, now);
    so.create = 1;
    so.fingerprint = fp;
    lmk_session *s = NULL;
    char err[512];
    int rc = lmk_session_open(dir, &so, &s, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s: %s\n", dir, err);
    lmk_session_close(s);
    return rc;
}

int main(void)
{
    const char *sh = getenv("LMK_SHARED");
    char f32[700], changed[700], root[600], dir[700];
    snprintf(f32, sizeof f32, "%s/models/landmark-tiny-kjv-f32.gguf", sh ? sh : "../shared");
    if (access(f32, R_OK) != 0) {
        printf("NOTICE: shared model not found (%s): fingerprint tests skipped\n", f32);
        return 0;
    }
    lmk_test_dir(root, sizeof root, "fingerprint");
    REQUIRE(mkdir(root, 0755) == 0);
    snprintf(changed, sizeof changed, "%s/changed.gguf", root);
    REQUIRE(write_changed(f32, changed) == 0);

    /* a change the samples miss: same lmk-model/1 digest, different digest now */
    char d1a[17], d1b[17];
    v1_digest(f32, d1a);
    v1_digest(changed, d1b);
    CHECK(d1a[0] && !strcmp(d1a, d1b));
    double t0 = lmk_clock_s();
    lmk_model *m = open_model(f32);
    double t_open = lmk_clock_s() - t0;
    lmk_model *mc = open_model(changed);
    REQUIRE(m && mc);
    struct stat sb;
    stat(f32, &sb);
    printf("model open with the whole-file digest: %.1f ms for %.1f MB\n", t_open * 1e3,
           sb.st_size / 1e6);
    CHECK(strcmp(lmk_model_get_info(m)->digest, lmk_model_get_info(mc)->digest) != 0);

    /* a session of the original refuses the changed file */
    lmk_task_opts o = lmk_task_opts_default();
    lmk_run *r = NULL;
    char err[1024];
    snprintf(dir, sizeof dir, "%s/s", root);
    REQUIRE_OK(lmk_run_open(dir, f32, &o, &r, err, sizeof err));
    lmk_run_close(r);
    CHECK_RC(lmk_run_open(dir, changed, &o, &r, err, sizeof err), LMK_EMISMATCH);
    CHECK(strstr(err, "not written by this model") != NULL);

    /* a session written with the lmk-model/1 fingerprint of this file: still accepted */
    lmk_task_opts ro = lmk_task_opts_default();
    lmk_task_resolve(m, &ro);
    lmk_session_opts so;
    char now[256], v1[300];
    lmk_model_session_opts(m, (lmk_pos_kind)ro.pos, ro.block_len, &so, now);
    const char *rest = strchr(strchr(now, ' ') + 1, ' ');
    snprintf(v1, sizeof v1, "lmk-model/1 gguf=%s%s", d1a, rest);
    snprintf(dir, sizeof dir, "%s/v1", root);
    REQUIRE_OK(make_session(dir, m, v1));
    int rc = lmk_run_open(dir, f32, &o, &r, err, sizeof err);
    CHECK_RC(rc, LMK_OK);
    if (rc)
        fprintf(stderr, "%s\n", err);
    lmk_run_close(r);
    /* ... and an lmk-model/1 fingerprint of another file is refused */
    snprintf(v1, sizeof v1, "lmk-model/1 gguf=0123456789abcdef%s", rest);
    snprintf(dir, sizeof dir, "%s/v1other", root);
    REQUIRE_OK(make_session(dir, m, v1));
    CHECK_RC(lmk_run_open(dir, f32, &o, &r, err, sizeof err), LMK_EMISMATCH);

    lmk_model_close(m);
    lmk_model_close(mc);
    lmk_test_rmdir(root);
    if (lmk_test_failures) {
        printf("test_fingerprint: FAILED (%d)\n", lmk_test_failures);
        return 1;
    }
    printf("test_fingerprint: ok\n");
    return 0;
}
