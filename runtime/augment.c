/* augment.c - random changes to training images, applied to a batch in place.
 *
 * Each image is flipped left-right with probability 1/2 and/or shifted by
 * (dx, dy), each uniform in [-shift, shift], filling with zeros. The choices
 * come from the counter-based generator: image k of a batch drawn with `key`
 * always gets the same changes, so training stays reproducible. */
#include "runtime/augment.h"
#include "runtime/rng.h"

#include <string.h>

void rt_augment(float *x, int64_t n, int64_t channels, int64_t h, int64_t w, unsigned flags, int shift,
                uint64_t key, float *scratch) {
    int64_t plane = h * w;
    for (int64_t k = 0; k < n; k++) {
        bool flip = (flags & RT_AUG_FLIP) && nnrt_rand_below(key, 4 * (uint64_t)k, 2);
        int64_t dx = 0, dy = 0;
        if ((flags & RT_AUG_SHIFT) && shift > 0) {
            dx = (int64_t)nnrt_rand_below(key, 4 * (uint64_t)k + 1, 2 * (uint64_t)shift + 1) - shift;
            dy = (int64_t)nnrt_rand_below(key, 4 * (uint64_t)k + 2, 2 * (uint64_t)shift + 1) - shift;
        }
        if (!flip && dx == 0 && dy == 0) continue;
        for (int64_t c = 0; c < channels; c++) {
            float *img = x + (k * channels + c) * plane;
            memcpy(scratch, img, sizeof(float) * (size_t)plane);
            /* out(i, j) = in(i - dy, j') with j' = j - dx, mirrored when flipping */
            for (int64_t i = 0; i < h; i++)
                for (int64_t j = 0; j < w; j++) {
                    int64_t si = i - dy, sj = j - dx;
                    if (flip) sj = w - 1 - sj;
                    img[i * w + j] = si >= 0 && si < h && sj >= 0 && sj < w ? scratch[si * w + sj] : 0.0f;
                }
        }
    }
}
