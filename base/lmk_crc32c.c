/* landmark base — CRC-32C (Castagnoli): the checksum of every stored value and of the
 * project's own file headers. Hardware (SSE4.2, three interleaved lanes) when the CPU has
 * it, slicing-by-8 in software otherwise; both give identical results. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "lmk_crc32c.h"
#include "lmk_export.h"

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#include <x86intrin.h>
#define LMK_HAVE_SSE42_PATH 1
#endif

/* ------------------------------------------------------------------------------------ */
/* CRC-32C                                                                               */

static uint32_t crc_table[8][256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Slicing-by-8 over little-endian 64-bit loads (memcpy: the input may be unaligned). */
LMK_API uint32_t lmk_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_table_once, crc_table_init);
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        lo ^= c;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
            crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#ifdef LMK_HAVE_SSE42_PATH
/* The crc32 instruction has a latency of 3 cycles and a throughput of 1, so one chain
 * runs at a third of the possible speed. Long inputs are cut into strips of three lanes
 * of LANE bytes, computed as three independent chains and joined with
 *   reg(A || B) = shift_|B|(reg(A)) ^ reg_from_0(B),
 * where shift_n (appending n zero bytes to the raw register) is linear in the register
 * and so a 4 x 256 table lookup. */
enum { LANE = 512 };
static uint32_t crc_shift1[4][256]; /* shift by LANE bytes */
static uint32_t crc_shift2[4][256]; /* shift by 2 * LANE bytes */
static pthread_once_t crc_shift_once = PTHREAD_ONCE_INIT;

/* Raw register after `n` zero bytes, starting from register x (no pre/post inversion). */
static uint32_t raw_zeros(uint32_t x, size_t n)
{
    static const unsigned char zeros[2 * LANE];
    return ~lmk_crc32c_sw(~x, zeros, n);
}

static void crc_shift_init(void)
{
    for (int k = 0; k < 4; k++) {
        uint32_t b1[8], b2[8];
        for (int bit = 0; bit < 8; bit++) {
            b1[bit] = raw_zeros(1u << (8 * k + bit), LANE);
            b2[bit] = raw_zeros(1u << (8 * k + bit), 2 * LANE);
        }
        for (int v = 0; v < 256; v++) {
            uint32_t s1 = 0, s2 = 0;
            for (int bit = 0; bit < 8; bit++)
                if (v >> bit & 1) {
                    s1 ^= b1[bit];
                    s2 ^= b2[bit];
                }
            crc_shift1[k][v] = s1;
            crc_shift2[k][v] = s2;
        }
    }
}

static inline uint32_t crc_shift(const uint32_t t[4][256], uint32_t x)
{
    return t[0][x & 0xff] ^ t[1][(x >> 8) & 0xff] ^ t[2][(x >> 16) & 0xff] ^ t[3][x >> 24];
}

__attribute__((target("sse4.2"))) LMK_API uint32_t
lmk_crc32c_hw(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        len--;
    }
#if defined(__x86_64__)
    if (len >= 3 * LANE) {
        pthread_once(&crc_shift_once, crc_shift_init);
        do {
            uint64_t c0 = c, c1 = 0, c2 = 0;
            for (size_t i = 0; i < LANE; i += 8) {
                uint64_t v0, v1, v2;
                memcpy(&v0, p + i, 8);
                memcpy(&v1, p + LANE + i, 8);
                memcpy(&v2, p + 2 * LANE + i, 8);
                c0 = _mm_crc32_u64(c0, v0);
                c1 = _mm_crc32_u64(c1, v1);
                c2 = _mm_crc32_u64(c2, v2);
            }
            c = crc_shift(crc_shift2, (uint32_t)c0) ^ crc_shift(crc_shift1, (uint32_t)c1) ^
                (uint32_t)c2;
            p += 3 * LANE;
            len -= 3 * LANE;
        } while (len >= 3 * LANE);
    }
    uint64_t c64 = c;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
#endif
    while (len >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        c = _mm_crc32_u32(c, v);
        p += 4;
        len -= 4;
    }
    while (len--)
        c = _mm_crc32_u8(c, *p++);
    return ~c;
}

LMK_API int lmk_crc32c_hw_ok(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}
#else
LMK_API uint32_t lmk_crc32c_hw(uint32_t crc, const void *data, size_t len)
{
    return lmk_crc32c_sw(crc, data, len);
}
LMK_API int lmk_crc32c_hw_ok(void) { return 0; }
#endif

LMK_API uint32_t lmk_crc32c(uint32_t crc, const void *data, size_t len)
{
    if (lmk_crc32c_hw_ok())
        return lmk_crc32c_hw(crc, data, len);
    return lmk_crc32c_sw(crc, data, len);
}

