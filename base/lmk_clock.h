/* landmark base — the monotonic clock every timing in the project reads. */
#ifndef LMK_CLOCK_H
#define LMK_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC (arbitrary origin): for differences only. */
static inline double lmk_clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
