/* Decoded-block cache of a writable session: blocks that one decoding step fetches are
 * mostly the ones the step before fetched (sinks, the sealed part of the local window, and
 * retrieved blocks that stay on top), so the fetch phase keeps their decoded f32 K/V and
 * hands out pointers into the cache instead of reading, checksumming and decoding them
 * again. 4-way set-associative, least recently used within a set; an entry used by the
 * current fetch is never evicted by it, so every pointer handed out stays valid until the
 * attend call ends.
 *
 * Why only writable sessions: a sealed block never changes while the writer holds the
 * session, except through truncation or an aborted transaction, which clear the cache
 * (lmk_bcache_clear). A read-only handle beside a writer cannot see such changes, so it
 * keeps reading from its snapshot. */
#include <stdlib.h>
#include <string.h>

#include "lmk_internal.h"

enum { WAYS = 4 };

/* The cache's size: at 2 x 64 x 128 f32 per block (64 KiB) it holds 512 blocks, the sinks,
 * local windows and top-k of a 16-layer, 8-KV-head model's decoding step with room to
 * spare. Its pages are touched only as entries fill. */
#define LMK_BCACHE_BYTES ((size_t)32 << 20)

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint64_t pack(int layer, int kvh, int64_t b)
{
    /* layer and kvh are below 65536 (the config record stores them in 16 bits); + 1 keeps
     * 0 free for an empty entry */
    return (((uint64_t)layer << 48) | ((uint64_t)kvh << 32) | (uint64_t)b) + 1;
}

void lmk_bcache_free(lmk_bcache *c)
{
    free(c->key);
    free(c->used);
    free(c->mem);
    memset(c, 0, sizeof *c);
}

void lmk_bcache_clear(lmk_bcache *c)
{
    if (c->key)
        memset(c->key, 0, c->n * sizeof *c->key);
}

/* Sizes the cache on first use; 0 when caching is off or the blocks are too big. */
static int ready(lmk_session *s)
{
    lmk_bcache *c = &s->bcache;
    if (c->key)
        return 1;
    if (c->off || s->read_only)
        return 0;
    size_t blk = 2 * (size_t)s->L * s->head_dim * sizeof(float);
    size_t nsets = LMK_BCACHE_BYTES / (blk * WAYS);
    if (nsets < 4 || s->L * (int64_t)s->head_dim > (int64_t)1 << 24) {
        c->off = 1;
        return 0;
    }
    size_t p2 = 1;
    while (p2 * 2 <= nsets)
        p2 *= 2;
    c->n = p2 * WAYS;
    c->blk_floats = blk / sizeof(float);
    c->key = calloc(c->n, sizeof *c->key);
    c->used = calloc(c->n, sizeof *c->used);
    c->mem = malloc(c->n * blk);
    if (!c->key || !c->used || !c->mem) {
        lmk_bcache_free(c);
        c->off = 1; /* no memory for it: fetch as before */
        return 0;
    }
    return 1;
}

void lmk_bcache_begin_call(lmk_session *s)
{
    s->bcache.call++;
}

float *lmk_bcache_find(lmk_session *s, int layer, int kvh, int64_t b)
{
    if (!ready(s) || b < 0 || b > (int64_t)UINT32_MAX - 1)
        return NULL;
    lmk_bcache *c = &s->bcache;
    uint64_t k = pack(layer, kvh, b);
    size_t set = (size_t)(mix(k) & (c->n / WAYS - 1)) * WAYS;
    for (size_t w = set; w < set + WAYS; w++)
        if (c->key[w] == k) {
            c->used[w] = c->call;
            return c->mem + w * c->blk_floats;
        }
    return NULL;
}

float *lmk_bcache_claim(lmk_session *s, int layer, int kvh, int64_t b, size_t *slot)
{
    if (!ready(s) || b < 0 || b > (int64_t)UINT32_MAX - 1)
        return NULL;
    lmk_bcache *c = &s->bcache;
    uint64_t k = pack(layer, kvh, b);
    size_t set = (size_t)(mix(k) & (c->n / WAYS - 1)) * WAYS, best = SIZE_MAX;
    for (size_t w = set; w < set + WAYS; w++) {
        if (c->used[w] == c->call)
            continue; /* handed out in this call */
        if (best == SIZE_MAX || !c->key[w] || c->used[w] < c->used[best])
            best = w;
        if (!c->key[w])
            break;
    }
    if (best == SIZE_MAX)
        return NULL;
    c->key[best] = 0; /* filled by lmk_bcache_fill once the block decoded */
    c->used[best] = c->call;
    *slot = best;
    return c->mem + best * c->blk_floats;
}

void lmk_bcache_fill(lmk_session *s, int layer, int kvh, int64_t b, size_t slot)
{
    s->bcache.key[slot] = pack(layer, kvh, b);
}
