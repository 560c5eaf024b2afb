/* libFuzzer target: the pre-open checks of an LMDB data file (lmk_store_check_header and
 * the free-page tree walk, lmk_store_check_free_tree), the only parsers of untrusted bytes
 * in storage/. The input is the file's start; the declared file size is taken from the first 8 bytes so the fuzzer can also claim sizes larger than
 * what it supplies (a file longer than the head we read). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "lmk_error.h"
#include "lmk_store_internal.h"

/* Reads of the free-page tree walk: from the supplied bytes, zeros past them up to the
 * claimed file size (the walk may only ask for pages inside the file). */
typedef struct img {
    const uint8_t *data;
    size_t size;
    uint64_t file_size;
} img;

static int img_read(void *ud, void *buf, size_t len, uint64_t off)
{
    const img *m = ud;
    if (off > m->file_size || len > m->file_size - off)
        __builtin_trap();
    for (size_t i = 0; i < len; i++)
        ((uint8_t *)buf)[i] = off + i < m->size ? m->data[off + i] : 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t file_size = size;
    if (size >= 8) {
        uint64_t claim;
        memcpy(&claim, data, 8);
        data += 8;
        size -= 8;
        /* top bit set: the input is the whole file; else the file is longer by up to
         * 1 TiB than the part supplied */
        file_size = (claim >> 63) ? size : size + (claim & ((1ull << 40) - 1));
    }
    size_t n = size < LMK_STORE_HEADER_BYTES ? size : LMK_STORE_HEADER_BYTES;
    char msg[256];
    lmk_store_header_info info;
    int rc = lmk_store_check_header(data, n, file_size, &info, msg, sizeof msg);
    if (rc == LMK_OK) {
        /* What the check promises: LMDB's used pages are inside the file. */
        if (info.psize < 512 || (info.last_pg + 1) * (uint64_t)info.psize > file_size)
            __builtin_trap();
        /* then the free-page tree, as a writer's open walks it */
        img m = {data, size, file_size};
        int frc = lmk_store_check_free_tree(&info, img_read, &m, msg, sizeof msg);
        if (frc != LMK_OK && frc != LMK_ECORRUPT && frc != ENOMEM)
            __builtin_trap();
    } else if (rc != LMK_ECORRUPT && rc != LMK_EVERSION) {
        __builtin_trap();
    }
    return 0;
}
