/* GGUF reader: metadata of every type, every supported tensor type against known values
 * (hand-built bytes and written files), and damaged, truncated or hostile files giving
 * clear errors (never a crash: run under ASan/UBSan in CI). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmk_f16.h"
#include "lmk_gguf.h"
#include "lmk_gguf_write.h"
#include "lmk_test.h"
#include "lmk_tokenizer.h"

static uint64_t seed;

/* ---- known values from hand-built bytes (independent of the writer) ---- */
static int test_known_blocks(void)
{
    /* F16: 1.0, -2.0, 0.5, 65504 */
    uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b};
    float out[64];
    REQUIRE_OK(lmk_ggml_to_f32(LMK_GGML_F16, f16, 4, out));
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f && out[3] == 65504.0f);
    /* BF16: 1.0 = 0x3f80, -3.5 = 0xc060 */
    uint8_t bf16[] = {0x80, 0x3f, 0x60, 0xc0};
    REQUIRE_OK(lmk_ggml_to_f32(LMK_GGML_BF16, bf16, 2, out));
    CHECK(out[0] == 1.0f && out[1] == -3.5f);
    /* Q8_0: scale 0.5 (f16 0x3800), q[j] = j - 16 */
    uint8_t q8[34] = {0x00, 0x38};
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    REQUIRE_OK(lmk_ggml_to_f32(LMK_GGML_Q8_0, q8, 32, out));
    for (int j = 0; j < 32; j++)
        CHECK(out[j] == 0.5f * (float)(j - 16));
    /* Q4_0: scale 0.25 (f16 0x3400); byte j holds q[j] (low) and q[j + 16] (high) */
    uint8_t q4[18] = {0x00, 0x34};
    for (int j = 0; j < 16; j++)
        q4[2 + j] = (uint8_t)((j & 15) | (((15 - j) & 15) << 4));
    REQUIRE_OK(lmk_ggml_to_f32(LMK_GGML_Q4_0, q4, 32, out));
    for (int j = 0; j < 16; j++) {
        CHECK(out[j] == 0.25f * (float)(j - 8));
        CHECK(out[j + 16] == 0.25f * (float)(15 - j - 8));
    }
    CHECK_RC(lmk_ggml_to_f32(16 /* IQ2_XXS */, q4, 256, out), LMK_EUNSUPPORTED);
    CHECK(lmk_ggml_row_bytes(LMK_GGML_Q8_0, 64) == 68);
    CHECK(lmk_ggml_row_bytes(LMK_GGML_Q8_0, 33) == 0);
    CHECK(!strcmp(lmk_ggml_type_name(12), "Q4_K"));
    return 0;
}

/* A file with metadata of every type and one tensor per supported type. Values are
 * exactly representable in each type, so they must come back exactly. */
static float vals_for(uint32_t type, int i)
{
    switch (type) {
    case LMK_GGML_Q8_0: /* per block: amax 127 * 0.5 present, so the scale is 0.5 exactly */
        return (i % 32 == 0) ? 63.5f : 0.5f * (float)((i * 37) % 255 - 127);
    case LMK_GGML_Q4_0: /* per block: -2 present, scale -2 / -8 = 0.25 exactly */
        return (i % 32 == 5) ? -2.0f : 0.25f * (float)((i * 7) % 16 - 8);
    case LMK_GGML_F16:
        return (float)((i * 13) % 2001 - 1000) / 64.0f;
    case LMK_GGML_BF16:
        return (float)((i * 11) % 255 - 127) * 0.125f;
    default:
        return (float)i * 0.001f - 1.7f;
    }
}

static const uint32_t k_types[] = {LMK_GGML_F32, LMK_GGML_F16, LMK_GGML_BF16, LMK_GGML_Q8_0,
                                   LMK_GGML_Q4_0};

