/* rng.c - see rng.h. */
#include "runtime/rng.h"

void nnrt_permutation(int64_t *perm, int64_t n, uint64_t key) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)nnrt_rand_below(key, (uint64_t)i, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
