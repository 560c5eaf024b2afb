/* f16 conversion: every half value converts to the float the compiler's _Float16 gives, and
 * float-to-half rounds to nearest even exactly like it, on a dense sample of all floats. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lmk_f16.h"
#include "lmk_test.h"

int main(void)
{
#ifndef __FLT16_MAX__
    /* this compiler has no _Float16 to compare with: known values and the round trip only */
    CHECK(lmk_f16_to_f32(0x3c00) == 1.0f && lmk_f16_to_f32(0xc000) == -2.0f);
    CHECK(lmk_f32_to_f16(65504.0f) == 0x7bff && lmk_f32_to_f16(1e-8f) == 0);
    for (uint32_t i = 0; i < 65536; i++) {
        float f = lmk_f16_to_f32((uint16_t)i);
        if (!isnan(f))
            CHECK(lmk_f32_to_f16(f) == (uint16_t)i);
    }
    return lmk_test_finish("test_f16", 0);
#else
    long bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t hb = (uint16_t)i;
        _Float16 h;
        memcpy(&h, &hb, 2);
        float want = (float)h, got = lmk_f16_to_f32(hb);
        if (isnan(want) ? !isnan(got) : memcmp(&want, &got, 4) != 0)
            bad++;
    }
    CHECK(bad == 0);
    long bad2 = 0, n = 0;
    for (uint64_t i = 0; i <= 0xffffffffull; i += 9973) {
        uint32_t bits = (uint32_t)i;
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f))
            continue;
        _Float16 h = (_Float16)f;
        uint16_t want;
        memcpy(&want, &h, 2);
        n++;
        if (want != lmk_f32_to_f16(f))
            bad2++;
    }
    CHECK(bad2 == 0);
    /* round trip of every finite half */
    long bad3 = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float f = lmk_f16_to_f32((uint16_t)i);
        if (!isnan(f) && lmk_f32_to_f16(f) != (uint16_t)i)
            bad3++;
    }
    CHECK(bad3 == 0);
    printf("half->float mismatches %ld/65536, float->half mismatches %ld/%ld, round trip %ld\n",
           bad, bad2, n, bad3);
    return lmk_test_finish("test_f16", 0);
#endif
}