static int build_file(uint8_t **buf, size_t *size)
{
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", "llama"));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "test.u32", 4000000000u));
    REQUIRE_OK(lmk_gguf_writer_add_f32(w, "test.f32", 0.25f));
    REQUIRE_OK(lmk_gguf_writer_add_bool(w, "test.bool", 1));
    int32_t neg[3] = {-1, 2, -3};
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "test.i32s", LMK_GGUF_I32, 3, neg));
    const char *strs[] = {"alpha", "", "gamma\xe2\x96\x81"};
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "test.strs", LMK_GGUF_STRING, 3, strs));
    float data[64 * 3];
    for (size_t t = 0; t < sizeof k_types / sizeof k_types[0]; t++) {
        for (int i = 0; i < 64 * 3; i++)
            data[i] = vals_for(k_types[t], i);
        char name[32];
        snprintf(name, sizeof name, "t.%s", lmk_ggml_type_name(k_types[t]));
        int64_t dims[2] = {64, 3};
        REQUIRE_OK(lmk_gguf_writer_add_tensor(w, name, 2, dims, k_types[t], data));
    }
    int64_t d1[1] = {5};
    float five[5] = {1, 2, 3, 4, 5};
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.vec", 1, d1, LMK_GGML_F32, five));
    int64_t bad[1] = {33};
    CHECK_RC(lmk_gguf_writer_add_tensor(w, "t.bad", 1, bad, LMK_GGML_Q8_0, data), LMK_EINVAL);
    REQUIRE_OK(lmk_gguf_writer_encode(w, buf, size));
    lmk_gguf_writer_free(w);
    return 0;
}

static int test_roundtrip(void)
{
    uint8_t *buf;
    size_t size;
    if (build_file(&buf, &size))
        return 1;
    char err[256];
    lmk_gguf *g;
    REQUIRE_OK(lmk_gguf_open_buffer(buf, size, &g, err, sizeof err));
    CHECK(lmk_gguf_version(g) == 3);
    CHECK(lmk_gguf_n_kv(g) == 6);
    uint32_t u;
    REQUIRE_OK(lmk_gguf_get_u32(g, "test.u32", &u));
    CHECK(u == 4000000000u);
    int64_t i64;
    REQUIRE_OK(lmk_gguf_get_i64(g, "test.u32", &i64));
    CHECK(i64 == 4000000000ll);
    float f;
    REQUIRE_OK(lmk_gguf_get_f32(g, "test.f32", &f));
    CHECK(f == 0.25f);
    int b;
    REQUIRE_OK(lmk_gguf_get_bool(g, "test.bool", &b));
    CHECK(b == 1);
    char s[64];
    REQUIRE_OK(lmk_gguf_get_strz(g, "general.architecture", s, sizeof s));
    CHECK(!strcmp(s, "llama"));
    CHECK_RC(lmk_gguf_get_strz(g, "general.architecture", s, 3), LMK_EFORMAT);
    /* wrong types and missing keys: clear errors naming the key */
    CHECK_RC(lmk_gguf_get_u32(g, "test.f32", &u), LMK_EFORMAT);
    CHECK(strstr(lmk_gguf_errmsg(g), "test.f32") != NULL);
    CHECK_RC(lmk_gguf_get_f32(g, "test.u32", &f), LMK_EFORMAT);
    CHECK_RC(lmk_gguf_get_u32(g, "no.such.key", &u), LMK_ENOTFOUND);
    CHECK(strstr(lmk_gguf_errmsg(g), "no.such.key") != NULL);
    lmk_gguf_type et;
    uint64_t n;
    const void *data;
    REQUIRE_OK(lmk_gguf_get_array(g, "test.i32s", &et, &n, &data));
    CHECK(et == LMK_GGUF_I32 && n == 3);
    int32_t v[3];
    memcpy(v, data, sizeof v);
    CHECK(v[0] == -1 && v[1] == 2 && v[2] == -3);
    const char *str;
    uint64_t len;
    REQUIRE_OK(lmk_gguf_get_arr_str(g, "test.strs", 2, &str, &len));
    CHECK(len == 8 && !memcmp(str, "gamma\xe2\x96\x81", 8));
    REQUIRE_OK(lmk_gguf_get_arr_str(g, "test.strs", 1, &str, &len));
    CHECK(len == 0);
    CHECK_RC(lmk_gguf_get_arr_str(g, "test.strs", 3, &str, &len), LMK_EINVAL);
    CHECK_RC(lmk_gguf_get_arr_str(g, "test.i32s", 0, &str, &len), LMK_EFORMAT);

    CHECK(lmk_gguf_n_tensors(g) == 6);
    float got[64 * 3];
    for (size_t t = 0; t < sizeof k_types / sizeof k_types[0]; t++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", lmk_ggml_type_name(k_types[t]));
        const lmk_gguf_tensor *tt = lmk_gguf_find_tensor(g, name);
        REQUIRE(tt != NULL);
        CHECK(tt->type == k_types[t] && tt->supported && tt->n_dims == 2);
        CHECK(tt->dims[0] == 64 && tt->dims[1] == 3 && tt->n_rows == 3 && tt->row_len == 64);
        CHECK(tt->n_bytes == 3 * lmk_ggml_row_bytes(k_types[t], 64));
        REQUIRE_OK(lmk_gguf_tensor_rows_f32(tt, 0, 3, got));
        int bad = 0;
        for (int i = 0; i < 64 * 3; i++)
            bad += got[i] != vals_for(k_types[t], i);
        if (bad)
            fprintf(stderr, "type %s: %d values differ\n", name, bad);
        CHECK(bad == 0);
        /* a row range alone */
        REQUIRE_OK(lmk_gguf_tensor_rows_f32(tt, 2, 1, got));
        CHECK(got[7] == vals_for(k_types[t], 128 + 7));
        CHECK_RC(lmk_gguf_tensor_rows_f32(tt, 2, 2, got), LMK_EINVAL);
    }
    const lmk_gguf_tensor *vec = lmk_gguf_find_tensor(g, "t.vec");
    REQUIRE(vec && vec->n_dims == 1 && vec->n_rows == 1);
    REQUIRE_OK(lmk_gguf_tensor_rows_f32(vec, 0, 1, got));
    CHECK(got[0] == 1 && got[4] == 5);
    CHECK(lmk_gguf_find_tensor(g, "t.none") == NULL);
    lmk_gguf_close(g);

    /* the same through a file on disk */
    char dir[512], path[600];
    lmk_test_dir(dir, sizeof dir, "gguf");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp && fwrite(buf, 1, size, fp) == size);
    fclose(fp);
    REQUIRE_OK(lmk_gguf_open(path, &g, err, sizeof err));
    CHECK(lmk_gguf_n_tensors(g) == 6);
    lmk_gguf_close(g);
    /* truncated on disk: the message names the file and the problem */
    REQUIRE(truncate(path, (off_t)(size - 40)) == 0);
    CHECK_RC(lmk_gguf_open(path, &g, err, sizeof err), LMK_EFORMAT);
    CHECK(g == NULL);
    CHECK(strstr(err, path) != NULL && strstr(err, "truncated") != NULL);
    printf("truncated file: %s\n", err);
    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    CHECK_RC(lmk_gguf_open(path, &g, err, sizeof err), ENOENT);
    lmk_test_rmdir(dir);
    free(buf);
    return 0;
}

