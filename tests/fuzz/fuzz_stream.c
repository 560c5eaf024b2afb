/* libFuzzer target: the readers of recorded streams (the LMKREC1 file `landmark passkey
 * --record` and `landmark bench --save-stream` write), bench/bench_stream.c: bench_rec_open
 * and bench_rec_kv (`landmark bench --recorded`), and bench_rec_load, the in-memory loader
 * of the representative table (`landmark bench --recorded FILE --repr`).
 * Build: meson setup build-fuzz -Dfuzzers=true with CC=clang.
 *
 * The input is the file, handed over through a memfd. A stream the reader accepts must keep
 * the reader's promise: its size is exactly the header plus the arrays its shape names
 * (computed here without overflow), so reading the first and the last key/value rows of the
 * first and the last layer succeeds. A stream the loader accepts was accepted by the reader,
 * has one query per token, and holds the same first key row. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../bench/bench_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_stream", 0);
    if (fd < 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0) {
            close(fd);
            return 0;
        }
        off += (size_t)k;
    }
    char path[64], err[512];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    bench_rec r;
    if (bench_rec_open(path, &r, err, sizeof err) == 0) {
        unsigned __int128 esz = r.f16 ? 2 : 4;
        unsigned __int128 per_layer =
            ((unsigned __int128)2 * (uint64_t)r.n_tokens * (unsigned)r.n_kv_heads +
             (unsigned __int128)(uint64_t)r.n_queries * (unsigned)r.n_heads) *
            (unsigned)r.head_dim * esz;
        if (48 + per_layer * (unsigned)r.n_layers != size)
            __builtin_trap(); /* accepted a size its shape does not name */
        size_t w = (size_t)r.n_kv_heads * (size_t)r.head_dim;
        float *k = malloc(w * sizeof *k), *v = malloc(w * sizeof *v);
        if (k && v) {
            int last = r.n_layers - 1;
            if (bench_rec_kv(&r, 0, 0, 1, k, v, err, sizeof err) ||
                bench_rec_kv(&r, last, r.n_tokens - 1, 1, k, v, err, sizeof err))
                __builtin_trap(); /* an accepted stream must be readable */
        }
        bench_rec_mem m;
        if (bench_rec_load(path, &m, err, sizeof err) == 0) {
            if (m.T != r.n_tokens || m.NQ != m.T || m.NL != r.n_layers || m.D != r.head_dim)
                __builtin_trap(); /* the loader disagrees with the reader */
            if (k && v &&
                (bench_rec_kv(&r, 0, 0, 1, k, v, err, sizeof err) ||
                 memcmp(m.k, k, w * sizeof *k) != 0))
                __builtin_trap(); /* the loader's first key row is not the reader's */
            free(m.k);
        }
        free(k);
        free(v);
        bench_rec_close(&r);
    } else {
        bench_rec_mem m;
        if (bench_rec_load(path, &m, err, sizeof err) == 0 || m.k)
            __builtin_trap(); /* the loader accepted what the reader refused */
    }
    close(fd);
    return 0;
}
