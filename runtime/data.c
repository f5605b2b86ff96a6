/* data.c - batching. */
#include "runtime/data.h"

#include <string.h>

void rt_gather(const RtDataset *d, const int64_t *idx, int64_t count, float *x, int32_t *y) {
    size_t row = sizeof(float) * (size_t)d->features;
    for (int64_t i = 0; i < count; i++) {
        int64_t j = idx ? idx[i] : i;
        memcpy(x + i * d->features, d->x + j * d->features, row);
        if (y && d->y) y[i] = d->y[j];
    }
}