/* Every prefix of a valid file that cuts into its data is refused with a message; none
 * crashes. (Cutting only the padding after the last tensor loses nothing.) */
static int test_truncation(void)
{
    uint8_t *buf;
    size_t size;
    if (build_file(&buf, &size))
        return 1;
    lmk_gguf *full;
    REQUIRE_OK(lmk_gguf_open_buffer(buf, size, &full, NULL, 0));
    size_t end = 0;
    for (int64_t i = 0; i < lmk_gguf_n_tensors(full); i++) {
        const lmk_gguf_tensor *t = lmk_gguf_tensor_at(full, i);
        size_t e = (size_t)(t->data - buf) + t->n_bytes;
        end = e > end ? e : end;
    }
    lmk_gguf_close(full);
    CHECK(end > size - 32 && end < size);
    int accepted = 0;
    for (size_t n = 0; n < end; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan catches any over-read */
        memcpy(copy, buf, n);
        lmk_gguf *g = NULL;
        char err[256] = "";
        int rc = lmk_gguf_open_buffer(copy, n, &g, err, sizeof err);
        if (rc == LMK_OK) {
            accepted++;
            lmk_gguf_close(g);
        } else if (!err[0] || (rc != LMK_EFORMAT && rc != LMK_EVERSION)) {
            fprintf(stderr, "prefix %zu: rc %d msg '%s'\n", n, rc, err);
            accepted += 1000;
        }
        free(copy);
    }
    CHECK(accepted == 0);
    free(buf);
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int expect_fail(const uint8_t *buf, size_t n, int want, const char *needle)
{
    lmk_gguf *g = NULL;
    char err[256] = "";
    int rc = lmk_gguf_open_buffer(buf, n, &g, err, sizeof err);
    if (rc != want || g != NULL || (needle && !strstr(err, needle))) {
        fprintf(stderr, "want %d (%s) got %d: '%s'\n", want, needle ? needle : "", rc, err);
        lmk_gguf_close(g);
        return 1;
    }
    return 0;
}

/* Hand-crafted hostile headers: huge counts and lengths must be refused before anything
 * is allocated for them. */
static int test_hostile(void)
{
    uint8_t h[256];
    memset(h, 0, sizeof h);
    memcpy(h, "GGUF", 4);
    put32(h + 4, 3);
    /* huge metadata count */
    put64(h + 8, 0);
    put64(h + 16, 1ull << 60);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "metadata keys") == 0);
    /* huge tensor count */
    put64(h + 8, 1ull << 62);
    put64(h + 16, 0);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "tensors") == 0);
    /* one key with a huge length */
    put64(h + 8, 0);
    put64(h + 16, 1);
    put64(h + 24, 1ull << 63);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "metadata key") == 0);
    /* a string array claiming 2^40 elements */
    put64(h + 24, 1);
    h[32] = 'k';
    put32(h + 33, LMK_GGUF_ARRAY);
    put32(h + 37, LMK_GGUF_STRING);
    put64(h + 41, 1ull << 40);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "more than the file") == 0);
    /* an u64 array overflowing n * 8 */
    put32(h + 37, LMK_GGUF_U64);
    put64(h + 41, (1ull << 61) + 1);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "truncated") == 0);
    /* nested arrays and unknown value types */
    put32(h + 37, LMK_GGUF_ARRAY);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "element type") == 0);
    put32(h + 33, 77);
    CHECK(expect_fail(h, sizeof h, LMK_EFORMAT, "unknown value type") == 0);
    /* bad magic, old and future versions */
    uint8_t m[32];
    memset(m, 0, sizeof m);
    memcpy(m, "GGML", 4);
    CHECK(expect_fail(m, sizeof m, LMK_EFORMAT, "not a GGUF") == 0);
    memcpy(m, "GGUF", 4);
    put32(m + 4, 1);
    CHECK(expect_fail(m, sizeof m, LMK_EVERSION, "version 1") == 0);
    put32(m + 4, 99);
    CHECK(expect_fail(m, sizeof m, LMK_EVERSION, "99") == 0);
    CHECK(expect_fail(m, 3, LMK_EFORMAT, NULL) == 0);

    /* tensor table problems, built from a valid one-tensor file */
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "general.alignment", 32));
    float d[32] = {0};
    int64_t dims[2] = {32, 1};
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "w", 2, dims, LMK_GGML_F32, d));
    uint8_t *buf;
    size_t size;
    REQUIRE_OK(lmk_gguf_writer_encode(w, &buf, &size));
    lmk_gguf_writer_free(w);
    /* layout: 24 header, key (8+17) type 4 value 4 = 57 -> tensor name at 24+33 */
    size_t t0 = 24 + 8 + 17 + 4 + 4;
    size_t dims_off = t0 + 8 + 1 + 4, type_off = dims_off + 16, off_off = type_off + 4;
    uint8_t *c = malloc(size);
    memcpy(c, buf, size);
    put32(c + t0 + 8 + 1, 9); /* n_dims */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "dimensions") == 0);
    memcpy(c, buf, size);
    put64(c + dims_off + 8, 1ull << 41); /* dimension too large */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "invalid dimension") == 0);
    memcpy(c, buf, size);
    put64(c + dims_off, 0);
    CHECK(expect_fail(c, size, LMK_EFORMAT, "invalid dimension") == 0);
    memcpy(c, buf, size);
    put32(c + type_off, 1234);
    CHECK(expect_fail(c, size, LMK_EFORMAT, "unknown type") == 0);
    memcpy(c, buf, size);
    put32(c + type_off, LMK_GGML_Q8_0);
    put64(c + dims_off, 33); /* not a multiple of Q8_0's block */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "multiple") == 0);
    memcpy(c, buf, size);
    put64(c + off_off, 8); /* misaligned */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "aligned") == 0);
    memcpy(c, buf, size);
    put64(c + off_off, 1ull << 40); /* past the end */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "past the end") == 0);
    memcpy(c, buf, size);
    put32(c + 24 + 8 + 17 + 4, 3); /* alignment not a power of two */
    CHECK(expect_fail(c, size, LMK_EFORMAT, "power of two") == 0);
    free(c);
    free(buf);

    /* duplicate keys and tensors */
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "a", 1));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "a", 2));
    REQUIRE_OK(lmk_gguf_writer_encode(w, &buf, &size));
    CHECK(expect_fail(buf, size, LMK_EFORMAT, "duplicate metadata key 'a'") == 0);
    free(buf);
    lmk_gguf_writer_free(w);
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "x", 2, dims, LMK_GGML_F32, d));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "x", 2, dims, LMK_GGML_F32, d));
    REQUIRE_OK(lmk_gguf_writer_encode(w, &buf, &size));
    CHECK(expect_fail(buf, size, LMK_EFORMAT, "duplicate tensor name 'x'") == 0);
    free(buf);
    lmk_gguf_writer_free(w);
    return 0;
}

