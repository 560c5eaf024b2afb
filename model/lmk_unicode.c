/* Code point classes and UTF-8 as llama.cpp's tokenizers use them (src/unicode.cpp there). */
#include "lmk_unicode.h"

unsigned lmk_unicode_flags(uint32_t cp)
{
    if (cp >= 0x110000)
        return LMK_UCAT_UNDEFINED;
    /* the last range starting at or before cp */
    uint32_t lo = 0, hi = lmk_unicode__n_ranges;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (lmk_unicode__range_start[mid] <= cp)
            lo = mid;
        else
            hi = mid;
    }
    unsigned f = lmk_unicode__range_flags[lo];
    /* llama.cpp's whitespace set (gen-unicode-data.py there) */
    if ((cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 ||
        cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202f || cp == 0x205f || cp == 0x3000)
        f |= LMK_UCAT_SPACE;
    return f;
}

uint32_t lmk_utf8_decode(const char *s, size_t n, size_t *off)
{
    const uint8_t *p = (const uint8_t *)s + *off;
    size_t left = n - *off;
    uint8_t c = p[0];
    if (c < 0x80) {
        *off += 1;
        return c;
    }
    size_t need = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
        need = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        need = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        need = 4;
        cp = c & 0x07;
    }
    if (need == 0 || need > left)
        goto bad;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            goto bad;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    *off += need;
    return cp;
bad:
    *off += 1;
    return 0xfffd;
}

size_t lmk_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | ((cp >> 18) & 0x07));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}
