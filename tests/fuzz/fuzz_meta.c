/* libFuzzer target: the session metadata decoders (configuration and layer records), which
 * read bytes from disk. Build: meson setup build-fuzz -Dfuzzers=true with CC=clang.
 *
 * Each record ends with its own CRC-32C, so random bytes almost never get past the checksum.
 * Every input is therefore decoded twice: as it is, and with its checksum recomputed, so the
 * fuzzer reaches the field parsing behind the check. The copies are heap blocks of the exact
 * size, so AddressSanitizer sees any read past the record. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/lmk_internal.h"

static void put_u32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)(x >> 8);
    p[2] = (uint8_t)(x >> 16);
    p[3] = (uint8_t)(x >> 24);
}

static void decode_all(const uint8_t *data, size_t size)
{
    lmk_config_rec c;
    char msg[256];
    if (lmk_config_decode(data, size, &c, msg, sizeof msg) == LMK_OK) {
        /* a record that decodes must re-encode to the same bytes */
        uint8_t buf[1024];
        size_t n = lmk_config_encode(&c, buf, sizeof buf);
        if (n != size || memcmp(buf, data, size) != 0)
            __builtin_trap();
        if (c.n_heads % c.n_kv_heads != 0 || strlen(c.spec) > LMK_MAX_SPEC)
            __builtin_trap();
    }
    int64_t ntok;
    if (lmk_layer_rec_decode(data, size, &ntok) == LMK_OK && ntok < 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    decode_all(copy, size);
    if (size >= 4) {
        /* configuration record: CRC-32C of everything before the last 4 bytes */
        put_u32(copy + size - 4, lmk_crc32c(0, copy, size - 4));
        decode_all(copy, size);
    }
    free(copy);
    if (size >= 12) {
        /* layer record: 8 bytes of count, CRC-32C of them */
        uint8_t *rec = malloc(12);
        if (!rec)
            return 0;
        memcpy(rec, data, 12);
        put_u32(rec + 8, lmk_crc32c(0, rec, 8));
        decode_all(rec, 12);
        free(rec);
    }
    return 0;
}
