/* landmark base — CRC-32C (Castagnoli), the checksum of every stored value and of the
 * project's own file headers. */
#ifndef LMK_CRC32C_H
#define LMK_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-32C of len bytes of data, continuing from `crc` (start with 0):
 * lmk_crc32c(lmk_crc32c(0, a, n), b, m) == CRC of a || b. data may be unaligned; len 0
 * returns crc. Uses the SSE4.2 instruction when the CPU has it. Thread-safe. */
uint32_t lmk_crc32c(uint32_t crc, const void *data, size_t len);

/* The two implementations behind lmk_crc32c(), exposed so tests can compare them:
 * the table-driven software version, and the SSE4.2 one (call only when
 * lmk_crc32c_hw_ok() returns 1; elsewhere it falls back to software). */
uint32_t lmk_crc32c_sw(uint32_t crc, const void *data, size_t len);
uint32_t lmk_crc32c_hw(uint32_t crc, const void *data, size_t len);
/* 1 when this CPU and build have the crc32 instruction, else 0. */
int lmk_crc32c_hw_ok(void);

#ifdef __cplusplus
}
#endif
#endif
