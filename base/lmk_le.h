/* landmark base — little-endian encoding of fixed-width integers and floats, for the
 * project's own file and record formats (GGUF, index headers, session metadata). Byte by
 * byte, so the buffers may be unaligned and the result does not depend on the host. */
#ifndef LMK_LE_H
#define LMK_LE_H

#include <stdint.h>
#include <string.h>

static inline void lmk_put_u16le(uint8_t *p, uint16_t x)
{
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)(x >> 8);
}

static inline void lmk_put_u32le(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

static inline void lmk_put_u64le(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

static inline uint16_t lmk_get_u16le(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t lmk_get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t lmk_get_u64le(const uint8_t *p)
{
    return (uint64_t)lmk_get_u32le(p) | (uint64_t)lmk_get_u32le(p + 4) << 32;
}

static inline void lmk_put_f32le(uint8_t *p, float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    lmk_put_u32le(p, x);
}

static inline float lmk_get_f32le(const uint8_t *p)
{
    uint32_t x = lmk_get_u32le(p);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#endif
