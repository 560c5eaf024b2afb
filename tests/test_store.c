/* Tests of the storage module: checksums, round trips, batches, scans, snapshots, damage
 * detection, map growth, locking between processes, copies, and failed writes (file size
 * limit, injected ENOSPC/EIO, address-space limit). Forked children stand in for other
 * processes. */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#include "lmk_crc32c.h"
#include "lmk_store.h"
#include "lmk_store_internal.h"
#include "lmk_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static uint64_t g_seed;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static lmk_key K(uint8_t kind, uint16_t layer, uint16_t head, uint64_t index)
{
    lmk_key k = {kind, layer, head, index};
    return k;
}

/* Deterministic value bytes of a key: regenerated to check what came back. */
static void fill_value(unsigned char *buf, size_t len, const lmk_key *k, uint64_t salt)
{
    uint64_t st = g_seed ^ salt ^ ((uint64_t)k->kind << 56) ^ ((uint64_t)k->layer << 40) ^
                  ((uint64_t)k->head << 24) ^ k->index * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = lmk_test_rand(&st);
        for (size_t j = 0; j < 8 && i + j < len; j++)
            buf[i + j] = (unsigned char)(r >> (8 * j));
    }
}

static int fill_store(lmk_store *s, uint16_t layer, uint64_t first, uint64_t count, size_t vlen,
                      uint64_t salt);
static int check_store(lmk_store *s, uint16_t layer, uint64_t first, uint64_t count, size_t vlen,
                       uint64_t salt);

static int open_store(const char *dir, int create, int ro, uint64_t map_size, lmk_store **s)
{
    lmk_store_opts o = lmk_store_opts_default();
    o.create = create;
    o.read_only = ro;
    o.map_size = map_size;
    char msg[512];
    int rc = lmk_store_open(dir, &o, s, msg, sizeof msg);
    if (rc)
        fprintf(stderr, "  (open %s: %s)\n", dir, msg);
    return rc;
}

/* ---------------------------------------------------------------------------------- */