/* Random byte damage anywhere: open may succeed or fail, but every accessor stays in
 * bounds (ASan) and failures carry a message. */
static int test_random_damage(void)
{
    uint8_t *buf;
    size_t size;
    if (build_file(&buf, &size))
        return 1;
    uint8_t *c = malloc(size);
    int ok = 0, bad = 0;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(c, buf, size);
        int flips = 1 + (int)(lmk_test_rand(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(lmk_test_rand(&seed) % size);
            c[at] = (uint8_t)lmk_test_rand(&seed);
        }
        lmk_gguf *g = NULL;
        char err[256] = "";
        int rc = lmk_gguf_open_buffer(c, size, &g, err, sizeof err);
        if (rc) {
            bad++;
            CHECK(err[0] != 0);
            continue;
        }
        ok++;
        for (int64_t i = 0; i < lmk_gguf_n_kv(g); i++) {
            uint32_t u;
            float f;
            const char *s;
            uint64_t l;
            lmk_gguf_get_u32(g, lmk_gguf_key_name(g, i), &u);
            lmk_gguf_get_f32(g, lmk_gguf_key_name(g, i), &f);
            lmk_gguf_get_str(g, lmk_gguf_key_name(g, i), &s, &l);
            lmk_gguf_get_arr_str(g, lmk_gguf_key_name(g, i), 0, &s, &l);
        }
        float row[4096];
        for (int64_t i = 0; i < lmk_gguf_n_tensors(g); i++) {
            const lmk_gguf_tensor *t = lmk_gguf_tensor_at(g, i);
            if (t->row_len <= 4096)
                lmk_gguf_tensor_rows_f32(t, t->n_rows - 1, 1, row);
        }
        lmk_tokenizer *tk = NULL;
        char terr[256];
        if (lmk_tokenizer_from_gguf(g, &tk, terr, sizeof terr) == 0)
            lmk_tokenizer_free(tk);
        lmk_gguf_close(g);
    }
    printf("random damage: %d opened, %d refused\n", ok, bad);
    CHECK(bad > 0);
    free(c);
    free(buf);
    return 0;
}

