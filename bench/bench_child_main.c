/* landmark-bench-child: the reopening process of a benchmark run (bench_child.c describes
 * the protocol). Not meant to be started by hand. */
#include <stdio.h>

#include "bench_priv.h"

int main(int argc, char **argv)
{
    bench_child_args a;
    if (bench_child_parse(argc, argv, &a)) {
        fprintf(stderr, "landmark-bench-child: bad arguments (started by lmk_bench_run only)\n");
        return 2;
    }
    char err[1024] = "";
    if (bench_child_work(&a, stdout, err, sizeof err)) {
        fprintf(stderr, "landmark-bench-child: %s\n", err[0] ? err : "out of memory");
        return 1;
    }
    return 0;
}
