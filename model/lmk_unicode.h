/* Private to model/: Unicode code points as llama.cpp's tokenizers see them — UTF-8
 * decoding with its recovery rule and the general-category classes its pre-tokenizer
 * regexes use (\p{L}, \p{N}, \s, ...). The table is generated (model/gen_unicode.py). */
#ifndef LMK_UNICODE_H
#define LMK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    LMK_UCAT_UNDEFINED = 0x01, /* Cn, or not a code point */
    LMK_UCAT_NUMBER = 0x02,    /* \p{N} */
    LMK_UCAT_LETTER = 0x04,    /* \p{L} */
    LMK_UCAT_SEPARATOR = 0x08, /* \p{Z} */
    LMK_UCAT_MARK = 0x10,      /* \p{M} */
    LMK_UCAT_PUNCT = 0x20,     /* \p{P} */
    LMK_UCAT_SYMBOL = 0x40,    /* \p{S} */
    LMK_UCAT_CONTROL = 0x80,   /* \p{C} */
    LMK_UCAT_SPACE = 0x100,    /* \s as llama.cpp defines it (not a category) */
};

extern const uint32_t lmk_unicode__n_ranges;
extern const uint32_t lmk_unicode__range_start[];
extern const uint8_t lmk_unicode__range_flags[];

/* LMK_UCAT_* flags of code point cp (UNDEFINED above U+10FFFF). */
unsigned lmk_unicode_flags(uint32_t cp);

/* Decode the code point at s[*off] (n bytes in all), advancing *off, as llama.cpp's
 * unicode_cpts_from_utf8 does: a lead byte with its continuation bytes (not checked for
 * overlong forms or surrogates), and anything else one byte as U+FFFD. */
uint32_t lmk_utf8_decode(const char *s, size_t n, size_t *off);

/* UTF-8 of cp (any value below 2^21) into out[4]; returns its length. */
size_t lmk_utf8_encode(uint32_t cp, char *out);

#endif
