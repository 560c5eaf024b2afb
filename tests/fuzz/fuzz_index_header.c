/* libFuzzer target for index files: lmk_index_parse_header() on the raw bytes, and
 * lmk_index_load() on the same bytes written to a file.
 *
 * Invariants checked (a violation traps):
 *   - neither call crashes, leaks, reads out of bounds or allocates more than the input
 *     size (ASan reports those);
 *   - a failing parse gives LMK_ECORRUPT or LMK_EVERSION, and load of the same bytes fails
 *     with the same code and leaves *out NULL, i.e. load rejects the image before FAISS
 *     sees a byte.
 * An image whose checksum verifies is trusted by design (the CRC guards against damage,
 * not against forgery), so when the fuzzer manages to forge one the bytes go to neither
 * index_factory nor FAISS's reader: the target stops there.
 * To reach the header checks that follow the checksum, every input is also parsed once
 * more with its CRC field recomputed (parse only; it never calls FAISS).
 *
 * Build and run (from the repository root; FAISS is linked because lmk_index.c calls it,
 * but only the rejection path runs):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize=vptr -D_GNU_SOURCE \
 *     -Iindex -Iengine tests/fuzz/fuzz_index_header.c index/lmk_index.c \
 *     index/faiss_bridge.cpp engine/lmk_error.c -lfaiss -lopenblas -llapack -lgomp \
 *     -lstdc++ -lm -o fuzz_index_header
 *   mkdir -p fuzz-corpus && ./fuzz_index_header -max_total_time=30 fuzz-corpus
 * A seed corpus of real files can be made with any program that calls lmk_index_save().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmk_index.h"

static char tmp_path[64];

/* bitwise CRC-32C, as the file format defines it */
static uint32_t crc32c(uint32_t c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c;
}

static void check_outputs(int dim, int64_t ntotal, const char *spec, size_t spec_cap,
                          size_t size)
{
    if (dim < 1 || ntotal < 0 || (uint64_t)ntotal * (uint64_t)dim * 4 > size ||
        strlen(spec) >= spec_cap)
        __builtin_trap();
}

static void cleanup(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int dim = -1;
    int64_t ntotal = -1;
    char spec[32];
    int prc;

    /* the same bytes with the checksum made valid: header checks past the CRC */
    if (size >= 80) {
        uint8_t *fixed = malloc(size);
        if (!fixed)
            return 0;
        memcpy(fixed, data, size);
        uint32_t c = crc32c(0xFFFFFFFFu, fixed, 72);
        c = crc32c(c, fixed + 76, size - 76) ^ 0xFFFFFFFFu;
        for (int i = 0; i < 4; i++)
            fixed[72 + i] = (uint8_t)(c >> (8 * i));
        prc = lmk_index_parse_header(fixed, size, &dim, &ntotal, spec, sizeof spec);
        if (prc == LMK_OK)
            check_outputs(dim, ntotal, spec, sizeof spec, size);
        else if (prc != LMK_ECORRUPT && prc != LMK_EVERSION)
            __builtin_trap();
        free(fixed);
    }

    prc = lmk_index_parse_header(data, size, &dim, &ntotal, spec, sizeof spec);
    if (prc == LMK_OK) {
        /* a forged checksum: the outputs must be sane, then stop (see above) */
        check_outputs(dim, ntotal, spec, sizeof spec, size);
        return 0;
    }
    if (prc != LMK_ECORRUPT && prc != LMK_EVERSION)
        __builtin_trap();

    if (!tmp_path[0]) {
        snprintf(tmp_path, sizeof tmp_path, "/tmp/fuzz_index_header-%d.idx", (int)getpid());
        atexit(cleanup);
    }
    FILE *f = fopen(tmp_path, "wb");
    if (!f)
        return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size)
        return 0;
    lmk_index *idx = (lmk_index *)tmp_path;
    char msg[256];
    int lrc = lmk_index_load(tmp_path, NULL, 0, &idx, msg, sizeof msg);
    if (lrc != prc || idx != NULL || msg[0] == 0)
        __builtin_trap();
    return 0;
}
