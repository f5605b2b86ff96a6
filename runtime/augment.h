/* augment.h - data augmentation for training images. */
#ifndef NNRT_AUGMENT_H
#define NNRT_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

enum { RT_AUG_FLIP = 1 << 0, RT_AUG_SHIFT = 1 << 1 };

/* Changes n images [channels, h, w] in x in place (see augment.c); scratch
 * holds h * w floats. Images k of one call get choices from (key, k). */
void rt_augment(float *x, int64_t n, int64_t channels, int64_t h, int64_t w, unsigned flags, int shift,
                uint64_t key, float *scratch);

#endif
