/* libFuzzer target: the session metadata decoders (configuration and layer records), which
 * read bytes from disk. Build: meson setup build-fuzz -Dfuzzers=true with CC=clang. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../engine/lmk_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmk_config_rec c;
    char msg[256];
    if (lmk_config_decode(data, size, &c, msg, sizeof msg) == LMK_OK) {
        /* a record that decodes must re-encode to the same bytes */
        uint8_t buf[1024];
        size_t n = lmk_config_encode(&c, buf, sizeof buf);
        if (n != size || memcmp(buf, data, size) != 0)
            __builtin_trap();
    }
    int64_t ntok;
    if (lmk_layer_rec_decode(data, size, &ntok) == LMK_OK && ntok < 0)
        __builtin_trap();
    return 0;
}
