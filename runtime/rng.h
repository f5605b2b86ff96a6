/* rng.h - the counter-based random number generator.
 *
 * A number is a pure function of (key, counter): no state to carry, any
 * element computable on its own, in any order, on any thread or device.
 * Generated code (LLVM, C, CUDA) computes exactly these functions inline;
 * this header is their reference definition.
 *
 *   bits(key, counter)    = high 32 bits of mix(mix(key) ^ counter)
 *   uniform(key, counter) = ((bits >> 9) + 0.5) / 2^23, in (0, 1): 24
 *                           significant bits, so exact in f32 and f64 alike
 *
 * mix is the SplitMix64 finaliser. */
#ifndef NNRT_RNG_H
#define NNRT_RNG_H

#include <stdint.h>

static inline uint64_t nnrt_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint32_t nnrt_rand_bits(uint64_t key, uint64_t counter) {
    return (uint32_t)(nnrt_mix64(nnrt_mix64(key) ^ counter) >> 32);
}

static inline double nnrt_rand_uniform(uint64_t key, uint64_t counter) {
    return ((double)(nnrt_rand_bits(key, counter) >> 9) + 0.5) * (1.0 / 8388608.0);
}

/* An integer in [0, n) (n < 2^32), by the multiply-shift method. */
static inline uint64_t nnrt_rand_below(uint64_t key, uint64_t counter, uint64_t n) {
    return ((uint64_t)nnrt_rand_bits(key, counter) * n) >> 32;
}

/* A random permutation of 0..n-1 (Fisher-Yates driven by the generator). */
void nnrt_permutation(int64_t *perm, int64_t n, uint64_t key);

#endif