/* Tokenizers built from metadata: byte-level, SentencePiece with byte fallback, GPT-2. */
static int make_vocab(const char *model, int n, const char **toks, const float *scores,
                      const int32_t *types, const char **merges, int n_merges, lmk_gguf **g,
                      uint8_t **buf)
{
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "tokenizer.ggml.model", model));
    REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.tokens", LMK_GGUF_STRING, (uint64_t)n, toks));
    if (scores)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.scores", LMK_GGUF_F32, (uint64_t)n, scores));
    if (types)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.token_type", LMK_GGUF_I32, (uint64_t)n, types));
    if (merges)
        REQUIRE_OK(lmk_gguf_writer_add_array(w, "tokenizer.ggml.merges", LMK_GGUF_STRING,
                                             (uint64_t)n_merges, merges));
    size_t size;
    REQUIRE_OK(lmk_gguf_writer_encode(w, buf, &size));
    lmk_gguf_writer_free(w);
    char err[256];
    REQUIRE_OK(lmk_gguf_open_buffer(*buf, size, g, err, sizeof err));
    return 0;
}

static int test_tokenizers(void)
{
    /* byte-level: 256 byte tokens + a control token */
    static char names[258][8];
    const char *toks[300];
    float scores[300];
    int32_t types[300];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        toks[b] = names[b];
        scores[b] = 0;
        types[b] = 6;
    }
    toks[256] = "<s>";
    types[256] = 3;
    scores[256] = 0;
    lmk_gguf *g;
    uint8_t *buf;
    if (make_vocab("llama", 257, toks, scores, types, NULL, 0, &g, &buf))
        return 1;
    lmk_tokenizer *t;
    char err[256];
    REQUIRE_OK(lmk_tokenizer_from_gguf(g, &t, err, sizeof err));
    CHECK(lmk_tokenizer_kind(t) == LMK_TOK_BYTE);
    const char *text = "In the beginning \xff\x00!";
    size_t len = 20, n;
    int32_t ids[64];
    REQUIRE_OK(lmk_tokenizer_encode(t, text, len, 1, ids, &n));
    CHECK(n == len);
    for (size_t i = 0; i < n && i < len; i++)
        CHECK(ids[i] == (uint8_t)text[i]);
    char piece[16];
    CHECK(lmk_tokenizer_piece(t, 'A', piece, sizeof piece) == 1 && piece[0] == 'A');
    CHECK(lmk_tokenizer_piece(t, 256, piece, sizeof piece) == 0);
    CHECK(lmk_tokenizer_piece(t, 999, piece, sizeof piece) == -1);
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(buf);

    /* SentencePiece: bytes + pieces with scores; merges pick the highest score first */
    int nv = 256;
    const char *pieces[] = {"\xe2\x96\x81", "\xe2\x96\x81t", "he", "\xe2\x96\x81the", "h", "e",
                            "t", "a", "\xe2\x96\x81" "a", "ab"};
    float psc[] = {-1, -2, -3, -0.5f, -10, -10, -10, -10, -4, -100};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        toks[nv] = pieces[i];
        scores[nv] = psc[i];
        types[nv] = 1;
        nv++;
    }
    if (make_vocab("llama", nv, toks, scores, types, NULL, 0, &g, &buf))
        return 1;
    REQUIRE_OK(lmk_tokenizer_from_gguf(g, &t, err, sizeof err));
    CHECK(lmk_tokenizer_kind(t) == LMK_TOK_SPM);
    /* "the a\x01z": prefix + "the" -> "▁the"; " a" -> "▁a"; \x01 and 'z' -> byte fallback */
    REQUIRE_OK(lmk_tokenizer_encode(t, "the a\x01z", 7, 1, ids, &n));
    int id_the = lmk_tokenizer_find(t, "\xe2\x96\x81the", 6);
    int id_a = lmk_tokenizer_find(t, "\xe2\x96\x81" "a", 4);
    REQUIRE(n == 4);
    CHECK(ids[0] == id_the && ids[1] == id_a && ids[2] == 0x01 && ids[3] == 'z');
    /* without the document-start prefix */
    REQUIRE_OK(lmk_tokenizer_encode(t, "he", 2, 0, ids, &n));
    CHECK(n == 1 && ids[0] == lmk_tokenizer_find(t, "he", 2));
    /* decode: U+2581 becomes a space */
    int pl = lmk_tokenizer_piece(t, id_the, piece, sizeof piece);
    CHECK(pl == 4 && !memcmp(piece, " the", 4));
    /* invalid UTF-8 falls back to bytes */
    REQUIRE_OK(lmk_tokenizer_encode(t, "\xe2\x96", 2, 0, ids, &n));
    CHECK(n == 2 && ids[0] == 0xe2 && ids[1] == 0x96);
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(buf);

    /* GPT-2 byte-level BPE: "Ġ" is the space byte's code point (U+0120) */
    const char *gt[] = {"h", "e", "l", "o", "\xc4\xa0", "w", "r", "d", "he", "ll", "hell",
                        "hello", "\xc4\xa0w", "or", "\xc4\xa0wor", "\xc4\xa0world", "<|end|>"};
    int32_t gty[17];
    for (int i = 0; i < 17; i++)
        gty[i] = i == 16 ? 3 : 1;
    const char *gm[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or"};
    if (make_vocab("gpt2", 17, gt, NULL, gty, gm, 7, &g, &buf))
        return 1;
    REQUIRE_OK(lmk_tokenizer_from_gguf(g, &t, err, sizeof err));
    CHECK(lmk_tokenizer_kind(t) == LMK_TOK_GPT2);
    REQUIRE_OK(lmk_tokenizer_encode(t, "hello world", 11, 1, ids, &n));
    /* "hello" + "Ġwor" + "l" + "d" ("Ġworl" is no merge; "Ġworld" unreachable) */
    REQUIRE(n == 4);
    CHECK(ids[0] == 11 && ids[1] == 14 && ids[2] == 2 && ids[3] == 7);
    pl = lmk_tokenizer_piece(t, 14, piece, sizeof piece);
    CHECK(pl == 4 && !memcmp(piece, " wor", 4));
    lmk_tokenizer_free(t);
    lmk_gguf_close(g);
    free(buf);

    /* unsupported tokenizer model and missing arrays: clear errors */
    if (make_vocab("bert", 17, gt, NULL, NULL, NULL, 0, &g, &buf))
        return 1;
    CHECK_RC(lmk_tokenizer_from_gguf(g, &t, err, sizeof err), LMK_EUNSUPPORTED);
    CHECK(t == NULL && strstr(err, "bert") != NULL);
    lmk_gguf_close(g);
    free(buf);
    if (make_vocab("gpt2", 17, gt, NULL, NULL, NULL, 0, &g, &buf))
        return 1;
    CHECK_RC(lmk_tokenizer_from_gguf(g, &t, err, sizeof err), LMK_ENOTFOUND);
    CHECK(strstr(err, "merges") != NULL);
    lmk_gguf_close(g);
    free(buf);
    return 0;
}


