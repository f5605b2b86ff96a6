/* profile.c - where a compiled program's time goes, kernel by kernel.
 *
 * A program built with profiling (nnc bench --profile) calls
 * nnrt_profile_tick(k) before its kernel k and nnrt_profile_tick(-1) when
 * it returns; the time between two ticks is the kernel's. The table is
 * sized before the program runs, so a tick never allocates. */
#include "runtime/nnrt.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double *seconds;
static int64_t nkernels, current = -1;
static struct timespec last;

void nnrt_profile_reset(int64_t kernels) {
    free(seconds);
    seconds = calloc((size_t)(kernels > 0 ? kernels : 1), sizeof(double));
    nkernels = seconds ? kernels : 0;
    current = -1;
}

void nnrt_profile_tick(int64_t kernel) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (current >= 0 && current < nkernels)
        seconds[current] += (double)(now.tv_sec - last.tv_sec) + 1e-9 * (double)(now.tv_nsec - last.tv_nsec);
    current = kernel;
    last = now;
}

const double *nnrt_profile_seconds(void) { return seconds; }
