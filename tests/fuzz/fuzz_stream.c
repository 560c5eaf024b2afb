/* libFuzzer target: the recorded-stream reader of the benchmarks (bench_rec_open and
 * bench_rec_kv, bench/bench_stream.c), which reads a header and arrays from a file on disk.
 * Build: meson setup build-fuzz -Dfuzzers=true with CC=clang.
 *
 * The input is the file, handed over through a memfd. A stream the reader accepts must keep
 * the reader's promise: its size is exactly the header plus the arrays its shape names
 * (computed here without overflow), so reading the first and the last key/value rows of the
 * first and the last layer succeeds. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
        free(k);
        free(v);
        bench_rec_close(&r);
    }
    close(fd);
    return 0;
}