/* ---- the streaming writer: declared tensors' data given rows at a time ---- */

/* The file build_stream writes, built in memory: every tensor with its data. */
static int stream_reference(const float *a, const float *v, const uint8_t *q, size_t qn,
                            uint8_t **buf, size_t *size)
{
    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", "llama"));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "test.u32", 7));
    int64_t da[2] = {64, 7}, dv[1] = {5}, dq[2] = {32, 3};
    float five[5] = {1, 2, 3, 4, 5};
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.first", 1, dv, LMK_GGML_F32, five));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.f16", 2, da, LMK_GGML_F16, a));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.vec", 1, dv, LMK_GGML_F32, v));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.mid", 1, dv, LMK_GGML_F32, five));
    REQUIRE_OK(lmk_gguf_writer_add_raw(w, "t.q8", 2, dq, LMK_GGML_Q8_0, q, qn));
    REQUIRE_OK(lmk_gguf_writer_encode(w, buf, size));
    lmk_gguf_writer_free(w);
    return 0;
}

static int test_stream(void)
{
    char dir[4096], path[4200];
    lmk_test_dir(dir, sizeof dir, "test_gguf_stream");
    REQUIRE(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/stream.gguf", dir);
    float a[64 * 7], v[5];
    uint64_t s = seed;
    for (int i = 0; i < 64 * 7; i++)
        a[i] = (float)((int)(lmk_test_rand(&s) % 4001) - 2000) / 256.0f;
    for (int i = 0; i < 5; i++)
        v[i] = (float)i - 2.5f;
    float q8src[32 * 3];
    for (int i = 0; i < 32 * 3; i++)
        q8src[i] = (float)(i % 17) - 8.0f;
    uint8_t q[34 * 3];
    REQUIRE_OK(lmk_ggml_from_f32(LMK_GGML_Q8_0, q8src, 32 * 3, q));

    lmk_gguf_writer *w;
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_add_str(w, "general.architecture", "llama"));
    REQUIRE_OK(lmk_gguf_writer_add_u32(w, "test.u32", 7));
    int64_t da[2] = {64, 7}, dv[1] = {5}, dq[2] = {32, 3}, bad[1] = {33};
    float five[5] = {1, 2, 3, 4, 5};
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.first", 1, dv, LMK_GGML_F32, five));
    REQUIRE_OK(lmk_gguf_writer_declare(w, "t.f16", 2, da, LMK_GGML_F16));
    REQUIRE_OK(lmk_gguf_writer_declare(w, "t.vec", 1, dv, LMK_GGML_F32));
    REQUIRE_OK(lmk_gguf_writer_add_tensor(w, "t.mid", 1, dv, LMK_GGML_F32, five));
    REQUIRE_OK(lmk_gguf_writer_declare(w, "t.q8", 2, dq, LMK_GGML_Q8_0));
    CHECK_RC(lmk_gguf_writer_declare(w, "t.bad", 1, bad, LMK_GGML_Q8_0), LMK_EINVAL);
    uint8_t *mem;
    size_t mem_n;
    CHECK_RC(lmk_gguf_writer_encode(w, &mem, &mem_n), LMK_EINVAL); /* no data to encode */
    CHECK_RC(lmk_gguf_writer_stream_rows(w, a, 1), LMK_EINVAL);   /* not open */
    REQUIRE_OK(lmk_gguf_writer_stream_open(w, path));
    CHECK_RC(lmk_gguf_writer_stream_open(w, path), LMK_EINVAL);
    CHECK_RC(lmk_gguf_writer_declare(w, "t.late", 1, dv, LMK_GGML_F32), LMK_EINVAL);
    /* t.f16 in pieces of 3, 0, 1 and 3 rows; one row too many is refused */
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, a, 3));
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, a + 3 * 64, 0));
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, a + 3 * 64, 1));
    CHECK_RC(lmk_gguf_writer_stream_rows(w, a + 4 * 64, 4), LMK_EINVAL);
    CHECK_RC(lmk_gguf_writer_stream_raw(w, q, 7), LMK_EINVAL); /* not whole rows */
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, a + 4 * 64, 3));
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, v, 1)); /* t.vec; t.mid follows by itself */
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, q8src, 1)); /* t.q8: one row from f32 */
    REQUIRE_OK(lmk_gguf_writer_stream_raw(w, q + 34, 2 * 34));
    CHECK_RC(lmk_gguf_writer_stream_raw(w, q, 34), LMK_EINVAL); /* nothing left */
    REQUIRE_OK(lmk_gguf_writer_stream_close(w));
    CHECK_RC(lmk_gguf_writer_stream_close(w), LMK_EINVAL);
    lmk_gguf_writer_free(w);

    /* read back with the reader, and byte for byte against the in-memory writer */
    char err[256];
    lmk_gguf *g;
    REQUIRE_OK(lmk_gguf_open(path, &g, err, sizeof err));
    CHECK(lmk_gguf_n_tensors(g) == 5);
    uint32_t u = 0;
    REQUIRE_OK(lmk_gguf_get_u32(g, "test.u32", &u));
    CHECK(u == 7);
    const lmk_gguf_tensor *t = lmk_gguf_find_tensor(g, "t.f16");
    REQUIRE(t && t->type == LMK_GGML_F16 && t->n_rows == 7 && t->row_len == 64);
    float back[64 * 7];
    REQUIRE_OK(lmk_gguf_tensor_rows_f32(t, 0, 7, back));
    for (int i = 0; i < 64 * 7; i++)
        CHECK(back[i] == a[i]); /* multiples of 1/256 below 8: exact in f16 */
    t = lmk_gguf_find_tensor(g, "t.vec");
    REQUIRE(t);
    REQUIRE_OK(lmk_gguf_tensor_rows_f32(t, 0, 1, back));
    CHECK(!memcmp(back, v, sizeof v));
    t = lmk_gguf_find_tensor(g, "t.mid");
    REQUIRE(t);
    REQUIRE_OK(lmk_gguf_tensor_rows_f32(t, 0, 1, back));
    CHECK(!memcmp(back, five, sizeof five));
    t = lmk_gguf_find_tensor(g, "t.q8");
    REQUIRE(t && t->n_bytes == 34 * 3);
    CHECK(!memcmp(t->data, q, 34)); /* the row from stream_rows (same reference rounding) */
    CHECK(!memcmp(t->data + 34, q + 34, 2 * 34));
    lmk_gguf_close(g);
    if (stream_reference(a, v, q, sizeof q, &mem, &mem_n))
        return 1;
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    uint8_t *disk = malloc(mem_n + 1);
    size_t got = fread(disk, 1, mem_n + 1, f);
    fclose(f);
    CHECK(got == mem_n && !memcmp(disk, mem, mem_n));
    free(disk);
    free(mem);

    /* closing before every declared tensor is complete */
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_declare(w, "t.f16", 2, da, LMK_GGML_F16));
    REQUIRE_OK(lmk_gguf_writer_stream_open(w, path));
    REQUIRE_OK(lmk_gguf_writer_stream_rows(w, a, 2));
    CHECK_RC(lmk_gguf_writer_stream_close(w), LMK_EINVAL);
    lmk_gguf_writer_free(w);
    /* an open stream is closed by free */
    REQUIRE_OK(lmk_gguf_writer_new(&w));
    REQUIRE_OK(lmk_gguf_writer_declare(w, "t.f16", 2, da, LMK_GGML_F16));
    REQUIRE_OK(lmk_gguf_writer_stream_open(w, path));
    lmk_gguf_writer_free(w);
    if (lmk_test_failures == 0)
        lmk_test_rmdir(dir);
    return 0;
}

int main(void)
{
    seed = lmk_test_seed("test_gguf", 20240611);
    test_known_blocks();
    test_roundtrip();
    test_stream();
    test_truncation();
    test_hostile();
    test_random_damage();
    test_tokenizers();
    return lmk_test_finish("test_gguf", 0);
}