/* Bit-at-a-time CRC-32C: the definition, independent of both optimized versions. */
static uint32_t crc_ref(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int test_crc(void)
{
    const char *s = "123456789";
    CHECK(lmk_crc32c(0, s, 9) == 0xE3069283u);
    CHECK(lmk_crc32c_sw(0, s, 9) == 0xE3069283u);
    CHECK(crc_ref(0, (const unsigned char *)s, 9) == 0xE3069283u);
    CHECK(lmk_crc32c(0, "", 0) == 0);
    /* iSCSI test vectors (RFC 3720, B.4). */
    unsigned char b[32];
    memset(b, 0, 32);
    CHECK(lmk_crc32c_sw(0, b, 32) == 0x8A9136AAu);
    memset(b, 0xff, 32);
    CHECK(lmk_crc32c_sw(0, b, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    CHECK(lmk_crc32c_sw(0, b, 32) == 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    CHECK(lmk_crc32c_sw(0, b, 32) == 0x113FDB5Cu);

    int hw = lmk_crc32c_hw_ok();
    printf("  crc32c: hardware path %s\n", hw ? "available" : "not available (software only)");
    if (hw) {
        CHECK(lmk_crc32c_hw(0, s, 9) == 0xE3069283u);
        CHECK(lmk_crc32c_hw(0, b, 32) == 0x113FDB5Cu);
    }
    /* Random buffers, lengths and misalignments: every version agrees with the reference,
     * and continuing a CRC equals computing it in one go. */
    uint64_t st = g_seed ^ 0xC4C;
    enum { N = 4096 + 64 };
    unsigned char *buf = malloc(N);
    REQUIRE(buf);
    for (int t = 0; t < 400; t++) {
        size_t off = lmk_test_rand(&st) % 16;
        size_t len = lmk_test_rand(&st) % (N - 16);
        if (t < 40)
            len = (size_t)t;
        for (size_t i = 0; i < N; i++)
            buf[i] = (unsigned char)lmk_test_rand(&st);
        uint32_t seed = t % 3 ? (uint32_t)lmk_test_rand(&st) : 0;
        uint32_t want = crc_ref(seed, buf + off, len);
        CHECK(lmk_crc32c_sw(seed, buf + off, len) == want);
        if (hw)
            CHECK(lmk_crc32c_hw(seed, buf + off, len) == want);
        CHECK(lmk_crc32c(seed, buf + off, len) == want);
        size_t cut = len ? lmk_test_rand(&st) % len : 0;
        CHECK(lmk_crc32c(lmk_crc32c(seed, buf + off, cut), buf + off + cut, len - cut) == want);
    }
    free(buf);
    /* Long inputs (the hardware path joins three lanes of 512 bytes): a few lengths
     * around strip boundaries and one of ~1 MiB, against the software version. */
    unsigned char *lb = malloc((1 << 20) + 64);
    REQUIRE(lb);
    for (size_t i = 0; i < (1 << 20) + 64; i++)
        lb[i] = (unsigned char)lmk_test_rand(&st);
    static const size_t long_lens[] = {1535, 1536, 1537, 3071, 3072, 3073, 4607, 32768,
                                       32768 + 4, (1 << 20) + 37};
    for (size_t i = 0; i < sizeof long_lens / sizeof long_lens[0]; i++) {
        size_t off = i % 9;
        uint32_t want = lmk_crc32c_sw(0x1234u, lb + off, long_lens[i]);
        if (i < 3)
            CHECK(crc_ref(0x1234u, lb + off, long_lens[i]) == want);
        if (hw)
            CHECK(lmk_crc32c_hw(0x1234u, lb + off, long_lens[i]) == want);
        CHECK(lmk_crc32c(0x1234u, lb + off, long_lens[i]) == want);
    }
    free(lb);

    /* Throughput, for the report (1 MiB, a few rounds). */
    size_t big = 1 << 20;
    unsigned char *m = malloc(big);
    REQUIRE(m);
    memset(m, 0x5a, big);
    uint32_t acc = 0;
    double t0 = now_s();
    for (int r = 0; r < 16; r++)
        acc ^= lmk_crc32c_sw(acc, m, big);
    double t1 = now_s();
    if (hw)
        for (int r = 0; r < 16; r++)
            acc ^= lmk_crc32c_hw(acc, m, big);
    double t2 = now_s();
    printf("  crc32c throughput: software %.2f GB/s", 16.0 * big / (t1 - t0) / 1e9);
    if (hw)
        printf(", sse4.2 %.2f GB/s", 16.0 * big / (t2 - t1) / 1e9);
    printf(" (%08x)\n", acc);
    free(m);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static const size_t odd_lens[] = {0,    1,    2,    3,    5,    7,     8,     9,    15,
                                  16,   17,   31,   63,   127,  1000,  2047,  2049, 4091,
                                  4093, 4096, 4097, 8191, 12289, 32768, 40001, 131075};
#define N_ODD (sizeof odd_lens / sizeof odd_lens[0])

static int test_roundtrip(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-rt");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));

    lmk_key k0 = K(LMK_KEY_BLOCK, 0, 0, 0);
    unsigned char *val = malloc(200000), *out = malloc(200000 + 8);
    REQUIRE(val && out);
    /* Writes need a batch; a pending batch is invisible to reads. */
    CHECK_RC(lmk_store_put(s, &k0, "x", 1), LMK_ESTATE);
    REQUIRE_OK(lmk_store_batch_begin(s));
    CHECK_RC(lmk_store_batch_begin(s), LMK_ESTATE);
    for (size_t i = 0; i < N_ODD; i++) {
        lmk_key k = K(LMK_KEY_BLOCK, 3, 1, i);
        fill_value(val, odd_lens[i], &k, 1);
        REQUIRE_OK(lmk_store_put(s, &k, val, odd_lens[i]));
    }
    size_t len = 99;
    CHECK_RC(lmk_store_get(s, &k0, out, 16, &len), LMK_ENOTFOUND);
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK_RC(lmk_store_batch_commit(s), LMK_ESTATE);

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < N_ODD; i++) {
            lmk_key k = K(LMK_KEY_BLOCK, 3, 1, i);
            fill_value(val, odd_lens[i], &k, 1);
            /* dst at an odd address: the store copies, never hands out LMDB's pointer */
            unsigned char *dst = out + 1 + (i % 7);
            memset(out, 0xEE, 200000 + 8);
            len = 12345;
            CHECK_RC(lmk_store_get(s, &k, dst, odd_lens[i], &len), LMK_OK);
            CHECK(len == odd_lens[i]);
            CHECK(memcmp(dst, val, odd_lens[i]) == 0);
            CHECK(dst[odd_lens[i]] == 0xEE); /* nothing written past the value */
            if (odd_lens[i] > 0) {
                len = 0;
                CHECK_RC(lmk_store_get(s, &k, dst, odd_lens[i] - 1, &len), LMK_EINVAL);
                CHECK(len == odd_lens[i]);
            }
        }
        /* Persistence across close/reopen. */
        lmk_store_close(s);
        REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    }
    /* Length query with no buffer. */
    lmk_key k5 = K(LMK_KEY_BLOCK, 3, 1, 25);
    len = 0;
    CHECK_RC(lmk_store_get(s, &k5, NULL, 0, &len), LMK_EINVAL);
    CHECK(len == odd_lens[25]);
    CHECK(strstr(lmk_store_errmsg(s), "block L3 H1 #25") != NULL);
    /* Absent keys: neighbours of present ones in every field. */
    lmk_key absent[] = {K(LMK_KEY_BLOCK, 3, 1, N_ODD), K(LMK_KEY_BLOCK, 3, 0, 0),
                        K(LMK_KEY_BLOCK, 2, 1, 0), K(LMK_KEY_LANDMARK, 3, 1, 0)};
    for (size_t i = 0; i < 4; i++)
        CHECK_RC(lmk_store_get(s, &absent[i], out, 100, &len), LMK_ENOTFOUND);
    /* Invalid keys. */
    lmk_key bad = K(1, 0, 0, 0), bad2 = K(9, 0, 0, 0);
    CHECK_RC(lmk_store_get(s, &bad, out, 100, &len), LMK_EINVAL);
    CHECK_RC(lmk_store_get(s, &bad2, out, 100, &len), LMK_EINVAL);
    REQUIRE_OK(lmk_store_batch_begin(s));
    CHECK_RC(lmk_store_put(s, &bad, "x", 1), LMK_EINVAL);
    CHECK_RC(lmk_store_put(s, &k0, NULL, 5), LMK_EINVAL);
    /* Replacing: the last put of a key wins, within a batch and across batches. */
    REQUIRE_OK(lmk_store_put(s, &k5, "first", 5));
    REQUIRE_OK(lmk_store_put(s, &k5, "second", 6));
    REQUIRE_OK(lmk_store_batch_commit(s));
    char sm[16];
    CHECK_RC(lmk_store_get(s, &k5, sm, sizeof sm, &len), LMK_OK);
    CHECK(len == 6 && memcmp(sm, "second", 6) == 0);
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put(s, &k5, "third!!", 7));
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK_RC(lmk_store_get(s, &k5, sm, sizeof sm, &len), LMK_OK);
    CHECK(len == 7 && memcmp(sm, "third!!", 7) == 0);

    /* Meta records. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put_meta(s, "fingerprint", "abcdef", 6));
    REQUIRE_OK(lmk_store_put_meta(s, "f", "1", 1));
    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    REQUIRE_OK(lmk_store_put_meta(s, name64, "long", 4));
    char name65[66];
    memset(name65, 'n', 65);
    name65[65] = '\0';
    CHECK_RC(lmk_store_put_meta(s, name65, "x", 1), LMK_EINVAL);
    CHECK_RC(lmk_store_put_meta(s, "", "x", 1), LMK_EINVAL);
    CHECK_RC(lmk_store_put_meta(s, NULL, "x", 1), LMK_EINVAL);
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK_RC(lmk_store_get_meta(s, "fingerprint", sm, sizeof sm, &len), LMK_OK);
    CHECK(len == 6 && memcmp(sm, "abcdef", 6) == 0);
    CHECK_RC(lmk_store_get_meta(s, "f", sm, sizeof sm, &len), LMK_OK);
    CHECK(len == 1 && sm[0] == '1');
    CHECK_RC(lmk_store_get_meta(s, name64, sm, sizeof sm, &len), LMK_OK);
    CHECK(len == 4 && memcmp(sm, "long", 4) == 0);
    CHECK_RC(lmk_store_get_meta(s, "fingerprin", sm, sizeof sm, &len), LMK_ENOTFOUND);
    CHECK_RC(lmk_store_get_meta(s, "fingerprint2", sm, sizeof sm, &len), LMK_ENOTFOUND);
    CHECK_RC(lmk_store_get_meta(s, name65, sm, sizeof sm, &len), LMK_EINVAL);

    lmk_store_close(s);
    lmk_store_close(NULL); /* accepted */

    /* Cold reads (file evicted from the page cache): multi-page values take the
     * read-hint path of a slow lookup and must come back the same. */
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    REQUIRE_OK(fill_store(s, 7, 0, 48, 32768, 1));
    lmk_store_close(s);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    CHECK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
    close(fd);
    REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
    CHECK(check_store(s, 7, 0, 48, 32768, 1) == 0);
    lmk_store_close(s);
    free(val);
    free(out);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static int test_batch_atomicity(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-batch");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    unsigned char v[100];
    size_t len;
    /* Abort: nothing applied, and a new batch can start. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    for (uint64_t i = 0; i < 50; i++) {
        lmk_key k = K(LMK_KEY_LANDMARK, 0, 0, i);
        fill_value(v, sizeof v, &k, 2);
        REQUIRE_OK(lmk_store_put(s, &k, v, sizeof v));
    }
    REQUIRE_OK(lmk_store_put_meta(s, "m", "x", 1));
    lmk_store_batch_abort(s);
    lmk_store_batch_abort(s); /* no-op */
    for (uint64_t i = 0; i < 50; i++) {
        lmk_key k = K(LMK_KEY_LANDMARK, 0, 0, i);
        CHECK_RC(lmk_store_get(s, &k, v, sizeof v, &len), LMK_ENOTFOUND);
    }
    CHECK_RC(lmk_store_get_meta(s, "m", v, sizeof v, &len), LMK_ENOTFOUND);
    CHECK_RC(lmk_store_put(s, &(lmk_key){LMK_KEY_LANDMARK, 0, 0, 0}, v, 1), LMK_ESTATE);
    /* Commit: all applied, and an empty batch commits trivially. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_batch_commit(s));
    REQUIRE_OK(lmk_store_batch_begin(s));
    for (uint64_t i = 0; i < 50; i++) {
        lmk_key k = K(LMK_KEY_LANDMARK, 0, 0, i);
        fill_value(v, sizeof v, &k, 2);
        REQUIRE_OK(lmk_store_put(s, &k, v, sizeof v));
    }
    REQUIRE_OK(lmk_store_put_meta(s, "m", "x", 1));
    REQUIRE_OK(lmk_store_batch_commit(s));
    unsigned char w[100];
    for (uint64_t i = 0; i < 50; i++) {
        lmk_key k = K(LMK_KEY_LANDMARK, 0, 0, i);
        fill_value(v, sizeof v, &k, 2);
        CHECK_RC(lmk_store_get(s, &k, w, sizeof w, &len), LMK_OK);
        CHECK(len == sizeof v && memcmp(v, w, sizeof v) == 0);
    }
    CHECK_RC(lmk_store_get_meta(s, "m", w, sizeof w, &len), LMK_OK);
    /* The pending batch is dropped by close: nothing of it after reopening. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    lmk_key kx = K(LMK_KEY_USER, 7, 7, 7);
    REQUIRE_OK(lmk_store_put(s, &kx, "pending", 7));
    lmk_store_close(s);
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    CHECK_RC(lmk_store_get(s, &kx, w, sizeof w, &len), LMK_ENOTFOUND);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

typedef struct scan_log {
    lmk_key keys[4096];
    size_t n;
    size_t n_null;
    int stop_after; /* 0: never */
    int bad_value;
} scan_log;

static int scan_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    scan_log *l = ud;
    if (l->n < 4096)
        l->keys[l->n] = *key;
    l->n++;
    if (!val) {
        l->n_null++;
    } else {
        unsigned char want[64];
        size_t wl = 8 + key->index % 50;
        if (wl > sizeof want)
            wl = sizeof want;
        fill_value(want, wl, key, 3);
        if (len != wl || memcmp(want, val, wl) != 0)
            l->bad_value++;
    }
    if (l->stop_after && (int)l->n == l->stop_after)
        return 42;
    return 0;
}

static int key_less(const lmk_key *a, const lmk_key *b)
{
    if (a->kind != b->kind)
        return a->kind < b->kind;
    if (a->layer != b->layer)
        return a->layer < b->layer;
    if (a->head != b->head)
        return a->head < b->head;
    return a->index < b->index;
}

static int test_scan_and_del_range(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-scan");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    /* Keys in a shuffled order, with fields that differ in their high bytes (so a
     * little-endian encoding would sort them wrongly). */
    static const uint16_t layers[] = {0, 1, 2, 255, 256, 0x1234};
    static const uint16_t heads[] = {0, 1, 300};
    static const uint64_t idx[] = {0, 1, 2, 255, 256, 65536, 1ull << 32, (1ull << 56) + 3};
    lmk_key all[4 * 6 * 3 * 8];
    size_t n = 0;
    for (uint8_t kind = LMK_KEY_BLOCK; kind <= LMK_KEY_USER; kind++)
        for (size_t a = 0; a < 6; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t c = 0; c < 8; c++)
                    all[n++] = K(kind, layers[a], heads[b], idx[c]);
    uint64_t st = g_seed ^ 0x5CA;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = lmk_test_rand(&st) % (i + 1);
        lmk_key t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put_meta(s, "zzz", "meta", 4)); /* never in a kind scan */
    for (size_t i = 0; i < n; i++) {
        unsigned char v[64];
        size_t wl = 8 + all[i].index % 50;
        fill_value(v, wl, &all[i], 3);
        REQUIRE_OK(lmk_store_put(s, &all[i], v, wl));
    }
    REQUIRE_OK(lmk_store_batch_commit(s));

    static scan_log log;
    for (uint8_t kind = LMK_KEY_BLOCK; kind <= LMK_KEY_USER; kind++) {
        memset(&log, 0, sizeof log);
        REQUIRE_OK(lmk_store_scan(s, kind, -1, 0, scan_cb, &log));
        CHECK(log.n == 6 * 3 * 8);
        CHECK(log.bad_value == 0);
        for (size_t i = 0; i < log.n; i++) {
            CHECK(log.keys[i].kind == kind);
            if (i)
                CHECK(key_less(&log.keys[i - 1], &log.keys[i]));
        }
        /* Layer filter. */
        for (size_t a = 0; a < 6; a++) {
            memset(&log, 0, sizeof log);
            REQUIRE_OK(lmk_store_scan(s, kind, layers[a], 0, scan_cb, &log));
            CHECK(log.n == 3 * 8);
            for (size_t i = 0; i < log.n; i++)
                CHECK(log.keys[i].kind == kind && log.keys[i].layer == layers[a]);
        }
        memset(&log, 0, sizeof log);
        REQUIRE_OK(lmk_store_scan(s, kind, 7, 0, scan_cb, &log));
        CHECK(log.n == 0);
    }
    /* A callback's non-zero return stops the scan and is returned. */
    memset(&log, 0, sizeof log);
    log.stop_after = 5;
    CHECK_RC(lmk_store_scan(s, LMK_KEY_TAIL, -1, 0, scan_cb, &log), 42);
    CHECK(log.n == 5);
    CHECK_RC(lmk_store_scan(s, 1, -1, 0, scan_cb, &log), LMK_EINVAL);
    CHECK_RC(lmk_store_scan(s, LMK_KEY_TAIL, 70000, 0, scan_cb, &log), LMK_EINVAL);
    CHECK_RC(lmk_store_scan(s, LMK_KEY_TAIL, -1, 0, NULL, &log), LMK_EINVAL);

    /* del_range: block, layer 256, head 1, index 2 ..= 1<<32 (inclusive at both ends). */
    REQUIRE_OK(lmk_store_batch_begin(s));
    lmk_key from = K(LMK_KEY_BLOCK, 256, 1, 2), to = K(LMK_KEY_BLOCK, 256, 1, 1ull << 32);
    CHECK_RC(lmk_store_del_range(s, &to, &from), LMK_EINVAL);
    REQUIRE_OK(lmk_store_del_range(s, &from, &to));
    /* A range that matches nothing is not an error. */
    lmk_key f2 = K(LMK_KEY_USER, 9, 0, 0), t2 = K(LMK_KEY_USER, 9, 0, 100);
    REQUIRE_OK(lmk_store_del_range(s, &f2, &t2));
    REQUIRE_OK(lmk_store_batch_commit(s));
    memset(&log, 0, sizeof log);
    REQUIRE_OK(lmk_store_scan(s, LMK_KEY_BLOCK, 256, 0, scan_cb, &log));
    CHECK(log.n == 3 * 8 - 5); /* indices 2, 255, 256, 65536, 1<<32 of head 1 */
    for (size_t i = 0; i < log.n; i++) {
        const lmk_key *k = &log.keys[i];
        CHECK(!(k->head == 1 && k->index >= 2 && k->index <= (1ull << 32)));
    }
    unsigned char v[64];
    size_t len;
    lmk_key keep1 = K(LMK_KEY_BLOCK, 256, 1, 1), keep2 = K(LMK_KEY_BLOCK, 256, 1, (1ull << 56) + 3);
    CHECK_RC(lmk_store_get(s, &keep1, v, sizeof v, &len), LMK_OK);
    CHECK_RC(lmk_store_get(s, &keep2, v, sizeof v, &len), LMK_OK);
    /* Across kinds and layers (truncation of everything from a point on), ordered with
     * puts in the same batch: put-then-delete deletes, delete-then-put keeps. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    lmk_key p1 = K(LMK_KEY_TAIL, 0x1234, 300, 5);
    REQUIRE_OK(lmk_store_put(s, &p1, "gone", 4));
    lmk_key f3 = K(LMK_KEY_TAIL, 256, 0, 0), t3 = K(LMK_KEY_USER, 1, 0, 0);
    REQUIRE_OK(lmk_store_del_range(s, &f3, &t3));
    lmk_key p2 = K(LMK_KEY_TAIL, 0x1234, 300, 6);
    REQUIRE_OK(lmk_store_put(s, &p2, "kept", 4));
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK_RC(lmk_store_get(s, &p1, v, sizeof v, &len), LMK_ENOTFOUND);
    CHECK_RC(lmk_store_get(s, &p2, v, sizeof v, &len), LMK_OK);
    CHECK(len == 4 && memcmp(v, "kept", 4) == 0);
    memset(&log, 0, sizeof log);
    REQUIRE_OK(lmk_store_scan(s, LMK_KEY_TAIL, -1, 0, scan_cb, &log));
    /* layers 0,1,2,255 survive (4*3*8) plus p2 */
    CHECK(log.n == 4 * 3 * 8 + 1);
    memset(&log, 0, sizeof log);
    REQUIRE_OK(lmk_store_scan(s, LMK_KEY_USER, -1, 0, scan_cb, &log));
    CHECK(log.n == 6 * 3 * 8 - 3 * 8 - 1); /* user L0 and user L1 H0 #0 deleted */
    CHECK_RC(lmk_store_get_meta(s, "zzz", v, sizeof v, &len), LMK_OK);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

typedef struct thread_arg {
    lmk_store *s;
    int step;
    int rc;
    char val[16];
} thread_arg;

static void *thread_step(void *p)
{
    thread_arg *a = p;
    lmk_key k = K(LMK_KEY_USER, 0, 0, 1);
    size_t len = 0;
    memset(a->val, 0, sizeof a->val);
    if (a->step == 0) {
        a->rc = lmk_store_read_begin(a->s);
        if (!a->rc)
            a->rc = lmk_store_get(a->s, &k, a->val, sizeof a->val, &len);
    } else {
        a->rc = lmk_store_get(a->s, &k, a->val, sizeof a->val, &len);
        lmk_store_read_end(a->s);
    }
    return NULL;
}

static int test_snapshot(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-snap");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    lmk_key k = K(LMK_KEY_USER, 0, 0, 1);
    char v[16];
    size_t len;
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put(s, &k, "old", 4));
    REQUIRE_OK(lmk_store_batch_commit(s));

    REQUIRE_OK(lmk_store_read_begin(s));
    CHECK_RC(lmk_store_read_begin(s), LMK_ESTATE);
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put(s, &k, "new", 4));
    lmk_key k2 = K(LMK_KEY_USER, 0, 0, 2);
    REQUIRE_OK(lmk_store_put(s, &k2, "added", 6));
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK_RC(lmk_store_get(s, &k, v, sizeof v, &len), LMK_OK);
    CHECK(strcmp(v, "old") == 0);
    CHECK_RC(lmk_store_get(s, &k2, v, sizeof v, &len), LMK_ENOTFOUND);
    /* a view reads the same snapshot without a copy */
    const void *view = NULL;
    CHECK_RC(lmk_store_get_view(s, &k, &view, &len), LMK_OK);
    CHECK(len == 4 && view && memcmp(view, "old", 4) == 0);
    CHECK_RC(lmk_store_get_view(s, &k2, &view, &len), LMK_ENOTFOUND);
    static scan_log log;
    memset(&log, 0, sizeof log);
    /* a scan inside read_begin uses the same snapshot */
    lmk_store_scan(s, LMK_KEY_USER, -1, 0, scan_cb, &log);
    CHECK(log.n == 1);
    lmk_store_read_end(s);
    CHECK_RC(lmk_store_get(s, &k, v, sizeof v, &len), LMK_OK);
    CHECK(strcmp(v, "new") == 0);
    CHECK_RC(lmk_store_get(s, &k2, v, sizeof v, &len), LMK_OK);
    lmk_store_read_end(s); /* unmatched: no-op */
    CHECK_RC(lmk_store_get_view(s, &k, &view, &len), LMK_ESTATE); /* outside a read */

    /* One handle, used by different threads one after the other (MDB_NOTLS): a snapshot
     * begun in one thread is read and ended in another. */
    thread_arg a = {s, 0, -1, {0}};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, thread_step, &a) == 0);
    pthread_join(th, NULL);
    CHECK_RC(a.rc, LMK_OK);
    CHECK(strcmp(a.val, "new") == 0);
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put(s, &k, "newer", 6));
    REQUIRE_OK(lmk_store_batch_commit(s));
    a.step = 1;
    REQUIRE(pthread_create(&th, NULL, thread_step, &a) == 0);
    pthread_join(th, NULL);
    CHECK_RC(a.rc, LMK_OK);
    CHECK(strcmp(a.val, "new") == 0); /* still the snapshot of thread 0 */
    CHECK_RC(lmk_store_get(s, &k, v, sizeof v, &len), LMK_OK);
    CHECK(strcmp(v, "newer") == 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int write_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(b, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static long find_unique(const unsigned char *hay, size_t n, const unsigned char *pat, size_t m)
{
    long at = -1;
    for (size_t i = 0; i + m <= n; i++) {
        if (hay[i] == pat[0] && memcmp(hay + i, pat, m) == 0) {
            if (at >= 0)
                return -2; /* not unique */
            at = (long)i;
        }
    }
    return at;
}

static int test_corruption(void)
{
    char dir[512], path[600];
    lmk_test_dir(dir, sizeof dir, "store-corrupt");
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    /* Small values (inline in leaf pages) and a big one (overflow pages). */
    unsigned char a[48], b[48], big[20000];
    lmk_key ka = K(LMK_KEY_BLOCK, 1, 0, 10), kb = K(LMK_KEY_BLOCK, 1, 0, 11),
            kbig = K(LMK_KEY_BLOCK, 1, 0, 12), kc = K(LMK_KEY_BLOCK, 1, 0, 13);
    fill_value(a, sizeof a, &ka, 4);
    fill_value(b, sizeof b, &kb, 4);
    fill_value(big, sizeof big, &kbig, 4);
    REQUIRE_OK(lmk_store_batch_begin(s));
    REQUIRE_OK(lmk_store_put(s, &ka, a, sizeof a));
    REQUIRE_OK(lmk_store_put(s, &kb, b, sizeof b));
    REQUIRE_OK(lmk_store_put(s, &kbig, big, sizeof big));
    REQUIRE_OK(lmk_store_put(s, &kc, "intact", 6));
    REQUIRE_OK(lmk_store_batch_commit(s));
    lmk_store_close(s);

    size_t n;
    unsigned char *img = read_file(path, &n);
    REQUIRE(img);
    long pa = find_unique(img, n, a, sizeof a), pb = find_unique(img, n, b, sizeof b);
    long pbig = find_unique(img, n, big + 9000, 64);
    REQUIRE(pa >= 0 && pb >= 0 && pbig >= 0);
    /* 1. One flipped bit in a small value and one in the big value. */
    img[pa + 17] ^= 0x10;
    img[pbig + 5] ^= 0x01;
    REQUIRE(write_file(path, img, n) == 0);
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    unsigned char out[20000];
    size_t len;
    CHECK_RC(lmk_store_get(s, &ka, out, sizeof out, &len), LMK_ECORRUPT);
    CHECK(strstr(lmk_store_errmsg(s), "checksum") != NULL);
    CHECK_RC(lmk_store_get(s, &kbig, out, sizeof out, &len), LMK_ECORRUPT);
    CHECK_RC(lmk_store_get(s, &kb, out, sizeof out, &len), LMK_OK);
    CHECK(len == sizeof b && memcmp(out, b, sizeof b) == 0);
    CHECK_RC(lmk_store_get(s, &kc, out, sizeof out, &len), LMK_OK);
    /* views verify the mapped bytes the same way */
    REQUIRE_OK(lmk_store_read_begin(s));
    const void *view = NULL;
    CHECK_RC(lmk_store_get_view(s, &ka, &view, &len), LMK_ECORRUPT);
    CHECK_RC(lmk_store_get_view(s, &kbig, &view, &len), LMK_ECORRUPT);
    CHECK_RC(lmk_store_get_view(s, &kb, &view, &len), LMK_OK);
    CHECK(len == sizeof b && memcmp(view, b, sizeof b) == 0);
    lmk_store_read_end(s);
    /* Strict scan stops with ECORRUPT; tolerant scan reports both and goes on. */
    static scan_log log;
    memset(&log, 0, sizeof log);
    CHECK_RC(lmk_store_scan(s, LMK_KEY_BLOCK, 1, 0, scan_cb, &log), LMK_ECORRUPT);
    CHECK(log.n == 0); /* #10 is the first key */
    memset(&log, 0, sizeof log);
    CHECK_RC(lmk_store_scan(s, LMK_KEY_BLOCK, 1, 1, scan_cb, &log), LMK_OK);
    CHECK(log.n == 4);
    CHECK(log.n_null == 2);
    CHECK(log.keys[0].index == 10 && log.keys[2].index == 12);
    lmk_store_close(s);
    /* verify_reads = 0 hands the damaged bytes out unchecked. */
    lmk_store_opts o = lmk_store_opts_default();
    o.verify_reads = 0;
    REQUIRE_OK(lmk_store_open(dir, &o, &s, NULL, 0));
    CHECK_RC(lmk_store_get(s, &ka, out, sizeof out, &len), LMK_OK);
    CHECK(len == sizeof a && out[17] == (a[17] ^ 0x10));
    lmk_store_close(s);

    /* 2. Values swapped between two keys, each with its own (valid) checksum: caught
     * because the key is inside the checksum. Payload + trailing CRC moved together. */
    img[pa + 17] ^= 0x10;
    unsigned char tmp[48 + 4];
    memcpy(tmp, img + pa, sizeof tmp);
    memcpy(img + pa, img + pb, sizeof tmp);
    memcpy(img + pb, tmp, sizeof tmp);
    REQUIRE(write_file(path, img, n) == 0);
    REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
    CHECK_RC(lmk_store_get(s, &ka, out, sizeof out, &len), LMK_ECORRUPT);
    CHECK_RC(lmk_store_get(s, &kb, out, sizeof out, &len), LMK_ECORRUPT);
    lmk_store_close(s);
    free(img);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static int fill_store(lmk_store *s, uint16_t layer, uint64_t first, uint64_t count, size_t vlen,
                      uint64_t salt)
{
    unsigned char *v = malloc(vlen);
    if (!v)
        return ENOMEM;
    int rc = lmk_store_batch_begin(s);
    for (uint64_t i = first; !rc && i < first + count; i++) {
        lmk_key k = K(LMK_KEY_BLOCK, layer, (uint16_t)(i % 4), i);
        fill_value(v, vlen, &k, salt);
        rc = lmk_store_put(s, &k, v, vlen);
    }
    if (!rc)
        rc = lmk_store_batch_commit(s);
    free(v);
    return rc;
}

static int check_store(lmk_store *s, uint16_t layer, uint64_t first, uint64_t count, size_t vlen,
                       uint64_t salt)
{
    unsigned char *v = malloc(vlen), *w = malloc(vlen + 1);
    int bad = 0;
    for (uint64_t i = first; i < first + count; i++) {
        lmk_key k = K(LMK_KEY_BLOCK, layer, (uint16_t)(i % 4), i);
        fill_value(v, vlen, &k, salt);
        size_t len = 0;
        int rc = lmk_store_get(s, &k, w, vlen + 1, &len);
        if (rc || len != vlen || memcmp(v, w, vlen) != 0) {
            if (!bad)
                fprintf(stderr, "  check_store: key #%llu rc %d (%s) len %zu\n",
                        (unsigned long long)i, rc, lmk_store_errmsg(s), len);
            bad++;
        }
    }
    free(v);
    free(w);
    return bad;
}

static int test_map_growth(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-grow");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 1u << 20, &s));
    uint64_t db0 = 0, db1 = 0;
    REQUIRE_OK(lmk_store_disk_bytes(s, &db0));
    REQUIRE_OK(fill_store(s, 0, 0, 20, 1000, 5)); /* fits */
    /* ~12 MiB in one batch into a 1 MiB map: grows and replays. */
    REQUIRE_OK(fill_store(s, 1, 0, 768, 16384, 5));
    CHECK(check_store(s, 1, 0, 768, 16384, 5) == 0);
    CHECK(check_store(s, 0, 0, 20, 1000, 5) == 0);
    /* Growth with a read snapshot open: the snapshot is re-taken, reads keep working. */
    REQUIRE_OK(lmk_store_read_begin(s));
    REQUIRE_OK(fill_store(s, 2, 0, 2048, 16384, 5)); /* 32 MiB more */
    CHECK(check_store(s, 0, 0, 20, 1000, 5) == 0);
    lmk_store_read_end(s);
    CHECK(check_store(s, 2, 0, 2048, 16384, 5) == 0);
    REQUIRE_OK(lmk_store_disk_bytes(s, &db1));
    CHECK(db1 > db0 + (40u << 20));
    CHECK(db1 < (200u << 20));
    lmk_store_close(s);
    /* Reopen with the same tiny map option: LMDB rounds it up to the data. */
    REQUIRE_OK(open_store(dir, 0, 0, 1u << 20, &s));
    CHECK(check_store(s, 1, 0, 768, 16384, 5) == 0);
    CHECK(check_store(s, 2, 0, 2048, 16384, 5) == 0);
    REQUIRE_OK(fill_store(s, 3, 0, 64, 16384, 5));
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static int wait_child(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "  child killed by signal %d\n", WTERMSIG(status));
        return 100 + WTERMSIG(status);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

static int test_locking(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-lock");
    lmk_store *s, *s2 = (lmk_store *)1;
    REQUIRE_OK(open_store(dir, 1, 0, 1u << 20, &s));
    REQUIRE_OK(fill_store(s, 0, 0, 10, 100, 6));

    /* Same directory twice in one process: refused, writer or reader. */
    char msg[256];
    lmk_store_opts o = lmk_store_opts_default();
    CHECK_RC(lmk_store_open(dir, &o, &s2, msg, sizeof msg), LMK_EBUSY);
    CHECK(s2 == NULL);
    CHECK(strstr(msg, "already open") != NULL);
    o.read_only = 1;
    CHECK_RC(lmk_store_open(dir, &o, &s2, msg, sizeof msg), LMK_EBUSY);
    /* Through another path to the same directory (the registry keys on dev/inode). */
    char alias[600];
    snprintf(alias, sizeof alias, "%s/.", dir);
    o.read_only = 0;
    CHECK_RC(lmk_store_open(alias, &o, &s2, msg, sizeof msg), LMK_EBUSY);

    /* A second writer in another process: LMK_EBUSY at once. */
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        lmk_store *c = NULL;
        lmk_store_opts co = lmk_store_opts_default();
        char cm[256];
        double t0 = now_s();
        int rc = lmk_store_open(dir, &co, &c, cm, sizeof cm);
        double dt = now_s() - t0;
        if (rc != LMK_EBUSY || c != NULL)
            _exit(1);
        if (!strstr(cm, "in use by another process"))
            _exit(2);
        if (dt > 1.0)
            _exit(3);
        _exit(0);
    }
    CHECK_RC(wait_child(pid), 0);

    /* A reader in another process beside the live writer: sees committed data, and data
     * committed while it is open, including after the writer grew the map past the
     * reader's (tiny) map. */
    int p2c[2], c2p[2];
    REQUIRE(pipe(p2c) == 0 && pipe(c2p) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        lmk_store *r = NULL;
        lmk_store_opts ro = lmk_store_opts_default();
        ro.read_only = 1;
        ro.map_size = 1; /* rounded up: smaller than the writer's map on purpose */
        char cm[256];
        int rc = lmk_store_open(dir, &ro, &r, cm, sizeof cm);
        if (rc) {
            fprintf(stderr, "  child reader open: %s\n", cm);
            _exit(1);
        }
        if (check_store(r, 0, 0, 10, 100, 6))
            _exit(2);
        if (lmk_store_batch_begin(r) != LMK_EREADONLY)
            _exit(3);
        if (lmk_store_sync(r) != LMK_OK)
            _exit(4);
        char c = 'r';
        if (write(c2p[1], &c, 1) != 1 || read(p2c[0], &c, 1) != 1)
            _exit(5);
        if (check_store(r, 1, 0, 1024, 16384, 6))
            _exit(6);
        lmk_store_close(r);
        _exit(0);
    }
    close(p2c[0]);
    close(c2p[1]);
    char c;
    CHECK(read(c2p[0], &c, 1) == 1);
    REQUIRE_OK(fill_store(s, 1, 0, 1024, 16384, 6)); /* 16 MiB: grows the 1 MiB map */
    CHECK(write(p2c[1], &c, 1) == 1);
    CHECK_RC(wait_child(pid), 0);
    close(p2c[1]);
    close(c2p[0]);
    lmk_store_close(s);

    /* After close the lock is free: another process can write. */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        lmk_store *c = NULL;
        lmk_store_opts co = lmk_store_opts_default();
        if (lmk_store_open(dir, &co, &c, NULL, 0) != LMK_OK)
            _exit(1);
        lmk_store_close(c);
        _exit(0);
    }
    CHECK_RC(wait_child(pid), 0);
    /* And in this process again. */
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    CHECK(check_store(s, 1, 0, 1024, 16384, 6) == 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static int open_rc(const char *dir, int ro, char *msg, size_t cap)
{
    lmk_store_opts o = lmk_store_opts_default();
    o.read_only = ro;
    lmk_store *s = (lmk_store *)1;
    int rc = lmk_store_open(dir, &o, &s, msg, cap);
    if (rc == LMK_OK)
        lmk_store_close(s);
    else if (s != NULL)
        return -1;
    return rc;
}

static int test_bad_files(void)
{
    char dir[512], good[600], path[700], msg[512], gpath0[700];
    lmk_test_dir(dir, sizeof dir, "store-bad");
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    snprintf(good, sizeof good, "%s-good", dir);
    lmk_test_rmdir(good);

    /* Open errors without any file. */
    lmk_store_opts o = lmk_store_opts_default();
    lmk_store *s = (lmk_store *)1;
    CHECK_RC(lmk_store_open(dir, &o, &s, msg, sizeof msg), LMK_ENOTFOUND);
    CHECK(s == NULL);
    o.read_only = 1;
    CHECK_RC(lmk_store_open(dir, &o, &s, msg, sizeof msg), LMK_ENOTFOUND);
    o.create = 1;
    CHECK_RC(lmk_store_open(dir, &o, &s, msg, sizeof msg), LMK_EINVAL);
    o = lmk_store_opts_default();
    o.sync = (lmk_sync_mode)7;
    CHECK_RC(lmk_store_open(dir, &o, &s, msg, sizeof msg), LMK_EINVAL);
    CHECK_RC(lmk_store_open(NULL, NULL, &s, msg, sizeof msg), LMK_EINVAL);
    REQUIRE(mkdir(dir, 0755) == 0);
    CHECK_RC(open_rc(dir, 0, msg, sizeof msg), LMK_ENOTFOUND); /* dir without data.mdb */
    CHECK_RC(open_rc(dir, 1, msg, sizeof msg), LMK_ENOTFOUND);
    snprintf(gpath0, sizeof gpath0, "%s/landmark.lock", dir);
    CHECK(access(gpath0, F_OK) != 0); /* nothing created in a directory without a store */

    /* A real data file to damage. */
    REQUIRE_OK(open_store(good, 1, 0, 0, &s));
    REQUIRE_OK(fill_store(s, 0, 0, 300, 3000, 7));
    lmk_store_close(s);
    char gpath[700];
    snprintf(gpath, sizeof gpath, "%s/data.mdb", good);
    size_t n;
    unsigned char *img = read_file(gpath, &n);
    REQUIRE(img && n >= 16 * 4096);
    uint32_t psize = (uint32_t)img[40] | (uint32_t)img[41] << 8;
    CHECK(psize == 4096);
    CHECK(n % psize == 0);

    struct {
        const char *what;
        size_t len;  /* bytes of img kept */
        int random;  /* random bytes instead */
        int want;
    } cases[] = {
        {"empty", 0, 0, LMK_ECORRUPT},
        {"100 bytes", 100, 0, LMK_ECORRUPT},
        {"one page", 4096, 0, LMK_ECORRUPT},
        {"two pages", 8192, 0, LMK_ECORRUPT},
        {"three pages", 12288, 0, LMK_ECORRUPT},
        {"half", (n / 2) & ~(size_t)4095, 0, LMK_ECORRUPT},
        {"all but one page", n - 4096, 0, LMK_ECORRUPT},
        {"all but one byte", n - 1, 0, LMK_ECORRUPT},
        {"random 8 KiB", 8192, 1, LMK_ECORRUPT},
        {"random 64 KiB", 65536, 1, LMK_ECORRUPT},
        {"intact", n, 0, LMK_OK},
    };
    uint64_t st = g_seed ^ 0xBAD;
    unsigned char *rnd = malloc(65536);
    REQUIRE(rnd);
    for (size_t i = 0; i < 65536; i++)
        rnd[i] = (unsigned char)lmk_test_rand(&st);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int ro = 0; ro < 2; ro++) {
            REQUIRE(write_file(path, cases[c].random ? rnd : img, cases[c].len) == 0);
            unlink(strcat(strcpy(msg, dir), "/lock.mdb"));
            msg[0] = '\0';
            int rc = open_rc(dir, ro, msg, sizeof msg);
            if (rc != cases[c].want)
                fprintf(stderr, "  case %s (%s): %s\n", cases[c].what, ro ? "ro" : "rw", msg);
            CHECK_RC(rc, cases[c].want);
            if (cases[c].want != LMK_OK)
                CHECK(msg[0] != '\0');
            /* Nothing was written into a damaged file. */
            struct stat sb;
            CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == cases[c].len);
        }
    }
    /* Garbage after the last used page (a partial page from a failed write) is harmless:
     * the store opens and reads, and a later commit overwrites it. */
    unsigned char *ext = malloc(n + 1000);
    REQUIRE(ext);
    memcpy(ext, img, n);
    memcpy(ext + n, rnd, 1000);
    REQUIRE(write_file(path, ext, n + 1000) == 0);
    free(ext);
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    CHECK(check_store(s, 0, 0, 300, 3000, 7) == 0);
    REQUIRE_OK(fill_store(s, 1, 0, 10, 3000, 7));
    lmk_store_close(s);
    REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
    CHECK(check_store(s, 1, 0, 10, 3000, 7) == 0);
    lmk_store_close(s);

    /* LMDB of another data version (both meta pages patched). */
    unsigned char *v2 = malloc(n);
    REQUIRE(v2);
    memcpy(v2, img, n);
    v2[20] = 2;
    v2[psize + 20] = 2;
    REQUIRE(write_file(path, v2, n) == 0);
    CHECK_RC(open_rc(dir, 0, msg, sizeof msg), LMK_EVERSION);
    CHECK(strstr(msg, "version") != NULL);
    /* Meta page magic broken. */
    memcpy(v2, img, n);
    v2[16] ^= 0xff;
    REQUIRE(write_file(path, v2, n) == 0);
    CHECK_RC(open_rc(dir, 1, msg, sizeof msg), LMK_ECORRUPT);
    /* A tree root pointing past the end. */
    memcpy(v2, img, n);
    for (int m = 0; m < 2; m++)
        for (int b = 0; b < 8; b++)
            v2[m * psize + 128 + b] = (unsigned char)(b == 3 ? 0x7f : 0);
    REQUIRE(write_file(path, v2, n) == 0);
    CHECK_RC(open_rc(dir, 1, msg, sizeof msg), LMK_ECORRUPT);
    /* The pure check itself on truncated inputs (what the fuzzer drives). */
    lmk_store_header_info info;
    CHECK_RC(lmk_store_check_header(img, LMK_STORE_HEADER_BYTES, n, &info, msg, sizeof msg),
             LMK_OK);
    CHECK(info.psize == 4096 && (info.last_pg + 1) * 4096 <= n);
    for (size_t cut = 0; cut < 8192 + 200; cut += 97)
        CHECK(lmk_store_check_header(img, cut, cut, NULL, NULL, 0) == LMK_ECORRUPT);
    free(v2);
    free(rnd);
    free(img);
    if (!lmk_test_failures) {
        lmk_test_rmdir(dir);
        lmk_test_rmdir(good);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */

typedef struct collect {
    uint64_t crc; /* order-sensitive digest of keys and values */
    size_t n;
} collect;

static int collect_cb(void *ud, const lmk_key *key, const void *val, size_t len)
{
    collect *c = ud;
    unsigned char kb[13] = {key->kind, (unsigned char)(key->layer >> 8),
                            (unsigned char)key->layer, (unsigned char)(key->head >> 8),
                            (unsigned char)key->head};
    for (int i = 0; i < 8; i++)
        kb[5 + i] = (unsigned char)(key->index >> (56 - 8 * i));
    c->crc = lmk_crc32c((uint32_t)c->crc, kb, 13);
    c->crc = lmk_crc32c((uint32_t)c->crc, &len, sizeof len);
    c->crc = lmk_crc32c((uint32_t)c->crc, val, len);
    c->n++;
    return 0;
}

static int digest(lmk_store *s, collect *c)
{
    memset(c, 0, sizeof *c);
    for (uint8_t kind = LMK_KEY_BLOCK; kind <= LMK_KEY_USER; kind++) {
        int rc = lmk_store_scan(s, kind, -1, 0, collect_cb, c);
        if (rc)
            return rc;
    }
    return 0;
}

static int test_copy(void)
{
    char dir[512], dst[600], dst2[600];
    lmk_test_dir(dir, sizeof dir, "store-copy");
    snprintf(dst, sizeof dst, "%s-dst", dir);
    snprintf(dst2, sizeof dst2, "%s-dst2", dir);
    lmk_test_rmdir(dst);
    lmk_test_rmdir(dst2);
    lmk_store *s, *c;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    REQUIRE_OK(fill_store(s, 0, 0, 200, 20000, 8)); /* overflow pages */
    REQUIRE_OK(fill_store(s, 1, 0, 500, 40, 8));    /* leaf values */
    /* Free pages to compact away, and a pending batch that must not be copied. */
    REQUIRE_OK(lmk_store_batch_begin(s));
    lmk_key f = K(LMK_KEY_BLOCK, 0, 0, 0), t = K(LMK_KEY_BLOCK, 0, 3, 99);
    REQUIRE_OK(lmk_store_del_range(s, &f, &t));
    REQUIRE_OK(lmk_store_put_meta(s, "shape", "abc", 3));
    REQUIRE_OK(lmk_store_batch_commit(s));
    REQUIRE_OK(lmk_store_batch_begin(s));
    lmk_key kp = K(LMK_KEY_USER, 0, 0, 0);
    REQUIRE_OK(lmk_store_put(s, &kp, "pending", 7));
    REQUIRE_OK(lmk_store_copy(s, dst));
    lmk_store_batch_abort(s);
    collect a, b;
    REQUIRE_OK(digest(s, &a));
    CHECK(a.n == 25 + 500); /* layer 0 keeps head 3 above #99 (i % 4 == 3, i >= 100) */

    REQUIRE_OK(open_store(dst, 0, 1, 0, &c));
    REQUIRE_OK(digest(c, &b));
    CHECK(a.n == b.n && a.crc == b.crc);
    char v[8];
    size_t len;
    CHECK_RC(lmk_store_get_meta(c, "shape", v, sizeof v, &len), LMK_OK);
    CHECK_RC(lmk_store_get(c, &kp, v, sizeof v, &len), LMK_ENOTFOUND);
    uint64_t ds = 0, dc = 0;
    REQUIRE_OK(lmk_store_disk_bytes(s, &ds));
    REQUIRE_OK(lmk_store_disk_bytes(c, &dc));
    printf("  copy: %llu bytes on disk -> %llu compacted\n", (unsigned long long)ds,
           (unsigned long long)dc);
    CHECK(dc < ds);
    lmk_store_close(c);
    /* Non-empty destination refused, nothing touched; an empty existing one is fine. */
    CHECK_RC(lmk_store_copy(s, dst), LMK_EINVAL);
    CHECK(strstr(lmk_store_errmsg(s), "not empty") != NULL);
    REQUIRE(mkdir(dst2, 0755) == 0);
    REQUIRE_OK(lmk_store_copy(s, dst2));
    /* The copy is a writable store of its own. */
    REQUIRE_OK(open_store(dst2, 0, 0, 0, &c));
    REQUIRE_OK(fill_store(c, 9, 0, 10, 100, 8));
    REQUIRE_OK(digest(c, &b));
    CHECK(b.n == a.n + 10);
    lmk_store_close(c);
    lmk_store_close(s);
    if (!lmk_test_failures) {
        lmk_test_rmdir(dir);
        lmk_test_rmdir(dst);
        lmk_test_rmdir(dst2);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */

static int test_sync_modes(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-sync");
    for (int mode = LMK_SYNC_FULL; mode <= LMK_SYNC_NONE; mode++) {
        lmk_store_opts o = lmk_store_opts_default();
        o.create = 1;
        o.sync = (lmk_sync_mode)mode;
        lmk_store *s;
        REQUIRE_OK(lmk_store_open(dir, &o, &s, NULL, 0));
        REQUIRE_OK(fill_store(s, (uint16_t)mode, 0, 20, 500, 10));
        REQUIRE_OK(lmk_store_sync(s));
        REQUIRE_OK(fill_store(s, (uint16_t)(mode + 10), 0, 20, 500, 10));
        lmk_store_close(s);
        REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
        CHECK(check_store(s, (uint16_t)mode, 0, 20, 500, 10) == 0);
        CHECK(check_store(s, (uint16_t)(mode + 10), 0, 20, 500, 10) == 0);
        lmk_store_close(s);
    }
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* ---------------------------------------------------------------------------------- */

/* A commit that cannot write its pages (file size limit: the kernel answers EFBIG, as it
 * would ENOSPC on a full disk) must fail cleanly: error code, batch pending, nothing
 * applied, the store usable, earlier data intact after reopening. */
static int test_write_failure(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-efbig");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    REQUIRE_OK(fill_store(s, 0, 0, 100, 2000, 11));
    lmk_store_close(s);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat sb;
    REQUIRE(stat(path, &sb) == 0);

    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        /* Not page-aligned: a partial write may leave a file whose size is not a multiple
         * of the page size; the store must still open afterwards. */
        rlim_t lim = (rlim_t)sb.st_size + (256u << 10) + 1000;
        struct rlimit rl = {lim, lim};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(10);
        lmk_store *c;
        if (open_store(dir, 0, 0, 0, &c))
            _exit(11);
        /* 8 MiB batch: cannot be written under the limit. */
        int rc = fill_store(c, 1, 0, 512, 16384, 11);
        printf("  write failure: commit returned %d (%s): %s\n", rc, lmk_strerror(rc),
               lmk_store_errmsg(c));
        fflush(stdout);
        if (rc != EFBIG && rc != EIO && rc != ENOSPC)
            _exit(12);
        /* Still pending: a retry fails the same way; then abort. */
        int rc2 = lmk_store_batch_commit(c);
        if (rc2 != EFBIG && rc2 != EIO && rc2 != ENOSPC)
            _exit(13);
        lmk_store_batch_abort(c);
        /* Nothing of it is visible, earlier data is. */
        lmk_key k = K(LMK_KEY_BLOCK, 1, 0, 0);
        unsigned char v[16];
        size_t len;
        if (lmk_store_get(c, &k, v, sizeof v, &len) != LMK_ENOTFOUND)
            _exit(14);
        if (check_store(c, 0, 0, 100, 2000, 11))
            _exit(15);
        /* The store is usable: a small batch fits under the limit. */
        rc = fill_store(c, 2, 0, 4, 1000, 11);
        if (rc) {
            fprintf(stderr, "  small commit after failure: %s\n", lmk_store_errmsg(c));
            _exit(16);
        }
        if (check_store(c, 2, 0, 4, 1000, 11))
            _exit(17);
        lmk_store_close(c);
        _exit(0);
    }
    CHECK_RC(wait_child(pid), 0);
    REQUIRE_OK(open_store(dir, 0, 0, 0, &s));
    CHECK(check_store(s, 0, 0, 100, 2000, 11) == 0);
    CHECK(check_store(s, 2, 0, 4, 1000, 11) == 0);
    lmk_key k = K(LMK_KEY_BLOCK, 1, 0, 0);
    unsigned char v[16];
    size_t len;
    CHECK_RC(lmk_store_get(s, &k, v, sizeof v, &len), LMK_ENOTFOUND);
    /* Without the limit the same batch commits. */
    REQUIRE_OK(fill_store(s, 1, 0, 512, 16384, 11));
    CHECK(check_store(s, 1, 0, 512, 16384, 11) == 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* Write-error injection: this program's own pwrite()/writev() take the place of libc's for
 * the (dynamically linked) LMDB library, so a commit can meet ENOSPC on its data pages or
 * EIO on its meta page, as on a full or failing disk. */
enum { INJECT_NONE, INJECT_DATA_ENOSPC, INJECT_META_EIO };
static _Atomic int inject_mode;
static _Atomic long pwrite_calls;
#define META_END 8192 /* two 4 KiB meta pages (checked in test_bad_files) */

/* Named through an asm label: with _FILE_OFFSET_BITS=64 the header maps pwrite to
 * pwrite64, but LMDB (built without it on 64-bit) calls plain pwrite. */
__attribute__((visibility("default"))) ssize_t inject_pwrite(int fd, const void *buf, size_t n,
                                                             off_t off) __asm__("pwrite");
__attribute__((visibility("default"))) ssize_t inject_pwrite(int fd, const void *buf, size_t n,
                                                             off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    pwrite_calls++;
    int mode = inject_mode;
    if ((mode == INJECT_DATA_ENOSPC && off >= META_END) ||
        (mode == INJECT_META_EIO && off < META_END)) {
        errno = mode == INJECT_DATA_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return real(fd, buf, n, off);
}

__attribute__((visibility("default"))) ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real)
        real = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    if (inject_mode == INJECT_DATA_ENOSPC && lseek(fd, 0, SEEK_CUR) >= META_END) {
        errno = ENOSPC;
        return -1;
    }
    return real(fd, iov, cnt);
}

static int test_injected_write_errors(void)
{
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-inject");
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 1, 0, 0, &s));
    long before = pwrite_calls;
    REQUIRE_OK(fill_store(s, 0, 0, 50, 3000, 13));
    if (pwrite_calls == before) {
        printf("  injected write errors: skipped (LMDB does not call this pwrite)\n");
        lmk_store_close(s);
        lmk_test_rmdir(dir);
        return 0;
    }
    /* ENOSPC on data pages: the error comes back as ENOSPC, nothing is applied, the
     * batch stays pending and commits once space is back. */
    inject_mode = INJECT_DATA_ENOSPC;
    unsigned char v[20000];
    REQUIRE_OK(lmk_store_batch_begin(s));
    for (uint64_t i = 0; i < 20; i++) {
        lmk_key k = K(LMK_KEY_BLOCK, 1, (uint16_t)(i % 4), i); /* as check_store() */
        fill_value(v, sizeof v, &k, 13);
        REQUIRE_OK(lmk_store_put(s, &k, v, sizeof v));
    }
    lmk_key k1 = K(LMK_KEY_BLOCK, 1, 0, 0);
    REQUIRE_OK(lmk_store_put(s, &k1, "x", 1)); /* then replaced by the full value again */
    fill_value(v, sizeof v, &k1, 13);
    REQUIRE_OK(lmk_store_put(s, &k1, v, sizeof v));
    CHECK_RC(lmk_store_batch_commit(s), ENOSPC);
    printf("  injected ENOSPC: %s\n", lmk_store_errmsg(s));
    CHECK_RC(lmk_store_batch_commit(s), ENOSPC);
    size_t len;
    CHECK_RC(lmk_store_get(s, &k1, v, sizeof v, &len), LMK_ENOTFOUND);
    CHECK(check_store(s, 0, 0, 50, 3000, 13) == 0);
    inject_mode = INJECT_NONE;
    REQUIRE_OK(lmk_store_batch_commit(s));
    CHECK(check_store(s, 1, 0, 20, 20000, 13) == 0);

    /* EIO on the meta page write: LMDB marks its environment failed (every later
     * transaction would get MDB_PANIC); the store re-opens it and goes on. */
    inject_mode = INJECT_META_EIO;
    int rc = fill_store(s, 2, 0, 10, 500, 13);
    inject_mode = INJECT_NONE;
    CHECK_RC(rc, EIO);
    printf("  injected EIO on the meta page: %s\n", lmk_store_errmsg(s));
    lmk_key k2 = K(LMK_KEY_BLOCK, 2, 0, 0);
    CHECK_RC(lmk_store_get(s, &k2, v, sizeof v, &len), LMK_ENOTFOUND);
    CHECK(check_store(s, 1, 0, 20, 20000, 13) == 0);
    REQUIRE_OK(lmk_store_batch_commit(s)); /* the pending batch, on the new environment */
    CHECK(check_store(s, 2, 0, 10, 500, 13) == 0);
    lmk_store_close(s);
    REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
    CHECK(check_store(s, 0, 0, 50, 3000, 13) == 0);
    CHECK(check_store(s, 1, 0, 20, 20000, 13) == 0);
    CHECK(check_store(s, 2, 0, 10, 500, 13) == 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

/* The map cannot grow (address-space limit): LMK_EMAPFULL, batch pending, store usable. */
static int test_map_growth_failure(void)
{
    if (UNDER_ASAN) {
        printf("  map growth failure: skipped under AddressSanitizer (RLIMIT_AS)\n");
        return 0;
    }
    char dir[512];
    lmk_test_dir(dir, sizeof dir, "store-mapfail");
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        lmk_store *c;
        if (open_store(dir, 1, 0, 1u << 20, &c))
            _exit(10);
        if (fill_store(c, 0, 0, 10, 1000, 12))
            _exit(11);
        /* A 40 MiB batch, buffered first; then leave ~64 MiB of address space beyond
         * what is mapped now, less than the ~80 MiB map the commit asks for. */
        unsigned char *v = malloc(1 << 20);
        if (!v)
            _exit(14);
        int rc = lmk_store_batch_begin(c);
        for (uint64_t i = 0; !rc && i < 40; i++) {
            lmk_key k = K(LMK_KEY_BLOCK, 1, 0, i);
            fill_value(v, 1 << 20, &k, 12);
            rc = lmk_store_put(c, &k, v, 1 << 20);
        }
        free(v);
        if (rc)
            _exit(15);
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(12);
        fclose(f);
        rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 20);
        struct rlimit rl = {lim, lim};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(13);
        rc = lmk_store_batch_commit(c);
        printf("  map growth failure: commit returned %d (%s): %s\n", rc, lmk_strerror(rc),
               lmk_store_errmsg(c));
        fflush(stdout);
        if (rc != LMK_EMAPFULL)
            _exit(16);
        lmk_store_batch_abort(c);
        if (check_store(c, 0, 0, 10, 1000, 12))
            _exit(17);
        if (fill_store(c, 2, 0, 4, 1000, 12))
            _exit(18);
        lmk_store_close(c);
        _exit(0);
    }
    CHECK_RC(wait_child(pid), 0);
    lmk_store *s;
    REQUIRE_OK(open_store(dir, 0, 1, 0, &s));
    CHECK(check_store(s, 0, 0, 10, 1000, 12) == 0);
    CHECK(check_store(s, 2, 0, 4, 1000, 12) == 0);
    lmk_store_close(s);
    if (!lmk_test_failures)
        lmk_test_rmdir(dir);
    return 0;
}

int main(void)
{
    g_seed = lmk_test_seed("test_store", 20240611);
    struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {
        {"crc", test_crc},
        {"roundtrip", test_roundtrip},
        {"batch_atomicity", test_batch_atomicity},
        {"scan_and_del_range", test_scan_and_del_range},
        {"snapshot", test_snapshot},
        {"corruption", test_corruption},
        {"map_growth", test_map_growth},
        {"locking", test_locking},
        {"bad_files", test_bad_files},
        {"copy", test_copy},
        {"sync_modes", test_sync_modes},
        {"write_failure", test_write_failure},
        {"injected_write_errors", test_injected_write_errors},
        {"map_growth_failure", test_map_growth_failure},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = lmk_test_failures;
        double t0 = now_s();
        tests[i].fn();
        printf("%s: %s (%.2f s)\n", tests[i].name,
               lmk_test_failures == before ? "ok" : "FAILED", now_s() - t0);
        fflush(stdout);
    }
    return lmk_test_finish("test_store", 0);
}
