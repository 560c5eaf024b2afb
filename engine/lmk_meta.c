/* Byte formats of the session's metadata records. These bytes come from disk, so the
 * decoders trust nothing: every length is checked against the record size, and the record
 * carries its own CRC-32C on top of the store's. Fuzzed by tests/fuzz/fuzz_meta.c. */
#include <stdio.h>
#include <string.h>

#include "lmk_internal.h"
#include "lmk_le.h"

static const uint8_t config_magic[4] = {'L', 'M', 'K', 'C'};

/* Layout: magic[4] version u32 | 8 x i32 shape | u16 spec_len spec | u16 fp_len fp | crc u32 */
size_t lmk_config_encode(const lmk_config_rec *c, uint8_t *buf, size_t cap)
{
    size_t sl = strlen(c->spec), fl = strlen(c->fingerprint);
    size_t need = 4 + 4 + 8 * 4 + 2 + sl + 2 + fl + 4;
    if (need > cap)
        return 0;
    uint8_t *p = buf;
    memcpy(p, config_magic, 4);
    p += 4;
    lmk_put_u32le(p, c->format_version);
    p += 4;
    const int32_t f[8] = {c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                          c->block_len, c->dtype, c->landmark,
                          c->format_version >= LMK_FORMAT_VERSION_REPR ? c->n_repr : 0};
    for (int i = 0; i < 8; i++, p += 4)
        lmk_put_u32le(p, (uint32_t)f[i]);
    lmk_put_u16le(p, (uint16_t)sl);
    memcpy(p + 2, c->spec, sl);
    p += 2 + sl;
    lmk_put_u16le(p, (uint16_t)fl);
    memcpy(p + 2, c->fingerprint, fl);
    p += 2 + fl;
    lmk_put_u32le(p, lmk_crc32c(0, buf, (size_t)(p - buf)));
    return need;
}

int lmk_config_decode(const void *data, size_t len, lmk_config_rec *c, char *msg,
                      size_t msg_cap)
{
    const uint8_t *b = data;
    memset(c, 0, sizeof *c);
    if (len < 4 + 4 + 32 + 2 + 2 + 4 || memcmp(b, config_magic, 4) != 0) {
        snprintf(msg, msg_cap, "session configuration record is not ours (%zu bytes)", len);
        return LMK_ECORRUPT;
    }
    if (lmk_get_u32le(b + len - 4) != lmk_crc32c(0, b, len - 4)) {
        snprintf(msg, msg_cap, "session configuration record fails its checksum");
        return LMK_ECORRUPT;
    }
    c->format_version = lmk_get_u32le(b + 4);
    if (c->format_version != LMK_FORMAT_VERSION && c->format_version != LMK_FORMAT_VERSION_REPR) {
        snprintf(msg, msg_cap, "session format version %u, this build reads versions %d and %d",
                 c->format_version, LMK_FORMAT_VERSION, LMK_FORMAT_VERSION_REPR);
        return LMK_EVERSION;
    }
    int32_t f[8];
    for (int i = 0; i < 8; i++)
        f[i] = (int32_t)lmk_get_u32le(b + 8 + 4 * i);
    c->n_layers = f[0];
    c->n_heads = f[1];
    c->n_kv_heads = f[2];
    c->head_dim = f[3];
    c->block_len = f[4];
    c->dtype = f[5];
    c->landmark = f[6];
    c->n_repr = c->format_version >= LMK_FORMAT_VERSION_REPR ? f[7] : 1;
    size_t off = 40;
    size_t sl = lmk_get_u16le(b + off);
    if (sl > LMK_MAX_SPEC || off + 2 + sl + 2 + 4 > len)
        goto bad;
    memcpy(c->spec, b + off + 2, sl);
    c->spec[sl] = 0;
    off += 2 + sl;
    size_t fl = lmk_get_u16le(b + off);
    if (fl > LMK_MAX_FINGERPRINT || off + 2 + fl + 4 != len)
        goto bad;
    memcpy(c->fingerprint, b + off + 2, fl);
    c->fingerprint[fl] = 0;
    if (c->n_layers < 1 || c->n_layers > 65535 || c->n_kv_heads < 1 ||
        c->n_kv_heads > 65535 || c->n_heads < c->n_kv_heads || c->n_heads % c->n_kv_heads ||
        c->head_dim < 1 || c->head_dim > 65536 || c->block_len < 1 ||
        c->block_len > (1 << 20) || (c->dtype != LMK_DTYPE_F32 && c->dtype != LMK_DTYPE_F16) ||
        (c->format_version == LMK_FORMAT_VERSION
             ? (c->landmark != LMK_LANDMARK_MEAN && c->landmark != LMK_LANDMARK_TOKEN) || f[7] != 0
             : c->landmark < LMK_LANDMARK_MEAN || c->landmark > LMK_LANDMARK_OUTLIER ||
                   c->block_len < (c->landmark == LMK_LANDMARK_TOKEN ? 2 : 1) ||
                   c->n_repr != lmk_repr_count(c->landmark, c->block_len, c->n_repr) ||
                   c->n_repr < 1 || c->n_repr > c->block_len) ||
        strlen(c->spec) != sl || strlen(c->fingerprint) != fl)
        goto bad;
    return LMK_OK;
bad:
    snprintf(msg, msg_cap, "session configuration record is malformed");
    return LMK_ECORRUPT;
}

size_t lmk_layer_rec_encode(int64_t ntok, uint8_t *buf, size_t cap)
{
    if (cap < 12)
        return 0;
    lmk_put_u64le(buf, (uint64_t)ntok);
    lmk_put_u32le(buf + 8, lmk_crc32c(0, buf, 8));
    return 12;
}

int lmk_layer_rec_decode(const void *data, size_t len, int64_t *ntok)
{
    const uint8_t *b = data;
    if (len != 12 || lmk_get_u32le(b + 8) != lmk_crc32c(0, b, 8))
        return LMK_ECORRUPT;
    uint64_t x = lmk_get_u64le(b);
    if (x > (uint64_t)1 << 48)
        return LMK_ECORRUPT;
    *ntok = (int64_t)x;
    return LMK_OK;
}
